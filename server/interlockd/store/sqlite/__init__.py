"""The embedded store: :class:`~interlockd.store.base.Store` on one SQLite file through aiosqlite.

This package owns the SQLite dialect. ``core.py`` holds the connections,
pragmas and transactions, ``migrate.py`` the migration runner's loading and
data steps, ``rows.py`` the one mapping between rows and the records of
``store/base`` (sealing and opening included) and ``tables.py`` each table's
declaration of it; one module per aggregate (``tenancy``, ``conversations``,
``tool_calls``, ``runs``, ``ledger``, ``provider_state``, ``integrations``,
``agents``, ``pauses``, ``compute``) holds its SQL, and :class:`SqliteStore`
composes them. Keys and the cipher belong to ``crypto.py``; this package only
moves wrapped keys and sealed bytes in and out of rows and never writes
conversation content, titles or search words in clear.

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

from interlockd.store.base import Store
from interlockd.store.sqlite.agents import SqliteAgents
from interlockd.store.sqlite.compute import SqliteCompute
from interlockd.store.sqlite.conversations import SqliteConversations
from interlockd.store.sqlite.integrations import SqliteIntegrations
from interlockd.store.sqlite.ledger import SqliteLedger
from interlockd.store.sqlite.migrate import load_migrations
from interlockd.store.sqlite.pauses import SqlitePauses
from interlockd.store.sqlite.provider_state import SqliteProviderState
from interlockd.store.sqlite.runs import SqliteRuns
from interlockd.store.sqlite.tenancy import SqliteTenancy, stored_key_samples
from interlockd.store.sqlite.tool_calls import SqliteToolCalls

__all__ = ["SqliteStore", "load_migrations", "stored_key_samples"]


class SqliteStore(
    SqliteTenancy,
    SqliteConversations,
    SqliteToolCalls,
    SqliteRuns,
    SqliteLedger,
    SqliteProviderState,
    SqliteIntegrations,
    SqliteAgents,
    SqlitePauses,
    SqliteCompute,
    Store,
):
    """The embedded store: one SQLite file (plus its WAL) holding every sandbox."""

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"
