"""A SQLite connection that runs statements inline and waits on a thread of its own.

A statement on a local WAL file costs microseconds; a round trip to a
connection thread (a queue, a wake-up, a future, the loop's self-pipe) costs
tens, and a turn runs about twenty statements. So statements run on the event
loop's thread, and only what may *wait* goes to the connection's thread: a
write transaction's ``COMMIT`` (the WAL's fsync, milliseconds under
``synchronous=FULL``) and a ``BEGIN IMMEDIATE`` that finds the file's write
lock held by another process (worker processes of one host), which then waits
there up to the busy timeout instead of blocking the loop.

Inline statements never wait on a lock: the writer's busy timeout is 0 on the
loop's thread (in WAL mode a transaction that holds the write lock needs no
other lock, and a reader never needs one). The caller serializes use: one
write transaction at a time per connection (the engine's lock), and never a
statement while the thread runs something for the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from interlockd.store.sql.core import Params
    from interlockd.store.sql.rows import Row

T = TypeVar("T")

#: How long a thread-side BEGIN waits between tries for another process's write lock.
_BUSY_BACKOFF_S = (0.0005, 0.001, 0.002, 0.005, 0.01)


class Connection:
    """One sqlite3 connection in autocommit mode (the store writes BEGIN and COMMIT)."""

    __slots__ = ("_busy_timeout_s", "_db", "_thread")

    def __init__(self, db: sqlite3.Connection, name: str, busy_timeout_ms: int) -> None:
        self._db = db
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._busy_timeout_s = busy_timeout_ms / 1000

    @classmethod
    def open(cls, path: Path, name: str, *, busy_timeout_ms: int) -> Connection:
        """Open ``path`` (rows as :class:`sqlite3.Row`, statements cached)."""
        # isolation_level=None: the store issues BEGIN/COMMIT itself, so the
        # sqlite3 module never opens a transaction behind its back.
        db = sqlite3.connect(
            path, isolation_level=None, cached_statements=256, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        # Waiting happens on the thread (begin_waiting); inline never waits.
        db.execute("PRAGMA busy_timeout = 0")
        return cls(db, name, busy_timeout_ms)

    # ---- inline: on the caller's (the event loop's) thread ----------------------

    def run(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement now."""
        return self._db.execute(sql, params)

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement now; its rows."""
        rows: list[Row] = self._db.execute(sql, params).fetchall()
        return rows

    def run_many(self, sql: str, params: Iterable[Params]) -> None:
        """Run one statement once per parameter set, now."""
        self._db.executemany(sql, params)

    # The awaitable spellings the migrations' Python steps use.

    async def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self.run(sql, params)

    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return self.rows(sql, params)

    async def create_function(
        self, name: str, nargs: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        self._db.create_function(name, nargs, func, deterministic=deterministic)

    # ---- on the connection's thread ------------------------------------------------

    async def on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread (for what may wait).

        A caller cancelled meanwhile still waits for ``fn`` to end before the
        cancellation goes on: until then the connection is in use, and what the
        caller does next with it (a ROLLBACK) must not run beside ``fn``.
        """
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._thread, fn, self._db)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait({work})
            raise

    def rollback_quietly(self) -> None:
        """ROLLBACK, if a transaction is open (nothing to undo is not an error)."""
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("ROLLBACK")

    def begin_now(self) -> bool:
        """``BEGIN IMMEDIATE`` if the write lock is free; False if another process holds it."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY":
                return False
            raise
        return True

    def begin_waiting(self, db: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting up to the busy timeout for the write lock (thread side)."""
        until = time.monotonic() + self._busy_timeout_s
        tries = 0
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY"
                if not busy or time.monotonic() >= until:
                    raise
            time.sleep(_BUSY_BACKOFF_S[min(tries, len(_BUSY_BACKOFF_S) - 1)])
            tries += 1

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread."""
        try:
            await self.on_thread(lambda db: db.close())
        finally:
            self._thread.shutdown(wait=False)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction
