"""Across replicas, a conversation has one turn at a time: of simultaneous turns on one session
sent to different replicas exactly one runs; the others are refused FAILED_PRECONDITION."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from interlock import Client
from interlock.errors import Cancelled, FailedPrecondition
from interlock.v1 import conversations_pb2 as cpb
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster

CONTENDERS = 9


async def test_simultaneous_turns_on_one_session_run_one(
    cluster: Cluster, fake_a: FakeOpenAI
) -> None:
    """Nine turns on one session sent at once to three replicas: one reaches the model, eight
    are FAILED_PRECONDITION naming the turn in progress; the session then takes the next turn."""
    first = await cluster.client_of(0).run_text("hello", end_user_id="u-1")
    session = first.session_id
    held = True
    # Every turn admitted while contending holds its run open: were two admitted,
    # neither would end and fewer than eight refusals would come back.
    fake_a.responder = lambda body: Reply().stall() if held else Reply().text("next")
    before = len(fake_a.requests)
    streams = [
        cluster.client_of(i % len(cluster.replicas)).run(
            f"contender {i}", end_user_id="u-1", session_id=session
        )
        for i in range(CONTENDERS)
    ]

    async def contend(stream: Any) -> BaseException | None:
        try:
            async for _event in stream:
                pass
        except FailedPrecondition as exc:
            return exc
        return None

    tasks = [asyncio.create_task(contend(stream)) for stream in streams]

    async def all_but_one_refused() -> None:
        assert sum(task.done() for task in tasks) == CONTENDERS - 1
        assert len(fake_a.requests) == before + 1

    await eventually(all_but_one_refused, within=20)
    refused = [task.result() for task in tasks if task.done()]
    assert all(isinstance(exc, FailedPrecondition) for exc in refused), refused
    assert all("already has a turn in progress" in str(exc) for exc in refused)
    (running,) = [i for i, task in enumerate(tasks) if not task.done()]
    streams[running].cancel()
    with pytest.raises(Cancelled):
        await tasks[running]

    held = False
    after = await _next_turn(cluster.client_of((running + 1) % len(cluster.replicas)), session)
    assert after.ok, after.error
    window = await cluster.client.conversations.get(session, end_user_id="u-1")
    users = [e.text for e in window.entries if e.kind == cpb.ENTRY_KIND_USER]
    assert users[0] == "hello"
    assert users[-1] == "and then"
    assert set(users[1:-1]) <= {f"contender {running}"}


async def _next_turn(client: Client, session: str) -> Any:
    """A turn on the session once its contended turn has ended (it ends as the client cancels)."""

    async def accepted() -> Any:
        try:
            return await client.run_text("and then", end_user_id="u-1", session_id=session)
        except FailedPrecondition as exc:
            raise AssertionError(f"the cancelled turn still holds the session: {exc}") from None

    return await eventually(accepted)
