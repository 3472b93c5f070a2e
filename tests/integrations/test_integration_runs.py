"""Connected integrations in runs: an MCP server registered once, its tools in every
runtime, executed by the router with the stored credentials, scoped to its end user."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import integrations_pb2 as ipb
from interlock.v1 import integrations_pb2_grpc
from tests.conftest import RunningDaemon
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai import FakeOpenAI, Reply

TOKEN = "mcp-s3cret-token"
LOOKUP = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


@pytest.fixture
async def docs() -> AsyncIterator[FakeMcpServer]:
    async with FakeMcpServer(token=TOKEN) as fake:
        fake.tool("lookup", description="Look a page up.", schema=LOOKUP, structured={"hits": 2})
        yield fake


def stub(daemon: RunningDaemon) -> integrations_pb2_grpc.IntegrationsStub:
    return integrations_pb2_grpc.IntegrationsStub(daemon.channel)


async def add_docs(daemon: RunningDaemon, docs: FakeMcpServer, end_user: str) -> ipb.Integration:
    response = await stub(daemon).AddMcpServer(
        ipb.AddMcpServerRequest(
            name="docs", url=docs.url, bearer_token=TOKEN, end_user_id=end_user
        ),
        metadata=daemon.auth(),
    )
    return response.integration


def tool_names(fake: FakeOpenAI, request: int = -1) -> list[str]:
    return [t["function"]["name"] for t in fake.requests[request].body.get("tools", [])]


async def test_mcp_tools_run_in_every_runtime_with_stored_credentials(
    daemon: RunningDaemon, docs: FakeMcpServer, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Registered once, the server's tool is offered to two providers and executed by the
    router with the stored bearer token; its result is tagged with the integration."""
    integration = await add_docs(daemon, docs, "u-1")
    assert TOKEN not in str(integration)
    fake_a.enqueue(
        Reply().tool_call("mcp__docs__lookup", '{"q": "pricing"}'), Reply().text("2 hits.")
    )
    events = await daemon.run("find pricing", provider="fake")
    assert "mcp__docs__lookup" in tool_names(fake_a, 0)
    result = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert not result.error
    assert orjson.loads(result.result_json) == {"hits": 2}
    (call,) = docs.calls
    assert call.arguments == {"q": "pricing"}
    assert call.headers.get("authorization") == f"Bearer {TOKEN}"
    window = await daemon.window(events[0].run_started.session_id)
    (stored,) = [e for e in window if e.kind == cpb.ENTRY_KIND_TOOL_RESULT]
    assert stored.source_id == integration.integration_id

    fake_b.enqueue(Reply().text("Still 2."))
    await daemon.run("again", provider="fake_b", session_id=events[0].run_started.session_id)
    assert "mcp__docs__lookup" in tool_names(fake_b)


async def test_end_user_integration_is_theirs_alone(
    daemon: RunningDaemon, docs: FakeMcpServer, fake_a: FakeOpenAI
) -> None:
    """An integration connected for one end user is not offered to another; a sandbox-wide
    one is offered to both; a disconnected one to nobody."""
    mine = await add_docs(daemon, docs, "u-1")
    await daemon.run("hi", end_user_id="u-2")
    assert "mcp__docs__lookup" not in tool_names(fake_a)
    await daemon.run("hi", end_user_id="u-1")
    assert "mcp__docs__lookup" in tool_names(fake_a)
    await stub(daemon).Disconnect(
        ipb.DisconnectRequest(integration_id=mine.integration_id), metadata=daemon.auth()
    )
    await daemon.run("hi", end_user_id="u-1")
    assert "mcp__docs__lookup" not in tool_names(fake_a)
    await add_docs(daemon, docs, "")
    await daemon.run("hi", end_user_id="u-2")
    assert "mcp__docs__lookup" in tool_names(fake_a)


async def test_unreachable_server_does_not_fail_the_run(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A registered server that is down only loses its tools; the run goes on."""
    await stub(daemon).AddMcpServer(
        ipb.AddMcpServerRequest(name="gone", url="http://127.0.0.1:9/mcp/", end_user_id="u-1"),
        metadata=daemon.auth(),
    )
    events = await daemon.run("hi")
    assert events[-1].HasField("finish")
    assert not [n for n in tool_names(fake_a) if n.startswith("mcp__gone")]
