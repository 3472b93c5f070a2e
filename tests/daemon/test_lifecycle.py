"""The daemon as a process: first start, SIGTERM drain, kill -9 mid-turn, restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import conversations_pb2_grpc, router_pb2, router_pb2_grpc
from tests.conftest import RunningDaemon
from tests.daemon.process import DaemonProcess, write_config
from tests.fakes.openai import FakeOpenAI, Reply


@pytest.fixture
async def proc(tmp_path: Path, fake_a: FakeOpenAI) -> AsyncIterator[DaemonProcess]:
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
        shutdown_grace_seconds=5,
        shutdown_announce_seconds=0.5,
    )
    daemon = DaemonProcess(config)
    await daemon.start()
    yield daemon
    await daemon.kill()


async def test_first_start_creates_a_private_master_key(
    proc: DaemonProcess, tmp_path: Path
) -> None:
    """On first start the master key file exists with mode 0600 and keys were printed once."""
    key_file = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert proc.api_key.startswith("ilk_")
    assert proc.operator_key.startswith("ilop_")
    assert proc.api_key not in proc.logs()


async def test_health_and_reflection(daemon: RunningDaemon) -> None:
    """The standard health service says SERVING and reflection lists the API's services."""
    health = health_pb2_grpc.HealthStub(daemon.channel)
    for service in ("", "interlock.v1.AgentRouter"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(daemon.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {
        "interlock.v1.AgentRouter",
        "interlock.v1.Sandboxes",
        "interlock.v1.Conversations",
        "grpc.health.v1.Health",
    } <= names


async def test_sigterm_drains_in_flight_runs(proc: DaemonProcess, fake_a: FakeOpenAI) -> None:
    """On SIGTERM: health NOT_SERVING, new runs refused, an in-flight turn finishes and is kept."""
    fake_a.enqueue(Reply().text("slow ").delay(1.0).text("but finished"))
    async with proc.channel() as channel:
        router = router_pb2_grpc.AgentRouterStub(channel)
        call = router.Run(
            router_pb2.RunRequest(end_user_id="u", message="take your time"),
            metadata=proc.metadata(),
        )
        first = await call.read()
        proc.signal(signal.SIGTERM)
        health = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(5):
            while True:
                reply = await health.Check(health_pb2.HealthCheckRequest())
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await router.Run(
                router_pb2.RunRequest(end_user_id="u", message="too late"),
                metadata=proc.metadata(),
            ).read()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        rest = []
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
    assert rest[-1].HasField("finish")
    text = "".join(e.text_delta.text for e in [first, *rest] if e.HasField("text_delta"))
    assert text == "slow but finished"
    assert await proc.wait() == 0
    restarted = await DaemonProcess(proc.config).start()
    restarted.api_key = proc.api_key
    try:
        async with restarted.channel() as channel:
            conversations = conversations_pb2_grpc.ConversationsStub(channel)
            got = await conversations.GetConversation(
                cpb.GetConversationRequest(
                    end_user_id="u", session_id=first.run_started.session_id
                ),
                metadata=restarted.metadata(),
            )
        assert [e.text for e in got.entries] == ["take your time", "slow but finished"]
    finally:
        await restarted.kill()


async def test_kill_9_mid_turn_keeps_completed_work(
    proc: DaemonProcess, fake_a: FakeOpenAI
) -> None:
    """kill -9 mid-turn keeps the user message and the completed tool result for the next turn."""
    fake_a.enqueue(
        Reply().tool_call("search_conversations", '{"query": "anything"}', call_id="call_keep"),
        Reply().text("about to").stall(),
    )
    async with proc.channel() as channel:
        router = router_pb2_grpc.AgentRouterStub(channel)
        call = router.Run(
            router_pb2.RunRequest(end_user_id="u", message="remember this"),
            metadata=proc.metadata(),
        )
        events = [await call.read() for _ in range(4)]  # started, call, result, text
        assert events[2].HasField("tool_result")
        await fake_a.wait_for_requests(2)
        proc.signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        call.cancel()
    restarted = await DaemonProcess(proc.config).start()
    restarted.api_key = proc.api_key
    try:
        async with restarted.channel() as channel:
            conversations = conversations_pb2_grpc.ConversationsStub(channel)
            got = await conversations.GetConversation(
                cpb.GetConversationRequest(
                    end_user_id="u", session_id=events[0].run_started.session_id
                ),
                metadata=restarted.metadata(),
            )
            kinds = [e.kind for e in got.entries]
            assert kinds == [
                cpb.ENTRY_KIND_USER,
                cpb.ENTRY_KIND_TOOL_CALL,
                cpb.ENTRY_KIND_TOOL_RESULT,
            ]
            assert got.entries[2].tool_call_id == "call_keep"
            # The conversation continues; the provider gets the completed tool result.
            fake_a.enqueue(Reply().text("continuing"))
            router = router_pb2_grpc.AgentRouterStub(channel)
            after = [
                e
                async for e in router.Run(
                    router_pb2.RunRequest(
                        end_user_id="u",
                        message="go on",
                        session_id=events[0].run_started.session_id,
                    ),
                    metadata=restarted.metadata(),
                )
            ]
        assert after[-1].HasField("finish")
        roles = [m["role"] for m in fake_a.requests[-1].body["messages"]]
        assert roles == ["user", "assistant", "tool", "user"]
        assert "interrupted" in restarted.logs()
    finally:
        await restarted.kill()


async def test_keys_rotate_keeps_old_rows_readable(
    proc: DaemonProcess, fake_a: FakeOpenAI, tmp_path: Path
) -> None:
    """`interlockd keys rotate` adds a master key and new data keys; old and new rows both open."""
    async with proc.channel() as channel:
        router = router_pb2_grpc.AgentRouterStub(channel)
        first = [
            e
            async for e in router.Run(
                router_pb2.RunRequest(end_user_id="u", message="before rotation"),
                metadata=proc.metadata(),
            )
        ]
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
    rotate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "interlockd.cli",
        "keys",
        "rotate",
        "--config",
        str(proc.config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await rotate.communicate()
    assert rotate.returncode == 0, err.decode()
    assert "sandboxes got a new data key" in out.decode()
    keyring = json.loads((tmp_path / "data" / "master.key").read_text())
    assert len(keyring["keys"]) == 2
    restarted = await DaemonProcess(proc.config).start()
    restarted.api_key = proc.api_key
    try:
        async with restarted.channel() as channel:
            router = router_pb2_grpc.AgentRouterStub(channel)
            session = first[0].run_started.session_id
            after = [
                e
                async for e in router.Run(
                    router_pb2.RunRequest(
                        end_user_id="u", message="after rotation", session_id=session
                    ),
                    metadata=restarted.metadata(),
                )
            ]
            assert after[-1].HasField("finish")
            got = await conversations_pb2_grpc.ConversationsStub(channel).GetConversation(
                cpb.GetConversationRequest(end_user_id="u", session_id=session),
                metadata=restarted.metadata(),
            )
        texts = [e.text for e in got.entries]
        assert texts[0] == "before rotation"
        assert texts[2] == "after rotation"
    finally:
        await restarted.kill()


async def test_setup_prints_secrets_once(tmp_path: Path) -> None:
    """`interlockd setup` creates the key file and first sandbox, printing secrets only once."""

    async def setup() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "interlockd.cli",
            "setup",
            "--data-dir",
            str(tmp_path / "d"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")},
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    first = await setup()
    assert "INTERLOCK_OPERATOR_KEY=ilop_" in first
    assert "INTERLOCK_API_KEY=ilk_" in first
    assert stat.S_IMODE((tmp_path / "d" / "master.key").stat().st_mode) == 0o600
    second = await setup()
    assert "already set up" in second
    assert "ilk_" not in second


async def test_serves_runs_on_uvloop(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    """event_loop = "uvloop" serves a whole turn (grpc.aio and the store on uvloop's loop)."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
        event_loop="uvloop",
    )
    daemon = await DaemonProcess(config).start()
    try:
        fake_a.enqueue(Reply().text("on ", "uvloop"))
        async with daemon.channel() as channel:
            router = router_pb2_grpc.AgentRouterStub(channel)
            events = [
                e
                async for e in router.Run(
                    router_pb2.RunRequest(end_user_id="u", message="hi"),
                    metadata=daemon.metadata(),
                )
            ]
    finally:
        await daemon.kill()
    assert "".join(e.text_delta.text for e in events if e.HasField("text_delta")) == "on uvloop"
    assert events[-1].HasField("finish")
    assert '"event_loop": "uvloop"' in daemon.logs()
