"""The compute scheduler: places self-hosted runtimes, keeps them warm or asleep, bills them.

One long-lived compute session per (sandbox, end user, agent key) — the
saved agent's slug, or ``<provider>/<model>`` for runs without one — is kept
in the store (:class:`ComputeSessionRecord`) with its provider, external id,
status, endpoint, secrets and tags. A run on a runtime backend goes:

1. :meth:`ComputeScheduler.plan` (before the run is admitted): the per-user
   caps, then a :class:`~interlockd.compute.policy.Choice` of provider from a
   snapshot of the providers — health (circuit breakers fed by probes and by
   session starts), compute-provider pauses, capacity, where the key's session
   is, measured start times — and last the end user's run slot, taken in the
   store (the one thing it stores).
2. :meth:`ComputeScheduler.acquire` (the run's clock is running): binds the
   slot to the run, takes the key's lock and then the session's claim in the
   store — runs of one key take turns, since a runtime holds one run's tools at
   a time — retires a session on another provider or with a changed spec,
   creates or resumes the session, fetches its endpoint (tokens may change on
   every start), records the placement and returns a :class:`Lease`.
3. :meth:`ComputeScheduler.release`: the seconds from acquire to release are
   the run's active compute seconds; it returns their :class:`ComputeCharge`
   for the ledger, stamps the session's idle timer and gives back the claim
   and the slot.

A background reaper suspends sessions idle for ``idle_stop_seconds``, archives
those suspended for ``archive_after_seconds`` and destroys failed ones; a
health loop probes each provider. The providers' breakers and start times, the
keys' locks and every operation on a session (start, retire, suspend, resume,
destroy, reap, probe) are the :class:`~interlockd.compute.fleet.Fleet`'s; this
module places runs and runs the loops. Time comes from an injected clock (epoch
seconds) so all of it is testable without waiting.

What must hold across processes sharing the store is claimed in the store:
the run slots of ``max_concurrent_runs_per_user`` (counted and taken in one
transaction; a slot whose run stopped running, e.g. interrupted when its
process died, no longer counts), the run a session serves (a run of another
process waits for it, as runs of one process wait on the key's lock), the
sessions cap (counted when a session is created) and one session per key (a
unique index). The key's lock stays, in front of the claim: runs of one
process queue on it without asking the store, and the operator's suspend and
destroy wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from interlockd import ids
from interlockd.compute.base import ComputeProvider
from interlockd.compute.fleet import Describe, Fleet
from interlockd.compute.placement import (
    ComputeCharge,
    Lease,
    PlacementRequest,
    Plan,
    ProviderHealth,
    ReapReport,
    SchedulerSettings,
)
from interlockd.compute.policy import Candidate, Existing, choose
from interlockd.compute.sessions import at, fingerprint, tags
from interlockd.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from interlockd.pauses import PauseBoard
from interlockd.store.base import ComputeSessionRecord, Placement, Store
from interlockd.vocabulary import RuntimeAccess, SessionSpec

log = structlog.get_logger(__name__)

#: A slot taken at admission counts this long until its run is placed: a process
#: that died in between gives its slot up then (a placed slot follows its run).
UNPLACED_SLOT_SECONDS = 120.0

#: Waiting for a session another process's run is using: first and longest pause
#: between claims.
_CLAIM_FIRST_WAIT = 0.05
_CLAIM_LONGEST_WAIT = 0.5


class ComputeScheduler:
    """Places runs on compute providers and keeps their sessions."""

    def __init__(
        self,
        store: Store,
        providers: Sequence[ComputeProvider],
        describe: Describe,
        *,
        settings: SchedulerSettings | None = None,
        pauses: PauseBoard | None = None,
        mcp_url: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``providers`` in order of preference; ``describe`` gives the session spec of
        a runtime (by name) for a session's context; ``mcp_url`` is the daemon's MCP
        endpoint as a runtime reaches it; ``clock`` gives epoch seconds."""
        self._store = store
        self._settings = settings or SchedulerSettings()
        self._pauses = pauses
        self._clock = clock
        self._fleet = Fleet(store, providers, describe, self._settings, mcp_url, clock)
        self._tasks: list[asyncio.Task[None]] = []
        #: Slots given back by abandon(), which cannot wait for the store.
        self._giving_back: set[asyncio.Task[None]] = set()

    @property
    def providers(self) -> list[str]:
        """Configured provider names, in order of preference."""
        return list(self._fleet.order)

    def provider(self, name: str) -> ComputeProvider:
        return self._fleet.provider(name)

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bring the store in line with the providers, then start the reaper and probes."""
        await self.reconcile()
        self._tasks = [
            asyncio.create_task(
                self._every(self._settings.reaper_interval_seconds, self.reap), name="reaper"
            ),
            asyncio.create_task(
                self._every(self._settings.health_interval_seconds, self.probe), name="probes"
            ),
        ]

    async def stop(self) -> None:
        """Stop the background loops and the providers' local work (sessions stay)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)
        for provider in self._fleet.providers.values():
            try:
                await provider.aclose()
            except Exception:
                log.exception("compute_provider_close_failed", provider=provider.name)

    async def _every(self, seconds: float, work: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = work()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a hiccup must not end the loop
                log.exception("compute_background_failed")

    # ---- placement ---------------------------------------------------------------

    async def plan(self, request: PlacementRequest) -> Plan:
        """Admit and place a run; the plan holds a run slot of the end user (in the store,
        so the cap holds across processes) until :meth:`release` or :meth:`abandon`.

        ResourceExhausted (with what to do) when a per-user cap is reached;
        otherwise the errors of :func:`~interlockd.compute.policy.choose`.
        """
        s = self._settings
        policy = request.policy or s.default_policy
        if policy not in ("latency-aware", "cost-aware"):
            raise InvalidArgument(
                "compute.policy", f"unknown policy {policy!r}; use latency-aware or cost-aware"
            )
        existing = await self._store.find_compute_session(
            request.sandbox_id, request.end_user_id, request.agent_key
        )
        running = await self._store.list_compute_sessions(statuses=("creating", "running"))
        if s.max_active_sessions_per_user and (existing is None or existing.status != "running"):
            mine = [
                r
                for r in running
                if r.sandbox_id == request.sandbox_id and r.end_user_id == request.end_user_id
            ]
            if len(mine) >= s.max_active_sessions_per_user:
                raise ResourceExhausted(
                    f"end user {request.end_user_id!r} has {len(mine)} active compute sessions "
                    f"(limit {s.max_active_sessions_per_user}): wait for one to stop after "
                    f"{s.idle_stop_seconds:g} s idle, suspend one (interlock compute suspend "
                    f"{mine[0].id}), or raise compute.max_active_sessions_per_user"
                )
        candidates = [
            self._candidate(name, request, existing, running) for name in self._fleet.order
        ]
        choice = choose(
            candidates,
            policy=policy,  # type: ignore[arg-type]  # checked above
            pinned=request.provider,
            region=request.region,
            expected_run_seconds=s.expected_run_seconds,
        )
        limit = s.max_concurrent_runs_per_user
        if not limit:
            return Plan(request, choice)
        slot = ids.new_id("slot")
        now = self._clock()
        in_progress = await self._store.claim_compute_run_slot(
            slot_id=slot,
            sandbox_id=request.sandbox_id,
            end_user_id=request.end_user_id,
            limit=limit,
            now=at(now),
            unplaced_until=at(now + UNPLACED_SLOT_SECONDS),
        )
        if in_progress >= limit:
            raise ResourceExhausted(
                f"end user {request.end_user_id!r} has {in_progress} runs on self-hosted "
                f"runtimes in progress (limit {limit}): wait for one "
                "to finish, or raise compute.max_concurrent_runs_per_user"
            )
        return Plan(request, choice, slot=slot)

    def abandon(self, plan: Plan) -> None:
        """Give back a plan's run slot without running (admission refused later). Idempotent.

        The slot leaves the store in the background (the caller cannot wait); until it
        has, the end user has one run fewer, never one more."""
        if plan.released:
            return
        plan.released = True
        if plan.slot:
            task = asyncio.get_running_loop().create_task(self._give_back(plan.slot))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def _give_back(self, slot: str) -> None:
        try:
            await self._store.release_compute_run_slot(slot)
        except Exception:  # it stops counting once its unplaced time is up
            log.exception("compute_slot_release_failed", slot=slot)

    def _candidate(
        self,
        name: str,
        request: PlacementRequest,
        existing: ComputeSessionRecord | None,
        running: list[ComputeSessionRecord],
    ) -> Candidate:
        provider = self._fleet.providers[name]
        pause = (
            self._pauses.find(request.sandbox_id, request.end_user_id, request.runtime, name)
            if self._pauses is not None
            else None
        )
        status: Existing = None
        if (
            existing is not None
            and existing.provider == name
            and existing.status in ("running", "suspended", "archived")
        ):
            status = existing.status
        compute_pause = pause is not None and pause.scope == "compute_provider"
        return Candidate(
            name=name,
            capabilities=provider.capabilities,
            price=provider.price,
            healthy=self._fleet.breakers[name].available(),
            paused_by=pause.describe() if pause is not None and compute_pause else "",
            running=sum(1 for r in running if r.provider == name),
            capacity=self._settings.capacity.get(name, 0),
            existing=status,
            cold_start_seconds=self._fleet.cold_start_seconds[name],
            resume_seconds=self._fleet.resume_seconds[name],
        )

    async def acquire(
        self,
        plan: Plan,
        run_id: str,
        on_session: Callable[[ComputeSessionRecord], Awaitable[None]] | None = None,
    ) -> Lease:
        """A running session for the plan's key on the chosen provider, for run ``run_id``.

        ``on_session`` is called with the session's record once the key's turn
        has come and before the runtime is started or resumed: the moment to
        open what the runtime reaches at start (the run's MCP grant on the
        session's token).

        Waits while another run of the same key holds it, in this process or another
        sharing the store. ComputeError when the
        provider cannot start it (its breaker counts the failure); the caller
        still calls :meth:`release` with the plan (see :meth:`abandon`).
        """
        req = plan.request
        plan.run_id = run_id
        if plan.slot:
            # From now on the slot lasts as long as the run runs (on whichever process).
            await self._store.place_compute_run_slot(plan.slot, run_id)
        started = self._clock()
        lock = self._fleet.lock(req.sandbox_id, req.end_user_id, req.agent_key)
        await lock.acquire()
        try:
            lease = await self._ensure(plan, run_id, started, lock, on_session)
        except BaseException:
            lock.release()
            raise
        return lease

    async def _ensure(
        self,
        plan: Plan,
        run_id: str,
        started: float,
        lock: asyncio.Lock,
        on_session: Callable[[ComputeSessionRecord], Awaitable[None]] | None,
    ) -> Lease:
        """Start (or resume) the key's session on the chosen provider and record where the
        run was placed; the key's lock is held."""
        req = plan.request
        name = plan.choice.provider
        record, spec = await self._session_for(plan, run_id)
        if on_session is not None:
            await on_session(record)
        plan.metered = (record.id, started)
        was = record.status
        session, endpoint, ready = await self._fleet.start(name, record, spec)
        record = await self._store.update_compute_session(
            record.id,
            status="running",
            external_id=session.external_id,
            endpoint=endpoint.base_url,
            region=session.region or record.region,
            tags=tags(req, run_id),
        )
        await self._store.record_placement(
            Placement(
                run_id=run_id,
                sandbox_id=req.sandbox_id,
                compute_session_id=record.id,
                provider=name,
                policy=plan.choice.policy,
                reason=plan.choice.reason,
                candidates=[v.as_dict() for v in plan.choice.verdicts],
                ready_seconds=round(ready, 3),
                created_at=at(self._clock()),
            )
        )
        log.info(
            "compute_placed",
            run_id=run_id,
            provider=name,
            session=record.id,
            was=was,
            ready_seconds=round(ready, 3),
            reason=plan.choice.reason,
        )
        access = RuntimeAccess(
            base_url=endpoint.base_url.rstrip("/"),
            headers=dict(endpoint.headers),
            api_key=record.api_key,
            compute_session_id=record.id,
        )
        return Lease(plan, record, self._fleet.providers[name], access, lock)

    async def _session_for(
        self, plan: Plan, run_id: str
    ) -> tuple[ComputeSessionRecord, SessionSpec]:
        """The key's session record for the plan, claimed for ``run_id``, and the runtime's
        spec of it: the stored one when it is on the chosen provider with an unchanged
        spec, else (the old one retired) a new one.

        While a run of another process holds the session, waits for it (polling the
        store: the claim is freed when that run ends, or stops counting once its
        process died and its lease was taken over)."""
        req = plan.request
        name = plan.choice.provider
        wait = _CLAIM_FIRST_WAIT
        while True:
            record = await self._store.find_compute_session(
                req.sandbox_id, req.end_user_id, req.agent_key
            )
            if record is None:
                made = await self._new_session(req, name, run_id)
                if made is not None:
                    return made
                continue  # another process made it meanwhile: its run goes first
            if not await self._store.claim_compute_session(record.id, run_id):
                await asyncio.sleep(wait)
                wait = min(wait * 2, _CLAIM_LONGEST_WAIT)
                continue
            record = await self._store.get_compute_session(record.id)  # as claimed
            if record.provider != name:
                await self._fleet.retire(record, f"the run was placed on {name}")
                continue
            spec = await self._fleet.spec(req, record.id, record.api_key, record.mcp_token)
            if fingerprint(spec) == record.spec_fingerprint:
                return record, spec
            await self._fleet.retire(record, "the runtime's configuration changed")

    async def _new_session(
        self, req: PlacementRequest, name: str, run_id: str
    ) -> tuple[ComputeSessionRecord, SessionSpec] | None:
        """Record a new session for the key on provider ``name`` (fresh id and tokens),
        serving ``run_id``; None when another process recorded the key's session first."""
        session_id = ids.new_id("cs")
        api_key = secrets.token_urlsafe(32)
        mcp_token = secrets.token_urlsafe(32)
        spec = await self._fleet.spec(req, session_id, api_key, mcp_token)
        try:
            record = await self._store.create_compute_session(
                session_id=session_id,
                sandbox_id=req.sandbox_id,
                end_user_id=req.end_user_id,
                agent_key=req.agent_key,
                runtime=req.runtime,
                provider=name,
                region=req.region,
                spec_fingerprint=fingerprint(spec),
                api_key=api_key,
                mcp_token=mcp_token,
                tags=tags(req, run_id),
                now=at(self._clock()),
                # Exact across replicas (plan()'s check is this process's early answer).
                max_active_per_user=self._settings.max_active_sessions_per_user,
                busy_run_id=run_id,
            )
        except AlreadyExists:
            return None
        return record, spec

    async def release(self, lease: Lease | None, plan: Plan) -> ComputeCharge | None:
        """End a run's hold: stamp the idle timer, give back the session's claim, the slot
        and the key's lock, and return the run's compute charge.

        The meter runs from the start of :meth:`acquire` — a provider bills the start
        too — so a run cut off while its runtime was starting (its ceiling, a pause,
        the client) is charged for those seconds; None when it never reached a session.
        """
        slot = "" if plan.released else plan.slot
        plan.released = True
        try:
            if plan.metered is None:
                return None
            session_id, started = plan.metered
            provider = self._fleet.providers[plan.choice.provider]
            now = self._clock()
            # Billed to the millisecond; the cost is of exactly the seconds recorded.
            seconds = round(max(0.0, now - started), 3)
            await self._store.update_compute_session(
                session_id, add_active_seconds=seconds, last_active_at=at(now)
            )
            return ComputeCharge(
                provider=provider.name,
                seconds=seconds,
                cost_usd=seconds * provider.price.active_usd_per_second,
                price_version=provider.price.price_version,
                compute_session_id=session_id,
            )
        finally:
            try:
                if plan.run_id:
                    await self._store.release_compute_session(plan.run_id)
                if slot:
                    await self._store.release_compute_run_slot(slot)
            finally:
                if lease is not None:
                    lease.lock.release()

    # ---- operating sessions (the fleet's) ------------------------------------------

    async def reconcile(self) -> int:
        """Correct the store's sessions from what each provider reports (see
        :meth:`Fleet.reconcile`); how many records changed."""
        return await self._fleet.reconcile()

    async def suspend(self, session_id: str) -> ComputeSessionRecord:
        """Stop a running session now (waits for a run in progress), keeping its state."""
        return await self._fleet.suspend(session_id)

    async def resume(self, session_id: str) -> ComputeSessionRecord:
        """Start a suspended or archived session again (ahead of a run)."""
        return await self._fleet.resume(session_id)

    async def destroy(self, session_id: str) -> ComputeSessionRecord:
        """Delete a session and its state at its provider (waits for a run in progress)."""
        return await self._fleet.destroy(session_id)

    async def reap(self) -> ReapReport:
        """One pass: suspend idle sessions, archive long-suspended ones, destroy failed ones."""
        return await self._fleet.reap()

    async def probe(self) -> None:
        """Ask every provider whether it answers; feed its circuit breaker."""
        await self._fleet.probe()

    async def health(self) -> list[ProviderHealth]:
        """Each provider's breaker, load and measured start times."""
        return await self._fleet.health()
