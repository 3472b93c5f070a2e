"""The PostgreSQL engine itself: placeholders, migrations under a lock, the master key proof,
and what a lost connection does to a store call (UNAVAILABLE, nothing half-written)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import pytest

from interlockd.errors import Unavailable
from interlockd.store.base import Quotas
from interlockd.store.crypto import KeyringError, MasterKeyring
from interlockd.store.postgres import PostgresStore
from interlockd.store.postgres.migrate import load_migrations
from interlockd.store.postgres.sql import bind, translate
from tests.store.conformance.helpers import entry, new_run, new_sandbox

if TYPE_CHECKING:
    from pathlib import Path


def test_placeholders_become_numbered_outside_literals() -> None:
    """? and :name become $n; quoted text, :: casts and repeated names are handled."""
    assert translate("SELECT ? , 'a?b', ?")[0] == "SELECT $1 , 'a?b', $2"
    text, names = translate("UPDATE t SET a = :x WHERE b = :y AND c = :x AND d::text = 'it''s :z'")
    assert text == "UPDATE t SET a = $1 WHERE b = $2 AND c = $1 AND d::text = 'it''s :z'"
    assert names == ("x", "y")
    assert bind("SELECT :b, :a", {"a": 1, "b": 2}) == ("SELECT $1, $2", [2, 1])
    with pytest.raises(ValueError, match="mixes"):
        translate("SELECT ?, :a")


async def test_replicas_opening_together_migrate_once(postgres_url: str, tmp_path: Path) -> None:
    """Four stores opening at once on an empty database apply each migration once."""
    ring = MasterKeyring.load_or_create(tmp_path / "master.key")
    stores = [PostgresStore(postgres_url, ring, pool_size=2) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        conn = await asyncpg.connect(postgres_url)
        try:
            applied = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            ]
        finally:
            await conn.close()
        assert sorted(applied) == [m.version for m in load_migrations()]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_another_master_key_is_refused_before_anything_is_written(
    postgres_url: str, tmp_path: Path
) -> None:
    """A store holding keys of one master key does not open with another."""
    first = PostgresStore(postgres_url, MasterKeyring.load_or_create(tmp_path / "a.key"))
    await first.open()
    await first.create_sandbox("acme", Quotas())
    await first.close()

    other = PostgresStore(postgres_url, MasterKeyring.load_or_create(tmp_path / "b.key"))
    with pytest.raises(KeyringError, match="does not open the keys stored"):
        await other.open()


async def test_a_lost_connection_is_unavailable_and_leaves_nothing_half_written(
    postgres_url: str, tmp_path: Path
) -> None:
    """The server ending every connection mid-transaction fails that call with UNAVAILABLE;
    the transaction is rolled back whole, and the next call works on a new connection."""
    store = PostgresStore(postgres_url, MasterKeyring.load_or_create(tmp_path / "k"), pool_size=2)
    await store.open()
    try:
        sandbox = await new_sandbox(store)
        conversation = await store.create_conversation(sandbox.id, "alice")
        run = new_run(sandbox.id, "alice", conversation.id)
        admin = await asyncpg.connect(postgres_url)
        try:
            # Hold the sandbox's write lock, so begin_run waits inside its transaction,
            # then end every other session of the database.
            async with admin.transaction():
                await admin.execute("SELECT pg_advisory_xact_lock(1, hashtext($1))", sandbox.id)
                begun = asyncio.create_task(
                    store.begin_run(run, entries=[entry("hello", run_id=run.id)])
                )

                async def waiting() -> bool:
                    rows = await admin.fetch(
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND pid <> pg_backend_pid() AND datname = current_database()"
                    )
                    return bool(rows)

                for _ in range(200):
                    if await waiting():
                        break
                    await asyncio.sleep(0.01)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            with pytest.raises(Unavailable):
                await begun
        finally:
            await admin.close()
        assert await store.read_entries(sandbox.id, conversation.id) == []
        assert await store.find_run_by_request_id(sandbox.id, run.request_id) is None
        again = await store.begin_run(run, entries=[entry("hello", run_id=run.id)])
        assert again.status == "running"
        assert [e.text for e in await store.read_entries(sandbox.id, conversation.id)] == ["hello"]
    finally:
        await store.close()
