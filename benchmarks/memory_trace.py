"""Where an idle open stream's memory goes: tracemalloc inside the daemon, 0 vs N held turns.

``memory.py`` says how much RSS a held turn costs; this script says who holds
it. It starts ``interlockd serve`` through its own shim (the daemon runs
in-process there and writes a ``tracemalloc`` snapshot to a file on SIGUSR1),
holds streams exactly as ``memory.py`` does (the same fake upstream in its
``bench-hold`` mode, the same client), and diffs two snapshots: one after a
warm-up with no stream open (tracing starts there), one with N streams held. Reported, per
held stream:

- the traced Python allocations, grouped by owner (the innermost frame in
  our code, a library or the standard library: see :func:`owner`), and the
  top source lines;
- the daemon's RSS delta over the same N, and what tracemalloc cannot see:
  RSS delta - traced delta - tracemalloc's own bookkeeping growth. That part
  is C memory: grpc's core (a call, its arena and HTTP/2 stream state),
  the C parts of aiohttp and the allocator's slack. Kernel socket buffers are
  not in RSS at all.

Tracing slows the daemon and its bookkeeping is itself in RSS; the RSS figures
of record come from ``memory.py``, this breakdown is for attribution.

    .venv/bin/python benchmarks/memory_trace.py                 # N = 1,000
    .venv/bin/python benchmarks/memory_trace.py --streams 2000 --frames 12 --top 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pickle
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory
from throughput import (
    ChildFailed,
    Children,
    Deadline,
    log,
    raise_open_files,
    signals_interrupt,
)

SNAPSHOT_ENV = "BENCH_TRACE_SNAPSHOT_DIR"  # where the shim writes snapshot-K.pickle
FRAMES_ENV = "BENCH_TRACE_FRAMES"
SITE = f"{os.sep}site-packages{os.sep}"
OURS = f"{os.sep}interlockd{os.sep}"
HERE = Path(__file__).resolve()
FRAMES_SHOWN = 8  # innermost first


# --- the daemon's side: serve under tracemalloc, snapshot on SIGUSR1 ---------------


def serve_traced(argv: Sequence[str]) -> int:
    """``interlockd`` with ``argv``; each SIGUSR1 writes the next snapshot (the first
    starts tracing)."""
    out = Path(os.environ[SNAPSHOT_ENV])
    frames = int(os.environ.get(FRAMES_ENV, "10"))
    taken = 0

    def snapshot(signum: int, frame: object) -> None:
        # Tracing starts at the first snapshot: the second then holds exactly what
        # was allocated in between and is still alive, and the start and the
        # warm-up run at full speed.
        nonlocal taken
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        snap = tracemalloc.take_snapshot()
        meta = {"tracemalloc_kib": tracemalloc.get_tracemalloc_memory() / 1024}
        path = out / f"snapshot-{taken}.pickle"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump((meta, snap), f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.rename(path)  # the client waits for this name
        taken += 1

    signal.signal(signal.SIGUSR1, snapshot)
    from interlockd.cli import main

    return main(list(argv))


# --- the client's side --------------------------------------------------------------


def library(frame: tracemalloc.Frame) -> str:
    """The package of a frame: site-packages' top level, ``interlockd/<package>``, or
    ``stdlib <module>``."""
    name = frame.filename
    if SITE in name:
        return name.split(SITE, 1)[1].split(os.sep)[0]
    if OURS in name:
        parts = name.split(OURS, 1)[1].split(os.sep)
        return "interlockd/" + (parts[0] if len(parts) > 1 else parts[0].removesuffix(".py"))
    path = Path(name)
    return f"stdlib {path.parent.name}" if path.parent.name == "asyncio" else f"stdlib {path.stem}"


def owner(frames: Sequence[tracemalloc.Frame]) -> str:
    """Who an allocation belongs to: the innermost interlockd package on its stack (the
    command line's event loop runner aside), with the library that allocated it.

    Allocations with no interlockd frame below the event loop are C code the loop
    runs: grpc's Cython call objects and the tasks it creates, asyncio's own, the
    transports' reads; they are charged to the innermost Python frame (asyncio).
    """
    inner = library(frames[-1]) if frames else "?"
    for f in reversed(frames):  # tracemalloc lists them oldest first
        if OURS in f.filename and SITE not in f.filename and not f.filename.endswith("cli.py"):
            ours = library(f)
            return ours if inner == ours else f"{ours} via {inner}"
    return f"event loop: {inner}"


def where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in (SITE, OURS):
        if marker in name:
            name = ("interlockd/" if marker == OURS else "") + name.split(marker, 1)[1]
            break
    else:
        name = Path(name).name
    return f"{name}:{frame.lineno}"


async def take(pid: int, snapdir: Path, k: int, limit: float) -> Path:
    """Ask the daemon for snapshot ``k`` and wait until it is written."""
    path = snapdir / f"snapshot-{k}.pickle"
    os.kill(pid, signal.SIGUSR1)
    end = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > end:
            raise ChildFailed(f"no snapshot {k} from the daemon in {limit:g} s")
        await asyncio.sleep(0.2)
    return path


def load(path: Path) -> tuple[dict[str, float], tracemalloc.Snapshot]:
    with path.open("rb") as f:
        meta, snap = pickle.load(f)
    return meta, snap


@dataclasses.dataclass
class Traced:
    streams: int
    rss_before: dict[str, float]
    rss_held: dict[str, float]
    before: Path
    held: Path
    failures: list[str]


async def trace_streams(
    children: Children, workdir: Path, cfg: memory.Config, n: int, frames: int
) -> Traced:
    """A traced daemon; snapshots after a warm-up (nothing open) and with ``n`` held."""
    port = memory.start_upstream(children)
    snapdir = workdir / "snapshots"
    snapdir.mkdir(parents=True)
    daemon = memory.start_daemon(
        children,
        workdir / "traced",
        port,
        cfg.providers,
        launcher=[sys.executable, str(HERE), "--serve-traced", "--"],
        extra_env={SNAPSHOT_ENV: str(snapdir), FRAMES_ENV: str(frames)},
    )
    deadline = Deadline(cfg.budget)
    failures: list[str] = []
    # Two rounds: the second finds every lazily built cache and pool already there.
    for _ in range(2):
        log(f"warm-up: {cfg.warmup_streams} held streams")
        warm = await memory.hold_streams(
            daemon, cfg.warmup_streams, cfg, deadline.limit(cfg.timeout), "warm"
        )
        failures += warm.failures
    rss_before = await memory.sample_rss(daemon.pid, cfg.samples, cfg.sample_interval)
    before = await take(daemon.pid, snapdir, 0, deadline.limit(300))
    taken: list[Path] = []

    async def snapshot() -> None:
        taken.append(await take(daemon.pid, snapdir, 1, deadline.limit(600)))

    log(f"holding {n:,} streams (traced: slower than memory.py)")
    phase = await memory.hold_streams(
        daemon, n, cfg, deadline.limit(cfg.timeout), f"traced{n}", snapshot
    )
    failures += phase.failures
    return Traced(n, rss_before, phase.rss, before, taken[0], failures)


def breakdown(traced: Traced, top: int) -> dict[str, Any]:
    """The diff of the two snapshots per held stream: by owner and by line."""
    meta0, snap0 = load(traced.before)
    meta1, snap1 = load(traced.held)
    n = traced.streams
    by_owner: dict[str, float] = defaultdict(float)
    by_owner_count: dict[str, int] = defaultdict(int)
    diff = snap1.compare_to(snap0, "traceback")
    by_ours: dict[str, float] = defaultdict(float)
    for stat in diff:
        who = owner(stat.traceback)
        by_owner[who] += stat.size_diff
        by_owner_count[who] += stat.count_diff
        ours = next((f for f in reversed(stat.traceback) if OURS in f.filename), None)
        if ours is not None:
            by_ours[where(ours)] += stat.size_diff
    lines = snap1.compare_to(snap0, "lineno")[:top]
    traced_kib = sum(s.size_diff for s in diff) / 1024
    rss_kib = traced.rss_held["VmRSS"] - traced.rss_before["VmRSS"]
    bookkeeping_kib = meta1["tracemalloc_kib"] - meta0["tracemalloc_kib"]
    untraced = rss_kib - traced_kib - bookkeeping_kib
    tracebacks = []
    for stat in diff[:top]:
        tracebacks.append(
            {
                "kib_per_stream": stat.size_diff / 1024 / n,
                "blocks_per_stream": stat.count_diff / n,
                "frames": [where(f) for f in reversed(stat.traceback)][:FRAMES_SHOWN],
            }
        )
    return {
        "streams": n,
        "rss_delta_kib_per_stream": rss_kib / n,
        "traced_kib_per_stream": traced_kib / n,
        "tracemalloc_bookkeeping_kib_per_stream": bookkeeping_kib / n,
        "untraced_kib_per_stream": untraced / n,
        "owners": sorted(
            (
                {
                    "owner": who,
                    "kib_per_stream": size / 1024 / n,
                    "blocks_per_stream": by_owner_count[who] / n,
                }
                for who, size in by_owner.items()
            ),
            key=lambda o: -o["kib_per_stream"],
        ),
        "our_lines": [
            {"line": line, "kib_per_stream": size / 1024 / n}
            for line, size in sorted(by_ours.items(), key=lambda kv: -kv[1])[:top]
        ],
        "lines": [
            {
                "line": where(s.traceback[-1]),
                "kib_per_stream": s.size_diff / 1024 / n,
                "blocks_per_stream": s.count_diff / n,
            }
            for s in lines
        ],
        "tracebacks": tracebacks,
    }


def print_breakdown(b: dict[str, Any], top: int) -> None:
    print(
        f"{b['streams']:,} held streams over the warm baseline, per stream: "
        f"RSS {b['rss_delta_kib_per_stream']:.1f} KiB (traced daemon) = traced Python "
        f"{b['traced_kib_per_stream']:.1f} KiB + tracemalloc's own "
        f"{b['tracemalloc_bookkeeping_kib_per_stream']:.1f} KiB + not traced (C: grpc core, "
        f"aiohttp's parser, allocator slack) {b['untraced_kib_per_stream']:.1f} KiB"
    )
    print("\nby owner (the innermost frame in interlockd, else the innermost library):")
    for o in b["owners"][:top]:
        if abs(o["kib_per_stream"]) >= 0.05:
            print(
                f"  {o['kib_per_stream']:7.2f} KiB  {o['blocks_per_stream']:7.1f} blocks  "
                f"{o['owner']}"
            )
    print("\nby the innermost line of interlockd on the allocation's stack:")
    for line in b["our_lines"]:
        print(f"  {line['kib_per_stream']:7.2f} KiB  {line['line']}")
    print("\nby line (innermost frame):")
    for line in b["lines"]:
        print(
            f"  {line['kib_per_stream']:7.2f} KiB  {line['blocks_per_stream']:7.1f} blocks  "
            f"{line['line']}"
        )
    print("\nby traceback:")
    for t in b["tracebacks"]:
        print(f"  {t['kib_per_stream']:7.2f} KiB  {t['blocks_per_stream']:7.1f} blocks")
        for frame in t["frames"]:
            print(f"        {frame}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve-traced"]:
        return serve_traced(args[2:] if args[1:2] == ["--"] else args[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", type=int, default=1000, help="held streams (1000)")
    parser.add_argument("--frames", type=int, default=10, help="traceback depth traced (10)")
    parser.add_argument("--top", type=int, default=25, help="lines and tracebacks shown (25)")
    parser.add_argument("--json", type=Path, help="also write the breakdown as JSON here")
    opts = parser.parse_args(args)
    cfg = dataclasses.replace(
        memory.Config(), streams=(opts.streams,), timeout=1200.0, budget=3600.0
    )
    raise_open_files(2 * opts.streams + 1000)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-memory-trace-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            traced = asyncio.run(trace_streams(children, Path(tmp), cfg, opts.streams, opts.frames))
        except ChildFailed as exc:
            log(f"memory_trace: {exc}")
            return 1
        result = breakdown(traced, opts.top)
    print_breakdown(result, opts.top)
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))
    for failure in traced.failures[:10]:
        print(f"FAILED {failure}")
    return 1 if traced.failures else 0


if __name__ == "__main__":
    sys.exit(main())
