"""Paced streams through interlockd with 1 and with N worker processes, in one run.

The method of ``paced.py`` (its upstream, client, phases and per-phase
figures), with its targets replaced: the upstream called ``direct``ly (the
provider's own schedule) and one interlockd per ``--workers`` value
(``interlockd serve --workers W``, the embedded SQLite store, coalescing on),
each started once and given the same C streams in turn, the first target
rotating. A stream runs on a connection of its own group of 25
(``--streams-per-channel``): with W > 1 the kernel places each connection on
a worker (SO_REUSEPORT). Server CPU and RSS are the process tree's (the
supervisor and its workers); with 2 cores, CPU near 200 % is the machine.

    .venv/bin/python benchmarks/paced_workers.py                # W in {1, 2}, C in {100, 500}
    .venv/bin/python benchmarks/paced_workers.py --smoke        # CI: C in {1, 10}, few deltas
    .venv/bin/python benchmarks/paced_workers.py --workers 1,2,4 --concurrency 100,500,1000

Writes a results directory (``results.py``) like the other harnesses; exits 1 if
any stream fails or the time budget runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
from paced import (
    Config,
    Direct,
    GrpcPaced,
    Phase,
    Target,
    rss_mb,
    run_phase,
    summarize,
)
from results import machine_info, without_nan
from throughput import (
    API_KEY,
    BudgetExceeded,
    ChildFailed,
    Children,
    Deadline,
    _fmt,
    _table,
    cpu_seconds,
    interlockd_argv,
    interlockd_config,
    log,
    print_header,
    raise_open_files,
    signals_interrupt,
    start_script,
    wait_for_port,
)

DEFAULT = Config(concurrency=(100, 500))
SMOKE = Config(deltas=16, concurrency=(1, 10), timeout=10.0, budget=40.0, pause=0.2)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                queue.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_cpu(pid: int) -> float:
    return sum(c for p in tree(pid) if not math.isnan(c := cpu_seconds(p)))


def tree_rss(pid: int) -> float:
    return sum(r for p in tree(pid) if not math.isnan(r := rss_mb(p)))


def start_daemon(
    children: Children, workdir: Path, upstream_port: int, workers: int
) -> tuple[int, str, str]:
    """``interlockd serve --workers W --bootstrap``: its pid, address and API key."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = interlockd_config(workdir, upstream_port, coalesce=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    argv = [*interlockd_argv(), "serve", "--config", str(config), "--bootstrap"]
    child = children.start(f"interlockd-w{workers}", [*argv, "--workers", str(workers)], env)
    port = wait_for_port(child, timeout=120)
    match = API_KEY.search(child.output())
    if not match:
        raise ChildFailed(f"interlockd printed no INTERLOCK_API_KEY:\n{child.tail()}")
    return child.proc.pid, f"127.0.0.1:{port}", match.group(1)


async def measure(
    target: Target, streams: int, rep: int, cfg: Config, server: int, limit: float
) -> dict[str, Any]:
    """One phase: ``paced.run_phase``, its figures, with the server tree's CPU and RSS."""
    before = tree_cpu(server)
    phase = await run_phase(target, Phase("interlockd", streams, rep), cfg.deltas, {}, limit)
    phase.cpu["interlockd"] = tree_cpu(server) - before
    phase.rss_mb["interlockd"] = tree_rss(server)
    return summarize(phase, cfg) | {"target": target.name, "failures": phase.failures()}


async def run_benchmark(
    targets: Sequence[tuple[Target, int]], cfg: Config
) -> tuple[list[dict[str, Any]], list[str]]:
    deadline = Deadline(cfg.budget)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        for t, _ in targets:
            await t.open(max(cfg.concurrency), cfg.model)
        warm = min(max(cfg.concurrency), 50)
        log(f"warm-up: {warm} streams of each target")
        for t, server in targets:
            await measure(t, warm, -1, cfg, server, deadline.limit(cfg.timeout))
        step = 0
        for rep in range(cfg.reps):
            for streams in cfg.concurrency:
                k = step % len(targets)  # the first target rotates, as in paced.py
                for t, server in [*targets[k:], *targets[:k]]:
                    log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<5} {t.name}")
                    await asyncio.sleep(cfg.pause)
                    limit = deadline.limit(cfg.timeout)
                    rows.append(await measure(t, streams, rep, cfg, server, limit))
                step += 1
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for t, _ in targets:
            await t.close()
    return rows, errors


COLUMNS = (
    ("C", "streams", ","),
    ("target", "target", ""),
    ("failed", "failed", ","),
    ("TTFD p50", "ttfd_p50_ms", ".1f"),
    ("TTFD p99", "ttfd_p99_ms", ".1f"),
    ("gap p99", "gap_p99_ms", ".1f"),
    ("gap max", "gap_max_ms", ".0f"),
    ("stall-free", "stall_free", ","),
    ("deltas/s", "deltas_per_s", ",.0f"),
    ("stream p99", "stream_p99_ms", ",.0f"),
    ("server CPU %", "server_cpu_pct", ".0f"),
    ("µs CPU/delta", "server_cpu_us_per_delta", ".0f"),
    ("RSS MB", "server_rss_mb", ".0f"),
)


def report_text(report: dict[str, Any]) -> str:
    cfg = report["config"]
    rows = sorted(report["phases"], key=lambda r: (r["streams"], r["rep"], r["target"]))
    out = io.StringIO()
    print(
        f"Paced upstream: {cfg['deltas']} deltas every {cfg['interval_ms']:g} ms; times in ms; "
        "server = the upstream for direct, else interlockd's process tree (supervisor and "
        "workers); CPU over the phase, RSS at its end.",
        file=out,
    )
    _table(
        [name for name, _, _ in COLUMNS],
        [[_fmt(r[key], fmt) for _, key, fmt in COLUMNS] for r in rows],
        out,
    )
    for failure in report["failures"][:20]:
        print(f"FAILED: {failure}", file=out)
    return out.getvalue().rstrip("\n")


def parse_args(argv: Sequence[str] | None) -> tuple[Config, list[int], argparse.Namespace]:
    parser = argparse.ArgumentParser(description="paced streams: interlockd with 1 vs N workers")
    parser.add_argument("--smoke", action="store_true", help="C in {1, 10}, few deltas")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--workers", default="1,2", help="comma-separated W values (1,2)")
    parser.add_argument("--concurrency", help="comma-separated C values (default 100,500)")
    parser.add_argument("--deltas", type=int, help="N, deltas per stream (default 64)")
    parser.add_argument("--interval-ms", type=float, help="between deltas (default 20)")
    parser.add_argument("--reps", type=int, help="repetitions of every (target, C) (default 1)")
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys = ("deltas", "interval_ms", "reps", "streams_per_channel", "timeout", "budget")
    overrides: dict[str, Any] = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    cfg = dataclasses.replace(SMOKE if args.smoke else DEFAULT, **overrides)
    workers = [int(w) for w in args.workers.split(",")]
    if min(workers) < 1 or min(cfg.concurrency) < 1 or cfg.deltas < 2:
        parser.error("workers and concurrency must be >= 1, deltas >= 2")
    return cfg, workers, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, workers, args = parse_args(argv)
    raise_open_files(2 * max(cfg.concurrency) + 1000)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-paced-workers-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log(f"starting the upstream and interlockd with {', '.join(map(str, workers))} workers")
            upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
            port = wait_for_port(upstream)
            targets: list[tuple[Target, int]] = [(Direct(port), upstream.proc.pid)]
            for w in workers:
                pid, address, key = start_daemon(children, Path(tmp) / f"w{w}", port, w)
                name = f"workers={w}"
                targets.append((GrpcPaced(name, address, key, cfg.streams_per_channel), pid))
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        names = [t.name for t, _ in targets]
        rows, errors = asyncio.run(run_benchmark(targets, cfg))
    failures = errors + [f for r in rows for f in r.pop("failures")]
    config = dataclasses.asdict(cfg) | {"model": cfg.model, "workers": workers, "targets": names}
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": config,
        "phases": rows,
        "failures": failures,
        "ok": not failures,
    }
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_header(report["machine"], report["config"], sys.stdout)
        print(report_text(report))
    if out := bench_results.directory("paced-workers", args):
        body = "## Results\n\n" + bench_results.text_block(report_text(report))
        title = "Paced streams: interlockd with 1 vs N worker processes"
        bench_results.publish(out, title, report, body)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
