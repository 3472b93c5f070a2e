"""Two tenants in one real daemon, for the adversarial suite.

Sandbox A (the bootstrap sandbox) is the victim: its end user ``alice`` has a
conversation and a run (with labels, a request id and a system prompt), a
GitHub connect flow waiting, a connected MCP server, a saved agent, a compute
session with the run's placement, a secret and ledger rows; ``bob`` is a
second end user of A with nothing. Sandbox B is the attacker with its own key,
a revoked key and an end user ``carol`` who has run once.

Every piece of A's data carries a marker (a distinctive string or its id): a
response to an attacker that holds one of them, which the attacker did not
send itself, is a leak.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)
from interlockd import ids
from interlockd.daemon import Daemon, bootstrap
from interlockd.store.base import Placement
from tests.conftest import daemon_settings
from tests.fakes.github import FakeGitHub
from tests.fakes.openai import FakeOpenAI

ALICE_TEXT = "VICTIMalicemessage7q"
ALICE_SYSTEM = "VICTIMalicesystem7q"
ALICE_LABEL = "VICTIMalicelabel7q"
AGENT_SYSTEM = "VICTIMagentsystem7q"
MCP_HEADER = "VICTIMmcpheader7q"
SECRET_VALUE = "VICTIMsecretvalue7q"
ALICE_REQUEST_ID = "req-VICTIMalice7q"
AGENT_SLUG = "victim-agent"
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


@dataclass
class World:
    daemon: Daemon
    channel: grpc.aio.Channel
    http_base: str
    operator_key: str
    sandbox_a: str
    key_a: str
    key_a_id: str
    sandbox_b: str
    key_b: str
    revoked_key: str
    session_a: str = ""
    run_a: str = ""
    flow_a: str = ""
    integration_a: str = ""
    compute_a: str = ""
    session_b: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text_markers(self) -> list[str]:
        """A's content: must never reach anyone but A, not even in an error message."""
        return [ALICE_TEXT, ALICE_SYSTEM, ALICE_LABEL, AGENT_SYSTEM, MCP_HEADER, SECRET_VALUE]

    @property
    def id_markers(self) -> list[str]:
        """A's ids: an attacker may send one, but must never be handed one."""
        return [
            self.sandbox_a,
            self.key_a_id,
            self.session_a,
            self.run_a,
            self.flow_a,
            self.integration_a,
            self.compute_a,
            ALICE_REQUEST_ID,
        ]


def metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return () if key is None else (("authorization", f"Bearer {key}"),)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def build_world(tmp: Path, fake: FakeOpenAI, github: FakeGitHub) -> World:
    port = _free_port()
    public = f"http://127.0.0.1:{port}"
    github.register_redirect_uri(f"{public}/v1/integrations/callback")
    settings = daemon_settings(
        tmp / "data",
        fake,
        fake,
        http_listen=f"127.0.0.1:{port}",
        integrations={
            # The default policy (tests/conftest.py opens loopback for the MCP fakes).
            "mcp_allowed_networks": [],
            "public_url": public,
            "connect_flow_seconds": 600,
            "github": {
                "client_id": github.client_id,
                "client_secret": github.client_secret,
                "web_base_url": github.base_url,
                "api_base_url": github.base_url,
            },
        },
    )
    daemon = Daemon(settings)
    grpc_port = await daemon.start()
    try:
        return await _populate(daemon, grpc_port)
    except BaseException:
        # A half-built world must not leave a daemon (and its threads) behind.
        await daemon.stop(grace=0, announce=0)
        raise


async def _populate(daemon: Daemon, grpc_port: int) -> World:
    creds = await bootstrap(daemon.store)
    assert creds.operator_key
    assert creds.api_key
    assert creds.sandbox_id
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    operator = metadata(creds.operator_key)
    sandboxes = sandboxes_pb2_grpc.SandboxesStub(channel)
    (key_a,) = (
        await sandboxes.ListApiKeys(
            sandboxes_pb2.ListApiKeysRequest(sandbox_id=creds.sandbox_id), metadata=operator
        )
    ).api_keys
    b = await sandboxes.CreateSandbox(
        sandboxes_pb2.CreateSandboxRequest(name="b"), metadata=operator
    )
    sandbox_b = b.sandbox.sandbox_id
    key_b = await sandboxes.CreateApiKey(
        sandboxes_pb2.CreateApiKeyRequest(sandbox_id=sandbox_b, name="b"), metadata=operator
    )
    revoked = await sandboxes.CreateApiKey(
        sandboxes_pb2.CreateApiKeyRequest(sandbox_id=sandbox_b, name="old"), metadata=operator
    )
    w = World(
        daemon=daemon,
        channel=channel,
        http_base=f"http://127.0.0.1:{daemon.http_port}",
        operator_key=creds.operator_key,
        sandbox_a=creds.sandbox_id,
        key_a=creds.api_key,
        key_a_id=key_a.key_id,
        sandbox_b=sandbox_b,
        key_b=key_b.secret,
        revoked_key=revoked.secret,
    )
    # The revoked key worked once, so a cache that outlives revocation would show.
    await run(w, w.revoked_key, end_user_id="carol", message="before revocation")
    await sandboxes.RevokeApiKey(
        sandboxes_pb2.RevokeApiKeyRequest(sandbox_id=sandbox_b, key_id=revoked.api_key.key_id),
        metadata=operator,
    )
    events = await run(
        w,
        w.key_a,
        end_user_id="alice",
        message=ALICE_TEXT,
        system=ALICE_SYSTEM,
        request_id=ALICE_REQUEST_ID,
        labels={"victim": ALICE_LABEL},
    )
    assert events[-1].HasField("finish"), events[-1]
    w.session_a, w.run_a = events[0].run_started.session_id, events[0].run_id
    events = await run(w, w.key_b, end_user_id="carol", message="carol's own")
    w.session_b = events[0].run_started.session_id

    a = metadata(w.key_a)
    await agents_pb2_grpc.AgentsStub(channel).PutAgent(
        agents_pb2.PutAgentRequest(
            agent=agents_pb2.Agent(slug=AGENT_SLUG, provider="fake", system=AGENT_SYSTEM)
        ),
        metadata=a,
    )
    integrations = integrations_pb2_grpc.IntegrationsStub(channel)
    flow = await integrations.Connect(
        integrations_pb2.ConnectRequest(app="github", end_user_id="alice"), metadata=a
    )
    w.flow_a = flow.flow_id
    integration = await daemon.store.create_integration(
        w.sandbox_a,
        kind="mcp",
        app="victim-mcp",
        end_user_id="alice",
        config={"transport": "http", "url": "https://mcp.victim.example/mcp"},
        credentials={"headers": {"X-Victim": MCP_HEADER}},
    )
    w.integration_a = integration.id
    await sandboxes.SetSecret(
        sandboxes_pb2.SetSecretRequest(sandbox_id=w.sandbox_a, name="victim", value=SECRET_VALUE),
        metadata=operator,
    )
    # A compute session and a placement as the scheduler leaves them (no runtime behind).
    w.compute_a = ids.new_id("cs")
    await daemon.store.create_compute_session(
        session_id=w.compute_a,
        sandbox_id=w.sandbox_a,
        end_user_id="alice",
        agent_key=AGENT_SLUG,
        runtime="hermes",
        provider="local",
        region="local",
        spec_fingerprint="f" * 64,
        api_key="runtime-key",
        mcp_token="mcp-token",
        tags={"user_id": "alice", "sandbox_id": w.sandbox_a, "agent_id": AGENT_SLUG},
        now=T0,
    )
    await daemon.store.update_compute_session(w.compute_a, status="suspended", last_active_at=T0)
    await daemon.store.record_placement(
        Placement(
            run_id=w.run_a,
            sandbox_id=w.sandbox_a,
            compute_session_id=w.compute_a,
            provider="local",
            policy="latency-aware",
            reason="first healthy provider",
            candidates=[{"provider": "local", "verdict": "chosen", "note": "$0"}],
            ready_seconds=1.0,
            created_at=T0,
        )
    )
    return w


async def run(w: World, key: str, **fields: Any) -> list[Any]:
    call = router_pb2_grpc.AgentRouterStub(w.channel).Run(
        router_pb2.RunRequest(**fields), metadata=metadata(key), timeout=30
    )
    return [event async for event in call]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One world per module: the attacks change nothing of A's (each test checks), and
    building it is most of a test's time."""
    async with FakeOpenAI() as fake, FakeGitHub() as github:
        w = await build_world(tmp_path_factory.mktemp("world"), fake, github)
        w.extra["github"] = github
        try:
            yield w
        finally:
            await w.channel.close()
            await w.daemon.stop(grace=0, announce=0)
