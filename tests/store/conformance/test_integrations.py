"""The ``IntegrationStore`` contract: connections with sealed credentials, scoped to sandbox
and end user, and connect flows that finish once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import NotFound
from interlockd.store.base import Sandbox
from tests.store.conformance.helpers import new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


# ---- connections ------------------------------------------------------------------


async def test_integration_record_and_credentials(store: Store) -> None:
    """A connection keeps its kind, app, scope, config and sealed credentials; status moves."""
    sandbox = await new_sandbox(store)
    created = await store.create_integration(
        sandbox.id,
        kind="oauth",
        app="github",
        end_user_id="u-1",
        config={"login": "octocat"},
        credentials={"access_token": "ghu_1", "refresh_token": "ghr_1"},
    )
    assert created.id.startswith("int_")
    assert (created.kind, created.app, created.end_user_id, created.status) == (
        "oauth",
        "github",
        "u-1",
        "active",
    )
    assert created.config == {"login": "octocat"}
    assert await store.read_integration_credentials(sandbox.id, created.id) == {
        "access_token": "ghu_1",
        "refresh_token": "ghr_1",
    }
    await store.replace_integration_credentials(sandbox.id, created.id, {"access_token": "ghu_2"})
    assert await store.read_integration_credentials(sandbox.id, created.id) == {
        "access_token": "ghu_2"
    }
    broken = await store.set_integration_status(sandbox.id, created.id, "broken", "revoked")
    assert (broken.status, broken.status_reason) == ("broken", "revoked")
    await store.touch_integration(sandbox.id, created.id)
    assert (await store.get_integration(sandbox.id, created.id)).last_used_at is not None


async def test_integrations_are_scoped_to_sandbox_and_end_user(store: Store) -> None:
    """A run's end user sees their own and sandbox-wide connections; never another
    sandbox's, never another end user's."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)

    async def connect(sbx: Sandbox, app: str, user: str) -> str:
        return (
            await store.create_integration(
                sbx.id, kind="mcp", app=app, end_user_id=user, config={}, credentials={}
            )
        ).id

    mine = await connect(sandbox, "github", "u-1")
    shared = await connect(sandbox, "docs", "")
    await connect(sandbox, "github", "u-2")
    theirs = await connect(other, "github", "u-1")
    listed = await store.list_integrations(sandbox.id, end_user_id="u-1")
    assert [i.id for i in listed] == [mine, shared]
    assert len(await store.list_integrations(sandbox.id)) == 3
    with pytest.raises(NotFound):
        await store.get_integration(sandbox.id, theirs)
    with pytest.raises(NotFound):
        await store.read_integration_credentials(sandbox.id, theirs)


async def test_connecting_again_archives_the_previous_connection(store: Store) -> None:
    """A new connection of the same app and end user replaces the live one (kept, disconnected)."""
    sandbox = await new_sandbox(store)
    first = await store.create_integration(
        sandbox.id, kind="oauth", app="github", end_user_id="u-1", config={}, credentials={}
    )
    second = await store.create_integration(
        sandbox.id, kind="oauth", app="github", end_user_id="u-1", config={}, credentials={}
    )
    assert [i.id for i in await store.list_integrations(sandbox.id)] == [second.id]
    archived = await store.get_integration(sandbox.id, first.id)
    assert archived.status == "disconnected"
    everything = await store.list_integrations(sandbox.id, include_disconnected=True)
    assert {i.id for i in everything} == {first.id, second.id}


# ---- connect flows ----------------------------------------------------------------


async def test_connect_flow_finishes_once(store: Store) -> None:
    """A flow is found by its state hash with its verifier and ends only once."""
    sandbox = await new_sandbox(store)
    expires = datetime.now(UTC) + timedelta(minutes=10)
    flow = await store.create_connect_flow(
        sandbox.id,
        app="github",
        end_user_id="u-1",
        for_end_user=True,
        state_hash="h-1",
        code_verifier="verifier-1",
        expires_at=expires,
    )
    assert flow.status == "pending"
    assert abs((flow.expires_at - expires).total_seconds()) < 0.001
    found = await store.find_connect_flow("h-1")
    assert found is not None
    assert (found[0].id, found[1]) == (flow.id, "verifier-1")
    assert await store.find_connect_flow("h-other") is None
    done = await store.finish_connect_flow(sandbox.id, flow.id, "connected", integration_id="int_x")
    assert (done.status, done.integration_id) == ("connected", "int_x")
    again = await store.finish_connect_flow(sandbox.id, flow.id, "failed", reason="late")
    assert (again.status, again.reason) == ("connected", "")
    other = await new_sandbox(store)
    with pytest.raises(NotFound):
        await store.get_connect_flow(other.id, flow.id)
