"""What the compute scheduler is asked and answers: its settings, a run's placement
request and plan, the lease a run holds, the charge it is billed, provider health.

Plain data shared by the scheduler (compute/scheduler.py), the orchestrator and
the Compute API; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from interlockd.compute.base import ComputeProvider
from interlockd.compute.policy import Choice, PolicyName
from interlockd.store.base import ComputeSessionRecord
from interlockd.vocabulary import RuntimeAccess


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """How the scheduler keeps sessions and whom it admits (``[compute]`` in the config)."""

    #: Stop a session after this many seconds without a run (its state is kept).
    idle_stop_seconds: float = 15 * 60.0
    #: Archive a session suspended this long (resumes slowly, costs least).
    archive_after_seconds: float = 7 * 86_400.0
    reaper_interval_seconds: float = 30.0
    health_interval_seconds: float = 30.0
    #: Consecutive failures (probes or starts) that open a provider's breaker.
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 60.0
    #: Per end user: running sessions (0: no limit) and runs in progress at once.
    max_active_sessions_per_user: int = 3
    max_concurrent_runs_per_user: int = 2
    default_policy: PolicyName = "latency-aware"
    #: The run profile cost-aware placement prices: seconds a run keeps compute busy.
    expected_run_seconds: float = 60.0
    #: Most running sessions per provider (absent or 0: no limit).
    capacity: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Where a run wants its runtime, in the scheduler's terms."""

    sandbox_id: str
    end_user_id: str
    agent_key: str  # the saved agent's slug, or "<provider>/<model>"
    agent_id: str  # the saved agent's slug ("" without one), for tags and the ledger
    runtime: str  # the agent provider ("hermes")
    model: str
    provider: str = ""  # pinned compute provider; "" lets the policy choose
    policy: str = ""  # "latency-aware" | "cost-aware"; "" = the default
    region: str = ""


@dataclass(eq=False, slots=True)
class Plan:
    """An admitted placement: the choice, and the user's run slot it holds until released."""

    request: PlacementRequest
    choice: Choice
    released: bool = False
    #: The end user's run slot in the store ("" when runs per user are not capped).
    slot: str = ""
    #: The run it was acquired for ("" before :meth:`ComputeScheduler.acquire`).
    run_id: str = ""
    #: (compute session id, clock at acquire) once a session was asked to run.
    metered: tuple[str, float] | None = None


@dataclass(eq=False, slots=True)
class Lease:
    """A run's hold on a running compute session."""

    plan: Plan
    record: ComputeSessionRecord
    provider: ComputeProvider
    access: RuntimeAccess
    lock: asyncio.Lock  # the key's, held until release


@dataclass(frozen=True, slots=True)
class ComputeCharge:
    """What one run's compute cost: its active seconds at the provider's rate."""

    provider: str
    seconds: float
    cost_usd: float
    price_version: str
    compute_session_id: str


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    name: str
    healthy: bool
    breaker: Literal["closed", "open", "half_open"]
    last_error: str
    running: int
    capacity: int
    cold_start_seconds: float
    resume_seconds: float


@dataclass(frozen=True, slots=True)
class ReapReport:
    suspended: int = 0
    archived: int = 0
    destroyed: int = 0
