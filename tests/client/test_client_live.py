"""``interlock.Client`` and ``interlock.SyncClient`` against a real interlockd.

The daemon runs in this test's event loop in front of the scripted
OpenAI-compatible fake; the blocking client runs in a worker thread so the
loop keeps serving it. Each behaviour the issue names is checked through both
clients: a streamed turn with a tool call, a second turn on the same session,
a wrong key, cancelling mid-stream (the run stops on the daemon: recorded as
cancelled, its upstream call abandoned) and a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from interlock import (
    Cancelled,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RunOutcome,
    SyncClient,
    Unauthenticated,
)
from interlock.v1 import agents_pb2, events_pb2
from tests.conftest import RunningDaemon
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply

QUICKSTART = Path(__file__).parents[2] / "clients" / "python" / "examples" / "quickstart.py"


def script_tool_turn(fake: FakeOpenAI) -> None:
    """Text, a call of the built-in search tool, then the answer, with usage per call."""
    fake.enqueue(
        Reply()
        .text("Let me look. ")
        .tool_call("search_conversations", '{"query": "order"}')
        .usage(prompt=30, completion=2),
        Reply().text("Your order ", "shipped.").usage(prompt=40, completion=5),
    )


def check_tool_turn(events: list[events_pb2.AgentEvent]) -> None:
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == [
        "run_started",
        "text_delta",
        "tool_call",
        "tool_result",
        "text_delta",
        "text_delta",
        "finish",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    call, result, finish = events[2].tool_call, events[3].tool_result, events[-1].finish
    assert call.name == "search_conversations"
    assert json.loads(call.arguments_json) == {"query": "order"}
    assert result.call_id == call.call_id
    assert not result.error
    assert "results" in json.loads(result.result_json)
    assert finish.stop_reason == events_pb2.STOP_REASON_END_TURN
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (70, 7)
    assert finish.session_id == events[0].run_started.session_id


async def run_status(daemon: RunningDaemon, request_id: str) -> str:
    """The stored status of a run once it is no longer running."""

    async def ended() -> str:
        run = await daemon.daemon.store.find_run_by_request_id(daemon.sandbox_id, request_id)
        assert run is not None
        assert run.status != "running"
        return run.status

    return await eventually(ended)


@pytest.fixture
async def client(daemon: RunningDaemon):
    async with Client(daemon.address, daemon.api_key, operator_key=daemon.operator_key) as c:
        yield c


@pytest.fixture
def sync_client(daemon: RunningDaemon):
    with SyncClient(daemon.address, daemon.api_key, operator_key=daemon.operator_key) as c:
        yield c


# -- asyncio client ---------------------------------------------------------


async def test_async_turn_streams_text_tool_call_and_finish(client, fake_a):
    """Client.run streams text, a tool call and its result, and Finish with the summed usage."""
    script_tool_turn(fake_a)
    stream = client.run("Where is my order?", end_user_id="u-1", system="You are a support agent.")
    check_tool_turn([event async for event in stream])


async def test_async_second_turn_continues_the_session(client, daemon, fake_a):
    """A run with the first run's session id sees its history and joins its conversation."""
    fake_a.enqueue(Reply().text("First answer."), Reply().text("Second answer."))
    first = await client.run_text("One", end_user_id="u-2")
    second = await client.run_text("Two", end_user_id="u-2", session_id=first.session_id)
    assert (second.session_id, second.text) == (first.session_id, "Second answer.")
    roles = [m["role"] for m in fake_a.requests[-1].body["messages"]]
    assert roles == ["user", "assistant", "user"]
    stored = await client.conversations.get(first.session_id, end_user_id="u-2")
    assert [e.text for e in stored.entries] == ["One", "First answer.", "Two", "Second answer."]


async def test_async_wrong_key_raises_unauthenticated(daemon):
    """A key the daemon does not know raises Unauthenticated before any event."""
    async with Client(daemon.address, "ilk_wrong") as stranger:
        with pytest.raises(Unauthenticated):
            async for _ in stranger.run("hi", end_user_id="u-1"):
                pass


async def test_async_leaving_mid_stream_stops_the_run(client, daemon, fake_a):
    """Leaving `async with client.run(...)` mid-stream cancels the run on the daemon."""
    fake_a.enqueue(Reply().text("Thinking").stall())
    async with client.run("hi", end_user_id="u-3", request_id="py-leave") as stream:
        async for event in stream:
            if event.HasField("text_delta"):
                break
    assert await run_status(daemon, "py-leave") == "cancelled"
    await fake_a.wait_for_disconnects(1)


async def test_async_timeout_is_a_deadline_that_stops_the_run(client, daemon, fake_a):
    """run(timeout=...) raises DeadlineExceeded and the daemon stops the run."""
    fake_a.enqueue(Reply().text("Thinking").stall())
    with pytest.raises(DeadlineExceeded):
        await client.run_text("hi", end_user_id="u-4", request_id="py-deadline", timeout=0.5)
    assert await run_status(daemon, "py-deadline") == "cancelled"
    await fake_a.wait_for_disconnects(1)


async def test_async_break_out_of_a_plain_loop_stops_the_run(client, daemon, fake_a):
    """`async for event in client.run(...): break` (no `async with`) cancels the run on the
    daemon at once: recorded cancelled, its upstream call abandoned, no finished output."""
    fake_a.enqueue(Reply().text("Thinking").stall())
    async for event in client.run("hi", end_user_id="u-7", request_id="py-break"):
        if event.HasField("text_delta"):
            break
    assert await run_status(daemon, "py-break") == "cancelled"
    await fake_a.wait_for_disconnects(1)
    entries = await daemon.daemon.store.find_run_by_request_id(daemon.sandbox_id, "py-break")
    assert entries is not None
    assert entries.status == "cancelled"


async def test_async_cancel_from_another_task_raises_cancelled(client, daemon, fake_a):
    """stream.cancel() from another task ends the consumer's loop with Cancelled, and the
    daemon records the run cancelled."""
    fake_a.enqueue(Reply().text("Thinking").stall())
    stream = client.run("hi", end_user_id="u-8", request_id="py-cancel")
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            if event.HasField("text_delta"):
                first_delta.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 10)
    assert stream.cancel()
    with pytest.raises(Cancelled):
        await asyncio.wait_for(consumer, 10)
    assert await run_status(daemon, "py-cancel") == "cancelled"


async def test_invalid_argument_names_the_field_in_both_clients(client, sync_client):
    """The daemon's BadRequest reaches both clients as field_violations, with the
    ErrorInfo reason and metadata."""
    with pytest.raises(InvalidArgument) as caught:
        await client.run_text("hi", end_user_id="")
    error = caught.value
    assert [v.field for v in error.field_violations] == ["end_user_id"]
    assert (error.reason, error.metadata) == ("INVALID_ARGUMENT", {"field": "end_user_id"})
    assert (error.retryable, error.retry_delay) == (False, None)

    def blocking() -> InvalidArgument:
        with pytest.raises(InvalidArgument) as caught:
            sync_client.agents.put(agents_pb2.Agent(slug="Not A Slug"))
        return caught.value

    sync_error = await asyncio.to_thread(blocking)
    assert sync_error.reason == "INVALID_ARGUMENT"
    assert sync_error.field_violations
    assert sync_error.field_violations[0].field.startswith("agent")


async def test_admin_calls_take_a_deadline(client, daemon):
    """Administrative calls of the asyncio client take timeout= (the deadline itself is
    pinned against the scripted server in test_client_api)."""
    assert [s.name async for s in client.sandboxes.list_all(timeout=5)] == ["default"]
    assert await client.agents.list(timeout=5) == []
    assert (await client.ledger.list(timeout=5)).entries == []
    assert (await client.conversations.list(end_user_id="u-1", timeout=5)).conversations == []


# -- blocking client (in a worker thread) -------------------------------------


async def test_sync_turn_streams_text_tool_call_and_finish(sync_client, fake_a):
    """SyncClient.run yields the same stream as the asyncio client."""
    script_tool_turn(fake_a)

    def run() -> list[events_pb2.AgentEvent]:
        with sync_client.run("Where is my order?", end_user_id="u-1") as stream:
            return list(stream)

    check_tool_turn(await asyncio.to_thread(run))


async def test_sync_second_turn_continues_the_session(sync_client, fake_a):
    """SyncClient.run_text with the first turn's session id continues the conversation."""
    fake_a.enqueue(Reply().text("First answer."), Reply().text("Second answer."))

    def two_turns() -> tuple[RunOutcome, RunOutcome]:
        first = sync_client.run_text("One", end_user_id="u-2")
        return first, sync_client.run_text("Two", end_user_id="u-2", session_id=first.session_id)

    first, second = await asyncio.to_thread(two_turns)
    assert first.ok
    assert (second.session_id, second.text) == (first.session_id, "Second answer.")
    assert [m["role"] for m in fake_a.requests[-1].body["messages"]] == [
        "user",
        "assistant",
        "user",
    ]


async def test_sync_wrong_key_raises_unauthenticated(daemon):
    """The blocking client raises Unauthenticated for a wrong key, on runs and on admin calls."""

    def attempt() -> None:
        with SyncClient(daemon.address, "ilk_wrong", operator_key="ilop_wrong") as stranger:
            with pytest.raises(Unauthenticated):
                stranger.run_text("hi", end_user_id="u-1")
            with pytest.raises(Unauthenticated):
                stranger.sandboxes.list()

    await asyncio.to_thread(attempt)


async def test_sync_cancel_mid_stream_stops_the_run(sync_client, daemon, fake_a):
    """Leaving `with client.run(...)` mid-stream cancels the run on the daemon."""
    fake_a.enqueue(Reply().text("Thinking").stall())

    def leave_early() -> list[str]:
        seen = []
        with sync_client.run("hi", end_user_id="u-3", request_id="sync-leave") as stream:
            for event in stream:
                seen.append(event.WhichOneof("event"))
                if event.HasField("text_delta"):
                    break
        with pytest.raises(Cancelled):  # the caller left: the stream says it was cancelled
            next(stream)
        return seen

    assert await asyncio.to_thread(leave_early) == ["run_started", "text_delta"]
    assert await run_status(daemon, "sync-leave") == "cancelled"
    await fake_a.wait_for_disconnects(1)


async def test_sync_cancel_from_another_thread_raises_cancelled(sync_client, daemon, fake_a):
    """stream.cancel() while another thread waits for the next event ends its loop with
    Cancelled, and the daemon records the run cancelled."""
    fake_a.enqueue(Reply().text("Thinking").stall())
    stream = sync_client.run("hi", end_user_id="u-5", request_id="sync-cancel")
    first_delta = asyncio.Event()
    loop = asyncio.get_running_loop()

    def consume() -> int:
        count = 0
        try:
            for event in stream:
                count += 1
                if event.HasField("text_delta"):
                    loop.call_soon_threadsafe(first_delta.set)
        except Cancelled:
            return count
        raise AssertionError("the loop ended without Cancelled")

    consumer = asyncio.create_task(asyncio.to_thread(consume))
    await asyncio.wait_for(first_delta.wait(), 10)
    assert stream.cancel()
    assert await asyncio.wait_for(consumer, 10) == 2
    assert await run_status(daemon, "sync-cancel") == "cancelled"


async def test_sync_break_out_of_a_plain_loop_stops_the_run(sync_client, daemon, fake_a):
    """`for event in client.run(...): break` cancels the run: recorded cancelled, upstream
    abandoned, nothing billed as finished."""
    fake_a.enqueue(Reply().text("Thinking").stall())

    def leave() -> None:
        for _ in sync_client.run("hi", end_user_id="u-6", request_id="sync-break"):
            break

    await asyncio.to_thread(leave)
    assert await run_status(daemon, "sync-break") == "cancelled"
    await fake_a.wait_for_disconnects(1)


async def test_sync_timeout_is_a_deadline_that_stops_the_run(sync_client, daemon, fake_a):
    """SyncClient.run_text(timeout=...) raises DeadlineExceeded and the daemon stops the run."""
    fake_a.enqueue(Reply().text("Thinking").stall())

    def slow() -> None:
        with pytest.raises(DeadlineExceeded):
            sync_client.run_text("hi", end_user_id="u-4", request_id="sync-deadline", timeout=0.5)

    await asyncio.to_thread(slow)
    assert await run_status(daemon, "sync-deadline") == "cancelled"
    await fake_a.wait_for_disconnects(1)


async def test_sync_admin_calls_carry_their_keys(sync_client, daemon):
    """Sandboxes take the operator key, conversations the new sandbox's API key."""

    def administer() -> None:
        sandbox = sync_client.sandboxes.create("acme")
        assert [s.name for s in sync_client.sandboxes.list_all(page_size=1)] == ["default", "acme"]
        key = sync_client.sandboxes.create_api_key(sandbox.sandbox_id, name="backend")
        with SyncClient(daemon.address, key.secret) as tenant:
            outcome = tenant.run_text("Hello", end_user_id="alice")
            assert outcome.text == "Hello from the fake."
            listed = list(tenant.conversations.list_all(end_user_id="alice"))
            assert [c.session_id for c in listed] == [outcome.session_id]
            with pytest.raises(NotFound):
                tenant.conversations.get(outcome.session_id, end_user_id="bob")
            tenant.conversations.delete(outcome.session_id, end_user_id="alice")
            assert list(tenant.conversations.list_all(end_user_id="alice")) == []
        sync_client.sandboxes.set_secret(sandbox.sandbox_id, "anthropic_api_key", "sk-ant-x")
        assert sync_client.sandboxes.list_secrets(sandbox.sandbox_id) == ["anthropic_api_key"]
        sync_client.sandboxes.delete_secret(sandbox.sandbox_id, "anthropic_api_key")
        revoked = sync_client.sandboxes.revoke_api_key(sandbox.sandbox_id, key.api_key.key_id)
        assert revoked.HasField("revoke_time")

    await asyncio.to_thread(administer)


async def test_quickstart_example_runs(daemon, fake_a):
    """clients/python/examples/quickstart.py, the README's example, streams and continues a turn."""
    fake_a.enqueue(Reply().text("It shipped ", "yesterday."), Reply().text("You're welcome."))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env |= {"INTERLOCK_ADDRESS": daemon.address, "INTERLOCK_API_KEY": daemon.api_key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(QUICKSTART),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "It shipped yesterday.\nYou're welcome.\n"
