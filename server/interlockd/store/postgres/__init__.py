"""The shared store: :class:`~interlockd.store.base.Store` on PostgreSQL through asyncpg.

For several daemons (replicas, worker processes) on one database. The
aggregates' SQL is shared with SQLite (``store/sql``); this package is the
engine under it: ``engine.py`` holds the pool, transactions, locks and the
dialect's few spellings, ``sql.py`` turns the shared placeholders into
PostgreSQL's, ``migrate.py`` applies ``migrations/postgres`` once under an
advisory lock.

Consistency across processes. Each store call is one transaction (or one
read) on one pooled connection. A write transaction that belongs to a
sandbox first takes ``pg_advisory_xact_lock(1, hashtext(sandbox_id))``, so a
sandbox's writers take turns as on SQLite and every check-then-write
(admission: one turn per conversation, request ids, quotas) is exact across
replicas; sandboxes write in parallel. Provider resource and integration
locks are ``pg_advisory_xact_lock(2, hashtext(key))`` held by a transaction
open for the block. Advisory locks die with their session, so a crashed
process never leaves one behind.

Failures. A lost connection, a database restarting or refusing connections
surfaces as ``Unavailable`` (retryable); the transaction it interrupted is
rolled back by the server, so a turn is never half-written.
"""

from __future__ import annotations

from interlockd.store.postgres.engine import PostgresEngine, describe
from interlockd.store.sql import SqlStore

__all__ = ["PostgresStore", "describe"]


class PostgresStore(PostgresEngine, SqlStore):
    """The shared store: every sandbox in one PostgreSQL database."""
