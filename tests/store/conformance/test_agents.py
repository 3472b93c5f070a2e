"""The ``AgentStore`` contract: saved agents per sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from interlockd.errors import NotFound
from tests.store.conformance.helpers import new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


async def test_saved_agents_round_trip_per_sandbox(store: Store) -> None:
    """An agent is created, replaced, listed and deleted within its sandbox only."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    settings = {"name": "Support", "provider": "fake", "system": "Be kind.", "tools": ["x"]}
    created = await store.put_agent(sandbox.id, "support", settings)
    assert (created.slug, created.settings) == ("support", settings)
    replaced = await store.put_agent(sandbox.id, "support", {**settings, "system": "Be brief."})
    assert replaced.settings["system"] == "Be brief."
    assert replaced.created_at == created.created_at
    assert [a.slug for a in await store.list_agents(sandbox.id)] == ["support"]
    assert await store.list_agents(other.id) == []
    with pytest.raises(NotFound):
        await store.get_agent(other.id, "support")
    await store.delete_agent(sandbox.id, "support")
    with pytest.raises(NotFound):
        await store.delete_agent(sandbox.id, "support")
    with pytest.raises(NotFound):
        await store.put_agent("sbx_missing", "support", settings)
