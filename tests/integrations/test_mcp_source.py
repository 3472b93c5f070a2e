"""MCP servers as integrations: tools listed, namespaced, validated, called through the SDK."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from interlockd.integrations.base import Connection, ConnectionBroken, Credentials
from interlockd.integrations.egress import EgressPolicy
from interlockd.integrations.mcp.naming import tool_names
from interlockd.integrations.mcp.source import McpSource, McpSources, McpUnavailable
from interlockd.tools.base import Tool, ToolContext, ToolError
from tests.fakes.mcp_server import FakeMcpServer

FAKE_SCRIPT = Path(__file__).parents[1] / "fakes" / "mcp_server.py"
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"q": {"type": "string"}, "limit": {"type": "integer", "maximum": 50}},
    "required": ["q"],
}
CTX = ToolContext(cast(Any, None), "sb_1", "u-1", "conv_1", "run_1")
#: The fakes listen on 127.0.0.1: opened the way an operator opens a private range.
LOOPBACK = EgressPolicy([ipaddress.ip_network("127.0.0.0/8")])


class MemoryCredentials(Credentials):
    """Credentials held in memory; records a broken mark."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.broken = ""
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        if self.broken:
            raise ConnectionBroken(f"broken: {self.broken}")
        return dict(self.values)

    async def replace(self, credentials: Mapping[str, Any]) -> None:
        self.values = dict(credentials)

    def lock(self) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def held() -> AsyncIterator[None]:
            async with self._lock:
                yield

        return held()

    async def mark_broken(self, reason: str) -> None:
        self.broken = reason


def connection(app: str, **config: Any) -> Connection:
    return Connection("int_1", "sb_1", "u-1", "mcp", app, config)


@pytest.fixture
async def fake() -> AsyncIterator[FakeMcpServer]:
    async with FakeMcpServer(token="s3cret") as server:
        server.tool("search.issues", description="Search the tracker.", schema=SEARCH_SCHEMA,
                    structured={"hits": [1, 2]})  # fmt: skip
        server.tool("hello", text="hi there")
        server.tool("explode", error="the index is offline")
        yield server


def http_source(
    fake: FakeMcpServer, creds: MemoryCredentials | None = None, **kw: Any
) -> McpSource:
    creds = creds or MemoryCredentials({"bearer": "s3cret", "headers": {"X-Tenant": "acme"}})
    return McpSource(
        connection("tracker", transport="http", url=fake.url),
        creds,
        allow_stdio=False,
        egress=LOOPBACK,
        **kw,
    )


async def by_name(source: McpSource) -> dict[str, Tool]:
    return {tool.spec.name: tool for tool in await source.tools()}


async def test_tools_are_listed_namespaced_with_their_schemas(fake: FakeMcpServer) -> None:
    """The tools come back as ``mcp__<server>__<tool>``, sorted, with schemas and descriptions."""
    tools = await http_source(fake).tools()
    assert [t.spec.name for t in tools] == [
        "mcp__tracker__explode",
        "mcp__tracker__hello",
        "mcp__tracker__search_issues",
    ]
    search = tools[2].spec
    assert (search.description, search.parameters) == ("Search the tracker.", SEARCH_SCHEMA)
    assert all(
        r["authorization"] == "Bearer s3cret" and r["x-tenant"] == "acme" for r in fake.requests
    )


async def test_calls_reach_the_server_with_the_connections_headers(fake: FakeMcpServer) -> None:
    """A call sends the arguments under the server's own tool name with the stored auth headers."""
    tools = await by_name(http_source(fake))
    assert await tools["mcp__tracker__search_issues"].execute(CTX, {"q": "bug"}) == {"hits": [1, 2]}
    assert await tools["mcp__tracker__hello"].execute(CTX, {}) == "hi there"
    assert [(c.name, c.arguments) for c in fake.calls] == [
        ("search.issues", {"q": "bug"}),
        ("hello", {}),
    ]
    assert all(c.headers["authorization"] == "Bearer s3cret" for c in fake.calls)
    assert all(c.headers["x-tenant"] == "acme" for c in fake.calls)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "arguments: 'q' is a required property"),
        ({"q": 7}, "arguments.q: 7 is not of type 'string'"),
        ({"q": "x", "limit": 99}, "arguments.limit: 99 is greater than the maximum of 50"),
    ],
)
async def test_arguments_are_validated_before_anything_is_sent(
    fake: FakeMcpServer, arguments: dict[str, Any], message: str
) -> None:
    """Arguments breaking the schema are a ToolError naming the field; the server sees no call."""
    tools = await by_name(http_source(fake))
    with pytest.raises(ToolError, match=re.escape(message)):
        await tools["mcp__tracker__search_issues"].execute(CTX, arguments)
    assert fake.calls == []


async def test_an_error_result_is_a_tool_error_with_the_servers_text(fake: FakeMcpServer) -> None:
    """``isError: true`` becomes a ToolError carrying what the server said."""
    tools = await by_name(http_source(fake))
    with pytest.raises(ToolError, match="the index is offline") as raised:
        await tools["mcp__tracker__explode"].execute(CTX, {})
    assert type(raised.value) is ToolError
    assert [c.name for c in fake.calls] == ["explode"]


async def test_the_listing_is_cached_for_a_while(fake: FakeMcpServer) -> None:
    """Within its TTL a listing is reused; after it, the server is asked again."""
    now = [0.0]
    source = http_source(fake, list_ttl=60, clock=lambda: now[0])
    await source.tools()
    fake.tool("new_tool", text="fresh")
    now[0] = 59
    assert "mcp__tracker__new_tool" not in await by_name(source)
    assert fake.listings == 1
    now[0] = 61
    assert "mcp__tracker__new_tool" in await by_name(source)
    assert fake.listings == 2


async def test_sources_keep_one_listing_per_connection(fake: FakeMcpServer) -> None:
    """A connection's source (and listing) is reused until the connection's config changes."""
    sources = McpSources(allow_stdio=False, egress=LOOPBACK)
    creds = MemoryCredentials({"bearer": "s3cret"})
    tracker = connection("tracker", transport="http", url=fake.url)
    first = await sources(tracker, creds)
    again = await sources(tracker, MemoryCredentials({"bearer": "s3cret"}))
    assert [t.spec.name for t in again] == [t.spec.name for t in first]
    assert fake.listings == 1
    moved = connection("tracker", transport="http", url=fake.url + "/")
    await sources(moved, creds)
    assert fake.listings == 2


async def test_refused_credentials_mark_the_connection_broken(fake: FakeMcpServer) -> None:
    """A 401 is ConnectionBroken telling the user to reconnect; the connection is marked broken."""
    creds = MemoryCredentials({"bearer": "stale"})
    with pytest.raises(ConnectionBroken, match="reconnect"):
        await http_source(fake, creds).tools()
    assert "401" in creds.broken
    assert fake.listings == 0


async def test_an_unreachable_server_is_a_tool_error_saying_so() -> None:
    """Nothing listening at the URL: McpUnavailable naming the server, no SDK internals."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    source = McpSource(
        connection("tracker", transport="http", url=f"http://127.0.0.1:{port}/mcp"),
        MemoryCredentials({}),
        allow_stdio=False,
        egress=LOOPBACK,
        timeout=10,
    )
    with pytest.raises(McpUnavailable, match="the MCP server 'tracker' could not be connected to"):
        await source.tools()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"transport": "sse", "url": "http://x"}, "config.transport"),
        ({"transport": "http", "url": "ftp://x"}, "config.url"),
        ({"transport": "http"}, "config.url"),
    ],
)
async def test_a_bad_config_is_a_tool_error_naming_the_field(
    config: dict[str, Any], message: str
) -> None:
    """A connection config that can't work says which field is wrong."""
    source = McpSource(connection("x", **config), MemoryCredentials({}), allow_stdio=True)
    with pytest.raises(ToolError, match=message):
        await source.tools()


def stdio_source(record: Path, *, allow: bool) -> McpSource:
    return McpSource(
        connection(
            "local tools",
            transport="stdio",
            command=sys.executable,
            args=[str(FAKE_SCRIPT), "--record", str(record)],
        ),
        MemoryCredentials({"env": {"FAKE_MODE": "test"}}),
        allow_stdio=allow,
    )


async def test_a_stdio_server_runs_where_the_operator_allows_it(tmp_path: Path) -> None:
    """With stdio allowed, the command is started and its tools listed and called over stdio."""
    record = tmp_path / "calls.jsonl"
    tools = await by_name(stdio_source(record, allow=True))
    assert sorted(tools) == [
        "mcp__local_tools__add",
        "mcp__local_tools__echo",
        "mcp__local_tools__fail",
    ]
    assert await tools["mcp__local_tools__add"].execute(CTX, {"a": 2, "b": 3}) == {"sum": 5}
    with pytest.raises(ToolError, match="the stdio tool failed"):
        await tools["mcp__local_tools__fail"].execute(CTX, {})
    calls = [orjson.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        {"name": "add", "arguments": {"a": 2, "b": 3}},
        {"name": "fail", "arguments": {}},
    ]


async def test_a_stdio_server_is_refused_unless_allowed(tmp_path: Path) -> None:
    """Without the operator's permission no process is started: a ToolError says why."""
    record = tmp_path / "calls.jsonl"
    with pytest.raises(McpUnavailable, match="does not run stdio MCP servers"):
        await stdio_source(record, allow=False).tools()
    assert not record.exists()


async def test_a_stdio_command_that_cannot_start_says_so() -> None:
    """A stdio command that does not exist is McpUnavailable saying it could not be started."""
    source = McpSource(
        connection("gone", transport="stdio", command="/nonexistent/mcp-server"),
        MemoryCredentials({}),
        allow_stdio=True,
    )
    with pytest.raises(McpUnavailable, match="'gone' could not be started"):
        await source.tools()


def test_long_and_clashing_names_stay_unique_and_stable() -> None:
    """Names are sanitised, capped at 64 characters and disambiguated the same way every time."""
    names = tool_names("my.server", ["get.file", "get_file", "x" * 80, "ok"])
    assert names["ok"] == "mcp__my_server__ok"
    assert names["get.file"] == "mcp__my_server__get_file"
    assert names["get_file"].startswith("mcp__my_server__get_file_")
    assert len(names["x" * 80]) == 64
    assert names == tool_names("my.server", ["ok", "x" * 80, "get_file", "get.file"])


@given(
    server=st.text(min_size=1, max_size=40),
    tools=st.lists(st.text(min_size=1, max_size=100), min_size=1, max_size=12),
)
def test_every_name_is_one_every_provider_accepts(server: str, tools: list[str]) -> None:
    """For any server and tool names: ``[A-Za-z0-9_-]{1,64}``, one per tool, all distinct."""
    names = tool_names(server, tools)
    assert set(names) == set(tools)
    assert all(re.fullmatch(r"mcp__[A-Za-z0-9_-]+", n) and len(n) <= 64 for n in names.values())
    assert len(set(names.values())) == len(names)
