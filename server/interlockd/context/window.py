"""Context assembly: the stored window turned into the messages of one provider call.

Owns the rule for what a model sees of a conversation: the system prompt, then
the newest whole turns that fit the model's budget, oldest dropped first. The
rule is deterministic — the same window and budget always give the same
messages — and never exceeds the budget: if the current message can't fit, the
run is refused before anything is stored. Work is bounded by the budget, not
by the conversation's length: entries are read newest-first in pages and
reading stops as soon as the budget is spent.

It knows the store's entries and the backends' neutral messages, nothing of
any provider's wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from interlockd.backends.base import Message, ModelInfo, ToolCallPart, ToolSpec
from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.errors import InvalidArgument
from interlockd.store.base import Store, WindowEntry

_PAGE = 64
_DROPPED_NOTE = (
    "[{n} earlier turn(s) of this conversation are not shown to fit the context window. "
    "Call search_conversations to recall them if they matter.]"
)
_INTERRUPTED = orjson.dumps(
    {"error": "the run was interrupted before this tool call completed; its outcome is unknown"}
).decode()


@dataclass(frozen=True, slots=True)
class Budget:
    """Token budget of one provider call's input."""

    total: int  # what the conversation's turns may use

    @classmethod
    def for_model(
        cls,
        info: ModelInfo,
        *,
        system: str,
        tools: Sequence[ToolSpec],
        max_output_tokens: int | None,
    ) -> Budget:
        output = max_output_tokens or info.max_output_tokens
        output = min(output, info.context_window // 2)
        fixed = estimate_tokens(system) + MESSAGE_OVERHEAD + _tools_tokens(tools)
        # Room for the dropped-turns note, so adding it never breaks the budget.
        fixed += estimate_tokens(_DROPPED_NOTE) + MESSAGE_OVERHEAD + 8
        return cls(total=info.context_window - output - fixed)


def _tools_tokens(tools: Sequence[ToolSpec]) -> int:
    return sum(
        estimate_tokens(t.name + t.description + orjson.dumps(t.parameters).decode()) + 8
        for t in tools
    )


def entry_cost(entry: WindowEntry) -> int:
    return entry.tokens + MESSAGE_OVERHEAD


def check_message_fits(message_tokens: int, budget: Budget, model: str) -> None:
    """Refuse a message that can't fit the model's window even with no history."""
    if message_tokens + MESSAGE_OVERHEAD > budget.total:
        raise InvalidArgument(
            "message",
            f"too long for model {model!r}: about {message_tokens} tokens, but at most "
            f"{max(budget.total - MESSAGE_OVERHEAD, 0)} fit its context window with this "
            "system prompt and tools; shorten it or pick a model with a larger window",
        )


@dataclass(frozen=True, slots=True)
class AssembledContext:
    messages: list[Message]
    included_turns: int
    dropped_turns: int
    tokens: int


async def assemble(
    store: Store,
    sandbox_id: str,
    conversation_id: str,
    *,
    system: str,
    budget: Budget,
    tool_messages: bool,
) -> AssembledContext:
    """Build the messages for the next provider call of this conversation.

    ``tool_messages`` false renders tool calls and results as assistant text,
    for models without tool support (the history may hold tool traffic from
    another provider).
    """
    remaining = budget.total
    turns: list[list[WindowEntry]] = []  # newest first, each in stored order
    current: list[WindowEntry] = []
    current_cost = 0
    dropped = 0
    before: int | None = None
    exhausted = False
    while not exhausted:
        page = await store.read_entries(
            sandbox_id, conversation_id, before_seq=before, limit=_PAGE, newest_first=True
        )
        if len(page) < _PAGE:
            exhausted = True
        for entry in page:
            current.append(entry)
            current_cost += entry_cost(entry)
            if entry.kind in ("user", "summary"):
                if current_cost > remaining:
                    dropped = 1
                    break
                remaining -= current_cost
                turns.append(list(reversed(current)))
                current, current_cost = [], 0
        else:
            if page:
                before = page[-1].seq
            continue
        break
    if dropped:
        # Count the remaining older turns only cheaply: knowing "some" is enough
        # for the note, and counting all would make cost grow with history.
        pass
    elif current:
        # Entries older than any user message (shouldn't happen; kept if they fit).
        if current_cost <= remaining:
            turns.append(list(reversed(current)))
        else:
            dropped = 1

    messages: list[Message] = []
    system_text = system
    if dropped:
        note = _DROPPED_NOTE.format(n="Some")
        system_text = f"{system}\n\n{note}" if system else note
    if system_text:
        messages.append(Message(role="system", content=system_text))
    for turn in reversed(turns):
        messages.extend(_to_messages(turn, tool_messages=tool_messages))
    return AssembledContext(
        messages=messages,
        included_turns=len(turns),
        dropped_turns=dropped,
        tokens=budget.total - remaining,
    )


def _to_messages(entries: Sequence[WindowEntry], *, tool_messages: bool) -> list[Message]:
    """One turn's entries as chat messages, tool calls paired with their results."""
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
