"""The PostgreSQL store against the embedded SQLite store: turns per second and time to first event.

One run, on the same machine and interleaved so that noise hits both alike:
a throwaway PostgreSQL cluster with its durability settings on
(``tests/postgres.py``, ``durable=True``: fsync and synchronous_commit on, as
the SQLite store's ``synchronous = FULL`` fsyncs every commit), the
zero-latency fake upstream (``upstream.py``), and two ``interlockd serve
--bootstrap`` in front of it, the same config but for the store:

``sqlite``
    the embedded SQLite file in the daemon's data directory (the default);
``postgresql``
    ``store_url`` naming a fresh database on that cluster, the master key given
    in the config, ``store.pool_size`` as configured (the daemon's default
    unless ``--pool-size``).

Figures: **turns per second** with C streams each running short turns (K = 8
deltas: a turn's fixed cost — admission, the user message, the settle —
dominates, not its deltas) back to back, at C = 1, 10 and 100, median of the
repetitions; time to first event of those turns under load; **time to first
event of sequential turns** (p50/p99), interleaved with calling the upstream
directly, and the time each store **adds** over that direct call; the CPU
per turn of the daemon, of the PostgreSQL server (its process tree) and of
this client; and every figure's ratio PostgreSQL / SQLite (turns/s paired per
repetition).

The load client, the fake, both daemons and PostgreSQL share the machine:
with 2 cores the figures are ratios from one run, not capacities.

    .venv/bin/python benchmarks/stores.py            # C in {1, 10, 100}, 3 reps (~2 min here)
    .venv/bin/python benchmarks/stores.py --smoke    # CI: C in {1, 4}, a few turns, < 25 s
    .venv/bin/python benchmarks/stores.py --json     # the results as JSON on stdout

It reuses ``throughput.py``'s machinery (subprocesses, targets, the gRPC and
raw HTTP clients, warm-up and sequential TTFE phases) and writes a results
directory (``results.py``) named ``stores``. Exits 1 if any turn fails, a
server does not start (PostgreSQL's binaries missing included), or the time
budget runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import io
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tests/postgres.py owns the throwaway clusters; the repository root makes it importable.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
import results as bench_results
import throughput
from paced_workers import tree_cpu
from results import machine_info, without_nan
from throughput import (
    BudgetExceeded,
    ChildFailed,
    Children,
    Deadline,
    GrpcTarget,
    Phase,
    StreamResult,
    Target,
    UpstreamTarget,
    _fmt,
    _ms,
    _table,
    log,
    print_header,
    raise_open_files,
    signals_interrupt,
    start_interlockd,
    start_script,
    wait_for_port,
)

from tests.postgres import PostgresCluster, PostgresUnavailable

STORES = ("sqlite", "postgresql")
UPSTREAM = "upstream"


@dataclass(frozen=True)
class Config:
    deltas: int = 8  # K: deltas per turn (short: the turn's fixed cost dominates)
    concurrency: tuple[int, ...] = (1, 10, 100)  # C
    turns: int = 600  # turns per (store, C, rep), split over the C streams
    min_turns_per_stream: int = 5  # so that every stream runs turns back to back
    reps: int = 3  # repetitions of every (store, C); medians over them
    ttfe_runs: int = 200  # sequential turns per target for time to first event
    streams_per_channel: int = 25
    pool_size: int | None = None  # PostgreSQL store.pool_size; None: the daemon's default
    timeout: float = 120.0  # seconds, per phase (and the deadline of its turns)
    budget: float = 600.0  # seconds, the whole run

    def turns_per_stream(self, streams: int) -> int:
        return max(self.min_turns_per_stream, math.ceil(self.turns / streams))

    def phases(self) -> throughput.Config:
        """throughput.py's Config for its warm-up and sequential TTFE phases."""
        return throughput.Config(
            deltas=self.deltas,
            concurrency=self.concurrency,
            ttfe_runs=self.ttfe_runs,
            ttfe_deltas=self.deltas,
            streams_per_channel=self.streams_per_channel,
            timeout=self.timeout,
            budget=self.budget,
        )


SMOKE = Config(
    concurrency=(1, 4),
    turns=20,
    min_turns_per_stream=3,
    reps=1,
    ttfe_runs=10,
    timeout=10.0,
    budget=20.0,
)


# --- servers ---------------------------------------------------------------------


@dataclass
class Servers:
    """What one run started: the targets' addresses and the pids whose CPU is measured."""

    upstream_port: int
    upstream_pid: int
    daemons: dict[str, tuple[str, int, str]]  # store -> (address, pid, API key)
    cluster: PostgresCluster
    postgres: dict[str, str]  # the cluster's version and durability settings

    @property
    def postmaster_pid(self) -> int:
        return self.cluster.postmaster_pid


def start_servers(
    children: Children, workdir: Path, cluster: PostgresCluster, cfg: Config
) -> Servers:
    """The upstream, then one daemon per store, each in a workdir of its own."""
    upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
    port = wait_for_port(upstream)
    store_url = cluster.create_database("interlock_bench")
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    daemons = {}
    for store in STORES:
        home = workdir / store
        home.mkdir()
        options: dict[str, Any] = {}
        if store == "postgresql":
            options = {"store_url": store_url, "master_key": master_key}
            options["pool_size"] = cfg.pool_size
        child, key = start_interlockd(children, home, port, True, name=store, **options)
        daemons[store] = (f"127.0.0.1:{wait_for_port(child)}", child.proc.pid, key)
    show = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
    postgres = {name: cluster.psql("-tAc", f"SHOW {name}").strip() for name in show}
    return Servers(port, upstream.proc.pid, daemons, cluster, postgres)


FLUSHED = 1.2  # seconds: a PostgreSQL backend reports its counts at most once a second


async def committed(cluster: PostgresCluster) -> tuple[int, float]:
    """Transactions committed in the benchmark's database so far, and when that was read.

    Read ``FLUSHED`` after the caller's last turn, so the backends have reported them.
    """

    def read() -> int:
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'interlock_bench'"
        return int(cluster.psql("-tAc", sql).strip())

    await asyncio.sleep(FLUSHED)
    return await asyncio.to_thread(read), time.monotonic()


def turn_commits(
    idle: tuple[int, float], start: tuple[int, float], end: tuple[int, float]
) -> float:
    """Commits from ``start`` to ``end`` less the daemon's own background work (lease
    renewals and the like) at the rate counted from ``idle`` to ``start``, with no turn running."""
    rate = (start[0] - idle[0]) / (start[1] - idle[1])
    return (end[0] - start[0]) - rate * (end[1] - start[1])


class StoreTarget(GrpcTarget):
    """A daemon's ``Run``; its CPU read also counts the PostgreSQL server's process tree."""

    def __init__(self, store: str, servers: Servers, streams_per_channel: int) -> None:
        address, pid, key = servers.daemons[store]
        super().__init__(
            store,
            address,
            pid,
            api_key=key,
            upstream_pid=servers.upstream_pid,
            streams_per_channel=streams_per_channel,
        )
        self._postmaster = servers.postmaster_pid

    def cpu(self) -> dict[str, float]:
        return super().cpu() | {"postgres": tree_cpu(self._postmaster)}


# --- phases ------------------------------------------------------------------------


async def run_turns(
    target: Target, streams: int, per_stream: int, cfg: Config, rep: int, limit: float
) -> Phase:
    """C streams, each running ``per_stream`` turns back to back; wall: first start to last end."""
    phase = Phase("turns", target.name, streams, cfg.deltas, rep)

    async def loop(index: int) -> list[StreamResult]:
        done: list[StreamResult] = []
        for _ in range(per_stream):
            done.append(await target.stream(index, cfg.deltas, limit))
            if not done[-1].ok:
                break  # one failure is enough to fail the run; don't pile up more
        return done

    before = target.cpu()
    start = time.perf_counter()
    try:
        loops = asyncio.gather(*(loop(i) for i in range(streams)))
        phase.results = [r for done in await asyncio.wait_for(loops, limit + 5) for r in done]
    except TimeoutError:
        phase.results = [StreamResult(error="phase timed out")]
    phase.wall = time.perf_counter() - start
    after = target.cpu()
    phase.cpu = {k: after[k] - before[k] for k in before}
    return phase


async def run_benchmark(servers: Servers, cfg: Config) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    stores = [StoreTarget(s, servers, cfg.streams_per_channel) for s in STORES]
    upstream = UpstreamTarget(servers.upstream_port, servers.upstream_pid)
    targets: list[Target] = [*stores, upstream]
    phases: list[Phase] = []
    errors: list[str] = []
    commits: float | None = None  # PostgreSQL transactions of the turns phases
    try:
        for target in targets:
            await target.open(max(cfg.concurrency))
        log("warm-up")
        phases += await throughput.warm_up(stores, cfg.phases(), deadline)
        log("turns per second")
        idle = await committed(servers.cluster)
        before = await committed(servers.cluster)
        for rep in range(cfg.reps):
            for streams in cfg.concurrency:
                per_stream = cfg.turns_per_stream(streams)
                for target in throughput.rotated(stores, rep):
                    log(f"  rep {rep + 1}/{cfg.reps}  C={streams:<4} {target.name}")
                    limit = deadline.limit(cfg.timeout)
                    phases.append(await run_turns(target, streams, per_stream, cfg, rep, limit))
        commits = turn_commits(idle, before, await committed(servers.cluster))
        log("time to first event")
        phases += await throughput.measure_ttfe(targets, cfg.phases(), deadline)
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for target in targets:
            await target.close()
    return build_report(phases, cfg, servers, errors, commits)


# --- summaries -----------------------------------------------------------------------


def _us_per_turn(phases: Sequence[Phase], process: str) -> float:
    turns = sum(len(p.results) for p in phases)
    cpu = sum(p.cpu.get(process, math.nan) for p in phases)
    return cpu / turns * 1e6 if turns else math.nan


def _turns_per_s(phase: Phase) -> float:
    return sum(r.ok for r in phase.results) / phase.wall if phase.wall else 0.0


def summarize_turns(phases: Sequence[Phase]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        groups.setdefault((p.target, p.streams), []).append(p)
    rows = []
    for (store, streams), group in groups.items():
        results = [r for p in group for r in p.results]
        rows.append(
            {
                "store": store,
                "streams": streams,
                "reps": len(group),
                "turns": len(results),
                "turns_per_s": statistics.median(_turns_per_s(p) for p in group),
                "ttfe_p50_ms": _ms((r.first_event for r in results), 50),
                "ttfe_p99_ms": _ms((r.first_event for r in results), 99),
                "turn_p50_ms": _ms((r.duration for r in results), 50),
                "turn_p99_ms": _ms((r.duration for r in results), 99),
                "server_cpu_us_per_turn": _us_per_turn(group, "server"),
                "postgres_cpu_us_per_turn": _us_per_turn(group, "postgres"),
                "client_cpu_us_per_turn": _us_per_turn(group, "client"),
                "failed": sum(not r.ok for r in results),
            }
        )
    return sorted(rows, key=lambda r: (r["streams"], STORES.index(r["store"])))


def summarize_ttfe(phases: Sequence[Phase]) -> list[dict[str, Any]]:
    """Sequential turns per target; ``added`` = the store's percentile minus the upstream's."""
    rows: dict[str, dict[str, Any]] = {}
    for p in phases:
        rows[p.target] = {
            "target": p.target,
            "runs": len(p.results),
            "first_event_p50_ms": _ms((r.first_event for r in p.results), 50),
            "first_event_p99_ms": _ms((r.first_event for r in p.results), 99),
            "first_token_p50_ms": _ms((r.first_token for r in p.results), 50),
            "first_token_p99_ms": _ms((r.first_token for r in p.results), 99),
            "turn_p50_ms": _ms((r.duration for r in p.results), 50),
            "failed": sum(not r.ok for r in p.results),
        }
    direct = rows.get(UPSTREAM)
    for row in rows.values():
        for q in ("p50", "p99"):
            added = math.nan
            if direct and row["target"] != UPSTREAM:
                added = row[f"first_event_{q}_ms"] - direct[f"first_event_{q}_ms"]
            row[f"added_{q}_ms"] = added
    order = (*STORES, UPSTREAM)
    return [rows[t] for t in order if t in rows]


def _ratio(pg: float, sqlite: float) -> float:
    if math.isnan(pg) or math.isnan(sqlite) or sqlite == 0:
        return math.nan
    return pg / sqlite


def ratios(
    phases: Sequence[Phase], turns: Sequence[dict[str, Any]], ttfe: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """PostgreSQL / SQLite for every figure; turns/s paired per repetition."""
    per_rep = {(p.target, p.streams, p.rep): _turns_per_s(p) for p in phases}
    by = {(r["store"], r["streams"]): r for r in turns}
    rows = []
    for streams in sorted({r["streams"] for r in turns}):
        pg, sq = by.get(("postgresql", streams)), by.get(("sqlite", streams))
        if not pg or not sq:
            continue
        paired = [
            _ratio(v, per_rep[("sqlite", c, rep)])
            for (store, c, rep), v in per_rep.items()
            if store == "postgresql" and c == streams and ("sqlite", c, rep) in per_rep
        ]
        paired = [x for x in paired if not math.isnan(x)]
        row: dict[str, Any] = {"figure": f"C={streams}"}
        row["turns_per_s"] = statistics.median(paired) if paired else math.nan
        for key in ("ttfe_p50_ms", "ttfe_p99_ms", "server_cpu_us_per_turn"):
            row[key] = _ratio(pg[key], sq[key])
        rows.append(row)
    seq = {r["target"]: r for r in ttfe}
    if "postgresql" in seq and "sqlite" in seq:
        pg, sq = seq["postgresql"], seq["sqlite"]
        row = {"figure": "sequential", "turns_per_s": math.nan}
        row["ttfe_p50_ms"] = _ratio(pg["first_event_p50_ms"], sq["first_event_p50_ms"])
        row["ttfe_p99_ms"] = _ratio(pg["first_event_p99_ms"], sq["first_event_p99_ms"])
        row["added_p50_ms"] = _ratio(pg["added_p50_ms"], sq["added_p50_ms"])
        row["added_p99_ms"] = _ratio(pg["added_p99_ms"], sq["added_p99_ms"])
        rows.append(row)
    return rows


def build_report(
    phases: Sequence[Phase],
    cfg: Config,
    servers: Servers,
    errors: list[str],
    commits: float | None,
) -> dict[str, Any]:
    turn_phases = [p for p in phases if p.kind == "turns"]
    pg_turns = sum(len(p.results) for p in turn_phases if p.target == "postgresql")
    turns = summarize_turns(turn_phases)
    ttfe = summarize_ttfe([p for p in phases if p.kind == "ttfe"])
    failures = errors + [f for p in phases for f in p.failures()]
    raw = [
        {
            **{k: getattr(p, k) for k in ("target", "streams", "rep", "wall")},
            "turns": len(p.results),
            "turns_per_s": _turns_per_s(p),
            "cpu_seconds": p.cpu,
            "failed": len(p.failures()),
        }
        for p in turn_phases
    ]
    config = dataclasses.asdict(cfg) | {
        "turns_per_stream": {c: cfg.turns_per_stream(c) for c in cfg.concurrency},
        "postgres": servers.postgres,
        "asyncpg": _version("asyncpg"),
        "sqlite_synchronous": "FULL (WAL)",
    }
    return {
        "machine": machine_info(),
        "config": config,
        "turns": turns,
        "ttfe": ttfe,
        "ratios": ratios(turn_phases, turns, ttfe),
        # pg_stat_database.xact_commit: explicit transactions and single statements alike
        "postgres_commits_per_turn": commits / pg_turns if commits and pg_turns else None,
        "phases": raw,
        "failures": failures,
        "ok": not failures,
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


# --- report --------------------------------------------------------------------------


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, header: bool = True) -> None:
    cfg = report["config"]
    if header:
        print_header(report["machine"], cfg, out)
    pg = cfg["postgres"]
    print(
        f"\nPostgreSQL {pg.get('server_version', '?')}: fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}, pool_size="
        f"{cfg['pool_size'] or 'default (10)'}; SQLite: synchronous={cfg['sqlite_synchronous']}",
        file=out,
    )
    print(
        f"\nTurns: K={cfg['deltas']} deltas each, C streams running turns back to back "
        f"({', '.join(f'C={c}: {n} each' for c, n in cfg['turns_per_stream'].items())}), "
        f"median of {cfg['reps']} reps; TTFE and turn time over all turns; CPU = µs per turn",
        file=out,
    )
    headers = ["store", "C", "turns", "turns/s", "TTFE p50", "TTFE p99", "turn p50", "turn p99"]
    headers += ["daemon CPU", "postgres CPU", "client CPU", "failed"]
    rows = [
        [
            r["store"],
            str(r["streams"]),
            str(r["turns"]),
            _fmt(r["turns_per_s"], ",.1f"),
            _fmt(r["ttfe_p50_ms"], ".2f") + " ms",
            _fmt(r["ttfe_p99_ms"], ".2f") + " ms",
            _fmt(r["turn_p50_ms"], ".2f") + " ms",
            _fmt(r["turn_p99_ms"], ".2f") + " ms",
            _fmt(r["server_cpu_us_per_turn"]),
            _fmt(r["postgres_cpu_us_per_turn"]) if r["store"] == "postgresql" else "-",
            _fmt(r["client_cpu_us_per_turn"]),
            str(r["failed"]),
        ]
        for r in report["turns"]
    ]
    _table(headers, rows, out)
    if report["postgres_commits_per_turn"] is not None:
        print(
            f"PostgreSQL: {report['postgres_commits_per_turn']:.1f} transactions committed per "
            "turn (pg_stat_database over the turns phases; a single statement counts as one)",
            file=out,
        )
    print(
        f"\nTime to first event: {cfg['ttfe_runs']} sequential turns per target of "
        f"K={cfg['deltas']}, interleaved; added = the store's − calling the upstream directly (ms)",
        file=out,
    )
    headers = ["target", "runs", "event p50", "event p99", "added p50", "added p99", "turn p50"]
    keys: tuple[str, ...] = ("first_event_p50_ms", "first_event_p99_ms", "added_p50_ms")
    keys += ("added_p99_ms",)
    rows = [
        [r["target"], str(r["runs"]), *(_fmt(r[k], ".2f") for k in (*keys, "turn_p50_ms"))]
        for r in report["ttfe"]
    ]
    _table(headers, rows, out)
    print("\nPostgreSQL / SQLite (turns/s: median of the per-rep ratios)", file=out)
    headers = ["figure", "turns/s", "TTFE p50", "TTFE p99", "added p50", "added p99", "CPU/turn"]
    keys = ("turns_per_s", "ttfe_p50_ms", "ttfe_p99_ms", "added_p50_ms", "added_p99_ms")
    rows = [
        [r["figure"], *(_fmt(r.get(k), ".2f") for k in (*keys, "server_cpu_us_per_turn"))]
        for r in report["ratios"]
    ]
    _table(headers, rows, out)
    failures = report["failures"]
    for failure in failures[:20]:
        print(f"FAILED {failure}", file=out)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more failures", file=out)


def report_text(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    print_report(report, buf, header=False)
    return buf.getvalue()


STYLE = {
    "sqlite": {"color": "tab:blue", "marker": "o"},
    "postgresql": {"color": "tab:orange", "marker": "s"},
}


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Turns/s by C per store; TTFE p50/p99 of those turns by C per store."""
    rows = report["turns"]
    if not rows:
        return []
    cs = sorted({r["streams"] for r in rows})
    fig, (left, right) = bench_results.figure(ncols=2, width=5.5)
    for store in STORES:
        mine = sorted((r["streams"], r["turns_per_s"]) for r in rows if r["store"] == store)
        if mine:
            left.plot(*zip(*mine, strict=True), label=store, **STYLE[store])
        ttfe = sorted(
            (r["streams"], r["ttfe_p50_ms"], r["ttfe_p99_ms"]) for r in rows if r["store"] == store
        )
        xs = [t[0] for t in ttfe]
        right.plot(xs, [t[1] for t in ttfe], label=f"{store} p50", **STYLE[store])
        right.plot(xs, [t[2] for t in ttfe], linestyle="--", label=f"{store} p99", **STYLE[store])
    bench_results.concurrency_axis(left, cs)
    left.set_ylabel("turns/s (median of reps)")
    left.set_ylim(bottom=0)
    left.legend()
    bench_results.concurrency_axis(right, cs)
    right.set_yscale("log")
    bench_results.plain_numbers(right)
    right.set_ylabel("time to first event, ms")
    right.legend(fontsize="small")
    title = f"Short turns (K={report['config']['deltas']}): SQLite vs PostgreSQL store"
    return [bench_results.save(fig, out, "turns", title)]


def publish(report: dict[str, Any], out: Path) -> Path:
    cfg = report["config"]
    body = "## Results\n\n" + bench_results.text_block(report_text(report))
    versions = {
        "PostgreSQL": cfg["postgres"].get("server_version", "-"),
        "asyncpg": cfg["asyncpg"],
    }
    title = "Stores: PostgreSQL vs SQLite"
    return bench_results.publish(out, title, report, body, lambda d: plots(report, d), versions)


# --- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="interlockd on the PostgreSQL store vs SQLite: turns/s and time to first event"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny and fast (CI), < 25 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--deltas", type=int, help="K, deltas per turn (default 8)")
    parser.add_argument("--concurrency", help="comma-separated C values (default 1,10,100)")
    parser.add_argument("--turns", type=int, help="turns per (store, C, rep), split over C")
    parser.add_argument("--reps", type=int, help="repetitions of each (store, C) (default 3)")
    parser.add_argument("--ttfe-runs", type=int, help="sequential turns per target (default 200)")
    parser.add_argument("--pool-size", type=int, help="the PostgreSQL store's pool_size")
    parser.add_argument("--streams-per-channel", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per phase")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys: tuple[str, ...] = ("deltas", "turns", "reps", "ttfe_runs", "pool_size")
    keys += ("streams_per_channel", "timeout", "budget")
    overrides: dict[str, Any] = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.concurrency:
        overrides["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if min(cfg.concurrency) < 1 or cfg.deltas < 1 or cfg.reps < 1 or cfg.turns < 1:
        parser.error("concurrency, deltas, turns and reps must be >= 1")
    if cfg.pool_size is not None and cfg.pool_size < 1:
        parser.error("--pool-size must be >= 1")
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    raise_open_files(2 * max(cfg.concurrency) + 1000)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-stores-") as tmp,
        PostgresCluster(durable=True) as cluster,
        Children(Path(tmp)) as children,
    ):
        try:
            log("starting PostgreSQL (durable), the upstream and interlockd on each store")
            servers = start_servers(children, Path(tmp), cluster, cfg)
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        report = asyncio.run(run_benchmark(servers, cfg))
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if out := bench_results.directory("stores", args):
        publish(report, out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PostgresUnavailable as exc:
        log(f"benchmark: {exc}")
        sys.exit(1)
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
