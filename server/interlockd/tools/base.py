"""The seam tools implement, and the registry of the daemon's built-in tools.

Every runtime gets the same tools for a run, whichever provider runs it. A
:class:`Tool` is a spec (name, description, JSON schema) and an ``execute``;
it runs for one sandbox and end user (:class:`ToolContext`) and reports what
the model should know as :class:`ToolError`. Tools come from the daemon
(:class:`ToolRegistry`: the built-in ones) and from the sandbox's integrations
(GitHub, MCP servers); :mod:`interlockd.tools.selection` picks a run's.
Nothing here executes a call for a run: :mod:`interlockd.tools.runner` does.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from interlockd.store.base import Store
from interlockd.vocabulary import ToolSpec


class ToolError(Exception):
    """A tool failed in a way the model can read and act on (not a daemon error)."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a tool runs for: it may only touch this sandbox and end user."""

    store: Store
    sandbox_id: str
    end_user_id: str
    conversation_id: str
    run_id: str


class Tool(abc.ABC):
    """A tool the router executes on a model's behalf."""

    spec: ToolSpec
    #: The integration the tool belongs to ("" for built-in tools); its results
    #: are tagged with it in the window.
    source_id: str = ""

    @abc.abstractmethod
    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        """Run the tool with already JSON-decoded ``arguments`` and return a JSON-able value.

        Validate ``arguments`` against ``spec.parameters`` and raise
        :class:`ToolError` with a message the model can act on for bad
        arguments or a failure it should know about. Touch only data of
        ``ctx.sandbox_id`` / ``ctx.end_user_id``.
        """


class ToolRegistry:
    """Tools by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.spec.name in self._tools:
            raise ValueError(f"tool {tool.spec.name!r} registered twice")
        self._tools[tool.spec.name] = tool

    def all(self) -> list[Tool]:
        """Every registered tool, in registration order."""
        return list(self._tools.values())
