"""This process's hold on the runs it runs, and taking over the runs of processes that died.

Processes sharing a store (replicas, worker processes) cannot tell at start
which running runs are orphans, so each run is leased to the process running
it (:meth:`RunLeases.lease`, recorded by admission) for ``seconds``, and every
process beats every third of that: it renews its own leases and marks the
runs whose lease expired as interrupted (retrying their request_id resumes
them, on any replica). A process that finds one of its own runs gone from
its renewal (it was too slow to renew: a long pause, the store out of reach)
is told (``on_lost``) so it stops the turn rather than write over a run
another process has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from interlockd import ids
from interlockd.store.base import Lease, Run, Store

log = structlog.get_logger(__name__)


class RunLeases:
    """Leases for this process's runs, renewed, and the sweep of expired ones."""

    def __init__(
        self,
        store: Store,
        *,
        seconds: float,
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self.owner = ids.new_id("proc")
        self._store = store
        self._seconds = seconds
        self._on_lost: Callable[[set[str], float], object] | None = None
        self._on_expired: Callable[[list[Run]], Awaitable[object]] | None = None
        self._task: asyncio.Task[None] | None = None

    def notify(
        self,
        on_lost: Callable[[set[str], float], object],
        on_expired: Callable[[list[Run]], Awaitable[object]],
    ) -> None:
        """From now on, report lost leases (the turns to stop) and runs taken over."""
        self._on_lost = on_lost
        self._on_expired = on_expired

    def lease(self) -> Lease:
        """A lease for a run this process is about to run."""
        return Lease(self.owner, datetime.now(UTC) + timedelta(seconds=self._seconds))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="run-leases")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def beat(self) -> list[Run]:
        """Renew this process's leases, then take over expired runs; the runs taken over."""
        began = time.monotonic()
        held = await self._store.renew_leases(self.owner, self.lease().expires_at)
        if self._on_lost is not None:
            self._on_lost(held, began)
        expired = await self._store.expire_leases(datetime.now(UTC))
        await self._store.delete_expired_tool_grants(datetime.now(UTC))
        if expired:
            log.warning(
                "runs_taken_over",
                count=len(expired),
                runs=[run.id for run in expired],
                reason="their process stopped renewing its leases",
            )
            if self._on_expired is not None:
                await self._on_expired(expired)
        return expired

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._seconds / 3)
            try:
                await self.beat()
            except Exception:  # a store hiccup must not end the heartbeat
                log.exception("run_lease_beat_failed")
