"""The connection and transaction core every aggregate of the SQLite store runs on."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite
import orjson

from interlockd.errors import (
    InvalidArgument,
    NotFound,
    StoreError,
)
from interlockd.store.base import (
    StoreLifecycle,
)
from interlockd.store.crypto import (
    KeyCache,
    MasterKeyring,
    SandboxKeys,
    UnknownDataKeyError,
    open_sandbox_keys,
)
from interlockd.store.sqlite.migrate import (
    DATA_STEPS,
    load_migrations,
)
from interlockd.store.sqlite.rows import (
    blind_end_user,
    now_us,
)
from interlockd.store.sqlite.tables import WRAPPED_KEYS

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence


#: RETURNING and STRICT tables (3.37); FTS5 is checked by the first migration.
MIN_SQLITE_VERSION = (3, 37, 0)


MAX_INT = 2**63 - 1


US_PER_DAY = 86_400_000_000


def is_constraint(exc: sqlite3.Error, name: str) -> bool:
    return getattr(exc, "sqlite_errorname", "") == f"SQLITE_CONSTRAINT_{name}"


# ---- page tokens ------------------------------------------------------------------
# Opaque to callers: base64url of [listing, sort key, id]. The listing tag
# stops a token of one listing being replayed against another.


def make_page_token(listing: str, sort_key: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([listing, sort_key, row_id])).decode()


def read_page_token(token: str, listing: str) -> tuple[int, str]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        value = None
    if (
        isinstance(value, list)
        and len(value) == 3
        and value[0] == listing
        and isinstance(value[1], int)
        and isinstance(value[2], str)
    ):
        return value[1], value[2]
    raise InvalidArgument("page_token", "is not a token from a previous page of this listing")


def check_page_size(page_size: int) -> int:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    return page_size


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


_ResourceKey = tuple[str, str, str, str]


class _KeyedLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders and waiters


class _KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[_ResourceKey, _KeyedLock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: _ResourceKey) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _KeyedLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            # Also when cancelled while waiting: the count stays exact.
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]


class SqliteCore(StoreLifecycle):
    """One SQLite file: its writer and reader connections, transactions, and the sandboxes' keys."""

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
        self._path = Path(path)
        self._ring = keyring
        self._keys = KeyCache(key_cache_size)
        self._busy_timeout_ms = busy_timeout_ms
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # True from BEGIN until COMMIT/ROLLBACK is known to have run. A
        # coroutine cancelled mid-transaction may leave one open (its queued
        # statements still run on the connection's thread); the next
        # transaction rolls it back first.
        self._in_transaction = False
        self._resource_locks = _KeyedLocks()

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
            applied = {
                r[0] for r in await tx.execute_fetchall("SELECT version FROM schema_migrations")
            }
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
                    await step(tx, self._ring)
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

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one read on the reader connection (committed data only)."""
        db = self._reader
        if db is None:
            raise StoreError("the store is not open; call open() first")
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: BEGIN IMMEDIATE, the body, COMMIT (ROLLBACK on any error)."""
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
                yield db
                await db.execute("COMMIT")
                self._in_transaction = False
            except BaseException as exc:
                if self._in_transaction:
                    await _rollback_quietly(db)
                    self._in_transaction = False
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database write failed: {exc}") from exc
                raise

    async def _sandbox_keys(self, sandbox_id: str, *, refresh: bool = False) -> SandboxKeys:
        """The sandbox's opened keys, from the cache or unwrapped from the database."""
        if not refresh:
            cached = self._keys.get(sandbox_id)
            if cached is not None:
                return cached
        rows = await self._fetch(
            f"SELECT {WRAPPED_KEYS.columns} FROM data_keys WHERE sandbox_id = ?", (sandbox_id,)
        )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        keys = open_sandbox_keys(self._ring, sandbox_id, map(WRAPPED_KEYS.load, rows))
        self._keys.put(keys)
        return keys

    async def _opened(self, sandbox_id: str, convert: Callable[[SandboxKeys], T]) -> T:
        """Apply ``convert`` (which opens sealed values) with the sandbox's keys."""
        keys = await self._sandbox_keys(sandbox_id)
        try:
            return convert(keys)
        except UnknownDataKeyError:
            # Sealed with a data key added after we cached the set (a rotation
            # by another process): reload once.
            return convert(await self._sandbox_keys(sandbox_id, refresh=True))

    async def _blind_end_user(self, sandbox_id: str, end_user_id: str) -> str:
        """The blind id an end user of this sandbox is stored under.

        For an unknown sandbox, '': no row of that sandbox exists, so a query
        scoped by it finds nothing, as it did before ids were blinded.
        """
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            return ""
        return blind_end_user(keys, end_user_id)

    async def _require_conversation(self, sandbox_id: str, conversation_id: str) -> None:
        rows = await self._fetch(
            "SELECT 1 FROM conversations WHERE id = ? AND sandbox_id = ?",
            (conversation_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
