"""The ``ComputeStore`` contract: compute sessions (one live session per sandbox, end user
and agent key; secrets and tags given back as sent), where each run was placed, and the
scheduler's claims (an end user's run slots, the run a session serves)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from interlockd.errors import AlreadyExists, NotFound, ResourceExhausted
from interlockd.ids import new_id
from interlockd.store.base import Lease, Placement
from tests.store.conformance.helpers import new_run, new_sandbox, start_in_new_conversation

if TYPE_CHECKING:
    from interlockd.store.base import ComputeSessionRecord, Store

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def create(
    store: Store,
    sandbox_id: str,
    end_user_id: str = "alice",
    agent_key: str = "support",
    *,
    provider: str = "local",
    now: datetime = T0,
    **fields: Any,
) -> ComputeSessionRecord:
    """A new compute session of the key, made the way the scheduler makes one."""
    values: dict[str, Any] = {
        "runtime": "hermes",
        "region": "",
        "spec_fingerprint": "fp-1",
        "api_key": "runtime-key",
        "mcp_token": "mcp-token",
        "tags": {"user_id": end_user_id},
        **fields,
    }
    return await store.create_compute_session(
        session_id=new_id("cs"),
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        agent_key=agent_key,
        provider=provider,
        now=now,
        **values,
    )


# ---- compute sessions ---------------------------------------------------------------


async def test_compute_session_round_trip(store: Store) -> None:
    """A new session reads back as created, status creating, its secrets and tags as sent."""
    sandbox = await new_sandbox(store)
    tags = {"user_id": "alice", "sandbox_id": sandbox.id, "agent_id": "support", "run_id": "r"}
    created = await create(
        store, sandbox.id, region="fra", api_key="sk-runtime ✓", mcp_token="tok-1", tags=tags
    )
    assert created.id.startswith("cs_")
    assert (created.sandbox_id, created.end_user_id, created.agent_key) == (
        sandbox.id,
        "alice",
        "support",
    )
    assert (created.runtime, created.provider, created.region, created.spec_fingerprint) == (
        "hermes",
        "local",
        "fra",
        "fp-1",
    )
    assert (created.status, created.external_id, created.endpoint) == ("creating", "", "")
    assert (created.api_key, created.mcp_token, created.tags) == ("sk-runtime ✓", "tok-1", tags)
    assert created.active_seconds == 0.0
    assert created.created_at == created.updated_at == created.last_active_at == T0
    assert await store.get_compute_session(created.id) == created
    assert await store.find_compute_session(sandbox.id, "alice", "support") == created
    with pytest.raises(NotFound):
        await store.get_compute_session("cs_nope")
    with pytest.raises(NotFound):
        await create(store, "sbx_nope")


async def test_one_live_compute_session_per_key(store: Store) -> None:
    """A key has at most one session that is neither destroyed nor failed; other keys and
    sandboxes are separate."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    first = await create(store, sandbox.id)
    with pytest.raises(AlreadyExists, match="support"):
        await create(store, sandbox.id)
    await create(store, sandbox.id, "bob")
    await create(store, sandbox.id, agent_key="fake/fake-model")
    elsewhere = await create(store, other.id)
    assert await store.find_compute_session(sandbox.id, "carol", "support") is None
    assert await store.find_compute_session(sandbox.id, "alice", "support") == first
    assert await store.find_compute_session(other.id, "alice", "support") == elsewhere

    for ended in ("failed", "destroyed"):
        await store.update_compute_session(first.id, status=ended)  # type: ignore[arg-type]
        assert await store.find_compute_session(sandbox.id, "alice", "support") is None
        first = await create(store, sandbox.id)
        assert await store.find_compute_session(sandbox.id, "alice", "support") == first


async def test_update_compute_session_changes_only_the_given_fields(store: Store) -> None:
    """update_compute_session sets the given fields, adds active seconds, keeps the rest."""
    sandbox = await new_sandbox(store)
    created = await create(store, sandbox.id)
    running = await store.update_compute_session(
        created.id,
        status="running",
        external_id="proc-42",
        endpoint="http://127.0.0.1:9000",
        add_active_seconds=1.5,
    )
    assert (running.status, running.external_id, running.endpoint) == (
        "running",
        "proc-42",
        "http://127.0.0.1:9000",
    )
    later = T0 + timedelta(minutes=5)
    tags = {"user_id": "alice", "run_id": "run_2"}
    after = await store.update_compute_session(
        created.id, region="iad", tags=tags, add_active_seconds=2.25, last_active_at=later
    )
    assert (after.status, after.external_id, after.region, after.tags) == (
        "running",
        "proc-42",
        "iad",
        tags,
    )
    assert after.active_seconds == 3.75
    assert after.last_active_at == later
    assert (after.api_key, after.mcp_token, after.created_at) == (
        created.api_key,
        created.mcp_token,
        created.created_at,
    )
    assert after.updated_at >= created.updated_at
    assert await store.get_compute_session(created.id) == after
    with pytest.raises(NotFound):
        await store.update_compute_session("cs_nope", status="running")
    with pytest.raises(NotFound):
        await store.update_compute_session("cs_nope", tags={})


async def test_list_compute_sessions_oldest_first_by_filter(store: Store) -> None:
    """Sessions list oldest first, of one sandbox or all, narrowed by end user, agent key,
    provider, status and idleness."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    a = await create(store, sandbox.id, "alice", "support", now=T0)
    b = await create(store, sandbox.id, "bob", "support", provider="daytona", now=T0 + timedelta(1))
    c = await create(store, sandbox.id, "alice", "sales", now=T0 + timedelta(2))
    d = await create(store, other.id, "alice", "support", now=T0 + timedelta(3))
    await store.update_compute_session(b.id, status="running")

    async def ids(sandbox_id: str | None, **where: Any) -> list[str]:
        return [s.id for s in await store.list_compute_sessions(sandbox_id, **where)]

    assert await ids(sandbox.id) == [a.id, b.id, c.id]
    assert await ids(None) == [a.id, b.id, c.id, d.id]
    assert await ids(sandbox.id, end_user_id="alice") == [a.id, c.id]
    assert await ids(None, end_user_id="alice") == [a.id, c.id, d.id]
    assert await ids(sandbox.id, agent_key="support") == [a.id, b.id]
    assert await ids(None, provider="daytona") == [b.id]
    assert await ids(sandbox.id, statuses=("running",)) == [b.id]
    assert await ids(sandbox.id, statuses=("creating", "running")) == [a.id, b.id, c.id]
    assert await ids(None, idle_since=T0 + timedelta(1)) == [a.id, b.id]
    assert await ids(other.id, end_user_id="bob") == []


async def test_compute_sessions_go_with_their_sandbox(store: Store) -> None:
    """Deleting a sandbox deletes its compute sessions and its runs' placements, no one else's."""
    doomed, kept = await new_sandbox(store), await new_sandbox(store)
    sessions = {}
    runs = {}
    for sandbox in (doomed, kept):
        sessions[sandbox.id] = await create(store, sandbox.id)
        runs[sandbox.id] = (await start_in_new_conversation(store, sandbox.id, "alice", "hi")).id
        await store.record_placement(
            Placement(
                runs[sandbox.id], sandbox.id, sessions[sandbox.id].id, "local", "p", "r", [], 0, T0
            )
        )

    await store.delete_sandbox(doomed.id)

    with pytest.raises(NotFound):
        await store.get_compute_session(sessions[doomed.id].id)
    with pytest.raises(NotFound):
        await store.get_placement(runs[doomed.id])
    assert [s.id for s in await store.list_compute_sessions(None)] == [sessions[kept.id].id]
    assert (await store.get_placement(runs[kept.id])).compute_session_id == sessions[kept.id].id


# ---- placements ---------------------------------------------------------------------


async def test_placement_round_trip(store: Store) -> None:
    """A run's placement reads back field for field; a run never placed is NotFound."""
    sandbox = await new_sandbox(store)
    session = await create(store, sandbox.id)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    placement = Placement(
        run_id=run.id,
        sandbox_id=sandbox.id,
        compute_session_id=session.id,
        provider="local",
        policy="cheapest",
        reason="the only eligible provider",
        candidates=[
            {"provider": "local", "verdict": "chosen", "note": ""},
            {"provider": "daytona", "verdict": "skipped", "note": "no credentials"},
        ],
        ready_seconds=0.75,
        created_at=T0,
    )
    await store.record_placement(placement)
    assert await store.get_placement(run.id) == placement
    unplaced = await start_in_new_conversation(store, sandbox.id, "bob", "hi")
    with pytest.raises(NotFound):
        await store.get_placement(unplaced.id)
    with pytest.raises(NotFound):
        await store.get_placement("run_nope")


async def test_the_active_sessions_cap_holds_under_concurrent_creation(store: Store) -> None:
    """Twelve keys of one end user created at once under a cap of 3: exactly 3 sessions are
    made, the rest refused ResourceExhausted; another end user is not counted."""
    sandbox = await new_sandbox(store)
    await create(store, sandbox.id, "bob", "other", max_active_per_user=3)

    outcomes = await asyncio.gather(
        *(
            create(store, sandbox.id, "alice", f"agent-{i}", max_active_per_user=3)
            for i in range(12)
        ),
        return_exceptions=True,
    )

    made = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
    assert (len(made), len(refused)) == (3, 9), outcomes
    assert "limit 3" in str(refused[0])


# ---- claims that hold across processes ----------------------------------------------


async def claim_slot(
    store: Store,
    sandbox_id: str,
    end_user_id: str = "alice",
    *,
    limit: int = 2,
    now: datetime = T0,
    unplaced_for: float = 120,
) -> tuple[str, int]:
    """Take a new run slot as plan() does; return its id and the count it saw."""
    slot = new_id("slot")
    held = await store.claim_compute_run_slot(
        slot_id=slot,
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        limit=limit,
        now=now,
        unplaced_until=now + timedelta(seconds=unplaced_for),
    )
    return slot, held


async def test_run_slots_are_capped_per_end_user_and_given_back(store: Store) -> None:
    """An end user takes slots up to the limit (each claim returns the count before it); the
    next is refused with the count; another end user or sandbox is separate; a slot given
    back (twice is harmless) makes room; limit 0 always takes one."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    first, held = await claim_slot(store, sandbox.id)
    assert held == 0
    _, held = await claim_slot(store, sandbox.id)
    assert held == 1
    _, held = await claim_slot(store, sandbox.id)
    assert held == 2  # refused: nothing taken
    assert (await claim_slot(store, sandbox.id, "bob"))[1] == 0
    assert (await claim_slot(store, other.id))[1] == 0
    await store.release_compute_run_slot(first)
    await store.release_compute_run_slot(first)
    assert (await claim_slot(store, sandbox.id))[1] == 1
    assert (await claim_slot(store, sandbox.id, limit=0))[1] == 2
    with pytest.raises(NotFound):
        await claim_slot(store, "sbx_nope")


async def test_run_slots_hold_under_concurrent_claims(store: Store) -> None:
    """Twelve claims of one end user at once under a limit of 3: exactly 3 are taken."""
    sandbox = await new_sandbox(store)
    outcomes = await asyncio.gather(*(claim_slot(store, sandbox.id, limit=3) for _ in range(12)))
    assert sorted(held for _, held in outcomes) == [0, 1, 2] + [3] * 9


async def test_an_unplaced_slot_counts_until_its_time_is_up(store: Store) -> None:
    """A slot never placed (its process died after admission) stops counting at its
    unplaced_until, and is deleted by the next claim."""
    sandbox = await new_sandbox(store)
    await claim_slot(store, sandbox.id, limit=1, unplaced_for=60)
    assert (await claim_slot(store, sandbox.id, limit=1, now=T0 + timedelta(seconds=59)))[1] == 1
    later = T0 + timedelta(seconds=61)
    assert (await claim_slot(store, sandbox.id, limit=1, now=later))[1] == 0
    assert (await claim_slot(store, sandbox.id, limit=1, now=later))[1] == 1


async def test_a_placed_slot_counts_while_its_run_is_running(store: Store) -> None:
    """Once placed, a slot counts past its unplaced time while its run is running, and not once
    the run has finished or was interrupted by its lease's expiry (a dead process's run)."""
    sandbox = await new_sandbox(store)
    late = T0 + timedelta(hours=1)
    finished = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    slot, _ = await claim_slot(store, sandbox.id, limit=1)
    await store.place_compute_run_slot(slot, finished.id)
    assert (await claim_slot(store, sandbox.id, limit=1, now=late))[1] == 1
    await store.finish_run(finished.id, status="finished")
    slot, held = await claim_slot(store, sandbox.id, limit=1, now=late)
    assert held == 0

    conversation = await store.create_conversation(sandbox.id, "alice")
    dead = await store.begin_run(
        new_run(sandbox.id, "alice", conversation.id),
        lease=Lease("proc_dead", datetime.now(UTC) - timedelta(seconds=1)),
    )
    await store.release_compute_run_slot(slot)
    slot, _ = await claim_slot(store, sandbox.id, limit=1, now=late)
    await store.place_compute_run_slot(slot, dead.id)
    assert (await claim_slot(store, sandbox.id, limit=1, now=late))[1] == 1
    assert [r.id for r in await store.expire_leases(datetime.now(UTC))] == [dead.id]
    assert (await claim_slot(store, sandbox.id, limit=1, now=late))[1] == 0


async def test_placing_a_slot_replaces_an_earlier_attempts(store: Store) -> None:
    """A resumed run's new slot, once placed, replaces the slot of its earlier attempt: the
    run counts once."""
    sandbox = await new_sandbox(store)
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    earlier, _ = await claim_slot(store, sandbox.id, limit=5)
    await store.place_compute_run_slot(earlier, run.id)
    again, held = await claim_slot(store, sandbox.id, limit=5)
    assert held == 1
    await store.place_compute_run_slot(again, run.id)
    assert (await claim_slot(store, sandbox.id, limit=5))[1] == 1
    await store.place_compute_run_slot(earlier, run.id)  # given back already: nothing


async def test_a_session_serves_one_running_run(store: Store) -> None:
    """A session is claimed by one run at a time: the holder may claim again, another running
    run may not until the holder's claim is released or the holder stops running; a
    destroyed or unknown session is never claimed."""
    sandbox = await new_sandbox(store)
    session = await create(store, sandbox.id)
    first, second, third = [
        await start_in_new_conversation(store, sandbox.id, "alice", "hi") for _ in range(3)
    ]
    assert await store.claim_compute_session(session.id, first.id)
    assert await store.claim_compute_session(session.id, first.id)
    assert not await store.claim_compute_session(session.id, second.id)
    await store.release_compute_session(first.id)
    assert await store.claim_compute_session(session.id, second.id)
    assert not await store.claim_compute_session(session.id, third.id)
    await store.finish_run(second.id, status="interrupted")
    assert await store.claim_compute_session(session.id, third.id)
    await store.update_compute_session(session.id, status="destroyed")
    await store.release_compute_session(third.id)
    assert not await store.claim_compute_session(session.id, third.id)
    assert not await store.claim_compute_session("cs_nope", third.id)


async def test_a_session_created_for_a_run_is_claimed_by_it(store: Store) -> None:
    """A session created with busy_run_id serves that run; claims of others wait for it."""
    sandbox = await new_sandbox(store)
    owner, other = [
        await start_in_new_conversation(store, sandbox.id, "alice", "hi") for _ in range(2)
    ]
    session = await create(store, sandbox.id, busy_run_id=owner.id)
    assert not await store.claim_compute_session(session.id, other.id)
    assert await store.claim_compute_session(session.id, owner.id)


async def test_one_of_many_concurrent_claims_takes_a_session(store: Store) -> None:
    """Eight running runs claiming one free session at once: exactly one gets it."""
    sandbox = await new_sandbox(store)
    session = await create(store, sandbox.id)
    runs = [await start_in_new_conversation(store, sandbox.id, "alice", "hi") for _ in range(8)]
    won = await asyncio.gather(*(store.claim_compute_session(session.id, r.id) for r in runs))
    assert sum(won) == 1


async def test_a_session_serving_a_run_is_not_idle(store: Store) -> None:
    """Listing idle sessions leaves out one serving a running run, and lists it again once the
    run's claim is released."""
    sandbox = await new_sandbox(store)
    session = await create(store, sandbox.id)
    await store.update_compute_session(session.id, status="running")
    run = await start_in_new_conversation(store, sandbox.id, "alice", "hi")
    idle = T0 + timedelta(hours=1)
    assert await store.claim_compute_session(session.id, run.id)
    assert await store.list_compute_sessions(sandbox.id, idle_since=idle) == []
    await store.release_compute_session(run.id)
    assert [s.id for s in await store.list_compute_sessions(sandbox.id, idle_since=idle)] == [
        session.id
    ]
