"""Side effects are never repeated: stored results are reused, unknown outcomes reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from interlockd.ids import new_id
from interlockd.runs.recording import TurnRecorder
from interlockd.store.base import NewRun, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.tools.base import Tool, ToolContext
from interlockd.tools.runner import SandboxToolRunner
from interlockd.vocabulary import ToolCall, ToolSpec


class CreateTicket(Tool):
    """A side-effecting tool that counts how often it really ran."""

    spec = ToolSpec(
        "tickets__create",
        "Create a ticket.",
        {"type": "object", "properties": {"title": {"type": "string"}}},
        side_effecting=True,
    )
    source_id = "int_tickets"

    def __init__(self) -> None:
        self.executions = 0

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        self.executions += 1
        return {"ticket": self.executions, "title": arguments.get("title")}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "db", MasterKeyring.load_or_create(tmp_path / "key"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def runner_for(store: SqliteStore, tool: Tool) -> tuple[SandboxToolRunner, str, str]:
    """A runner of a new run in a new conversation, as the orchestrator builds one."""
    sandbox = await store.create_sandbox(new_id("sbx"), Quotas())
    run = await store.begin_run(
        NewRun(new_id("run"), sandbox.id, "u-1", new_id("conv"), "fake", "m"),
        create_conversation=True,
    )
    recorder = TurnRecorder(store, sandbox.id, run.conversation_id, run.id, "fake", "m")
    ctx = ToolContext(store, sandbox.id, "u-1", run.conversation_id, run.id)
    return SandboxToolRunner([tool], ctx, recorder, timeout=5), sandbox.id, run.conversation_id


async def test_a_resent_completed_call_is_not_run_again(store: SqliteStore) -> None:
    """The same call id seen twice executes once; the second gets the stored result, reused."""
    tool = CreateTicket()
    runner, sandbox_id, conversation_id = await runner_for(store, tool)
    call = ToolCall("call-1", "tickets__create", '{"title": "printer"}')
    first = await runner.run(call)
    second = await runner.run(call)
    assert tool.executions == 1
    assert not first.reused
    assert second.reused
    assert second.result == first.result
    entries = await store.read_entries(sandbox_id, conversation_id, newest_first=False)
    assert [(e.kind, e.source_id) for e in entries] == [
        ("tool_call", ""),
        ("tool_result", "int_tickets"),
    ]


async def test_a_started_call_with_unknown_outcome_is_reported_not_rerun(
    store: SqliteStore,
) -> None:
    """A side-effecting call recorded as started but never finished (a crash in between) is
    answered "outcome unknown" and never executed again."""
    tool = CreateTicket()
    runner, sandbox_id, conversation_id = await runner_for(store, tool)
    call = ToolCall("call-9", "tickets__create", '{"title": "printer"}')
    recorder = TurnRecorder(store, sandbox_id, conversation_id, "run_crashed", "fake", "m")
    await recorder.record_tool_call(call)  # ... and the process died here
    result = await runner.run(call)
    assert tool.executions == 0
    assert result.reused
    assert "may have taken effect" in result.error
    again = await runner.run(call)
    assert tool.executions == 0
    assert again.reused
    stored = await store.find_tool_result(sandbox_id, conversation_id, "call-9")
    assert stored is not None
    assert "may have taken effect" in orjson.loads(stored.text)["error"]
