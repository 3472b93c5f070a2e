"""The engine-neutral core every aggregate of the SQL stores runs on.

The aggregates (``tenancy``, ``conversations``, ``runs``, ...) hold their SQL
once, written in the subset SQLite and PostgreSQL share, and reach the
database only through :class:`SqlCore`: committed reads with
:meth:`SqlCore._fetch`, writes in :meth:`SqlCore._transaction`, whose
:class:`Tx` runs statements. An engine (``store/sqlite``,
``store/postgres``) implements those, its migrations and the few fragments
the dialects spell differently (:class:`Dialect`).

The shared SQL: ``?`` or ``:name`` placeholders (never both in a statement),
no engine functions, times and booleans as integers, ``CAST(x AS BIGINT)``
around sums, ``CAST(:p AS BLOB)`` where a bytes parameter's type cannot be
inferred (the PostgreSQL schema defines the domain ``blob``).
"""

from __future__ import annotations

import abc
import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import orjson

from interlockd.errors import InvalidArgument, NotFound, StoreError
from interlockd.store.base import StoreLifecycle
from interlockd.store.crypto import (
    KeyCache,
    KeyringError,
    MasterKeyring,
    SandboxKeys,
    UnknownDataKeyError,
    WrappedKey,
    open_sandbox_keys,
)
from interlockd.store.sql.rows import Row, blind_end_user
from interlockd.store.sql.tables import WRAPPED_KEYS

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    Params = Sequence[Any] | Mapping[str, Any]


MAX_INT = 2**63 - 1


US_PER_DAY = 86_400_000_000


ConstraintKind = Literal["unique", "primary_key", "foreign_key", "check", "not_null", "other"]


class ConstraintViolation(StoreError):
    """A statement broke a constraint of the schema; ``kind`` says which sort.

    Raised by a :class:`Tx` in place of the driver's error, so an aggregate
    turns it into the error its caller means (NotFound for a missing parent,
    AlreadyExists for a duplicate). The transaction is rolled back.
    """

    def __init__(self, kind: ConstraintKind, message: str) -> None:
        super().__init__(message)
        self.kind: ConstraintKind = kind


class Tx(Protocol):
    """One open write transaction.

    Every statement either completes or raises (a broken constraint as
    :class:`ConstraintViolation`, a database failure as StoreError or
    Unavailable); the transaction commits when its block ends without an
    exception and rolls back otherwise.
    """

    dialect: Dialect

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a statement that returns rows (a SELECT, or a write with RETURNING)."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; how many rows it inserted, updated or deleted."""

    async def executemany(self, sql: str, params: Iterable[Params]) -> None:
        """Run one statement once per parameter set."""

    async def execute_bulk(self, sql: str, params: Params = ()) -> int:
        """:meth:`execute` for a statement that may touch many rows (a cascade of
        deletes): an engine that runs statements on the event loop's thread runs
        this one elsewhere, so it never stalls the streams in flight."""

    async def lock_sandbox(self, sandbox_id: str) -> None:
        """From here to the end of the transaction, write in turn with the sandbox's other writers.

        What :meth:`SqlCore._transaction` does first when it is given the
        sandbox; for a call that learns its sandbox from its first statement.
        """


class Dialect(abc.ABC):
    """What the two engines spell differently, and only that."""

    name: str

    @abc.abstractmethod
    def day_of(self, column: str) -> str:
        """An expression: the UTC day ('YYYY-MM-DD') of a microseconds column."""

    @abc.abstractmethod
    async def index_terms(self, tx: Tx, rows: Sequence[tuple[list[str], str, int]]) -> None:
        """Index the entries (conversation id, seq) under their blind search terms."""

    @abc.abstractmethod
    def search_sql(self, columns: str, terms: Sequence[str]) -> tuple[str, list[Any]]:
        """A query for entries holding every term, best first, and its leading parameters.

        The query goes on with ``AND e.sandbox_id = ? AND c.sandbox_id = ? AND
        c.end_user_id = ? AND e.conversation_id <> ?`` then the ordering and
        ``LIMIT ?`` (:meth:`search_order`), whose parameters the caller appends.
        """

    @abc.abstractmethod
    def search_order(self) -> str:
        """The ORDER BY that ends :meth:`search_sql`'s query, best hit first."""


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


class SqlCore(StoreLifecycle):
    """Reads, write transactions and the sandboxes' keys, for the aggregates.

    An engine implements the abstract methods; everything else here is shared.
    """

    dialect: Dialect

    def __init__(self, keyring: MasterKeyring, *, key_cache_size: int = 4096) -> None:
        self._ring = keyring
        self._keys = KeyCache(key_cache_size)

    @abc.abstractmethod
    async def _fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one read outside any transaction (committed data only)."""

    async def _fetch_scan(self, sql: str, params: Params = ()) -> list[Row]:
        """:meth:`_fetch` for a read that may scan many rows (sums over the ledger,
        full-text search): an engine that reads on the event loop's thread runs
        this one elsewhere, so it never stalls the streams in flight."""
        return await self._fetch(sql, params)

    @abc.abstractmethod
    def _transaction(self, serialize: str = "") -> AbstractAsyncContextManager[Tx]:
        """One write transaction; with ``serialize``, in turn with that sandbox's others.

        A check-then-write that no constraint or single-row update makes
        atomic (admission: counts, one turn per conversation, budgets; the
        compute sessions cap; taking a run back) passes its sandbox: SQLite
        serializes every writer anyway; PostgreSQL takes a transaction-scoped
        advisory lock on the sandbox first, so the checks see every commit
        before them, on any replica. Every other write is one statement's or
        one row's worth of atomicity and passes nothing, so a sandbox's turns
        do not queue behind each other's appends and settlements.
        """

    @abc.abstractmethod
    def _keyed_lock(self, *key: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion among holders of ``key`` in every process sharing the store."""

    async def _after_sandbox_deleted(self) -> None:
        """Hook: make a deleted sandbox's wrapped keys leave the storage (SQLite: checkpoint)."""

    async def _prove_keyring(self, where: str) -> None:
        """KeyringError unless this keyring opens a stored key of every master key id.

        For a store opened by several processes, the proof runs when each
        opens (before it writes anything).
        """
        masters = await self._fetch(
            "SELECT master_key_id, MIN(sandbox_id) AS sandbox_id FROM data_keys "
            "GROUP BY master_key_id"
        )
        samples: list[tuple[str, WrappedKey]] = []
        for m in masters:
            rows = await self._fetch(
                f"SELECT {WRAPPED_KEYS.columns} FROM data_keys "
                "WHERE master_key_id = ? AND sandbox_id = ? LIMIT 1",
                (m["master_key_id"], m["sandbox_id"]),
            )
            samples.extend((m["sandbox_id"], WRAPPED_KEYS.load(r)) for r in rows)
        try:
            self._ring.prove_opens(samples)
        except KeyringError as exc:
            held = ", ".join(sorted(m["master_key_id"] for m in masters))
            raise KeyringError(
                f"the master key given does not open the keys stored in {where} "
                f"(wrapped by master key {held}): give every replica the key the store "
                f"was created with ({exc}). Nothing was written"
            ) from None

    async def _sandbox_keys(
        self, sandbox_id: str, *, refresh: bool = False, tx: Tx | None = None
    ) -> SandboxKeys:
        """The sandbox's opened keys, from the cache or unwrapped from the database.

        Inside a transaction pass its ``tx``: the read then uses the
        transaction's connection rather than waiting for another.
        """
        if not refresh:
            cached = self._keys.get(sandbox_id)
            if cached is not None:
                return cached
        rows = await (tx.fetch if tx is not None else self._fetch)(
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
