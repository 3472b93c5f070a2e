"""Across replicas, an OAuth token is refreshed once: when two replicas need a connection's
expiring GitHub token at the same moment, one refreshes it and the other uses the new one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from interlockd.store.postgres.engine import KEYED_LOCK
from tests.eventually import eventually
from tests.fakes.github import FakeGitHub
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster, Replica
from tests.replicas.conftest import ClusterFactory, openai_providers


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    # Tokens issued at connect expire within the refresh margin: the first use refreshes.
    async with FakeGitHub(access_token_ttl=120) as fake:
        yield fake


@pytest.fixture
async def cluster(
    github: FakeGitHub, fake_a: FakeOpenAI, fake_b: FakeOpenAI, cluster_factory: ClusterFactory
) -> Cluster:
    """Two replicas with the GitHub app, each its own public URL for OAuth callbacks."""

    def public(replica: Replica) -> dict[str, Any]:
        github.register_redirect_uri(f"{replica.public_url}/v1/integrations/callback")
        return {"integrations": {"public_url": replica.public_url}}

    return await cluster_factory(
        openai_providers(fake_a, fake_b),
        replicas=2,
        settings={
            "integrations": {
                "github": {
                    "client_id": github.client_id,
                    "client_secret": github.client_secret,
                    "web_base_url": github.base_url,
                    "api_base_url": github.base_url,
                }
            }
        },
        per_replica=public,
    )


async def connect_github(cluster: Cluster, github: FakeGitHub, end_user_id: str) -> str:
    """Connect GitHub for ``end_user_id`` through replica 0's OAuth flow; the integration id."""
    client = cluster.client_of(0)
    started = await client.integrations.connect("github", end_user_id=end_user_id)
    callback = await github.approve(started.authorize_url)
    async with httpx.AsyncClient(trust_env=False) as browser:
        page = await browser.get(callback, timeout=10)
    assert page.status_code == 200, page.text
    integration = await client.integrations.wait_connected(started.flow_id, timeout=10)
    return integration.integration_id


async def lock_waiters(database_url: str) -> int:
    """Sessions of the test's database waiting for a keyed advisory lock (a provider
    resource's or an integration's) that another session holds."""
    conn = await asyncpg.connect(database_url)
    try:
        waiting: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = $1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            KEYED_LOCK,
        )
        return waiting
    finally:
        await conn.close()


def call_whoami_then_answer(body: Any) -> Reply:
    """The model: call github__whoami, then answer with what the tool said."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply().text(f"tool said: {last['content']}")
    return Reply().tool_call("github__whoami", "{}")


async def test_two_replicas_needing_an_expiring_token_refresh_it_once(
    cluster: Cluster, github: FakeGitHub, fake_a: FakeOpenAI
) -> None:
    """Two turns on two replicas call a GitHub tool at once on a token due for refresh: the
    token endpoint sees one refresh, the other replica waits for it and uses the new token,
    and both tools succeed."""
    await connect_github(cluster, github, "u-1")
    connected = len(github.requests_to("user"))  # the connect flow asked who the user is
    github.access_token_ttl = 28_800  # the refreshed token is not due again
    github.hold("access_token")
    fake_a.responder = call_whoami_then_answer
    turns = [
        asyncio.create_task(
            cluster.client_of(i).run_text(f"who am I? ({i})", end_user_id="u-1", timeout=30)
        )
        for i in range(2)
    ]

    async def both_need_the_token() -> None:
        # One refresh is in flight (held); the other replica either waits for the
        # connection's lock or, were there none across replicas, refreshes too.
        assert len(github.refresh_requests) >= 1
        assert len(github.refresh_requests) >= 2 or await lock_waiters(cluster.database_url)

    await eventually(both_need_the_token, within=20)
    github.release("access_token")
    outcomes = await asyncio.gather(*turns)

    assert len(github.refresh_requests) == 1
    for outcome in outcomes:
        assert outcome.ok, outcome.error
        (result,) = outcome.tool_results
        assert not result.error, result.error
        assert "octocat" in outcome.text
    # Both replicas called GitHub with the one refreshed token.
    calls = github.requests_to("user")[connected:]
    assert len(calls) == 2
    (refreshed,) = {r.headers["authorization"] for r in calls}
    assert refreshed.removeprefix("Bearer ") in {t.value for t in github.live_tokens()}
