"""Shared fixtures: a real interlockd on 127.0.0.1:0 in front of loopback fake providers."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from interlock.v1 import (
    conversations_pb2,
    conversations_pb2_grpc,
    events_pb2,
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)
from interlockd.config import load_settings
from interlockd.daemon import Daemon, bootstrap
from tests.fakes.openai import FakeOpenAI

if TYPE_CHECKING:
    from tests.postgres import PostgresCluster

pytest_plugins = ["tests.postgres"]

#: The store daemons started by ``start_daemon`` use: "sqlite" (the default) or
#: "postgres" (``make pytest-postgres`` runs the daemon suites that way).
STORE = os.environ.get("STORE", "sqlite")


@dataclass
class RunningDaemon:
    """A started daemon with an operator key and one sandbox with an API key."""

    daemon: Daemon
    address: str
    operator_key: str
    sandbox_id: str
    api_key: str
    channel: grpc.aio.Channel
    data_dir: Path
    _extra_channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def router(self) -> router_pb2_grpc.AgentRouterStub:
        return router_pb2_grpc.AgentRouterStub(self.channel)

    @property
    def conversations(self) -> conversations_pb2_grpc.ConversationsStub:
        return conversations_pb2_grpc.ConversationsStub(self.channel)

    @property
    def sandboxes(self) -> sandboxes_pb2_grpc.SandboxesStub:
        return sandboxes_pb2_grpc.SandboxesStub(self.channel)

    def auth(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key or self.api_key}"),)

    def operator(self) -> tuple[tuple[str, str], ...]:
        return self.auth(self.operator_key)

    async def run(
        self, message: str = "hello", *, key: str | None = None, deadline: float = 30, **fields: Any
    ) -> list[events_pb2.AgentEvent]:
        """Run a turn and collect every event."""
        fields.setdefault("end_user_id", "u-1")
        request = router_pb2.RunRequest(message=message, **fields)
        call = self.router.Run(request, metadata=self.auth(key), timeout=deadline)
        return [event async for event in call]

    async def new_sandbox(self, name: str) -> tuple[str, str]:
        """Create another sandbox through the API; return (sandbox_id, api_key)."""
        created = await self.sandboxes.CreateSandbox(
            sandboxes_pb2.CreateSandboxRequest(name=name), metadata=self.operator()
        )
        key = await self.sandboxes.CreateApiKey(
            sandboxes_pb2.CreateApiKeyRequest(sandbox_id=created.sandbox.sandbox_id, name="k"),
            metadata=self.operator(),
        )
        return created.sandbox.sandbox_id, key.secret

    async def window(self, session_id: str, end_user_id: str = "u-1") -> list[Any]:
        response = await self.conversations.GetConversation(
            conversations_pb2.GetConversationRequest(
                end_user_id=end_user_id, session_id=session_id
            ),
            metadata=self.auth(),
        )
        return list(response.entries)


DaemonFactory = Callable[..., Awaitable[RunningDaemon]]


@pytest.fixture
async def fake_a() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_b() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def daemon_settings(
    data_dir: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, **overrides: Any
) -> Any:
    base: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "data_dir": str(data_dir),
        "default_provider": "fake",
        "shutdown_grace_seconds": 2,
        # One event per upstream delta, so tests can assert exact sequences.
        "runs": {"coalesce_deltas": False},
        # The MCP fakes listen on 127.0.0.1, which the egress policy refuses by default.
        "integrations": {"mcp_allowed_networks": ["127.0.0.0/8"]},
        "providers": {
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
            "local": {"kind": "local"},
        },
    }
    integrations = {**base["integrations"], **overrides.pop("integrations", {})}
    base.update(overrides, integrations=integrations)
    return load_settings(env={}, overrides=base)


@pytest.fixture
async def start_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> AsyncIterator[DaemonFactory]:
    started: list[RunningDaemon] = []
    # STORE=postgres: each data_dir's daemons get a PostgreSQL database of their own
    # (the same one again when a test restarts a daemon on the same data_dir).
    shared: dict[Path, dict[str, Any]] = {}

    async def start(data_dir: Path | None = None, **overrides: Any) -> RunningDaemon:
        data_dir = data_dir or tmp_path / "data"
        if STORE == "postgres" and "store_url" not in overrides:
            if data_dir not in shared:
                cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
                key = base64.b64encode(os.urandom(32)).decode()
                shared[data_dir] = {
                    "store_url": cluster.create_database(),
                    "keys": {"master_key": key},
                }
            overrides = {**shared[data_dir], **overrides}
        settings = daemon_settings(data_dir, fake_a, fake_b, **overrides)
        daemon = Daemon(settings)
        port = await daemon.start()
        creds = await bootstrap(daemon.store)
        assert creds.operator_key
        assert creds.api_key
        assert creds.sandbox_id
        address = f"127.0.0.1:{port}"
        running = RunningDaemon(
            daemon=daemon,
            address=address,
            operator_key=creds.operator_key,
            sandbox_id=creds.sandbox_id,
            api_key=creds.api_key,
            channel=grpc.aio.insecure_channel(address),
            data_dir=settings.data_dir,
        )
        started.append(running)
        return running

    yield start
    for running in started:
        await running.channel.close()
        await running.daemon.stop(grace=0, announce=0)


@pytest.fixture
async def daemon(start_daemon: DaemonFactory) -> RunningDaemon:
    return await start_daemon()
