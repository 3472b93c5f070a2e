"""The SQLite engine: one file, its writer and reader connections, transactions, the dialect."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from interlockd.store.sqlite.connection import Connection
from interlockd.store.sqlite.group_commit import GroupCommitter
from interlockd.store.sqlite.migrate import DATA_STEPS, load_migrations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from interlockd.store.crypto import MasterKeyring
    from interlockd.store.sql.core import Params
    from interlockd.store.sql.rows import Row


#: ``PRAGMA synchronous``: FULL syncs the WAL at every commit; NORMAL survives a
#: crash of the process but may lose the last commits on power loss.
Synchronous = Literal["full", "normal"]

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
    """A write transaction on the writer connection (see :class:`~interlockd.store.sql.core.Tx`).

    Its statements run inline (connection.py): the transaction holds the
    file's write lock, so none of them waits.
    """

    __slots__ = ("_db",)

    dialect: Dialect = SqliteDialect()

    def __init__(self, db: Connection) -> None:
        self._db = db

    @property
    def connection(self) -> Connection:
        """The writer connection itself, for SQLite's own work (the migrations' Python steps)."""
        return self._db

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return self._db.rows(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return self._db.run(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        try:
            self._db.run_many(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc

    async def execute_bulk(self, sql: str, params: Params = ()) -> int:
        # On the connection's thread: the transaction holds the connection, so
        # nothing else uses it meanwhile, and the loop keeps serving streams.
        try:
            cursor = await self._db.on_thread(lambda db: db.execute(sql, params))
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc
        return cursor.rowcount

    async def lock_sandbox(self, sandbox_id: str) -> None:
        """Nothing to take: every write transaction on the file is already serial."""


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
        synchronous: Synchronous = "full",
    ) -> None:
        if str(path) == ":memory:":
            raise ValueError("SqliteStore needs a file: its writer and reader connections share it")
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        super().__init__(keyring, key_cache_size=key_cache_size)
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._writer: Connection | None = None
        self._reader: Connection | None = None
        #: Reads that may wait or scan many rows: used only on its own thread.
        self._scanner: Connection | None = None
        self._writes: GroupCommitter | None = None
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
            writer = self._connect("interlock-db-writer")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from exc
        try:
            # Switching to WAL needs the file to itself: wait for another process if need be.
            rows = await writer.on_thread(self._enter_wal)
            if rows[0][0] != "wal":
                raise StoreError(
                    f"SQLite could not put {self._path} in WAL mode (got {rows[0][0]!r}); "
                    "keep the database on a local file system"
                )
            writer.run(f"PRAGMA synchronous = {self._synchronous.upper()}")
            writer.run("PRAGMA foreign_keys = ON")
            writer.run("PRAGMA secure_delete = ON")
            self._writer = writer
            self._writes = GroupCommitter(writer)
            await self._migrate()
            reader = self._connect("interlock-db-reader")
            scanner = self._connect("interlock-db-scanner")
            try:
                reader.run("PRAGMA query_only = ON")
                scanner.run("PRAGMA query_only = ON")
                scanner.run(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            except BaseException:
                await reader.close()
                await scanner.close()
                raise
        except BaseException as exc:
            self._writer = None
            self._writes = None
            await writer.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open database {self._path}: {exc}") from exc
            raise
        self._reader, self._scanner = reader, scanner

    def _enter_wal(self, db: sqlite3.Connection) -> list[Row]:
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        try:
            return db.execute("PRAGMA journal_mode = WAL").fetchall()
        finally:
            db.execute("PRAGMA busy_timeout = 0")

    def _connect(self, name: str) -> Connection:
        return Connection.open(self._path, name, busy_timeout_ms=self._busy_timeout_ms)

    async def _migrate(self) -> None:
        migrations = load_migrations()
        db = self._writer_db()
        db.run(
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
            await self._checkpoint()

    async def close(self) -> None:
        writer, reader, writes = self._writer, self._reader, self._writes
        scanner = self._scanner
        if writer is None or writes is None:
            return
        # Wait for the writes in progress, then stop new ones from starting.
        async with writes.exclusive():
            self._writer = self._reader = self._scanner = None
            self._writes = None
            try:
                if reader is not None:
                    await reader.close()
                if scanner is not None:
                    await scanner.close()
            finally:
                if writer.in_transaction:
                    writer.rollback_quietly()
                await writer.close()
        self._keys.clear()

    def commit_stats(self) -> tuple[int, int]:
        """COMMITs run and write transactions they made durable, since the store opened."""
        writes = self._writes
        return (writes.commits, writes.committed) if writes is not None else (0, 0)

    def _writer_db(self) -> Connection:
        if self._writer is None:
            raise StoreError("the store is not open; call open() first")
        return self._writer

    async def _fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read on the reader connection (committed data only)."""
        db = self._reader
        if db is None:
            raise StoreError("the store is not open; call open() first")
        try:
            return db.rows(sql, params)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY":
                raise StoreError(f"database read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc
        # Rare in WAL mode (another process recovering the WAL): wait, off the loop.
        return await self._fetch_scan(sql, params)

    async def _fetch_scan(self, sql: str, params: Params = ()) -> list[Row]:
        """A read that may wait or scan many rows, on the scanner connection's thread
        (the loop keeps serving streams meanwhile)."""
        db = self._scanner
        if db is None:
            raise StoreError("the store is not open; call open() first")
        try:
            return await db.on_thread(lambda c: c.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, serialize: str = "") -> AsyncIterator[SqliteTx]:
        """One write transaction: the body's statements, then durable (group_commit.py).

        Serial with every other writer of the file, whatever ``serialize``.
        The body's statements run inline; a BEGIN waits on the connection's
        thread only when another process holds the write lock, and the COMMIT
        (the fsync) always runs there, shared by the transactions that queued
        up meanwhile.
        """
        if self._writes is None:
            raise StoreError("the store is not open; call open() first")
        async with self._writes.transaction() as db:
            yield SqliteTx(db)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the file and empty it (on the writer's thread: it fsyncs)."""
        await self._writer_db().on_thread(
            lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        )

    def _keyed_lock(self, *key: str) -> contextlib.AbstractAsyncContextManager[None]:
        # The embedded store is one daemon process by design: a lock in its memory.
        return self._resource_locks.hold(key)

    async def _after_sandbox_deleted(self) -> None:
        # Copy the zeroed pages into the database file and empty the WAL, so
        # the old frames holding the wrapped keys do not linger there. Best
        # effort: a concurrent read may keep the WAL until the next checkpoint.
        if self._writes is not None:
            async with self._writes.exclusive():
                await self._checkpoint()
