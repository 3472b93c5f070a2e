"""The Hermes backend's turns against a loopback fake of Hermes' API server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from interlockd.backends.base import TurnRequest
from interlockd.backends.hermes.backend import Binding, HermesBackend
from interlockd.backends.hermes.config import HermesSettings
from interlockd.errors import (
    InvalidArgument,
    ProviderCredentialsRejected,
    ProviderProtocolError,
    ProviderSessionLost,
    ProviderUnavailable,
)
from interlockd.http.server import HttpServer
from interlockd.tools.base import Tool, ToolContext
from interlockd.tools.dispatch import Dispatch
from interlockd.tools.grants import ToolAccess
from interlockd.vocabulary import (
    BackendEvent,
    Message,
    ModelInfo,
    RuntimeAccess,
    SessionBound,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolRunner,
    ToolSpec,
    TurnEnd,
    Usage,
    UsageReport,
)
from tests.fakes.hermes import FakeHermes, HermesReply

COMPUTE = "cs-1"


class RefusingRunner(ToolRunner):
    """Hermes runs its tools itself: the backend must never call the runner."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        return ToolResult(call.call_id, call.name, "", error="not here")


class Search(Tool):
    """A daemon tool as the MCP endpoint lists it; its runner executes it."""

    spec = ToolSpec(
        "github.search",
        "Search GitHub.",
        {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    )

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        raise AssertionError("the run's runner executes the endpoint's calls")


class Executing(ToolRunner):
    """The run's runner as the MCP endpoint uses it: executes and answers each call."""

    def __init__(self, error: str = "") -> None:
        self.calls: list[ToolCall] = []
        self._error = error

    async def run(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        if self._error:
            return ToolResult(call.call_id, call.name, "", error=self._error)
        found = orjson.loads(call.arguments)["q"]
        return ToolResult(call.call_id, call.name, orjson.dumps({"found": found}).decode())


@pytest.fixture
async def mcp_side() -> AsyncIterator[HttpServer]:
    """The daemon's HTTP side, whose MCP endpoint Hermes calls the run's tools on."""
    server = HttpServer("127.0.0.1", 0, Dispatch(), call_timeout=5, shutdown_timeout=1)
    await server.start()
    yield server
    await server.stop()


def mcp_url(server: HttpServer) -> str:
    return f"http://127.0.0.1:{server.port}/mcp/"


@pytest.fixture
async def hermes() -> AsyncIterator[FakeHermes]:
    async with FakeHermes() as fake:
        yield fake


@pytest.fixture
async def backend() -> AsyncIterator[HermesBackend]:
    backend = HermesBackend(
        HermesSettings(executable="/bin/false", model_base_url="http://127.0.0.1:9/v1")
    )
    yield backend
    await backend.aclose()


def access(fake: FakeHermes, *, key: str | None = None, compute: str = COMPUTE) -> RuntimeAccess:
    return RuntimeAccess(
        base_url=fake.base_url,
        headers={"x-route": "session-7"},
        api_key=key or fake.api_key,
        compute_session_id=compute,
    )


def request(
    fake: FakeHermes,
    *messages: Message,
    session: str | None = None,
    tools: tuple[ToolSpec, ...] = (),
    **fields: object,
) -> TurnRequest:
    return TurnRequest(
        model="some-model",
        messages=list(messages) or [Message("system", "Be brief."), Message("user", "hi")],
        system="Be brief.",
        provider_session=session,
        tools=tools,
        runtime=fields.pop("runtime", None) or access(fake),  # type: ignore[arg-type]
    )


async def collect(
    backend: HermesBackend, turn: TurnRequest, runner: ToolRunner | None = None
) -> list[BackendEvent]:
    return [event async for event in backend.stream_turn(turn, runner or RefusingRunner())]


async def test_text_turn_streams_deltas_usage_and_binds_the_session(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A turn binds a new Hermes session first, then streams text, usage and end_turn."""
    hermes.enqueue(HermesReply().text("Hel", "lo.").usage(900, 3))
    events = await collect(backend, request(hermes))
    assert isinstance(events[0], SessionBound)
    binding = Binding.decode(events[0].session_id)
    assert binding is not None
    assert binding.compute_session_id == COMPUTE
    assert events[1:] == [
        TextDelta("Hel"),
        TextDelta("lo."),
        UsageReport(Usage(input_tokens=900, output_tokens=3)),
        TurnEnd("end_turn"),
    ]
    sent = hermes.requests[0]
    assert sent.session_id == binding.session_id
    assert sent.headers["authorization"] == f"Bearer {hermes.api_key}"
    assert sent.headers["x-route"] == "session-7"
    assert sent.body == {
        "model": "some-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
    }
    assert hermes.session_lookups == []  # nothing to look up for a new session


async def test_the_daemons_tool_calls_stream_as_the_mcp_endpoint_executed_them(
    backend: HermesBackend, hermes: FakeHermes, mcp_side: HttpServer
) -> None:
    """A daemon tool Hermes calls through the MCP endpoint streams under the id, with the
    arguments and the result, its runner executed and recorded it with (not Hermes' empty
    progress frames), between the text before and after it, not marked provider-executed."""
    runner = Executing()
    grant = mcp_side.mcp_access.open(ToolAccess.of([Search()], runner), ttl=60)
    hermes.mcp_url, hermes.mcp_token = mcp_url(mcp_side), grant.token
    hermes.enqueue(
        HermesReply()
        .text("Looking.")
        .mcp_tool("github.search", {"q": "quokka"}, call_id="call_9")
        .text("Found it.")
        .usage(10, 2)
    )
    events = await collect(backend, request(hermes, tools=(Search.spec,)), runner)
    [executed] = runner.calls
    assert executed.call_id != "call_9"  # the endpoint's id, which the runner recorded
    assert events[1:5] == [
        TextDelta("Looking."),
        ToolCall(executed.call_id, "github.search", '{"q":"quokka"}'),
        ToolResult(executed.call_id, "github.search", '{"found":"quokka"}'),
        TextDelta("Found it."),
    ]
    assert hermes.mcp_results == [("github.search", False, '{"found":"quokka"}')]
    grant.close()


async def test_a_failed_daemon_tool_streams_its_error(
    backend: HermesBackend, hermes: FakeHermes, mcp_side: HttpServer
) -> None:
    """A daemon tool that fails streams the error its runner recorded, as Hermes' model got it."""
    runner = Executing(error="the index is offline")
    grant = mcp_side.mcp_access.open(ToolAccess.of([Search()], runner), ttl=60)
    hermes.mcp_url, hermes.mcp_token = mcp_url(mcp_side), grant.token
    hermes.enqueue(HermesReply().mcp_tool("github.search", {"q": "x"}).text("Sorry."))
    events = await collect(backend, request(hermes, tools=(Search.spec,)), runner)
    [executed] = runner.calls
    assert ToolResult(executed.call_id, "github.search", "", error="the index is offline") in events
    assert hermes.mcp_results == [("github.search", True, "the index is offline")]
    grant.close()


async def test_calls_made_before_the_agent_failed_still_stream(
    backend: HermesBackend, hermes: FakeHermes, mcp_side: HttpServer
) -> None:
    """When Hermes' agent fails after a daemon tool ran, the recorded call streams before
    the failure is raised."""
    runner = Executing()
    grant = mcp_side.mcp_access.open(ToolAccess.of([Search()], runner), ttl=60)
    hermes.mcp_url, hermes.mcp_token = mcp_url(mcp_side), grant.token
    hermes.enqueue(HermesReply().mcp_tool("github.search", {"q": "x"}).fail("model crashed"))
    events: list[BackendEvent] = []

    async def drain() -> None:
        async for event in backend.stream_turn(request(hermes, tools=(Search.spec,)), runner):
            events.append(event)

    with pytest.raises(ProviderUnavailable, match="the agent failed: model crashed"):
        await drain()
    [executed] = runner.calls
    assert [type(e) for e in events[1:]] == [ToolCall, ToolResult]
    assert events[1] == ToolCall(executed.call_id, "github.search", '{"q":"x"}')
    grant.close()


async def test_a_tool_of_hermes_itself_keeps_its_name(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A tool that is not the daemon's MCP tool is provider-executed, under Hermes' name."""
    hermes.enqueue(HermesReply().tool("todo", call_id="c1", mcp=False))
    events = await collect(backend, request(hermes))
    assert ToolCall("c1", "todo", "{}", provider_executed=True) in events


async def test_second_turn_continues_the_session_with_only_the_new_message(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A bound conversation sends its Hermes session id and only what the session has not seen."""
    first = await collect(backend, request(hermes))
    bound = first[0]
    assert isinstance(bound, SessionBound)
    second = await collect(
        backend,
        request(
            hermes,
            Message("system", "Be brief."),
            Message("user", "more"),
            session=bound.session_id,
        ),
    )
    assert second[0] == SessionBound(bound.session_id)
    sent = hermes.requests[1]
    assert sent.session_id == hermes.requests[0].session_id
    assert [m["content"] for m in sent.history] == ["hi", "Hello from Hermes."]
    assert sent.body["messages"][-1] == {"role": "user", "content": "more"}
    assert hermes.session_lookups == [sent.session_id]


async def test_turns_that_ran_elsewhere_arrive_as_a_transcript(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """Earlier turns the session has not seen precede the new message in one user message."""
    turn = request(
        hermes,
        Message("system", "Be brief."),
        Message("user", "What is 2+2?"),
        Message("assistant", "4"),
        Message("user", "And 3+3?"),
    )
    await collect(backend, turn)
    messages = hermes.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    content = messages[1]["content"]
    assert "[user]: What is 2+2?" in content
    assert "[assistant]: 4" in content
    assert content.endswith("\n\nAnd 3+3?")


async def test_a_session_of_another_compute_session_is_lost(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A binding to a replaced compute session raises ProviderSessionLost, sending nothing."""
    old = Binding("interlock-old", "cs-0").encode()
    with pytest.raises(ProviderSessionLost):
        await collect(backend, request(hermes, session=old))
    assert hermes.requests == []
    assert hermes.session_lookups == []


async def test_a_session_hermes_no_longer_has_is_lost(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """Hermes answering 404 for the bound session raises ProviderSessionLost before any event."""
    first = await collect(backend, request(hermes))
    bound = first[0]
    assert isinstance(bound, SessionBound)
    hermes.forget(hermes.requests[0].session_id)
    with pytest.raises(ProviderSessionLost):
        await collect(backend, request(hermes, session=bound.session_id))
    assert len(hermes.requests) == 1


async def test_an_unreadable_binding_starts_a_new_session(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A stored session value that is not a Hermes binding starts afresh instead of failing."""
    events = await collect(backend, request(hermes, session="sesn_from_elsewhere"))
    assert isinstance(events[0], SessionBound)
    assert events[0].session_id != "sesn_from_elsewhere"


async def test_a_wrong_key_is_a_rejected_credential(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """Hermes' 401 surfaces as ProviderCredentialsRejected without leaking the key."""
    turn = request(hermes, runtime=access(hermes, key="wrong-key-0123456789"))
    with pytest.raises(ProviderCredentialsRejected) as caught:
        await collect(backend, turn)
    assert "wrong-key" not in caught.value.message


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_busy_or_failing_hermes_is_unavailable(
    backend: HermesBackend, hermes: FakeHermes, status: int
) -> None:
    """429 and 5xx answers raise ProviderUnavailable (retryable)."""
    hermes.enqueue(HermesReply().http_error(status, "Too many concurrent runs"))
    with pytest.raises(ProviderUnavailable, match=str(status)):
        await collect(backend, request(hermes))


async def test_an_unreachable_runtime_is_unavailable(backend: HermesBackend) -> None:
    """A runtime nobody listens for raises ProviderUnavailable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = RuntimeAccess(f"http://127.0.0.1:{port}", {}, "k" * 20, COMPUTE)
    turn = TurnRequest(model="m", messages=[Message("user", "hi")], runtime=gone)
    with pytest.raises(ProviderUnavailable, match="could not connect"):
        await collect(backend, turn)


async def test_an_agent_failure_after_text_is_unavailable(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """finish_reason "error" raises ProviderUnavailable with Hermes' message after the text."""
    hermes.enqueue(HermesReply().text("Partial").fail("Connection error to the model"))
    seen: list[BackendEvent] = []

    async def drain() -> None:
        async for event in backend.stream_turn(request(hermes), RefusingRunner()):
            seen.append(event)

    with pytest.raises(ProviderUnavailable, match="Connection error to the model"):
        await drain()
    assert TextDelta("Partial") in seen


async def test_a_hermes_without_a_model_names_the_daemons_settings(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """Hermes' "No inference provider configured" (it read no configuration) fails the turn as
    FAILED_PRECONDITION naming the provider's settings, not Hermes' own advice."""
    hermes.enqueue(
        HermesReply().fail(
            "No inference provider configured. Run 'hermes model' to choose a provider and "
            "model, or set an API key (OPENROUTER_API_KEY, OPENAI_API_KEY, etc.) in "
            "~/.hermes/.env."
        )
    )
    with pytest.raises(ProviderCredentialsRejected) as failed:
        await collect(backend, request(hermes))
    message = failed.value.message
    assert "providers.hermes.base_url" in message
    assert "providers.hermes.default_model" in message
    assert "~/.hermes" not in message
    assert "hermes model" not in message
    assert not failed.value.retryable


async def test_a_cut_answer_is_length(backend: HermesBackend, hermes: FakeHermes) -> None:
    """finish_reason "length" ends the turn with max_tokens."""
    hermes.enqueue(HermesReply().text("Long").finish("length"))
    events = await collect(backend, request(hermes))
    assert events[-1] == TurnEnd("max_tokens")


async def test_a_malformed_chunk_is_a_protocol_error(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A data frame that is not JSON raises ProviderProtocolError."""
    hermes.enqueue(HermesReply().raw(b"data: {not json\n\n"))
    with pytest.raises(ProviderProtocolError):
        await collect(backend, request(hermes))


async def test_a_stream_cut_mid_turn_is_unavailable(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """A connection that closes before [DONE] raises ProviderUnavailable."""
    hermes.enqueue(HermesReply().text("Half").disconnect())
    with pytest.raises(ProviderUnavailable):
        await collect(backend, request(hermes))


async def test_leaving_the_turn_closes_the_upstream_answer(
    backend: HermesBackend, hermes: FakeHermes
) -> None:
    """Closing the event iterator mid-turn closes Hermes' stream (which interrupts its agent)."""
    hermes.enqueue(HermesReply().text("Thinking").tool_start("slow", "c1").stall())
    events = backend.stream_turn(request(hermes), RefusingRunner())
    seen = [await anext(events) for _ in range(2)]
    assert seen[1:] == [TextDelta("Thinking")]
    await events.aclose()  # type: ignore[attr-defined]
    await hermes.wait_for_disconnects(1)


def test_model_info_accepts_any_model_unless_listed(backend: HermesBackend) -> None:
    """Any non-empty model is accepted with default limits; an allow-list refuses the rest."""
    assert backend.model_info("hermes-4-70b").context_window > 0
    with pytest.raises(InvalidArgument):
        backend.model_info("")
    listed = HermesBackend(
        HermesSettings(executable="/bin/false", model_base_url="http://127.0.0.1:9/v1"),
        models={"m1": ModelInfo(context_window=65_536, max_output_tokens=4096)},
    )
    assert listed.model_info("m1").context_window == 65_536
    with pytest.raises(InvalidArgument, match="m1"):
        listed.model_info("m2")


def test_binding_round_trips() -> None:
    """A binding encodes and decodes to itself; anything else decodes to None."""
    binding = Binding.new("cs-9")
    assert Binding.decode(binding.encode()) == binding
    assert Binding.decode(orjson.dumps({"session": "s"}).decode()) is None
    assert Binding.decode(None) is None
