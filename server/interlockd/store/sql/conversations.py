"""Conversations: conversations, their window of entries, and search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlockd import ids
from interlockd.errors import (
    NotFound,
)
from interlockd.store.base import (
    Conversation,
    ConversationStore,
    NewEntry,
    Page,
    SearchHit,
    WindowChanges,
    WindowEntry,
    WindowVersion,
)
from interlockd.store.crypto import (
    blind_terms,
)
from interlockd.store.sql.core import (
    MAX_INT,
    SqlCore,
    check_page_size,
    make_page_token,
    read_page_token,
)
from interlockd.store.sql.rows import (
    blind_end_user,
    now_us,
    to_time,
)
from interlockd.store.sql.tables import (
    CONVERSATIONS,
    ENTRIES,
    ENTRY_COLUMNS_OF_E,
)
from interlockd.store.sql.window import (
    append_to_window,
    insert_conversation,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from interlockd.store.sql.rows import Row


class SqlConversations(SqlCore, ConversationStore):
    """Conversations, entries and the blind search index."""

    async def create_conversation(self, sandbox_id: str, end_user_id: str) -> Conversation:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        conversation_id = ids.new_id("conv")
        now = now_us()
        async with self._transaction() as db:
            await insert_conversation(db, keys, sandbox_id, end_user_id, conversation_id, now)
        return Conversation(conversation_id, sandbox_id, end_user_id, to_time(now), to_time(now))

    async def get_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> Conversation:
        rows = await self._fetch(
            f"SELECT {CONVERSATIONS.columns} FROM conversations "
            "WHERE id = ? AND sandbox_id = ? AND end_user_id = ?",
            (conversation_id, sandbox_id, await self._blind_end_user(sandbox_id, end_user_id)),
        )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return await self._conversation(sandbox_id, end_user_id, rows[0])

    async def _conversation(self, sandbox_id: str, end_user_id: str, row: Row) -> Conversation:
        # The caller named the end user: its own id, rather than opening the stored one.
        if row["title_sealed"] is None:
            return CONVERSATIONS.load(row, end_user_id=end_user_id)
        return await self._opened(
            sandbox_id, lambda keys: CONVERSATIONS.load(row, keys, end_user_id=end_user_id)
        )

    async def set_conversation_title(
        self, sandbox_id: str, end_user_id: str, conversation_id: str, title: str
    ) -> Conversation:
        sealed: bytes | None = None
        blind = await self._blind_end_user(sandbox_id, end_user_id)
        if title:
            try:
                keys = await self._sandbox_keys(sandbox_id)
            except NotFound:
                raise NotFound(f"conversation {conversation_id} not found") from None
            sealed = CONVERSATIONS.seal(keys, {"id": conversation_id}, "title", title, json=False)
        async with self._transaction() as db:
            rows = list(
                await db.fetch(
                    "UPDATE conversations SET title_sealed = ? "
                    "WHERE id = ? AND sandbox_id = ? AND end_user_id = ? "
                    f"RETURNING {CONVERSATIONS.columns}",
                    (sealed, conversation_id, sandbox_id, blind),
                )
            )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return await self._conversation(sandbox_id, end_user_id, rows[0])

    async def list_conversations(
        self, sandbox_id: str, end_user_id: str, page_size: int, page_token: str
    ) -> Page[Conversation]:
        size = check_page_size(page_size)
        before = read_page_token(page_token, "conversations") if page_token else (MAX_INT, "")
        rows = await self._fetch(
            f"SELECT {CONVERSATIONS.columns} FROM conversations "
            "WHERE sandbox_id = ? AND end_user_id = ? AND (updated_at, id) < (?, ?) "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (sandbox_id, await self._blind_end_user(sandbox_id, end_user_id), *before, size + 1),
        )
        page = rows[:size]
        if any(r["title_sealed"] is not None for r in page):
            items = await self._opened(
                sandbox_id,
                lambda keys: [CONVERSATIONS.load(r, keys, end_user_id=end_user_id) for r in page],
            )
        else:
            items = [CONVERSATIONS.load(r, end_user_id=end_user_id) for r in page]
        token = ""
        if len(rows) > size:
            last = page[-1]
            token = make_page_token("conversations", last["updated_at"], last["id"])
        return Page(items, token)

    async def delete_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> None:
        blind = await self._blind_end_user(sandbox_id, end_user_id)
        async with self._transaction() as db:
            # Entries cascade; their search rows go with them (trigger entries_drop_terms).
            changed = await db.execute_bulk(
                "DELETE FROM conversations WHERE id = ? AND sandbox_id = ? AND end_user_id = ?",
                (conversation_id, sandbox_id, blind),
            )
            if changed == 0:
                raise NotFound(f"conversation {conversation_id} not found")

    async def append_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        entries: Sequence[NewEntry],
        *,
        provider: str = "",
        model: str = "",
    ) -> list[int]:
        if not entries:
            return []
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            raise NotFound(f"conversation {conversation_id} not found") from None
        now = now_us()
        async with self._transaction() as db:
            seqs = await append_to_window(
                db, keys, sandbox_id, conversation_id, entries, provider, model, now
            )
            if seqs is None:
                raise NotFound(f"conversation {conversation_id} not found")
        return seqs

    async def read_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[WindowEntry]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        order = "DESC" if newest_first else "ASC"
        rows = await self._fetch(
            f"SELECT {ENTRIES.columns} FROM entries "
            "WHERE conversation_id = ? AND sandbox_id = ? AND seq > ? AND seq < ? "
            f"ORDER BY seq {order} LIMIT ?",
            (
                conversation_id,
                sandbox_id,
                0 if after_seq is None else after_seq,
                MAX_INT if before_seq is None else before_seq,
                limit,
            ),
        )
        if not rows:
            await self._require_conversation(sandbox_id, conversation_id)
            return []
        return await self._opened(sandbox_id, lambda keys: [ENTRIES.load(r, keys) for r in rows])

    async def read_window_changes(
        self, sandbox_id: str, conversation_id: str, *, after_seq: int, limit: int
    ) -> WindowChanges:
        if limit < 0:
            raise ValueError(f"limit must be at least 0, got {limit}")
        # One statement, so the version and the entries are one snapshot: the
        # conversation's row, joined to the entries after the seq (none: one
        # row of NULLs, which still carries the version).
        rows = await self._fetch(
            "SELECT c.entry_count AS window_entry_count, c.revision AS window_revision, "
            f"c.created_at AS window_created_at, {ENTRY_COLUMNS_OF_E} FROM conversations c "
            "LEFT JOIN entries e ON e.conversation_id = c.id AND e.seq > ? AND e.seq <= ? "
            "WHERE c.id = ? AND c.sandbox_id = ? ORDER BY e.seq LIMIT ?",
            (after_seq, after_seq + limit, conversation_id, sandbox_id, max(limit, 1)),
        )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        first = rows[0]
        version = WindowVersion(
            entry_count=first["window_entry_count"],
            revision=first["window_revision"],
            created_at=to_time(first["window_created_at"]),
        )
        found = [r for r in rows if r["seq"] is not None]
        if not found:
            return WindowChanges(version, [])
        entries = await self._opened(
            sandbox_id, lambda keys: [ENTRIES.load(r, keys) for r in found]
        )
        return WindowChanges(version, entries)

    async def search_entries(
        self,
        sandbox_id: str,
        end_user_id: str,
        query: str,
        *,
        limit: int = 10,
        exclude_conversation_id: str = "",
    ) -> list[SearchHit]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            return []
        terms = blind_terms(keys.end_user_index_key(end_user_id), query)
        if not terms:
            return []
        match_sql, match_params = self.dialect.search_sql(ENTRY_COLUMNS_OF_E, terms)
        rows = await self._fetch_scan(
            f"{match_sql} AND e.sandbox_id = ? AND c.sandbox_id = ? "
            f"AND c.end_user_id = ? AND e.conversation_id <> ? {self.dialect.search_order()} "
            "LIMIT ?",
            (
                *match_params,
                sandbox_id,
                sandbox_id,
                blind_end_user(keys, end_user_id),
                exclude_conversation_id,
                limit,
            ),
        )
        if not rows:
            return []
        entries = await self._opened(sandbox_id, lambda k: [ENTRIES.load(r, k) for r in rows])
        return [SearchHit(e.conversation_id, e) for e in entries]
