"""Store conformance: what a retried run relies on — withdrawing a run that never started,
resuming one that was interrupted or cancelled, and totals that add up across attempts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import FailedPrecondition, NotFound, ResourceExhausted
from interlockd.ids import new_id
from interlockd.store.base import Quotas
from interlockd.vocabulary import Usage

from .test_store_conformance import entry, new_run, new_sandbox, start_in_new_conversation

if TYPE_CHECKING:
    from interlockd.store.base import Store


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
