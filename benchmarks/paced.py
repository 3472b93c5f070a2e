"""Paced streams: what interlockd adds to a stream whose provider paces its deltas.

The upstream (``upstream.py``, model ``bench-p20ms-k64``) streams N deltas
spaced by a fixed interval (default 64 every 20 ms, PERFORMANCE.md's "method
worth copying"). For every concurrency C, in one run and interleaved, the same
C streams are made

``direct``
    to the upstream itself, by a raw keep-alive HTTP/1.1 client that timestamps
    every SSE delta as it is read: what a client of the provider sees;
``via``
    through interlockd's ``Run`` (full path: auth, admission, store writes,
    window recording), timestamping every ``text_delta`` event.

Figures per (target, C): time to the first delta (p50/p99), the gaps between
consecutive deltas as received (p50/p99/max; deltas that arrive in one read or
one coalesced event count as gaps of 0), streams without a stall (no gap above
``--stall-factor`` x the interval), events vs deltas received (interlockd
coalesces text deltas that queue up behind a write; with a paced upstream none
should queue), and interlockd's CPU over the phase and RSS at its end (/proc).
The **added** TTFE and gap p99 are via - direct in the same repetition.

    .venv/bin/python benchmarks/paced.py              # C in {1, 100, 500}
    .venv/bin/python benchmarks/paced.py --smoke      # CI: C in {1, 10}, < 30 s
    .venv/bin/python benchmarks/paced.py --json

Every loop has a count and a time limit; the subprocesses are stopped on exit.
Exits 1 if any stream fails (error, wrong seq, missing deltas, no Finish) or
the time budget runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import orjson

from interlock.v1 import router_pb2, router_pb2_grpc
from interlock.v1.events_pb2 import AgentEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    machine_info,
    percentile,
    signals_interrupt,
    start_interlockd,
    start_script,
    wait_for_port,
    without_nan,
)

TARGETS = ("direct", "via")


@dataclass(frozen=True)
class Config:
    deltas: int = 64  # N, deltas per stream
    interval_ms: float = 20.0  # between deltas
    concurrency: tuple[int, ...] = (1, 100, 500)
    reps: int = 1
    stall_factor: float = 3.0  # a gap above factor x interval is a stall
    streams_per_channel: int = 25
    timeout: float = 120.0  # seconds per phase, also every stream's deadline
    budget: float = 900.0  # seconds, the whole run
    pause: float = 1.0  # seconds between phases, to let the machine settle

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
    events: int = 0  # AgentEvents (via) or SSE events (direct) received
    delta_events: int = 0  # of which carried text
    deltas: int = 0
    first_delta: float | None = None  # seconds from the call
    gaps: list[float] = field(default_factory=list)  # seconds, one per delta after the first
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
    result.finished = last_kind == "finish"
    if result.ok and result.deltas != deltas:
        result.error = f"received {result.deltas} of {deltas} deltas"
    return result


class DirectConnection:
    """A keep-alive raw HTTP/1.1 client of upstream.py timestamping each SSE delta."""

    def __init__(self, port: int, model: str) -> None:
        self._port = port
        body = orjson.dumps(
            {
                "model": model,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": MESSAGE}],
            }
        )
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self._request = head.encode() + body
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def stream(self, deltas: int, time_limit: float) -> PacedResult:
        result = PacedResult()
        try:
            await asyncio.wait_for(self._read(result), time_limit)
        except (OSError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        if result.ok and result.deltas != deltas:
            result.error = f"received {result.deltas} of {deltas} deltas"
        return result

    async def _read(self, result: PacedResult) -> None:
        assert self._reader is not None
        assert self._writer is not None
        start = time.perf_counter()
        self._writer.write(self._request)
        buf, last, done = b"", None, False
        while True:
            data = await self._reader.read(1 << 16)
            now = time.perf_counter()
            if not data:
                raise ConnectionError("upstream closed the connection")
            buf += data
            *events, buf = buf.split(b"\n\n")  # whole SSE events; the rest waits
            result.events += len(events)
            text = sum(b'"content"' in e for e in events)
            if text:
                last = result.received(text, now, start, last)
            done = done or any(b"[DONE]" in e for e in events)
            if buf.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked body
                break
        result.finished = done


# --- targets and phases --------------------------------------------------------


class Direct:
    name = "direct"

    def __init__(self, port: int, pid: int, cfg: Config) -> None:
        self.pid = pid  # the upstream
        self._port, self._cfg = port, cfg
        self._connections: list[DirectConnection] = []

    async def open(self, streams: int, model: str) -> None:
        self._connections = [DirectConnection(self._port, model) for _ in range(streams)]
        for c in self._connections:
            await asyncio.wait_for(c.connect(), 10)

    async def stream(self, index: int, deltas: int, time_limit: float) -> PacedResult:
        return await self._connections[index].stream(deltas, time_limit)

    async def close(self) -> None:
        for c in self._connections:
            await c.close()


class Via:
    name = "via"

    def __init__(self, address: str, pid: int, api_key: str, cfg: Config) -> None:
        self.pid = pid  # interlockd
        self._address, self._cfg = address, cfg
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[router_pb2_grpc.AgentRouterStub] = []
        self._model = ""

    async def open(self, streams: int, model: str) -> None:
        self._model = model
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        for _ in range(max(1, math.ceil(streams / self._cfg.streams_per_channel))):
            channel = grpc.aio.insecure_channel(self._address, options=options)
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
    target: Direct | Via, phase: Phase, deltas: int, pids: dict[str, int], time_limit: float
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


async def run_benchmark(
    direct: Direct, via: Via, pids: dict[str, int], cfg: Config
) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    phases: list[Phase] = []
    errors: list[str] = []
    targets: list[Direct | Via] = [direct, via]
    try:
        for t in targets:
            await t.open(max(cfg.concurrency), cfg.model)
        warm = min(max(cfg.concurrency), 50)
        log(f"warm-up: {warm} short streams of each target")
        for t in targets:
            limit = deadline.limit(cfg.timeout)
            await run_phase(t, Phase(t.name, warm, -1), cfg.deltas, pids, limit)
        for rep in range(cfg.reps):
            for streams in cfg.concurrency:
                order = targets if (rep + streams) % 2 == 0 else targets[::-1]
                for t in order:
                    log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<5} {t.name}")
                    await asyncio.sleep(cfg.pause)
                    phase = Phase(t.name, streams, rep)
                    limit = deadline.limit(cfg.timeout)
                    phases.append(await run_phase(t, phase, cfg.deltas, pids, limit))
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for t in targets:
            await t.close()
    return build_report(phases, cfg, errors)


# --- summaries -------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> float:
    return percentile((v * 1000 for v in values), q)


def summarize(phase: Phase, cfg: Config) -> dict[str, Any]:
    rs = phase.results
    gaps = [g for r in rs for g in r.gaps]
    firsts = [r.first_delta for r in rs if r.first_delta is not None]
    stall = cfg.stall_ms / 1000
    server = "interlockd" if phase.target == "via" else "upstream"
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
        "deltas": sum(r.deltas for r in rs),
        "server": server,
        "server_cpu_s": phase.cpu.get(server, math.nan),
        "server_cpu_pct": 100 * phase.cpu.get(server, math.nan) / phase.wall
        if phase.wall
        else math.nan,
        "server_rss_mb": phase.rss_mb.get(server, math.nan),
        "upstream_cpu_s": phase.cpu.get("upstream", math.nan),
        "client_cpu_s": phase.cpu.get("client", math.nan),
    }


def added(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """via - direct per (C, rep), median over reps."""
    by = {(r["target"], r["streams"], r["rep"]): r for r in rows}
    out = []
    for streams in dict.fromkeys(r["streams"] for r in rows):
        pairs = [
            (by[("via", streams, rep)], by[("direct", streams, rep)])
            for rep in sorted({r["rep"] for r in rows})
            if ("via", streams, rep) in by and ("direct", streams, rep) in by
        ]
        if not pairs:
            continue

        def med(key: str, pairs: list[tuple[dict[str, Any], dict[str, Any]]] = pairs) -> float:
            return float(statistics.median(v[key] - d[key] for v, d in pairs))

        out.append(
            {
                "streams": streams,
                "reps": len(pairs),
                "added_ttfd_p50_ms": med("ttfd_p50_ms"),
                "added_ttfd_p99_ms": med("ttfd_p99_ms"),
                "added_gap_p99_ms": med("gap_p99_ms"),
                "via_stall_free": min(v["stall_free"] for v, _ in pairs),
                "direct_stall_free": min(d["stall_free"] for _, d in pairs),
                "via_deltas_per_event": statistics.median(
                    v["deltas"] / v["delta_events"] if v["delta_events"] else math.nan
                    for v, _ in pairs
                ),
            }
        )
    return out


def build_report(phases: Sequence[Phase], cfg: Config, errors: list[str]) -> dict[str, Any]:
    rows = [summarize(p, cfg) for p in phases]
    failures = errors + [f for p in phases for f in p.failures()]
    return {
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg) | {"model": cfg.model, "stall_ms": cfg.stall_ms},
        "phases": rows,
        "added": added(rows),
        "failures": failures,
        "ok": not failures,
    }


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout) -> None:
    m, cfg = report["machine"], report["config"]
    print(f"date     {m['date']}   git {m['git']}", file=out)
    print(f"machine  nproc {m['nproc']}, {m['cpu_model']}, {m['platform']}", file=out)
    print(f"versions python {m['python']}, grpcio {m['grpcio']}", file=out)
    print(f"command  {m['command']}", file=out)
    print(f"config   {json.dumps(cfg)}", file=out)
    print(
        f"\nPaced upstream: {cfg['deltas']} deltas every {cfg['interval_ms']:g} ms "
        f"(model {cfg['model']}); a stream stalls if a gap between deltas exceeds "
        f"{cfg['stall_ms']:g} ms ({cfg['stall_factor']:g} x the interval). "
        "TTFD = call to first delta; gaps pooled over all streams; server = upstream "
        "for direct, interlockd for via; CPU over the phase, RSS at its end.",
        file=out,
    )
    headers = ["target", "C", "rep", "TTFD p50", "TTFD p99", "gap p50", "gap p99", "gap max"]
    headers += ["stall-free", "events", "deltas", "server CPU", "RSS MB", "failed", "wall s"]
    cells = [
        [
            r["target"],
            str(r["streams"]),
            str(r["rep"] + 1),
            *(_fmt(r[k], ".2f") for k in ("ttfd_p50_ms", "ttfd_p99_ms")),
            *(_fmt(r[k], ".2f") for k in ("gap_p50_ms", "gap_p99_ms", "gap_max_ms")),
            f"{r['stall_free']}/{r['streams']}",
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
    print("\nAdded by interlockd (via - direct, same rep, median over reps; ms)", file=out)
    headers = ["C", "TTFD p50", "TTFD p99", "gap p99", "stall-free via", "direct"]
    headers += ["deltas/text event via"]
    cells = [
        [
            str(a["streams"]),
            *(f"{a[k]:+.2f}" for k in ("added_ttfd_p50_ms", "added_ttfd_p99_ms")),
            f"{a['added_gap_p99_ms']:+.2f}",
            f"{a['via_stall_free']}/{a['streams']}",
            f"{a['direct_stall_free']}/{a['streams']}",
            _fmt(a["via_deltas_per_event"], ".3f"),
        ]
        for a in report["added"]
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


# --- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(description="interlockd vs direct with a paced upstream")
    parser.add_argument("--smoke", action="store_true", help="C in {1, 10}, few deltas, < 30 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--deltas", type=int, help="N, deltas per stream (default 64)")
    parser.add_argument("--interval-ms", type=float, help="between deltas (default 20)")
    parser.add_argument("--concurrency", help="comma-separated C values (default 1,100,500)")
    parser.add_argument("--reps", type=int, help="repetitions of every (target, C)")
    parser.add_argument("--stall-factor", type=float, help="stall = gap > factor x interval")
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys = ("deltas", "interval_ms", "reps", "stall_factor", "streams_per_channel")
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in (*keys, "timeout", "budget") if getattr(args, k) is not None
    }
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if min(cfg.concurrency) < 1 or cfg.deltas < 2 or cfg.reps < 1 or cfg.interval_ms <= 0:
        parser.error("concurrency and reps must be >= 1, deltas >= 2, interval > 0")
    return cfg, args.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, as_json = parse_args(argv)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-paced-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log("starting upstream and interlockd")
            upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
            port = wait_for_port(upstream)
            daemon, key = start_interlockd(children, Path(tmp), port, coalesce=True)
            address = f"127.0.0.1:{wait_for_port(daemon)}"
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        pids = {"upstream": upstream.proc.pid, "interlockd": daemon.proc.pid}
        direct = Direct(port, upstream.proc.pid, cfg)
        via = Via(address, daemon.proc.pid, key, cfg)
        report = asyncio.run(run_benchmark(direct, via, pids, cfg))
    if as_json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
