"""The embedded store's group commit: queued transactions share a COMMIT, each all or nothing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from interlockd.errors import FailedPrecondition
from interlockd.ids import new_id
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.store.sqlite.group_commit import MAX_MEMBERS
from tests.store.conformance.helpers import new_run, new_sandbox

if TYPE_CHECKING:
    from pathlib import Path


async def test_queued_transactions_share_commits_and_each_stays_all_or_nothing(
    sqlite_store: SqliteStore, db_path: Path, key_path: Path
) -> None:
    """50 simultaneous turn starts: fewer COMMITs than transactions; on a conversation
    with a turn running, each start fails alone and leaves nothing, the others are on disk."""
    sandbox = await new_sandbox(sqlite_store)
    busy = await sqlite_store.create_conversation(sandbox.id, "u")
    await sqlite_store.begin_run(new_run(sandbox.id, "u", busy.id))
    commits_before, committed_before = sqlite_store.commit_stats()

    async def start(i: int) -> str | None:
        on_busy = i % 5 == 0
        conversation = busy.id if on_busy else new_id("conv")
        try:
            run = await sqlite_store.begin_run(
                new_run(sandbox.id, "u" if on_busy else f"user-{i}", conversation),
                create_conversation=i % 5 != 0,
            )
        except FailedPrecondition:
            return None
        return run.id

    started = await asyncio.gather(*(start(i) for i in range(50)))
    admitted = {run_id for run_id in started if run_id is not None}
    assert len(admitted) == 40
    commits, committed = sqlite_store.commit_stats()
    assert committed - committed_before == 40
    assert commits - commits_before < 40

    await sqlite_store.close()
    reopened = SqliteStore(db_path, MasterKeyring.load_or_create(key_path))
    await reopened.open()
    try:
        for run_id in admitted:
            assert (await reopened.get_run(sandbox.id, run_id)).status == "running"
    finally:
        await reopened.close()


async def test_a_failed_transaction_in_a_group_does_not_undo_the_others(
    sqlite_store: SqliteStore,
) -> None:
    """Conversations created alongside a start refused for one turn per conversation all exist."""
    sandbox = await new_sandbox(sqlite_store)
    busy = await sqlite_store.create_conversation(sandbox.id, "u")
    await sqlite_store.begin_run(new_run(sandbox.id, "u", busy.id))

    async def refused() -> None:
        try:
            await sqlite_store.begin_run(new_run(sandbox.id, "u", busy.id))
        except FailedPrecondition:
            return
        raise AssertionError("a second turn on a busy conversation was admitted")

    created = await asyncio.gather(
        *(sqlite_store.create_conversation(sandbox.id, f"u{i}") for i in range(10)), refused()
    )
    for i, conversation in enumerate(created[:10]):
        assert conversation is not None
        found = await sqlite_store.get_conversation(sandbox.id, f"u{i}", conversation.id)
        assert found.id == conversation.id


async def test_a_group_commits_at_its_size_limit_even_with_more_queued(
    sqlite_store: SqliteStore,
) -> None:
    """Under a steady queue a group still commits: 300 simultaneous writes take at least
    300 / MAX_MEMBERS commits, so no transaction waits behind an unbounded group."""
    sandbox = await new_sandbox(sqlite_store)
    commits_before, committed_before = sqlite_store.commit_stats()
    await asyncio.gather(
        *(sqlite_store.create_conversation(sandbox.id, f"u{i}") for i in range(300))
    )
    commits, committed = sqlite_store.commit_stats()
    assert committed - committed_before == 300
    assert commits - commits_before >= 300 // MAX_MEMBERS
