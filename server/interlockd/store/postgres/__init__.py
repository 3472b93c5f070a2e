"""The shared store: :class:`~interlockd.store.base.Store` on PostgreSQL through asyncpg.

For several daemons (replicas, worker processes) on one database. The
aggregates' SQL is shared with SQLite (``store/sql``); this package is the
engine under it: ``engine.py`` holds the pool, transactions, locks and the
dialect's few spellings, ``sql.py`` turns the shared placeholders into
PostgreSQL's, ``migrate.py`` applies ``migrations/postgres`` once under an
advisory lock.

Consistency across processes. Each store call is one transaction (or one
read) on one pooled connection. A check-then-write transaction (admission:
one turn per conversation, request ids, quotas, budgets; the compute
sessions cap) first takes ``pg_advisory_xact_lock(1, hashtext(sandbox_id))``,
so those of a sandbox take turns as on SQLite and their checks are exact
across replicas; every other write relies on row-level atomicity and runs in
parallel, as do sandboxes. Provider resource and integration
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
