"""Context assembly: the stored window turned into the messages of one provider call.

Owns the rule for what a model sees of a conversation: the system prompt, then
the newest whole turns that fit the model's budget, oldest dropped first. The
rule is deterministic — the same window and budget always give the same
messages — and never exceeds the budget: if the current message can't fit, the
run is refused before anything is stored. Work is bounded by the budget, not
by the conversation's length: entries are read newest-first in pages and
reading stops as soon as the budget is spent. With the store's window cache
(``cache.py``, on by default) a turn reads only what changed since the
conversation's previous one and fits the budget by binary search; the result
is the same either way.

It knows the store's entries and the backends' neutral messages, nothing of
any provider's wire format.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import orjson

from interlockd.context.cache import window_cache
from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.context.turns import FIRST_PAGE, MAX_PAGE, TURN_STARTS, entry_cost, to_messages
from interlockd.errors import InvalidArgument
from interlockd.store.base import Store, WindowEntry
from interlockd.vocabulary import Message, ModelInfo, ToolSpec

__all__ = [
    "AssembledContext",
    "Budget",
    "assemble",
    "check_message_fits",
    "entry_cost",
]

_DROPPED_NOTE = (
    "[Earlier turns of this conversation are not shown, to fit the context window. "
    "Call search_conversations to recall them if they matter.]"
)


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
    dropped: bool  # whether older turns were left out to fit
    tokens: int


async def assemble(
    store: Store,
    sandbox_id: str,
    conversation_id: str,
    *,
    system: str,
    budget: Budget,
    tool_messages: bool,
    after_seq: int = 0,
    cached: bool = True,
) -> AssembledContext:
    """Build the messages for the next provider call of this conversation.

    ``tool_messages`` false renders tool calls and results as assistant text,
    for models without tool support (the history may hold tool traffic from
    another provider). ``after_seq`` leaves out the entries up to that seq: a
    provider session that has seen them needs only the rest. ``cached`` false
    reads the window from the store even when the store has a window cache
    (the same result, at the cost of opening every entry that fits).
    """
    cache = window_cache(store) if cached else None
    if cache is not None:
        fitted = await cache.fit(
            store,
            sandbox_id,
            conversation_id,
            budget=budget.total,
            tool_messages=tool_messages,
            after_seq=after_seq,
        )
        turns_messages, included, dropped, used = fitted
    else:
        newest_first = _newest_first(store, sandbox_id, conversation_id, after_seq)
        async with contextlib.aclosing(newest_first) as entries:
            turns, dropped, used = await _fit_turns(entries, budget.total)
        turns_messages = []
        for turn in reversed(turns):
            turns_messages.extend(to_messages(turn, tool_messages=tool_messages))
        included = len(turns)
    messages: list[Message] = []
    system_text = system
    if dropped:
        system_text = f"{system}\n\n{_DROPPED_NOTE}" if system else _DROPPED_NOTE
    if system_text:
        messages.append(Message(role="system", content=system_text))
    messages.extend(turns_messages)
    return AssembledContext(
        messages=messages,
        included_turns=included,
        dropped=dropped,
        tokens=used,
    )


async def _newest_first(
    store: Store, sandbox_id: str, conversation_id: str, after_seq: int
) -> AsyncGenerator[WindowEntry, None]:
    before: int | None = None
    limit = FIRST_PAGE
    while True:
        page = await store.read_entries(
            sandbox_id, conversation_id, before_seq=before, limit=limit, newest_first=True
        )
        for entry in page:
            if entry.seq <= after_seq:
                return
            yield entry
        if len(page) < limit:
            return
        before = page[-1].seq
        limit = min(limit * 4, MAX_PAGE)


async def _fit_turns(
    entries: AsyncIterator[WindowEntry], budget: int
) -> tuple[list[list[WindowEntry]], bool, int]:
    """The newest whole turns that fit ``budget`` (newest first), whether any were
    dropped, and the tokens used. Stops reading at the first turn that doesn't fit,
    so the work is bounded by the budget, not by the history."""
    remaining = budget
    turns: list[list[WindowEntry]] = []
    current: list[WindowEntry] = []
    cost = 0
    async for entry in entries:
        current.append(entry)
        cost += entry_cost(entry)
        if entry.kind in TURN_STARTS:  # a turn starts here
            if cost > remaining:
                return turns, True, budget - remaining
            remaining -= cost
            turns.append(current[::-1])
            current, cost = [], 0
    if current:  # entries older than any user message: kept if they fit
        if cost > remaining:
            return turns, True, budget - remaining
        remaining -= cost
        turns.append(current[::-1])
    return turns, False, budget - remaining
