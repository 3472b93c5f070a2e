"""Across replicas, a dead replica's turn is taken over: once its lease runs out another replica
marks the run interrupted, the same request_id resumes it there, and the window stays whole."""

from __future__ import annotations

import asyncio

from interlock.errors import FailedPrecondition
from interlock.v1 import conversations_pb2 as cpb
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster
from tests.replicas.conftest import ClusterFactory, openai_providers

LEASE_SECONDS = 1.5


async def test_a_killed_replicas_run_is_taken_over_and_resumed_elsewhere(
    cluster_factory: ClusterFactory, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """kill -9 of the replica running a turn: within its lease another replica interrupts the
    run (and logs it), retrying the request_id there resumes it, the user message is kept once."""
    cluster: Cluster = await cluster_factory(
        openai_providers(fake_a, fake_b),
        replicas=2,
        settings={"runs": {"lease_seconds": LEASE_SECONDS}},
    )
    dying = True
    fake_a.responder = lambda body: Reply().text("partial").stall() if dying else Reply().text("ok")
    stream = cluster.client_of(0).run("hello", end_user_id="u-1", request_id="req-1")
    session = ""
    async for event in stream:
        if event.HasField("run_started"):
            session = event.run_started.session_id
        if event.HasField("text_delta"):
            break
    dying = False
    await cluster.replicas[0].process.kill()
    killed_at = asyncio.get_running_loop().time()
    survivor = cluster.client_of(1)

    async def resumed() -> str:
        try:
            outcome = await survivor.run_text("hello", end_user_id="u-1", request_id="req-1")
        except FailedPrecondition as exc:  # RUN_IN_PROGRESS until the lease runs out
            raise AssertionError(str(exc)) from exc
        assert outcome.ok, outcome.error
        return outcome.text

    text = await eventually(resumed, within=15)
    took = asyncio.get_running_loop().time() - killed_at
    assert "ok" in text
    assert took < LEASE_SECONDS * 3 + 3, took
    assert any(line.get("event") == "runs_taken_over" for line in cluster.replicas[1].logs())
    window = await survivor.conversations.get(session, end_user_id="u-1")
    users = [e.text for e in window.entries if e.kind == cpb.ENTRY_KIND_USER]
    assert users == ["hello"]
    assert window.entries[-1].kind == cpb.ENTRY_KIND_ASSISTANT
