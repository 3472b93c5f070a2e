"""Tool dispatch for hosted agents: run-scoped tokens and the calls they carry.

A runtime whose tools are baked in at deploy time (a Vertex AI Agent Engine
agent) carries one proxy tool, ``dispatch(tool_name, arguments)``, that POSTs
back to the router. Before such a turn the backend opens a :class:`Channel`:
a random bearer token, valid only for that run, only until it expires or the
turn ends, only for the run's end user and provider session. The HTTP handler
authenticates a callback by its token and hands the call to the run's
channel; the backend executes it with the run's tools (recorded like any other
call, streamed to the client) and answers; the handler returns the answer.

Tokens are kept in this process's memory (hashed): a callback must reach the
replica that runs the turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

#: Bytes of randomness in a dispatch token.
_TOKEN_BYTES = 32


@dataclass(eq=False)
class DispatchCall:
    """One tool call a hosted agent sent back; the backend resolves ``answer``."""

    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class Channel:
    """The dispatch calls of one run."""

    token: str
    end_user_id: str
    expires_at: float  # time.monotonic()
    provider_session: str = ""  # bound once the provider session is known
    calls: asyncio.Queue[DispatchCall] = field(default_factory=asyncio.Queue)
    _registry: DispatchRegistry | None = None

    def close(self) -> None:
        """Revoke the token; calls still waiting are told the run ended."""
        if self._registry is not None:
            self._registry.close(self)
            self._registry = None
        while not self.calls.empty():
            call = self.calls.get_nowait()
            if not call.answer.done():
                call.answer.set_result({"error": "the run has ended; the tool was not run"})


class DispatchRejected(Exception):
    """A callback that must not run anything; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DispatchRegistry:
    """The open channels of this process, by the hash of their token."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._channels: dict[str, Channel] = {}
        self._clock = clock

    def open(self, end_user_id: str, ttl: float) -> Channel:
        """A new channel (and token) for one run, valid for ``ttl`` seconds at most."""
        self._expire()
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        channel = Channel(token, end_user_id, self._clock() + ttl)
        channel._registry = self
        self._channels[_digest(token)] = channel
        return channel

    def close(self, channel: Channel) -> None:
        self._channels.pop(_digest(channel.token), None)

    def __len__(self) -> int:
        return len(self._channels)

    def channel(self, token: str, *, user_id: str, session_id: str) -> Channel:
        """The open channel of ``token``; DispatchRejected(401) for anything else.

        The caller's ``user_id`` and ``session_id`` must be the run's: a token
        leaked into another session opens nothing.
        """
        self._expire()
        channel = self._channels.get(_digest(token)) if token else None
        if channel is None:
            raise DispatchRejected(401, "invalid or expired dispatch token")
        if user_id != channel.end_user_id or (
            channel.provider_session and session_id != channel.provider_session
        ):
            raise DispatchRejected(401, "the dispatch token belongs to another session")
        return channel

    def _expire(self) -> None:
        now = self._clock()
        for key, channel in list(self._channels.items()):
            if channel.expires_at <= now:
                del self._channels[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
