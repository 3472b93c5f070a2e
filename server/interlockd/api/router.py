"""The AgentRouter servicer: RunRequest in, numbered AgentEvents out.

Thin on purpose: authenticate, validate, hand a RunInput to the orchestrator,
and frame each domain event as an AgentEvent with the run's id, a strictly
increasing seq and a timestamp. This is the per-event hot path: one proto
message per event and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from interlock.v1 import events_pb2 as ev
from interlock.v1 import router_pb2
from interlockd.api import validation as v
from interlockd.api.agents import slug
from interlockd.api.auth import Authenticator
from interlockd.api.coalesce import coalesced
from interlockd.api.handlers import Context, streaming
from interlockd.compute.policy import POLICIES
from interlockd.config import RunSettings
from interlockd.errors import InvalidArgument
from interlockd.runs.events import RunEvent, RunFailed, RunFinished, RunStarted
from interlockd.runs.orchestrator import Orchestrator
from interlockd.runs.request import ComputeChoice, RunInput
from interlockd.vocabulary import TextDelta, ThinkingDelta, ToolCall, ToolResult, Usage

_STOP_REASONS = {
    "end_turn": ev.STOP_REASON_END_TURN,
    "max_tokens": ev.STOP_REASON_MAX_TOKENS,
    "tool_limit": ev.STOP_REASON_TOOL_LIMIT,
    "content_filter": ev.STOP_REASON_CONTENT_FILTER,
    "refusal": ev.STOP_REASON_REFUSAL,
    "budget_reached": ev.STOP_REASON_BUDGET_REACHED,
}


class AgentRouterServicer:
    def __init__(
        self, auth: Authenticator, orchestrator: Orchestrator, settings: RunSettings
    ) -> None:
        self._auth = auth
        self._orchestrator = orchestrator
        self._settings = settings

    @streaming
    async def Run(
        self, request: router_pb2.RunRequest, context: Context
    ) -> AsyncIterator[ev.AgentEvent]:
        principal = await self._auth.sandbox(context)
        run_input = RunInput(
            sandbox_id=principal.sandbox_id,
            end_user_id=v.end_user_id(request.end_user_id),
            session_id=v.identifier(request.session_id, "session_id", required=False),
            provider=v.short_text(request.provider, "provider", 64),
            model=v.short_text(request.model, "model", 128),
            system=v.system(request.system),
            message=v.message(request.message, self._settings.max_message_bytes),
            tools=v.tools(request.tools),
            request_id=v.short_text(request.request_id, "request_id", 128),
            labels=v.labels(request.labels),
            max_output_tokens=v.non_negative(
                request.max_output_tokens, "max_output_tokens", 1_000_000
            ),
            options=v.google_options(request.google.reasoning_engine_id, request.google.location),
            agent=_agent_slug(request),
            compute=_compute(request),
        )
        run_id = ""
        seq = 0
        events = self._orchestrator.run(run_input)
        if self._settings.coalesce_deltas:
            events = coalesced(events, window=self._settings.coalesce_window_ms / 1000)
        async for event in events:
            if isinstance(event, RunStarted):
                run_id = event.run_id
            seq += 1
            yield to_proto(event, run_id, seq)


def to_proto(event: RunEvent, run_id: str, seq: int) -> ev.AgentEvent:
    """Frame one domain event as an AgentEvent."""
    # Timestamp.GetCurrentTime() goes through datetime; this is the hot path.
    now = time.time_ns()
    out = ev.AgentEvent(
        run_id=run_id,
        seq=seq,
        time=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000),
    )
    if isinstance(event, TextDelta):
        out.text_delta.text = event.text
    elif isinstance(event, ThinkingDelta):
        out.thinking_delta.text = event.text
    elif isinstance(event, ToolCall):
        out.tool_call.CopyFrom(
            ev.ToolCall(
                call_id=event.call_id,
                name=event.name,
                arguments_json=event.arguments,
                provider_executed=event.provider_executed,
            )
        )
    elif isinstance(event, ToolResult):
        out.tool_result.CopyFrom(
            ev.ToolResult(
                call_id=event.call_id,
                name=event.name,
                result_json=event.result,
                error=event.error,
                reused=event.reused,
                provider_executed=event.provider_executed,
            )
        )
    elif isinstance(event, RunStarted):
        out.run_started.CopyFrom(
            ev.RunStarted(
                session_id=event.session_id,
                provider=event.provider,
                model=event.model,
                request_id=event.request_id,
                replayed=event.replayed,
            )
        )
    elif isinstance(event, RunFinished):
        out.finish.CopyFrom(
            ev.Finish(
                stop_reason=_STOP_REASONS.get(event.stop_reason, ev.STOP_REASON_UNSPECIFIED),
                usage=usage_proto(event.usage),
                cost=ev.Cost(
                    token_usd=event.token_usd,
                    compute_usd=event.compute_usd,
                    price_version=event.price_version,
                ),
                session_id=event.session_id,
            )
        )
    elif isinstance(event, RunFailed):
        out.error.CopyFrom(
            ev.Error(
                code=event.code,
                message=event.message,
                retryable=event.retryable,
                provider=event.provider,
            )
        )
    return out


def usage_proto(usage: Usage) -> ev.Usage:
    return ev.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def _compute(request: router_pb2.RunRequest) -> ComputeChoice:
    c = request.compute
    if c.policy and c.policy not in POLICIES:
        raise InvalidArgument("compute.policy", "must be latency-aware or cost-aware")
    return ComputeChoice(
        provider=v.short_text(c.provider, "compute.provider", 64),
        policy=c.policy,
        region=v.short_text(c.region, "compute.region", 64),
    )


def _agent_slug(request: router_pb2.RunRequest) -> str:
    """The saved agent the run names, if any; what the agent sets may not be given too."""
    if not request.agent:
        return ""
    given = [f for f in ("provider", "model", "system", "max_output_tokens") if getattr(request, f)]
    given += ["tools"] if request.tools else []
    given += ["google"] if request.HasField("google") else []
    if given:
        raise InvalidArgument(given[0], "is set by the agent; leave it empty when agent is given")
    return slug(request.agent, "agent")
