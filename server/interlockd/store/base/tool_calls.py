"""Tool-call lookups: whether a tool call of a conversation was started or answered.

The runner asks before executing a call again (idempotency, "outcome unknown");
the calls and results themselves are window entries (``conversations.py``).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interlockd.store.base.conversations import WindowEntry


class ToolCallStore(abc.ABC):
    """Lookups of a conversation's recorded tool calls and results by call id."""

    @abc.abstractmethod
    async def find_tool_result(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        """The stored ``tool_result`` entry answering ``tool_call_id``, if any."""

    @abc.abstractmethod
    async def find_tool_call(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        """The stored ``tool_call`` entry of ``tool_call_id``, if any (the call was started)."""
