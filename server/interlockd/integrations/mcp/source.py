"""An MCP server connected as an integration: its tools, called through the official SDK.

One :class:`McpSource` per connection. The connection's config says how to
reach the server::

    {"transport": "http", "url": "https://mcp.example.com/mcp/"}
    {"transport": "stdio", "command": "uvx", "args": ["some-mcp-server"]}

and its credentials (sealed) what to send: ``{"bearer": "...", "headers":
{"X-Api-Key": "..."}}`` over HTTP, ``{"env": {"API_KEY": "..."}}`` for a stdio
command. A stdio server is a process the daemon starts, so it runs only where
the operator allows it (``allow_stdio``). An HTTP server is reached only
where the egress policy allows (:mod:`interlockd.integrations.egress`:
public addresses and the operator's networks, checked again after DNS at
every connect), without proxies or redirects.

:meth:`McpSource.tools` lists the server's tools as :class:`Tool` objects named
``mcp__<server>__<tool>`` (:mod:`.naming`), cached for a short while, each
side-effecting unless the server marks it ``readOnlyHint: true``. Their
``execute`` checks the arguments against the tool's schema before anything
is sent, calls the tool and returns a JSON-able value; a result flagged
``isError`` becomes a :class:`ToolError` with the server's text, a server
that cannot be reached (or a command that cannot be started) a
:class:`McpUnavailable` saying so, and a server that refuses the credentials
(401) marks the connection broken (:class:`ConnectionBroken`). Why a
connection failed is logged for the operator, not told to the tenant, and no
remote body is quoted in either.

Each listing and each call opens its own short MCP connection (for stdio, its
own process): nothing is held open between runs, and no state is shared
between concurrent calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import mcp_types as types
import structlog
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from interlockd.integrations.base import Connection, ConnectionBroken, Credentials
from interlockd.integrations.egress import EgressPolicy, EgressRefused, GuardedTransport, UrlRefused
from interlockd.integrations.mcp.naming import tool_names
from interlockd.tools.base import Tool, ToolContext, ToolError
from interlockd.tools.validation import ArgumentValidator
from interlockd.vocabulary import ToolSpec

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Header names (lower-case) a connection's credentials may not set: HTTP and the MCP
#: transport set them, and a tenant's Host, Content-Length or Transfer-Encoding could
#: aim or split requests. ``Proxy-*`` names are refused as well.
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "te",
        "trailer",
        "connection",
        "keep-alive",
        "upgrade",
        "expect",
        "accept",
        "accept-encoding",
        "last-event-id",
        "mcp-session-id",
        "mcp-protocol-version",
    }
)


#: Longest server error message handed on.
_MAX_MESSAGE = 300


class McpUnavailable(ToolError):
    """The MCP server could not be reached, or is not allowed to run here."""


@dataclass(frozen=True, slots=True)
class _Http:
    url: str


@dataclass(frozen=True, slots=True)
class _Stdio:
    command: str
    args: tuple[str, ...]


class McpSource:
    """The tools of one connected MCP server."""

    def __init__(
        self,
        connection: Connection,
        credentials: Credentials,
        *,
        allow_stdio: bool,
        egress: EgressPolicy | None = None,
        list_ttl: float = 60.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``allow_stdio``: whether this daemon may start stdio servers (operator config).

        ``egress``: where HTTP servers may be (default: public addresses only);
        ``list_ttl``: how long a listing is reused; ``timeout``: the longest a
        listing or a call (connecting included) may take.
        """
        self.connection = connection
        self.credentials = credentials
        self._allow_stdio = allow_stdio
        self._egress = egress or EgressPolicy()
        self._list_ttl = list_ttl
        self._timeout = timeout
        self._clock = clock
        self._listed: list[Tool] = []
        self._listed_until = float("-inf")
        self._listing = asyncio.Lock()

    @property
    def name(self) -> str:
        """The server's name (the connection's app)."""
        return self.connection.app

    async def tools(self) -> list[Tool]:
        """The server's tools, namespaced, sorted by the server's names; cached for ``list_ttl``.

        Raises ToolError (McpUnavailable when unreachable or not allowed,
        ConnectionBroken when the credentials are refused). Tools whose input
        schema is not a valid JSON schema are left out (and logged).
        """
        async with self._listing:
            if self._clock() < self._listed_until:
                return list(self._listed)
            # A listing's failure only reaches the daemon's log: no server text in it.
            listed = await self._using(_list_all, quote_server=False)
            names = tool_names(self.name, [tool.name for tool in listed])
            tools: list[Tool] = []
            for remote in sorted(listed, key=lambda tool: tool.name):
                try:
                    validator = ArgumentValidator(remote.input_schema)
                except ValueError:
                    # The reason would quote the remote schema: the log names the tool only.
                    log.warning(
                        "mcp_tool_skipped",
                        server=self.name,
                        tool=remote.name[:64],
                        reason="its input schema is not a valid JSON schema",
                    )
                    continue
                spec = ToolSpec(
                    names[remote.name],
                    remote.description or "",
                    remote.input_schema,
                    side_effecting=_side_effecting(remote),
                )
                tools.append(McpTool(self, remote.name, spec, validator))
            self._listed, self._listed_until = tools, self._clock() + self._list_ttl
            return list(tools)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call the server's tool ``tool`` (its own name) with already-validated ``arguments``.

        Returns a JSON-able value: the structured result if the server gave
        one, else the text of a single text block (decoded when it is a JSON
        object or array, so it is not quoted twice), else the content blocks.
        ToolError with the server's text for a result flagged isError.
        """

        async def call_tool(client: Client) -> types.CallToolResult:
            return await client.call_tool(tool, arguments)

        result = await self._using(call_tool)
        if result.is_error:
            text = _texts(result.content) or "the tool failed without saying why"
            raise ToolError(f"{self.name}: {text}")
        if result.structured_content is not None:
            return result.structured_content
        if len(result.content) == 1 and isinstance(result.content[0], types.TextContent):
            return _decoded(result.content[0].text)
        return [
            block.text
            if isinstance(block, types.TextContent)
            else block.model_dump(mode="json", by_alias=True, exclude_none=True)
            for block in result.content
        ]

    # ---- connecting -------------------------------------------------------

    def _target(self) -> _Http | _Stdio:
        config = self.connection.config
        transport = config.get("transport")
        if transport == "http":
            url = config.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ToolError(f"{self.name}: config.url must be an http(s) URL")
            try:  # again here: the URL may predate the policy, or the policy may have changed
                return _Http(self._egress.check_url(url).url)
            except UrlRefused as exc:
                raise McpUnavailable(f"{self.name}: config.url {exc}") from None
        if transport == "stdio":
            if not self._allow_stdio:
                raise McpUnavailable(
                    f"{self.name}: this daemon does not run stdio MCP servers "
                    "(the operator has not allowed it); connect the server by URL instead"
                )
            command, args = config.get("command"), config.get("args", [])
            if not isinstance(command, str) or not command:
                raise ToolError(f"{self.name}: config.command must be a non-empty string")
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ToolError(f"{self.name}: config.args must be a list of strings")
            return _Stdio(command, tuple(args))
        raise ToolError(f"{self.name}: config.transport must be 'http' or 'stdio'")

    async def _using(
        self, operation: Callable[[Client], Awaitable[T]], *, quote_server: bool = True
    ) -> T:
        """Run ``operation`` on a fresh connection to the server, mapping every failure.

        ``quote_server``: whether a JSON-RPC error's message (the server's words)
        goes into the ToolError — yes when it answers a model's call, no when
        the error can only end up in the log.
        """
        target = self._target()
        credentials = await self.credentials.read()
        statuses: list[int] = []  # of the HTTP responses: the SDK reports any 4xx alike
        if isinstance(target, _Stdio):
            env = _strings(credentials.get("env") or {}, "env")
            params = StdioServerParameters(command=target.command, args=list(target.args), env=env)
            connect = self._stdio(params)
        else:
            connect = self._http(target.url, _headers(credentials), statuses)
        try:
            async with asyncio.timeout(self._timeout), connect as client:
                return await operation(client)
        except Exception as exc:
            # What a tenant learns here (tool errors, the integration's status) must not
            # map the network for them. The policy already keeps every target public or
            # inside a range the operator opened, so what remains to hide is *why* a
            # connection was not made: refused by the policy after DNS (which would tell
            # what an internal name resolves to), no such name, nothing listening, a TLS
            # failure — all read "could not connect". A timeout is told apart (the
            # server exists but is slow: worth a retry), and so is a 401 (the user must
            # reconnect; only a server that was reached, at an allowed address, says it).
            # Remote bodies are quoted nowhere: not in errors, not in the log.
            if 401 in statuses:
                reason = "the MCP server refused the credentials (HTTP 401)"
                await self.credentials.mark_broken(reason)
                raise ConnectionBroken(f"{self.name}: {reason}; reconnect it") from None
            error = _find(exc, MCPError)
            if error is not None:
                raise ToolError(f"{self.name}: {_server_message(error, quote_server)}") from None
            why = "could not be connected to; check its URL, or try again later"
            if _find(exc, EgressRefused) is not None:
                cause = "egress_refused"  # the operator's log says it; the tenant's message doesn't
            elif _find(exc, TimeoutError) is not None:
                why, cause = (
                    f"did not answer within {self._timeout:g} s; try again later",
                    "timeout",
                )
            elif isinstance(target, _Stdio) and _find(exc, OSError) is not None:
                why, cause = "could not be started", "not_started"
            else:
                cause = "unreachable"
            log.warning("mcp_unavailable", server=self.name, cause=cause, error=type(exc).__name__)
            raise McpUnavailable(f"the MCP server {self.name!r} {why}") from None

    @asynccontextmanager
    async def _stdio(self, params: StdioServerParameters) -> AsyncIterator[Client]:
        async with Client(params, read_timeout_seconds=self._timeout) as client:
            yield client

    @asynccontextmanager
    async def _http(
        self, url: str, headers: dict[str, str], statuses: list[int]
    ) -> AsyncIterator[Client]:
        async def note(response: httpx2.Response) -> None:
            statuses.append(response.status_code)

        async with (
            httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(self._timeout),
                event_hooks={"response": [note]},
                # Every connection goes through the egress check; no proxy, no .netrc,
                # no redirects (a redirect would be a second, unregistered target).
                transport=GuardedTransport(self._egress),
                trust_env=False,
                follow_redirects=False,
            ) as http,
            Client(
                streamable_http_client(url, http_client=http), read_timeout_seconds=self._timeout
            ) as client,
        ):
            yield client


class McpTool(Tool):
    """One tool of an MCP server, as the router's models see it."""

    def __init__(
        self, source: McpSource, remote_name: str, spec: ToolSpec, validator: ArgumentValidator
    ) -> None:
        self.source = source
        self.remote_name = remote_name
        self.spec = spec
        self.source_id = source.connection.integration_id
        self._validator = validator

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        problem = self._validator.problem(arguments)
        if problem is not None:
            raise ToolError(problem)
        return await self.source.call(self.remote_name, arguments)


def _side_effecting(tool: types.Tool) -> bool:
    """Whether calling ``tool`` may change something: yes unless the server says ``readOnlyHint``.

    ``idempotentHint`` alone does not make a tool safe to run again after an
    unknown outcome: idempotent means "the same call twice leaves the same
    state", which holds only when nothing ran in between — a retry after a
    crash can land after other calls (a delete re-applied after a re-create),
    and a hint from a remote server is a claim, not a guarantee. So only a
    read-only tool is treated as free of effects.
    """
    hints = tool.annotations
    return not (hints is not None and hints.read_only_hint is True)


def _server_message(error: MCPError, quote: bool) -> str:
    """What the server said in a JSON-RPC error, fit to hand to the model (``quote``) or to log."""
    if error.error.code == types.PARSE_ERROR:
        # The SDK's parse errors quote the body it could not parse.
        return "the server answered something that is not MCP"
    if not quote:
        return f"the server answered JSON-RPC error {error.code}"
    message = " ".join(error.message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


async def _list_all(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server whose cursors never end can't hang a listing
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _headers(credentials: Mapping[str, Any]) -> dict[str, str]:
    headers = _strings(credentials.get("headers") or {}, "headers")
    for name in headers:
        if name.lower() in TRANSPORT_HEADERS or name.lower().startswith("proxy-"):
            raise ToolError(f"credentials.headers: {name} is set by the transport")
    bearer = credentials.get("bearer")
    if bearer:
        if not isinstance(bearer, str):
            raise ToolError("credentials.bearer must be a string")
        headers["Authorization"] = f"Bearer {bearer}"
    return headers


def _strings(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ToolError(f"credentials.{field} must map names to strings")
    return dict(value)


def _decoded(text: str) -> Any:
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _texts(content: list[types.ContentBlock]) -> str:
    return "\n".join(block.text for block in content if isinstance(block, types.TextContent))


E = TypeVar("E", bound=BaseException)


def _find(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` in ``exc``, its exception groups or its causes."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    if exc.__cause__ is not None:
        return _find(exc.__cause__, kind)
    return None


class McpSources:
    """The MCP sources of the daemon, one per connection, as :class:`RunTools` lists them.

    ``await sources(connection, credentials)`` is the connection's tools; the
    source (and so its cached listing) is kept per integration id — replaced
    when the connection's config changes — for the ``max_sources`` most
    recently used connections.
    """

    def __init__(
        self,
        *,
        allow_stdio: bool,
        egress: EgressPolicy | None = None,
        list_ttl: float = 60.0,
        timeout: float = 30.0,
        max_sources: int = 1024,
    ) -> None:
        """``egress``: where HTTP servers may be (the policy registration checks against)."""
        self._allow_stdio = allow_stdio
        self._egress = egress or EgressPolicy()
        self._list_ttl = list_ttl
        self._timeout = timeout
        self._max = max_sources
        self._sources: OrderedDict[str, McpSource] = OrderedDict()

    async def __call__(self, connection: Connection, credentials: Credentials) -> list[Tool]:
        """The tools of ``connection`` (ToolError when they can't be listed)."""
        return await self.source(connection, credentials).tools()

    def source(self, connection: Connection, credentials: Credentials) -> McpSource:
        """The source of ``connection``, reading its credentials through ``credentials``."""
        source = self._sources.get(connection.integration_id)
        if source is None or source.connection != connection:
            source = McpSource(
                connection,
                credentials,
                allow_stdio=self._allow_stdio,
                egress=self._egress,
                list_ttl=self._list_ttl,
                timeout=self._timeout,
            )
            self._sources[connection.integration_id] = source
        source.credentials = credentials  # the newest handle (they read the same record)
        self._sources.move_to_end(connection.integration_id)
        while len(self._sources) > self._max:
            self._sources.popitem(last=False)
        return source
