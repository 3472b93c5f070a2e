"""Turn cost: a turn's fixed CPU and the CPU of each streamed delta, interlockd against the floors.

Two of issue 18's targets, measured directly, in one run, interleaved, with
the same gRPC client (one channel per target, here):

- a turn's **fixed CPU** (start + settle, without the provider and the
  per-delta work) ≤ 2 ms;
- **CPU per streamed delta** ≤ 1.3x the bare floor's in the same run.

The targets, all in front of ``upstream.py`` (zero latency) except the floor:

``bare``
    the floor (``bare_server.py``): pre-built ``AgentEvent``s, no upstream;
``relay``
    ``relay.py``: a bare ``grpc.aio`` ``Run`` forwarding the upstream's deltas
    with interlockd's HTTP client. It pays the gRPC call and the upstream HTTP
    request, which are not the router's own work;
``interlockd-<sync>[-nc]``
    ``interlockd serve`` (full path: auth, admission, store writes, window
    recording, settle), once per ``[store] sqlite_synchronous`` value of
    ``--sync`` (``full`` is the default, ``normal`` trades the last commits
    on a power loss for fewer fsyncs) and per
    ``runs.coalesce_deltas`` of ``--coalesce`` (``-nc``: coalescing off; a
    zero-latency upstream makes deltas queue, so coalescing on sends far
    fewer events than deltas, and the per-delta target is about the work of
    each delta).

Each round runs, for every target in turn (the order rotated per round), a
block of 1-delta turns and a block of K-delta turns, all sequential; a
target's server CPU over a block is ``utime + stime`` of its process
(``/proc``), read once the process has gone quiet after the block's last
turn (a settle still running then is counted in its own turn). Then, per
target:

- CPU per turn of 1-delta turns; interlockd's **fixed CPU per turn** is
  interlockd's minus the relay's;
- time to first delta (the first ``text_delta``) p50/p99 of the 1-delta turns;
- **CPU per delta** = (CPU per K-delta turn - CPU per 1-delta turn) / (K - 1),
  and interlockd's over the floor's and over the relay's.

``/proc`` counts CPU in clock ticks (10 ms here): each figure carries its
resolution (± one tick per block, spread over the block's turns). A verdict
is given only to figures of at least ``--judge-turns`` turns; below that (a
smoke) a CPU figure coarser than ±25% is not printed, nor a p99 of fewer than
100 turns.

    .venv/bin/python benchmarks/turn_cost.py            # the real run (~2 min on 2 cores)
    .venv/bin/python benchmarks/turn_cost.py --smoke    # CI: a few turns, < 30 s, no verdicts
    .venv/bin/python benchmarks/turn_cost.py --json     # results as JSON on stdout

Every run also writes a results directory (report, JSON, plots; ``results.py``).
An interlockd variant that does not start (a setting this daemon does not
know) is left out with a note. Every loop has a count and a time limit; the
subprocesses are stopped on exit. Exits 1 if a turn fails or the time budget
runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results
from results import machine_info, without_nan
from side_by_side import verdict
from throughput import (
    API_KEY,
    HERE,
    BudgetExceeded,
    Child,
    ChildFailed,
    Children,
    Deadline,
    GrpcTarget,
    StreamResult,
    _fmt,
    _table,
    cpu_seconds,
    interlockd_argv,
    interlockd_config,
    log,
    percentile,
    print_header,
    signals_interrupt,
    start_script,
    wait_for_port,
)

SYNC_MODES = ("full", "normal")  # "full" is the daemon's default
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
FIXED_TARGET_MS = 2.0
COARSE = 0.25  # below judge_turns, a CPU figure with a wider resolution is not printed
DELTA_TARGET_RATIO = 1.3


@dataclass(frozen=True)
class Config:
    turns: int = 1000  # S: measured 1-delta turns per target
    warmup: int = 100  # unmeasured 1-delta turns per target first
    deltas: int = 256  # K: deltas of the per-delta turns
    delta_turns: int = 200  # measured K-delta turns per target
    rounds: int = 10  # blocks per target and kind, interleaved with the other targets'
    sync: tuple[str, ...] = SYNC_MODES  # store.sqlite_synchronous of each interlockd
    coalesce: tuple[bool, ...] = (True, False)  # runs.coalesce_deltas of each interlockd
    judge_turns: int = 200  # fewer measured turns than this: figures only, no verdicts
    p99_turns: int = 100  # fewer turns than this: no p99
    timeout: float = 60.0  # seconds, a turn's deadline and a block's limit
    budget: float = 1200.0  # seconds, the whole run


SMOKE = Config(turns=20, warmup=5, deltas=32, delta_turns=6, rounds=2, timeout=10.0, budget=25.0)


# --- the targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One interlockd: its store's synchronous mode and whether it coalesces deltas."""

    sync: str
    coalesce: bool

    @property
    def name(self) -> str:
        return f"interlockd-{self.sync}" + ("" if self.coalesce else "-nc")


def variants(cfg: Config) -> list[Variant]:
    return [Variant(s, c) for s in cfg.sync for c in cfg.coalesce]


def write_config(workdir: Path, upstream_port: int, variant: Variant) -> Path:
    """throughput.py's config with the variant's ``[store] sqlite_synchronous``."""
    config = interlockd_config(workdir, upstream_port, variant.coalesce)
    with config.open("a") as toml:
        toml.write(f'\n[store]\nsqlite_synchronous = "{variant.sync}"\n')
    return config


def start_daemon(children: Children, workdir: Path, upstream_port: int, variant: Variant) -> Child:
    workdir.mkdir()
    config = write_config(workdir, upstream_port, variant)
    # INTERLOCK_* variables would override the file; a proxy must not see loopback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    argv = [*interlockd_argv(), "serve", "--config", str(config), "--bootstrap"]
    return children.start(variant.name, argv, env)


def start_targets(
    children: Children, workdir: Path, cfg: Config
) -> tuple[list[GrpcTarget], list[str], list[Child]]:
    """The upstream, the floor, the relay and every interlockd variant (all started at once).

    Returns the targets answering, a note for each variant that did not start,
    and the servers' processes (their logs).
    """
    upstream = start_script(children, "upstream", "upstream.py", cfg.deltas)
    port = wait_for_port(upstream)
    bare = start_script(children, "bare", "bare_server.py", cfg.deltas)
    argv = [sys.executable, str(HERE / "relay.py"), "--exit-on-stdin-eof"]
    relay = children.start("relay", [*argv, "--upstream", f"http://127.0.0.1:{port}/v1"])
    daemons = [(v, start_daemon(children, workdir / v.name, port, v)) for v in variants(cfg)]
    targets = [
        GrpcTarget("bare", f"127.0.0.1:{wait_for_port(bare)}", bare.proc.pid),
        GrpcTarget(
            "relay",
            f"127.0.0.1:{wait_for_port(relay)}",
            relay.proc.pid,
            upstream_pid=upstream.proc.pid,
        ),
    ]
    notes = []
    for variant, child in daemons:
        try:
            address = f"127.0.0.1:{wait_for_port(child, timeout=60.0)}"
            key = API_KEY.search(child.output())
            if not key:
                raise ChildFailed(f"{variant.name} printed no INTERLOCK_API_KEY:\n{child.tail()}")
        except ChildFailed as exc:
            tail = str(exc).splitlines()[-1] if str(exc).strip() else "?"
            notes.append(f"{variant.name} (sqlite_synchronous = {variant.sync}) left out: {tail}")
            log(f"benchmark: {exc}")
            continue
        targets.append(
            GrpcTarget(
                variant.name,
                address,
                child.proc.pid,
                api_key=key.group(1),
                upstream_pid=upstream.proc.pid,
            )
        )
    return targets, notes, [bare, relay, *(child for _, child in daemons)]


# --- measuring -----------------------------------------------------------------------


@dataclass
class Tally:
    """A target's measured turns of one kind (1-delta or K-delta), over all its blocks."""

    target: str
    deltas: int
    kind: str = "measured"  # or "warm-up"
    blocks: int = 0
    cpu_s: float = 0.0  # its server
    upstream_s: float = 0.0  # the upstream, while this target's blocks ran
    client_s: float = 0.0  # this process
    wall_s: float = 0.0
    block_ms_per_turn: list[float] = field(default_factory=list)
    results: list[StreamResult] = field(default_factory=list)

    def failures(self) -> list[str]:
        label = f"{self.target} {self.kind} K={self.deltas}"
        return [
            f"{label} turn {i}: {r.error or 'ended without a Finish event'}"
            for i, r in enumerate(self.results)
            if not r.ok
        ]


async def quiet(pid: int, every: float = 0.05, limit: float = 2.0) -> None:
    """Wait until the process's CPU time stops moving (at most ``limit`` s).

    What a turn does after its Finish event (the rest of its settle) then
    counts in the block that ran it, not in whichever target runs next.
    """
    end = time.monotonic() + limit
    before = cpu_seconds(pid)
    while time.monotonic() < end:
        await asyncio.sleep(every)
        now = cpu_seconds(pid)
        if now == before or math.isnan(now):
            return
        before = now


async def run_block(target: GrpcTarget, tally: Tally, turns: int, limit: float) -> None:
    """``turns`` sequential turns of ``tally.deltas`` deltas; their CPU added to ``tally``."""
    before = target.cpu()
    start = time.perf_counter()
    results = []
    for _ in range(turns):
        results.append(await target.stream(0, tally.deltas, limit))
    wall = time.perf_counter() - start
    client = time.process_time()
    await quiet(target.pid)
    after = target.cpu()
    cpu = after["server"] - before["server"]
    tally.blocks += 1
    tally.cpu_s += cpu
    tally.upstream_s += after["upstream"] - before["upstream"]
    tally.client_s += client - before["client"]
    tally.wall_s += wall
    tally.block_ms_per_turn.append(1000 * cpu / turns)
    tally.results += results


def share(total: int, parts: int, i: int) -> int:
    """The ``i``-th of ``parts`` near-equal shares of ``total``."""
    return total // parts + (1 if i < total % parts else 0)


def rotated(targets: Sequence[GrpcTarget], k: int) -> list[GrpcTarget]:
    """Start at a different target each round, so none always goes first."""
    k %= len(targets)
    return [*targets[k:], *targets[:k]]


async def run_benchmark(
    targets: Sequence[GrpcTarget], cfg: Config, notes: list[str]
) -> dict[str, Any]:
    deadline = Deadline(cfg.budget)
    tallies = {(t.name, k): Tally(t.name, k) for t in targets for k in (1, cfg.deltas)}
    errors: list[str] = []
    try:
        for t in targets:
            await asyncio.wait_for(t.open(1), deadline.limit(cfg.timeout))
        log(f"warm-up: {cfg.warmup} turns of 1 delta and 2 of {cfg.deltas} per target")
        for t in targets:
            for deltas, turns in ((1, cfg.warmup), (cfg.deltas, 2)):
                scratch = Tally(t.name, deltas, "warm-up")
                await run_block(t, scratch, turns, deadline.limit(cfg.timeout))
                errors += scratch.failures()
        rounds = min(cfg.rounds, cfg.turns, cfg.delta_turns)
        for rnd in range(rounds):
            log(f"  round {rnd + 1}/{rounds}")
            for t in rotated(targets, rnd):
                for deltas, total in ((1, cfg.turns), (cfg.deltas, cfg.delta_turns)):
                    n = share(total, rounds, rnd)
                    await run_block(t, tallies[(t.name, deltas)], n, deadline.limit(cfg.timeout))
    except BudgetExceeded as exc:
        errors.append(f"{exc} ({cfg.budget:g} s): results are incomplete")
    finally:
        for t in targets:
            await t.close()
    return build_report(list(tallies.values()), cfg, errors, notes)


# --- summaries -----------------------------------------------------------------------


def summarize(tally: Tally, cfg: Config) -> dict[str, Any]:
    rs = tally.results
    turns = len(rs)
    firsts = [r.first_token * 1000 for r in rs if r.first_token is not None]
    enough = turns >= cfg.p99_turns
    per_turn = 1000 * tally.cpu_s / turns if turns else math.nan
    return {
        "target": tally.target,
        "deltas": tally.deltas,
        "turns": turns,
        "blocks": tally.blocks,
        "failed": sum(not r.ok for r in rs),
        "events_per_turn": sum(r.events for r in rs) / turns if turns else math.nan,
        "server_cpu_s": tally.cpu_s,
        "cpu_ms_per_turn": per_turn,
        # /proc counts whole ticks: each block's reading is off by up to one
        "cpu_resolution_ms": 1000 * TICK_S * tally.blocks / turns if turns else math.nan,
        "cpu_ms_per_turn_blocks": tally.block_ms_per_turn,
        "upstream_cpu_ms_per_turn": 1000 * tally.upstream_s / turns if turns else math.nan,
        "client_cpu_ms_per_turn": 1000 * tally.client_s / turns if turns else math.nan,
        "ttfd_p50_ms": percentile(firsts, 50),
        "ttfd_p99_ms": percentile(firsts, 99) if enough else math.nan,
        "turn_p50_ms": percentile((r.duration * 1000 for r in rs), 50),
        "wall_s": tally.wall_s,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def fixed_rows(rows: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per interlockd: its CPU per 1-delta turn over the relay's, and its TTFD over the relay's."""
    relay = rows.get(("relay", 1))
    out = []
    for (name, deltas), r in rows.items():
        if deltas != 1 or not name.startswith("interlockd") or relay is None:
            continue
        out.append(
            {
                "target": name,
                "turns": r["turns"],
                "cpu_ms_per_turn": r["cpu_ms_per_turn"],
                "relay_cpu_ms_per_turn": relay["cpu_ms_per_turn"],
                "fixed_cpu_ms": r["cpu_ms_per_turn"] - relay["cpu_ms_per_turn"],
                "resolution_ms": r["cpu_resolution_ms"] + relay["cpu_resolution_ms"],
                "ttfd_p50_ms": r["ttfd_p50_ms"],
                "ttfd_p99_ms": r["ttfd_p99_ms"],
                "added_ttfd_p50_ms": r["ttfd_p50_ms"] - relay["ttfd_p50_ms"],
                "added_ttfd_p99_ms": r["ttfd_p99_ms"] - relay["ttfd_p99_ms"],
                "ttfd_p50_vs_relay": _ratio(r["ttfd_p50_ms"], relay["ttfd_p50_ms"]),
                "ttfd_p99_vs_relay": _ratio(r["ttfd_p99_ms"], relay["ttfd_p99_ms"]),
            }
        )
    return out


def delta_rows(rows: dict[tuple[str, int], dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Per target: (CPU per K-delta turn - CPU per 1-delta turn) / (K - 1), and the ratios."""
    per: dict[str, dict[str, Any]] = {}
    for (name, deltas), many in rows.items():
        one = rows.get((name, 1))
        if deltas == 1 or one is None:
            continue
        per[name] = {
            "target": name,
            "turns": min(one["turns"], many["turns"]),
            "events_per_turn": many["events_per_turn"],
            "cpu_us_per_delta": 1000 * (many["cpu_ms_per_turn"] - one["cpu_ms_per_turn"]) / (k - 1),
            "resolution_us": 1000
            * (many["cpu_resolution_ms"] + one["cpu_resolution_ms"])
            / (k - 1),
        }
    bare, relay = per.get("bare"), per.get("relay")
    for r in per.values():
        r["vs_bare"] = _ratio(r["cpu_us_per_delta"], bare["cpu_us_per_delta"]) if bare else math.nan
        r["vs_relay"] = (
            _ratio(r["cpu_us_per_delta"], relay["cpu_us_per_delta"]) if relay else math.nan
        )
    return list(per.values())


def target_lines(report: dict[str, Any]) -> list[str]:
    """Issue 18's two targets, per interlockd variant: met, or missed by how much.

    Judged only on at least ``judge_turns`` measured turns (a smoke's are too
    few: it says so once, and judges nothing).
    """
    cfg, lines = report["config"], []
    judge = cfg["judge_turns"]
    turns = min((r["turns"] for r in report["fixed"] + report["per_delta"]), default=0)
    if turns < judge:
        return [f"targets: not judged ({turns} turns per figure; {judge} or more judge them)"]
    for r in report["fixed"]:
        value = f"{r['fixed_cpu_ms']:.2f} ms (± {r['resolution_ms']:.2f})"
        lines.append(
            f"target: {r['target']}: a turn's fixed CPU (interlockd − relay) <= "
            f"{FIXED_TARGET_MS:g} ms: {value}, {verdict(r['fixed_cpu_ms'], FIXED_TARGET_MS, ' ms')}"
        )
    for r in report["per_delta"]:
        if not r["target"].startswith("interlockd"):
            continue
        coalescing = "coalescing off" if r["target"].endswith("-nc") else "coalescing on"
        lines.append(
            f"target: {r['target']} ({coalescing}): CPU per delta <= {DELTA_TARGET_RATIO:g}x "
            f"the bare floor's: {_fmt(r['vs_bare'], '.2f')}x ({r['cpu_us_per_delta']:.1f} "
            f"± {r['resolution_us']:.1f} µs), {verdict(r['vs_bare'], DELTA_TARGET_RATIO, 'x')}"
        )
    return lines


def measurable(value: float, resolution: float, turns: int, cfg: Config) -> bool:
    """Whether a CPU figure is worth printing: enough turns, or a resolution within ±25%."""
    if math.isnan(value):
        return False
    return turns >= cfg.judge_turns or resolution <= COARSE * abs(value)


def mark_measurable(report: dict[str, Any], cfg: Config) -> None:
    """Flag each CPU figure the report may print (a smoke's are mostly too coarse)."""
    for r in report["turns"]:
        r["cpu_measured"] = measurable(
            r["cpu_ms_per_turn"], r["cpu_resolution_ms"], r["turns"], cfg
        )
    one = {r["target"]: r["cpu_measured"] for r in report["turns"] if r["deltas"] == 1}
    for r in report["fixed"]:
        r["cpu_measured"] = measurable(r["fixed_cpu_ms"], r["resolution_ms"], r["turns"], cfg)
        r["own_measured"], r["relay_measured"] = one[r["target"]], one["relay"]
    per = {r["target"]: r for r in report["per_delta"]}
    for r in per.values():
        r["cpu_measured"] = measurable(r["cpu_us_per_delta"], r["resolution_us"], r["turns"], cfg)
    for r in per.values():
        for key, floor in (("vs_bare", "bare"), ("vs_relay", "relay")):
            r[f"{key}_measured"] = r["cpu_measured"] and per.get(floor, {}).get("cpu_measured")


def build_report(
    tallies: Sequence[Tally], cfg: Config, errors: list[str], notes: list[str]
) -> dict[str, Any]:
    rows = {(t.target, t.deltas): summarize(t, cfg) for t in tallies}
    failures = errors + [f for t in tallies for f in t.failures()]
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": {**dataclasses.asdict(cfg), "tick_s": TICK_S},
        "turns": list(rows.values()),
        "fixed": fixed_rows(rows),
        "per_delta": delta_rows(rows, cfg.deltas),
        "notes": notes,
        "failures": failures,
        "ok": not failures,
    }
    mark_measurable(report, cfg)
    report["targets"] = target_lines(report)
    return report


# --- report --------------------------------------------------------------------------


def shown(value: float, measured: bool, spec: str) -> str:
    return _fmt(value, spec) if measured else "-"


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "-"


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    cfg = report["config"]
    turn_cells = [
        [
            r["target"],
            str(r["deltas"]),
            str(r["turns"]),
            _fmt(r["events_per_turn"], ".1f"),
            shown(r["cpu_ms_per_turn"], r["cpu_measured"], ".3f"),
            "± " + _fmt(r["cpu_resolution_ms"], ".3f"),
            _spread(r["cpu_ms_per_turn_blocks"]) if r["cpu_measured"] else "-",
            _fmt(r["upstream_cpu_ms_per_turn"], ".3f"),
            _fmt(r["client_cpu_ms_per_turn"], ".3f"),
            _fmt(r["ttfd_p50_ms"], ".2f"),
            _fmt(r["ttfd_p99_ms"], ".2f"),
            _fmt(r["turn_p50_ms"], ".2f"),
            str(r["failed"]),
        ]
        for r in sorted(report["turns"], key=lambda r: (r["deltas"], r["target"]))
    ]
    turn_headers = ["target", "K", "turns", "events", "server CPU", "res", "by block"]
    turn_headers += ["upstream CPU", "client CPU", "TTFD p50", "TTFD p99", "turn p50", "failed"]
    fixed_cells = [
        [
            r["target"],
            shown(r["cpu_ms_per_turn"], r["own_measured"], ".3f"),
            shown(r["relay_cpu_ms_per_turn"], r["relay_measured"], ".3f"),
            shown(r["fixed_cpu_ms"], r["cpu_measured"], ".3f"),
            "± " + _fmt(r["resolution_ms"], ".3f"),
            f"{_fmt(r['added_ttfd_p50_ms'], '+.2f')} / {_fmt(r['added_ttfd_p99_ms'], '+.2f')}",
            f"{_fmt(r['ttfd_p50_vs_relay'], '.2f')} / {_fmt(r['ttfd_p99_vs_relay'], '.2f')}",
        ]
        for r in report["fixed"]
    ]
    fixed_headers = ["interlockd", "CPU/turn", "relay's", "fixed CPU", "res"]
    fixed_headers += ["TTFD − relay p50/p99", "TTFD ÷ relay p50/p99"]
    delta_cells = [
        [
            r["target"],
            _fmt(r["events_per_turn"], ".1f"),
            shown(r["cpu_us_per_delta"], r["cpu_measured"], ".2f"),
            "± " + _fmt(r["resolution_us"], ".2f"),
            shown(r["vs_bare"], r["vs_bare_measured"], ".2f"),
            shown(r["vs_relay"], r["vs_relay_measured"], ".2f"),
        ]
        for r in report["per_delta"]
    ]
    delta_headers = ["target", f"events/turn (K={cfg['deltas']})", "CPU/delta µs", "res"]
    delta_headers += ["÷ bare", "÷ relay"]
    return [
        (
            f"Sequential turns, targets interleaved in {cfg['rounds']} rounds of blocks; server "
            "CPU per turn in ms (/proc utime+stime over the blocks; res = ± one tick per block "
            "over the turns; by block = the blocks' lowest–highest; - = too few turns to tell); "
            "TTFD = time to the first "
            "text_delta, ms; events = events a turn received",
            turn_headers,
            turn_cells,
        ),
        (
            "Fixed CPU per turn: interlockd's CPU per 1-delta turn − the relay's (ms); "
            "time to first delta against the relay's",
            fixed_headers,
            fixed_cells,
        ),
        (
            f"CPU per delta: (CPU per {cfg['deltas']}-delta turn − CPU per 1-delta turn) / "
            f"{cfg['deltas'] - 1}; -nc = interlockd with coalesce_deltas off",
            delta_headers,
            delta_cells,
        ),
    ]


def tail_lines(report: dict[str, Any]) -> list[str]:
    lines = [*report["notes"], *report["targets"]]
    lines += [f"FAILED {f}" for f in report["failures"][:20]]
    if len(report["failures"]) > 20:
        lines.append(f"FAILED ... and {len(report['failures']) - 20} more")
    return lines


def print_report(report: dict[str, Any], out: IO[str] = sys.stdout, header: bool = True) -> None:
    if header:
        print_header(report["machine"], report["config"], out)
    for title, headers, cells in tables(report):
        print(f"\n{title}", file=out)
        _table(headers, cells, out)
    print("", file=out)
    for line in tail_lines(report):
        print(line, file=out)


def publish(report: dict[str, Any], out: Path) -> Path:
    buf = io.StringIO()
    print_report(report, buf, header=False)
    body = "## Results\n\n" + bench_results.text_block(buf.getvalue())
    return bench_results.publish(
        out,
        "Turn cost: fixed CPU per turn and CPU per delta",
        report,
        body,
        lambda d: plots(report, d),
    )


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Fixed CPU per turn per interlockd; CPU per delta per target, with the 1.3x floor line."""
    fixed, delta = report["fixed"], report["per_delta"]
    if not fixed and not delta:
        return []
    fig, (left, right) = bench_results.figure(ncols=2, width=6.0)
    names = [r["target"] for r in fixed]
    left.bar(names, [r["fixed_cpu_ms"] for r in fixed], yerr=[r["resolution_ms"] for r in fixed])
    left.axhline(FIXED_TARGET_MS, color="tab:red", linestyle="--", label="target 2 ms")
    left.set_ylabel("interlockd − relay, CPU ms per 1-delta turn")
    left.legend()
    names = [r["target"] for r in delta]
    right.bar(
        names, [r["cpu_us_per_delta"] for r in delta], yerr=[r["resolution_us"] for r in delta]
    )
    bare = next((r["cpu_us_per_delta"] for r in delta if r["target"] == "bare"), math.nan)
    if not math.isnan(bare):
        right.axhline(DELTA_TARGET_RATIO * bare, color="tab:red", linestyle="--", label="1.3x bare")
        right.legend()
    right.set_ylabel("server CPU µs per delta")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    return [bench_results.save(fig, out, "turn_cost", "Fixed CPU per turn and CPU per delta")]


# --- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few turns, < 30 s, no verdicts")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_results.add_options(parser)
    parser.add_argument("--turns", type=int, help="S, measured 1-delta turns per target (1000)")
    parser.add_argument("--warmup", type=int, help="unmeasured 1-delta turns per target (100)")
    parser.add_argument("--deltas", type=int, help="K of the per-delta turns (256)")
    parser.add_argument("--delta-turns", type=int, help="measured K-delta turns per target (200)")
    parser.add_argument("--rounds", type=int, help="interleaved blocks per target and kind (10)")
    parser.add_argument(
        "--sync", help=f"comma-separated store.sqlite_synchronous values ({','.join(SYNC_MODES)})"
    )
    parser.add_argument("--coalesce", help="comma-separated of on,off (both)")
    parser.add_argument("--judge-turns", type=int, help="turns needed for a verdict (200)")
    parser.add_argument("--timeout", type=float, help="seconds per block")
    parser.add_argument("--budget", type=float, help="seconds for the whole run")
    args = parser.parse_args(argv)
    keys = ("turns", "warmup", "deltas", "delta_turns", "rounds", "judge_turns")
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in (*keys, "timeout", "budget") if getattr(args, k) is not None
    }
    if args.sync:
        overrides["sync"] = tuple(dict.fromkeys(args.sync.split(",")))
        if set(overrides["sync"]) - set(SYNC_MODES):
            parser.error(f"--sync takes some of {','.join(SYNC_MODES)}")
    if args.coalesce:
        words = tuple(dict.fromkeys(args.coalesce.split(",")))
        if set(words) - {"on", "off"}:
            parser.error("--coalesce takes on, off or on,off")
        overrides["coalesce"] = tuple(w == "on" for w in words)
    cfg = dataclasses.replace(SMOKE if args.smoke else Config(), **overrides)
    if cfg.turns < 1 or cfg.delta_turns < 1 or cfg.rounds < 1 or cfg.deltas < 2:
        parser.error("turns, delta-turns and rounds must be >= 1, deltas >= 2")
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    with (
        signals_interrupt(),
        tempfile.TemporaryDirectory(prefix="interlock-turn-cost-") as tmp,
        Children(Path(tmp)) as children,
    ):
        try:
            log(f"starting the upstream, bare, relay and {len(variants(cfg))} interlockd")
            targets, notes, servers = start_targets(children, Path(tmp), cfg)
        except ChildFailed as exc:
            log(f"benchmark: {exc}")
            return 1
        if not any(t.name.startswith("interlockd") for t in targets):
            log("benchmark: no interlockd started")
            return 1
        report = asyncio.run(run_benchmark(targets, cfg, notes))
        failed = {f.split(" ", 1)[0] for f in report["failures"]}
        for child in servers:
            if child.name in failed:  # its log goes with the temporary directory
                log(f"{child.name}'s last lines:\n{child.tail()}")
    if args.json:
        print(json.dumps(without_nan(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    if out := bench_results.directory("turn-cost", args):
        publish(report, out)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted {exc}")
        sys.exit(130)
