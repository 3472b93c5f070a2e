"""Reading a SQLite store's wrapped keys before it opens, to check a master key against them."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from interlockd.errors import StoreError
from interlockd.store.sql.tables import WRAPPED_KEYS

if TYPE_CHECKING:
    from pathlib import Path

    from interlockd.store.crypto import WrappedKey


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
    return [(r["sandbox_id"], WRAPPED_KEYS.load(r)) for r in rows]
