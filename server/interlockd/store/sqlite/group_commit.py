"""Group commit: the write transactions of one SQLite connection, committed together.

Under ``synchronous=FULL`` every COMMIT syncs the WAL (milliseconds), and a
connection commits one transaction at a time: 100 turns starting at once
would queue behind 100 fsyncs. Here the write transactions that arrive while
a COMMIT runs wait for it, then run back to back inside one physical
transaction (up to :data:`MAX_MEMBERS` of them, open at most
:data:`MAX_OPEN_SECONDS`) — each in a SAVEPOINT of its own, so one that fails is rolled
back alone — and share the next COMMIT. A transaction is still durable when
its block has been left without an exception: the caller is released only
once the COMMIT holding it is done (and gets its error if that fails).

Transactions see each other's writes inside a group, in the order they ran,
exactly as if each had committed before the next began (admission counts
the runs a member just admitted). A lone transaction commits at once: a
group grows only from transactions already waiting when one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING

from interlockd.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from interlockd.store.sqlite.connection import Connection


#: A group commits once this many transactions joined it or it has been open this
#: long, even with more queued: under steady load queued transactions would
#: otherwise keep it open, and its first members (and other processes) waiting.
MAX_MEMBERS = 64
MAX_OPEN_SECONDS = 0.005


class _Group:
    """One physical transaction: its members so far, and when its COMMIT is done."""

    __slots__ = ("done", "members", "opened")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.members = 0
        self.opened = loop.time()
        self.done: asyncio.Future[None] = loop.create_future()
        # Every member may have gone (cancelled) by the time it fails.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())


def _commit(db: sqlite3.Connection) -> None:
    db.execute("COMMIT")


class GroupCommitter:
    """The writer connection's transactions (see the module docstring)."""

    def __init__(self, db: Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._waiting = 0  # transactions queued for the lock
        self._open: _Group | None = None  # BEGIN done, taking members
        self._committing: asyncio.Task[None] | None = None
        #: COMMITs run and transactions they made durable, since the connection opened.
        self.commits = 0
        self.committed = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write transaction on the connection: its statements, then durable."""
        db = self._db
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            group = self._open or await self._begin()
            db.run("SAVEPOINT member")
            try:
                yield db
            except BaseException as exc:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.OperationalError):
                        db.run("ROLLBACK TO member")
                        db.run("RELEASE member")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database write failed: {exc}") from exc
                raise
            db.run("RELEASE member")
            group.members += 1
        finally:
            if self._open is not None and self._full(self._open):
                self._end_group()
            self._lock.release()
        # Cancelled here, the transaction may still commit; the connection is safe
        # either way (the next BEGIN waits for this COMMIT).
        try:
            await asyncio.shield(group.done)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Connection]:
        """The connection outside any transaction (every group committed), for
        checkpoints and closing; transactions wait until the block ends."""
        async with self._lock:
            if self._open is not None:
                self._end_group()
            await self._committed()
            yield self._db

    def _full(self, group: _Group) -> bool:
        """Whether ``group`` commits now: no one is queued to join, or it is big or old enough."""
        return (
            not self._waiting
            or group.members >= MAX_MEMBERS
            or asyncio.get_running_loop().time() - group.opened >= MAX_OPEN_SECONDS
        )

    async def _begin(self) -> _Group:
        """Start a physical transaction once the previous one's COMMIT is done."""
        await self._committed()
        db = self._db
        if db.in_transaction:
            # A COMMIT that failed may have left its transaction open.
            db.rollback_quietly()
        try:
            if not db.begin_now():
                await db.on_thread(db.begin_waiting)
        except sqlite3.Error as exc:
            raise StoreError(f"database write failed: {exc}") from exc
        self._open = _Group(asyncio.get_running_loop())
        return self._open

    def _end_group(self) -> None:
        """No one is queued: commit the open group (on the thread), or roll back an empty one."""
        group, self._open = self._open, None
        assert group is not None
        if not group.members:
            self._db.rollback_quietly()
            group.done.set_result(None)
            return
        self._committing = asyncio.ensure_future(self._commit(group))

    async def _commit(self, group: _Group) -> None:
        try:
            await self._db.on_thread(_commit)
        except BaseException as exc:
            self._db.rollback_quietly()
            group.done.set_exception(exc if isinstance(exc, Exception) else StoreError(str(exc)))
        else:
            self.commits += 1
            self.committed += group.members
            group.done.set_result(None)

    async def _committed(self) -> None:
        """Wait for the COMMIT in progress, if any (it never raises: its group gets the error)."""
        committing = self._committing
        if committing is not None and not committing.done():
            # Shielded: a waiter cancelled here must not cancel the COMMIT.
            await asyncio.shield(committing)
