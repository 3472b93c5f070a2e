"""Tool calls the daemon executed for a runtime, handed to the backend streaming its turn.

A runtime that consumes MCP (Hermes) calls a run's tools through the daemon's
MCP endpoint, which executes them with the run's :class:`ToolRunner`; the
runner records each call and its result in the conversation. The runtime's own
answer stream only reports that a tool ran, without its arguments or result.
So the endpoint posts each call it had executed here, under the runner that
executed it, and the backend, which is handed the same runner for the turn,
takes them from here: the stream then carries exactly what was recorded, under
the ids it was recorded with.

It owns that hand-off only: it never executes nor records anything, and it
keeps nothing once the run's runner is gone (entries are weakly keyed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from interlockd.vocabulary import ToolCall, ToolResult, ToolRunner


@dataclass(slots=True)
class ExecutedCalls:
    """The calls one runner executed for the MCP endpoint, in the order they finished."""

    _calls: list[tuple[ToolCall, ToolResult]] = field(default_factory=list)

    def add(self, call: ToolCall, result: ToolResult) -> None:
        """Note a call the runner executed and recorded, with its result."""
        self._calls.append((call, result))

    def take(self) -> list[tuple[ToolCall, ToolResult]]:
        """The calls added since the last take, oldest first (each is taken once)."""
        new, self._calls = self._calls, []
        return new


_BY_RUNNER: WeakKeyDictionary[ToolRunner, ExecutedCalls] = WeakKeyDictionary()


def executed_calls(runner: ToolRunner) -> ExecutedCalls:
    """The calls ``runner`` executed for the MCP endpoint (one record per runner)."""
    calls = _BY_RUNNER.get(runner)
    if calls is None:
        calls = _BY_RUNNER[runner] = ExecutedCalls()
    return calls
