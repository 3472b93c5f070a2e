"""Overhead: interlockd against its baselines at 1, 100, 500 and 1,000 streams, in one run.

Issue 8's question: in one run, (a) a bare ``grpc.aio`` streaming server
(``bare_server.py``), (b) interlockd's ``Run`` in front of an OpenAI-compatible
fake (``upstream.py``), (c) the same fake called directly; every figure beside
the baseline it is judged against, as a ratio. One command runs, one after
the other, each on fresh server processes:

zero-latency
    ``throughput.py``'s benchmark (its code, in this process): the fake
    answers as fast as it can, K deltas per stream; events/s and deltas/s
    per stream and in aggregate, time to first event, CPU per event;
    interlockd over bare in the same repetition.
paced
    ``paced.py``'s benchmark: the fake paces 64 deltas 20 ms apart and the
    bare server paces its events the same way; added time to first delta and
    added gap (p50/p99) versus calling the fake directly, streams sustained
    without a stall; interlockd over bare and over direct.
ghz
    `ghz <https://ghz.sh>`_, a load generator written in Go, run against the
    bare server and interlockd of each part right after our own client's
    phases, with the same request (``interlock.v1.AgentRouter/Run``, the
    ``--proto`` of ``proto/``, the API key as metadata, one end user per
    concurrent stream), ``-c C``, ``-n`` a multiple of C, one connection per
    25 streams: its streams/s, whole-stream latency p50/p99 and errors beside
    our client's for the same target and C. An independent client says
    whether a figure is the server's or our Python client's (on 2 cores they
    share the machine). ``make bench-ghz`` builds it into ``.bench/bin``;
    without it this part is skipped with a note, unless ``--install``.

Writes one results directory (``results.py``): a report with the headline
tables, both parts' full tables, ghz's figures and every plot.

    .venv/bin/python benchmarks/overhead.py                    # C in {1, 100, 500, 1000}
    .venv/bin/python benchmarks/overhead.py --concurrency 1,10 --reps 1 --ttfe-runs 20
    .venv/bin/python benchmarks/overhead.py --smoke --install  # CI: C in {1, 4}; builds ghz

Exits 1 if any stream of ours or ghz's fails or the time budget runs out, 2
if ``--install`` could not build ghz.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import math
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paced
import results as bench_results
import throughput
from results import machine_info, without_nan
from throughput import (
    MESSAGE,
    REPO,
    BudgetExceeded,
    ChildFailed,
    Children,
    Deadline,
    _fmt,
    _table,
    cpu_seconds,
    log,
    percentile,
    raise_open_files,
    signals_interrupt,
)

GHZ = REPO / ".bench" / "bin" / "ghz"
PROTO_ROOT = REPO / "proto"
PROTO = PROTO_ROOT / "interlock" / "v1" / "router.proto"
CALL = "interlock.v1.AgentRouter/Run"
# One end user per concurrent stream, as our client: ghz's worker ids are "g<worker>c<conn>".
GHZ_END_USER = "ghz-{{ regexReplaceAll `c[0-9]+$` .WorkerID `` }}"
GRPC_TARGETS = ("bare", "interlockd")


@dataclass(frozen=True)
class Config:
    concurrency: tuple[int, ...] = (1, 100, 500, 1000)  # C, both parts
    deltas: int = 1000  # K, deltas per zero-latency stream
    reps: int = 2  # zero-latency repetitions of every (target, C)
    ttfe_runs: int = 100  # sequential zero-latency short runs per target
    ttfe_deltas: int = 8
    paced_deltas: int = 64
    interval_ms: float = 20.0
    paced_reps: int = 1
    stall_factor: float = 3.0
    ghz: bool = True
    ghz_min_requests: int = 20  # ghz's -n: C x the rounds that reach this
    streams_per_channel: int = 25  # our client's and ghz's streams per connection
    timeout: float = 600.0  # seconds per phase, also every stream's deadline
    budget: float = 3600.0  # seconds, the whole run
    pause: float = 1.0  # seconds between paced phases

    def zero_latency(self, budget: float) -> throughput.Config:
        return throughput.Config(
            deltas=self.deltas,
            concurrency=self.concurrency,
            reps=self.reps,
            ttfe_runs=self.ttfe_runs,
            ttfe_deltas=self.ttfe_deltas,
            streams_per_channel=self.streams_per_channel,
            timeout=self.timeout,
            budget=budget,
        )

    def paced(self, budget: float) -> paced.Config:
        return paced.Config(
            deltas=self.paced_deltas,
            interval_ms=self.interval_ms,
            concurrency=self.concurrency,
            reps=self.paced_reps,
            stall_factor=self.stall_factor,
            streams_per_channel=self.streams_per_channel,
            timeout=self.timeout,
            budget=budget,
            pause=self.pause,
        )


SMOKE = Config(
    concurrency=(1, 4),
    deltas=50,
    reps=1,
    ttfe_runs=3,
    ttfe_deltas=4,
    paced_deltas=16,
    ghz_min_requests=2,
    timeout=15.0,
    budget=60.0,  # ~20 s here
    pause=0.1,
)


# --- ghz ---------------------------------------------------------------------------


def ghz_version() -> str | None:
    """``ghz --version`` of .bench/bin/ghz, or None when it is not there."""
    if not GHZ.exists():
        return None
    done = subprocess.run([str(GHZ), "--version"], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip() or "?"


def ensure_ghz(install: bool) -> str | None:
    """ghz's version; None when it is not installed.

    With ``install``, ``make bench-ghz`` first: a no-op when the pinned version
    is built, else it builds it (a new pin included).
    """
    if install:
        log("make bench-ghz (the first build of ghz takes ~100 s here)")
        subprocess.run(["make", "--no-print-directory", "-s", "bench-ghz"], cwd=REPO, check=False)
    return ghz_version()


@dataclass
class GrpcServer:
    """A gRPC target ghz can load: its name, address, API key ('' for none) and pid."""

    name: str
    address: str
    api_key: str
    pid: int


def ghz_requests(streams: int, minimum: int) -> int:
    """ghz's -n: whole rounds of ``streams`` concurrent streams, at least ``minimum``."""
    return streams * max(1, math.ceil(minimum / streams))


def ghz_argv(
    server: GrpcServer,
    streams: int,
    requests: int,
    workdir: Path,
    model: str,
    timeout: float,
    per_connection: int,
) -> list[str]:
    data = workdir / f"ghz-data-{model}.json"
    data.write_text(json.dumps({"end_user_id": GHZ_END_USER, "message": MESSAGE, "model": model}))
    argv = [str(GHZ), "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO_ROOT)]
    argv += ["--call", CALL, "--data-file", str(data)]
    if server.api_key:
        metadata = workdir / f"ghz-metadata-{server.name}.json"
        metadata.write_text(json.dumps({"authorization": f"Bearer {server.api_key}"}))
        argv += ["--metadata-file", str(metadata)]
    argv += ["-c", str(streams), "-n", str(requests)]
    argv += ["--connections", str(max(1, math.ceil(streams / per_connection)))]
    argv += ["--timeout", f"{timeout:g}s", "--connect-timeout", "10s", "--format", "json"]
    return [*argv, server.address]


def shown(argv: Sequence[str], workdir: Path) -> str:
    """The command as the report shows it: paths relative to the repository or the run."""
    out = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute() and path.is_relative_to(REPO):
            arg = str(path.relative_to(REPO))
        elif path.is_absolute() and path.is_relative_to(workdir):
            arg = f"<run>/{path.relative_to(workdir)}"
        out.append(arg)
    return shlex.join(out)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ghz(
    server: GrpcServer,
    streams: int,
    requests: int,
    model: str,
    deltas: int,
    cfg: Config,
    workdir: Path,
    time_limit: float,
) -> dict[str, Any]:
    """One ghz run; its figures, the server's CPU meanwhile, and ghz's own."""
    argv = ghz_argv(server, streams, requests, workdir, model, time_limit, cfg.streams_per_channel)
    row: dict[str, Any] = {
        "target": server.name,
        "streams": streams,
        "requests": requests,
        "model": model,
        "command": shown(argv, workdir),
    }
    server_cpu, ghz_cpu = cpu_seconds(server.pid), children_cpu()
    rounds = requests // streams
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=time_limit * rounds + 30
        )
    except subprocess.TimeoutExpired:
        return row | {"ok": 0, "errors": {"ghz timed out": requests}, "failed": requests}
    row["server_cpu_s"] = cpu_seconds(server.pid) - server_cpu
    row["client_cpu_s"] = children_cpu() - ghz_cpu  # ghz's own
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        error = (done.stderr.strip() or done.stdout.strip())[:300] or f"exit {done.returncode}"
        return row | {"ok": 0, "errors": {error: requests}, "failed": requests}
    details = out.get("details") or []
    ok = [d["latency"] / 1e6 for d in details if d.get("status") == "OK"]
    codes: dict[str, int] = out.get("statusCodeDistribution") or {}
    errors: dict[str, int] = out.get("errorDistribution") or {}
    total_s = out["total"] / 1e9
    count = int(out.get("count", 0))
    row |= {
        "count": count,
        "ok": codes.get("OK", 0),
        "failed": count - codes.get("OK", 0) + max(0, requests - count),
        "status_codes": codes,
        "errors": errors,
        "total_s": total_s,
        "streams_per_s": count / total_s if total_s else math.nan,
        # every OK stream carried K deltas (ghz doesn't look inside; our client checks that)
        "deltas_per_s": codes.get("OK", 0) * deltas / total_s if total_s else math.nan,
        "stream_p50_ms": percentile(ok, 50),
        "stream_p99_ms": percentile(ok, 99),
        "ghz_p50_ms": _latency(out, 50),
        "ghz_p99_ms": _latency(out, 99),
        **{
            f"{process}_cpu_us_per_delta": 1e6 * row[f"{process}_cpu_s"] / (codes["OK"] * deltas)
            if codes.get("OK") and deltas
            else math.nan
            for process in ("server", "client")
        },
        "raw": {k: v for k, v in out.items() if k != "details"},
    }
    return row


def _latency(out: dict[str, Any], percentage: int) -> float:
    for entry in out.get("latencyDistribution") or []:
        if entry.get("percentage") == percentage:
            return float(entry["latency"]) / 1e6
    return math.nan


def ghz_part(
    servers: Sequence[GrpcServer],
    cfg: Config,
    model: str,
    deltas: int,
    warm_model: str,
    workdir: Path,
    deadline: Deadline,
) -> list[dict[str, Any]]:
    """Warm-up (ghz's end users, at the largest C), then every C with the targets alternating."""
    rows = []
    top = max(cfg.concurrency)
    for server in servers:
        log(f"  ghz warm-up  C={top:<5} {server.name}")
        run_ghz(server, top, top, warm_model, 0, cfg, workdir, deadline.limit(cfg.timeout))
    for k, streams in enumerate(cfg.concurrency):
        requests = ghz_requests(streams, cfg.ghz_min_requests)
        for server in servers if k % 2 == 0 else servers[::-1]:
            log(f"  ghz          C={streams:<5} {server.name} (-n {requests})")
            limit = deadline.limit(cfg.timeout)
            rows.append(run_ghz(server, streams, requests, model, deltas, cfg, workdir, limit))
    return sorted(rows, key=lambda r: (r["streams"], GRPC_TARGETS.index(r["target"])))


# --- the two parts --------------------------------------------------------------------


def zero_latency_part(
    cfg: Config, ghz: bool, workdir: Path, deadline: Deadline
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    tcfg = cfg.zero_latency(deadline.limit(cfg.budget))
    workdir.mkdir(parents=True)
    with Children(workdir) as children:
        log("zero-latency: starting bare, interlockd and the upstream")
        specs = throughput.start_targets(children, workdir, tcfg)
        report = asyncio.run(throughput.run_benchmark(specs, tcfg))
        rows: list[dict[str, Any]] = []
        if ghz:
            servers = [
                GrpcServer(name, address, extras.get("api_key", ""), pid)
                for name, address, pid, extras in specs
                if name in GRPC_TARGETS
            ]
            model, warm = throughput.model_for(cfg.deltas), throughput.model_for(cfg.ttfe_deltas)
            rows = ghz_part(servers, cfg, model, cfg.deltas, warm, workdir, deadline)
    return report, rows


def paced_part(
    cfg: Config, ghz: bool, workdir: Path, deadline: Deadline
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pcfg = cfg.paced(deadline.limit(cfg.budget))
    workdir.mkdir(parents=True)
    with Children(workdir) as children:
        log("paced: starting the upstream, bare and interlockd")
        targets, pids = paced.start_targets(children, workdir, pcfg)
        report = asyncio.run(paced.run_benchmark(targets, pids, pcfg))
        rows: list[dict[str, Any]] = []
        if ghz:
            servers = [
                GrpcServer(t.name, t.address, t.api_key, pids[t.name])
                for t in targets
                if isinstance(t, paced.GrpcPaced)
            ]
            warm = dataclasses.replace(pcfg, deltas=2).model
            rows = ghz_part(servers, cfg, pcfg.model, pcfg.deltas, warm, workdir, deadline)
    return report, rows


# --- summaries -------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return math.nan
    return a / b


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(statistics.median(values)) if values else math.nan


def zero_latency_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per C: each target's events/s (aggregate and per stream), TTFE, and ratios to bare."""
    by = {(r["target"], r["streams"]): r for r in report["throughput"]}
    out = []
    for streams in sorted({r["streams"] for r in report["throughput"]}):
        bare, il, up = (by.get((t, streams)) for t in ("bare", "interlockd", "upstream"))
        row: dict[str, Any] = {"streams": streams}
        for name, r in (("bare", bare), ("interlockd", il), ("upstream", up)):
            if r:
                row[f"{name}_events_per_s"] = r["events_per_s"]
                row[f"{name}_deltas_per_s"] = r["deltas_per_s"]
                row[f"{name}_deltas_per_s_per_stream"] = r["deltas_per_s"] / streams
                row[f"{name}_ttfe_p50_ms"] = r["ttfe_p50_ms"]
                row[f"{name}_ttfe_p99_ms"] = r["ttfe_p99_ms"]
        if il and bare:
            row["deltas_per_s_vs_bare"] = il["ratio_vs_bare"]  # paired per rep
            row["events_per_s_vs_bare"] = _ratio(il["events_per_s"], bare["events_per_s"])
            row["ttfe_p50_vs_bare"] = _ratio(il["ttfe_p50_ms"], bare["ttfe_p50_ms"])
            row["ttfe_p99_vs_bare"] = _ratio(il["ttfe_p99_ms"], bare["ttfe_p99_ms"])
            row["server_cpu_per_event_vs_bare"] = _ratio(
                il["server_cpu_us_per_event"], bare["server_cpu_us_per_event"]
            )
        out.append(row)
    return out


def paced_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per C: added TTFD and gap of bare and interlockd, stall-free counts, and ratios."""
    added = {(a["target"], a["streams"]): a for a in report["added"]}
    ratios = {r["streams"]: r for r in report["ratios"]}
    out = []
    for streams in sorted({r["streams"] for r in report["phases"]}):
        row: dict[str, Any] = {"streams": streams}
        for name in ("bare", "interlockd"):
            if a := added.get((name, streams)):
                for key in ("added_ttfd_p50_ms", "added_ttfd_p99_ms", "added_gap_p50_ms"):
                    row[f"{name}_{key}"] = a[key]
                row[f"{name}_added_gap_p99_ms"] = a["added_gap_p99_ms"]
                row[f"{name}_stall_free"] = a["stall_free"]
                row["direct_stall_free"] = a["direct_stall_free"]
        row |= {k: v for k, v in ratios.get(streams, {}).items() if k != "streams"}
        out.append(row)
    return out


def ours_vs_ghz(
    part: str, report: dict[str, Any], ghz_rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Our client's figures beside ghz's for the same target and C, and ghz over ours."""
    keys = ("streams_per_s", "stream_p50_ms", "stream_p99_ms", "deltas_per_s")
    out = []
    for g in ghz_rows:
        key = (g["target"], g["streams"])
        ours: dict[str, float] | None = None
        if part == "zero-latency":
            if found := next(
                (r for r in report["throughput"] if (r["target"], r["streams"]) == key), None
            ):
                ours = {k: found[k] for k in keys} | _zero_latency_cpu_per_delta(report, *key)
        elif mine := [r for r in report["phases"] if (r["target"], r["streams"]) == key]:
            ours = {k: _median([r[k] for r in mine]) for k in keys}
            ours["server_cpu_us_per_delta"] = _median([r["server_cpu_us_per_delta"] for r in mine])
            ours["client_cpu_us_per_delta"] = _median(
                [1e6 * r["client_cpu_s"] / r["deltas"] if r["deltas"] else math.nan for r in mine]
            )
        row: dict[str, Any] = {"part": part, "target": g["target"], "streams": g["streams"]}
        row["ghz"] = g
        if ours is not None:
            row["ours"] = ours
            row["ghz_over_ours"] = {
                k: _ratio(g.get(k), ours[k])
                for k in ("streams_per_s", "stream_p50_ms", "stream_p99_ms")
            }
        out.append(row)
    return out


def _zero_latency_cpu_per_delta(
    report: dict[str, Any], target: str, streams: int
) -> dict[str, float]:
    """The server's and our client's CPU per delta over the throughput phases of (target, C)."""
    phases = [
        p
        for p in report["phases"]
        if p["kind"] == "throughput" and (p["target"], p["streams"]) == (target, streams)
    ]
    deltas = sum(p["streams"] * p["deltas"] for p in phases)
    return {
        f"{process}_cpu_us_per_delta": 1e6
        * sum(p["cpu_seconds"].get(process, math.nan) for p in phases)
        / deltas
        if deltas
        else math.nan
        for process in ("server", "client")
    }


# --- report ------------------------------------------------------------------------------

Table = tuple[str, list[str], list[list[str]]]


def _x(value: float | None) -> str:
    return _fmt(value, ".2f") + "x" if value is not None and not math.isnan(value) else "-"


def tables(report: dict[str, Any]) -> list[Table]:
    cfg = report["config"]
    out: list[Table] = []
    if zl := report.get("zero_latency_summary"):
        headers = ["C", "bare events/s", "bare per stream", "interlockd events/s"]
        headers += ["interlockd deltas/s", "interlockd per stream", "deltas/s x bare"]
        headers += ["upstream deltas/s", "TTFE p50 bare", "TTFE p50 interlockd", "x bare"]
        headers += ["TTFE p99 x bare", "server CPU/event x bare"]
        cells = [
            [
                f"{r['streams']:,}",
                _fmt(r.get("bare_events_per_s")),
                _fmt(_ratio(r.get("bare_events_per_s"), r["streams"])),
                _fmt(r.get("interlockd_events_per_s")),
                _fmt(r.get("interlockd_deltas_per_s")),
                _fmt(r.get("interlockd_deltas_per_s_per_stream")),
                _x(r.get("deltas_per_s_vs_bare")),
                _fmt(r.get("upstream_deltas_per_s")),
                _fmt(r.get("bare_ttfe_p50_ms"), ".2f"),
                _fmt(r.get("interlockd_ttfe_p50_ms"), ".2f"),
                _x(r.get("ttfe_p50_vs_bare")),
                _x(r.get("ttfe_p99_vs_bare")),
                _x(r.get("server_cpu_per_event_vs_bare")),
            ]
            for r in zl
        ]
        title = (
            f"Zero-latency upstream, K={cfg['deltas']:,} deltas per stream, median of "
            f"{cfg['reps']} reps: events/s and deltas/s of all C streams and per stream "
            "(all ÷ C); TTFE = call to first event of the concurrent streams, ms; "
            "x bare = interlockd's figure over the bare floor's (deltas/s: paired per rep)"
        )
        out.append((title, headers, cells))
    if pc := report.get("paced_summary"):
        headers = ["C", "added TTFD p50 bare", "added TTFD p50 interlockd", "x bare's"]
        headers += ["added TTFD p99 bare", "added TTFD p99 interlockd", "added gap p99 bare"]
        headers += ["added gap p99 interlockd", "stall-free direct", "stall-free bare"]
        headers += ["stall-free interlockd", "deltas/s x bare", "deltas/s x direct"]
        headers += ["gap p99 x direct"]
        cells = [
            [
                f"{r['streams']:,}",
                _fmt(r.get("bare_added_ttfd_p50_ms"), "+.2f"),
                _fmt(r.get("interlockd_added_ttfd_p50_ms"), "+.2f"),
                _x(r.get("added_ttfd_p50_ms_vs_bare")),
                _fmt(r.get("bare_added_ttfd_p99_ms"), "+.2f"),
                _fmt(r.get("interlockd_added_ttfd_p99_ms"), "+.2f"),
                _fmt(r.get("bare_added_gap_p99_ms"), "+.2f"),
                _fmt(r.get("interlockd_added_gap_p99_ms"), "+.2f"),
                *(
                    f"{r[k]}/{r['streams']}" if k in r else "-"
                    for k in ("direct_stall_free", "bare_stall_free", "interlockd_stall_free")
                ),
                _x(r.get("deltas_per_s_vs_bare")),
                _x(r.get("deltas_per_s_vs_direct")),
                _x(r.get("gap_p99_ms_vs_direct")),
            ]
            for r in pc
        ]
        title = (
            f"Paced upstream, {cfg['paced_deltas']} deltas every {cfg['interval_ms']:g} ms: "
            "added = target - direct in the same rep, ms (median over reps); x bare's = "
            "interlockd's added over the floor's added; stall-free = no gap above "
            f"{cfg['stall_factor'] * cfg['interval_ms']:g} ms; x bare / x direct = "
            "interlockd's figure over the baseline's, same rep"
        )
        out.append((title, headers, cells))
    if vs := report.get("ghz_vs_ours"):
        headers = ["part", "target", "C", "client", "streams/s", "stream p50 ms", "stream p99 ms"]
        headers += ["deltas/s", "server CPU µs/delta", "client CPU µs/delta", "failed"]
        headers += ["ghz / ours streams/s"]
        cells = []
        for r in vs:
            g, o = r["ghz"], r.get("ours")
            label = [r["part"], r["target"], f"{r['streams']:,}"]
            for name, fig in (("ours", o), (f"ghz -n {g['requests']:,}", g)):
                if fig is None:
                    continue
                cells.append(
                    [
                        *label,
                        name,
                        _fmt(fig.get("streams_per_s"), ",.1f"),
                        _fmt(fig.get("stream_p50_ms"), ",.1f"),
                        _fmt(fig.get("stream_p99_ms"), ",.1f"),
                        _fmt(fig.get("deltas_per_s")),
                        _fmt(fig.get("server_cpu_us_per_delta"), ",.1f"),
                        _fmt(fig.get("client_cpu_us_per_delta"), ",.1f"),
                        str(g.get("failed", "-")) if fig is g else "",
                        _x(r.get("ghz_over_ours", {}).get("streams_per_s")) if fig is g else "",
                    ]
                )
        title = (
            f"ghz {report['machine'].get('ghz')} beside our client, same target and C, same "
            "servers: streams/s = streams completed ÷ wall time; stream = call to end of "
            "stream (OK streams); deltas/s from ghz = OK streams x K ÷ its wall time; CPU "
            "(10 ms ticks) over the run ÷ deltas carried, the client's being ours or ghz's"
        )
        out.append((title, headers, cells))
    return out


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, parts: bool = True) -> None:
    if parts and (zl := report.get("zero_latency")):
        throughput.print_report(zl, out)
    if parts and (pc := report.get("paced")):
        print("", file=out)
        paced.print_report(pc, out, header=not report.get("zero_latency"))
    print("\n=== Overhead: interlockd against its baselines ===", file=out)
    for title, headers, cells in tables(report):
        print(f"\n{title}", file=out)
        _table(headers, cells, out)
    print("", file=out)
    for line in notes(report):
        print(line, file=out)
    for failure in report["failures"][:20]:
        print(f"FAILED {failure}", file=out)
    if len(report["failures"]) > 20:
        print(f"... and {len(report['failures']) - 20} more failures", file=out)


def notes(report: dict[str, Any]) -> list[str]:
    lines = list(report.get("notes", []))
    lines.append(
        "targets (benchmarks/README.md): zero-latency deltas/s >= 0.70x bare, >= 2x with "
        "coalescing; paced added TTFD p50 <= 1.5 ms and p99 <= 5 ms at C=100, added gap "
        "p99 <= 0.5 ms at C=500, >= 1,000 streams without a stall"
    )
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = ["## Overhead: interlockd against its baselines", ""]
    for title, headers, cells in tables(report):
        lines += [title + ":", "", bench_results.md_table(headers, cells)]
    lines += [f"- {line}" for line in notes(report)]
    lines += [f"- FAILED {f}" for f in report["failures"][:20]]
    if cmds := [r["ghz"]["command"] for r in report.get("ghz_vs_ours", [])[:1]]:
        lines += ["", "A ghz command as run (`<run>` is the run's temporary directory):", ""]
        lines += ["```sh", cmds[0], "```"]
    for key, title, module in (
        ("zero_latency", "Zero-latency part (throughput.py)", throughput),
        ("paced", "Paced part (paced.py)", paced),
    ):
        if part := report.get(key):
            buf = io.StringIO()
            module.print_report(part, buf, header=False)
            lines += ["", f"## {title}", "", bench_results.text_block(buf.getvalue())]
    return "\n".join(lines) + "\n"


def publish(report: dict[str, Any], out: Path) -> Path:
    extra = {"ghz": report["machine"]["ghz"]} if report["machine"].get("ghz") else {}
    cs = ", ".join(f"{c:,}" for c in report["config"]["concurrency"])
    return bench_results.publish(
        out,
        f"Overhead: interlockd, the bare floor and the fake called directly, C in {{{cs}}}",
        report,
        markdown(report),
        lambda d: plots(report, d),
        extra,
    )


# --- plots -----------------------------------------------------------------------------


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    paths = []
    if zl := report.get("zero_latency"):
        paths += throughput.plots(zl, out, prefix="zero_latency_")
    if pc := report.get("paced"):
        paths += paced.plots(pc, out, prefix="paced_")
    if vs := report.get("ghz_vs_ours"):
        paths.append(plot_ghz(vs, out))
    return paths


def plot_ghz(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    """streams/s and whole-stream p99 by C, ours (solid) and ghz's (dashed), per target."""
    part_names = list(dict.fromkeys(r["part"] for r in rows))
    fig, axes = bench_results.figure(ncols=2, nrows=len(part_names), width=6.0, height=3.8)
    colors = {"bare": "tab:gray", "interlockd": "tab:blue"}
    for k, part in enumerate(part_names):
        rate, p99 = axes[2 * k], axes[2 * k + 1]
        mine = [r for r in rows if r["part"] == part]
        for target in GRPC_TARGETS:
            ts = sorted((r for r in mine if r["target"] == target), key=lambda r: r["streams"])
            if not ts:
                continue
            cs = [r["streams"] for r in ts]
            for ax, key in ((rate, "streams_per_s"), (p99, "stream_p99_ms")):
                ours = [r.get("ours", {}).get(key, math.nan) for r in ts]
                ax.plot(cs, ours, marker="o", color=colors[target], label=f"{target}, ours")
                ghz = [r["ghz"].get(key, math.nan) for r in ts]
                ax.plot(
                    cs,
                    ghz,
                    marker="x",
                    linestyle="--",
                    color=colors[target],
                    label=f"{target}, ghz",
                )
        cs_all = sorted({r["streams"] for r in mine})
        for ax, label in ((rate, "streams/s"), (p99, "whole stream p99, ms")):
            bench_results.concurrency_axis(ax, cs_all)
            ax.set_yscale("log")
            bench_results.plain_numbers(ax)
            ax.set_ylabel(f"{part}: {label}")
            ax.legend(fontsize="small")
    return bench_results.save(fig, out, "ghz_vs_ours", "ghz beside our client, same servers")


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="interlockd vs a bare grpc.aio server vs the fake called directly, "
        "zero-latency and paced, with ghz beside our client"
    )
    parser.add_argument("--smoke", action="store_true", help="C in {1, 4}, tiny streams (CI)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--install", action="store_true", help="run `make bench-ghz` if needed")
    parser.add_argument("--no-ghz", action="store_true", help="leave ghz out")
    parser.add_argument("--concurrency", help="comma-separated C values (default 1,100,500,1000)")
    parser.add_argument("--deltas", type=int, help="K, deltas per zero-latency stream (1000)")
    parser.add_argument("--reps", type=int, help="zero-latency repetitions (default 2)")
    parser.add_argument("--ttfe-runs", type=int, help="sequential zero-latency runs per target")
    parser.add_argument("--paced-deltas", type=int, help="deltas per paced stream (default 64)")
    parser.add_argument("--interval-ms", type=float, help="between paced deltas (default 20)")
    parser.add_argument("--paced-reps", type=int, help="paced repetitions (default 1)")
    parser.add_argument("--ghz-min-requests", type=int, help="ghz's -n: rounds of C, >= this")
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys = ("deltas", "reps", "ttfe_runs", "paced_deltas", "interval_ms", "paced_reps")
    overrides: dict[str, Any] = {
        k: getattr(args, k)
        for k in (*keys, "ghz_min_requests", "timeout", "budget")
        if getattr(args, k) is not None
    }
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.no_ghz:
        overrides["ghz"] = False
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if min(cfg.concurrency) < 1 or min(cfg.deltas, cfg.reps, cfg.paced_reps) < 1:
        parser.error("concurrency, deltas and reps must be >= 1")
    if cfg.paced_deltas < 2 or cfg.interval_ms <= 0 or cfg.ghz_min_requests < 1:
        parser.error("--paced-deltas must be >= 2, --interval-ms > 0, --ghz-min-requests >= 1")
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    version = ensure_ghz(args.install) if cfg.ghz else None
    report_notes = []
    if cfg.ghz and version is None:
        if args.install:
            log("overhead: `make bench-ghz` did not produce .bench/bin/ghz")
            return 2
        report_notes.append(
            "ghz: not installed, skipped (`make bench-ghz` builds it into .bench/bin, "
            "or pass --install)"
        )
        log(f"overhead: {report_notes[-1]}")
    elif not cfg.ghz:
        report_notes.append("ghz: left out (--no-ghz)")
    use_ghz = version is not None
    # Direct and zero-latency upstream streams are a connection each; ghz's and ours, many.
    raise_open_files(2 * max(cfg.concurrency) + 1000)
    deadline = Deadline(cfg.budget)
    report: dict[str, Any] = {"failures": []}
    ghz_rows: list[dict[str, Any]] = []
    with signals_interrupt(), tempfile.TemporaryDirectory(prefix="interlock-overhead-") as tmp:
        try:
            zl, rows = zero_latency_part(cfg, use_ghz, Path(tmp) / "zero-latency", deadline)
            report["zero_latency"] = zl
            ghz_rows += ours_vs_ghz("zero-latency", zl, rows)
            pc, rows = paced_part(cfg, use_ghz, Path(tmp) / "paced", deadline)
            report["paced"] = pc
            ghz_rows += ours_vs_ghz("paced", pc, rows)
        except ChildFailed as exc:
            log(f"overhead: {exc}")
            report["failures"].append(str(exc))
        except BudgetExceeded as exc:
            report["failures"].append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    for key in ("zero_latency", "paced"):
        if part := report.get(key):
            report["failures"] += [f"{key}: {f}" for f in part["failures"]]
    for r in ghz_rows:
        g = r["ghz"]
        if g.get("failed"):
            errors = "; ".join(f"{n} x {e}" for e, n in list(g.get("errors", {}).items())[:3])
            report["failures"].append(
                f"ghz {r['part']} {r['target']} C={r['streams']}: {g['failed']} of "
                f"{g['requests']} streams failed ({errors or g.get('status_codes')})"
            )
    report = {
        "machine": machine_info() | {"ghz": version},
        "config": dataclasses.asdict(cfg),
        "zero_latency_summary": zero_latency_summary(report["zero_latency"])
        if "zero_latency" in report
        else [],
        "paced_summary": paced_summary(report["paced"]) if "paced" in report else [],
        "ghz_vs_ours": ghz_rows,
        "notes": report_notes,
        **report,
    }
    report["ok"] = not report["failures"]
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False, default=str))
    else:
        print_report(report)
    if out := bench_results.directory("overhead", args):
        publish(report, out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
