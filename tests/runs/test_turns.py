"""One turn end to end: real daemon, real gRPC client, scripted OpenAI-compatible fakes."""

from __future__ import annotations

import grpc
import orjson
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2, sandboxes_pb2
from tests.conftest import DaemonFactory, RunningDaemon
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply
from tests.streams import assert_well_formed, kinds


async def test_text_streams_in_order(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """Text deltas arrive in order between RunStarted and Finish, with usage and the session."""
    fake_a.enqueue(Reply().text("Hel", "lo", "!").usage(prompt=12, completion=3))
    events = await daemon.run("hi there")
    assert_well_formed(events)
    assert kinds(events) == ["run_started", "text_delta", "text_delta", "text_delta", "finish"]
    assert "".join(e.text_delta.text for e in events[1:4]) == "Hello!"
    started, finish = events[0].run_started, events[-1].finish
    assert started.provider == "fake"
    assert started.model == "fake-model"
    assert finish.stop_reason == ev.STOP_REASON_END_TURN
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (12, 3)
    assert finish.session_id == started.session_id
    assert finish.cost.price_version
    window = await daemon.window(started.session_id)
    assert [(e.kind, e.text) for e in window] == [
        (cpb.ENTRY_KIND_USER, "hi there"),
        (cpb.ENTRY_KIND_ASSISTANT, "Hello!"),
    ]
    body = fake_a.requests[0].body
    assert body["stream"] is True
    assert body["messages"][-1] == {"role": "user", "content": "hi there"}
    assert fake_a.requests[0].headers["authorization"] == "Bearer sk-test-a"


async def test_tool_loop_executes_and_records(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """A tool call is executed by the router, fed back, streamed and recorded in order."""
    await daemon.run("I really like green apples")
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": ', '"green apples"}'),
        Reply().text("You like green apples.").usage(prompt=50, completion=5),
    )
    events = await daemon.run("what fruit do I like?")
    assert_well_formed(events)
    assert kinds(events) == ["run_started", "tool_call", "tool_result", "text_delta", "finish"]
    call, result = events[1].tool_call, events[2].tool_result
    assert call.name == "search_conversations"
    assert orjson.loads(call.arguments_json) == {"query": "green apples"}
    assert result.call_id == call.call_id
    assert not result.error
    hits = orjson.loads(result.result_json)["results"]
    assert any("green apples" in hit["text"] for hit in hits)
    second = fake_a.requests[-1].body["messages"]
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["id"] == call.call_id
    assert second[-1] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": result.result_json,
    }
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.kind for e in window] == [
        cpb.ENTRY_KIND_USER,
        cpb.ENTRY_KIND_TOOL_CALL,
        cpb.ENTRY_KIND_TOOL_RESULT,
        cpb.ENTRY_KIND_ASSISTANT,
    ]


async def test_bad_tool_arguments_become_a_tool_error(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """Arguments that aren't JSON are answered with a tool error the model can read."""
    fake_a.enqueue(Reply().tool_call("search_conversations", '{"query": '), Reply().text("ok"))
    events = await daemon.run("search")
    assert_well_formed(events)
    result = events[2].tool_result
    assert "not valid JSON" in result.error
    assert "not valid JSON" in fake_a.requests[-1].body["messages"][-1]["content"]


async def test_usage_and_cost_reach_the_ledger(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """Summed usage of every provider call of a turn is written to the ledger with the run id."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "x"}').usage(prompt=10, completion=2),
        Reply().text("done").usage(prompt=20, completion=4, cached=5),
    )
    events = await daemon.run("go")
    finish = events[-1].finish
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (30, 6)
    assert finish.usage.cache_read_tokens == 5
    rows = await daemon.daemon.store.list_ledger(daemon.sandbox_id, events[0].run_id)
    assert len(rows) == 1
    assert (rows[0].usage.input_tokens, rows[0].usage.output_tokens) == (30, 6)
    assert rows[0].price_version == finish.cost.price_version


async def test_upstream_500_before_first_event_is_unavailable(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A provider failing before any output surfaces as UNAVAILABLE, and the turn leaves
    nothing behind: no conversation, no user message (it did not happen)."""
    attempts = daemon.daemon.settings.providers["fake"].max_attempts
    fake_a.enqueue(*[Reply.error(500, "upstream exploded", type="server_error")] * attempts)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hello?")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fake" in (info.value.details() or "")
    listed = await daemon.conversations.ListConversations(
        cpb.ListConversationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert list(listed.conversations) == []


async def test_upstream_disconnect_mid_stream(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """A provider dropping the stream after output yields an Error event; what came is kept."""
    fake_a.enqueue(Reply().text("partial ", "answer").disconnect())
    events = await daemon.run("tell me")
    assert_well_formed(events)
    assert kinds(events) == ["run_started", "text_delta", "text_delta", "error"]
    error = events[-1].error
    assert error.code == "UNAVAILABLE"
    assert error.retryable
    assert error.provider == "fake"
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.text for e in window] == ["tell me", "partial answer"]
    run = await daemon.daemon.store.get_run(daemon.sandbox_id, events[0].run_id)
    assert run.status == "failed"


async def test_malformed_chunk_is_an_error_event(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """A chunk that isn't JSON ends the run with an INTERNAL Error event naming the provider."""
    fake_a.enqueue(Reply().text("ok so far").malformed())
    events = await daemon.run("hi")
    assert_well_formed(events)
    assert events[-1].error.code == "INTERNAL"
    assert events[-1].error.provider == "fake"


async def test_malformed_first_chunk_is_a_status(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """A malformed answer before any event is a gRPC status, not a half-started stream."""
    fake_a.enqueue(Reply().malformed())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hi")
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_client_deadline_cancels_upstream(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """A client deadline stops the upstream stream and the run is recorded as cancelled."""
    fake_a.enqueue(Reply().text("thinking about it").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="slow one"),
        metadata=daemon.auth(),
        timeout=1.0,
    )
    received = [await call.read(), await call.read()]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await fake_a.wait_for_disconnects(1)
    run_id = received[0].run_id
    session = received[0].run_started.session_id

    async def cancelled() -> None:
        run = await daemon.daemon.store.get_run(daemon.sandbox_id, run_id)
        assert run.status == "cancelled"

    await eventually(cancelled)
    window = await daemon.window(session)
    assert [e.text for e in window] == ["slow one", "thinking about it"]


async def test_client_cancel_stops_the_run(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """Cancelling the call after the first event closes the provider stream promptly."""
    fake_a.enqueue(Reply().text("a").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="cancel me"), metadata=daemon.auth()
    )
    first = await call.read()
    call.cancel()
    await fake_a.wait_for_disconnects(1)

    async def cancelled() -> None:
        run = await daemon.daemon.store.get_run(daemon.sandbox_id, first.run_id)
        assert run.status == "cancelled"

    await eventually(cancelled)


async def test_portable_context_across_providers(
    daemon: RunningDaemon, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Turn 2 on provider B sees turn 1's user message, tool call and result, and answer from A."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "budget"}'),
        Reply().text("Your budget is unknown."),
    )
    first = await daemon.run("what is my budget?", provider="fake")
    session = first[0].run_started.session_id
    call_id = first[1].tool_call.call_id
    fake_b.enqueue(Reply().text("Still unknown."))
    second = await daemon.run("and now?", provider="fake_b", session_id=session)
    assert_well_formed(second)
    assert second[0].run_started.provider == "fake_b"
    assert second[0].run_started.model == "fake-model-b"
    messages = fake_b.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[0]["content"] == "what is my budget?"
    assert messages[1]["tool_calls"][0]["id"] == call_id
    assert messages[2]["tool_call_id"] == call_id
    assert orjson.loads(messages[2]["content"]) == {"results": []}
    assert messages[3]["content"] == "Your budget is unknown."
    assert messages[4]["content"] == "and now?"


async def test_request_id_replays_instead_of_running_again(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A Run repeated with its request_id replays the recorded run without calling the provider."""
    fake_a.enqueue(Reply().text("once", " only").usage(prompt=3, completion=2))
    original = await daemon.run("do it", request_id="req-1")
    replay = await daemon.run("do it", request_id="req-1")
    assert len(fake_a.requests) == 1
    assert_well_formed(replay)
    assert replay[0].run_started.replayed
    assert replay[0].run_id == original[0].run_id
    text = "".join(e.text_delta.text for e in replay if e.HasField("text_delta"))
    assert text == "once only"
    assert replay[-1].finish.usage == original[-1].finish.usage


async def test_tool_loop_is_capped(start_daemon: DaemonFactory, fake_a: FakeOpenAI) -> None:
    """A model that keeps calling tools is stopped at the iteration cap with TOOL_LIMIT."""
    daemon = await start_daemon(runs={"max_tool_iterations": 2})
    fake_a.enqueue(*[Reply().tool_call("search_conversations", '{"query": "x"}')] * 5)
    events = await daemon.run("loop")
    assert_well_formed(events)
    assert kinds(events).count("tool_call") == 3
    assert events[-1].finish.stop_reason == ev.STOP_REASON_TOOL_LIMIT
    assert len(fake_a.requests) == 3


async def test_one_turn_at_a_time_per_conversation(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A second Run on a conversation with a turn in progress is FAILED_PRECONDITION."""
    first = await daemon.run("start")
    session = first[0].run_started.session_id
    fake_a.enqueue(Reply().text("busy").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="long", session_id=session),
        metadata=daemon.auth(),
    )
    await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("overlap", session_id=session)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    call.cancel()


async def test_per_user_concurrency_quota(daemon: RunningDaemon, fake_a: FakeOpenAI) -> None:
    """Beyond the per-end-user cap a Run is RESOURCE_EXHAUSTED and leaves nothing behind."""
    await daemon.sandboxes.SetQuotas(
        sandboxes_pb2.SetQuotasRequest(
            sandbox_id=daemon.sandbox_id,
            quotas=sandboxes_pb2.Quotas(max_concurrent_runs_per_end_user=1),
        ),
        metadata=daemon.operator(),
    )
    fake_a.enqueue(Reply().text("busy").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="long"), metadata=daemon.auth()
    )
    await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("second")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await daemon.conversations.ListConversations(
        cpb.ListConversationsRequest(end_user_id="u-1"), metadata=daemon.auth()
    )
    assert len(listed.conversations) == 1
    other_user = await daemon.run("different user", end_user_id="u-2")
    assert other_user[-1].HasField("finish")
    call.cancel()


async def test_labels_are_recorded_with_the_run(daemon: RunningDaemon) -> None:
    """A run's labels are stored with it (for cohort comparisons)."""
    events = await daemon.run("hi", labels={"cohort": "b", "experiment": "e1"})
    run = await daemon.daemon.store.get_run(daemon.sandbox_id, events[0].run_id)
    assert run.labels == {"cohort": "b", "experiment": "e1"}


async def test_coalesced_deltas_carry_the_same_text(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """With coalescing on, queued-up deltas may merge; the text and the record are unchanged."""
    daemon = await start_daemon(runs={"coalesce_deltas": True})
    pieces = [f"w{i} " for i in range(200)]
    fake_a.enqueue(Reply().text(*pieces))
    events = await daemon.run("many deltas")
    assert_well_formed(events)
    deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert "".join(deltas) == "".join(pieces)
    assert 1 <= len(deltas) <= len(pieces)
    window = await daemon.window(events[0].run_started.session_id)
    assert window[1].text == "".join(pieces)


async def test_a_coalescing_window_merges_spaced_deltas(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """coalesce_window_ms merges deltas that arrive within it even when the client keeps up."""
    daemon = await start_daemon(runs={"coalesce_deltas": True, "coalesce_window_ms": 500})
    fake_a.enqueue(Reply().text("a ").delay(0.02).text("b ").delay(0.02).text("c"))
    events = await daemon.run("spaced deltas")
    assert_well_formed(events)
    deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert deltas == ["a b c"]
