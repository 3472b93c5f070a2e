"""The ``PauseStore`` contract: kill switches set, listed per sandbox with the daemon-wide
ones, cleared, and refused when malformed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.store.conformance.helpers import new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


async def test_pauses_set_list_and_clear(store: Store) -> None:
    """Pauses are set (reason replaced on re-set), listed per sandbox with the daemon-wide
    ones, and cleared once."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    await store.set_pause("global", reason="incident")
    await store.set_pause("agent_provider", target="anthropic", reason="bill shock")
    await store.set_pause("end_user", sandbox_id=sandbox.id, target="u-1")
    again = await store.set_pause("end_user", sandbox_id=sandbox.id, target="u-1", reason="abuse")
    assert again.reason == "abuse"
    assert [(p.scope, p.target) for p in await store.list_pauses(sandbox.id)] == [
        ("global", ""),
        ("agent_provider", "anthropic"),
        ("end_user", "u-1"),
    ]
    assert [p.scope for p in await store.list_pauses(other.id)] == ["global", "agent_provider"]
    assert len(await store.list_pauses()) == 3
    assert await store.clear_pause("global")
    assert not await store.clear_pause("global")
    assert [p.scope for p in await store.list_pauses(other.id)] == ["agent_provider"]


@pytest.mark.parametrize(
    ("scope", "sandbox_id", "target"),
    [("global", "", "x"), ("agent_provider", "", ""), ("end_user", "", "u-1"), ("nope", "", "x")],
)
async def test_malformed_pauses_are_refused(
    store: Store, scope: Any, sandbox_id: str, target: str
) -> None:
    """A pause without the target its scope needs (or with one it can't have) is refused."""
    with pytest.raises(ValueError, match="pause"):
        await store.set_pause(scope, sandbox_id=sandbox_id, target=target)
