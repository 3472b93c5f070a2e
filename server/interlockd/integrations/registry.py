"""The tools of a run: the built-in ones plus those of the run's connected integrations.

A run of end user U in sandbox S gets the daemon's built-in tools, then the
tools of every active integration of S connected for U or for all of S, in a
stable order (built-ins, then integrations by connection time, each in its
own order) so prompt caches keyed on tool lists stay warm. Each integration's
tools execute with its credentials (:class:`StoreCredentials`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog

from interlockd.errors import InvalidArgument
from interlockd.integrations.base import App, Connection, Credentials
from interlockd.integrations.credentials import StoreCredentials
from interlockd.integrations.tools import Tool, ToolRegistry
from interlockd.store.base import Integration, Store

log = structlog.get_logger(__name__)

#: How the tools of an MCP server connection are listed (see ``integrations/mcp``).
McpTools = Callable[[Connection, Credentials], Awaitable[list[Tool]]]


class RunTools:
    """Builds the tool list of each run."""

    def __init__(
        self,
        store: Store,
        builtin: ToolRegistry,
        apps: Mapping[str, App],
        *,
        mcp_tools: McpTools | None = None,
    ) -> None:
        self._store = store
        self._builtin = builtin
        self._apps = dict(apps)
        self._mcp_tools = mcp_tools

    async def for_run(self, sandbox_id: str, end_user_id: str, allow: Sequence[str]) -> list[Tool]:
        """The run's tools, restricted to ``allow`` when it names any.

        InvalidArgument (field ``tools``) for a name that is no tool of the run.
        """
        tools = self._builtin.select(())
        for integration in await self._store.list_integrations(sandbox_id, end_user_id=end_user_id):
            if integration.status == "active":
                tools.extend(await self._tools_of(integration))
        if not allow:
            return tools
        by_name = {t.spec.name: t for t in tools}
        unknown = sorted(set(allow) - by_name.keys())
        if unknown:
            raise InvalidArgument(
                "tools",
                f"unknown tool(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(by_name)) or 'none'}",
            )
        return [by_name[name] for name in dict.fromkeys(allow)]

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
