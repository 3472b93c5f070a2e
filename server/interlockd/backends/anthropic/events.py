"""A Managed Agents session's events, read into the neutral ones (no I/O).

Owns what one turn has seen of the session (``TurnState``), the mapping of each
session event that needs no call back to the service (message previews, server
tool uses and results, usage, errors, termination, idle stops), and the batch of
answers a ``requires_action`` idle is sent. Running a custom tool and sending
the answers stay in ``backend``, which owns the client; this module never
touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import structlog

from interlockd.errors import ProviderProtocolError
from interlockd.vocabulary import (
    BackendEvent,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    Usage,
    UsageReport,
)

log = structlog.get_logger(__name__)

_IDLE_STOPS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "budget_reached": "budget_reached",
    "refusal": "refusal",
}
_DENIED = (
    "This tool needs a person's confirmation and none is available through the router; "
    "continue without it."
)


@dataclass(slots=True)
class TurnState:
    """What one turn has seen of the session so far."""

    max_cycles: int
    previewed: dict[str, list[str]] = field(default_factory=dict)  # message id -> deltas
    results: dict[str, ToolResult] = field(default_factory=dict)  # custom tool use id -> result
    server_tools: dict[str, str] = field(default_factory=dict)  # server tool use id -> name
    confirmations: set[str] = field(default_factory=set)  # server tool uses that ask
    cycles: int = 0
    last_error: str = ""
    idle: bool = False  # the session stopped on its own: no interrupt needed
    end: StopReason | None = None  # how the turn finished
    failure: Literal["terminated", "retries_exhausted"] | None = None  # or how it failed

    @property
    def last_error_note(self) -> str:
        return f": {self.last_error}" if self.last_error else ""


def idle_reason(event: dict[str, Any]) -> str:
    """Why a ``session.status_idle`` event's session stopped."""
    return str((event.get("stop_reason") or {}).get("type", "end_turn"))


def custom_tool_call(event: dict[str, Any]) -> ToolCall:
    """The call an ``agent.custom_tool_use`` event asks the router to run."""
    return ToolCall(str(event["id"]), str(event.get("name", "")), as_json(event.get("input", {})))


def translate(
    provider: str, session_id: str, event: dict[str, Any], turn: TurnState
) -> list[BackendEvent]:
    """The neutral events one session event carries, noting on ``turn`` what it tells.

    Not for ``agent.custom_tool_use`` or a ``requires_action`` idle, which the
    backend answers through the client.
    """
    kind = event.get("type", "")
    handler = _HANDLERS.get(kind)
    if handler is not None:
        return handler(kind, event, turn, session_id)
    if kind == "session.status_idle":
        return _idle(provider, event, turn)
    # Everything else (echoed user events, status_running, span starts, pings,
    # event types added later) carries nothing for the client.
    return []


def tool_answers(idle: dict[str, Any], turn: TurnState) -> list[Any]:
    """The answers (SDK event params) to every event a ``requires_action`` idle waits on.

    A server tool that asks for confirmation is denied; a custom tool use gets its
    result, or an error when the router has none.
    """
    wanted = [str(i) for i in (idle.get("stop_reason") or {}).get("event_ids") or []]
    batch: list[Any] = []
    for event_id in wanted:
        if event_id in turn.confirmations:
            batch.append(
                {
                    "type": "user.tool_confirmation",
                    "tool_use_id": event_id,
                    "result": "deny",
                    "deny_message": _DENIED,
                }
            )
            continue
        result = turn.results.pop(event_id, None)
        if result is None:
            text, is_error = as_json({"error": "the router has no record of this tool call"}), True
        elif result.error:
            text, is_error = as_json({"error": result.error}), True
        else:
            text, is_error = result.result, False
        batch.append(
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": event_id,
                "content": [{"type": "text", "text": text}],
                "is_error": is_error,
            }
        )
    return batch


def as_json(value: Any) -> str:
    return orjson.dumps(value).decode()


_Handler = Callable[[str, dict[str, Any], TurnState, str], list[BackendEvent]]


def _message_start(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    inner = event.get("event") or {}
    if inner.get("type") == "agent.message":
        turn.previewed[str(inner.get("id"))] = []
    return []


def _message_preview(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    delta = event.get("delta") or {}
    content = delta.get("content") or {}
    text = content.get("text")
    if delta.get("type") == "content_delta" and content.get("type") == "text" and text:
        turn.previewed.setdefault(str(event.get("event_id")), []).append(text)
        return [TextDelta(text)]
    return []


def _message(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    """The part of a final ``agent.message`` its previews did not carry."""
    text = "".join(
        block.get("text", "") for block in event.get("content") or [] if block.get("type") == "text"
    )
    previewed = "".join(turn.previewed.pop(str(event.get("id")), []))
    if text.startswith(previewed) and len(text) > len(previewed):
        return [TextDelta(text[len(previewed) :])]
    if not text.startswith(previewed):
        log.warning("anthropic_preview_mismatch", session_id=session_id)
    return []


def _thinking(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    return [ThinkingDelta("")]  # a progress signal: the service sends no thinking text


def _server_tool_use(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    name = str(event.get("name", ""))
    if kind == "agent.mcp_tool_use" and event.get("mcp_server_name"):
        name = f"{event['mcp_server_name']}.{name}"
    call_id = str(event["id"])
    turn.server_tools[call_id] = name
    if event.get("evaluated_permission") == "ask":
        turn.confirmations.add(call_id)
    return [ToolCall(call_id, name, as_json(event.get("input", {})), provider_executed=True)]


def _server_tool_result(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    key = "tool_use_id" if kind == "agent.tool_result" else "mcp_tool_use_id"
    call_id = str(event.get(key) or event.get("tool_use_id") or "")
    output = _content_text(event.get("content"))
    name = turn.server_tools.get(call_id, "")
    if event.get("is_error"):
        return [ToolResult(call_id, name, "", error=output or "failed", provider_executed=True)]
    return [ToolResult(call_id, name, as_json(output), provider_executed=True)]


def _usage(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    usage = event.get("model_usage") or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    return [
        UsageReport(
            Usage(
                input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
                output_tokens=int(usage.get("output_tokens") or 0),
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
            )
        )
    ]


def _session_error(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    error = event.get("error") or {}
    turn.last_error = str(error.get("message") or error.get("type") or "")
    log.warning(
        "anthropic_session_error",
        session_id=session_id,
        error_type=error.get("type"),
        retry_status=(error.get("retry_status") or {}).get("type"),
    )
    return []


def _terminated(
    kind: str, event: dict[str, Any], turn: TurnState, session_id: str
) -> list[BackendEvent]:
    turn.idle = True  # nothing to interrupt
    turn.failure = "terminated"
    return []


def _idle(provider: str, event: dict[str, Any], turn: TurnState) -> list[BackendEvent]:
    reason = idle_reason(event)
    turn.idle = True
    if reason == "retries_exhausted":
        turn.failure = "retries_exhausted"
    elif reason in _IDLE_STOPS:
        turn.end = _IDLE_STOPS[reason]
    else:
        raise ProviderProtocolError(provider, f"unknown stop reason {reason!r}")
    return []


_HANDLERS: dict[str, _Handler] = {
    "event_start": _message_start,
    "event_delta": _message_preview,
    "agent.message": _message,
    "agent.thinking": _thinking,
    "agent.tool_use": _server_tool_use,
    "agent.mcp_tool_use": _server_tool_use,
    "agent.tool_result": _server_tool_result,
    "agent.mcp_tool_result": _server_tool_result,
    "span.model_request_end": _usage,
    "session.error": _session_error,
    "session.status_terminated": _terminated,
}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""
