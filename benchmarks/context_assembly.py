"""Context assembly time for a conversation with a long history, direct and cached.

Target (issue 18, benchmarks/README.md): the next turn's context assembled in
<= 5 ms p50 at 131k- and 1M-token windows, independent of the history's length.
This fills an encrypted SQLite store with a long conversation (N turns: a user
message and an assistant answer each, ~60 tokens per turn; the 1M-token row
uses one of at least 20,000 turns, so the window does not hold it all) and a
100-turn baseline, then times `assemble()` per context window in two modes:

- direct: the window read from the store on every call (`cached=False`, the
  path before the window cache);
- cached: the store's window cache, as the daemon runs it. The first call on a
  conversation fills it (reported as "cold"); the timed calls are the
  steady state of a conversation in use.

Each repetition is a turn: its user message is appended (untimed), the context
assembled (timed), its answer appended (untimed); so the cached mode pays for
reading and rendering what each turn adds. Reported: median and p99 per window,
history and mode, with how many turns fitted.

    python benchmarks/context_assembly.py            # 10,000 turns (20,000 for 1M)
    python benchmarks/context_assembly.py --smoke    # 500 turns, few repetitions

Every run also writes a results directory (report, JSON, a plot; ``results.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from interlockd.context.tokens import estimate_tokens
from interlockd.context.window import Budget, assemble
from interlockd.store.base import EntryKind, NewEntry, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.vocabulary import ModelInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results

WINDOWS = (8_192, 32_768, 131_072, 1_048_576)
#: Windows that get the longer history (at ~60 tokens per turn, 1M tokens hold ~17k turns).
LONG_WINDOW = 1_048_576
LONG_TURNS = 20_000
BASELINE_TURNS = 100
TARGET_MS = 5.0
#: The direct mode reads every fitting entry on every call (seconds at 1M): fewer
#: repetitions there.
DIRECT_REPS_1M = 5
SENTENCE = "The quick brown fox jumps over the lazy dog while the router keeps count. "


def _entry(kind: EntryKind, text: str, i: int) -> NewEntry:
    return NewEntry(kind=kind, text=text, run_id=f"run_{i}", tokens=estimate_tokens(text))


async def fill(store: SqliteStore, sandbox_id: str, turns: int) -> str:
    conversation = await store.create_conversation(sandbox_id, "bench-user")
    batch: list[NewEntry] = []
    for i in range(turns):
        batch.append(_entry("user", f"Question {i}: {SENTENCE}", i))
        batch.append(_entry("assistant", SENTENCE * 2, i))
        if len(batch) >= 2_000:
            await store.append_entries(sandbox_id, conversation.id, batch)
            batch = []
    if batch:
        await store.append_entries(sandbox_id, conversation.id, batch)
    return conversation.id


async def measure(
    store: SqliteStore,
    sandbox_id: str,
    conversation_id: str,
    window: int,
    reps: int,
    *,
    cached: bool,
) -> dict[str, Any]:
    """Time ``reps`` turns' assembly; the first (cold) call of the cached mode apart."""
    info = ModelInfo(context_window=window, max_output_tokens=4_096)
    budget = Budget.for_model(info, system="Be brief.", tools=[], max_output_tokens=None)

    async def once() -> tuple[float, int]:
        started = time.perf_counter()
        context = await assemble(
            store,
            sandbox_id,
            conversation_id,
            system="Be brief.",
            budget=budget,
            tool_messages=True,
            cached=cached,
        )
        return (time.perf_counter() - started) * 1000, context.included_turns

    cold_ms = (await once())[0] if cached else None
    times = []
    turns = 0
    for i in range(reps):
        question = f"Question {window}-{i}: {SENTENCE}"
        await store.append_entries(sandbox_id, conversation_id, [_entry("user", question, i)])
        elapsed, turns = await once()
        times.append(elapsed)
        answer = [_entry("assistant", SENTENCE * 2, i)]
        await store.append_entries(sandbox_id, conversation_id, answer)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "cold_ms": cold_ms,
        "turns_fitted": turns,
        "reps": reps,
    }


async def run(turns: int, long_turns: int, reps: int) -> list[dict[str, Any]]:
    """Time assembly for every window and mode, over the long and the baseline conversation."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(
            Path(tmp) / "bench.db", MasterKeyring.load_or_create(Path(tmp) / "master.key")
        )
        await store.open()
        try:
            sandbox = await store.create_sandbox("bench", Quotas())
            histories = {turns: await fill(store, sandbox.id, turns)}
            if long_turns != turns:
                histories[long_turns] = await fill(store, sandbox.id, long_turns)
            histories[BASELINE_TURNS] = await fill(store, sandbox.id, BASELINE_TURNS)
            print(
                f"{'window':>9} {'history':>8} {'mode':>7} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'cold ms':>8} {'turns fitted':>13}"
            )
            for window in WINDOWS:
                long = long_turns if window >= LONG_WINDOW else turns
                for history in (long, BASELINE_TURNS):
                    for mode in ("direct", "cached"):
                        n = reps
                        if mode == "direct" and window >= LONG_WINDOW:
                            n = min(reps, DIRECT_REPS_1M)
                        row = await measure(
                            store,
                            sandbox.id,
                            histories[history],
                            window,
                            n,
                            cached=mode == "cached",
                        )
                        row = {"window": window, "history_turns": history, "mode": mode, **row}
                        cold = f"{row['cold_ms']:>8.1f}" if row["cold_ms"] is not None else " " * 8
                        print(
                            f"{window:>9} {history:>8} {mode:>7} {row['p50_ms']:>8.2f} "
                            f"{row['p99_ms']:>8.2f} {cold} {row['turns_fitted']:>13}"
                        )
                        rows.append(row)
        finally:
            await store.close()
    return rows


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """p50 by window, one line per mode and history, with the 5 ms target."""
    rows = report["rows"]
    fig, (ax,) = bench_results.figure(width=7.0)
    lines = sorted({(r["mode"], r["history_turns"] == BASELINE_TURNS) for r in rows})
    colors = {"direct": "tab:gray", "cached": "tab:blue"}
    for mode, baseline in lines:
        mine = sorted(
            (r["window"], r["p50_ms"], r["history_turns"])
            for r in rows
            if r["mode"] == mode and (r["history_turns"] == BASELINE_TURNS) == baseline
        )
        history = f"{BASELINE_TURNS} turns" if baseline else "long history"
        ax.plot(
            [m[0] for m in mine],
            [m[1] for m in mine],
            marker="o",
            linestyle=":" if baseline else "-",
            color=colors[mode],
            label=f"{mode}, {history} (p50)",
        )
    ax.axhline(TARGET_MS, color="tab:red", linestyle=":", label=f"target {TARGET_MS:g} ms p50")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(WINDOWS))
    ax.set_xticklabels([f"{w:,}" for w in WINDOWS])
    ax.minorticks_off()
    ax.set_yscale("log")
    bench_results.plain_numbers(ax)
    ax.set_xlabel("context window, tokens")
    ax.set_ylabel("assembly time, ms")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return [
        bench_results.save(fig, out, "assembly", "Context assembly by window, mode and history")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument(
        "--long-turns", type=int, default=LONG_TURNS, help="history of the 1M-token row"
    )
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="500 turns, 5 repetitions")
    bench_results.add_options(parser)
    args = parser.parse_args()
    if args.smoke:
        turns, long_turns, reps = 500, 500, 5
    else:
        turns, long_turns, reps = args.turns, max(args.long_turns, args.turns), args.reps
    print(f"machine: {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"history: {turns:,} turns ({long_turns:,} for the {LONG_WINDOW:,}-token window; "
        f"baseline {BASELINE_TURNS} turns); {reps} turns timed per window and mode "
        f"(direct at {LONG_WINDOW:,}: {min(reps, DIRECT_REPS_1M)})\n"
    )
    rows = asyncio.run(run(turns, long_turns, reps))
    if out := bench_results.directory("context-assembly", args):
        report = {
            "machine": bench_results.machine_info(),
            "config": {
                "turns": turns,
                "long_turns": long_turns,
                "reps": reps,
                "direct_reps_1m": min(reps, DIRECT_REPS_1M),
                "baseline_turns": BASELINE_TURNS,
                "windows": list(WINDOWS),
                "target_p50_ms": TARGET_MS,
            },
            "rows": rows,
        }
        headers = [
            "window (tokens)",
            "history",
            "mode",
            "p50 ms",
            "p99 ms",
            "cold ms",
            "turns fitted",
        ]
        cells = [
            [
                f"{r['window']:,}",
                f"{r['history_turns']:,} turns",
                r["mode"],
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                "" if r["cold_ms"] is None else f"{r['cold_ms']:.1f}",
                f"{r['turns_fitted']:,}",
            ]
            for r in rows
        ]
        body = "## Results\n\n" + bench_results.md_table(headers, cells)
        bench_results.publish(out, "Context assembly", report, body, lambda d: plots(report, d))


if __name__ == "__main__":
    main()
