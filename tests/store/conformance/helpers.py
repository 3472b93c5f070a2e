"""What the conformance tests share: sandboxes, entries and runs made through the ``Store``
seam only, and ledger rows written and read back the way the daemon does.

Nothing here reaches past the public methods, so a helper works on every store
the ``store`` fixture opens.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest

from interlockd.errors import NotFound
from interlockd.ids import new_id
from interlockd.store.base import (
    Conversation,
    EntryKind,
    LedgerFilter,
    LedgerRow,
    NewEntry,
    NewRun,
    Quotas,
    Run,
    Sandbox,
    UsageTotals,
)
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from interlockd.store.base import Store

_names = itertools.count(1)


async def new_sandbox(store: Store, quotas: Quotas | None = None) -> Sandbox:
    return await store.create_sandbox(f"sandbox-{next(_names)}", quotas or Quotas())


def entry(
    text: str,
    kind: EntryKind = "user",
    *,
    run_id: str = "run_x",
    provider: str = "",
    model: str = "",
    tool_call_id: str = "",
    tool_name: str = "",
    is_error: bool = False,
) -> NewEntry:
    return NewEntry(
        kind=kind,
        text=text,
        run_id=run_id,
        tokens=len(text.split()),
        provider=provider,
        model=model,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        is_error=is_error,
    )


def new_run(
    sandbox_id: str, end_user_id: str, conversation_id: str, request_id: str = ""
) -> NewRun:
    return NewRun(
        id=new_id("run"),
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        conversation_id=conversation_id,
        provider="fake",
        model="fake-model",
        request_id=request_id,
    )


async def start_run(store: Store, conversation: Conversation, request_id: str = "") -> Run:
    return await store.begin_run(
        new_run(conversation.sandbox_id, conversation.end_user_id, conversation.id, request_id)
    )


async def start_in_new_conversation(
    store: Store, sandbox_id: str, end_user_id: str, *texts: str, request_id: str = ""
) -> Run:
    """begin_run creating its conversation, with one user entry per text."""
    run = new_run(sandbox_id, end_user_id, new_id("conv"), request_id)
    return await store.begin_run(
        run, create_conversation=True, entries=[entry(t, run_id=run.id) for t in texts]
    )


async def assert_no_conversation(
    store: Store, sandbox_id: str, end_user_id: str, conversation_id: str
) -> None:
    """Nothing of ``conversation_id`` exists for the end user: no listing, no entries, no hits."""
    assert (await store.list_conversations(sandbox_id, end_user_id, 10, "")).items == []
    with pytest.raises(NotFound):
        await store.get_conversation(sandbox_id, end_user_id, conversation_id)
    with pytest.raises(NotFound):
        await store.read_entries(sandbox_id, conversation_id)
    assert await store.search_entries(sandbox_id, end_user_id, "hello") == []


def tokens(
    provider: str, usage: Usage, cost: float, *, model: str = "m", agent: str = ""
) -> dict[str, Any]:
    return {
        "kind": "tokens",
        "provider": provider,
        "model": model,
        "usage": usage,
        "cost_usd": cost,
        "agent_id": agent,
    }


def compute(provider: str, seconds: float, cost: float, *, agent: str = "") -> dict[str, Any]:
    return {
        "kind": "compute",
        "provider": provider,
        "model": "",
        "usage": Usage(),
        "cost_usd": cost,
        "compute_seconds": seconds,
        "agent_id": agent,
    }


async def finished_run(
    store: Store,
    sandbox_id: str,
    end_user: str,
    *rows: dict[str, Any],
    agent_provider: str = "fake",
    status: Any = "finished",
) -> str:
    """Begin and finish (with ``status``) a run of ``agent_provider`` whose ledger holds
    ``rows``; return its id."""
    run_id = new_id("run")
    await store.begin_run(
        NewRun(run_id, sandbox_id, end_user, new_id("conv"), agent_provider, "m"),
        create_conversation=True,
    )
    ledger = [
        LedgerRow(
            run_id=run_id,
            sandbox_id=sandbox_id,
            end_user_id=end_user,
            price_version="v1",
            **row,
        )
        for row in rows
    ]
    usage = sum((r.usage for r in ledger), Usage())
    await store.finish_run(run_id, status=status, usage=usage, ledger=ledger)
    return run_id


def totals(
    key: str,
    *,
    token: float = 0.0,
    compute_: float = 0.0,
    usage: Usage | None = None,
    seconds: float = 0.0,
    runs: int,
    entries: int,
) -> UsageTotals:
    return UsageTotals(key, token, compute_, usage or Usage(), seconds, runs, entries)


async def summary(store: Store, sandbox_id: str, by: Any, **where: Any) -> list[UsageTotals]:
    page = await store.summarize_usage(sandbox_id, by, LedgerFilter(**where), 100, "")
    assert page.next_page_token == ""
    return page.items
