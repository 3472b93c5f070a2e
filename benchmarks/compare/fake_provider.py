"""A paced OpenAI-compatible chat server on loopback, standing in for a real provider.

It answers ``POST .../chat/completions`` (streamed: server-sent events in
HTTP/1.1 chunks, keep-alive) the way a support agent model would, at the pace
of a :class:`Profile`: the first delta after ``first_token_s``, then
``tokens_per_s`` deltas a second (on a fixed schedule, so no drift), at most
``answer_tokens`` of them (fewer when the request's ``max_tokens`` says so),
then a finish chunk, a usage chunk (``completion_tokens`` = the deltas sent)
and ``[DONE]``.

It calls a tool the way a model would when asked to recall something: when
the last message is the user's, mentions an earlier exchange ("earlier",
"before", "previous", "again", "remind") and the request offers a tool with a
string ``query`` parameter (``search_conversations``), the answer is that tool
call with the longest word of the message as the query; after the tool's
result it answers in text. Nothing else is scripted: the point is realistic
timing and a conversation a daemon can hold, not realistic text.

Standard library only (the client has no server dependencies); one instance
serves any number of connections. Not a test double of OpenAI's validation:
``tests/fakes/openai.py`` is that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["FakeProvider", "Profile"]

_RECALL = re.compile(r"\b(earlier|before|previous|again|remind)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9]+")
_WORD_OR_PUNCTUATION = re.compile(r"\S+")
_ANSWER_TEXT = (
    "Thanks for getting in touch. I have looked at your order and can help: "
    "a replacement can ship today, or a refund reaches your card in three to "
    "five days. Tell me which you prefer and I will take care of the rest."
)
_ANSWER = tuple(_WORD_OR_PUNCTUATION.findall(_ANSWER_TEXT))
_MAX_BODY = 8 * 1024 * 1024
_TOOL_CALL_TOKENS = 12  # what a tool call's arguments cost in output tokens, roughly
_REQUEST_TIMEOUT = 60.0  # an idle keep-alive connection is closed after this


@dataclass(frozen=True)
class Profile:
    """How fast the fake answers."""

    #: Seconds from the request to the first delta (a model's time to first token).
    first_token_s: float = 0.2
    #: Deltas per second after the first.
    tokens_per_s: float = 100.0
    #: Deltas of a text answer (each a word), unless the request's max_tokens is lower.
    answer_tokens: int = 32


class FakeProvider:
    """The server; ``async with FakeProvider(profile) as fake`` serves on ``fake.base_url``."""

    def __init__(self, profile: Profile | None = None, *, host: str = "127.0.0.1") -> None:
        self.profile = profile or Profile()
        self.host = host
        self.base_url = ""
        #: Requests answered (text or tool call).
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://{self.host}:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            # Connections waiting in keep-alive would outlive the server; end them.
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                while await self._one_request(reader, writer):
                    pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        length = int(headers.get("content-length", "0") or 0)
        if length > _MAX_BODY:
            await _respond(writer, 413, {"error": {"message": "request body too large"}})
            return False
        body = await reader.readexactly(length) if length else b""
        if method != "POST" or not path.endswith("/chat/completions"):
            await _respond(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        try:
            request = json.loads(body)
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            await _respond(writer, 400, {"error": {"message": "expected a chat completion body"}})
            return True
        self.requests += 1
        await self._stream(writer, request, messages)
        return headers.get("connection", "").lower() != "close"

    async def _stream(
        self, writer: asyncio.StreamWriter, request: dict[str, Any], messages: list[Any]
    ) -> None:
        start = time.monotonic()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        envelope = {
            "id": f"chatcmpl-loopback-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(request.get("model", "")),
        }

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            data = json.dumps({**envelope, "choices": choices, **extra}, separators=(",", ":"))
            _write_chunk(writer, f"data: {data}\n\n".encode())

        def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": content, "finish_reason": finish}]

        profile = self.profile
        await _sleep_until(start + profile.first_token_s)
        query = _tool_query(request, messages)
        if query is not None:
            tool, words = query
            event(
                delta(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": f"call_loopback_{next(self._ids)}",
                                "type": "function",
                                "function": {
                                    "name": tool,
                                    "arguments": json.dumps({"query": words}),
                                },
                            }
                        ],
                    }
                )
            )
            produced, finish = _TOOL_CALL_TOKENS, "tool_calls"
        else:
            limit = request.get("max_tokens") or profile.answer_tokens
            produced = max(1, min(profile.answer_tokens, int(limit)))
            interval = 1.0 / profile.tokens_per_s if profile.tokens_per_s > 0 else 0.0
            event(delta({"role": "assistant", "content": _ANSWER[0] + " "}))
            await writer.drain()
            for i in range(1, produced):
                await _sleep_until(start + profile.first_token_s + i * interval)
                event(delta({"content": _ANSWER[i % len(_ANSWER)] + " "}))
                await writer.drain()
            finish = "length" if produced < profile.answer_tokens else "stop"
        event(delta({}, finish))
        prompt = sum(
            4 + len(str(m.get("content") or "")) // 4 for m in messages if isinstance(m, dict)
        )
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": produced,
            "total_tokens": prompt + produced,
        }
        event([], usage=usage)
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _tool_query(request: dict[str, Any], messages: list[Any]) -> tuple[str, str] | None:
    """(tool, query) when a model would search the history before answering, else None."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = last.get("content")
    if not isinstance(text, str) or not _RECALL.search(text):
        return None
    for tool in request.get("tools") or ():
        function = (tool.get("function") if isinstance(tool, dict) else None) or {}
        properties = (function.get("parameters") or {}).get("properties") or {}
        if (properties.get("query") or {}).get("type") == "string":
            words = _WORD.findall(text)
            return str(function.get("name")), max(words, key=len) if words else text
    return None


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
