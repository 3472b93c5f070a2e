"""The compute providers as the scheduler keeps them, and the sessions on them.

Owns each provider's circuit breaker and measured start times, the per-key
locks (runs of one key take turns; an operator's suspend or destroy waits for
the run in progress), starting a session (create or resume, through the
breaker), retiring one, the operator's suspend / resume / destroy, and the
background passes: reconcile with what the providers report, reap idle and
failed sessions, probe the providers, report their health. Placing a run is the
scheduler's (compute/scheduler.py), which keeps its sessions through this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from interlockd.compute.base import ComputeError, ComputeProvider, ComputeSession, Endpoint
from interlockd.compute.breaker import CircuitBreaker
from interlockd.compute.placement import (
    PlacementRequest,
    ProviderHealth,
    ReapReport,
    SchedulerSettings,
)
from interlockd.compute.sessions import as_compute_error, at, snapshot
from interlockd.errors import InvalidArgument, NotFound
from interlockd.store.base import ComputeSessionRecord, ComputeStatus, Store
from interlockd.vocabulary import RuntimeContext, SessionSpec

log = structlog.get_logger(__name__)

#: The session spec of a runtime (by name) for a new session's context: supplied by
#: whoever knows the runtimes (the daemon asks the runtime's backend).
Describe = Callable[[str, RuntimeContext], Awaitable[SessionSpec]]

#: Weight of the newest measurement in a provider's start-time averages.
_EWMA = 0.3


class Fleet:
    """The configured compute providers and the sessions kept on them."""

    def __init__(
        self,
        store: Store,
        providers: Sequence[ComputeProvider],
        describe: Describe,
        settings: SchedulerSettings,
        mcp_url: Callable[[], str],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        #: By name, and their names in order of preference.
        self.providers = {p.name: p for p in providers}
        self.order = [p.name for p in providers]
        self._describe = describe
        self._settings = settings
        self._mcp_url = mcp_url
        self._clock = clock
        self.breakers = {
            name: CircuitBreaker(
                failures=settings.breaker_failures,
                cooldown_seconds=settings.breaker_cooldown_seconds,
                clock=clock,
            )
            for name in self.order
        }
        #: Measured start times by provider (moving averages, seeded from the capabilities).
        self.cold_start_seconds = {p.name: p.capabilities.cold_start_seconds for p in providers}
        self.resume_seconds = {p.name: p.capabilities.resume_seconds for p in providers}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def provider(self, name: str) -> ComputeProvider:
        try:
            return self.providers[name]
        except KeyError:
            raise InvalidArgument("provider", f"unknown compute provider {name!r}") from None

    def lock(self, sandbox_id: str, end_user_id: str, agent_key: str) -> asyncio.Lock:
        """The lock of a key's session: held by the run using it."""
        return self._locks.setdefault((sandbox_id, end_user_id, agent_key), asyncio.Lock())

    async def spec(
        self, req: PlacementRequest, session_id: str, api_key: str, mcp_token: str
    ) -> SessionSpec:
        """The runtime's description of the session."""
        return await self._describe(req.runtime, self._context(req, session_id, api_key, mcp_token))

    async def start(
        self, name: str, record: ComputeSessionRecord, spec: SessionSpec
    ) -> tuple[ComputeSession, Endpoint, float]:
        """Create or resume ``record``'s session on provider ``name`` and fetch its
        endpoint, through the provider's breaker; return them and the seconds it took
        (also fed to the provider's measured start times). ComputeError on failure; a
        session that was being created is then marked failed for the reaper."""
        provider = self.providers[name]
        breaker = self.breakers[name]
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
            self.resume_seconds[name] += _EWMA * (seconds - self.resume_seconds[name])
        elif was in ("creating", "archived"):
            self.cold_start_seconds[name] += _EWMA * (seconds - self.cold_start_seconds[name])

    async def retire(self, record: ComputeSessionRecord, why: str) -> None:
        """Let go of a session the key no longer uses: destroy it now if its provider
        answers, else mark it failed for the reaper to destroy later."""
        log.info("compute_session_retired", session=record.id, provider=record.provider, why=why)
        provider = self.providers.get(record.provider)
        if provider is not None and record.external_id:
            try:
                await provider.destroy(snapshot(record))
            except Exception as exc:
                log.warning("compute_destroy_failed", session=record.id, error=str(exc))
                await self._store.update_compute_session(record.id, status="failed")
                return
        await self._store.update_compute_session(record.id, status="destroyed", endpoint="")

    def _lock_of(self, record: ComputeSessionRecord) -> asyncio.Lock:
        return self.lock(record.sandbox_id, record.end_user_id, record.agent_key)

    async def suspend(self, session_id: str) -> ComputeSessionRecord:
        """Stop a running session now (waits for a run in progress), keeping its state."""
        record = await self._store.get_compute_session(session_id)
        async with self._lock_of(record):
            return await self._suspend(await self._store.get_compute_session(session_id))

    async def _suspend(self, record: ComputeSessionRecord) -> ComputeSessionRecord:
        if record.status != "running":
            return record
        provider = self.providers.get(record.provider)
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
            spec = await self.spec(req, record.id, record.api_key, record.mcp_token)
            session, endpoint, _ = await self.start(record.provider, record, spec)
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

    async def reconcile(self) -> int:
        """Correct what the store believes about sessions from what each provider reports
        (after a restart, local runtimes are stopped; a session deleted out of band is
        gone). Return how many records changed. A provider that does not answer is
        left alone."""
        changed = 0
        for name, provider in self.providers.items():
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
            provider = self.providers.get(record.provider)
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
            provider = self.providers.get(record.provider)
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
            breaker = self.breakers[name]
            try:
                healthy = await asyncio.wait_for(self.providers[name].health(), timeout=10.0)
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

        await asyncio.gather(*(one(name) for name in self.order))

    async def health(self) -> list[ProviderHealth]:
        """Each provider's breaker, load and measured start times."""
        running = await self._store.list_compute_sessions(statuses=("creating", "running"))
        return [
            ProviderHealth(
                name=name,
                healthy=self.breakers[name].state == "closed",
                breaker=self.breakers[name].state,
                last_error=self.breakers[name].last_error,
                running=sum(1 for r in running if r.provider == name),
                capacity=self._settings.capacity.get(name, 0),
                cold_start_seconds=round(self.cold_start_seconds[name], 3),
                resume_seconds=round(self.resume_seconds[name], 3),
            )
            for name in self.order
        ]
