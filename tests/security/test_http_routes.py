"""Every route of the daemon's HTTP side called without a token, with a forged one and
with another run's: nothing runs, nothing of another run is seen.

Runs' tokens are opened the way backends open them (the daemon's own dispatch
and MCP access registries) on the real daemon of :mod:`tests.security.world`;
the requests are real HTTP from outside.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from interlock.v1 import integrations_pb2, integrations_pb2_grpc
from interlockd.tools.base import Tool, ToolContext
from interlockd.tools.grants import Grant, ToolAccess
from interlockd.vocabulary import ToolCall, ToolResult, ToolRunner, ToolSpec
from tests.security.world import ALICE_TEXT, World, metadata

FORGED = "A" * 43
_DISPATCH = "/v1/tools/dispatch"
_CALLBACK = "/v1/integrations/callback"


class Named(Tool):
    """A tool that exists only in one run's grant."""

    def __init__(self, name: str) -> None:
        self.spec = ToolSpec(name, f"Only {name}'s run has it.", {"type": "object"})

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        raise AssertionError("the runner executes; a tool is never called directly here")


class Recording(ToolRunner):
    """A run's executor that records what it was handed."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    async def run(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        return ToolResult(call.call_id, call.name, f'"{ALICE_TEXT}"')


async def post(w: World, path: str, token: str | None, body: Any) -> httpx.Response:
    # An empty token goes as a bare "Bearer" (httpx refuses a trailing space).
    headers = {"Authorization": f"Bearer {token}".strip()} if token is not None else {}
    async with httpx.AsyncClient(base_url=w.http_base) as client:
        return await client.post(path, json=body, headers=headers, timeout=10)


def dispatch_body(user_id: str, session_id: str) -> dict[str, Any]:
    return {
        "tool_name": "search_conversations",
        "arguments": {"query": "x"},
        "user_id": user_id,
        "session_id": session_id,
    }


@pytest.mark.asyncio(loop_scope="module")
async def test_tool_dispatch_takes_only_its_own_runs_token(world: World) -> None:
    """POST /v1/tools/dispatch without a token, with a forged or malformed one, with a
    closed run's token, or with another run's token (for that run's end user and
    session) is 401 and no run receives a call; GET is not allowed."""
    w = world
    alice = await w.daemon.dispatch.open("alice", 60, sandbox_id=w.sandbox_a, run_id="run_test")
    alice.provider_session = "sess-alice"
    bob = await w.daemon.dispatch.open("bob", 60, sandbox_id=w.sandbox_a, run_id="run_test")
    bob.provider_session = "sess-bob"
    ended = await w.daemon.dispatch.open("alice", 60, sandbox_id=w.sandbox_a, run_id="run_test")
    ended.close()
    try:
        cases = [
            ("no token", None, dispatch_body("alice", "sess-alice")),
            ("an empty bearer", "", dispatch_body("alice", "sess-alice")),
            ("a forged token", FORGED, dispatch_body("alice", "sess-alice")),
            ("an ended run's token", ended.token, dispatch_body("alice", "sess-alice")),
            ("bob's token for alice", bob.token, dispatch_body("alice", "sess-alice")),
            ("bob's token for alice's session", bob.token, dispatch_body("bob", "sess-alice")),
            ("alice's token for bob", alice.token, dispatch_body("bob", "sess-bob")),
        ]
        for label, token, body in cases:
            response = await post(w, _DISPATCH, token, body)
            assert response.status_code == 401, (label, response.status_code, response.text)
            assert ALICE_TEXT not in response.text
        async with httpx.AsyncClient(base_url=w.http_base) as client:
            got = await client.get(_DISPATCH, headers={"Authorization": f"Bearer {alice.token}"})
        assert got.status_code == 405
        assert alice.calls.empty()
        assert bob.calls.empty()
    finally:
        alice.close()
        bob.close()


@asynccontextmanager
async def mcp(w: World, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(f"{w.http_base}/mcp/", http_client=http)) as client,
    ):
        yield client


def open_grant(w: World, tool: str) -> tuple[Grant[ToolAccess], Recording]:
    assert w.daemon.http is not None
    runner = Recording()
    return w.daemon.http.mcp_access.open(ToolAccess.of([Named(tool)], runner), ttl=60), runner


@pytest.mark.asyncio(loop_scope="module")
async def test_mcp_endpoint_opens_only_its_own_runs_tools(world: World) -> None:
    """/mcp/ without a token, with a forged one or a closed run's is 401 whatever the
    method; a run's token lists and calls that run's tools only, never another run's."""
    w = world
    alice, alice_runner = open_grant(w, "alice_tool")
    bob, bob_runner = open_grant(w, "bob_tool")
    ended, ended_runner = open_grant(w, "ended_tool")
    ended.close()
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "alice_tool", "arguments": {}},
    }
    try:
        for label, token in [
            ("no token", None),
            ("an empty bearer", ""),
            ("a forged token", FORGED),
            ("a closed run's token", ended.token),
        ]:
            for body in (listing, call):
                response = await post(w, "/mcp/", token, body)
                assert response.status_code == 401, (label, response.status_code)
                assert "alice_tool" not in response.text
            async with httpx.AsyncClient(base_url=w.http_base) as client:
                for method in ("GET", "DELETE"):
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    got = await client.request(method, "/mcp/", headers=headers)
                    assert got.status_code == 401, (label, method, got.status_code)
        async with mcp(w, bob.token) as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            assert listed == ["bob_tool"]
            with pytest.raises(MCPError, match="unknown tool 'alice_tool'"):
                await client.call_tool("alice_tool", {})
        assert alice_runner.calls == []
        assert ended_runner.calls == []
        assert bob_runner.calls == []
    finally:
        alice.close()
        bob.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_oauth_callback_connects_nothing_without_its_flows_state(world: World) -> None:
    """The OAuth callback with no state, a forged state or a state already used connects
    nothing, echoes nothing of the query, and leaves the other tenant's flow pending."""
    w = world
    github = w.extra["github"]
    echo = "ECHOzq<script>"
    async with httpx.AsyncClient(base_url=w.http_base) as client:
        for params in (
            {},
            {"code": "c", "error": echo},
            {"state": FORGED, "code": echo},
            {"state": "", "code": "c"},
        ):
            page = await client.get(_CALLBACK, params=params)
            assert page.status_code == 400, (params, page.status_code)
            assert echo not in page.text
            assert "ECHOzq" not in page.text
        # B connects carol; replaying B's callback (same state, same code) connects nothing more.
        integrations = integrations_pb2_grpc.IntegrationsStub(w.channel)
        started = await integrations.Connect(
            integrations_pb2.ConnectRequest(app="github", end_user_id="carol"),
            metadata=metadata(w.key_b),
        )
        callback = await github.approve(started.authorize_url)
        first = await client.get(callback)
        assert first.status_code == 200, first.text
        again = await client.get(callback)
        assert again.status_code == 400
    listed = await integrations.ListIntegrations(
        integrations_pb2.ListIntegrationsRequest(end_user_id="carol"), metadata=metadata(w.key_b)
    )
    assert [i.app for i in listed.integrations] == ["github"]
    flow = await w.daemon.store.get_connect_flow(w.sandbox_a, w.flow_a)
    assert flow.status == "pending"


@pytest.mark.asyncio(loop_scope="module")
async def test_healthz_and_unknown_routes_say_nothing(world: World) -> None:
    """GET /healthz answers its status and nothing else, with or without a token; unknown
    paths and methods are 404/405 without a body that names anything of a tenant."""
    w = world
    async with httpx.AsyncClient(base_url=w.http_base) as client:
        for headers in ({}, {"Authorization": f"Bearer {w.key_a}"}):
            health = await client.get("/healthz", headers=headers)
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
        posted = await client.post("/healthz")
        assert posted.status_code == 405
        for path in ("/", "/v1/tools", "/mcp/../healthz/../../etc/passwd", "/v1/sandboxes"):
            got = await client.get(path, headers={"Authorization": f"Bearer {w.key_a}"})
            assert got.status_code in (401, 404, 405), (path, got.status_code)
            for marker in [*w.text_markers, *w.id_markers]:
                assert marker not in got.text
