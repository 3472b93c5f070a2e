"""The turn orchestrator: one Run from admission to the ledger.

Order of work (each step's failure is reported before the next starts):

1. idempotency — a finished run with the same request_id is replayed;
2. resolve the backend and model, the tool set and the context budget
   (all validation happens here, before anything is stored);
3. admission — one store transaction enforces quotas and one turn at a time
   per conversation, creates the conversation when it is new and records the
   user message durably (nothing is stored if the run is refused);
4. context is assembled from the stored window;
5. the backend streams; text is buffered, tool calls are recorded around their
   execution; RunStarted is held back until the provider's first event so a
   provider that is down before answering surfaces as a status (UNAVAILABLE),
   not a half-started stream;
6. the end — the remaining assistant text, the run's final state and its
   usage and cost in the ledger, in one transaction. Failure after the first
   event becomes a RunFailed event; cancellation still records what was
   produced and marks the run cancelled.

It knows backends and the store through their seams, and nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from interlockd.backends import catalog
from interlockd.backends.base import AgentBackend, TurnRequest
from interlockd.backends.registry import BackendRegistry
from interlockd.compute.base import ComputeError
from interlockd.compute.placement import ComputeCharge, Lease, PlacementRequest, Plan
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.config import RunSettings
from interlockd.context.tokens import estimate_tokens
from interlockd.context.window import Budget, assemble, check_message_fits
from interlockd.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderError,
    ProviderSessionLost,
    ProviderUnavailable,
    RunInProgress,
    Unavailable,
)
from interlockd.ids import new_id
from interlockd.pauses import PauseBoard, applies
from interlockd.runs.events import RunEvent, RunFailed, RunFinished, RunStarted
from interlockd.runs.provider_state import StoreProviderState
from interlockd.runs.recording import TurnRecorder, user_entry
from interlockd.runs.request import ComputeChoice, RunInput
from interlockd.store.base import (
    ComputeSessionRecord,
    LedgerRow,
    NewRun,
    Pause,
    Run,
    RunStatus,
    Store,
    WindowEntry,
)
from interlockd.tools.base import Tool, ToolContext
from interlockd.tools.grants import Grant, GrantRegistry, ToolAccess
from interlockd.tools.runner import SandboxToolRunner
from interlockd.tools.selection import RunTools
from interlockd.vocabulary import (
    BackendEvent,
    SessionBound,
    TextDelta,
    ToolCall,
    ToolDispatch,
    ToolResult,
    TurnEnd,
    Usage,
    UsageReport,
)

log = structlog.get_logger(__name__)

#: The message of the cancellation a pause sends into a run's task.
_PAUSED = "interlock: stopped by a pause"
#: The message of the cancellation the daemon's shutdown sends into a run's task.
_SHUTDOWN = "interlock: stopped by the daemon's shutdown"
#: Statuses of runs that did not end on their own: a retry with their request_id
#: resumes them instead of replaying them.
_RESUMABLE = frozenset({"interrupted", "cancelled"})
#: How long stopped runs get to record their output and send their Error event.
_STOP_WAIT_SECONDS = 5.0


@dataclass(slots=True)
class _Progress:
    """What a turn has produced so far, for its bookkeeping at the end."""

    usage: Usage = dataclasses.field(default_factory=Usage)
    #: The provider session the turn ran in (backends that keep sessions);
    #: "" when the backend let go of it.
    session: str | None = None
    #: Self-hosted runtimes: the placement, the session held, the MCP access of
    #: the run's tools, and the compute charge once released.
    plan: Plan | None = None
    lease: Lease | None = None
    grant: Grant[ToolAccess] | None = None
    charge: ComputeCharge | None = None
    agent: str = ""  # the saved agent's slug, for the ledger
    resumed: bool = False  # an earlier attempt of this run recorded entries


@dataclass(slots=True)
class _InFlight:
    """A run in progress, as kill switches see it."""

    sandbox_id: str
    end_user_id: str
    provider: str
    task: asyncio.Task[Any] | None
    paused: Pause | None = None  # set when a pause stops it
    shutdown: bool = False  # set when the daemon's shutdown stops it
    compute_provider: str = ""  # where its runtime was placed (self-hosted runtimes)


@dataclass(frozen=True, slots=True)
class _Turn:
    """A turn resolved and checked, before anything is stored."""

    request: RunInput  # with the saved agent's settings filled in
    provider: str
    model: str
    backend: AgentBackend
    tools: list[Tool]
    budget: Budget
    max_output: int | None
    plan: Plan | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: RunStatus
    stop_reason: str = ""
    error: RunFailed | None = None


class Orchestrator:
    """Runs turns. One instance serves every run of the daemon."""

    def __init__(
        self,
        store: Store,
        backends: BackendRegistry,
        tools: RunTools,
        settings: RunSettings,
        default_provider: str,
        default_models: dict[str, str],
        *,
        dispatch: ToolDispatch | None = None,
    ) -> None:
        """``dispatch``: where hosted agents' tool callbacks reach their runs (the
        daemon's HTTP side); turns of such agents need it."""
        self._store = store
        self._backends = backends
        self._tools = tools
        self._settings = settings
        self._default_provider = default_provider
        self._default_models = default_models
        self._dispatch = dispatch
        self._accepting = True
        self._closing: set[asyncio.Task[object]] = set()
        self._inflight: dict[str, _InFlight] = {}
        #: Tasks inside run(), from admission to the end (shutdown waits for them).
        self._running: set[asyncio.Task[Any]] = set()
        self._pauses: PauseBoard | None = None
        self._compute: ComputeScheduler | None = None
        self._mcp: GrantRegistry[ToolAccess] | None = None

    def use_compute(self, scheduler: ComputeScheduler, mcp: GrantRegistry[ToolAccess]) -> None:
        """Place self-hosted runtimes with ``scheduler``; their tools go through ``mcp``."""
        self._compute = scheduler
        self._mcp = mcp

    def use_pauses(self, board: PauseBoard) -> None:
        """Refuse runs covered by ``board``'s pauses (see :meth:`stop_paused`)."""
        self._pauses = board

    def stop_paused(self, pauses: list[Pause]) -> int:
        """End the runs in flight that ``pauses`` cover, each with an Error event naming
        the pause; return how many."""
        stopped = 0
        for run in self._inflight.values():
            if run.paused is not None or run.task is None:
                continue
            for pause in pauses:
                if applies(
                    pause, run.sandbox_id, run.end_user_id, run.provider, run.compute_provider
                ):
                    run.paused = pause
                    run.task.cancel(_PAUSED)
                    stopped += 1
                    break
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
            for run in self._inflight.values():
                task = run.task
                if task is None or task.done() or run.paused is not None or run.shutdown:
                    continue
                run.shutdown = True
                task.cancel(_SHUTDOWN)
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
            # aclosing: a caller that stops early closes the turn's generators now
            # (their cancellation bookkeeping runs), not whenever they are collected.
            async with contextlib.aclosing(self._run(req)) as events:
                async for event in events:
                    yield event
        finally:
            if task is not None:
                self._running.discard(task)

    async def _run(self, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        if req.request_id:
            previous = await self._store.find_run_by_request_id(req.sandbox_id, req.request_id)
            if previous is not None:
                again = (
                    self._resume(previous, req)
                    if previous.status in _RESUMABLE
                    else self._replay(previous, req)
                )
                async with contextlib.aclosing(again) as events:
                    async for event in events:
                        yield event
                return

        turn = await self._prepare(req)
        run_id = new_id("run")
        conversation_id = req.session_id or new_id("conv")
        user = user_entry(req.message, run_id, turn.provider, turn.model)
        # Admission, the conversation (when new) and the user message in one
        # transaction: durable before the provider sees it, nothing stored if refused.
        try:
            run = await self._store.begin_run(
                NewRun(
                    id=run_id,
                    sandbox_id=req.sandbox_id,
                    end_user_id=req.end_user_id,
                    conversation_id=conversation_id,
                    provider=turn.provider,
                    model=turn.model,
                    request_id=req.request_id,
                    labels=req.labels,
                ),
                create_conversation=not req.session_id,
                entries=[user],
            )
        except BaseException:
            if turn.plan is not None and self._compute is not None:
                self._compute.abandon(turn.plan)
            raise
        async with contextlib.aclosing(self._execute(run, turn)) as events:
            async for event in events:
                yield event

    async def _prepare(self, req: RunInput, pinned: Run | None = None) -> _Turn:
        """Resolve the backend, model, tools, budget and compute plan of a turn; every
        check that can refuse it runs here, before anything is stored. ``pinned``: the
        run being resumed, whose provider and model stay what they were."""
        if req.agent:
            req = await self._with_agent(req)
        if pinned is not None:
            req = dataclasses.replace(req, provider=pinned.provider, model=pinned.model)
        provider = req.provider or self._default_provider
        backend = self._backends.get(provider)
        if self._pauses is not None:
            self._pauses.check(req.sandbox_id, req.end_user_id, provider)
        model = req.model or self._default_models.get(provider, "")
        if not model:
            raise InvalidArgument("model", f"provider {provider!r} has no default model; name one")
        info = backend.model_info(model)
        backend.check_options(req.options)
        selected = await self._tools.for_run(req.sandbox_id, req.end_user_id, req.tools)
        tools = selected if info.supports_tools else []
        specs = [t.spec for t in tools]
        max_output = req.max_output_tokens or None
        budget = Budget.for_model(
            info, system=req.system, tools=specs, max_output_tokens=max_output
        )
        if pinned is None:
            check_message_fits(estimate_tokens(req.message), budget, model)
        plan = await self._plan_compute(req, provider, model) if backend.runtime else None
        return _Turn(req, provider, model, backend, tools, budget, max_output, plan)

    async def _resume(self, run: Run, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """Carry on a run that did not end on its own (the daemon stopped under it, or its
        caller went away), under its request_id: its user message and recorded tool
        results are kept, its calls left without a result are reported "outcome unknown"
        and never run again, and the stream repeats what was recorded, then continues."""
        if run.end_user_id != req.end_user_id:
            raise FailedPrecondition(
                f"request_id {req.request_id!r} was already used for another end user; "
                "use a new request_id"
            )
        turn = await self._prepare(req, pinned=run)
        try:
            resumed = await self._store.resume_run(run.sandbox_id, run.id)
        except BaseException:
            if turn.plan is not None and self._compute is not None:
                self._compute.abandon(turn.plan)
            raise
        log.info("run_resumed", run_id=run.id, provider=run.provider, was=run.status)
        earlier = await self._store.read_run_entries(run.sandbox_id, run.id)
        async with contextlib.aclosing(self._execute(resumed, turn, earlier)) as events:
            async for event in events:
                yield event

    async def _plan_compute(self, req: RunInput, provider: str, model: str) -> Plan:
        """Admit a self-hosted runtime's run on compute (caps, pauses, the policy's choice)."""
        if self._compute is None or not self._compute.providers:
            raise FailedPrecondition(
                f"provider {provider!r} runs on compute and the daemon has no compute "
                "provider; configure [compute]"
            )
        return await self._compute.plan(
            PlacementRequest(
                sandbox_id=req.sandbox_id,
                end_user_id=req.end_user_id,
                agent_key=req.agent or f"{provider}/{model}",
                agent_id=req.agent,
                runtime=provider,
                model=model,
                provider=req.compute.provider,
                policy=req.compute.policy,
                region=req.compute.region,
            )
        )

    async def _with_agent(self, req: RunInput) -> RunInput:
        """``req`` with the saved agent's settings filled in (NotFound if there is none)."""
        saved = await self._store.get_agent(req.sandbox_id, req.agent)
        s = saved.settings
        return dataclasses.replace(
            req,
            provider=s.get("provider", ""),
            model=s.get("model", ""),
            system=s.get("system", ""),
            tools=tuple(s.get("tools", ())),
            max_output_tokens=int(s.get("max_output_tokens", 0)),
            options=dict(s.get("google") or {}),
            max_runtime_seconds=float(s.get("max_runtime_seconds", 0)),
            compute=ComputeChoice(
                provider=req.compute.provider or s.get("compute_provider", ""),
                policy=req.compute.policy or s.get("compute_policy", ""),
                region=req.compute.region or s.get("compute_region", ""),
            ),
        )

    async def _execute(
        self, run: Run, turn: _Turn, earlier: Sequence[WindowEntry] = ()
    ) -> AsyncGenerator[RunEvent, None]:
        """Stream the turn and close the run. ``earlier``: what an earlier attempt of
        this run recorded (a resumed run), streamed again ahead of the new events."""
        req = turn.request
        backend, model, tools, plan = turn.backend, turn.model, turn.tools, turn.plan
        log_ = log.bind(run_id=run.id, provider=run.provider, model=model)
        recorder = TurnRecorder(
            self._store, run.sandbox_id, run.conversation_id, run.id, run.provider, model
        )
        progress = _Progress(plan=plan, agent=req.agent, resumed=bool(earlier))
        started = False
        outcome = _Outcome(status="cancelled", error=None)
        inflight = _InFlight(run.sandbox_id, run.end_user_id, run.provider, asyncio.current_task())
        self._inflight[run.id] = inflight
        prefix: list[RunEvent] = []
        try:
            runner = SandboxToolRunner(
                tools,
                ToolContext(
                    self._store, run.sandbox_id, run.end_user_id, run.conversation_id, run.id
                ),
                recorder,
                self._settings.tool_timeout_seconds,
            )
            if earlier:
                for owed in runner.resume(list(earlier)):
                    await recorder.record_tool_result(owed)
                prefix = _recorded_events(
                    await self._store.read_run_entries(run.sandbox_id, run.id)
                )
            request = TurnRequest(
                model=model,
                messages=(),
                tools=[t.spec for t in tools],
                max_output_tokens=turn.max_output,
                max_tool_iterations=self._settings.max_tool_iterations,
                options=req.options,
                system=req.system,
                state=StoreProviderState(self._store, run.sandbox_id, run.provider),
                user_ref=_user_ref(run.sandbox_id, run.end_user_id),
                dispatch=self._dispatch,
            )
            start = RunStarted(
                run_id=run.id,
                session_id=run.conversation_id,
                provider=run.provider,
                model=model,
                request_id=run.request_id,
            )
            limit = self._settings.max_run_seconds
            if req.max_runtime_seconds:
                limit = min(limit, req.max_runtime_seconds)
            async with asyncio.timeout(limit):
                if plan is not None:
                    inflight.compute_provider = plan.choice.provider
                    mcp = self._mcp

                    def open_tools(record: ComputeSessionRecord) -> None:
                        # Before the runtime starts: it lists its MCP tools at start.
                        if mcp is not None:
                            access = ToolAccess.of(tools, runner)
                            progress.grant = mcp.bind(record.mcp_token, access, limit)

                    lease = progress.lease = await self._lease(plan, run.id, open_tools)
                    request = dataclasses.replace(request, runtime=lease.access)
                events = self._provider_events(run, backend, request, runner, turn.budget, progress)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, SessionBound):
                            progress.session = event.session_id
                            continue
                        if isinstance(event, ToolCall) and not event.provider_executed:
                            # Recorded before the client is shown it.
                            await runner.announce(event)
                        if not started:
                            started = True
                            yield start
                            for replayed in prefix:
                                yield replayed
                        if isinstance(event, TextDelta):
                            recorder.add_text(event.text)
                            yield event
                        elif isinstance(event, UsageReport):
                            progress.usage = progress.usage + event.usage
                        elif isinstance(event, TurnEnd):
                            outcome = _Outcome(status="finished", stop_reason=event.stop_reason)
                            break
                        else:
                            if isinstance(event, ToolCall) and event.provider_executed:
                                await recorder.record_tool_call(event)
                            elif isinstance(event, ToolResult) and event.provider_executed:
                                await recorder.record_tool_result(event)
                            yield event
            if outcome.status != "finished":
                raise ProviderError(run.provider, "the turn ended without a final event")
        except ProviderError as exc:
            outcome = _Outcome(
                status="failed",
                error=RunFailed(exc.code, exc.message, exc.retryable, run.provider),
            )
            log_.warning("run_provider_failed", code=exc.code, error=exc.message)
            if not started:
                await self._close_unstarted(run, recorder, outcome, progress, model)
                raise
        except TimeoutError:
            outcome = _Outcome(
                status="failed",
                error=RunFailed(
                    "DEADLINE_EXCEEDED",
                    f"the turn exceeded its limit of {limit:g} s",
                    False,
                    run.provider,
                ),
            )
        except (asyncio.CancelledError, GeneratorExit) as exc:
            task = asyncio.current_task()
            paused, shutdown = inflight.paused, inflight.shutdown
            if (
                (paused is None and not shutdown)
                or not isinstance(exc, asyncio.CancelledError)
                or task is None
                or task.uncancel() > 0  # cancelled for another reason as well
            ):
                outcome = _Outcome(status="cancelled")
                close = self._close_unstarted if not started else self._close
                await self._shielded(close(run, recorder, outcome, progress, model))
                log_.info("run_cancelled")
                raise
            if shutdown:
                # Resumable: the retry with the same request_id carries the turn on.
                message = (
                    "interlockd is shutting down; retry with the same request_id to resume "
                    "this turn (on another replica, or once the daemon is back)"
                )
                log_.warning("run_interrupted_by_shutdown")
                outcome = _Outcome(
                    status="interrupted", error=RunFailed("UNAVAILABLE", message, True, "")
                )
                if not started:
                    await self._close_unstarted(run, recorder, outcome, progress, model)
                    raise Unavailable(message) from None
            else:
                assert paused is not None
                message = f"the run was stopped by {paused.describe()}"
                log_.warning("run_paused", scope=paused.scope, target=paused.target)
                outcome = _Outcome(
                    status="failed",
                    error=RunFailed("FAILED_PRECONDITION", message, False, run.provider),
                )
                if not started:
                    await self._close_unstarted(run, recorder, outcome, progress, model)
                    raise FailedPrecondition(message) from None
        except Exception:
            log_.exception("run_crashed")
            outcome = _Outcome(
                status="failed",
                error=RunFailed(
                    "INTERNAL",
                    "the router failed while running the turn; what was recorded is kept",
                    False,
                    "",
                ),
            )
            if not started:
                await self._close_unstarted(run, recorder, outcome, progress, model)
                raise
        finished = await self._close(run, recorder, outcome, progress, model)
        if not started:
            yield start
            for replayed in prefix:
                yield replayed
        if outcome.error is not None:
            yield outcome.error
        else:
            yield RunFinished(
                stop_reason=outcome.stop_reason,
                usage=progress.usage,
                token_usd=finished.cost_usd,
                price_version=catalog.PRICE_TABLE_VERSION,
                session_id=run.conversation_id,
                compute_usd=progress.charge.cost_usd if progress.charge else 0.0,
            )

    async def _lease(
        self, plan: Plan, run_id: str, on_session: Callable[[ComputeSessionRecord], None]
    ) -> Lease:
        """The run's compute session; a provider that cannot start it fails the run as
        UNAVAILABLE (retryable: the next attempt may be placed elsewhere)."""
        assert self._compute is not None
        try:
            return await self._compute.acquire(plan, run_id, on_session)
        except ComputeError as exc:
            raise ProviderUnavailable(exc.provider, exc.message) from exc

    async def _provider_events(
        self,
        run: Run,
        backend: AgentBackend,
        request: TurnRequest,
        runner: SandboxToolRunner,
        budget: Budget,
        progress: _Progress,
    ) -> AsyncGenerator[BackendEvent, None]:
        """The backend's events, with the context assembled for it.

        For a backend that keeps sessions, the stored session of the
        conversation is continued with only what it has not seen; if the
        provider lost it, the turn starts over once in a new session with the
        whole window handed over.
        """
        session = None
        if backend.keeps_sessions:
            session = await self._store.get_provider_session(
                run.sandbox_id, run.conversation_id, run.provider
            )
        while True:
            context = await assemble(
                self._store,
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
                await self._store.clear_provider_session(
                    run.sandbox_id, run.conversation_id, run.provider
                )
                session = None
            finally:
                # Close the provider's stream now, not whenever it is collected.
                if isinstance(events, AsyncGenerator):
                    await events.aclose()

    async def _close_unstarted(
        self, run: Run, recorder: TurnRecorder, outcome: _Outcome, progress: _Progress, model: str
    ) -> Run:
        """Close a run that ends before its first event: its caller gets a status, so as
        far as it knows the run did not happen. A run that recorded nothing is withdrawn
        (request_id released, user message taken back: a retry runs it afresh, once); one
        that recorded something (a resumed run, a runtime's tool call) is left
        ``interrupted``, so a retry with its request_id resumes it."""
        if progress.resumed or recorder.recorded:
            err = outcome.error
            outcome = _Outcome(
                status="interrupted",
                error=RunFailed(
                    err.code if err else "CANCELLED",
                    err.message if err else "the caller went away before the run started",
                    True,
                    err.provider if err else "",
                ),
            )
            return await self._close(run, recorder, outcome, progress, model)
        return await self._close(run, recorder, outcome, progress, model, withdraw=True)

    async def _close(
        self,
        run: Run,
        recorder: TurnRecorder,
        outcome: _Outcome,
        progress: _Progress,
        model: str,
        *,
        withdraw: bool = False,
    ) -> Run:
        """Write what the turn produced and its final state, ledger included."""
        self._inflight.pop(run.id, None)
        if progress.grant is not None:
            progress.grant.close()
        if progress.plan is not None and self._compute is not None:
            # The meter stops here, whatever ended the run.
            progress.charge = await self._compute.release(progress.lease, progress.plan)
        usage = progress.usage
        cost = catalog.cost_usd(catalog.price(run.provider, model), usage)
        ledger = []
        if usage != Usage():
            ledger.append(
                LedgerRow(
                    run_id=run.id,
                    sandbox_id=run.sandbox_id,
                    end_user_id=run.end_user_id,
                    kind="tokens",
                    provider=run.provider,
                    model=model,
                    usage=usage,
                    cost_usd=cost,
                    price_version=catalog.PRICE_TABLE_VERSION,
                    agent_id=progress.agent,
                )
            )
        if progress.charge is not None:
            ledger.append(
                LedgerRow(
                    run_id=run.id,
                    sandbox_id=run.sandbox_id,
                    end_user_id=run.end_user_id,
                    kind="compute",
                    provider=progress.charge.provider,
                    model=model,
                    usage=Usage(),
                    cost_usd=progress.charge.cost_usd,
                    price_version=progress.charge.price_version,
                    compute_seconds=progress.charge.seconds,
                    agent_id=progress.agent,
                )
            )
        err = outcome.error
        # The provider's session: let go ("": the provider terminated it, or it
        # holds the user message a withdrawn run takes back from the window), or
        # recorded as having seen every entry of the turn, in the same transaction.
        session = progress.session
        if withdraw and session is not None:
            session = ""
        finished = await self._store.finish_run(
            run.id,
            status=outcome.status,
            stop_reason=outcome.stop_reason,
            error_code=err.code if err else ("CANCELLED" if outcome.status == "cancelled" else ""),
            error_message=err.message if err else "",
            usage=usage,
            cost_usd=cost,
            ledger=ledger,
            entries=recorder.take_text(),
            withdraw=withdraw,
            provider_session=session,
        )
        log.info(
            "run_finished",
            run_id=run.id,
            provider=run.provider,
            model=model,
            status=finished.status,
            stop_reason=finished.stop_reason,
            error_code=finished.error_code,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            seconds=round(
                (finished.finished_at or finished.started_at).timestamp()
                - finished.started_at.timestamp(),
                3,
            ),
        )
        return finished

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

    async def _replay(self, run: Run, req: RunInput) -> AsyncGenerator[RunEvent, None]:
        """The recorded events of a run that already happened, instead of running it again."""
        if run.end_user_id != req.end_user_id:
            raise FailedPrecondition(
                f"request_id {req.request_id!r} was already used for another end user; "
                "use a new request_id"
            )
        if run.status == "running":
            raise RunInProgress(
                f"the run with request_id {req.request_id!r} is still in progress; "
                "retry when it has finished to get its replay"
            )
        yield RunStarted(
            run_id=run.id,
            session_id=run.conversation_id,
            provider=run.provider,
            model=run.model,
            request_id=run.request_id,
            replayed=True,
        )
        for event in _recorded_events(await self._store.read_run_entries(run.sandbox_id, run.id)):
            yield event
        if run.status == "finished":
            ledger = await self._store.list_ledger(run.sandbox_id, run.id)
            yield RunFinished(
                stop_reason=run.stop_reason,
                usage=run.usage,
                token_usd=run.cost_usd,
                price_version=catalog.PRICE_TABLE_VERSION,
                session_id=run.conversation_id,
                compute_usd=sum(r.cost_usd for r in ledger if r.kind == "compute"),
            )
        else:
            yield RunFailed(
                run.error_code or "ABORTED",
                run.error_message or f"the original run ended {run.status}",
                retryable=False,
                provider=run.provider,
            )


def _user_ref(sandbox_id: str, end_user_id: str) -> str:
    """An opaque, stable id of an end user for providers that keep per-user state."""
    digest = hashlib.sha256(f"{sandbox_id}\0{end_user_id}".encode()).hexdigest()
    return f"u-{digest[:32]}"


def _recorded_events(entries: Sequence[WindowEntry]) -> list[RunEvent]:
    """The stream events of what a run recorded (its user message is not one)."""
    events: list[RunEvent] = []
    for entry in entries:
        if entry.kind == "assistant":
            events.append(TextDelta(entry.text))
        elif entry.kind == "tool_call":
            events.append(ToolCall(entry.tool_call_id, entry.tool_name, entry.text))
        elif entry.kind == "tool_result":
            events.append(
                _stored_result(entry.tool_call_id, entry.tool_name, entry.text, entry.is_error)
            )
    return events


def _stored_result(call_id: str, name: str, text: str, is_error: bool) -> ToolResult:
    if is_error:
        return ToolResult(call_id, name, "", error=str(orjson.loads(text).get("error", "")))
    return ToolResult(call_id, name, text)
