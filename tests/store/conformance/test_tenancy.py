"""The ``TenancyStore`` contract: operator keys, sandboxes and their quotas, API keys,
secrets, and secrets kept across key rotation."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import pytest

from interlockd.errors import AlreadyExists, InvalidArgument, NotFound
from interlockd.store.base import Quotas, Sandbox
from interlockd.vocabulary import Usage
from tests.store.conformance.helpers import entry, new_sandbox, start_run

if TYPE_CHECKING:
    from interlockd.store.base import Store


# ---- operator keys ----------------------------------------------------------------


async def test_operator_keys(store: Store) -> None:
    """A fresh store has no operator key; added ones are recognised by hash, idempotently."""
    assert not await store.has_operator_key()
    await store.add_operator_key("hash-1")
    await store.add_operator_key("hash-1")
    assert await store.has_operator_key()
    assert await store.is_operator_key("hash-1")
    assert not await store.is_operator_key("hash-2")


# ---- sandboxes --------------------------------------------------------------------


async def test_create_and_get_sandbox(store: Store) -> None:
    """A created sandbox reads back with its name, quotas and a UTC creation time."""
    quotas = Quotas(max_concurrent_runs=3, max_concurrent_runs_per_end_user=2, max_tokens_per_day=9)
    created = await store.create_sandbox("acme", quotas)
    assert created.id.startswith("sbx_")
    assert created.created_at.tzinfo is UTC
    assert await store.get_sandbox(created.id) == created


async def test_sandbox_name_is_unique(store: Store) -> None:
    """A second sandbox with a taken name is refused with AlreadyExists."""
    await store.create_sandbox("acme", Quotas())
    with pytest.raises(AlreadyExists, match="acme"):
        await store.create_sandbox("acme", Quotas())


async def test_unknown_sandbox_is_not_found(store: Store) -> None:
    """Reading, changing or deleting an unknown sandbox raises NotFound."""
    with pytest.raises(NotFound):
        await store.get_sandbox("sbx_nope")
    with pytest.raises(NotFound):
        await store.set_quotas("sbx_nope", Quotas())
    with pytest.raises(NotFound):
        await store.delete_sandbox("sbx_nope")


async def test_list_sandboxes_pages_in_creation_order(store: Store) -> None:
    """Pages of sandboxes follow creation order, and the last page has no next token."""
    created = [await new_sandbox(store) for _ in range(5)]
    seen: list[Sandbox] = []
    token = ""
    pages = 0
    while True:
        page = await store.list_sandboxes(2, token)
        seen += page.items
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    assert pages == 3


async def test_list_sandboxes_rejects_foreign_page_token(store: Store) -> None:
    """A page token that no listing produced is refused, naming the field."""
    with pytest.raises(InvalidArgument, match="page_token"):
        await store.list_sandboxes(10, "not-a-token")


async def test_set_quotas_replaces_them(store: Store) -> None:
    """set_quotas replaces all three limits and returns the updated sandbox."""
    sandbox = await new_sandbox(store)
    quotas = Quotas(max_concurrent_runs=1, max_concurrent_runs_per_end_user=1, max_tokens_per_day=5)
    updated = await store.set_quotas(sandbox.id, quotas)
    assert updated.quotas == quotas
    assert (await store.get_sandbox(sandbox.id)).quotas == quotas


async def test_delete_sandbox_deletes_everything_in_it(store: Store) -> None:
    """After delete_sandbox nothing of it can be found, and other sandboxes are untouched."""
    doomed, kept = await new_sandbox(store), await new_sandbox(store)
    for sandbox in (doomed, kept):
        await store.create_api_key(sandbox.id, "k", f"hash-{sandbox.id}", "il_")
        conversation = await store.create_conversation(sandbox.id, "u-1")
        await store.append_entries(sandbox.id, conversation.id, [entry("remember the lighthouse")])
        run = await start_run(store, conversation, request_id="req-1")
        await store.finish_run(run.id, status="finished", usage=Usage(1, 1))

    await store.delete_sandbox(doomed.id)

    with pytest.raises(NotFound):
        await store.get_sandbox(doomed.id)
    assert await store.find_api_key(f"hash-{doomed.id}") is None
    assert await store.list_api_keys(doomed.id) == []
    assert (await store.list_conversations(doomed.id, "u-1", 10, "")).items == []
    assert await store.find_run_by_request_id(doomed.id, "req-1") is None
    assert await store.list_ledger(doomed.id) == []
    assert await store.search_entries(doomed.id, "u-1", "lighthouse") == []
    with pytest.raises(NotFound):
        await store.delete_sandbox(doomed.id)

    assert await store.find_api_key(f"hash-{kept.id}") is not None
    assert len(await store.search_entries(kept.id, "u-1", "lighthouse")) == 1


# ---- API keys ---------------------------------------------------------------------


async def test_api_key_create_find_list_revoke(store: Store) -> None:
    """A key is found by hash until revoked; revoked keys stay listed with revoked_at."""
    sandbox = await new_sandbox(store)
    first = await store.create_api_key(sandbox.id, "ci", "hash-a", "il_a")
    second = await store.create_api_key(sandbox.id, "dev", "hash-b", "il_b")
    assert first.id.startswith("key_")
    assert await store.find_api_key("hash-a") == first
    assert await store.find_api_key("hash-unknown") is None

    revoked = await store.revoke_api_key(sandbox.id, first.id)
    assert revoked.revoked_at is not None
    assert await store.find_api_key("hash-a") is None
    again = await store.revoke_api_key(sandbox.id, first.id)
    assert again.revoked_at == revoked.revoked_at
    assert [k.id for k in await store.list_api_keys(sandbox.id)] == [first.id, second.id]
    assert (await store.list_api_keys(sandbox.id))[0].revoked_at == revoked.revoked_at


async def test_api_key_scoping(store: Store) -> None:
    """Keys can't be created for an unknown sandbox or revoked through another sandbox."""
    sandbox, other = await new_sandbox(store), await new_sandbox(store)
    key = await store.create_api_key(sandbox.id, "ci", "hash-a", "il_a")
    with pytest.raises(NotFound):
        await store.create_api_key("sbx_nope", "ci", "hash-b", "il_b")
    with pytest.raises(NotFound):
        await store.revoke_api_key(other.id, key.id)
    assert await store.find_api_key("hash-a") == key


# ---- sandbox secrets --------------------------------------------------------------


async def test_secret_round_trip(store: Store) -> None:
    """A secret reads back, is replaced by the next set, and only names are listed, sorted."""
    sandbox = await new_sandbox(store)
    assert await store.get_secret(sandbox.id, "anthropic_api_key") is None
    assert await store.list_secret_names(sandbox.id) == []

    await store.set_secret(sandbox.id, "anthropic_api_key", "sk-ant-1")
    await store.set_secret(sandbox.id, "google.project-id", "proj-42")
    await store.set_secret(sandbox.id, "empty", "")
    assert await store.get_secret(sandbox.id, "anthropic_api_key") == "sk-ant-1"
    await store.set_secret(sandbox.id, "anthropic_api_key", "sk-ant-2 ✓")

    assert await store.get_secret(sandbox.id, "anthropic_api_key") == "sk-ant-2 ✓"
    assert await store.get_secret(sandbox.id, "google.project-id") == "proj-42"
    assert await store.get_secret(sandbox.id, "empty") == ""
    assert await store.list_secret_names(sandbox.id) == [
        "anthropic_api_key",
        "empty",
        "google.project-id",
    ]


async def test_secrets_are_private_to_their_sandbox(store: Store) -> None:
    """A sandbox sees, lists and deletes only its own secrets; unknown sandboxes hold none."""
    mine, theirs = await new_sandbox(store), await new_sandbox(store)
    await store.set_secret(mine.id, "anthropic_api_key", "sk-mine")

    assert await store.get_secret(theirs.id, "anthropic_api_key") is None
    assert await store.list_secret_names(theirs.id) == []
    await store.delete_secret(theirs.id, "anthropic_api_key")
    await store.set_secret(theirs.id, "anthropic_api_key", "sk-theirs")

    assert await store.get_secret(mine.id, "anthropic_api_key") == "sk-mine"
    assert await store.get_secret(theirs.id, "anthropic_api_key") == "sk-theirs"
    assert await store.get_secret("sbx_missing", "anthropic_api_key") is None
    assert await store.list_secret_names("sbx_missing") == []
    with pytest.raises(NotFound):
        await store.set_secret("sbx_missing", "anthropic_api_key", "sk-x")


async def test_delete_secret_is_idempotent(store: Store) -> None:
    """Deleting a secret removes it; deleting it again, or a never-set one, is no error."""
    sandbox = await new_sandbox(store)
    await store.set_secret(sandbox.id, "a", "1")
    await store.set_secret(sandbox.id, "b", "2")

    await store.delete_secret(sandbox.id, "a")
    await store.delete_secret(sandbox.id, "a")
    await store.delete_secret(sandbox.id, "never-set")
    await store.delete_secret("sbx_missing", "a")

    assert await store.get_secret(sandbox.id, "a") is None
    assert await store.list_secret_names(sandbox.id) == ["b"]


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "Anthropic", "api key", "a/b", "ключ", "name\n", "a:b"]
)
async def test_secret_names_are_validated(store: Store, name: str) -> None:
    """Secret names outside 1-64 characters of [a-z0-9_.-] are a ValueError on every method."""
    sandbox = await new_sandbox(store)
    with pytest.raises(ValueError, match="secret name"):
        await store.set_secret(sandbox.id, name, "v")
    with pytest.raises(ValueError, match="secret name"):
        await store.get_secret(sandbox.id, name)
    with pytest.raises(ValueError, match="secret name"):
        await store.delete_secret(sandbox.id, name)
    assert await store.list_secret_names(sandbox.id) == []


async def test_secret_names_at_the_limits_are_accepted(store: Store) -> None:
    """One character and 64 characters of every allowed kind are valid names."""
    sandbox = await new_sandbox(store)
    longest = ("a-z.0_9" * 10)[:64]
    for name in ("a", longest):
        await store.set_secret(sandbox.id, name, name)
        assert await store.get_secret(sandbox.id, name) == name
    assert await store.list_secret_names(sandbox.id) == sorted(["a", longest])


async def test_secrets_survive_key_rotation_and_reopen(store: Store) -> None:
    """Secrets and provider sessions sealed before and after rotate_keys open after a reopen."""
    sandbox = await new_sandbox(store)
    conversation = await store.create_conversation(sandbox.id, "alice")
    await store.set_secret(sandbox.id, "before", "sealed with key 1")
    await store.set_provider_session(sandbox.id, conversation.id, "anthropic", "sesn_before", 0)

    await store.rotate_keys(new_data_keys=True)
    await store.set_secret(sandbox.id, "after", "sealed with key 2")
    await store.set_provider_session(sandbox.id, conversation.id, "google", "sessions/after", 0)
    await store.close()
    await store.open()

    assert await store.get_secret(sandbox.id, "before") == "sealed with key 1"
    assert await store.get_secret(sandbox.id, "after") == "sealed with key 2"
    sessions = [
        await store.get_provider_session(sandbox.id, conversation.id, provider)
        for provider in ("anthropic", "google")
    ]
    assert [s.session_id if s else None for s in sessions] == ["sesn_before", "sessions/after"]
