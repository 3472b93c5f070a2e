"""N real ``interlockd serve`` replicas on one PostgreSQL database, for the multi-replica tests.

A :class:`Cluster` is what a deployment behind a gRPC load balancer looks
like, on loopback: every replica is a child process (``DaemonProcess``) of
its own data directory, all of them on one fresh database of the session's
throwaway PostgreSQL cluster with one master key. They start together; the
first alone bootstraps the store (its banner prints the operator and API
keys), the others serve without ``--bootstrap`` and find it set up (the
migrations run once, under their advisory lock). Provider tables point at
loopback fakes in the test process.

Tests reach the replicas two ways: :attr:`Cluster.client`, the real Python
client over one round-robin channel across every replica's address (what a
client-side balanced deployment does), and :meth:`Cluster.client_of`, a
client of one replica for a test that must aim a call at one of them. Which
replica served a run is read from the replicas' own logs
(:meth:`Cluster.served_by`). A :class:`Contest` sends many runs at once over
the replicas and holds the admitted ones open, for the caps' tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from interlock import Client
from interlock.errors import ResourceExhausted
from tests.daemon.process import DaemonProcess, write_config
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply


def new_master_key() -> str:
    """A master key as a secret manager would hand it over: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_env(settings: Mapping[str, Any], prefix: str = "INTERLOCK_") -> dict[str, str]:
    """Nested settings as the daemon's environment variables (``a.b`` → ``INTERLOCK_A__B``)."""
    env: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, Mapping):
            env |= settings_env(value, f"{name}__")
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, list):
            env[name] = json.dumps(value)
        else:
            env[name] = str(value)
    return env


@dataclass
class Replica:
    """One replica: its process, its own channel, and where its HTTP side listens."""

    index: int
    process: DaemonProcess
    http_port: int
    channel: grpc.aio.Channel | None = None

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def public_url(self) -> str:
        """The replica's HTTP side (OAuth callbacks, dispatch) as browsers reach it."""
        return f"http://127.0.0.1:{self.http_port}"

    def logs(self) -> list[dict[str, Any]]:
        """The replica's JSON log lines so far."""
        lines = []
        for line in self.process.logs().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines


@dataclass
class Cluster:
    """Started replicas on one database; the keys the first one printed; the channels."""

    database_url: str
    master_key: str
    replicas: list[Replica]
    operator_key: str
    api_key: str
    sandbox_id: str
    channel: grpc.aio.Channel

    @property
    def client(self) -> Client:
        """The real client over the round-robin channel (API and operator keys)."""
        return self._client(self.channel)

    def client_of(self, index: int, *, api_key: str | None = None) -> Client:
        """A client of replica ``index`` alone."""
        channel = self.replicas[index].channel
        assert channel is not None
        return self._client(channel, api_key)

    def _client(self, channel: grpc.aio.Channel, api_key: str | None = None) -> Client:
        # A client on a channel it was given leaves the channel to us (stop()).
        return Client(
            channel=channel, api_key=api_key or self.api_key, operator_key=self.operator_key
        )

    def _finishers(self, run_id: str) -> list[int]:
        """The replicas whose log says they finished (settled) run ``run_id``."""
        return [
            replica.index
            for replica in self.replicas
            if any(
                line.get("event") == "run_finished" and line.get("run_id") == run_id
                for line in replica.logs()
            )
        ]

    def settled(self, status: str) -> list[str]:
        """The runs the replicas have settled with ``status`` (e.g. ``cancelled``)."""
        return [
            line["run_id"]
            for replica in self.replicas
            for line in replica.logs()
            if line.get("event") == "run_finished" and line.get("status") == status
        ]

    def served_by(self, run_id: str) -> int:
        """The index of the replica that settled run ``run_id`` (exactly one did)."""
        finishers = self._finishers(run_id)
        assert len(finishers) == 1, f"run {run_id} finished on replicas {finishers}"
        return finishers[0]

    async def stop(self) -> None:
        """Close the channels and stop every replica."""
        await self.channel.close(None)
        for replica in self.replicas:
            if replica.channel is not None:
                await replica.channel.close(None)
        # SIGKILL: the database goes with the test, and how a replica drains is
        # the lifecycle tests' subject (a graceful stop costs seconds per test).
        await asyncio.gather(*(replica.process.kill() for replica in self.replicas))


def round_robin_channel(addresses: list[str]) -> grpc.aio.Channel:
    """One channel over every address, each call sent to the next ready one."""
    return grpc.aio.insecure_channel(
        "ipv4:" + ",".join(addresses), options=[("grpc.lb_policy_name", "round_robin")]
    )


async def start_cluster(
    directory: Path,
    database_url: str,
    providers: dict[str, dict[str, Any]],
    *,
    replicas: int = 3,
    default_provider: str = "fake",
    settings: Mapping[str, Any] | None = None,
    per_replica: Callable[[Replica], Mapping[str, Any]] | None = None,
    started: list[Replica] | None = None,
) -> Cluster:
    """Start ``replicas`` daemons on ``database_url``; the first bootstraps the store.

    ``settings`` (nested, e.g. ``{"integrations": {"public_url": ...}}``) go to
    every replica, ``per_replica(replica)`` adds a replica's own (it knows its
    HTTP port before start). ``started`` collects each replica as it starts, so
    the caller can stop the ones that did even if a later one fails.
    """
    started = [] if started is None else started
    master_key = new_master_key()
    planned: list[Replica] = []
    for index in range(replicas):
        home = directory / f"replica-{index}"
        home.mkdir(parents=True)
        http_port = _free_port()
        config = write_config(
            home / "interlock.toml",
            home / "data",
            providers,
            default_provider=default_provider,
        )
        # Only the first sets the store up; the others start beside it.
        replica = Replica(index, DaemonProcess(config, bootstrap=index == 0), http_port)
        env: dict[str, str | None] = {
            "INTERLOCK_STORE_URL": database_url,
            "INTERLOCK_KEYS__MASTER_KEY": master_key,
            # Known before start, so a public URL can name it (the file says port 0).
            "INTERLOCK_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            **settings_env(settings or {}),
        }
        if per_replica is not None:
            env |= settings_env(per_replica(replica))
        replica.process.env = env
        planned.append(replica)

    started.extend(planned)
    await asyncio.gather(*(replica.process.start() for replica in planned))
    first = planned[0]
    if not (first.process.operator_key and first.process.api_key):
        raise RuntimeError(f"the first replica did not bootstrap: {first.process.banner}")
    sandbox_id = next(
        line.split("# sandbox ", 1)[1].strip()
        for line in first.process.banner
        if "# sandbox " in line
    )
    for replica in planned:
        replica.channel = grpc.aio.insecure_channel(replica.address)
    channel = round_robin_channel([replica.address for replica in planned])
    cluster = Cluster(
        database_url=database_url,
        master_key=master_key,
        replicas=planned,
        operator_key=first.process.operator_key,
        api_key=first.process.api_key,
        sandbox_id=sandbox_id,
        channel=channel,
    )
    # Every replica connected before a test counts on the spread.
    await asyncio.gather(
        *(replica.channel.channel_ready() for replica in planned if replica.channel is not None),
        channel.channel_ready(),
    )
    return cluster


class Contest:
    """Runs sent at once, each to its replica; the admitted ones stay in progress until freed.

    The upstream holds every admitted run open (a stalled answer), so every
    admission happens while the runs admitted before it are still running:
    the cap is tested at its tightest, with no timing involved.
    """

    def __init__(self, cluster: Cluster, fake: FakeOpenAI, users: list[str]) -> None:
        fake.responder = lambda body: Reply().stall()
        self.cluster = cluster
        self.fake = fake
        self.before = len(fake.requests)
        self.cancelled_before = len(cluster.settled("cancelled"))
        self.streams = [
            cluster.client_of(i % len(cluster.replicas)).run(f"run {i}", end_user_id=user)
            for i, user in enumerate(users)
        ]
        self.tasks = [asyncio.create_task(self._drain(i)) for i in range(len(users))]

    async def _drain(self, index: int) -> str:
        try:
            async for _event in self.streams[index]:
                pass
        except ResourceExhausted as exc:
            return str(exc)
        return "ended"

    async def settle(self, admitted: int) -> list[str]:
        """Wait until all but ``admitted`` runs were refused and ``admitted`` reached the model;
        return the refusals."""

        async def decided() -> None:
            assert sum(task.done() for task in self.tasks) == len(self.tasks) - admitted
            assert len(self.fake.requests) - self.before == admitted

        await eventually(decided, within=30)
        return [task.result() for task in self.tasks if task.done()]

    def running(self) -> list[int]:
        return [i for i, task in enumerate(self.tasks) if not task.done()]

    async def free(self) -> None:
        """Cancel the runs still in progress; return once their replicas settled them."""
        running = self.running()
        for i in running:
            self.streams[i].cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

        async def settled() -> None:
            cancelled = len(self.cluster.settled("cancelled"))
            assert cancelled == self.cancelled_before + len(running)

        await eventually(settled)
