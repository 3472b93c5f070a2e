"""The MCP endpoint: a run's tools served over Streamable HTTP at ``/mcp/``.

Built on the official SDK's low-level server and its session manager, mounted
in the HTTP app, whose lifespan runs the manager. Every request must carry a
run's bearer token (a :class:`~interlockd.tools.grants.ToolAccess` grant);
without an open, unexpired one it is answered 401 before the SDK sees it and
nothing runs. ``tools/list`` returns exactly the grant's tools; ``tools/call``
executes through the grant's runner, which checks the arguments against the
tool's schema (the low-level server does not) and records the call like any
other; each executed call is then handed to the turn's backend
(:mod:`interlockd.backends.tool_relay`), which streams it as recorded.

The endpoint is stateless and answers JSON, not SSE: each POST is one
self-contained exchange, so there is no session to lose between replicas of a
client's requests, no server-held stream for a graceful stop to wait on, and
(GET is refused with 405, as the transport spec allows) no standalone stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from importlib import metadata
from typing import Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from interlockd.backends.tool_relay import executed_calls
from interlockd.http.bodies import read_body
from interlockd.http.forward import Forwarder
from interlockd.ids import new_id
from interlockd.store.base import StoredGrant
from interlockd.tools.grants import Grant, GrantRegistry, ToolAccess
from interlockd.vocabulary import ToolCall

#: Where the authenticated grant rides in the ASGI scope, for the handlers.
_GRANT_KEY = "interlock.mcp_grant"

#: What the SDK hands a handler: the HTTP request (with our scope) rides in ``request``.
_Context = ServerRequestContext[Any, Any]

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def transport_security(bind_host: str, hosts: Sequence[str] = ()) -> TransportSecuritySettings:
    """Host (and Origin) headers the endpoint answers: loopback, the bound address, ``hosts``.

    DNS-rebinding protection: a request naming any other host is refused
    (421). ``hosts`` are the names clients use to reach the daemon (a public
    hostname behind a proxy): ``"name"`` allows it on any port,
    ``"name:port"`` on that port only.
    """
    allowed: list[str] = []
    names = list(_LOOPBACK_HOSTS)
    bind_host = bind_host.strip("[]")
    if bind_host not in _WILDCARD_HOSTS:
        names.append(f"[{bind_host}]" if ":" in bind_host else bind_host)
    for host in hosts:
        if host.rpartition(":")[2].isdigit() and not host.endswith("]"):
            allowed.append(host)
        else:
            names.append(host)
    for name in dict.fromkeys(names):
        allowed += [name, f"{name}:*"]
    origins = [f"{scheme}://{host}" for host in allowed for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed, allowed_origins=origins
    )


class McpEndpoint:
    """The ASGI app of ``/mcp/`` and the lifespan it needs.

    Route ``/mcp/`` to the instance (it is the ASGI app) and run
    ``async with endpoint.run():`` for as long as the HTTP app serves (in its
    lifespan).
    """

    def __init__(
        self,
        access: GrantRegistry[ToolAccess],
        *,
        security: TransportSecuritySettings,
        max_body: int,
        forwarder: Forwarder | None = None,
    ) -> None:
        self._access = access
        self._forwarder = forwarder
        self._max_body = max_body
        self._server: Server[Any] = Server(
            "interlockd",
            version=_version(),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        self._sessions = StreamableHTTPSessionManager(
            app=self._server,
            stateless=True,
            json_response=True,
            security_settings=security,
            max_request_body_size=max_body,
        )

    def run(self) -> AbstractAsyncContextManager[None]:
        """The session manager's lifetime; requests are served only inside it."""
        return self._sessions.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate by bearer token, then hand the request to the SDK."""
        header = Request(scope).headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        grant = self._access.get(token)
        if grant is None and scope["method"] == "POST" and self._forwarder is not None:
            request = Request(scope, receive)
            owner = await self._forwarder.find(token, "mcp", request.headers)
            if owner is not None:
                await self._forward(owner, request, send)
                return
        if grant is None:
            await _reply(
                send, 401, "invalid or expired MCP token", [(b"www-authenticate", b"Bearer")]
            )
            return
        if scope["method"] != "POST":
            # Stateless JSON: no standalone stream to open, no session to delete.
            await _reply(send, 405, "this endpoint takes POST only", [(b"allow", b"POST")])
            return
        scope[_GRANT_KEY] = grant
        await self._sessions.handle_request(scope, receive, send)

    async def _forward(self, owner: StoredGrant, request: Request, send: Send) -> None:
        """Hand the request to the process running the run, and its answer back."""
        assert self._forwarder is not None
        body = await read_body(request, self._max_body)
        if body is None:
            await _reply(send, 413, f"the body is larger than {self._max_body} bytes", [])
            return
        answer = await self._forwarder.forward(owner, request.url.path, body, request.headers)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", answer.content_type.encode("latin-1"))],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def _list_tools(
        self, ctx: _Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        grant = _grant(ctx)
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=name,
                    description=tool.spec.description,
                    input_schema=tool.spec.parameters,
                )
                for name, tool in grant.scope.tools.items()
            ]
        )

    async def _call_tool(
        self, ctx: _Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        access = _grant(ctx).scope
        if params.name not in access.tools:
            raise MCPError(
                types.INVALID_PARAMS,
                f"unknown tool {params.name!r}; this run's tools: "
                f"{', '.join(access.tools) or 'none'}",
            )
        arguments = params.arguments or {}
        # The runner checks the arguments against the tool's schema (as for every
        # provider), and records even a call it refuses, so the turn shows it.
        call = ToolCall(new_id("call"), params.name, orjson.dumps(arguments).decode())
        result = await access.runner.run(call)
        # The runtime's own stream reports the call without its arguments or
        # result: the backend streaming the turn streams this (recorded) one.
        executed_calls(access.runner).add(call, result)
        if result.error:
            return _text(result.error, error=True)
        return _text(result.result, error=False)


def _version() -> str:
    try:
        return metadata.version("interlockd")
    except metadata.PackageNotFoundError:
        return ""


def _grant(ctx: _Context) -> Grant[ToolAccess]:
    grant = ctx.request.scope.get(_GRANT_KEY) if isinstance(ctx.request, Request) else None
    if not isinstance(grant, Grant) or not isinstance(grant.scope, ToolAccess) or grant.closed:
        # The middleware let nothing through without a grant; a grant closed
        # since then (the run ended) opens nothing either.
        raise MCPError(types.INVALID_REQUEST, "the run has ended; its MCP token is closed")
    return grant


def _text(text: str, *, error: bool) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


async def _reply(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
