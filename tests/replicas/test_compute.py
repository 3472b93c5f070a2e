"""Across replicas, the compute scheduler's guarantees hold: an end user's runs on self-hosted
runtimes in progress never exceed ``compute.max_concurrent_runs_per_user`` however they are
spread, and one compute session serves one run at a time (a run sent to another replica waits
for it, as runs of one replica do).

Three daemons of this process share one PostgreSQL database, each with its own compute
scheduler (its own keys' locks, as separate processes have), and place their runs on one fake
Daytona, whose sandboxes really run tests/compute/runtime.py. The runtime's turns are a test
backend (:class:`~tests.compute.counter.HeldRuntime`, registered on each daemon) that hold
until the test lets them go; runs are sent through the real client, each to its replica.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import pytest

from interlock import Client
from interlock.errors import Cancelled, ResourceExhausted
from interlockd.daemon import Daemon, bootstrap
from tests.compute.counter import HeldRuntime
from tests.conftest import daemon_settings
from tests.eventually import eventually
from tests.fakes.daytona import FakeDaytona
from tests.fakes.openai import FakeOpenAI
from tests.postgres import PostgresCluster

DAYTONA_KEY = "dtn_test"


@dataclass
class Replicas:
    """Started daemons on one database, a client of each, the bootstrapped sandbox."""

    daemons: list[Daemon]
    clients: list[Client]
    sandbox_id: str

    def send(self, index: int, message: str, **options: Any) -> Sent:
        """Run ``message`` on replica ``index`` (modulo their number) as the held runtime,
        drained in the background."""
        stream = self.clients[index % len(self.clients)].run(message, provider="held", **options)
        return Sent(stream, asyncio.create_task(_drain(stream)))

    async def settled(self, run_ids: list[str]) -> None:
        """Wait until none of the runs is running in the store."""

        async def ended() -> None:
            for run_id in run_ids:
                run = await self.daemons[0].store.get_run(self.sandbox_id, run_id)
                assert run.status != "running", run_id

        await eventually(ended, within=30)


@dataclass
class Sent:
    stream: Any
    task: asyncio.Task[Outcome]


@dataclass
class Outcome:
    run_id: str
    refusal: str
    last: str  # the kind of the last event


async def _drain(stream: Any) -> Outcome:
    run_id, last = "", ""
    try:
        async for event in stream:
            run_id = run_id or event.run_id
            last = str(event.WhichOneof("event"))
    except ResourceExhausted as exc:
        return Outcome(run_id, str(exc), last)
    except Cancelled:
        return Outcome(run_id, "", "cancelled")
    return Outcome(run_id, "", last)


Start = Callable[..., Awaitable[Replicas]]


@pytest.fixture
async def daytona() -> AsyncIterator[FakeDaytona]:
    async with FakeDaytona(api_key=DAYTONA_KEY) as fake:
        yield fake


@pytest.fixture
async def start_replicas(
    tmp_path: Path,
    postgres_cluster: PostgresCluster,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    daytona: FakeDaytona,
) -> AsyncIterator[tuple[Start, HeldRuntime]]:
    """Start three daemons on a fresh database with ``[compute]`` settings given; stop them."""
    runtime = HeldRuntime()
    url = postgres_cluster.create_database()
    key = base64.b64encode(os.urandom(32)).decode()
    daemons: list[Daemon] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**compute: Any) -> Replicas:
        for index in range(3):
            settings = daemon_settings(
                tmp_path / f"replica-{index}",
                fake_a,
                fake_b,
                store_url=url,
                keys={"master_key": key},
                compute={
                    "providers": {
                        "daytona": {
                            "kind": "daytona",
                            "api_url": daytona.api_url,
                            "api_key": DAYTONA_KEY,
                        }
                    },
                    **compute,
                },
            )
            daemon = Daemon(settings)
            daemons.append(daemon)
            await daemon.start()
            daemon.backends.register(runtime)
        creds = await bootstrap(daemons[0].store)
        assert creds.sandbox_id
        assert creds.api_key
        clients = []
        for daemon in daemons:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")
            channels.append(channel)
            clients.append(Client(channel=channel, api_key=creds.api_key))
        return Replicas(daemons, clients, creds.sandbox_id)

    try:
        yield start, runtime
    finally:
        for channel in channels:
            await channel.close(None)
        for daemon in daemons:
            await daemon.stop(grace=0, announce=0)
        postgres_cluster.drop_database(url.rsplit("/", 1)[1])


#: Each round is a fresh race at the cap.
ROUNDS = 2


async def test_runs_per_user_on_runtimes_hold_across_replicas(
    start_replicas: tuple[Start, HeldRuntime],
) -> None:
    """Cap 3, twelve simultaneous runs of one end user (each of its own agent, so of its own
    compute session) over three replicas, and one run of another end user: exactly three of
    the first and the other's are in progress at once, nine refused RESOURCE_EXHAUSTED naming
    the cap, round after round as the admitted ones end."""
    start, runtime = start_replicas
    replicas = await start(max_concurrent_runs_per_user=3, max_active_sessions_per_user=0)
    for _round in range(ROUNDS):
        sent = [
            replicas.send(i, f"run {i}", end_user_id="u-busy", model=f"m-{i}") for i in range(12)
        ]
        sent.append(replicas.send(12, "another's", end_user_id="u-other", model="m-0"))

        async def decided(sent: list[Sent] = sent) -> None:
            assert sum(s.task.done() for s in sent) == 9
            assert runtime.running() == 4

        await eventually(decided, within=60)
        refusals = [s.task.result().refusal for s in sent if s.task.done()]
        assert all(
            "'u-busy' has 3 runs on self-hosted runtimes in progress (limit 3)" in r
            for r in refusals
        ), refusals
        assert not sent[12].task.done()

        for s in sent:
            if not s.task.done():
                s.stream.cancel()
        outcomes = await asyncio.gather(*(s.task for s in sent))
        assert sorted(o.last for o in outcomes if not o.refusal) == ["cancelled"] * 4
        await replicas.settled([o.run_id for o in outcomes if o.run_id])


async def test_one_session_serves_one_run_at_a_time_across_replicas(
    start_replicas: tuple[Start, HeldRuntime],
) -> None:
    """Six simultaneous runs of one end user and agent over three replicas share one compute
    session and take turns in it: one at a time enters the runtime, the next only once the
    one before has ended, and all six finish."""
    start, runtime = start_replicas
    replicas = await start(max_concurrent_runs_per_user=10)
    sent = [replicas.send(i, f"turn {i}", end_user_id="u-1", model="m-shared") for i in range(6)]
    for turn in range(1, 7):

        async def alone_inside(turn: int = turn) -> None:
            assert (runtime.entered, runtime.running()) == (turn, 1)

        await eventually(alone_inside, within=60)
        runtime.let_one_go()

    outcomes = await asyncio.gather(*(s.task for s in sent))
    assert [(o.refusal, o.last) for o in outcomes] == [("", "finish")] * 6
    assert list(runtime.most.values()) == [1]
    sessions = await replicas.daemons[0].store.list_compute_sessions(replicas.sandbox_id)
    assert [s.status for s in sessions] == ["running"]
