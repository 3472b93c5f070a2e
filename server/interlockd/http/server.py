"""The HTTP app: ``POST /v1/tools/dispatch`` for hosted agents, ``GET /healthz``.

Thin handlers: authenticate, validate, hand over to the run that owns the
call, answer JSON. Errors are JSON ``{"error": ...}`` with the status that
says what happened; nothing runs for a request that is not authenticated.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from interlockd.http.dispatch import DispatchCall, DispatchRegistry, DispatchRejected
from interlockd.ids import new_id

log = structlog.get_logger(__name__)

_MAX_NAME = 128
_MAX_BODY = 1024 * 1024


class HttpServer:
    """The daemon's HTTP side on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self, host: str, port: int, dispatch: DispatchRegistry, *, call_timeout: float
    ) -> None:
        self._host = host
        self._port = port
        self._dispatch = dispatch
        self._call_timeout = call_timeout
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/tools/dispatch", self._tool_dispatch)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("http_listening", address=self._host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _tool_dispatch(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token:
            return _error(401, "missing bearer token")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be a JSON object")
        try:
            fields = _dispatch_fields(body)
            channel = self._dispatch.channel(
                token, user_id=fields["user_id"], session_id=fields["session_id"]
            )
        except DispatchRejected as exc:
            return _error(exc.status, exc.message)
        call = DispatchCall(
            call_id=fields["call_id"] or new_id("call"),
            tool_name=fields["tool_name"],
            arguments=body["arguments"],
        )
        await channel.calls.put(call)
        try:
            answer = await asyncio.wait_for(asyncio.shield(call.answer), self._call_timeout)
        except TimeoutError:
            return _error(504, f"the tool did not finish within {self._call_timeout:g} s")
        return web.json_response(answer)


def _dispatch_fields(body: Any) -> dict[str, str]:
    if not isinstance(body, dict):
        raise DispatchRejected(400, "the body must be a JSON object")
    out: dict[str, str] = {}
    for name, required in (
        ("tool_name", True),
        ("call_id", False),
        ("user_id", True),
        ("session_id", False),
    ):
        value = body.get(name, "")
        if not isinstance(value, str) or len(value) > _MAX_NAME or (required and not value):
            raise DispatchRejected(400, f"{name}: a string of 1-{_MAX_NAME} characters")
        out[name] = value
    if not isinstance(body.get("arguments", None), dict):
        raise DispatchRejected(400, "arguments: must be a JSON object")
    unknown = set(body) - {*out, "arguments"}
    if unknown:
        raise DispatchRejected(400, f"{sorted(unknown)[0]}: unknown field")
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
