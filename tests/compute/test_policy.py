"""Placement policies as pure decisions over provider snapshots."""

from __future__ import annotations

import dataclasses

import pytest

from interlockd.compute.base import Capabilities, ComputePrice
from interlockd.compute.policy import Candidate, choose
from interlockd.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable

# Daytona-like: slow to start, cheap; Sprites-like: quick, dearer; both as seen by a run.
DAYTONA = Candidate(
    name="daytona",
    capabilities=Capabilities(suspend=True, archive=True, regions=("us", "eu")),
    price=ComputePrice(active_usd_per_second=0.0000185),
    cold_start_seconds=20.0,
    resume_seconds=3.0,
)
SPRITES = Candidate(
    name="fly_sprites",
    capabilities=Capabilities(suspend=False, archive=False, regions=("ord",)),
    price=ComputePrice(active_usd_per_second=0.0000316),
    cold_start_seconds=1.5,
    resume_seconds=0.3,
)


def test_latency_aware_prefers_the_users_session_wherever_it_is() -> None:
    """Latency-aware keeps the end user's suspended session even on the second provider."""
    sprites = dataclasses.replace(SPRITES, existing="suspended")
    choice = choose([DAYTONA, sprites], policy="latency-aware")
    assert choice.provider == "fly_sprites"
    assert "suspended session" in choice.reason
    assert [v.verdict for v in choice.verdicts] == ["eligible", "chosen"]


def test_latency_aware_takes_the_first_in_order_without_a_session() -> None:
    """Without a session, latency-aware takes the first provider in configured order."""
    choice = choose([DAYTONA, SPRITES], policy="latency-aware")
    assert choice.provider == "daytona"
    assert choice.reason.startswith("first in order")


def test_latency_aware_spills_when_the_primary_is_full() -> None:
    """A primary at capacity spills to the next provider and says why."""
    full = dataclasses.replace(DAYTONA, running=3, capacity=3)
    choice = choose([full, SPRITES], policy="latency-aware")
    assert choice.provider == "fly_sprites"
    assert choice.verdicts[0].verdict == "skipped"
    assert "at capacity (3 of 3" in choice.verdicts[0].note
    assert "daytona skipped" in choice.reason


def test_a_full_provider_still_serves_its_running_session() -> None:
    """Capacity counts new sessions: a run whose session already runs there is not refused."""
    full = dataclasses.replace(DAYTONA, running=3, capacity=3, existing="running")
    assert choose([full, SPRITES], policy="latency-aware").provider == "daytona"


def test_unhealthy_primary_fails_over() -> None:
    """An open breaker on the primary sends the run to the secondary."""
    sick = dataclasses.replace(DAYTONA, healthy=False)
    choice = choose([sick, SPRITES], policy="latency-aware")
    assert choice.provider == "fly_sprites"
    assert "unhealthy" in choice.verdicts[0].note


def test_cost_aware_counts_start_up_time() -> None:
    """Cost-aware prices start-up seconds: a short run goes to the quick starter, a long one
    to the cheaper rate."""
    short = choose([DAYTONA, SPRITES], policy="cost-aware", expected_run_seconds=5)
    assert short.provider == "fly_sprites"  # 25 s x cheap > 6.5 s x dear
    long = choose([DAYTONA, SPRITES], policy="cost-aware", expected_run_seconds=600)
    assert long.provider == "daytona"
    assert long.reason.startswith("cheapest for a 600 s run: $")
    assert all("$" in v.note for v in long.verdicts)


def test_cost_aware_uses_a_warm_session() -> None:
    """A warm session costs no start-up, which can make the dearer provider the cheaper run."""
    warm = dataclasses.replace(DAYTONA, existing="running")
    assert choose([warm, SPRITES], policy="cost-aware", expected_run_seconds=5).provider == (
        "daytona"
    )


def test_region_pin_keeps_only_providers_serving_it() -> None:
    """A region pin skips providers that do not serve the region."""
    choice = choose([DAYTONA, SPRITES], policy="latency-aware", region="ord")
    assert choice.provider == "fly_sprites"
    assert "does not serve region 'ord'" in choice.verdicts[0].note


def test_region_no_provider_serves_is_invalid_argument() -> None:
    """A region no provider serves is INVALID_ARGUMENT on compute.region."""
    with pytest.raises(InvalidArgument, match=r"compute.region.*'mars'"):
        choose([DAYTONA, SPRITES], policy="latency-aware", region="mars")


def test_pinned_provider_is_never_substituted() -> None:
    """A pinned provider that cannot take the run refuses it instead of spilling."""
    full = dataclasses.replace(SPRITES, running=3, capacity=3)
    with pytest.raises(ResourceExhausted, match="fly_sprites is at capacity"):
        choose([DAYTONA, full], policy="latency-aware", pinned="fly_sprites")
    assert choose([DAYTONA, SPRITES], policy="cost-aware", pinned="daytona").policy == "pinned"


def test_unknown_pinned_provider_names_the_configured_ones() -> None:
    """Pinning an unknown provider is INVALID_ARGUMENT listing the configured ones."""
    with pytest.raises(InvalidArgument, match=r"compute.provider.*daytona, fly_sprites"):
        choose([DAYTONA, SPRITES], policy="latency-aware", pinned="aws")


def test_paused_provider_is_skipped_and_all_paused_is_failed_precondition() -> None:
    """A paused provider is skipped; when pauses cover all, FAILED_PRECONDITION names them."""
    paused = dataclasses.replace(DAYTONA, paused_by="the pause of compute provider daytona")
    assert choose([paused, SPRITES], policy="latency-aware").provider == "fly_sprites"
    with pytest.raises(FailedPrecondition, match="pause of compute provider daytona"):
        choose([paused], policy="latency-aware")


def test_every_provider_down_is_unavailable() -> None:
    """No reachable provider is UNAVAILABLE (retryable)."""
    sick = [dataclasses.replace(c, healthy=False) for c in (DAYTONA, SPRITES)]
    with pytest.raises(Unavailable, match="no compute provider is reachable"):
        choose(sick, policy="latency-aware")
