"""Recording a turn into the conversation's window.

The recorder keeps the per-event hot path free of I/O: text deltas are
buffered in memory and written as one assistant entry at each tool boundary
and at the end of the turn. It is the :class:`CallRecorder` of the run's tool
runner (:mod:`interlockd.tools.runner`), which writes tool calls *before* they
execute and their results *before* they are fed back, so a crash never loses a
completed result and never leads to executing a completed call again.
"""

from __future__ import annotations

from typing import Any

import orjson

from interlockd.context.tokens import estimate_tokens
from interlockd.store.base import EntryKind, NewEntry, Store
from interlockd.tools.runner import CallRecorder
from interlockd.vocabulary import ToolCall, ToolResult


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


class TurnRecorder(CallRecorder):
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
        #: True once this attempt wrote an entry of its own (a tool call or result).
        self.recorded = False

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
            self.recorded = True
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
