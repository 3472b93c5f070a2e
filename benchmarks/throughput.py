"""Streaming throughput and time to first event: interlockd's ``Run`` against the floor.

One run measures, on the same machine and interleaved so that noise hits every
target alike (benchmarks/README.md: compare ratios from the same run, quote medians):

``bare``
    the floor: a bare ``grpc.aio`` server (``bare_server.py``) streaming
    pre-built ``AgentEvent`` messages of the router's size — a run_started, K
    ``text_delta`` of ``"tok "``, a finish.
``interlockd``
    ``interlockd serve`` (full path: auth, admission, store writes, window
    recording) in front of ``upstream.py``, a zero-latency OpenAI-compatible
    fake streaming K deltas, a finish chunk, a usage chunk and ``[DONE]``.
``upstream``
    that fake called directly with a raw HTTP/1.1 client: its headroom, to
    show it is not what limits interlockd.

Figures, for each target: events/s of one stream; aggregate events/s with C
concurrent streams; time to first event (median and p99) of C concurrent
streams and of many sequential short runs; CPU per event of every process;
and the ratio of interlockd's to bare's throughput, paired per repetition.
"deltas/s" counts the upstream deltas carried (text length / 4): equal to
events/s while the router sends one event per delta, and still comparable
if it coalesces deltas.

Each server runs in its own subprocess (stopped on exit, Ctrl-C or error);
the load client — grpc.aio, one channel per ``--streams-per-channel`` streams —
runs here. Every loop has a count and a time limit. Exits 1 if any stream
fails, ends without a Finish event, or the time budget runs out.

    .venv/bin/python benchmarks/throughput.py            # the real run (~4 min on 2 cores)
    .venv/bin/python benchmarks/throughput.py --smoke    # CI: a few streams, < 30 s
    .venv/bin/python benchmarks/throughput.py --json     # results as JSON on stdout

Every run also writes a results directory (report, JSON, plots; ``results.py``).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import orjson

from interlock.v1 import router_pb2, router_pb2_grpc
from interlock.v1.events_pb2 import AgentEvent

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
from results import machine_info, without_nan

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOKEN_CHARS = 4  # len("tok "), the text of every delta of upstream.py and bare_server.py
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
API_KEY = re.compile(r"export INTERLOCK_API_KEY=(\S+)")
MESSAGE = "Write a long answer."
TARGET_ORDER = ("bare", "interlockd", "upstream")


# --- configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    deltas: int = 2000  # K: text deltas per throughput stream
    concurrency: tuple[int, ...] = (1, 10, 100)  # C
    reps: int = 3  # repetitions of every (target, C); medians over them
    ttfe_runs: int = 200  # sequential short runs per target for time to first event
    ttfe_deltas: int = 8  # K of those short runs
    streams_per_channel: int = 25
    timeout: float = 300.0  # seconds, per phase (and the deadline of its streams)
    budget: float = 1800.0  # seconds, the whole run
    targets: tuple[str, ...] = TARGET_ORDER
    coalesce: bool = True  # interlockd's runs.coalesce_deltas


SMOKE = Config(
    deltas=50,
    concurrency=(1, 4),
    reps=1,
    ttfe_runs=10,
    ttfe_deltas=4,
    timeout=15.0,
    budget=25.0,
)


class BudgetExceeded(Exception):
    """The run's time budget is spent; what was measured so far is reported."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def limit(self, seconds: float) -> float:
        """``seconds`` capped by what is left; raise BudgetExceeded when nothing is."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise BudgetExceeded("time budget exceeded")
        return min(seconds, left)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- subprocesses --------------------------------------------------------------


class ChildFailed(Exception):
    """A server subprocess exited or didn't report its port in time."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        text = self.err.read_text(errors="replace") + self.output()
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """The server subprocesses; all of them are stopped on exit, whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._children: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        out, err = self._workdir / f"{name}.out", self._workdir / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,  # closes when we go away: --exit-on-stdin-eof
                stdout=stdout,
                stderr=stderr,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them
            )
        child = Child(name, proc, out, err)
        self._children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self._children):
            _stop(child.proc)
        self._children.clear()


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.stdin:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def wait_for_port(child: Child, timeout: float = 30.0) -> int:
    """Poll the child's stdout for ``listening on 127.0.0.1:PORT``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        match = LISTENING.search(child.output())
        if match:
            return int(match.group(1))
        if child.proc.poll() is not None:
            raise ChildFailed(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        time.sleep(0.02)
    raise ChildFailed(f"{child.name} did not listen within {timeout:.0f} s:\n{child.tail()}")


def start_script(children: Children, name: str, script: str, default_deltas: int) -> Child:
    argv = [sys.executable, str(HERE / script), "--deltas", str(default_deltas)]
    return children.start(name, [*argv, "--exit-on-stdin-eof"])


def interlockd_argv() -> list[str]:
    script = Path(sys.executable).parent / "interlockd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "interlockd.cli"]


def interlockd_config(
    workdir: Path,
    upstream_port: int,
    coalesce: bool,
    *,
    store_url: str | None = None,
    master_key: str | None = None,
    pool_size: int | None = None,
) -> Path:
    """A TOML config: port 0, a fresh data dir, one OpenAI-compatible provider.

    The store is the embedded SQLite file unless ``store_url`` names a
    PostgreSQL database, which needs ``master_key`` (base64 of 32 bytes).
    """
    config = workdir / "interlockd.toml"
    lines = [
        'listen = "127.0.0.1:0"',
        'http_listen = "127.0.0.1:0"',
        f"data_dir = {json.dumps(str(workdir / 'data'))}",
        'default_provider = "up"',
        'log_level = "warning"',
        "shutdown_grace_seconds = 1.0",
        "",
        "[providers.up]",
        'kind = "openai"',
        f'base_url = "http://127.0.0.1:{upstream_port}/v1"',
        'api_key = "bench"',
        'default_model = "bench"',
        "",
        "[runs]",
        f"coalesce_deltas = {'true' if coalesce else 'false'}",
    ]
    if store_url is not None:
        lines.insert(0, f"store_url = {json.dumps(store_url)}")
    if master_key is not None:
        lines += ["", "[keys]", f"master_key = {json.dumps(master_key)}"]
    if pool_size is not None:
        lines += ["", "[store]", f"pool_size = {pool_size}"]
    config.write_text("\n".join(lines) + "\n")
    return config


def start_interlockd(
    children: Children,
    workdir: Path,
    upstream_port: int,
    coalesce: bool,
    *,
    name: str = "interlockd",
    store_url: str | None = None,
    master_key: str | None = None,
    pool_size: int | None = None,
) -> tuple[Child, str]:
    """Start ``interlockd serve --bootstrap``; return it and the sandbox API key it printed.

    ``name`` names its output files; give each daemon of one run its own, and its own workdir.
    """
    config = interlockd_config(
        workdir,
        upstream_port,
        coalesce,
        store_url=store_url,
        master_key=master_key,
        pool_size=pool_size,
    )
    # INTERLOCK_* variables would override the file; a proxy must not see loopback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    argv = [*interlockd_argv(), "serve", "--config", str(config), "--bootstrap"]
    child = children.start(name, argv, env)
    wait_for_port(child)
    match = API_KEY.search(child.output())
    if not match:
        raise ChildFailed(f"interlockd printed no INTERLOCK_API_KEY:\n{child.tail()}")
    return child, match.group(1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); NaN where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        log(f"warning: {soft} open files allowed, about {needed} needed: streams may fail")
    return soft, hard


# --- one stream ------------------------------------------------------------------


@dataclass
class StreamResult:
    events: int = 0
    text_chars: int = 0
    first_event: float | None = None  # seconds from the call
    first_token: float | None = None
    duration: float = 0.0
    finished: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.finished and not self.error

    @property
    def deltas(self) -> float:
        return self.text_chars / TOKEN_CHARS


def model_for(deltas: int) -> str:
    """The model name telling both fakes how many deltas to stream."""
    return f"bench-k{deltas}"


async def grpc_stream(
    stub: router_pb2_grpc.AgentRouterStub,
    request: router_pb2.RunRequest,
    metadata: tuple[tuple[str, str], ...],
    deltas: int,
    time_limit: float,
) -> StreamResult:
    """Run one stream to its end, checking the event contract on the way."""
    result = StreamResult()
    last = ""
    start = time.perf_counter()
    try:
        call = stub.Run(request, metadata=metadata, timeout=time_limit)
        # read() rather than `async for`: one generator layer less per event.
        while (event := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
            assert isinstance(event, AgentEvent)
            kind = event.WhichOneof("event")
            result.events += 1
            if result.first_event is None:
                result.first_event = time.perf_counter() - start
                if kind != "run_started":
                    result.error = f"first event is {kind}"
            if kind == "text_delta":
                if result.first_token is None:
                    result.first_token = time.perf_counter() - start
                result.text_chars += len(event.text_delta.text)
            elif kind == "error":
                result.error = f"error event {event.error.code}: {event.error.message}"
            if event.seq != result.events and not result.error:
                result.error = f"seq {event.seq} at event {result.events}"
            last = kind or ""
    except grpc.aio.AioRpcError as exc:
        result.error = f"{exc.code().name}: {exc.details()}"
    result.duration = time.perf_counter() - start
    result.finished = last == "finish"
    if result.ok and result.text_chars != deltas * TOKEN_CHARS:
        result.error = f"received {result.deltas:g} of {deltas} deltas"
    return result


class RawUpstreamConnection:
    """A minimal keep-alive HTTP/1.1 client of upstream.py that only counts SSE events."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    def _request(self, deltas: int) -> bytes:
        body = orjson.dumps(
            {
                "model": model_for(deltas),
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": MESSAGE}],
            }
        )
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def stream(self, deltas: int, time_limit: float) -> StreamResult:
        result = StreamResult()
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self._read_stream(deltas, result, start), time_limit)
        except (OSError, TimeoutError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.duration = time.perf_counter() - start
        return result

    async def _read_stream(self, deltas: int, result: StreamResult, start: float) -> None:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(self._request(deltas))
        carry = b""
        while True:
            data = await self._reader.read(1 << 16)
            if not data:
                raise ConnectionError("upstream closed the connection")
            window = carry + data
            result.events += window.count(b"data: ")
            if result.events and result.first_event is None:
                result.first_event = result.first_token = time.perf_counter() - start
            if window.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked body
                break
            carry = window[-6:]
        expected = deltas + 3  # the deltas, a finish, a usage chunk, [DONE]
        result.finished = result.events == expected
        result.text_chars = deltas * TOKEN_CHARS if result.finished else 0
        if not result.finished:
            result.error = f"{result.events} SSE events, expected {expected}"


# --- targets ---------------------------------------------------------------------


class Target(abc.ABC):
    """Something that streams; ``stream(i, ...)`` is called by one task per index at a time."""

    def __init__(self, name: str, pid: int, upstream_pid: int | None = None) -> None:
        self.name = name
        self.pid = pid
        self.upstream_pid = upstream_pid

    @abc.abstractmethod
    async def open(self, streams: int) -> None: ...

    @abc.abstractmethod
    async def stream(self, index: int, deltas: int, time_limit: float) -> StreamResult: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the server, the upstream behind it and this client."""
        upstream = cpu_seconds(self.upstream_pid) if self.upstream_pid else math.nan
        return {
            "server": cpu_seconds(self.pid),
            "upstream": upstream,
            "client": time.process_time(),
        }


class GrpcTarget(Target):
    def __init__(
        self,
        name: str,
        address: str,
        pid: int,
        *,
        api_key: str = "",
        upstream_pid: int | None = None,
        streams_per_channel: int = 25,
    ) -> None:
        super().__init__(name, pid, upstream_pid)
        self._address = address
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._per_channel = streams_per_channel
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[router_pb2_grpc.AgentRouterStub] = []

    async def open(self, streams: int) -> None:
        # A local subchannel pool gives every channel its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(max(1, math.ceil(streams / self._per_channel))):
            channel = grpc.aio.insecure_channel(self._address, options=options)
            await asyncio.wait_for(channel.channel_ready(), 10)
            self._channels.append(channel)
            self._stubs.append(router_pb2_grpc.AgentRouterStub(channel))

    async def stream(self, index: int, deltas: int, time_limit: float) -> StreamResult:
        # One end user per concurrent stream: per-conversation and per-user
        # limits then never serialise them. Every Run starts a new conversation.
        request = router_pb2.RunRequest(
            end_user_id=f"bench-{index}", message=MESSAGE, model=model_for(deltas)
        )
        stub = self._stubs[index % len(self._stubs)]
        return await grpc_stream(stub, request, self._metadata, deltas, time_limit)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)


class UpstreamTarget(Target):
    def __init__(self, port: int, pid: int) -> None:
        super().__init__("upstream", pid)
        self._port = port
        self._connections: list[RawUpstreamConnection] = []

    async def open(self, streams: int) -> None:
        for _ in range(streams):
            connection = RawUpstreamConnection(self._port)
            await connection.connect()
            self._connections.append(connection)

    async def stream(self, index: int, deltas: int, time_limit: float) -> StreamResult:
        return await self._connections[index].stream(deltas, time_limit)

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()


# --- phases ----------------------------------------------------------------------


@dataclass
class Phase:
    """``streams`` concurrent streams of one target, measured together."""

    kind: str  # "throughput" | "ttfe" | "warmup"
    target: str
    streams: int
    deltas: int
    rep: int
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    results: list[StreamResult] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(r.events for r in self.results)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall if self.wall else 0.0

    @property
    def deltas_per_s(self) -> float:
        return sum(r.deltas for r in self.results) / self.wall if self.wall else 0.0

    def failures(self) -> list[str]:
        label = f"{self.kind} {self.target} C={self.streams} rep {self.rep + 1}"
        return [
            f"{label} stream {i}: {r.error or 'ended without a Finish event'}"
            for i, r in enumerate(self.results)
            if not r.ok
        ]


async def run_concurrent(target: Target, phase: Phase, time_limit: float) -> Phase:
    """Start ``phase.streams`` streams at once; wall time is first start to last end."""
    before = target.cpu()
    start = time.perf_counter()
    calls = (target.stream(i, phase.deltas, time_limit) for i in range(phase.streams))
    try:
        phase.results = list(await asyncio.wait_for(asyncio.gather(*calls), time_limit + 5))
    except TimeoutError:
        phase.results = [StreamResult(error="phase timed out")] * phase.streams
    phase.wall = time.perf_counter() - start
    after = target.cpu()
    phase.cpu = {k: after[k] - before[k] for k in before}
    return phase


def rotated(targets: Sequence[Target], rep: int) -> list[Target]:
    """Alternate the order per repetition so no target always runs first."""
    return list(targets) if rep % 2 == 0 else list(reversed(targets))


async def warm_up(targets: Sequence[Target], cfg: Config, deadline: Deadline) -> list[Phase]:
    """A few short streams on each target (connections, caches, end users) — not reported."""
    phases = []
    for target in targets:
        phase = Phase("warmup", target.name, max(cfg.concurrency), cfg.ttfe_deltas, 0)
        phases.append(await run_concurrent(target, phase, deadline.limit(cfg.timeout)))
    return phases


async def measure_throughput(
    targets: Sequence[Target], cfg: Config, deadline: Deadline
) -> list[Phase]:
    phases = []
    for rep in range(cfg.reps):
        for streams in cfg.concurrency:
            for target in rotated(targets, rep):
                log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<4} {target.name}")
                phase = Phase("throughput", target.name, streams, cfg.deltas, rep)
                phases.append(await run_concurrent(target, phase, deadline.limit(cfg.timeout)))
    return phases


async def measure_ttfe(targets: Sequence[Target], cfg: Config, deadline: Deadline) -> list[Phase]:
    """Sequential short runs, the targets interleaved run by run."""
    phases = {t.name: Phase("ttfe", t.name, 1, cfg.ttfe_deltas, 0) for t in targets}
    for i in range(cfg.ttfe_runs):
        for target in rotated(targets, i):
            timeout = deadline.limit(cfg.timeout)
            phases[target.name].results.append(await target.stream(0, cfg.ttfe_deltas, timeout))
    return list(phases.values())


# --- summaries -----------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ms(values: Iterable[float | None], q: float) -> float:
    return percentile((v * 1000 for v in values if v is not None), q)


def _us_per_event(phases: Sequence[Phase], process: str) -> float:
    events = sum(p.events for p in phases)
    return sum(p.cpu.get(process, math.nan) for p in phases) / events * 1e6 if events else math.nan


def summarize_throughput(phases: Sequence[Phase]) -> list[dict[str, Any]]:
    bare = {(p.streams, p.rep): p.deltas_per_s for p in phases if p.target == "bare"}
    groups: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        groups.setdefault((p.target, p.streams), []).append(p)
    rows = []
    for (target, streams), group in groups.items():
        ratios = [
            p.deltas_per_s / bare[(streams, p.rep)]
            for p in group
            if bare.get((streams, p.rep)) and target != "bare"
        ]
        results = [r for p in group for r in p.results]
        rows.append(
            {
                "target": target,
                "streams": streams,
                "deltas_per_stream": group[0].deltas,
                "reps": len(group),
                "events_per_s": statistics.median(p.events_per_s for p in group),
                "deltas_per_s": statistics.median(p.deltas_per_s for p in group),
                "ratio_vs_bare": statistics.median(ratios) if ratios else None,
                "ttfe_p50_ms": _ms((r.first_event for r in results), 50),
                "ttfe_p99_ms": _ms((r.first_event for r in results), 99),
                # whole streams, call to end: what a load generator like ghz reports
                "streams_per_s": statistics.median(
                    len(p.results) / p.wall if p.wall else 0.0 for p in group
                ),
                "stream_p50_ms": _ms((r.duration for r in results), 50),
                "stream_p99_ms": _ms((r.duration for r in results), 99),
                "server_cpu_us_per_event": _us_per_event(group, "server"),
                "upstream_cpu_us_per_event": _us_per_event(group, "upstream"),
                "client_cpu_us_per_event": _us_per_event(group, "client"),
                "failed": sum(not r.ok for r in results),
            }
        )
    return sorted(rows, key=lambda r: (r["streams"], TARGET_ORDER.index(r["target"])))


def summarize_ttfe(phases: Sequence[Phase]) -> list[dict[str, Any]]:
    rows = []
    for p in phases:
        rows.append(
            {
                "target": p.target,
                "runs": len(p.results),
                "deltas_per_run": p.deltas,
                "first_event_p50_ms": _ms((r.first_event for r in p.results), 50),
                "first_event_p99_ms": _ms((r.first_event for r in p.results), 99),
                "first_token_p50_ms": _ms((r.first_token for r in p.results), 50),
                "first_token_p99_ms": _ms((r.first_token for r in p.results), 99),
                "run_p50_ms": _ms((r.duration for r in p.results), 50),
                "failed": sum(not r.ok for r in p.results),
            }
        )
    return sorted(rows, key=lambda r: TARGET_ORDER.index(r["target"]))


# --- report --------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], out: IO[str]) -> None:
    rows = list(rows)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print(line, file=out)
    for row in rows:
        cells = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print("  ".join(cells), file=out)


def print_header(m: dict[str, Any], cfg: dict[str, Any], out: IO[str] = sys.stdout) -> None:
    """The run's date, commit, machine, versions, command and config."""
    print(f"date     {m['date']}   git {m['git']}", file=out)
    print(
        f"machine  nproc {m['nproc']} (cpu_count {m['cpu_count']}), {m['cpu_model']}, "
        f"{m['platform']}",
        file=out,
    )
    print(
        f"versions python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}", file=out
    )
    print(f"command  {m['command']}", file=out)
    print(f"config   {json.dumps(cfg)}", file=out)


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, header: bool = True) -> None:
    cfg = report["config"]
    if header:
        print_header(report["machine"], cfg, out)
    print(
        f"\nThroughput: K={cfg['deltas']} deltas per stream, C concurrent streams, "
        f"median of {cfg['reps']} reps; ratio = deltas/s vs bare in the same rep (median); "
        "TTFE over all streams of the phase; CPU = µs per event",
        file=out,
    )
    headers = ["target", "C", "events/s", "deltas/s", "ratio", "TTFE p50", "TTFE p99"]
    headers += ["server CPU", "upstream CPU", "client CPU", "failed"]
    _table(headers, (_throughput_cells(r) for r in report["throughput"]), out)
    print(
        f"\nTime to first event: {cfg['ttfe_runs']} sequential runs per target of "
        f"K={cfg['ttfe_deltas']}, interleaved (ms)",
        file=out,
    )
    headers = ["target", "runs", "event p50", "event p99", "token p50", "token p99", "run p50"]
    _table(headers, (_ttfe_cells(r) for r in report["ttfe"]), out)
    for line in report["notes"]:
        print(line, file=out)
    failures = report["failures"]
    for failure in failures[:20]:
        print(f"FAILED {failure}", file=out)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more failures", file=out)


def _throughput_cells(r: dict[str, Any]) -> list[str]:
    return [
        r["target"],
        str(r["streams"]),
        _fmt(r["events_per_s"]),
        _fmt(r["deltas_per_s"]),
        _fmt(r["ratio_vs_bare"], ".2f"),
        _fmt(r["ttfe_p50_ms"], ".2f") + " ms",
        _fmt(r["ttfe_p99_ms"], ".2f") + " ms",
        _fmt(r["server_cpu_us_per_event"], ".1f"),
        _fmt(r["upstream_cpu_us_per_event"], ".1f"),
        _fmt(r["client_cpu_us_per_event"], ".1f"),
        str(r["failed"]),
    ]


def _ttfe_cells(r: dict[str, Any]) -> list[str]:
    keys = ["first_event_p50_ms", "first_event_p99_ms", "first_token_p50_ms", "first_token_p99_ms"]
    return [
        r["target"],
        str(r["runs"]),
        *(_fmt(r[k], ".2f") for k in keys),
        _fmt(r["run_p50_ms"], ".2f"),
    ]


def notes(throughput: Sequence[dict[str, Any]], ttfe: Sequence[dict[str, Any]]) -> list[str]:
    """The figures benchmarks/README.md sets targets for, and the upstream's headroom."""
    lines = []
    by = {(r["target"], r["streams"]): r for r in throughput}
    for (target, streams), r in by.items():
        if target == "interlockd" and r["ratio_vs_bare"] is not None:
            lines.append(
                f"interlockd/bare throughput at C={streams}: {r['ratio_vs_bare']:.2f} "
                "(target >= 0.70; >= 2 with delta coalescing)"
            )
        bare = by.get(("bare", streams))
        if target == "interlockd" and bare and bare["server_cpu_us_per_event"] > 0:
            cpu_ratio = r["server_cpu_us_per_event"] / bare["server_cpu_us_per_event"]
            lines.append(
                f"interlockd/bare server CPU per event at C={streams}: {cpu_ratio:.2f}x "
                f"({r['server_cpu_us_per_event']:.1f} vs {bare['server_cpu_us_per_event']:.1f} µs)"
            )
        up = by.get(("upstream", streams))
        if target == "interlockd" and up and r["deltas_per_s"]:
            lines.append(
                f"upstream headroom at C={streams}: direct {up['deltas_per_s']:,.0f} deltas/s = "
                f"{up['deltas_per_s'] / r['deltas_per_s']:.0f}x interlockd's; while feeding "
                f"interlockd it spent {_fmt(r['upstream_cpu_us_per_event'], '.1f')} µs CPU per "
                f"event vs interlockd's {_fmt(r['server_cpu_us_per_event'], '.1f')} µs"
            )
    rows = {r["target"]: r for r in ttfe}
    if "interlockd" in rows and "upstream" in rows:
        il, up = rows["interlockd"], rows["upstream"]
        lines.append(
            "added time to first token vs calling the upstream directly (sequential): "
            f"p50 +{il['first_token_p50_ms'] - up['first_token_p50_ms']:.2f} ms, "
            f"p99 +{il['first_token_p99_ms'] - up['first_token_p99_ms']:.2f} ms "
            "(target at 100 concurrent turns: p50 <= 1.5 ms, p99 <= 5 ms)"
        )
    return ["", *lines] if lines else []


# --- main ------------------------------------------------------------------------


def start_targets(
    children: Children, workdir: Path, cfg: Config
) -> list[tuple[str, str, int, dict[str, Any]]]:
    """Start the subprocesses the targets need: (name, address, pid, extras) each."""
    specs: list[tuple[str, str, int, dict[str, Any]]] = []
    if "bare" in cfg.targets:
        bare = start_script(children, "bare", "bare_server.py", cfg.deltas)
        specs.append(("bare", f"127.0.0.1:{wait_for_port(bare)}", bare.proc.pid, {}))
    if {"interlockd", "upstream"} & set(cfg.targets):
        upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
        port = wait_for_port(upstream)
        if "interlockd" in cfg.targets:
            daemon, key = start_interlockd(children, workdir, port, cfg.coalesce)
            address = f"127.0.0.1:{wait_for_port(daemon)}"
            extras = {"api_key": key, "upstream_pid": upstream.proc.pid}
            specs.append(("interlockd", address, daemon.proc.pid, extras))
        if "upstream" in cfg.targets:
            specs.append(("upstream", str(port), upstream.proc.pid, {}))
    return specs


def make_target(name: str, address: str, pid: int, extras: dict[str, Any], cfg: Config) -> Target:
    if name == "upstream":
        return UpstreamTarget(int(address), pid)
    return GrpcTarget(name, address, pid, streams_per_channel=cfg.streams_per_channel, **extras)


async def run_benchmark(
    specs: Sequence[tuple[str, str, int, dict[str, Any]]], cfg: Config
) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    targets = [make_target(*spec, cfg) for spec in specs]
    phases: list[Phase] = []
    errors: list[str] = []
    try:
        for target in targets:
            await target.open(max(cfg.concurrency))
        log("warm-up")
        phases += await warm_up(targets, cfg, deadline)
        log("throughput")
        phases += await measure_throughput(targets, cfg, deadline)
        log("time to first event")
        phases += await measure_ttfe(targets, cfg, deadline)
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for target in targets:
            await target.close()
    return build_report(phases, cfg, errors)


def build_report(phases: Sequence[Phase], cfg: Config, errors: list[str]) -> dict[str, Any]:
    throughput = summarize_throughput([p for p in phases if p.kind == "throughput"])
    ttfe = summarize_ttfe([p for p in phases if p.kind == "ttfe"])
    failures = errors + [f for p in phases for f in p.failures()]
    raw = [
        {
            **{k: getattr(p, k) for k in ("kind", "target", "streams", "deltas", "rep", "wall")},
            "events": p.events,
            "cpu_seconds": p.cpu,
            "failed": len(p.failures()),
        }
        for p in phases
        if p.kind == "throughput"
    ]
    return {
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg),
        "throughput": throughput,
        "ttfe": ttfe,
        "notes": notes(throughput, ttfe),
        "phases": raw,
        "failures": failures,
        "ok": not failures,
    }


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="interlockd Run vs a bare grpc.aio floor: throughput and time to first event"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny and fast (CI), < 30 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--deltas", type=int, help="K, text deltas per throughput stream")
    parser.add_argument("--concurrency", help="comma-separated C values, e.g. 1,10,100")
    parser.add_argument("--reps", type=int, help="repetitions of each (target, C)")
    parser.add_argument("--ttfe-runs", type=int, help="sequential runs per target for TTFE")
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(TARGET_ORDER)}")
    parser.add_argument(
        "--no-coalesce", action="store_true", help="run interlockd with coalesce_deltas = false"
    )
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else Config()
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("deltas", "reps", "ttfe_runs", "streams_per_channel", "timeout", "budget")
        if getattr(args, key) is not None
    }
    if args.no_coalesce:
        overrides["coalesce"] = False
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.targets:
        names = tuple(t for t in TARGET_ORDER if t in args.targets.split(","))
        overrides["targets"] = names
    cfg = dataclasses.replace(cfg, **overrides)
    if min(cfg.concurrency) < 1 or cfg.deltas < 1 or cfg.reps < 1 or not cfg.targets:
        parser.error("concurrency, deltas and reps must be >= 1, and targets not empty")
    return cfg, args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt at once, wherever the loop is.

    Then the subprocesses are stopped on the way out. (asyncio.run's own SIGINT
    handling only cancels the main task, which a stream in flight may absorb.)
    """
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    # Every upstream stream is a connection of its own (C at the most).
    raise_open_files(max(cfg.concurrency) + 1000)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-bench-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log(f"starting {', '.join(cfg.targets)}")
            specs = start_targets(children, Path(tmp), cfg)
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        report = asyncio.run(run_benchmark(specs, cfg))
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if out := bench_results.directory("throughput", args):
        publish(report, out)
    return 0 if report["ok"] else 1


def report_text(report: dict[str, Any]) -> str:
    """The tables print_report prints (the header is the results directory's own)."""
    buf = io.StringIO()
    print_report(report, buf, header=False)
    return buf.getvalue()


def publish(report: dict[str, Any], out: Path) -> Path:
    """The results directory: report.md with the tables, results.json, the plots."""
    body = "## Results\n\n" + bench_results.text_block(report_text(report))
    return bench_results.publish(
        out, "Throughput: interlockd vs the bare floor", report, body, lambda d: plots(report, d)
    )


# --- plots -------------------------------------------------------------------------

STYLE = {
    "bare": {"color": "tab:gray", "marker": "s"},
    "interlockd": {"color": "tab:blue", "marker": "o"},
    "upstream": {"color": "tab:green", "marker": "^"},
}


def plots(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """events/s and deltas/s by C per target; interlockd/bare; time to first event by C."""
    rows = report["throughput"]
    if not rows:
        return []
    targets = [t for t in TARGET_ORDER if any(r["target"] == t for r in rows)]
    cs = sorted({r["streams"] for r in rows})
    paths = []
    fig, axes = bench_results.figure(ncols=3, width=5.0)
    panels = (
        ("events_per_s", 1, "events/s, all streams"),
        ("deltas_per_s", 1, "deltas/s, all streams"),
        ("deltas_per_s", 0, "deltas/s per stream (all ÷ C)"),
    )
    for ax, (key, aggregate, label) in zip(axes, panels, strict=True):
        for t in targets:
            mine = sorted(
                (r["streams"], r[key] if aggregate else r[key] / r["streams"])
                for r in rows
                if r["target"] == t
            )
            ax.plot(*zip(*mine, strict=True), label=t, **STYLE.get(t, {}))
        bench_results.concurrency_axis(ax, cs)
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} (median of reps)")
        ax.legend()
    cfg = report["config"]
    title = f"Zero-latency upstream, K={cfg['deltas']} deltas per stream"
    paths.append(bench_results.save(fig, out, prefix + "throughput", title))
    ratios = sorted(
        (r["streams"], r["ratio_vs_bare"])
        for r in rows
        if r["target"] == "interlockd" and r["ratio_vs_bare"] is not None
    )
    if ratios:
        fig, (ax,) = bench_results.figure()
        ax.plot(*zip(*ratios, strict=True), label="interlockd / bare", **STYLE["interlockd"])
        ax.axhline(0.70, color="tab:red", linestyle="--", label="target 0.70 (no coalescing)")
        ax.axhline(2.0, color="tab:purple", linestyle=":", label="target 2.0 (coalescing)")
        bench_results.concurrency_axis(ax, cs)
        bench_results.plain_numbers(ax)
        ax.set_ylabel("deltas/s ratio, same rep (median)")
        ax.set_ylim(bottom=0)
        ax.legend()
        paths.append(
            bench_results.save(fig, out, prefix + "ratio_vs_bare", "interlockd / bare floor")
        )
    fig, (ax,) = bench_results.figure()
    for t in targets:
        ttfe = sorted(
            (r["streams"], r["ttfe_p50_ms"], r["ttfe_p99_ms"]) for r in rows if r["target"] == t
        )
        xs = [m[0] for m in ttfe]
        ax.plot(xs, [m[1] for m in ttfe], label=f"{t} p50", **STYLE.get(t, {}))
        ax.plot(xs, [m[2] for m in ttfe], linestyle="--", label=f"{t} p99", **STYLE.get(t, {}))
    bench_results.concurrency_axis(ax, cs)
    ax.set_yscale("log")
    ax.set_ylabel("time to first event, ms")
    ax.legend(fontsize="small")
    paths.append(
        bench_results.save(fig, out, prefix + "ttfe", "Time to first event of C concurrent streams")
    )
    return paths


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
