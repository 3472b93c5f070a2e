"""Compute: the router's records of compute sessions and of where each run was placed,
and the scheduler's claims that must hold across processes (an end user's run slots
on self-hosted runtimes, the run a session is serving).

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
        busy_run_id: str = "",
    ) -> ComputeSessionRecord:
        """Record a new session ``session_id`` (a ``cs_`` id the caller made, so specs can
        name it before it is stored) of the key, status ``creating``, secrets sealed;
        with ``busy_run_id``, already serving that run (see :meth:`claim_compute_session`).

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
        given filters; ``idle_since`` keeps those last active at or before it and not
        serving a running run (see :meth:`claim_compute_session`)."""

    @abc.abstractmethod
    async def claim_compute_session(self, session_id: str, run_id: str) -> bool:
        """Make the session serve run ``run_id`` (a runtime holds one run's tools at a time).

        True when it was free (serving nothing, or a run that is no longer running: it
        ended, or its process died and its lease was taken) or already serving
        ``run_id``; False while another running run holds it, and for a session that
        is destroyed, failed or unknown. Checked and set in one transaction in turn
        with the sandbox's other writers, so one session serves one run across every
        process sharing the store."""

    @abc.abstractmethod
    async def release_compute_session(self, run_id: str) -> None:
        """The sessions serving run ``run_id`` serve nothing any more (none: nothing changes)."""

    @abc.abstractmethod
    async def claim_compute_run_slot(
        self,
        *,
        slot_id: str,
        sandbox_id: str,
        end_user_id: str,
        limit: int,
        now: datetime,
        unplaced_until: datetime,
    ) -> int:
        """Take run slot ``slot_id`` (an id the caller made) of the end user on self-hosted
        runtimes unless they hold ``limit`` live slots already (0: no limit); return how
        many live slots they held before: the slot was taken if and only if that is below
        ``limit``.

        A slot is live while it is placed (:meth:`place_compute_run_slot`) and its run is
        running, or, unplaced, until ``unplaced_until`` (a process that died between
        admission and placement gives its slot up then). Counted and inserted in one
        transaction in turn with the sandbox's admissions, so the cap holds across every
        process sharing the store; the end user's dead slots are deleted on the way.
        NotFound for an unknown sandbox."""

    @abc.abstractmethod
    async def place_compute_run_slot(self, slot_id: str, run_id: str) -> None:
        """Bind the slot to its run: from now on it is live while the run is running.
        Another slot of the same run (an earlier attempt's) is deleted. Nothing happens
        for a slot given back already."""

    @abc.abstractmethod
    async def release_compute_run_slot(self, slot_id: str) -> None:
        """Give the slot back (the run ended, or its admission was refused). Idempotent."""

    @abc.abstractmethod
    async def record_placement(self, placement: Placement) -> None:
        """Store why ``placement.run_id`` went where it did (once per run)."""

    @abc.abstractmethod
    async def get_placement(self, run_id: str) -> Placement:
        """The run's placement (any sandbox: callers check the tenant); NotFound if
        the run was not placed on compute."""
