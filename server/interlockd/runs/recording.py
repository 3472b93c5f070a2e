"""Recording a turn into the conversation's window, and executing its tool calls.

The recorder keeps the per-event hot path free of I/O: text deltas are
buffered in memory and written as one assistant entry at each tool boundary
and at the end of the turn. Tool calls are written *before* they execute and
their results *before* they are fed back, so a crash never loses a completed
result and never leads to executing a completed call again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog

from interlockd.backends.base import ToolCall, ToolResult, ToolRunner
from interlockd.context.tokens import estimate_tokens
from interlockd.integrations.tools import Tool, ToolContext, ToolError
from interlockd.store.base import EntryKind, NewEntry, Store

log = structlog.get_logger(__name__)

#: Longest tool result fed back to a model (characters of JSON). Bounds how
#: much one tool call can grow the context within a turn.
MAX_RESULT_CHARS = 32_000
_OUTCOME_UNKNOWN = (
    "this call was started before and did not finish; it may have taken effect. It was not "
    "run again: check its effect before retrying"
)


def user_entry(message: str, run_id: str, provider: str, model: str) -> NewEntry:
    """The entry of a run's user message (recorded by the store's begin_run)."""
    return NewEntry(
        kind="user",
        text=message,
        run_id=run_id,
        tokens=estimate_tokens(message),
        provider=provider,
        model=model,
    )


class TurnRecorder:
    """Appends one run's entries to its conversation."""

    def __init__(
        self,
        store: Store,
        sandbox_id: str,
        conversation_id: str,
        run_id: str,
        provider: str,
        model: str,
    ) -> None:
        self._store = store
        self._sandbox_id = sandbox_id
        self._conversation_id = conversation_id
        self._run_id = run_id
        self._provider = provider
        self._model = model
        self._text: list[str] = []
        self.produced_output = False

    def add_text(self, text: str) -> None:
        self._text.append(text)

    def _entry(self, kind: EntryKind, text: str, **extra: Any) -> NewEntry:
        return NewEntry(
            kind=kind,
            text=text,
            run_id=self._run_id,
            tokens=estimate_tokens(text),
            provider=self._provider,
            model=self._model,
            **extra,
        )

    def take_text(self) -> list[NewEntry]:
        """Buffered assistant text as an entry (once); the caller stores it."""
        if not self._text:
            return []
        text = "".join(self._text)
        self._text.clear()
        return [self._entry("assistant", text)]

    async def _append(self, entries: list[NewEntry]) -> None:
        if entries:
            await self._store.append_entries(
                self._sandbox_id,
                self._conversation_id,
                entries,
                provider=self._provider,
                model=self._model,
            )

    async def record_tool_call(self, call: ToolCall) -> None:
        await self._append(
            [
                *self.take_text(),
                self._entry(
                    "tool_call", call.arguments, tool_call_id=call.call_id, tool_name=call.name
                ),
            ]
        )

    async def record_tool_result(self, result: ToolResult, *, source_id: str = "") -> None:
        text = result.result if not result.error else orjson.dumps({"error": result.error}).decode()
        await self._append(
            [
                self._entry(
                    "tool_result",
                    text,
                    tool_call_id=result.call_id,
                    tool_name=result.name,
                    is_error=bool(result.error),
                    source_id=source_id,
                )
            ]
        )


class SandboxToolRunner(ToolRunner):
    """Executes a run's tool calls with the sandbox's tools, recording each."""

    def __init__(
        self, tools: list[Tool], ctx: ToolContext, recorder: TurnRecorder, timeout: float
    ) -> None:
        self._tools = {t.spec.name: t for t in tools}
        self._ctx = ctx
        self._recorder = recorder
        self._timeout = timeout

    async def run(self, call: ToolCall) -> ToolResult:
        store, sandbox_id, conversation_id = (
            self._ctx.store,
            self._ctx.sandbox_id,
            self._ctx.conversation_id,
        )
        stored = await store.find_tool_result(sandbox_id, conversation_id, call.call_id)
        if stored is not None:
            # The provider re-sent a call that already completed: never run it twice.
            if stored.is_error:
                error = str(orjson.loads(stored.text).get("error", "tool failed"))
                return ToolResult(call.call_id, call.name, "", error=error, reused=True)
            return ToolResult(call.call_id, call.name, stored.text, reused=True)
        tool = self._tools.get(call.name)
        if tool is not None and tool.spec.side_effecting:
            started = await store.find_tool_call(sandbox_id, conversation_id, call.call_id)
            if started is not None:
                # Started before (a crash or a cut stream in between) and never
                # finished: it may have taken effect. Say so; never run it again.
                result = ToolResult(call.call_id, call.name, "", error=_OUTCOME_UNKNOWN)
                await self._recorder.record_tool_result(result, source_id=tool.source_id)
                return ToolResult(call.call_id, call.name, "", error=_OUTCOME_UNKNOWN, reused=True)
        await self._recorder.record_tool_call(call)
        result = await self._execute(call)
        await self._recorder.record_tool_result(result, source_id=tool.source_id if tool else "")
        return result

    async def _execute(self, call: ToolCall) -> ToolResult:
        def failed(message: str) -> ToolResult:
            return ToolResult(call.call_id, call.name, "", error=message)

        tool = self._tools.get(call.name)
        if tool is None:
            return failed(
                f"unknown tool {call.name!r}; available: {', '.join(sorted(self._tools)) or 'none'}"
            )
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return failed("arguments are not valid JSON; send a JSON object")
        if not isinstance(arguments, dict):
            return failed("arguments must be a JSON object")
        try:
            async with asyncio.timeout(self._timeout):
                value = await tool.execute(self._ctx, arguments)
        except ToolError as exc:
            return failed(str(exc))
        except TimeoutError:
            return failed(f"the tool did not finish within {self._timeout:g} s")
        except Exception:
            log.exception("tool_failed", tool=call.name, run_id=self._ctx.run_id)
            return failed("the tool failed unexpectedly; try again or continue without it")
        text = orjson.dumps(value).decode()
        if len(text) > MAX_RESULT_CHARS:
            text = orjson.dumps(
                {"truncated": True, "partial_json": text[:MAX_RESULT_CHARS]}
            ).decode()
        return ToolResult(call.call_id, call.name, text)
