"""Turns on Claude Managed Agents: real daemon, real gRPC client, the unmodified
anthropic SDK inside the daemon talking to the loopback Managed Agents fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from anthropic import AsyncAnthropic

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2, sandboxes_pb2
from interlockd.backends import catalog
from interlockd.vocabulary import Usage
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.anthropic_managed import FakeManagedAgents, Turn
from tests.fakes.openai import FakeOpenAI, Reply
from tests.streams import assert_well_formed, kinds, text_of

KEY = "sk-ant-deployment"
MODEL = "claude-sonnet-4-6"


@pytest.fixture
async def claude() -> AsyncIterator[FakeManagedAgents]:
    async with FakeManagedAgents(api_key=KEY) as fake:
        yield fake


def providers(claude: FakeManagedAgents, fake_a: FakeOpenAI, **anthropic: Any) -> dict[str, Any]:
    return {
        "fake": {
            "kind": "openai",
            "base_url": fake_a.base_url,
            "default_model": "fake-model",
            "api_key": "sk-test-a",
        },
        "anthropic": {
            "kind": "anthropic",
            "base_url": claude.base_url,
            "api_key": KEY,
            "default_model": MODEL,
            **anthropic,
        },
    }


@pytest.fixture
async def daemon(
    start_daemon: DaemonFactory, claude: FakeManagedAgents, fake_a: FakeOpenAI
) -> RunningDaemon:
    return await start_daemon(default_provider="anthropic", providers=providers(claude, fake_a))


def user_texts(event: dict[str, Any]) -> list[str]:
    """The text blocks of a user.message the fake received."""
    return [block["text"] for block in event["content"]]


async def run_status(daemon: RunningDaemon, message: str, **fields: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run(message, **fields)
    return raised.value


# ---- a turn ---------------------------------------------------------------------------


async def test_text_turn_streams_token_deltas(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """Token deltas stream as TextDelta; the final agent.message adds nothing twice."""
    claude.enqueue(Turn().thinking().message("It is ", "sunny.").usage(40, 3))
    events = await daemon.run("weather?")
    assert_well_formed(events)
    assert kinds(events) == [
        "run_started",
        "thinking_delta",
        "text_delta",
        "text_delta",
        "finish",
    ]
    assert text_of(events) == "It is sunny."
    started, finish = events[0].run_started, events[-1].finish
    assert (started.provider, started.model) == ("anthropic", MODEL)
    assert finish.stop_reason == ev.STOP_REASON_END_TURN
    assert claude.requests_to("events.stream")[0].query == {"event_deltas[]": ["agent.message"]}
    session = claude.last_session
    assert [e["type"] for e in session.received] == ["user.message"]
    assert user_texts(session.received[0]) == ["weather?"]
    window = await daemon.window(started.session_id)
    assert [(e.kind, e.text) for e in window] == [
        (cpb.ENTRY_KIND_USER, "weather?"),
        (cpb.ENTRY_KIND_ASSISTANT, "It is sunny."),
    ]


async def test_whole_messages_without_token_deltas(
    start_daemon: DaemonFactory, claude: FakeManagedAgents, fake_a: FakeOpenAI
) -> None:
    """With token deltas off, each agent.message is one TextDelta."""
    daemon = await start_daemon(
        default_provider="anthropic", providers=providers(claude, fake_a, token_deltas=False)
    )
    claude.enqueue(Turn().message("one ", "piece").message(" and more"))
    events = await daemon.run("hi")
    assert kinds(events) == ["run_started", "text_delta", "text_delta", "finish"]
    assert text_of(events) == "one piece and more"
    assert claude.requests_to("events.stream")[0].query == {}


async def test_second_turn_reuses_agent_environment_and_session(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """Turn 2 of a conversation creates nothing and sends only the new message."""
    claude.enqueue(Turn().message("First."), Turn().message("Second."))
    first = await daemon.run("one")
    session_id = first[0].run_started.session_id
    second = await daemon.run("two", session_id=session_id)
    assert text_of(second) == "Second."
    assert claude.created == {"agent": 1, "environment": 1, "session": 1}
    received = claude.last_session.received
    assert [user_texts(e) for e in received] == [["one"], ["two"]]
    agent = next(iter(claude.agents.values()))
    assert agent["model"]["id"] == MODEL
    assert [t["name"] for t in agent["tools"]] == ["search_conversations"]


async def test_usage_and_cost_in_finish_and_ledger(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """Usage of every model request is summed, cache tokens included, and priced."""
    claude.enqueue(
        Turn()
        .message("a")
        .usage(100, 20, cache_creation_input_tokens=10, cache_read_input_tokens=50)
        .message("b")
        .usage(7, 3)
    )
    events = await daemon.run("count")
    usage = events[-1].finish.usage
    assert (usage.input_tokens, usage.output_tokens) == (167, 23)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (50, 10)
    expected = catalog.cost_usd(
        catalog.price("anthropic", MODEL),
        Usage(input_tokens=167, output_tokens=23, cache_read_tokens=50, cache_write_tokens=10),
    )
    assert expected > 0
    assert events[-1].finish.cost.token_usd == pytest.approx(expected)
    ledger = await daemon.daemon.store.list_ledger(daemon.sandbox_id, events[0].run_id)
    assert [(row.provider, row.model, row.usage.input_tokens) for row in ledger] == [
        ("anthropic", MODEL, 167)
    ]
    assert ledger[0].cost_usd == pytest.approx(expected)


@pytest.mark.parametrize(
    ("reason", "stop"),
    [("budget_reached", ev.STOP_REASON_BUDGET_REACHED), ("refusal", ev.STOP_REASON_REFUSAL)],
)
async def test_idle_stop_reasons_finish_the_turn(
    daemon: RunningDaemon, claude: FakeManagedAgents, reason: Any, stop: int
) -> None:
    """An idle budget_reached or refusal is a Finish with that stop reason."""
    claude.enqueue(Turn().message("partial").idle(reason))
    events = await daemon.run("go")
    assert events[-1].finish.stop_reason == stop


# ---- tools ----------------------------------------------------------------------------


async def test_two_custom_tools_answered_in_one_batch(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """Two custom tool uses run in the router; their results go back in one events.send."""
    await daemon.run("I like green apples")  # something to find
    claude.enqueue(
        Turn()
        .custom_tool_use("search_conversations", {"query": "apples"}, id="sevt_a")
        .custom_tool_use("no_such_tool", {}, id="sevt_b"),
        Turn().message("You like green apples."),
    )
    events = await daemon.run("what do I like?")
    assert_well_formed(events)
    assert kinds(events) == [
        "run_started",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "text_delta",
        "finish",
    ]
    assert events[1].tool_call.call_id == "sevt_a"
    assert not events[1].tool_call.provider_executed
    hits = orjson.loads(events[2].tool_result.result_json)["results"]
    assert any("green apples" in hit["text"] for hit in hits)
    assert "unknown tool" in events[4].tool_result.error
    session = claude.last_session
    batches = [r.body["events"] for r in claude.requests_to("events.send")]
    results = [b for b in batches if b[0]["type"] == "user.custom_tool_result"]
    assert len(results) == 1
    assert [e["custom_tool_use_id"] for e in results[0]] == ["sevt_a", "sevt_b"]
    assert [e["is_error"] for e in results[0]] == [False, True]
    assert session.pending == []
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.kind for e in window][-5:] == [
        cpb.ENTRY_KIND_TOOL_CALL,
        cpb.ENTRY_KIND_TOOL_RESULT,
        cpb.ENTRY_KIND_TOOL_CALL,
        cpb.ENTRY_KIND_TOOL_RESULT,
        cpb.ENTRY_KIND_ASSISTANT,
    ]


async def test_tool_schemas_are_cleaned_for_the_service(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """The agent's custom tools carry no keyword the service rejects."""
    await daemon.run("hi")
    agent = next(iter(claude.agents.values()))
    schema = agent["tools"][0]["input_schema"]
    assert schema["type"] == "object"
    text = orjson.dumps(schema).decode()
    for keyword in ("$schema", "$ref", "$defs", "additionalProperties"):
        assert keyword not in text


async def test_server_side_tools_are_surfaced_and_recorded(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """agent.tool_use / agent.mcp_tool_use and their results become provider-executed events."""
    claude.enqueue(
        Turn()
        .tool_use("web_search", {"q": "news"}, result="headlines", id="sevt_ws")
        .mcp_tool_use("docs", "lookup", {"page": 2}, result="missing", is_error=True, id="sevt_m")
        .message("Done.")
    )
    events = await daemon.run("search")
    assert kinds(events) == [
        "run_started",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "text_delta",
        "finish",
    ]
    call, result = events[1].tool_call, events[2].tool_result
    assert (call.call_id, call.name, call.provider_executed) == ("sevt_ws", "web_search", True)
    assert orjson.loads(call.arguments_json) == {"q": "news"}
    assert (result.call_id, result.provider_executed) == ("sevt_ws", True)
    assert orjson.loads(result.result_json) == "headlines"
    assert events[3].tool_call.name == "docs.lookup"
    assert events[4].tool_result.error == "missing"
    window = await daemon.window(events[0].run_started.session_id)
    assert [(e.kind, e.tool_name) for e in window][1:3] == [
        (cpb.ENTRY_KIND_TOOL_CALL, "web_search"),
        (cpb.ENTRY_KIND_TOOL_RESULT, "web_search"),
    ]


async def test_tool_that_asks_for_confirmation_is_denied(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A server tool under an ask permission is denied; the turn goes on."""
    claude.enqueue(
        Turn().tool_use("bash", {"cmd": "ls"}, permission="ask", id="sevt_ask"),
        Turn().message("Fine, I won't."),
    )
    events = await daemon.run("list files")
    assert text_of(events) == "Fine, I won't."
    confirmations = claude.last_session.events("user.tool_confirmation")
    assert [(c["tool_use_id"], c["result"]) for c in confirmations] == [("sevt_ask", "deny")]


async def test_tool_limit_interrupts_the_session(
    start_daemon: DaemonFactory, claude: FakeManagedAgents, fake_a: FakeOpenAI
) -> None:
    """Beyond the tool iteration cap the session is interrupted and the turn ends tool_limit."""
    daemon = await start_daemon(
        default_provider="anthropic",
        providers=providers(claude, fake_a),
        runs={"coalesce_deltas": False, "max_tool_iterations": 1},
    )
    use = {"query": "x"}
    claude.enqueue(
        Turn().custom_tool_use("search_conversations", use),
        Turn().custom_tool_use("search_conversations", use),
        Turn().message("never"),
    )
    events = await daemon.run("loop")
    assert events[-1].finish.stop_reason == ev.STOP_REASON_TOOL_LIMIT
    await claude.wait_for_events(claude.last_session.id, 1, "user.interrupt")


# ---- resources ------------------------------------------------------------------------


async def test_fifty_concurrent_first_turns_create_one_agent(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """The resource cache creates one agent and one environment for 50 concurrent runs."""
    runs = await asyncio.gather(*(daemon.run("hi", end_user_id=f"u-{i}") for i in range(50)))
    assert all(r[-1].HasField("finish") for r in runs)
    assert claude.created == {"agent": 1, "environment": 1, "session": 50}
    assert len(claude.requests_to("agents.create")) == 1


async def test_prompt_change_makes_a_new_agent_and_session(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A changed system prompt creates a second agent; the conversation moves to a new session
    that gets the earlier turns handed over; an unchanged prompt creates nothing."""
    claude.enqueue(Turn().message("Ahoy."), Turn().message("Good day."))
    first = await daemon.run("greet me", system="You are a pirate.")
    session_id = first[0].run_started.session_id
    old_session = claude.last_session
    second = await daemon.run("again", system="You are a butler.", session_id=session_id)
    assert text_of(second) == "Good day."
    assert claude.created == {"agent": 2, "environment": 1, "session": 2}
    systems = sorted(a["system"] for a in claude.agents.values())
    assert systems == ["You are a butler.", "You are a pirate."]
    new_session = claude.last_session
    assert new_session.id != old_session.id
    transcript, message = user_texts(new_session.received[0])
    assert "greet me" in transcript
    assert "Ahoy." in transcript
    assert message == "again"
    await daemon.run("once more", system="You are a butler.", session_id=session_id)
    assert claude.created == {"agent": 2, "environment": 1, "session": 2}


async def test_lost_session_is_recreated_with_the_history(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A stored session the service no longer has (404) is replaced, history handed over."""
    claude.enqueue(Turn().message("Noted: blue."), Turn().message("Blue."))
    first = await daemon.run("my colour is blue")
    session_id = first[0].run_started.session_id
    async with AsyncAnthropic(api_key=KEY, base_url=claude.base_url) as sdk:
        await sdk.beta.sessions.delete(claude.last_session.id)
    second = await daemon.run("what is my colour?", session_id=session_id)
    assert text_of(second) == "Blue."
    assert claude.created["session"] == 2
    transcript, message = user_texts(claude.last_session.received[0])
    assert "my colour is blue" in transcript
    assert "Noted: blue." in transcript
    assert message == "what is my colour?"


# ---- portability ----------------------------------------------------------------------


async def test_conversation_moves_between_openai_and_anthropic(
    daemon: RunningDaemon, claude: FakeManagedAgents, fake_a: FakeOpenAI
) -> None:
    """Turn 1 on the OpenAI-compatible fake, 2 on Anthropic, 3 back, 4 on Anthropic again:
    each side sees what it missed, and Anthropic's session gets only the turns it missed."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "order"}'),
        Reply().text("Order 42 ships Monday."),
    )
    first = await daemon.run("where is order 42?", provider="fake")
    session_id = first[0].run_started.session_id
    claude.enqueue(Turn().message("It ships Monday."))
    await daemon.run("when again?", provider="anthropic", session_id=session_id)
    transcript, message = user_texts(claude.last_session.received[0])
    assert "[user]: where is order 42?" in transcript
    assert "[assistant called tool search_conversations" in transcript
    assert "[assistant]: Order 42 ships Monday." in transcript
    assert message == "when again?"

    fake_a.enqueue(Reply().text("Yes, Monday."))
    await daemon.run("sure?", provider="fake", session_id=session_id)
    contents = [m["content"] for m in fake_a.requests[-1].body["messages"]]
    assert "It ships Monday." in contents
    assert "when again?" in contents

    claude.enqueue(Turn().message("Certain."))
    await daemon.run("thanks", provider="anthropic", session_id=session_id)
    assert claude.created["session"] == 1  # the same session, told only what it missed
    transcript, message = user_texts(claude.last_session.received[1])
    assert "[user]: sure?" in transcript
    assert "[assistant]: Yes, Monday." in transcript
    assert "where is order 42?" not in transcript
    assert message == "thanks"


# ---- failures -------------------------------------------------------------------------


async def test_mid_stream_disconnect_is_an_error_event_and_the_window_holds(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A stream cut after the first event ends with an Error event; what came is kept."""
    claude.enqueue(Turn().message("Half an ans").disconnect())
    events = await daemon.run("tell me")
    assert_well_formed(events)
    assert kinds(events)[-1] == "error"
    error = events[-1].error
    assert (error.code, error.retryable, error.provider) == ("UNAVAILABLE", True, "anthropic")
    window = await daemon.window(events[0].run_started.session_id)
    assert [(e.kind, e.text) for e in window] == [
        (cpb.ENTRY_KIND_USER, "tell me"),
        (cpb.ENTRY_KIND_ASSISTANT, "Half an ans"),
    ]


async def test_terminal_session_error_ends_the_turn_and_the_session(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A terminal session.error is an Error event with the service's message; the next turn
    starts a new session."""
    claude.enqueue(
        Turn().message("Hm").error("api_error", "the sandbox crashed", retry_status="terminal")
    )
    events = await daemon.run("go")
    assert events[-1].error.code == "UNAVAILABLE"
    assert "terminated" in events[-1].error.message
    assert "the sandbox crashed" in events[-1].error.message
    claude.enqueue(Turn().message("Back."))
    again = await daemon.run("retry", session_id=events[0].run_started.session_id)
    assert text_of(again) == "Back."
    assert claude.created["session"] == 2


async def test_retries_exhausted_before_any_event_is_a_status(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A session that gives up before producing anything fails the call with UNAVAILABLE;
    the session that saw the withdrawn message is not continued by the next turn."""
    claude.enqueue(Turn().error("model_overloaded_error", "too busy", retry_status="exhausted"))
    error = await run_status(daemon, "go")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "too busy" in (error.details() or "")
    events = await daemon.run("go")
    assert events[-1].HasField("finish")
    assert len(claude.requests_to("sessions.create")) == 2


async def test_rate_limited_create_is_retried_after_retry_after(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A 429 before the first event is retried (retry-after honoured) and the turn succeeds."""
    claude.fail("sessions.create", 429, retry_after=0.05)
    claude.fail("agents.create", 529)
    events = await daemon.run("hi")
    assert events[-1].HasField("finish")
    assert len(claude.requests_to("sessions.create")) == 2
    assert len(claude.requests_to("agents.create")) == 2


async def test_persistent_overload_is_unavailable(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """529 on every attempt to send the message fails the call UNAVAILABLE, retryable."""
    claude.fail("events.send", 529, times=3)
    error = await run_status(daemon, "hi")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in (error.details() or "")
    assert len(claude.requests_to("events.send")) == 3


async def test_rejected_key_is_failed_precondition(
    start_daemon: DaemonFactory, claude: FakeManagedAgents, fake_a: FakeOpenAI
) -> None:
    """A key the service rejects (401) is FAILED_PRECONDITION naming what to fix, not retried."""
    daemon = await start_daemon(
        default_provider="anthropic", providers=providers(claude, fake_a, api_key="sk-wrong")
    )
    error = await run_status(daemon, "hi")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "anthropic_api_key" in (error.details() or "")
    assert "sk-wrong" not in (error.details() or "")
    assert len(claude.requests) == 1


async def test_sandbox_brings_its_own_key(daemon: RunningDaemon, claude: FakeManagedAgents) -> None:
    """A sandbox's secret anthropic_api_key is used for its runs; others use the deployment's,
    and each sandbox has its own agent."""
    other_id, other_key = await daemon.new_sandbox("byok")
    await daemon.sandboxes.SetSecret(
        sandboxes_pb2.SetSecretRequest(
            sandbox_id=other_id, name="anthropic_api_key", value="sk-ant-own"
        ),
        metadata=daemon.operator(),
    )
    claude.api_key = "sk-ant-own"
    events = await daemon.run("hi", key=other_key)
    assert events[-1].HasField("finish")
    assert {r.headers["authorization"] for r in claude.requests} == {"Bearer sk-ant-own"}
    claude.api_key = KEY
    seen = len(claude.requests)
    events = await daemon.run("hi")
    assert events[-1].HasField("finish")
    assert {r.headers["authorization"] for r in claude.requests[seen:]} == {f"Bearer {KEY}"}
    assert claude.created["agent"] == 2
    names = await daemon.sandboxes.ListSecrets(
        sandboxes_pb2.ListSecretsRequest(sandbox_id=other_id), metadata=daemon.operator()
    )
    assert list(names.names) == ["anthropic_api_key"]


async def test_unknown_claude_model_is_invalid_argument(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """A model outside the table is refused before anything is stored or created."""
    error = await run_status(daemon, "hi", model="claude-nonexistent")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model" in (error.details() or "")
    assert claude.requests == []


# ---- cancellation ---------------------------------------------------------------------


async def test_client_cancel_interrupts_the_session_and_closes_the_stream(
    daemon: RunningDaemon, claude: FakeManagedAgents
) -> None:
    """Cancelling mid-turn sends user.interrupt and closes the event stream; text is kept."""
    claude.enqueue(Turn().message("Thinking out loud").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(message="long task", end_user_id="u-1"), metadata=daemon.auth()
    )
    seen = []
    async for event in call:
        seen.append(event)
        if event.HasField("text_delta"):
            break
    call.cancel()
    await claude.wait_for_disconnects(1)
    await claude.wait_for_events(claude.last_session.id, 1, "user.interrupt")
    session_id = seen[0].run_started.session_id

    async def recorded() -> list[Any]:
        return [(e.kind, e.text) for e in await daemon.window(session_id)]

    for _ in range(100):
        if len(await recorded()) == 2:
            break
        await asyncio.sleep(0.05)
    assert await recorded() == [
        (cpb.ENTRY_KIND_USER, "long task"),
        (cpb.ENTRY_KIND_ASSISTANT, "Thinking out loud"),
    ]
