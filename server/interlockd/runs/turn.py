"""One admitted turn, from placement to settlement: place → stream → settle.

A :class:`Turn` holds what a run produces while it runs — its recorder and tool
runner, usage, provider session, compute lease — and carries the three phases
after admission (runs/admission.py):

- :meth:`Turn.place`: a self-hosted runtime's compute session is acquired and
  the run's tools opened to it over MCP (other backends: nothing to do);
- :meth:`Turn.stream`: the backend's events become the run's events — text
  buffered for the window, tool calls recorded before the client sees them,
  RunStarted held back until the provider's first event;
- :meth:`Turn.settle`: the grant closed, the meter stopped, and the run's
  final state, output, ledger rows and provider session written in one store
  call (runs/settle.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from interlockd.backends import catalog
from interlockd.backends.base import TurnRequest
from interlockd.compute.base import ComputeError
from interlockd.compute.placement import ComputeCharge
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.config import RunSettings
from interlockd.errors import ProviderError, ProviderUnavailable
from interlockd.runs.admission import Prepared
from interlockd.runs.events import RunEvent, RunFinished, RunStarted
from interlockd.runs.outcome import Outcome, Stops
from interlockd.runs.provider_state import StoreProviderState
from interlockd.runs.recording import TurnRecorder
from interlockd.runs.replay import recorded_events
from interlockd.runs.settle import Progress, settle
from interlockd.runs.stream import ProviderCall
from interlockd.store.base import ComputeSessionRecord, Run, Store, WindowEntry
from interlockd.tools.base import ToolContext
from interlockd.tools.dispatch import Dispatch
from interlockd.tools.grants import GrantRegistry, ToolAccess
from interlockd.tools.runner import SandboxToolRunner
from interlockd.tools.shared_grants import SharedGrants
from interlockd.vocabulary import (
    SessionBound,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnEnd,
    UsageReport,
)


@dataclass(frozen=True, slots=True)
class TurnDeps:
    """What every turn uses, shared by the daemon's turns."""

    store: Store
    settings: RunSettings
    dispatch: Dispatch | None = None
    compute: ComputeScheduler | None = None
    mcp: GrantRegistry[ToolAccess] | None = None
    #: Where the run's tokens are published for the other processes (None: nowhere).
    grants: SharedGrants | None = None


class Turn:
    """One admitted run while it runs; see the module docstring for its phases."""

    def __init__(
        self, deps: TurnDeps, run: Run, prepared: Prepared, task: asyncio.Task[Any] | None
    ) -> None:
        self.deps, self.run, self.prepared, self.task = deps, run, prepared, task
        #: When admission had recorded it (time.monotonic): lease renewals begun
        #: later must find it held.
        self.admitted_at = time.monotonic()
        self.recorder = TurnRecorder(
            deps.store, run.sandbox_id, run.conversation_id, run.id, run.provider, prepared.model
        )
        context = ToolContext(
            deps.store, run.sandbox_id, run.end_user_id, run.conversation_id, run.id
        )
        self.runner = SandboxToolRunner(
            prepared.tools, context, self.recorder, deps.settings.tool_timeout_seconds
        )
        self.progress = Progress(plan=prepared.plan, agent=prepared.request.agent)
        self.stops = Stops()
        self.started = False
        self.compute_provider = ""  # where its runtime was placed (self-hosted runtimes)
        self.prefix: list[RunEvent] = []  # an earlier attempt's events, streamed first
        self.outcome: Outcome | None = None  # set by the stream's TurnEnd
        #: The provider call begun while the run's admission committed, if it was.
        self.early: ProviderCall | None = None
        limit = deps.settings.max_run_seconds
        if prepared.request.max_runtime_seconds:
            limit = min(limit, prepared.request.max_runtime_seconds)
        self.limit = limit

    async def carry_on(self, earlier: Sequence[WindowEntry]) -> None:
        """Take in what an earlier attempt of this run recorded (a resumed run): its
        calls left without a result are answered "outcome unknown" (recorded), and
        everything is streamed again ahead of the new events."""
        if not earlier:
            return
        self.progress.resumed = True
        for owed in self.runner.resume(list(earlier)):
            await self.recorder.record_tool_result(owed)
        entries = await self.deps.store.read_run_entries(self.run.sandbox_id, self.run.id)
        self.prefix = recorded_events(entries)

    async def open_early(self, *, new_conversation: bool) -> None:
        """Begin the provider call while the run's admission commits (runs/stream.py);
        not for a self-hosted runtime, which needs its session placed first."""
        if self.prepared.plan is not None:
            return
        self.early = self._call(self.request())
        await self.early.begin_early(
            message=self.prepared.request.message, new_conversation=new_conversation
        )

    async def discard_opening(self) -> None:
        """Stop the call :meth:`open_early` began (the run's admission did not commit)."""
        early, self.early = self.early, None
        if early is not None:
            await early.close()

    async def place(self) -> TurnRequest:
        """The turn's request, with a self-hosted runtime's session acquired for it."""
        if self.early is not None:
            return self.early.request
        prepared, request = self.prepared, self.request()
        plan, compute, mcp = prepared.plan, self.deps.compute, self.deps.mcp
        if plan is None or compute is None:
            return request
        self.compute_provider = plan.choice.provider

        async def open_tools(record: ComputeSessionRecord) -> None:
            # Before the runtime starts: it lists its MCP tools at start, maybe
            # through another replica (which finds the token in the store).
            if mcp is not None:
                access = ToolAccess.of(prepared.tools, self.runner)
                self.progress.grant = mcp.bind(record.mcp_token, access, self.limit)
                if self.deps.grants is not None:
                    await self.deps.grants.publish(
                        record.mcp_token,
                        sandbox_id=self.run.sandbox_id,
                        run_id=self.run.id,
                        kind="mcp",
                        ttl=self.limit,
                    )

        try:
            lease = await compute.acquire(plan, self.run.id, open_tools)
        except ComputeError as exc:
            # Retryable: the next attempt may be placed elsewhere.
            raise ProviderUnavailable(exc.provider, exc.message) from exc
        self.progress.lease = lease
        return dataclasses.replace(request, runtime=lease.access)

    def request(self) -> TurnRequest:
        prepared, run = self.prepared, self.run
        return TurnRequest(
            model=prepared.model,
            messages=(),
            tools=[t.spec for t in prepared.tools],
            max_output_tokens=prepared.max_output,
            max_tool_iterations=self.deps.settings.max_tool_iterations,
            options=prepared.request.options,
            system=prepared.request.system,
            state=StoreProviderState(self.deps.store, run.sandbox_id, run.provider),
            user_ref=_user_ref(run.sandbox_id, run.end_user_id),
            dispatch=(
                self.deps.dispatch.for_run(run.sandbox_id, run.id)
                if self.deps.dispatch is not None
                else None
            ),
        )

    async def stream(self, request: TurnRequest) -> AsyncGenerator[RunEvent, None]:
        """The run's events from the backend's; ends at TurnEnd (``self.outcome``)."""
        call, self.early = self.early or self._call(request), None
        try:
            while (event := await call.next()) is not None:
                if isinstance(event, SessionBound):
                    self.progress.session = event.session_id
                    continue
                if isinstance(event, ToolCall) and not event.provider_executed:
                    await self.runner.announce(event)  # recorded before the client sees it
                if not self.started:
                    for first in self.opening():
                        yield first
                if isinstance(event, UsageReport):
                    self.progress.usage = self.progress.usage + event.usage
                elif isinstance(event, TurnEnd):
                    self.outcome = Outcome("finished", stop_reason=event.stop_reason)
                    return
                else:
                    await self._record(event)
                    yield event
        finally:
            await call.close()
        raise ProviderError(self.run.provider, "the turn ended without a final event")

    def _call(self, request: TurnRequest) -> ProviderCall:
        return ProviderCall(
            self.deps.store,
            self.run,
            self.prepared.backend,
            request,
            self.runner,
            self.prepared.budget,
            self.progress,
        )

    async def _record(self, event: RunEvent) -> None:
        """Buffer text; record what a provider ran itself (the runner records the rest)."""
        if isinstance(event, TextDelta):
            self.recorder.add_text(event.text)
        elif isinstance(event, ToolCall) and event.provider_executed:
            await self.recorder.record_tool_call(event)
        elif isinstance(event, ToolResult) and event.provider_executed:
            await self.recorder.record_tool_result(event)

    def opening(self) -> list[RunEvent]:
        """RunStarted and an earlier attempt's events, once: the stream has started."""
        if self.started:
            return []
        self.started = True
        run = self.run
        start = RunStarted(
            run_id=run.id,
            session_id=run.conversation_id,
            provider=run.provider,
            model=self.prepared.model,
            request_id=run.request_id,
        )
        return [start, *self.prefix]

    async def settle(self, outcome: Outcome, *, unstarted: bool = False) -> Run:
        """Close the run with ``outcome`` (see runs/settle.py; ``unstarted``: nothing
        was streamed, so the caller gets a status instead)."""
        return await settle(
            self.deps.store,
            self.deps.compute,
            self.run,
            self.prepared.model,
            self.recorder,
            self.progress,
            outcome,
            unstarted=unstarted,
        )

    def ending(self, outcome: Outcome, finished: Run) -> RunEvent:
        """The last event of a settled run that streamed: its Error, or Finish."""
        if outcome.error is not None:
            return outcome.error
        charge: ComputeCharge | None = self.progress.charge
        return RunFinished(
            stop_reason=outcome.stop_reason,
            usage=self.progress.usage,
            token_usd=finished.cost_usd,
            price_version=catalog.PRICE_TABLE_VERSION,
            session_id=self.run.conversation_id,
            compute_usd=charge.cost_usd if charge else 0.0,
        )


def _user_ref(sandbox_id: str, end_user_id: str) -> str:
    """An opaque, stable id of an end user for providers that keep per-user state."""
    digest = hashlib.sha256(f"{sandbox_id}\0{end_user_id}".encode()).hexdigest()
    return f"u-{digest[:32]}"
