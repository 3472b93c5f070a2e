"""RunStore leases: a running run is held by the process running it until its lease expires."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from interlockd.store.base import Lease
from tests.store.conformance.helpers import new_run, new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def _leased_run(store: Store, owner: str, until: datetime) -> str:
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    run = await store.begin_run(
        new_run(sandbox.id, "alice", conversation.id), lease=Lease(owner, until)
    )
    return run.id


async def test_renew_extends_only_the_owners_running_runs(store: Store) -> None:
    """renew_leases names exactly the running runs the owner holds."""
    mine = await _leased_run(store, "proc_a", _in(10))
    theirs = await _leased_run(store, "proc_b", _in(10))
    ended = await _leased_run(store, "proc_a", _in(10))
    await store.finish_run(ended, status="finished")

    assert await store.renew_leases("proc_a", _in(20)) == {mine}
    assert await store.renew_leases("proc_b", _in(20)) == {theirs}
    assert await store.renew_leases("proc_c", _in(20)) == set()


async def test_expired_leases_are_interrupted_once_and_renewed_ones_kept(store: Store) -> None:
    """Runs whose lease ran out become interrupted (ABORTED); live and unleased runs stay."""
    dead = await _leased_run(store, "proc_dead", _in(-1))
    live = await _leased_run(store, "proc_live", _in(60))
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "bob")
    unleased = await store.begin_run(new_run(sandbox.id, "bob", conversation.id))

    expired = await store.expire_leases(datetime.now(UTC))

    assert [r.id for r in expired] == [dead]
    assert expired[0].status == "interrupted"
    assert expired[0].error_code == "ABORTED"
    assert await store.expire_leases(datetime.now(UTC)) == []
    assert await store.renew_leases("proc_dead", _in(60)) == set()  # taken over: gone
    assert await store.renew_leases("proc_live", _in(60)) == {live}
    assert (await store.get_run(sandbox.id, unleased.id)).status == "running"


async def test_concurrent_sweeps_return_each_run_once(store: Store) -> None:
    """Several processes sweeping at once each get disjoint runs; together, every expired one."""
    dead = {await _leased_run(store, "proc_dead", _in(-1)) for _ in range(6)}

    sweeps = await asyncio.gather(*(store.expire_leases(datetime.now(UTC)) for _ in range(4)))

    ids = [run.id for sweep in sweeps for run in sweep]
    assert sorted(ids) == sorted(dead)


async def test_a_resumed_run_is_held_by_its_new_owner(store: Store) -> None:
    """resume_run leases the run to the process resuming it."""
    run_id = await _leased_run(store, "proc_dead", _in(-1))
    [expired] = await store.expire_leases(datetime.now(UTC))

    resumed = await store.resume_run(expired.sandbox_id, run_id, lease=Lease("proc_new", _in(30)))

    assert resumed.status == "running"
    assert await store.renew_leases("proc_new", _in(30)) == {run_id}
    assert await store.renew_leases("proc_dead", _in(30)) == set()
