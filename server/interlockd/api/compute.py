"""The Compute servicer: kill switches (operator key), compute sessions, providers and
placements (a sandbox key for its own sandbox, or the operator key).

Setting a pause refreshes the pause board at once, which stops this replica's
runs in flight that the pause covers; other replicas see it within their
refresh period.
"""

from __future__ import annotations

from interlock.v1 import compute_pb2 as pb
from interlockd.api import validation as v
from interlockd.api.auth import Authenticator
from interlockd.api.handlers import Context, unary
from interlockd.api.sandboxes import timestamp
from interlockd.compute.scheduler import ComputeScheduler
from interlockd.errors import InvalidArgument, NotFound
from interlockd.pauses import PauseBoard
from interlockd.runs.orchestrator import Orchestrator
from interlockd.store.base import ComputeSessionRecord, ComputeStatus, Pause, PauseScope, Store

_SCOPES: dict[int, PauseScope] = {
    pb.PAUSE_SCOPE_GLOBAL: "global",
    pb.PAUSE_SCOPE_END_USER: "end_user",
    pb.PAUSE_SCOPE_AGENT_PROVIDER: "agent_provider",
    pb.PAUSE_SCOPE_COMPUTE_PROVIDER: "compute_provider",
}
_PROTO_SCOPES = {name: value for value, name in _SCOPES.items()}

_STATUSES: dict[int, ComputeStatus] = {
    pb.COMPUTE_SESSION_STATUS_CREATING: "creating",
    pb.COMPUTE_SESSION_STATUS_RUNNING: "running",
    pb.COMPUTE_SESSION_STATUS_SUSPENDED: "suspended",
    pb.COMPUTE_SESSION_STATUS_ARCHIVED: "archived",
    pb.COMPUTE_SESSION_STATUS_DESTROYED: "destroyed",
    pb.COMPUTE_SESSION_STATUS_FAILED: "failed",
}
_PROTO_STATUSES = {name: value for value, name in _STATUSES.items()}


def session_proto(r: ComputeSessionRecord) -> pb.ComputeSession:
    return pb.ComputeSession(
        id=r.id,
        sandbox_id=r.sandbox_id,
        end_user_id=r.end_user_id,
        agent=r.agent_key,
        runtime=r.runtime,
        provider=r.provider,
        external_id=r.external_id,
        status=_PROTO_STATUSES[r.status],  # type: ignore[arg-type]
        region=r.region,
        endpoint=r.endpoint,
        tags={k: val for k, val in r.tags.items() if k != "model"},
        active_seconds=r.active_seconds,
        create_time=timestamp(r.created_at),
        update_time=timestamp(r.updated_at),
        last_active_time=timestamp(r.last_active_at),
    )


def pause_proto(p: Pause) -> pb.Pause:
    return pb.Pause(
        scope=_PROTO_SCOPES[p.scope],  # type: ignore[arg-type]
        sandbox_id=p.sandbox_id,
        target=p.target,
        reason=p.reason,
        create_time=timestamp(p.created_at),
    )


def _coordinates(scope: int, sandbox_id: str, target: str) -> tuple[PauseScope, str, str]:
    name = _SCOPES.get(scope)
    if name is None:
        raise InvalidArgument(
            "scope", "is required: global, end_user, agent_provider or compute_provider"
        )
    sandbox = v.identifier(sandbox_id, "sandbox_id", required=False)
    if name == "global":
        if sandbox or target:
            raise InvalidArgument("target", "a global pause has no sandbox_id or target")
        return name, "", ""
    if name == "end_user":
        if not sandbox:
            raise InvalidArgument("sandbox_id", "is required for an end_user pause")
        return name, sandbox, v.end_user_id(target, "target")
    if not target:
        raise InvalidArgument("target", f"is required for a {name} pause: the provider's name")
    return name, sandbox, v.short_text(target, "target", 64)


class ComputeServicer:
    def __init__(
        self,
        auth: Authenticator,
        store: Store,
        board: PauseBoard,
        orchestrator: Orchestrator,
        scheduler: ComputeScheduler,
    ) -> None:
        self._auth = auth
        self._store = store
        self._board = board
        self._orchestrator = orchestrator
        self._scheduler = scheduler

    async def _session(self, session_id: str, context: Context) -> ComputeSessionRecord:
        """The session the caller may operate; NOT_FOUND for another sandbox's."""
        caller = await self._auth.sandbox_or_operator(context)
        v.identifier(session_id, "session_id")
        record = await self._store.get_compute_session(session_id)
        if caller is not None and record.sandbox_id != caller:
            raise NotFound(f"compute session {session_id} not found")
        return record

    @unary
    async def SetPause(self, request: pb.SetPauseRequest, context: Context) -> pb.SetPauseResponse:
        await self._auth.operator(context)
        scope, sandbox_id, target = _coordinates(request.scope, request.sandbox_id, request.target)
        reason = v.short_text(request.reason, "reason", 256)
        if sandbox_id:
            await self._store.get_sandbox(sandbox_id)  # NOT_FOUND for an unknown sandbox
        pause = await self._store.set_pause(
            scope, sandbox_id=sandbox_id, target=target, reason=reason
        )
        stopped = self._orchestrator.stop_paused([pause])
        await self._board.refresh()
        return pb.SetPauseResponse(pause=pause_proto(pause), stopped_runs=stopped)

    @unary
    async def ClearPause(
        self, request: pb.ClearPauseRequest, context: Context
    ) -> pb.ClearPauseResponse:
        await self._auth.operator(context)
        scope, sandbox_id, target = _coordinates(request.scope, request.sandbox_id, request.target)
        cleared = await self._store.clear_pause(scope, sandbox_id=sandbox_id, target=target)
        await self._board.refresh()
        return pb.ClearPauseResponse(cleared=cleared)

    @unary
    async def ListPauses(
        self, request: pb.ListPausesRequest, context: Context
    ) -> pb.ListPausesResponse:
        await self._auth.operator(context)
        return pb.ListPausesResponse(
            pauses=[pause_proto(p) for p in await self._store.list_pauses()]
        )

    @unary
    async def ListComputeSessions(
        self, request: pb.ListComputeSessionsRequest, context: Context
    ) -> pb.ListComputeSessionsResponse:
        caller = await self._auth.sandbox_or_operator(context)
        sandbox_id = v.identifier(request.sandbox_id, "sandbox_id", required=False)
        if caller is not None and sandbox_id and sandbox_id != caller:
            raise InvalidArgument(
                "sandbox_id", "a sandbox API key lists its own sandbox only; leave it empty"
            )
        status = _STATUSES.get(request.status)
        if request.status and status is None:
            raise InvalidArgument("status", f"unknown status {request.status}")
        statuses: tuple[ComputeStatus, ...] = (
            (status,)
            if status is not None
            else ("creating", "running", "suspended", "archived", "failed")
        )
        records = await self._store.list_compute_sessions(
            caller or sandbox_id or None,
            end_user_id=v.short_text(request.end_user_id, "end_user_id", 128),
            agent_key=v.short_text(request.agent, "agent", 256),
            provider=v.short_text(request.provider, "provider", 64),
            statuses=statuses,
        )
        return pb.ListComputeSessionsResponse(sessions=[session_proto(r) for r in records])

    @unary
    async def SuspendComputeSession(
        self, request: pb.SuspendComputeSessionRequest, context: Context
    ) -> pb.SuspendComputeSessionResponse:
        record = await self._session(request.session_id, context)
        return pb.SuspendComputeSessionResponse(
            session=session_proto(await self._scheduler.suspend(record.id))
        )

    @unary
    async def ResumeComputeSession(
        self, request: pb.ResumeComputeSessionRequest, context: Context
    ) -> pb.ResumeComputeSessionResponse:
        record = await self._session(request.session_id, context)
        return pb.ResumeComputeSessionResponse(
            session=session_proto(await self._scheduler.resume(record.id))
        )

    @unary
    async def DestroyComputeSession(
        self, request: pb.DestroyComputeSessionRequest, context: Context
    ) -> pb.DestroyComputeSessionResponse:
        record = await self._session(request.session_id, context)
        return pb.DestroyComputeSessionResponse(
            session=session_proto(await self._scheduler.destroy(record.id))
        )

    @unary
    async def ListComputeProviders(
        self, request: pb.ListComputeProvidersRequest, context: Context
    ) -> pb.ListComputeProvidersResponse:
        await self._auth.sandbox_or_operator(context)
        out = []
        for h in await self._scheduler.health():
            provider = self._scheduler.provider(h.name)
            out.append(
                pb.ComputeProviderStatus(
                    name=h.name,
                    healthy=h.healthy,
                    breaker=h.breaker,
                    last_error=h.last_error,
                    running_sessions=h.running,
                    capacity=h.capacity,
                    cold_start_seconds=h.cold_start_seconds,
                    resume_seconds=h.resume_seconds,
                    active_usd_per_hour=provider.price.active_usd_per_second * 3600,
                    can_suspend=provider.capabilities.suspend,
                    can_archive=provider.capabilities.archive,
                    regions=list(provider.capabilities.regions),
                )
            )
        return pb.ListComputeProvidersResponse(providers=out)

    @unary
    async def ExplainPlacement(
        self, request: pb.ExplainPlacementRequest, context: Context
    ) -> pb.ExplainPlacementResponse:
        caller = await self._auth.sandbox_or_operator(context)
        run_id = v.identifier(request.run_id, "run_id")
        placement = await self._store.get_placement(run_id)
        if caller is not None and placement.sandbox_id != caller:
            raise NotFound(f"run {run_id} has no compute placement")
        return pb.ExplainPlacementResponse(
            run_id=placement.run_id,
            compute_session_id=placement.compute_session_id,
            provider=placement.provider,
            policy=placement.policy,
            reason=placement.reason,
            candidates=[
                pb.PlacementCandidate(provider=c["provider"], verdict=c["verdict"], note=c["note"])
                for c in placement.candidates
            ],
            ready_seconds=placement.ready_seconds,
            create_time=timestamp(placement.created_at),
        )
