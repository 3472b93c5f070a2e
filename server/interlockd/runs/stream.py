"""The provider's side of the stream phase: context assembled, the backend streamed.

For a backend that keeps sessions, the conversation's stored provider session
is continued with only what it has not seen; if the provider lost it, the turn
starts over once in a new session with the whole window handed over. Events
are the backend's own (runs/turn.py turns them into the run's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

import structlog

from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.context.window import Budget, assemble
from interlockd.errors import ProviderSessionLost
from interlockd.runs.settle import Progress
from interlockd.store.base import Run, Store
from interlockd.vocabulary import BackendEvent, SessionBound, ToolRunner

log = structlog.get_logger(__name__)


async def provider_events(
    store: Store,
    run: Run,
    backend: AgentBackend,
    request: TurnRequest,
    runner: ToolRunner,
    budget: Budget,
    progress: Progress,
) -> AsyncGenerator[BackendEvent, None]:
    """The backend's events for ``run``, with the context assembled for it."""
    session = None
    if backend.keeps_sessions:
        session = await store.get_provider_session(
            run.sandbox_id, run.conversation_id, run.provider
        )
    while True:
        context = await assemble(
            store,
            run.sandbox_id,
            run.conversation_id,
            system=request.system,
            budget=budget,
            tool_messages=bool(request.tools),
            after_seq=session.through_seq if session else 0,
        )
        attempt = dataclasses.replace(
            request,
            messages=context.messages,
            provider_session=session.session_id if session else None,
        )
        produced = False
        events = backend.stream_turn(attempt, runner)
        try:
            async for event in events:
                produced = produced or not isinstance(event, SessionBound)
                yield event
            return
        except ProviderSessionLost as exc:
            if session is None or produced or progress.session is not None:
                raise
            log.warning(
                "provider_session_lost", run_id=run.id, provider=run.provider, error=exc.message
            )
            await store.clear_provider_session(run.sandbox_id, run.conversation_id, run.provider)
            session = None
        finally:
            # Close the provider's stream now, not whenever it is collected.
            if isinstance(events, AsyncGenerator):
                await events.aclose()
