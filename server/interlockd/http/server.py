"""The HTTP app: tool dispatch for hosted agents, the MCP endpoint, health.

Routes:

- ``POST /v1/tools/dispatch`` — a hosted agent's tool call, by run token;
- ``/mcp/`` — the run's tools over Streamable HTTP MCP, by run token
  (:mod:`interlockd.http.mcp_endpoint`);
- ``GET /healthz``;
- whatever routes the daemon adds (``routes=``), e.g. OAuth callbacks.

A Starlette app served by an in-process uvicorn server on ``host:port``.
Thin handlers: authenticate, validate, hand over to the run that owns the
call, answer JSON. Errors are JSON ``{"error": ...}`` with the status that
says what happened; nothing runs for a request that is not authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from interlockd.http.bodies import read_body
from interlockd.http.forward import Forwarder
from interlockd.http.mcp_endpoint import McpEndpoint, transport_security
from interlockd.ids import new_id
from interlockd.listen import ports_shared
from interlockd.tools.dispatch import Dispatch, DispatchRejected
from interlockd.tools.grants import GrantRegistry, ToolAccess
from interlockd.vocabulary import DispatchCall

log = structlog.get_logger(__name__)

_MAX_NAME = 128
_MAX_BODY = 1024 * 1024


class HttpServer:
    """The daemon's HTTP side on ``host:port`` (port 0 picks a free one).

    ``routes`` are added to the built-in ones (Starlette routes: ``Route(path,
    handler, methods=[...])``). ``mcp_access`` holds the run tokens of the MCP
    endpoint (a fresh registry if not given). ``public_url`` is this HTTP side
    as clients outside reach it (TLS in front): the MCP endpoint answers its
    host besides loopback and the bound address. ``stop()`` lets requests in
    flight finish for ``shutdown_timeout`` seconds, then cancels them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        dispatch: Dispatch,
        *,
        call_timeout: float,
        mcp_access: GrantRegistry[ToolAccess] | None = None,
        public_url: str = "",
        routes: Sequence[BaseRoute] = (),
        shutdown_timeout: int = 5,
        forwarder: Forwarder | None = None,
        advertise_host: str = "",
    ) -> None:
        self._host = host
        self._forwarder = forwarder
        self._port = port
        self._dispatch = dispatch
        self._call_timeout = call_timeout
        self.mcp_access: GrantRegistry[ToolAccess] = (
            mcp_access if mcp_access is not None else GrantRegistry()
        )
        public_host = urlsplit(public_url).netloc.rpartition("@")[2] if public_url else ""
        # Forwarded calls name this process's advertised host.
        known = [h for h in (public_host, advertise_host) if h]
        self._mcp = McpEndpoint(
            self.mcp_access,
            security=transport_security(host, known),
            max_body=_MAX_BODY,
            forwarder=forwarder,
        )
        self._routes = [
            Route("/v1/tools/dispatch", self._tool_dispatch, methods=["POST"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/mcp/", self._mcp),
            *routes,
        ]
        self._shutdown_timeout = shutdown_timeout
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._ticking: asyncio.Task[None] | None = None
        self.port = 0
        #: Where forwarded calls reach this process: its own port, or (a worker
        #: sharing its port with siblings) a private one.
        self.forward_port = 0

    def app(self) -> Starlette:
        """The ASGI app (its lifespan runs the MCP endpoint's session manager)."""

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with self._mcp.run():
                yield

        return Starlette(routes=self._routes, lifespan=lifespan)

    async def start(self) -> int:
        """Bind and serve; return the bound port. OSError if the address can't be bound."""
        # Bound here rather than by uvicorn, which exits the process on a bind error.
        host = self._host.strip("[]")
        sock = socket.create_server(
            (host, self._port),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            reuse_port=ports_shared(),  # a worker's: its siblings listen on this port too
        )
        config = uvicorn.Config(
            self.app(),
            interface="asgi3",
            lifespan="on",
            http="h11",
            ws="none",
            log_config=None,
            log_level=logging.WARNING,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=self._shutdown_timeout,
        )
        config.load()
        server = uvicorn.Server(config)
        # Not server.serve(): that installs signal handlers, which are the daemon's.
        server.lifespan = config.lifespan_class(config)
        sockets = [sock]
        if ports_shared():
            # The shared port reaches any worker; a forwarded call must reach this one.
            sockets.append(
                socket.create_server(
                    (host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET
                )
            )
        try:
            await server.startup(sockets=sockets)
        except SystemExit:
            for opened in sockets:
                opened.close()
            raise RuntimeError("the HTTP app failed to start (see the log)") from None
        self._server, self._socket, self._sockets = server, sock, sockets
        self.forward_port = sockets[-1].getsockname()[1]
        self._ticking = asyncio.create_task(server.main_loop())
        self.port = sock.getsockname()[1]
        log.info("http_listening", address=self._host, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting, give requests in flight ``shutdown_timeout``, end the MCP sessions."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._ticking is not None:
            await self._ticking
        await server.shutdown(sockets=self._sockets or None)
        if self._forwarder is not None:
            await self._forwarder.aclose()

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _tool_dispatch(self, request: Request) -> Response:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token:
            return _error(401, "missing bearer token")
        raw = await read_body(request, _MAX_BODY)
        if raw is None:
            return _error(413, f"the body is larger than {_MAX_BODY} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "the body must be a JSON object")
        try:
            fields = _dispatch_fields(body)
            channel = self._dispatch.channel(
                token, user_id=fields["user_id"], session_id=fields["session_id"]
            )
        except DispatchRejected as exc:
            if exc.status == 401 and self._forwarder is not None:
                grant = await self._forwarder.find(token, "dispatch", request.headers)
                if grant is not None:
                    answer = await self._forwarder.forward(
                        grant, request.url.path, raw, request.headers
                    )
                    return Response(answer.body, answer.status, media_type=answer.content_type)
            return _error(exc.status, exc.message)
        call = DispatchCall(
            call_id=fields["call_id"] or new_id("call"),
            tool_name=fields["tool_name"],
            arguments=body["arguments"],
        )
        await channel.calls.put(call)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            # wait() never cancels what it waits on: the run still owns the answer.
            await asyncio.wait(
                (call.answer, gone), timeout=self._call_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
        if not call.answer.done():
            # Timed out, or the caller went away (then nobody reads this answer).
            return _error(504, f"the tool did not finish within {self._call_timeout:g} s")
        return JSONResponse(call.answer.result())


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
