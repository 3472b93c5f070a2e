"""Run-scoped bearer tokens: what a token opens, for one run, until it ends or expires.

Runtimes that call a run's tools from outside the daemon authenticate with a
token the run hands them: Hermes, Managed Agents and ADK through the MCP
endpoint (the token opens :class:`ToolAccess`: exactly the run's tools, executed
by its runner), a deployed Vertex AI agent through its dispatch callback (the
token opens the run's dispatch channel, :mod:`interlockd.tools.dispatch`). One
:class:`GrantRegistry` serves every kind: a random token (or one a long-lived
runtime keeps, :meth:`GrantRegistry.bind`), valid only until it expires or the
run closes its :class:`Grant`, whatever it opens fixed when it is granted.

Tokens are kept in this process's memory, by their SHA-256 (a leaked memory
dump holds no usable token); :mod:`interlockd.tools.shared_grants` makes them
known to the other processes sharing the store, which forward their calls
here. This module never executes anything itself and never logs a token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from interlockd.tools.base import Tool
from interlockd.vocabulary import ToolRunner

#: Bytes of randomness in a token.
_TOKEN_BYTES = 32
#: Shortest token a caller may bind (a kept token must be as hard to guess as ours).
_MIN_TOKEN_CHARS = 32

S = TypeVar("S")


@dataclass(eq=False)
class Grant(Generic[S]):
    """What one run's token opens (``scope``), until it expires or is closed."""

    token: str
    scope: S
    expires_at: float  # the registry's clock (time.monotonic by default)
    _registry: GrantRegistry[S] | None = None

    @property
    def closed(self) -> bool:
        """True once revoked or expired: the token opens nothing any more."""
        return self._registry is None

    def close(self) -> None:
        """Revoke the token: from now on it opens nothing. Idempotent."""
        if self._registry is not None:
            self._registry.close(self)
            self._registry = None


class GrantRegistry(Generic[S]):
    """The open grants of this process, by the hash of their token."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[str], object] | None = None,
    ) -> None:
        """``on_close(token)`` is told of every grant closed (to revoke it elsewhere too)."""
        self._grants: dict[str, Grant[S]] = {}
        self._clock = clock
        self._on_close = on_close

    def open(self, scope: S, ttl: float) -> Grant[S]:
        """A new grant (and random token) of ``scope``, valid for ``ttl`` seconds at most.

        ValueError for a non-positive ``ttl``.
        """
        return self.bind(secrets.token_urlsafe(_TOKEN_BYTES), scope, ttl)

    def bind(self, token: str, scope: S, ttl: float) -> Grant[S]:
        """Like :meth:`open`, for a token the caller keeps: a long-lived runtime's.

        A compute session's runtime is configured once with one token; each
        run on it binds its own scope to that token for the run's duration,
        and between runs the token opens nothing. ValueError as for
        :meth:`open`, for a token shorter than 32 characters, or one already
        bound (its runs must not overlap).
        """
        if ttl <= 0:
            raise ValueError(f"ttl: must be positive, got {ttl}")
        if len(token) < _MIN_TOKEN_CHARS:
            raise ValueError(f"token: must have at least {_MIN_TOKEN_CHARS} characters")
        self._expire()
        digest = token_digest(token)
        if digest in self._grants:
            raise ValueError("token: already bound to a run in progress")
        grant = Grant(token, scope, self._clock() + ttl, _registry=self)
        self._grants[digest] = grant
        return grant

    def close(self, grant: Grant[S]) -> None:
        """Forget ``grant``'s token (its :meth:`Grant.close` calls this)."""
        if self._grants.get(token_digest(grant.token)) is grant:
            del self._grants[token_digest(grant.token)]
            if self._on_close is not None:
                self._on_close(grant.token)

    def get(self, token: str) -> Grant[S] | None:
        """The open, unexpired grant of ``token``; None for anything else."""
        self._expire()
        return self._grants.get(token_digest(token)) if token else None

    def __len__(self) -> int:
        return len(self._grants)

    def _expire(self) -> None:
        now = self._clock()
        for key, grant in list(self._grants.items()):
            if grant.expires_at <= now:
                del self._grants[key]
                grant._registry = None


@dataclass(frozen=True, eq=False)
class ToolAccess:
    """What an MCP token opens: exactly these tools, executed only by this runner.

    ``tools`` are already limited to the run's sandbox, end user and
    allow-list, by name in the run's (stable) order; ``runner`` is the run's
    :class:`~interlockd.tools.runner.SandboxToolRunner`, which checks the
    arguments, records every call and never runs a completed call twice.
    """

    tools: Mapping[str, Tool]
    runner: ToolRunner

    @classmethod
    def of(cls, tools: Sequence[Tool], runner: ToolRunner) -> ToolAccess:
        """The access to ``tools`` through ``runner``; ValueError for duplicate tool names."""
        by_name: dict[str, Tool] = {}
        for tool in tools:
            if tool.spec.name in by_name:
                raise ValueError(f"tool {tool.spec.name!r} given twice")
            by_name[tool.spec.name] = tool
        return cls(by_name, runner)


def token_digest(token: str) -> str:
    """What a token is known by (in memory and in the store): its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()
