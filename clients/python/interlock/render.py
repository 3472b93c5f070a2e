"""Turning API messages into what the ``interlock`` CLI prints.

The CLI's only output logic lives here, written against plain text streams so
tests can render into a ``StringIO``. This module never talks to the network
and never decides exit codes.

A run is rendered for a person at a terminal and for a pipe at the same time:
stdout carries exactly the assistant's answer (the text deltas, as they
arrive), so ``interlock run ... > answer.txt`` captures just that; everything
else — reasoning, tool calls, the closing summary, errors — goes to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from typing import TextIO, TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from interlock.outcome import RunOutcome
from interlock.v1 import (
    compute_pb2,
    conversations_pb2,
    events_pb2,
    integrations_pb2,
    ledger_pb2,
    sandboxes_pb2,
)

__all__ = [
    "RunRenderer",
    "Style",
    "describe_integration",
    "format_table",
    "format_timestamp",
    "format_tool_call",
    "format_tool_result",
    "format_usd",
    "render_api_keys",
    "render_catalog",
    "render_compute_providers",
    "render_compute_sessions",
    "render_conversation_entries",
    "render_conversation_header",
    "render_conversations",
    "render_integrations",
    "render_ledger_entries",
    "render_placement",
    "render_sandbox",
    "render_sandboxes",
    "render_usage",
    "to_json",
]

# Tool arguments and results can be whole documents; one terminal line of them
# is enough to follow a run (``--json`` has the full text).
TOOL_TEXT_LIMIT = 200
THINKING_PREFIX = "┊ "

_E = TypeVar("_E")


class Style:
    """ANSI styling that collapses to plain text when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


def to_json(message: Message) -> str:
    """One message as a single line of JSON, with the .proto field names."""
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (ending in "…" if cut).

    JSON is re-serialised compactly, so a pretty-printed payload does not turn
    into a run of spaces; anything else has its whitespace collapsed.
    """
    try:
        flat = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_tool_call(name: str, arguments_json: str, *, limit: int = TOOL_TEXT_LIMIT) -> str:
    """``→ name(arguments)`` on one line."""
    return f"→ {name}({_one_line(arguments_json, limit)})"


def format_tool_result(
    name: str, result_json: str, error: str, *, reused: bool = False, limit: int = TOOL_TEXT_LIMIT
) -> str:
    """``← name: result`` (or ``← name failed: why``) on one line."""
    line = (
        f"← {name} failed: {_one_line(error, limit)}"
        if error
        else f"← {name}: {_one_line(result_json, limit)}"
    )
    return line + " (reused)" if reused else line


def format_usd(amount: float) -> str:
    """Dollars with enough digits to show a single cheap call's cost."""
    if amount == 0:
        return "$0"
    return f"${amount:.4f}" if amount >= 0.01 else f"${amount:.6f}"


def format_timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """UTC, to the second; ``-`` for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stop_reason(value: events_pb2.StopReason.ValueType) -> str:
    try:
        name = events_pb2.StopReason.Name(value)
    except ValueError:  # a reason added to the API after this client was built
        return f"stop_reason {value}"
    return name.removeprefix("STOP_REASON_").lower()


def _usage(usage: events_pb2.Usage) -> str:
    parts = [
        f"{usage.input_tokens} in",
        f"{usage.output_tokens} out",
        f"{usage.cache_read_tokens} cache read",
        f"{usage.cache_write_tokens} cache write",
    ]
    if usage.reasoning_tokens:
        parts.append(f"{usage.reasoning_tokens} reasoning")
    return "tokens: " + ", ".join(parts)


def _cost(cost: events_pb2.Cost) -> str:
    total = format_usd(cost.token_usd + cost.compute_usd)
    if cost.compute_usd:
        return (
            f"{total} (tokens {format_usd(cost.token_usd)}"
            f" + compute {format_usd(cost.compute_usd)})"
        )
    return total


class RunRenderer:
    """Renders one run's events as they arrive (see the module docstring).

    ``same_terminal`` says stdout and stderr end up on one screen; the renderer
    then starts a new line on stderr when the answer on stdout stopped
    mid-line, so a tool call never gets glued to the end of a sentence. It
    never adds characters to stdout except one final newline, so the answer
    stays exactly the concatenated text deltas.
    """

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        style: Style | None = None,
        same_terminal: bool = False,
    ) -> None:
        self.outcome = RunOutcome()
        self._out = out
        self._err = err
        self._style = style or Style(enabled=False)
        self._same_terminal = same_terminal
        self._out_open = False  # stdout's last line is unterminated
        self._err_open = False  # stderr's last line is unterminated
        self._last_out = False  # stdout was written after stderr
        self._in_thinking = False

    def event(self, event: events_pb2.AgentEvent) -> None:
        """Render one event and fold it into :attr:`outcome`."""
        self.outcome.add(event)
        kind = event.WhichOneof("event")
        if kind != "thinking_delta":
            self._end_thinking()
        s = self._style
        if kind == "run_started":
            started = event.run_started
            if started.replayed:
                self._line(s.dim(f"replaying the recorded run of request {started.request_id}"))
        elif kind == "text_delta":
            self._text(event.text_delta.text)
        elif kind == "thinking_delta":
            self._thinking(event.thinking_delta.text)
        elif kind == "tool_call":
            call = event.tool_call
            self._line(s.cyan(format_tool_call(call.name, call.arguments_json)))
        elif kind == "tool_result":
            result = event.tool_result
            line = format_tool_result(
                result.name, result.result_json, result.error, reused=result.reused
            )
            self._line(s.red(line) if result.error else s.cyan(line))
        elif kind == "finish":
            self._finish(event.finish)
        elif kind == "error":
            self._error(event.error)

    def end(self, error: str | None = None) -> None:
        """Close the output once the stream is over.

        ``error`` describes a failure that ended the stream without an event
        (the call failed, the connection dropped); a stream that simply stopped
        before its ``finish`` or ``error`` event is reported too.
        """
        self._end_thinking()
        self._close_out()
        if error is not None:
            self.error_line(error)
        elif self.outcome.finish is None and self.outcome.error is None:
            self.error_line("the stream ended before the run finished")

    def error_line(self, text: str) -> None:
        """Write ``error: text`` on its own line of stderr."""
        self._line(f"{self._style.red('error:')} {text}")

    # -- event kinds -------------------------------------------------------

    def _finish(self, finish: events_pb2.Finish) -> None:
        self._close_out()
        s = self._style
        o = self.outcome
        parts = [_stop_reason(finish.stop_reason), _usage(finish.usage), _cost(finish.cost)]
        if o.provider or o.model:
            parts.append(f"{o.provider}/{o.model}")
        self._line(s.dim(" · ".join(parts)))
        self._session_hint()

    def _error(self, error: events_pb2.Error) -> None:
        self._close_out()
        self.error_line(f"{error.code}: {error.message}")
        if error.retryable:
            self._line(self._style.dim("running the same turn again may succeed"))
        # What the run recorded before failing stays in the conversation.
        self._session_hint()

    def _session_hint(self) -> None:
        if self.outcome.session_id:
            sid = self.outcome.session_id
            self._line(self._style.dim(f"session {sid} (continue with --session {sid})"))

    # -- low-level writing -------------------------------------------------

    def _text(self, text: str) -> None:
        if not text:
            return
        self._out.write(text)
        self._out.flush()
        self._out_open = not text.endswith("\n")
        self._last_out = True

    def _close_out(self) -> None:
        """End the answer's last line so what follows starts on a fresh one."""
        if self._out_open:
            # On a shared screen a stderr line written after the answer already
            # moved the cursor on; a newline on stdout would show as a blank line.
            if not (self._same_terminal and not self._last_out):
                self._out.write("\n")
                self._out.flush()
            self._out_open = False

    def _start_err_line(self) -> None:
        """Make sure the next stderr write starts at the beginning of a line."""
        if self._err_open or (self._same_terminal and self._last_out and self._out_open):
            self._err.write("\n")
            self._err_open = False
        self._last_out = False

    def _line(self, text: str) -> None:
        self._start_err_line()
        self._err.write(text + "\n")
        self._err.flush()

    def _thinking(self, text: str) -> None:
        if not text:
            return
        if not self._in_thinking:
            self._start_err_line()
            self._in_thinking = True
        dim = self._style.dim
        # Prefix every line of reasoning so it reads as an aside even where
        # colour is off and it interleaves with the answer on one terminal.
        for i, piece in enumerate(text.split("\n")):
            if i:
                self._err.write("\n")
                self._err_open = False
            if piece:
                if not self._err_open:
                    self._err.write(dim(THINKING_PREFIX))
                self._err.write(dim(piece))
                self._err_open = True
        self._err.flush()

    def _end_thinking(self) -> None:
        if self._in_thinking:
            self._in_thinking = False
            if self._err_open:
                self._err.write("\n")
                self._err.flush()
                self._err_open = False


# -- tables and records ----------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines) + "\n"


def _limit(value: int) -> str:
    return str(value) if value else "unlimited"


def render_sandbox(sandbox: sandboxes_pb2.Sandbox, out: TextIO) -> None:
    """One sandbox as ``field  value`` lines."""
    q = sandbox.quotas
    rows = [
        ("sandbox_id", sandbox.sandbox_id),
        ("name", sandbox.name),
        ("created", format_timestamp(sandbox.create_time)),
        ("max_concurrent_runs", _limit(q.max_concurrent_runs)),
        ("max_concurrent_runs_per_end_user", _limit(q.max_concurrent_runs_per_end_user)),
        ("max_tokens_per_day", _limit(q.max_tokens_per_day)),
    ]
    width = max(len(key) for key, _ in rows)
    out.write("".join(f"{key.ljust(width)}  {value}\n" for key, value in rows))


def render_sandboxes(sandboxes: Iterable[sandboxes_pb2.Sandbox], out: TextIO) -> None:
    """Sandboxes as a table."""
    headers = ("ID", "NAME", "CREATED", "RUNS", "RUNS/USER", "TOKENS/DAY")
    rows = [
        (
            s.sandbox_id,
            s.name,
            format_timestamp(s.create_time),
            _limit(s.quotas.max_concurrent_runs),
            _limit(s.quotas.max_concurrent_runs_per_end_user),
            _limit(s.quotas.max_tokens_per_day),
        )
        for s in sandboxes
    ]
    out.write(format_table(headers, rows))


def render_api_keys(keys: Iterable[sandboxes_pb2.ApiKey], out: TextIO) -> None:
    """API keys as a table (there are no secrets to show)."""
    rows = [
        (
            k.key_id,
            k.name,
            k.prefix + "…",
            format_timestamp(k.create_time),
            f"revoked {format_timestamp(k.revoke_time)}" if k.HasField("revoke_time") else "active",
        )
        for k in keys
    ]
    out.write(format_table(("ID", "NAME", "PREFIX", "CREATED", "STATUS"), rows))


def _provider_model(provider: str, model: str) -> str:
    return f"{provider}/{model}" if provider or model else "-"


def render_conversations(
    conversations: Iterable[conversations_pb2.Conversation], out: TextIO
) -> None:
    """Conversations as a table, in the order given (most recent first)."""
    rows = [
        (
            c.session_id,
            format_timestamp(c.update_time),
            str(c.entry_count),
            _provider_model(c.last_provider, c.last_model),
        )
        for c in conversations
    ]
    out.write(format_table(("SESSION", "UPDATED", "ENTRIES", "LAST MODEL"), rows))


def render_conversation_header(conversation: conversations_pb2.Conversation, out: TextIO) -> None:
    """The one-line summary above a conversation's entries."""
    c = conversation
    out.write(
        f"session {c.session_id} · end user {c.end_user_id} · {c.entry_count} entries"
        f" · started {format_timestamp(c.create_time)}"
        f" · updated {format_timestamp(c.update_time)}\n"
    )


def _prefixed(label: str, text: str) -> str:
    """``label: text``, continuation lines indented so entries stay apart."""
    first, *rest = text.split("\n") if text else [""]
    return "".join([f"{label}: {first}\n", *(f"  {line}\n" for line in rest)])


def render_conversation_entries(
    entries: Iterable[conversations_pb2.WindowEntry], out: TextIO
) -> None:
    """Window entries as role-prefixed lines; tool entries as in ``interlock run``."""
    kinds = conversations_pb2
    for e in entries:
        if e.kind == kinds.ENTRY_KIND_USER:
            out.write(_prefixed("user", e.text))
        elif e.kind == kinds.ENTRY_KIND_ASSISTANT:
            # Naming the model per answer shows where a conversation moved
            # between providers.
            out.write(_prefixed(f"assistant ({_provider_model(e.provider, e.model)})", e.text))
        elif e.kind == kinds.ENTRY_KIND_TOOL_CALL:
            out.write(format_tool_call(e.tool_name, e.text) + "\n")
        elif e.kind == kinds.ENTRY_KIND_TOOL_RESULT:
            result, error = ("", e.text) if e.is_error else (e.text, "")
            out.write(format_tool_result(e.tool_name, result, error) + "\n")
        elif e.kind == kinds.ENTRY_KIND_SUMMARY:
            out.write(_prefixed("summary", e.text))
        else:  # a kind added to the API after this client was built
            out.write(_prefixed("entry", e.text))


# -- integrations ----------------------------------------------------------


def _enum_label(name_of: Callable[[_E], str], value: _E, prefix: str) -> str:
    """``INTEGRATION_KIND_MCP`` as ``mcp``; a value newer than this client as its number."""
    try:
        return name_of(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _kind(value: integrations_pb2.IntegrationKind.ValueType) -> str:
    return _enum_label(integrations_pb2.IntegrationKind.Name, value, "INTEGRATION_KIND_")


def _status(value: integrations_pb2.IntegrationStatus.ValueType) -> str:
    return _enum_label(integrations_pb2.IntegrationStatus.Name, value, "INTEGRATION_STATUS_")


def _for_whom(end_user_id: str) -> str:
    return f"for end user {end_user_id}" if end_user_id else "for the whole sandbox"


def describe_integration(integration: integrations_pb2.Integration) -> str:
    """``github as octocat for end user u-1 (int_…)``; an MCP server ``at`` its URL."""
    i = integration
    where = ""
    if i.account:
        where = (
            f" at {i.account}"
            if i.kind == integrations_pb2.INTEGRATION_KIND_MCP
            else f" as {i.account}"
        )
    return f"{i.app}{where} {_for_whom(i.end_user_id)} ({i.integration_id})"


def render_catalog(entries: Iterable[integrations_pb2.CatalogEntry], out: TextIO) -> None:
    """Each connectable app on a line, then its tools indented under it."""
    for entry in entries:
        state = "available" if entry.available else "not configured on this daemon"
        about = f": {entry.description}" if entry.description else ""
        out.write(f"{entry.app} ({_kind(entry.kind)}, {state}){about}\n")
        width = max((len(t.name) for t in entry.tools), default=0)
        for tool in entry.tools:
            note = " (side effects)" if tool.side_effecting else ""
            out.write(f"  {tool.name.ljust(width)}  {tool.description}{note}".rstrip() + "\n")


def render_integrations(integrations: Iterable[integrations_pb2.Integration], out: TextIO) -> None:
    """Integrations as a table, oldest first; sandbox-wide ones have no end user."""
    rows = []
    for i in integrations:
        status = _status(i.status)
        if i.status_reason and i.status != integrations_pb2.INTEGRATION_STATUS_ACTIVE:
            status += f" ({i.status_reason})"
        rows.append(
            (
                i.integration_id,
                i.app,
                _kind(i.kind),
                i.end_user_id or "(sandbox)",
                status,
                format_timestamp(i.create_time),
                format_timestamp(i.last_used_time),
                i.account or "-",
            )
        )
    headers = ("ID", "APP", "KIND", "END USER", "STATUS", "CREATED", "LAST USED", "ACCOUNT")
    out.write(format_table(headers, rows))


# -- the ledger ------------------------------------------------------------

#: The key column's header of each usage grouping.
USAGE_KEY_HEADERS = {
    "end_user": "END USER",
    "agent": "AGENT",
    "run": "RUN",
    "provider": "PROVIDER",
    "day": "DAY (UTC)",
}


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value else "-"


def _ledger_kind(value: ledger_pb2.LedgerEntryKind.ValueType) -> str:
    return _enum_label(ledger_pb2.LedgerEntryKind.Name, value, "LEDGER_ENTRY_KIND_")


def render_ledger_entries(entries: Iterable[ledger_pb2.LedgerEntry], out: TextIO) -> None:
    """Ledger entries as a table, in the order given (newest first).

    A tokens entry shows its input/output tokens, a compute entry its active seconds;
    a compute entry names its run's agent provider and model and the compute provider
    it ran on (``hermes/model on local``). FAILED says which entries' runs failed.
    """
    rows = []
    for e in entries:
        if e.kind == ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE:
            billed = _seconds(e.compute_seconds)
        else:
            billed = f"{e.usage.input_tokens} in / {e.usage.output_tokens} out"
        rows.append(
            (
                format_timestamp(e.create_time),
                e.run_id,
                _ledger_kind(e.kind),
                _ledger_provider(e),
                e.end_user_id,
                e.agent or "-",
                billed,
                format_usd(e.cost_usd),
                "yes" if e.run_failed else "-",
            )
        )
    headers = (
        "TIME",
        "RUN",
        "KIND",
        "PROVIDER/MODEL",
        "END USER",
        "AGENT",
        "BILLED",
        "COST",
        "FAILED",
    )
    out.write(format_table(headers, rows))


def _ledger_provider(e: ledger_pb2.LedgerEntry) -> str:
    """Who billed an entry: a tokens entry's provider/model; a compute entry's agent
    provider/model on its compute provider (a daemon that names no agent provider: the
    compute provider alone, as it wrote it)."""
    if e.kind == ledger_pb2.LEDGER_ENTRY_KIND_COMPUTE and e.agent_provider:
        return f"{_provider_model(e.agent_provider, e.model)} on {e.provider or '-'}"
    return _provider_model(e.provider, e.model) if e.model else e.provider or "-"


def _usage_row(label: str, s: ledger_pb2.UsageSummary) -> tuple[str, ...]:
    return (
        label,
        str(s.run_count),
        str(s.failed_run_count),
        str(s.usage.input_tokens),
        str(s.usage.output_tokens),
        _seconds(s.compute_seconds),
        format_usd(s.token_cost_usd),
        format_usd(s.compute_cost_usd),
        format_usd(s.total_cost_usd),
    )


def render_usage(summary: ledger_pb2.SummarizeUsageResponse, by: str, out: TextIO) -> None:
    """Usage per group as a table, in the order given, then a TOTAL line for everything.

    ``by`` is the grouping ("end_user", "agent", "run", "provider", "day"); runs
    of no saved agent show as ``(none)``. FAILED counts the runs among RUNS that
    failed (what they used is billed all the same).
    """
    rows = [_usage_row(s.key or "(none)", s) for s in summary.summaries]
    rows.append(_usage_row("TOTAL", summary.total))
    headers = (
        USAGE_KEY_HEADERS.get(by, by.upper()),
        "RUNS",
        "FAILED",
        "INPUT",
        "OUTPUT",
        "COMPUTE",
        "TOKENS $",
        "COMPUTE $",
        "TOTAL $",
    )
    out.write(format_table(headers, rows))
    if budgets_in_use(summary.budgets):
        out.write("\n")
        render_budgets(summary.budgets, out)


def budgets_in_use(budgets: Iterable[ledger_pb2.Budget]) -> bool:
    """Whether any budget has a limit or holds a reservation (else there is nothing to show)."""
    return any(b.limit_usd or b.reserved_usd for b in budgets)


def render_budgets(budgets: Iterable[ledger_pb2.Budget], out: TextIO) -> None:
    """Spend budgets in their current period: the limit ("-": none), what running runs
    hold, what ended runs cost, what is left and when the period resets."""
    rows = []
    for b in budgets:
        who = b.scope if not b.target else f"{b.scope} {b.target}"
        left = "-"
        if b.limit_usd:
            left = f"{max(b.limit_usd - b.reserved_usd - b.spent_usd, 0.0):.4f}"
        rows.append(
            (
                who,
                b.period,
                f"{b.limit_usd:.4f}" if b.limit_usd else "-",
                f"{b.reserved_usd:.4f}",
                f"{b.spent_usd:.4f}",
                left,
                b.reset_time.ToDatetime().strftime("%Y-%m-%dT%H:%MZ"),
            )
        )
    headers = ("BUDGET", "PERIOD", "LIMIT $", "RESERVED $", "SPENT $", "LEFT $", "RESETS")
    out.write(format_table(headers, rows))


# -- compute -----------------------------------------------------------------


def _compute_status(value: compute_pb2.ComputeSessionStatus.ValueType) -> str:
    return _enum_label(compute_pb2.ComputeSessionStatus.Name, value, "COMPUTE_SESSION_STATUS_")


def render_compute_sessions(sessions: Iterable[compute_pb2.ComputeSession], out: TextIO) -> None:
    """Compute sessions as a table, in the order given (oldest first)."""
    rows = [
        (
            c.id,
            c.end_user_id,
            c.agent,
            c.provider,
            _compute_status(c.status),
            c.region or "-",
            _seconds(c.active_seconds),
            format_timestamp(c.last_active_time),
        )
        for c in sessions
    ]
    headers = ("ID", "END USER", "AGENT", "PROVIDER", "STATUS", "REGION", "ACTIVE", "LAST ACTIVE")
    out.write(format_table(headers, rows))


def _health(p: compute_pb2.ComputeProviderStatus) -> str:
    return "healthy" if p.healthy else f"unhealthy ({p.breaker or 'unknown'})"


def _can(p: compute_pb2.ComputeProviderStatus) -> str:
    able = [what for what, can in (("suspend", p.can_suspend), ("archive", p.can_archive)) if can]
    return "+".join(able) or "-"


def render_compute_providers(
    providers: Iterable[compute_pb2.ComputeProviderStatus], out: TextIO
) -> None:
    """Compute providers as a table, in order of preference; then the last error of each
    provider that has one."""
    listed = list(providers)
    rows = [
        (
            p.name,
            _health(p),
            f"{p.running_sessions}/{p.capacity or 'unlimited'}",
            f"{p.cold_start_seconds:.1f}s",
            f"{p.resume_seconds:.1f}s",
            format_usd(p.active_usd_per_hour),
            _can(p),
            ",".join(p.regions) or "-",
        )
        for p in listed
    ]
    headers = (
        "NAME",
        "HEALTH",
        "RUNNING",
        "COLD START",
        "RESUME",
        "$/HOUR",
        "CAN",
        "REGIONS",
    )
    out.write(format_table(headers, rows))
    out.writelines(f"{p.name}: {p.last_error}\n" for p in listed if p.last_error)


def render_placement(placement: compute_pb2.ExplainPlacementResponse, out: TextIO) -> None:
    """Where a run was placed as ``field  value`` lines, then every provider considered."""
    p = placement
    rows = [
        ("run", p.run_id),
        ("provider", p.provider),
        ("session", p.compute_session_id or "-"),
        ("policy", p.policy),
        ("reason", p.reason),
        ("ready", f"{p.ready_seconds:.1f}s" if p.ready_seconds else "warm (0s)"),
        ("placed", format_timestamp(p.create_time)),
    ]
    width = max(len(key) for key, _ in rows)
    out.write("".join(f"{key.ljust(width)}  {value}\n" for key, value in rows))
    if p.candidates:
        out.write("\n")
        candidates = [(c.provider, c.verdict, c.note or "-") for c in p.candidates]
        out.write(format_table(("CANDIDATE", "VERDICT", "NOTE"), candidates))
