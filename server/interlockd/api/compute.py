"""The Compute servicer: kill switches (operator key).

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
from interlockd.errors import InvalidArgument
from interlockd.runs.orchestrator import Orchestrator
from interlockd.runs.pauses import PauseBoard
from interlockd.store.base import Pause, PauseScope, Store

_SCOPES: dict[int, PauseScope] = {
    pb.PAUSE_SCOPE_GLOBAL: "global",
    pb.PAUSE_SCOPE_END_USER: "end_user",
    pb.PAUSE_SCOPE_AGENT_PROVIDER: "agent_provider",
    pb.PAUSE_SCOPE_COMPUTE_PROVIDER: "compute_provider",
}
_PROTO_SCOPES = {name: value for value, name in _SCOPES.items()}


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
        self, auth: Authenticator, store: Store, board: PauseBoard, orchestrator: Orchestrator
    ) -> None:
        self._auth = auth
        self._store = store
        self._board = board
        self._orchestrator = orchestrator

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
