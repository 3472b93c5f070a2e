"""The PostgreSQL engine: an asyncpg pool, check-then-write transactions in turn per sandbox."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from interlockd.errors import StoreError, Unavailable
from interlockd.store.postgres.migrate import migrate
from interlockd.store.postgres.sql import bind
from interlockd.store.sql.core import (
    ConstraintKind,
    ConstraintViolation,
    Dialect,
    SqlCore,
    Tx,
)
from interlockd.store.sql.locks import KeyedLocks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from asyncpg.pool import PoolConnectionProxy

    from interlockd.store.crypto import MasterKeyring
    from interlockd.store.sql.core import Params
    from interlockd.store.sql.rows import Row

    Connection = asyncpg.Connection | PoolConnectionProxy

#: The first key of pg_advisory_xact_lock(int4, int4): what the lock is on.
SANDBOX_WRITES = 1
KEYED_LOCK = 2

_CONSTRAINTS: dict[type[Exception], ConstraintKind] = {
    asyncpg.UniqueViolationError: "unique",
    asyncpg.ForeignKeyViolationError: "foreign_key",
    asyncpg.CheckViolationError: "check",
    asyncpg.NotNullViolationError: "not_null",
}

#: The database cannot be reached or went away: the call may be retried.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def _translated(exc: BaseException, where: str) -> BaseException:
    """Our error for a driver's: a constraint, an unreachable database, or a store failure."""
    for kind_of, kind in _CONSTRAINTS.items():
        if isinstance(exc, kind_of):
            name = getattr(exc, "constraint_name", "") or ""
            if kind == "unique" and name.endswith("_pkey"):
                kind = "primary_key"
            return ConstraintViolation(kind, f"database {where} failed: {exc}")
    if isinstance(exc, _UNREACHABLE):
        return Unavailable(f"the store's database is unavailable ({type(exc).__name__}); retry")
    return StoreError(f"database {where} failed: {exc}")


_DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_UNREACHABLE)


def _rowcount(status: str) -> int:
    """Rows a statement touched, from its command tag ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresDialect(Dialect):
    """PostgreSQL's spellings: to_char days, a table of blind terms."""

    name = "postgres"

    def day_of(self, column: str) -> str:
        return f"to_char(to_timestamp({column} / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    async def index_terms(self, tx: Tx, rows: Sequence[tuple[list[str], str, int]]) -> None:
        await tx.executemany(
            "INSERT INTO entry_terms (entry_id, term) "
            "SELECT id, ? FROM entries WHERE conversation_id = ? AND seq = ? "
            "ON CONFLICT DO NOTHING",
            [
                (term, conversation_id, seq)
                for terms, conversation_id, seq in rows
                for term in dict.fromkeys(terms)
            ],
        )

    def search_sql(self, columns: str, terms: Sequence[str]) -> tuple[str, list[Any]]:
        distinct = list(dict.fromkeys(terms))
        return (
            f"SELECT {columns} FROM (SELECT entry_id FROM entry_terms WHERE term = ANY(?) "
            "GROUP BY entry_id HAVING count(*) = ?) AS hits "
            "JOIN entries e ON e.id = hits.entry_id "
            "JOIN conversations c ON c.id = e.conversation_id WHERE TRUE",
            [distinct, len(distinct)],
        )

    def search_order(self) -> str:
        # No relevance score without a text index: newest first.
        return "ORDER BY e.id DESC"


class PostgresTx:
    """A write transaction on one pooled connection (see :class:`~interlockd.store.sql.core.Tx`)."""

    __slots__ = ("_conn",)

    dialect: Dialect = PostgresDialect()

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        text, args = bind(sql, params)
        try:
            return list(await self._conn.fetch(text, *args))
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "write") from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        text, args = bind(sql, params)
        try:
            return _rowcount(await self._conn.execute(text, *args))
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "write") from exc

    async def execute_bulk(self, sql: str, params: Params = ()) -> int:
        return await self.execute(sql, params)  # the server does the work, not this process

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        batch = [bind(sql, p) for p in params]
        if not batch:
            return
        try:
            await self._conn.executemany(batch[0][0], [args for _, args in batch])
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "write") from exc

    async def lock_sandbox(self, sandbox_id: str) -> None:
        # Transaction-scoped: released by COMMIT or ROLLBACK, also when the
        # connection dies (the server ends the session's transaction).
        try:
            await self._conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", SANDBOX_WRITES, sandbox_id
            )
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "lock") from exc


_NO_TURN = contextlib.nullcontext()


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresEngine(SqlCore):
    """One PostgreSQL database through a pool of asyncpg connections."""

    dialect = PostgresDialect()

    def __init__(
        self,
        url: str,
        keyring: MasterKeyring,
        *,
        pool_size: int = 10,
        key_cache_size: int = 4096,
        connect_timeout: float = 10.0,
        acquire_timeout: float = 30.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        super().__init__(keyring, key_cache_size=key_cache_size)
        self._url = url
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._pool: asyncpg.Pool | None = None
        # Advisory locks held for a block wait on connections of their own, so
        # a block's store calls never wait for a connection a waiter holds.
        self._lock_pool: asyncpg.Pool | None = None
        # Waiters of one process queue here rather than each on a connection.
        self._sandbox_turns = KeyedLocks()
        self._key_turns = KeyedLocks()

    def __repr__(self) -> str:
        return f"PostgresStore({describe(self._url)!r})"

    async def open(self) -> None:
        if self._pool is not None:
            return
        where = describe(self._url)
        try:
            pool = await self._new_pool(min_size=1)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"cannot open database {where}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn, where)
            self._pool = pool
            await self._prove_keyring(where)
            self._lock_pool = await self._new_pool(min_size=0)
        except BaseException as exc:
            self._pool = None
            await pool.close()
            if isinstance(exc, _DRIVER_ERRORS):
                raise StoreError(f"cannot migrate database {where}: {exc}") from exc
            raise

    async def _new_pool(self, *, min_size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._url,
            min_size=min_size,
            max_size=self._pool_size,
            timeout=self._connect_timeout,
            command_timeout=None,
        )

    async def close(self) -> None:
        pools = (self._pool, self._lock_pool)
        self._pool = self._lock_pool = None
        for pool in pools:
            if pool is not None:
                await pool.close()
        self._keys.clear()

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not open; call open() first")
        return self._pool

    async def _fetch(self, sql: str, params: Params = ()) -> list[Row]:
        text, args = bind(sql, params)
        try:
            return list(await self._open_pool().fetch(text, *args))
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "read") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, serialize: str = "") -> AsyncIterator[PostgresTx]:
        """One transaction on a pooled connection, first in turn with ``serialize``'s writers.

        READ COMMITTED: after the advisory lock every statement sees what the
        sandbox's previous writers committed, so admission's counts are exact.
        """
        pool = self._open_pool()
        try:
            async with (
                self._sandbox_turns.hold((serialize,)) if serialize else _NO_TURN,
                pool.acquire(timeout=self._acquire_timeout) as conn,
                conn.transaction(),
            ):
                tx = PostgresTx(conn)
                if serialize:
                    await tx.lock_sandbox(serialize)
                yield tx
        except TimeoutError as exc:
            raise Unavailable("no connection to the store's database came free; retry") from exc
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "write") from exc

    @contextlib.asynccontextmanager
    async def _keyed_lock(self, *key: str) -> AsyncIterator[None]:
        # An advisory lock held by a transaction open for the block: released
        # at its end, or by the server if this process dies.
        if self._lock_pool is None:
            raise StoreError("the store is not open; call open() first")
        try:
            async with (
                self._key_turns.hold(key),
                self._lock_pool.acquire(timeout=self._acquire_timeout) as conn,
                conn.transaction(),
            ):
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", KEYED_LOCK, "\x1f".join(key)
                )
                yield
        except TimeoutError as exc:
            raise Unavailable("no connection to the store's database came free; retry") from exc
        except _DRIVER_ERRORS as exc:
            raise _translated(exc, "lock") from exc
