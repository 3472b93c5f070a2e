"""Compute: compute sessions (secrets and tags sealed), run placements, and the
scheduler's claims (run slots, the run a session serves) that hold across processes."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

from interlockd.errors import (
    AlreadyExists,
    NotFound,
    ResourceExhausted,
)
from interlockd.store.base import (
    ComputeSessionRecord,
    ComputeStatus,
    ComputeStore,
    Placement,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
    SqlCore,
)
from interlockd.store.sql.rows import (
    blind_end_user,
    insert_sql,
    now_us,
    to_us,
)
from interlockd.store.sql.tables import (
    COMPUTE_SESSIONS,
    PLACEMENTS,
)
from interlockd.store.sql.window import (
    insert_end_user,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from interlockd.store.crypto import SandboxKeys
    from interlockd.store.sql.core import Tx
    from interlockd.store.sql.rows import Row


#: A session's or a slot's run still holds it (a run ended or taken over by lease expiry
#: no longer does, on any process): ``{column}`` names the run id column.
_RUN_RUNNING = "EXISTS (SELECT 1 FROM runs WHERE runs.id = {column} AND runs.status = 'running')"

_SESSION_FREE = (
    "(busy_run_id IS NULL OR NOT "
    + _RUN_RUNNING.format(column="compute_sessions.busy_run_id")
    + ")"
)

_SLOT_LIVE = (
    "((run_id IS NULL AND expires_at > ?) OR "
    + _RUN_RUNNING.format(column="compute_run_slots.run_id")
    + ")"
)


def _load_session(row: Row, keys: SandboxKeys) -> ComputeSessionRecord:
    return COMPUTE_SESSIONS.load(row, keys)


async def _check_active_sessions(
    db: Tx, sandbox_id: str, end_user_id: str, blind: str, limit: int
) -> None:
    """ResourceExhausted if the end user has ``limit`` sessions creating or running."""
    rows = await db.fetch(
        "SELECT count(*) AS active FROM compute_sessions WHERE sandbox_id = ? "
        "AND end_user_id = ? AND status IN ('creating', 'running')",
        (sandbox_id, blind),
    )
    if rows[0]["active"] >= limit:
        raise ResourceExhausted(
            f"end user {end_user_id!r} has {rows[0]['active']} active compute sessions "
            f"(limit {limit}): "
            "wait for one to stop when idle, suspend one, or raise "
            "compute.max_active_sessions_per_user"
        )


class SqlCompute(SqlCore, ComputeStore):
    """Compute sessions and placements."""

    async def create_compute_session(
        self,
        *,
        session_id: str,
        sandbox_id: str,
        end_user_id: str,
        agent_key: str,
        runtime: str,
        provider: str,
        region: str,
        spec_fingerprint: str,
        api_key: str,
        mcp_token: str,
        tags: Mapping[str, str],
        now: datetime,
        max_active_per_user: int = 0,
        busy_run_id: str = "",
    ) -> ComputeSessionRecord:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        secrets = {"api_key": api_key, "mcp_token": mcp_token}
        sealed = COMPUTE_SESSIONS.seal(keys, {"id": session_id}, "secrets", secrets, json=True)
        tags_sealed = COMPUTE_SESSIONS.seal(keys, {"id": session_id}, "tags", dict(tags), json=True)
        at = to_us(now)
        async with self._transaction(sandbox_id) as db:
            try:
                blind = await insert_end_user(db, keys, sandbox_id, end_user_id, at)
                if max_active_per_user:
                    await _check_active_sessions(
                        db, sandbox_id, end_user_id, blind, max_active_per_user
                    )
                await db.execute(
                    "INSERT INTO compute_sessions (id, sandbox_id, end_user_id, agent_key, "
                    "runtime, provider, status, region, spec_fingerprint, secrets_sealed, "
                    "tags_sealed, created_at, updated_at, last_active_at, busy_run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        sandbox_id,
                        blind,
                        agent_key,
                        runtime,
                        provider,
                        region,
                        spec_fingerprint,
                        sealed,
                        tags_sealed,
                        at,
                        at,
                        at,
                        busy_run_id or None,
                    ),
                )
            except ConstraintViolation as exc:
                if exc.kind == "unique":
                    raise AlreadyExists(
                        f"end user {end_user_id!r} already has a compute session for {agent_key!r}"
                    ) from None
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_compute_session(session_id)

    async def get_compute_session(self, session_id: str) -> ComputeSessionRecord:
        rows = await self._fetch(
            f"SELECT {COMPUTE_SESSIONS.columns} FROM compute_sessions WHERE id = ?", (session_id,)
        )
        if not rows:
            raise NotFound(f"compute session {session_id} not found")
        row = rows[0]
        return await self._opened(row["sandbox_id"], lambda keys: COMPUTE_SESSIONS.load(row, keys))

    async def find_compute_session(
        self, sandbox_id: str, end_user_id: str, agent_key: str
    ) -> ComputeSessionRecord | None:
        rows = await self._fetch(
            f"SELECT {COMPUTE_SESSIONS.columns} FROM compute_sessions WHERE sandbox_id = ? "
            "AND end_user_id = ? AND agent_key = ? AND status NOT IN ('destroyed', 'failed')",
            (sandbox_id, await self._blind_end_user(sandbox_id, end_user_id), agent_key),
        )
        if not rows:
            return None
        row = rows[0]
        return await self._opened(sandbox_id, lambda keys: COMPUTE_SESSIONS.load(row, keys))

    async def update_compute_session(
        self,
        session_id: str,
        *,
        status: ComputeStatus | None = None,
        external_id: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
        add_active_seconds: float = 0.0,
        last_active_at: datetime | None = None,
    ) -> ComputeSessionRecord:
        sets = ["updated_at = ?", "active_seconds = active_seconds + ?"]
        params: list[Any] = [now_us(), add_active_seconds]
        for column, value in (
            ("status", status),
            ("external_id", external_id),
            ("endpoint", endpoint),
            ("region", region),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if tags is not None:
            owner = await self._fetch(
                "SELECT sandbox_id FROM compute_sessions WHERE id = ?", (session_id,)
            )
            if not owner:
                raise NotFound(f"compute session {session_id} not found")
            keys = await self._sandbox_keys(owner[0]["sandbox_id"])
            sets.append("tags_sealed = ?")
            params.append(
                COMPUTE_SESSIONS.seal(keys, {"id": session_id}, "tags", dict(tags), json=True)
            )
        if last_active_at is not None:
            sets.append("last_active_at = ?")
            params.append(to_us(last_active_at))
        async with self._transaction() as db:
            changed = await db.execute(
                f"UPDATE compute_sessions SET {', '.join(sets)} WHERE id = ?",
                (*params, session_id),
            )
            if changed == 0:
                raise NotFound(f"compute session {session_id} not found")
        return await self.get_compute_session(session_id)

    async def list_compute_sessions(
        self,
        sandbox_id: str | None = None,
        *,
        end_user_id: str = "",
        agent_key: str = "",
        provider: str = "",
        statuses: Sequence[ComputeStatus] = (),
        idle_since: datetime | None = None,
    ) -> list[ComputeSessionRecord]:
        where: list[str] = []
        params: list[Any] = []
        # Blind ids differ per sandbox: across sandboxes the end user is matched once opened.
        blind = await self._blind_end_user(sandbox_id, end_user_id) if sandbox_id else ""
        for column, value in (
            ("sandbox_id", sandbox_id),
            ("end_user_id", blind),
            ("agent_key", agent_key),
            ("provider", provider),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if idle_since is not None:
            where.append("last_active_at <= ?")
            params.append(to_us(idle_since))
            where.append(_SESSION_FREE)  # a session serving a run is not idle
        rows = await self._fetch(
            f"SELECT {COMPUTE_SESSIONS.columns} FROM compute_sessions "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY created_at, id",
            params,
        )
        sessions = []
        for row in rows:
            session = await self._opened(row["sandbox_id"], functools.partial(_load_session, row))
            if not end_user_id or session.end_user_id == end_user_id:
                sessions.append(session)
        return sessions

    async def claim_compute_session(self, session_id: str, run_id: str) -> bool:
        owner = await self._fetch(
            "SELECT sandbox_id FROM compute_sessions WHERE id = ?", (session_id,)
        )
        if not owner:
            return False
        # In turn with the sandbox's writers: the check sees every claim and run before it.
        async with self._transaction(owner[0]["sandbox_id"]) as db:
            changed = await db.execute(
                "UPDATE compute_sessions SET busy_run_id = ? WHERE id = ? "
                "AND status NOT IN ('destroyed', 'failed') "
                f"AND (busy_run_id = ? OR {_SESSION_FREE})",
                (run_id, session_id, run_id),
            )
        return changed == 1

    async def release_compute_session(self, run_id: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE compute_sessions SET busy_run_id = NULL WHERE busy_run_id = ?", (run_id,)
            )

    async def claim_compute_run_slot(
        self,
        *,
        slot_id: str,
        sandbox_id: str,
        end_user_id: str,
        limit: int,
        now: datetime,
        unplaced_until: datetime,
    ) -> int:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        blind = blind_end_user(keys, end_user_id)
        at = to_us(now)
        async with self._transaction(sandbox_id) as db:
            await db.execute(
                "DELETE FROM compute_run_slots WHERE sandbox_id = ? AND end_user_id = ? "
                f"AND NOT {_SLOT_LIVE}",
                (sandbox_id, blind, at),
            )
            rows = await db.fetch(
                "SELECT count(*) AS live FROM compute_run_slots "
                "WHERE sandbox_id = ? AND end_user_id = ?",
                (sandbox_id, blind),
            )
            live = int(rows[0]["live"])
            if limit and live >= limit:
                return live
            await db.execute(
                "INSERT INTO compute_run_slots (id, sandbox_id, end_user_id, run_id, expires_at) "
                "VALUES (?, ?, ?, NULL, ?)",
                (slot_id, sandbox_id, blind, to_us(unplaced_until)),
            )
        return live

    async def place_compute_run_slot(self, slot_id: str, run_id: str) -> None:
        async with self._transaction() as db:
            # An earlier attempt's slot (its process died) would count the run twice.
            await db.execute(
                "DELETE FROM compute_run_slots WHERE run_id = ? AND id <> ?", (run_id, slot_id)
            )
            await db.execute(
                "UPDATE compute_run_slots SET run_id = ? WHERE id = ?", (run_id, slot_id)
            )

    async def release_compute_run_slot(self, slot_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM compute_run_slots WHERE id = ?", (slot_id,))

    async def record_placement(self, placement: Placement) -> None:
        values = PLACEMENTS.dump(placement)
        async with self._transaction() as db:
            await db.execute(insert_sql("placements", values), values)

    async def get_placement(self, run_id: str) -> Placement:
        rows = await self._fetch(
            f"SELECT {PLACEMENTS.columns} FROM placements WHERE run_id = ?", (run_id,)
        )
        if not rows:
            raise NotFound(f"run {run_id} has no compute placement")
        return PLACEMENTS.load(rows[0])
