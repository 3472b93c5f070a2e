"""A scriptable MCP server built on the official SDK, over Streamable HTTP or stdio.

Over HTTP it is the SDK's own low-level server and Streamable HTTP app
(stateful sessions, SSE answers — the SDK's defaults), served on
127.0.0.1:0, so a client under test speaks to the same code a real Python MCP
server runs::

    async with FakeMcpServer(token="s3cret") as fake:
        fake.tool("search", schema={...}, structured={"hits": 2})
        fake.tool("explode", error="the index is offline")
        ... connect to fake.url with "Authorization: Bearer s3cret" ...
        assert fake.calls[0].arguments == {"q": "x"}

A tool answers text, a structured result, an ``isError`` result with a message,
or whatever its ``handler`` returns, and may carry annotations (``readOnlyHint``
and the other hints, spelled as on the wire). Every call is recorded (:attr:`calls`:
name, arguments, the HTTP headers it came with), and so is every HTTP request
(:attr:`requests`); with ``token`` set, a request without that bearer token
is answered 401 and reaches nothing.

Run as a script (``python tests/fakes/mcp_server.py [--record FILE]``) it
serves a fixed set of tools — ``echo`` (text), ``add`` (structured), ``fail``
(isError) — over stdio, appending each call as a JSON line to FILE.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

__all__ = ["FakeMcpServer", "RecordedCall"]

_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass
class _FakeTool:
    name: str
    description: str
    schema: dict[str, Any]
    text: str | None
    structured: Any
    error: str | None
    handler: Callable[[dict[str, Any]], Any] | None
    annotations: dict[str, Any] | None = None  # as on the wire: {"readOnlyHint": true, ...}


@dataclass(frozen=True)
class RecordedCall:
    """One tools/call the server received."""

    name: str
    arguments: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased; {} over stdio


class _Tools:
    """The scripted tools, as low-level handlers."""

    def __init__(self, record: str | None = None) -> None:
        self.tools: dict[str, _FakeTool] = {}
        self.calls: list[RecordedCall] = []
        self.listings = 0  # tools/list requests answered
        self.list_error: str | None = None  # answer tools/list with this JSON-RPC error
        self.record = record  # a file to append each call to, as a JSON line

    def server(self) -> Server[Any]:
        return Server("fake-mcp", on_list_tools=self.list_tools, on_call_tool=self.call_tool)

    async def list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self.listings += 1
        if self.list_error is not None:
            raise MCPError(types.INTERNAL_ERROR, self.list_error)
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.schema,
                    annotations=None
                    if t.annotations is None
                    else types.ToolAnnotations.model_validate(t.annotations),
                )
                for t in self.tools.values()
            ]
        )

    async def call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        request = getattr(ctx, "request", None)
        headers = dict(request.headers) if isinstance(request, Request) else {}
        arguments = params.arguments or {}
        self.calls.append(RecordedCall(params.name, arguments, headers))
        if self.record is not None:
            async with await anyio.open_file(self.record, "a", encoding="utf-8") as out:
                await out.write(json.dumps({"name": params.name, "arguments": arguments}) + "\n")
        tool = self.tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"no tool named {params.name}")
        if tool.error is not None:
            return _text(tool.error, error=True)
        if tool.handler is not None:
            value = tool.handler(arguments)
            if inspect.isawaitable(value):  # an async handler: a tool that takes time
                value = await value
            return _text(value if isinstance(value, str) else json.dumps(value))
        if tool.structured is not None:
            return types.CallToolResult(
                content=[types.TextContent(text=json.dumps(tool.structured))],
                structured_content=tool.structured,
            )
        return _text(tool.text if tool.text is not None else "ok")


class FakeMcpServer:
    """The SDK's Streamable HTTP server on 127.0.0.1:0 with scripted tools."""

    def __init__(
        self,
        *,
        token: str | None = None,
        hosts: Sequence[str] = (),
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``hosts``: names (``"tools.corp.test:*"``) accepted in ``Host`` beside loopback ones,
        as a real server lists its own name against DNS rebinding. ``tls``: (certificate
        file, key file) to serve https with."""
        self.token = token
        self._hosts = list(hosts)
        self._tls = tls
        self._tools = _Tools()
        self.requests: list[dict[str, str]] = []  # headers of every HTTP request, lower-cased
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/mcp"

    @property
    def calls(self) -> list[RecordedCall]:
        return self._tools.calls

    @property
    def listings(self) -> int:
        """How many tools/list requests the server answered."""
        return self._tools.listings

    def tool(
        self,
        name: str,
        *,
        description: str = "",
        schema: dict[str, Any] | None = None,
        text: str | None = None,
        structured: Any = None,
        error: str | None = None,
        handler: Callable[[dict[str, Any]], Any] | None = None,
        annotations: dict[str, Any] | None = None,
    ) -> None:
        """Add (or replace) a tool answering ``error`` (isError), ``handler(arguments)``,
        ``structured`` (structured content, its JSON as text too) or ``text``.

        ``annotations`` are the tool's hints as they go on the wire
        (``{"readOnlyHint": True, "idempotentHint": False}``); None lists none.
        """
        self._tools.tools[name] = _FakeTool(
            name, description, schema or _OBJECT, text, structured, error, handler, annotations
        )

    def fail_listings(self, message: str | None) -> None:
        """Answer tools/list with a JSON-RPC error carrying ``message`` (None: list again)."""
        self._tools.list_error = message

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(Request(scope).headers)
            self.requests.append(headers)
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                body = b'{"error":"invalid_token"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._starlette(scope, receive, send)

    async def __aenter__(self) -> Self:
        server = self._tools.server()
        loopback = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        self._starlette: Starlette = server.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=TransportSecuritySettings(
                allowed_hosts=loopback + self._hosts,
                allowed_origins=[f"http://{host}" for host in loopback + self._hosts],
            ),
        )
        sock = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(
            self._app, interface="asgi3", lifespan="on", http="h11", ws="none", log_config=None,
            log_level=logging.WARNING, access_log=False, timeout_graceful_shutdown=1,
            ssl_certfile=self._tls[0] if self._tls else None,
            ssl_keyfile=self._tls[1] if self._tls else None,
        )  # fmt: skip
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        self._socket = sock
        self.port = sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.shutdown(sockets=[self._socket] if self._socket else None)
            self._server = None


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=error)


# ---- the stdio script -----------------------------------------------------------


def _stdio_tools(record: str | None) -> _Tools:
    tools = _Tools(record)
    number = {"type": "number"}
    tools.tools["echo"] = _FakeTool(
        "echo",
        "Echo the text back.",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        None,
        None,
        None,
        lambda arguments: str(arguments["text"]),
    )
    tools.tools["add"] = _FakeTool(
        "add",
        "Add two numbers.",
        {"type": "object", "properties": {"a": number, "b": number}, "required": ["a", "b"]},
        None,
        None,
        None,
        lambda arguments: {"sum": arguments["a"] + arguments["b"]},
    )
    tools.tools["fail"] = _FakeTool(
        "fail", "Always fails.", _OBJECT, None, None, "the stdio tool failed", None
    )
    return tools


async def _serve_stdio(record: str | None) -> None:
    server = _stdio_tools(record).server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fake MCP server over stdio.")
    parser.add_argument("--record", help="append each tool call to this file as a JSON line")
    options = parser.parse_args()
    try:
        anyio.run(_serve_stdio, options.record)
    except KeyboardInterrupt:
        sys.exit(0)
