"""The ``LedgerStore`` contract: listings newest first, summaries added up by the database.

Rows go in the way the daemon writes them, through ``finish_run``; costs are
sums of powers of two so every total is exact in binary floating point.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from interlockd.errors import InvalidArgument
from interlockd.store.base import LedgerFilter, Quotas
from interlockd.vocabulary import Usage
from tests.store.conformance.helpers import compute, finished_run, summary, tokens, totals

if TYPE_CHECKING:
    from interlockd.store.base import Store


async def test_summaries_add_up_tokens_and_compute_rows(store: Store) -> None:
    """Each grouping adds up token costs, compute costs, tokens, seconds, runs and rows exactly."""
    sandbox = await store.create_sandbox("acme", Quotas())
    sid = sandbox.id
    r1 = await finished_run(
        store,
        sid,
        "alice",
        tokens("anthropic", Usage(100, 10), 0.5, agent="support"),
        compute("daytona", 30.0, 0.25, agent="support"),
    )
    r2 = await finished_run(store, sid, "alice", tokens("openai", Usage(200, 20), 0.125))
    r3 = await finished_run(store, sid, "bob", compute("local", 12.5, 0.0625))

    assert await summary(store, sid, "end_user") == [
        totals(
            "alice",
            token=0.625,
            compute_=0.25,
            usage=Usage(300, 30),
            seconds=30.0,
            runs=2,
            entries=3,
        ),
        totals("bob", compute_=0.0625, seconds=12.5, runs=1, entries=1),
    ]
    assert await summary(store, sid, "agent") == [
        totals(
            "", token=0.125, compute_=0.0625, usage=Usage(200, 20), seconds=12.5, runs=2, entries=2
        ),
        totals(
            "support",
            token=0.5,
            compute_=0.25,
            usage=Usage(100, 10),
            seconds=30.0,
            runs=1,
            entries=2,
        ),
    ]
    assert [(t.key, t.total_cost_usd) for t in await summary(store, sid, "provider")] == [
        ("anthropic", 0.5),
        ("daytona", 0.25),
        ("local", 0.0625),
        ("openai", 0.125),
    ]
    by_run = await summary(store, sid, "run")
    assert [t.key for t in by_run] == sorted([r1, r2, r3])
    assert {t.key: t.total_cost_usd for t in by_run} == {r1: 0.75, r2: 0.125, r3: 0.0625}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    everything = totals(
        "",
        token=0.625,
        compute_=0.3125,
        usage=Usage(300, 30),
        seconds=42.5,
        runs=3,
        entries=4,
    )
    assert await summary(store, sid, "day") == [
        totals(
            today,
            token=0.625,
            compute_=0.3125,
            usage=Usage(300, 30),
            seconds=42.5,
            runs=3,
            entries=4,
        )
    ]
    assert await store.usage_total(sid, LedgerFilter()) == everything
    assert everything.total_cost_usd == 0.9375


async def test_filters_narrow_listings_and_summaries(store: Store) -> None:
    """Run, end user, agent, provider and kind filters select the same rows in both queries."""
    sid = (await store.create_sandbox("acme", Quotas())).id
    r1 = await finished_run(
        store,
        sid,
        "alice",
        tokens("anthropic", Usage(100, 10), 0.5, agent="support"),
        compute("daytona", 30.0, 0.25, agent="support"),
    )
    await finished_run(store, sid, "bob", tokens("openai", Usage(200, 20), 0.125))
    cases: list[tuple[dict[str, Any], float, int]] = [
        ({"run_id": r1}, 0.75, 2),
        ({"end_user_id": "bob"}, 0.125, 1),
        ({"agent_id": "support"}, 0.75, 2),
        ({"provider": "daytona"}, 0.25, 1),
        ({"kind": "compute"}, 0.25, 1),
        ({"kind": "tokens", "end_user_id": "alice"}, 0.5, 1),
        ({"end_user_id": "carol"}, 0.0, 0),
    ]
    for where, cost, count in cases:
        listed = await store.list_ledger_entries(sid, LedgerFilter(**where), 100, "")
        assert len(listed.items) == count, where
        total = await store.usage_total(sid, LedgerFilter(**where))
        assert (total.total_cost_usd, total.entry_count) == (cost, count), where
        assert sum(e.row.cost_usd for e in listed.items) == cost, where


async def test_listing_pages_newest_first(store: Store) -> None:
    """Pages of the listing follow each other newest first, without gaps or repeats, and
    summaries page by key."""
    sid = (await store.create_sandbox("acme", Quotas())).id
    runs = [
        await finished_run(store, sid, f"user-{i}", tokens("fake", Usage(i + 1, 1), 0.25))
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await store.list_ledger_entries(sid, LedgerFilter(), 2, token)
        seen += [e.row.run_id for e in page.items]
        pages += 1
        times = [e.created_at for e in page.items]
        assert times == sorted(times, reverse=True)
        token = page.next_page_token
        if not token:
            break
    assert (pages, seen) == (3, runs[::-1])

    keys: list[str] = []
    token = ""
    while True:
        groups = await store.summarize_usage(sid, "end_user", LedgerFilter(), 2, token)
        keys += [t.key for t in groups.items]
        token = groups.next_page_token
        if not token:
            break
    assert keys == [f"user-{i}" for i in range(5)]

    listing_token = (await store.list_ledger_entries(sid, LedgerFilter(), 2, "")).next_page_token
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.summarize_usage(sid, "end_user", LedgerFilter(), 2, listing_token)
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list_ledger_entries(sid, LedgerFilter(), 2, "not-a-token")


async def test_other_sandboxes_rows_never_count(store: Store) -> None:
    """A sandbox's listings and summaries hold none of another sandbox's rows."""
    mine = (await store.create_sandbox("mine", Quotas())).id
    theirs = (await store.create_sandbox("theirs", Quotas())).id
    their_run = await finished_run(store, theirs, "alice", tokens("fake", Usage(5, 5), 0.5))
    assert (await store.list_ledger_entries(mine, LedgerFilter(), 100, "")).items == []
    assert await summary(store, mine, "end_user") == []
    assert await store.usage_total(mine, LedgerFilter(run_id=their_run)) == totals(
        "", runs=0, entries=0
    )
    assert (await store.usage_total(theirs, LedgerFilter())).total_cost_usd == 0.5


async def test_entries_name_their_runs_agent_provider_and_failure(store: Store) -> None:
    """A listed entry carries its run's agent provider (a compute row's own provider is the
    compute provider) and whether the run failed; summaries count failed runs once each,
    per group and in the total, among the runs."""
    sandbox = await store.create_sandbox("s", Quotas())
    sid = sandbox.id
    failed = await finished_run(
        store,
        sid,
        "u",
        tokens("hermes", Usage(10, 1), 0.5),
        compute("local", 2.0, 0.25),
        agent_provider="hermes",
        status="failed",
    )
    ok = await finished_run(store, sid, "u", compute("local", 1.0, 0.125), agent_provider="hermes")
    cancelled = await finished_run(
        store, sid, "u", tokens("fake", Usage(1, 1), 0.0625), status="cancelled"
    )
    page = await store.list_ledger_entries(sid, LedgerFilter(), 100, "")
    seen = {
        (e.row.run_id, e.row.kind): (e.agent_provider, e.row.provider, e.run_failed)
        for e in page.items
    }
    assert seen == {
        (failed, "tokens"): ("hermes", "hermes", True),
        (failed, "compute"): ("hermes", "local", True),
        (ok, "compute"): ("hermes", "local", False),
        (cancelled, "tokens"): ("fake", "fake", False),
    }
    by_provider = await summary(store, sid, "provider")
    assert [(t.key, t.run_count, t.failed_run_count) for t in by_provider] == [
        ("fake", 1, 0),
        ("hermes", 1, 1),
        ("local", 2, 1),
    ]
    total = await store.usage_total(sid, LedgerFilter())
    assert (total.run_count, total.failed_run_count, total.entry_count) == (3, 1, 4)
    by_user = await summary(store, sid, "end_user")
    assert [(t.key, t.failed_run_count) for t in by_user] == [("u", 1)]
    # The agent provider selects its runs' compute rows too; the compute provider its own.
    hermes = await summary(store, sid, "run", provider="hermes")
    assert sorted((t.key, t.entry_count) for t in hermes) == sorted([(failed, 2), (ok, 1)])
    local = await store.list_ledger_entries(sid, LedgerFilter(provider="local"), 100, "")
    assert sorted(e.row.run_id for e in local.items) == sorted([failed, ok])
