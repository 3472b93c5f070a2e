"""The PostgreSQL migrations: the numbered scripts, applied once under an advisory lock."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interlockd.errors import StoreError
from interlockd.store.sql.rows import now_us

if TYPE_CHECKING:
    from interlockd.store.postgres.engine import Connection

_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

#: pg_advisory_lock(MIGRATION_LOCK, 0): replicas starting together migrate one at a time.
MIGRATION_LOCK = 0x1A7E


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _split_statements(script: str) -> tuple[str, ...]:
    """Statements end with ``;`` at the end of a line (the scripts' convention)."""
    statements: list[str] = []
    pending: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        pending.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(pending).strip().rstrip(";"))
            pending = []
    if "".join(pending).strip():
        raise StoreError(f"a migration ends with an incomplete statement: {pending[0][:80]!r}")
    return tuple(statements)


def load_migrations() -> list[Migration]:
    """The PostgreSQL migrations shipped with the package, in version order (1, 2, ...)."""
    folder = importlib.resources.files("interlockd.store").joinpath("migrations", "postgres")
    found = []
    for item in folder.iterdir():
        match = _MIGRATION_NAME.fullmatch(item.name)
        if match is not None:
            statements = _split_statements(item.read_text(encoding="utf-8"))
            found.append(Migration(int(match.group(1)), item.name, statements))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"PostgreSQL migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


async def migrate(conn: Connection, database: str) -> int:
    """Apply the pending migrations, each in its own transaction; how many were applied.

    Holds a session advisory lock throughout, so of several processes
    starting at once one migrates and the others find the work done.
    """
    migrations = load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1, 0)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        )
        applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        newer = applied - {m.version for m in migrations}
        if newer:
            raise StoreError(
                f"database {database} has schema version {max(newer)}, newer than this "
                f"interlockd knows ({len(migrations)}); upgrade interlockd"
            )
        pending = [m for m in migrations if m.version not in applied]
        for migration in pending:
            async with conn.transaction():
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    now_us(),
                )
        return len(pending)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, 0)", MIGRATION_LOCK)
