"""The daemon's MCP endpoint, used by the official SDK client with a run's token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from interlockd.http.server import HttpServer
from interlockd.ids import new_id
from interlockd.runs.recording import TurnRecorder
from interlockd.tools.base import Tool, ToolContext, ToolError
from interlockd.tools.dispatch import Dispatch
from interlockd.tools.grants import Grant, GrantRegistry, ToolAccess
from interlockd.tools.runner import SandboxToolRunner
from interlockd.tools.search import SearchConversationsTool
from interlockd.tools.selection import select
from interlockd.vocabulary import ToolCall, ToolResult, ToolRunner, ToolSpec
from tests.conftest import RunningDaemon

SHOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}},
    "required": ["text"],
    "additionalProperties": False,
}


class Shout(Tool):
    spec = ToolSpec("shout", "Say it louder.", SHOUT_SCHEMA)

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        return {"shouted": arguments["text"].upper(), "for": ctx.end_user_id}


class Refuse(Tool):
    spec = ToolSpec("refuse", "Always refuses.", {"type": "object", "properties": {}})

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        raise ToolError("the archive is closed today")


class Hidden(Tool):
    spec = ToolSpec("hidden", "Not in this run's allow-list.", {"type": "object"})

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        raise AssertionError("a tool outside the run's allow-list ran")


class Recorded(ToolRunner):
    """An executor that records the calls it is handed and answers them from a script."""

    def __init__(self, block: bool = False) -> None:
        self.calls: list[ToolCall] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self._block = block

    async def run(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        self.started.set()
        if self._block:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return ToolResult(call.call_id, call.name, '{"ok":true}')


@asynccontextmanager
async def mcp_client(url: str, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp/"


async def open_run(daemon: RunningDaemon) -> tuple[Grant[ToolAccess], str]:
    """A run's grant over the sandbox's tools filtered by its allow-list, and its conversation."""
    d = daemon.daemon
    assert d.http is not None
    store = d.store
    conversation = await store.create_conversation(daemon.sandbox_id, "u-1")
    run_id = new_id("run")
    ctx = ToolContext(store, daemon.sandbox_id, "u-1", conversation.id, run_id)
    recorder = TurnRecorder(store, daemon.sandbox_id, conversation.id, run_id, "hermes", "m")
    every = [SearchConversationsTool(), Shout(), Refuse(), Hidden()]
    tools = select(every, ["shout", "refuse", "search_conversations"])
    runner = SandboxToolRunner(tools, ctx, recorder, timeout=10)
    return d.http.mcp_access.open(ToolAccess.of(tools, runner), ttl=60), conversation.id


async def entries(daemon: RunningDaemon, conversation_id: str) -> list[Any]:
    return await daemon.daemon.store.read_entries(
        daemon.sandbox_id, conversation_id, newest_first=False
    )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_exactly_the_runs_tools(daemon: RunningDaemon, mode: str) -> None:
    """tools/list returns the run's tools (names, descriptions, schemas) and no others."""
    grant, _ = await open_run(daemon)
    async with mcp_client(endpoint(daemon.daemon.http_port), grant.token, mode) as client:
        listed = (await client.list_tools()).tools
    assert [(t.name, t.description, t.input_schema) for t in listed] == [
        (t.spec.name, t.spec.description, t.spec.parameters) for t in grant.scope.tools.values()
    ]
    assert [t.name for t in listed] == ["shout", "refuse", "search_conversations"]
    grant.close()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_runs_through_the_runs_executor_and_is_recorded(
    daemon: RunningDaemon, mode: str
) -> None:
    """A tools/call executes with the run's context and lands in its window like any tool call."""
    grant, conversation_id = await open_run(daemon)
    async with mcp_client(endpoint(daemon.daemon.http_port), grant.token, mode) as client:
        result = await client.call_tool("shout", {"text": "hello"})
    assert not result.is_error
    assert isinstance(result.content[0], types.TextContent)
    assert orjson.loads(result.content[0].text) == {"shouted": "HELLO", "for": "u-1"}
    window = await entries(daemon, conversation_id)
    assert [(e.kind, e.tool_name) for e in window] == [
        ("tool_call", "shout"),
        ("tool_result", "shout"),
    ]
    assert orjson.loads(window[0].text) == {"text": "hello"}
    assert window[0].tool_call_id == window[1].tool_call_id
    grant.close()


async def test_a_tool_error_is_an_error_result(daemon: RunningDaemon) -> None:
    """A tool that fails answers isError with its message; the failure is recorded too."""
    grant, conversation_id = await open_run(daemon)
    async with mcp_client(endpoint(daemon.daemon.http_port), grant.token) as client:
        result = await client.call_tool("refuse", {})
    assert result.is_error
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "the archive is closed today"
    assert [e.is_error for e in await entries(daemon, conversation_id)] == [False, True]
    grant.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"text": 3}, "arguments.text: 3 is not of type 'string'"),
        ({}, "arguments: 'text' is a required property"),
        ({"text": "x", "loud": True}, "arguments: Additional properties are not allowed"),
        ({"text": ""}, "arguments.text: '' should be non-empty"),
    ],
)
async def test_arguments_that_break_the_schema_run_nothing_and_are_recorded(
    daemon: RunningDaemon, arguments: dict[str, Any], message: str
) -> None:
    """Arguments breaking the tool's schema get an isError naming the field from the run's
    runner (the one check every provider's calls go through); nothing runs, and the call
    and its error are recorded, so the turn shows them."""
    grant, conversation_id = await open_run(daemon)
    async with mcp_client(endpoint(daemon.daemon.http_port), grant.token) as client:
        result = await client.call_tool("shout", arguments)
    assert result.is_error
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text.startswith(message)
    recorded = await entries(daemon, conversation_id)
    assert [(e.kind, e.is_error) for e in recorded] == [("tool_call", False), ("tool_result", True)]
    assert "shouted" not in recorded[1].text
    grant.close()


async def test_a_tool_outside_the_grant_cannot_be_called(daemon: RunningDaemon) -> None:
    """A tool of the sandbox that the run's allow-list left out is unknown to its token."""
    grant, conversation_id = await open_run(daemon)
    async with mcp_client(endpoint(daemon.daemon.http_port), grant.token) as client:
        with pytest.raises(MCPError, match="unknown tool 'hidden'"):
            await client.call_tool("hidden", {})
    assert await entries(daemon, conversation_id) == []
    grant.close()


@pytest.fixture
async def http_side() -> AsyncIterator[tuple[HttpServer, list[float]]]:
    """An HTTP side whose MCP tokens expire on a clock the test moves."""
    now = [1000.0]
    server = HttpServer(
        "127.0.0.1",
        0,
        Dispatch(),
        call_timeout=5,
        mcp_access=GrantRegistry(clock=lambda: now[0]),
        public_url="https://router.example.com",
        shutdown_timeout=1,
    )
    await server.start()
    yield server, now
    await server.stop()


def initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }


@pytest.mark.parametrize("how", ["wrong", "missing", "expired", "closed"])
async def test_refused_tokens_open_nothing(
    http_side: tuple[HttpServer, list[float]], how: str
) -> None:
    """A wrong, missing, expired or closed token is answered 401 and nothing runs."""
    server, now = http_side
    runner = Recorded()
    grant = server.mcp_access.open(ToolAccess.of([Shout()], runner), ttl=30)
    token = {"wrong": "forged", "missing": ""}.get(how, grant.token)
    if how == "expired":
        now[0] += 31
    if how == "closed":
        grant.close()
    headers = {"Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient() as http:
        raw = await http.post(endpoint(server.port), json=initialize(), headers=headers)
    assert raw.status_code == 401
    assert raw.headers["www-authenticate"] == "Bearer"
    assert "error" in raw.json()
    with pytest.raises(ExceptionGroup) as refused:  # the SDK reports it from its task group
        async with mcp_client(endpoint(server.port), token or "x") as client:
            await client.call_tool("shout", {"text": "hi"})
    assert refused.group_contains(MCPError, depth=2)
    assert runner.calls == []
    assert len(server.mcp_access) == (1 if how in ("wrong", "missing") else 0)


async def test_a_valid_token_opens_the_endpoint(http_side: tuple[HttpServer, list[float]]) -> None:
    """The same token, until it expires, lists and calls (the refusals above are its doing)."""
    server, now = http_side
    runner = Recorded()
    grant = server.mcp_access.open(ToolAccess.of([Shout()], runner), ttl=30)
    now[0] += 29
    async with mcp_client(endpoint(server.port), grant.token) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["shout"]
        result = await client.call_tool("shout", {"text": "hi"})
    assert not result.is_error
    assert [(c.name, orjson.loads(c.arguments)) for c in runner.calls] == [
        ("shout", {"text": "hi"})
    ]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("rebound.example", 421),
        ("router.example.com.rebound.example", 421),
        ("localhost", 200),
        ("router.example.com", 200),
    ],
)
async def test_only_the_daemons_own_host_names_are_answered(
    http_side: tuple[HttpServer, list[float]], host: str, status: int
) -> None:
    """DNS-rebinding protection: loopback and the public URL's host pass, any other Host is 421."""
    server, _ = http_side
    grant = server.mcp_access.open(ToolAccess.of([Shout()], Recorded()), ttl=30)
    headers = {
        "Authorization": f"Bearer {grant.token}",
        "Accept": "application/json, text/event-stream",
        "Host": host,
    }
    async with httpx.AsyncClient() as http:
        raw = await http.post(endpoint(server.port), json=initialize(), headers=headers)
    assert raw.status_code == status


async def test_the_endpoint_has_a_trailing_slash_and_takes_post(
    http_side: tuple[HttpServer, list[float]],
) -> None:
    """``/mcp`` redirects to ``/mcp/``; GET (no standalone stream here) is 405."""
    server, _ = http_side
    grant = server.mcp_access.open(ToolAccess.of([Shout()], Recorded()), ttl=30)
    auth = {"Authorization": f"Bearer {grant.token}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient() as http:
        bare = await http.post(f"http://127.0.0.1:{server.port}/mcp", json=initialize())
        get = await http.get(endpoint(server.port), headers=auth)
    assert bare.status_code == 307
    assert bare.headers["location"].endswith("/mcp/")
    assert get.status_code == 405


async def test_stop_does_not_wait_forever_on_a_call_in_flight() -> None:
    """Stopping the HTTP side gives a hanging tool call the grace period, then cancels it."""
    server = HttpServer("127.0.0.1", 0, Dispatch(), call_timeout=5, shutdown_timeout=1)
    await server.start()
    runner = Recorded(block=True)
    grant = server.mcp_access.open(ToolAccess.of([Shout()], runner), ttl=30)

    async def call() -> None:
        async with mcp_client(endpoint(server.port), grant.token) as client:
            await client.call_tool("shout", {"text": "hi"})

    calling = asyncio.ensure_future(call())
    await asyncio.wait_for(runner.started.wait(), 10)
    await asyncio.wait_for(server.stop(), 10)
    assert runner.cancelled.is_set()
    with pytest.raises(ExceptionGroup) as dropped:
        await asyncio.wait_for(calling, 10)
    assert dropped.group_contains(MCPError, depth=2)
