"""The tools of a run's connected integrations: a :class:`ToolSource` for run selection.

End user U of sandbox S gets the tools of every active integration of S
connected for U or for all of S, by connection time, each integration's in
its own order. Each integration's tools execute with its credentials
(:class:`StoreCredentials`). An MCP server that cannot be reached, or an app
the operator no longer configures, contributes no tools and fails nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import structlog

from interlockd.integrations.base import App, Connection, Credentials
from interlockd.integrations.credentials import StoreCredentials
from interlockd.store.base import Integration, Store
from interlockd.tools.base import Tool
from interlockd.tools.selection import ToolSource

log = structlog.get_logger(__name__)

#: How the tools of an MCP server connection are listed (see ``integrations/mcp``).
McpTools = Callable[[Connection, Credentials], Awaitable[list[Tool]]]


class IntegrationTools(ToolSource):
    """The tools of the sandbox's active integrations, for one end user."""

    def __init__(
        self, store: Store, apps: Mapping[str, App], *, mcp_tools: McpTools | None = None
    ) -> None:
        self._store = store
        self._apps = dict(apps)
        self._mcp_tools = mcp_tools

    async def tools_for(self, sandbox_id: str, end_user_id: str) -> list[Tool]:
        tools: list[Tool] = []
        for integration in await self._store.list_integrations(sandbox_id, end_user_id=end_user_id):
            if integration.status == "active":
                tools.extend(await self._tools_of(integration))
        return tools

    async def _tools_of(self, integration: Integration) -> list[Tool]:
        connection = Connection(
            integration_id=integration.id,
            sandbox_id=integration.sandbox_id,
            end_user_id=integration.end_user_id,
            kind=integration.kind,
            app=integration.app,
            config=integration.config,
        )
        credentials = StoreCredentials(
            self._store, integration.sandbox_id, integration.id, integration.app
        )
        if integration.kind == "mcp":
            if self._mcp_tools is None:
                return []
            try:
                return await self._mcp_tools(connection, credentials)
            except Exception as exc:  # an unreachable server must not fail the run
                log.warning(
                    "integration_tools_unavailable",
                    integration_id=integration.id,
                    app=integration.app,
                    error=str(exc)[:200],
                )
                return []
        app = self._apps.get(integration.app)
        if app is None:
            log.warning(
                "integration_app_not_configured",
                integration_id=integration.id,
                app=integration.app,
            )
            return []
        return app.tools(connection, credentials)
