"""The SQLite engine: one file, its writer and reader connections, transactions, the dialect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from interlockd.errors import StoreError
from interlockd.store.sql.core import (
    ConstraintKind,
    ConstraintViolation,
    Dialect,
    SqlCore,
    Tx,
)
from interlockd.store.sql.locks import KeyedLocks
from interlockd.store.sql.rows import now_us
from interlockd.store.sqlite.migrate import DATA_STEPS, load_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from interlockd.store.crypto import MasterKeyring
    from interlockd.store.sql.core import Params
    from interlockd.store.sql.rows import Row


#: RETURNING and STRICT tables (3.37); FTS5 is checked by the first migration.
MIN_SQLITE_VERSION = (3, 37, 0)

_CONSTRAINTS: dict[str, ConstraintKind] = {
    "SQLITE_CONSTRAINT_UNIQUE": "unique",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "primary_key",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "foreign_key",
    "SQLITE_CONSTRAINT_CHECK": "check",
    "SQLITE_CONSTRAINT_NOTNULL": "not_null",
}


def _violation(exc: sqlite3.IntegrityError) -> ConstraintViolation:
    kind = _CONSTRAINTS.get(getattr(exc, "sqlite_errorname", ""), "other")
    return ConstraintViolation(kind, f"database write failed: {exc}")


class SqliteDialect(Dialect):
    """SQLite's spellings: strftime days, an FTS5 table of blind terms."""

    name = "sqlite"

    def day_of(self, column: str) -> str:
        return f"strftime('%Y-%m-%d', {column} / 1000000, 'unixepoch')"

    async def index_terms(self, tx: Tx, rows: Sequence[tuple[list[str], str, int]]) -> None:
        # The search row shares the entry's rowid (a trigger drops it with the entry).
        await tx.executemany(
            "INSERT INTO entry_terms (rowid, terms) "
            "SELECT id, ? FROM entries WHERE conversation_id = ? AND seq = ?",
            [(" ".join(terms), conversation_id, seq) for terms, conversation_id, seq in rows],
        )

    def search_sql(self, columns: str, terms: Sequence[str]) -> tuple[str, list[Any]]:
        # Terms are hex digests, so quoting them is all the escaping FTS5 needs.
        match = " AND ".join(f'"{term}"' for term in terms)
        return (
            f"SELECT {columns} FROM entry_terms "
            "JOIN entries e ON e.id = entry_terms.rowid "
            "JOIN conversations c ON c.id = e.conversation_id "
            "WHERE entry_terms MATCH ?",
            [match],
        )

    def search_order(self) -> str:
        return "ORDER BY entry_terms.rank"


class SqliteTx:
    """A write transaction on the writer connection (see :class:`~interlockd.store.sql.core.Tx`)."""

    __slots__ = ("_db",)

    dialect: Dialect = SqliteDialect()

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @property
    def connection(self) -> aiosqlite.Connection:
        """The writer connection itself, for SQLite's own work (the migrations' Python steps)."""
        return self._db

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            cursor = await self._db.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc
        return cursor.rowcount

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        try:
            await self._db.executemany(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    async def lock_sandbox(self, sandbox_id: str) -> None:
        """Nothing to take: every write transaction on the file is already serial."""


async def _rollback_quietly(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.OperationalError):
        # "no transaction is active": the COMMIT went through before a cancellation.
        await db.execute("ROLLBACK")


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 if it does not exist (its WAL and SHM inherit the mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SqliteEngine(SqlCore):
    """One SQLite file: its writer and reader connections and write transactions."""

    dialect = SqliteDialect()

    def __init__(
        self,
        path: Path | str,
        keyring: MasterKeyring,
        *,
        key_cache_size: int = 4096,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if str(path) == ":memory:":
            raise ValueError("SqliteStore needs a file: its writer and reader connections share it")
        super().__init__(keyring, key_cache_size=key_cache_size)
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # True from BEGIN until COMMIT/ROLLBACK is known to have run. A
        # coroutine cancelled mid-transaction may leave one open (its queued
        # statements still run on the connection's thread); the next
        # transaction rolls it back first.
        self._in_transaction = False
        self._resource_locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"

    async def open(self) -> None:
        if self._writer is not None:
            return
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old; interlockd needs "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer"
            )
        _create_private_file(self._path)
        try:
            writer = await self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from exc
        try:
            rows = list(await writer.execute_fetchall("PRAGMA journal_mode = WAL"))
            if rows[0][0] != "wal":
                raise StoreError(
                    f"SQLite could not put {self._path} in WAL mode (got {rows[0][0]!r}); "
                    "keep the database on a local file system"
                )
            await writer.execute("PRAGMA synchronous = FULL")
            await writer.execute("PRAGMA foreign_keys = ON")
            await writer.execute("PRAGMA secure_delete = ON")
            self._writer = writer
            await self._migrate()
            reader = await self._connect()
            try:
                await reader.execute("PRAGMA query_only = ON")
            except BaseException:
                await reader.close()
                raise
        except BaseException as exc:
            self._writer = None
            await writer.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open database {self._path}: {exc}") from exc
            raise
        self._reader = reader

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: the store issues BEGIN/COMMIT itself, so the
        # sqlite3 module never opens a transaction behind its back.
        db = await aiosqlite.connect(self._path, isolation_level=None, cached_statements=256)
        db.row_factory = sqlite3.Row
        await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return db

    async def _migrate(self) -> None:
        migrations = load_migrations()
        db = self._writer_db()
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL"
            ") STRICT"
        )
        async with self._transaction() as tx:
            # Read inside the write transaction: another process may have just migrated.
            applied = {r[0] for r in await tx.fetch("SELECT version FROM schema_migrations")}
            newer = applied - {m.version for m in migrations}
            if newer:
                raise StoreError(
                    f"database {self._path} has schema version {max(newer)}, newer than this "
                    f"interlockd knows ({len(migrations)}); upgrade interlockd"
                )
            pending = [m for m in migrations if m.version not in applied]
            for migration in pending:
                for statement in migration.statements:
                    await tx.execute(statement)
                step = DATA_STEPS.get(migration.version)
                if step is not None:
                    await step(tx.connection, self._ring)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now_us()),
                )
        if pending and applied:
            # A migration may have replaced values that must leave the file
            # (plaintext identifiers): secure_delete zeroed their cells, and
            # this moves the new pages into the file and empties the WAL.
            await db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        if writer is None:
            return
        # Wait for a write in progress, then stop new ones from starting.
        async with self._write_lock:
            self._writer = self._reader = None
            try:
                if reader is not None:
                    await reader.close()
            finally:
                if self._in_transaction:
                    await _rollback_quietly(writer)
                    self._in_transaction = False
                await writer.close()
        self._keys.clear()

    def _writer_db(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("the store is not open; call open() first")
        return self._writer

    async def _fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read on the reader connection (committed data only)."""
        db = self._reader
        if db is None:
            raise StoreError("the store is not open; call open() first")
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, serialize: str = "") -> AsyncIterator[SqliteTx]:
        """One write transaction: BEGIN IMMEDIATE, the body, COMMIT (ROLLBACK on any error).

        Serial with every other writer of the file, whatever ``serialize``.
        """
        async with self._write_lock:
            db = self._writer_db()
            if self._in_transaction:
                await _rollback_quietly(db)
                self._in_transaction = False
            try:
                # Set before awaiting: if this coroutine is cancelled while BEGIN
                # is queued, BEGIN still runs on the connection's thread.
                self._in_transaction = True
                await db.execute("BEGIN IMMEDIATE")
                yield SqliteTx(db)
                await db.execute("COMMIT")
                self._in_transaction = False
            except BaseException as exc:
                if self._in_transaction:
                    await _rollback_quietly(db)
                    self._in_transaction = False
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database write failed: {exc}") from exc
                raise

    def _keyed_lock(self, *key: str) -> contextlib.AbstractAsyncContextManager[None]:
        # The embedded store is one daemon process by design: a lock in its memory.
        return self._resource_locks.hold(key)

    async def _after_sandbox_deleted(self) -> None:
        # Copy the zeroed pages into the database file and empty the WAL, so
        # the old frames holding the wrapped keys do not linger there. Best
        # effort: a concurrent read may keep the WAL until the next checkpoint.
        async with self._write_lock:
            await self._writer_db().execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
