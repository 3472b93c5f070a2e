"""Side by side: what interlockd and two gateways, Portkey and LiteLLM, add to a paced stream.

One fake upstream (``upstream.py``, model ``bench-p20ms-k64``: 64 deltas, one
every 20 ms, as ``paced.py``), and in the same run, interleaved, the same C
concurrent streams made

``direct``
    to the upstream itself, by a raw keep-alive HTTP/1.1 client that timestamps
    every SSE delta as it is read: what a client of the provider sees;
``relay``
    through ``relay.py``: a bare ``grpc.aio`` ``Run`` that opens the upstream's
    stream with interlockd's HTTP client and forwards its deltas as
    ``AgentEvent``s, nothing else. interlockd's added time over the relay's is
    the router's own work on the critical path;
``interlockd``
    through interlockd's ``Run`` (a real ``interlockd serve`` subprocess, full
    path: auth, admission, store writes, window recording), timestamping every
    ``text_delta`` event;
``portkey``
    through Portkey's AI gateway (Node; ``benchmarks/portkey``, installed by
    ``make bench-portkey`` from its lockfile; bound to loopback by
    ``benchmarks/portkey/boot.mjs``; the fake as a custom host of provider
    ``openai``, named per request by its ``x-portkey-*`` headers);
``litellm``
    through LiteLLM's proxy (``litellm --config benchmarks/litellm/config.yaml``,
    a subprocess running from its own virtualenv ``.bench/litellm``, built by
    ``make bench-litellm`` from the versions pinned in
    ``benchmarks/litellm/requirements.txt``; no database; the fake as an
    OpenAI-compatible model).

Both gateways are streamed ``POST /v1/chat/completions`` with the same raw
client as ``direct``, so every HTTP target is read at the same client-side
cost, and the relay with the same gRPC client as interlockd.

Figures per (target, C): time to the first delta (TTFD, p50/p99), the gaps
between consecutive deltas as received (p50/p99/max), streams without a stall
(no gap above ``--stall-factor`` x the interval), how far streams fell behind
the upstream's schedule (lag) and how many never by more than 1 s, deltas/s
and the ratio to ``direct`` in the same repetition, each server's CPU per
delta and its peak RSS (``VmRSS`` of its process tree sampled every 0.2 s
during the phase; ``VmHWM`` at the end of the run). The **added** figures are
target - direct in the same repetition. Then ``--ttfe-runs`` sequential short
streams per target, interleaved, for time to first delta at one stream. The
targets of benchmarks/README.md this run measures are printed as met or
missed by how much.

    .venv/bin/python benchmarks/side_by_side.py            # C in {1, 10, 100, 500}
    .venv/bin/python benchmarks/side_by_side.py --smoke    # CI: C in {1, 10}
    .venv/bin/python benchmarks/side_by_side.py --markdown report.md

Every run also writes a results directory (report, JSON, plots; ``results.py``).

Without ``.bench/litellm`` or ``benchmarks/portkey/node_modules`` it says to
run ``make bench-litellm`` / ``make bench-portkey`` (or pass ``--install``), or
``--targets`` leaves them out; without Node or npm on the machine Portkey is
left out with a note. Every loop has a count and a time limit; the
subprocesses are stopped on exit (the gateways also when this process dies
outright: they watch their stdin). Exits 1 if a ``direct``, ``relay`` or
``interlockd`` stream fails, if every stream of a gateway's phase fails (the
harness is broken, not the gateway slow), or the time budget runs out; the
gateways' failures under load are figures, reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import grpc

from interlock.v1 import router_pb2, router_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
from paced import PacedResult, SseConnection, via_stream
from results import machine_info, without_nan
from throughput import (
    HERE,
    MESSAGE,
    REPO,
    BudgetExceeded,
    Child,
    ChildFailed,
    Children,
    Deadline,
    _fmt,
    _table,
    cpu_seconds,
    log,
    percentile,
    signals_interrupt,
    start_interlockd,
    start_script,
    wait_for_port,
)

TARGETS = ("direct", "relay", "interlockd", "portkey", "litellm")
PROXIES = TARGETS[1:]  # everything but direct: what each adds is measured against it
GATEWAYS = ("portkey", "litellm")  # third parties: their failures under load are figures
PORTKEY_DIR = HERE / "portkey"
PORTKEY_LOCK = PORTKEY_DIR / "package-lock.json"
PORTKEY_MODULES = PORTKEY_DIR / "node_modules"
PORTKEY_SERVER = PORTKEY_MODULES / "@portkey-ai" / "gateway" / "build" / "start-server.js"
LITELLM_VENV = REPO / ".bench" / "litellm"
LITELLM_REQUIREMENTS = HERE / "litellm" / "requirements.txt"
LITELLM_CONFIG = HERE / "litellm" / "config.yaml"
LATE_S = 1.0  # a stream is late once a delta arrives this long after the upstream sent it
RSS_EVERY_S = 0.2

# Runs LiteLLM's CLI, and takes its whole process group down once our end of its
# stdin closes (this process exited, even by SIGKILL): no orphaned proxy.
LITELLM_BOOT = """\
import os, signal, sys, threading, time
def _watch():
    while os.read(0, 4096):
        pass
    os.killpg(0, signal.SIGTERM)
    time.sleep(10)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = ["litellm", *sys.argv[1:]]
from litellm import run_server
sys.exit(run_server())
"""


@dataclass(frozen=True)
class Config:
    deltas: int = 64  # N, deltas per stream
    interval_ms: float = 20.0  # between deltas
    concurrency: tuple[int, ...] = (1, 10, 100, 500)
    reps: int = 1
    stall_factor: float = 3.0  # a gap above factor x interval is a stall
    ttfe_runs: int = 50  # sequential single streams per target
    ttfe_deltas: int = 4
    streams_per_channel: int = 25  # interlockd's gRPC connections
    timeout: float = 120.0  # seconds per phase, also every stream's deadline
    budget: float = 1200.0  # seconds, the whole run
    pause: float = 1.0  # seconds between phases, to let the machine settle
    targets: tuple[str, ...] = TARGETS
    litellm_workers: int = 1
    litellm_max_concurrency: int = 0  # above it LiteLLM is not run; 0: no limit
    startup_timeout: float = 180.0  # LiteLLM imports for ~15 s here before it listens
    judge_runs: int = 20  # fewer sequential runs than this: no target is judged on them

    @property
    def stall_ms(self) -> float:
        return self.stall_factor * self.interval_ms

    def model(self, deltas: int) -> str:
        return f"bench-p{self.interval_ms:g}ms-k{deltas}"

    def runs(self, target: str, streams: int) -> bool:
        cap = self.litellm_max_concurrency
        return target in self.targets and not (target == "litellm" and 0 < cap < streams)


SMOKE = Config(
    deltas=16,
    concurrency=(1, 10),
    ttfe_runs=3,
    timeout=15.0,
    budget=90.0,
    pause=0.0,  # the wait for a quiet server after every phase is enough here
    startup_timeout=60.0,
)


# --- processes ------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def tree_mb(pid: int, key: str = "VmRSS:") -> float:
    """``key`` (VmRSS: or VmHWM:) summed over the process tree, in MiB."""
    return sum(status_kb(p, key) for p in tree(pid)) / 1024


def tree_cpu(pid: int) -> float:
    return sum(c for p in tree(pid) if not math.isnan(c := cpu_seconds(p)))


def listening_port(pid: int) -> int | None:
    """A TCP port some process of the tree listens on, from /proc (none: None)."""
    inodes = set()
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{p}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    return int(fields[1].rsplit(":", 1)[1], 16)
    return None


def litellm_ready() -> str | None:
    """Why LiteLLM's virtualenv can't be used as it is, or None."""
    stamp = LITELLM_VENV / ".installed"
    if not stamp.exists():
        return f"{LITELLM_VENV.relative_to(REPO)} is not built"
    if stamp.stat().st_mtime < LITELLM_REQUIREMENTS.stat().st_mtime:
        return f"{LITELLM_VENV.relative_to(REPO)} is older than {LITELLM_REQUIREMENTS.name}"
    return None


def litellm_version() -> str:
    for lib in (LITELLM_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info"):
        return lib.name.removeprefix("litellm-").removesuffix(".dist-info")
    return "?"


def portkey_ready() -> str | None:
    """Why Portkey's gateway can't be used as it is, or None."""
    stamp = PORTKEY_MODULES / ".installed"
    if not stamp.exists() or not PORTKEY_SERVER.exists():
        return f"{PORTKEY_MODULES.relative_to(REPO)} is not installed"
    if stamp.stat().st_mtime < PORTKEY_LOCK.stat().st_mtime:
        return f"{PORTKEY_MODULES.relative_to(REPO)} is older than {PORTKEY_LOCK.name}"
    return None


def portkey_version() -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        package = PORTKEY_SERVER.parent.parent / "package.json"
        return str(json.loads(package.read_text())["version"])
    return "?"


def node_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10)
        return done.stdout.strip().removeprefix("v") or "?"
    return "?"


def start_portkey(children: Children) -> Child:
    """Portkey's gateway on loopback, a free port, its UI and log stream off."""
    keep = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "REDIS_", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    env |= {"NODE_ENV": "production", "BENCH_EXIT_ON_STDIN_EOF": "1"}
    argv = ["node", "--import", str(PORTKEY_DIR / "boot.mjs"), str(PORTKEY_SERVER)]
    return children.start("portkey", [*argv, "--port=0", "--headless"], env)


def wait_for_http(child: Child, path: str, timeout: float) -> int:
    """The port ``child`` listens on once ``GET path`` answers 200 there."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if child.proc.poll() is not None:
            raise ChildFailed(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        port = listening_port(child.proc.pid)
        if port is not None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return port
            conn.close()
        time.sleep(0.1)
    raise ChildFailed(f"{child.name} did not answer within {timeout:.0f} s:\n{child.tail()}")


def start_litellm(
    children: Children, workdir: Path, upstream_port: int, key: str, workers: int
) -> Child:
    keep = ("LITELLM_", "OPENAI_", "DATABASE_URL", "DIRECT_URL", "REDIS_", "INTERLOCK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    env |= {
        "BENCH_UPSTREAM_BASE": f"http://127.0.0.1:{upstream_port}/v1",
        "BENCH_LITELLM_KEY": key,
        "LITELLM_LOG": "ERROR",  # no access log line per request
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    # Its bundled copies instead of fetching them at start (this machine has no network).
    for what in ("MODEL_COST_MAP", "ANTHROPIC_BETA_HEADERS", "AUTOROUTER_PRESETS"):
        env[f"LITELLM_LOCAL_{what}"] = "True"
    for what in ("BLOG_POSTS", "POLICY_TEMPLATES"):
        env[f"LITELLM_LOCAL_{what}"] = "True"
    argv = [str(LITELLM_VENV / "bin" / "python"), "-c", LITELLM_BOOT, "--config"]
    argv += [str(LITELLM_CONFIG), "--host", "127.0.0.1", "--port", "0"]
    argv += ["--num_workers", str(workers)]
    return children.start("litellm", argv, env)


# --- clients ---------------------------------------------------------------------


class Target(Protocol):
    name: str
    pid: int  # the process serving it: the upstream for direct, else the proxy

    async def open(self, streams: int) -> None: ...
    async def stream(self, index: int, model: str, deltas: int, limit: float) -> PacedResult: ...
    async def close(self) -> None: ...


class HttpTarget:
    def __init__(
        self, name: str, port: int, pid: int, api_key: str = "", headers: Sequence[str] = ()
    ) -> None:
        self.name, self.pid = name, pid
        self._port, self._key, self._headers = port, api_key, headers
        self._connections: list[SseConnection] = []

    async def open(self, streams: int) -> None:
        self._connections = [
            SseConnection(self._port, self._key, self._headers) for _ in range(streams)
        ]
        await asyncio.gather(*(asyncio.wait_for(c.connect(), 30) for c in self._connections))

    async def stream(self, index: int, model: str, deltas: int, limit: float) -> PacedResult:
        return await self._connections[index].stream(model, deltas, limit)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._connections))
        self._connections = []


class GrpcTarget:
    def __init__(
        self, name: str, address: str, pid: int, api_key: str, streams_per_channel: int
    ) -> None:
        self.name, self.pid = name, pid
        self._address, self._per_channel = address, streams_per_channel
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[router_pb2_grpc.AgentRouterStub] = []

    async def open(self, streams: int) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        for _ in range(max(1, math.ceil(streams / self._per_channel))):
            channel = grpc.aio.insecure_channel(self._address, options=options)
            await asyncio.wait_for(channel.channel_ready(), 10)
            self._channels.append(channel)
            self._stubs.append(router_pb2_grpc.AgentRouterStub(channel))

    async def stream(self, index: int, model: str, deltas: int, limit: float) -> PacedResult:
        # One end user per concurrent stream; every Run starts a new conversation.
        request = router_pb2.RunRequest(end_user_id=f"side-{index}", message=MESSAGE, model=model)
        stub = self._stubs[index % len(self._stubs)]
        return await via_stream(stub, request, self._metadata, deltas, limit)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        self._channels, self._stubs = [], []


# --- phases ------------------------------------------------------------------------


@dataclass
class Phase:
    kind: str  # "concurrent" or "sequential"
    target: str
    streams: int
    rep: int
    wall: float = 0.0
    cpu_s: float = math.nan  # the target's server, over the phase
    peak_rss_mb: float = math.nan  # its tree's VmRSS, sampled during the phase
    results: list[PacedResult] = field(default_factory=list)

    def failures(self) -> list[str]:
        label = f"{self.target} {self.kind} C={self.streams} rep {self.rep + 1}"
        return [
            f"{label} stream {i}: {r.error or 'ended without a Finish event'}"
            for i, r in enumerate(self.results)
            if not r.ok
        ]


async def sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], tree_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)


async def run_phase(target: Target, phase: Phase, model: str, deltas: int, limit: float) -> Phase:
    try:
        await asyncio.wait_for(target.open(phase.streams), limit)
    except (OSError, TimeoutError) as exc:
        phase.results = [PacedResult(error=f"connecting: {exc!r}")] * phase.streams
        await target.close()
        return phase
    peak, stop = [0.0], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(target.pid, peak, stop))
    cpu = tree_cpu(target.pid)
    start = time.perf_counter()
    calls = (target.stream(i, model, deltas, limit) for i in range(phase.streams))
    try:
        phase.results = list(await asyncio.wait_for(asyncio.gather(*calls), limit + 5))
    except TimeoutError:
        phase.results = [PacedResult(error="phase timed out")] * phase.streams
    phase.wall = time.perf_counter() - start
    phase.cpu_s = tree_cpu(target.pid) - cpu
    stop.set()
    await sampler
    phase.peak_rss_mb = max(peak[0], tree_mb(target.pid))
    await target.close()
    await quiet(target.pid)
    return phase


async def quiet(pid: int, busy: float = 0.1, every: float = 0.3, limit: float = 30.0) -> None:
    """Wait (at most ``limit`` s) until the tree uses < ``busy`` of a core over ``every`` s.

    A proxy still busy with a finished phase (streams it is still draining,
    logging) would otherwise slow whichever target runs next.
    """
    end = time.monotonic() + limit
    while time.monotonic() < end:
        before = tree_cpu(pid)
        await asyncio.sleep(every)
        if tree_cpu(pid) - before < busy * every:
            return
    log(f"  pid {pid} still busy {limit:g} s after its phase")


def rotated(targets: Sequence[Target], k: int) -> list[Target]:
    """Start at a different target each time, so none always goes first."""
    k %= len(targets)
    return [*targets[k:], *targets[:k]]


async def run_benchmark(targets: Sequence[Target], cfg: Config) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    phases: list[Phase] = []
    errors: list[str] = []
    start_rss = {t.name: tree_mb(t.pid) for t in targets}
    model = cfg.model(cfg.deltas)
    try:
        # Connections, caches, end users, LiteLLM's lazy imports (~2 s on its first request).
        warm, short = min(max(cfg.concurrency), 50), cfg.model(cfg.ttfe_deltas)
        log(f"warm-up: {warm} short streams of each target")
        for t in targets:
            if cfg.runs(t.name, warm):
                limit = deadline.limit(cfg.timeout)
                phase = Phase("warmup", t.name, warm, -1)
                await run_phase(t, phase, short, cfg.ttfe_deltas, limit)
        step = 0
        for rep in range(cfg.reps):
            for streams in cfg.concurrency:
                for t in rotated(targets, step):
                    if not cfg.runs(t.name, streams):
                        continue
                    log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<5} {t.name}")
                    await asyncio.sleep(cfg.pause)
                    phase = Phase("concurrent", t.name, streams, rep)
                    limit = deadline.limit(cfg.timeout)
                    phases.append(await run_phase(t, phase, model, cfg.deltas, limit))
                step += 1
        phases += await sequential(targets, cfg, deadline)
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    hwm = {t.name: tree_mb(t.pid, "VmHWM:") for t in targets}
    end_rss = {t.name: tree_mb(t.pid) for t in targets}
    return build_report(phases, cfg, errors, start_rss, end_rss, hwm)


async def sequential(targets: Sequence[Target], cfg: Config, deadline: Deadline) -> list[Phase]:
    """``ttfe_runs`` single short streams per target, interleaved run by run."""
    if cfg.ttfe_runs < 1:
        return []
    log(f"sequential: {cfg.ttfe_runs} single streams of {cfg.ttfe_deltas} deltas per target")
    model = cfg.model(cfg.ttfe_deltas)
    phases = {t.name: Phase("sequential", t.name, 1, 0) for t in targets}
    for t in targets:
        await asyncio.wait_for(t.open(1), deadline.limit(cfg.timeout))
    try:
        for i in range(cfg.ttfe_runs):
            for t in rotated(targets, i):
                limit = deadline.limit(cfg.timeout)
                phases[t.name].results.append(await t.stream(0, model, cfg.ttfe_deltas, limit))
    finally:
        for t in targets:
            await t.close()
    return list(phases.values())


# --- summaries ----------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> float:
    return percentile((v * 1000 for v in values), q)


def max_lag(r: PacedResult, interval_s: float) -> float:
    """How far behind the upstream's schedule a stream fell, in seconds.

    The upstream sends delta i at i x interval after the request reaches it, so
    ``received_i - i x interval`` is how late delta i is (≈ 0.5 ms direct): this
    counts the wait for the first delta and every delay since, even when the
    deltas held back then arrive in one burst (gaps of 0, no "stall").
    """
    if r.first_delta is None:
        return math.nan
    at = lag = r.first_delta
    for i, gap in enumerate(r.gaps, 1):
        at += gap
        lag = max(lag, at - i * interval_s)
    return lag


def summarize(phase: Phase, cfg: Config) -> dict[str, Any]:
    rs = phase.results
    lags = [max_lag(r, cfg.interval_ms / 1000) for r in rs if r.ok]
    gaps = [g for r in rs for g in r.gaps]
    firsts = [r.first_delta for r in rs if r.first_delta is not None]
    deltas = sum(r.deltas for r in rs)
    return {
        "kind": phase.kind,
        "target": phase.target,
        "streams": phase.streams,
        "rep": phase.rep,
        "runs": len(rs),
        "wall_s": phase.wall,
        "failed": sum(not r.ok for r in rs),
        "ttfd_p50_ms": _ms(firsts, 50),
        "ttfd_p99_ms": _ms(firsts, 99),
        "gap_p50_ms": _ms(gaps, 50),
        "gap_p99_ms": _ms(gaps, 99),
        "gap_max_ms": max(gaps) * 1000 if gaps else math.nan,
        "stall_free": sum(r.ok and all(g <= cfg.stall_ms / 1000 for g in r.gaps) for r in rs),
        "lag_p50_ms": _ms(lags, 50),
        "lag_p99_ms": _ms(lags, 99),
        "on_time": sum(lag <= LATE_S for lag in lags),
        "deltas": deltas,
        "deltas_per_s": deltas / phase.wall if phase.wall else math.nan,
        "server_cpu_s": phase.cpu_s,
        "server_cpu_pct": 100 * phase.cpu_s / phase.wall if phase.wall else math.nan,
        "server_cpu_us_per_delta": 1e6 * phase.cpu_s / deltas if deltas else math.nan,
        "peak_rss_mb": phase.peak_rss_mb,
    }


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(statistics.median(values)) if values else math.nan


Pair = tuple[dict[str, Any], dict[str, Any]]  # (proxy, direct) rows of one (C, rep)


def added(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """proxy - direct per (C, rep), median over reps."""
    by = {(r["target"], r["streams"], r["rep"]): r for r in rows if r["kind"] == "concurrent"}
    out = []
    for streams in dict.fromkeys(r["streams"] for r in rows if r["kind"] == "concurrent"):
        for proxy in PROXIES:
            pairs = [
                (by[(proxy, streams, rep)], by[("direct", streams, rep)])
                for rep in sorted({r["rep"] for r in rows})
                if (proxy, streams, rep) in by and ("direct", streams, rep) in by
            ]
            if not pairs:
                continue

            def diff(key: str, pairs: list[Pair] = pairs) -> float:
                return _median([p[key] - d[key] for p, d in pairs])

            def ratio(key: str, pairs: list[Pair] = pairs) -> float:
                return _median([p[key] / d[key] if d[key] else math.nan for p, d in pairs])

            def own(key: str, pairs: list[Pair] = pairs) -> float:
                return _median([p[key] for p, _ in pairs])

            out.append(
                {
                    "target": proxy,
                    "streams": streams,
                    "reps": len(pairs),
                    "added_ttfd_p50_ms": diff("ttfd_p50_ms"),
                    "added_ttfd_p99_ms": diff("ttfd_p99_ms"),
                    "added_gap_p50_ms": diff("gap_p50_ms"),
                    "added_gap_p99_ms": diff("gap_p99_ms"),
                    "throughput_vs_direct": ratio("deltas_per_s"),
                    "stall_free": min(p["stall_free"] for p, _ in pairs),
                    "added_lag_p50_ms": diff("lag_p50_ms"),
                    "added_lag_p99_ms": diff("lag_p99_ms"),
                    "on_time": min(p["on_time"] for p, _ in pairs),
                    "direct_stall_free": min(d["stall_free"] for _, d in pairs),
                    "failed": max(p["failed"] for p, _ in pairs),
                    "cpu_us_per_delta": own("server_cpu_us_per_delta"),
                    "peak_rss_mb": max(p["peak_rss_mb"] for p, _ in pairs),
                }
            )
    return out


def sequential_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seq = {r["target"]: r for r in rows if r["kind"] == "sequential"}
    direct = seq.get("direct")
    out = []
    for target, r in seq.items():
        extra = {}
        if direct and target != "direct":
            extra = {
                "added_ttfd_p50_ms": r["ttfd_p50_ms"] - direct["ttfd_p50_ms"],
                "added_ttfd_p99_ms": r["ttfd_p99_ms"] - direct["ttfd_p99_ms"],
            }
        out.append({k: r[k] for k in ("target", "runs", "failed", "ttfd_p50_ms", "ttfd_p99_ms")})
        out[-1] |= extra
    return out


def side_by_side(report: dict[str, Any]) -> list[str]:
    """Per C, each proxy's figures beside the others' (those of the added table)."""
    lines = []
    by = {(a["target"], a["streams"]): a for a in report["added"]}
    for streams in dict.fromkeys(a["streams"] for a in report["added"]):
        rows = [(p, by[(p, streams)]) for p in PROXIES if (p, streams) in by]
        if len(rows) < 2:
            continue

        def each(key: str, spec: str, rows: list[tuple[str, dict[str, Any]]] = rows) -> str:
            return ", ".join(f"{p} {_fmt(a[key], spec)}" for p, a in rows)

        lines.append(
            f"C={streams}: added TTFD p50 (ms) {each('added_ttfd_p50_ms', '+.1f')}; "
            f"throughput vs direct {each('throughput_vs_direct', '.2f')}; "
            f"stall-free of {streams} {each('stall_free', 'd')}; "
            f"CPU per delta (µs) {each('cpu_us_per_delta', ',.0f')}; "
            f"peak RSS (MB) {each('peak_rss_mb', ',.0f')}"
        )
    return lines


def verdict(value: float, limit: float, unit: str, at_least: bool = False) -> str:
    """ "met", or "missed by" how far ``value`` is on the wrong side of ``limit``."""
    if math.isnan(value):
        return "not measured"
    short = limit - value if at_least else value - limit
    if short <= 0:
        return "met"
    return f"missed by {short:.2f}{unit}" if unit else f"missed by {short:.2f}"


def target_lines(report: dict[str, Any]) -> list[str]:
    """The targets of benchmarks/README.md this run measures: met, or missed by how much.

    One stream's figures come from the sequential runs, judged only with at
    least ``judge_runs`` of them (a smoke's three runs measure no p99); those
    at 100 streams only when C = 100 ran.
    """
    cfg, lines = report["config"], []
    seq = {r["target"]: r for r in report["sequential"]}
    runs = seq["interlockd"]["runs"] if "interlockd" in seq else 0
    if "added_ttfd_p50_ms" in seq.get("interlockd", {}) and runs >= cfg["judge_runs"]:
        i = seq["interlockd"]
        p50, p99 = i["added_ttfd_p50_ms"], i["added_ttfd_p99_ms"]
        lines.append(
            f"target: added TTFD at one stream p50 <= 1.5 ms: {p50:+.2f} ms, "
            f"{verdict(p50, 1.5, ' ms')} ({runs} sequential runs)"
        )
        lines.append(
            f"target: added TTFD at one stream p99 <= 3 ms: {p99:+.2f} ms, "
            f"{verdict(p99, 3.0, ' ms')}"
        )
        if "added_ttfd_p50_ms" in seq.get("relay", {}):
            own = p50 - seq["relay"]["added_ttfd_p50_ms"]
            own99 = p99 - seq["relay"]["added_ttfd_p99_ms"]
            lines.append(
                "target: the router's own work on the critical path (added TTFD p50 at one "
                f"stream above the bare relay's) <= 1 ms: {own:+.2f} ms, "
                f"{verdict(own, 1.0, ' ms')} (p99: {own99:+.2f} ms)"
            )
        if "added_ttfd_p50_ms" in seq.get("litellm", {}):
            ll = seq["litellm"]["added_ttfd_p50_ms"]
            share = p50 / ll if ll > 0 else math.nan
            lines.append(
                f"target: added TTFD p50 at one stream <= 0.10 of LiteLLM's ({ll:+.2f} ms): "
                f"{_fmt(share, '.2f')}, {verdict(share, 0.10, '')}"
            )
        if "added_ttfd_p50_ms" in seq.get("portkey", {}):
            pk = seq["portkey"]["added_ttfd_p50_ms"]
            lines.append(f"(Portkey's added TTFD p50 at one stream: {pk:+.2f} ms; no target)")
    elif runs:
        lines.append(
            f"targets at one stream: not judged ({runs} sequential runs; "
            f"{cfg['judge_runs']} or more judge them)"
        )
    i100 = next(
        (a for a in report["added"] if (a["target"], a["streams"]) == ("interlockd", 100)), None
    )
    if i100 is None:
        return lines
    thr, p50, p99 = (
        i100[k] for k in ("throughput_vs_direct", "added_ttfd_p50_ms", "added_ttfd_p99_ms")
    )
    lines += [
        f"target: 100 paced streams >= 0.95x direct: {thr:.2f}x, {verdict(thr, 0.95, 'x', True)}",
        f"target: 100 paced streams all stall-free: {i100['stall_free']}/100, "
        + ("met" if i100["stall_free"] == 100 else f"missed by {100 - i100['stall_free']}"),
        f"target: 100 paced streams added TTFD p50 <= 5 ms: {p50:+.1f} ms, "
        f"{verdict(p50, 5.0, ' ms')}",
        f"target: 100 paced streams added TTFD p99 <= 50 ms: {p99:+.1f} ms, "
        f"{verdict(p99, 50.0, ' ms')}",
    ]
    return lines


def build_report(
    phases: Sequence[Phase],
    cfg: Config,
    errors: list[str],
    start_rss: dict[str, float],
    end_rss: dict[str, float],
    hwm: dict[str, float],
) -> dict[str, Any]:
    rows = [summarize(p, cfg) for p in phases]
    fatal = list(errors)
    reported = []  # a gateway's failed streams: figures, not a broken harness
    for p in phases:
        fails = p.failures()
        if p.target not in GATEWAYS or (p.results and len(fails) == len(p.results)):
            fatal += fails
        else:
            reported += fails
    machine = machine_info()
    if "litellm" in cfg.targets:
        machine["litellm"] = litellm_version()
    if "portkey" in cfg.targets:
        machine["portkey"], machine["node"] = portkey_version(), node_version()
    report = {
        "machine": machine,
        "config": dataclasses.asdict(cfg)
        | {"model": cfg.model(cfg.deltas), "stall_ms": cfg.stall_ms},
        "phases": rows,
        "added": added(rows),
        "sequential": sequential_rows(rows),
        "rss_mb": {t: {"start": start_rss[t], "end": end_rss[t], "hwm": hwm[t]} for t in start_rss},
        "failures": fatal,
        "gateway_failures": reported,
        "ok": not fatal,
    }
    report["side_by_side"] = side_by_side(report)
    report["targets"] = target_lines(report)
    return report


# --- output -------------------------------------------------------------------------

Table = tuple[str, list[str], list[list[str]]]


def tables(report: dict[str, Any]) -> list[Table]:
    cfg = report["config"]
    phase_headers = ["target", "C", "rep", "TTFD p50", "TTFD p99", "gap p50", "gap p99"]
    phase_headers += ["gap max", "stall-free", "lag p50", "lag p99", "<=1s late", "deltas/s"]
    phase_headers += ["server CPU"]
    phase_headers += ["CPU µs/delta", "peak RSS MB", "failed", "wall s"]
    phase_cells = [
        [
            r["target"],
            str(r["streams"]),
            str(r["rep"] + 1),
            *(_fmt(r[k], ".2f") for k in ("ttfd_p50_ms", "ttfd_p99_ms", "gap_p50_ms")),
            *(_fmt(r[k], ".2f") for k in ("gap_p99_ms", "gap_max_ms")),
            f"{r['stall_free']}/{r['streams']}",
            *(_fmt(r[k], ".2f") for k in ("lag_p50_ms", "lag_p99_ms")),
            f"{r['on_time']}/{r['streams']}",
            _fmt(r["deltas_per_s"], ",.0f"),
            f"{_fmt(r['server_cpu_s'], '.2f')} s ({_fmt(r['server_cpu_pct'], '.0f')}%)",
            _fmt(r["server_cpu_us_per_delta"], ",.0f"),
            _fmt(r["peak_rss_mb"], ",.0f"),
            str(r["failed"]),
            _fmt(r["wall_s"], ".1f"),
        ]
        for r in report["phases"]
        if r["kind"] == "concurrent"
    ]
    added_headers = ["proxy", "C", "TTFD p50", "TTFD p99", "gap p50", "gap p99", "thr vs direct"]
    added_headers += ["stall-free", "direct stall-free", "lag p50", "lag p99", "<=1s late"]
    added_headers += ["failed"]
    added_headers += ["CPU µs/delta", "peak RSS MB"]
    added_cells = [
        [
            a["target"],
            str(a["streams"]),
            *(f"{a[k]:+.2f}" for k in ("added_ttfd_p50_ms", "added_ttfd_p99_ms")),
            *(f"{a[k]:+.2f}" for k in ("added_gap_p50_ms", "added_gap_p99_ms")),
            _fmt(a["throughput_vs_direct"], ".2f"),
            f"{a['stall_free']}/{a['streams']}",
            f"{a['direct_stall_free']}/{a['streams']}",
            *(f"{a[k]:+.2f}" for k in ("added_lag_p50_ms", "added_lag_p99_ms")),
            f"{a['on_time']}/{a['streams']}",
            str(a["failed"]),
            _fmt(a["cpu_us_per_delta"], ",.0f"),
            _fmt(a["peak_rss_mb"], ",.0f"),
        ]
        for a in report["added"]
    ]
    seq_headers = ["target", "runs", "failed", "TTFD p50", "TTFD p99", "added p50", "added p99"]
    seq_cells = [
        [
            r["target"],
            str(r["runs"]),
            str(r["failed"]),
            _fmt(r["ttfd_p50_ms"], ".2f"),
            _fmt(r["ttfd_p99_ms"], ".2f"),
            _fmt(r.get("added_ttfd_p50_ms"), "+.2f"),
            _fmt(r.get("added_ttfd_p99_ms"), "+.2f"),
        ]
        for r in report["sequential"]
    ]
    rss_headers = ["process", "RSS at start MB", "RSS at end MB", "VmHWM at end MB"]
    rss_cells = [
        [t, *(_fmt(v[k], ",.0f") for k in ("start", "end", "hwm"))]
        for t, v in report["rss_mb"].items()
    ]
    return [
        (
            f"Concurrent paced streams: {cfg['deltas']} deltas every {cfg['interval_ms']:g} ms "
            f"(model {cfg['model']}); stall-free = no gap between deltas above "
            f"{cfg['stall_ms']:g} ms ({cfg['stall_factor']:g} x the interval); lag = how far "
            "a stream fell behind the upstream's schedule (its latest delta, waiting for the "
            "first included), p50/p99 over streams; times in ms; server = the upstream for "
            "direct, else the proxy's process tree",
            phase_headers,
            phase_cells,
        ),
        (
            "Added by each proxy (proxy - direct in the same rep, median over reps; ms); "
            "thr = deltas/s over direct's",
            added_headers,
            added_cells,
        ),
        (
            f"Sequential single streams of {cfg['ttfe_deltas']} deltas, targets interleaved "
            "(time to first delta, ms)",
            seq_headers,
            seq_cells,
        ),
        ("RSS of each server's process tree (direct: the upstream)", rss_headers, rss_cells),
    ]


def header_lines(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    versions = f"python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}"
    for key in ("litellm", "portkey", "node"):
        if key in m:
            versions += f", {key} {m[key]}"
    return [
        f"date     {m['date']}   git {m['git']}",
        f"machine  nproc {m['nproc']} (cpu_count {m['cpu_count']}), {m['cpu_model']}, "
        f"{m['platform']}",
        f"versions {versions}",
        f"command  {m['command']}",
        f"config   {json.dumps(report['config'])}",
    ]


def failure_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for label, failures in (
        ("FAILED", report["failures"]),
        ("gateway", report["gateway_failures"]),
    ):
        lines += [f"{label} {f}" for f in failures[:20]]
        if len(failures) > 20:
            lines.append(f"{label} ... and {len(failures) - 20} more")
    return lines


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout) -> None:
    for line in header_lines(report):
        print(line, file=out)
    for title, headers, cells in tables(report):
        print(f"\n{title}", file=out)
        _table(headers, cells, out)
    print("", file=out)
    for line in report["side_by_side"] + report["targets"] + failure_lines(report):
        print(line, file=out)


def markdown(report: dict[str, Any], header: bool = True) -> str:
    lines = ["# Side by side", "", "```", *header_lines(report), "```"] if header else []
    for title, headers, cells in tables(report):
        lines += ["", title + ":", "", bench_results.md_table(headers, cells)]
    notes = report["side_by_side"] + report["targets"] + failure_lines(report)
    lines += [""] + [f"- {line}" for line in notes]
    return "\n".join(lines).strip("\n") + "\n"


def publish(report: dict[str, Any], out: Path) -> Path:
    body = "## Results\n" + markdown(report, header=False)
    m = report["machine"]
    extra = {k: m[k] for k in ("litellm", "portkey", "node") if k in m}
    return bench_results.publish(
        out, "Side by side", report, body, lambda d: plots(report, d), extra
    )


STYLE = {
    "direct": {"color": "tab:green", "marker": "^"},
    "relay": {"color": "tab:gray", "marker": "s"},
    "interlockd": {"color": "tab:blue", "marker": "o"},
    "portkey": {"color": "tab:purple", "marker": "v"},
    "litellm": {"color": "tab:orange", "marker": "D"},
}


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Added TTFD and throughput vs direct by C per proxy; RSS by C and over the run."""
    add = report["added"]
    if not add:
        return []
    cs = sorted({a["streams"] for a in add})
    proxies = [p for p in PROXIES if any(a["target"] == p for a in add)]
    paths = []

    def series(proxy: str, key: str) -> tuple[list[int], list[float]]:
        mine = sorted((a["streams"], a[key]) for a in add if a["target"] == proxy)
        return [m[0] for m in mine], [m[1] for m in mine]

    fig, (p50, p99, thr) = bench_results.figure(ncols=3, width=5.0)
    for p in proxies:
        p50.plot(*series(p, "added_ttfd_p50_ms"), label=p, **STYLE[p])
        p99.plot(*series(p, "added_ttfd_p99_ms"), label=p, **STYLE[p])
        thr.plot(*series(p, "throughput_vs_direct"), label=p, **STYLE[p])
    for ax, label in ((p50, "added TTFD p50, ms"), (p99, "added TTFD p99, ms")):
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel(f"{label} (vs direct, same rep)")
    thr.axhline(0.95, color="tab:red", linestyle="--", label="target 0.95 at C=100")
    thr.set_ylabel("deltas/s over direct's (same rep)")
    thr.set_ylim(0, 1.1)
    for ax in (p50, p99, thr):
        bench_results.concurrency_axis(ax, cs)
        ax.legend(fontsize="small")
    cfg = report["config"]
    pace = f"{cfg['deltas']} deltas every {cfg['interval_ms']:g} ms"
    paths.append(bench_results.save(fig, out, "added", f"What each proxy adds ({pace})"))

    fig, (peak, run) = bench_results.figure(ncols=2)
    for p in proxies:
        peak.plot(*series(p, "peak_rss_mb"), label=p, **STYLE[p])
    peak.set_ylabel("peak RSS of the process tree during the phase, MiB")
    peak.set_ylim(bottom=0)
    bench_results.concurrency_axis(peak, cs)
    peak.legend(fontsize="small")
    rss = report["rss_mb"]
    names = [t for t in TARGETS if t in rss]
    width = 0.25  # three bars a process
    for k, (key, label) in enumerate((("start", "at start"), ("end", "at end"), ("hwm", "VmHWM"))):
        xs = [i + (k - 1) * width for i in range(len(names))]
        run.bar(xs, [rss[t][key] for t in names], width, label=label)
    run.set_xticks(range(len(names)))
    run.set_xticklabels(["upstream (direct)" if t == "direct" else t for t in names])
    run.set_ylabel("RSS of the process tree, MiB")
    run.grid(True, axis="y", alpha=0.3)
    run.legend(fontsize="small")
    paths.append(bench_results.save(fig, out, "rss", "Memory"))
    return paths


# --- main ---------------------------------------------------------------------------


@dataclass
class Args:
    cfg: Config
    as_json: bool
    markdown: Path | None
    install: bool
    namespace: argparse.Namespace  # --smoke, --results, --no-results


def parse_args(argv: Sequence[str] | None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip('"'))
    parser.add_argument("--smoke", action="store_true", help="C in {1, 10}, 16 deltas (CI)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    bench_results.add_options(parser)
    parser.add_argument(
        "--install", action="store_true", help="run `make bench-litellm bench-portkey` as needed"
    )
    parser.add_argument("--targets", help=f"comma-separated, of {','.join(TARGETS)}")
    parser.add_argument("--deltas", type=int, help="N, deltas per stream (default 64)")
    parser.add_argument("--interval-ms", type=float, help="between deltas (default 20)")
    parser.add_argument("--concurrency", help="comma-separated C values (default 1,10,100,500)")
    parser.add_argument("--reps", type=int, help="repetitions of every (target, C)")
    parser.add_argument("--stall-factor", type=float, help="stall = gap > factor x interval")
    parser.add_argument("--ttfe-runs", type=int, help="sequential single streams per target")
    parser.add_argument("--ttfe-deltas", type=int)
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--litellm-workers", type=int, help="LiteLLM's --num_workers (1)")
    parser.add_argument("--litellm-max-concurrency", type=int, help="skip LiteLLM above this C")
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys: tuple[str, ...] = ("deltas", "interval_ms", "reps", "stall_factor", "ttfe_runs")
    keys += ("ttfe_deltas", "streams_per_channel", "litellm_workers", "litellm_max_concurrency")
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in (*keys, "timeout", "budget") if getattr(args, k) is not None
    }
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.targets:
        overrides["targets"] = tuple(t for t in TARGETS if t in args.targets.split(","))
        if set(args.targets.split(",")) - set(TARGETS) or not overrides["targets"]:
            parser.error(f"--targets takes some of {','.join(TARGETS)}")
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if min(cfg.concurrency) < 1 or cfg.deltas < 2 or cfg.reps < 1 or cfg.interval_ms <= 0:
        parser.error("concurrency and reps must be >= 1, deltas >= 2, interval > 0")
    if cfg.ttfe_deltas < 2 or cfg.litellm_workers < 1:
        parser.error("--ttfe-deltas must be >= 2, --litellm-workers >= 1")
    return Args(cfg, args.json, args.markdown, args.install, args)


def ensure_litellm(install: bool) -> bool:
    if (why := litellm_ready()) is None:
        return True
    if not install:
        log(
            f"benchmark: {why}: run `make bench-litellm` (~1 min, ~750 MB), pass --install, "
            "or leave it out with --targets"
        )
        return False
    log(f"{why}: make bench-litellm")
    done = subprocess.run(["make", "--no-print-directory", "bench-litellm"], cwd=REPO)
    return done.returncode == 0 and litellm_ready() is None


def ensure_portkey(install: bool) -> bool | None:
    """True: ready; False: not installed (the run stops); None: no Node here, left out."""
    if shutil.which("node") is None or (install and shutil.which("npm") is None):
        log("benchmark: no `node` or `npm` on PATH: Portkey's gateway is left out of this run")
        return None
    if (why := portkey_ready()) is None:
        return True
    if not install:
        log(
            f"benchmark: {why}: run `make bench-portkey` (~10 s, ~25 MB), pass --install, "
            "or leave it out with --targets"
        )
        return False
    log(f"{why}: make bench-portkey")
    done = subprocess.run(["make", "--no-print-directory", "bench-portkey"], cwd=REPO)
    return done.returncode == 0 and portkey_ready() is None


def start_targets(children: Children, workdir: Path, cfg: Config) -> list[Target]:
    """The upstream and every server of ``cfg.targets``, each answering; direct's first."""
    log(f"starting the upstream and {', '.join(t for t in cfg.targets if t != 'direct')}")
    upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
    port = wait_for_port(upstream)
    key = "sk-bench-" + secrets.token_hex(8)
    litellm = portkey = None
    if "litellm" in cfg.targets:  # first: it takes the longest to start
        litellm = start_litellm(children, workdir, port, key, cfg.litellm_workers)
    if "portkey" in cfg.targets:
        portkey = start_portkey(children)
    targets: list[Target] = [HttpTarget("direct", port, upstream.proc.pid)]
    spc = cfg.streams_per_channel
    if "relay" in cfg.targets:
        argv = [sys.executable, str(HERE / "relay.py"), "--exit-on-stdin-eof"]
        relay = children.start("relay", [*argv, "--upstream", f"http://127.0.0.1:{port}/v1"])
        address = f"127.0.0.1:{wait_for_port(relay)}"
        targets.append(GrpcTarget("relay", address, relay.proc.pid, "", spc))
    if "interlockd" in cfg.targets:
        daemon, api_key = start_interlockd(children, workdir, port, coalesce=True)
        address = f"127.0.0.1:{wait_for_port(daemon)}"
        targets.append(GrpcTarget("interlockd", address, daemon.proc.pid, api_key, spc))
    if portkey is not None:
        pk_port = wait_for_http(portkey, "/", cfg.startup_timeout)
        # Provider "openai" at the fake's address: Portkey trusts loopback custom hosts.
        routing = (
            "x-portkey-provider: openai",
            f"x-portkey-custom-host: http://127.0.0.1:{port}/v1",
        )
        targets.append(HttpTarget("portkey", pk_port, portkey.proc.pid, key, routing))
    if litellm is not None:
        started = time.monotonic()
        ll_port = wait_for_http(litellm, "/health/liveliness", cfg.startup_timeout)
        log(f"litellm answering after {time.monotonic() - started:.1f} s more")
        targets.append(HttpTarget("litellm", ll_port, litellm.proc.pid, key))
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = args.cfg
    if "litellm" in cfg.targets and not ensure_litellm(args.install):
        return 2
    if "portkey" in cfg.targets and not (ready := ensure_portkey(args.install)):
        if ready is not None:
            return 2
        cfg = dataclasses.replace(cfg, targets=tuple(t for t in cfg.targets if t != "portkey"))
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-side-by-side-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            targets = start_targets(children, Path(tmp), cfg)
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        report = asyncio.run(run_benchmark(targets, cfg))
    if args.as_json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if args.markdown:
        args.markdown.write_text(markdown(report))
        log(f"report written to {args.markdown}")
    if out := bench_results.directory("side-by-side", args.namespace):
        publish(report, out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
