"""Spend budgets end to end: real daemon, real gRPC clients, scripted OpenAI-compatible fakes.

Budgets are set through the Sandboxes and Agents APIs, a Run is refused with
RESOURCE_EXHAUSTED (BUDGET_EXHAUSTED) when its reservation has no room, the
reservation settles to the run's cost, and SummarizeUsage shows the budgets."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    router_pb2,
    sandboxes_pb2,
)
from tests.api.test_error_details import details
from tests.eventually import eventually
from tests.fakes.openai import FakeOpenAI, Reply

if TYPE_CHECKING:
    from tests.conftest import DaemonFactory, RunningDaemon


def _providers(fake: FakeOpenAI) -> dict[str, Any]:
    """'fake' (no price: reserves its estimate) and 'openai' (catalog-priced gpt-4o-mini)."""
    common = {"kind": "openai", "base_url": fake.base_url, "api_key": "sk-test-a"}
    return {
        "fake": {**common, "default_model": "fake-model", "estimate_usd_per_run": 0.1},
        "openai": {**common, "default_model": "gpt-4o-mini"},
    }


async def _set_quotas(daemon: RunningDaemon, **quotas: Any) -> sandboxes_pb2.Sandbox:
    response = await daemon.sandboxes.SetQuotas(
        sandboxes_pb2.SetQuotasRequest(
            sandbox_id=daemon.sandbox_id, quotas=sandboxes_pb2.Quotas(**quotas)
        ),
        metadata=daemon.operator(),
    )
    return response.sandbox


async def _budgets(daemon: RunningDaemon, **where: str) -> dict[tuple[str, str], Any]:
    ledger = ledger_pb2_grpc.LedgerStub(daemon.channel)
    response = await ledger.SummarizeUsage(
        ledger_pb2.SummarizeUsageRequest(
            filter=ledger_pb2.LedgerFilter(**where), group_by=ledger_pb2.USAGE_GROUP_BY_DAY
        ),
        metadata=daemon.auth(),
    )
    return {(b.scope, b.period): b for b in response.budgets}


async def test_concurrent_runs_never_overshoot_the_budget(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """100 simultaneous Runs against a daily budget with room for 10 reservations: 10 stream,
    90 are RESOURCE_EXHAUSTED with ErrorInfo BUDGET_EXHAUSTED naming the budget and period."""
    daemon = await start_daemon(providers=_providers(fake_a))
    await _set_quotas(daemon, usd_per_day=1.0)
    fake_a.enqueue(*[Reply().text("working").stall() for _ in range(100)])
    calls = [
        daemon.router.Run(
            router_pb2.RunRequest(end_user_id=f"u-{i}", message="go"), metadata=daemon.auth()
        )
        for i in range(100)
    ]

    async def first(call: Any) -> Any:
        try:
            return await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc

    outcomes = await asyncio.gather(*(first(c) for c in calls))
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    started = [o for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)]
    assert (len(started), len(refused)) == (10, 90)
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    _, found = details(refused[0])
    info = found["ErrorInfo"]
    assert info.reason == "BUDGET_EXHAUSTED"
    assert (info.metadata["budget"], info.metadata["period"]) == ("sandbox", "day")
    assert info.metadata["resets_at"].endswith("T00:00:00Z")
    assert "RetryInfo" in found
    held = await _budgets(daemon)
    assert held[("sandbox", "day")].reserved_usd == pytest.approx(1.0)
    for call in calls:
        call.cancel()

    async def released() -> None:
        # Cancelled runs cost nothing here (the fake reported no usage): all goes back.
        day = (await _budgets(daemon))[("sandbox", "day")]
        assert (day.reserved_usd, day.spent_usd) == (0.0, 0.0)

    await eventually(released)


async def test_a_priced_run_settles_to_its_cost(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """A catalog-priced run too big for the budget is refused; one that fits is charged its
    actual cost, which SummarizeUsage shows beside the limit with nothing left reserved."""
    daemon = await start_daemon(providers=_providers(fake_a), default_provider="openai")
    await _set_quotas(daemon, end_user_usd_per_day=0.0001)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("hello", max_output_tokens=1000)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "end user 'u-1'" in (info.value.details() or "")
    assert details(info.value)[1]["ErrorInfo"].metadata["budget"] == "end_user"

    await _set_quotas(daemon, end_user_usd_per_day=1.0, usd_per_month=5.0)
    fake_a.enqueue(Reply().text("hi").usage(prompt=1000, completion=500))
    events = await daemon.run("hello", max_output_tokens=1000)
    assert events[-1].HasField("finish")
    cost = (1000 * 0.15 + 500 * 0.60) / 1_000_000
    budgets = await _budgets(daemon, end_user_id="u-1")
    user_day = budgets[("end_user", "day")]
    assert (user_day.target, user_day.limit_usd) == ("u-1", 1.0)
    assert (user_day.reserved_usd, user_day.spent_usd) == (0.0, pytest.approx(cost))
    month = budgets[("sandbox", "month")]
    assert (month.limit_usd, month.spent_usd) == (5.0, pytest.approx(cost))


async def test_budgets_are_validated_and_shown_by_the_apis(daemon: RunningDaemon) -> None:
    """SetQuotas and PutAgent store budgets and give them back; a negative one is
    INVALID_ARGUMENT naming its field."""
    sandbox = await _set_quotas(daemon, usd_per_day=2.5, end_user_usd_per_month=7.0)
    assert (sandbox.quotas.usd_per_day, sandbox.quotas.end_user_usd_per_month) == (2.5, 7.0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _set_quotas(daemon, usd_per_month=-1.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("quotas.usd_per_month:")

    agents = agents_pb2_grpc.AgentsStub(daemon.channel)
    put = await agents.PutAgent(
        agents_pb2.PutAgentRequest(
            agent=agents_pb2.Agent(slug="helper", provider="fake", usd_per_month=3.0)
        ),
        metadata=daemon.auth(),
    )
    assert (put.agent.usd_per_day, put.agent.usd_per_month) == (0.0, 3.0)
    got = await agents.GetAgent(agents_pb2.GetAgentRequest(slug="helper"), metadata=daemon.auth())
    assert got.agent.usd_per_month == 3.0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await agents.PutAgent(
            agents_pb2.PutAgentRequest(
                agent=agents_pb2.Agent(slug="helper", provider="fake", usd_per_day=-0.5)
            ),
            metadata=daemon.auth(),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("agent.usd_per_day:")


async def test_an_agents_budget_refuses_its_runs(
    start_daemon: DaemonFactory, fake_a: FakeOpenAI
) -> None:
    """Runs made as a saved agent count against its budget; its own refusal names it."""
    daemon = await start_daemon(providers=_providers(fake_a))
    agents = agents_pb2_grpc.AgentsStub(daemon.channel)
    await agents.PutAgent(
        agents_pb2.PutAgentRequest(
            agent=agents_pb2.Agent(slug="helper", provider="fake", usd_per_day=0.15)
        ),
        metadata=daemon.auth(),
    )
    fake_a.enqueue(Reply().text("one").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(end_user_id="u-1", message="go", agent="helper"),
        metadata=daemon.auth(),
    )
    await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await daemon.run("again", agent="helper", end_user_id="u-2")
    assert details(info.value)[1]["ErrorInfo"].metadata["budget"] == "agent"
    assert "agent 'helper'" in (info.value.details() or "")
    held = await _budgets(daemon, agent="helper")
    assert held[("agent", "day")].reserved_usd == pytest.approx(0.1)
    call.cancel()
