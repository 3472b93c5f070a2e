"""A self-hosted runtime for scheduler tests: tests/compute/runtime.py behind the backend seam
(and, as :class:`HeldRuntime`, running turns that hold until the test lets them go), and a
clock the tests move."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.vocabulary import (
    BackendEvent,
    ModelInfo,
    RuntimeContext,
    SessionSpec,
    TextDelta,
    ToolRunner,
    TurnEnd,
)

RUNTIME = Path(__file__).with_name("runtime.py")


class CounterRuntime(AgentBackend):
    """runtime.py as a runtime: it serves /health and keeps a counter on its disk.

    Each session key gets a port of its own (remembered, so the spec stays the
    same): the providers' fakes share this host's network.
    """

    provider = "counter"
    runtime = True

    def __init__(self) -> None:
        self.flags: list[str] = []
        self._ports: dict[str, int] = {}

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(context_window=4096, max_output_tokens=512)

    def session_spec(self, context: RuntimeContext) -> SessionSpec:
        port = self._ports.setdefault(context.key, _free_port())
        return SessionSpec(
            key=context.key,
            command=[sys.executable, str(RUNTIME), "--port", "{port}", *self.flags],
            port=port,
            env={"RUNTIME_TOKEN": context.api_key},
            files={"config.json": f'{{"model": "{context.model}"}}'.encode()},
            labels=context.labels,
        )

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        raise NotImplementedError  # the scheduler never runs turns
        yield  # pragma: no cover


class HeldRuntime(CounterRuntime):
    """runtime.py running turns: a turn bumps its session's counter through the endpoint it
    was given (the runtime answers), then holds, inside, until :meth:`let_one_go` (or until
    the run is cancelled) and ends with a line of text.

    One instance may serve several daemons of one test: it records, per compute session,
    the turns inside it now and the most there were at once.
    """

    provider = "held"

    def __init__(self) -> None:
        super().__init__()
        self.inside: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.entered = 0
        self._go = asyncio.Semaphore(0)

    def let_one_go(self) -> None:
        """Let one held turn (the next to wait, or the longest waiting) finish."""
        self._go.release()

    def running(self) -> int:
        """Turns inside a runtime now."""
        return sum(self.inside.values())

    async def stream_turn(
        self, request: TurnRequest, tools: ToolRunner
    ) -> AsyncIterator[BackendEvent]:
        access = request.runtime
        assert access is not None, "a runtime's turn is placed on compute"
        session = access.compute_session_id
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            answer = await http.post(access.base_url + "/counter", headers=access.headers)
            answer.raise_for_status()
        # Counted once the runtime has answered: a test that sees the turn inside may
        # cancel it without cutting a request short.
        self.inside[session] = self.inside.get(session, 0) + 1
        self.most[session] = max(self.most.get(session, 0), self.inside[session])
        self.entered += 1
        try:
            await self._go.acquire()
        finally:
            self.inside[session] -= 1
        yield TextDelta("done")
        yield TurnEnd("end_turn")


class Clock:
    """Epoch seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
