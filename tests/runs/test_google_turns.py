"""Turns on Vertex AI Agent Engine: real daemon, real gRPC client, the daemon's REST
backend talking to the loopback engine fake, whose deployed agent calls back into the
daemon's HTTP tool dispatch over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2
from interlockd.backends import catalog
from interlockd.vocabulary import Usage
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.vertex_agent_engine import (
    DEFAULT_ENGINE_ID,
    DEFAULT_PROJECT,
    FakeAgentEngine,
    Turn,
)
from tests.streams import assert_well_formed, kinds, text_of

TOKEN = "ya29.test-token"
MODEL = "gemini-3.1-flash"


@pytest.fixture
async def engine() -> AsyncIterator[FakeAgentEngine]:
    async with FakeAgentEngine(token=TOKEN) as fake:
        yield fake


def providers(engine: FakeAgentEngine, fake_a: FakeOpenAI, **google: Any) -> dict[str, Any]:
    return {
        "fake": {
            "kind": "openai",
            "base_url": fake_a.base_url,
            "default_model": "fake-model",
            "api_key": "sk-test-a",
        },
        "google": {
            "kind": "google",
            "base_url": engine.base_url,
            "access_token": TOKEN,
            "project": DEFAULT_PROJECT,
            "location": "us-central1",
            "reasoning_engine_id": DEFAULT_ENGINE_ID,
            "default_model": MODEL,
            **google,
        },
    }


async def start(
    start_daemon: DaemonFactory, engine: FakeAgentEngine, fake_a: FakeOpenAI, **google: Any
) -> RunningDaemon:
    daemon = await start_daemon(
        default_provider="google", providers=providers(engine, fake_a, **google)
    )
    engine.router_url = f"http://127.0.0.1:{daemon.daemon.http_port}"
    return daemon


@pytest.fixture
async def daemon(
    start_daemon: DaemonFactory, engine: FakeAgentEngine, fake_a: FakeOpenAI
) -> RunningDaemon:
    return await start(start_daemon, engine, fake_a)


async def run_status(daemon: RunningDaemon, message: str, **fields: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run(message, **fields)
    return raised.value


# ---- a turn ---------------------------------------------------------------------------


async def test_text_turn_streams_partial_chunks_once(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """Partial chunks stream as they come; the aggregated repeat is not emitted again."""
    engine.enqueue(Turn().thought("Let me see.").text("It is ", "sunny.").usage(40, 3, 2, 10))
    events = await daemon.run("weather?")
    assert_well_formed(events)
    assert kinds(events) == [
        "run_started",
        "thinking_delta",
        "text_delta",
        "text_delta",
        "finish",
    ]
    assert events[1].thinking_delta.text == "Let me see."
    assert text_of(events) == "It is sunny."
    usage = events[-1].finish.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (40, 5, 2)
    assert usage.cache_read_tokens == 10
    session = engine.last_session
    (message,) = session.messages
    assert message.startswith("<router_tools>")
    assert "- search_conversations: " in message
    assert message.endswith("</router_tools>\n\nweather?")
    request = engine.requests_to("async_stream_query")[0]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body["input"]["user_id"] == session.user_id
    # An opaque per-user id, not the end user's own (nor the sandbox's).
    assert session.user_id.startswith("u-")
    assert len(session.user_id) == 34
    window = await daemon.window(events[0].run_started.session_id)
    assert [(e.kind, e.text) for e in window] == [
        (cpb.ENTRY_KIND_USER, "weather?"),
        (cpb.ENTRY_KIND_ASSISTANT, "It is sunny."),
    ]


async def test_usage_and_cost_in_the_ledger(daemon: RunningDaemon, engine: FakeAgentEngine) -> None:
    """Usage of every model response is summed and priced at the Gemini rates."""
    engine.enqueue(Turn().text("a").usage(100, 20, cached=40).text("b").usage(10, 2))
    events = await daemon.run("count")
    expected = catalog.cost_usd(
        catalog.price("google", MODEL),
        Usage(input_tokens=110, output_tokens=22, cache_read_tokens=40),
    )
    assert expected > 0
    assert events[-1].finish.cost.token_usd == pytest.approx(expected)
    ledger = await daemon.daemon.store.list_ledger(daemon.sandbox_id, events[0].run_id)
    assert [(r.provider, r.model, r.usage.input_tokens) for r in ledger] == [("google", MODEL, 110)]


async def test_finish_reason_maps_to_stop_reason(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """MAX_TOKENS ends the turn with STOP_REASON_MAX_TOKENS."""
    engine.enqueue(Turn().text("cut").finish_reason("MAX_TOKENS"))
    events = await daemon.run("long")
    assert events[-1].finish.stop_reason == ev.STOP_REASON_MAX_TOKENS


# ---- tools through dispatch ---------------------------------------------------------


async def test_tool_call_through_dispatch(daemon: RunningDaemon, engine: FakeAgentEngine) -> None:
    """The deployed agent's dispatch callback runs the sandbox's tool in the router; the call
    and result reach the client and the window, and the agent gets the result back."""
    engine.enqueue(Turn().text("Noted."))
    first = await daemon.run("I like green apples")
    session_id = first[0].run_started.session_id
    engine.enqueue(
        Turn().dispatch("search_conversations", {"query": "apples"}).text("Green apples.")
    )
    events = await daemon.run("what do I like?", session_id=session_id)
    assert_well_formed(events)
    assert kinds(events) == ["run_started", "tool_call", "tool_result", "text_delta", "finish"]
    exchange = engine.dispatches[0]
    assert exchange.status == 200
    call, result = events[1].tool_call, events[2].tool_result
    assert (call.call_id, call.name) == (exchange.call_id, "search_conversations")
    assert not call.provider_executed
    assert orjson.loads(call.arguments_json) == {"query": "apples"}
    hits = orjson.loads(result.result_json)["results"]
    assert any("green apples" in hit["text"] for hit in hits)
    assert exchange.response == {"result": orjson.loads(result.result_json)}
    window = await daemon.window(session_id)
    assert [e.kind for e in window][-3:] == [
        cpb.ENTRY_KIND_TOOL_CALL,
        cpb.ENTRY_KIND_TOOL_RESULT,
        cpb.ENTRY_KIND_ASSISTANT,
    ]


async def test_agent_tool_result_is_streamed_recorded_and_handed_on(
    daemon: RunningDaemon, engine: FakeAgentEngine, fake_a: FakeOpenAI
) -> None:
    """The deployed agent's own tool result (ADK: role "user", author the agent) reaches
    the stream and the window, and a next turn on another provider sees the call with
    that result, not "outcome unknown"."""
    engine.enqueue(
        Turn()
        .function_call("google_search", {"q": "order 42"}, id="adk-7")
        .function_response("google_search", {"status": "shipped"})
        .text("It shipped.")
    )
    events = await daemon.run("where is order 42?")
    assert_well_formed(events)
    assert kinds(events) == ["run_started", "tool_call", "tool_result", "text_delta", "finish"]
    call, result = events[1].tool_call, events[2].tool_result
    assert (call.call_id, call.name, call.provider_executed) == ("adk-7", "google_search", True)
    assert (result.call_id, result.provider_executed) == ("adk-7", True)
    assert orjson.loads(result.result_json) == {"status": "shipped"}
    (shape,) = [e for e in engine.last_session.events if "function_response" in str(e)]
    assert (shape["content"]["role"], shape["author"]) == ("user", "interlock")
    session_id = events[0].run_started.session_id
    window = await daemon.window(session_id)
    assert [e.kind for e in window] == [
        cpb.ENTRY_KIND_USER,
        cpb.ENTRY_KIND_TOOL_CALL,
        cpb.ENTRY_KIND_TOOL_RESULT,
        cpb.ENTRY_KIND_ASSISTANT,
    ]
    fake_a.enqueue(Reply().text("Yes."))
    await daemon.run("shipped?", provider="fake", session_id=session_id)
    messages = fake_a.requests[-1].body["messages"]
    (asked,) = [m for m in messages if m.get("tool_calls")]
    assert [c["id"] for c in asked["tool_calls"]] == ["adk-7"]
    (answer,) = [m for m in messages if m["role"] == "tool"]
    assert answer["tool_call_id"] == "adk-7"
    assert orjson.loads(answer["content"]) == {"status": "shipped"}


async def test_forged_dispatch_token_runs_nothing(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """A callback with a wrong token gets 401; no tool runs, nothing is recorded."""
    engine.enqueue(
        Turn().dispatch("search_conversations", {"query": "x"}, token="forged").text("Could not.")
    )
    events = await daemon.run("try")
    assert kinds(events) == ["run_started", "text_delta", "finish"]
    assert engine.dispatches[0].status == 401
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.kind for e in window] == [cpb.ENTRY_KIND_USER, cpb.ENTRY_KIND_ASSISTANT]


async def test_token_of_an_ended_run_is_refused(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """A dispatch token dies with its turn: replayed in the next turn it gets 401."""
    events = await daemon.run("one")
    session = engine.last_session
    old = session.state["interlock_dispatch_token"]
    engine.enqueue(
        Turn().dispatch("search_conversations", {"query": "x"}, token=old).text("No."),
        session_id=session.id,
    )
    await daemon.run("two", session_id=events[0].run_started.session_id)
    assert [d.status for d in engine.dispatches] == [401]
    assert session.state["interlock_dispatch_token"] != old


# ---- sessions -------------------------------------------------------------------------


async def test_session_is_reused_and_recreated_when_lost(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """Turn 2 reuses the engine session; after the engine lost it (404) a new one gets the
    history handed over."""
    engine.enqueue(Turn().text("Blue, noted."), Turn().text("Blue."), Turn().text("Still blue."))
    first = await daemon.run("my colour is blue")
    session_id = first[0].run_started.session_id
    await daemon.run("again?", session_id=session_id)
    assert engine.sessions_created == 1
    lost = engine.last_session
    # The tool list is told once per session, not every turn.
    assert lost.messages[0].endswith("my colour is blue")
    assert lost.messages[1] == "again?"
    del engine.sessions[lost.id]
    third = await daemon.run("what colour?", session_id=session_id)
    assert text_of(third) == "Still blue."
    assert engine.sessions_created == 2
    (message,) = engine.last_session.messages
    assert "[user]: my colour is blue" in message
    assert "[assistant]: Blue." in message
    assert message.endswith("what colour?")


async def test_conversation_moves_between_openai_and_google(
    daemon: RunningDaemon, engine: FakeAgentEngine, fake_a: FakeOpenAI
) -> None:
    """Turn 1 on the OpenAI-compatible fake, 2 on Google, 3 back: each side sees it all."""
    fake_a.enqueue(Reply().text("Order 42 ships Monday."))
    first = await daemon.run("where is order 42?", provider="fake")
    session_id = first[0].run_started.session_id
    engine.enqueue(Turn().text("Monday, yes."))
    await daemon.run("when again?", provider="google", session_id=session_id)
    (message,) = engine.last_session.messages
    assert "[user]: where is order 42?" in message
    assert "[assistant]: Order 42 ships Monday." in message
    assert message.endswith("when again?")
    fake_a.enqueue(Reply().text("Sure."))
    await daemon.run("sure?", provider="fake", session_id=session_id)
    contents = [m["content"] for m in fake_a.requests[-1].body["messages"]]
    assert contents[-4:] == ["Order 42 ships Monday.", "when again?", "Monday, yes.", "sure?"]


async def test_engine_named_per_request(daemon: RunningDaemon, engine: FakeAgentEngine) -> None:
    """RunRequest.google names the deployed agent; a different one gets its own session."""
    other = engine.add_engine("999")
    engine.enqueue(Turn().text("from 999"), engine=other)
    events = await daemon.run(
        "hi", google=router_pb2.GoogleRunOptions(reasoning_engine_id=other.name)
    )
    assert text_of(events) == "from 999"
    assert engine.requests_to("async_stream_query")[0].engine == other.name


async def test_missing_engine_is_invalid_argument(
    start_daemon: DaemonFactory, engine: FakeAgentEngine, fake_a: FakeOpenAI
) -> None:
    """Without a configured or requested engine the run is refused naming the field."""
    daemon = await start(start_daemon, engine, fake_a, reasoning_engine_id="")
    error = await run_status(daemon, "hi")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "google.reasoning_engine_id" in (error.details() or "")
    assert engine.requests == []


# ---- failures -------------------------------------------------------------------------


async def test_in_stream_error_after_output_is_an_error_event(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """An in-stream {code, message} after text is an Error event with the engine's message."""
    engine.enqueue(Turn().text("Half").error(500, "the model crashed"))
    events = await daemon.run("go")
    assert_well_formed(events)
    assert events[-1].error.code == "UNAVAILABLE"
    assert "the model crashed" in events[-1].error.message
    window = await daemon.window(events[0].run_started.session_id)
    assert [(e.kind, e.text) for e in window][-1] == (cpb.ENTRY_KIND_ASSISTANT, "Half")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.INVALID_ARGUMENT),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (503, grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_http_errors_map_to_statuses(
    daemon: RunningDaemon, engine: FakeAgentEngine, status: int, code: grpc.StatusCode
) -> None:
    """403/404/429/503 before the first event become statuses carrying the engine's message."""
    engine.fail("async_stream_query", status, "scripted failure", times=3)
    error = await run_status(daemon, "hi")
    assert error.code() == code
    assert "scripted failure" in (error.details() or "")


async def test_transient_refusal_is_retried(daemon: RunningDaemon, engine: FakeAgentEngine) -> None:
    """A 503 on session creation and a 429 on the turn are retried before the first event."""
    engine.fail("async_create_session", 503)
    engine.fail("async_stream_query", 429)
    events = await daemon.run("hi")
    assert events[-1].HasField("finish")
    assert len(engine.requests_to("async_create_session")) == 2
    assert len(engine.requests_to("async_stream_query")) == 2


async def test_rejected_token_is_failed_precondition(
    start_daemon: DaemonFactory, engine: FakeAgentEngine, fake_a: FakeOpenAI
) -> None:
    """A token the engine rejects (401) is FAILED_PRECONDITION, and never echoed."""
    daemon = await start(start_daemon, engine, fake_a, access_token="ya29.wrong")
    error = await run_status(daemon, "hi")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ya29.wrong" not in (error.details() or "")


async def test_client_cancel_closes_the_upstream_stream(
    daemon: RunningDaemon, engine: FakeAgentEngine
) -> None:
    """Cancelling mid-turn closes the engine stream; what came is kept."""
    engine.enqueue(Turn().text("Working on it").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(message="long task", end_user_id="u-1"), metadata=daemon.auth()
    )
    seen = []
    async for event in call:
        seen.append(event)
        if event.HasField("text_delta"):
            break
    call.cancel()
    await engine.wait_for_disconnects(1)
    session_id = seen[0].run_started.session_id
    for _ in range(100):
        window = await daemon.window(session_id)
        if len(window) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(e.kind, e.text) for e in window] == [
        (cpb.ENTRY_KIND_USER, "long task"),
        (cpb.ENTRY_KIND_ASSISTANT, "Working on it"),
    ]
