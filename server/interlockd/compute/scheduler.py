"""The compute scheduler: places self-hosted runtimes, keeps them warm or asleep, bills them.

One long-lived compute session per (sandbox, end user, agent key) — the
saved agent's slug, or ``<provider>/<model>`` for runs without one — is kept
in the store (:class:`ComputeSessionRecord`) with its provider, external id,
status, endpoint, secrets and tags. A run on a runtime backend goes:

1. :meth:`ComputeScheduler.plan` (before the run is admitted, nothing stored):
   the per-user caps, then a :class:`~interlockd.compute.policy.Choice` of
   provider from a snapshot of the providers — health (circuit breakers fed by
   probes and by session starts), compute-provider pauses, capacity, where the
   key's session is, measured start times.
2. :meth:`ComputeScheduler.acquire` (the run's clock is running): takes the
   key's lock — runs of one key take turns, since a runtime holds one run's
   tools at a time — retires a session on another provider or with a changed
   spec, creates or resumes the session, fetches its endpoint (tokens may
   change on every start), records the placement and returns a :class:`Lease`.
3. :meth:`ComputeScheduler.release`: the seconds from acquire to release are
   the run's active compute seconds; it returns their :class:`ComputeCharge`
   for the ledger and stamps the session's idle timer.

A background reaper suspends sessions idle for ``idle_stop_seconds``, archives
those suspended for ``archive_after_seconds`` and destroys failed ones; a
health loop probes each provider. Time comes from an injected clock (epoch
seconds) so all of it is testable without waiting.

Locks and counters are this process's: several replicas sharing a store keep
one session per key (the store's unique index) but each applies the caps to
its own runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from interlockd import ids
from interlockd.compute.base import ComputeError, ComputeProvider, ComputeSession, Endpoint
from interlockd.compute.breaker import CircuitBreaker
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
from interlockd.compute.sessions import as_compute_error, at, fingerprint, snapshot, tags
from interlockd.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from interlockd.pauses import PauseBoard
from interlockd.store.base import ComputeSessionRecord, ComputeStatus, Placement, Store
from interlockd.vocabulary import RuntimeAccess, RuntimeContext, SessionSpec

log = structlog.get_logger(__name__)

#: The session spec of a runtime (by name) for a new session's context: supplied by
#: whoever knows the runtimes (the daemon asks the runtime's backend).
Describe = Callable[[str, RuntimeContext], Awaitable[SessionSpec]]

#: Weight of the newest measurement in a provider's start-time averages.
_EWMA = 0.3


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
        self._providers = {p.name: p for p in providers}
        self._order = [p.name for p in providers]
        self._describe = describe
        self._settings = settings or SchedulerSettings()
        self._pauses = pauses
        self._mcp_url = mcp_url
        self._clock = clock
        self._breakers = {
            name: CircuitBreaker(
                failures=self._settings.breaker_failures,
                cooldown_seconds=self._settings.breaker_cooldown_seconds,
                clock=clock,
            )
            for name in self._order
        }
        self._cold = {p.name: p.capabilities.cold_start_seconds for p in providers}
        self._resume = {p.name: p.capabilities.resume_seconds for p in providers}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._user_runs: dict[tuple[str, str], int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def providers(self) -> list[str]:
        """Configured provider names, in order of preference."""
        return list(self._order)

    def provider(self, name: str) -> ComputeProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise InvalidArgument("provider", f"unknown compute provider {name!r}") from None

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
        for provider in self._providers.values():
            try:
                await provider.aclose()
            except Exception:
                log.exception("compute_provider_close_failed", provider=provider.name)

    async def reconcile(self) -> int:
        """Correct what the store believes about sessions from what each provider reports
        (after a restart, local runtimes are stopped; a session deleted out of band is
        gone). Return how many records changed. A provider that does not answer is
        left alone."""
        changed = 0
        for name, provider in self._providers.items():
            try:
                reported = {s.external_id: s for s in await provider.list()}
            except Exception as exc:
                log.warning("compute_reconcile_failed", provider=name, error=str(exc))
                continue
            records = await self._store.list_compute_sessions(
                provider=name, statuses=("creating", "running", "suspended", "archived")
            )
            for record in records:
                if not record.external_id:
                    continue
                seen = reported.get(record.external_id)
                status: ComputeStatus | None = None
                if seen is None:
                    status = "failed"  # gone at its provider: the reaper forgets it
                elif seen.status != record.status and seen.status in (
                    "running",
                    "suspended",
                    "archived",
                    "failed",
                ):
                    status = seen.status
                if status is not None:
                    await self._store.update_compute_session(record.id, status=status)
                    changed += 1
                    log.info(
                        "compute_session_reconciled",
                        session=record.id,
                        provider=name,
                        was=record.status,
                        now=status,
                    )
        return changed

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
        """Admit and place a run, storing nothing; the plan holds a run slot of the end
        user until :meth:`release` or :meth:`abandon`.

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
        candidates = [self._candidate(name, request, existing, running) for name in self._order]
        choice = choose(
            candidates,
            policy=policy,  # type: ignore[arg-type]  # checked above
            pinned=request.provider,
            region=request.region,
            expected_run_seconds=s.expected_run_seconds,
        )
        user = (request.sandbox_id, request.end_user_id)
        in_progress = self._user_runs.get(user, 0)
        if s.max_concurrent_runs_per_user and in_progress >= s.max_concurrent_runs_per_user:
            raise ResourceExhausted(
                f"end user {request.end_user_id!r} has {in_progress} runs on self-hosted "
                f"runtimes in progress (limit {s.max_concurrent_runs_per_user}): wait for one "
                "to finish, or raise compute.max_concurrent_runs_per_user"
            )
        self._user_runs[user] = in_progress + 1
        return Plan(request, choice)

    def abandon(self, plan: Plan) -> None:
        """Give back a plan's run slot without running (admission refused later). Idempotent."""
        if plan.released:
            return
        plan.released = True
        user = (plan.request.sandbox_id, plan.request.end_user_id)
        left = self._user_runs.get(user, 1) - 1
        if left > 0:
            self._user_runs[user] = left
        else:
            self._user_runs.pop(user, None)

    def _candidate(
        self,
        name: str,
        request: PlacementRequest,
        existing: ComputeSessionRecord | None,
        running: list[ComputeSessionRecord],
    ) -> Candidate:
        provider = self._providers[name]
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
            healthy=self._breakers[name].available(),
            paused_by=pause.describe() if pause is not None and compute_pause else "",
            running=sum(1 for r in running if r.provider == name),
            capacity=self._settings.capacity.get(name, 0),
            existing=status,
            cold_start_seconds=self._cold[name],
            resume_seconds=self._resume[name],
        )

    async def acquire(
        self,
        plan: Plan,
        run_id: str,
        on_session: Callable[[ComputeSessionRecord], None] | None = None,
    ) -> Lease:
        """A running session for the plan's key on the chosen provider, for run ``run_id``.

        ``on_session`` is called with the session's record once the key's turn
        has come and before the runtime is started or resumed: the moment to
        open what the runtime reaches at start (the run's MCP grant on the
        session's token).

        Waits while another run of the same key holds it. ComputeError when the
        provider cannot start it (its breaker counts the failure); the caller
        still calls :meth:`release` with the plan (see :meth:`abandon`).
        """
        req = plan.request
        started = self._clock()
        lock = self._locks.setdefault(
            (req.sandbox_id, req.end_user_id, req.agent_key), asyncio.Lock()
        )
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
        on_session: Callable[[ComputeSessionRecord], None] | None,
    ) -> Lease:
        req = plan.request
        name = plan.choice.provider
        record = await self._store.find_compute_session(
            req.sandbox_id, req.end_user_id, req.agent_key
        )
        spec: SessionSpec | None = None
        if record is not None and record.provider != name:
            await self._retire(record, f"the run was placed on {name}")
            record = None
        if record is not None:
            spec = await self._spec(req, record.id, record.api_key, record.mcp_token)
            if fingerprint(spec) != record.spec_fingerprint:
                await self._retire(record, "the runtime's configuration changed")
                record = None
        if record is None:
            session_id = ids.new_id("cs")
            api_key = secrets.token_urlsafe(32)
            mcp_token = secrets.token_urlsafe(32)
            spec = await self._spec(req, session_id, api_key, mcp_token)
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
                )
            except AlreadyExists:
                # Another replica created it meanwhile: the next run uses it.
                raise ComputeError(
                    name, "another replica is starting this session; retry"
                ) from None
        assert spec is not None
        if on_session is not None:
            on_session(record)
        plan.metered = (record.id, started)
        was = record.status
        session, endpoint, ready = await self._start(name, record, spec)
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
        return Lease(plan, record, self._providers[name], access, lock)

    async def _spec(
        self, req: PlacementRequest, session_id: str, api_key: str, mcp_token: str
    ) -> SessionSpec:
        """The runtime's description of the session."""
        return await self._describe(req.runtime, self._context(req, session_id, api_key, mcp_token))

    async def _start(
        self, name: str, record: ComputeSessionRecord, spec: SessionSpec
    ) -> tuple[ComputeSession, Endpoint, float]:
        """Create or resume ``record``'s session on provider ``name`` and fetch its
        endpoint, through the provider's breaker; return them and the seconds it took
        (also fed to the provider's measured start times). ComputeError on failure; a
        session that was being created is then marked failed for the reaper."""
        provider = self._providers[name]
        breaker = self._breakers[name]
        if not breaker.claim():
            raise ComputeError(name, f"unhealthy, not starting sessions ({breaker.last_error})")
        was = record.status
        t0 = self._clock()
        try:
            session = await provider.ensure(spec, record.external_id or None)
            endpoint = await provider.endpoint(session)
        except Exception as exc:
            error = as_compute_error(name, exc)
            breaker.failure(error.message)
            if was == "creating":
                await self._store.update_compute_session(record.id, status="failed")
            log.warning(
                "compute_start_failed", provider=name, session=record.id, error=error.message
            )
            raise error from exc
        except asyncio.CancelledError:
            # The run ended (its ceiling, a pause, the client) while the runtime was
            # starting: a new session may be half made; the reaper destroys it.
            if was == "creating":
                await asyncio.shield(self._store.update_compute_session(record.id, status="failed"))
            raise
        breaker.success()
        ready = self._clock() - t0
        self._measure(name, was, ready)
        return session, endpoint, ready

    async def release(self, lease: Lease | None, plan: Plan) -> ComputeCharge | None:
        """End a run's hold: stamp the idle timer, give back the slot and the key's lock,
        and return the run's compute charge.

        The meter runs from the start of :meth:`acquire` — a provider bills the start
        too — so a run cut off while its runtime was starting (its ceiling, a pause,
        the client) is charged for those seconds; None when it never reached a session.
        """
        self.abandon(plan)
        try:
            if plan.metered is None:
                return None
            session_id, started = plan.metered
            provider = self._providers[plan.choice.provider]
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
            if lease is not None:
                lease.lock.release()

    def _context(
        self, req: PlacementRequest, session_id: str, api_key: str, mcp_token: str
    ) -> RuntimeContext:
        return RuntimeContext(
            key=session_id,
            model=req.model,
            api_key=api_key,
            mcp_url=self._mcp_url(),
            mcp_token=mcp_token,
            labels={
                "sandbox_id": req.sandbox_id,
                "user_id": req.end_user_id,
                "agent_id": req.agent_id,
            },
        )

    def _measure(self, name: str, was: ComputeStatus, seconds: float) -> None:
        if was == "suspended":
            self._resume[name] += _EWMA * (seconds - self._resume[name])
        elif was in ("creating", "archived"):
            self._cold[name] += _EWMA * (seconds - self._cold[name])

    async def _retire(self, record: ComputeSessionRecord, why: str) -> None:
        """Let go of a session the key no longer uses: destroy it now if its provider
        answers, else mark it failed for the reaper to destroy later."""
        log.info("compute_session_retired", session=record.id, provider=record.provider, why=why)
        provider = self._providers.get(record.provider)
        if provider is not None and record.external_id:
            try:
                await provider.destroy(snapshot(record))
            except Exception as exc:
                log.warning("compute_destroy_failed", session=record.id, error=str(exc))
                await self._store.update_compute_session(record.id, status="failed")
                return
        await self._store.update_compute_session(record.id, status="destroyed", endpoint="")

    # ---- operating sessions ----------------------------------------------------------

    def _lock_of(self, record: ComputeSessionRecord) -> asyncio.Lock:
        return self._locks.setdefault(
            (record.sandbox_id, record.end_user_id, record.agent_key), asyncio.Lock()
        )

    async def suspend(self, session_id: str) -> ComputeSessionRecord:
        """Stop a running session now (waits for a run in progress), keeping its state."""
        record = await self._store.get_compute_session(session_id)
        async with self._lock_of(record):
            return await self._suspend(await self._store.get_compute_session(session_id))

    async def _suspend(self, record: ComputeSessionRecord) -> ComputeSessionRecord:
        if record.status != "running":
            return record
        provider = self._providers.get(record.provider)
        if provider is not None and provider.capabilities.suspend:
            await provider.suspend(snapshot(record))
        # A provider without suspend idles the session by itself: it no longer bills.
        return await self._store.update_compute_session(record.id, status="suspended", endpoint="")

    async def resume(self, session_id: str) -> ComputeSessionRecord:
        """Start a suspended or archived session again (ahead of a run)."""
        record = await self._store.get_compute_session(session_id)
        async with self._lock_of(record):
            record = await self._store.get_compute_session(session_id)
            if record.status in ("destroyed", "failed"):
                raise NotFound(f"compute session {session_id} is {record.status}")
            self.provider(record.provider)  # INVALID_ARGUMENT if no longer configured
            req = PlacementRequest(
                sandbox_id=record.sandbox_id,
                end_user_id=record.end_user_id,
                agent_key=record.agent_key,
                agent_id=record.tags.get("agent_id", ""),
                runtime=record.runtime,
                model=record.tags.get("model", ""),
            )
            spec = await self._spec(req, record.id, record.api_key, record.mcp_token)
            session, endpoint, _ = await self._start(record.provider, record, spec)
            return await self._store.update_compute_session(
                record.id,
                status="running",
                external_id=session.external_id,
                endpoint=endpoint.base_url,
                last_active_at=at(self._clock()),
            )

    async def destroy(self, session_id: str) -> ComputeSessionRecord:
        """Delete a session and its state at its provider (waits for a run in progress)."""
        record = await self._store.get_compute_session(session_id)
        async with self._lock_of(record):
            record = await self._store.get_compute_session(session_id)
            if record.status == "destroyed":
                return record
            provider = self.provider(record.provider)
            if record.external_id:
                await provider.destroy(snapshot(record))
            return await self._store.update_compute_session(
                record.id, status="destroyed", endpoint=""
            )

    # ---- background ------------------------------------------------------------------

    async def reap(self) -> ReapReport:
        """One pass: suspend idle sessions, archive long-suspended ones, destroy failed ones."""
        s = self._settings
        now = self._clock()
        suspended = archived = destroyed = 0
        for record in await self._store.list_compute_sessions(
            statuses=("running",), idle_since=at(now - s.idle_stop_seconds)
        ):
            lock = self._lock_of(record)
            if lock.locked():
                continue  # a run is using it (or waiting for it)
            try:
                async with lock:
                    await self._suspend(await self._store.get_compute_session(record.id))
                suspended += 1
                log.info(
                    "compute_session_idle_stopped", session=record.id, provider=record.provider
                )
            except Exception as exc:
                log.warning("compute_idle_stop_failed", session=record.id, error=str(exc))
        for record in await self._store.list_compute_sessions(
            statuses=("suspended",), idle_since=at(now - s.archive_after_seconds)
        ):
            provider = self._providers.get(record.provider)
            if (
                provider is None
                or not provider.capabilities.archive
                or self._lock_of(record).locked()
            ):
                continue
            try:
                async with self._lock_of(record):
                    await provider.archive(snapshot(record))
                    await self._store.update_compute_session(record.id, status="archived")
                archived += 1
                log.info("compute_session_archived", session=record.id, provider=record.provider)
            except Exception as exc:
                log.warning("compute_archive_failed", session=record.id, error=str(exc))
        for record in await self._store.list_compute_sessions(statuses=("failed",)):
            provider = self._providers.get(record.provider)
            if provider is None:
                continue
            try:
                if record.external_id:
                    await provider.destroy(snapshot(record))
                await self._store.update_compute_session(record.id, status="destroyed", endpoint="")
                destroyed += 1
            except Exception as exc:
                log.warning("compute_destroy_failed", session=record.id, error=str(exc))
        return ReapReport(suspended, archived, destroyed)

    async def probe(self) -> None:
        """Ask every provider whether it answers; feed its circuit breaker."""

        async def one(name: str) -> None:
            breaker = self._breakers[name]
            try:
                healthy = await asyncio.wait_for(self._providers[name].health(), timeout=10.0)
                error = "" if healthy else "health probe failed"
            except Exception as exc:
                healthy, error = False, f"health probe failed: {exc!r}"
            if healthy:
                if breaker.state != "closed":
                    log.info("compute_provider_recovered", provider=name)
                breaker.success()
            else:
                breaker.failure(error)
                log.warning("compute_provider_unhealthy", provider=name, state=breaker.state)

        await asyncio.gather(*(one(name) for name in self._order))

    async def health(self) -> list[ProviderHealth]:
        """Each provider's breaker, load and measured start times."""
        running = await self._store.list_compute_sessions(statuses=("creating", "running"))
        return [
            ProviderHealth(
                name=name,
                healthy=self._breakers[name].state == "closed",
                breaker=self._breakers[name].state,
                last_error=self._breakers[name].last_error,
                running=sum(1 for r in running if r.provider == name),
                capacity=self._settings.capacity.get(name, 0),
                cold_start_seconds=round(self._cold[name], 3),
                resume_seconds=round(self._resume[name], 3),
            )
            for name in self._order
        ]
