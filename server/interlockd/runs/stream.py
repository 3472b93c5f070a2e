"""The provider's side of the stream phase: context assembled, the backend streamed.

:class:`ProviderCall` gives the backend's events one at a time.

For a backend that keeps sessions, the conversation's stored provider session
is continued with only what it has not seen; if the provider lost it, the turn
starts over once in a new session with the whole window handed over. Events
are the backend's own (runs/turn.py turns them into the run's).

A new run's provider call may begin *early*, while the transaction that
admits the run commits (:func:`open_early`, called by the store once the run
is admitted): its context is the committed window plus the user message the
transaction is writing, and its first event is fetched meanwhile. The fsync
of the commit then overlaps the provider's own latency, and the turn still
sends nothing to its client before the commit is done (the orchestrator
consumes the opening only after ``begin_run`` returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import structlog

from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.context.window import AssembledContext, Budget, assemble
from interlockd.errors import ProviderSessionLost
from interlockd.runs.settle import Progress
from interlockd.store.base import ProviderSession, Run, Store
from interlockd.vocabulary import BackendEvent, Message, SessionBound, ToolRunner

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Opening:
    """A provider call begun early: its first attempt's stream, its first event on the way."""

    session: ProviderSession | None
    events: AsyncGenerator[BackendEvent, None]
    #: The stream's first event (StopAsyncIteration if it had none), fetched meanwhile.
    first: asyncio.Future[BackendEvent]

    async def discard(self) -> None:
        """Stop the call (the run was not admitted after all, or its caller went away)."""
        self.first.cancel()
        with contextlib.suppress(BaseException):
            await self.first
        with contextlib.suppress(Exception):
            await self.events.aclose()


async def open_early(
    store: Store,
    run: Run,
    backend: AgentBackend,
    request: TurnRequest,
    runner: ToolRunner,
    budget: Budget,
    *,
    message: str,
    new_conversation: bool,
) -> Opening:
    """Begin ``run``'s provider call while its admission commits (see the module docstring).

    ``message`` is the user message the admitting transaction is writing (not
    yet visible to reads); the context is the committed window fitted to what
    the message leaves of ``budget``, then the message: what :func:`assemble`
    gives once the message is stored.
    """
    session = None
    if backend.keeps_sessions and not new_conversation:
        session = await store.get_provider_session(
            run.sandbox_id, run.conversation_id, run.provider
        )
    user = Message(role="user", content=message)
    if new_conversation:
        messages = [Message(role="system", content=request.system)] if request.system else []
        messages.append(user)
    else:
        left = Budget(total=budget.total - estimate_tokens(message) - MESSAGE_OVERHEAD)
        earlier = await _assemble(store, run, request, left, session)
        messages = [*earlier.messages, user]
    attempt = dataclasses.replace(
        request, messages=messages, provider_session=session.session_id if session else None
    )
    events = _generator(backend.stream_turn(attempt, runner))
    return Opening(session, events, asyncio.ensure_future(anext(events)))


def _generator(events: AsyncIterator[BackendEvent]) -> AsyncGenerator[BackendEvent, None]:
    """``events`` as an async generator (what backends are, save a plugin's iterator)."""
    if isinstance(events, AsyncGenerator):
        return events

    async def relay() -> AsyncGenerator[BackendEvent, None]:
        async for event in events:
            yield event

    return relay()


async def _assemble(
    store: Store, run: Run, request: TurnRequest, budget: Budget, session: ProviderSession | None
) -> AssembledContext:
    return await assemble(
        store,
        run.sandbox_id,
        run.conversation_id,
        system=request.system,
        budget=budget,
        tool_messages=bool(request.tools),
        after_seq=session.through_seq if session else 0,
    )


class ProviderCall:
    """The backend's events for ``run``, attempt by attempt, with the context assembled.

    :meth:`next` gives them one at a time (a coroutine, not a generator: the
    turn's own loop is the only generator between the backend and the client).
    ``early``: the first attempt, begun while the admission committed.
    """

    __slots__ = (
        "_backend",
        "_budget",
        "_events",
        "_first",
        "_produced",
        "_progress",
        "_request",
        "_run",
        "_runner",
        "_session",
        "_started",
        "_store",
    )

    def __init__(
        self,
        store: Store,
        run: Run,
        backend: AgentBackend,
        request: TurnRequest,
        runner: ToolRunner,
        budget: Budget,
        progress: Progress,
        early: Opening | None = None,
    ) -> None:
        self._store, self._run, self._backend = store, run, backend
        self._request, self._runner, self._budget, self._progress = (
            request,
            runner,
            budget,
            progress,
        )
        self._session = early.session if early is not None else None
        self._events = early.events if early is not None else None
        self._first = early.first if early is not None else None
        self._started = early is not None  # the session was looked up
        self._produced = False

    async def next(self) -> BackendEvent | None:
        """The next event, None after the last; a session the provider lost is started
        over once, in a new session with the whole window handed over."""
        while True:
            events = self._events
            if events is None:
                events = self._events = await self._attempt()
            try:
                first = self._first
                if first is not None:
                    self._first = None
                    event = await first
                else:
                    event = await anext(events)
            except StopAsyncIteration:
                await self.close()
                return None
            except ProviderSessionLost as exc:
                if self._session is None or self._produced or self._progress.session is not None:
                    raise
                run = self._run
                log.warning(
                    "provider_session_lost", run_id=run.id, provider=run.provider, error=exc.message
                )
                await self.close()
                await self._store.clear_provider_session(
                    run.sandbox_id, run.conversation_id, run.provider
                )
                self._session = None
                continue
            if not self._produced and not isinstance(event, SessionBound):
                self._produced = True
            return event

    async def close(self) -> None:
        """Close the provider's stream now, not whenever it is collected."""
        first, self._first = self._first, None
        if first is not None and not first.done():
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
        events, self._events = self._events, None
        if events is not None:
            await events.aclose()

    async def _attempt(self) -> AsyncGenerator[BackendEvent, None]:
        run, request = self._run, self._request
        if not self._started:
            self._started = True
            if self._backend.keeps_sessions:
                self._session = await self._store.get_provider_session(
                    run.sandbox_id, run.conversation_id, run.provider
                )
        session = self._session
        context = await _assemble(self._store, run, request, self._budget, session)
        attempt = dataclasses.replace(
            request,
            messages=context.messages,
            provider_session=session.session_id if session else None,
        )
        return _generator(self._backend.stream_turn(attempt, self._runner))
