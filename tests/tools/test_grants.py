"""Run-scoped tokens: one registry for the MCP endpoint's grants and hosted agents' dispatch."""

from __future__ import annotations

from typing import Any

import pytest

from interlockd.tools.base import Tool, ToolContext
from interlockd.tools.dispatch import Dispatch, DispatchRejected
from interlockd.tools.grants import GrantRegistry, ToolAccess
from interlockd.vocabulary import DispatchCall, ToolCall, ToolResult, ToolRunner, ToolSpec

KEPT_TOKEN = "k" * 32


class Echo(Tool):
    spec = ToolSpec("echo", "Echo.", {"type": "object"})

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        return arguments


class NoRunner(ToolRunner):
    async def run(self, call: ToolCall) -> ToolResult:
        raise AssertionError("nothing runs in these tests")


def test_a_grant_opens_its_scope_until_closed() -> None:
    """A token opens what it was granted; closed, it opens nothing (closing twice is fine)."""
    registry: GrantRegistry[str] = GrantRegistry()
    grant = registry.open("scope", ttl=30)
    assert len(grant.token) >= 32
    assert registry.get(grant.token) is grant
    assert grant.scope == "scope"
    grant.close()
    grant.close()
    assert grant.closed
    assert registry.get(grant.token) is None
    assert registry.get("") is None
    assert len(registry) == 0


def test_grants_expire() -> None:
    """A token past its lifetime opens nothing, is forgotten, and its grant reads closed."""
    now = [1000.0]
    registry: GrantRegistry[str] = GrantRegistry(clock=lambda: now[0])
    grant = registry.open("scope", ttl=30)
    now[0] += 29
    assert registry.get(grant.token) is grant
    now[0] += 1
    assert registry.get(grant.token) is None
    assert grant.closed
    assert len(registry) == 0


def test_a_kept_token_is_bound_one_run_at_a_time() -> None:
    """A long-lived runtime's token opens one run's scope at a time; once that run closes
    it, the next run binds it, and the old grant's close no longer touches the new one."""
    registry: GrantRegistry[str] = GrantRegistry()
    first = registry.bind(KEPT_TOKEN, "run 1", ttl=30)
    with pytest.raises(ValueError, match="already bound"):
        registry.bind(KEPT_TOKEN, "run 2", ttl=30)
    first.close()
    second = registry.bind(KEPT_TOKEN, "run 2", ttl=30)
    first.close()
    registry.close(first)
    assert registry.get(KEPT_TOKEN) is second


@pytest.mark.parametrize(
    ("token", "ttl", "field"),
    [(KEPT_TOKEN, 0, "ttl"), (KEPT_TOKEN, -1, "ttl"), ("short", 30, "token")],
)
def test_bad_grants_are_refused(token: str, ttl: float, field: str) -> None:
    """A non-positive lifetime or a guessable kept token is a ValueError naming it."""
    registry: GrantRegistry[str] = GrantRegistry()
    with pytest.raises(ValueError, match=f"^{field}:"):
        registry.bind(token, "scope", ttl)
    assert len(registry) == 0


def test_tool_access_refuses_duplicate_names() -> None:
    """An MCP grant's tools are by name: the same name twice is refused."""
    access = ToolAccess.of([Echo()], NoRunner())
    assert list(access.tools) == ["echo"]
    with pytest.raises(ValueError, match="given twice"):
        ToolAccess.of([Echo(), Echo()], NoRunner())


async def test_dispatch_tokens_expire() -> None:
    """A dispatch token past its lifetime is refused and forgotten."""
    now = [1000.0]
    dispatch = Dispatch(clock=lambda: now[0])
    channel = await dispatch.open("u-ref", 30, sandbox_id="", run_id="")
    assert dispatch.channel(channel.token, user_id="u-ref", session_id="") is channel
    now[0] += 31
    with pytest.raises(DispatchRejected, match="expired"):
        dispatch.channel(channel.token, user_id="u-ref", session_id="")
    assert len(dispatch) == 0


async def test_a_dispatch_token_answers_only_its_user_and_session() -> None:
    """Once the provider session is bound, the token opens the channel only for that session
    and the run's end user."""
    dispatch = Dispatch()
    channel = await dispatch.open("u-ref", 30, sandbox_id="", run_id="")
    channel.bind_session("sess-1")
    assert dispatch.channel(channel.token, user_id="u-ref", session_id="sess-1") is channel
    for user, session in (("u-other", "sess-1"), ("u-ref", "sess-2")):
        with pytest.raises(DispatchRejected, match="another session") as refused:
            dispatch.channel(channel.token, user_id=user, session_id=session)
        assert refused.value.status == 401
    channel.close()


async def test_waiting_calls_are_answered_when_the_run_ends() -> None:
    """Closing a channel revokes its token and answers queued calls with an error."""
    dispatch = Dispatch()
    channel = await dispatch.open("u-ref", 30, sandbox_id="", run_id="")
    call = DispatchCall("c1", "t", {})
    await channel.calls.put(call)
    channel.close()
    assert call.answer.result() == {"error": "the run has ended; the tool was not run"}
    assert len(dispatch) == 0
    with pytest.raises(DispatchRejected):
        dispatch.channel(channel.token, user_id="u-ref", session_id="")
