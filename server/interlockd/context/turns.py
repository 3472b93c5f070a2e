"""A window's turns: where one starts, what it costs, and the chat messages it becomes.

A turn starts at a user message or a summary and runs to the next one;
entries older than any user message form a group of their own. Assembly
keeps or drops whole turns, so both the direct path (``window.py``) and the
per-conversation cache (``cache.py``) group and render with these functions,
and give the same messages for the same entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from interlockd.context.tokens import MESSAGE_OVERHEAD
from interlockd.vocabulary import Message, ToolCallPart

if TYPE_CHECKING:
    from collections.abc import Sequence

    from interlockd.store.base import WindowEntry

#: Entry kinds a turn starts with.
TURN_STARTS = frozenset({"user", "summary"})

#: Reading back from the newest end, pages grow geometrically: a small window
#: costs one small read, a large one a few large reads, not many round trips.
FIRST_PAGE = 64
MAX_PAGE = 4096

_INTERRUPTED = orjson.dumps(
    {"error": "the run was interrupted before this tool call completed; its outcome is unknown"}
).decode()


def entry_cost(entry: WindowEntry) -> int:
    """Tokens the entry takes of the budget: its text and its message's overhead."""
    return entry.tokens + MESSAGE_OVERHEAD


def to_messages(entries: Sequence[WindowEntry], *, tool_messages: bool) -> list[Message]:
    """One turn's entries as chat messages, tool calls paired with their results.

    ``tool_messages`` false renders tool calls and results as assistant text.
    """
    out: list[Message] = []
    text = ""
    calls: list[ToolCallPart] = []
    answered: set[str] = {e.tool_call_id for e in entries if e.kind == "tool_result"}

    def flush() -> None:
        nonlocal text, calls
        if text or calls:
            out.append(Message(role="assistant", content=text, tool_calls=tuple(calls)))
        text, calls = "", []

    for e in entries:
        if e.kind == "user":
            flush()
            out.append(Message(role="user", content=e.text))
        elif e.kind == "summary":
            flush()
            out.append(Message(role="user", content=f"[Summary of earlier conversation]\n{e.text}"))
        elif e.kind == "assistant":
            if calls:
                flush()
            text += e.text
        elif not tool_messages:
            if e.kind == "tool_call":
                text += f"\n[called tool {e.tool_name} with {e.text}]"
            else:
                text += f"\n[tool {e.tool_name} returned {e.text}]"
        elif e.kind == "tool_call":
            calls.append(ToolCallPart(e.tool_call_id, e.tool_name, e.text))
            if e.tool_call_id not in answered:
                # Never re-run it; tell the model its outcome is unknown.
                flush()
                out.append(_tool_message(e.tool_call_id, e.tool_name, _INTERRUPTED))
        else:  # tool_result
            flush()
            out.append(_tool_message(e.tool_call_id, e.tool_name, e.text))
    flush()
    return out


def _tool_message(call_id: str, name: str, content: str) -> Message:
    return Message(role="tool", content=content, tool_call_id=call_id, name=name)
