"""The ledger by UTC day, on both engines: rows back-dated in the database group by their
write day and fall in time ranges by their write time.

The store takes no clock, so the test moves rows in time through the database
itself, in each engine's own way.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest

from interlockd.store.base import LedgerFilter, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.postgres import PostgresStore
from interlockd.store.sqlite import SqliteStore
from interlockd.vocabulary import Usage
from tests.store.conformance.helpers import finished_run, summary, tokens

if TYPE_CHECKING:
    from pathlib import Path

    from interlockd.store.base import Store

BACKDATE = "UPDATE ledger SET created_at = {} WHERE run_id = {}"


def _us(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_days_and_time_ranges_use_the_utc_write_time(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Rows written on two UTC days group by day, oldest first, and a time range selects by
    write time (start inclusive, end exclusive)."""
    ring = MasterKeyring.load_or_create(tmp_path / "master.key")
    url = request.getfixturevalue("postgres_url") if engine == "postgres" else ""
    store: Store = PostgresStore(url, ring) if url else SqliteStore(tmp_path / "interlock.db", ring)
    await store.open()
    try:
        sid = (await store.create_sandbox("acme", Quotas())).id
        old = await finished_run(store, sid, "alice", tokens("fake", Usage(1, 1), 0.5))
        new = await finished_run(store, sid, "alice", tokens("fake", Usage(2, 2), 0.25))
        midnight = datetime(2026, 11, 20, tzinfo=UTC)
        written = {old: midnight - timedelta(microseconds=1), new: midnight}
        # Back-date the rows, as if written around that midnight.
        if url:
            conn = await asyncpg.connect(url)
            try:
                for run_id, at in written.items():
                    await conn.execute(BACKDATE.format("$1", "$2"), _us(at), run_id)
            finally:
                await conn.close()
        else:
            db = sqlite3.connect(tmp_path / "interlock.db", isolation_level=None)
            try:
                for run_id, at in written.items():
                    db.execute(BACKDATE.format("?", "?"), (_us(at), run_id))
            finally:
                db.close()

        days = await summary(store, sid, "day")
        assert [(t.key, t.total_cost_usd) for t in days] == [
            ("2026-11-19", 0.5),
            ("2026-11-20", 0.25),
        ]
        listed = await store.list_ledger_entries(sid, LedgerFilter(), 100, "")
        assert [(e.row.run_id, e.created_at) for e in listed.items] == [
            (new, written[new]),
            (old, written[old]),
        ]
        since = await store.usage_total(sid, LedgerFilter(since=midnight))
        until = await store.usage_total(sid, LedgerFilter(until=midnight))
        assert (since.total_cost_usd, until.total_cost_usd) == (0.25, 0.5)
    finally:
        await store.close()
