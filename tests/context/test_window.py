"""Context assembly: the newest whole turns within the model's budget, deterministically."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.context.window import Budget, assemble
from interlockd.store.base import NewEntry, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from interlockd.vocabulary import ModelInfo
from tests.conftest import DaemonFactory
from tests.fakes.openai import FakeOpenAI, Reply

TINY = 1200  # tokens of context of the "tiny" test model


def _tokens(messages: list[dict[str, object]]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages)


async def test_old_turns_are_dropped_to_fit(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """A long conversation on a small model sends only the newest whole turns, within budget."""
    daemon = await start_daemon(
        providers={
            "fake": {"kind": "openai", "base_url": fake_a.base_url, "models": {"tiny": TINY}}
        }
    )
    session = ""
    for i in range(12):
        fake_a.enqueue(Reply().text(f"answer {i} " + "a" * 240))
        events = await daemon.run(f"question {i} " + "q" * 240, model="tiny", session_id=session)
        session = events[0].run_started.session_id
    last = fake_a.requests[-1].body["messages"]
    assert last[0]["role"] == "system"
    assert "Earlier turns" in last[0]["content"]
    turns = last[1:]
    assert turns[-1]["content"].startswith("question 11")
    # Whole turns only: user/assistant pairs, newest kept, oldest dropped.
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2) + ["user"]
    assert not any(m["content"].startswith("question 0 ") for m in turns)
    max_output = TINY // 4
    assert _tokens(last) <= TINY - max_output


async def test_message_too_long_for_the_model_is_refused(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """A message that can't fit the model's window is INVALID_ARGUMENT before anything is stored."""
    daemon = await start_daemon(
        providers={
            "fake": {"kind": "openai", "base_url": fake_a.base_url, "models": {"tiny": TINY}}
        }
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("word " * 2000, model="tiny")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("message:")
    assert "tiny" in (info.value.details() or "")
    assert fake_a.requests == []


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "db.sqlite", MasterKeyring.load_or_create(tmp_path / "master.key"))
    await s.open()
    return s


async def test_assembly_cost_is_bounded_by_budget_not_history(store: SqliteStore) -> None:
    """With 10,000 stored turns, the next context holds the newest that fit, the same every time."""
    sandbox = await store.create_sandbox("s", Quotas())
    conv = await store.create_conversation(sandbox.id, "u")
    try:
        batch: list[NewEntry] = []
        for i in range(10_000):
            for kind, text in (("user", f"question {i}"), ("assistant", f"answer {i}")):
                batch.append(NewEntry(kind=kind, text=text, run_id=f"r{i}", tokens=4))  # type: ignore[arg-type]
            if len(batch) >= 2000:
                await store.append_entries(sandbox.id, conv.id, batch)
                batch = []
        info = ModelInfo(context_window=8192, max_output_tokens=1024)
        budget = Budget.for_model(info, system="be brief", tools=[], max_output_tokens=None)
        context = await assemble(
            store, sandbox.id, conv.id, system="be brief", budget=budget, tool_messages=True
        )
        assert context.messages[-1].content == "answer 9999"
        assert context.dropped
        assert context.tokens <= budget.total
        assert 0 < context.included_turns < 10_000
        again = await assemble(
            store, sandbox.id, conv.id, system="be brief", budget=budget, tool_messages=True
        )
        assert again == context  # deterministic: same window and budget, same messages
    finally:
        await store.close()
