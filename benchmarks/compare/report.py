"""What a comparison looks like: a table for a terminal, a markdown report, JSON.

The JSON (:func:`to_json_data`) is the raw record: the configuration, the
machine, every figure per provider and every measured turn. The table and the
markdown are renderings of the same figures. Nothing here measures or talks
to a daemon.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.compare.compare import Comparison, ProviderSummary
from interlock import __version__
from interlock.render import format_table, format_usd

__all__ = [
    "dumps",
    "machine_info",
    "render_markdown",
    "render_table",
    "to_json_data",
    "write_report",
]

HOW_MEASURED = (
    "Providers run one after another, after an unreported warm-up of all of "
    "them at once; each end user holds one conversation and sends the turns in "
    "order. "
    "First event: from the call to its first event (the daemon sends it with "
    "the provider's first token or tool call), over every turn. Output tok/s: "
    "the completed turns' output tokens (their Finish usage) over the time "
    "from their first event to their end. Tool calls ok: tool results without "
    "an error over tool calls. Expected tool: turns that called the tool the "
    "workload expects, over turns expecting one. Cost: the ledger's token and "
    "compute cost of every run made, failed ones included (SummarizeUsage by "
    "run), over the turns completed."
)


def machine_info() -> dict[str, Any]:
    """Where the client ran: what benchmarks/README.md asks to record beside a result."""
    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "interlock": __version__,
    }


def to_json_data(comparison: Comparison, *, command: str = "", address: str = "") -> dict[str, Any]:
    """The whole comparison as JSON-ready data (no NaN: a figure with no value is null)."""
    workload = comparison.workload
    return {
        "cohort": comparison.cohort,
        "started": comparison.started.isoformat(timespec="seconds"),
        "seconds": round(comparison.seconds, 3),
        "command": command,
        "daemon": address,
        "machine": machine_info(),
        "workload": {
            "name": workload.name,
            "users": comparison.users,
            "turns": len(workload.turns),
            "tools": list(workload.tools),
        },
        "concurrency": comparison.concurrency,
        "warmup": comparison.warmup,
        "ok": comparison.ok,
        "providers": [_summary_data(s) for s in comparison.summaries],
        "turns": [dataclasses.asdict(t) for t in comparison.turns],
        "warmup_turns": [dataclasses.asdict(t) for t in comparison.warmup_turns],
    }


def _summary_data(s: ProviderSummary) -> dict[str, Any]:
    data = dataclasses.asdict(s)
    data["ledger"]["total_usd"] = s.ledger.total_usd
    return data


# -- cells -------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _errors(s: ProviderSummary) -> str:
    return ", ".join(f"{code} {n}" for code, n in s.errors.items()) or "-"


def _tool_calls(s: ProviderSummary) -> str:
    if not s.tool_calls or s.tool_call_success is None:
        return "-"
    return f"{s.tool_results_ok}/{s.tool_calls} ({s.tool_call_success:.0%})"


def _expected(s: ProviderSummary) -> str:
    return f"{s.expected_tool_called}/{s.expected_tool_turns}" if s.expected_tool_turns else "-"


def _cost(value: float | None) -> str:
    return "-" if value is None else format_usd(value)


_HEADERS = (
    "PROVIDER",
    "TURNS",
    "ERRORS",
    "FIRST EVENT p50",
    "p95",
    "OUT TOK/S",
    "TOOL CALLS OK",
    "EXPECTED TOOL",
    "COST/TURN",
)


def _cells(s: ProviderSummary) -> tuple[str, ...]:
    return (
        s.target,
        f"{s.turns_completed}/{s.turns_sent}",
        _errors(s),
        _ms(s.first_event_p50_ms),
        _ms(s.first_event_p95_ms),
        _rate(s.output_tokens_per_s),
        _tool_calls(s),
        _expected(s),
        _cost(s.cost_per_turn_usd),
    )


def render_table(comparison: Comparison) -> str:
    """One row per provider, in the order they ran."""
    return format_table(_HEADERS, [_cells(s) for s in comparison.summaries])


def render_markdown(comparison: Comparison, data: Mapping[str, Any]) -> str:
    """A report to keep beside the raw JSON: what ran, where, and the figures."""
    w = comparison.workload
    machine = data["machine"]
    tools = ", ".join(w.tools) or "all of the sandbox's"
    facts = [
        f"started {data['started']}, took {comparison.seconds:.1f} s",
        f"command: `{data['command']}`" if data["command"] else "",
        f"daemon: {data['daemon']}" if data["daemon"] else "",
        f"machine: nproc {machine['nproc']}, {machine['platform']}, "
        f"Python {machine['python']}, interlock {machine['interlock']}",
        f"workload: {len(w.turns)} turns x {comparison.users} end user(s) per provider; "
        f"tools: {tools}; {comparison.concurrency} conversation(s) at once; "
        f"{comparison.warmup} warm-up turn(s) per provider, not reported",
    ]
    lines = [f"# Provider comparison: {w.name}, cohort `{comparison.cohort}`", ""]
    lines += [f"- {fact}" for fact in facts if fact]
    lines += [
        "",
        "| provider | turns completed | errors | first event p50 | p95 | output tok/s "
        "| tool calls ok | expected tool | ledger runs | cost | cost/turn |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in comparison.summaries:
        cells = _cells(s)
        row = [*cells[:8], str(s.ledger.runs), format_usd(s.ledger.total_usd), cells[8]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    failures = [
        f"- {s.target}: {code}: {message or '(no message)'}"
        for s in comparison.summaries
        for code, message in s.error_examples.items()
    ]
    if failures:
        lines += ["", "## Errors (the first message of each code)", "", *failures]
    lines += ["", "## How it is measured", "", HOW_MEASURED, ""]
    return "\n".join(lines)


def write_report(directory: Path, comparison: Comparison, data: Mapping[str, Any]) -> list[Path]:
    """Write ``report.md`` and ``report.json`` into ``directory`` (created); return them."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "report.md"
    raw = directory / "report.json"
    markdown.write_text(render_markdown(comparison, data), encoding="utf-8")
    raw.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return [markdown, raw]


def dumps(data: Mapping[str, Any]) -> str:
    """The JSON on one line, as ``--json`` prints it."""
    return json.dumps(data, allow_nan=False, separators=(",", ":"))
