"""Run-scoped access to the MCP endpoint: which tools a bearer token opens.

Runtimes that consume MCP (Hermes, Managed Agents, ADK) reach a run's tools
through the daemon's MCP endpoint. Before such a turn the backend opens a
:class:`McpGrant`: a random bearer token, valid only for that run, only until
it expires or the turn ends (``close()``), for exactly the tools it was given
— already limited to the run's sandbox, end user and allow-list — and
executing them only through the run's :class:`ToolRunner`, which records
every call like any other and never runs a completed call twice.

Tokens are kept in this process's memory (hashed): the MCP client must reach
the replica that runs the turn. This module never executes anything itself.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from interlockd.integrations.tools import Tool
from interlockd.vocabulary import ToolRunner

#: Bytes of randomness in an MCP token.
_TOKEN_BYTES = 32


@dataclass(eq=False)
class McpGrant:
    """The MCP access of one run: its token, its tools and the runner that executes them."""

    token: str
    tools: Mapping[str, Tool]  # by name, in the run's (stable) order
    runner: ToolRunner
    expires_at: float  # the registry's clock (time.monotonic by default)
    _registry: McpAccessRegistry | None = None

    @property
    def closed(self) -> bool:
        return self._registry is None

    def close(self) -> None:
        """Revoke the token: from now on it opens nothing. Idempotent."""
        if self._registry is not None:
            self._registry.close(self)
            self._registry = None


class McpAccessRegistry:
    """The open MCP grants of this process, by the hash of their token."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._grants: dict[str, McpGrant] = {}
        self._clock = clock

    def open(self, tools: Sequence[Tool], runner: ToolRunner, ttl: float) -> McpGrant:
        """A new grant (and token) for one run's ``tools``, valid for ``ttl`` seconds at most.

        ``tools`` are exactly what the token may list and call; ``runner``
        executes the calls (a run's SandboxToolRunner, which also checks their
        arguments). ValueError for a non-positive ``ttl`` or duplicate tool names.
        """
        return self.bind(secrets.token_urlsafe(_TOKEN_BYTES), tools, runner, ttl)

    def bind(self, token: str, tools: Sequence[Tool], runner: ToolRunner, ttl: float) -> McpGrant:
        """Like :meth:`open`, for a token the caller keeps: a long-lived runtime's.

        A compute session's runtime is configured once with one token; each
        run on it binds its own tools to that token for the run's duration,
        and between runs the token opens nothing. ValueError as for
        :meth:`open`, for a token shorter than 32 characters, or one already
        bound (its runs must not overlap).
        """
        if ttl <= 0:
            raise ValueError(f"ttl: must be positive, got {ttl}")
        if len(token) < 32:
            raise ValueError("token: must have at least 32 characters")
        by_name: dict[str, Tool] = {}
        for tool in tools:
            if tool.spec.name in by_name:
                raise ValueError(f"tool {tool.spec.name!r} given twice")
            by_name[tool.spec.name] = tool
        self._expire()
        digest = _digest(token)
        if digest in self._grants:
            raise ValueError("token: already bound to a run in progress")
        grant = McpGrant(token, by_name, runner, self._clock() + ttl, _registry=self)
        self._grants[digest] = grant
        return grant

    def close(self, grant: McpGrant) -> None:
        self._grants.pop(_digest(grant.token), None)

    def grant(self, token: str) -> McpGrant | None:
        """The open, unexpired grant of ``token``; None for anything else."""
        self._expire()
        return self._grants.get(_digest(token)) if token else None

    def __len__(self) -> int:
        return len(self._grants)

    def _expire(self) -> None:
        now = self._clock()
        for key, grant in list(self._grants.items()):
            if grant.expires_at <= now:
                del self._grants[key]
                grant._registry = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
