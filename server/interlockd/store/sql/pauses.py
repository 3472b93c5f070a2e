"""Pauses: an end user pause names its end user by blind id."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from interlockd.errors import (
    StoreError,
)
from interlockd.store.base import (
    Pause,
    PauseScope,
    PauseStore,
)
from interlockd.store.sql.core import (
    SqlCore,
)
from interlockd.store.sql.rows import (
    now_us,
    open_end_user,
)
from interlockd.store.sql.tables import (
    PAUSES,
)
from interlockd.store.sql.window import (
    insert_end_user,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from interlockd.store.sql.rows import Row


def _check_pause(scope: str, sandbox_id: str, target: str) -> None:
    if scope not in ("global", "end_user", "agent_provider", "compute_provider"):
        raise ValueError(f"unknown pause scope {scope!r}")
    if scope == "global" and (sandbox_id or target):
        raise ValueError("a global pause has no sandbox or target")
    if scope != "global" and not target:
        raise ValueError(f"a {scope} pause needs a target")
    if scope == "end_user" and not sandbox_id:
        raise ValueError("an end_user pause needs its sandbox")


#: An end_user pause's target is the end user's blind id; its sealed id comes along.
_PAUSE_COLUMNS = (
    "scope, sandbox_id, target, reason, created_at, "
    "(SELECT u.id_sealed FROM end_users u WHERE pauses.scope = 'end_user' "
    "AND u.sandbox_id = pauses.sandbox_id AND u.id = pauses.target) AS target_sealed"
)


class SqlPauses(SqlCore, PauseStore):
    """The pauses in force."""

    async def set_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = "", reason: str = ""
    ) -> Pause:
        _check_pause(scope, sandbox_id, target)
        # An end user is stored by blind id (NotFound for an unknown sandbox).
        keys = await self._sandbox_keys(sandbox_id) if scope == "end_user" else None
        now = now_us()
        stored = target
        async with self._transaction() as db:
            if keys is not None:
                stored = await insert_end_user(db, keys, sandbox_id, target, now)
            await db.execute(
                "INSERT INTO pauses (scope, sandbox_id, target, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, sandbox_id, target) "
                "DO UPDATE SET reason = excluded.reason",
                (scope, sandbox_id, stored, reason, now),
            )
        rows = await self._fetch(
            f"SELECT {_PAUSE_COLUMNS} FROM pauses "
            "WHERE scope = ? AND sandbox_id = ? AND target = ?",
            (scope, sandbox_id, stored),
        )
        return (await self._pauses(rows))[0]

    async def clear_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = ""
    ) -> bool:
        if scope == "end_user":
            target = await self._blind_end_user(sandbox_id, target)
        async with self._transaction() as db:
            changed = await db.execute(
                "DELETE FROM pauses WHERE scope = ? AND sandbox_id = ? AND target = ?",
                (scope, sandbox_id, target),
            )
            return changed > 0

    async def list_pauses(self, sandbox_id: str | None = None) -> list[Pause]:
        # Ordered by creation: blind targets sort meaninglessly.
        if sandbox_id is None:
            rows = await self._fetch(
                f"SELECT {_PAUSE_COLUMNS} FROM pauses "
                "ORDER BY created_at, scope, sandbox_id, target"
            )
        else:
            rows = await self._fetch(
                f"SELECT {_PAUSE_COLUMNS} FROM pauses "
                "WHERE sandbox_id IN ('', ?) ORDER BY created_at, scope, sandbox_id, target",
                (sandbox_id,),
            )
        return await self._pauses(rows)

    async def _pauses(self, rows: Sequence[Row]) -> list[Pause]:
        """Pauses of these rows, an end_user pause's target opened in its sandbox."""
        pauses = []
        for r in rows:
            target: str = r["target"]
            if r["scope"] == "end_user":
                sealed: bytes | None = r["target_sealed"]
                if sealed is None:
                    raise StoreError(
                        f"the end_user pause {target} of sandbox {r['sandbox_id']} has no "
                        "end_users row; the database was changed outside interlockd"
                    )
                target = await self._opened(
                    r["sandbox_id"], functools.partial(open_end_user, sealed=sealed, blind=target)
                )
            pauses.append(PAUSES.load(r, target=target))
        return pauses
