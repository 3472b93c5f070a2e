"""The ``ConversationStore`` contract: conversations private to their end user, the window
of entries (seqs, paging, all-or-nothing appends) and the search index."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import NotFound, StoreError
from interlockd.store.base import NewEntry
from tests.store.conformance.helpers import (
    entry,
    new_run,
    new_sandbox,
    start_in_new_conversation,
)

if TYPE_CHECKING:
    from interlockd.store.base import Store


# ---- conversations ----------------------------------------------------------------


async def test_conversation_is_private_to_its_end_user_and_sandbox(store: Store) -> None:
    """Another end user's or another sandbox's view of a conversation id is NotFound."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    assert conversation.id.startswith("conv_")
    assert await store.get_conversation(sandbox.id, "alice", conversation.id) == conversation
    for sandbox_id, user in ((sandbox.id, "bob"), (other.id, "alice")):
        with pytest.raises(NotFound):
            await store.get_conversation(sandbox_id, user, conversation.id)
        with pytest.raises(NotFound):
            await store.delete_conversation(sandbox_id, user, conversation.id)
        with pytest.raises(NotFound):
            await store.set_conversation_title(sandbox_id, user, conversation.id, "mine now")
    with pytest.raises(NotFound):
        await store.read_entries(other.id, conversation.id)
    with pytest.raises(NotFound):
        await store.append_entries(other.id, conversation.id, [entry("hi")])
    assert await store.find_tool_result(other.id, conversation.id, "call_1") is None


async def test_create_conversation_in_unknown_sandbox(store: Store) -> None:
    """A conversation can only be created in an existing sandbox."""
    with pytest.raises(NotFound):
        await store.create_conversation("sbx_nope", "alice")


async def test_conversation_title_round_trip(store: Store) -> None:
    """A title set on a conversation reads back from get and list, and can be cleared."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    titled = await store.set_conversation_title(sandbox.id, "alice", conversation.id, "Trip 🗺")
    assert titled.title == "Trip 🗺"
    assert (await store.get_conversation(sandbox.id, "alice", conversation.id)).title == "Trip 🗺"
    assert (await store.list_conversations(sandbox.id, "alice", 5, "")).items[0].title == "Trip 🗺"
    cleared = await store.set_conversation_title(sandbox.id, "alice", conversation.id, "")
    assert cleared.title == ""


async def test_list_conversations_most_recently_updated_first(store: Store) -> None:
    """The end user's conversations list newest activity first, paged, and nobody else's."""
    sandbox = await new_sandbox(store)
    first, second, third = [await store.create_conversation(sandbox.id, "alice") for _ in "abc"]
    await store.create_conversation(sandbox.id, "bob")
    await store.append_entries(sandbox.id, first.id, [entry("bump")])

    page1 = await store.list_conversations(sandbox.id, "alice", 2, "")
    page2 = await store.list_conversations(sandbox.id, "alice", 2, page1.next_page_token)
    assert [c.id for c in page1.items + page2.items] == [first.id, third.id, second.id]
    assert page1.next_page_token
    assert page2.next_page_token == ""
    assert page1.items[0].entry_count == 1


async def test_delete_conversation_removes_entries_and_search_rows(store: Store) -> None:
    """A deleted conversation is gone with its entries and search hits; others remain."""
    sandbox = await new_sandbox(store)
    doomed = await store.create_conversation(sandbox.id, "alice")
    kept = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(sandbox.id, doomed.id, [entry("zebra crossing")])
    await store.append_entries(sandbox.id, kept.id, [entry("zebra stripes")])

    await store.delete_conversation(sandbox.id, "alice", doomed.id)

    with pytest.raises(NotFound):
        await store.get_conversation(sandbox.id, "alice", doomed.id)
    with pytest.raises(NotFound):
        await store.read_entries(sandbox.id, doomed.id)
    hits = await store.search_entries(sandbox.id, "alice", "zebra")
    assert [h.conversation_id for h in hits] == [kept.id]
    with pytest.raises(NotFound):
        await store.delete_conversation(sandbox.id, "alice", doomed.id)


# ---- the window -------------------------------------------------------------------


async def test_append_entries_assigns_seqs_and_touches_the_conversation(store: Store) -> None:
    """Seqs run 1, 2, ... across appends; entry_count, updated_at and last model follow."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    assert await store.append_entries(
        sandbox.id,
        conversation.id,
        [entry("one"), entry("two", "assistant")],
        provider="p1",
        model="m1",
    ) == [1, 2]
    assert await store.append_entries(sandbox.id, conversation.id, [entry("three")]) == [3]
    assert await store.append_entries(sandbox.id, conversation.id, []) == []

    after = await store.get_conversation(sandbox.id, "alice", conversation.id)
    assert after.entry_count == 3
    assert after.updated_at > conversation.updated_at
    # An append without a provider keeps the last one known.
    assert (after.last_provider, after.last_model) == ("p1", "m1")


async def test_append_entries_is_all_or_nothing(store: Store) -> None:
    """If one entry of a batch can't be stored, none is, and seqs are not consumed."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    bad = NewEntry(kind="bogus", text="x", run_id="r", tokens=1)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await store.append_entries(sandbox.id, conversation.id, [entry("fine"), bad])
    assert await store.read_entries(sandbox.id, conversation.id) == []
    assert (await store.get_conversation(sandbox.id, "alice", conversation.id)).entry_count == 0
    assert await store.append_entries(sandbox.id, conversation.id, [entry("fine")]) == [1]


async def test_read_entries_round_trip_and_paging(store: Store) -> None:
    """Entries read back field for field, newest or oldest first, bounded by seq and limit."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id, conversation.id, [entry(f"message {i}") for i in range(1, 8)]
    )
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [
            entry(
                '{"q": 1}',
                "tool_call",
                run_id="run_2",
                provider="p",
                model="m",
                tool_call_id="call_1",
                tool_name="search",
                is_error=True,
            )
        ],
    )

    newest = await store.read_entries(sandbox.id, conversation.id, limit=3)
    assert [e.seq for e in newest] == [8, 7, 6]
    tool = newest[0]
    assert (tool.kind, tool.text, tool.run_id, tool.tokens) == ("tool_call", '{"q": 1}', "run_2", 2)
    assert (tool.provider, tool.model, tool.tool_call_id, tool.tool_name, tool.is_error) == (
        "p",
        "m",
        "call_1",
        "search",
        True,
    )
    assert tool.conversation_id == conversation.id
    assert tool.created_at.tzinfo is UTC

    back = await store.read_entries(sandbox.id, conversation.id, before_seq=6, limit=3)
    assert [e.seq for e in back] == [5, 4, 3]
    forward = await store.read_entries(
        sandbox.id, conversation.id, after_seq=2, limit=3, newest_first=False
    )
    assert [(e.seq, e.text) for e in forward] == [
        (3, "message 3"),
        (4, "message 4"),
        (5, "message 5"),
    ]
    window = await store.read_entries(
        sandbox.id, conversation.id, after_seq=2, before_seq=5, newest_first=False
    )
    assert [e.seq for e in window] == [3, 4]
    assert await store.read_entries(sandbox.id, conversation.id, before_seq=1) == []


async def test_concurrent_appends_get_distinct_consecutive_seqs(store: Store) -> None:
    """Appends racing on one conversation never share or skip a seq."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    results = await asyncio.gather(
        *(
            store.append_entries(sandbox.id, conversation.id, [entry(f"m{i}"), entry(f"n{i}")])
            for i in range(10)
        )
    )
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, 21))
    for seqs in results:
        assert seqs[1] == seqs[0] + 1


# ---- search -----------------------------------------------------------------------


async def test_search_finds_the_end_users_own_entries(store: Store) -> None:
    """Search matches whole words case-insensitively, needs every word, and stays private."""
    sandbox, other_sandbox = await new_sandbox(store), await new_sandbox(store)
    mine = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id,
        mine.id,
        [
            entry("My cat Ödön loves tuna"),
            entry("Tuna salad recipe", "assistant"),
            entry("summary mentions tuna and cat", "summary"),
        ],
    )
    bobs = await store.create_conversation(sandbox.id, "bob")
    await store.append_entries(sandbox.id, bobs.id, [entry("my cat loves tuna too")])
    elsewhere = await store.create_conversation(other_sandbox.id, "alice")
    await store.append_entries(other_sandbox.id, elsewhere.id, [entry("cat tuna cat tuna")])

    hits = await store.search_entries(sandbox.id, "alice", "TUNA cat")
    assert [(h.conversation_id, h.entry.text) for h in hits] == [
        (mine.id, "My cat Ödön loves tuna")
    ]
    assert len(await store.search_entries(sandbox.id, "alice", "ödön")) == 1
    assert {h.entry.seq for h in await store.search_entries(sandbox.id, "alice", "tuna")} == {1, 2}
    assert await store.search_entries(sandbox.id, "alice", "tun") == []
    assert await store.search_entries(sandbox.id, "alice", "a ?") == []
    assert await store.search_entries(sandbox.id, "carol", "tuna") == []
    assert len(await store.search_entries(sandbox.id, "bob", "tuna")) == 1
    assert (
        await store.search_entries(sandbox.id, "alice", "tuna", exclude_conversation_id=mine.id)
        == []
    )
    assert len(await store.search_entries(sandbox.id, "alice", "tuna", limit=1)) == 1


# ---- the window's version and what changed since a seq ---------------------------


async def test_read_window_changes_brings_the_version_and_the_entries_after_a_seq(
    store: Store,
) -> None:
    """read_window_changes gives the newest seq, the revision, the creation time and up to
    ``limit`` entries after the seq, oldest first; limit 0 the version alone."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    empty = await store.read_window_changes(sandbox.id, conversation.id, after_seq=0, limit=10)
    assert empty.entries == []
    assert (empty.version.entry_count, empty.version.revision) == (0, 0)
    assert empty.version.created_at == conversation.created_at
    await store.append_entries(sandbox.id, conversation.id, [entry(f"m{i}") for i in range(5)])
    changes = await store.read_window_changes(sandbox.id, conversation.id, after_seq=1, limit=3)
    assert [(e.seq, e.text) for e in changes.entries] == [(2, "m1"), (3, "m2"), (4, "m3")]
    assert changes.version.entry_count == 5
    alone = await store.read_window_changes(sandbox.id, conversation.id, after_seq=5, limit=0)
    assert (alone.entries, alone.version) == ([], changes.version)
    tail = await store.read_window_changes(sandbox.id, conversation.id, after_seq=4, limit=100)
    assert [e.text for e in tail.entries] == ["m4"]
    other = await new_sandbox(store)
    with pytest.raises(NotFound):
        await store.read_window_changes(other.id, conversation.id, after_seq=0, limit=1)
    await store.delete_conversation(sandbox.id, "alice", conversation.id)
    with pytest.raises(NotFound):
        await store.read_window_changes(sandbox.id, conversation.id, after_seq=0, limit=1)


async def test_a_withdrawn_message_moves_the_window_to_a_new_revision(store: Store) -> None:
    """Taking back a user message bumps the revision, so a copy holding the message it
    replaced (same seq, same entry_count once re-sent) can tell."""
    sandbox = await new_sandbox(store)
    first = await start_in_new_conversation(store, sandbox.id, "alice", "one")
    await store.finish_run(first.id, status="finished")
    held = await store.read_window_changes(sandbox.id, first.conversation_id, after_seq=0, limit=10)
    second = new_run(sandbox.id, "alice", first.conversation_id)
    await store.begin_run(second, entries=[entry("two", run_id=second.id)])
    await store.finish_run(second.id, status="failed", withdraw=True)
    third = new_run(sandbox.id, "alice", first.conversation_id)
    await store.begin_run(third, entries=[entry("two again", run_id=third.id)])
    now = await store.read_window_changes(sandbox.id, first.conversation_id, after_seq=1, limit=10)
    assert now.version.revision != held.version.revision
    assert now.version.entry_count == 2
    assert [e.text for e in now.entries] == ["two again"]
    # Appends and settlements leave the revision alone.
    await store.finish_run(
        third.id, status="finished", entries=[entry("ok", "assistant", run_id=third.id)]
    )
    after = await store.read_window_changes(sandbox.id, first.conversation_id, after_seq=3, limit=1)
    assert after.version.revision == now.version.revision
    assert after.version.entry_count == 3
