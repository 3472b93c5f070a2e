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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from interlockd.backends import catalog
from interlockd.backends.base import (
    AgentBackend,
    BackendEvent,
    SessionBound,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    TurnRequest,
    Usage,
    UsageReport,
)
from interlockd.backends.registry import BackendRegistry
from interlockd.compute.base import ComputeError
from interlockd.compute.scheduler import (
    ComputeCharge,
    ComputeScheduler,
    Lease,
    PlacementRequest,
    Plan,
)
from interlockd.config import RunSettings
from interlockd.context.tokens import estimate_tokens
from interlockd.context.window import Budget, assemble, check_message_fits
from interlockd.errors import (
    FailedPrecondition,
    InvalidArgument,
    ProviderError,
    ProviderSessionLost,
    ProviderUnavailable,
    Unavailable,
)
from interlockd.http.mcp_access import McpAccessRegistry, McpGrant
from interlockd.ids import new_id
from interlockd.integrations.registry import RunTools
from interlockd.integrations.tools import Tool, ToolContext
from interlockd.runs.events import RunEvent, RunFailed, RunFinished, RunStarted
from interlockd.runs.pauses import PauseBoard, applies
from interlockd.runs.provider_state import StoreProviderState
from interlockd.runs.recording import SandboxToolRunner, TurnRecorder, user_entry
from interlockd.runs.request import ComputeChoice, RunInput
from interlockd.store.base import (
    ComputeSessionRecord,
    LedgerRow,
    NewRun,
    Pause,
    Run,
    RunStatus,
    Store,
)

log = structlog.get_logger(__name__)

#: The message of the cancellation a pause sends into a run's task.
_PAUSED = "interlock: stopped by a pause"


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
    grant: McpGrant | None = None
    charge: ComputeCharge | None = None
    agent: str = ""  # the saved agent's slug, for the ledger


@dataclass(slots=True)
class _InFlight:
    """A run in progress, as kill switches see it."""

    sandbox_id: str
    end_user_id: str
    provider: str
    task: asyncio.Task[Any] | None
    paused: Pause | None = None  # set when a pause stops it
    compute_provider: str = ""  # where its runtime was placed (self-hosted runtimes)


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
    ) -> None:
        self._store = store
        self._backends = backends
        self._tools = tools
        self._settings = settings
        self._default_provider = default_provider
        self._default_models = default_models
        self._accepting = True
        self._closing: set[asyncio.Task[object]] = set()
        self._inflight: dict[str, _InFlight] = {}
        self._pauses: PauseBoard | None = None
        self._compute: ComputeScheduler | None = None
        self._mcp: McpAccessRegistry | None = None

    def use_compute(self, scheduler: ComputeScheduler, mcp: McpAccessRegistry) -> None:
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

    async def drain(self, within: float) -> None:
        """Wait for cancelled runs to finish recording what they produced."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=within)

    async def run(self, req: RunInput) -> AsyncIterator[RunEvent]:
        """Run one turn, yielding its events; raise InterlockError before the first one."""
        if not self._accepting:
            raise Unavailable("the daemon is shutting down; retry on another replica")
        if req.request_id:
            previous = await self._store.find_run_by_request_id(req.sandbox_id, req.request_id)
            if previous is not None:
                async for event in self._replay(previous, req):
                    yield event
                return

        if req.agent:
            req = await self._with_agent(req)
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
        check_message_fits(estimate_tokens(req.message), budget, model)

        plan = await self._plan_compute(req, provider, model) if backend.runtime else None

        run_id = new_id("run")
        conversation_id = req.session_id or new_id("conv")
        user = user_entry(req.message, run_id, provider, model)
        # Admission, the conversation (when new) and the user message in one
        # transaction: durable before the provider sees it, nothing stored if refused.
        try:
            run = await self._store.begin_run(
                NewRun(
                    id=run_id,
                    sandbox_id=req.sandbox_id,
                    end_user_id=req.end_user_id,
                    conversation_id=conversation_id,
                    provider=provider,
                    model=model,
                    request_id=req.request_id,
                    labels=req.labels,
                ),
                create_conversation=not req.session_id,
                entries=[user],
            )
        except BaseException:
            if plan is not None and self._compute is not None:
                self._compute.abandon(plan)
            raise
        async for event in self._execute(run, req, backend, model, tools, budget, max_output, plan):
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
        self,
        run: Run,
        req: RunInput,
        backend: AgentBackend,
        model: str,
        tools: list[Tool],
        budget: Budget,
        max_output: int | None,
        plan: Plan | None = None,
    ) -> AsyncIterator[RunEvent]:
        log_ = log.bind(run_id=run.id, provider=run.provider, model=model)
        recorder = TurnRecorder(
            self._store, run.sandbox_id, run.conversation_id, run.id, run.provider, model
        )
        progress = _Progress(plan=plan, agent=req.agent)
        started = False
        outcome = _Outcome(status="cancelled", error=None)
        inflight = _InFlight(run.sandbox_id, run.end_user_id, run.provider, asyncio.current_task())
        self._inflight[run.id] = inflight
        try:
            runner = SandboxToolRunner(
                tools,
                ToolContext(
                    self._store, run.sandbox_id, run.end_user_id, run.conversation_id, run.id
                ),
                recorder,
                self._settings.tool_timeout_seconds,
            )
            request = TurnRequest(
                model=model,
                messages=(),
                tools=[t.spec for t in tools],
                max_output_tokens=max_output,
                max_tool_iterations=self._settings.max_tool_iterations,
                options=req.options,
                system=req.system,
                state=StoreProviderState(self._store, run.sandbox_id, run.provider),
                user_ref=_user_ref(run.sandbox_id, run.end_user_id),
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
                            progress.grant = mcp.bind(record.mcp_token, tools, runner, limit)

                    lease = progress.lease = await self._lease(plan, run.id, open_tools)
                    request = dataclasses.replace(request, runtime=lease.access)
                events = self._provider_events(run, backend, request, runner, budget, progress)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, SessionBound):
                            progress.session = event.session_id
                            continue
                        if not started:
                            started = True
                            yield start
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
                error=RunFailed(exc.code.name, exc.message, exc.retryable, run.provider),
            )
            log_.warning("run_provider_failed", code=exc.code.name, error=exc.message)
            if not started:
                await self._close(run, recorder, outcome, progress, model)
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
            paused = inflight.paused
            if (
                paused is None
                or not isinstance(exc, asyncio.CancelledError)
                or task is None
                or task.uncancel() > 0  # cancelled for another reason as well
            ):
                outcome = _Outcome(status="cancelled")
                await self._shielded(self._close(run, recorder, outcome, progress, model))
                log_.info("run_cancelled")
                raise
            message = f"the run was stopped by {paused.describe()}"
            log_.warning("run_paused", scope=paused.scope, target=paused.target)
            outcome = _Outcome(
                status="failed",
                error=RunFailed("FAILED_PRECONDITION", message, False, run.provider),
            )
            if not started:
                await self._close(run, recorder, outcome, progress, model)
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
                await self._close(run, recorder, outcome, progress, model)
                raise
        finished = await self._close(run, recorder, outcome, progress, model)
        if not started:
            yield start
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

    async def _close(
        self, run: Run, recorder: TurnRecorder, outcome: _Outcome, progress: _Progress, model: str
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
        )
        if progress.session == "":
            # The backend let go of the session (e.g. the provider terminated it).
            await self._store.clear_provider_session(
                run.sandbox_id, run.conversation_id, run.provider
            )
        elif progress.session is not None:
            # The provider's session has now seen every entry of the turn.
            newest = await self._store.read_entries(
                run.sandbox_id, run.conversation_id, limit=1, newest_first=True
            )
            await self._store.set_provider_session(
                run.sandbox_id,
                run.conversation_id,
                run.provider,
                progress.session,
                newest[0].seq if newest else 0,
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

    async def _replay(self, run: Run, req: RunInput) -> AsyncIterator[RunEvent]:
        """The recorded events of a run that already happened, instead of running it again."""
        if run.end_user_id != req.end_user_id:
            raise FailedPrecondition(
                f"request_id {req.request_id!r} was already used for another end user; "
                "use a new request_id"
            )
        if run.status == "running":
            raise FailedPrecondition(
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
        for entry in await self._store.read_run_entries(run.sandbox_id, run.id):
            if entry.kind == "assistant":
                yield TextDelta(entry.text)
            elif entry.kind == "tool_call":
                yield ToolCall(entry.tool_call_id, entry.tool_name, entry.text)
            elif entry.kind == "tool_result":
                yield _stored_result(
                    entry.tool_call_id, entry.tool_name, entry.text, entry.is_error
                )
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


def _stored_result(call_id: str, name: str, text: str, is_error: bool) -> ToolResult:
    if is_error:
        return ToolResult(call_id, name, "", error=str(orjson.loads(text).get("error", "")))
    return ToolResult(call_id, name, text)
