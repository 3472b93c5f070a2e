"""The ``RunStore`` contract: admission (one turn per conversation, request ids, quotas),
begin_run creating the conversation and its entries, finish_run settling the outcome, ledger
rows, entries and provider session in one call, and what a retried run relies on (withdraw,
resume, totals across attempts)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from interlockd.ids import new_id
from interlockd.store.base import LedgerRow, Quotas, Run
from interlockd.vocabulary import Usage
from tests.store.conformance.helpers import (
    assert_no_conversation,
    entry,
    new_run,
    new_sandbox,
    start_in_new_conversation,
    start_run,
)

if TYPE_CHECKING:
    from interlockd.store.base import Store


# ---- admission --------------------------------------------------------------------


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


# ---- quotas -----------------------------------------------------------------------


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


# ---- begin_run creating the conversation and appending entries --------------------


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


# ---- finishing: outcome, ledger rows, entries, the provider session ---------------


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


# ---- interruption and retries: withdraw, resume, totals across attempts -----------


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


async def test_withdraw_releases_the_request_id_and_the_first_turns_conversation(
    store: Store,
) -> None:
    """A withdrawn first turn leaves no conversation, no user message and a free request_id."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hello", request_id="r1")
    closed = await store.finish_run(
        run.id, status="failed", error_code="UNAVAILABLE", withdraw=True
    )
    assert closed.request_id == ""
    assert await store.find_run_by_request_id(sandbox.id, "r1") is None
    with pytest.raises(NotFound):
        await store.get_conversation(sandbox.id, "alice", run.conversation_id)
    assert (await store.get_run(sandbox.id, run.id)).status == "failed"
    again = await start_in_new_conversation(store, sandbox.id, "alice", "hello", request_id="r1")
    assert await store.find_run_by_request_id(sandbox.id, "r1") == again


async def test_withdraw_in_a_continued_conversation_keeps_earlier_turns(store: Store) -> None:
    """Withdrawing a later turn deletes only its user message; the next entry reuses its seq."""
    sandbox = await new_sandbox(store)
    first = await start_in_new_conversation(store, sandbox.id, "alice", "one")
    await store.finish_run(first.id, status="finished")
    second = new_run(sandbox.id, "alice", first.conversation_id, "r2")
    await store.begin_run(second, entries=[entry("two", run_id=second.id)])
    await store.finish_run(second.id, status="failed", withdraw=True)
    entries = await store.read_entries(sandbox.id, first.conversation_id)
    assert [e.text for e in entries] == ["one"]
    third = new_run(sandbox.id, "alice", first.conversation_id, "r2")
    await store.begin_run(third, entries=[entry("two", run_id=third.id)])
    entries = await store.read_entries(sandbox.id, first.conversation_id)
    assert sorted((e.seq, e.text) for e in entries) == [(1, "one"), (2, "two")]


async def test_withdraw_keeps_a_run_that_recorded_a_tool_call(store: Store) -> None:
    """A run with more than its user message recorded keeps it all, request_id included."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi", request_id="r3")
    await store.append_entries(
        sandbox.id,
        run.conversation_id,
        [entry("{}", "tool_call", run_id=run.id, tool_call_id="c1", tool_name="t")],
        provider="fake",
        model="fake-model",
    )
    await store.finish_run(run.id, status="interrupted", withdraw=True)
    assert len(await store.read_entries(sandbox.id, run.conversation_id)) == 2


async def test_resume_admits_an_interrupted_run_again(store: Store) -> None:
    """resume_run makes an interrupted run running again with its id, entries and request_id."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi", request_id="r4")
    assert await store.interrupt_running_runs() == 1
    resumed = await store.resume_run(sandbox.id, run.id)
    assert (resumed.id, resumed.status, resumed.request_id) == (run.id, "running", "r4")
    assert resumed.error_code == ""
    assert resumed.finished_at is None
    with pytest.raises(FailedPrecondition, match="in progress"):
        await store.resume_run(sandbox.id, run.id)
    await store.finish_run(run.id, status="finished")
    with pytest.raises(FailedPrecondition, match="ended finished"):
        await store.resume_run(sandbox.id, run.id)
    other = await new_sandbox(store)
    with pytest.raises(NotFound):
        await store.resume_run(other.id, run.id)


async def test_resume_goes_through_admission(store: Store) -> None:
    """A resumed run is refused while its conversation is busy or a quota is full."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    await store.finish_run(run.id, status="cancelled")
    busy = await store.begin_run(new_run(sandbox.id, "alice", run.conversation_id))
    with pytest.raises(FailedPrecondition, match="turn in progress"):
        await store.resume_run(sandbox.id, run.id)
    await store.finish_run(busy.id, status="finished")
    await store.set_quotas(sandbox.id, Quotas(max_concurrent_runs=1))
    elsewhere = await start_in_new_conversation(store, sandbox.id, "bob", "hey")
    with pytest.raises(ResourceExhausted, match="max_concurrent_runs"):
        await store.resume_run(sandbox.id, run.id)
    await store.finish_run(elsewhere.id, status="finished")
    assert (await store.resume_run(sandbox.id, run.id)).status == "running"


async def test_concurrent_resumes_admit_exactly_one(store: Store) -> None:
    """Of many resume_run calls racing on one run, exactly one is admitted."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    await store.interrupt_running_runs()
    results = await asyncio.gather(
        *(store.resume_run(sandbox.id, run.id) for _ in range(8)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, FailedPrecondition) for r in results if isinstance(r, BaseException))


async def test_totals_add_up_across_attempts(store: Store) -> None:
    """A resumed run's usage and cost are the sum of its attempts."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi", request_id=new_id("r"))
    await store.finish_run(
        run.id, status="cancelled", usage=Usage(input_tokens=10, output_tokens=2), cost_usd=0.5
    )
    await store.resume_run(sandbox.id, run.id)
    done = await store.finish_run(
        run.id, status="finished", usage=Usage(input_tokens=12, output_tokens=5), cost_usd=0.25
    )
    assert done.usage == Usage(input_tokens=22, output_tokens=7)
    assert done.cost_usd == pytest.approx(0.75)
