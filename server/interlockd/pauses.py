"""Kill switches in force, kept in memory for admission and watched for changes.

Admission must not cost a database round trip per run, and a pause must reach
runs already in flight: the board holds the pauses of the store, refreshed at
once when this process changes one and every ``refresh_seconds`` otherwise (so
a pause set through another replica lands within that time), and tells its
listener which pauses are new so it can end the runs they cover.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from interlockd.errors import FailedPrecondition
from interlockd.store.base import Pause, Store

log = structlog.get_logger(__name__)


def applies(
    pause: Pause, sandbox_id: str, end_user_id: str, provider: str, compute_provider: str = ""
) -> bool:
    """Whether ``pause`` covers a run with these coordinates."""
    if pause.scope == "global":
        return True
    if pause.sandbox_id and pause.sandbox_id != sandbox_id:
        return False
    if pause.scope == "end_user":
        return pause.target == end_user_id
    if pause.scope == "agent_provider":
        return pause.target == provider
    return bool(compute_provider) and pause.target == compute_provider


class PauseBoard:
    """The pauses in force; ``check`` refuses runs they cover."""

    def __init__(
        self,
        store: Store,
        *,
        refresh_seconds: float = 1.0,
        on_new: Callable[[list[Pause]], object] | None = None,
    ) -> None:
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._on_new = on_new
        self._pauses: list[Pause] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def pauses(self) -> list[Pause]:
        return list(self._pauses)

    def notify(self, on_new: Callable[[list[Pause]], object]) -> None:
        """Report pauses not seen before to ``on_new`` (the runs they stop), from now on."""
        self._on_new = on_new

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="pause-board")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Reload from the store; report pauses not seen before to the listener."""
        current = await self._store.list_pauses()
        known = {(p.scope, p.sandbox_id, p.target) for p in self._pauses}
        new = [p for p in current if (p.scope, p.sandbox_id, p.target) not in known]
        self._pauses = current
        if new and self._on_new is not None:
            self._on_new(new)

    def find(
        self, sandbox_id: str, end_user_id: str, provider: str, compute_provider: str = ""
    ) -> Pause | None:
        """The first pause that covers a run with these coordinates, if any."""
        for pause in self._pauses:
            if applies(pause, sandbox_id, end_user_id, provider, compute_provider):
                return pause
        return None

    def check(
        self, sandbox_id: str, end_user_id: str, provider: str, compute_provider: str = ""
    ) -> None:
        """FailedPrecondition naming the first pause that covers the run, if any."""
        pause = self.find(sandbox_id, end_user_id, provider, compute_provider)
        if pause is not None:
            raise FailedPrecondition(
                f"refused by {pause.describe()}; runs resume when it is cleared"
            )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # a store hiccup must not end the watcher
                log.exception("pause_refresh_failed")
