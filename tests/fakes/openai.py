"""A scriptable loopback fake of an OpenAI-compatible chat completions server.

It speaks the real wire protocol — ``POST /v1/chat/completions`` answered with
server-sent events (``data: {...}\\n\\n`` chunks, then ``data: [DONE]``) — and
validates requests like a strict server, so a test through it exercises the
same bytes a real provider would see::

    async with FakeOpenAI() as fake:
        fake.enqueue(
            Reply().tool_call("lookup", '{"q": ', '"weather"}'),  # arguments in 2 fragments
            Reply().text("It is ", "sunny.").usage(prompt=40, completion=3),
        )
        backend = OpenAICompatibleBackend("fake", fake.base_url)
        ...
        assert fake.requests[1].body["messages"][-1]["role"] == "tool"

Each request takes the next scripted :class:`Reply`; when the queue is empty
the fake answers :attr:`FakeOpenAI.default` (a short text). A reply is a list
of steps built fluently — text, reasoning and tool-call deltas, usage, finish
reason, delays, a stall until the client goes away, a dropped connection, raw
bytes — or an HTTP error (:meth:`Reply.error`). Anything not scripted is
filled in the way real servers do: a first ``role`` chunk, a finish reason
(``tool_calls`` if the reply called a tool, else ``stop``), a usage chunk when
the request asked for one, and ``[DONE]``.

The fake records every request (:attr:`FakeOpenAI.requests`: parsed body,
headers and arrival time) and every client that went away before its answer ended
(:attr:`FakeOpenAI.disconnects`); tests wait on those with
:meth:`FakeOpenAI.wait_for_requests` / :meth:`FakeOpenAI.wait_for_disconnects`
instead of sleeping. With no delays scripted it streams as fast as the socket
takes it, which makes it usable for benchmarks; ``token_interval`` paces every
delta chunk instead, like a model generating at a fixed rate.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

__all__ = ["FakeOpenAI", "RecordedRequest", "Reply"]

_call_ids = itertools.count(1)
# A wait_for_* that takes longer than this has failed: report it instead of hanging.
_WAIT_LIMIT = 10.0

# ---- the steps a reply is made of ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Delta:
    delta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Finish:
    reason: str


@dataclass(frozen=True, slots=True)
class _Usage:
    usage: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Raw:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Delay:
    seconds: float


class _Stall:
    """Hold the stream open until the client goes away."""


class _Disconnect:
    """Close the connection without finishing the HTTP body."""


class _Eof:
    """Finish the HTTP body here, without a finish reason or [DONE]."""


_Step = _Delta | _Finish | _Usage | _Raw | _Delay | _Stall | _Disconnect | _Eof


class Reply:
    """One scripted answer. Builder methods append steps and return ``self``."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self.status = 200
        self.error_body: dict[str, Any] | None = None
        self.error_headers: dict[str, str] = {}
        self._tool_calls = 0

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An HTTP error with an OpenAI-style ``{"error": {...}}`` body.

        ``headers`` go on the answer too, e.g. ``{"retry-after": "2"}`` as OpenAI sends
        with a 429.
        """
        reply = cls()
        reply.status = status
        reply.error_headers = dict(headers or {})
        reply.error_body = {
            "error": {"message": message, "type": type, "param": None, "code": code}
        }
        return reply

    def text(self, *pieces: str) -> Self:
        """One ``delta.content`` chunk per piece."""
        self.steps.extend(_Delta({"content": p}) for p in pieces)
        return self

    def reasoning(self, *pieces: str) -> Self:
        """One ``delta.reasoning_content`` chunk per piece (DeepSeek/vLLM/llama.cpp style)."""
        self.steps.extend(_Delta({"reasoning_content": p}) for p in pieces)
        return self

    def tool_call(self, name: str, *arguments: str, call_id: str | None = None) -> Self:
        """A tool call streamed as OpenAI does: id and name first, then argument pieces."""
        index = self._tool_calls
        self._tool_calls += 1
        call_id = call_id or f"call_{next(_call_ids)}"
        first = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        self.steps.append(_Delta({"tool_calls": [first]}))
        self.steps.extend(
            _Delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in arguments
        )
        return self

    def usage(self, prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0) -> Self:
        """A usage chunk (empty ``choices``), as sent for ``stream_options.include_usage``."""
        self.steps.append(
            _Usage(
                {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "prompt_tokens_details": {"cached_tokens": cached},
                    "completion_tokens_details": {"reasoning_tokens": reasoning},
                }
            )
        )
        return self

    def finish(self, reason: str = "stop") -> Self:
        """The chunk carrying ``finish_reason`` (added automatically when not scripted)."""
        self.steps.append(_Finish(reason))
        return self

    def delay(self, seconds: float) -> Self:
        """Pause the stream."""
        self.steps.append(_Delay(seconds))
        return self

    def stall(self) -> Self:
        """Stop sending and keep the stream open until the client disconnects."""
        self.steps.append(_Stall())
        return self

    def disconnect(self) -> Self:
        """Drop the connection here: the client sees the body end mid-stream."""
        self.steps.append(_Disconnect())
        return self

    def eof(self) -> Self:
        """End the body cleanly here, with no finish reason and no ``[DONE]``."""
        self.steps.append(_Eof())
        return self

    def raw(self, data: bytes) -> Self:
        """Bytes written to the stream as they are (framing included)."""
        self.steps.append(_Raw(data))
        return self

    def malformed(self) -> Self:
        """A correctly framed event whose data is not JSON."""
        return self.raw(b'data: {"choices": [{"delta": {"content": "x"\n\n')


def _default_reply() -> Reply:
    return Reply().text("Hello", " from", " the", " fake.")


# ---- the server -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the fake received it."""

    body: Any  # the parsed JSON body (a dict for any well-formed request)
    headers: dict[str, str]  # names lower-cased
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)


@dataclass
class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 (a free port), for one test.

    ``api_key``, when set, is required as the bearer token (401 otherwise).
    """

    api_key: str | None = None
    token_interval: float = 0.0
    default: Reply = field(default_factory=_default_reply)
    #: When set, answers requests nothing is enqueued for, from the request's body
    #: (a model that reacts to its context: tests whose request order is not fixed).
    responder: Callable[[Any], Reply] | None = None
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    disconnects: int = field(default=0, init=False)
    base_url: str = field(default="", init=False)
    _queue: deque[Reply] = field(default_factory=deque, init=False)
    # Set (and replaced) whenever a request arrives or a client disconnects.
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _responses: itertools.count[int] = field(default_factory=itertools.count, init=False)

    # ---- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        # handler_cancellation: a client that goes away cancels its handler,
        # which is how the fake observes disconnects during a delay or stall.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- scripting and observing ---------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        self._queue.extend(replies)

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` requests have been received."""
        await self._wait(lambda: len(self.requests) >= count, f"{count} request(s)")

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Return once ``count`` clients went away before their answer ended."""
        await self._wait(lambda: self.disconnects >= count, f"{count} disconnect(s)")

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(_WAIT_LIMIT):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"the fake saw no {what} within {_WAIT_LIMIT}s "
                f"(requests: {len(self.requests)}, disconnects: {self.disconnects})"
            ) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- handling a request ----------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(
            RecordedRequest(body, {k.lower(): v for k, v in request.headers.items()})
        )
        self._notify()

        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        problem = _validate(body) if body is not None else "the body is not valid JSON"
        if problem is not None:
            return _error(400, problem)
        if self._queue:
            reply = self._queue.popleft()
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            reply = self.default
        if reply.error_body is not None:
            return web.json_response(
                reply.error_body, status=reply.status, headers=reply.error_headers, dumps=_dumps
            )

        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)  # StreamResponse sends the headers now
        try:
            if await self._stream(request, response, reply, body):
                await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            # Also what a stalled answer sees when the fake itself shuts down.
            self.disconnects += 1
            self._notify()
            raise
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, reply: Reply, body: Any
    ) -> bool:
        """Write the reply's events; False when it dropped the connection instead."""
        envelope = {
            "id": f"chatcmpl-fake-{next(self._responses)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
        }

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**envelope, "choices": choices, **extra}) + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        await response.write(chunk(choice({"role": "assistant", "content": ""})))
        finished = used = False
        produced = 0
        for step in reply.steps:
            if isinstance(step, _Delta):
                if self.token_interval:
                    await asyncio.sleep(self.token_interval)
                await response.write(chunk(choice(step.delta)))
                produced += 1
            elif isinstance(step, _Finish):
                await response.write(chunk(choice({}, step.reason)))
                finished = True
            elif isinstance(step, _Usage):
                await response.write(chunk([], usage=step.usage))
                used = True
            elif isinstance(step, _Raw):
                await response.write(step.data)
            elif isinstance(step, _Delay):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, _Stall):
                await asyncio.Event().wait()  # until the handler is cancelled
            elif isinstance(step, _Disconnect):
                assert request.transport is not None
                # close(), not abort(): what was written still reaches the
                # client (an RST could discard it), then the body is cut short.
                request.transport.close()
                return False
            elif isinstance(step, _Eof):
                return True
        if not finished:
            await response.write(chunk(choice({}, "tool_calls" if reply._tool_calls else "stop")))
        if not used and (body.get("stream_options") or {}).get("include_usage"):
            prompt = _estimate_prompt_tokens(body["messages"])
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": produced,
                "total_tokens": prompt + produced,
            }
            await response.write(chunk([], usage=usage))
        await response.write(b"data: [DONE]\n\n")
        return True


# ---- a strict server's request checks --------------------------------------------

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _validate(body: Any) -> str | None:
    """What a strict OpenAI-compatible server would refuse with 400, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if body.get("stream") is not True:
        return "this fake only streams: set 'stream': true"
    tools = body.get("tools")
    if "tool_choice" in body and not tools:
        return "'tool_choice' is only allowed when 'tools' are specified"
    for i, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            return f"tools[{i}] must be {{type: 'function', function: {{...}}}}"
        if not isinstance(function.get("name"), str):
            return f"tools[{i}].function.name must be a string"

    called: set[str] = set()  # every tool call id seen so far
    unanswered: set[str] = set()  # ids of the last assistant message not yet answered
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"messages[{i}].role must be one of {sorted(_ROLES)}"
        role = m["role"]
        if unanswered and role != "tool":
            return (
                "an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {sorted(unanswered)}"
            )
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in called:
                return f"messages[{i}].tool_call_id {call_id!r} answers no previous tool call"
            unanswered.discard(call_id)
            if not isinstance(m.get("content"), str):
                return f"messages[{i}].content must be a string"
        elif role == "assistant" and m.get("tool_calls"):
            if m.get("content") is None:
                return f"messages[{i}].content must be a string beside tool_calls, not null"
            for c in m["tool_calls"]:
                function = c.get("function") or {}
                if not isinstance(c.get("id"), str) or not isinstance(function.get("name"), str):
                    return f"messages[{i}].tool_calls need an id and a function name"
                if not isinstance(function.get("arguments"), str):
                    return f"messages[{i}].tool_calls[].function.arguments must be a string"
                called.add(c["id"])
                unanswered.add(c["id"])
        elif not isinstance(m.get("content"), str | list):
            return f"messages[{i}].content must be a string or an array of parts"
    if unanswered:
        return f"tool calls {sorted(unanswered)} have no tool message answering them"
    return None


def _estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(4 + len(str(m.get("content") or "")) // 4 for m in messages)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return web.json_response(body, status=status, dumps=_dumps)
