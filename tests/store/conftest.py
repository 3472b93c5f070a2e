"""Store fixtures: every implementation of the ``Store`` seam, opened on a fresh database.

The conformance suite (``conformance/``, one file per aggregate interface of
``interlockd.store.base``) takes ``store``: the embedded SQLite store, and the
PostgreSQL store on a fresh database of the session's throwaway cluster
(``tests/postgres.py``). Tests of the embedded store's file itself take
``sqlite_store``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from interlockd.store.crypto import MasterKeyring
from interlockd.store.postgres import PostgresStore
from interlockd.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from interlockd.store.base import Store


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "master.key"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "interlock.db"


@pytest.fixture
async def sqlite_store(db_path: Path, key_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path, MasterKeyring.load_or_create(key_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each Store implementation in turn, opened on an empty database."""
    opened: Store
    keyring = MasterKeyring.load_or_create(tmp_path / "master.key")
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "interlock.db", keyring)
    elif request.param == "postgres":
        opened = PostgresStore(request.getfixturevalue("postgres_url"), keyring, pool_size=4)
    else:  # pragma: no cover - a new param without a branch here is a bug in this file
        raise AssertionError(f"unknown store {request.param}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
