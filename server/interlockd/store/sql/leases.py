"""Runs left running: leases renewed by their process, taken over when it stops, or all
interrupted at the start of a process alone on its store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlockd.store.sql import budgets
from interlockd.store.sql.core import SqlCore
from interlockd.store.sql.rows import now_us, to_us
from interlockd.store.sql.tables import RUNS

if TYPE_CHECKING:
    from datetime import datetime

    from interlockd.store.base import Run


class SqlLeases(SqlCore):
    """The lease half of :class:`~interlockd.store.base.RunStore`."""

    async def interrupt_running_runs(self) -> int:
        async with self._transaction() as db:
            await budgets.release_held(db, "status = 'running'")
            return await db.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error_code = 'ABORTED', "
                "error_message = ?, lease_expires_at = NULL WHERE status = 'running'",
                (now_us(), _INTERRUPTED),
            )

    async def renew_leases(self, owner: str, expires_at: datetime) -> set[str]:
        if not owner:
            raise ValueError("renew_leases needs the owner's id, not ''")
        async with self._transaction() as db:
            rows = await db.fetch(
                "UPDATE runs SET lease_expires_at = ? "
                "WHERE lease_owner = ? AND status = 'running' RETURNING id",
                (to_us(expires_at), owner),
            )
        return {r["id"] for r in rows}

    async def expire_leases(self, now: datetime) -> list[Run]:
        # One statement: a row is updated (and returned) once, whoever sweeps with us.
        async with self._transaction() as db:
            # Their reservations go back first (the same rows: same condition, same now).
            await budgets.release_held(
                db, "status = 'running' AND lease_expires_at < ?", (to_us(now),)
            )
            rows = await db.fetch(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error_code = 'ABORTED', "
                "error_message = ?, lease_expires_at = NULL "
                "WHERE status = 'running' AND lease_expires_at < ? "
                f"RETURNING {RUNS.columns}",
                (now_us(), _LEASE_LOST, to_us(now)),
            )
            if rows:
                # Their tokens open nothing any more, on any process.
                await db.executemany(
                    "DELETE FROM tool_grants WHERE run_id = ?", [(r["id"],) for r in rows]
                )
        expired = []
        for row in rows:
            keys = await self._sandbox_keys(row["sandbox_id"])
            expired.append(RUNS.load(row, keys))
        return expired


_INTERRUPTED = "interlockd stopped while this turn was running; what it recorded is kept"
_LEASE_LOST = (
    "the interlockd process running this turn stopped renewing its lease (it died or lost "
    "the store); what it recorded is kept"
)
