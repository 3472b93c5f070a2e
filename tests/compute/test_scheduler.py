"""The compute scheduler over the real store and real local runtimes (tests/compute/runtime.py),
with a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlockd.backends.registry import BackendRegistry
from interlockd.compute.base import ComputeError
from interlockd.compute.daytona.provider import DaytonaProvider
from interlockd.compute.local.provider import LocalComputeProvider
from interlockd.compute.placement import Lease, PlacementRequest, SchedulerSettings
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.compute.sprites.provider import FlySpritesProvider
from interlockd.errors import InvalidArgument, NotFound, ResourceExhausted
from interlockd.ids import new_id
from interlockd.store.base import NewRun, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.sqlite import SqliteStore
from tests.compute.counter import Clock, CounterRuntime
from tests.fakes.daytona import FakeDaytona
from tests.fakes.sprites import FakeSprites


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "interlock.db", MasterKeyring.load_or_create(tmp_path / "key"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def sandbox_id(store: SqliteStore) -> str:
    return (await store.create_sandbox("acme", Quotas())).id


Make = Callable[..., ComputeScheduler]


@pytest.fixture(name="runtime")
def _runtime() -> CounterRuntime:
    return CounterRuntime()


@pytest.fixture
async def make(store: SqliteStore, tmp_path: Path, runtime: CounterRuntime) -> AsyncIterator[Make]:
    made: list[ComputeScheduler] = []

    def build(
        names: tuple[str, ...] = ("local",),
        clock: Clock | None = None,
        startup_timeout: float = 10.0,
        **settings: Any,
    ) -> ComputeScheduler:
        providers = []
        for name in names:
            provider = LocalComputeProvider(
                tmp_path / name,
                startup_timeout=startup_timeout,
                stop_grace=2.0,
                health_interval=0.5,
            )
            provider.name = name
            providers.append(provider)
        scheduler = ComputeScheduler(
            store,
            providers,
            BackendRegistry([runtime]).describe_runtime,
            settings=SchedulerSettings(**settings),
            mcp_url=lambda: "http://127.0.0.1:9/mcp/",
            clock=clock or Clock(),
        )
        made.append(scheduler)
        return scheduler

    yield build
    for scheduler in made:
        await scheduler.stop()


async def begin(store: SqliteStore, sandbox_id: str, user: str = "alice") -> str:
    """A run row to place (placements belong to runs)."""
    run_id = new_id("run")
    await store.begin_run(
        NewRun(
            id=run_id,
            sandbox_id=sandbox_id,
            end_user_id=user,
            conversation_id=new_id("conv"),
            provider="counter",
            model="m",
            request_id="",
            labels={},
        ),
        create_conversation=True,
        entries=[],
    )
    return run_id


def request(
    sandbox_id: str, user: str = "alice", agent: str = "support", **kw: str
) -> PlacementRequest:
    return PlacementRequest(
        sandbox_id=sandbox_id,
        end_user_id=user,
        agent_key=agent,
        agent_id=agent,
        runtime="counter",
        model="m",
        **kw,
    )


async def bump(lease: Lease) -> int:
    """Increment the runtime's on-disk counter through the lease's endpoint."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        answer = await http.post(lease.access.base_url + "/counter", headers=lease.access.headers)
        answer.raise_for_status()
        count: int = answer.json()["count"]
        return count


async def run_once(
    scheduler: ComputeScheduler, store: SqliteStore, sandbox_id: str, **kw: str
) -> tuple[Lease, int]:
    plan = await scheduler.plan(request(sandbox_id, **kw))
    lease = await scheduler.acquire(plan, await begin(store, sandbox_id, kw.get("user", "alice")))
    try:
        return lease, await bump(lease)
    finally:
        await scheduler.release(lease, plan)


async def test_lifecycle_create_idle_stop_resume_archive_resume(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """create → idle stop → resume keeps state → archive → resume from archive keeps state."""
    clock = Clock()
    scheduler = make(clock=clock, idle_stop_seconds=900, archive_after_seconds=7 * 86400)
    lease, count = await run_once(scheduler, store, sandbox_id)
    assert count == 1
    session_id = lease.access.compute_session_id
    assert (await store.get_compute_session(session_id)).status == "running"

    clock.now += 899
    assert (await scheduler.reap()).suspended == 0  # not idle long enough
    clock.now += 2
    assert (await scheduler.reap()).suspended == 1
    assert (await store.get_compute_session(session_id)).status == "suspended"

    lease, count = await run_once(scheduler, store, sandbox_id)
    assert lease.access.compute_session_id == session_id  # the same session, resumed
    assert count == 2  # its state survived the stop
    placement = await store.get_placement(lease.record.tags["run_id"])
    assert "suspended session" in placement.reason

    clock.now += 901
    await scheduler.reap()
    clock.now += 7 * 86400 + 1
    assert (await scheduler.reap()).archived == 1
    assert (await store.get_compute_session(session_id)).status == "archived"

    lease, count = await run_once(scheduler, store, sandbox_id)
    assert lease.access.compute_session_id == session_id
    assert count == 3  # restored from the archive
    record = await store.get_compute_session(session_id)
    assert record.status == "running"
    assert record.tags["agent_id"] == "support"
    assert record.tags["user_id"] == "alice"


async def test_release_charges_active_seconds_at_the_provider_rate(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """The seconds from acquire to release are billed at the provider's active rate."""
    clock = Clock()
    scheduler = make(clock=clock)
    plan = await scheduler.plan(request(sandbox_id))
    lease = await scheduler.acquire(plan, await begin(store, sandbox_id))
    clock.now += 120
    charge = await scheduler.release(lease, plan)
    assert charge is not None
    assert charge.provider == "local"
    assert charge.seconds == pytest.approx(120, abs=0.01)
    rate = scheduler.provider("local").price.active_usd_per_second
    assert charge.cost_usd == pytest.approx(charge.seconds * rate)
    record = await store.get_compute_session(lease.record.id)
    assert record.active_seconds == pytest.approx(120, abs=0.01)


async def test_one_session_per_key_and_runs_of_a_key_take_turns(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """Two runs of one key share one session and do not overlap; another agent gets its own."""
    scheduler = make(max_concurrent_runs_per_user=5)
    first_plan = await scheduler.plan(request(sandbox_id))
    first = await scheduler.acquire(first_plan, await begin(store, sandbox_id))
    second_plan = await scheduler.plan(request(sandbox_id))
    waiting = asyncio.create_task(scheduler.acquire(second_plan, await begin(store, sandbox_id)))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # the key's session is busy with the first run
    await scheduler.release(first, first_plan)
    second = await waiting
    assert second.access.compute_session_id == first.access.compute_session_id
    await scheduler.release(second, second_plan)
    other, _ = await run_once(scheduler, store, sandbox_id, agent="sales")
    assert other.access.compute_session_id != first.access.compute_session_id


async def test_per_user_caps_refuse_with_what_to_do(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """Active-session and concurrent-run caps answer RESOURCE_EXHAUSTED naming the remedy."""
    scheduler = make(max_active_sessions_per_user=1, max_concurrent_runs_per_user=1)
    lease, _ = await run_once(scheduler, store, sandbox_id, agent="support")
    with pytest.raises(ResourceExhausted, match=r"1 active compute sessions \(limit 1\).*suspend"):
        await scheduler.plan(request(sandbox_id, agent="sales"))
    await scheduler.plan(request(sandbox_id, user="bob", agent="sales"))  # others are not capped
    plan = await scheduler.plan(request(sandbox_id, agent="support"))  # its own session runs
    with pytest.raises(ResourceExhausted, match="1 runs on self-hosted runtimes in progress"):
        await scheduler.plan(request(sandbox_id, agent="support"))
    scheduler.abandon(plan)
    await scheduler.suspend(lease.access.compute_session_id)
    scheduler.abandon(await scheduler.plan(request(sandbox_id, agent="sales")))


async def test_unhealthy_primary_fails_over_and_recovers(
    make: Make, store: SqliteStore, sandbox_id: str, runtime: CounterRuntime
) -> None:
    """A primary whose starts keep failing opens its breaker; runs fail over to the secondary
    and return once it recovers."""
    clock = Clock()
    scheduler = make(
        ("primary", "secondary"),
        clock=clock,
        startup_timeout=2.0,
        breaker_failures=2,
        breaker_cooldown_seconds=30,
    )
    # Every start on the primary fails: its runtime never reports healthy.
    runtime.flags = ["--unhealthy"]
    for _ in range(2):
        plan = await scheduler.plan(request(sandbox_id))
        assert plan.choice.provider == "primary"
        with pytest.raises(ComputeError, match="primary"):
            await scheduler.acquire(plan, await begin(store, sandbox_id))
        await scheduler.release(None, plan)
    runtime.flags = []
    plan = await scheduler.plan(request(sandbox_id))
    assert plan.choice.provider == "secondary"
    assert "unhealthy" in plan.choice.verdicts[0].note
    lease = await scheduler.acquire(plan, await begin(store, sandbox_id))
    await scheduler.release(lease, plan)
    health = {h.name: h for h in await scheduler.health()}
    assert health["primary"].breaker == "open"
    assert not health["primary"].healthy
    # After the cooldown a health probe closes the breaker again.
    clock.now += 31
    await scheduler.probe()
    assert {h.name: h.healthy for h in await scheduler.health()} == {
        "primary": True,
        "secondary": True,
    }


async def test_failed_sessions_are_destroyed_by_the_reaper(
    make: Make, store: SqliteStore, sandbox_id: str, runtime: CounterRuntime
) -> None:
    """A session that failed to start is marked failed and the reaper destroys it."""
    scheduler = make(startup_timeout=2.0)
    runtime.flags = ["--unhealthy"]
    plan = await scheduler.plan(request(sandbox_id))
    with pytest.raises(ComputeError):
        await scheduler.acquire(plan, await begin(store, sandbox_id))
    await scheduler.release(None, plan)
    [failed] = await store.list_compute_sessions(sandbox_id, statuses=("failed",))
    assert (await scheduler.reap()).destroyed == 1
    assert (await store.get_compute_session(failed.id)).status == "destroyed"


async def test_pinned_and_region(make: Make, store: SqliteStore, sandbox_id: str) -> None:
    """A pinned provider is used; an unknown one or an unserved region is INVALID_ARGUMENT."""
    scheduler = make(("primary", "secondary"))
    plan = await scheduler.plan(request(sandbox_id, provider="secondary"))
    assert (plan.choice.provider, plan.choice.policy) == ("secondary", "pinned")
    scheduler.abandon(plan)
    with pytest.raises(InvalidArgument, match=r"compute\.provider"):
        await scheduler.plan(request(sandbox_id, provider="nope"))
    with pytest.raises(InvalidArgument, match=r"compute\.region"):
        await scheduler.plan(request(sandbox_id, region="eu"))
    with pytest.raises(InvalidArgument, match=r"compute\.policy"):
        await scheduler.plan(request(sandbox_id, policy="fastest"))


async def test_moving_a_key_to_another_provider_retires_its_session(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """A run pinned elsewhere destroys the key's old session and starts a new one there."""
    scheduler = make(("primary", "secondary"))
    first, _ = await run_once(scheduler, store, sandbox_id)
    moved, count = await run_once(scheduler, store, sandbox_id, provider="secondary")
    assert count == 1  # a new session: the old state stayed behind
    assert moved.access.compute_session_id != first.access.compute_session_id
    old = await store.get_compute_session(first.access.compute_session_id)
    assert old.status == "destroyed"


async def test_operator_destroy_and_resume(make: Make, store: SqliteStore, sandbox_id: str) -> None:
    """Suspend, resume and destroy by id; a destroyed session cannot be resumed."""
    scheduler = make()
    lease, _ = await run_once(scheduler, store, sandbox_id)
    session_id = lease.access.compute_session_id
    assert (await scheduler.suspend(session_id)).status == "suspended"
    resumed = await scheduler.resume(session_id)
    assert resumed.status == "running"
    assert resumed.endpoint.startswith("http://127.0.0.1:")
    assert (await scheduler.destroy(session_id)).status == "destroyed"
    with pytest.raises(NotFound, match="destroyed"):
        await scheduler.resume(session_id)


# ---- placement across the Daytona and Sprites fakes ---------------------------------------

Clouds = tuple[ComputeScheduler, FakeDaytona, FakeSprites, Clock]


@pytest.fixture
async def clouds(
    store: SqliteStore,
) -> AsyncIterator[tuple[ComputeScheduler, FakeDaytona, FakeSprites, Clock]]:
    """A scheduler over the Daytona fake (preferred) and the Sprites fake, real SDKs inside."""
    async with FakeDaytona(api_key="dtn_test") as daytona, FakeSprites(token="spr_test") as sprites:
        clock = Clock()
        runtime = CounterRuntime()
        scheduler = ComputeScheduler(
            store,
            [
                DaytonaProvider(
                    api_key="dtn_test",
                    api_url=daytona.api_url,
                    ready_timeout=10.0,
                    transition_timeout=10.0,
                ),
                FlySpritesProvider(
                    token="spr_test",
                    base_url=sprites.api_url,
                    ready_timeout=10.0,
                    service_watch_seconds=0.2,
                ),
            ],
            BackendRegistry([runtime]).describe_runtime,
            settings=SchedulerSettings(
                breaker_failures=2, capacity={"daytona": 1}, max_active_sessions_per_user=5
            ),
            clock=clock,
        )
        try:
            yield scheduler, daytona, sprites, clock
        finally:
            await scheduler.stop()


async def test_latency_aware_on_the_fakes_spills_when_the_primary_is_full(
    clouds: Clouds,
    store: SqliteStore,
    sandbox_id: str,
) -> None:
    """The first session goes to Daytona; Daytona at capacity spills the next to Sprites, and
    both runtimes are really reached through their providers' endpoints."""
    scheduler, daytona, _, _ = clouds
    first, count = await run_once(scheduler, store, sandbox_id, agent="support")
    assert (first.provider.name, count) == ("daytona", 1)
    assert daytona.only_sandbox.runtime_running
    second, count = await run_once(scheduler, store, sandbox_id, agent="sales")
    assert (second.provider.name, count) == ("fly_sprites", 1)
    placement = await store.get_placement(second.record.tags["run_id"])
    assert placement.policy == "latency-aware"
    assert "at capacity (1 of 1" in placement.candidates[0]["note"]
    # The first key keeps its warm Daytona session.
    again, count = await run_once(scheduler, store, sandbox_id, agent="support")
    assert (again.provider.name, count) == ("daytona", 2)


async def test_cost_aware_and_region_on_the_fakes(
    clouds: Clouds,
    store: SqliteStore,
    sandbox_id: str,
) -> None:
    """Cost-aware prices both providers (Daytona's rate is lower); a region only Daytona
    serves pins the run there; a region none serves is INVALID_ARGUMENT."""
    scheduler, _, _, _ = clouds
    plan = await scheduler.plan(request(sandbox_id, policy="cost-aware"))
    assert plan.choice.provider == "daytona"
    assert plan.choice.reason.startswith("cheapest for a 60 s run")
    assert {v.provider for v in plan.choice.verdicts} == {"daytona", "fly_sprites"}
    scheduler.abandon(plan)
    plan = await scheduler.plan(request(sandbox_id, region="eu"))
    assert plan.choice.provider == "daytona"
    assert "does not serve region 'eu'" in plan.choice.verdicts[1].note
    scheduler.abandon(plan)
    with pytest.raises(InvalidArgument, match="no compute provider serves 'ap'"):
        await scheduler.plan(request(sandbox_id, region="ap"))


async def test_unhealthy_daytona_fails_over_to_sprites(
    clouds: Clouds,
    store: SqliteStore,
    sandbox_id: str,
) -> None:
    """Failing health probes open Daytona's breaker: runs go to Sprites until a probe after the
    cooldown succeeds."""
    scheduler, daytona, _, clock = clouds
    daytona.fail("list", 503, times=2)
    await scheduler.probe()
    await scheduler.probe()
    lease, count = await run_once(scheduler, store, sandbox_id)
    assert (lease.provider.name, count) == ("fly_sprites", 1)
    placement = await store.get_placement(lease.record.tags["run_id"])
    assert "daytona is unhealthy" in placement.candidates[0]["note"]
    assert placement.reason.startswith("daytona skipped")
    clock.now += 61
    await scheduler.probe()
    plan = await scheduler.plan(request(sandbox_id, agent="other"))
    assert plan.choice.provider == "daytona"
    scheduler.abandon(plan)


async def test_a_restarted_scheduler_reconciles_and_resumes_with_state(
    make: Make, store: SqliteStore, sandbox_id: str
) -> None:
    """After a restart (the local runtimes stopped with the old scheduler), start() marks the
    session suspended, and the next run resumes it with its state."""
    before = make()
    lease, count = await run_once(before, store, sandbox_id)
    assert count == 1
    await before.stop()
    session_id = lease.access.compute_session_id
    assert (await store.get_compute_session(session_id)).status == "running"

    after = make()
    await after.start()
    assert (await store.get_compute_session(session_id)).status == "suspended"
    lease, count = await run_once(after, store, sandbox_id)
    assert lease.access.compute_session_id == session_id
    assert count == 2
