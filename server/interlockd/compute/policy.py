"""Placement policies: which compute provider runs a run's runtime, and why.

Pure functions over a snapshot of the providers (:class:`Candidate`) so each
decision is testable without a provider, a store or a clock. The scheduler
builds the snapshot (health from the circuit breakers, pauses, capacity, the
key's existing session, measured start times) and records the
:class:`Choice` — the reason and every candidate's verdict — for
``interlock compute explain``.

Policies:

- ``pinned`` (a provider named by the run or its agent): that provider or a
  clear refusal; never another one.
- ``latency-aware`` (the default): the provider that already holds the key's
  session (warm, or suspended: resuming keeps the runtime's state); otherwise
  the first eligible provider in configured order, so a primary at capacity
  or unhealthy spills or fails over to the next.
- ``cost-aware``: the cheapest for the run's profile: the provider's active
  rate times (the seconds until the runtime answers — measured resume or
  cold-start time, none for a warm session — plus the run's expected
  seconds); ties go to configured order.

A region pin keeps only providers that serve the region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from interlockd.compute.base import Capabilities, ComputePrice
from interlockd.errors import (
    FailedPrecondition,
    InterlockError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

PolicyName = Literal["pinned", "latency-aware", "cost-aware"]
POLICIES: tuple[PolicyName, ...] = ("latency-aware", "cost-aware")

#: What the key already has on a provider: None (nothing), or the session's status.
Existing = Literal["running", "suspended", "archived"] | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configured provider as the scheduler sees it at placement time."""

    name: str
    capabilities: Capabilities
    price: ComputePrice
    healthy: bool = True  # its circuit breaker lets a call through
    paused_by: str = ""  # the pause that covers it (described), "" if none
    running: int = 0  # the router's sessions running on it
    capacity: int = 0  # most running sessions it may have (0: no limit)
    existing: Existing = None  # the key's session on it
    #: Seconds until a runtime answers: measured by the scheduler, else declared.
    cold_start_seconds: float = 0.0
    resume_seconds: float = 0.0

    def ready_seconds(self) -> float:
        """Expected seconds until the runtime answers if the run goes here."""
        if self.existing == "running":
            return 0.0
        if self.existing == "suspended":
            return self.resume_seconds
        # Archived state comes back about as slowly as a new start.
        return self.cold_start_seconds


@dataclass(frozen=True, slots=True)
class Verdict:
    provider: str
    verdict: Literal["chosen", "eligible", "skipped"]
    note: str

    def as_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "verdict": self.verdict, "note": self.note}


@dataclass(frozen=True, slots=True)
class Choice:
    """Where the run goes, why, and what happened to every other candidate."""

    provider: str
    policy: PolicyName
    reason: str
    verdicts: tuple[Verdict, ...]


def choose(
    candidates: Sequence[Candidate],
    *,
    policy: PolicyName,
    pinned: str = "",
    region: str = "",
    expected_run_seconds: float = 60.0,
) -> Choice:
    """Pick a provider for one run (``candidates`` in configured order).

    Raises, naming what to do: InvalidArgument for an unknown pinned provider
    or a region no provider serves; FailedPrecondition when pauses cover every
    otherwise eligible provider; ResourceExhausted when every one is at
    capacity; Unavailable when every one is unhealthy.
    """
    if policy == "pinned" or pinned:
        known = {c.name for c in candidates}
        if pinned not in known:
            raise InvalidArgument(
                "compute.provider",
                f"unknown compute provider {pinned!r}; configured: {', '.join(sorted(known))}",
            )
        candidates = [c for c in candidates if c.name == pinned]
        policy = "pinned"
    if not candidates:
        raise Unavailable("no compute provider is configured for self-hosted runtimes")

    verdicts: list[Verdict] = []
    eligible: list[Candidate] = []
    refusals: list[InterlockError] = []
    for c in candidates:
        problem = _problem(c, region)
        if problem is None:
            eligible.append(c)
        else:
            verdicts.append(Verdict(c.name, "skipped", str(problem)))
            refusals.append(problem)
    if not eligible:
        raise _refusal(refusals, region)

    if policy == "cost-aware":
        costs = {c.name: _run_cost(c, expected_run_seconds) for c in eligible}
        best = min(eligible, key=lambda c: costs[c.name])  # min keeps the first of equals
        reason = (
            f"cheapest for a {expected_run_seconds:g} s run: ${costs[best.name]:.6f} "
            f"({_ready_note(best)})"
        )
        notes = {c.name: f"${costs[c.name]:.6f} ({_ready_note(c)})" for c in eligible}
    else:
        best = next((c for c in eligible if c.existing is not None), eligible[0])
        if policy == "pinned":
            reason = f"pinned by the run ({_ready_note(best)})"
        elif best.existing is not None:
            reason = f"the end user's {best.existing} session is there ({_ready_note(best)})"
        elif best is candidates[0]:
            reason = f"first in order ({_ready_note(best)})"
        else:
            skipped = ", ".join(v.provider for v in verdicts)
            reason = f"{skipped} skipped; next in order ({_ready_note(best)})"
        notes = {c.name: _ready_note(c) for c in eligible}
    for c in eligible:
        verdicts.append(Verdict(c.name, "chosen" if c is best else "eligible", notes[c.name]))
    order = {c.name: i for i, c in enumerate(candidates)}
    verdicts.sort(key=lambda v: order[v.provider])
    return Choice(best.name, policy, reason, tuple(verdicts))


def _problem(c: Candidate, region: str) -> InterlockError | None:
    """Why ``c`` cannot take the run, or None."""
    if region and region not in c.capabilities.regions:
        served = ", ".join(c.capabilities.regions) or "no selectable region"
        return InvalidArgument(
            "compute.region", f"{c.name} does not serve region {region!r} ({served})"
        )
    if c.paused_by:
        return FailedPrecondition(f"{c.name} is refused by {c.paused_by}")
    if not c.healthy:
        return Unavailable(f"{c.name} is unhealthy (its circuit breaker is open)")
    if c.capacity and c.existing != "running" and c.running >= c.capacity:
        return ResourceExhausted(
            f"{c.name} is at capacity ({c.running} of {c.capacity} sessions running)"
        )
    return None


def _refusal(refusals: list[InterlockError], region: str) -> InterlockError:
    """The error of a run no provider can take: the most actionable reason first."""
    if all(isinstance(r, InvalidArgument) for r in refusals):
        return InvalidArgument("compute.region", f"no compute provider serves {region!r}")
    detail = "; ".join(r.message for r in refusals)
    if any(isinstance(r, FailedPrecondition) for r in refusals):
        return FailedPrecondition(f"no compute provider may take the run: {detail}")
    if any(isinstance(r, ResourceExhausted) for r in refusals):
        return ResourceExhausted(
            f"every compute provider is full: {detail}; retry when a session idles "
            "out, or raise the provider's capacity"
        )
    return Unavailable(f"no compute provider is reachable: {detail}; retry later")


def _run_cost(c: Candidate, expected_run_seconds: float) -> float:
    return c.price.active_usd_per_second * (c.ready_seconds() + expected_run_seconds)


def _ready_note(c: Candidate) -> str:
    if c.existing == "running":
        return "warm"
    verb = "resume" if c.existing == "suspended" else "start"
    return f"{verb} ~{c.ready_seconds():.1f} s"
