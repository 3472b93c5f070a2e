"""The Agent Engine fake, driven through plain httpx as the Google backend drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import orjson
import pytest
from aiohttp import web

from tests.fakes.vertex_agent_engine import (
    DEFAULT_AGENT_NAME,
    DEFAULT_ENGINE_ID,
    DEFAULT_LOCATION,
    DEFAULT_PROJECT,
    TOKEN_STATE_KEY,
    FakeAgentEngine,
    Turn,
    engine_name,
)

TOKEN = "ya29.fake-access-token"
USER = "u-1"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAgentEngine]:
    async with FakeAgentEngine(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(fake: FakeAgentEngine) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=5) as client:
        yield client


async def query(
    client: httpx.AsyncClient, fake: FakeAgentEngine, class_method: str, **input: Any
) -> httpx.Response:
    body = {"class_method": class_method, "input": input}
    return await client.post(fake.query_url(), json=body)


async def create_session(
    client: httpx.AsyncClient, fake: FakeAgentEngine, user_id: str = USER, **input: Any
) -> str:
    response = await query(client, fake, "async_create_session", user_id=user_id, **input)
    assert response.status_code == 200, response.text
    return str(response.json()["output"]["id"])


def parse_sse(body: str) -> list[dict[str, Any]]:
    """Every ``data:`` frame of an SSE body, strictly framed (no other kind of line)."""
    frames = []
    for chunk in body.split("\n\n"):
        if not chunk:
            continue
        assert chunk.startswith("data: "), chunk
        assert "\n" not in chunk, chunk
        frames.append(orjson.loads(chunk.removeprefix("data: ")))
    assert body.endswith("\n\n") or not body
    return frames


async def turn(
    client: httpx.AsyncClient,
    fake: FakeAgentEngine,
    session_id: str,
    message: str = "hello",
    user_id: str = USER,
    **input: Any,
) -> list[dict[str, Any]]:
    """Run one turn; return the streamed objects."""
    body = {
        "class_method": "async_stream_query",
        "input": {"message": message, "user_id": user_id, "session_id": session_id, **input},
    }
    async with client.stream("POST", fake.stream_query_url(), json=body) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"] == "text/event-stream"
        return parse_sse((await response.aread()).decode())


def texts(events: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(text, partial) for each event with a text part, thoughts excluded."""
    return [
        (part["text"], bool(event.get("partial")))
        for event in events
        for part in event.get("content", {}).get("parts", [])
        if "text" in part and not part.get("thought")
    ]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == response.status_code
    return dict(body["error"])


@dataclass
class Router:
    """A stand-in for the router's ``/v1/tools/dispatch`` endpoint: records and answers."""

    answers: list[tuple[int, Any]] = field(default_factory=list)  # (status, JSON body), in order
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(f"{request.method} {request.path}")
        self.received.append(
            ({k.lower(): v for k, v in request.headers.items()}, await request.read())
        )
        status, body = self.answers.pop(0) if self.answers else (200, {"result": "ok"})
        return web.json_response(body, status=status)


@pytest.fixture
async def router(fake: FakeAgentEngine) -> AsyncIterator[Router]:
    async with Router() as router:
        fake.router_url = router.base_url
        yield router


# ---- sessions ------------------------------------------------------------------------------


async def test_create_session_returns_the_adk_session(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """async_create_session answers {"output": session} with the given state, and is counted."""
    response = await query(
        client, fake, "async_create_session", user_id=USER, state={TOKEN_STATE_KEY: "t1"}
    )
    assert response.status_code == 200
    output = response.json()["output"]
    assert output["id"].isdigit()
    assert output["user_id"] == USER
    assert output["app_name"] == DEFAULT_ENGINE_ID
    assert output["state"] == {TOKEN_STATE_KEY: "t1"}
    assert output["events"] == []
    assert isinstance(output["last_update_time"], float)
    assert fake.sessions_created == 1
    session = fake.sessions[output["id"]]
    assert (session.user_id, session.engine, session.state) == (
        USER,
        fake.engine.name,
        {TOKEN_STATE_KEY: "t1"},
    )
    request = fake.requests[-1]
    assert request.path == (
        f"/v1/projects/{DEFAULT_PROJECT}/locations/{DEFAULT_LOCATION}"
        f"/reasoningEngines/{DEFAULT_ENGINE_ID}:query"
    )
    assert (
        request.engine
        == fake.engine.name
        == fake.engine_name(DEFAULT_PROJECT, DEFAULT_LOCATION, DEFAULT_ENGINE_ID)
    )
    assert request.class_method == "async_create_session"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    await fake.wait_for_sessions(1)


async def test_get_and_delete_session(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """async_get_session returns state and persisted history; after delete the session is a 404."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().text("a", "b"))
    await turn(client, fake, session_id, "hi", state_delta={"k": 1})
    got = await query(client, fake, "async_get_session", user_id=USER, session_id=session_id)
    output = got.json()["output"]
    assert output["state"] == {"k": 1}
    assert [(e["author"], e.get("partial")) for e in output["events"]] == [
        ("user", None),
        (DEFAULT_AGENT_NAME, None),  # partial events are not persisted
    ]
    assert output["events"][0]["content"] == {"role": "user", "parts": [{"text": "hi"}]}
    assert output["events"][0]["actions"]["state_delta"] == {"k": 1}
    deleted = await query(client, fake, "async_delete_session", user_id=USER, session_id=session_id)
    assert deleted.json() == {"output": None}
    assert fake.sessions[session_id].deleted
    again = await query(client, fake, "async_get_session", user_id=USER, session_id=session_id)
    assert error_of(again)["status"] == "NOT_FOUND"


# ---- turns ----------------------------------------------------------------------------------


async def test_text_streams_partials_then_one_aggregate(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """Text is partial chunks then one non-partial event with the whole text, same event id."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().text("It is ", "sunny", "."))
    events = await turn(client, fake, session_id, "weather?")
    assert texts(events) == [
        ("It is ", True),
        ("sunny", True),
        (".", True),
        ("It is sunny.", False),
    ]
    assert len({e["id"] for e in events}) == 1
    assert len({e["invocation_id"] for e in events}) == 1
    assert events[0]["invocation_id"].startswith("e-")
    for event in events:
        assert event["author"] == DEFAULT_AGENT_NAME
        assert event["content"]["role"] == "model"
        assert isinstance(event["timestamp"], float)
        assert set(event) <= {
            "id",
            "invocation_id",
            "author",
            "timestamp",
            "content",
            "partial",
            "actions",
        }
    assert "partial" not in events[-1]  # nulls dropped: non-partial has no key at all
    session = fake.sessions[session_id]
    assert session.messages == ["weather?"]
    assert session.events == events
    assert session.final_texts() == ["It is sunny."]
    assert session.turns_played == 1
    await fake.wait_for_turns(1)


async def test_default_turn_when_nothing_is_scripted(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """An unscripted turn plays the default: a short text with usage and STOP."""
    session_id = await create_session(client, fake)
    events = await turn(client, fake, session_id)
    assert texts(events)[-1] == ("Hello from the fake agent engine.", False)
    assert events[-1]["finish_reason"] == "STOP"
    assert events[-1]["usage_metadata"]["total_token_count"] == 15


async def test_thought_parts_are_marked(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """Thoughts stream like text with "thought": true, under their own event id."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().thought("Let me ", "think.").text("Done."))
    events = await turn(client, fake, session_id)
    parts = [(e["content"]["parts"], bool(e.get("partial"))) for e in events]
    assert parts == [
        ([{"text": "Let me ", "thought": True}], True),
        ([{"text": "think.", "thought": True}], True),
        ([{"text": "Let me think.", "thought": True}], False),
        ([{"text": "Done."}], True),
        ([{"text": "Done."}], False),
    ]
    assert events[0]["id"] == events[2]["id"] != events[3]["id"] == events[4]["id"]


async def test_usage_and_finish_reason(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """usage()/finish_reason() ride on the previous non-partial model event, or stand alone."""
    session_id = await create_session(client, fake)
    fake.enqueue(
        Turn()
        .function_call("lookup", {"q": "x"})
        .usage(7, 2)
        .function_response("lookup", {"found": True})
        .text("Hi", " there")
        .usage(40, 3, thoughts=5, cached=30)
        .finish_reason("MAX_TOKENS")
        .delay(0)
        .usage(1, 1, separate=True)
        .finish_reason("SAFETY")
    )
    events = await turn(client, fake, session_id)
    assert events[0]["usage_metadata"] == {
        "prompt_token_count": 7,
        "candidates_token_count": 2,
        "total_token_count": 9,  # zero thoughts and cached counts are left out
    }
    assert "usage_metadata" not in events[1]
    partials = [e for e in events if e.get("partial")]
    assert partials
    assert all("usage_metadata" not in e and "finish_reason" not in e for e in partials)
    final = events[-2]
    assert texts([final]) == [("Hi there", False)]
    assert final["finish_reason"] == "MAX_TOKENS"
    assert final["usage_metadata"] == {
        "prompt_token_count": 40,
        "candidates_token_count": 3,
        "thoughts_token_count": 5,
        "cached_content_token_count": 30,
        "total_token_count": 48,
    }
    standalone = events[-1]
    assert "content" not in standalone
    assert standalone["finish_reason"] == "SAFETY"
    assert standalone["usage_metadata"]["total_token_count"] == 2
    with pytest.raises(ValueError, match="already has usage"):
        Turn().text("x").usage(1, 1).usage(2, 2)


async def test_function_call_and_response_share_an_id(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """An agent-internal tool is a model function_call and a user-role function_response."""
    session_id = await create_session(client, fake)
    fake.enqueue(
        Turn().function_call("search", {"q": "a"}).function_response("search", {"hits": 2})
    )
    events = await turn(client, fake, session_id)
    call = events[0]["content"]
    answer = events[1]["content"]
    assert call["role"] == "model"
    assert answer["role"] == "user"
    assert call["parts"][0]["function_call"]["id"].startswith("adk-")
    assert call["parts"][0]["function_call"] == {
        "id": call["parts"][0]["function_call"]["id"],
        "name": "search",
        "args": {"q": "a"},
    }
    assert answer["parts"][0]["function_response"] == {
        "id": call["parts"][0]["function_call"]["id"],
        "name": "search",
        "response": {"hits": 2},
    }


async def test_state_delta_is_merged_before_the_turn(
    fake: FakeAgentEngine, client: httpx.AsyncClient, router: Router
) -> None:
    """state_delta merges into the session state before the turn, so its token is used at once."""
    session_id = await create_session(client, fake, state={"keep": 1, TOKEN_STATE_KEY: "old"})
    fake.enqueue(Turn().dispatch("search", {"q": "x"}))
    await turn(client, fake, session_id, state_delta={TOKEN_STATE_KEY: "fresh", "extra": [1]})
    session = fake.sessions[session_id]
    assert session.state == {"keep": 1, TOKEN_STATE_KEY: "fresh", "extra": [1]}
    assert session.state_deltas == [{TOKEN_STATE_KEY: "fresh", "extra": [1]}]
    assert router.received[0][0]["authorization"] == "Bearer fresh"


async def test_turn_queues_session_then_engine_then_default(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """A session's own queue plays first, then its engine's, then the default turn."""
    first = await create_session(client, fake)
    second = await create_session(client, fake)
    fake.enqueue(Turn().text("engine"))
    fake.enqueue(Turn().text("mine"), session_id=second)
    assert texts(await turn(client, fake, first))[-1][0] == "engine"
    assert texts(await turn(client, fake, second))[-1][0] == "mine"
    assert texts(await turn(client, fake, second))[-1][0].startswith("Hello from")


async def test_in_stream_error_is_a_bare_code_and_message(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """error() writes a top-level {code, message} object with no content; the body then ends."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().text("par").error(429, "Resource exhausted. Please try again later."))
    events = await turn(client, fake, session_id)
    assert events[-1] == {"code": 429, "message": "Resource exhausted. Please try again later."}
    session = fake.sessions[session_id]
    assert session.errors == [events[-1]]
    assert events[-1] not in session.events  # not an ADK event


async def test_event_and_raw_steps(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """event() sends any ADK event with bookkeeping filled in; raw() writes bytes as they are."""
    session_id = await create_session(client, fake)
    parts = [{"text": "why", "thought": True}, {"text": "because"}]
    fake.enqueue(
        Turn()
        .event(content={"role": "model", "parts": parts}, id="ev-1")
        .raw(b'data: {"code": 3, "message": "raw"}\n\n')
    )
    events = await turn(client, fake, session_id)
    assert events[0]["id"] == "ev-1"
    assert events[0]["content"]["parts"] == parts
    assert events[0]["author"] == DEFAULT_AGENT_NAME
    assert events[1] == {"code": 3, "message": "raw"}


# ---- the stream's connection ------------------------------------------------------------------


async def test_headers_flush_at_once_and_a_stall_ends_with_the_client(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """Headers arrive before any event; a stalled stream stays open until the client leaves."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().stall())
    body = {
        "class_method": "async_stream_query",
        "input": {"message": "hi", "user_id": USER, "session_id": session_id},
    }
    async with client.stream("POST", fake.stream_query_url(), json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        await fake.wait_for_stream(1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await anext(response.aiter_bytes())
    await fake.wait_for_disconnects(1)
    assert fake.sessions[session_id].disconnects == 1
    assert fake.open_streams == 0
    assert fake.turns_ended == 1


async def test_stall_after_text_then_disconnect(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """Events before a stall reach the client at once; closing the stream is a disconnect."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().text("thinking").stall())
    body = {
        "class_method": "async_stream_query",
        "input": {"message": "hi", "user_id": USER, "session_id": session_id},
    }
    async with client.stream("POST", fake.stream_query_url(), json=body) as response:
        lines = response.aiter_lines()
        async with asyncio.timeout(5):
            first = await anext(lines)
        assert orjson.loads(first.removeprefix("data: "))["partial"] is True
    await fake.wait_for_disconnects(1)


async def test_disconnect_cuts_the_body(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """disconnect() closes the connection mid-body: what was sent arrives, then a protocol error."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().text("before").disconnect().text("after"))
    body = {
        "class_method": "async_stream_query",
        "input": {"message": "hi", "user_id": USER, "session_id": session_id},
    }
    received: list[str] = []

    async def read_all(response: httpx.Response) -> None:
        async for line in response.aiter_lines():
            received.append(line)

    async with client.stream("POST", fake.stream_query_url(), json=body) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await read_all(response)
    frames = parse_sse("".join(f"{line}\n" if line else "\n" for line in received))
    assert texts(frames) == [("before", True), ("before", False)]
    await fake.wait_for_turns(1)
    assert fake.disconnects == 0  # the fake cut it, the client did not leave


async def test_shutdown_ends_a_stalled_stream(client: httpx.AsyncClient) -> None:
    """Leaving the fake ends a stalled stream cleanly (the rest unplayed) instead of hanging."""
    async with FakeAgentEngine(token=TOKEN) as fake:
        fake.default = Turn().text("hi").stall().text("never sent")
        session_id = await create_session(client, fake)
        body = {
            "class_method": "async_stream_query",
            "input": {"message": "hi", "user_id": USER, "session_id": session_id},
        }
        response = await client.send(
            client.build_request("POST", fake.stream_query_url(), json=body), stream=True
        )
        await fake.wait_for_stream(1)
    async with asyncio.timeout(5):
        frames = parse_sse((await response.aread()).decode())
    assert texts(frames) == [("hi", True), ("hi", False)]


# ---- errors before the stream ---------------------------------------------------------------


async def test_missing_or_wrong_token_is_401(fake: FakeAgentEngine) -> None:
    """No bearer token, or another one, is a 401 UNAUTHENTICATED envelope."""
    body = {"class_method": "async_create_session", "input": {"user_id": USER}}
    async with httpx.AsyncClient() as anonymous:
        missing = await anonymous.post(fake.query_url(), json=body)
        wrong = await anonymous.post(
            fake.query_url(), json=body, headers={"authorization": "Bearer expired"}
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert error_of(response)["status"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert "missing" in error_of(missing)["message"]
    assert "invalid" in error_of(wrong)["message"]
    assert fake.sessions_created == 0


async def test_unknown_engine_session_or_owner_is_404(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """Unknown engines and sessions, and sessions of another user or engine, are 404 NOT_FOUND."""
    other = fake.add_engine("999")
    session_id = await create_session(client, fake)
    body = {"class_method": "async_create_session", "input": {"user_id": USER}}
    missing_engine = await client.post(
        f"{fake.base_url}/v1/{engine_name('p', 'l', '123')}:query", json=body
    )
    assert error_of(missing_engine)["status"] == "NOT_FOUND"

    async def stream(user_id: str, session: str, url: str) -> httpx.Response:
        body = {
            "class_method": "async_stream_query",
            "input": {"message": "hi", "user_id": user_id, "session_id": session},
        }
        return await client.post(url, json=body)

    own_url = fake.stream_query_url()
    for response in (
        await stream(USER, "1", own_url),
        await stream("u-2", session_id, own_url),
        await stream(USER, session_id, fake.stream_query_url(other)),
    ):
        assert response.status_code == 404
        assert error_of(response)["status"] == "NOT_FOUND"
        assert response.headers["content-type"].startswith("application/json")
    assert fake.sessions[session_id].messages == []
    unknown_route = await client.post(f"{fake.base_url}/v1/nothing", json=body)
    assert error_of(unknown_route)["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (503, "UNAVAILABLE"),
    ],
)
async def test_scripted_http_failures(
    fake: FakeAgentEngine, client: httpx.AsyncClient, status: int, name: str
) -> None:
    """fail() answers the next calls of one class method with the envelope, then recovers."""
    session_id = await create_session(client, fake)
    fake.fail("async_stream_query", status, times=2, retry_after=0.5)
    fake.fail("async_create_session", status, "quota", status_name="CUSTOM")
    body = {
        "class_method": "async_stream_query",
        "input": {"message": "hi", "user_id": USER, "session_id": session_id},
    }
    for _ in range(2):
        failed = await client.post(fake.stream_query_url(), json=body)
        assert failed.status_code == status
        assert error_of(failed)["status"] == name
        assert failed.headers["retry-after"] == "0.5"
    created = await query(client, fake, "async_create_session", user_id=USER)
    assert error_of(created) == {"code": status, "message": "quota", "status": "CUSTOM"}
    assert "retry-after" not in created.headers
    assert texts(await turn(client, fake, session_id))
    assert len(fake.requests_to("async_stream_query")) == 3
    assert fake.sessions[session_id].messages == ["hello"]


@pytest.mark.parametrize(
    ("body", "params", "field"),
    [
        ({"class_method": "async_create_session", "input": {}}, "", "input.user_id"),
        (
            {"class_method": "async_create_session", "input": {"user_id": USER, "name": "x"}},
            "",
            "input.name",
        ),
        (
            {"class_method": "async_create_session", "input": {"user_id": USER, "state": [1]}},
            "",
            "input.state",
        ),
        ({"class_method": "async_create_session", "input": {"user_id": ""}}, "", "input.user_id"),
        ({"class_method": "async_create_session", "input": {"user_id": 7}}, "", "input.user_id"),
        ({"class_method": "async_list_sessions", "input": {"user_id": USER}}, "", "class_method"),
        ({"class_method": "async_stream_query", "input": {}}, "", "class_method"),
        ({"class_method": "async_create_session"}, "", "input"),
        ({"input": {"user_id": USER}}, "", "class_method"),
        (
            {"class_method": "async_create_session", "input": {"user_id": USER}, "x": 1},
            "",
            "x",
        ),
        ({"class_method": "async_create_session", "input": {"user_id": USER}}, "?alt=sse", "alt"),
    ],
)
async def test_query_validation_names_the_field(
    fake: FakeAgentEngine, client: httpx.AsyncClient, body: Any, params: str, field: str
) -> None:
    """A :query body with an unknown, missing or mistyped field is a 400 naming the field."""
    response = await client.post(fake.query_url() + params, json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"{field}:"), error["message"]
    assert fake.sessions_created == 0


@pytest.mark.parametrize(
    ("input", "url_suffix", "field"),
    [
        ({"message": "hi", "user_id": USER, "session_id": "S", "extra": 1}, "", "input.extra"),
        ({"message": "hi", "user_id": USER}, "", "input.session_id"),
        ({"user_id": USER, "session_id": "S"}, "", "input.message"),
        (
            {"message": "hi", "user_id": USER, "session_id": "S", "state_delta": []},
            "",
            "input.state_delta",
        ),
        ({"message": 3, "user_id": USER, "session_id": "S"}, "", "input.message"),
        ({"message": "", "user_id": USER, "session_id": "S"}, "", "input.message"),
        ({"message": "hi", "user_id": USER, "session_id": "S"}, "-no-alt", "alt"),
        ({"message": "hi", "user_id": USER, "session_id": "S"}, "&x=1", "x"),
    ],
)
async def test_stream_query_validation_names_the_field(
    fake: FakeAgentEngine,
    client: httpx.AsyncClient,
    input: dict[str, Any],
    url_suffix: str,
    field: str,
) -> None:
    """A :streamQuery with a wrong input field or query string is a 400 before any stream."""
    session_id = await create_session(client, fake)
    input = {**input, "session_id": session_id} if "session_id" in input else input
    url = fake.stream_query_url()
    url = url.removesuffix("?alt=sse") if url_suffix == "-no-alt" else url + url_suffix
    body = {"class_method": "async_stream_query", "input": input}
    response = await client.post(url, json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith(f"{field}:"), error["message"]
    assert fake.sessions[session_id].messages == []
    assert fake.sessions[session_id].state == {}


async def test_body_must_be_json(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """A body that is not JSON, or not sent as application/json, is a 400."""
    not_json = await client.post(
        fake.query_url(), content=b"{", headers={"content-type": "application/json"}
    )
    assert error_of(not_json)["status"] == "INVALID_ARGUMENT"
    form = await client.post(fake.query_url(), data={"class_method": "async_create_session"})
    assert error_of(form)["message"].startswith("Content-Type:")


# ---- dispatch: the deployed agent calling back into the router ----------------------------------


async def test_dispatch_posts_to_the_router_and_returns_its_answer(
    fake: FakeAgentEngine, client: httpx.AsyncClient, router: Router
) -> None:
    """dispatch() emits the call, POSTs the exact router request, then the router's answer."""
    router.answers.append((200, {"result": {"temperature": 21}}))
    session_id = await create_session(client, fake, state={TOKEN_STATE_KEY: "dsp-1"})
    fake.enqueue(Turn().dispatch("weather", {"city": "Oslo"}).usage(9, 4).text("21 degrees."))
    events = await turn(client, fake, session_id)

    call = events[0]["content"]["parts"][0]["function_call"]
    assert events[0]["content"]["role"] == "model"
    assert call["name"] == "dispatch"
    assert call["args"] == {"tool_name": "weather", "arguments": {"city": "Oslo"}}
    assert call["id"].startswith("adk-")
    assert events[0]["usage_metadata"]["total_token_count"] == 13
    assert events[1]["content"] == {
        "role": "user",
        "parts": [
            {
                "function_response": {
                    "id": call["id"],
                    "name": "dispatch",
                    "response": {"result": {"temperature": 21}},
                }
            }
        ],
    }
    assert texts(events)[-1] == ("21 degrees.", False)

    assert router.paths == ["POST /v1/tools/dispatch"]
    headers, raw = router.received[0]
    assert headers["authorization"] == "Bearer dsp-1"
    assert headers["content-type"] == "application/json"
    assert orjson.loads(raw) == {
        "tool_name": "weather",
        "arguments": {"city": "Oslo"},
        "call_id": call["id"],
        "user_id": USER,
        "session_id": session_id,
    }
    (exchange,) = await fake.wait_for_dispatches(1)
    assert exchange.status == 200
    assert exchange.call_id == call["id"]
    assert exchange.url == f"{router.base_url}/v1/tools/dispatch"
    assert exchange.body == orjson.loads(raw)
    assert (exchange.tool_name, exchange.arguments) == ("weather", {"city": "Oslo"})
    assert exchange.response == exchange.function_response == {"result": {"temperature": 21}}
    assert fake.sessions[session_id].dispatches == [exchange]


async def test_dispatch_with_a_forged_token_gets_the_refusal(
    fake: FakeAgentEngine, client: httpx.AsyncClient, router: Router
) -> None:
    """A script's token override is sent; the router's 401 body is passed on to the model."""
    router.answers.append((401, {"error": "invalid dispatch token"}))
    session_id = await create_session(client, fake, state={TOKEN_STATE_KEY: "real"})
    fake.enqueue(Turn().dispatch("weather", {}, token="forged"))
    events = await turn(client, fake, session_id)
    assert router.received[0][0]["authorization"] == "Bearer forged"
    response = events[1]["content"]["parts"][0]["function_response"]["response"]
    assert response == {"error": "invalid dispatch token"}
    assert fake.dispatches[0].status == 401


async def test_dispatch_without_a_token_sends_no_authorization(
    fake: FakeAgentEngine, client: httpx.AsyncClient, router: Router
) -> None:
    """No token in the session state means no Authorization header; token=None forces that."""
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().dispatch("a").dispatch("b", token=None))
    await turn(client, fake, session_id, state_delta={TOKEN_STATE_KEY: "later"})
    assert "authorization" not in router.received[1][0]
    fake.sessions[session_id].state.pop(TOKEN_STATE_KEY)
    fake.enqueue(Turn().dispatch("c"))
    await turn(client, fake, session_id)
    assert router.received[0][0]["authorization"] == "Bearer later"
    assert "authorization" not in router.received[2][0]
    assert [d.headers.get("authorization") for d in fake.dispatches] == [
        "Bearer later",
        None,
        None,
    ]


async def test_dispatch_to_an_unreachable_router_answers_an_error(
    fake: FakeAgentEngine, client: httpx.AsyncClient
) -> None:
    """When the router cannot be reached the model gets {"error": ...} and no status is recorded."""
    async with Router() as gone:
        fake.router_url = gone.base_url
    session_id = await create_session(client, fake)
    fake.enqueue(Turn().dispatch("weather"))
    events = await turn(client, fake, session_id)
    response = events[1]["content"]["parts"][0]["function_response"]["response"]
    assert set(response) == {"error"}
    (exchange,) = fake.dispatches
    assert exchange.status is None
    assert exchange.error is not None


async def test_dispatch_without_router_url_fails_the_test(client: httpx.AsyncClient) -> None:
    """A dispatch with no router_url set ends the stream with a 500 and fails waits and exit."""
    events: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with FakeAgentEngine(token=TOKEN) as fake:
            session_id = await create_session(client, fake)
            fake.enqueue(Turn().dispatch("weather"))
            events.extend(await turn(client, fake, session_id))
            with pytest.raises(AssertionError, match="a scripted turn crashed"):
                await fake.wait_for_turns(1)

    with pytest.raises(AssertionError, match="crashed in the fake"):
        await scenario()
    assert events[-1]["code"] == 500
    assert "router_url" in events[-1]["message"]


# ---- the helpers ---------------------------------------------------------------------------------


async def test_wait_helpers_fail_after_a_bounded_time(fake: FakeAgentEngine) -> None:
    """A wait_for_* whose condition never holds raises AssertionError instead of hanging."""
    with pytest.raises(AssertionError, match=r"no 1 disconnect\(s\) within 0.05s"):
        await fake.wait_for_disconnects(1, within=0.05)
    with pytest.raises(AssertionError, match="dispatch"):
        await fake.wait_for_dispatches(1, within=0.05)


async def test_added_session_and_engine(fake: FakeAgentEngine, client: httpx.AsyncClient) -> None:
    """add_session() makes a session a turn can use without a create; engines are independent."""
    other = fake.add_engine("777", location="europe-west4", agent_name="other")
    session = fake.add_session(USER, {"a": 1}, engine=other)
    fake.enqueue(Turn().text("from other"), engine=other)
    body = {
        "class_method": "async_stream_query",
        "input": {"message": "hi", "user_id": USER, "session_id": session.id},
    }
    async with client.stream("POST", fake.stream_query_url(other), json=body) as response:
        events = parse_sse((await response.aread()).decode())
    assert texts(events)[-1] == ("from other", False)
    assert events[0]["author"] == "other"
    assert session.app_name == "777"
    assert fake.sessions_created == 0
    assert other.name == "projects/interlock-test/locations/europe-west4/reasoningEngines/777"
