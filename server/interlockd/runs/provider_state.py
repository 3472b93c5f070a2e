"""The store behind :class:`ProviderState`: one run's sandbox, one provider.

Backends that keep resources at their provider (managed agents, environments)
and sandboxes that bring their own provider credentials reach the store only
through this object, which is bound to the run's sandbox and provider: a
backend cannot name another tenant's rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from interlockd.store.base import Store
from interlockd.vocabulary import ProviderState

log = structlog.get_logger(__name__)


class StoreProviderState(ProviderState):
    """:class:`ProviderState` of ``sandbox_id`` for ``provider``, kept in ``store``."""

    def __init__(self, store: Store, sandbox_id: str, provider: str) -> None:
        self._store = store
        self._sandbox_id = sandbox_id
        self._provider = provider

    async def secret(self, name: str) -> str | None:
        return await self._store.get_secret(self._sandbox_id, name)

    async def resource(
        self, kind: str, fingerprint: str, create: Callable[[], Awaitable[str]]
    ) -> str:
        key = (self._sandbox_id, self._provider, kind, fingerprint)
        # Fast path without the lock: once created, a resource is only read.
        found = await self._store.get_provider_resource(*key)
        if found is not None:
            return found
        async with self._store.provider_resource_lock(*key):
            found = await self._store.get_provider_resource(*key)
            if found is not None:
                return found
            created = await create()
            stored = await self._store.put_provider_resource(*key, created)
            log.info(
                "provider_resource_created",
                sandbox_id=self._sandbox_id,
                provider=self._provider,
                kind=kind,
                resource_id=stored,
            )
            return stored

    async def forget_resource(self, kind: str, fingerprint: str, resource_id: str) -> None:
        await self._store.delete_provider_resource(
            self._sandbox_id, self._provider, kind, fingerprint, resource_id
        )
        log.warning(
            "provider_resource_lost",
            sandbox_id=self._sandbox_id,
            provider=self._provider,
            kind=kind,
            resource_id=resource_id,
        )
