"""Hermes' streamed chat completions, frame by frame, as provider-neutral events.

Owns the wire format of ``POST /v1/chat/completions`` with ``stream: true`` as
hermes-agent 0.19 writes it (``gateway/platforms/api_server.py``), nothing of
HTTP or sessions:

- ``data:`` chunks in OpenAI's shape: a first ``{"delta": {"role":
  "assistant"}}``, then ``{"delta": {"content": "..."}}`` per text delta, then
  one chunk with ``"delta": {}``, the ``finish_reason`` (``stop``, ``length``
  when the answer was cut, ``error`` when the agent failed) and the turn's
  ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``: every
  model call of the turn summed). A failed turn's last chunk also carries
  ``error: {message, type}`` and ``hermes: {completed, partial, failed, error,
  error_code}``. Then ``data: [DONE]``.
- tool progress as frames of their own, ``event: hermes.tool.progress``:
  ``{"tool", "emoji", "label", "toolCallId", "status": "running"}`` when a
  tool starts and ``{"tool", "toolCallId", "status": "completed"}`` when it
  returns. They carry neither the arguments nor the output. For the daemon's
  own tools, which Hermes calls through the daemon's MCP endpoint, the calls
  the endpoint executed and recorded (:mod:`interlockd.backends.tool_relay`)
  are streamed instead, with their real arguments, results and recorded ids,
  when Hermes reports one finished (it reports that only once the endpoint has
  answered) and at the end of the answer. A tool that ran inside Hermes itself
  is reported from its frames alone: ``{}`` as its arguments, ``null`` as its
  result, both marked provider-executed.
- ``: keepalive`` comments every 30 s of silence (skipped by the SSE reader).

Tools of the daemon's MCP server arrive named ``mcp__interlock__<tool>``
(other characters than ``[A-Za-z0-9_]`` replaced by ``_``); they are named
back to the run's tool names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson

from interlockd.backends.hermes.config import MCP_SERVER
from interlockd.backends.tool_relay import ExecutedCalls
from interlockd.errors import (
    ProviderCredentialsRejected,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
)
from interlockd.vocabulary import (
    BackendEvent,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    TurnEnd,
    Usage,
    UsageReport,
)

TOOL_PROGRESS: Final = "hermes.tool.progress"
_MCP_PREFIX: Final = f"mcp__{MCP_SERVER}__"
_STOPS: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "end_turn",
    "length": "max_tokens",
    "content_filter": "content_filter",
}
_MAX_DETAIL = 300
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
#: How Hermes says it found no model configuration (hermes_cli/auth.py): it did
#: not read the config.yaml the daemon writes into its HERMES_HOME.
_NOT_CONFIGURED = "No inference provider configured"


def wire_tool_name(name: str) -> str:
    """How Hermes names the daemon's MCP tool ``name`` (its ``mcp_prefixed_tool_name``)."""
    return _MCP_PREFIX + _UNSAFE.sub("_", name)


class TurnStream:
    """Translates the frames of one streamed answer; :meth:`rest` and :meth:`end` once it
    is over.

    ``executed`` holds the calls the daemon's MCP endpoint executed for this
    run (see :func:`interlockd.backends.tool_relay.executed_calls`).
    """

    def __init__(
        self,
        provider: str,
        tools: Sequence[ToolSpec] = (),
        executed: ExecutedCalls | None = None,
    ) -> None:
        self.provider = provider
        self.done = False  # [DONE] was received: nothing else is read
        self._finish: str | None = None
        self._names = {wire_tool_name(t.name): t.name for t in tools}
        self._running: dict[str, str] = {}  # toolCallId -> name, between running and completed
        self._executed = executed if executed is not None else ExecutedCalls()

    def frame(self, event: str, data: str) -> Iterator[BackendEvent]:
        """The events of one SSE frame (``event`` is ``"message"`` when it had none)."""
        if event == TOOL_PROGRESS:
            yield from self._tool_progress(_object(self.provider, data, "a tool progress frame"))
        elif event == "message":
            if data.strip() == "[DONE]":
                self.done = True
                return
            yield from self._chunk(_object(self.provider, data, "a stream chunk"))
        # Other named events: added by a later Hermes, nothing we know to report.

    def rest(self) -> Iterator[BackendEvent]:
        """The daemon's tool calls executed but not streamed yet (before :meth:`end`)."""
        return self._relayed()

    def end(self) -> TurnEnd:
        """The turn's end once the stream is over; a provider error when it did not finish."""
        if self._finish is None:
            if not self.done:
                raise ProviderUnavailable(
                    self.provider, "the answer stream ended before the turn finished"
                )
            return TurnEnd("end_turn")  # [DONE] without a finish reason: complete
        stop = _STOPS.get(self._finish)
        if stop is None:
            raise ProviderProtocolError(
                self.provider, f"unknown finish_reason {self._finish[:40]!r}"
            )
        return TurnEnd(stop)

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[BackendEvent]:
        usage = chunk.get("usage")
        if usage:
            report = self._usage(usage)
            if report.usage != Usage():
                yield report
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if reason == "error" or (chunk.get("error") and not choice):
            yield from self._relayed()  # what ran before the failure is recorded: show it
            raise self._agent_failure(chunk.get("error"))
        if choice is None:
            return
        if not isinstance(choice, dict):
            raise self._shape("malformed choices")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise self._shape("delta is not an object")
        content = delta.get("content")
        if content:
            if not isinstance(content, str):
                raise self._shape("delta.content is not a string")
            yield TextDelta(content)
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if thinking:
            if not isinstance(thinking, str):
                raise self._shape("delta.reasoning is not a string")
            yield ThinkingDelta(thinking)
        if reason is not None:
            if not isinstance(reason, str):
                raise self._shape("finish_reason is not a string")
            self._finish = reason

    def _tool_progress(self, frame: dict[str, Any]) -> Iterator[BackendEvent]:
        """Tool progress as ToolCall/ToolResult events for the client's stream.

        The daemon's own tools (Hermes calls them through its MCP endpoint) are
        executed and recorded there, by the run's ToolRunner, with their real
        arguments and results: once Hermes reports one finished, the calls the
        endpoint executed so far are streamed as recorded (``provider_executed``
        False: the orchestrator streams them without recording them again), and
        their own frames are not. Any other tool ran inside Hermes and is
        recorded as provider-executed, from its frames.
        """
        call_id = frame.get("toolCallId")
        tool = frame.get("tool")
        if not call_id or not isinstance(call_id, str) or not isinstance(tool, str):
            return  # an older Hermes' progress line without an id: nothing to pair
        name = self._name(tool)
        inside = not (tool in self._names or tool.startswith(_MCP_PREFIX))
        status = frame.get("status")
        if not inside:
            if status != "running":
                # Finished: Hermes had the endpoint's answer, so the call is recorded.
                yield from self._relayed()
            return
        if status == "running":
            self._running[call_id] = name
            yield ToolCall(call_id, name, "{}", provider_executed=True)
        elif status == "completed":
            name = self._running.pop(call_id, name)
            yield ToolResult(call_id, name, "null", provider_executed=True)
        elif status in ("failed", "error"):
            name = self._running.pop(call_id, name)
            yield ToolResult(
                call_id, name, "", error=_detail(frame.get("error")), provider_executed=True
            )

    def _relayed(self) -> Iterator[BackendEvent]:
        """The calls the MCP endpoint executed and recorded since the last time, as recorded."""
        for call, result in self._executed.take():
            yield ToolCall(call.call_id, call.name, call.arguments)
            yield ToolResult(
                call.call_id, call.name, result.result, error=result.error, reused=result.reused
            )

    def _agent_failure(self, error: Any) -> ProviderError:
        detail = _detail(error)
        if detail.startswith(_NOT_CONFIGURED):
            # Hermes' own advice (`hermes model`, ~/.hermes/.env) does not apply: the
            # daemon writes its configuration, from the provider's settings.
            return ProviderCredentialsRejected(
                self.provider,
                "Hermes found no model to call: it did not read the configuration the daemon "
                "wrote into its compute session. The model comes from the daemon's settings "
                f"providers.{self.provider}.base_url (empty: the daemon's local model "
                f"server), providers.{self.provider}.api_key and "
                f"providers.{self.provider}.default_model; the runtime's log "
                "(runtime.log in its compute session's directory) says what it read",
            )
        return ProviderUnavailable(self.provider, f"the agent failed: {detail}")

    def _name(self, tool: str) -> str:
        known = self._names.get(tool)
        if known is not None:
            return known
        return tool.removeprefix(_MCP_PREFIX)

    def _usage(self, usage: Any) -> UsageReport:
        try:
            return UsageReport(
                Usage(
                    input_tokens=int(usage.get("prompt_tokens") or 0),
                    output_tokens=int(usage.get("completion_tokens") or 0),
                )
            )
        except (AttributeError, TypeError, ValueError):
            raise self._shape("malformed usage") from None

    def _shape(self, what: str) -> ProviderProtocolError:
        return ProviderProtocolError(self.provider, f"unexpected stream chunk: {what}")


def _object(provider: str, data: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderProtocolError(provider, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProviderProtocolError(provider, f"{what} is not a JSON object")
    return value


def _detail(error: Any) -> str:
    """The message of an error object Hermes sent, one line, bounded."""
    message = error.get("message") if isinstance(error, dict) else error
    text = " ".join(str(message or "no message").split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
