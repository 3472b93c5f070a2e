"""Which tools a run gets: the built-in ones, then those of its sources, by allow-list.

A run of end user U in sandbox S gets the daemon's built-in tools, then the
tools every :class:`ToolSource` offers U in S (the sandbox's connected
integrations: :class:`interlockd.integrations.tool_source.IntegrationTools`),
in a stable order (built-ins, then each source in its own order) so prompt
caches keyed on tool lists stay warm. A request's allow-list narrows that to
the tools it names, in its order; a name that is no tool of the run is refused
before anything is stored. Selection only: nothing here executes a tool.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from interlockd.errors import InvalidArgument
from interlockd.tools.base import Tool, ToolRegistry


class ToolSource(abc.ABC):
    """Tools that depend on the run's sandbox and end user (an integration's, say)."""

    @abc.abstractmethod
    async def tools_for(self, sandbox_id: str, end_user_id: str) -> list[Tool]:
        """The tools ``end_user_id`` of ``sandbox_id`` may use, in a stable order.

        A source that cannot list its tools right now (an unreachable server)
        leaves them out rather than fail the run.
        """


def select(tools: Sequence[Tool], allow: Sequence[str]) -> list[Tool]:
    """``tools`` restricted to those named in ``allow`` (in its order), or all of them.

    InvalidArgument (field ``tools``) for a name that is not one of ``tools``.
    """
    if not allow:
        return list(tools)
    by_name = {t.spec.name: t for t in tools}
    unknown = sorted(set(allow) - by_name.keys())
    if unknown:
        raise InvalidArgument(
            "tools",
            f"unknown tool(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(by_name)) or 'none'}",
        )
    return [by_name[name] for name in dict.fromkeys(allow)]


class RunTools:
    """Builds the tool list of each run."""

    def __init__(self, builtin: ToolRegistry, sources: Sequence[ToolSource] = ()) -> None:
        self._builtin = builtin
        self._sources = tuple(sources)

    async def for_run(self, sandbox_id: str, end_user_id: str, allow: Sequence[str]) -> list[Tool]:
        """The run's tools, restricted to ``allow`` when it names any.

        InvalidArgument (field ``tools``) for a name that is no tool of the run.
        """
        tools = self._builtin.all()
        for source in self._sources:
            tools.extend(await source.tools_for(sandbox_id, end_user_id))
        return select(tools, allow)
