"""A connection's credentials kept in the sandbox store (sealed), behind :class:`Credentials`."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from interlockd.integrations.base import ConnectionBroken, Credentials
from interlockd.store.base import Store

log = structlog.get_logger(__name__)


class StoreCredentials(Credentials):
    """The credentials of integration ``integration_id`` of ``sandbox_id``."""

    def __init__(self, store: Store, sandbox_id: str, integration_id: str, app: str) -> None:
        self._store = store
        self._sandbox_id = sandbox_id
        self._integration_id = integration_id
        self._app = app

    async def read(self) -> dict[str, Any]:
        integration = await self._store.get_integration(self._sandbox_id, self._integration_id)
        if integration.status != "active":
            raise ConnectionBroken(
                f"the {self._app} connection is {integration.status}"
                f"{': ' + integration.status_reason if integration.status_reason else ''}; "
                f"ask the user to connect {self._app} again"
            )
        return await self._store.read_integration_credentials(
            self._sandbox_id, self._integration_id
        )

    async def replace(self, credentials: Mapping[str, Any]) -> None:
        await self._store.replace_integration_credentials(
            self._sandbox_id, self._integration_id, dict(credentials)
        )

    def lock(self) -> AbstractAsyncContextManager[None]:
        return self._store.integration_lock(self._sandbox_id, self._integration_id)

    async def mark_broken(self, reason: str) -> None:
        await self._store.set_integration_status(
            self._sandbox_id, self._integration_id, "broken", reason
        )
        log.warning(
            "integration_broken",
            sandbox_id=self._sandbox_id,
            integration_id=self._integration_id,
            app=self._app,
            reason=reason,
        )
