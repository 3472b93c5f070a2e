"""The turn orchestrator: runs every Run of the daemon, phase by phase.

A turn goes admit → place → stream → settle:

1. admit (runs/admission.py) — a request_id seen before is replayed
   (runs/replay.py) or, for a run that did not end on its own, resumed; else
   the backend, model, tools, budget and compute plan are resolved and
   checked, then one store transaction admits the run (quotas, one turn per
   conversation) and records the user message — nothing stored if refused;
2. place (runs/turn.py) — a self-hosted runtime's compute session;
3. stream — the backend's events become the run's, tool calls recorded before
   the client sees them; RunStarted is held back until the provider's first
   event, so a provider down before answering surfaces as a status
   (UNAVAILABLE), not a half-started stream;
4. settle (runs/settle.py) — what the turn produced, its final state, ledger
   rows and provider session, in one store call. What ended the turn becomes
   its outcome in one place (runs/outcome.py): an Error event after the first
   event, a status before it.

The orchestrator also owns the runs in flight, for the kill switches (pauses)
and the daemon's shutdown. It knows backends and the store through their
seams, and nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from typing import Any

import structlog

from interlockd.errors import NotFound, Unavailable
from interlockd.pauses import applies
from interlockd.runs.admission import Admission, Prepared
from interlockd.runs.events import RunEvent
from interlockd.runs.outcome import PAUSED, SHUTDOWN, Outcome, classify
from interlockd.runs.replay import check_owner, replay
from interlockd.runs.request import RunInput
from interlockd.runs.turn import Turn, TurnDeps
from interlockd.store.base import Pause, Run, WindowEntry

log = structlog.get_logger(__name__)

#: Statuses of runs that did not end on their own: a retry with their request_id
#: resumes them instead of replaying them.
_RESUMABLE = frozenset({"interrupted", "cancelled"})
#: How long stopped runs get to record their output and send their Error event.
_STOP_WAIT_SECONDS = 5.0


class Orchestrator:
    """Runs turns. One instance serves every run of the daemon."""

    def __init__(self, admission: Admission, deps: TurnDeps) -> None:
        """``admission`` admits turns; ``deps`` is what running them uses."""
        self._admission = admission
        self._deps = deps
        self._accepting = True
        self._closing: set[asyncio.Task[object]] = set()
        #: The turns in progress by run id, as kill switches and the shutdown see them.
        self._inflight: dict[str, Turn] = {}
        #: Tasks inside run(), from admission to the end (shutdown waits for them).
        self._running: set[asyncio.Task[Any]] = set()

    def stop_paused(self, pauses: list[Pause]) -> int:
        """End the runs in flight that ``pauses`` cover, each with an Error event naming
        the pause; return how many."""
        stopped = 0
        for turn in self._inflight.values():
            if turn.stops.paused is not None or turn.task is None:
                continue
            run = turn.run
            for pause in pauses:
                if applies(
                    pause, run.sandbox_id, run.end_user_id, run.provider, turn.compute_provider
                ):
                    turn.stops.paused = pause
                    turn.task.cancel(PAUSED)
                    stopped += 1
                    break
        return stopped

    def stop_lost(self, held: set[str], renewed_at: float) -> int:
        """End the runs in flight whose lease this process no longer holds (another
        process took them over), as a shutdown would: in-band UNAVAILABLE, retryable.

        ``held`` are the runs a renewal begun at ``renewed_at`` (time.monotonic)
        found leased to this process; turns that started after it are not judged.
        """
        stopped = 0
        for run_id, turn in list(self._inflight.items()):
            if run_id in held or turn.admitted_at >= renewed_at:
                continue
            task = turn.task
            if task is None or task.done() or turn.stops.paused or turn.stops.shutdown:
                continue
            log.warning("run_lease_lost", run_id=run_id)
            turn.stops.shutdown = True
            task.cancel(SHUTDOWN)
            stopped += 1
        return stopped

    def stop_accepting(self) -> None:
        """Refuse new runs from now on (shutdown); running ones continue."""
        self._accepting = False

    async def interrupt(self, grace: float) -> int:
        """Give the runs in flight ``grace`` seconds to end, then stop the rest, each
        with an Error event (UNAVAILABLE, retryable: the same request_id resumes it),
        and wait for them to record what they produced; return how many were stopped.

        Runs still being admitted when the grace ends are stopped as they reach
        their turn (before their first event: a status, UNAVAILABLE).
        """
        loop = asyncio.get_running_loop()
        if self._running and grace > 0:
            await asyncio.wait(set(self._running), timeout=grace)
        stopped = 0
        until = loop.time() + _STOP_WAIT_SECONDS
        while self._running and (left := until - loop.time()) > 0:
            for turn in self._inflight.values():
                task = turn.task
                if task is None or task.done() or turn.stops.paused or turn.stops.shutdown:
                    continue
                turn.stops.shutdown = True
                task.cancel(SHUTDOWN)
                stopped += 1
            await asyncio.wait(
                set(self._running), timeout=min(left, 0.05), return_when=asyncio.FIRST_COMPLETED
            )
        return stopped

    async def drain(self, within: float) -> None:
        """Wait for cancelled runs to finish recording what they produced."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=within)

    async def run(self, req: RunInput) -> AsyncIterator[RunEvent]:
        """Run one turn, yielding its events; raise InterlockError before the first one."""
        if not self._accepting:
            raise Unavailable("the daemon is shutting down; retry on another replica")
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            events = await self._admit(req)
            # aclosing: a caller that stops early closes the turn's generators now
            # (their cancellation bookkeeping runs), not whenever they are collected.
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            if task is not None:
                self._running.discard(task)

    async def _admit(self, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """Replay, resume or admit the turn; the events of running it (one generator
        less between the provider and the client than iterating them here)."""
        store = self._deps.store
        previous = None
        if req.request_id:
            previous = await store.find_run_by_request_id(req.sandbox_id, req.request_id)
        earlier: list[WindowEntry] = []
        if previous is not None and previous.status not in _RESUMABLE:
            events = replay(store, previous, req)
        elif previous is not None:
            check_owner(previous, req)
            prepared = await self._admission.prepare(req, pinned=previous)
            run = await self._admission.resume(previous, prepared)
            log.info("run_resumed", run_id=run.id, provider=run.provider, was=previous.status)
            earlier = await store.read_run_entries(run.sandbox_id, run.id)
            events = self._execute(run, Turn(self._deps, run, prepared, _task()), earlier)
        else:
            prepared = await self._admission.prepare(req)
            run, turn = await self._begin(prepared, new_conversation=not req.session_id)
            events = self._execute(run, turn)
        return events

    async def _begin(self, prepared: Prepared, *, new_conversation: bool) -> tuple[Run, Turn]:
        """Admit a new run; its provider call begins while the admission commits."""
        begun: list[Turn] = []

        async def admitted(run: Run) -> None:
            turn = Turn(self._deps, run, prepared, _task())
            begun.append(turn)
            await turn.open_early(new_conversation=new_conversation)

        try:
            run = await self._admission.begin(prepared, admitted)
        except BaseException as exc:
            if begun:
                turn = begun[0]
                await turn.discard_opening()
                if isinstance(exc, asyncio.CancelledError):
                    # Cancelled while the admission committed: the run may be in the
                    # store, running with no turn; it ends the way a cancelled turn
                    # that streamed nothing does.
                    await self._shielded(self._settle_if_admitted(turn))
            raise
        turn = begun[0]
        # Lease renewals begun before the commit could not see the run.
        turn.admitted_at = time.monotonic()
        return run, turn

    async def _settle_if_admitted(self, turn: Turn) -> None:
        run = turn.run
        try:
            stored = await self._deps.store.get_run(run.sandbox_id, run.id)
        except NotFound:
            return  # the admission did not commit
        if stored.status == "running":
            log.info("run_cancelled", run_id=run.id, provider=run.provider)
            await turn.settle(Outcome("cancelled"), unstarted=True)

    async def _execute(
        self, run: Run, turn: Turn, earlier: Sequence[WindowEntry] = ()
    ) -> AsyncGenerator[RunEvent, None]:
        """Place, stream and settle ``turn``; what ended it becomes its outcome."""
        self._inflight[run.id] = turn
        log_ = log.bind(run_id=run.id, provider=run.provider, model=turn.prepared.model)
        try:
            async with asyncio.timeout(turn.limit):
                await turn.carry_on(earlier)
                request = await turn.place()
                async with contextlib.aclosing(turn.stream(request)) as events:
                    async for event in events:
                        yield event
            assert turn.outcome is not None  # stream() raises unless it saw TurnEnd
            outcome = turn.outcome
        except BaseException as exc:
            ending = classify(exc, run.provider, turn.limit, turn.stops, log_)
            if ending is None:
                raise
            if ending.cancelled:
                self._inflight.pop(run.id, None)
                settling = turn.settle(ending.outcome, unstarted=not turn.started)
                await self._shielded(settling)
                raise
            if not turn.started and not ending.in_band:
                self._inflight.pop(run.id, None)
                await turn.settle(ending.outcome, unstarted=True)
                if ending.status is not None:
                    raise ending.status from None
                raise
            outcome = ending.outcome
        self._inflight.pop(run.id, None)
        finished = await turn.settle(outcome)
        for event in turn.opening():
            yield event
        yield turn.ending(outcome, finished)

    async def _shielded(self, work: Coroutine[Any, Any, object]) -> None:
        """Finish bookkeeping even though the run's task is being cancelled."""
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Cancelled again while waiting: the task finishes on its own and
            # drain() waits for it at shutdown.
            pass
        except Exception:
            log.exception("run_close_failed")


def _task() -> asyncio.Task[Any] | None:
    """The task a turn runs in (what a kill switch cancels)."""
    return asyncio.current_task()
