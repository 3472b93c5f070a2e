"""Run tokens every process sharing the store accepts: published here, forwarded to their owner.

The process running a turn opens its tokens (:mod:`interlockd.tools.grants`)
and alone executes the calls they authorize: that is where the run's tools,
its runner and its event stream are. So that a runtime may call any replica
(behind one load balancer) or any worker process, the owner publishes each
token's SHA-256 in the store with its own forwarding address
(:meth:`SharedGrants.publish`, before the token is handed out) and deletes it
when the grant closes. A process that receives a token it did not open finds
it there (:meth:`SharedGrants.find`) and forwards the request to the owner,
which checks the token again against its own registry: a grant revoked
there opens nothing, whatever the store says. A forwarded request is never
forwarded again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from interlockd.store.base import GrantKind, Store, StoredGrant
from interlockd.tools.grants import token_digest

log = structlog.get_logger(__name__)

#: Set on a forwarded request: its receiver answers from its own grants only.
FORWARDED_HEADER = "x-interlock-forwarded"


class SharedGrants:
    """This process's run tokens in the store, and the tokens other processes put there."""

    def __init__(self, store: Store, owner_url: Callable[[], str]) -> None:
        """``owner_url()``: where the other processes reach this one's HTTP side."""
        self._store = store
        self._owner_url = owner_url
        self._revoking: set[asyncio.Task[None]] = set()

    @property
    def owner_url(self) -> str:
        return self._owner_url()

    async def publish(
        self, token: str, *, sandbox_id: str, run_id: str, kind: GrantKind, ttl: float
    ) -> None:
        """Make ``token`` known to every process, for ``ttl`` seconds at most."""
        await self._store.put_tool_grant(
            token_digest(token),
            sandbox_id=sandbox_id,
            run_id=run_id,
            kind=kind,
            owner_url=self._owner_url(),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        )

    def revoke(self, token: str) -> None:
        """Forget ``token`` everywhere, soon (its grant is already closed here, which is
        what decides: forwarded calls reach this process and find nothing)."""
        task = asyncio.get_running_loop().create_task(self._delete(token_digest(token)))
        self._revoking.add(task)
        task.add_done_callback(self._revoking.discard)

    async def find(self, token: str, kind: GrantKind) -> StoredGrant | None:
        """Another process's unexpired grant of ``token``, or None (also for our own)."""
        grant = await self._store.find_tool_grant(token_digest(token), kind, datetime.now(UTC))
        if grant is None or grant.owner_url == self._owner_url():
            return None
        return grant

    async def aclose(self) -> None:
        """Wait for revocations still on their way to the store."""
        if self._revoking:
            await asyncio.wait(set(self._revoking), timeout=5)

    async def _delete(self, digest: str) -> None:
        try:
            await self._store.delete_tool_grant(digest)
        except Exception:  # it expires anyway; the owner's registry already refuses it
            log.warning("tool_grant_revoke_failed", exc_info=True)
