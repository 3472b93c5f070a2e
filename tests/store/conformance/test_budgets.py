"""The spend budgets' contract (``BudgetStore`` and the reservations of ``RunStore``):
admission reserves a run's worst case against the sandbox's, its end user's and its agent's
budgets and refuses what would pass one, finish_run settles the reservation to the actual
cost, withdrawals and interruptions give it back, and concurrent admission never overshoots."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import BudgetExhausted, ResourceExhausted
from interlockd.ids import new_id
from interlockd.store.base import (
    BudgetStatus,
    Lease,
    LedgerRow,
    NewRun,
    Quotas,
    Run,
    SpendLimits,
)
from interlockd.vocabulary import Usage
from tests.store.conformance.helpers import entry, new_run, new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


def _costing(run: NewRun, reserve_usd: float, agent: str = "") -> NewRun:
    return dataclasses.replace(run, reserve_usd=reserve_usd, agent=agent)


async def _start(
    store: Store, sandbox_id: str, user: str, reserve_usd: float, agent: str = ""
) -> Run:
    """A run in a new conversation of ``user`` that reserves ``reserve_usd``."""
    run = _costing(new_run(sandbox_id, user, new_id("conv")), reserve_usd, agent)
    return await store.begin_run(
        run, create_conversation=True, entries=[entry("hello", run_id=run.id)]
    )


def _midnight_after(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)


def _month_after(moment: datetime) -> datetime:
    return datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)


def _find(statuses: list[BudgetStatus], scope: str, period: str) -> BudgetStatus:
    (found,) = [s for s in statuses if (s.scope, s.period) == (scope, period)]
    return found


async def test_quotas_carry_the_sandbox_budgets(store: Store) -> None:
    """create_sandbox and set_quotas store the four USD budgets beside the other quotas."""
    quotas = Quotas(
        max_concurrent_runs=3,
        usd_per_day=1.5,
        usd_per_month=30.0,
        end_user_usd_per_day=0.25,
        end_user_usd_per_month=2.0,
    )
    sandbox = await new_sandbox(store, quotas)
    assert (await store.get_sandbox(sandbox.id)).quotas == quotas
    changed = dataclasses.replace(quotas, usd_per_day=2.0, end_user_usd_per_month=0.0)
    assert (await store.set_quotas(sandbox.id, changed)).quotas == changed
    assert (await store.get_sandbox(sandbox.id)).quotas == changed


async def test_a_run_that_would_pass_the_daily_budget_is_refused(store: Store) -> None:
    """begin_run refuses a reservation that would take the day past the sandbox's budget,
    with BUDGET_EXHAUSTED naming the budget, its period and the next UTC midnight."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    await _start(store, sandbox.id, "alice", 0.6)
    await _start(store, sandbox.id, "alice", 0.4)  # exactly the limit: admitted
    with pytest.raises(BudgetExhausted) as refused:
        await _start(store, sandbox.id, "bob", 0.000001)
    err = refused.value
    assert isinstance(err, ResourceExhausted)
    assert (err.budget, err.period) == ("sandbox", "day")
    resets = datetime.fromisoformat(err.resets_at.replace("Z", "+00:00"))
    assert resets == _midnight_after(datetime.now(UTC))
    assert err.metadata == {"budget": "sandbox", "period": "day", "resets_at": err.resets_at}
    assert f"sandbox {sandbox.id}" in err.message
    assert "$1.00 per UTC day" in err.message
    assert "usd_per_day" in err.message


async def test_the_monthly_budget_counts_too(store: Store) -> None:
    """A monthly budget refuses like a daily one and resets on the first of the next month."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=10.0, usd_per_month=0.5))
    await _start(store, sandbox.id, "alice", 0.5)
    with pytest.raises(BudgetExhausted) as refused:
        await _start(store, sandbox.id, "alice", 0.01)
    assert refused.value.period == "month"
    resets = datetime.fromisoformat(refused.value.resets_at.replace("Z", "+00:00"))
    assert resets == _month_after(datetime.now(UTC))


async def test_a_refused_run_stores_nothing(store: Store) -> None:
    """A run refused for budget leaves no run, no conversation and no reservation."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=0.1))
    run = _costing(new_run(sandbox.id, "alice", new_id("conv")), 0.2)
    with pytest.raises(BudgetExhausted):
        await store.begin_run(run, create_conversation=True, entries=[entry("hi", run_id=run.id)])
    assert (await store.list_conversations(sandbox.id, "alice", 10, "")).items == []
    budgets = await store.read_budgets(sandbox.id)
    assert _find(budgets, "sandbox", "day").reserved_usd == 0.0


async def test_finish_run_settles_the_reservation_to_the_actual_cost(store: Store) -> None:
    """finish_run replaces what the run reserved by its cost (tokens + compute), freeing
    the rest for other runs."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0, end_user_usd_per_day=1.0))
    run = await _start(store, sandbox.id, "alice", 0.9)
    during = await store.read_budgets(sandbox.id, end_user_id="alice")
    for scope in ("sandbox", "end_user"):
        held = _find(during, scope, "day")
        assert (held.reserved_usd, held.spent_usd) == (0.9, 0.0)
    with pytest.raises(BudgetExhausted):
        await _start(store, sandbox.id, "bob", 0.2)
    compute = LedgerRow(
        run_id=run.id,
        sandbox_id=sandbox.id,
        end_user_id="alice",
        kind="compute",
        provider="sprites",
        model="fake-model",
        usage=Usage(),
        cost_usd=0.05,
        price_version="v1",
        compute_seconds=10,
    )
    await store.finish_run(
        run.id,
        status="finished",
        usage=Usage(input_tokens=10, output_tokens=5),
        cost_usd=0.25,
        ledger=[compute],
    )
    after = await store.read_budgets(sandbox.id, end_user_id="alice")
    day = _find(after, "sandbox", "day")
    assert (day.reserved_usd, day.spent_usd, day.limit_usd) == (0.0, 0.3, 1.0)
    assert _find(after, "end_user", "day").spent_usd == 0.3
    assert _find(after, "sandbox", "month").spent_usd == 0.3
    await _start(store, sandbox.id, "bob", 0.7)  # 0.3 spent + 0.7: exactly the limit
    with pytest.raises(BudgetExhausted):
        await _start(store, sandbox.id, "bob", 0.01)


async def test_withdrawn_and_failed_runs_release_their_reservation(store: Store) -> None:
    """A withdrawn run gives all its reservation back; a failed run is charged what it cost."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    withdrawn = await _start(store, sandbox.id, "alice", 1.0)
    await store.finish_run(withdrawn.id, status="failed", withdraw=True)
    failed = await _start(store, sandbox.id, "alice", 1.0)
    await store.finish_run(failed.id, status="failed", cost_usd=0.125)
    day = _find(await store.read_budgets(sandbox.id), "sandbox", "day")
    assert (day.reserved_usd, day.spent_usd) == (0.0, 0.125)


async def test_the_end_user_budget_applies_to_each_end_user(store: Store) -> None:
    """end_user_usd_per_day limits every end user separately: one at its limit leaves
    another's room untouched."""
    sandbox = await new_sandbox(store, Quotas(end_user_usd_per_day=0.5))
    await _start(store, sandbox.id, "alice", 0.5)
    with pytest.raises(BudgetExhausted) as refused:
        await _start(store, sandbox.id, "alice", 0.1)
    assert refused.value.budget == "end_user"
    assert "end user 'alice'" in refused.value.message
    await _start(store, sandbox.id, "bob", 0.5)


async def test_an_agents_budget_applies_to_its_runs(store: Store) -> None:
    """A saved agent's budget (stored by put_agent) limits the runs made as that agent only."""
    sandbox = await new_sandbox(store)
    saved = await store.put_agent(
        sandbox.id, "support", {"provider": "fake"}, SpendLimits(usd_per_month=0.3)
    )
    assert saved.budget == SpendLimits(usd_per_month=0.3)
    assert (await store.get_agent(sandbox.id, "support")).budget == saved.budget
    await _start(store, sandbox.id, "alice", 0.3, agent="support")
    with pytest.raises(BudgetExhausted) as refused:
        await _start(store, sandbox.id, "bob", 0.1, agent="support")
    assert (refused.value.budget, refused.value.period) == ("agent", "month")
    assert "agent 'support'" in refused.value.message
    await _start(store, sandbox.id, "bob", 0.1)  # not as the agent
    await store.put_agent(sandbox.id, "support", {"provider": "fake"})  # limits lifted
    await _start(store, sandbox.id, "bob", 0.1, agent="support")
    agent = await store.read_budgets(sandbox.id, agent="support")
    assert _find(agent, "agent", "month").reserved_usd == pytest.approx(0.4)


async def test_a_resumed_run_reserves_again(store: Store) -> None:
    """resume_run reserves the run's worst case again and is refused when there is no room."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    run = await _start(store, sandbox.id, "alice", 0.6)
    await store.finish_run(run.id, status="interrupted", cost_usd=0.1)
    other = await _start(store, sandbox.id, "bob", 0.5)
    with pytest.raises(BudgetExhausted):
        await store.resume_run(sandbox.id, run.id)  # 0.1 + 0.5 held + 0.6 > 1
    await store.finish_run(other.id, status="finished", cost_usd=0.0)
    resumed = await store.resume_run(sandbox.id, run.id)
    assert resumed.status == "running"
    day = _find(await store.read_budgets(sandbox.id), "sandbox", "day")
    assert (day.reserved_usd, day.spent_usd) == (0.6, 0.1)


async def test_interrupting_running_runs_releases_their_reservations(store: Store) -> None:
    """interrupt_running_runs gives back what the runs it interrupts hold."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    await _start(store, sandbox.id, "alice", 0.7)
    assert await store.interrupt_running_runs() == 1
    day = _find(await store.read_budgets(sandbox.id), "sandbox", "day")
    assert (day.reserved_usd, day.spent_usd) == (0.0, 0.0)
    await _start(store, sandbox.id, "alice", 1.0)


async def test_expired_leases_release_their_reservations(store: Store) -> None:
    """A run whose lease expires (its process died) gives its reservation back, once."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    now = datetime.now(UTC)
    run = _costing(new_run(sandbox.id, "alice", new_id("conv")), 0.8)
    await store.begin_run(
        run,
        create_conversation=True,
        lease=Lease(owner="gone", expires_at=now - timedelta(seconds=1)),
    )
    expired = await asyncio.gather(store.expire_leases(now), store.expire_leases(now))
    assert sorted(len(e) for e in expired) == [0, 1]
    day = _find(await store.read_budgets(sandbox.id), "sandbox", "day")
    assert (day.reserved_usd, day.spent_usd) == (0.0, 0.0)


async def test_read_budgets_lists_the_current_periods(store: Store) -> None:
    """read_budgets gives the sandbox's day and month, and the end user's and agent's when
    asked, with their limits (0: none), period bounds and what is held."""
    sandbox = await new_sandbox(store, Quotas(usd_per_month=5.0))
    statuses = await store.read_budgets(sandbox.id, end_user_id="alice", agent="nobody")
    assert [(s.scope, s.target, s.period) for s in statuses] == [
        ("sandbox", "", "day"),
        ("sandbox", "", "month"),
        ("end_user", "alice", "day"),
        ("end_user", "alice", "month"),
        ("agent", "nobody", "day"),
        ("agent", "nobody", "month"),
    ]
    month = statuses[1]
    now = datetime.now(UTC)
    assert month.limit_usd == 5.0
    assert month.period_start == datetime(now.year, now.month, 1, tzinfo=UTC)
    assert month.resets_at == _month_after(now)
    assert statuses[0].resets_at == _midnight_after(now)
    assert all(s.limit_usd == 0.0 for s in statuses if s is not month)


async def test_concurrent_admission_never_overshoots_a_budget(store: Store) -> None:
    """100 runs begun at once against a budget with room for 10 admit exactly 10."""
    sandbox = await new_sandbox(store, Quotas(usd_per_day=1.0))
    outcomes = await asyncio.gather(
        *(_start(store, sandbox.id, f"user-{i}", 0.1) for i in range(100)),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if isinstance(o, Run)]
    refused = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    assert (len(admitted), len(refused)) == (10, 90)
    day = _find(await store.read_budgets(sandbox.id), "sandbox", "day")
    assert day.reserved_usd == pytest.approx(1.0)
