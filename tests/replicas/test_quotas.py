"""Across replicas, a sandbox's quotas hold exactly under concurrent admission: runs in progress
(per sandbox and per end user) never exceed the cap however the runs are spread, and once the
day's tokens are spent every replica refuses."""

from __future__ import annotations

from collections import Counter

import pytest

from interlock.errors import ResourceExhausted
from interlock.v1 import sandboxes_pb2
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster, Contest
from tests.replicas.conftest import ClusterFactory, openai_providers


async def set_quotas(cluster: Cluster, **quotas: int) -> None:
    await cluster.client.sandboxes.set_quotas(cluster.sandbox_id, sandboxes_pb2.Quotas(**quotas))


#: Each round is a fresh race at the cap: a lost update between replicas need
#: not show in every one.
ROUNDS = 3


async def test_max_concurrent_runs_holds_across_replicas(
    cluster: Cluster, fake_a: FakeOpenAI
) -> None:
    """Sandbox cap 5, 40 simultaneous runs of different end users over three replicas:
    exactly five are admitted and 35 are RESOURCE_EXHAUSTED naming max_concurrent_runs,
    round after round as the admitted ones end."""
    await set_quotas(cluster, max_concurrent_runs=5)
    for _round in range(ROUNDS):
        contest = Contest(cluster, fake_a, [f"u-{i}" for i in range(40)])
        refusals = await contest.settle(admitted=5)
        assert len(refusals) == 35
        assert all("max_concurrent_runs quota is 5" in r for r in refusals), refusals[:3]
        await contest.free()


async def test_max_concurrent_runs_per_end_user_holds_across_replicas(
    cluster: Cluster, fake_a: FakeOpenAI
) -> None:
    """Per-user cap 2, 15 simultaneous runs of one end user over three replicas (and one run
    each of two others): two of that user's runs and the others' are admitted, 13 refused,
    round after round as the admitted ones end."""
    await set_quotas(cluster, max_concurrent_runs_per_end_user=2)
    users = ["u-busy"] * 15 + ["u-other", "u-third"]
    for _round in range(ROUNDS):
        contest = Contest(cluster, fake_a, users)
        refusals = await contest.settle(admitted=4)
        assert len(refusals) == 13
        assert all("max_concurrent_runs_per_end_user quota is 2" in r for r in refusals)
        assert Counter(users[i] for i in contest.running()) == {
            "u-busy": 2,
            "u-other": 1,
            "u-third": 1,
        }
        await contest.free()


async def test_spent_tokens_per_day_are_refused_by_every_replica(
    fake_a: FakeOpenAI, fake_b: FakeOpenAI, cluster_factory: ClusterFactory
) -> None:
    """Once one replica's run spends the day's max_tokens_per_day, every replica refuses the
    next run RESOURCE_EXHAUSTED naming the quota."""
    cluster = await cluster_factory(openai_providers(fake_a, fake_b), replicas=2)
    await set_quotas(cluster, max_tokens_per_day=100)
    fake_a.enqueue(Reply().text("a long answer").usage(prompt=60, completion=50))
    spent = await cluster.client_of(0).run_text("spend it", end_user_id="u-1")
    assert spent.ok, spent.error
    for index in range(len(cluster.replicas)):
        with pytest.raises(ResourceExhausted) as refused:
            await cluster.client_of(index).run_text("more", end_user_id="u-2")
        assert "used 110 tokens today" in str(refused.value)
        assert "max_tokens_per_day quota is 100" in str(refused.value)
