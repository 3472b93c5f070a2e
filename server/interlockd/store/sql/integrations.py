"""Integrations: connections, their sealed credentials, connect flows."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from interlockd import ids
from interlockd.errors import (
    NotFound,
)
from interlockd.store.base import (
    ConnectFlow,
    FlowStatus,
    Integration,
    IntegrationKind,
    IntegrationStatus,
    IntegrationStore,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
    SqlCore,
)
from interlockd.store.sql.rows import (
    now_us,
)
from interlockd.store.sql.tables import (
    FLOWS,
    INTEGRATIONS,
)
from interlockd.store.sql.window import (
    insert_end_user,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from interlockd.store.sql.rows import Row


class SqlIntegrations(SqlCore, IntegrationStore):
    """Connections and connect flows."""

    async def create_integration(
        self,
        sandbox_id: str,
        *,
        kind: IntegrationKind,
        app: str,
        end_user_id: str,
        config: dict[str, Any],
        credentials: dict[str, Any],
    ) -> Integration:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        integration_id = ids.new_id("int")
        now = now_us()
        config_sealed = INTEGRATIONS.seal(keys, {"id": integration_id}, "config", config, json=True)
        credentials_sealed = keys.seal(
            orjson.dumps(credentials).decode(),
            table="integrations",
            row=integration_id,
            column="credentials",
        )
        async with self._transaction() as db:
            blind = await insert_end_user(db, keys, sandbox_id, end_user_id, now)
            await db.execute(
                "UPDATE integrations SET status = 'disconnected', "
                "status_reason = 'replaced by a new connection', updated_at = ? "
                "WHERE sandbox_id = ? AND app = ? AND end_user_id = ? AND status <> 'disconnected'",
                (now, sandbox_id, app, blind),
            )
            try:
                await db.execute(
                    "INSERT INTO integrations (id, sandbox_id, kind, app, end_user_id, status, "
                    "status_reason, config_sealed, credentials_sealed, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'active', '', ?, ?, ?, ?)",
                    (
                        integration_id,
                        sandbox_id,
                        kind,
                        app,
                        blind,
                        config_sealed,
                        credentials_sealed,
                        now,
                        now,
                    ),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_integration(sandbox_id, integration_id)

    async def _integration_rows(self, where: str, params: Sequence[Any]) -> list[Row]:
        return await self._fetch(
            f"SELECT {INTEGRATIONS.columns} FROM integrations WHERE {where}",
            params,
        )

    async def get_integration(self, sandbox_id: str, integration_id: str) -> Integration:
        rows = await self._integration_rows(
            "id = ? AND sandbox_id = ?", (integration_id, sandbox_id)
        )
        if not rows:
            raise NotFound(f"integration {integration_id} not found")
        return await self._opened(sandbox_id, lambda keys: INTEGRATIONS.load(rows[0], keys))

    async def list_integrations(
        self, sandbox_id: str, *, end_user_id: str | None = None, include_disconnected: bool = False
    ) -> list[Integration]:
        where = "sandbox_id = ?"
        params: list[Any] = [sandbox_id]
        if end_user_id is not None:
            where += " AND end_user_id IN ('', ?)"
            params.append(await self._blind_end_user(sandbox_id, end_user_id))
        if not include_disconnected:
            where += " AND status <> 'disconnected'"
        rows = await self._integration_rows(f"{where} ORDER BY created_at, id", params)
        if not rows:
            return []
        return await self._opened(
            sandbox_id, lambda keys: [INTEGRATIONS.load(r, keys) for r in rows]
        )

    async def read_integration_credentials(
        self, sandbox_id: str, integration_id: str
    ) -> dict[str, Any]:
        rows = await self._fetch(
            "SELECT credentials_sealed FROM integrations WHERE id = ? AND sandbox_id = ?",
            (integration_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"integration {integration_id} not found")
        sealed: bytes = rows[0]["credentials_sealed"]
        text = await self._opened(
            sandbox_id,
            lambda keys: keys.open(
                sealed, table="integrations", row=integration_id, column="credentials"
            ),
        )
        value: dict[str, Any] = orjson.loads(text)
        return value

    async def replace_integration_credentials(
        self, sandbox_id: str, integration_id: str, credentials: dict[str, Any]
    ) -> None:
        keys = await self._sandbox_keys(sandbox_id)
        sealed = keys.seal(
            orjson.dumps(credentials).decode(),
            table="integrations",
            row=integration_id,
            column="credentials",
        )
        async with self._transaction() as db:
            changed = await db.execute(
                "UPDATE integrations SET credentials_sealed = ?, updated_at = ? "
                "WHERE id = ? AND sandbox_id = ?",
                (sealed, now_us(), integration_id, sandbox_id),
            )
            if changed == 0:
                raise NotFound(f"integration {integration_id} not found")

    async def set_integration_status(
        self, sandbox_id: str, integration_id: str, status: IntegrationStatus, reason: str = ""
    ) -> Integration:
        async with self._transaction() as db:
            changed = await db.execute(
                "UPDATE integrations SET status = ?, status_reason = ?, updated_at = ? "
                "WHERE id = ? AND sandbox_id = ?",
                (status, reason, now_us(), integration_id, sandbox_id),
            )
            if changed == 0:
                raise NotFound(f"integration {integration_id} not found")
        return await self.get_integration(sandbox_id, integration_id)

    async def touch_integration(self, sandbox_id: str, integration_id: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE integrations SET last_used_at = ? WHERE id = ? AND sandbox_id = ?",
                (now_us(), integration_id, sandbox_id),
            )

    def integration_lock(
        self, sandbox_id: str, integration_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # In-process only, like provider_resource_lock (one process owns the file).
        return self._keyed_lock(sandbox_id, "integration", "credentials", integration_id)

    async def create_connect_flow(
        self,
        sandbox_id: str,
        *,
        app: str,
        end_user_id: str,
        for_end_user: bool,
        state_hash: str,
        code_verifier: str,
        expires_at: datetime,
    ) -> ConnectFlow:
        keys = await self._sandbox_keys(sandbox_id)
        flow_id = ids.new_id("flow")
        sealed = keys.seal(code_verifier, table="connect_flows", row=flow_id, column="verifier")
        now = now_us()
        async with self._transaction() as db:
            try:
                blind = await insert_end_user(db, keys, sandbox_id, end_user_id, now)
                await db.execute(
                    "INSERT INTO connect_flows (id, sandbox_id, app, end_user_id, for_end_user, "
                    "state_hash, verifier_sealed, status, reason, integration_id, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', '', '', ?, ?)",
                    (
                        flow_id,
                        sandbox_id,
                        app,
                        blind,
                        int(for_end_user),
                        state_hash,
                        sealed,
                        now,
                        int(expires_at.timestamp() * 1_000_000),
                    ),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_connect_flow(sandbox_id, flow_id)

    async def get_connect_flow(self, sandbox_id: str, flow_id: str) -> ConnectFlow:
        rows = await self._fetch(
            f"SELECT {FLOWS.columns} FROM connect_flows WHERE id = ? AND sandbox_id = ?",
            (flow_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"connect flow {flow_id} not found")
        return await self._opened(sandbox_id, lambda keys: FLOWS.load(rows[0], keys))

    async def find_connect_flow(self, state_hash: str) -> tuple[ConnectFlow, str] | None:
        rows = await self._fetch(
            f"SELECT {FLOWS.columns}, verifier_sealed FROM connect_flows WHERE state_hash = ?",
            (state_hash,),
        )
        if not rows:
            return None
        row = rows[0]
        flow_id: str = row["id"]
        sealed: bytes = row["verifier_sealed"]
        return await self._opened(
            row["sandbox_id"],
            lambda keys: (
                FLOWS.load(row, keys),
                keys.open(sealed, table="connect_flows", row=flow_id, column="verifier"),
            ),
        )

    async def finish_connect_flow(
        self,
        sandbox_id: str,
        flow_id: str,
        status: FlowStatus,
        *,
        reason: str = "",
        integration_id: str = "",
    ) -> ConnectFlow:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE connect_flows SET status = ?, reason = ?, integration_id = ?, "
                "finished_at = ? WHERE id = ? AND sandbox_id = ? AND status = 'pending'",
                (status, reason, integration_id, now_us(), flow_id, sandbox_id),
            )
        return await self.get_connect_flow(sandbox_id, flow_id)
