"""The multi-replica fixtures: a cluster factory on a fresh database of the session's PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai import FakeOpenAI
from tests.postgres import PostgresCluster
from tests.replicas.cluster import Cluster, Replica, start_cluster

ClusterFactory = Callable[..., Awaitable[Cluster]]


def openai_providers(fake_a: FakeOpenAI, fake_b: FakeOpenAI) -> dict[str, dict[str, Any]]:
    """Two OpenAI-compatible providers on two fake upstreams."""
    return {
        "fake": {
            "kind": "openai",
            "base_url": fake_a.base_url,
            "default_model": "fake-model",
            "api_key": "sk-test-a",
        },
        "fake_b": {
            "kind": "openai",
            "base_url": fake_b.base_url,
            "default_model": "fake-model-b",
            "api_key": "sk-test-b",
        },
    }


@pytest.fixture
async def cluster_factory(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> AsyncIterator[ClusterFactory]:
    """Start a cluster of replicas on a database of its own; every process stops at the end."""
    clusters: list[Cluster] = []
    started: list[Replica] = []
    databases: list[str] = []

    async def start(providers: dict[str, dict[str, Any]], **options: Any) -> Cluster:
        url = postgres_cluster.create_database()
        databases.append(url.rsplit("/", 1)[1])
        cluster = await start_cluster(
            tmp_path / f"cluster-{len(databases)}", url, providers, started=started, **options
        )
        clusters.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            await cluster.stop()
        for replica in started:
            await replica.process.kill()
        for name in databases:
            postgres_cluster.drop_database(name)


@pytest.fixture
async def cluster(
    fake_a: FakeOpenAI, fake_b: FakeOpenAI, cluster_factory: ClusterFactory
) -> Cluster:
    """Three replicas with two OpenAI-compatible providers (``fake``, ``fake_b``).

    The fakes come first so they stop last: a fake stopping under a replica's
    open request would wait for it.
    """
    return await cluster_factory(openai_providers(fake_a, fake_b))
