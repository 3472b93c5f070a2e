"""Across replicas, a run's tool token works wherever the runtime calls: a dispatch callback or an
MCP request reaching another replica is forwarded to the one running the turn (tokens live in the
store, hashed, with expiry), and a token whose turn ended opens nothing on any replica."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlockd.daemon import Daemon, bootstrap
from interlockd.ids import new_id
from interlockd.runs.recording import TurnRecorder
from interlockd.tools.base import ToolContext
from interlockd.tools.grants import ToolAccess
from interlockd.tools.runner import SandboxToolRunner
from interlockd.tools.search import SearchConversationsTool
from tests.conftest import daemon_settings
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI
from tests.fakes.vertex_agent_engine import (
    DEFAULT_ENGINE_ID,
    DEFAULT_PROJECT,
    FakeAgentEngine,
    Turn,
)
from tests.http.test_mcp_endpoint import Shout, endpoint, mcp_client
from tests.postgres import PostgresCluster
from tests.replicas.conftest import ClusterFactory

TOKEN = "ya29.test-token"


@pytest.fixture
async def engine() -> AsyncIterator[FakeAgentEngine]:
    async with FakeAgentEngine(token=TOKEN) as fake:
        yield fake


async def test_a_dispatch_callback_to_another_replica_reaches_the_turn(
    cluster_factory: ClusterFactory, engine: FakeAgentEngine
) -> None:
    """The deployed agent calls back replica 1 while replica 0 runs the turn: the call is
    forwarded, runs once in replica 0's turn (streamed, recorded), and the agent gets the
    result; after the turn the token is refused by both replicas."""
    cluster = await cluster_factory(
        {
            "google": {
                "kind": "google",
                "base_url": engine.base_url,
                "access_token": TOKEN,
                "project": DEFAULT_PROJECT,
                "location": "us-central1",
                "reasoning_engine_id": DEFAULT_ENGINE_ID,
                "default_model": "gemini-3.1-flash",
            }
        },
        replicas=2,
        default_provider="google",
    )
    engine.router_url = cluster.replicas[1].public_url
    engine.enqueue(Turn().text("Noted."))
    first = await cluster.client_of(0).run_text("I like green apples", end_user_id="u-1")
    engine.enqueue(
        Turn().dispatch("search_conversations", {"query": "apples"}).text("Green apples.")
    )
    events = [
        event
        async for event in cluster.client_of(0).run(
            "what do I like?", end_user_id="u-1", session_id=first.session_id
        )
    ]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["run_started", "tool_call", "tool_result", "text_delta", "finish"]
    exchange = engine.dispatches[0]
    assert exchange.status == 200
    assert exchange.response == {"result": orjson.loads(events[2].tool_result.result_json)}
    window = await cluster.client.conversations.get(first.session_id, end_user_id="u-1")
    assert [e.kind for e in window.entries].count(cpb.ENTRY_KIND_TOOL_RESULT) == 1

    token = engine.last_session.state["interlock_dispatch_token"]
    body = {
        "tool_name": "search_conversations",
        "arguments": {"query": "x"},
        "user_id": engine.last_session.user_id,
        "session_id": engine.last_session.id,
        "call_id": "late",
    }
    async with httpx.AsyncClient() as http:
        for replica in cluster.replicas:

            async def refused(url: str = replica.public_url) -> None:
                answer = await http.post(
                    f"{url}/v1/tools/dispatch",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 401, answer.text

            await eventually(refused, within=5)


async def test_an_mcp_call_to_another_replica_runs_in_the_owners_run(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
) -> None:
    """An MCP client holding a run's token lists and calls the run's tools through a replica
    that does not run it; the call runs once in the owner's runner (recorded in the run's
    conversation); once the owner closes the grant, both replicas refuse the token."""
    url = postgres_cluster.create_database()
    key = base64.b64encode(os.urandom(32)).decode()
    daemons: list[Daemon] = []
    try:
        for name in ("owner", "other"):
            settings = daemon_settings(
                tmp_path / name, fake_a, fake_b, store_url=url, keys={"master_key": key}
            )
            daemon = Daemon(settings)
            await daemon.start()
            daemons.append(daemon)
        owner, other = daemons
        creds = await bootstrap(owner.store)
        assert creds.sandbox_id
        sandbox_id: str = creds.sandbox_id
        conversation = await owner.store.create_conversation(sandbox_id, "u-1")
        run_id = new_id("run")
        ctx = ToolContext(owner.store, sandbox_id, "u-1", conversation.id, run_id)
        recorder = TurnRecorder(owner.store, sandbox_id, conversation.id, run_id, "hermes", "m")
        tools: list[Any] = [Shout(), SearchConversationsTool()]
        runner = SandboxToolRunner(tools, ctx, recorder, timeout=10)
        # What a turn does for a compute runtime: bind the run's access, publish the token.
        grant = owner.mcp_access.open(ToolAccess.of(tools, runner), ttl=60)
        await owner.grants.publish(
            grant.token, sandbox_id=sandbox_id, run_id=run_id, kind="mcp", ttl=60
        )

        async with mcp_client(endpoint(other.http_port), grant.token) as client:
            listed = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("shout", {"text": "hi"})
        assert listed == ["shout", "search_conversations"]
        assert not result.is_error
        assert orjson.loads(result.content[0].text) == {"shouted": "HI", "for": "u-1"}
        recorded = await owner.store.read_entries(sandbox_id, conversation.id, newest_first=False)
        assert [(e.kind, e.tool_name) for e in recorded] == [
            ("tool_call", "shout"),
            ("tool_result", "shout"),
        ]

        grant.close()

        async def refused_everywhere() -> None:
            async with httpx.AsyncClient() as http:
                for daemon in daemons:
                    answer = await http.post(
                        endpoint(daemon.http_port),
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        headers={
                            "Authorization": f"Bearer {grant.token}",
                            "Accept": "application/json, text/event-stream",
                        },
                    )
                    assert answer.status_code == 401, answer.text

        await eventually(refused_everywhere, within=5)
    finally:
        for daemon in daemons:
            await daemon.stop(grace=0, announce=0)
        postgres_cluster.drop_database(url.rsplit("/", 1)[1])
