"""The sandbox's tool set: what a model may call, and the seam tools implement.

Every runtime gets the same tools for a run, whichever provider runs it: the
registry answers "which tools does this run have" (filtered by the request's
allow-list) and "execute this one". Built-in context tools register here
today; integrations' tools (GitHub, MCP servers) join them later.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from interlockd.errors import InvalidArgument
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

    def select(self, allow: Sequence[str]) -> list[Tool]:
        """The tools a run may use: all, or those named in ``allow``.

        Raise InvalidArgument (field ``tools``) for a name that isn't a tool.
        """
        if not allow:
            return list(self._tools.values())
        unknown = sorted(set(allow) - self._tools.keys())
        if unknown:
            raise InvalidArgument(
                "tools",
                f"unknown tool(s) {', '.join(unknown)}; "
                f"available: {', '.join(sorted(self._tools)) or 'none'}",
            )
        return [self._tools[name] for name in dict.fromkeys(allow)]
