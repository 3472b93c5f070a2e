"""Across replicas, a provider resource is created once: concurrent first Claude Managed Agents
turns spread over the replicas create one agent and one environment between them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.fakes.anthropic_managed import FakeManagedAgents
from tests.replicas.cluster import Cluster
from tests.replicas.conftest import ClusterFactory

KEY = "sk-ant-deployment"
MODEL = "claude-sonnet-4-6"
TURNS = 50


@pytest.fixture
async def claude() -> AsyncIterator[FakeManagedAgents]:
    async with FakeManagedAgents(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def cluster(claude: FakeManagedAgents, cluster_factory: ClusterFactory) -> Cluster:
    """Three replicas whose default provider is Claude Managed Agents on the fake."""
    anthropic = {
        "kind": "anthropic",
        "base_url": claude.base_url,
        "api_key": KEY,
        "default_model": MODEL,
    }
    return await cluster_factory({"anthropic": anthropic}, default_provider="anthropic")


async def test_concurrent_first_turns_over_replicas_create_one_agent_and_environment(
    cluster: Cluster, claude: FakeManagedAgents
) -> None:
    """Fifty first turns sent at once, spread over three replicas, all finish, and the
    upstream saw one agent and one environment created (and a session per conversation)."""
    replicas = len(cluster.replicas)
    outcomes = await asyncio.gather(
        *(
            cluster.client_of(i % replicas).run_text("hi", end_user_id=f"u-{i}")
            for i in range(TURNS)
        )
    )
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok][:3]
    assert claude.created == {"agent": 1, "environment": 1, "session": TURNS}
    served = Counter(cluster.served_by(outcome.run_id) for outcome in outcomes)
    assert served == {i: len(range(i, TURNS, replicas)) for i in range(replicas)}
