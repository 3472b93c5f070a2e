"""The Agents servicer: saved agents of the caller's sandbox (sandbox API key)."""

from __future__ import annotations

import re
from typing import Any

from interlock.v1 import agents_pb2 as pb
from interlock.v1 import router_pb2
from interlockd.api import validation as v
from interlockd.api.auth import Authenticator
from interlockd.api.handlers import Context, unary
from interlockd.api.sandboxes import timestamp
from interlockd.errors import InvalidArgument
from interlockd.store.base import SavedAgent, SpendLimits, Store

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_POLICIES = ("", "latency-aware", "cost-aware")


def slug(value: str, field: str = "slug") -> str:
    if not _SLUG.fullmatch(value):
        raise InvalidArgument(
            field, "must be 1-64 of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return value


def agent_settings(agent: pb.Agent, max_runtime_ceiling: float) -> dict[str, Any]:
    """The validated settings of an Agent message, as stored."""
    if not agent.provider:
        raise InvalidArgument("agent.provider", "is required")
    if agent.compute_policy not in _POLICIES:
        raise InvalidArgument("agent.compute_policy", "must be latency-aware or cost-aware")
    if agent.max_runtime_seconds < 0 or agent.max_runtime_seconds > max_runtime_ceiling:
        raise InvalidArgument(
            "agent.max_runtime_seconds", f"must be 0-{max_runtime_ceiling:g} (the daemon's limit)"
        )
    return {
        "name": v.short_text(agent.name, "agent.name", 128),
        "system": v.system(agent.system),
        "provider": v.short_text(agent.provider, "agent.provider", 64),
        "model": v.short_text(agent.model, "agent.model", 128),
        "tools": list(v.tools(agent.tools)),
        "max_output_tokens": v.non_negative(
            agent.max_output_tokens, "agent.max_output_tokens", 1_000_000
        ),
        "max_runtime_seconds": agent.max_runtime_seconds,
        "google": v.google_options(agent.google.reasoning_engine_id, agent.google.location),
        "compute_provider": v.short_text(agent.compute_provider, "agent.compute_provider", 64),
        "compute_policy": agent.compute_policy,
        "compute_region": v.short_text(agent.compute_region, "agent.compute_region", 64),
    }


def agent_proto(a: SavedAgent) -> pb.Agent:
    s = a.settings
    google = s.get("google") or {}
    return pb.Agent(
        slug=a.slug,
        name=s.get("name", ""),
        system=s.get("system", ""),
        provider=s.get("provider", ""),
        model=s.get("model", ""),
        tools=s.get("tools", []),
        max_output_tokens=s.get("max_output_tokens", 0),
        max_runtime_seconds=s.get("max_runtime_seconds", 0),
        google=router_pb2.GoogleRunOptions(
            reasoning_engine_id=google.get("reasoning_engine_id", ""),
            location=google.get("location", ""),
        ),
        compute_provider=s.get("compute_provider", ""),
        compute_policy=s.get("compute_policy", ""),
        compute_region=s.get("compute_region", ""),
        create_time=timestamp(a.created_at),
        update_time=timestamp(a.updated_at),
        usd_per_day=a.budget.usd_per_day,
        usd_per_month=a.budget.usd_per_month,
    )


def agent_budget(agent: pb.Agent) -> SpendLimits:
    """The validated spend budget of an Agent message."""
    return SpendLimits(
        usd_per_day=v.usd(agent.usd_per_day, "agent.usd_per_day"),
        usd_per_month=v.usd(agent.usd_per_month, "agent.usd_per_month"),
    )


class AgentsServicer:
    def __init__(self, auth: Authenticator, store: Store, max_run_seconds: float) -> None:
        self._auth = auth
        self._store = store
        self._max_run_seconds = max_run_seconds

    @unary
    async def PutAgent(self, request: pb.PutAgentRequest, context: Context) -> pb.PutAgentResponse:
        principal = await self._auth.sandbox(context)
        name = slug(request.agent.slug, "agent.slug")
        settings = agent_settings(request.agent, self._max_run_seconds)
        budget = agent_budget(request.agent)
        saved = await self._store.put_agent(principal.sandbox_id, name, settings, budget)
        return pb.PutAgentResponse(agent=agent_proto(saved))

    @unary
    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        principal = await self._auth.sandbox(context)
        saved = await self._store.get_agent(principal.sandbox_id, slug(request.slug))
        return pb.GetAgentResponse(agent=agent_proto(saved))

    @unary
    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        principal = await self._auth.sandbox(context)
        agents = await self._store.list_agents(principal.sandbox_id)
        return pb.ListAgentsResponse(agents=[agent_proto(a) for a in agents])

    @unary
    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: Context
    ) -> pb.DeleteAgentResponse:
        principal = await self._auth.sandbox(context)
        await self._store.delete_agent(principal.sandbox_id, slug(request.slug))
        return pb.DeleteAgentResponse()
