"""The provider's side of the stream phase: context assembled, the backend streamed.

:class:`ProviderCall` gives the backend's events one at a time.

For a backend that keeps sessions, the conversation's stored provider session
is continued with only what it has not seen; if the provider lost it, the turn
starts over once in a new session with the whole window handed over. Events
are the backend's own (runs/turn.py turns them into the run's).

A new run's provider call may begin *early*, while the transaction that
admits the run commits (:meth:`ProviderCall.begin_early`, called by the store
once the run is admitted): its context is the committed window plus the user message the
transaction is writing, and its first event is fetched meanwhile. The fsync
of the commit then overlaps the provider's own latency, and the turn still
sends nothing to its client before the commit is done (the orchestrator
consumes the opening only after ``begin_run`` returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import structlog

from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from interlockd.context.window import Budget, assemble
from interlockd.errors import ProviderSessionLost
from interlockd.runs.settle import Progress
from interlockd.store.base import ProviderSession, Run, Store
from interlockd.vocabulary import BackendEvent, Message, SessionBound, ToolRunner

log = structlog.get_logger(__name__)


class ProviderCall:
    """The backend's events for ``run``, attempt by attempt, with the context assembled.

    :meth:`next` gives them one at a time (a coroutine, not a generator: the
    turn's own loop is the only generator between the backend and the client);
    :meth:`close` stops the call wherever it is.
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
    ) -> None:
        self._store, self._run, self._backend = store, run, backend
        self._request, self._runner = request, runner
        self._budget, self._progress = budget, progress
        self._session: ProviderSession | None = None
        self._events: AsyncGenerator[BackendEvent, None] | None = None
        #: The first event of a call begun early (StopAsyncIteration if it had none).
        self._first: asyncio.Future[BackendEvent] | None = None
        self._started = False  # the session was looked up
        self._produced = False

    @property
    def request(self) -> TurnRequest:
        return self._request

    async def begin_early(self, *, message: str, new_conversation: bool) -> None:
        """Begin the call while the run's admission commits (see the module docstring).

        ``message`` is the user message the admitting transaction is writing
        (not yet visible to reads); the context is the committed window fitted
        to what the message leaves of the budget, then the message: what
        :func:`assemble` gives once the message is stored.
        """
        user = Message(role="user", content=message)
        if new_conversation:
            self._started = True  # a new conversation has no provider session
            system = self._request.system
            messages = [Message(role="system", content=system)] if system else []
            messages.append(user)
        else:
            await self._look_up_session()
            left = Budget(total=self._budget.total - estimate_tokens(message) - MESSAGE_OVERHEAD)
            messages = [*await self._context(left), user]
        events = self._events = self._stream(messages)
        self._first = asyncio.ensure_future(anext(events))

    async def next(self) -> BackendEvent | None:
        """The next event, None after the last; a session the provider lost is started
        over once, in a new session with the whole window handed over."""
        while True:
            events = self._events
            if events is None:
                await self._look_up_session()
                events = self._events = self._stream(await self._context(self._budget))
            try:
                first = self._first
                if first is not None:
                    # Kept until it is done: if this await is cancelled, close()
                    # must wait for the task before closing the generator it runs.
                    event = await first
                    self._first = None
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

    async def _look_up_session(self) -> None:
        """The conversation's stored provider session, once (backends that keep sessions)."""
        if self._started:
            return
        self._started = True
        if self._backend.keeps_sessions:
            run = self._run
            self._session = await self._store.get_provider_session(
                run.sandbox_id, run.conversation_id, run.provider
            )

    async def _context(self, budget: Budget) -> list[Message]:
        """The stored window the call's session has not seen, fitted to ``budget``."""
        run, session = self._run, self._session
        context = await assemble(
            self._store,
            run.sandbox_id,
            run.conversation_id,
            system=self._request.system,
            budget=budget,
            tool_messages=bool(self._request.tools),
            after_seq=session.through_seq if session else 0,
        )
        return context.messages

    def _stream(self, messages: Sequence[Message]) -> AsyncGenerator[BackendEvent, None]:
        session = self._session
        attempt = dataclasses.replace(
            self._request,
            messages=messages,
            provider_session=session.session_id if session else None,
        )
        return _generator(self._backend.stream_turn(attempt, self._runner))


def _generator(events: AsyncIterator[BackendEvent]) -> AsyncGenerator[BackendEvent, None]:
    """``events`` as an async generator (what backends are, save a plugin's iterator)."""
    if isinstance(events, AsyncGenerator):
        return events

    async def relay() -> AsyncGenerator[BackendEvent, None]:
        async for event in events:
            yield event

    return relay()
