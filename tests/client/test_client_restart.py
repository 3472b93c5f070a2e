"""The Python clients when the daemon goes away mid-stream, and the retry that resumes the turn.

A real ``interlockd serve`` child process (tests/daemon/process.py) in front of the
scripted OpenAI-compatible fake. Killed with SIGKILL mid-stream, the asyncio client's
loop raises Unavailable (retryable); stopped with SIGTERM past its shutdown grace,
the blocking client's stream ends with the daemon's in-band ``error`` event
(UNAVAILABLE, retryable). Either way, started again on the same data directory, a
run with the same ``request_id`` resumes the interrupted turn and finishes it, and
the conversation holds the user's message once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlock import Client, SyncClient, Unavailable
from interlock.v1 import conversations_pb2
from tests.daemon.process import DaemonProcess, write_config
from tests.fakes.openai import FakeOpenAI, Reply

USER = "u-restart"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def daemon(tmp_path: Path, upstream: FakeOpenAI) -> AsyncIterator[DaemonProcess]:
    """A child interlockd with a one-second shutdown grace and no announcement."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {
            "fake": {
                "kind": "openai",
                "base_url": upstream.base_url,
                "default_model": "fake-model",
                "api_key": "sk-restart",
            }
        },
        default_provider="fake",
        shutdown_grace_seconds=1,
        shutdown_announce_seconds=0,
    )
    process = await DaemonProcess(config).start()
    try:
        yield process
    finally:
        await process.kill()


async def user_messages(client: Client, session_id: str) -> list[str]:
    stored = await client.conversations.get(session_id, end_user_id=USER)
    return [e.text for e in stored.entries if e.kind == conversations_pb2.ENTRY_KIND_USER]


async def test_a_killed_daemon_is_unavailable_and_the_same_request_id_resumes(
    daemon: DaemonProcess, upstream: FakeOpenAI
) -> None:
    """SIGKILL mid-stream raises a retryable Unavailable out of the loop; after a restart
    the same request_id finishes the turn, with the message stored once."""
    upstream.enqueue(Reply().text("Part one, ").stall(), Reply().text("the whole answer."))

    async def kill_mid_stream(client: Client) -> None:
        async for event in client.run("a long one", end_user_id=USER, request_id="kill-1"):
            if event.HasField("text_delta"):
                daemon.signal(signal.SIGKILL)

    async with Client(daemon.address, daemon.api_key) as client:
        with pytest.raises(Unavailable) as caught:
            await kill_mid_stream(client)
        assert caught.value.retryable
    assert await daemon.wait() == -signal.SIGKILL

    await daemon.start()
    async with Client(daemon.address, daemon.api_key) as client:
        outcome = await client.run_text("a long one", end_user_id=USER, request_id="kill-1")
        assert outcome.ok, outcome.error
        assert outcome.finish is not None
        assert await user_messages(client, outcome.session_id) == ["a long one"]


async def test_a_daemon_stopped_past_its_grace_ends_the_stream_retryable_and_a_retry_resumes(
    daemon: DaemonProcess, upstream: FakeOpenAI
) -> None:
    """SIGTERM past the grace ends the blocking client's stream with an UNAVAILABLE,
    retryable error event; after a restart the same request_id finishes the turn."""
    upstream.enqueue(Reply().text("Part one, ").stall())
    loop = asyncio.get_running_loop()

    def interrupted() -> list[str]:
        kinds = []
        with SyncClient(daemon.address, daemon.api_key) as client:
            for event in client.run("a long one", end_user_id=USER, request_id="term-1"):
                kinds.append(event.WhichOneof("event"))
                if event.HasField("text_delta"):
                    loop.call_soon_threadsafe(daemon.signal, signal.SIGTERM)
                if event.HasField("error"):
                    assert (event.error.code, event.error.retryable) == ("UNAVAILABLE", True)
        return kinds

    assert await asyncio.to_thread(interrupted) == ["run_started", "text_delta", "error"]
    assert await daemon.wait() == 0

    await daemon.start()

    def retried() -> tuple[bool, str]:
        with SyncClient(daemon.address, daemon.api_key) as client:
            outcome = client.run_text("a long one", end_user_id=USER, request_id="term-1")
            return outcome.ok and outcome.finish is not None, outcome.session_id

    finished, session_id = await asyncio.to_thread(retried)
    assert finished
    async with Client(daemon.address, daemon.api_key) as client:
        assert await user_messages(client, session_id) == ["a long one"]
