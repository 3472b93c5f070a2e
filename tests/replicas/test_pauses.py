"""Across replicas, a pause is one pause: set through one replica, it ends the runs it covers on
every other within two seconds (each with an error event) and refuses their new runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from interlock.errors import FailedPrecondition
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster


async def test_a_pause_set_on_one_replica_stops_runs_on_another(
    cluster: Cluster, fake_a: FakeOpenAI
) -> None:
    """An end-user pause set through replica 0 ends the user's turn in flight on replica 1 with an
    error event within 2 s, and replica 1 refuses the user's next run while it holds."""
    fake_a.responder = lambda body: Reply().text("working").stall()
    stream = cluster.client_of(1).run("long task", end_user_id="u-1")
    events: list[Any] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)

    reading = asyncio.create_task(read())

    async def streaming() -> None:
        assert any(event.HasField("text_delta") for event in events)

    await eventually(streaming, within=10)
    loop = asyncio.get_running_loop()
    paused_at = loop.time()
    await cluster.client_of(0).compute.pause(
        "end_user", target="u-1", sandbox_id=cluster.sandbox_id, reason="incident"
    )
    await asyncio.wait_for(reading, timeout=10)
    took = loop.time() - paused_at
    assert events[-1].HasField("error"), events[-1]
    assert events[-1].error.message == (
        "the run was stopped by the pause of end user u-1 (incident)"
    )
    assert took < 2.0, took

    async def refused() -> None:
        with pytest.raises(FailedPrecondition, match="pause"):
            await cluster.client_of(1).run_text("again", end_user_id="u-1")

    await eventually(refused, within=2)
