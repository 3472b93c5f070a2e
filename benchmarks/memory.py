"""Memory of the daemon: RSS per idle open stream, and RSS growth over many turns.

Two parts, each against its own ``interlockd serve`` subprocess (a fresh data
directory; full path: auth, admission, store writes, window recording) in front
of the zero-latency fake of ``upstream.py``, with the resident set size of the
daemon read from ``/proc/PID/status`` (VmRSS):

``streams``
    For every N (default 1,000 / 5,000 / 10,000, ascending, on one daemon):
    open N concurrent ``Run`` streams whose upstream sends the head and the
    first delta of its answer and then holds the turn open (model
    ``bench-hold``, served by this script's own mode of the fake), wait until
    every stream has received its first ``text_delta``, let the daemon settle,
    sample its RSS, then cancel them all and wait until it is quiet again.
    Reported: RSS with N open streams, over the idle baseline measured in the
    same run (after a warm-up, before the first N) in total and per stream
    (KiB/stream), the marginal cost per stream between successive N (which
    cancels fixed costs), and RSS once the N streams are closed.
``turns``
    Short turns (8 deltas each, a new conversation each, ``--turn-concurrency``
    at a time, end users cycling over ``--users`` ids) in batches of
    ``--sample-every``; the daemon's RSS is sampled after every batch, with no
    turn in flight. The first ``--warmup-turns`` are the warm-up. Reported:
    RSS growth from the end of the warm-up to the last sample (MiB, and per
    1,000 turns), the least-squares slope over those samples, and the samples.

A single OpenAI-compatible provider of the daemon pools at most 1,000 upstream
connections, so one held turn each: a 1,001st concurrent turn would wait for a
connection and fail. The config therefore defines ``ceil(max N /
--streams-per-provider)`` identical providers (``up0``, ``up1``, ...) in front
of the same fake, and stream i uses ``up{i mod P}``.

    .venv/bin/python benchmarks/memory.py              # N in {1k, 5k, 10k}; 1,000 + 10,000 turns
    .venv/bin/python benchmarks/memory.py --smoke      # CI: 200 streams, 100 + 300 turns, < 30 s
    .venv/bin/python benchmarks/memory.py --json       # results as JSON on stdout
    .venv/bin/python benchmarks/memory.py --csv rss.csv  # and every RSS sample as CSV

Every run also writes a results directory (report, JSON, the RSS samples as
CSV, plots; ``results.py``).

Every loop has a count and a time limit; the subprocesses are stopped on exit.
The soft limit of open files is raised to the hard limit (the daemon and the
fake inherit it). Exits 1 if a stream or turn fails (a gRPC status, an
``Error`` event, a held stream that ends early, a turn without ``Finish``) or
the time budget runs out. The report prints each target as met or missed by
how much (10,000 idle streams under 600 MB; growth after warm-up <= 1 MB per
10,000 turns), or "not measured" where the run is too small to tell (a smoke:
200 streams, 300 turns after its warm-up); the exit status never judges them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from interlock.v1 import router_pb2, router_pb2_grpc
from interlock.v1.events_pb2 import AgentEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
import upstream
from results import MB, MIB, machine_info, without_nan
from throughput import (
    API_KEY,
    MESSAGE,
    BudgetExceeded,
    Child,
    ChildFailed,
    Children,
    Deadline,
    StreamResult,
    _fmt,
    _stop,
    _table,
    cpu_seconds,
    grpc_stream,
    interlockd_argv,
    log,
    model_for,
    raise_open_files,
    signals_interrupt,
    wait_for_port,
)

TARGET_MB = 600  # 10,000 idle open streams under 600 MB RSS (benchmarks/README.md)
TARGET_STREAMS = 10_000
GROWTH_TARGET_MB = 1.0  # RSS growth after warm-up <= 1 MB per 10,000 turns
GROWTH_TARGET_TURNS = 10_000
# Fewer measured turns than this cannot tell growth from the warm-up's tail
# (RSS still rises ~2.7 MiB per 1,000 turns over the first 1,000 here, and a
# sample moves by ±0.3 MiB): a run that short reports no growth figure.
MIN_GROWTH_TURNS = 5_000
FLOOR_KB_PER_STREAM = 24  # a bare grpc.aio server's idle stream here (benchmarks/README.md)
HOLD_MODEL = "bench-hold"
_HOLD = re.compile(rb'"model"\s*:\s*"' + HOLD_MODEL.encode() + rb'"')
PARTS = ("streams", "turns")
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class Config:
    streams: tuple[int, ...] = (1000, 5000, 10000)  # N, idle open streams
    streams_per_channel: int = 100  # gRPC channels (connections) of the client
    streams_per_provider: int = 1000  # the daemon pools 1,000 connections per provider
    open_concurrency: int = 100  # streams being opened at once (not yet at their first delta)
    warmup_streams: int = 50  # held and closed before the baseline
    turns: int = 10_000  # measured turns, after the warm-up
    warmup_turns: int = 1_000
    sample_every: int = 1_000  # turns per batch; RSS is sampled after each
    turn_concurrency: int = 8
    turn_deltas: int = 8
    users: int = 1_000  # end users the turns cycle over
    settle: float = 1.0  # seconds before an idle-streams sample
    turn_settle: float = 0.3  # seconds before a turns sample
    samples: int = 5  # RSS reads per sample (the median is kept) ...
    sample_interval: float = 0.2  # ... this many seconds apart
    quiet_interval: float = 0.5  # after closing streams: quiet = two such intervals at <= 5% CPU
    timeout: float = 600.0  # seconds per phase; the deadline of every stream adds 120
    budget: float = 1800.0  # seconds, the whole run
    parts: tuple[str, ...] = PARTS

    @property
    def providers(self) -> int:
        return max(1, math.ceil(max(self.streams) / self.streams_per_provider))


SMOKE = Config(
    streams=(200,),
    warmup_streams=20,
    turns=300,
    warmup_turns=100,
    sample_every=100,
    users=100,
    settle=0.3,
    turn_settle=0.1,
    samples=3,
    sample_interval=0.1,
    quiet_interval=0.25,
    timeout=15.0,
    budget=40.0,  # ~18 s here; room for a loaded CI machine
)


# --- the fake upstream, with a mode that holds a turn open ------------------------


class HoldingUpstream(upstream.UpstreamProtocol):
    """upstream.py's fake; model ``bench-hold`` gets the head and one delta, then nothing.

    The response stays open until the client closes the connection (the daemon
    does when its turn is cancelled). Other models are served as upstream.py does.
    """

    def __init__(self, default_deltas: int) -> None:
        super().__init__(default_deltas)
        self._holding = False

    def _serve_buffered(self) -> None:
        while (
            self._transport is not None
            and self._paced is None
            and not self._holding
            and (request := self._next_request())
        ):
            method, path, headers, body = request
            completions = method == "POST" and path.split("?", 1)[0].endswith("/chat/completions")
            if completions and _HOLD.search(body):
                self._transport.write(upstream.paced_pieces(2)[0])  # the head and first delta
                self._holding = True
                return
            pace = upstream.pace_for(body) if completions else None
            close = headers.get("connection", "").lower() == "close"
            if pace is not None:
                self._start_paced(upstream.deltas_for(body, self._default), pace, close)
                continue
            self._transport.write(self._respond(method, path, body))
            if close:
                self._transport.close()
                self._transport = None


async def serve_upstream() -> None:
    """The fake on 127.0.0.1, a free port, until SIGTERM/SIGINT or stdin's end."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=upstream._wait_for_eof, args=(loop, stop), daemon=True).start()
    server = await loop.create_server(
        lambda: HoldingUpstream(8), "127.0.0.1", 0, backlog=4096, reuse_address=True
    )
    print(f"upstream listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


# --- subprocesses and /proc -------------------------------------------------------


def start_upstream(children: Children) -> int:
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-upstream"]
    return wait_for_port(children.start("upstream", argv))


def daemon_config(workdir: Path, upstream_port: int, providers: int) -> Path:
    """Port 0, a fresh data dir, ``providers`` OpenAI-compatible providers on the fake."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        'listen = "127.0.0.1:0"',
        'http_listen = "127.0.0.1:0"',
        f"data_dir = {json.dumps(str(workdir / 'data'))}",
        'default_provider = "up0"',
        'log_level = "warning"',
        "shutdown_announce_seconds = 0.0",
        "shutdown_grace_seconds = 1.0",
        "",
        "[runs]",
        "max_run_seconds = 7200.0",  # held turns outlive the default 600 s on a slow machine
    ]
    for p in range(providers):
        lines += [
            "",
            f"[providers.up{p}]",
            'kind = "openai"',
            f'base_url = "http://127.0.0.1:{upstream_port}/v1"',
            'api_key = "bench"',
            'default_model = "bench"',
            "read_timeout_seconds = 7200.0",  # a held turn is silent after its first delta
        ]
    config = workdir / "interlockd.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@dataclass
class Daemon:
    child: Child
    address: str
    api_key: str

    @property
    def pid(self) -> int:
        return self.child.proc.pid

    def stop(self) -> None:
        _stop(self.child.proc)


def start_daemon(
    children: Children,
    workdir: Path,
    upstream_port: int,
    providers: int,
    *,
    launcher: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Daemon:
    """``interlockd serve`` on a fresh config; ``launcher`` replaces the ``interlockd``
    command (``memory_trace.py`` runs it under its tracing shim)."""
    config = daemon_config(workdir, upstream_port, providers)
    # INTERLOCK_* variables would override the file; a proxy must not see loopback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env |= extra_env or {}
    command = list(launcher) or interlockd_argv()
    argv = [*command, "serve", "--config", str(config), "--bootstrap"]
    child = children.start(f"interlockd-{workdir.name}", argv, env)
    port = wait_for_port(child, timeout=60.0 if launcher else 30.0)
    match = API_KEY.search(child.output())
    if not match:
        raise ChildFailed(f"interlockd printed no INTERLOCK_API_KEY:\n{child.tail()}")
    return Daemon(child, f"127.0.0.1:{port}", match.group(1))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process in KiB (/proc/PID/status); empty if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            out[name] = int(value.split()[0])
    return out


async def sample_rss(pid: int, samples: int, interval: float) -> dict[str, float]:
    """Median VmRSS and RssAnon (KiB) over ``samples`` reads ``interval`` apart."""
    reads = []
    for i in range(samples):
        if i:
            await asyncio.sleep(interval)
        reads.append(memory_kib(pid))
    return {
        key: float(statistics.median(r.get(key, math.nan) for r in reads))
        for key in ("VmRSS", "RssAnon")
    }


async def wait_quiet(pid: int, limit: float, interval: float = 0.5) -> float:
    """Wait until the process used <= 5% of a core over two intervals; return the seconds."""
    start = time.monotonic()
    last, calm = cpu_seconds(pid), 0
    while time.monotonic() - start < limit:
        await asyncio.sleep(interval)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last <= 0.05 * interval else 0
        last = now
        if calm >= 2:
            break
    return time.monotonic() - start


class Client:
    """gRPC channels to a daemon, each its own connection, opened before measuring."""

    def __init__(self, daemon: Daemon) -> None:
        self._address = daemon.address
        self.metadata = (("authorization", f"Bearer {daemon.api_key}"),)
        self.channels: list[grpc.aio.Channel] = []
        self.stubs: list[router_pb2_grpc.AgentRouterStub] = []

    async def open(self, channels: int) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        for _ in range(max(1, channels)):
            channel = grpc.aio.insecure_channel(self._address, options=options)
            await asyncio.wait_for(channel.channel_ready(), 10)
            self.channels.append(channel)
            self.stubs.append(router_pb2_grpc.AgentRouterStub(channel))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        self.channels, self.stubs = [], []


# --- part 1: idle open streams ----------------------------------------------------


@dataclass
class Held:
    call: Any = None  # grpc.aio.UnaryStreamCall once started
    first_delta: float | None = None  # seconds from the call
    error: str = ""


async def open_held(
    stub: router_pb2_grpc.AgentRouterStub,
    request: router_pb2.RunRequest,
    metadata: tuple[tuple[str, str], ...],
    gate: asyncio.Semaphore,
    deadline: float,
    held: Held,
) -> None:
    """Start a Run and read it up to its first text delta; the call is left open."""
    async with gate:
        start = time.perf_counter()
        seq = 0
        try:
            held.call = stub.Run(request, metadata=metadata, timeout=deadline)
            while (event := await held.call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                assert isinstance(event, AgentEvent)
                seq += 1
                kind = event.WhichOneof("event")
                if event.seq != seq:
                    held.error = f"seq {event.seq} at event {seq}"
                elif kind == "error":
                    held.error = f"error event {event.error.code}: {event.error.message}"
                elif kind == "text_delta":
                    held.first_delta = time.perf_counter() - start
                    return
                if held.error:
                    return
            held.error = "ended before its first delta"
        except grpc.aio.AioRpcError as exc:
            held.error = f"{exc.code().name}: {exc.details()}"


@dataclass
class StreamsPhase:
    streams: int
    open_s: float = 0.0  # the first call to the last stream's first delta
    rss: dict[str, float] = field(default_factory=dict)  # KiB with the N streams held
    rss_closed: dict[str, float] = field(default_factory=dict)  # KiB once closed and quiet
    quiet_s: float = 0.0  # closing to quiet
    first_delta: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def hold_streams(
    daemon: Daemon,
    n: int,
    cfg: Config,
    time_limit: float,
    label: str,
    while_held: Callable[[], Awaitable[object]] | None = None,
) -> StreamsPhase:
    """Open ``n`` held streams, sample the daemon's RSS, close them, wait for quiet.

    ``while_held`` runs after the sample, before the streams are closed
    (``memory_trace.py`` takes its snapshot there).
    """
    phase = StreamsPhase(n)
    client = Client(daemon)
    await client.open(math.ceil(n / cfg.streams_per_channel))
    gate = asyncio.Semaphore(cfg.open_concurrency)
    helds = [Held() for _ in range(n)]
    calls = [
        open_held(
            client.stubs[i % len(client.stubs)],
            router_pb2.RunRequest(
                end_user_id=f"{label}-{i}",
                message=MESSAGE,
                model=HOLD_MODEL,
                provider=f"up{i % cfg.providers}",
            ),
            client.metadata,
            gate,
            time_limit + 120,
            held,
        )
        for i, held in enumerate(helds)
    ]
    start = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*calls), time_limit)
    except TimeoutError:
        phase.failures.append(f"{label}: not every stream got its first delta in {time_limit:g} s")
    phase.open_s = time.perf_counter() - start
    await asyncio.sleep(cfg.settle)
    phase.rss = await sample_rss(daemon.pid, cfg.samples, cfg.sample_interval)
    if while_held is not None:
        await while_held()
    for i, held in enumerate(helds):
        if not held.error and held.call is not None and held.call.done():
            held.error = f"ended while held: {held.call.code().name}"
        if held.error:
            phase.failures.append(f"{label} stream {i}: {held.error}")
        elif held.first_delta is None and not phase.failures:
            phase.failures.append(f"{label} stream {i}: no first delta")
    phase.first_delta = [h.first_delta for h in helds if h.first_delta is not None]
    closing = time.perf_counter()
    for held in helds:
        if held.call is not None:
            held.call.cancel()
    await client.close()
    await wait_quiet(daemon.pid, min(time_limit, 120.0), cfg.quiet_interval)
    phase.quiet_s = time.perf_counter() - closing
    phase.rss_closed = await sample_rss(daemon.pid, cfg.samples, cfg.sample_interval)
    return phase


async def measure_streams(daemon: Daemon, cfg: Config, deadline: Deadline) -> dict[str, Any]:
    log(f"idle streams: warm-up ({cfg.warmup_streams} held streams), then the baseline")
    warm = await hold_streams(
        daemon, max(cfg.warmup_streams, cfg.providers), cfg, deadline.limit(cfg.timeout), "warm"
    )
    failures = list(warm.failures)
    baseline = await sample_rss(daemon.pid, cfg.samples, cfg.sample_interval)
    phases = []
    for n in sorted(cfg.streams):
        log(f"  N={n:<6} opening (at most {cfg.open_concurrency} at a time)")
        phase = await hold_streams(daemon, n, cfg, deadline.limit(cfg.timeout), f"idle{n}")
        log(
            f"  N={n:<6} {phase.rss.get('VmRSS', math.nan) / KIB_PER_MIB:,.1f} MiB held, "
            f"opened in {phase.open_s:.1f} s, quiet {phase.quiet_s:.1f} s after closing"
        )
        phases.append(phase)
        failures += phase.failures
    return {"baseline": baseline, "phases": phases, "failures": failures}


def summarize_streams(result: dict[str, Any]) -> dict[str, Any]:
    base = result["baseline"]["VmRSS"]
    rows = []
    previous: tuple[int, float] | None = None
    for p in result["phases"]:
        rss = p.rss.get("VmRSS", math.nan)
        over = rss - base
        marginal = (rss - previous[1]) / (p.streams - previous[0]) if previous else math.nan
        rows.append(
            {
                "streams": p.streams,
                "open_s": p.open_s,
                "first_delta_p50_ms": statistics.median(p.first_delta) * 1000
                if p.first_delta
                else math.nan,
                "rss_mib": rss / KIB_PER_MIB,
                "rss_anon_mib": p.rss.get("RssAnon", math.nan) / KIB_PER_MIB,
                "over_baseline_mib": over / KIB_PER_MIB,
                "kib_per_stream": over / p.streams,
                "marginal_kib_per_stream": marginal,
                "rss_closed_mib": p.rss_closed.get("VmRSS", math.nan) / KIB_PER_MIB,
                "quiet_s": p.quiet_s,
                "failed": len(p.failures),
            }
        )
        previous = (p.streams, rss)
    return {
        "baseline_mib": base / KIB_PER_MIB,
        "baseline_anon_mib": result["baseline"]["RssAnon"] / KIB_PER_MIB,
        "rows": rows,
    }


# --- part 2: growth over turns ----------------------------------------------------


async def run_turns(
    client: Client, first: int, count: int, cfg: Config, time_limit: float
) -> list[StreamResult]:
    """Turns ``first`` .. ``first + count - 1``, ``cfg.turn_concurrency`` at a time."""
    indices = iter(range(first, first + count))
    results: list[StreamResult] = []
    model = model_for(cfg.turn_deltas)

    async def worker(w: int) -> None:
        stub = client.stubs[w % len(client.stubs)]
        for i in indices:  # shared: each worker takes the next turn
            request = router_pb2.RunRequest(
                end_user_id=f"turns-{i % cfg.users}", message=MESSAGE, model=model
            )
            results.append(
                await grpc_stream(stub, request, client.metadata, cfg.turn_deltas, time_limit)
            )

    workers = (worker(w) for w in range(min(cfg.turn_concurrency, count)))
    try:
        await asyncio.wait_for(asyncio.gather(*workers), time_limit)
    except TimeoutError:
        results.append(StreamResult(error=f"batch timed out after {time_limit:g} s"))
    return results


async def measure_turns(daemon: Daemon, cfg: Config, deadline: Deadline) -> dict[str, Any]:
    client = Client(daemon)
    await client.open(math.ceil(cfg.turn_concurrency / 25))
    samples: list[dict[str, Any]] = []
    failures: list[str] = []
    done = 0
    total = cfg.warmup_turns + cfg.turns
    try:
        samples.append(
            {"turns": 0, "warmup": True, "turns_per_s": math.nan}
            | await sample_rss(daemon.pid, cfg.samples, cfg.sample_interval)
        )
        while done < total:
            batch = min(cfg.sample_every, total - done)
            if done < cfg.warmup_turns:  # the last warm-up sample falls on its end
                batch = min(batch, cfg.warmup_turns - done)
            start = time.perf_counter()
            results = await run_turns(client, done, batch, cfg, deadline.limit(cfg.timeout))
            rate = batch / (time.perf_counter() - start)
            failures += [
                f"turn batch {done}+{batch}: {r.error or 'ended without a Finish event'}"
                for r in results
                if not r.ok
            ]
            done += batch
            await asyncio.sleep(cfg.turn_settle)
            sample = {"turns": done, "warmup": done <= cfg.warmup_turns, "turns_per_s": rate}
            samples.append(sample | await sample_rss(daemon.pid, cfg.samples, cfg.sample_interval))
            log(
                f"  {done:>6} turns  {sample_mib(samples[-1]):,.1f} MiB  ({rate:,.0f} turns/s)"
                + ("  warm-up" if sample["warmup"] else "")
            )
    finally:
        await client.close()
    return {"samples": samples, "failures": failures}


def sample_mib(sample: dict[str, Any]) -> float:
    return float(sample["VmRSS"]) / KIB_PER_MIB


def summarize_turns(result: dict[str, Any], cfg: Config) -> dict[str, Any]:
    samples = result["samples"]
    after = [s for s in samples if s["turns"] >= cfg.warmup_turns]
    out: dict[str, Any] = {
        "samples": [
            {
                "turns": s["turns"],
                "warmup": s["warmup"],
                "rss_mib": sample_mib(s),
                "rss_anon_mib": s["RssAnon"] / KIB_PER_MIB,
                "turns_per_s": s["turns_per_s"],
            }
            for s in samples
        ],
        "growth_mib": math.nan,
        "growth_mib_per_1k_turns": math.nan,
        "slope_mib_per_1k_turns": math.nan,
        "max_over_warm_mib": math.nan,
        "measured_turns": 0,
    }
    measured = after[-1]["turns"] - after[0]["turns"] if after else 0
    out["measured_turns"] = measured
    out["growth_measured"] = len(after) >= 3 and measured >= MIN_GROWTH_TURNS
    if out["growth_measured"]:
        growth = sample_mib(after[-1]) - sample_mib(after[0])
        xs = [s["turns"] / 1000 for s in after]
        ys = [sample_mib(s) for s in after]
        out |= {
            "measured_turns": measured,
            "growth_mib": growth,
            "growth_mib_per_1k_turns": growth / measured * 1000,
            "slope_mib_per_1k_turns": statistics.linear_regression(xs, ys).slope,
            "max_over_warm_mib": max(ys) - ys[0],
        }
    out["growth_mb_per_10k_turns"] = (
        out["growth_mib"] * MIB / MB / measured * GROWTH_TARGET_TURNS
        if out["growth_measured"]
        else math.nan
    )
    return out


def verdict(value: float, limit: float, unit: str) -> str:
    """``met (X, Y under the target)`` or ``missed by Y (X)``: ``value`` against ``limit``."""
    if math.isnan(value):
        return "not measured"
    if value <= limit:
        return f"met ({value:,.1f} {unit}, {limit - value:,.1f} {unit} under the target)"
    return f"MISSED by {value - limit:,.1f} {unit} ({value:,.1f} {unit})"


def streams_target(s: dict[str, Any]) -> str:
    """The idle-streams target line: judged on the row of 10,000 streams, if measured."""
    row = next((r for r in s["rows"] if r["streams"] == TARGET_STREAMS), None)
    target = f"target: {TARGET_STREAMS:,} idle open streams under {TARGET_MB} MB RSS: "
    if row is None:
        largest = max((r["streams"] for r in s["rows"]), default=0)
        return target + f"not measured (the largest N here is {largest:,})"
    rss_mb = row["rss_mib"] * MIB / MB
    # What a held stream may cost over this run's baseline for the target to hold.
    allowed = (TARGET_MB * MB - s["baseline_mib"] * MIB) / TARGET_STREAMS / 1024
    return (
        target
        + verdict(rss_mb, TARGET_MB, "MB")
        + f"; per stream {row['kib_per_stream']:.1f} KiB against the {allowed:.1f} KiB "
        f"the target leaves over this baseline"
    )


def growth_target(t: dict[str, Any]) -> str:
    target = f"target: growth after warm-up <= {GROWTH_TARGET_MB:g} MB per 10,000 turns: "
    if not t.get("growth_measured"):
        return target + (
            f"not measured ({t['measured_turns']:,} turns after the warm-up; "
            f"at least {MIN_GROWTH_TURNS:,} are needed to tell growth from the warm-up)"
        )
    return target + verdict(t["growth_mb_per_10k_turns"], GROWTH_TARGET_MB, "MB")


# --- report ------------------------------------------------------------------------


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, header: bool = True) -> None:
    m, cfg = report["machine"], report["config"]
    if header:
        print(f"date     {m['date']}   git {m['git']}", file=out)
        print(
            f"machine  nproc {m['nproc']} (cpu_count {m['cpu_count']}), {m['cpu_model']}, "
            f"{m['platform']}, open files {m['open_files']}",
            file=out,
        )
        print(
            f"versions python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}",
            file=out,
        )
        print(f"command  {m['command']}", file=out)
        print(f"config   {json.dumps(cfg)}", file=out)
    if s := report.get("streams"):
        print(
            f"\nIdle open streams: Run streams whose upstream sent its first delta and holds "
            f"the turn open, {cfg['streams_per_channel']} per gRPC connection, "
            f"{cfg['providers']} provider(s). interlockd VmRSS, median of {cfg['samples']} "
            f"reads {cfg['sample_interval']:g} s apart, "
            f"{cfg['settle']:g} s after every stream got its first delta. Baseline (after a "
            f"warm-up of held streams, before the first N): {s['baseline_mib']:,.1f} MiB "
            f"(anon {s['baseline_anon_mib']:,.1f} MiB). marginal = between successive N.",
            file=out,
        )
        headers = ["N", "open s", "1st delta p50", "RSS MiB", "anon MiB", "over base MiB"]
        headers += ["KiB/stream", "marginal KiB/stream", "closed MiB", "quiet s", "failed"]
        cells = [
            [
                f"{r['streams']:,}",
                _fmt(r["open_s"], ".1f"),
                _fmt(r["first_delta_p50_ms"], ".1f") + " ms",
                _fmt(r["rss_mib"], ",.1f"),
                _fmt(r["rss_anon_mib"], ",.1f"),
                _fmt(r["over_baseline_mib"], ",.1f"),
                _fmt(r["kib_per_stream"], ".1f"),
                _fmt(r["marginal_kib_per_stream"], ".1f"),
                _fmt(r["rss_closed_mib"], ",.1f"),
                _fmt(r["quiet_s"], ".1f"),
                str(r["failed"]),
            ]
            for r in s["rows"]
        ]
        _table(headers, cells, out)
        print(streams_target(s), file=out)
    if t := report.get("turns"):
        print(
            f"\nGrowth over turns: {cfg['turn_deltas']} deltas per turn, a new conversation "
            f"each, {cfg['turn_concurrency']} at a time, end users cycling over "
            f"{cfg['users']}; interlockd VmRSS after every batch of {cfg['sample_every']:,} "
            f"(no turn in flight), the first {cfg['warmup_turns']:,} turns the warm-up.",
            file=out,
        )
        headers = ["turns", "", "RSS MiB", "anon MiB", "vs warm MiB", "turns/s"]
        warm = next((r for r in t["samples"] if r["turns"] >= cfg["warmup_turns"]), None)
        if not t.get("growth_measured"):
            warm = None
        cells = [
            [
                f"{r['turns']:,}",
                "warm-up" if r["warmup"] and r["turns"] < cfg["warmup_turns"] else "",
                _fmt(r["rss_mib"], ",.1f"),
                _fmt(r["rss_anon_mib"], ",.1f"),
                f"{r['rss_mib'] - warm['rss_mib']:+.2f}"
                if warm and r["turns"] >= warm["turns"]
                else "",
                _fmt(r["turns_per_s"], ",.0f"),
            ]
            for r in t["samples"]
        ]
        if warm is None:  # a difference from the warm-up's end would read as growth
            headers.remove("vs warm MiB")
            cells = [row[:4] + row[5:] for row in cells]
        _table(headers, cells, out)
        if t.get("growth_measured"):
            print(
                f"growth after warm-up: {_fmt(t['growth_mib'], '+.2f')} MiB over "
                f"{t['measured_turns']:,} turns = "
                f"{_fmt(t['growth_mib_per_1k_turns'], '+.3f')} MiB per 1k turns "
                f"(least-squares slope {_fmt(t['slope_mib_per_1k_turns'], '+.3f')} MiB per 1k; "
                f"highest sample {_fmt(t['max_over_warm_mib'], '+.2f')} MiB over the end of "
                "the warm-up)",
                file=out,
            )
        else:
            print(
                "growth after warm-up: not measured in a run this short "
                f"({t['measured_turns']:,} turns after the warm-up cannot tell growth from "
                "the warm-up's tail; the full run measures 10,000)",
                file=out,
            )
        print(growth_target(t), file=out)
    for failure in report["failures"][:20]:
        print(f"FAILED {failure}", file=out)
    if len(report["failures"]) > 20:
        print(f"... and {len(report['failures']) - 20} more failures", file=out)


def write_csv(report: dict[str, Any], path: Path) -> None:
    """Every RSS sample: one row per idle-streams phase and per turns batch."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["part", "streams", "turns", "warmup", "rss_kib", "rss_anon_kib"])
        if s := report.get("streams"):
            writer.writerow(
                [
                    "streams",
                    0,
                    "",
                    "",
                    round(s["baseline_mib"] * KIB_PER_MIB),
                    round(s["baseline_anon_mib"] * KIB_PER_MIB),
                ]
            )
            for r in s["rows"]:
                anon = r["rss_anon_mib"] * KIB_PER_MIB
                row = [r["streams"], "", "", round(r["rss_mib"] * KIB_PER_MIB), round(anon)]
                writer.writerow(["streams", *row])
        if t := report.get("turns"):
            for r in t["samples"]:
                rss, anon = r["rss_mib"] * KIB_PER_MIB, r["rss_anon_mib"] * KIB_PER_MIB
                writer.writerow(
                    ["turns", "", r["turns"], int(r["warmup"]), round(rss), round(anon)]
                )


# --- main --------------------------------------------------------------------------


async def run_benchmark(
    children: Children, workdir: Path, port: int, cfg: Config
) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    report: dict[str, Any] = {}
    failures: list[str] = []
    try:
        if "streams" in cfg.parts:
            log(f"starting interlockd with {cfg.providers} provider(s) for the idle streams")
            daemon = start_daemon(children, workdir / "streams", port, cfg.providers)
            try:
                result = await measure_streams(daemon, cfg, deadline)
            finally:
                daemon.stop()  # not to share the machine with the next part
            failures += result["failures"]
            report["streams"] = summarize_streams(result)
        if "turns" in cfg.parts:
            log("starting a fresh interlockd for the turns")
            daemon = start_daemon(children, workdir / "turns", port, 1)
            result = await measure_turns(daemon, cfg, deadline)
            failures += result["failures"]
            report["turns"] = summarize_turns(result, cfg)
    except BudgetExceeded as exc:
        failures.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    return report | {"failures": failures, "ok": not failures}


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="interlockd's RSS: per idle open stream, and growth over many turns"
    )
    parser.add_argument("--smoke", action="store_true", help="200 streams, 100 + 300 turns, < 30 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--csv", type=Path, help="also write every RSS sample to this CSV file")
    bench_results.add_options(parser)
    parser.add_argument("--streams", help="comma-separated N values (default 1000,5000,10000)")
    parser.add_argument("--turns", type=int, help="measured turns after the warm-up (10000)")
    parser.add_argument("--warmup-turns", type=int, help="(default 1000)")
    parser.add_argument("--sample-every", type=int, help="turns between RSS samples (1000)")
    parser.add_argument("--turn-concurrency", type=int, help="turns at a time (default 8)")
    parser.add_argument("--users", type=int, help="end users the turns cycle over (1000)")
    parser.add_argument("--streams-per-channel", type=int, help="(default 100)")
    parser.add_argument("--streams-per-provider", type=int, help="(default 1000, the pool size)")
    parser.add_argument("--open-concurrency", type=int, help="streams opening at once (100)")
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keys: tuple[str, ...] = ("turns", "warmup_turns", "sample_every", "turn_concurrency")
    keys += ("users", "streams_per_channel", "streams_per_provider", "open_concurrency")
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in (*keys, "timeout", "budget") if getattr(args, k) is not None
    }
    if args.streams:
        overrides["streams"] = tuple(int(n) for n in args.streams.split(","))
    if args.parts:
        overrides["parts"] = tuple(p for p in PARTS if p in args.parts.split(","))
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if (
        min(cfg.streams) < 1
        or min(cfg.turns, cfg.sample_every, cfg.turn_concurrency, cfg.open_concurrency) < 1
        or min(cfg.streams_per_channel, cfg.streams_per_provider) < 1
        or cfg.warmup_turns < 0
        or cfg.users < cfg.turn_concurrency
        or not cfg.parts
    ):
        parser.error(
            "N, turns, sample-every, concurrencies and per-channel/provider counts must be "
            ">= 1, users >= turn concurrency, and parts not empty"
        )
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    if args.serve_upstream:
        asyncio.run(serve_upstream())
        return 0
    open_files = raise_open_files(2 * max(cfg.streams) + 1000)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-memory-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log("starting the upstream")
            port = start_upstream(children)
            report = asyncio.run(run_benchmark(children, Path(tmp), port, cfg))
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
    report = {
        "machine": machine_info() | {"open_files": f"{open_files[0]} (hard {open_files[1]})"},
        "config": dataclasses.asdict(cfg) | {"providers": cfg.providers},
        **report,
    }
    if args.csv:
        write_csv(report, args.csv)
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if out := bench_results.directory("memory", args):
        write_csv(report, out / "rss.csv")
        publish(report, out)
    return 0 if report["ok"] else 1


def publish(report: dict[str, Any], out: Path) -> Path:
    buf = io.StringIO()
    print_report(report, buf, header=False)
    body = (
        f"Open files allowed: {report['machine']['open_files']}. Every RSS sample: `rss.csv`.\n\n"
    )
    body += "## Results\n\n" + bench_results.text_block(buf.getvalue())
    title = "Memory: RSS per idle open stream and growth over turns"
    return bench_results.publish(out, title, report, body, lambda d: plots(report, d))


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """RSS against N idle streams with the target; RSS over turns."""
    paths = []
    if (s := report.get("streams")) and s["rows"]:
        fig, (ax,) = bench_results.figure(width=7.0)
        rows = s["rows"]
        ns = [0] + [r["streams"] for r in rows]
        ax.plot(ns, [s["baseline_mib"]] + [r["rss_mib"] for r in rows], marker="o", label="held")
        ax.plot(
            [r["streams"] for r in rows],
            [r["rss_closed_mib"] for r in rows],
            marker="x",
            linestyle="",
            label="after closing them",
        )
        top = max(ns[-1], 10_000)
        floor = [s["baseline_mib"], s["baseline_mib"] + top * FLOOR_KB_PER_STREAM * 1000 / MIB]
        ax.plot(
            [0, top],
            floor,
            color="tab:gray",
            linestyle=":",
            label="baseline + bare floor's 24 KB/stream (benchmarks/README.md)",
        )
        ax.axhline(
            TARGET_MB * MB / MIB,
            color="tab:red",
            linestyle="--",
            label=f"target: {TARGET_MB} MB at 10,000",
        )
        ax.set_xlabel("idle open streams (N)")
        ax.set_ylabel("interlockd RSS, MiB")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        paths.append(bench_results.save(fig, out, "rss_streams", "RSS with N idle open streams"))
    if (t := report.get("turns")) and t["samples"]:
        fig, (ax,) = bench_results.figure(width=7.0)
        samples = t["samples"]
        ax.plot(
            [x["turns"] for x in samples],
            [x["rss_mib"] for x in samples],
            marker=".",
            label="VmRSS",
        )
        ax.plot(
            [x["turns"] for x in samples],
            [x["rss_anon_mib"] for x in samples],
            marker=".",
            label="RssAnon",
        )
        warm = report["config"]["warmup_turns"]
        if warm:
            ax.axvspan(0, warm, color="tab:orange", alpha=0.15, label="warm-up")
        ax.set_xlabel("turns completed")
        ax.set_ylabel("interlockd memory, MiB")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        growth = t["growth_mib"]
        title = "RSS over turns" + (
            f" (growth after warm-up {growth:+.2f} MiB)" if not math.isnan(growth) else ""
        )
        paths.append(bench_results.save(fig, out, "rss_turns", title))
    return paths


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
