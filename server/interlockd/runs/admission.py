"""Admitting a turn: everything that can refuse it, then its run in the store.

Phase one of a turn (admit → place → stream → settle). :meth:`Admission.prepare`
resolves the saved agent, the backend and model, the run's tools and the
context budget, checks pauses and the message size, and plans compute for a
self-hosted runtime — all before anything is stored. :meth:`Admission.begin`
then records the run, the conversation when it is new and the user message in
one store transaction (quotas and one turn per conversation enforced there);
:meth:`Admission.resume` re-admits a run that did not end on its own. A refused
run stores nothing and gives its compute plan back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from interlockd.backends.base import AgentBackend
from interlockd.backends.registry import BackendRegistry
from interlockd.compute.placement import PlacementRequest, Plan
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.context.tokens import estimate_tokens
from interlockd.context.window import Budget, check_message_fits
from interlockd.errors import FailedPrecondition, InvalidArgument
from interlockd.ids import new_id
from interlockd.pauses import PauseBoard
from interlockd.runs.leases import RunLeases
from interlockd.runs.recording import user_entry
from interlockd.runs.request import ComputeChoice, RunInput
from interlockd.runs.reservation import worst_case_usd
from interlockd.store.base import Lease, NewRun, Run, Store
from interlockd.tools.base import Tool
from interlockd.tools.selection import RunTools

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A turn resolved and checked, before anything is stored."""

    request: RunInput  # with the saved agent's settings filled in
    provider: str
    model: str
    backend: AgentBackend
    tools: list[Tool]
    budget: Budget
    max_output: int | None
    plan: Plan | None
    #: The worst-case USD the run reserves against its budgets (runs/reservation.py).
    reserve_usd: float = 0.0


class Admission:
    """Resolves and admits turns; one instance serves the daemon."""

    def __init__(
        self,
        store: Store,
        backends: BackendRegistry,
        tools: RunTools,
        default_provider: str,
        default_models: dict[str, str],
        *,
        pauses: PauseBoard | None = None,
        compute: ComputeScheduler | None = None,
        estimates: Mapping[str, float] | None = None,
        leases: RunLeases | None = None,
    ) -> None:
        self._store = store
        self._estimates = dict(estimates or {})  # provider -> estimate_usd_per_run
        self._leases = leases
        self._backends = backends
        self._tools = tools
        self._default_provider = default_provider
        self._default_models = default_models
        self._pauses = pauses
        self._compute = compute

    async def prepare(self, req: RunInput, pinned: Run | None = None) -> Prepared:
        """Resolve and check a turn; ``pinned``: the run being resumed, whose provider
        and model stay what they were (and whose message is already stored)."""
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
        max_output = req.max_output_tokens or None
        budget = Budget.for_model(
            info, system=req.system, tools=[t.spec for t in tools], max_output_tokens=max_output
        )
        if pinned is None:
            check_message_fits(estimate_tokens(req.message), budget, model)
        plan = await self._plan_compute(req, provider, model) if backend.runtime else None
        reserve = worst_case_usd(
            provider,
            model,
            info,
            budget,
            max_output,
            message=req.message,
            new_conversation=not req.session_id and pinned is None,
            estimate_usd=self._estimates.get(provider, 0.0),
        )
        return Prepared(req, provider, model, backend, tools, budget, max_output, plan, reserve)

    async def begin(
        self, prepared: Prepared, admitted: Callable[[Run], Awaitable[None]] | None = None
    ) -> Run:
        """Record the new run, its conversation when new and its user message, in one
        transaction: nothing stored if refused, durable when this returns.

        ``admitted`` is awaited once the run is admitted, before the commit (see
        :meth:`Store.begin_run`): the provider call may begin meanwhile.
        """
        req = prepared.request
        run_id = new_id("run")
        new = NewRun(
            id=run_id,
            sandbox_id=req.sandbox_id,
            end_user_id=req.end_user_id,
            conversation_id=req.session_id or new_id("conv"),
            provider=prepared.provider,
            model=prepared.model,
            request_id=req.request_id,
            labels=req.labels,
            agent=req.agent,
            reserve_usd=prepared.reserve_usd,
        )
        user = user_entry(req.message, run_id, prepared.provider, prepared.model)
        return await self._or_abandon(
            prepared,
            self._store.begin_run(
                new,
                create_conversation=not req.session_id,
                entries=[user],
                lease=self._lease(),
                admitted=admitted,
            ),
        )

    async def resume(self, run: Run, prepared: Prepared) -> Run:
        """Admit ``run`` (interrupted or cancelled) again, under today's quotas."""
        return await self._or_abandon(
            prepared, self._store.resume_run(run.sandbox_id, run.id, lease=self._lease())
        )

    def _lease(self) -> Lease | None:
        return self._leases.lease() if self._leases is not None else None

    async def _or_abandon(self, prepared: Prepared, admitting: Awaitable[T]) -> T:
        """``admitting``'s result; if it refuses, the compute plan is given back."""
        try:
            return await admitting
        except BaseException:
            if prepared.plan is not None and self._compute is not None:
                self._compute.abandon(prepared.plan)
            raise

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
