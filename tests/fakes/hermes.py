"""A scriptable loopback fake of hermes-agent's API server (``hermes gateway run``).

It writes the bytes hermes-agent 0.19 writes (``gateway/platforms/api_server.py``),
so a backend tested through it reads the real wire format::

    async with FakeHermes(api_key="k" * 32) as hermes:
        hermes.enqueue(HermesReply().tool("search").text("Found ", "it.").usage(900, 12))
        ... POST hermes.base_url + "/v1/chat/completions" ...
        assert hermes.requests[0].session_id == "interlock-..."

- ``GET /health`` answers ``{"status": "ok", "platform": "hermes-agent", ...}``
  without a key; everything else wants ``Authorization: Bearer <api_key>``
  and answers 401 ``{"error": {"message": "Invalid API key", ...}}`` otherwise.
- ``POST /v1/chat/completions`` (``stream: true``): with ``X-Hermes-Session-Id``
  the session's history comes from the fake's store (earlier messages of the
  request are ignored, as Hermes does) and an unknown id starts an empty
  session of that name; the answer echoes the header. Frames: a role chunk,
  ``delta.content`` chunks, ``event: hermes.tool.progress`` frames
  (``running`` with tool, emoji, label and toolCallId, then ``completed``),
  a finish chunk with ``usage`` (and ``error`` + ``hermes`` when the agent
  failed), ``data: [DONE]`` — each frame written as Python's ``json.dumps``
  writes it, as Hermes does.
- ``GET /api/sessions/{id}``: the session, or 404 ``session_not_found``.
- the daemon's MCP tools: as Hermes does (``tools/mcp_tool.py``), a
  :meth:`HermesReply.mcp_tool` step writes the ``running`` frame, calls the tool
  on the MCP server of its configuration (:attr:`FakeHermes.mcp_url` with
  ``Authorization: Bearer`` :attr:`FakeHermes.mcp_token`, set by the test as
  the generated ``config.yaml`` would) through the official MCP client, and
  writes the ``completed`` frame once the server has answered; the answers
  are recorded (:attr:`FakeHermes.mcp_results`).

Each request takes the next scripted :class:`HermesReply` (else a short text).
Requests are recorded (:attr:`FakeHermes.requests`), as are sessions
(:attr:`FakeHermes.sessions`: id -> messages) and clients that went away
mid-answer (:attr:`FakeHermes.disconnects`); tests wait on them, never sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import httpx2
import mcp_types as types
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

__all__ = ["FakeHermes", "HermesReply", "HermesRequest"]

_WAIT_LIMIT = 10.0
_VERSION = "0.19.0"
_call_ids = itertools.count(1)


class HermesReply:
    """One scripted answer: a list of steps, or an HTTP error."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []
        self.status = 200
        self.error_body: dict[str, Any] | None = None

    def text(self, *pieces: str) -> Self:
        self.steps += [("text", piece) for piece in pieces]
        return self

    def tool(self, name: str, *, call_id: str | None = None, mcp: bool = True) -> Self:
        """A tool that runs and completes (a daemon MCP tool unless ``mcp`` is False)."""
        wire = f"mcp__interlock__{name}" if mcp else name
        call = call_id or f"call_{next(_call_ids)}"
        self.steps += [("tool_start", (wire, call)), ("tool_done", (wire, call))]
        return self

    def mcp_tool(self, name: str, arguments: dict[str, Any], *, call_id: str | None = None) -> Self:
        """A call of the daemon's MCP tool ``name``, made on the MCP server as Hermes makes it."""
        call = call_id or f"call_{next(_call_ids)}"
        self.steps.append(("mcp_tool", (name, arguments, call)))
        return self

    def tool_start(self, name: str, call_id: str) -> Self:
        self.steps.append(("tool_start", (f"mcp__interlock__{name}", call_id)))
        return self

    def usage(self, prompt: int, completion: int) -> Self:
        self.steps.append(("usage", (prompt, completion)))
        return self

    def finish(self, reason: str) -> Self:
        self.steps.append(("finish", reason))
        return self

    def fail(self, message: str) -> Self:
        """The agent fails: ``finish_reason: "error"`` with the message, as Hermes sends it."""
        self.steps.append(("fail", message))
        return self

    def raw(self, data: bytes) -> Self:
        self.steps.append(("raw", data))
        return self

    def stall(self) -> Self:
        """Send nothing more until the client goes away."""
        self.steps.append(("stall", None))
        return self

    def disconnect(self) -> Self:
        """Cut the connection without finishing the answer."""
        self.steps.append(("disconnect", None))
        return self

    def http_error(self, status: int, message: str, code: str | None = None) -> Self:
        self.status = status
        self.error_body = {
            "error": {"message": message, "type": "invalid_request_error", "code": code}
        }
        return self


def _default_reply() -> HermesReply:
    return HermesReply().text("Hello", " from", " Hermes.")


@dataclass(frozen=True, slots=True)
class HermesRequest:
    """A chat completions request as the fake received it."""

    body: Any
    headers: dict[str, str]  # names lower-cased
    session_id: str
    history: list[dict[str, Any]]  # what the session held before this request


@dataclass
class FakeHermes:
    """Hermes' API server on 127.0.0.1 (a free port), for one test."""

    api_key: str = "fake-hermes-key-0123456789"
    default: HermesReply = field(default_factory=_default_reply)
    requests: list[HermesRequest] = field(default_factory=list, init=False)
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict, init=False)
    session_lookups: list[str] = field(default_factory=list, init=False)
    disconnects: int = field(default=0, init=False)
    base_url: str = field(default="", init=False)
    #: The MCP server of Hermes' configuration (``mcp_servers.interlock``).
    mcp_url: str = ""
    mcp_token: str = ""
    #: What each MCP tool call answered: (tool, is_error, text of its content).
    mcp_results: list[tuple[str, bool, str]] = field(default_factory=list, init=False)
    _queue: deque[HermesReply] = field(default_factory=deque, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/api/sessions/{session_id}", self._get_session)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def enqueue(self, *replies: HermesReply) -> None:
        self._queue.extend(replies)

    def forget(self, session_id: str) -> None:
        """Lose a session, as a Hermes whose state directory was wiped."""
        self.sessions.pop(session_id, None)

    async def wait_for_disconnects(self, count: int = 1) -> None:
        await self._wait(lambda: self.disconnects >= count, f"{count} disconnect(s)")

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(_WAIT_LIMIT):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the fake saw no {what} within {_WAIT_LIMIT}s") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- handlers --------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization", "") == f"Bearer {self.api_key}":
            return None
        return web.json_response(
            {
                "error": {
                    "message": "Invalid API key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            status=401,
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "platform": "hermes-agent", "version": _VERSION})

    async def _get_session(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        session_id = request.match_info["session_id"]
        self.session_lookups.append(session_id)
        if session_id not in self.sessions:
            return web.json_response(
                {
                    "error": {
                        "message": f"Session not found: {session_id}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "session_not_found",
                    }
                },
                status=404,
            )
        messages = self.sessions[session_id]
        return web.json_response(
            {
                "object": "hermes.session",
                "session": {
                    "id": session_id,
                    "source": "api_server",
                    "message_count": len(messages),
                },
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        body = await request.json()
        messages = body.get("messages") if isinstance(body, dict) else None
        if not messages or not isinstance(messages, list):
            return _invalid("Missing or invalid 'messages' field")
        talk = [m for m in messages if m.get("role") in ("user", "assistant")]
        if not talk or talk[-1].get("role") != "user" or not talk[-1].get("content"):
            return _invalid("No user message found in messages")
        session_id = request.headers.get("X-Hermes-Session-Id", "").strip()
        if not session_id:
            session_id = f"api-fake-{len(self.requests)}"
        history = list(self.sessions.get(session_id, []))
        self.requests.append(
            HermesRequest(
                body, {k.lower(): v for k, v in request.headers.items()}, session_id, history
            )
        )
        self._notify()
        reply = self._queue.popleft() if self._queue else self.default
        if reply.error_body is not None:
            return web.json_response(reply.error_body, status=reply.status)
        session = self.sessions.setdefault(session_id, [])
        session.append({"role": "user", "content": talk[-1]["content"]})
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Hermes-Session-Id": session_id,
            }
        )
        await response.prepare(request)
        try:
            if await self._stream(request, response, reply, body, session):
                await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            self._notify()
            raise
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        reply: HermesReply,
        body: dict[str, Any],
        session: list[dict[str, Any]],
    ) -> bool:
        completion_id = f"chatcmpl-{next(_call_ids):029x}"
        model = body.get("model", "hermes-agent")
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        def progress(payload: dict[str, Any]) -> bytes:
            return f"event: hermes.tool.progress\ndata: {json.dumps(payload)}\n\n".encode()

        await response.write(chunk({"role": "assistant"}))
        text: list[str] = []
        prompt, completion = 0, 0
        finish, error = "stop", None
        for kind, value in reply.steps:
            if kind == "text":
                text.append(value)
                await response.write(chunk({"content": value}))
            elif kind == "tool_start":
                wire, call = value
                await response.write(
                    progress(
                        {
                            "tool": wire,
                            "emoji": "⚡",
                            "label": wire,
                            "toolCallId": call,
                            "status": "running",
                        }
                    )
                )
            elif kind == "tool_done":
                wire, call = value
                await response.write(
                    progress({"tool": wire, "toolCallId": call, "status": "completed"})
                )
            elif kind == "mcp_tool":
                name, arguments, call = value
                wire = "mcp__interlock__" + re.sub(r"[^A-Za-z0-9_]", "_", name)
                await response.write(
                    progress(
                        {
                            "tool": wire,
                            "emoji": "⚡",
                            "label": wire,
                            "toolCallId": call,
                            "status": "running",
                        }
                    )
                )
                self.mcp_results.append(await self._call_mcp(name, arguments))
                await response.write(
                    progress({"tool": wire, "toolCallId": call, "status": "completed"})
                )
            elif kind == "usage":
                prompt, completion = value
            elif kind == "finish":
                finish = value
            elif kind == "fail":
                finish, error = "error", value
            elif kind == "raw":
                await response.write(value)
            elif kind == "stall":
                await asyncio.Event().wait()  # until the handler is cancelled
            elif kind == "disconnect":
                assert request.transport is not None
                request.transport.close()
                return False
        if text:
            session.append({"role": "assistant", "content": "".join(text)})
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        extra: dict[str, Any] = {"usage": usage}
        if error is not None:
            extra["error"] = {"message": error, "type": "agent_error"}
            extra["hermes"] = {
                "completed": False,
                "partial": False,
                "failed": True,
                "error": error,
                "error_code": "agent_error",
            }
        await response.write(chunk({}, finish, **extra))
        await response.write(b"data: [DONE]\n\n")
        return True

    async def _call_mcp(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool, str]:
        if not self.mcp_url:
            raise AssertionError("set FakeHermes.mcp_url (and mcp_token) before an MCP tool call")
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.mcp_token}"}) as http,
            Client(streamable_http_client(self.mcp_url, http_client=http)) as client,
        ):
            result = await client.call_tool(name, arguments)
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        return name, bool(result.is_error), text


def _invalid(message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error"}}, status=400
    )
