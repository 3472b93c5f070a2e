"""Locks by key inside one process, each dropped when nobody holds or awaits it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class _KeyedLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders and waiters


class KeyedLocks:
    """One :class:`asyncio.Lock` per key, dropped when nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], _KeyedLock] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, ...]) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _KeyedLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            # Also when cancelled while waiting: the count stays exact.
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]
