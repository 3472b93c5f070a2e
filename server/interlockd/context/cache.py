"""Opened windows kept per conversation, so a turn's context costs only what changed.

Owns the process-memory copy of conversations' windows that context assembly
works from: each conversation's newest entries, opened and grouped into whole
turns, each turn's token cost (with running sums, so fitting a budget is a
binary search) and its chat messages in both renderings (tool messages or
tool traffic as text). The newest turn, still growing, is re-rendered when
entries join it; older turns never change.

Never stale: every use first reads the conversation's version and the
entries appended since the seq held, in one store read
(``Store.read_window_changes``). Another revision (an entry withdrawn or
rewritten, by this process or any other sharing the store), another
conversation under the id, or a gone one drops what is held; otherwise only
the new entries are opened. Work and memory stay bounded by what budgets
need: a conversation's copy reaches back only as far as a call has needed
(read newest-first in pages, like the direct path), and the copies share an
LRU budget counted by the text they hold. Opened text lives only here, in
process memory; nothing of it is written anywhere.

One cache per store object (:func:`window_cache`), so a daemon's turns share
it without passing it around; :func:`configure_window_cache` sizes it (the
daemon, from ``context.cache_mib``; 0 turns it off).
"""

from __future__ import annotations

import asyncio
import bisect
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from interlockd.context.turns import FIRST_PAGE, MAX_PAGE, TURN_STARTS, entry_cost, to_messages
from interlockd.errors import StoreError

if TYPE_CHECKING:
    from datetime import datetime

    from interlockd.store.base import Store, WindowEntry, WindowVersion
    from interlockd.vocabulary import Message

#: The default budget of a store's cache.
DEFAULT_MIB = 64.0
#: Bytes charged per entry beyond its text: the opened record and its messages.
ENTRY_OVERHEAD = 160
#: More new entries than this since a conversation's last use: read it again from
#: the newest end (bounded by the budget) rather than everything in between.
MAX_DELTA = MAX_PAGE
#: Reads of a window that changed while being read, before giving up.
_ATTEMPTS = 3


class Fitted(NamedTuple):
    """The turns of a window that fit a budget, as :func:`window.assemble` needs them."""

    messages: list[Message]  # the included turns' messages, oldest first
    included_turns: int
    dropped: bool  # whether older turns were left out to fit
    tokens: int


@dataclass(slots=True)
class _Turn:
    entries: list[WindowEntry]
    cost: int

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq


@dataclass(slots=True)
class _Rendering:
    """The messages of ``turns[first:]`` in one rendering (``tool_messages``, see
    ``turns.to_messages``); ``starts[j]`` is where turn ``first + j`` begins in ``messages``."""

    tool_messages: bool
    first: int
    messages: list[Message] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def offset(self, turn: int) -> int:
        j = turn - self.first
        return self.starts[j] if j < len(self.starts) else len(self.messages)


class _Unknown(Exception):
    """Entries arrived that belong to a turn whose start is not held: start over."""


class _Window:
    """One conversation's copy: entries ``first_seq .. last_seq`` as whole turns."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.accounted = 0  # the size the cache last counted for it
        self.reset()

    def reset(self) -> None:
        self.version: tuple[datetime, int] | None = None  # (created_at, revision)
        self.last_seq = 0
        self.turns: list[_Turn] = []
        self.sums = [0]  # sums[i]: cost of turns[:i]
        self.renderings: dict[bool, _Rendering] = {}
        self.size = 0

    def start(self, version: WindowVersion) -> None:
        """Empty, at ``version``: holds nothing yet, reads back from its newest entry."""
        self.reset()
        self.version = (version.created_at, version.revision)
        self.last_seq = version.entry_count

    @property
    def first_seq(self) -> int:
        return self.turns[0].first_seq if self.turns else self.last_seq + 1

    # ---- growing at either end ------------------------------------------------------

    def append(self, entries: list[WindowEntry]) -> None:
        """Entries ``last_seq + 1, ...`` joined the window."""
        changed = len(self.turns)  # the oldest turn whose messages changed
        for e in entries:
            if e.seq != self.last_seq + 1:
                raise _Unknown
            cost = entry_cost(e)
            if e.kind in TURN_STARTS or (not self.turns and self.first_seq == 1):
                self.turns.append(_Turn([e], cost))
                self.sums.append(self.sums[-1] + cost)
            elif self.turns:
                self.turns[-1].entries.append(e)
                self.turns[-1].cost += cost
                self.sums[-1] += cost
                changed = min(changed, len(self.turns) - 1)
            else:  # the rest of a turn none of which is held
                raise _Unknown
            self.last_seq = e.seq
            self.size += len(e.text) + ENTRY_OVERHEAD
        for rendering in self.renderings.values():
            k = max(changed, rendering.first)
            del rendering.messages[rendering.offset(k) :]
            del rendering.starts[k - rendering.first :]
            self._render_onto(rendering, k, len(self.turns))

    def prepend(self, turns: list[_Turn]) -> None:
        """Whole turns ending just before ``first_seq`` (oldest first) joined the copy."""
        if not turns:
            return
        self.turns[:0] = turns
        self.sums = [0]
        for turn in self.turns:
            self.sums.append(self.sums[-1] + turn.cost)
        self.size += sum(len(e.text) + ENTRY_OVERHEAD for t in turns for e in t.entries)
        for rendering in self.renderings.values():
            rendering.first += len(turns)

    # ---- reading ---------------------------------------------------------------------

    def covers(self, budget: int, after_seq: int) -> bool:
        """Whether the turns held settle a call with ``budget`` and ``after_seq``: they reach
        the start (or ``after_seq``), or the oldest of them already does not fit."""
        if self.first_seq <= after_seq + 1:
            return True
        return bool(self.turns) and self.sums[-1] > budget

    def messages_from(self, turn: int, *, tool_messages: bool) -> list[Message]:
        """The messages of ``turns[turn:]``, rendering what was not rendered yet."""
        rendering = self.renderings.get(tool_messages)
        if rendering is None:
            rendering = _Rendering(tool_messages, first=len(self.turns))
            self.renderings[tool_messages] = rendering
        if turn < rendering.first:
            older = _Rendering(tool_messages, first=turn)
            self._render_onto(older, turn, rendering.first)
            shift = len(older.messages)
            older.messages.extend(rendering.messages)
            older.starts.extend(s + shift for s in rendering.starts)
            rendering = self.renderings[tool_messages] = older
        return rendering.messages[rendering.offset(turn) :]

    def _render_onto(self, rendering: _Rendering, lo: int, hi: int) -> None:
        for turn in self.turns[lo:hi]:
            rendering.starts.append(len(rendering.messages))
            rendering.messages.extend(
                to_messages(turn.entries, tool_messages=rendering.tool_messages)
            )

    def fit(self, budget: int, after_seq: int, *, tool_messages: bool) -> Fitted:
        """The newest whole turns after ``after_seq`` that fit ``budget`` (see window.py)."""
        n = len(self.turns)
        if after_seq >= self.last_seq or n == 0:
            return Fitted([], 0, False, 0)
        whole = 0  # the oldest turn that may be taken whole
        partial: list[WindowEntry] = []  # the entries after after_seq of a turn it splits
        if after_seq > 0 and self.first_seq <= after_seq + 1:
            k = bisect.bisect_right(self.turns, after_seq + 1, key=lambda t: t.first_seq) - 1
            if self.turns[k].first_seq <= after_seq:
                partial = [e for e in self.turns[k].entries if e.seq > after_seq]
            whole = k + 1 if partial else k
        # The oldest turn i such that turns[i:] fit: sums[n] - sums[i] <= budget.
        first = bisect.bisect_left(self.sums, self.sums[n] - budget, whole, n)
        used = self.sums[n] - self.sums[first]
        messages = self.messages_from(first, tool_messages=tool_messages)
        if first > whole:
            return Fitted(messages, n - first, True, used)
        if partial:
            cost = sum(entry_cost(e) for e in partial)
            if cost > budget - used:
                return Fitted(messages, n - first, True, used)
            return Fitted(
                to_messages(partial, tool_messages=tool_messages) + messages,
                n - first + 1,
                False,
                used + cost,
            )
        return Fitted(messages, n - first, False, used)


class WindowCache:
    """Conversations' opened windows, least recently used dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._held = 0
        #: Entries this cache has had opened by the store, in all.
        self.entries_read = 0

    @property
    def held_bytes(self) -> int:
        """What the copies held count for (their text, plus a per-entry overhead)."""
        return self._held

    def __len__(self) -> int:
        return len(self._windows)

    async def fit(
        self,
        store: Store,
        sandbox_id: str,
        conversation_id: str,
        *,
        budget: int,
        tool_messages: bool,
        after_seq: int,
    ) -> Fitted:
        """The newest whole turns of the conversation that fit ``budget``, after ``after_seq``.

        The same turns, messages and figures as reading the window from the
        store directly; NotFound as ``Store.read_entries`` raises it.
        """
        key = (sandbox_id, conversation_id)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        self._windows.move_to_end(key)
        async with window.lock:
            try:
                for _ in range(_ATTEMPTS):
                    try:
                        return await self._fit(
                            window,
                            store,
                            sandbox_id,
                            conversation_id,
                            budget,
                            after_seq,
                            tool_messages,
                        )
                    except _Unknown:
                        window.reset()  # the window changed under the read: read it again
                raise StoreError(
                    f"the window of conversation {conversation_id} changed under each of "
                    f"{_ATTEMPTS} reads; retry the call"
                )
            except BaseException:
                # Half-applied reads are never trusted: the next use starts over.
                window.reset()
                raise
            finally:
                self._account(key, window)

    async def _fit(
        self,
        window: _Window,
        store: Store,
        sandbox_id: str,
        conversation_id: str,
        budget: int,
        after_seq: int,
        tool_messages: bool,
    ) -> Fitted:
        await self._refresh(window, store, sandbox_id, conversation_id)
        await self._extend(window, store, sandbox_id, conversation_id, budget, after_seq)
        return window.fit(budget, after_seq, tool_messages=tool_messages)

    async def _refresh(
        self, window: _Window, store: Store, sandbox_id: str, conversation_id: str
    ) -> None:
        """Bring the copy up to the store's window: the new entries, or nothing held."""
        if window.version is None:
            changes = await store.read_window_changes(
                sandbox_id, conversation_id, after_seq=0, limit=0
            )
            window.start(changes.version)
            return
        changes = await store.read_window_changes(
            sandbox_id, conversation_id, after_seq=window.last_seq, limit=MAX_DELTA
        )
        version = changes.version
        self.entries_read += len(changes.entries)
        if (
            (version.created_at, version.revision) != window.version
            or version.entry_count < window.last_seq
            or version.entry_count - window.last_seq > len(changes.entries)
        ):
            window.start(version)
            return
        try:
            window.append(changes.entries)
        except _Unknown:
            window.start(version)

    async def _extend(
        self,
        window: _Window,
        store: Store,
        sandbox_id: str,
        conversation_id: str,
        budget: int,
        after_seq: int,
    ) -> None:
        """Read back from the oldest turn held until the call's budget is settled."""
        before = window.first_seq
        limit = FIRST_PAGE
        pending: list[WindowEntry] = []  # newest first: a turn whose start is not read yet
        while not window.covers(budget, after_seq):
            page = await store.read_entries(
                sandbox_id, conversation_id, before_seq=before, limit=limit, newest_first=True
            )
            self.entries_read += len(page)
            older: list[_Turn] = []
            for entry in page:
                pending.append(entry)
                if entry.kind in TURN_STARTS:
                    older.append(_Turn(pending[::-1], sum(entry_cost(e) for e in pending)))
                    pending = []
            if len(page) < limit and pending:  # the window's start: entries before any turn
                older.append(_Turn(pending[::-1], sum(entry_cost(e) for e in pending)))
                pending = []
            window.prepend(older[::-1])
            if len(page) < limit:
                if window.first_seq != 1:  # entries went while reading: start over
                    raise _Unknown
                return
            before = page[-1].seq
            limit = min(limit * 4, MAX_PAGE)

    def _account(self, key: tuple[str, str], window: _Window) -> None:
        """Count the window's new size and drop the least recently used past the budget."""
        if self._windows.get(key) is not window:
            return  # dropped while in use: no longer counted
        self._held += window.size - window.accounted
        window.accounted = window.size
        while self._held > self.max_bytes and self._windows:
            _, oldest = self._windows.popitem(last=False)
            self._held -= oldest.accounted
            oldest.accounted = 0


_CACHES: weakref.WeakKeyDictionary[Store, WindowCache | None] = weakref.WeakKeyDictionary()


def configure_window_cache(store: Store, *, max_bytes: int) -> None:
    """Give ``store`` a window cache of ``max_bytes`` (0: none, every call reads the store)."""
    _CACHES[store] = WindowCache(max_bytes) if max_bytes > 0 else None


def window_cache(store: Store) -> WindowCache | None:
    """The store's window cache, made with the default budget on first use; None when off."""
    try:
        return _CACHES[store]
    except KeyError:
        cache = _CACHES[store] = WindowCache(int(DEFAULT_MIB * 2**20))
        return cache
