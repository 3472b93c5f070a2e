"""Tool grants in SQL: a run token's hash, its run, and the sealed address of its owner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlockd.errors import NotFound
from interlockd.store.base import StoredGrant, ToolGrantStore
from interlockd.store.sql.core import ConstraintViolation, SqlCore
from interlockd.store.sql.rows import to_time, to_us

if TYPE_CHECKING:
    from datetime import datetime

    from interlockd.store.base import GrantKind


class SqlToolGrants(SqlCore, ToolGrantStore):
    """Run tokens by hash."""

    async def put_tool_grant(
        self,
        token_hash: str,
        *,
        sandbox_id: str,
        run_id: str,
        kind: GrantKind,
        owner_url: str,
        expires_at: datetime,
    ) -> None:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = keys.seal(owner_url, table="tool_grants", row=token_hash, column="owner_url")
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO tool_grants (token_hash, sandbox_id, run_id, kind, scope_sealed, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO UPDATE SET "
                    "sandbox_id = excluded.sandbox_id, run_id = excluded.run_id, "
                    "kind = excluded.kind, scope_sealed = excluded.scope_sealed, "
                    "expires_at = excluded.expires_at",
                    (token_hash, sandbox_id, run_id, kind, sealed, to_us(expires_at)),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise

    async def find_tool_grant(
        self, token_hash: str, kind: GrantKind, now: datetime
    ) -> StoredGrant | None:
        rows = await self._fetch(
            "SELECT sandbox_id, run_id, kind, scope_sealed, expires_at FROM tool_grants "
            "WHERE token_hash = ? AND kind = ? AND expires_at > ?",
            (token_hash, kind, to_us(now)),
        )
        if not rows:
            return None
        row = rows[0]
        owner_url = await self._opened(
            row["sandbox_id"],
            lambda keys: keys.open(
                row["scope_sealed"], table="tool_grants", row=token_hash, column="owner_url"
            ),
        )
        return StoredGrant(
            row["sandbox_id"], row["run_id"], row["kind"], owner_url, to_time(row["expires_at"])
        )

    async def delete_tool_grant(self, token_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM tool_grants WHERE token_hash = ?", (token_hash,))

    async def delete_expired_tool_grants(self, now: datetime) -> int:
        async with self._transaction() as db:
            return await db.execute("DELETE FROM tool_grants WHERE expires_at <= ?", (to_us(now),))
