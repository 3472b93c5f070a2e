"""The embedded store: :class:`~interlockd.store.base.Store` on one SQLite file.

The aggregates' SQL is shared with PostgreSQL (``store/sql``); this package
is the SQLite engine under it: ``engine.py`` holds the connections, pragmas,
transactions and the dialect's few spellings (an FTS5 table for search),
``connection.py`` a connection that runs statements inline and waits on a
thread of its own,
``migrate.py`` the migration runner's loading and data steps, and
``key_samples.py`` reads a file's wrapped keys before it opens.

Connections. A writer, a reader and a scanner. Statements run inline on the
event loop's thread (microseconds on a local file, where a trip to a
connection thread costs tens); what may wait or run long goes to a
connection's own thread: a COMMIT's fsync or a BEGIN that finds another
process writing (the writer's), a statement that may touch many rows
(``Tx.execute_bulk``: deleting a sandbox or a conversation), and reads that
may scan many rows or wait (the scanner's, used only on its thread).
Write transactions are serialized in-process (``group_commit.py``, which
also lets the ones that queue up share a COMMIT) and start with
``BEGIN IMMEDIATE``, which also
serializes them against other processes on the same file (worker processes
of one host), so every check-then-write (admission above all) is atomic.
Reads run on the reader in autocommit mode: WAL gives each statement the
latest committed snapshot, so a read never sees another coroutine's
uncommitted transaction and never waits behind one.

Durability. ``synchronous=FULL`` by default: in WAL mode NORMAL may lose the
last commits on power loss, and the run path promises that the user message
and every completed tool call are on disk before the next provider call. The
cost is one fsync of the WAL per commit (~4 ms on a cloud disk), so a turn
commits little: ``begin_run`` carries the new conversation and the user
message, ``finish_run`` the final text, and the recorder batches entries per
tool boundary in between. ``store.sqlite_synchronous = "normal"`` is offered
as a documented trade-off: a process crash (kill -9) still loses nothing, a
power loss may lose the last commits.

Provider resource locks. :meth:`SqliteStore.provider_resource_lock` is an
:class:`asyncio.Lock` per key, in process memory: the embedded store serves
one daemon process (several replicas share PostgreSQL, whose store takes an
advisory lock instead).

Deletion. ``secure_delete`` is on and deleting a sandbox ends with a
truncating WAL checkpoint, so its wrapped keys are overwritten in the file
rather than left in free pages (crypto-shredding).
"""

from __future__ import annotations

from interlockd.store.sql import SqlStore
from interlockd.store.sqlite.engine import SqliteEngine
from interlockd.store.sqlite.key_samples import stored_key_samples
from interlockd.store.sqlite.migrate import load_migrations

__all__ = ["SqliteStore", "load_migrations", "stored_key_samples"]


class SqliteStore(SqliteEngine, SqlStore):
    """The embedded store: one SQLite file (plus its WAL) holding every sandbox."""
