"""Across replicas, a spend budget cannot be overshot: 100 simultaneous runs against a budget
with room for 10, spread over three replicas, admit exactly 10; the rest are refused naming it."""

from __future__ import annotations

from typing import Any

from interlock.v1 import sandboxes_pb2
from tests.fakes.openai import FakeOpenAI
from tests.replicas.cluster import Cluster, Contest
from tests.replicas.conftest import ClusterFactory, openai_providers

#: What a turn on the unpriced fake reserves (providers.<name>.estimate_usd_per_run).
ESTIMATE_USD = 0.10


async def test_a_daily_budget_admits_what_it_has_room_for_across_replicas(
    cluster_factory: ClusterFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """usd_per_day 1.00 with 0.10 reserved per run: of 100 runs sent at once to three
    replicas exactly 10 reach the model, 90 are RESOURCE_EXHAUSTED naming the daily budget."""
    providers: dict[str, Any] = openai_providers(fake_a, fake_b)
    providers["fake"]["estimate_usd_per_run"] = ESTIMATE_USD
    cluster: Cluster = await cluster_factory(providers)
    await cluster.client.sandboxes.set_quotas(
        cluster.sandbox_id, sandboxes_pb2.Quotas(usd_per_day=1.0)
    )
    contest = Contest(cluster, fake_a, [f"u-{i}" for i in range(100)])

    refusals = await contest.settle(admitted=10)

    assert len(refusals) == 90
    assert all("budget" in r and "day" in r for r in refusals), refusals[:3]
    await contest.free()
