"""Crash and shutdown faults on a real interlockd process: kill -9 at random moments under
concurrent turns that call a side-effecting MCP tool, SIGTERM past the grace, and retries
by request_id afterwards.

What must hold whatever the moment of the fault: a side-effecting call runs at most once
(counted by the MCP server), every user message is in its window once, every tool call has
a result or "outcome unknown", every tool call a client was shown is in the record, and a
retry with the interrupted run's request_id finishes the turn.

``FAULT_ROUNDS`` sets the kill -9 rounds (3 by default) and ``FAULT_SEED`` the moments'
seed (not ``INTERLOCK_*``: the daemon reads those as settings).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from interlock.v1 import conversations_pb2 as cpb
from interlock.v1 import conversations_pb2_grpc, integrations_pb2_grpc, router_pb2, router_pb2_grpc
from interlock.v1 import events_pb2 as epb
from interlock.v1 import integrations_pb2 as ipb
from tests.daemon.process import DaemonProcess, write_config
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai import FakeOpenAI, Reply

TURNS = 20
ROUNDS = int(os.environ.get("FAULT_ROUNDS", "3"))
TOOL = "mcp__fx__send"
USER = "u-fault"
#: Words of the runner's "outcome unknown" result, as the model reads it.
UNKNOWN = "may have taken effect"

pytestmark = pytest.mark.timeout(300)


def model(body: Any) -> Reply:
    """A model that sends one message per turn with the tool, retries it once (with a new
    call id) if told its outcome is unknown, and then answers in a few paced pieces."""
    messages = body["messages"]
    last = messages[-1]
    pause = random.uniform(0, 0.15)
    if last["role"] == "user":
        turn = last["content"].rsplit(" ", 1)[-1]
        return Reply().delay(pause).tool_call(TOOL, json.dumps({"n": turn})).finish("tool_calls")
    if last["role"] == "tool" and UNKNOWN in last["content"]:
        tries = sum(1 for m in messages if m["role"] == "tool")
        if tries < 2:
            call = next(m for m in reversed(messages) if m.get("tool_calls"))
            arguments = call["tool_calls"][0]["function"]["arguments"]
            return Reply().tool_call(TOOL, arguments).finish("tool_calls")
    return Reply().text("sent").delay(pause).text(", ").delay(pause).text("done.").finish()


async def send(arguments: dict[str, Any]) -> dict[str, Any]:
    """The side effect: counted on arrival (FakeMcpServer.calls), then a moment's work, so
    a kill can land between a call's start and its result."""
    await asyncio.sleep(random.uniform(0, 0.2))
    return {"sent": arguments["n"]}


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeMcpServer]]:
    async with FakeOpenAI() as upstream, FakeMcpServer() as mcp:
        upstream.responder = model
        mcp.tool(
            "send",
            description="Send a message (a side effect).",
            schema={"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]},
            handler=send,
        )
        yield upstream, mcp


def daemon_config(tmp_path: Path, upstream: FakeOpenAI, **top: Any) -> Path:
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {
            "fake": {
                "kind": "openai",
                "base_url": upstream.base_url,
                "default_model": "fake-model",
                "api_key": "sk-fault",
            }
        },
        default_provider="fake",
        **top,
    )
    with config.open("a") as out:
        # The MCP fake listens on loopback, which the egress policy refuses by default.
        out.write('[integrations]\nmcp_allowed_networks = ["127.0.0.0/8"]\n')
    return config


async def collect(
    address: str, metadata: Any, request: router_pb2.RunRequest
) -> tuple[list[epb.AgentEvent], grpc.StatusCode | None]:
    """The events of one Run and the status it ended with (None: OK)."""
    events: list[epb.AgentEvent] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = router_pb2_grpc.AgentRouterStub(channel).Run(request, metadata=metadata, timeout=60)
        try:
            async for event in call:
                events.append(event)
        except grpc.aio.AioRpcError as exc:
            return events, exc.code()
    return events, None


async def window(daemon: DaemonProcess, session_id: str) -> list[cpb.Entry]:
    async with daemon.channel() as channel:
        response = await conversations_pb2_grpc.ConversationsStub(channel).GetConversation(
            cpb.GetConversationRequest(end_user_id=USER, session_id=session_id),
            metadata=daemon.metadata(),
        )
    return list(response.entries)


async def add_mcp(daemon: DaemonProcess, mcp: FakeMcpServer) -> None:
    async with daemon.channel() as channel:
        await integrations_pb2_grpc.IntegrationsStub(channel).AddMcpServer(
            ipb.AddMcpServerRequest(name="fx", url=mcp.url, end_user_id=USER),
            metadata=daemon.metadata(),
        )


def check_window(entries: list[cpb.Entry], message: str) -> None:
    """One user message; every tool call answered (a result or "outcome unknown")."""
    assert [e.text for e in entries if e.kind == cpb.ENTRY_KIND_USER] == [message]
    calls = {e.tool_call_id for e in entries if e.kind == cpb.ENTRY_KIND_TOOL_CALL}
    results = Counter(e.tool_call_id for e in entries if e.kind == cpb.ENTRY_KIND_TOOL_RESULT)
    assert calls == set(results), f"calls without a result: {calls - set(results)}"
    assert all(n == 1 for n in results.values()), results


async def test_kill9_under_concurrent_tool_turns_never_repeats_a_side_effect(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeMcpServer]
) -> None:
    """kill -9 at random moments under 20 concurrent turns, restart, retry each by its
    request_id: side effects at most once, one user message per window, every call
    answered, every shown call recorded, every turn finished by its retry."""
    upstream, mcp = fakes
    daemon = await DaemonProcess(daemon_config(tmp_path, upstream)).start()
    rng = random.Random(os.environ.get("FAULT_SEED", "interlock"))
    try:
        await add_mcp(daemon, mcp)
        unknown = 0  # calls answered "outcome unknown": the case the rounds are for
        for round_ in range(ROUNDS):
            turns = {f"r{round_}-{i}": f"please send turn {round_}-{i}" for i in range(TURNS)}

            def request(request_id: str, turns: dict[str, str] = turns) -> router_pb2.RunRequest:
                return router_pb2.RunRequest(
                    message=turns[request_id], end_user_id=USER, request_id=request_id
                )

            attempts = {
                rid: asyncio.create_task(collect(daemon.address, daemon.metadata(), request(rid)))
                for rid in turns
            }
            await asyncio.sleep(rng.uniform(0.05, 1.2))
            await daemon.kill()
            first = {rid: await task for rid, task in attempts.items()}
            await daemon.start()

            retries = await asyncio.gather(
                *(collect(daemon.address, daemon.metadata(), request(rid)) for rid in turns)
            )
            for (rid, message), (events, status) in zip(turns.items(), retries, strict=True):
                assert status is None, f"{rid}: retry ended {status}"
                assert events[0].HasField("run_started")
                assert events[-1].HasField("finish"), f"{rid}: {events[-1]}"
                session = events[0].run_started.session_id
                entries = await window(daemon, session)
                check_window(entries, message)
                recorded = {e.tool_call_id for e in entries if e.kind == cpb.ENTRY_KIND_TOOL_CALL}
                shown = {e.tool_call.call_id for e in first[rid][0] if e.HasField("tool_call")}
                assert shown <= recorded, f"{rid}: streamed calls not in the record"
                unknown += sum(
                    1 for e in entries if e.kind == cpb.ENTRY_KIND_TOOL_RESULT and UNKNOWN in e.text
                )
            sent = Counter(call.arguments["n"] for call in mcp.calls)
            repeated = {n: k for n, k in sent.items() if k > 1}
            assert not repeated, f"side effects repeated: {repeated}"
            # A run that finished is replayed as it was, not run again.
            rid = next(iter(turns))
            events, status = await collect(daemon.address, daemon.metadata(), request(rid))
            assert status is None
            assert events[0].run_started.replayed
        print(f"{ROUNDS} rounds, {len(mcp.calls)} side effects, {unknown} outcomes unknown")
    finally:
        await daemon.kill()


async def test_sigterm_past_the_grace_ends_streams_with_a_retryable_error(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeMcpServer]
) -> None:
    """Runs still open when the shutdown grace runs out get Error{UNAVAILABLE, retryable}
    and an OK end of stream; after a restart the same request_id finishes the turn."""
    upstream, _ = fakes
    config = daemon_config(
        tmp_path, upstream, shutdown_grace_seconds=1, shutdown_announce_seconds=0
    )
    daemon = await DaemonProcess(config).start()
    try:
        upstream.enqueue(Reply().text("a long ").stall())
        run = router_pb2.RunRequest(message="a long one", end_user_id=USER, request_id="long-1")
        pending = asyncio.create_task(collect(daemon.address, daemon.metadata(), run))
        await upstream.wait_for_requests(1)
        daemon.signal(signal.SIGTERM)
        events, status = await pending
        assert status is None, "the stream was cut instead of ending with an Error event"
        assert [e.WhichOneof("event") for e in events] == ["run_started", "text_delta", "error"]
        assert events[-1].error.code == "UNAVAILABLE"
        assert events[-1].error.retryable
        assert "shutting down" in events[-1].error.message
        assert await daemon.wait() == 0

        await daemon.start()
        events, status = await collect(daemon.address, daemon.metadata(), run)
        assert status is None
        assert events[-1].HasField("finish")
        assert not events[0].run_started.replayed
        entries = await window(daemon, events[0].run_started.session_id)
        assert [e.text for e in entries if e.kind == cpb.ENTRY_KIND_USER] == ["a long one"]
    finally:
        await daemon.kill()
