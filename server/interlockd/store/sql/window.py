"""Transaction bodies that write a conversation's window, shared by conversations and runs.

Each runs inside the caller's write transaction (``db``): the caller owns
BEGIN/COMMIT, so they compose into one atomic, durable unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interlockd.errors import (
    AlreadyExists,
    NotFound,
)
from interlockd.store.base import (
    NewEntry,
)
from interlockd.store.crypto import (
    SandboxKeys,
    blind_terms,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
)
from interlockd.store.sql.rows import (
    blind_end_user,
    end_user_of,
    end_user_sealed,
    insert_sql,
)
from interlockd.store.sql.tables import NEW_ENTRIES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from interlockd.store.sql.core import Tx


#: Entry kinds whose text goes into the search index (summaries restate them).
INDEXED_KINDS = frozenset({"user", "assistant", "tool_call", "tool_result"})


async def insert_end_user(
    db: Tx, keys: SandboxKeys, sandbox_id: str, end_user_id: str, now: int
) -> str:
    """Make sure the end user has its row (its id sealed there); return its blind id."""
    blind = blind_end_user(keys, end_user_id)
    if not blind:
        return blind
    try:
        await db.execute(
            "INSERT INTO end_users (sandbox_id, id, id_sealed, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sandbox_id, id) DO NOTHING",
            (
                sandbox_id,
                blind,
                keys.seal(end_user_id, table="end_users", row=blind, column="id"),
                now,
            ),
        )
    except ConstraintViolation as exc:
        if exc.kind == "foreign_key":
            raise NotFound(f"sandbox {sandbox_id} not found") from None
        raise
    return blind


async def insert_conversation(
    db: Tx,
    keys: SandboxKeys,
    sandbox_id: str,
    end_user_id: str,
    conversation_id: str,
    now: int,
    *,
    entry_count: int = 0,
    provider: str = "",
    model: str = "",
) -> None:
    """Create the conversation (and its end user on first sight).

    ``entry_count`` > 0 creates it already holding the seqs 1..entry_count,
    for the caller to fill with :func:`_insert_entries` in the same transaction.
    """
    blind = await insert_end_user(db, keys, sandbox_id, end_user_id, now)
    try:
        await db.execute(
            "INSERT INTO conversations (id, sandbox_id, end_user_id, last_provider, last_model, "
            "entry_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, sandbox_id, blind, provider, model, entry_count, now, now),
        )
    except ConstraintViolation as exc:
        if exc.kind == "primary_key":
            raise AlreadyExists(
                f"conversation {conversation_id} already exists; a new conversation needs a new id"
            ) from None
        raise


async def append_to_window(
    db: Tx,
    keys: SandboxKeys,
    sandbox_id: str,
    conversation_id: str,
    entries: Sequence[NewEntry],
    provider: str,
    model: str,
    now: int,
) -> list[int] | None:
    """Append ``entries`` (non-empty); their seqs, or None if the conversation is not there."""
    # Reserve the seqs and touch the conversation in one statement.
    rows = list(
        await db.fetch(
            "UPDATE conversations SET entry_count = entry_count + :n, updated_at = :now, "
            "last_provider = CASE WHEN :provider = '' THEN last_provider ELSE :provider END, "
            "last_model = CASE WHEN :model = '' THEN last_model ELSE :model END "
            "WHERE id = :id AND sandbox_id = :sandbox_id "
            f"RETURNING entry_count, end_user_id, {end_user_sealed('conversations')}",
            {
                "n": len(entries),
                "now": now,
                "provider": provider,
                "model": model,
                "id": conversation_id,
                "sandbox_id": sandbox_id,
            },
        )
    )
    if not rows:
        return None
    last_seq = rows[0]["entry_count"]
    # Search terms are keyed by the end user's own id (crypto.end_user_index_key).
    end_user_id = end_user_of(keys, rows[0])
    first_seq = last_seq - len(entries) + 1
    await insert_entries(
        db, keys, sandbox_id, conversation_id, end_user_id, first_seq, entries, now
    )
    return list(range(first_seq, last_seq + 1))


async def insert_entries(
    db: Tx,
    keys: SandboxKeys,
    sandbox_id: str,
    conversation_id: str,
    end_user_id: str,
    first_seq: int,
    entries: Sequence[NewEntry],
    now: int,
) -> None:
    """Write entries, sealed, into seqs already reserved on the conversation, and index them."""
    index_key = keys.end_user_index_key(end_user_id)
    entry_rows: list[dict[str, Any]] = []
    term_rows: list[tuple[list[str], str, int]] = []
    for seq, entry in enumerate(entries, start=first_seq):
        row = NEW_ENTRIES.dump(
            entry, keys, conversation_id=conversation_id, sandbox_id=sandbox_id, seq=seq
        )
        entry_rows.append({**row, "created_at": now})
        if entry.kind in INDEXED_KINDS and (terms := blind_terms(index_key, entry.text)):
            term_rows.append((terms, conversation_id, seq))
    await db.executemany(insert_sql("entries", entry_rows[0]), entry_rows)
    if term_rows:
        await db.dialect.index_terms(db, term_rows)
