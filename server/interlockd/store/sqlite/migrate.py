"""The SQLite migrations: loading the numbered scripts, and the Python steps some need."""

from __future__ import annotations

import importlib.resources
import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interlockd.errors import (
    StoreError,
)
from interlockd.store.crypto import (
    MasterKeyring,
    SandboxKeys,
    open_sandbox_keys,
)
from interlockd.store.sql.rows import (
    now_us,
)
from interlockd.store.sql.tables import WRAPPED_KEYS
from interlockd.store.sqlite.connection import Connection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


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


async def _blind_identifiers(db: Connection, ring: MasterKeyring) -> None:
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
    opened = await _open_every_sandbox(db, ring)

    def blind(kind: str, sandbox_id: str, value: str) -> str:
        return opened[sandbox_id].blind_id(kind, value) if value else ""

    def seal(sandbox_id: str, table: str, row: str, column: str, value: str | None) -> bytes | None:
        if not value:
            return None
        return opened[sandbox_id].seal(value, table=table, row=row, column=column)

    await db.create_function("interlock_blind", 3, blind, deterministic=True)
    await db.create_function("interlock_seal", 5, seal)
    try:
        await _rewrite_identifiers(db)
    finally:
        # None removes a function; the writer stays open.
        await db.create_function("interlock_blind", 3, None)
        await db.create_function("interlock_seal", 5, None)


async def _open_every_sandbox(db: Connection, ring: MasterKeyring) -> dict[str, SandboxKeys]:
    """Every sandbox's keys, by sandbox id (a master key that cannot open them raises)."""
    opened: dict[str, SandboxKeys] = {}
    for row in await db.execute_fetchall("SELECT id FROM sandboxes"):
        sandbox_id = row[0]
        rows = await db.execute_fetchall(
            "SELECT key_id, kind, wrapped_key, master_key_id, is_current "
            "FROM data_keys WHERE sandbox_id = ?",
            (sandbox_id,),
        )
        opened[sandbox_id] = open_sandbox_keys(ring, sandbox_id, map(WRAPPED_KEYS.load, rows))
    return opened


async def _rewrite_identifiers(db: Connection) -> None:
    """Migration 8's rewrite, table by table, through ``interlock_blind`` and ``interlock_seal``."""
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
        (now_us(),),
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


#: Python steps of migrations, by version: run right after that migration's SQL.
DATA_STEPS: dict[int, Callable[[Connection, MasterKeyring], Awaitable[None]]] = {
    8: _blind_identifiers,
}
