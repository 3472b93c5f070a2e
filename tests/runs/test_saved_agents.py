"""Saved agents: stored per sandbox, run by slug with their provider, model, prompt,
tools and runtime ceiling."""

from __future__ import annotations

import grpc
import pytest

from interlock.v1 import agents_pb2 as apb
from interlock.v1 import agents_pb2_grpc
from tests.conftest import DaemonFactory, RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply


def stub(daemon: RunningDaemon) -> agents_pb2_grpc.AgentsStub:
    return agents_pb2_grpc.AgentsStub(daemon.channel)


async def put(daemon: RunningDaemon, key: str | None = None, **fields: object) -> apb.Agent:
    agent = apb.Agent(**fields)  # type: ignore[arg-type]
    response = await stub(daemon).PutAgent(
        apb.PutAgentRequest(agent=agent), metadata=daemon.auth(key)
    )
    return response.agent


async def test_run_by_slug_uses_the_agents_settings(
    daemon: RunningDaemon, fake_b: FakeOpenAI
) -> None:
    """A run naming an agent goes to its provider and model with its prompt and tool list."""
    await put(
        daemon,
        slug="support",
        name="Support",
        provider="fake_b",
        model="fake-model-b",
        system="You are a support agent.",
        tools=["search_conversations"],
    )
    fake_b.enqueue(Reply().text("How can I help?"))
    events = await daemon.run("hello", agent="support")
    started = events[0].run_started
    assert (started.provider, started.model) == ("fake_b", "fake-model-b")
    body = fake_b.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "You are a support agent."}
    assert [t["function"]["name"] for t in body["tools"]] == ["search_conversations"]


async def test_agents_are_listed_replaced_and_deleted_per_sandbox(daemon: RunningDaemon) -> None:
    """Put replaces, list is by slug, another sandbox sees none of them, delete removes."""
    await put(daemon, slug="b-agent", provider="fake")
    await put(daemon, slug="a-agent", provider="fake", system="one")
    replaced = await put(daemon, slug="a-agent", provider="fake", system="two")
    assert replaced.system == "two"
    listed = await stub(daemon).ListAgents(apb.ListAgentsRequest(), metadata=daemon.auth())
    assert [a.slug for a in listed.agents] == ["a-agent", "b-agent"]
    _, other_key = await daemon.new_sandbox("other")
    theirs = await stub(daemon).ListAgents(apb.ListAgentsRequest(), metadata=daemon.auth(other_key))
    assert list(theirs.agents) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run("hi", agent="a-agent", key=other_key)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    await stub(daemon).DeleteAgent(apb.DeleteAgentRequest(slug="a-agent"), metadata=daemon.auth())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run("hi", agent="a-agent")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "fake"}, "provider"),
        ({"system": "x"}, "system"),
        ({"tools": ["search_conversations"]}, "tools"),
        ({"model": "m"}, "model"),
    ],
)
async def test_agent_and_its_fields_are_exclusive(
    daemon: RunningDaemon, fields: dict[str, object], field: str
) -> None:
    """A run naming an agent may not also set what the agent sets."""
    await put(daemon, slug="support", provider="fake")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run("hi", agent="support", **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (raised.value.details() or "")


async def test_bad_agents_are_refused_naming_the_field(daemon: RunningDaemon) -> None:
    """A bad slug, a missing provider or an unknown policy is INVALID_ARGUMENT naming it."""
    for fields, field in [
        ({"slug": "Bad Slug", "provider": "fake"}, "agent.slug"),
        ({"slug": "ok"}, "agent.provider"),
        ({"slug": "ok", "provider": "fake", "compute_policy": "fastest"}, "agent.compute_policy"),
        ({"slug": "ok", "provider": "fake", "max_runtime_seconds": 10**6}, "max_runtime_seconds"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await put(daemon, **fields)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (raised.value.details() or "")


async def test_agent_max_runtime_ends_the_run(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """An agent's max runtime stops its runs with an error naming the limit."""
    daemon = await start_daemon()
    await put(daemon, slug="quick", provider="fake", max_runtime_seconds=1)
    fake_a.enqueue(Reply().text("starting").stall())
    events = await daemon.run("long job", agent="quick")
    assert events[-1].error.code == "DEADLINE_EXCEEDED"
    assert "1 s" in events[-1].error.message
