"""Provider state: provider sessions of conversations, provider resources of
sandboxes, and the in-process locks that create a resource once.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from interlockd.errors import (
    NotFound,
)
from interlockd.store.base import (
    ProviderSession,
    ProviderStateStore,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
    SqlCore,
)
from interlockd.store.sql.rows import (
    now_us,
    to_time,
)
from interlockd.store.sql.tables import PROVIDER_SESSIONS

if TYPE_CHECKING:
    pass


class SqlProviderState(SqlCore, ProviderStateStore):
    """Provider sessions and resources."""

    async def get_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> ProviderSession | None:
        rows = await self._fetch(
            f"SELECT conversation_id, {PROVIDER_SESSIONS.columns} FROM provider_sessions "
            "WHERE conversation_id = ? AND sandbox_id = ? AND provider = ?",
            (conversation_id, sandbox_id, provider),
        )
        if not rows:
            return None
        return await self._opened(sandbox_id, lambda keys: PROVIDER_SESSIONS.load(rows[0], keys))

    async def set_provider_session(
        self,
        sandbox_id: str,
        conversation_id: str,
        provider: str,
        session_id: str,
        through_seq: int,
    ) -> ProviderSession:
        if through_seq < 0:
            raise ValueError(f"through_seq must be at least 0, got {through_seq}")
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            raise NotFound(f"conversation {conversation_id} not found") from None
        sealed = PROVIDER_SESSIONS.seal(
            keys,
            {"conversation_id": conversation_id, "provider": provider},
            "session_id",
            session_id,
            json=False,
        )
        now = now_us()
        async with self._transaction() as db:
            # Inserted from the conversation's row: no row there, nothing stored.
            rows = list(
                await db.fetch(
                    "INSERT INTO provider_sessions (conversation_id, sandbox_id, provider, "
                    "session_id_sealed, through_seq, updated_at) "
                    "SELECT id, sandbox_id, ?, ?, ?, ? FROM conversations "
                    "WHERE id = ? AND sandbox_id = ? "
                    "ON CONFLICT (conversation_id, provider) DO UPDATE SET "
                    "session_id_sealed = excluded.session_id_sealed, "
                    "through_seq = excluded.through_seq, updated_at = excluded.updated_at "
                    "RETURNING 1",
                    (provider, sealed, through_seq, now, conversation_id, sandbox_id),
                )
            )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return ProviderSession(provider, session_id, through_seq, to_time(now))

    async def clear_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> None:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM provider_sessions "
                "WHERE conversation_id = ? AND sandbox_id = ? AND provider = ?",
                (conversation_id, sandbox_id, provider),
            )

    async def get_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> str | None:
        rows = await self._fetch(
            "SELECT resource_id FROM provider_resources "
            "WHERE sandbox_id = ? AND provider = ? AND kind = ? AND fingerprint = ?",
            (sandbox_id, provider, kind, fingerprint),
        )
        return rows[0]["resource_id"] if rows else None

    async def put_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> str:
        key = (sandbox_id, provider, kind, fingerprint)
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO provider_resources (sandbox_id, provider, kind, fingerprint, "
                    "resource_id, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (sandbox_id, provider, kind, fingerprint) DO NOTHING",
                    (*key, resource_id, now_us()),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
            rows = list(
                await db.fetch(
                    "SELECT resource_id FROM provider_resources "
                    "WHERE sandbox_id = ? AND provider = ? AND kind = ? AND fingerprint = ?",
                    key,
                )
            )
        stored: str = rows[0]["resource_id"]
        return stored

    async def delete_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> None:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM provider_resources WHERE sandbox_id = ? AND provider = ? "
                "AND kind = ? AND fingerprint = ? AND resource_id = ?",
                (sandbox_id, provider, kind, fingerprint, resource_id),
            )

    def provider_resource_lock(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # In-process only: see "Provider resource locks" in the module docstring.
        return self._keyed_lock(sandbox_id, provider, kind, fingerprint)
