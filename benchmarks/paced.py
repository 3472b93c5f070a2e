"""Paced streams: what interlockd adds to a stream whose provider paces its deltas.

The upstream (``upstream.py``, model ``bench-p20ms-k64``) streams N deltas
spaced by a fixed interval (default 64 every 20 ms, the method of
benchmarks/README.md's "The floor, the peers and the targets"). For every
concurrency C, in one run and interleaved (the first target rotating), the
same C streams are made

``direct``
    to the upstream itself, by a raw keep-alive HTTP/1.1 client that timestamps
    every SSE delta as it is read: what a client of the provider sees;
``bare``
    to the floor, ``bare_server.py``: a bare ``grpc.aio`` server pacing
    pre-built events on the same schedule (run_started and the first delta at
    once, then one delta every interval, a finish), timestamped as interlockd's:
    what grpc alone adds to the provider's schedule;
``interlockd``
    through interlockd's ``Run`` (full path: auth, admission, store writes,
    window recording) in front of the upstream, timestamping every
    ``text_delta`` event.

Figures per (target, C): time to the first delta (TTFD, p50/p99), the gaps
between consecutive deltas as received (p50/p99/max; deltas that arrive in
one read or one coalesced event count as gaps of 0), streams without a stall
(no gap above ``--stall-factor`` x the interval), deltas/s (all streams and
per stream), whole streams (call to end, p50/p99), events vs deltas received
(interlockd coalesces text deltas that queue up behind a write; with a paced
upstream none should queue), and the server's CPU over the phase and RSS at
its end (/proc). **Added** figures are target - direct in the same
repetition; **ratios** put interlockd's figures over its baselines, bare's
(the floor) and direct's, in the same repetition; medians over repetitions.

    .venv/bin/python benchmarks/paced.py              # C in {1, 100, 500, 1000}
    .venv/bin/python benchmarks/paced.py --smoke      # CI: C in {1, 10}, < 30 s
    .venv/bin/python benchmarks/paced.py --json

Every run also writes a results directory (report, JSON, plots; ``results.py``).
Every loop has a count and a time limit; the subprocesses are stopped on exit.
Exits 1 if any stream fails (error, wrong seq, missing deltas, no Finish) or
the time budget runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import grpc
import orjson

from interlock.v1 import router_pb2, router_pb2_grpc
from interlock.v1.events_pb2 import AgentEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
from results import machine_info, without_nan
from throughput import (
    MESSAGE,
    TOKEN_CHARS,
    BudgetExceeded,
    ChildFailed,
    Children,
    Deadline,
    _fmt,
    _table,
    cpu_seconds,
    log,
    percentile,
    print_header,
    raise_open_files,
    signals_interrupt,
    start_interlockd,
    start_script,
    wait_for_port,
)

TOKEN_JSON = b'"tok "'  # the text of every delta, as it appears in an SSE event's JSON
TARGETS = ("direct", "bare", "interlockd")
SERVER = {"direct": "upstream", "bare": "bare", "interlockd": "interlockd"}  # whose CPU and RSS
# Where the gap distribution at the largest C is sampled, for its CDF (percent).
QUANTILES = (
    [q / 2 for q in range(198)]
    + [99 + q / 10 for q in range(10)]
    + [99.9 + q / 100 for q in range(11)]
)


@dataclass(frozen=True)
class Config:
    deltas: int = 64  # N, deltas per stream
    interval_ms: float = 20.0  # between deltas
    concurrency: tuple[int, ...] = (1, 100, 500, 1000)
    reps: int = 1
    stall_factor: float = 3.0  # a gap above factor x interval is a stall
    streams_per_channel: int = 25
    timeout: float = 120.0  # seconds per phase, also every stream's deadline
    budget: float = 1200.0  # seconds, the whole run
    pause: float = 1.0  # seconds between phases, to let the machine settle
    targets: tuple[str, ...] = TARGETS

    @property
    def stall_ms(self) -> float:
        return self.stall_factor * self.interval_ms

    @property
    def model(self) -> str:
        return f"bench-p{self.interval_ms:g}ms-k{self.deltas}"


SMOKE = Config(deltas=16, concurrency=(1, 10), timeout=10.0, budget=25.0, pause=0.2)


# --- one stream -------------------------------------------------------------------


@dataclass
class PacedResult:
    events: int = 0  # AgentEvents (gRPC) or SSE events (HTTP) received
    delta_events: int = 0  # of which carried text
    deltas: int = 0
    first_delta: float | None = None  # seconds from the call
    gaps: list[float] = field(default_factory=list)  # seconds, one per delta after the first
    duration: float = 0.0  # seconds, the call to the stream's end
    finished: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.finished and not self.error

    def received(self, deltas: int, now: float, start: float, last: float | None) -> float:
        """Record ``deltas`` deltas read at ``now``; return ``now`` as the new ``last``."""
        self.delta_events += 1
        if self.first_delta is None:
            self.first_delta = now - start
        if last is not None:  # the first of them, against the last delta before
            self.gaps.append(now - last)
        self.gaps.extend([0.0] * (deltas - 1))  # the others came with it
        self.deltas += deltas
        return now


async def via_stream(
    stub: router_pb2_grpc.AgentRouterStub,
    request: router_pb2.RunRequest,
    metadata: tuple[tuple[str, str], ...],
    deltas: int,
    time_limit: float,
) -> PacedResult:
    """One ``Run`` stream (interlockd's or the bare floor's), every text delta timestamped."""
    result = PacedResult()
    last_kind, last = "", None
    start = time.perf_counter()
    try:
        call = stub.Run(request, metadata=metadata, timeout=time_limit)
        while (event := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
            now = time.perf_counter()
            assert isinstance(event, AgentEvent)
            kind = event.WhichOneof("event") or ""
            result.events += 1
            if kind == "text_delta":
                last = result.received(len(event.text_delta.text) // TOKEN_CHARS, now, start, last)
            elif kind == "error":
                result.error = f"error event {event.error.code}: {event.error.message}"
            if event.seq != result.events and not result.error:
                result.error = f"seq {event.seq} at event {result.events}"
            last_kind = kind
    except grpc.aio.AioRpcError as exc:
        result.error = f"{exc.code().name}: {exc.details()}"
    result.duration = time.perf_counter() - start
    result.finished = last_kind == "finish"
    if result.ok and result.deltas != deltas:
        result.error = f"received {result.deltas} of {deltas} deltas"
    return result


class SseConnection:
    """A keep-alive raw HTTP/1.1 client of an OpenAI-compatible stream, timestamping deltas.

    The same for the upstream and LiteLLM: its per-event cost is what a client
    would pay either way, and small (no HTTP library, no JSON decoding).
    """

    def __init__(self, port: int, api_key: str = "", headers: Sequence[str] = ()) -> None:
        self._port = port
        self._auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
        # More header lines, "name: value": a gateway's routing, say.
        self._auth += "".join(f"{h}\r\n" for h in headers)
        self._requests: dict[str, bytes] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _request(self, model: str) -> bytes:
        if model not in self._requests:
            body = orjson.dumps(
                {
                    "model": model,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": MESSAGE}],
                }
            )
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n{self._auth}"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            self._requests[model] = head.encode() + body
        return self._requests[model]

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def stream(self, model: str, deltas: int, time_limit: float) -> PacedResult:
        result = PacedResult()
        start = time.perf_counter()
        try:
            if self._reader is None or self._reader.at_eof():  # the server closed it idle
                await self.close()
                await asyncio.wait_for(self.connect(), 10)
            await asyncio.wait_for(self._read(model, result), time_limit)
        except (OSError, TimeoutError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            await self.close()  # whatever was left unread would confuse the next stream
        result.duration = time.perf_counter() - start
        if result.ok and result.deltas != deltas:
            result.error = f"received {result.deltas} of {deltas} deltas"
        return result

    async def _read(self, model: str, result: PacedResult) -> None:
        assert self._reader is not None
        assert self._writer is not None
        start = time.perf_counter()
        self._writer.write(self._request(model))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status or b"chunked" not in head.lower():
            body = await asyncio.wait_for(self._reader.read(1 << 12), 1)
            raise ValueError(f"{status.decode(errors='replace')}: {body[:300]!r}")
        buf, last, done = b"", None, False
        while True:
            data = await self._reader.read(1 << 16)
            now = time.perf_counter()
            if not data:
                raise ConnectionError("the server closed the connection mid-stream")
            buf += data
            *events, buf = buf.split(b"\n\n")  # whole SSE events; the rest waits
            result.events += len(events)
            text = sum(e.count(TOKEN_JSON) for e in events)
            if text:
                last = result.received(text, now, start, last)
            done = done or any(b"[DONE]" in e for e in events)
            if buf.endswith(b"0\r\n\r\n"):  # the end of the chunked body
                break
        result.finished = done


# --- targets and phases --------------------------------------------------------


class Target(Protocol):
    name: str

    async def open(self, streams: int, model: str) -> None: ...
    async def stream(self, index: int, deltas: int, time_limit: float) -> PacedResult: ...
    async def close(self) -> None: ...


class Direct:
    """The upstream, called directly: the provider's own schedule as a client sees it."""

    name = "direct"

    def __init__(self, port: int) -> None:
        self._port = port
        self._model = ""
        self._connections: list[SseConnection] = []

    async def open(self, streams: int, model: str) -> None:
        self._model = model
        self._connections = [SseConnection(self._port) for _ in range(streams)]
        for c in self._connections:
            await asyncio.wait_for(c.connect(), 10)

    async def stream(self, index: int, deltas: int, time_limit: float) -> PacedResult:
        return await self._connections[index].stream(self._model, deltas, time_limit)

    async def close(self) -> None:
        for c in self._connections:
            await c.close()
        self._connections = []


class GrpcPaced:
    """``Run`` of an AgentRouter: interlockd (with its API key) or the bare floor."""

    def __init__(self, name: str, address: str, api_key: str, streams_per_channel: int) -> None:
        self.name, self.address, self.api_key = name, address, api_key
        self._per_channel = streams_per_channel
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[router_pb2_grpc.AgentRouterStub] = []
        self._model = ""

    async def open(self, streams: int, model: str) -> None:
        self._model = model
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        for _ in range(max(1, math.ceil(streams / self._per_channel))):
            channel = grpc.aio.insecure_channel(self.address, options=options)
            await asyncio.wait_for(channel.channel_ready(), 10)
            self._channels.append(channel)
            self._stubs.append(router_pb2_grpc.AgentRouterStub(channel))

    async def stream(self, index: int, deltas: int, time_limit: float) -> PacedResult:
        # One end user per concurrent stream; every Run starts a new conversation.
        request = router_pb2.RunRequest(
            end_user_id=f"paced-{index}", message=MESSAGE, model=self._model
        )
        stub = self._stubs[index % len(self._stubs)]
        return await via_stream(stub, request, self._metadata, deltas, time_limit)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        self._channels, self._stubs = [], []


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


@dataclass
class Phase:
    target: str
    streams: int
    rep: int
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over the phase
    rss_mb: dict[str, float] = field(default_factory=dict)  # at its end
    results: list[PacedResult] = field(default_factory=list)

    def failures(self) -> list[str]:
        label = f"{self.target} C={self.streams} rep {self.rep + 1}"
        return [
            f"{label} stream {i}: {r.error or 'ended without a Finish event'}"
            for i, r in enumerate(self.results)
            if not r.ok
        ]


async def run_phase(
    target: Target, phase: Phase, deltas: int, pids: dict[str, int], time_limit: float
) -> Phase:
    def cpu() -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in pids.items()} | {
            "client": time.process_time()
        }

    before = cpu()
    start = time.perf_counter()
    calls = (target.stream(i, deltas, time_limit) for i in range(phase.streams))
    try:
        phase.results = list(await asyncio.wait_for(asyncio.gather(*calls), time_limit + 5))
    except TimeoutError:
        phase.results = [PacedResult(error="phase timed out")] * phase.streams
    phase.wall = time.perf_counter() - start
    after = cpu()
    phase.cpu = {k: after[k] - before[k] for k in before}
    phase.rss_mb = {name: rss_mb(pid) for name, pid in pids.items()}
    return phase


def rotated(targets: Sequence[Target], k: int) -> list[Target]:
    """Start at a different target each time, so none always goes first."""
    k %= len(targets)
    return [*targets[k:], *targets[:k]]


async def run_benchmark(
    targets: Sequence[Target], pids: dict[str, int], cfg: Config
) -> dict[str, Any]:
    """Warm-up, then every (rep, C) with the targets one after another; the report."""
    deadline = Deadline(cfg.budget)
    phases: list[Phase] = []
    errors: list[str] = []
    try:
        for t in targets:
            await t.open(max(cfg.concurrency), cfg.model)
        warm = min(max(cfg.concurrency), 50)
        log(f"warm-up: {warm} streams of each target")
        for t in targets:
            limit = deadline.limit(cfg.timeout)
            await run_phase(t, Phase(t.name, warm, -1), cfg.deltas, pids, limit)
        step = 0
        for rep in range(cfg.reps):
            for streams in cfg.concurrency:
                for t in rotated(targets, step):
                    log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<5} {t.name}")
                    await asyncio.sleep(cfg.pause)
                    phase = Phase(t.name, streams, rep)
                    limit = deadline.limit(cfg.timeout)
                    phases.append(await run_phase(t, phase, cfg.deltas, pids, limit))
                step += 1
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for t in targets:
            await t.close()
    return build_report(phases, cfg, errors)


# --- summaries -------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> float:
    return percentile((v * 1000 for v in values), q)


def _ratio(a: float, b: float) -> float:
    """a / b; NaN unless both are finite and b > 0 (a ratio to nothing says nothing)."""
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return math.nan
    return a / b


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(statistics.median(values)) if values else math.nan


def summarize(phase: Phase, cfg: Config) -> dict[str, Any]:
    rs = phase.results
    gaps = [g for r in rs for g in r.gaps]
    firsts = [r.first_delta for r in rs if r.first_delta is not None]
    stall = cfg.stall_ms / 1000
    server = SERVER[phase.target]
    deltas = sum(r.deltas for r in rs)
    cpu = phase.cpu.get(server, math.nan)
    return {
        "target": phase.target,
        "streams": phase.streams,
        "rep": phase.rep,
        "wall_s": phase.wall,
        "failed": sum(not r.ok for r in rs),
        "ttfd_p50_ms": _ms(firsts, 50),
        "ttfd_p99_ms": _ms(firsts, 99),
        "gap_p50_ms": _ms(gaps, 50),
        "gap_p99_ms": _ms(gaps, 99),
        "gap_max_ms": max(gaps) * 1000 if gaps else math.nan,
        "stall_free": sum(r.ok and all(g <= stall for g in r.gaps) for r in rs),
        "events": sum(r.events for r in rs),
        "delta_events": sum(r.delta_events for r in rs),
        "deltas": deltas,
        "deltas_per_s": deltas / phase.wall if phase.wall else math.nan,
        "deltas_per_s_per_stream": deltas / phase.wall / phase.streams if phase.wall else math.nan,
        # whole streams, call to end: what a load generator like ghz reports
        "streams_per_s": len(rs) / phase.wall if phase.wall else math.nan,
        "stream_p50_ms": _ms([r.duration for r in rs], 50),
        "stream_p99_ms": _ms([r.duration for r in rs], 99),
        "server": server,
        "server_cpu_s": cpu,
        "server_cpu_pct": 100 * cpu / phase.wall if phase.wall else math.nan,
        "server_cpu_us_per_delta": 1e6 * cpu / deltas if deltas else math.nan,
        "server_rss_mb": phase.rss_mb.get(server, math.nan),
        "upstream_cpu_s": phase.cpu.get("upstream", math.nan),
        "client_cpu_s": phase.cpu.get("client", math.nan),
    }


Pair = tuple[dict[str, Any], dict[str, Any]]  # two targets' rows of one (C, rep)


def _pairs(rows: Sequence[dict[str, Any]], a: str, b: str, streams: int) -> list[Pair]:
    by = {(r["target"], r["streams"], r["rep"]): r for r in rows}
    return [
        (by[(a, streams, rep)], by[(b, streams, rep)])
        for rep in sorted({r["rep"] for r in rows})
        if (a, streams, rep) in by and (b, streams, rep) in by
    ]


def added(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """bare - direct and interlockd - direct per (C, rep), median over reps."""
    out = []
    for streams in dict.fromkeys(r["streams"] for r in rows):
        for target in ("bare", "interlockd"):
            pairs = _pairs(rows, target, "direct", streams)
            if not pairs:
                continue

            def diff(key: str, pairs: list[Pair] = pairs) -> float:
                return _median([t[key] - d[key] for t, d in pairs])

            out.append(
                {
                    "target": target,
                    "streams": streams,
                    "reps": len(pairs),
                    "added_ttfd_p50_ms": diff("ttfd_p50_ms"),
                    "added_ttfd_p99_ms": diff("ttfd_p99_ms"),
                    "added_gap_p50_ms": diff("gap_p50_ms"),
                    "added_gap_p99_ms": diff("gap_p99_ms"),
                    "throughput_vs_direct": _median(
                        [_ratio(t["deltas_per_s"], d["deltas_per_s"]) for t, d in pairs]
                    ),
                    "stall_free": min(t["stall_free"] for t, _ in pairs),
                    "direct_stall_free": min(d["stall_free"] for _, d in pairs),
                    "deltas_per_event": _median(
                        [
                            t["deltas"] / t["delta_events"] if t["delta_events"] else math.nan
                            for t, _ in pairs
                        ]
                    ),
                }
            )
    return out


RATIO_KEYS = (  # interlockd's figure over its baseline's, same rep
    ("deltas_per_s", "deltas/s"),
    ("ttfd_p50_ms", "TTFD p50"),
    ("ttfd_p99_ms", "TTFD p99"),
    ("gap_p99_ms", "gap p99"),
    ("stall_free", "stall-free"),
    ("server_cpu_us_per_delta", "server CPU/delta"),
)


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """interlockd's figures over bare's and over direct's, per (C, rep), median over reps.

    Also interlockd's added time over the floor's added time (both vs direct):
    how many times what grpc alone adds interlockd adds.
    """
    by = {(r["target"], r["streams"], r["rep"]): r for r in rows}
    reps = sorted({r["rep"] for r in rows})
    out = []
    for streams in dict.fromkeys(r["streams"] for r in rows if r["target"] == "interlockd"):
        row: dict[str, Any] = {"streams": streams}
        for base in ("bare", "direct"):
            pairs = _pairs(rows, "interlockd", base, streams)
            for key, _ in RATIO_KEYS:
                if base == "direct" and key == "server_cpu_us_per_delta":
                    continue  # the upstream's CPU per delta is no baseline for a router's
                row[f"{key}_vs_{base}"] = (
                    _median([_ratio(i[key], b[key]) for i, b in pairs]) if pairs else math.nan
                )
        triples = [
            (
                by[("interlockd", streams, rep)],
                by[("bare", streams, rep)],
                by[("direct", streams, rep)],
            )
            for rep in reps
            if all((t, streams, rep) in by for t in TARGETS)
        ]
        for key in ("ttfd_p50_ms", "ttfd_p99_ms", "gap_p99_ms"):
            row[f"added_{key}_vs_bare"] = _median(
                [_ratio(i[key] - d[key], b[key] - d[key]) for i, b, d in triples]
            )
        out.append(row)
    return out


def gap_cdf(phases: Sequence[Phase]) -> dict[str, Any]:
    """Each target's gaps at the largest C (its last rep), at QUANTILES, in ms."""
    if not phases:
        return {}
    top = max(p.streams for p in phases)
    out: dict[str, Any] = {"streams": top, "quantiles": list(QUANTILES), "gaps_ms": {}}
    for p in phases:  # in order: a later rep replaces an earlier one
        if p.streams == top:
            gaps = [g for r in p.results for g in r.gaps]
            if gaps:  # nearest rank: q = 0 is the smallest, 100 the largest
                out["gaps_ms"][p.target] = [_ms(gaps, q) for q in QUANTILES]
    return out


def build_report(phases: Sequence[Phase], cfg: Config, errors: list[str]) -> dict[str, Any]:
    rows = [summarize(p, cfg) for p in phases]
    failures = errors + [f for p in phases for f in p.failures()]
    return {
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg) | {"model": cfg.model, "stall_ms": cfg.stall_ms},
        "phases": rows,
        "added": added(rows),
        "ratios": ratios(rows),
        "gap_cdf": gap_cdf(phases),
        "failures": failures,
        "ok": not failures,
    }


# --- report ----------------------------------------------------------------------


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, header: bool = True) -> None:
    cfg = report["config"]
    if header:
        print_header(report["machine"], cfg, out)
    print(
        f"\nPaced upstream: {cfg['deltas']} deltas every {cfg['interval_ms']:g} ms "
        f"(model {cfg['model']}); a stream stalls if a gap between deltas exceeds "
        f"{cfg['stall_ms']:g} ms ({cfg['stall_factor']:g} x the interval). "
        "TTFD = call to first delta; gaps pooled over all streams; stream = call to end; "
        "server = the upstream for direct, else the target's process; CPU over the phase, "
        "RSS at its end; times in ms.",
        file=out,
    )
    headers = ["target", "C", "rep", "TTFD p50", "TTFD p99", "gap p50", "gap p99", "gap max"]
    headers += ["stall-free", "deltas/s", "per stream", "stream p50", "stream p99"]
    headers += ["events", "deltas", "server CPU", "RSS MB", "failed", "wall s"]
    cells = [
        [
            r["target"],
            str(r["streams"]),
            str(r["rep"] + 1),
            *(_fmt(r[k], ".2f") for k in ("ttfd_p50_ms", "ttfd_p99_ms")),
            *(_fmt(r[k], ".2f") for k in ("gap_p50_ms", "gap_p99_ms", "gap_max_ms")),
            f"{r['stall_free']}/{r['streams']}",
            _fmt(r["deltas_per_s"], ",.0f"),
            _fmt(r["deltas_per_s_per_stream"], ",.1f"),
            *(_fmt(r[k], ",.0f") for k in ("stream_p50_ms", "stream_p99_ms")),
            f"{r['events']:,}",
            f"{r['deltas']:,}",
            f"{_fmt(r['server_cpu_s'], '.2f')} s ({_fmt(r['server_cpu_pct'], '.0f')}%)",
            _fmt(r["server_rss_mb"], ".0f"),
            str(r["failed"]),
            _fmt(r["wall_s"], ".1f"),
        ]
        for r in report["phases"]
    ]
    _table(headers, cells, out)
    print("\nAdded vs direct (target - direct, same rep, median over reps; ms)", file=out)
    headers = ["target", "C", "TTFD p50", "TTFD p99", "gap p50", "gap p99", "thr vs direct"]
    headers += ["stall-free", "direct stall-free", "deltas/text event"]
    cells = [
        [
            a["target"],
            str(a["streams"]),
            *(_fmt(a[k], "+.2f") for k in ("added_ttfd_p50_ms", "added_ttfd_p99_ms")),
            *(_fmt(a[k], "+.2f") for k in ("added_gap_p50_ms", "added_gap_p99_ms")),
            _fmt(a["throughput_vs_direct"], ".2f"),
            f"{a['stall_free']}/{a['streams']}",
            f"{a['direct_stall_free']}/{a['streams']}",
            _fmt(a["deltas_per_event"], ".3f"),
        ]
        for a in report["added"]
    ]
    _table(headers, cells, out)
    if report["ratios"]:
        print(
            "\ninterlockd as a ratio to its baselines (same rep, median over reps): x bare "
            "= over the floor's figure, x direct = over the upstream's; added x bare = "
            "interlockd's added time over the floor's added time (both vs direct)",
            file=out,
        )
        headers = ["C"]
        keys = []
        for base in ("bare", "direct"):
            for key, label in RATIO_KEYS:
                if f"{key}_vs_{base}" in report["ratios"][0]:
                    headers.append(f"{label} x {base}")
                    keys.append(f"{key}_vs_{base}")
        for key, label in (("ttfd_p50_ms", "TTFD p50"), ("gap_p99_ms", "gap p99")):
            headers.append(f"added {label} x bare")
            keys.append(f"added_{key}_vs_bare")
        cells = [
            [str(r["streams"]), *(_fmt(r.get(k), ".2f") for k in keys)] for r in report["ratios"]
        ]
        _table(headers, cells, out)
    print(
        "targets: added gap p99 <= 0.5 ms at C=500; >= 1,000 streams without a stall; "
        "added TTFE p50 <= 1.5 ms, p99 <= 5 ms at C=100",
        file=out,
    )
    for failure in report["failures"][:20]:
        print(f"FAILED {failure}", file=out)
    if len(report["failures"]) > 20:
        print(f"... and {len(report['failures']) - 20} more failures", file=out)


def report_text(report: dict[str, Any]) -> str:
    """The tables print_report prints (the header is the results directory's own)."""
    buf = io.StringIO()
    print_report(report, buf, header=False)
    return buf.getvalue()


def publish(report: dict[str, Any], out: Path) -> Path:
    body = "## Results\n\n" + bench_results.text_block(report_text(report))
    title = "Paced streams: interlockd vs the bare floor and the upstream called directly"
    return bench_results.publish(out, title, report, body, lambda d: plots(report, d))


# --- plots ---------------------------------------------------------------------------

STYLE = {
    "direct": {"color": "tab:green", "marker": "^"},
    "bare": {"color": "tab:gray", "marker": "s"},
    "interlockd": {"color": "tab:blue", "marker": "o"},
}


def _by_c(rows: Sequence[dict[str, Any]], target: str, key: str) -> tuple[list[int], list[float]]:
    """(C values, the median over reps of ``key``) of one target."""
    cs = sorted({r["streams"] for r in rows if r.get("target") == target})
    values = [
        _median([float(r[key]) for r in rows if r.get("target") == target and r["streams"] == c])
        for c in cs
    ]
    return cs, values


def plots(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """Added TTFD and gap by C; stall-free streams by C; interlockd's ratios; the gap CDF."""
    cfg, rows, add = report["config"], report["phases"], report["added"]
    if not rows:
        return []
    cs = sorted({r["streams"] for r in rows})
    paths = []
    pace = f"{cfg['deltas']} deltas every {cfg['interval_ms']:g} ms"

    fig, axes = bench_results.figure(ncols=3, width=5.0)
    panels = (
        ("added_ttfd_p50_ms", "added TTFD p50, ms", 1.5),
        ("added_ttfd_p99_ms", "added TTFD p99, ms", 5.0),
        ("added_gap_p99_ms", "added gap p99, ms", 0.5),
    )
    for ax, (key, label, target) in zip(axes, panels, strict=True):
        for t in ("bare", "interlockd"):
            xs, ys = _by_c(add, t, key)
            if xs:
                ax.plot(xs, ys, label=t, **STYLE[t])
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g} ms")
        bench_results.concurrency_axis(ax, cs)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel(f"{label} (vs direct, same rep)")
        ax.legend(fontsize="small")
    paths.append(
        bench_results.save(fig, out, prefix + "added", f"Added vs calling the upstream ({pace})")
    )

    fig, (sf, thr) = bench_results.figure(ncols=2)
    for t in TARGETS:
        xs, ys = _by_c(rows, t, "stall_free")
        if xs:
            sf.plot(xs, [100 * y / c for y, c in zip(ys, xs, strict=True)], label=t, **STYLE[t])
        xs, ys = _by_c(rows, t, "deltas_per_s")
        if xs:
            thr.plot(xs, ys, label=t, **STYLE[t])
    sf.set_ylabel(f"stall-free streams, % (no gap > {cfg['stall_ms']:g} ms)")
    sf.set_ylim(-2, 102)
    thr.set_ylabel("deltas/s, all streams")
    thr.set_yscale("log")
    ideal = [c * 1000 / cfg["interval_ms"] for c in cs]
    thr.plot(cs, ideal, color="black", linestyle=":", label="the upstream's pace x C")
    for ax in (sf, thr):
        bench_results.concurrency_axis(ax, cs)
        ax.legend(fontsize="small")
    paths.append(bench_results.save(fig, out, prefix + "stall_free", f"Streams sustained ({pace})"))

    if report["ratios"]:
        fig, (ax,) = bench_results.figure(width=7.0)
        for key, label in RATIO_KEYS:
            xs = [r["streams"] for r in report["ratios"]]
            ys = [r.get(f"{key}_vs_bare", math.nan) for r in report["ratios"]]
            if bench_results.finite(ys):
                ax.plot(xs, ys, marker="o", label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        bench_results.concurrency_axis(ax, cs)
        ax.set_yscale("log")
        bench_results.plain_numbers(ax)
        ax.set_ylabel("interlockd / bare (same rep, median)")
        ax.legend(fontsize="small")
        paths.append(
            bench_results.save(fig, out, prefix + "ratios_vs_bare", "interlockd over the floor")
        )

    cdf = report["gap_cdf"]
    if cdf and cdf["gaps_ms"]:
        fig, (ax,) = bench_results.figure(width=7.0)
        qs = [q / 100 for q in cdf["quantiles"]]
        for t in TARGETS:
            if gaps := cdf["gaps_ms"].get(t):
                ax.step(gaps, qs, where="post", label=t, color=STYLE[t]["color"])
        ax.axvline(cfg["stall_ms"], color="tab:red", linestyle="--", label="stall")
        ax.axvline(cfg["interval_ms"], color="black", linestyle=":", label="interval")
        # Linear below 1 ms (coalesced deltas are gaps of 0), logarithmic above.
        ax.set_xscale("symlog", linthresh=1.0)
        top = max([cfg["stall_ms"], *(max(g) for g in cdf["gaps_ms"].values())])
        ticks = [0.0] + [m * 10**e for e in range(6) for m in (1, 2, 5) if m * 10**e <= top]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("gap between deltas received, ms")
        ax.set_ylabel("fraction of gaps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        title = f"Gaps at C={cdf['streams']:,} ({pace})"
        paths.append(bench_results.save(fig, out, prefix + "gap_cdf", title))
    return paths


# --- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="interlockd vs the bare floor vs direct, with a paced upstream"
    )
    parser.add_argument("--smoke", action="store_true", help="C in {1, 10}, few deltas, < 30 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--deltas", type=int, help="N, deltas per stream (default 64)")
    parser.add_argument("--interval-ms", type=float, help="between deltas (default 20)")
    parser.add_argument("--concurrency", help="comma-separated C values (default 1,100,500,1000)")
    parser.add_argument("--reps", type=int, help="repetitions of every (target, C) (default 1)")
    parser.add_argument("--stall-factor", type=float, help="stall = gap > factor x interval")
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGETS)}")
    args = parser.parse_args(argv)
    keys = ("deltas", "interval_ms", "reps", "stall_factor", "streams_per_channel")
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in (*keys, "timeout", "budget") if getattr(args, k) is not None
    }
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.targets:
        names = args.targets.split(",")
        if set(names) - set(TARGETS):
            parser.error(f"--targets takes some of {','.join(TARGETS)}")
        overrides["targets"] = tuple(t for t in TARGETS if t in names)
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if min(cfg.concurrency) < 1 or cfg.deltas < 2 or cfg.reps < 1 or cfg.interval_ms <= 0:
        parser.error("concurrency and reps must be >= 1, deltas >= 2, interval > 0")
    if not cfg.targets:
        parser.error("--targets: none given")
    return cfg, args


def start_targets(
    children: Children, workdir: Path, cfg: Config
) -> tuple[list[Target], dict[str, int]]:
    """Start the upstream, the bare floor and interlockd as ``cfg.targets`` need them.

    Returns the targets (in TARGETS order) and the pids of every server by name.
    """
    targets: list[Target] = []
    pids: dict[str, int] = {}
    upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
    port = wait_for_port(upstream)
    pids["upstream"] = upstream.proc.pid
    if "direct" in cfg.targets:
        targets.append(Direct(port))
    if "bare" in cfg.targets:
        bare = start_script(children, "bare", "bare_server.py", cfg.deltas)
        address = f"127.0.0.1:{wait_for_port(bare)}"
        pids["bare"] = bare.proc.pid
        targets.append(GrpcPaced("bare", address, "", cfg.streams_per_channel))
    if "interlockd" in cfg.targets:
        workdir.mkdir(parents=True, exist_ok=True)
        daemon, key = start_interlockd(children, workdir, port, coalesce=True)
        address = f"127.0.0.1:{wait_for_port(daemon)}"
        pids["interlockd"] = daemon.proc.pid
        targets.append(GrpcPaced("interlockd", address, key, cfg.streams_per_channel))
    return targets, pids


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    raise_open_files(max(cfg.concurrency) + 1000)  # a connection per direct stream
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-paced-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log(f"starting the upstream and {', '.join(t for t in cfg.targets if t != 'direct')}")
            targets, pids = start_targets(children, Path(tmp), cfg)
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        report = asyncio.run(run_benchmark(targets, pids, cfg))
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if out := bench_results.directory("paced", args):
        publish(report, out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
