"""ToolGrantStore: run tokens by hash, with their owner's address and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import NotFound
from tests.store.conformance.helpers import new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_grant_is_found_by_hash_and_kind_until_it_expires(store: Store) -> None:
    """find_tool_grant returns the owner's address for the right hash and kind, unexpired only."""
    sandbox = await new_sandbox(store)
    await store.put_tool_grant(
        "h1",
        sandbox_id=sandbox.id,
        run_id="run_1",
        kind="mcp",
        owner_url="http://10.0.0.5:7601",
        expires_at=_in(60),
    )

    found = await store.find_tool_grant("h1", "mcp", datetime.now(UTC))

    assert found is not None
    assert (found.sandbox_id, found.run_id, found.kind, found.owner_url) == (
        sandbox.id,
        "run_1",
        "mcp",
        "http://10.0.0.5:7601",
    )
    assert await store.find_tool_grant("h1", "dispatch", datetime.now(UTC)) is None
    assert await store.find_tool_grant("h2", "mcp", datetime.now(UTC)) is None
    assert await store.find_tool_grant("h1", "mcp", _in(120)) is None


async def test_a_rebound_token_replaces_its_grant_and_deletion_forgets_it(store: Store) -> None:
    """put_tool_grant on a stored hash replaces it (a runtime token, next run); delete is final."""
    sandbox = await new_sandbox(store)
    for run_id in ("run_1", "run_2"):
        await store.put_tool_grant(
            "h1",
            sandbox_id=sandbox.id,
            run_id=run_id,
            kind="mcp",
            owner_url=f"http://owner-of-{run_id}",
            expires_at=_in(60),
        )
    found = await store.find_tool_grant("h1", "mcp", datetime.now(UTC))
    assert found is not None
    assert (found.run_id, found.owner_url) == ("run_2", "http://owner-of-run_2")

    await store.delete_tool_grant("h1")
    await store.delete_tool_grant("h1")  # idempotent

    assert await store.find_tool_grant("h1", "mcp", datetime.now(UTC)) is None


async def test_expired_grants_are_swept_and_unknown_sandboxes_refused(store: Store) -> None:
    """delete_expired_tool_grants removes only expired rows; a grant needs its sandbox."""
    sandbox = await new_sandbox(store)
    for name, seconds in (("old", -5), ("new", 60)):
        await store.put_tool_grant(
            name,
            sandbox_id=sandbox.id,
            run_id="run_1",
            kind="dispatch",
            owner_url="http://owner",
            expires_at=_in(seconds),
        )

    assert await store.delete_expired_tool_grants(datetime.now(UTC)) == 1
    assert await store.find_tool_grant("new", "dispatch", datetime.now(UTC)) is not None
    with pytest.raises(NotFound):
        await store.put_tool_grant(
            "h9",
            sandbox_id="sbx_missing",
            run_id="run_1",
            kind="mcp",
            owner_url="http://owner",
            expires_at=_in(60),
        )
