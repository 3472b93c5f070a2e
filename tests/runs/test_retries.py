"""Retrying a turn: a run that failed before its first event did not happen, so its
request_id runs again and its user message is stored once; tool arguments are checked
against the tool's schema before anything runs, for every provider."""

from __future__ import annotations

import google.rpc.error_details_pb2 as edpb
import google.rpc.status_pb2 as spb
import grpc
import orjson
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import router_pb2
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply


def failures(daemon: RunningDaemon) -> list[Reply]:
    """Enough 503s to exhaust the provider's attempts."""
    attempts = daemon.daemon.settings.providers["fake"].max_attempts
    return [Reply.error(503, "overloaded", type="server_error")] * attempts


async def test_request_id_runs_again_after_a_failure_before_the_first_event(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A Run that failed with a status before its first event is not replayed: the same
    request_id runs the turn, and the window holds the user message once."""
    first = await daemon.run("one")
    session = first[0].run_started.session_id
    fake_a.enqueue(*failures(daemon))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("two", session_id=session, request_id="req-2")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    events = await daemon.run("two", session_id=session, request_id="req-2")
    assert not events[0].run_started.replayed
    assert events[-1].HasField("finish")
    window = await daemon.window(session)
    assert [e.text for e in window if e.kind == cpb.ENTRY_KIND_USER] == ["one", "two"]
    assert [e.kind for e in window] == [
        cpb.ENTRY_KIND_USER,
        cpb.ENTRY_KIND_ASSISTANT,
        cpb.ENTRY_KIND_USER,
        cpb.ENTRY_KIND_ASSISTANT,
    ]
    again = await daemon.run("two", session_id=session, request_id="req-2")
    assert again[0].run_started.replayed


async def test_retry_without_request_id_stores_the_message_once(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A turn that never produced an event leaves no user message behind, so a plain
    retry does not store it twice."""
    first = await daemon.run("one")
    session = first[0].run_started.session_id
    fake_a.enqueue(*failures(daemon))
    with pytest.raises(grpc.aio.AioRpcError):
        await daemon.run("two", session_id=session)
    await daemon.run("two", session_id=session)
    window = await daemon.window(session)
    assert [e.text for e in window if e.kind == cpb.ENTRY_KIND_USER] == ["one", "two"]


async def test_arguments_not_matching_the_schema_get_a_tool_error(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A call whose arguments break the tool's JSON schema is answered with a tool error
    naming the problem, before the tool runs, and the model gets to correct it."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"limit": 3}').finish("tool_calls"),
        Reply().text("Let me fix that."),
    )
    events = await daemon.run("search please")
    (result,) = [e.tool_result for e in events if e.HasField("tool_result")]
    assert "arguments: 'query' is a required property" in result.error
    fed_back = fake_a.requests[-1].body["messages"][-1]
    assert fed_back["role"] == "tool"
    assert "'query' is a required property" in orjson.loads(fed_back["content"])["error"]


async def test_tool_call_is_in_the_record_when_it_is_streamed(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """The tool_call event reaches the client after the call is recorded."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "x"}').finish("tool_calls"),
        Reply().text("Nothing found."),
    )
    request_events = daemon.router.Run(
        router_pb2.RunRequest(message="find x", end_user_id="u-1"),
        metadata=daemon.auth(),
        timeout=30,
    )
    session = ""
    async for event in request_events:
        if event.HasField("run_started"):
            session = event.run_started.session_id
        if event.HasField("tool_call"):
            window = await daemon.window(session)
            assert event.tool_call.call_id in {e.tool_call_id for e in window}


async def test_retry_while_the_run_is_in_progress_is_retryable(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A retry that arrives while its run is still running (the caller's connection just
    dropped) is refused with reason RUN_IN_PROGRESS and a RetryInfo, so clients retry."""
    fake_a.enqueue(Reply().text("slow ").stall())
    first = daemon.router.Run(
        router_pb2.RunRequest(message="slow one", end_user_id="u-1", request_id="busy-1"),
        metadata=daemon.auth(),
    )
    assert (await first.read()).HasField("run_started")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("slow one", request_id="busy-1")
    first.cancel()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = spb.Status.FromString(
        dict(info.value.trailing_metadata() or ())["grpc-status-details-bin"]
    )
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.RetryInfo"}
    error_info = edpb.ErrorInfo()
    next(d for d in status.details if d.Is(edpb.ErrorInfo.DESCRIPTOR)).Unpack(error_info)
    assert error_info.reason == "RUN_IN_PROGRESS"
