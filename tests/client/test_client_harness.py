"""The Python client against the live-daemon harness the other clients' suites use.

``clients/testing/live_daemon.py`` runs a real interlockd (in front of the scripted
OpenAI-compatible fake) in a process of its own, with the project's Python
(``INTERLOCK_PYTHON``, else this one). So these tests need nothing of the daemon in
the test process, and ``make test-python-lowest`` runs them with the lowest grpcio,
protobuf and googleapis-common-protos the client allows: a turn, ``break`` and
``cancel()``, a field violation and a daemon restart with a resumed retry, each
checked on the daemon's side through the harness.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock import Cancelled, Client, InvalidArgument, SyncClient, Unavailable

HARNESS = Path(__file__).resolve().parents[2] / "clients" / "testing" / "live_daemon.py"
STALL = [["text", "Thinking"], ["stall"]]


class Harness:
    """The harness process: its first line, and one JSON command and answer at a time."""

    def __init__(self) -> None:
        python = os.environ.get("INTERLOCK_PYTHON") or sys.executable
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
        self.proc = subprocess.Popen(
            [python, str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the harness exited before it was ready"
        self.info: dict[str, Any] = json.loads(line)
        self.address: str = self.info["address"]
        self.api_key: str = self.info["api_key"]

    def command(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert answer.pop("ok"), answer
        return answer

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """A command answered off the event loop (wait_* commands block until they happen)."""
        return await asyncio.to_thread(self.command, op, **fields)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the harness exits when its stdin closes
        try:
            self.proc.wait(30)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self.proc.returncode is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    running = Harness()
    try:
        yield running
    finally:
        running.close()


async def test_a_turn_streams_to_its_finish(harness: Harness) -> None:
    """A run through the harness's daemon streams the fake's answer and finishes."""
    async with Client(harness.address, harness.api_key) as client:
        outcome = await client.run_text("hi", end_user_id="u-h1")
    assert (outcome.ok, outcome.text) == (True, "Hello from the fake.")


async def test_break_cancels_the_run_on_the_daemon(harness: Harness) -> None:
    """A plain `async for ... break` leaves the run cancelled on the daemon."""
    await harness.ask("enqueue", replies=[STALL])
    async with Client(harness.address, harness.api_key) as client:
        async for event in client.run("hi", end_user_id="u-h2", request_id="h-break"):
            if event.HasField("text_delta"):
                break
    assert (await harness.ask("wait_run", request_id="h-break"))["status"] == "cancelled"


async def test_cancel_from_another_task_raises_cancelled(harness: Harness) -> None:
    """stream.cancel() from elsewhere raises Cancelled in the loop; the run is cancelled."""
    await harness.ask("enqueue", replies=[STALL])
    async with Client(harness.address, harness.api_key) as client:
        stream = client.run("hi", end_user_id="u-h3", request_id="h-cancel")
        started = asyncio.Event()

        async def consume() -> None:
            async for event in stream:
                if event.HasField("text_delta"):
                    started.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 10)
        stream.cancel()
        with pytest.raises(Cancelled):
            await asyncio.wait_for(consumer, 10)
    assert (await harness.ask("wait_run", request_id="h-cancel"))["status"] == "cancelled"


async def test_a_bad_field_is_named(harness: Harness) -> None:
    """The daemon's BadRequest arrives as field_violations, through both clients."""
    async with Client(harness.address, harness.api_key) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.run_text("hi", end_user_id="")
    assert [v.field for v in caught.value.field_violations] == ["end_user_id"]
    assert caught.value.metadata == {"field": "end_user_id"}

    def blocking() -> InvalidArgument:
        with SyncClient(harness.address, harness.api_key) as client:
            try:
                client.run_text("hi", end_user_id="")
            except InvalidArgument as exc:
                return exc
        raise AssertionError("no InvalidArgument")

    assert [v.field for v in (await asyncio.to_thread(blocking)).field_violations] == [
        "end_user_id"
    ]


async def test_a_restart_mid_stream_is_retryable_and_the_retry_resumes(harness: Harness) -> None:
    """The daemon stopping mid-stream ends the loop retryably (an UNAVAILABLE error event,
    or Unavailable when the connection goes first); started again, the same request_id
    finishes the turn."""
    await harness.ask("enqueue", replies=[STALL])
    events, lost = [], None
    async with Client(harness.address, harness.api_key) as client:
        try:
            async for event in client.run("long", end_user_id="u-h4", request_id="h-restart"):
                events.append(event)
                if event.HasField("text_delta"):
                    await harness.ask("stop")
        except Unavailable as exc:
            lost = exc
    if lost is not None:
        assert lost.retryable
    else:
        assert (events[-1].error.code, events[-1].error.retryable) == ("UNAVAILABLE", True)
    await harness.ask("start")
    async with Client(harness.address, harness.api_key) as client:
        outcome = await client.run_text("long", end_user_id="u-h4", request_id="h-restart")
    assert outcome.ok, outcome.error
