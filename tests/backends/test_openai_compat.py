"""The OpenAI-compatible backend against a loopback fake that speaks the real wire protocol."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest

from interlockd.backends import openai_compat
from interlockd.backends.base import TurnRequest
from interlockd.backends.openai_compat import OpenAICompatibleBackend
from interlockd.errors import (
    InvalidArgument,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
)
from interlockd.vocabulary import (
    BackendEvent,
    Message,
    ModelInfo,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    ToolRunner,
    ToolSpec,
    TurnEnd,
    Usage,
    UsageReport,
)
from tests.conftest import DaemonFactory
from tests.fakes.openai import FakeOpenAI, Reply

LOOKUP = ToolSpec(
    name="lookup",
    description="Look a word up.",
    parameters={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)


class FunctionToolRunner(ToolRunner):
    """Runs tools as plain Python functions of their parsed JSON arguments."""

    def __init__(self, **tools: Callable[..., Any]) -> None:
        self.tools = tools
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        function = self.tools.get(call.name)
        if function is None:
            return ToolResult(call.call_id, call.name, "", error=f"unknown tool {call.name!r}")
        try:
            arguments = orjson.loads(call.arguments)
        except orjson.JSONDecodeError:
            return ToolResult(call.call_id, call.name, "", error="arguments are not valid JSON")
        return ToolResult(call.call_id, call.name, orjson.dumps(function(**arguments)).decode())


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test-secret") as fake:
        yield fake


@pytest.fixture
async def backend(fake: FakeOpenAI) -> AsyncIterator[OpenAICompatibleBackend]:
    backend = OpenAICompatibleBackend("fake", fake.base_url, "sk-test-secret")
    yield backend
    await backend.aclose()


def turn(*, tools: tuple[ToolSpec, ...] = (), **fields: Any) -> TurnRequest:
    return TurnRequest(
        model="fake-model",
        messages=[Message("system", "Be brief."), Message("user", "What is a fake?")],
        tools=tools,
        **fields,
    )


async def collect(events: AsyncIterator[BackendEvent]) -> list[BackendEvent]:
    return [event async for event in events]


async def collect_into(seen: list[BackendEvent], events: AsyncIterator[BackendEvent]) -> None:
    """Like :func:`collect`, keeping what arrived before an error."""
    async for event in events:
        seen.append(event)


def total_usage(events: list[BackendEvent]) -> Usage:
    usage = Usage()
    for event in events:
        if isinstance(event, UsageReport):
            usage += event.usage
    return usage


# ---- streaming ---------------------------------------------------------------------------


async def test_text_streams_in_order(fake: FakeOpenAI, backend: OpenAICompatibleBackend) -> None:
    """Text deltas arrive in the provider's order, then usage, then exactly one TurnEnd."""
    fake.enqueue(Reply().text("A fake ", "is ", "a stand-in.").usage(prompt=20, completion=3))

    events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))

    assert events == [
        TextDelta("A fake "),
        TextDelta("is "),
        TextDelta("a stand-in."),
        UsageReport(Usage(input_tokens=20, output_tokens=3)),
        TurnEnd("end_turn"),
    ]


async def test_request_is_a_streamed_chat_completion(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """The provider gets a streaming request with usage, the bearer key, and no tools unasked."""
    await collect(backend.stream_turn(turn(max_output_tokens=64), FunctionToolRunner()))

    [request] = fake.requests
    assert request.headers["authorization"] == "Bearer sk-test-secret"
    assert request.body == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is a fake?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
    }


async def test_reasoning_streams_as_thinking(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """reasoning_content deltas become ThinkingDelta, kept apart from the answer's text."""
    fake.enqueue(Reply().reasoning("Think", "ing.").text("Done."))

    events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))

    assert [e for e in events if isinstance(e, ThinkingDelta | TextDelta)] == [
        ThinkingDelta("Think"),
        ThinkingDelta("ing."),
        TextDelta("Done."),
    ]


async def test_length_finish_ends_the_turn_with_max_tokens(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """finish_reason "length" ends the turn with stop reason max_tokens."""
    fake.enqueue(Reply().text("Cut").finish("length"))

    events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))

    assert events[-1] == TurnEnd("max_tokens")


# ---- the tool loop -----------------------------------------------------------------------


async def test_tool_loop_assembles_fragmented_arguments(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """Argument fragments are joined into one ToolCall, run, and the model answers after it."""
    fake.enqueue(
        Reply().text("Let me check.").tool_call("lookup", '{"q"', ': "fa', 'ke"}', call_id="c1"),
        Reply().text("It means ", "not real."),
    )
    runner = FunctionToolRunner(lookup=lambda q: {"definition": f"{q}: not real"})

    events = await collect(backend.stream_turn(turn(tools=(LOOKUP,)), runner))

    call = ToolCall("c1", "lookup", '{"q": "fake"}')
    assert runner.calls == [call]
    assert [e for e in events if not isinstance(e, UsageReport)] == [
        TextDelta("Let me check."),
        call,
        ToolResult("c1", "lookup", '{"definition":"fake: not real"}'),
        TextDelta("It means "),
        TextDelta("not real."),
        TurnEnd("end_turn"),
    ]


async def test_second_request_carries_the_call_and_its_result(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """The follow-up request has the assistant's tool_calls (content "") and the tool message."""
    fake.enqueue(Reply().tool_call("lookup", '{"q": "x"}', call_id="c1"), Reply().text("Ok."))
    runner = FunctionToolRunner(lookup=lambda q: {"found": q})

    await collect(backend.stream_turn(turn(tools=(LOOKUP,)), runner))

    first, second = (r.body for r in fake.requests)
    assert first["tool_choice"] == "auto"
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": LOOKUP.description,
                "parameters": LOOKUP.parameters,
            },
        }
    ]
    assert second["messages"][2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"found":"x"}'},
    ]


async def test_parallel_tool_calls_run_in_order(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """Two calls in one answer are both assembled by index and run in index order."""
    fake.enqueue(
        Reply()
        .tool_call("lookup", '{"q": "a"}', call_id="c1")
        .tool_call("lookup", '{"q":', ' "b"}', call_id="c2"),
        Reply().text("Both."),
    )
    runner = FunctionToolRunner(lookup=lambda q: q)

    await collect(backend.stream_turn(turn(tools=(LOOKUP,)), runner))

    assert [(c.call_id, c.arguments) for c in runner.calls] == [
        ("c1", '{"q": "a"}'),
        ("c2", '{"q": "b"}'),
    ]


async def test_invalid_arguments_reach_the_runner_verbatim(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """Arguments that are not JSON are passed on as produced; the runner reports the error."""
    fake.enqueue(Reply().tool_call("lookup", '{"q": ', call_id="c1"), Reply().text("Sorry."))
    runner = FunctionToolRunner(lookup=lambda q: q)

    events = await collect(backend.stream_turn(turn(tools=(LOOKUP,)), runner))

    assert runner.calls == [ToolCall("c1", "lookup", '{"q": ')]
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.error == "arguments are not valid JSON"
    tool_message = fake.requests[1].body["messages"][-1]
    assert orjson.loads(tool_message["content"]) == {"error": "arguments are not valid JSON"}


async def test_usage_of_every_step_is_reported(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """Each provider call reports its usage, cached and reasoning tokens included; they sum."""
    fake.enqueue(
        Reply().tool_call("lookup", '{"q": "x"}').usage(100, 10, cached=80, reasoning=4),
        Reply().text("Ok.").usage(130, 5, cached=100),
    )

    events = await collect(
        backend.stream_turn(turn(tools=(LOOKUP,)), FunctionToolRunner(lookup=lambda q: q))
    )

    assert [e.usage for e in events if isinstance(e, UsageReport)] == [
        Usage(input_tokens=100, output_tokens=10, cache_read_tokens=80, reasoning_tokens=4),
        Usage(input_tokens=130, output_tokens=5, cache_read_tokens=100),
    ]
    assert total_usage(events) == Usage(230, 15, 180, 0, 4)


async def test_tool_limit_after_max_tool_iterations(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A model that keeps calling tools is stopped with tool_limit after max_tool_iterations."""
    fake.default = Reply().tool_call("lookup", '{"q": "again"}')
    runner = FunctionToolRunner(lookup=lambda q: q)

    events = await collect(
        backend.stream_turn(turn(tools=(LOOKUP,), max_tool_iterations=2), runner)
    )

    assert events[-1] == TurnEnd("tool_limit")
    assert len(fake.requests) == 3  # the first call and two more
    assert len(runner.calls) == 3


# ---- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_are_unavailable(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend, status: int
) -> None:
    """5xx and 429 answers raise ProviderUnavailable naming the status."""
    fake.enqueue(Reply.error(status, "The server is overloaded.", type="server_error"))

    with pytest.raises(ProviderUnavailable) as info:
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))

    assert f"HTTP {status}" in info.value.message
    assert info.value.provider == "fake"


async def test_client_error_names_status_and_message(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A 400 raises ProviderError with the status and the provider's error.message."""
    fake.enqueue(Reply.error(400, "Invalid value for 'temperature'."))

    with pytest.raises(ProviderError) as info:
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))

    assert type(info.value) is ProviderError
    assert info.value.message == "fake: HTTP 400: Invalid value for 'temperature'."


async def test_error_messages_never_carry_the_api_key(fake: FakeOpenAI) -> None:
    """A provider message echoing the key is redacted, trimmed, and points at the config."""
    backend = OpenAICompatibleBackend("fake", fake.base_url, "sk-wrong-key")
    fake.enqueue(Reply.error(401, "Incorrect API key provided: sk-wrong-key. " + "x" * 500))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    message = info.value.message
    assert "sk-wrong-key" not in message
    assert "HTTP 401" in message
    assert "api_key" in message
    assert len(message) < 300


async def test_disconnect_mid_stream_is_unavailable_after_the_deltas(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A connection dropped mid-answer yields what arrived, then raises ProviderUnavailable."""
    fake.enqueue(Reply().text("Half ", "an ").disconnect())
    seen: list[BackendEvent] = []

    with pytest.raises(ProviderUnavailable) as info:
        await collect_into(seen, backend.stream_turn(turn(), FunctionToolRunner()))

    assert seen == [TextDelta("Half "), TextDelta("an ")]
    assert "ended early" in info.value.message


async def test_body_ending_before_finish_is_unavailable(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A body that ends cleanly but without finish_reason or [DONE] is an early end."""
    fake.enqueue(Reply().text("Half").eof())

    with pytest.raises(ProviderUnavailable, match="ended early"):
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))


async def test_malformed_chunk_is_a_protocol_error(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A chunk that is not JSON raises ProviderProtocolError."""
    fake.enqueue(Reply().text("Hi").malformed())

    with pytest.raises(ProviderProtocolError, match="not valid JSON"):
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))


@pytest.mark.parametrize(
    "reply",
    [
        Reply().raw(b'data: {"choices": "nope"}\n\n'),
        Reply().raw(b'data: {"choices": [{"delta": "text"}]}\n\n'),
        Reply().raw(b'data: {"choices": [{"delta": {"content": 7}}]}\n\n'),
        Reply().raw(b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0}]}}]}\n\n'),
        Reply().raw(b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n'),
        Reply().raw(b"data: [1, 2]\n\n"),
        Reply().text("Hi").finish("weird"),
    ],
    ids=[
        "choices-not-a-list",
        "delta-not-an-object",
        "content-not-a-string",
        "tool-call-without-name",
        "usage-not-a-number",
        "not-an-object",
        "unknown-finish-reason",
    ],
)
async def test_wrongly_shaped_chunk_is_a_protocol_error(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend, reply: Reply
) -> None:
    """JSON chunks of the wrong shape raise ProviderProtocolError, never a TypeError."""
    fake.enqueue(reply)

    with pytest.raises(ProviderProtocolError):
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))


async def test_error_inside_the_stream_is_a_provider_error(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """An error object sent inside a 200 stream raises, overload errors as unavailable."""
    fake.enqueue(
        Reply().raw(b'data: {"error": {"message": "bad schema", "code": 400}}\n\n'),
        Reply().raw(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'),
    )

    with pytest.raises(ProviderError, match="bad schema") as info:
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    assert type(info.value) is ProviderError
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))


async def test_unreachable_provider_is_unavailable() -> None:
    """Connection refused raises ProviderUnavailable naming where it tried to connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OpenAICompatibleBackend("down", f"http://127.0.0.1:{port}/v1", "sk-test-secret")
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert f"could not connect to 127.0.0.1:{port}" in info.value.message
    assert "sk-test-secret" not in info.value.message


async def test_silent_provider_times_out(fake: FakeOpenAI) -> None:
    """A stream that goes silent longer than read_timeout raises ProviderTimeout and hangs up."""
    backend = OpenAICompatibleBackend("fake", fake.base_url, "sk-test-secret", read_timeout=0.2)
    fake.enqueue(Reply().text("Hm").stall())
    try:
        with pytest.raises(ProviderTimeout):
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    await fake.wait_for_disconnects(1)


async def test_full_pool_is_unavailable_naming_the_limit(fake: FakeOpenAI) -> None:
    """With every pooled connection held, a further turn waits connect_timeout and says why."""
    backend = OpenAICompatibleBackend(
        "fake", fake.base_url, "sk-test-secret", max_connections=1, connect_timeout=0.2
    )
    fake.enqueue(Reply().text("Held").stall())
    held = backend.stream_turn(turn(), FunctionToolRunner())
    try:
        assert await anext(held) == TextDelta("Held")
        with pytest.raises(ProviderUnavailable) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await held.aclose()  # type: ignore[attr-defined]
        await backend.aclose()

    assert "all 1 connections to 127.0.0.1:" in info.value.message
    assert "are busy" in info.value.message


async def test_an_open_stream_does_not_hold_its_request_body(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """While an answer streams, the step keeps no copy of the request body it sent."""
    prompt = "x" * 400_000  # the encoded body: a little more
    fake.enqueue(Reply().text("Held").stall())
    request = TurnRequest(model="fake-model", messages=[Message("user", prompt)])
    held = backend.stream_turn(request, FunctionToolRunner())
    tracemalloc.start()
    try:
        assert await anext(held) == TextDelta("Held")
        # Only what the backend's own lines allocated and still hold (orjson's
        # output is charged to the line that called it).
        ours = tracemalloc.Filter(True, openai_compat.__file__)
        snapshot = tracemalloc.take_snapshot().filter_traces([ours])
    finally:
        tracemalloc.stop()
        await held.aclose()  # type: ignore[attr-defined]

    assert sum(stat.size for stat in snapshot.statistics("filename")) < 100_000


async def test_proxy_from_the_environment_carries_the_request(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trust_env, HTTP_PROXY carries the request (the provider's host never resolves)."""
    proxy = fake.base_url.removesuffix("/v1")
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    backend = OpenAICompatibleBackend("fake", "http://provider.invalid/v1", "sk-test-secret")
    fake.enqueue(Reply().text("Via the proxy."))
    try:
        events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert TextDelta("Via the proxy.") in events


async def test_no_proxy_without_trust_env(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trust_env=False ignores HTTP_PROXY: the request goes to the (unresolvable) host itself."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, fake.base_url.removesuffix("/v1"))
    backend = OpenAICompatibleBackend(
        "fake", "http://provider.invalid/v1", "sk-test-secret", trust_env=False
    )
    fake.enqueue(Reply().text("Via the proxy."))
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert "could not connect to provider.invalid:80" in info.value.message


# ---- cancellation ------------------------------------------------------------------------


async def test_closing_the_turn_closes_the_upstream(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """A caller that stops iterating mid-answer makes the provider see the client hang up."""
    fake.enqueue(Reply().text("Partial").stall())
    events = backend.stream_turn(turn(), FunctionToolRunner())

    assert await anext(events) == TextDelta("Partial")
    await events.aclose()  # type: ignore[attr-defined]

    await fake.wait_for_disconnects(1)


async def test_cancelling_the_task_closes_the_upstream(
    fake: FakeOpenAI, backend: OpenAICompatibleBackend
) -> None:
    """Cancelling the task consuming a turn closes the provider's connection."""
    fake.enqueue(Reply().text("Partial").stall())
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream_turn(turn(), FunctionToolRunner()):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await fake.wait_for_disconnects(1)


# ---- retries before the first event -----------------------------------------------------

NOW = {"retry-after": "0"}  # a refusal that asks for an immediate retry


async def retrying_backend(fake: FakeOpenAI, **options: Any) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend("fake", fake.base_url, "sk-test-secret", **options)


async def test_transient_failures_are_retried_until_one_succeeds(fake: FakeOpenAI) -> None:
    """503, 429 and 500 before anything streamed are retried; the turn then streams once."""
    fake.enqueue(
        Reply.error(503, "Overloaded.", type="server_error", headers=NOW),
        Reply.error(429, "Rate limit reached.", type="requests", headers=NOW),
        Reply.error(500, "Internal error.", type="server_error", headers=NOW),
        Reply().text("Fine ", "now."),
    )
    backend = await retrying_backend(fake, max_attempts=4)
    try:
        events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Fine ", "now."]
    assert events[-1] == TurnEnd("end_turn")
    assert len(fake.requests) == 4
    assert len({orjson.dumps(r.body) for r in fake.requests}) == 1  # the same request each time


async def test_retries_stop_at_max_attempts(fake: FakeOpenAI) -> None:
    """After max_attempts refusals the last one is the error; no further request is made."""
    fake.enqueue(*[Reply.error(503, f"Overloaded {i}.", headers=NOW) for i in range(3)])
    backend = await retrying_backend(fake, max_attempts=2)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert info.value.message == "fake: HTTP 503: Overloaded 1."
    assert len(fake.requests) == 2


async def test_without_a_hint_retries_back_off(fake: FakeOpenAI) -> None:
    """A refusal without Retry-After is retried after a short backoff."""
    fake.enqueue(Reply.error(502, "Bad gateway.", type="server_error"), Reply().text("ok"))
    backend = await retrying_backend(fake, max_attempts=2)
    try:
        events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert events[-1] == TurnEnd("end_turn")
    first, second = fake.requests
    assert second.at - first.at >= 0.2


async def test_retry_after_is_honoured(fake: FakeOpenAI) -> None:
    """A 429's Retry-After (seconds) is waited out before the retry, beyond the backoff."""
    fake.enqueue(
        Reply.error(429, "Rate limit reached.", type="requests", headers={"retry-after": "2"}),
        Reply().text("ok"),
    )
    backend = await retrying_backend(fake, max_attempts=2)
    try:
        events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert events[-1] == TurnEnd("end_turn")
    first, second = fake.requests
    # The backoff alone waits at most 1.25 s before a second attempt.
    assert second.at - first.at >= 1.9


async def test_retry_after_ms_is_honoured(fake: FakeOpenAI) -> None:
    """retry-after-ms, when sent, takes precedence over Retry-After."""
    fake.enqueue(
        Reply.error(429, "Slow down.", headers={"retry-after-ms": "1500", "retry-after": "60"}),
        Reply().text("ok"),
    )
    backend = await retrying_backend(fake, max_attempts=2)
    try:
        await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    first, second = fake.requests
    assert 1.4 <= second.at - first.at < 10


async def test_retry_after_is_capped(fake: FakeOpenAI) -> None:
    """A Retry-After longer than max_retry_after is cut to it, not waited out."""
    fake.enqueue(
        Reply.error(503, "Back in an hour.", headers={"retry-after": "3600"}),
        Reply().text("ok"),
    )
    backend = await retrying_backend(fake, max_attempts=2, max_retry_after=0.1)
    try:
        events = await asyncio.wait_for(
            collect(backend.stream_turn(turn(), FunctionToolRunner())), timeout=10
        )
    finally:
        await backend.aclose()

    assert events[-1] == TurnEnd("end_turn")
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, None), (401, "invalid_api_key"), (404, "model_not_found"), (429, "insufficient_quota")],
)
async def test_permanent_failures_are_not_retried(
    fake: FakeOpenAI, status: int, code: str | None
) -> None:
    """400, 401, 404 and a 429 for exhausted quota fail at once: retrying cannot help."""
    fake.enqueue(Reply.error(status, "No.", code=code, headers=NOW), Reply().text("never"))
    backend = await retrying_backend(fake, max_attempts=3)
    try:
        with pytest.raises(ProviderError) as info:
            await collect(backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert f"HTTP {status}" in info.value.message
    assert len(fake.requests) == 1


async def test_nothing_is_retried_once_the_answer_started(fake: FakeOpenAI) -> None:
    """A stream cut after its first delta is an error, never a second request."""
    fake.enqueue(Reply().text("Half").disconnect(), Reply().text("never"))
    backend = await retrying_backend(fake, max_attempts=3)
    seen: list[BackendEvent] = []
    try:
        with pytest.raises(ProviderUnavailable):
            await collect_into(seen, backend.stream_turn(turn(), FunctionToolRunner()))
    finally:
        await backend.aclose()

    assert seen == [TextDelta("Half")]
    assert len(fake.requests) == 1


async def test_a_dropped_connection_is_retried(fake: FakeOpenAI) -> None:
    """A connection closed before any answer is retried, and the turn then streams."""
    port = int(fake.base_url.split(":")[2].split("/")[0])
    async with DroppingProxy(port, drops=2) as proxy:
        backend = OpenAICompatibleBackend(
            "fake", f"http://127.0.0.1:{proxy.port}/v1", "sk-test-secret", max_attempts=3
        )
        fake.enqueue(Reply().text("Through."))
        try:
            events = await collect(backend.stream_turn(turn(), FunctionToolRunner()))
        finally:
            await backend.aclose()

    assert proxy.connections == 3
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Through."]
    assert len(fake.requests) == 1


class DroppingProxy:
    """A TCP proxy to 127.0.0.1:``port`` that closes its first ``drops`` connections unanswered."""

    def __init__(self, port: int, drops: int) -> None:
        self.target = port
        self.drops = drops
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections <= self.drops:
            await reader.read(1)  # the request started arriving: then hang up
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


async def test_the_daemon_retries_as_configured(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """providers.<name>.max_attempts reaches the backend: refusals within it are invisible
    to the client (one user message in the window), one more is the run's status."""
    fake = {
        "kind": "openai",
        "base_url": fake_a.base_url,
        "default_model": "fake-model",
        "max_attempts": 2,
    }
    daemon = await start_daemon(providers={"fake": fake})
    fake_a.enqueue(Reply.error(503, "Busy.", headers=NOW), Reply().text("Hi."))
    events = await daemon.run("hello")
    assert events[-1].HasField("finish")
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.text for e in window] == ["hello", "Hi."]
    fake_a.enqueue(*[Reply.error(503, "Still busy.", headers=NOW) for _ in range(2)])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run("again")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake_a.requests) == 4


# ---- models ------------------------------------------------------------------------------


async def test_unknown_model_with_an_allow_list_is_invalid(fake: FakeOpenAI) -> None:
    """With an allow-list, another model is InvalidArgument on field model, listing the known."""
    info = ModelInfo(context_window=32_000, max_output_tokens=4_000)
    backend = OpenAICompatibleBackend("fake", fake.base_url, models={"m-1": info, "m-2": info})
    try:
        assert backend.model_info("m-1") == info
        with pytest.raises(InvalidArgument) as raised:
            backend.model_info("m-3")
    finally:
        await backend.aclose()

    assert raised.value.field == "model"
    assert "known models: m-1, m-2" in raised.value.message


async def test_without_an_allow_list_any_model_is_accepted(
    backend: OpenAICompatibleBackend,
) -> None:
    """Without an allow-list, catalog models get their limits and others the default."""
    assert backend.model_info("gpt-4o-mini").context_window == 128_000
    assert backend.model_info("my-finetune") == ModelInfo(
        context_window=8192, max_output_tokens=2048
    )


# ---- the fake itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            ],
            "not null",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "x", "content": ""},
            ],
            "answers no previous tool call",
        ),
    ],
    ids=["null-content-beside-tool-calls", "orphan-tool-message"],
)
async def test_fake_refuses_what_strict_servers_refuse(
    fake: FakeOpenAI, messages: list[dict[str, Any]], problem: str
) -> None:
    """The fake answers 400 to requests a strict OpenAI-compatible server rejects."""
    body = {"model": "m", "messages": messages, "stream": True}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.base_url}/chat/completions",
            json=body,
            headers={"authorization": "Bearer sk-test-secret"},
        )

    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]
