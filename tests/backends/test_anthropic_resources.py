"""Managed agent resources: fingerprints and the create budget."""

from __future__ import annotations

import asyncio

import pytest

from interlockd.backends.anthropic.resources import AgentConfig, CreateBudget, EnvironmentConfig
from interlockd.vocabulary import ToolSpec

SEARCH = ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {"type": "string"}}})
FETCH = ToolSpec("fetch", "Fetch.", {"type": "object", "properties": {"url": {"type": "string"}}})


def test_fingerprint_ignores_tool_order_but_not_content() -> None:
    """Same model, prompt and tools in any order: one fingerprint; any change: another."""
    base = AgentConfig.build("claude-sonnet-4-6", "Be brief.", [SEARCH, FETCH])
    assert AgentConfig.build("claude-sonnet-4-6", "Be brief.", [FETCH, SEARCH]).fingerprint == (
        base.fingerprint
    )
    assert [t["name"] for t in base.tools] == ["fetch", "search"]
    changed = [
        AgentConfig.build("claude-opus-4-7", "Be brief.", [SEARCH, FETCH]),
        AgentConfig.build("claude-sonnet-4-6", "Be long.", [SEARCH, FETCH]),
        AgentConfig.build("claude-sonnet-4-6", "Be brief.", [SEARCH]),
        AgentConfig.build(
            "claude-sonnet-4-6",
            "Be brief.",
            [SEARCH, ToolSpec("fetch", "Fetch a page.", FETCH.parameters)],
        ),
    ]
    assert len({c.fingerprint for c in changed} | {base.fingerprint}) == 5


def test_environment_fingerprint_follows_its_config() -> None:
    """Networking changes the environment's fingerprint."""
    assert EnvironmentConfig("limited").fingerprint != EnvironmentConfig("unrestricted").fingerprint
    assert EnvironmentConfig("limited").create_params()["config"] == {
        "type": "cloud",
        "networking": {"type": "limited"},
    }


async def test_create_budget_makes_callers_wait_rather_than_fail() -> None:
    """Beyond the budget a create waits for room; it neither fails nor passes early."""
    budget = CreateBudget(2, period=0.5)
    await budget.acquire()
    await budget.acquire()
    third = asyncio.ensure_future(budget.acquire())
    await asyncio.sleep(0.05)
    assert not third.done()
    await asyncio.wait_for(third, timeout=5)


@pytest.mark.parametrize("networking", ["unrestricted", "limited"])
def test_created_resources_carry_their_fingerprint(networking: str) -> None:
    """Created agents and environments are tagged with the fingerprint they are cached under."""
    agent = AgentConfig.build("claude-haiku-4-5", "", [SEARCH])
    params = agent.create_params()
    assert params["metadata"] == {"interlock_fingerprint": agent.fingerprint}
    assert "system" not in params
    env = EnvironmentConfig(networking)
    assert env.create_params()["metadata"] == {"interlock_fingerprint": env.fingerprint}
