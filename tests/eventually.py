"""Wait on a condition instead of sleeping a guessed amount."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], *, within: float = 10.0) -> T:
    """Call ``probe`` until it stops raising AssertionError; return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await probe()
        except AssertionError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.02)
