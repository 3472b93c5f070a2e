"""Tool grants: run-scoped bearer tokens as every process sharing the store sees them.

A run's token (MCP endpoint, dispatch callback) is opened by the process
running the turn, which alone executes the calls it authorizes. So that a
runtime may reach any replica, that process records the token's hash here
with where it serves (``owner_url``) and until when; another process finds it
and forwards the call there. Only the hash is kept; the owner's address is
sealed. Deleted when the run closes the grant, or when its run is taken over.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from datetime import datetime

GrantKind = Literal["mcp", "dispatch"]


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """Where the process that opened a token serves its calls, and until when."""

    sandbox_id: str
    run_id: str
    kind: GrantKind
    owner_url: str
    expires_at: datetime


class ToolGrantStore(abc.ABC):
    """Run tokens by hash, for the processes that did not open them."""

    @abc.abstractmethod
    async def put_tool_grant(
        self,
        token_hash: str,
        *,
        sandbox_id: str,
        run_id: str,
        kind: GrantKind,
        owner_url: str,
        expires_at: datetime,
    ) -> None:
        """Record (or replace: a long-lived runtime's token is bound again per run) a
        token's grant. NotFound for an unknown sandbox."""

    @abc.abstractmethod
    async def find_tool_grant(
        self, token_hash: str, kind: GrantKind, now: datetime
    ) -> StoredGrant | None:
        """The unexpired grant of this kind stored under ``token_hash``, or None."""

    @abc.abstractmethod
    async def delete_tool_grant(self, token_hash: str) -> None:
        """Forget the token (its run closed the grant). Idempotent."""

    @abc.abstractmethod
    async def delete_expired_tool_grants(self, now: datetime) -> int:
        """Forget grants that expired before ``now``; how many."""
