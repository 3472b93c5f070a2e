"""The Managed Agents fake, driven only through the unmodified ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsAgent, BetaManagedAgentsSession
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from tests.fakes.anthropic_managed import BETA, DEFAULT_USAGE, FakeManagedAgents, Turn

KEY = "sk-ant-test"
SEARCH = {
    "type": "custom",
    "name": "search",
    "description": "Search the web.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
LOOKUP = {
    "type": "custom",
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
}
IDLE_OR_END = ("session.status_idle", "session.status_terminated")


@pytest.fixture
async def fake() -> AsyncIterator[FakeManagedAgents]:
    async with FakeManagedAgents(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeManagedAgents) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as client:
        yield client


@pytest.fixture
async def session_id(client: AsyncAnthropic) -> str:
    agent = await client.beta.agents.create(
        model="claude-sonnet-4-5", name="router", system="Be brief.", tools=[SEARCH, LOOKUP]
    )
    environment = await client.beta.environments.create(
        name="env", config={"type": "cloud", "networking": {"type": "unrestricted"}}
    )
    session = await client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    return session.id


def user(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def result(tool_use_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": tool_use_id,
        "content": [{"type": "text", "text": text}],
        "is_error": False,
    }


async def read_until(stream: Any, *types: str) -> list[Any]:
    """Read the stream up to and including the first event of one of ``types``."""
    events = []
    async with asyncio.timeout(5):
        while True:
            event = await anext(stream)
            events.append(event)
            if event.type in types:
                return events


async def turn(client: AsyncAnthropic, session_id: str, *events: dict[str, Any]) -> list[Any]:
    """Open a stream, send ``events`` and read until the session idles or terminates."""
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=list(events))
        return await read_until(stream, *IDLE_OR_END)


def kinds(events: list[Any]) -> list[str]:
    return [event.type for event in events]


# ---- resources ------------------------------------------------------------------------


async def test_creates_agent_environment_and_session(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Creates answer with typed resources, are counted, and carry the SDK's beta headers."""
    session = await client.beta.sessions.retrieve(session_id)
    assert session.id.startswith("sesn_")
    assert session.status == "idle"
    assert session.agent.version == 1
    assert [tool.name for tool in session.agent.tools] == ["search", "lookup"]
    assert session.environment_id in fake.environments
    assert fake.created == {"agent": 1, "environment": 1, "session": 1}
    for request in fake.requests:
        assert request.headers["anthropic-beta"] == BETA
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert "anthropic-version" in request.headers
    assert [r.endpoint for r in fake.requests] == [
        "agents.create",
        "environments.create",
        "sessions.create",
        "sessions.retrieve",
    ]


async def test_agent_update_versions_only_on_change(
    fake: FakeManagedAgents, client: AsyncAnthropic
) -> None:
    """An update bumps the version only when it changes something; a stale version is a 400."""
    agent = await client.beta.agents.create(model="claude-sonnet-4-5", name="a", system="one")
    updated = await client.beta.agents.update(agent.id, version=1, system="two")
    assert (updated.version, updated.system) == (2, "two")
    same = await client.beta.agents.update(agent.id, version=2, system="two")
    assert same.version == 2
    with pytest.raises(anthropic.BadRequestError, match="version"):
        await client.beta.agents.update(agent.id, version=1, system="three")
    environment = await client.beta.environments.create(name="e")
    pinned = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=environment.id
    )
    assert (pinned.agent.version, pinned.agent.system) == (1, "one")
    assert fake.created["agent"] == 1


async def test_x_api_key_accepted_and_wrong_key_refused(
    fake: FakeManagedAgents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is accepted as x-api-key as well as a bearer token; a wrong key is a 401."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    headers = {"x-api-key": KEY}
    async with AsyncAnthropic(api_key=None, default_headers=headers, base_url=fake.base_url) as c:
        await c.beta.environments.create(name="e")
    assert "authorization" not in fake.requests[-1].headers
    async with AsyncAnthropic(api_key="wrong", base_url=fake.base_url, max_retries=0) as c:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await c.beta.environments.create(name="e")
    assert caught.value.body["error"]["type"] == "authentication_error"


# ---- turns --------------------------------------------------------------------------------


async def test_text_turn_sends_the_whole_message(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Without deltas a turn is the echo, running, a model request span, the message, idle."""
    fake.enqueue(Turn().message("Hi ", "there.").usage(12, 3, cache_read_input_tokens=7))
    events = await turn(client, session_id, user("hello"))
    assert kinds(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert events[0].content[0].text == "hello"
    assert events[3].content[0].text == "Hi there."
    assert events[4].model_request_start_id == events[2].id
    assert events[4].model_usage.input_tokens == 12
    assert events[4].model_usage.cache_read_input_tokens == 7
    assert events[5].stop_reason.type == "end_turn"
    session = await client.beta.sessions.retrieve(session_id)
    assert (session.usage.input_tokens, session.usage.output_tokens) == (12, 3)


async def test_text_turn_with_event_deltas(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """event_deltas[]=agent.message previews the message as event_start and content_delta pieces."""
    fake.enqueue(Turn().thinking().message("Hi ", "there."))
    stream = await client.beta.sessions.events.stream(session_id, event_deltas=["agent.message"])
    async with stream:
        await client.beta.sessions.events.send(session_id, events=[user("hello")])
        events = await read_until(stream, "session.status_idle")
    assert fake.requests_to("events.stream")[0].query == {"event_deltas[]": ["agent.message"]}
    assert kinds(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.thinking",  # no preview: only agent.message previews were asked for
        "event_start",
        "event_delta",
        "event_delta",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    start, deltas, message = events[4], events[5:7], events[7]
    assert start.event.type == "agent.message"
    assert start.event.id == message.id
    assert all(d.event_id == message.id and d.delta.type == "content_delta" for d in deltas)
    assert "".join(d.delta.content.text for d in deltas) == message.content[0].text
    assert events[8].model_usage.output_tokens == DEFAULT_USAGE["output_tokens"]


async def test_stream_is_live_only(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """A new stream never replays history; events with no stream open are recorded as unheard."""
    await client.beta.sessions.events.send(session_id, events=[user("nobody listens")])
    session = await fake.wait_for_idle(session_id)
    assert [e["type"] for e in session.unheard][-1] == "session.status_idle"
    events = await turn(client, session_id, user("now I listen"))
    assert events[0].content[0].text == "now I listen"
    assert len(session.history) == len(session.unheard) + len(events)


async def test_two_custom_tools_answered_in_one_batch(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Two custom tool uses idle with requires_action; one batch of results resumes the turn."""
    fake.enqueue(
        Turn().custom_tool_use("search", {"q": "weather"}).custom_tool_use("lookup", {"word": "x"}),
        Turn().message("Sunny."),
    )
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("weather?")])
        first = await read_until(stream, "session.status_idle")
        uses = [e for e in first if e.type == "agent.custom_tool_use"]
        assert [(u.name, u.input) for u in uses] == [
            ("search", {"q": "weather"}),
            ("lookup", {"word": "x"}),
        ]
        assert first[-1].stop_reason.type == "requires_action"
        assert first[-1].stop_reason.event_ids == [u.id for u in uses]
        answers = [result(uses[0].id, '{"sky": "blue"}'), result(uses[1].id, "a letter")]
        await client.beta.sessions.events.send(session_id, events=answers)
        second = await read_until(stream, "session.status_idle")
    assert kinds(second) == [
        "user.custom_tool_result",
        "user.custom_tool_result",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert second[-1].stop_reason.type == "end_turn"
    received = await fake.wait_for_events(session_id, 2, "user.custom_tool_result")
    assert [e["custom_tool_use_id"] for e in received] == [u.id for u in uses]


async def test_partial_answer_reidles_with_the_rest(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Answering some tool uses re-idles with requires_action for the ones still open."""
    fake.enqueue(
        Turn().custom_tool_use("search", id="sevt_a").custom_tool_use("lookup", id="sevt_b"),
        Turn().message("done"),
    )
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        await read_until(stream, "session.status_idle")
        await client.beta.sessions.events.send(session_id, events=[result("sevt_b", "b")])
        partial = await read_until(stream, "session.status_idle")
        assert kinds(partial) == ["user.custom_tool_result", "session.status_idle"]
        assert partial[-1].stop_reason.event_ids == ["sevt_a"]
        await client.beta.sessions.events.send(session_id, events=[result("sevt_a", "a")])
        rest = await read_until(stream, "session.status_idle")
    assert rest[-2].type == "span.model_request_end"
    assert rest[-1].stop_reason.type == "end_turn"


async def test_answering_an_unrequested_id_is_400(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """A tool result for an id the session is not waiting on is a 400 naming the id."""
    fake.enqueue(Turn().custom_tool_use("search", id="sevt_wanted"))
    await turn(client, session_id, user("go"))
    with pytest.raises(anthropic.BadRequestError, match="sevt_other"):
        await client.beta.sessions.events.send(session_id, events=[result("sevt_other", "x")])
    answer = result("sevt_wanted", "x")
    with pytest.raises(anthropic.BadRequestError, match="twice"):
        await client.beta.sessions.events.send(session_id, events=[answer, answer])
    assert fake.last_session.pending == ["sevt_wanted"]


async def test_server_side_tools_and_confirmation(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Built-in tools run server-side; an MCP tool under ``ask`` waits for a confirmation."""
    fake.enqueue(
        Turn()
        .tool_use("bash", {"command": "ls"}, result="a.txt")
        .mcp_tool_use("github", "search_issues", {"q": "bug"}, permission="ask", id="sevt_ask"),
        Turn().message("Found it."),
    )
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        first = await read_until(stream, "session.status_idle")
        assert kinds(first)[2:] == [
            "span.model_request_start",
            "agent.tool_use",
            "span.model_request_end",
            "agent.tool_result",
            "span.model_request_start",
            "agent.mcp_tool_use",
            "span.model_request_end",
            "session.status_idle",
        ]
        assert first[5].tool_use_id == first[3].id
        assert first[7].evaluated_permission == "ask"
        assert first[-1].stop_reason.event_ids == ["sevt_ask"]
        confirm = {"type": "user.tool_confirmation", "tool_use_id": "sevt_ask", "result": "allow"}
        await client.beta.sessions.events.send(session_id, events=[confirm])
        second = await read_until(stream, "session.status_idle")
    assert kinds(second)[:4] == [
        "user.tool_confirmation",
        "session.status_running",
        "agent.mcp_tool_result",
        "span.model_request_start",
    ]
    assert second[2].mcp_tool_use_id == "sevt_ask"


async def test_interrupt_ends_a_stalled_turn(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """user.interrupt is recorded and ends a stalled turn: a span end closes the preview, idle."""
    fake.enqueue(Turn().partial_message("Hel").stall())
    stream = await client.beta.sessions.events.stream(session_id, event_deltas=["agent.message"])
    async with stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        await read_until(stream, "event_delta")
        await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        events = await read_until(stream, "session.status_idle")
    assert kinds(events) == ["user.interrupt", "span.model_request_end", "session.status_idle"]
    assert events[-1].stop_reason.type == "end_turn"
    assert await fake.wait_for_events(session_id, 1, "user.interrupt")
    assert fake.last_session.events("agent.message") == []


# ---- validation -------------------------------------------------------------------------

Call = Callable[[AsyncAnthropic, str], Awaitable[object]]


def _agent_with(**extra: Any) -> Call:
    async def call(client: AsyncAnthropic, session_id: str) -> object:
        return await client.beta.agents.create(model="claude-sonnet-4-5", name="a", **extra)

    return call


def _stream(**options: Any) -> Call:
    async def call(client: AsyncAnthropic, session_id: str) -> object:
        return await client.beta.sessions.events.stream(session_id, **options)

    return call


def _send(*events: dict[str, Any]) -> Call:
    async def call(client: AsyncAnthropic, session_id: str) -> object:
        return await client.beta.sessions.events.send(session_id, events=list(events))

    return call


@pytest.mark.parametrize(
    ("call", "complaint"),
    [
        (_agent_with(extra_body={"temperature": 0.2}), "temperature: Extra inputs"),
        (_agent_with(tools=[{**SEARCH, "strict": True}]), "tools.0.strict: Extra inputs"),
        (_agent_with(tools=[{"type": "custom", "name": "x"}]), "tools.0.description: Field req"),
        (_agent_with(system=3), "system: Input should be"),
        (_send({"type": "user.custom_tool_result"}), "events.0.custom_tool_use_id: Field req"),
        (_send({"type": "user.msg", "content": []}), "events.0.type: Input tag 'user.msg'"),
        (_send({"type": "user.message", "content": []}), "events.0.content: List should"),
        (_send({"type": "user.interrupt", "reason": "x"}), "events.0.reason: Extra inputs"),
        (_stream(event_deltas=["agent.tool_use"]), "event_deltas: 'agent.tool_use' is not"),
        (_stream(extra_query={"types": "x"}), "types: unknown query parameter"),
        (_agent_with(extra_headers={"anthropic-beta": "files-api-2025-04-14"}), "anthropic-beta"),
    ],
)
async def test_strict_validation_names_the_field(
    client: AsyncAnthropic, session_id: str, call: Call, complaint: str
) -> None:
    """Unknown, missing or mistyped fields are a 400 invalid_request_error naming the field."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await call(client, session_id)
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(complaint)


@pytest.mark.parametrize("keyword", ["$schema", "$id", "$defs", "$ref", "additionalProperties"])
@pytest.mark.parametrize("nested", [False, True])
async def test_schema_keywords_are_rejected(
    client: AsyncAnthropic, keyword: str, nested: bool
) -> None:
    """Custom tool schemas with $schema/$id/$defs/$ref/additionalProperties anywhere are a 400."""
    schema: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "object"}}}
    target = schema["properties"]["q"] if nested else schema
    target[keyword] = False if keyword == "additionalProperties" else "x"
    where = "input_schema.properties.q." if nested else "input_schema."
    with pytest.raises(
        anthropic.BadRequestError, match=f"tools.0.{where}{keyword}".replace("$", r"\$")
    ):
        await client.beta.agents.create(
            model="claude-sonnet-4-5", name="a", tools=[{**SEARCH, "input_schema": schema}]
        )


async def test_initial_events_are_limited(client: AsyncAnthropic, session_id: str) -> None:
    """initial_events holds at most 50 events, and only user.message or user.define_outcome."""
    session = await client.beta.sessions.retrieve(session_id)
    create = client.beta.sessions.create
    with pytest.raises(anthropic.BadRequestError, match="at most 50"):
        await create(
            agent=session.agent.id,
            environment_id=session.environment_id,
            initial_events=[user("x")] * 51,
        )
    with pytest.raises(anthropic.BadRequestError, match=r"Input tag 'user\.interrupt'"):
        await create(
            agent=session.agent.id,
            environment_id=session.environment_id,
            initial_events=[{"type": "user.interrupt"}],
        )


async def test_unknown_session_is_404(fake: FakeManagedAgents, client: AsyncAnthropic) -> None:
    """Every session route answers an unknown id with 404 not_found_error."""
    calls = [
        client.beta.sessions.retrieve("sesn_nope"),
        client.beta.sessions.delete("sesn_nope"),
        client.beta.sessions.events.send("sesn_nope", events=[user("x")]),
        client.beta.sessions.events.stream("sesn_nope"),
    ]
    for call in calls:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await call
        assert caught.value.body["error"]["type"] == "not_found_error"


# ---- failures ----------------------------------------------------------------------------


async def test_rate_limit_is_retried_by_the_sdk(fake: FakeManagedAgents) -> None:
    """A 429 with retry-after is retried by the SDK, so the fake sees the create twice."""
    fake.fail("environments.create", 429, retry_after=0.01)
    async with AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=1) as client:
        await client.beta.environments.create(name="e")
    requests = fake.requests_to("environments.create")
    assert [r.headers["x-stainless-retry-count"] for r in requests] == ["0", "1"]
    assert fake.created["environment"] == 1


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_scripted_http_errors(
    fake: FakeManagedAgents,
    client: AsyncAnthropic,
    session_id: str,
    status: int,
    error: type[anthropic.APIStatusError],
    kind: str,
) -> None:
    """A scripted HTTP failure has the status and Anthropic error body the SDK maps to its class."""
    fake.fail("events.stream", status)
    with pytest.raises(error) as caught:
        await client.beta.sessions.events.stream(session_id)
    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == kind
    assert caught.value.request_id is not None
    async with await client.beta.sessions.events.stream(session_id):  # only once
        pass


@pytest.mark.parametrize(
    ("script", "stop"),
    [
        (
            Turn().error("model_rate_limited_error", "slow down", retry_status="exhausted"),
            "retries_exhausted",
        ),
        (Turn().idle("budget_reached"), "budget_reached"),
        (Turn().message("no").idle("refusal"), "refusal"),
    ],
)
async def test_turn_ends_with_a_scripted_stop_reason(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str, script: Turn, stop: str
) -> None:
    """Exhausted retries, a reached budget and a refusal each idle with their stop reason."""
    fake.enqueue(script)
    events = await turn(client, session_id, user("go"))
    assert events[-1].stop_reason.type == stop
    if stop == "refusal":
        assert events[-1].stop_details.type == "refusal"
    if stop == "retries_exhausted":
        error = next(e for e in events if e.type == "session.error")
        assert (error.error.type, error.error.retry_status.type) == (
            "model_rate_limited_error",
            "exhausted",
        )


async def test_terminal_session_error_terminates(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """A terminal session.error fails the model request, terminates the session and ends streams."""
    fake.enqueue(
        Turn()
        .message("partial")
        .error("model_request_failed_error", "boom", retry_status="terminal")
    )
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        events = await read_until(stream, "session.status_terminated")
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    assert kinds(events)[-3:] == [
        "span.model_request_end",
        "session.error",
        "session.status_terminated",
    ]
    assert events[-3].is_error is True
    assert events[-2].error.message == "boom"
    with pytest.raises(anthropic.BadRequestError, match="terminated"):
        await client.beta.sessions.events.send(session_id, events=[user("again")])


async def test_ping_frames_are_skipped_by_the_sdk(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """``event: ping`` frames reach the client but the SDK yields no event for them."""
    fake.enqueue(Turn().ping().message("after a ping").ping())
    events = await turn(client, session_id, user("go"))
    assert "ping" not in kinds(events)
    assert kinds(events)[3] == "agent.message"


async def test_error_frame_raises_in_the_sdk(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """An ``event: error`` frame makes the SDK raise APIStatusError with the error body."""
    fake.enqueue(Turn().error_frame("overloaded_error", "Overloaded").message("unheard"))
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read_until(stream, *IDLE_OR_END)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_disconnect_cuts_the_stream_and_the_session_goes_on(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """A scripted disconnect cuts the body mid-stream; the turn still finishes server-side."""
    fake.enqueue(Turn().message("before").disconnect().message("after"))
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        seen = await read_until(stream, "agent.message")
        with pytest.raises(httpx2.RemoteProtocolError):
            await read_until(stream, *IDLE_OR_END)
    assert seen[-1].content[0].text == "before"
    session = await fake.wait_for_idle(session_id)
    assert [e["type"] for e in session.unheard] == [
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    texts = [
        e.content[0].text
        async for e in client.beta.sessions.events.list(session_id, types=["agent.message"])
    ]
    assert texts == ["before", "after"]


async def test_client_closing_a_stalled_stream_is_a_disconnect(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """A client that closes its stream during a stall is counted as a disconnect."""
    fake.enqueue(Turn().message("thinking hard").stall())
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await client.beta.sessions.events.send(session_id, events=[user("go")])
        await read_until(stream, "agent.message")
    await fake.wait_for_disconnects(1)
    assert fake.last_session.busy


# ---- the rest of the surface --------------------------------------------------------------


async def test_events_list_pages_and_filters(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """events.list pages with next_page (types[] filter, order) over the session's history."""
    fake.enqueue(Turn().message("one"), Turn().message("two"))
    await turn(client, session_id, user("a"))
    await turn(client, session_id, user("b"))
    history = [e["id"] for e in fake.last_session.history]
    paged = [e.id async for e in client.beta.sessions.events.list(session_id, limit=3)]
    assert paged == history
    assert len(fake.requests_to("events.list")) == -(-len(history) // 3)
    messages = client.beta.sessions.events.list(
        session_id, types=["agent.message", "user.message"], order="desc"
    )
    assert [e.type async for e in messages] == ["agent.message", "user.message"] * 2
    assert fake.requests_to("events.list")[-1].query["types[]"] == ["agent.message", "user.message"]


async def test_delete_ends_open_streams(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Deleting a session sends session.deleted, ends its streams, and later calls are 404."""
    async with await client.beta.sessions.events.stream(session_id) as stream:
        await fake.wait_for_stream(session_id)
        deleted = await client.beta.sessions.delete(session_id)
        assert (deleted.id, deleted.type) == (session_id, "session_deleted")
        assert kinds(await read_until(stream, "session.deleted")) == ["session.deleted"]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.delete(session_id)


async def test_shutdown_ends_open_streams(client: AsyncAnthropic) -> None:
    """Leaving the fake ends a stalled stream cleanly instead of leaving the client hanging."""
    async with FakeManagedAgents() as fake:
        fake.default = Turn().stall()
        other = client.with_options(base_url=fake.base_url)
        agent = await other.beta.agents.create(model="claude-sonnet-4-5", name="a")
        environment = await other.beta.environments.create(name="e")
        session = await other.beta.sessions.create(agent=agent.id, environment_id=environment.id)
        stream = await other.beta.sessions.events.stream(session.id)
        await other.beta.sessions.events.send(session.id, events=[user("go")])
        await read_until(stream, "session.status_running")
    async with stream:
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_everything_sent_parses_strictly_as_sdk_models(
    fake: FakeManagedAgents, client: AsyncAnthropic, session_id: str
) -> None:
    """Every resource and event the fake produces validates against the SDK's pydantic models."""
    fake.enqueue(
        Turn().thinking().custom_tool_use("search", {"q": "x"}, id="sevt_t"),
        Turn()
        .tool_use("bash", {"command": "ls"})
        .error("model_overloaded_error", "busy")
        .message("ok")
        .idle("refusal"),
    )
    await turn(client, session_id, user("go"))
    await turn(client, session_id, result("sevt_t", "found"))
    await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
    session = fake.last_session
    events = pydantic.TypeAdapter(list[BetaManagedAgentsSessionEvent]).validate_python(
        session.history
    )
    assert {type(e).__name__ for e in events} >= {
        "BetaManagedAgentsAgentCustomToolUseEvent",
        "BetaManagedAgentsAgentToolResultEvent",
        "BetaManagedAgentsSessionErrorEvent",
        "BetaManagedAgentsUserInterruptEvent",
    }
    BetaManagedAgentsSession.model_validate(session.resource)
    for agent in fake.agents.values():
        BetaManagedAgentsAgent.model_validate(agent)
    for environment in fake.environments.values():
        BetaEnvironment.model_validate(environment)
