"""Opening and closing a store."""

from __future__ import annotations

import abc


class StoreLifecycle(abc.ABC):
    """Connecting (with migrations) and disconnecting."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending numbered migrations. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and disconnect. Idempotent."""
