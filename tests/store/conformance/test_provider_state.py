"""The ``ProviderStateStore`` contract: provider sessions per conversation, provider
resources by key and their lock, all gone with their conversation or sandbox."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import NotFound
from tests.store.conformance.helpers import new_sandbox

if TYPE_CHECKING:
    from interlockd.store.base import Store


# ---- provider sessions ------------------------------------------------------------


async def test_provider_session_set_get_upsert_clear(store: Store) -> None:
    """A provider session reads back per provider, is replaced by the next set, and clears."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None

    first = await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 2)
    assert (first.provider, first.session_id, first.through_seq) == ("anthropic", "sesn_1", 2)
    assert first.updated_at.tzinfo == UTC
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") == first
    await store.set_provider_session(sandbox.id, conversation.id, "google", "sessions/9", 1)

    second = await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_2", 5)
    assert (second.session_id, second.through_seq) == ("sesn_2", 5)
    assert second.updated_at >= first.updated_at
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") == second

    await store.clear_provider_session(sandbox.id, conversation.id, "anthropic")
    await store.clear_provider_session(sandbox.id, conversation.id, "anthropic")
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None
    google = await store.get_provider_session(sandbox.id, conversation.id, "google")
    assert google is not None
    assert (google.session_id, google.through_seq) == ("sessions/9", 1)


async def test_provider_session_refuses_a_negative_through_seq(store: Store) -> None:
    """through_seq counts window entries, so a negative one is a ValueError and stores nothing."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    with pytest.raises(ValueError, match="through_seq"):
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", -1)
    assert await store.get_provider_session(sandbox.id, conversation.id, "anthropic") is None


async def test_provider_session_is_private_to_its_sandbox(store: Store) -> None:
    """Through another sandbox a conversation's session is None and cannot be set or cleared."""
    mine, theirs = await new_sandbox(store), await new_sandbox(store)
    conversation = await store.create_conversation(mine.id, "alice")
    await store.set_provider_session(mine.id, conversation.id, "anthropic", "sesn_mine", 1)

    assert await store.get_provider_session(theirs.id, conversation.id, "anthropic") is None
    with pytest.raises(NotFound):
        await store.set_provider_session(theirs.id, conversation.id, "anthropic", "sesn_x", 1)
    with pytest.raises(NotFound):
        await store.set_provider_session("sbx_missing", conversation.id, "anthropic", "s", 1)
    with pytest.raises(NotFound):
        await store.set_provider_session(mine.id, "conv_missing", "anthropic", "sesn_x", 1)
    await store.clear_provider_session(theirs.id, conversation.id, "anthropic")

    kept = await store.get_provider_session(mine.id, conversation.id, "anthropic")
    assert kept is not None
    assert kept.session_id == "sesn_mine"


async def test_provider_sessions_go_with_their_conversation(store: Store) -> None:
    """Deleting a conversation deletes its provider sessions, and no other conversation's."""
    sandbox = await new_sandbox(store)
    doomed = await store.create_conversation(sandbox.id, "alice")
    kept = await store.create_conversation(sandbox.id, "alice")
    for conversation in (doomed, kept):
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 0)

    await store.delete_conversation(sandbox.id, "alice", doomed.id)

    assert await store.get_provider_session(sandbox.id, doomed.id, "anthropic") is None
    with pytest.raises(NotFound):
        await store.set_provider_session(sandbox.id, doomed.id, "anthropic", "sesn_2", 0)
    assert await store.get_provider_session(sandbox.id, kept.id, "anthropic") is not None


# ---- provider resources -----------------------------------------------------------


async def test_put_provider_resource_keeps_the_first_id(store: Store) -> None:
    """put_provider_resource inserts if absent and otherwise returns the id stored first."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    assert await store.get_provider_resource(sandbox.id, *key) is None

    assert await store.put_provider_resource(sandbox.id, *key, "agent_1") == "agent_1"
    assert await store.put_provider_resource(sandbox.id, *key, "agent_2") == "agent_1"
    assert await store.get_provider_resource(sandbox.id, *key) == "agent_1"

    # Every part of the key counts, the sandbox included.
    assert await store.get_provider_resource(other.id, *key) is None
    assert await store.get_provider_resource(sandbox.id, "anthropic", "agent", "fp-2") is None
    assert await store.get_provider_resource(sandbox.id, "anthropic", "environment", "fp-1") is None
    assert await store.get_provider_resource(sandbox.id, "google", "agent", "fp-1") is None
    assert await store.put_provider_resource(other.id, *key, "agent_3") == "agent_3"
    with pytest.raises(NotFound):
        await store.put_provider_resource("sbx_missing", *key, "agent_4")


async def test_delete_provider_resource_only_forgets_the_named_id(store: Store) -> None:
    """delete_provider_resource drops the row only while it still holds the given id."""
    sandbox = await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    await store.put_provider_resource(sandbox.id, *key, "agent_1")
    await store.delete_provider_resource(sandbox.id, *key, "agent_other")
    assert await store.get_provider_resource(sandbox.id, *key) == "agent_1"
    await store.delete_provider_resource(sandbox.id, *key, "agent_1")
    assert await store.get_provider_resource(sandbox.id, *key) is None
    await store.delete_provider_resource(sandbox.id, *key, "agent_1")  # idempotent
    assert await store.put_provider_resource(sandbox.id, *key, "agent_2") == "agent_2"


async def test_provider_resource_lock_serialises_check_then_create(store: Store) -> None:
    """Twenty concurrent check-then-create callers under the lock create exactly one resource."""
    sandbox = await new_sandbox(store)
    key = ("anthropic", "agent", "fp-1")
    creates = 0

    async def ensure_agent() -> str:
        nonlocal creates
        async with store.provider_resource_lock(sandbox.id, *key):
            found = await store.get_provider_resource(sandbox.id, *key)
            if found is not None:
                return found
            creates += 1
            created = f"agent_{creates}"
            await asyncio.sleep(0.01)  # the provider's create call: the others run meanwhile
            return await store.put_provider_resource(sandbox.id, *key, created)

    resource_ids = await asyncio.gather(*(ensure_agent() for _ in range(20)))

    assert creates == 1
    assert resource_ids == ["agent_1"] * 20


async def test_provider_resource_locks_of_different_keys_are_independent(store: Store) -> None:
    """While one key's lock is held, other keys lock at once and the same key waits."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store.provider_resource_lock(sandbox.id, "anthropic", "agent", "fp-1"):
            held.set()
            await release.wait()

    async def take(sandbox_id: str, provider: str, kind: str, fingerprint: str) -> None:
        async with store.provider_resource_lock(sandbox_id, provider, kind, fingerprint):
            pass

    holder = asyncio.create_task(hold())
    await held.wait()
    async with asyncio.timeout(5):
        await take(sandbox.id, "anthropic", "agent", "fp-2")
        await take(sandbox.id, "anthropic", "environment", "fp-1")
        await take(sandbox.id, "google", "agent", "fp-1")
        await take(other.id, "anthropic", "agent", "fp-1")
    same_key = asyncio.create_task(take(sandbox.id, "anthropic", "agent", "fp-1"))
    await asyncio.sleep(0.05)
    assert not same_key.done()

    release.set()
    async with asyncio.timeout(5):
        await holder
        await same_key


# ---- with the sandbox -------------------------------------------------------------


async def test_provider_state_goes_with_the_sandbox(store: Store) -> None:
    """Deleting a sandbox deletes its provider sessions, resources and secrets, no one else's."""
    doomed, kept = await new_sandbox(store), await new_sandbox(store)
    conversations = {}
    for sandbox in (doomed, kept):
        conversation = await store.create_conversation(sandbox.id, "alice")
        conversations[sandbox.id] = conversation.id
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_1", 0)
        await store.put_provider_resource(sandbox.id, "anthropic", "agent", "fp-1", "agent_1")
        await store.set_secret(sandbox.id, "anthropic_api_key", f"sk-{sandbox.id}")

    await store.delete_sandbox(doomed.id)

    doomed_conversation = conversations[doomed.id]
    assert await store.get_provider_session(doomed.id, doomed_conversation, "anthropic") is None
    assert await store.get_provider_resource(doomed.id, "anthropic", "agent", "fp-1") is None
    assert await store.get_secret(doomed.id, "anthropic_api_key") is None
    assert await store.list_secret_names(doomed.id) == []

    assert await store.get_provider_session(kept.id, conversations[kept.id], "anthropic")
    assert await store.get_provider_resource(kept.id, "anthropic", "agent", "fp-1") == "agent_1"
    assert await store.get_secret(kept.id, "anthropic_api_key") == f"sk-{kept.id}"
