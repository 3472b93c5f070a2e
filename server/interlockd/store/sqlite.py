"""The embedded store: :class:`~interlockd.store.base.Store` on one SQLite file through aiosqlite.

This module owns the SQLite dialect: connections and pragmas, the migration
runner, the SQL, and the mapping between rows and the dataclasses of
``base.py``. Keys and sealing belong to ``crypto.py``; this module only moves
wrapped keys and sealed bytes in and out of rows and never writes conversation
content, titles or search words in clear.

Tenant-chosen identifiers. An end user id or a request id is stored as its
blind id (``SandboxKeys.blind_id``, a keyed hash), which equality lookups,
unique indexes, admission counts and GROUP BY use as they would the id
itself; labels and compute tags are sealed. An end user's own id is sealed
once, in its ``end_users`` row; a row naming the end user is read with that
sealed copy (``_end_user_sealed``) and opened, while calls addressed by an end
user give back the caller's own id. A copied file names no end user, request
or label.

Connections. One writer and one reader connection, each served by its own
aiosqlite thread. Write transactions are serialized in-process by an
:class:`asyncio.Lock` and start with ``BEGIN IMMEDIATE``, which also
serializes them against other processes on the same file, so every
check-then-write (admission above all) is atomic. Reads run on the reader in
autocommit mode: WAL gives each statement the latest committed snapshot, so a
read never sees another coroutine's uncommitted transaction and never waits
behind one.

Durability. ``synchronous=FULL``: in WAL mode NORMAL may lose the last
commits on power loss, and the run path promises that the user message and
every completed tool call are on disk before the next provider call. The cost
is one fsync of the WAL per commit, so a turn commits little: ``begin_run``
carries the new conversation and the user message, ``finish_run`` the final
text, and the recorder batches entries per tool boundary in between. Each
statement is also a round trip to the connection's thread (comparable to the
fsync), so the hot transactions keep their statements few: admission and the
run's insert are one statement, and a conversation created by ``begin_run``
starts out holding its entries' seqs.

Provider resource locks. :meth:`SqliteStore.provider_resource_lock` is an
:class:`asyncio.Lock` per key, in process memory. That is the whole contract
here: the embedded store is one daemon process by design (several replicas
share PostgreSQL, whose store takes an advisory lock instead). A key's lock
lives only while someone holds or awaits it.

Deletion. ``secure_delete`` is on and deleting a sandbox ends with a
truncating WAL checkpoint, so its wrapped keys are overwritten in the file
rather than left in free pages (crypto-shredding).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import importlib.resources
import os
import re
import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import aiosqlite
import orjson

from interlockd import ids
from interlockd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    RunInProgress,
    StoreError,
)
from interlockd.store.base import (
    ApiKey,
    ComputeSessionRecord,
    ComputeStatus,
    ConnectFlow,
    Conversation,
    EntryKind,
    FlowStatus,
    Integration,
    IntegrationKind,
    IntegrationStatus,
    LedgerEntry,
    LedgerFilter,
    LedgerRow,
    NewEntry,
    NewRun,
    Page,
    Pause,
    PauseScope,
    Placement,
    ProviderSession,
    Quotas,
    RotationReport,
    Run,
    RunStatus,
    Sandbox,
    SavedAgent,
    SearchHit,
    Store,
    UsageGroup,
    UsageTotals,
    WindowEntry,
    check_secret_name,
)
from interlockd.store.crypto import (
    KeyCache,
    MasterKeyring,
    SandboxKeys,
    UnknownDataKeyError,
    WrappedKey,
    blind_terms,
    new_data_key,
    new_sandbox_keys,
    open_sandbox_keys,
)
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

T = TypeVar("T")

#: RETURNING and STRICT tables (3.37); FTS5 is checked by the first migration.
MIN_SQLITE_VERSION = (3, 37, 0)
_MAX_INT = 2**63 - 1
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Entry kinds whose text goes into the search index (summaries restate them).
_INDEXED_KINDS = frozenset({"user", "assistant", "tool_call", "tool_result"})
_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


def _now_us() -> int:
    return time.time_ns() // 1000


def _time(us: int) -> datetime:
    # Integer arithmetic: a float timestamp would lose microseconds.
    return _EPOCH + timedelta(microseconds=us)


def _time_or_none(us: int | None) -> datetime | None:
    return None if us is None else _time(us)


def _entry_row(conversation_id: str, seq: int) -> str:
    """The row identity an entry's text is sealed to."""
    return f"{conversation_id}/{seq}"


def _session_row(conversation_id: str, provider: str) -> str:
    """The row identity a provider session id is sealed to."""
    return f"{conversation_id}/{provider}"


def _is_constraint(exc: sqlite3.Error, name: str) -> bool:
    return getattr(exc, "sqlite_errorname", "") == f"SQLITE_CONSTRAINT_{name}"


# ---- page tokens ------------------------------------------------------------------
# Opaque to callers: base64url of [listing, sort key, id]. The listing tag
# stops a token of one listing being replayed against another.


def _page_token(listing: str, sort_key: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([listing, sort_key, row_id])).decode()


def _read_page_token(token: str, listing: str) -> tuple[int, str]:
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


def _check_page_size(page_size: int) -> int:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    return page_size


# ---- migrations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _split_statements(script: str, origin: str) -> tuple[str, ...]:
    """Split a script into single statements (sqlite3 executes one at a time).

    ``executescript`` is not an option: it commits any open transaction first,
    and migrations must apply inside one.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = "\n".join(
        ln for ln in pending.splitlines() if ln.strip() and not ln.strip().startswith("--")
    )
    if leftover:
        raise StoreError(f"migration {origin} ends with an incomplete statement: {leftover[:80]!r}")
    return tuple(statements)


def load_migrations() -> list[Migration]:
    """The SQLite migrations shipped with the package, in version order (1, 2, ...)."""
    folder = importlib.resources.files("interlockd.store").joinpath("migrations", "sqlite")
    found: list[Migration] = []
    for item in folder.iterdir():
        match = _MIGRATION_NAME.fullmatch(item.name)
        if match is None:
            continue
        statements = _split_statements(item.read_text(encoding="utf-8"), item.name)
        found.append(Migration(int(match.group(1)), item.name, statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"SQLite migrations must be numbered 1, 2, ... without gaps: {versions}")
    return found


# ---- row mapping ------------------------------------------------------------------

_SANDBOX_COLUMNS = (
    "id, name, created_at, max_concurrent_runs, max_concurrent_runs_per_end_user, "
    "max_tokens_per_day"
)
_API_KEY_COLUMNS = "id, sandbox_id, name, prefix, created_at, revoked_at"
_CONVERSATION_COLUMNS = (
    "id, sandbox_id, end_user_id, title_sealed, last_provider, last_model, entry_count, "
    "created_at, updated_at"
)
_ENTRY_COLUMNS = (
    "conversation_id, seq, kind, text_sealed, run_id, tokens, created_at, provider, model, "
    "tool_call_id, tool_name, is_error, source_id"
)
_ENTRY_COLUMNS_OF_E = ", ".join(f"e.{column}" for column in _ENTRY_COLUMNS.split(", "))


def _end_user_sealed(table: str) -> str:
    """A result column: the sealed id of the end user a row of ``table`` names by blind id.

    A scalar subquery rather than a join, so it also works in RETURNING.
    """
    return (
        f"(SELECT u.id_sealed FROM end_users u WHERE u.sandbox_id = {table}.sandbox_id "
        f"AND u.id = {table}.end_user_id) AS end_user_sealed"
    )


_RUN_COLUMNS = (
    "id, sandbox_id, end_user_id, conversation_id, provider, model, request_id_sealed, "
    "labels_sealed, status, started_at, finished_at, stop_reason, error_code, error_message, "
    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
    f"cost_usd, {_end_user_sealed('runs')}"
)
_LEDGER_COLUMNS = (
    "run_id, sandbox_id, end_user_id, kind, provider, model, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, price_version, "
    "compute_seconds, agent_id"
)
_LEDGER_SELECT = f"{_LEDGER_COLUMNS}, {_end_user_sealed('ledger')}"


def _blind_end_user(keys: SandboxKeys, end_user_id: str) -> str:
    """The blind id stored for an end user ('' stays '': "no end user")."""
    return keys.blind_id("end_user", end_user_id) if end_user_id else ""


def _blind_request_id(keys: SandboxKeys, request_id: str) -> str:
    """The blind id stored for a request id ('' stays '': "no idempotency key")."""
    return keys.blind_id("request_id", request_id) if request_id else ""


def _end_user(keys: SandboxKeys, r: sqlite3.Row) -> str:
    """The end user id a row names by blind id, opened from its end_users row."""
    blind: str = r["end_user_id"]
    if not blind:
        return ""
    sealed: bytes | None = r["end_user_sealed"]
    if sealed is None:
        raise StoreError(
            f"end user {blind} of sandbox {keys.sandbox_id} has no end_users row; "
            "the database was changed outside interlockd"
        )
    return _open_end_user(keys, sealed=sealed, blind=blind)


def _open_end_user(keys: SandboxKeys, *, sealed: bytes, blind: str) -> str:
    """An end user's own id, from its end_users row's sealed copy."""
    return keys.open(sealed, table="end_users", row=blind, column="id")


def _open_json(
    keys: SandboxKeys, sealed: bytes | None, *, table: str, row: str, column: str
) -> Any:
    """A sealed JSON document, or {} for NULL."""
    if sealed is None:
        return {}
    return orjson.loads(keys.open(sealed, table=table, row=row, column=column))


def _sandbox(r: sqlite3.Row) -> Sandbox:
    return Sandbox(
        id=r["id"],
        name=r["name"],
        created_at=_time(r["created_at"]),
        quotas=Quotas(
            max_concurrent_runs=r["max_concurrent_runs"],
            max_concurrent_runs_per_end_user=r["max_concurrent_runs_per_end_user"],
            max_tokens_per_day=r["max_tokens_per_day"],
        ),
    )


def _api_key(r: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        name=r["name"],
        prefix=r["prefix"],
        created_at=_time(r["created_at"]),
        revoked_at=_time_or_none(r["revoked_at"]),
    )


def _title(keys: SandboxKeys, r: sqlite3.Row) -> str:
    sealed = r["title_sealed"]
    if sealed is None:
        return ""
    return keys.open(sealed, table="conversations", row=r["id"], column="title")


def _conversation(r: sqlite3.Row, end_user_id: str, title: str = "") -> Conversation:
    # The caller named the end user: its own id, rather than opening the stored one.
    return Conversation(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        end_user_id=end_user_id,
        created_at=_time(r["created_at"]),
        updated_at=_time(r["updated_at"]),
        title=title,
        last_provider=r["last_provider"],
        last_model=r["last_model"],
        entry_count=r["entry_count"],
    )


def _entry(keys: SandboxKeys, r: sqlite3.Row) -> WindowEntry:
    conversation_id, seq = r["conversation_id"], r["seq"]
    return WindowEntry(
        conversation_id=conversation_id,
        seq=seq,
        kind=r["kind"],
        text=keys.open(
            r["text_sealed"],
            table="entries",
            row=_entry_row(conversation_id, seq),
            column="text",
        ),
        run_id=r["run_id"],
        tokens=r["tokens"],
        created_at=_time(r["created_at"]),
        provider=r["provider"],
        model=r["model"],
        tool_call_id=r["tool_call_id"],
        tool_name=r["tool_name"],
        is_error=bool(r["is_error"]),
        source_id=r["source_id"],
    )


def _integration(keys: SandboxKeys, r: sqlite3.Row) -> Integration:
    config = keys.open(r["config_sealed"], table="integrations", row=r["id"], column="config")
    return Integration(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        kind=r["kind"],
        app=r["app"],
        end_user_id=_end_user(keys, r),
        status=r["status"],
        status_reason=r["status_reason"],
        config=orjson.loads(config),
        created_at=_time(r["created_at"]),
        updated_at=_time(r["updated_at"]),
        last_used_at=_time_or_none(r["last_used_at"]),
    )


def _agent(keys: SandboxKeys, r: sqlite3.Row) -> SavedAgent:
    settings = keys.open(r["settings_sealed"], table="agents", row=r["slug"], column="settings")
    return SavedAgent(
        sandbox_id=r["sandbox_id"],
        slug=r["slug"],
        settings=orjson.loads(settings),
        created_at=_time(r["created_at"]),
        updated_at=_time(r["updated_at"]),
    )


_COMPUTE_COLUMNS = (
    "id, sandbox_id, end_user_id, agent_key, runtime, provider, external_id, status, region, "
    "endpoint, spec_fingerprint, secrets_sealed, tags_sealed, active_seconds, created_at, "
    f"updated_at, last_active_at, {_end_user_sealed('compute_sessions')}"
)


def _us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _compute_session(keys: SandboxKeys, r: sqlite3.Row) -> ComputeSessionRecord:
    secrets_ = orjson.loads(
        keys.open(r["secrets_sealed"], table="compute_sessions", row=r["id"], column="secrets")
    )
    return ComputeSessionRecord(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        end_user_id=_end_user(keys, r),
        agent_key=r["agent_key"],
        runtime=r["runtime"],
        provider=r["provider"],
        external_id=r["external_id"],
        status=r["status"],
        region=r["region"],
        endpoint=r["endpoint"],
        spec_fingerprint=r["spec_fingerprint"],
        api_key=secrets_["api_key"],
        mcp_token=secrets_["mcp_token"],
        tags=_open_json(
            keys, r["tags_sealed"], table="compute_sessions", row=r["id"], column="tags"
        ),
        active_seconds=r["active_seconds"],
        created_at=_time(r["created_at"]),
        updated_at=_time(r["updated_at"]),
        last_active_at=_time(r["last_active_at"]),
    )


def _seal_tags(keys: SandboxKeys, session_id: str, tags: Mapping[str, str]) -> bytes:
    # Tags name the end user (user_id): sealed like the rest of what it chose.
    return keys.seal(
        orjson.dumps(dict(tags), option=orjson.OPT_SORT_KEYS).decode(),
        table="compute_sessions",
        row=session_id,
        column="tags",
    )


def _opener(r: sqlite3.Row) -> Callable[[SandboxKeys], ComputeSessionRecord]:
    return lambda keys: _compute_session(keys, r)


def _placement(r: sqlite3.Row) -> Placement:
    return Placement(
        run_id=r["run_id"],
        sandbox_id=r["sandbox_id"],
        compute_session_id=r["compute_session_id"],
        provider=r["provider"],
        policy=r["policy"],
        reason=r["reason"],
        candidates=orjson.loads(r["candidates"]),
        ready_seconds=r["ready_seconds"],
        created_at=_time(r["created_at"]),
    )


#: An end_user pause's target is the end user's blind id; its sealed id comes along.
_PAUSE_COLUMNS = (
    "scope, sandbox_id, target, reason, created_at, "
    "(SELECT u.id_sealed FROM end_users u WHERE pauses.scope = 'end_user' "
    "AND u.sandbox_id = pauses.sandbox_id AND u.id = pauses.target) AS target_sealed"
)


def _pause(r: sqlite3.Row, target: str) -> Pause:
    return Pause(
        scope=r["scope"],
        sandbox_id=r["sandbox_id"],
        target=target,
        reason=r["reason"],
        created_at=_time(r["created_at"]),
    )


def _check_pause(scope: str, sandbox_id: str, target: str) -> None:
    if scope not in ("global", "end_user", "agent_provider", "compute_provider"):
        raise ValueError(f"unknown pause scope {scope!r}")
    if scope == "global" and (sandbox_id or target):
        raise ValueError("a global pause has no sandbox or target")
    if scope != "global" and not target:
        raise ValueError(f"a {scope} pause needs a target")
    if scope == "end_user" and not sandbox_id:
        raise ValueError("an end_user pause needs its sandbox")


def _flow(keys: SandboxKeys, r: sqlite3.Row) -> ConnectFlow:
    return ConnectFlow(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        app=r["app"],
        end_user_id=_end_user(keys, r),
        for_end_user=bool(r["for_end_user"]),
        status=r["status"],
        reason=r["reason"],
        integration_id=r["integration_id"],
        created_at=_time(r["created_at"]),
        expires_at=_time(r["expires_at"]),
        finished_at=_time_or_none(r["finished_at"]),
    )


def _usage(r: sqlite3.Row) -> Usage:
    return Usage(
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        cache_read_tokens=r["cache_read_tokens"],
        cache_write_tokens=r["cache_write_tokens"],
        reasoning_tokens=r["reasoning_tokens"],
    )


def _run(keys: SandboxKeys, r: sqlite3.Row) -> Run:
    request_id: bytes | None = r["request_id_sealed"]
    return Run(
        id=r["id"],
        sandbox_id=r["sandbox_id"],
        end_user_id=_end_user(keys, r),
        conversation_id=r["conversation_id"],
        provider=r["provider"],
        model=r["model"],
        request_id=""
        if request_id is None
        else keys.open(request_id, table="runs", row=r["id"], column="request_id"),
        labels=_open_json(keys, r["labels_sealed"], table="runs", row=r["id"], column="labels"),
        status=r["status"],
        started_at=_time(r["started_at"]),
        finished_at=_time_or_none(r["finished_at"]),
        stop_reason=r["stop_reason"],
        error_code=r["error_code"],
        error_message=r["error_message"],
        usage=_usage(r),
        cost_usd=r["cost_usd"],
    )


def _ledger_row(keys: SandboxKeys, r: sqlite3.Row) -> LedgerRow:
    return LedgerRow(
        run_id=r["run_id"],
        sandbox_id=r["sandbox_id"],
        end_user_id=_end_user(keys, r),
        kind=r["kind"],
        provider=r["provider"],
        model=r["model"],
        usage=_usage(r),
        cost_usd=r["cost_usd"],
        price_version=r["price_version"],
        compute_seconds=r["compute_seconds"],
        agent_id=r["agent_id"],
    )


# ---- ledger queries ---------------------------------------------------------------
# The Ledger service's listings and summaries. Sums are computed by SQLite
# (GROUP BY), so a summary costs one query however many rows it covers.

#: The key of each summary grouping. Days are UTC dates, which sort chronologically.
_USAGE_KEYS: dict[str, str] = {
    "end_user": "end_user_id",
    "agent": "agent_id",
    "run": "run_id",
    "provider": "provider",
    "day": "strftime('%Y-%m-%d', created_at / 1000000, 'unixepoch')",
}
# TOTAL() is SUM() that answers 0.0 instead of NULL for no rows.
_USAGE_SUMS = (
    "TOTAL(CASE WHEN kind = 'tokens' THEN cost_usd END) AS token_cost_usd, "
    "TOTAL(CASE WHEN kind = 'compute' THEN cost_usd END) AS compute_cost_usd, "
    "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
    "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
    "COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens, "
    "COALESCE(SUM(cache_write_tokens), 0) AS cache_write_tokens, "
    "COALESCE(SUM(reasoning_tokens), 0) AS reasoning_tokens, "
    "TOTAL(compute_seconds) AS compute_seconds, "
    "COUNT(DISTINCT run_id) AS run_count, "
    "COUNT(*) AS entry_count, "
    "COUNT(DISTINCT CASE WHEN (SELECT r.status FROM runs r WHERE r.id = ledger.run_id) "
    "= 'failed' THEN run_id END) AS failed_run_count"
)
_LEDGER_ROW_ID = re.compile(r"[0-9]{1,18}")


def _ledger_time(moment: datetime) -> int:
    """Microseconds since the epoch, in integers (a float would lose microseconds)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ledger_where(
    sandbox_id: str, where: LedgerFilter, blind_end_user: str
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (to be ANDed) and parameters selecting ``where``'s rows.

    ``blind_end_user`` is the blind id of ``where.end_user_id`` (the column holds blind ids).
    """
    clauses = ["sandbox_id = ?"]
    params: list[Any] = [sandbox_id]
    for column, value in (
        ("run_id", where.run_id),
        ("end_user_id", blind_end_user),
        ("agent_id", where.agent_id),
        ("kind", where.kind or ""),
    ):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.provider:
        # A compute row's provider is the compute provider; its run's, the agent provider.
        clauses.append(
            "(provider = ? OR (SELECT r.provider FROM runs r WHERE r.id = ledger.run_id) = ?)"
        )
        params += [where.provider, where.provider]
    if where.since is not None:
        clauses.append("created_at >= ?")
        params.append(_ledger_time(where.since))
    if where.until is not None:
        clauses.append("created_at < ?")
        params.append(_ledger_time(where.until))
    return clauses, params


def _usage_totals(r: sqlite3.Row, key: str) -> UsageTotals:
    return UsageTotals(
        key=key,
        token_cost_usd=r["token_cost_usd"],
        compute_cost_usd=r["compute_cost_usd"],
        usage=_usage(r),
        compute_seconds=r["compute_seconds"],
        run_count=r["run_count"],
        entry_count=r["entry_count"],
        failed_run_count=r["failed_run_count"],
    )


# ---- end of ledger queries --------------------------------------------------------


def _wrapped(r: sqlite3.Row) -> WrappedKey:
    return WrappedKey(
        key_id=r["key_id"],
        kind=r["kind"],
        wrapped=r["wrapped_key"],
        master_key_id=r["master_key_id"],
        is_current=bool(r["is_current"]),
    )


# ---- provider resource locks ------------------------------------------------------

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


# ---- the store --------------------------------------------------------------------


class SqliteStore(Store):
    """The embedded store: one SQLite file (plus its WAL) holding every sandbox."""

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

    # ---- lifecycle ---------------------------------------------------------------

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
                step = _DATA_STEPS.get(migration.version)
                if step is not None:
                    await step(tx, self._ring)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _now_us()),
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

    # ---- plumbing ----------------------------------------------------------------

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
            "SELECT key_id, kind, wrapped_key, master_key_id, is_current "
            "FROM data_keys WHERE sandbox_id = ?",
            (sandbox_id,),
        )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        keys = open_sandbox_keys(self._ring, sandbox_id, map(_wrapped, rows))
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
        return _blind_end_user(keys, end_user_id)

    async def _require_conversation(self, sandbox_id: str, conversation_id: str) -> None:
        rows = await self._fetch(
            "SELECT 1 FROM conversations WHERE id = ? AND sandbox_id = ?",
            (conversation_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")

    # ---- operator keys -----------------------------------------------------------

    async def add_operator_key(self, key_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO operator_keys (key_hash, created_at) VALUES (?, ?) "
                "ON CONFLICT (key_hash) DO NOTHING",
                (key_hash, _now_us()),
            )

    async def has_operator_key(self) -> bool:
        return bool(await self._fetch("SELECT 1 FROM operator_keys LIMIT 1"))

    async def is_operator_key(self, key_hash: str) -> bool:
        return bool(
            await self._fetch("SELECT 1 FROM operator_keys WHERE key_hash = ?", (key_hash,))
        )

    # ---- sandboxes ---------------------------------------------------------------

    async def create_sandbox(self, name: str, quotas: Quotas) -> Sandbox:
        sandbox_id = ids.new_id("sbx")
        now = _now_us()
        keys, wrapped = new_sandbox_keys(self._ring, sandbox_id)
        async with self._transaction() as db:
            try:
                await db.execute(
                    f"INSERT INTO sandboxes ({_SANDBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        sandbox_id,
                        name,
                        now,
                        quotas.max_concurrent_runs,
                        quotas.max_concurrent_runs_per_end_user,
                        quotas.max_tokens_per_day,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "UNIQUE"):
                    raise AlreadyExists(
                        f"a sandbox named {name!r} already exists; choose another name"
                    ) from None
                raise
            await db.executemany(
                "INSERT INTO data_keys (sandbox_id, key_id, kind, wrapped_key, master_key_id, "
                "is_current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (sandbox_id, w.key_id, w.kind, w.wrapped, w.master_key_id, w.is_current, now)
                    for w in wrapped
                ],
            )
        self._keys.put(keys)
        return Sandbox(sandbox_id, name, _time(now), quotas)

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        rows = await self._fetch(
            f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?", (sandbox_id,)
        )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        return _sandbox(rows[0])

    async def list_sandboxes(self, page_size: int, page_token: str) -> Page[Sandbox]:
        size = _check_page_size(page_size)
        after = _read_page_token(page_token, "sandboxes") if page_token else (-1, "")
        rows = await self._fetch(
            f"SELECT {_SANDBOX_COLUMNS} FROM sandboxes WHERE (created_at, id) > (?, ?) "
            "ORDER BY created_at, id LIMIT ?",
            (*after, size + 1),
        )
        items = [_sandbox(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _page_token("sandboxes", last["created_at"], last["id"])
        return Page(items, token)

    async def set_quotas(self, sandbox_id: str, quotas: Quotas) -> Sandbox:
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE sandboxes SET max_concurrent_runs = ?, "
                    "max_concurrent_runs_per_end_user = ?, max_tokens_per_day = ? "
                    f"WHERE id = ? RETURNING {_SANDBOX_COLUMNS}",
                    (
                        quotas.max_concurrent_runs,
                        quotas.max_concurrent_runs_per_end_user,
                        quotas.max_tokens_per_day,
                        sandbox_id,
                    ),
                )
            )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        return _sandbox(rows[0])

    async def delete_sandbox(self, sandbox_id: str) -> None:
        async with self._transaction() as db:
            # Cascades to everything of the sandbox, its data keys included.
            cursor = await db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"sandbox {sandbox_id} not found")
            # Pauses name their sandbox without a foreign key (global ones name none).
            await db.execute("DELETE FROM pauses WHERE sandbox_id = ?", (sandbox_id,))
        self._keys.evict(sandbox_id)
        # Copy the zeroed pages into the database file and empty the WAL, so
        # the old frames holding the wrapped keys do not linger there. Best
        # effort: a concurrent read may keep the WAL until the next checkpoint.
        async with self._write_lock:
            await self._writer_db().execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- API keys ----------------------------------------------------------------

    async def create_api_key(
        self, sandbox_id: str, name: str, key_hash: str, prefix: str
    ) -> ApiKey:
        key_id = ids.new_id("key")
        now = _now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    f"INSERT INTO api_keys ({_API_KEY_COLUMNS}, key_hash) "
                    "VALUES (?, ?, ?, ?, ?, NULL, ?)",
                    (key_id, sandbox_id, name, prefix, now, key_hash),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                if _is_constraint(exc, "UNIQUE"):
                    raise AlreadyExists("an API key with this hash already exists") from None
                raise
        return ApiKey(key_id, sandbox_id, name, prefix, _time(now))

    async def list_api_keys(self, sandbox_id: str) -> list[ApiKey]:
        rows = await self._fetch(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE sandbox_id = ? ORDER BY created_at, id",
            (sandbox_id,),
        )
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, sandbox_id: str, key_id: str) -> ApiKey:
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
                    f"WHERE id = ? AND sandbox_id = ? RETURNING {_API_KEY_COLUMNS}",
                    (_now_us(), key_id, sandbox_id),
                )
            )
        if not rows:
            raise NotFound(f"API key {key_id} not found")
        return _api_key(rows[0])

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        rows = await self._fetch(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (key_hash,),
        )
        return _api_key(rows[0]) if rows else None

    # ---- conversations and the window ----------------------------------------------

    async def create_conversation(self, sandbox_id: str, end_user_id: str) -> Conversation:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        conversation_id = ids.new_id("conv")
        now = _now_us()
        async with self._transaction() as db:
            await _insert_conversation(db, keys, sandbox_id, end_user_id, conversation_id, now)
        return Conversation(conversation_id, sandbox_id, end_user_id, _time(now), _time(now))

    async def get_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> Conversation:
        rows = await self._fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations "
            "WHERE id = ? AND sandbox_id = ? AND end_user_id = ?",
            (conversation_id, sandbox_id, await self._blind_end_user(sandbox_id, end_user_id)),
        )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return await self._conversation(sandbox_id, end_user_id, rows[0])

    async def _conversation(
        self, sandbox_id: str, end_user_id: str, row: sqlite3.Row
    ) -> Conversation:
        if row["title_sealed"] is None:
            return _conversation(row, end_user_id)
        title = await self._opened(sandbox_id, lambda keys: _title(keys, row))
        return _conversation(row, end_user_id, title)

    async def set_conversation_title(
        self, sandbox_id: str, end_user_id: str, conversation_id: str, title: str
    ) -> Conversation:
        sealed: bytes | None = None
        blind = await self._blind_end_user(sandbox_id, end_user_id)
        if title:
            try:
                keys = await self._sandbox_keys(sandbox_id)
            except NotFound:
                raise NotFound(f"conversation {conversation_id} not found") from None
            sealed = keys.seal(title, table="conversations", row=conversation_id, column="title")
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE conversations SET title_sealed = ? "
                    "WHERE id = ? AND sandbox_id = ? AND end_user_id = ? "
                    f"RETURNING {_CONVERSATION_COLUMNS}",
                    (sealed, conversation_id, sandbox_id, blind),
                )
            )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return await self._conversation(sandbox_id, end_user_id, rows[0])

    async def list_conversations(
        self, sandbox_id: str, end_user_id: str, page_size: int, page_token: str
    ) -> Page[Conversation]:
        size = _check_page_size(page_size)
        before = _read_page_token(page_token, "conversations") if page_token else (_MAX_INT, "")
        rows = await self._fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations "
            "WHERE sandbox_id = ? AND end_user_id = ? AND (updated_at, id) < (?, ?) "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (sandbox_id, await self._blind_end_user(sandbox_id, end_user_id), *before, size + 1),
        )
        page = rows[:size]
        titles = [""] * len(page)
        if any(r["title_sealed"] is not None for r in page):
            titles = await self._opened(sandbox_id, lambda keys: [_title(keys, r) for r in page])
        items = [_conversation(r, end_user_id, t) for r, t in zip(page, titles, strict=True)]
        token = ""
        if len(rows) > size:
            last = page[-1]
            token = _page_token("conversations", last["updated_at"], last["id"])
        return Page(items, token)

    async def delete_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> None:
        blind = await self._blind_end_user(sandbox_id, end_user_id)
        async with self._transaction() as db:
            # Entries cascade; their search rows go with them (trigger entries_drop_terms).
            cursor = await db.execute(
                "DELETE FROM conversations WHERE id = ? AND sandbox_id = ? AND end_user_id = ?",
                (conversation_id, sandbox_id, blind),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"conversation {conversation_id} not found")

    async def append_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        entries: Sequence[NewEntry],
        *,
        provider: str = "",
        model: str = "",
    ) -> list[int]:
        if not entries:
            return []
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            raise NotFound(f"conversation {conversation_id} not found") from None
        now = _now_us()
        async with self._transaction() as db:
            seqs = await _append_entries(
                db, keys, sandbox_id, conversation_id, entries, provider, model, now
            )
            if seqs is None:
                raise NotFound(f"conversation {conversation_id} not found")
        return seqs

    async def read_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[WindowEntry]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        order = "DESC" if newest_first else "ASC"
        rows = await self._fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries "
            "WHERE conversation_id = ? AND sandbox_id = ? AND seq > ? AND seq < ? "
            f"ORDER BY seq {order} LIMIT ?",
            (
                conversation_id,
                sandbox_id,
                0 if after_seq is None else after_seq,
                _MAX_INT if before_seq is None else before_seq,
                limit,
            ),
        )
        if not rows:
            await self._require_conversation(sandbox_id, conversation_id)
            return []
        return await self._opened(sandbox_id, lambda keys: [_entry(keys, r) for r in rows])

    async def find_tool_result(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        return await self._find_tool_entry(sandbox_id, conversation_id, tool_call_id, "tool_result")

    async def find_tool_call(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str
    ) -> WindowEntry | None:
        return await self._find_tool_entry(sandbox_id, conversation_id, tool_call_id, "tool_call")

    async def _find_tool_entry(
        self, sandbox_id: str, conversation_id: str, tool_call_id: str, kind: EntryKind
    ) -> WindowEntry | None:
        if not tool_call_id:
            return None
        rows = await self._fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries "
            "WHERE conversation_id = ? AND tool_call_id = ? AND tool_call_id <> '' "
            "AND sandbox_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
            (conversation_id, tool_call_id, sandbox_id, kind),
        )
        if not rows:
            return None
        return await self._opened(sandbox_id, lambda keys: _entry(keys, rows[0]))

    async def search_entries(
        self,
        sandbox_id: str,
        end_user_id: str,
        query: str,
        *,
        limit: int = 10,
        exclude_conversation_id: str = "",
    ) -> list[SearchHit]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            return []
        terms = blind_terms(keys.end_user_index_key(end_user_id), query)
        if not terms:
            return []
        # Terms are hex digests, so quoting them is all the escaping FTS5 needs.
        match = " AND ".join(f'"{term}"' for term in terms)
        rows = await self._fetch(
            f"SELECT {_ENTRY_COLUMNS_OF_E} FROM entry_terms "
            "JOIN entries e ON e.id = entry_terms.rowid "
            "JOIN conversations c ON c.id = e.conversation_id "
            "WHERE entry_terms MATCH ? AND e.sandbox_id = ? AND c.sandbox_id = ? "
            "AND c.end_user_id = ? AND e.conversation_id <> ? "
            "ORDER BY entry_terms.rank LIMIT ?",
            (
                match,
                sandbox_id,
                sandbox_id,
                _blind_end_user(keys, end_user_id),
                exclude_conversation_id,
                limit,
            ),
        )
        if not rows:
            return []
        entries = await self._opened(sandbox_id, lambda k: [_entry(k, r) for r in rows])
        return [SearchHit(e.conversation_id, e) for e in entries]

    # ---- runs, admission and the ledger ---------------------------------------------

    async def begin_run(
        self,
        run: NewRun,
        *,
        create_conversation: bool = False,
        entries: Sequence[NewEntry] = (),
    ) -> Run:
        _check_entries_belong(run.id, entries)
        # Unknown sandbox: NotFound before anything is written.
        keys = await self._sandbox_keys(run.sandbox_id)
        now = _now_us()
        async with self._transaction() as db:
            if create_conversation:
                # Created already holding its entries' count (they get seqs 1..n
                # below), which spares the seq-reserving UPDATE of an append.
                await _insert_conversation(
                    db,
                    keys,
                    run.sandbox_id,
                    run.end_user_id,
                    run.conversation_id,
                    now,
                    entry_count=len(entries),
                    provider=run.provider if entries else "",
                    model=run.model if entries else "",
                )
            await _insert_admitted_run(db, keys, run, now)
            if entries and create_conversation:
                await _insert_entries(
                    db, keys, run.sandbox_id, run.conversation_id, run.end_user_id, 1, entries, now
                )
            elif entries:
                # Admission has just found the conversation, in this transaction.
                await _append_entries(
                    db,
                    keys,
                    run.sandbox_id,
                    run.conversation_id,
                    entries,
                    run.provider,
                    run.model,
                    now,
                )
        return Run(
            id=run.id,
            sandbox_id=run.sandbox_id,
            end_user_id=run.end_user_id,
            conversation_id=run.conversation_id,
            provider=run.provider,
            model=run.model,
            request_id=run.request_id,
            labels=dict(run.labels),
            status="running",
            started_at=_time(now),
        )

    async def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        stop_reason: str = "",
        error_code: str = "",
        error_message: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        ledger: Sequence[LedgerRow] = (),
        entries: Sequence[NewEntry] = (),
        withdraw: bool = False,
    ) -> Run:
        if status == "running":
            raise ValueError("finish_run needs a final status, not 'running'")
        _check_entries_belong(run_id, entries)
        usage = usage or Usage()
        now = _now_us()
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    # Totals add up: a resumed run closes once per attempt.
                    "UPDATE runs SET status = ?, finished_at = ?, stop_reason = ?, "
                    "error_code = ?, error_message = ?, input_tokens = input_tokens + ?, "
                    "output_tokens = output_tokens + ?, "
                    "cache_read_tokens = cache_read_tokens + ?, "
                    "cache_write_tokens = cache_write_tokens + ?, "
                    "reasoning_tokens = reasoning_tokens + ?, cost_usd = cost_usd + ? "
                    f"WHERE id = ? AND status = 'running' RETURNING {_RUN_COLUMNS}",
                    (
                        status,
                        now,
                        stop_reason,
                        error_code,
                        error_message,
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cache_read_tokens,
                        usage.cache_write_tokens,
                        usage.reasoning_tokens,
                        cost_usd,
                        run_id,
                    ),
                )
            )
            if not rows:
                previous = list(
                    await db.execute_fetchall("SELECT status FROM runs WHERE id = ?", (run_id,))
                )
                if not previous:
                    raise NotFound(f"run {run_id} not found")
                raise FailedPrecondition(
                    f"run {run_id} already ended ({previous[0]['status']}); "
                    "a run is finished exactly once"
                )
            keys = await self._sandbox_keys(rows[0]["sandbox_id"])
            finished = _run(keys, rows[0])
            if withdraw:
                finished = await _withdraw_run(db, finished)
            for row in ledger:
                if (row.run_id, row.sandbox_id) != (finished.id, finished.sandbox_id):
                    raise ValueError(
                        f"ledger row for run {row.run_id} in sandbox {row.sandbox_id} "
                        f"does not belong to run {finished.id}"
                    )
            if entries:
                # None: the conversation was deleted during the run. Its entries
                # have nowhere to go, but the run must still close.
                await _append_entries(
                    db,
                    keys,
                    finished.sandbox_id,
                    finished.conversation_id,
                    entries,
                    finished.provider,
                    finished.model,
                    now,
                )
            if ledger:
                # A row is the run's end user's (whose end_users row exists);
                # one naming another end user gets that user's row first.
                for end_user_id in {row.end_user_id for row in ledger} - {finished.end_user_id}:
                    await _insert_end_user(db, keys, finished.sandbox_id, end_user_id, now)
                await db.executemany(
                    f"INSERT INTO ledger ({_LEDGER_COLUMNS}, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            row.run_id,
                            row.sandbox_id,
                            _blind_end_user(keys, row.end_user_id),
                            row.kind,
                            row.provider,
                            row.model,
                            row.usage.input_tokens,
                            row.usage.output_tokens,
                            row.usage.cache_read_tokens,
                            row.usage.cache_write_tokens,
                            row.usage.reasoning_tokens,
                            row.cost_usd,
                            row.price_version,
                            row.compute_seconds,
                            row.agent_id,
                            now,
                        )
                        for row in ledger
                    ],
                )
            tokens = usage.input_tokens + usage.output_tokens
            if tokens:
                await db.execute(
                    "INSERT INTO usage_daily (sandbox_id, day, tokens) VALUES (?, ?, ?) "
                    "ON CONFLICT (sandbox_id, day) DO UPDATE SET tokens = tokens + excluded.tokens",
                    (finished.sandbox_id, now // _US_PER_DAY, tokens),
                )
        return finished

    async def resume_run(self, sandbox_id: str, run_id: str) -> Run:
        async with self._transaction() as db:
            found = list(
                await db.execute_fetchall(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND sandbox_id = ?",
                    (run_id, sandbox_id),
                )
            )
            if not found:
                raise NotFound(f"run {run_id} not found")
            keys = await self._sandbox_keys(sandbox_id)
            run = _run(keys, found[0])
            if run.status == "running":
                raise RunInProgress(
                    f"run {run_id} is in progress; retry when it has ended to get its replay"
                )
            if run.status not in ("interrupted", "cancelled"):
                raise FailedPrecondition(
                    f"run {run_id} ended {run.status}; only an interrupted or cancelled run resumes"
                )
            now = _now_us()
            params = {
                "id": run.id,
                "sbx": run.sandbox_id,
                "user": _blind_end_user(keys, run.end_user_id),
                "conv": run.conversation_id,
                "rid": "",  # the run holds its own request_id: not a duplicate
                "day": now // _US_PER_DAY,
            }
            rows = list(
                await db.execute_fetchall(
                    _ADMISSION + "UPDATE runs SET status = 'running', finished_at = NULL, "
                    "stop_reason = '', error_code = '', error_message = '' "
                    "WHERE id = :id AND (SELECT refusal FROM admission) IS NULL "
                    f"RETURNING {_RUN_COLUMNS}",
                    params,
                )
            )
            if not rows:
                facts = list(
                    await db.execute_fetchall(_ADMISSION + "SELECT * FROM admission", params)
                )
        if not rows:
            _refuse(
                NewRun(
                    id=run.id,
                    sandbox_id=run.sandbox_id,
                    end_user_id=run.end_user_id,
                    conversation_id=run.conversation_id,
                    provider=run.provider,
                    model=run.model,
                    request_id=run.request_id,
                ),
                facts[0],
            )
        return _run(keys, rows[0])

    async def get_run(self, sandbox_id: str, run_id: str) -> Run:
        rows = await self._fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND sandbox_id = ?",
            (run_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"run {run_id} not found")
        return await self._opened(sandbox_id, lambda keys: _run(keys, rows[0]))

    async def find_run_by_request_id(self, sandbox_id: str, request_id: str) -> Run | None:
        if not request_id:
            return None
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            return None
        rows = await self._fetch(
            f"SELECT {_RUN_COLUMNS} FROM runs "
            "WHERE sandbox_id = ? AND request_id = ? AND request_id <> ''",
            (sandbox_id, _blind_request_id(keys, request_id)),
        )
        if not rows:
            return None
        return await self._opened(sandbox_id, lambda keys: _run(keys, rows[0]))

    async def read_run_entries(self, sandbox_id: str, run_id: str) -> list[WindowEntry]:
        rows = await self._fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE run_id = ? AND sandbox_id = ? "
            "ORDER BY seq",
            (run_id, sandbox_id),
        )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [_entry(keys, r) for r in rows])

    async def interrupt_running_runs(self) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error_code = 'ABORTED', "
                "error_message = ? WHERE status = 'running'",
                (
                    _now_us(),
                    "interlockd stopped while this turn was running; what it recorded is kept",
                ),
            )
            return cursor.rowcount

    async def list_ledger(self, sandbox_id: str, run_id: str = "") -> list[LedgerRow]:
        if run_id:
            rows = await self._fetch(
                f"SELECT {_LEDGER_SELECT} FROM ledger WHERE run_id = ? AND sandbox_id = ? "
                "ORDER BY id",
                (run_id, sandbox_id),
            )
        else:
            rows = await self._fetch(
                f"SELECT {_LEDGER_SELECT} FROM ledger WHERE sandbox_id = ? ORDER BY id",
                (sandbox_id,),
            )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [_ledger_row(keys, r) for r in rows])

    # ---- ledger queries (the Ledger service) -------------------------------------

    async def list_ledger_entries(
        self, sandbox_id: str, where: LedgerFilter, page_size: int, page_token: str
    ) -> Page[LedgerEntry]:
        size = _check_page_size(page_size)
        before = (_MAX_INT, _MAX_INT)
        if page_token:
            at, row_id = _read_page_token(page_token, "ledger")
            if not _LEDGER_ROW_ID.fullmatch(row_id):
                raise InvalidArgument(
                    "page_token", "is not a token from a previous page of this listing"
                )
            before = (at, int(row_id))
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        # Rows are ordered by (created_at, id): id breaks ties in the order written.
        rows = await self._fetch(
            f"SELECT id, created_at, {_LEDGER_SELECT}, "
            "(SELECT r.provider FROM runs r WHERE r.id = ledger.run_id) AS run_provider, "
            "(SELECT r.status FROM runs r WHERE r.id = ledger.run_id) AS run_status FROM ledger "
            f"WHERE {' AND '.join(clauses)} AND (created_at, id) < (?, ?) "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, *before, size + 1),
        )
        page = rows[:size]
        items = []
        if page:
            items = await self._opened(
                sandbox_id,
                lambda keys: [
                    LedgerEntry(
                        _ledger_row(keys, r),
                        _time(r["created_at"]),
                        agent_provider=r["run_provider"] or "",
                        run_failed=r["run_status"] == "failed",
                    )
                    for r in page
                ],
            )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _page_token("ledger", last["created_at"], str(last["id"]))
        return Page(items, token)

    async def summarize_usage(
        self,
        sandbox_id: str,
        group_by: UsageGroup,
        where: LedgerFilter,
        page_size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        size = _check_page_size(page_size)
        key = _USAGE_KEYS.get(group_by)
        if key is None:
            raise ValueError(f"group_by must be one of {sorted(_USAGE_KEYS)}, got {group_by!r}")
        listing = f"usage/{group_by}"
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        if group_by == "end_user":
            return await self._summarize_by_end_user(sandbox_id, clauses, params, size, page_token)
        if page_token:
            _, after = _read_page_token(page_token, listing)
            clauses.append(f"{key} > ?")
            params.append(after)
        rows = await self._fetch(
            f"SELECT {key} AS group_key, {_USAGE_SUMS} FROM ledger "
            f"WHERE {' AND '.join(clauses)} GROUP BY group_key ORDER BY group_key LIMIT ?",
            (*params, size + 1),
        )
        items = [_usage_totals(r, r["group_key"]) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            token = _page_token(listing, 0, rows[size - 1]["group_key"])
        return Page(items, token)

    async def _summarize_by_end_user(
        self,
        sandbox_id: str,
        clauses: list[str],
        params: list[Any],
        size: int,
        page_token: str,
    ) -> Page[UsageTotals]:
        """Groups by end user, in the order of the end users' own ids.

        The column holds blind ids, whose order means nothing, so every group
        is read, its end user opened, and the groups sorted and paged here.
        The database has already visited every matching row to add the groups
        up, so this adds work in proportion to the groups, not the rows.
        """
        listing = "usage/end_user"
        after = _read_page_token(page_token, listing)[1] if page_token else None
        rows = await self._fetch(
            f"SELECT end_user_id, {_USAGE_SUMS}, "
            "(SELECT u.id_sealed FROM end_users u WHERE u.sandbox_id = ? "
            "AND u.id = ledger.end_user_id) AS end_user_sealed FROM ledger "
            f"WHERE {' AND '.join(clauses)} GROUP BY end_user_id",
            (sandbox_id, *params),
        )
        if not rows:
            return Page([])
        groups = await self._opened(
            sandbox_id,
            lambda keys: sorted(((_end_user(keys, r), r) for r in rows), key=lambda g: g[0]),
        )
        if after is not None:
            groups = [(key, r) for key, r in groups if key > after]
        items = [_usage_totals(r, key) for key, r in groups[:size]]
        token = ""
        if len(groups) > size:
            token = _page_token(listing, 0, items[-1].key)
        return Page(items, token)

    async def usage_total(self, sandbox_id: str, where: LedgerFilter) -> UsageTotals:
        blind = await self._blind_end_user(sandbox_id, where.end_user_id)
        clauses, params = _ledger_where(sandbox_id, where, blind)
        rows = await self._fetch(
            f"SELECT {_USAGE_SUMS} FROM ledger WHERE {' AND '.join(clauses)}", params
        )
        return _usage_totals(rows[0], "")

    # ---- end of ledger queries ---------------------------------------------------

    # ---- provider state: sessions, resources, secrets ------------------------------

    async def get_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> ProviderSession | None:
        rows = await self._fetch(
            "SELECT session_id_sealed, through_seq, updated_at FROM provider_sessions "
            "WHERE conversation_id = ? AND sandbox_id = ? AND provider = ?",
            (conversation_id, sandbox_id, provider),
        )
        if not rows:
            return None
        r = rows[0]
        session_id = await self._opened(
            sandbox_id,
            lambda keys: keys.open(
                r["session_id_sealed"],
                table="provider_sessions",
                row=_session_row(conversation_id, provider),
                column="session_id",
            ),
        )
        return ProviderSession(provider, session_id, r["through_seq"], _time(r["updated_at"]))

    async def set_provider_session(
        self,
        sandbox_id: str,
        conversation_id: str,
        provider: str,
        session_id: str,
        through_seq: int,
    ) -> ProviderSession:
        if through_seq < 0:
            raise ValueError(f"through_seq must be at least 0, got {through_seq}")
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            raise NotFound(f"conversation {conversation_id} not found") from None
        sealed = keys.seal(
            session_id,
            table="provider_sessions",
            row=_session_row(conversation_id, provider),
            column="session_id",
        )
        now = _now_us()
        async with self._transaction() as db:
            # Inserted from the conversation's row: no row there, nothing stored.
            rows = list(
                await db.execute_fetchall(
                    "INSERT INTO provider_sessions (conversation_id, sandbox_id, provider, "
                    "session_id_sealed, through_seq, updated_at) "
                    "SELECT id, sandbox_id, ?, ?, ?, ? FROM conversations "
                    "WHERE id = ? AND sandbox_id = ? "
                    "ON CONFLICT (conversation_id, provider) DO UPDATE SET "
                    "session_id_sealed = excluded.session_id_sealed, "
                    "through_seq = excluded.through_seq, updated_at = excluded.updated_at "
                    "RETURNING 1",
                    (provider, sealed, through_seq, now, conversation_id, sandbox_id),
                )
            )
        if not rows:
            raise NotFound(f"conversation {conversation_id} not found")
        return ProviderSession(provider, session_id, through_seq, _time(now))

    async def clear_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> None:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM provider_sessions "
                "WHERE conversation_id = ? AND sandbox_id = ? AND provider = ?",
                (conversation_id, sandbox_id, provider),
            )

    async def get_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> str | None:
        rows = await self._fetch(
            "SELECT resource_id FROM provider_resources "
            "WHERE sandbox_id = ? AND provider = ? AND kind = ? AND fingerprint = ?",
            (sandbox_id, provider, kind, fingerprint),
        )
        return rows[0]["resource_id"] if rows else None

    async def put_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> str:
        key = (sandbox_id, provider, kind, fingerprint)
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO provider_resources (sandbox_id, provider, kind, fingerprint, "
                    "resource_id, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (sandbox_id, provider, kind, fingerprint) DO NOTHING",
                    (*key, resource_id, _now_us()),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
            rows = list(
                await db.execute_fetchall(
                    "SELECT resource_id FROM provider_resources "
                    "WHERE sandbox_id = ? AND provider = ? AND kind = ? AND fingerprint = ?",
                    key,
                )
            )
        stored: str = rows[0]["resource_id"]
        return stored

    async def delete_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> None:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM provider_resources WHERE sandbox_id = ? AND provider = ? "
                "AND kind = ? AND fingerprint = ? AND resource_id = ?",
                (sandbox_id, provider, kind, fingerprint, resource_id),
            )

    def provider_resource_lock(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # In-process only: see "Provider resource locks" in the module docstring.
        return self._resource_locks.hold((sandbox_id, provider, kind, fingerprint))

    async def set_secret(self, sandbox_id: str, name: str, value: str) -> None:
        check_secret_name(name)
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = keys.seal(value, table="sandbox_secrets", row=name, column="value")
        now = _now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO sandbox_secrets (sandbox_id, name, value_sealed, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (sandbox_id, name) DO UPDATE SET "
                    "value_sealed = excluded.value_sealed, updated_at = excluded.updated_at",
                    (sandbox_id, name, sealed, now, now),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):  # deleted since its keys were read
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise

    async def get_secret(self, sandbox_id: str, name: str) -> str | None:
        check_secret_name(name)
        rows = await self._fetch(
            "SELECT value_sealed FROM sandbox_secrets WHERE sandbox_id = ? AND name = ?",
            (sandbox_id, name),
        )
        if not rows:
            return None
        sealed: bytes = rows[0]["value_sealed"]
        return await self._opened(
            sandbox_id,
            lambda keys: keys.open(sealed, table="sandbox_secrets", row=name, column="value"),
        )

    async def delete_secret(self, sandbox_id: str, name: str) -> None:
        check_secret_name(name)
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM sandbox_secrets WHERE sandbox_id = ? AND name = ?",
                (sandbox_id, name),
            )

    async def list_secret_names(self, sandbox_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT name FROM sandbox_secrets WHERE sandbox_id = ? ORDER BY name",
            (sandbox_id,),
        )
        return [r["name"] for r in rows]

    # ---- saved agents --------------------------------------------------------------

    async def put_agent(self, sandbox_id: str, slug: str, settings: dict[str, Any]) -> SavedAgent:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = keys.seal(
            orjson.dumps(settings).decode(), table="agents", row=slug, column="settings"
        )
        now = _now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO agents (sandbox_id, slug, settings_sealed, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (sandbox_id, slug) "
                    "DO UPDATE SET settings_sealed = excluded.settings_sealed, "
                    "updated_at = excluded.updated_at",
                    (sandbox_id, slug, sealed, now, now),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_agent(sandbox_id, slug)

    async def get_agent(self, sandbox_id: str, slug: str) -> SavedAgent:
        rows = await self._fetch(
            "SELECT sandbox_id, slug, settings_sealed, created_at, updated_at FROM agents "
            "WHERE sandbox_id = ? AND slug = ?",
            (sandbox_id, slug),
        )
        if not rows:
            raise NotFound(f"agent {slug!r} not found")
        return await self._opened(sandbox_id, lambda keys: _agent(keys, rows[0]))

    async def list_agents(self, sandbox_id: str) -> list[SavedAgent]:
        rows = await self._fetch(
            "SELECT sandbox_id, slug, settings_sealed, created_at, updated_at FROM agents "
            "WHERE sandbox_id = ? ORDER BY slug",
            (sandbox_id,),
        )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [_agent(keys, r) for r in rows])

    async def delete_agent(self, sandbox_id: str, slug: str) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM agents WHERE sandbox_id = ? AND slug = ?", (sandbox_id, slug)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"agent {slug!r} not found")

    # ---- kill switches -----------------------------------------------------------

    async def set_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = "", reason: str = ""
    ) -> Pause:
        _check_pause(scope, sandbox_id, target)
        # An end user is stored by blind id (NotFound for an unknown sandbox).
        keys = await self._sandbox_keys(sandbox_id) if scope == "end_user" else None
        now = _now_us()
        stored = target
        async with self._transaction() as db:
            if keys is not None:
                stored = await _insert_end_user(db, keys, sandbox_id, target, now)
            await db.execute(
                "INSERT INTO pauses (scope, sandbox_id, target, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, sandbox_id, target) "
                "DO UPDATE SET reason = excluded.reason",
                (scope, sandbox_id, stored, reason, now),
            )
        rows = await self._fetch(
            f"SELECT {_PAUSE_COLUMNS} FROM pauses "
            "WHERE scope = ? AND sandbox_id = ? AND target = ?",
            (scope, sandbox_id, stored),
        )
        return (await self._pauses(rows))[0]

    async def clear_pause(
        self, scope: PauseScope, *, sandbox_id: str = "", target: str = ""
    ) -> bool:
        if scope == "end_user":
            target = await self._blind_end_user(sandbox_id, target)
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM pauses WHERE scope = ? AND sandbox_id = ? AND target = ?",
                (scope, sandbox_id, target),
            )
            return cursor.rowcount > 0

    async def list_pauses(self, sandbox_id: str | None = None) -> list[Pause]:
        # Ordered by creation: blind targets sort meaninglessly.
        if sandbox_id is None:
            rows = await self._fetch(
                f"SELECT {_PAUSE_COLUMNS} FROM pauses ORDER BY created_at, scope, rowid"
            )
        else:
            rows = await self._fetch(
                f"SELECT {_PAUSE_COLUMNS} FROM pauses "
                "WHERE sandbox_id IN ('', ?) ORDER BY created_at, scope, rowid",
                (sandbox_id,),
            )
        return await self._pauses(rows)

    async def _pauses(self, rows: Sequence[sqlite3.Row]) -> list[Pause]:
        """Pauses of these rows, an end_user pause's target opened in its sandbox."""
        pauses = []
        for r in rows:
            target: str = r["target"]
            if r["scope"] == "end_user":
                sealed: bytes | None = r["target_sealed"]
                if sealed is None:
                    raise StoreError(
                        f"the end_user pause {target} of sandbox {r['sandbox_id']} has no "
                        "end_users row; the database was changed outside interlockd"
                    )
                target = await self._opened(
                    r["sandbox_id"], functools.partial(_open_end_user, sealed=sealed, blind=target)
                )
            pauses.append(_pause(r, target))
        return pauses

    # ---- compute sessions and placements -----------------------------------------

    async def create_compute_session(
        self,
        *,
        session_id: str,
        sandbox_id: str,
        end_user_id: str,
        agent_key: str,
        runtime: str,
        provider: str,
        region: str,
        spec_fingerprint: str,
        api_key: str,
        mcp_token: str,
        tags: Mapping[str, str],
        now: datetime,
    ) -> ComputeSessionRecord:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = keys.seal(
            orjson.dumps({"api_key": api_key, "mcp_token": mcp_token}).decode(),
            table="compute_sessions",
            row=session_id,
            column="secrets",
        )
        tags_sealed = _seal_tags(keys, session_id, tags)
        at = _us(now)
        async with self._transaction() as db:
            try:
                blind = await _insert_end_user(db, keys, sandbox_id, end_user_id, at)
                await db.execute(
                    "INSERT INTO compute_sessions (id, sandbox_id, end_user_id, agent_key, "
                    "runtime, provider, status, region, spec_fingerprint, secrets_sealed, "
                    "tags_sealed, created_at, updated_at, last_active_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        sandbox_id,
                        blind,
                        agent_key,
                        runtime,
                        provider,
                        region,
                        spec_fingerprint,
                        sealed,
                        tags_sealed,
                        at,
                        at,
                        at,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "UNIQUE"):
                    raise AlreadyExists(
                        f"end user {end_user_id!r} already has a compute session for {agent_key!r}"
                    ) from None
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_compute_session(session_id)

    async def get_compute_session(self, session_id: str) -> ComputeSessionRecord:
        rows = await self._fetch(
            f"SELECT {_COMPUTE_COLUMNS} FROM compute_sessions WHERE id = ?", (session_id,)
        )
        if not rows:
            raise NotFound(f"compute session {session_id} not found")
        row = rows[0]
        return await self._opened(row["sandbox_id"], lambda keys: _compute_session(keys, row))

    async def find_compute_session(
        self, sandbox_id: str, end_user_id: str, agent_key: str
    ) -> ComputeSessionRecord | None:
        rows = await self._fetch(
            f"SELECT {_COMPUTE_COLUMNS} FROM compute_sessions WHERE sandbox_id = ? "
            "AND end_user_id = ? AND agent_key = ? AND status NOT IN ('destroyed', 'failed')",
            (sandbox_id, await self._blind_end_user(sandbox_id, end_user_id), agent_key),
        )
        if not rows:
            return None
        row = rows[0]
        return await self._opened(sandbox_id, lambda keys: _compute_session(keys, row))

    async def update_compute_session(
        self,
        session_id: str,
        *,
        status: ComputeStatus | None = None,
        external_id: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        tags: Mapping[str, str] | None = None,
        add_active_seconds: float = 0.0,
        last_active_at: datetime | None = None,
    ) -> ComputeSessionRecord:
        sets = ["updated_at = ?", "active_seconds = active_seconds + ?"]
        params: list[Any] = [_now_us(), add_active_seconds]
        for column, value in (
            ("status", status),
            ("external_id", external_id),
            ("endpoint", endpoint),
            ("region", region),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if tags is not None:
            owner = await self._fetch(
                "SELECT sandbox_id FROM compute_sessions WHERE id = ?", (session_id,)
            )
            if not owner:
                raise NotFound(f"compute session {session_id} not found")
            keys = await self._sandbox_keys(owner[0]["sandbox_id"])
            sets.append("tags_sealed = ?")
            params.append(_seal_tags(keys, session_id, tags))
        if last_active_at is not None:
            sets.append("last_active_at = ?")
            params.append(_us(last_active_at))
        async with self._transaction() as db:
            cursor = await db.execute(
                f"UPDATE compute_sessions SET {', '.join(sets)} WHERE id = ?",
                (*params, session_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"compute session {session_id} not found")
        return await self.get_compute_session(session_id)

    async def list_compute_sessions(
        self,
        sandbox_id: str | None = None,
        *,
        end_user_id: str = "",
        agent_key: str = "",
        provider: str = "",
        statuses: Sequence[ComputeStatus] = (),
        idle_since: datetime | None = None,
    ) -> list[ComputeSessionRecord]:
        where: list[str] = []
        params: list[Any] = []
        # Blind ids differ per sandbox: across sandboxes the end user is matched once opened.
        blind = await self._blind_end_user(sandbox_id, end_user_id) if sandbox_id else ""
        for column, value in (
            ("sandbox_id", sandbox_id),
            ("end_user_id", blind),
            ("agent_key", agent_key),
            ("provider", provider),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if idle_since is not None:
            where.append("last_active_at <= ?")
            params.append(_us(idle_since))
        rows = await self._fetch(
            f"SELECT {_COMPUTE_COLUMNS} FROM compute_sessions "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY created_at, id",
            params,
        )
        sessions = []
        for row in rows:
            session = await self._opened(row["sandbox_id"], _opener(row))
            if not end_user_id or session.end_user_id == end_user_id:
                sessions.append(session)
        return sessions

    async def record_placement(self, placement: Placement) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO placements (run_id, sandbox_id, compute_session_id, provider, "
                "policy, reason, candidates, ready_seconds, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    placement.run_id,
                    placement.sandbox_id,
                    placement.compute_session_id,
                    placement.provider,
                    placement.policy,
                    placement.reason,
                    orjson.dumps(placement.candidates).decode(),
                    placement.ready_seconds,
                    _us(placement.created_at),
                ),
            )

    async def get_placement(self, run_id: str) -> Placement:
        rows = await self._fetch(
            "SELECT run_id, sandbox_id, compute_session_id, provider, policy, reason, "
            "candidates, ready_seconds, created_at FROM placements WHERE run_id = ?",
            (run_id,),
        )
        if not rows:
            raise NotFound(f"run {run_id} has no compute placement")
        return _placement(rows[0])

    # ---- integrations -----------------------------------------------------------

    async def create_integration(
        self,
        sandbox_id: str,
        *,
        kind: IntegrationKind,
        app: str,
        end_user_id: str,
        config: dict[str, Any],
        credentials: dict[str, Any],
    ) -> Integration:
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        integration_id = ids.new_id("int")
        now = _now_us()
        config_sealed = keys.seal(
            orjson.dumps(config).decode(), table="integrations", row=integration_id, column="config"
        )
        credentials_sealed = keys.seal(
            orjson.dumps(credentials).decode(),
            table="integrations",
            row=integration_id,
            column="credentials",
        )
        async with self._transaction() as db:
            blind = await _insert_end_user(db, keys, sandbox_id, end_user_id, now)
            await db.execute(
                "UPDATE integrations SET status = 'disconnected', "
                "status_reason = 'replaced by a new connection', updated_at = ? "
                "WHERE sandbox_id = ? AND app = ? AND end_user_id = ? AND status <> 'disconnected'",
                (now, sandbox_id, app, blind),
            )
            try:
                await db.execute(
                    "INSERT INTO integrations (id, sandbox_id, kind, app, end_user_id, status, "
                    "status_reason, config_sealed, credentials_sealed, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'active', '', ?, ?, ?, ?)",
                    (
                        integration_id,
                        sandbox_id,
                        kind,
                        app,
                        blind,
                        config_sealed,
                        credentials_sealed,
                        now,
                        now,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_integration(sandbox_id, integration_id)

    async def _integration_rows(self, where: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        return await self._fetch(
            "SELECT id, sandbox_id, kind, app, end_user_id, status, status_reason, config_sealed, "
            f"created_at, updated_at, last_used_at, {_end_user_sealed('integrations')} "
            f"FROM integrations WHERE {where}",
            params,
        )

    async def get_integration(self, sandbox_id: str, integration_id: str) -> Integration:
        rows = await self._integration_rows(
            "id = ? AND sandbox_id = ?", (integration_id, sandbox_id)
        )
        if not rows:
            raise NotFound(f"integration {integration_id} not found")
        return await self._opened(sandbox_id, lambda keys: _integration(keys, rows[0]))

    async def list_integrations(
        self, sandbox_id: str, *, end_user_id: str | None = None, include_disconnected: bool = False
    ) -> list[Integration]:
        where = "sandbox_id = ?"
        params: list[Any] = [sandbox_id]
        if end_user_id is not None:
            where += " AND end_user_id IN ('', ?)"
            params.append(await self._blind_end_user(sandbox_id, end_user_id))
        if not include_disconnected:
            where += " AND status <> 'disconnected'"
        rows = await self._integration_rows(f"{where} ORDER BY created_at, id", params)
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [_integration(keys, r) for r in rows])

    async def read_integration_credentials(
        self, sandbox_id: str, integration_id: str
    ) -> dict[str, Any]:
        rows = await self._fetch(
            "SELECT credentials_sealed FROM integrations WHERE id = ? AND sandbox_id = ?",
            (integration_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"integration {integration_id} not found")
        sealed: bytes = rows[0]["credentials_sealed"]
        text = await self._opened(
            sandbox_id,
            lambda keys: keys.open(
                sealed, table="integrations", row=integration_id, column="credentials"
            ),
        )
        value: dict[str, Any] = orjson.loads(text)
        return value

    async def replace_integration_credentials(
        self, sandbox_id: str, integration_id: str, credentials: dict[str, Any]
    ) -> None:
        keys = await self._sandbox_keys(sandbox_id)
        sealed = keys.seal(
            orjson.dumps(credentials).decode(),
            table="integrations",
            row=integration_id,
            column="credentials",
        )
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE integrations SET credentials_sealed = ?, updated_at = ? "
                "WHERE id = ? AND sandbox_id = ?",
                (sealed, _now_us(), integration_id, sandbox_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"integration {integration_id} not found")

    async def set_integration_status(
        self, sandbox_id: str, integration_id: str, status: IntegrationStatus, reason: str = ""
    ) -> Integration:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE integrations SET status = ?, status_reason = ?, updated_at = ? "
                "WHERE id = ? AND sandbox_id = ?",
                (status, reason, _now_us(), integration_id, sandbox_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"integration {integration_id} not found")
        return await self.get_integration(sandbox_id, integration_id)

    async def touch_integration(self, sandbox_id: str, integration_id: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE integrations SET last_used_at = ? WHERE id = ? AND sandbox_id = ?",
                (_now_us(), integration_id, sandbox_id),
            )

    def integration_lock(
        self, sandbox_id: str, integration_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        # In-process only, like provider_resource_lock (one process owns the file).
        return self._resource_locks.hold((sandbox_id, "integration", "credentials", integration_id))

    async def create_connect_flow(
        self,
        sandbox_id: str,
        *,
        app: str,
        end_user_id: str,
        for_end_user: bool,
        state_hash: str,
        code_verifier: str,
        expires_at: datetime,
    ) -> ConnectFlow:
        keys = await self._sandbox_keys(sandbox_id)
        flow_id = ids.new_id("flow")
        sealed = keys.seal(code_verifier, table="connect_flows", row=flow_id, column="verifier")
        now = _now_us()
        async with self._transaction() as db:
            try:
                blind = await _insert_end_user(db, keys, sandbox_id, end_user_id, now)
                await db.execute(
                    "INSERT INTO connect_flows (id, sandbox_id, app, end_user_id, for_end_user, "
                    "state_hash, verifier_sealed, status, reason, integration_id, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', '', '', ?, ?)",
                    (
                        flow_id,
                        sandbox_id,
                        app,
                        blind,
                        int(for_end_user),
                        state_hash,
                        sealed,
                        now,
                        int(expires_at.timestamp() * 1_000_000),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if _is_constraint(exc, "FOREIGNKEY"):
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise
        return await self.get_connect_flow(sandbox_id, flow_id)

    _FLOW_COLUMNS = (
        "id, sandbox_id, app, end_user_id, for_end_user, status, reason, integration_id, "
        f"created_at, expires_at, finished_at, {_end_user_sealed('connect_flows')}"
    )

    async def get_connect_flow(self, sandbox_id: str, flow_id: str) -> ConnectFlow:
        rows = await self._fetch(
            f"SELECT {self._FLOW_COLUMNS} FROM connect_flows WHERE id = ? AND sandbox_id = ?",
            (flow_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"connect flow {flow_id} not found")
        return await self._opened(sandbox_id, lambda keys: _flow(keys, rows[0]))

    async def find_connect_flow(self, state_hash: str) -> tuple[ConnectFlow, str] | None:
        rows = await self._fetch(
            f"SELECT {self._FLOW_COLUMNS}, verifier_sealed FROM connect_flows WHERE state_hash = ?",
            (state_hash,),
        )
        if not rows:
            return None
        row = rows[0]
        flow_id: str = row["id"]
        sealed: bytes = row["verifier_sealed"]
        return await self._opened(
            row["sandbox_id"],
            lambda keys: (
                _flow(keys, row),
                keys.open(sealed, table="connect_flows", row=flow_id, column="verifier"),
            ),
        )

    async def finish_connect_flow(
        self,
        sandbox_id: str,
        flow_id: str,
        status: FlowStatus,
        *,
        reason: str = "",
        integration_id: str = "",
    ) -> ConnectFlow:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE connect_flows SET status = ?, reason = ?, integration_id = ?, "
                "finished_at = ? WHERE id = ? AND sandbox_id = ? AND status = 'pending'",
                (status, reason, integration_id, _now_us(), flow_id, sandbox_id),
            )
        return await self.get_connect_flow(sandbox_id, flow_id)

    # ---- keys --------------------------------------------------------------------

    async def rotate_keys(self, *, new_data_keys: bool = True) -> RotationReport:
        # One transaction over every key row: a crash leaves either the old
        # wraps or the new ones, never a mix with a half-written current flag.
        # ``data_keys_rewrapped`` counts index keys too; keys already wrapped
        # by the current master key are left alone, so a re-run is cheap.
        master_key_id = self._ring.current_id
        now = _now_us()
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT sandbox_id, key_id, kind, wrapped_key, master_key_id, is_current "
                    "FROM data_keys"
                )
            )
            rewrapped: list[tuple[bytes, str, str, int]] = []
            next_key_id: dict[str, int] = {}
            for r in rows:
                sandbox_id: str = r["sandbox_id"]
                next_key_id[sandbox_id] = max(next_key_id.get(sandbox_id, 1), r["key_id"] + 1)
                if r["master_key_id"] == master_key_id:
                    continue
                fresh = self._ring.rewrap(_wrapped(r), sandbox_id=sandbox_id)
                rewrapped.append((fresh.wrapped, fresh.master_key_id, sandbox_id, fresh.key_id))
            if rewrapped:
                await db.executemany(
                    "UPDATE data_keys SET wrapped_key = ?, master_key_id = ? "
                    "WHERE sandbox_id = ? AND key_id = ?",
                    rewrapped,
                )
            if new_data_keys and next_key_id:
                # Retire the current keys first: one current key per sandbox is a unique index.
                await db.executemany(
                    "UPDATE data_keys SET is_current = 0 WHERE sandbox_id = ? AND is_current = 1",
                    [(sandbox_id,) for sandbox_id in next_key_id],
                )
                fresh_keys = [
                    (sandbox_id, new_data_key(self._ring, sandbox_id, key_id))
                    for sandbox_id, key_id in next_key_id.items()
                ]
                await db.executemany(
                    "INSERT INTO data_keys (sandbox_id, key_id, kind, wrapped_key, "
                    "master_key_id, is_current, created_at) VALUES (?, ?, 'data', ?, ?, 1, ?)",
                    [
                        (sandbox_id, w.key_id, w.wrapped, w.master_key_id, now)
                        for sandbox_id, w in fresh_keys
                    ],
                )
        # Cached key sets still point at the old current keys.
        self._keys.clear()
        return RotationReport(
            master_key_id=master_key_id,
            data_keys_rewrapped=len(rewrapped),
            sandboxes_with_new_data_key=len(next_key_id) if new_data_keys else 0,
        )


# ---- data steps of migrations -----------------------------------------------------
# A migration whose rows need keys (to seal or blind them) has a Python step,
# run after its SQL inside the same transaction: all or nothing.


async def _blind_identifiers(db: aiosqlite.Connection, ring: MasterKeyring) -> None:
    """Migration 8: end user ids and request ids to blind ids, labels and tags sealed.

    Every sandbox's keys are opened first, so a master key that cannot open
    them fails the migration (and the store's open) before anything changes.
    The rows are then rewritten table by table, one UPDATE each, through SQL
    functions that blind and seal with those keys.
    """
    # conversations reference end_users by (sandbox, end user): both change
    # here, so the foreign key is checked at COMMIT instead of per row.
    await db.execute("PRAGMA defer_foreign_keys = ON")
    # A pause of a deleted sandbox can never apply again; nothing could open its target.
    await db.execute(
        "DELETE FROM pauses WHERE sandbox_id <> '' AND sandbox_id NOT IN (SELECT id FROM sandboxes)"
    )
    opened: dict[str, SandboxKeys] = {}
    for (sandbox_id,) in await db.execute_fetchall("SELECT id FROM sandboxes"):
        rows = await db.execute_fetchall(
            "SELECT key_id, kind, wrapped_key, master_key_id, is_current "
            "FROM data_keys WHERE sandbox_id = ?",
            (sandbox_id,),
        )
        opened[sandbox_id] = open_sandbox_keys(ring, sandbox_id, map(_wrapped, rows))

    def blind(kind: str, sandbox_id: str, value: str) -> str:
        return opened[sandbox_id].blind_id(kind, value) if value else ""

    def seal(sandbox_id: str, table: str, row: str, column: str, value: str | None) -> bytes | None:
        if not value:
            return None
        return opened[sandbox_id].seal(value, table=table, row=row, column=column)

    await db.create_function("interlock_blind", 3, blind, deterministic=True)
    await db.create_function("interlock_seal", 5, seal)
    try:
        # Every end user named anywhere gets its row (integrations, flows,
        # pauses and compute sessions could name one that never conversed).
        await db.execute(
            "INSERT INTO end_users (sandbox_id, id, created_at) "
            "SELECT sandbox_id, end_user_id, ? FROM ("
            "SELECT sandbox_id, end_user_id FROM runs UNION "
            "SELECT sandbox_id, end_user_id FROM ledger UNION "
            "SELECT sandbox_id, end_user_id FROM integrations UNION "
            "SELECT sandbox_id, end_user_id FROM connect_flows UNION "
            "SELECT sandbox_id, end_user_id FROM compute_sessions UNION "
            "SELECT sandbox_id, target FROM pauses WHERE scope = 'end_user') "
            "WHERE end_user_id <> '' AND sandbox_id IN (SELECT id FROM sandboxes) "
            "ON CONFLICT (sandbox_id, id) DO NOTHING",
            (_now_us(),),
        )
        await db.execute(
            "UPDATE end_users SET "
            "id_sealed = interlock_seal(sandbox_id, 'end_users', "
            "interlock_blind('end_user', sandbox_id, id), 'id', id), "
            "id = interlock_blind('end_user', sandbox_id, id)"
        )
        for table in ("conversations", "ledger", "integrations", "connect_flows"):
            await db.execute(
                f"UPDATE {table} SET end_user_id = interlock_blind('end_user', sandbox_id, "
                "end_user_id) WHERE end_user_id <> ''"
            )
        await db.execute(
            "UPDATE runs SET "
            "end_user_id = interlock_blind('end_user', sandbox_id, end_user_id), "
            "request_id = interlock_blind('request_id', sandbox_id, request_id), "
            "request_id_sealed = interlock_seal(sandbox_id, 'runs', id, 'request_id', request_id), "
            "labels_sealed = CASE WHEN labels = '{}' THEN NULL "
            "ELSE interlock_seal(sandbox_id, 'runs', id, 'labels', labels) END"
        )
        await db.execute(
            "UPDATE compute_sessions SET "
            "end_user_id = interlock_blind('end_user', sandbox_id, end_user_id), "
            "tags_sealed = interlock_seal(sandbox_id, 'compute_sessions', id, 'tags', tags)"
        )
        await db.execute(
            "UPDATE pauses SET target = interlock_blind('end_user', sandbox_id, target) "
            "WHERE scope = 'end_user'"
        )
    finally:
        # None removes a function (the stub does not say so); the writer stays open.
        await db.create_function("interlock_blind", 3, None)  # type: ignore[arg-type]
        await db.create_function("interlock_seal", 5, None)  # type: ignore[arg-type]


#: Python steps of migrations, by version: run right after that migration's SQL.
_DATA_STEPS: dict[int, Callable[[aiosqlite.Connection, MasterKeyring], Awaitable[None]]] = {
    8: _blind_identifiers,
}


# ---- transaction bodies -----------------------------------------------------------
# SQL shared by several store methods, run inside the caller's write
# transaction (``db``): the caller owns BEGIN/COMMIT, so these compose into one
# atomic, durable unit.


async def _insert_end_user(
    db: aiosqlite.Connection, keys: SandboxKeys, sandbox_id: str, end_user_id: str, now: int
) -> str:
    """Make sure the end user has its row (its id sealed there); return its blind id."""
    blind = _blind_end_user(keys, end_user_id)
    if not blind:
        return blind
    try:
        await db.execute(
            "INSERT INTO end_users (sandbox_id, id, id_sealed, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sandbox_id, id) DO NOTHING",
            (
                sandbox_id,
                blind,
                keys.seal(end_user_id, table="end_users", row=blind, column="id"),
                now,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if _is_constraint(exc, "FOREIGNKEY"):
            raise NotFound(f"sandbox {sandbox_id} not found") from None
        raise
    return blind


async def _insert_conversation(
    db: aiosqlite.Connection,
    keys: SandboxKeys,
    sandbox_id: str,
    end_user_id: str,
    conversation_id: str,
    now: int,
    *,
    entry_count: int = 0,
    provider: str = "",
    model: str = "",
) -> None:
    """Create the conversation (and its end user on first sight).

    ``entry_count`` > 0 creates it already holding the seqs 1..entry_count,
    for the caller to fill with :func:`_insert_entries` in the same transaction.
    """
    blind = await _insert_end_user(db, keys, sandbox_id, end_user_id, now)
    try:
        await db.execute(
            "INSERT INTO conversations (id, sandbox_id, end_user_id, last_provider, last_model, "
            "entry_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, sandbox_id, blind, provider, model, entry_count, now, now),
        )
    except sqlite3.IntegrityError as exc:
        if _is_constraint(exc, "PRIMARYKEY"):
            raise AlreadyExists(
                f"conversation {conversation_id} already exists; a new conversation needs a new id"
            ) from None
        raise


async def _append_entries(
    db: aiosqlite.Connection,
    keys: SandboxKeys,
    sandbox_id: str,
    conversation_id: str,
    entries: Sequence[NewEntry],
    provider: str,
    model: str,
    now: int,
) -> list[int] | None:
    """Append ``entries`` (non-empty); their seqs, or None if the conversation is not there."""
    # Reserve the seqs and touch the conversation in one statement.
    rows = list(
        await db.execute_fetchall(
            "UPDATE conversations SET entry_count = entry_count + :n, updated_at = :now, "
            "last_provider = CASE WHEN :provider = '' THEN last_provider ELSE :provider END, "
            "last_model = CASE WHEN :model = '' THEN last_model ELSE :model END "
            "WHERE id = :id AND sandbox_id = :sandbox_id "
            f"RETURNING entry_count, end_user_id, {_end_user_sealed('conversations')}",
            {
                "n": len(entries),
                "now": now,
                "provider": provider,
                "model": model,
                "id": conversation_id,
                "sandbox_id": sandbox_id,
            },
        )
    )
    if not rows:
        return None
    last_seq = rows[0]["entry_count"]
    # Search terms are keyed by the end user's own id (crypto.end_user_index_key).
    end_user_id = _end_user(keys, rows[0])
    first_seq = last_seq - len(entries) + 1
    await _insert_entries(
        db, keys, sandbox_id, conversation_id, end_user_id, first_seq, entries, now
    )
    return list(range(first_seq, last_seq + 1))


async def _insert_entries(
    db: aiosqlite.Connection,
    keys: SandboxKeys,
    sandbox_id: str,
    conversation_id: str,
    end_user_id: str,
    first_seq: int,
    entries: Sequence[NewEntry],
    now: int,
) -> None:
    """Write entries, sealed, into seqs already reserved on the conversation, and index them."""
    index_key = keys.end_user_index_key(end_user_id)
    entry_rows: list[tuple[Any, ...]] = []
    term_rows: list[tuple[str, str, int]] = []
    for seq, entry in enumerate(entries, start=first_seq):
        sealed = keys.seal(
            entry.text, table="entries", row=_entry_row(conversation_id, seq), column="text"
        )
        entry_rows.append(
            (
                conversation_id,
                sandbox_id,
                seq,
                entry.kind,
                sealed,
                entry.tokens,
                entry.run_id,
                entry.provider,
                entry.model,
                entry.tool_call_id,
                entry.tool_name,
                entry.is_error,
                entry.source_id,
                now,
            )
        )
        if entry.kind in _INDEXED_KINDS and (terms := blind_terms(index_key, entry.text)):
            term_rows.append((" ".join(terms), conversation_id, seq))
    await db.executemany(
        "INSERT INTO entries (conversation_id, sandbox_id, seq, kind, text_sealed, "
        "tokens, run_id, provider, model, tool_call_id, tool_name, is_error, source_id, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        entry_rows,
    )
    if term_rows:
        # The search row shares the entry's rowid (so deleting the entry drops it).
        await db.executemany(
            "INSERT INTO entry_terms (rowid, terms) "
            "SELECT id, ? FROM entries WHERE conversation_id = ? AND seq = ?",
            term_rows,
        )


#: Every admission fact of a run, the sandbox's current quotas included, and
#: the first reason to refuse it (NULL: admit). One definition serves both the
#: insert that admits (hot path: a single statement) and the read that
#: explains a refusal; inside one write transaction they see the same facts.
_ADMISSION = (
    "WITH facts AS (SELECT "
    "s.max_concurrent_runs AS max_runs, "
    "s.max_concurrent_runs_per_end_user AS max_runs_per_user, "
    "s.max_tokens_per_day AS max_tokens, "
    "(SELECT end_user_id FROM conversations WHERE id = :conv AND sandbox_id = :sbx) AS owner, "
    "(SELECT id FROM runs WHERE sandbox_id = :sbx AND request_id = :rid "
    " AND request_id <> '') AS duplicate, "
    "(SELECT id FROM runs WHERE conversation_id = :conv AND status = 'running') AS busy, "
    "(SELECT count(*) FROM runs WHERE sandbox_id = :sbx AND status = 'running') AS running, "
    "(SELECT count(*) FROM runs WHERE sandbox_id = :sbx AND end_user_id = :user "
    " AND status = 'running') AS running_for_user, "
    "coalesce((SELECT tokens FROM usage_daily WHERE sandbox_id = :sbx AND day = :day), 0) "
    " AS tokens_today "
    "FROM (SELECT 1) LEFT JOIN sandboxes s ON s.id = :sbx), "
    "admission AS (SELECT *, CASE "
    "WHEN max_runs IS NULL THEN 'sandbox' "
    "WHEN owner IS NOT :user THEN 'conversation' "
    "WHEN duplicate IS NOT NULL THEN 'request_id' "
    "WHEN busy IS NOT NULL THEN 'busy' "
    "WHEN max_runs > 0 AND running >= max_runs THEN 'max_concurrent_runs' "
    "WHEN max_runs_per_user > 0 AND running_for_user >= max_runs_per_user "
    " THEN 'max_concurrent_runs_per_end_user' "
    "WHEN max_tokens > 0 AND tokens_today >= max_tokens THEN 'max_tokens_per_day' "
    "END AS refusal FROM facts) "
)


async def _insert_admitted_run(
    db: aiosqlite.Connection, keys: SandboxKeys, run: NewRun, now: int
) -> None:
    """Insert ``run`` as running if admission allows it, else raise why not (nothing inserted)."""
    params = {
        "id": run.id,
        "sbx": run.sandbox_id,
        "user": _blind_end_user(keys, run.end_user_id),
        "conv": run.conversation_id,
        "provider": run.provider,
        "model": run.model,
        "rid": _blind_request_id(keys, run.request_id),
        "rid_sealed": (
            keys.seal(run.request_id, table="runs", row=run.id, column="request_id")
            if run.request_id
            else None
        ),
        "labels": (
            keys.seal(orjson.dumps(run.labels).decode(), table="runs", row=run.id, column="labels")
            if run.labels
            else None
        ),
        "now": now,
        "day": now // _US_PER_DAY,
    }
    # RETURNING, not rowcount: the sqlite3 module reports no rowcount for a
    # statement that starts with WITH.
    inserted = list(
        await db.execute_fetchall(
            _ADMISSION + "INSERT INTO runs (id, sandbox_id, end_user_id, conversation_id, "
            "provider, model, request_id, request_id_sealed, labels_sealed, status, started_at) "
            "SELECT :id, :sbx, :user, :conv, :provider, :model, :rid, :rid_sealed, :labels, "
            "'running', :now FROM admission WHERE refusal IS NULL RETURNING 1",
            params,
        )
    )
    if inserted:
        return
    rows = list(await db.execute_fetchall(_ADMISSION + "SELECT * FROM admission", params))
    _refuse(run, rows[0])


async def _withdraw_run(db: aiosqlite.Connection, run: Run) -> Run:
    """Release ``run``'s request_id and take back its user message (see Store.finish_run)."""
    await db.execute(
        "UPDATE runs SET request_id = '', request_id_sealed = NULL WHERE id = ?", (run.id,)
    )
    mine = list(
        await db.execute_fetchall(
            "SELECT id, seq, kind FROM entries WHERE run_id = ? ORDER BY seq", (run.id,)
        )
    )
    if len(mine) == 1 and mine[0]["kind"] == "user":
        conversation = list(
            await db.execute_fetchall(
                "SELECT entry_count FROM conversations WHERE id = ?", (run.conversation_id,)
            )
        )
        if conversation and conversation[0]["entry_count"] == mine[0]["seq"]:
            # The newest entry (one turn at a time): seqs stay gapless.
            await db.execute("DELETE FROM entries WHERE id = ?", (mine[0]["id"],))
            if mine[0]["seq"] == 1:
                await db.execute("DELETE FROM conversations WHERE id = ?", (run.conversation_id,))
            else:
                await db.execute(
                    "UPDATE conversations SET entry_count = entry_count - 1 WHERE id = ?",
                    (run.conversation_id,),
                )
    return replace(run, request_id="")


def _refuse(run: NewRun, facts: sqlite3.Row) -> NoReturn:
    """Raise the error for the refusal ``facts`` name, with the numbers behind it."""
    match facts["refusal"]:
        case "sandbox":
            raise NotFound(f"sandbox {run.sandbox_id} not found")
        case "conversation":
            raise NotFound(f"conversation {run.conversation_id} not found")
        case "request_id":
            raise AlreadyExists(
                f"request_id {run.request_id!r} was already used in this sandbox "
                f"(run {facts['duplicate']}); use a new request_id to start another turn"
            )
        case "busy":
            raise FailedPrecondition(
                f"conversation {run.conversation_id} already has a turn in progress; "
                "wait for it to finish"
            )
        case "max_concurrent_runs":
            raise ResourceExhausted(
                f"sandbox {run.sandbox_id} has {facts['running']} runs in progress and its "
                f"max_concurrent_runs quota is {facts['max_runs']}; "
                "retry when one finishes or raise the quota"
            )
        case "max_concurrent_runs_per_end_user":
            raise ResourceExhausted(
                f"end user {run.end_user_id!r} has {facts['running_for_user']} runs in progress "
                "and the sandbox's max_concurrent_runs_per_end_user quota is "
                f"{facts['max_runs_per_user']}; retry when one finishes or raise the quota"
            )
        case "max_tokens_per_day":
            raise ResourceExhausted(
                f"sandbox {run.sandbox_id} has used {facts['tokens_today']} tokens today (UTC) "
                f"and its max_tokens_per_day quota is {facts['max_tokens']}; "
                "retry after midnight UTC or raise the quota"
            )
        case refusal:
            raise StoreError(f"run {run.id} was not inserted, yet admission found {refusal!r}")


def _check_entries_belong(run_id: str, entries: Sequence[NewEntry]) -> None:
    for entry in entries:
        if entry.run_id != run_id:
            raise ValueError(f"entry of run {entry.run_id!r} does not belong to run {run_id}")


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


def stored_key_samples(path: Path) -> list[tuple[str, WrappedKey]]:
    """One ``(sandbox id, wrapped key)`` per master key id the database at ``path`` holds.

    Read before the store opens, so a daemon can prove its master key opens
    what is stored before anything is written: the file is opened read-only
    (the WAL is read too, so keys of a process that crashed count) and never
    migrated. Empty when there is no database or it holds no keys yet.
    """
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        db.row_factory = sqlite3.Row
        if not db.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'data_keys'"
        ).fetchone():
            return []
        # min() makes SQLite take the other columns from that one row of each group.
        rows = db.execute(
            "SELECT min(rowid), sandbox_id, key_id, kind, wrapped_key, master_key_id, is_current "
            "FROM data_keys GROUP BY master_key_id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read database {path}: {exc}") from exc
    finally:
        db.close()
    return [(r["sandbox_id"], _wrapped(r)) for r in rows]
