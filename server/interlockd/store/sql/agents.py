"""Saved agents."""

from __future__ import annotations

from typing import Any

from interlockd.errors import (
    NotFound,
)
from interlockd.store.base import (
    AgentStore,
    SavedAgent,
    SpendLimits,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
    SqlCore,
)
from interlockd.store.sql.rows import (
    now_us,
)
from interlockd.store.sql.tables import (
    AGENTS,
)


class SqlAgents(SqlCore, AgentStore):
    """Saved agents by slug."""

    async def put_agent(
        self,
        sandbox_id: str,
        slug: str,
        settings: dict[str, Any],
        budget: SpendLimits | None = None,
    ) -> SavedAgent:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = AGENTS.seal(keys, {"slug": slug}, "settings", settings, json=True)
        budget = budget or SpendLimits()
        now = now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO agents (sandbox_id, slug, settings_sealed, created_at, "
                    "updated_at, usd_per_day, usd_per_month) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (sandbox_id, slug) "
                    "DO UPDATE SET settings_sealed = excluded.settings_sealed, "
                    "updated_at = excluded.updated_at, usd_per_day = excluded.usd_per_day, "
                    "usd_per_month = excluded.usd_per_month",
                    (
                        sandbox_id,
                        slug,
                        sealed,
                        now,
                        now,
                        budget.usd_per_day,
                        budget.usd_per_month,
                    ),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_agent(sandbox_id, slug)

    async def get_agent(self, sandbox_id: str, slug: str) -> SavedAgent:
        rows = await self._fetch(
            f"SELECT {AGENTS.columns} FROM agents WHERE sandbox_id = ? AND slug = ?",
            (sandbox_id, slug),
        )
        if not rows:
            raise NotFound(f"agent {slug!r} not found")
        return await self._opened(sandbox_id, lambda keys: AGENTS.load(rows[0], keys))

    async def list_agents(self, sandbox_id: str) -> list[SavedAgent]:
        rows = await self._fetch(
            f"SELECT {AGENTS.columns} FROM agents WHERE sandbox_id = ? ORDER BY slug",
            (sandbox_id,),
        )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [AGENTS.load(r, keys) for r in rows])

    async def delete_agent(self, sandbox_id: str, slug: str) -> None:
        async with self._transaction() as db:
            changed = await db.execute(
                "DELETE FROM agents WHERE sandbox_id = ? AND slug = ?", (sandbox_id, slug)
            )
            if changed == 0:
                raise NotFound(f"agent {slug!r} not found")
