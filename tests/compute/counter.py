"""A self-hosted runtime for scheduler tests: tests/compute/runtime.py behind the backend seam,
and a clock the tests move."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.vocabulary import BackendEvent, ModelInfo, RuntimeContext, SessionSpec, ToolRunner

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
