"""Context assembly time for a conversation with a long history.

Target (benchmarks/README.md): with 10,000 stored turns, the next turn's context is
assembled in <= 20 ms, its cost bounded by the model's budget, not by the
history. This fills an encrypted SQLite store with N turns (a user message and
an assistant answer each, ~60 tokens per turn) and times `assemble()` for a few
context windows, reporting the median and p99 over repeated runs together with
how many turns fitted. A conversation of 100 turns is measured in the same run
as the baseline: if cost is bounded by the budget, both take about as long.

    python benchmarks/context_assembly.py            # 10,000 turns
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
from interlockd.store.base import NewEntry, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.vocabulary import ModelInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as bench_results

WINDOWS = (8_192, 32_768, 131_072)
BASELINE_TURNS = 100
TARGET_MS = 20.0
SENTENCE = "The quick brown fox jumps over the lazy dog while the router keeps count. "


async def fill(store: SqliteStore, sandbox_id: str, turns: int) -> str:
    conversation = await store.create_conversation(sandbox_id, "bench-user")
    batch: list[NewEntry] = []
    for i in range(turns):
        for kind, text in (("user", f"Question {i}: {SENTENCE}"), ("assistant", SENTENCE * 2)):
            batch.append(
                NewEntry(kind=kind, text=text, run_id=f"run_{i}", tokens=estimate_tokens(text))  # type: ignore[arg-type]
            )
        if len(batch) >= 2_000:
            await store.append_entries(sandbox_id, conversation.id, batch)
            batch = []
    if batch:
        await store.append_entries(sandbox_id, conversation.id, batch)
    return conversation.id


async def measure(
    store: SqliteStore, sandbox_id: str, conversation_id: str, window: int, reps: int
) -> tuple[float, float, int]:
    info = ModelInfo(context_window=window, max_output_tokens=4_096)
    budget = Budget.for_model(info, system="Be brief.", tools=[], max_output_tokens=None)
    times = []
    turns = 0
    for _ in range(reps):
        started = time.perf_counter()
        context = await assemble(
            store,
            sandbox_id,
            conversation_id,
            system="Be brief.",
            budget=budget,
            tool_messages=True,
        )
        times.append((time.perf_counter() - started) * 1000)
        turns = context.included_turns
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], turns


async def run(turns: int, reps: int) -> list[dict[str, Any]]:
    """Time assembly for every window, over the long and the baseline conversation."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(
            Path(tmp) / "bench.db", MasterKeyring.load_or_create(Path(tmp) / "master.key")
        )
        await store.open()
        try:
            sandbox = await store.create_sandbox("bench", Quotas())
            long_id = await fill(store, sandbox.id, turns)
            short_id = await fill(store, sandbox.id, BASELINE_TURNS)
            print(f"{'window':>8} {'history':>8} {'p50 ms':>8} {'p99 ms':>8} {'turns fitted':>13}")
            for window in WINDOWS:
                for history, conversation_id in ((turns, long_id), (BASELINE_TURNS, short_id)):
                    p50, p99, fitted = await measure(
                        store, sandbox.id, conversation_id, window, reps
                    )
                    print(f"{window:>8} {history:>8} {p50:>8.2f} {p99:>8.2f} {fitted:>13}")
                    rows.append(
                        {
                            "window": window,
                            "history_turns": history,
                            "p50_ms": p50,
                            "p99_ms": p99,
                            "turns_fitted": fitted,
                        }
                    )
        finally:
            await store.close()
    return rows


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """p50 and p99 by window, one line per history, with the 20 ms target."""
    rows = report["rows"]
    fig, (ax,) = bench_results.figure(width=7.0)
    for history, color in zip(
        sorted({r["history_turns"] for r in rows}, reverse=True),
        ("tab:blue", "tab:gray"),
        strict=False,
    ):
        mine = sorted(
            (r["window"], r["p50_ms"], r["p99_ms"]) for r in rows if r["history_turns"] == history
        )
        xs = [m[0] for m in mine]
        ax.plot(xs, [m[1] for m in mine], marker="o", color=color, label=f"{history:,} turns p50")
        ax.plot(
            xs,
            [m[2] for m in mine],
            marker="o",
            linestyle="--",
            color=color,
            label=f"{history:,} turns p99",
        )
    ax.axhline(
        TARGET_MS, color="tab:red", linestyle=":", label=f"target {TARGET_MS:g} ms (10,000 turns)"
    )
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
    return [bench_results.save(fig, out, "assembly", "Context assembly by window and history")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="500 turns, 5 repetitions")
    bench_results.add_options(parser)
    args = parser.parse_args()
    turns, reps = (500, 5) if args.smoke else (args.turns, args.reps)
    print(f"machine: {os.cpu_count()} cpus, python {platform.python_version()}")
    print(
        f"history: {turns} turns (baseline: {BASELINE_TURNS} turns); "
        f"{reps} repetitions per window\n"
    )
    rows = asyncio.run(run(turns, reps))
    if out := bench_results.directory("context-assembly", args):
        report = {
            "machine": bench_results.machine_info(),
            "config": {
                "turns": turns,
                "reps": reps,
                "baseline_turns": BASELINE_TURNS,
                "windows": list(WINDOWS),
            },
            "rows": rows,
        }
        headers = ["window (tokens)", "history", "p50 ms", "p99 ms", "turns fitted"]
        cells = [
            [
                f"{r['window']:,}",
                f"{r['history_turns']:,} turns",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['turns_fitted']:,}",
            ]
            for r in rows
        ]
        body = "## Results\n\n" + bench_results.md_table(headers, cells)
        bench_results.publish(out, "Context assembly", report, body, lambda d: plots(report, d))


if __name__ == "__main__":
    main()
