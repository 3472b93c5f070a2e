"""Tool-call lookups: a conversation's tool_call and tool_result entries by call id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlockd.store.base import (
    EntryKind,
    ToolCallStore,
    WindowEntry,
)
from interlockd.store.sql.core import (
    SqlCore,
)
from interlockd.store.sql.tables import (
    ENTRIES,
)

if TYPE_CHECKING:
    pass


class SqlToolCalls(SqlCore, ToolCallStore):
    """Lookups of recorded tool calls and results."""

    async def find_tool_result(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        return await self._find_tool_entry(sandbox_id, conversation_id, tool_call_id, "tool_result")

    async def find_tool_call(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        return await self._find_tool_entry(sandbox_id, conversation_id, tool_call_id, "tool_call")

    async def _find_tool_entry(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str, kind: EntryKind
    ) -> WindowEntry | None:
        if not tool_call_id:
            return None
        rows = await self._fetch(
            f"SELECT {ENTRIES.columns} FROM entries "
            "WHERE conversation_id = ? AND tool_call_id = ? AND tool_call_id <> '' "
            "AND sandbox_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
            (conversation_id, tool_call_id, sandbox_id, kind),
        )
        if not rows:
            return None
        return await self._opened(sandbox_id, lambda keys: ENTRIES.load(rows[0], keys))
