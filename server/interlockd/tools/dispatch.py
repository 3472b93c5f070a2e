"""Tool dispatch for hosted agents: their run-scoped channels, on the one grant registry.

A runtime whose tools are baked in at deploy time (a Vertex AI Agent Engine
agent) carries one proxy tool, ``dispatch(tool_name, arguments)``, that POSTs
back to the router. Before such a turn the backend opens a channel through the
:class:`~interlockd.vocabulary.ToolDispatch` its turn request carries (this
module's :class:`Dispatch`): a grant (:mod:`interlockd.tools.grants`) whose
token is valid only for that run, only until it expires or the turn ends, only
for the run's end user and provider session. The HTTP route authenticates a
callback with :meth:`Dispatch.channel` and hands the call to the run's
channel; the backend executes it with the run's tools (recorded like any other
call, streamed to the client) and answers; the route returns the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from interlockd.tools.grants import Grant, GrantRegistry
from interlockd.tools.shared_grants import SharedGrants
from interlockd.vocabulary import DispatchCall, DispatchChannel, ToolDispatch


class DispatchRejected(Exception):
    """A callback that must not run anything; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Channel(DispatchChannel):
    """One run's dispatch channel (what its token opens): its end user, provider session
    and the calls waiting for it."""

    def __init__(self, end_user_id: str) -> None:
        self.end_user_id = end_user_id
        self.provider_session = ""  # bound once the provider session is known
        self.calls: asyncio.Queue[DispatchCall] = asyncio.Queue()
        self._grant: Grant[Channel] | None = None

    @property
    def token(self) -> str:
        assert self._grant is not None, "a channel is opened by Dispatch.open"
        return self._grant.token

    def bind_session(self, session_id: str) -> None:
        self.provider_session = session_id

    async def next_call(self) -> DispatchCall:
        return await self.calls.get()

    def close(self) -> None:
        if self._grant is not None:
            self._grant.close()
        while not self.calls.empty():
            call = self.calls.get_nowait()
            if not call.answer.done():
                call.answer.set_result({"error": "the run has ended; the tool was not run"})


class Dispatch:
    """The open dispatch channels of this process (each run opens its own: :meth:`for_run`)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedGrants | None = None,
    ) -> None:
        """``shared``: where tokens are published for the other processes (None: this one
        alone accepts them)."""
        self._grants: GrantRegistry[Channel] = GrantRegistry(
            clock=clock, on_close=shared.revoke if shared is not None else None
        )
        self._shared = shared

    def for_run(self, sandbox_id: str, run_id: str) -> ToolDispatch:
        """What a turn hands its backend: opens this run's channel."""
        return _RunDispatch(self, sandbox_id, run_id)

    async def open(self, end_user_id: str, ttl: float, *, sandbox_id: str, run_id: str) -> Channel:
        channel = Channel(end_user_id)
        channel._grant = self._grants.open(channel, ttl)
        if self._shared is not None:
            try:
                await self._shared.publish(
                    channel.token, sandbox_id=sandbox_id, run_id=run_id, kind="dispatch", ttl=ttl
                )
            except BaseException:
                channel.close()
                raise
        return channel

    def channel(self, token: str, *, user_id: str, session_id: str) -> Channel:
        """The open channel of ``token``; DispatchRejected(401) for anything else.

        The caller's ``user_id`` and ``session_id`` must be the run's: a token
        leaked into another session opens nothing.
        """
        grant = self._grants.get(token)
        if grant is None:
            raise DispatchRejected(401, "invalid or expired dispatch token")
        channel = grant.scope
        if user_id != channel.end_user_id or (
            channel.provider_session and session_id != channel.provider_session
        ):
            raise DispatchRejected(401, "the dispatch token belongs to another session")
        return channel

    def __len__(self) -> int:
        return len(self._grants)


class _RunDispatch(ToolDispatch):
    """:class:`Dispatch` for one run: its channel published under the run's ids."""

    def __init__(self, dispatch: Dispatch, sandbox_id: str, run_id: str) -> None:
        self._dispatch = dispatch
        self._sandbox_id = sandbox_id
        self._run_id = run_id

    async def open(self, end_user_id: str, ttl: float) -> Channel:
        return await self._dispatch.open(
            end_user_id, ttl, sandbox_id=self._sandbox_id, run_id=self._run_id
        )
