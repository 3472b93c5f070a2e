"""Compute: the router's records of compute sessions and of where each run was placed.

A session's runtime key and MCP token are sealed at rest, and so are its tags.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime


ComputeStatus = Literal["creating", "running", "suspended", "archived", "destroyed", "failed"]


@dataclass(frozen=True, slots=True)
class ComputeSessionRecord:
    """The router's record of one compute session (see migration 0006)."""

    id: str
    sandbox_id: str
    end_user_id: str
    agent_key: str  # the saved agent's slug, or "<provider>/<model>"
    runtime: str  # the agent provider running in it ("hermes")
    provider: str  # the compute provider ("local", "daytona", "fly_sprites")
    external_id: str  # the provider's id; "" until created
    status: ComputeStatus
    region: str
    endpoint: str  # base URL while running, without credentials
    spec_fingerprint: str
    api_key: str  # the runtime server's key (sealed at rest)
    mcp_token: str  # the session's MCP bearer token (sealed at rest)
    tags: dict[str, str]  # user_id, sandbox_id, agent_id, run_id (the latest)
    active_seconds: float
    created_at: datetime
    updated_at: datetime
    last_active_at: datetime


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one run's runtime was placed, and why."""

    run_id: str
    sandbox_id: str
    compute_session_id: str
    provider: str
    policy: str
    reason: str
    #: Every provider considered: {"provider", "verdict" ("chosen" | "eligible" |
    #: "skipped"), "note"}.
    candidates: list[dict[str, str]]
    ready_seconds: float
    created_at: datetime


class ComputeStore(abc.ABC):
    """Compute sessions and run placements."""

    @abc.abstractmethod
    async def create_compute_session(
        self,
        *,
        session_id: str,
        sandbox_id: str,
        end_user_id: str,
        agent_key: str,
        runtime: str,
        provider: str,
        region: str,
        spec_fingerprint: str,
        api_key: str,
        mcp_token: str,
        tags: Mapping[str, str],
        now: datetime,
        max_active_per_user: int = 0,
    ) -> ComputeSessionRecord:
        """Record a new session ``session_id`` (a ``cs_`` id the caller made, so specs can
        name it before it is stored) of the key, status ``creating``, secrets sealed.

        AlreadyExists when the key has a session that is neither destroyed nor failed; NotFound
        for an unknown sandbox; ResourceExhausted when the end user already has
        ``max_active_per_user`` sessions creating or running (0: no limit), counted in the
        same transaction, so the cap holds across every process sharing the store."""

    @abc.abstractmethod
    async def get_compute_session(self, session_id: str) -> ComputeSessionRecord:
        """The session (any sandbox: callers check the tenant); NotFound if none."""

    @abc.abstractmethod
    async def find_compute_session(
        self, sandbox_id: str, end_user_id: str, agent_key: str
    ) -> ComputeSessionRecord | None:
        """The key's session that is neither destroyed nor failed, if any."""

    @abc.abstractmethod
    async def update_compute_session(
        self,
        session_id: str,
        *,
        status: ComputeStatus | None = None,
        external_id: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
        add_active_seconds: float = 0.0,
        last_active_at: datetime | None = None,
    ) -> ComputeSessionRecord:
        """Change the given fields (``add_active_seconds`` adds); return the session.
        NotFound if there is none."""

    @abc.abstractmethod
    async def list_compute_sessions(
        self,
        sandbox_id: str | None = None,
        *,
        end_user_id: str = "",
        agent_key: str = "",
        provider: str = "",
        statuses: Sequence[ComputeStatus] = (),
        idle_since: datetime | None = None,
    ) -> list[ComputeSessionRecord]:
        """Sessions, oldest first: of one sandbox (or all with None), narrowed by the
        given filters; ``idle_since`` keeps those last active at or before it."""

    @abc.abstractmethod
    async def record_placement(self, placement: Placement) -> None:
        """Store why ``placement.run_id`` went where it did (once per run)."""

    @abc.abstractmethod
    async def get_placement(self, run_id: str) -> Placement:
        """The run's placement (any sandbox: callers check the tenant); NotFound if
        the run was not placed on compute."""
