"""The ``Store`` contract, run against every implementation through the ``store`` fixture.

Only the public methods of :class:`interlockd.store.base.Store` are used here,
so the same tests hold a PostgreSQL store to the same behaviour.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from interlockd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StoreError,
)
from interlockd.ids import new_id
from interlockd.store.base import (
    Conversation,
    EntryKind,
    LedgerRow,
    NewEntry,
    NewRun,
    Quotas,
    Run,
    Sandbox,
)
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from interlockd.store.base import Store

_names = itertools.count(1)


async def new_sandbox(store: Store, quotas: Quotas | None = None) -> Sandbox:
    return await store.create_sandbox(f"sandbox-{next(_names)}", quotas or Quotas())


def entry(
    text: str,
    kind: EntryKind = "user",
    *,
    run_id: str = "run_x",
    provider: str = "",
    model: str = "",
    tool_call_id: str = "",
    tool_name: str = "",
    is_error: bool = False,
) -> NewEntry:
    return NewEntry(
        kind=kind,
        text=text,
        run_id=run_id,
        tokens=len(text.split()),
        provider=provider,
        model=model,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        is_error=is_error,
    )


def new_run(
    sandbox_id: str, end_user_id: str, conversation_id: str, request_id: str = ""
) -> NewRun:
    return NewRun(
        id=new_id("run"),
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        conversation_id=conversation_id,
        provider="fake",
        model="fake-model",
        request_id=request_id,
    )


async def start_run(store: Store, conversation: Conversation, request_id: str = "") -> Run:
    return await store.begin_run(
        new_run(conversation.sandbox_id, conversation.end_user_id, conversation.id, request_id)
    )


async def start_in_new_conversation(
    store: Store, sandbox_id: str, end_user_id: str, *texts: str, request_id: str = ""
) -> Run:
    """begin_run creating its conversation, with one user entry per text."""
    run = new_run(sandbox_id, end_user_id, new_id("conv"), request_id)
    return await store.begin_run(
        run, create_conversation=True, entries=[entry(t, run_id=run.id) for t in texts]
    )


async def assert_no_conversation(
    store: Store, sandbox_id: str, end_user_id: str, conversation_id: str
) -> None:
    """Nothing of ``conversation_id`` exists for the end user: no listing, no entries, no hits."""
    assert (await store.list_conversations(sandbox_id, end_user_id, 10, "")).items == []
    with pytest.raises(NotFound):
        await store.get_conversation(sandbox_id, end_user_id, conversation_id)
    with pytest.raises(NotFound):
        await store.read_entries(sandbox_id, conversation_id)
    assert await store.search_entries(sandbox_id, end_user_id, "hello") == []


# ---- operator keys ----------------------------------------------------------------


async def test_operator_keys(store: Store) -> None:
    """A fresh store has no operator key; added ones are recognised by hash, idempotently."""
    assert not await store.has_operator_key()
    await store.add_operator_key("hash-1")
    await store.add_operator_key("hash-1")
    assert await store.has_operator_key()
    assert await store.is_operator_key("hash-1")
    assert not await store.is_operator_key("hash-2")


# ---- sandboxes --------------------------------------------------------------------


async def test_create_and_get_sandbox(store: Store) -> None:
    """A created sandbox reads back with its name, quotas and a UTC creation time."""
    quotas = Quotas(max_concurrent_runs=3, max_concurrent_runs_per_end_user=2, max_tokens_per_day=9)
    created = await store.create_sandbox("acme", quotas)
    assert created.id.startswith("sbx_")
    assert created.created_at.tzinfo is UTC
    assert await store.get_sandbox(created.id) == created


async def test_sandbox_name_is_unique(store: Store) -> None:
    """A second sandbox with a taken name is refused with AlreadyExists."""
    await store.create_sandbox("acme", Quotas())
    with pytest.raises(AlreadyExists, match="acme"):
        await store.create_sandbox("acme", Quotas())


async def test_unknown_sandbox_is_not_found(store: Store) -> None:
    """Reading, changing or deleting an unknown sandbox raises NotFound."""
    with pytest.raises(NotFound):
        await store.get_sandbox("sbx_nope")
    with pytest.raises(NotFound):
        await store.set_quotas("sbx_nope", Quotas())
    with pytest.raises(NotFound):
        await store.delete_sandbox("sbx_nope")


async def test_list_sandboxes_pages_in_creation_order(store: Store) -> None:
    """Pages of sandboxes follow creation order, and the last page has no next token."""
    created = [await new_sandbox(store) for _ in range(5)]
    seen: list[Sandbox] = []
    token = ""
    pages = 0
    while True:
        page = await store.list_sandboxes(2, token)
        seen += page.items
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    assert pages == 3


async def test_list_sandboxes_rejects_foreign_page_token(store: Store) -> None:
    """A page token that no listing produced is refused, naming the field."""
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list_sandboxes(10, "not-a-token")


async def test_set_quotas_replaces_them(store: Store) -> None:
    """set_quotas replaces all three limits and returns the updated sandbox."""
    sandbox = await new_sandbox(store)
    quotas = Quotas(max_concurrent_runs=1, max_concurrent_runs_per_end_user=1, max_tokens_per_day=5)
    updated = await store.set_quotas(sandbox.id, quotas)
    assert updated.quotas == quotas
    assert (await store.get_sandbox(sandbox.id)).quotas == quotas


async def test_delete_sandbox_deletes_everything_in_it(store: Store) -> None:
    """After delete_sandbox nothing of it can be found, and other sandboxes are untouched."""
    doomed, kept = await new_sandbox(store), await new_sandbox(store)
    for sandbox in (doomed, kept):
        await store.create_api_key(sandbox.id, "k", f"hash-{sandbox.id}", "il_")
        conversation = await store.create_conversation(sandbox.id, "u-1")
        await store.append_entries(sandbox.id, conversation.id, [entry("remember the lighthouse")])
        run = await start_run(store, conversation, request_id="req-1")
        await store.finish_run(run.id, status="finished", usage=Usage(1, 1))

    await store.delete_sandbox(doomed.id)

    with pytest.raises(NotFound):
        await store.get_sandbox(doomed.id)
    assert await store.find_api_key(f"hash-{doomed.id}") is None
    assert await store.list_api_keys(doomed.id) == []
    assert (await store.list_conversations(doomed.id, "u-1", 10, "")).items == []
    assert await store.find_run_by_request_id(doomed.id, "req-1") is None
    assert await store.list_ledger(doomed.id) == []
    assert await store.search_entries(doomed.id, "u-1", "lighthouse") == []
    with pytest.raises(NotFound):
        await store.delete_sandbox(doomed.id)

    assert await store.find_api_key(f"hash-{kept.id}") is not None
    assert len(await store.search_entries(kept.id, "u-1", "lighthouse")) == 1


# ---- API keys ---------------------------------------------------------------------


async def test_api_key_create_find_list_revoke(store: Store) -> None:
    """A key is found by hash until revoked; revoked keys stay listed with revoked_at."""
    sandbox = await new_sandbox(store)
    first = await store.create_api_key(sandbox.id, "ci", "hash-a", "il_a")
    second = await store.create_api_key(sandbox.id, "dev", "hash-b", "il_b")
    assert first.id.startswith("key_")
    assert await store.find_api_key("hash-a") == first
    assert await store.find_api_key("hash-unknown") is None

    revoked = await store.revoke_api_key(sandbox.id, first.id)
    assert revoked.revoked_at is not None
    assert await store.find_api_key("hash-a") is None
    again = await store.revoke_api_key(sandbox.id, first.id)
    assert again.revoked_at == revoked.revoked_at
    assert [k.id for k in await store.list_api_keys(sandbox.id)] == [first.id, second.id]
    assert (await store.list_api_keys(sandbox.id))[0].revoked_at == revoked.revoked_at


async def test_api_key_scoping(store: Store) -> None:
    """Keys can't be created for an unknown sandbox or revoked through another sandbox."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    key = await store.create_api_key(sandbox.id, "ci", "hash-a", "il_a")
    with pytest.raises(NotFound):
        await store.create_api_key("sbx_nope", "ci", "hash-b", "il_b")
    with pytest.raises(NotFound):
        await store.revoke_api_key(other.id, key.id)
    assert await store.find_api_key("hash-a") == key


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


async def test_find_tool_result(store: Store) -> None:
    """The stored tool_result answering a call id is found in its conversation only."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    other = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [
            entry("{}", "tool_call", tool_call_id="call_1", tool_name="weather"),
            entry('{"temp": 21}', "tool_result", tool_call_id="call_1", tool_name="weather"),
        ],
    )
    found = await store.find_tool_result(sandbox.id, conversation.id, "call_1")
    assert found is not None
    assert (found.kind, found.text, found.seq) == ("tool_result", '{"temp": 21}', 2)
    assert await store.find_tool_result(sandbox.id, conversation.id, "call_2") is None
    assert await store.find_tool_result(sandbox.id, other.id, "call_1") is None


async def test_read_run_entries(store: Store) -> None:
    """A run's entries come back in order, without other runs' entries."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id,
        conversation.id,
        [
            entry("q1", run_id="run_a"),
            entry("a1", "assistant", run_id="run_a"),
            entry("q2", run_id="run_b"),
            entry("a2", "assistant", run_id="run_b"),
        ],
    )
    entries = await store.read_run_entries(sandbox.id, "run_b")
    assert [(e.seq, e.text) for e in entries] == [(3, "q2"), (4, "a2")]
    other = await new_sandbox(store)
    assert await store.read_run_entries(other.id, "run_b") == []


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


# ---- runs and admission -----------------------------------------------------------


async def test_begin_run_records_a_running_run(store: Store) -> None:
    """begin_run stores the run as running; it is found by id and by request id."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation, request_id="req-1")
    assert run.status == "running"
    assert run.finished_at is None
    assert await store.get_run(sandbox.id, run.id) == run
    assert await store.find_run_by_request_id(sandbox.id, "req-1") == run
    assert await store.find_run_by_request_id(sandbox.id, "req-2") is None
    other = await new_sandbox(store)
    with pytest.raises(NotFound):
        await store.get_run(other.id, run.id)
    assert await store.find_run_by_request_id(other.id, "req-1") is None


async def test_begin_run_refuses_a_busy_conversation(store: Store) -> None:
    """One turn at a time per conversation: a second begin_run fails until the first ends."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation)
    with pytest.raises(FailedPrecondition, match="already has a turn in progress"):
        await start_run(store, conversation)
    await store.finish_run(run.id, status="finished")
    assert (await start_run(store, conversation)).status == "running"


async def test_concurrent_begin_runs_admit_exactly_one(store: Store) -> None:
    """Of many begin_run calls racing on one conversation, exactly one is admitted."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    results = await asyncio.gather(
        *(start_run(store, conversation) for _ in range(8)), return_exceptions=True
    )
    assert sum(isinstance(r, Run) for r in results) == 1
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 7


async def test_begin_run_needs_the_end_users_conversation(store: Store) -> None:
    """A run can't start on another end user's conversation."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    with pytest.raises(NotFound):
        await store.begin_run(new_run(sandbox.id, "bob", conversation.id))


async def test_begin_run_in_unknown_sandbox(store: Store) -> None:
    """begin_run in an unknown sandbox is NotFound, with or without creating the conversation."""
    with pytest.raises(NotFound):
        await store.begin_run(new_run("sbx_nope", "alice", new_id("conv")))
    with pytest.raises(NotFound):
        await start_in_new_conversation(store, "sbx_nope", "alice")
    with pytest.raises(NotFound):
        await start_in_new_conversation(store, "sbx_nope", "alice", "hello")


async def test_begin_run_refuses_a_used_request_id(store: Store) -> None:
    """A request_id is single-use per sandbox (AlreadyExists), even after its run ended."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation, request_id="req-1")
    await store.finish_run(run.id, status="finished")
    later = await store.create_conversation(sandbox.id, "alice")
    with pytest.raises(AlreadyExists, match="req-1"):
        await start_run(store, later, request_id="req-1")
    elsewhere = await store.create_conversation(other.id, "alice")
    assert (await start_run(store, elsewhere, request_id="req-1")).request_id == "req-1"


async def test_quota_max_concurrent_runs(store: Store) -> None:
    """max_concurrent_runs counts every running run of the sandbox."""
    sandbox = await new_sandbox(store, Quotas(max_concurrent_runs=2))
    conversations = [await store.create_conversation(sandbox.id, u) for u in ("a", "b", "c")]
    first = await start_run(store, conversations[0])
    await start_run(store, conversations[1])
    with pytest.raises(ResourceExhausted, match=r"max_concurrent_runs quota is 2"):
        await start_run(store, conversations[2])
    await store.finish_run(first.id, status="cancelled")
    await start_run(store, conversations[2])


async def test_quota_max_concurrent_runs_per_end_user(store: Store) -> None:
    """max_concurrent_runs_per_end_user counts only that end user's running runs."""
    sandbox = await new_sandbox(store, Quotas(max_concurrent_runs_per_end_user=1))
    alice_1 = await store.create_conversation(sandbox.id, "alice")
    alice_2 = await store.create_conversation(sandbox.id, "alice")
    bob = await store.create_conversation(sandbox.id, "bob")
    await start_run(store, alice_1)
    with pytest.raises(ResourceExhausted, match=r"max_concurrent_runs_per_end_user quota is 1"):
        await start_run(store, alice_2)
    await start_run(store, bob)


async def test_quota_max_tokens_per_day(store: Store) -> None:
    """max_tokens_per_day refuses new runs once finished runs used the day's tokens."""
    sandbox = await new_sandbox(store, Quotas(max_tokens_per_day=100))
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation)
    await store.finish_run(
        run.id, status="finished", usage=Usage(input_tokens=60, output_tokens=40)
    )
    with pytest.raises(
        ResourceExhausted, match=r"used 100 tokens today.*max_tokens_per_day quota is 100"
    ):
        await start_run(store, conversation)
    await store.set_quotas(sandbox.id, Quotas(max_tokens_per_day=101))
    assert (await start_run(store, conversation)).status == "running"


async def test_zero_quotas_mean_unlimited(store: Store) -> None:
    """With all quotas at zero, many runs start at once."""
    sandbox = await new_sandbox(store)
    for _ in range(5):
        conversation = await store.create_conversation(sandbox.id, "alice")
        await start_run(store, conversation)


async def test_set_quotas_apply_to_the_next_begin_run(store: Store) -> None:
    """begin_run admits by the sandbox's quotas as set_quotas last left them, not as created."""
    sandbox = await new_sandbox(store)
    conversations = [await store.create_conversation(sandbox.id, "alice") for _ in range(3)]
    await start_run(store, conversations[0])
    await store.set_quotas(sandbox.id, Quotas(max_concurrent_runs=1))
    with pytest.raises(ResourceExhausted, match=r"has 1 runs in progress.*quota is 1"):
        await start_run(store, conversations[1])
    await store.set_quotas(sandbox.id, Quotas(max_concurrent_runs_per_end_user=2))
    await start_run(store, conversations[1])
    with pytest.raises(ResourceExhausted, match=r"max_concurrent_runs_per_end_user quota is 2"):
        await start_run(store, conversations[2])
    await store.set_quotas(sandbox.id, Quotas())
    await start_run(store, conversations[2])


# ---- begin_run creating the conversation and appending entries ----------------------


async def test_begin_run_creates_the_conversation_with_its_entries(store: Store) -> None:
    """create_conversation + entries: one call makes the conversation, the run and seqs 1..n."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(
        store, sandbox.id, "alice", "hello lighthouse keeper", "second message", request_id="r-1"
    )
    assert run.status == "running"
    assert await store.find_run_by_request_id(sandbox.id, "r-1") == run

    conversation = await store.get_conversation(sandbox.id, "alice", run.conversation_id)
    assert (conversation.id, conversation.sandbox_id, conversation.end_user_id) == (
        run.conversation_id,
        sandbox.id,
        "alice",
    )
    assert conversation.entry_count == 2
    assert (conversation.last_provider, conversation.last_model) == ("fake", "fake-model")
    assert conversation.title == ""
    listed = await store.list_conversations(sandbox.id, "alice", 10, "")
    assert listed.items == [conversation]

    entries = await store.read_entries(sandbox.id, run.conversation_id, newest_first=False)
    assert [(e.seq, e.kind, e.text, e.run_id) for e in entries] == [
        (1, "user", "hello lighthouse keeper", run.id),
        (2, "user", "second message", run.id),
    ]
    assert await store.read_run_entries(sandbox.id, run.id) == entries
    hits = await store.search_entries(sandbox.id, "alice", "lighthouse")
    assert [(h.conversation_id, h.entry.seq) for h in hits] == [(run.conversation_id, 1)]

    # The window carries on from there.
    assert await store.append_entries(sandbox.id, run.conversation_id, [entry("third")]) == [3]


async def test_begin_run_can_create_an_empty_conversation(store: Store) -> None:
    """create_conversation without entries makes an empty conversation, like create_conversation."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice")
    conversation = await store.get_conversation(sandbox.id, "alice", run.conversation_id)
    assert (conversation.entry_count, conversation.last_provider, conversation.last_model) == (
        0,
        "",
        "",
    )
    assert conversation.created_at == conversation.updated_at
    assert await store.read_entries(sandbox.id, run.conversation_id) == []


async def test_begin_run_appends_entries_to_an_existing_conversation(store: Store) -> None:
    """entries on an existing conversation continue its seqs and record the run's model."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    await store.append_entries(
        sandbox.id, conversation.id, [entry("one"), entry("two", "assistant")], provider="p"
    )
    run = new_run(sandbox.id, "alice", conversation.id)
    await store.begin_run(run, entries=[entry("three hello", run_id=run.id)])
    after = await store.get_conversation(sandbox.id, "alice", conversation.id)
    assert after.entry_count == 3
    assert after.updated_at > conversation.updated_at
    assert (after.last_provider, after.last_model) == ("fake", "fake-model")
    assert [(e.seq, e.text) for e in await store.read_run_entries(sandbox.id, run.id)] == [
        (3, "three hello")
    ]
    assert len(await store.search_entries(sandbox.id, "alice", "hello")) == 1


async def test_refused_begin_run_on_a_busy_conversation_appends_nothing(store: Store) -> None:
    """A begin_run refused as busy leaves the conversation's entries and count as they were."""
    sandbox = await new_sandbox(store)
    first = await start_in_new_conversation(store, sandbox.id, "alice", "first")
    refused = new_run(sandbox.id, "alice", first.conversation_id)
    with pytest.raises(FailedPrecondition, match="already has a turn in progress"):
        await store.begin_run(refused, entries=[entry("hello again", run_id=refused.id)])
    conversation = await store.get_conversation(sandbox.id, "alice", first.conversation_id)
    assert conversation.entry_count == 1
    assert [e.text for e in await store.read_entries(sandbox.id, conversation.id)] == ["first"]
    assert await store.search_entries(sandbox.id, "alice", "hello") == []
    with pytest.raises(NotFound):
        await store.get_run(sandbox.id, refused.id)


async def test_refused_begin_run_over_quota_stores_nothing(store: Store) -> None:
    """A begin_run refused by a quota creates no conversation and appends no entries."""
    sandbox = await new_sandbox(store, Quotas(max_concurrent_runs=1))
    await start_in_new_conversation(store, sandbox.id, "alice")
    run = new_run(sandbox.id, "bob", new_id("conv"))
    with pytest.raises(ResourceExhausted, match=r"max_concurrent_runs quota is 1"):
        await store.begin_run(
            run, create_conversation=True, entries=[entry("hello there", run_id=run.id)]
        )
    await assert_no_conversation(store, sandbox.id, "bob", run.conversation_id)
    with pytest.raises(NotFound):
        await store.get_run(sandbox.id, run.id)


async def test_refused_begin_run_with_a_used_request_id_stores_nothing(store: Store) -> None:
    """A begin_run refused for a used request_id creates no conversation and no entries."""
    sandbox = await new_sandbox(store)
    await start_in_new_conversation(store, sandbox.id, "alice", request_id="req-1")
    run = new_run(sandbox.id, "bob", new_id("conv"), request_id="req-1")
    with pytest.raises(AlreadyExists, match="req-1"):
        await store.begin_run(
            run, create_conversation=True, entries=[entry("hello there", run_id=run.id)]
        )
    await assert_no_conversation(store, sandbox.id, "bob", run.conversation_id)


async def test_refused_begin_run_on_a_foreign_conversation_stores_nothing(store: Store) -> None:
    """Another end user's conversation is NotFound to begin_run, and gets none of its entries."""
    sandbox = await new_sandbox(store)
    alice = await start_in_new_conversation(store, sandbox.id, "alice", "mine")
    await store.finish_run(alice.id, status="finished")
    run = new_run(sandbox.id, "bob", alice.conversation_id)
    with pytest.raises(NotFound):
        await store.begin_run(run, entries=[entry("hello there", run_id=run.id)])
    assert (await store.list_conversations(sandbox.id, "bob", 10, "")).items == []
    conversation = await store.get_conversation(sandbox.id, "alice", alice.conversation_id)
    assert conversation.entry_count == 1
    assert [e.text for e in await store.read_entries(sandbox.id, conversation.id)] == ["mine"]
    assert await store.search_entries(sandbox.id, "alice", "hello") == []


async def test_begin_run_cannot_create_a_conversation_that_exists(store: Store) -> None:
    """create_conversation with a taken conversation id is AlreadyExists and changes nothing."""
    sandbox = await new_sandbox(store)
    alice = await store.create_conversation(sandbox.id, "alice")
    run = new_run(sandbox.id, "bob", alice.id)
    with pytest.raises(AlreadyExists, match=alice.id):
        await store.begin_run(
            run, create_conversation=True, entries=[entry("hello there", run_id=run.id)]
        )
    assert await store.get_conversation(sandbox.id, "alice", alice.id) == alice
    assert (await store.list_conversations(sandbox.id, "bob", 10, "")).items == []
    with pytest.raises(NotFound):
        await store.get_run(sandbox.id, run.id)


async def test_concurrent_begin_runs_creating_conversations_respect_quotas(store: Store) -> None:
    """Racing begin_runs that each create a conversation: the admitted ones alone leave one."""
    sandbox = await new_sandbox(store, Quotas(max_concurrent_runs=2))
    results = await asyncio.gather(
        *(start_in_new_conversation(store, sandbox.id, "alice", f"hello {i}") for i in range(8)),
        return_exceptions=True,
    )
    admitted = [r for r in results if isinstance(r, Run)]
    assert len(admitted) == 2
    assert sum(isinstance(r, ResourceExhausted) for r in results) == 6
    listed = await store.list_conversations(sandbox.id, "alice", 10, "")
    assert sorted(c.id for c in listed.items) == sorted(r.conversation_id for r in admitted)
    assert len(await store.search_entries(sandbox.id, "alice", "hello")) == 2


async def test_entries_of_another_run_are_refused(store: Store) -> None:
    """begin_run and finish_run refuse entries recorded for another run, storing nothing."""
    sandbox = await new_sandbox(store)
    run = new_run(sandbox.id, "alice", new_id("conv"))
    with pytest.raises(ValueError, match="does not belong"):
        await store.begin_run(
            run, create_conversation=True, entries=[entry("hello", run_id="run_other")]
        )
    await assert_no_conversation(store, sandbox.id, "alice", run.conversation_id)
    started = await start_in_new_conversation(store, sandbox.id, "alice")
    with pytest.raises(ValueError, match="does not belong"):
        await store.finish_run(
            started.id, status="finished", entries=[entry("hello", run_id="run_other")]
        )
    assert (await store.get_run(sandbox.id, started.id)).status == "running"
    assert await store.read_entries(sandbox.id, started.conversation_id) == []


# ---- finishing, the ledger, interruption ------------------------------------------


async def test_finish_run_records_outcome_and_ledger(store: Store) -> None:
    """finish_run stores status, usage and cost and writes the ledger rows with it."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation)
    usage = Usage(10, 20, 3, 4, 5)
    row = LedgerRow(
        run.id, sandbox.id, "alice", "tokens", "fake", "fake-model", usage, 0.0125, "2026-01"
    )
    finished = await store.finish_run(
        run.id,
        status="failed",
        stop_reason="",
        error_code="UNAVAILABLE",
        error_message="provider down",
        usage=usage,
        cost_usd=0.0125,
        ledger=[row],
    )
    assert (finished.status, finished.error_code, finished.error_message) == (
        "failed",
        "UNAVAILABLE",
        "provider down",
    )
    assert finished.usage == usage
    assert finished.cost_usd == 0.0125
    assert finished.finished_at is not None
    assert finished.finished_at >= finished.started_at
    assert await store.get_run(sandbox.id, run.id) == finished
    assert await store.list_ledger(sandbox.id) == [row]
    assert await store.list_ledger(sandbox.id, run.id) == [row]
    assert await store.list_ledger(sandbox.id, "run_other") == []


async def test_finish_run_happens_once(store: Store) -> None:
    """A run is finished exactly once; unknown runs are NotFound."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await start_run(store, conversation)
    await store.finish_run(run.id, status="finished")
    with pytest.raises(FailedPrecondition, match="already ended"):
        await store.finish_run(run.id, status="failed")
    with pytest.raises(NotFound):
        await store.finish_run("run_nope", status="finished")


async def test_finish_run_appends_its_entries(store: Store) -> None:
    """finish_run's entries join the run's conversation in the closing transaction, as its."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "what is a quokka")
    # Another model wrote in between (e.g. a tool result's recorder): the run's wins at the end.
    await store.append_entries(
        sandbox.id,
        run.conversation_id,
        [entry("{}", "tool_result", run_id=run.id)],
        provider="p2",
        model="m2",
    )
    usage = Usage(3, 4)
    row = LedgerRow(run.id, sandbox.id, "alice", "tokens", "fake", "fake-model", usage, 0.5, "v")
    finished = await store.finish_run(
        run.id,
        status="finished",
        usage=usage,
        ledger=[row],
        entries=[entry("A small marsupial.", "assistant", run_id=run.id)],
    )
    assert finished.status == "finished"
    assert await store.list_ledger(sandbox.id, run.id) == [row]
    conversation = await store.get_conversation(sandbox.id, "alice", run.conversation_id)
    assert conversation.entry_count == 3
    assert (conversation.last_provider, conversation.last_model) == ("fake", "fake-model")
    entries = await store.read_run_entries(sandbox.id, run.id)
    assert [(e.seq, e.kind, e.text) for e in entries] == [
        (1, "user", "what is a quokka"),
        (2, "tool_result", "{}"),
        (3, "assistant", "A small marsupial."),
    ]
    hits = await store.search_entries(sandbox.id, "alice", "marsupial")
    assert [h.entry.seq for h in hits] == [3]


async def test_refused_finish_run_appends_nothing(store: Store) -> None:
    """A finish_run refused because the run already ended appends no entries and no ledger."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "question")
    first = await store.finish_run(
        run.id, status="finished", entries=[entry("answer", "assistant", run_id=run.id)]
    )
    usage = Usage(1, 1)
    row = LedgerRow(run.id, sandbox.id, "alice", "tokens", "fake", "fake-model", usage, 0.1, "v")
    with pytest.raises(FailedPrecondition, match="already ended"):
        await store.finish_run(
            run.id,
            status="failed",
            usage=usage,
            ledger=[row],
            entries=[entry("late hello", "assistant", run_id=run.id)],
        )
    assert await store.get_run(sandbox.id, run.id) == first
    assert await store.list_ledger(sandbox.id) == []
    entries = await store.read_entries(sandbox.id, run.conversation_id, newest_first=False)
    assert [e.text for e in entries] == ["question", "answer"]
    assert await store.search_entries(sandbox.id, "alice", "hello") == []


async def test_finish_run_closes_even_if_the_conversation_is_gone(store: Store) -> None:
    """Deleting the conversation mid-run drops finish_run's entries but the run still closes."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "question")
    await store.delete_conversation(sandbox.id, "alice", run.conversation_id)
    finished = await store.finish_run(
        run.id, status="finished", entries=[entry("answer", "assistant", run_id=run.id)]
    )
    assert finished.status == "finished"
    assert await store.read_run_entries(sandbox.id, run.id) == []
    await assert_no_conversation(store, sandbox.id, "alice", run.conversation_id)


async def test_interrupt_running_runs(store: Store) -> None:
    """Runs left running are marked interrupted (and counted); their conversations free up."""
    sandbox = await new_sandbox(store)
    conversations = [await store.create_conversation(sandbox.id, "alice") for _ in range(3)]
    runs = [await start_run(store, c) for c in conversations]
    await store.finish_run(runs[0].id, status="finished")

    assert await store.interrupt_running_runs() == 2
    assert await store.interrupt_running_runs() == 0
    statuses = [(await store.get_run(sandbox.id, r.id)).status for r in runs]
    assert statuses == ["finished", "interrupted", "interrupted"]
    assert (await store.get_run(sandbox.id, runs[1].id)).finished_at is not None
    await start_run(store, conversations[1])


# ---- provider sessions ------------------------------------------------------------


async def test_provider_session_set_get_upsert_clear(store: Store) -> None:
    """A provider session reads back per provider, is replaced by the next set, and clears."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None

    first = await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 2)
    assert (first.provider, first.session_id, first.through_seq) == ("anthropic", "sesn_1", 2)
    assert first.updated_at.tzinfo == UTC
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") == first
    await store.set_provider_session(sandbox.id, conversation.id, "google", "sessions/9", 1)

    second = await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_2", 5)
    assert (second.session_id, second.through_seq) == ("sesn_2", 5)
    assert second.updated_at >= first.updated_at
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") == second

    await store.clear_provider_session(sandbox.id, conversation.id, "anthropic")
    await store.clear_provider_session(sandbox.id, conversation.id, "anthropic")
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None
    google = await store.get_provider_session(sandbox.id, conversation.id, "google")
    assert google is not None
    assert (google.session_id, google.through_seq) == ("sessions/9", 1)


async def test_finish_run_settles_the_provider_session_in_the_same_call(store: Store) -> None:
    """finish_run records the run's provider session through the newest seq, '' forgets it, and
    None leaves it alone."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hello")
    await store.finish_run(
        run.id,
        status="finished",
        entries=[entry("hi", "assistant", run_id=run.id)],
        provider_session="sesn_1",
    )
    session = await store.get_provider_session(sandbox.id, run.conversation_id, run.provider)
    assert session is not None
    assert (session.session_id, session.through_seq) == ("sesn_1", 2)

    conversation = await store.get_conversation(sandbox.id, "alice", run.conversation_id)
    second = await start_run(store, conversation)
    await store.finish_run(second.id, status="finished")
    assert (
        await store.get_provider_session(sandbox.id, run.conversation_id, run.provider) == session
    )

    third = await start_run(store, conversation)
    await store.finish_run(third.id, status="failed", provider_session="")
    assert await store.get_provider_session(sandbox.id, run.conversation_id, run.provider) is None


async def test_finish_run_settles_no_session_for_a_deleted_conversation(store: Store) -> None:
    """A run whose conversation was deleted still closes, and leaves no provider session."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hello")
    await store.delete_conversation(sandbox.id, "alice", run.conversation_id)
    finished = await store.finish_run(run.id, status="finished", provider_session="sesn_1")
    assert finished.status == "finished"
    assert await store.get_provider_session(sandbox.id, run.conversation_id, run.provider) is None


async def test_provider_session_refuses_a_negative_through_seq(store: Store) -> None:
    """through_seq counts window entries, so a negative one is a ValueError and stores nothing."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    with pytest.raises(ValueError, match="through_seq"):
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", -1)
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None


async def test_provider_session_is_private_to_its_sandbox(store: Store) -> None:
    """Through another sandbox a conversation's session is None and cannot be set or cleared."""
    mine, theirs = await new_sandbox(store), await new_sandbox(store)
    conversation = await store.create_conversation(mine.id, "alice")
    await store.set_provider_session(mine.id, conversation.id, "anthropic", "sesn_mine", 1)

    assert await store.get_provider_session(theirs.id, conversation.id, "anthropic") is None
    with pytest.raises(NotFound):
        await store.set_provider_session(theirs.id, conversation.id, "anthropic", "sesn_x", 1)
    with pytest.raises(NotFound):
        await store.set_provider_session("sbx_missing", conversation.id, "anthropic", "s", 1)
    with pytest.raises(NotFound):
        await store.set_provider_session(mine.id, "conv_missing", "anthropic", "sesn_x", 1)
    await store.clear_provider_session(theirs.id, conversation.id, "anthropic")

    kept = await store.get_provider_session(mine.id, conversation.id, "anthropic")
    assert kept is not None
    assert kept.session_id == "sesn_mine"


async def test_provider_sessions_go_with_their_conversation(store: Store) -> None:
    """Deleting a conversation deletes its provider sessions, and no other conversation's."""
    sandbox = await new_sandbox(store)
    doomed = await store.create_conversation(sandbox.id, "alice")
    kept = await store.create_conversation(sandbox.id, "alice")
    for conversation in (doomed, kept):
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 0)

    await store.delete_conversation(sandbox.id, "alice", doomed.id)

    assert await store.get_provider_session(sandbox.id, doomed.id, "anthropic") is None
    with pytest.raises(NotFound):
        await store.set_provider_session(sandbox.id, doomed.id, "anthropic", "sesn_2", 0)
    assert await store.get_provider_session(sandbox.id, kept.id, "anthropic") is not None


# ---- provider resources -----------------------------------------------------------


async def test_put_provider_resource_keeps_the_first_id(store: Store) -> None:
    """put_provider_resource inserts if absent and otherwise returns the id stored first."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    assert await store.get_provider_resource(sandbox.id, *key) is None

    assert await store.put_provider_resource(sandbox.id, *key, "agent_1") == "agent_1"
    assert await store.put_provider_resource(sandbox.id, *key, "agent_2") == "agent_1"
    assert await store.get_provider_resource(sandbox.id, *key) == "agent_1"

    # Every part of the key counts, the sandbox included.
    assert await store.get_provider_resource(other.id, *key) is None
    assert await store.get_provider_resource(sandbox.id, "anthropic", "agent", "fp-2") is None
    assert await store.get_provider_resource(sandbox.id, "anthropic", "environment", "fp-1") is None
    assert await store.get_provider_resource(sandbox.id, "google", "agent", "fp-1") is None
    assert await store.put_provider_resource(other.id, *key, "agent_3") == "agent_3"
    with pytest.raises(NotFound):
        await store.put_provider_resource("sbx_missing", *key, "agent_4")


async def test_delete_provider_resource_only_forgets_the_named_id(store: Store) -> None:
    """delete_provider_resource drops the row only while it still holds the given id."""
    sandbox = await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    await store.put_provider_resource(sandbox.id, *key, "agent_1")
    await store.delete_provider_resource(sandbox.id, *key, "agent_other")
    assert await store.get_provider_resource(sandbox.id, *key) == "agent_1"
    await store.delete_provider_resource(sandbox.id, *key, "agent_1")
    assert await store.get_provider_resource(sandbox.id, *key) is None
    await store.delete_provider_resource(sandbox.id, *key, "agent_1")  # idempotent
    assert await store.put_provider_resource(sandbox.id, *key, "agent_2") == "agent_2"


async def test_provider_resource_lock_serialises_check_then_create(store: Store) -> None:
    """Twenty concurrent check-then-create callers under the lock create exactly one resource."""
    sandbox = await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    creates = 0

    async def ensure_agent() -> str:
        nonlocal creates
        async with store.provider_resource_lock(sandbox.id, *key):
            found = await store.get_provider_resource(sandbox.id, *key)
            if found is not None:
                return found
            creates += 1
            created = f"agent_{creates}"
            await asyncio.sleep(0.01)  # the provider's create call: the others run meanwhile
            return await store.put_provider_resource(sandbox.id, *key, created)

    resource_ids = await asyncio.gather(*(ensure_agent() for _ in range(20)))

    assert creates == 1
    assert resource_ids == ["agent_1"] * 20


async def test_provider_resource_locks_of_different_keys_are_independent(store: Store) -> None:
    """While one key's lock is held, other keys lock at once and the same key waits."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store.provider_resource_lock(sandbox.id, "anthropic", "agent", "fp-1"):
            held.set()
            await release.wait()

    async def take(sandbox_id: str, provider: str, kind: str, fingerprint: str) -> None:
        async with store.provider_resource_lock(sandbox_id, provider, kind, fingerprint):
            pass

    holder = asyncio.create_task(hold())
    await held.wait()
    async with asyncio.timeout(5):
        await take(sandbox.id, "anthropic", "agent", "fp-2")
        await take(sandbox.id, "anthropic", "environment", "fp-1")
        await take(sandbox.id, "google", "agent", "fp-1")
        await take(other.id, "anthropic", "agent", "fp-1")
    same_key = asyncio.create_task(take(sandbox.id, "anthropic", "agent", "fp-1"))
    await asyncio.sleep(0.05)
    assert not same_key.done()

    release.set()
    async with asyncio.timeout(5):
        await holder
        await same_key


async def test_provider_state_goes_with_the_sandbox(store: Store) -> None:
    """Deleting a sandbox deletes its provider sessions, resources and secrets, no one else's."""
    doomed, kept = await new_sandbox(store), await new_sandbox(store)
    conversations = {}
    for sandbox in (doomed, kept):
        conversation = await store.create_conversation(sandbox.id, "alice")
        conversations[sandbox.id] = conversation.id
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 0)
        await store.put_provider_resource(sandbox.id, "anthropic", "agent", "fp-1", "agent_1")
        await store.set_secret(sandbox.id, "anthropic_api_key", f"sk-{sandbox.id}")

    await store.delete_sandbox(doomed.id)

    doomed_conversation = conversations[doomed.id]
    assert await store.get_provider_session(doomed.id, doomed_conversation, "anthropic") is None
    assert await store.get_provider_resource(doomed.id, "anthropic", "agent", "fp-1") is None
    assert await store.get_secret(doomed.id, "anthropic_api_key") is None
    assert await store.list_secret_names(doomed.id) == []

    assert await store.get_provider_session(kept.id, conversations[kept.id], "anthropic")
    assert await store.get_provider_resource(kept.id, "anthropic", "agent", "fp-1") == "agent_1"
    assert await store.get_secret(kept.id, "anthropic_api_key") == f"sk-{kept.id}"


# ---- sandbox secrets --------------------------------------------------------------


async def test_secret_round_trip(store: Store) -> None:
    """A secret reads back, is replaced by the next set, and only names are listed, sorted."""
    sandbox = await new_sandbox(store)
    assert await store.get_secret(sandbox.id, "anthropic_api_key") is None
    assert await store.list_secret_names(sandbox.id) == []

    await store.set_secret(sandbox.id, "anthropic_api_key", "sk-ant-1")
    await store.set_secret(sandbox.id, "google.project-id", "proj-42")
    await store.set_secret(sandbox.id, "empty", "")
    assert await store.get_secret(sandbox.id, "anthropic_api_key") == "sk-ant-1"
    await store.set_secret(sandbox.id, "anthropic_api_key", "sk-ant-2 ✓")

    assert await store.get_secret(sandbox.id, "anthropic_api_key") == "sk-ant-2 ✓"
    assert await store.get_secret(sandbox.id, "google.project-id") == "proj-42"
    assert await store.get_secret(sandbox.id, "empty") == ""
    assert await store.list_secret_names(sandbox.id) == [
        "anthropic_api_key",
        "empty",
        "google.project-id",
    ]


async def test_secrets_are_private_to_their_sandbox(store: Store) -> None:
    """A sandbox sees, lists and deletes only its own secrets; unknown sandboxes hold none."""
    mine, theirs = await new_sandbox(store), await new_sandbox(store)
    await store.set_secret(mine.id, "anthropic_api_key", "sk-mine")

    assert await store.get_secret(theirs.id, "anthropic_api_key") is None
    assert await store.list_secret_names(theirs.id) == []
    await store.delete_secret(theirs.id, "anthropic_api_key")
    await store.set_secret(theirs.id, "anthropic_api_key", "sk-theirs")

    assert await store.get_secret(mine.id, "anthropic_api_key") == "sk-mine"
    assert await store.get_secret(theirs.id, "anthropic_api_key") == "sk-theirs"
    assert await store.get_secret("sbx_missing", "anthropic_api_key") is None
    assert await store.list_secret_names("sbx_missing") == []
    with pytest.raises(NotFound):
        await store.set_secret("sbx_missing", "anthropic_api_key", "sk-x")


async def test_delete_secret_is_idempotent(store: Store) -> None:
    """Deleting a secret removes it; deleting it again, or a never-set one, is no error."""
    sandbox = await new_sandbox(store)
    await store.set_secret(sandbox.id, "a", "1")
    await store.set_secret(sandbox.id, "b", "2")

    await store.delete_secret(sandbox.id, "a")
    await store.delete_secret(sandbox.id, "a")
    await store.delete_secret(sandbox.id, "never-set")
    await store.delete_secret("sbx_missing", "a")

    assert await store.get_secret(sandbox.id, "a") is None
    assert await store.list_secret_names(sandbox.id) == ["b"]


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "Anthropic", "api key", "a/b", "ключ", "name\n", "a:b"]
)
async def test_secret_names_are_validated(store: Store, name: str) -> None:
    """Secret names outside 1-64 characters of [a-z0-9_.-] are a ValueError on every method."""
    sandbox = await new_sandbox(store)
    with pytest.raises(ValueError, match="secret name"):
        await store.set_secret(sandbox.id, name, "v")
    with pytest.raises(ValueError, match="secret name"):
        await store.get_secret(sandbox.id, name)
    with pytest.raises(ValueError, match="secret name"):
        await store.delete_secret(sandbox.id, name)
    assert await store.list_secret_names(sandbox.id) == []


async def test_secret_names_at_the_limits_are_accepted(store: Store) -> None:
    """One character and 64 characters of every allowed kind are valid names."""
    sandbox = await new_sandbox(store)
    longest = ("a-z.0_9" * 10)[:64]
    for name in ("a", longest):
        await store.set_secret(sandbox.id, name, name)
        assert await store.get_secret(sandbox.id, name) == name
    assert await store.list_secret_names(sandbox.id) == sorted(["a", longest])


async def test_secrets_survive_key_rotation_and_reopen(store: Store) -> None:
    """Secrets and provider sessions sealed before and after rotate_keys open after a reopen."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    await store.set_secret(sandbox.id, "before", "sealed with key 1")
    await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_before", 0)

    await store.rotate_keys(new_data_keys=True)
    await store.set_secret(sandbox.id, "after", "sealed with key 2")
    await store.set_provider_session(sandbox.id, conversation.id, "google", "sessions/after", 0)
    await store.close()
    await store.open()

    assert await store.get_secret(sandbox.id, "before") == "sealed with key 1"
    assert await store.get_secret(sandbox.id, "after") == "sealed with key 2"
    sessions = [
        await store.get_provider_session(sandbox.id, conversation.id, provider)
        for provider in ("anthropic", "google")
    ]
    assert [s.session_id if s else None for s in sessions] == ["sesn_before", "sessions/after"]


# ---- integrations ---------------------------------------------------------------------


async def test_integration_record_and_credentials(store: Store) -> None:
    """A connection keeps its kind, app, scope, config and sealed credentials; status moves."""
    sandbox = await new_sandbox(store)
    created = await store.create_integration(
        sandbox.id,
        kind="oauth",
        app="github",
        end_user_id="u-1",
        config={"login": "octocat"},
        credentials={"access_token": "ghu_1", "refresh_token": "ghr_1"},
    )
    assert created.id.startswith("int_")
    assert (created.kind, created.app, created.end_user_id, created.status) == (
        "oauth",
        "github",
        "u-1",
        "active",
    )
    assert created.config == {"login": "octocat"}
    assert await store.read_integration_credentials(sandbox.id, created.id) == {
        "access_token": "ghu_1",
        "refresh_token": "ghr_1",
    }
    await store.replace_integration_credentials(sandbox.id, created.id, {"access_token": "ghu_2"})
    assert await store.read_integration_credentials(sandbox.id, created.id) == {
        "access_token": "ghu_2"
    }
    broken = await store.set_integration_status(sandbox.id, created.id, "broken", "revoked")
    assert (broken.status, broken.status_reason) == ("broken", "revoked")
    await store.touch_integration(sandbox.id, created.id)
    assert (await store.get_integration(sandbox.id, created.id)).last_used_at is not None


async def test_integrations_are_scoped_to_sandbox_and_end_user(store: Store) -> None:
    """A run's end user sees their own and sandbox-wide connections; never another
    sandbox's, never another end user's."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)

    async def connect(sbx: Sandbox, app: str, user: str) -> str:
        return (
            await store.create_integration(
                sbx.id, kind="mcp", app=app, end_user_id=user, config={}, credentials={}
            )
        ).id

    mine = await connect(sandbox, "github", "u-1")
    shared = await connect(sandbox, "docs", "")
    await connect(sandbox, "github", "u-2")
    theirs = await connect(other, "github", "u-1")
    listed = await store.list_integrations(sandbox.id, end_user_id="u-1")
    assert [i.id for i in listed] == [mine, shared]
    assert len(await store.list_integrations(sandbox.id)) == 3
    with pytest.raises(NotFound):
        await store.get_integration(sandbox.id, theirs)
    with pytest.raises(NotFound):
        await store.read_integration_credentials(sandbox.id, theirs)


async def test_connecting_again_archives_the_previous_connection(store: Store) -> None:
    """A new connection of the same app and end user replaces the live one (kept, disconnected)."""
    sandbox = await new_sandbox(store)
    first = await store.create_integration(
        sandbox.id, kind="oauth", app="github", end_user_id="u-1", config={}, credentials={}
    )
    second = await store.create_integration(
        sandbox.id, kind="oauth", app="github", end_user_id="u-1", config={}, credentials={}
    )
    assert [i.id for i in await store.list_integrations(sandbox.id)] == [second.id]
    archived = await store.get_integration(sandbox.id, first.id)
    assert archived.status == "disconnected"
    everything = await store.list_integrations(sandbox.id, include_disconnected=True)
    assert {i.id for i in everything} == {first.id, second.id}


async def test_connect_flow_finishes_once(store: Store) -> None:
    """A flow is found by its state hash with its verifier and ends only once."""
    sandbox = await new_sandbox(store)
    expires = datetime.now(UTC) + timedelta(minutes=10)
    flow = await store.create_connect_flow(
        sandbox.id,
        app="github",
        end_user_id="u-1",
        for_end_user=True,
        state_hash="h-1",
        code_verifier="verifier-1",
        expires_at=expires,
    )
    assert flow.status == "pending"
    assert abs((flow.expires_at - expires).total_seconds()) < 0.001
    found = await store.find_connect_flow("h-1")
    assert found is not None
    assert (found[0].id, found[1]) == (flow.id, "verifier-1")
    assert await store.find_connect_flow("h-other") is None
    done = await store.finish_connect_flow(sandbox.id, flow.id, "connected", integration_id="int_x")
    assert (done.status, done.integration_id) == ("connected", "int_x")
    again = await store.finish_connect_flow(sandbox.id, flow.id, "failed", reason="late")
    assert (again.status, again.reason) == ("connected", "")
    other = await new_sandbox(store)
    with pytest.raises(NotFound):
        await store.get_connect_flow(other.id, flow.id)


# ---- kill switches --------------------------------------------------------------------


async def test_pauses_set_list_and_clear(store: Store) -> None:
    """Pauses are set (reason replaced on re-set), listed per sandbox with the daemon-wide
    ones, and cleared once."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    await store.set_pause("global", reason="incident")
    await store.set_pause("agent_provider", target="anthropic", reason="bill shock")
    await store.set_pause("end_user", sandbox_id=sandbox.id, target="u-1")
    again = await store.set_pause("end_user", sandbox_id=sandbox.id, target="u-1", reason="abuse")
    assert again.reason == "abuse"
    assert [(p.scope, p.target) for p in await store.list_pauses(sandbox.id)] == [
        ("global", ""),
        ("agent_provider", "anthropic"),
        ("end_user", "u-1"),
    ]
    assert [p.scope for p in await store.list_pauses(other.id)] == ["global", "agent_provider"]
    assert len(await store.list_pauses()) == 3
    assert await store.clear_pause("global")
    assert not await store.clear_pause("global")
    assert [p.scope for p in await store.list_pauses(other.id)] == ["agent_provider"]


@pytest.mark.parametrize(
    ("scope", "sandbox_id", "target"),
    [("global", "", "x"), ("agent_provider", "", ""), ("end_user", "", "u-1"), ("nope", "", "x")],
)
async def test_malformed_pauses_are_refused(
    store: Store, scope: Any, sandbox_id: str, target: str
) -> None:
    """A pause without the target its scope needs (or with one it can't have) is refused."""
    with pytest.raises(ValueError, match="pause"):
        await store.set_pause(scope, sandbox_id=sandbox_id, target=target)


# ---- saved agents ---------------------------------------------------------------------


async def test_saved_agents_round_trip_per_sandbox(store: Store) -> None:
    """An agent is created, replaced, listed and deleted within its sandbox only."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    settings = {"name": "Support", "provider": "fake", "system": "Be kind.", "tools": ["x"]}
    created = await store.put_agent(sandbox.id, "support", settings)
    assert (created.slug, created.settings) == ("support", settings)
    replaced = await store.put_agent(sandbox.id, "support", {**settings, "system": "Be brief."})
    assert replaced.settings["system"] == "Be brief."
    assert replaced.created_at == created.created_at
    assert [a.slug for a in await store.list_agents(sandbox.id)] == ["support"]
    assert await store.list_agents(other.id) == []
    with pytest.raises(NotFound):
        await store.get_agent(other.id, "support")
    await store.delete_agent(sandbox.id, "support")
    with pytest.raises(NotFound):
        await store.delete_agent(sandbox.id, "support")
    with pytest.raises(NotFound):
        await store.put_agent("sbx_missing", "support", settings)
