"""Integrations: a sandbox's connected data sources, their sealed credentials, and the
OAuth connect flows that create them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime


IntegrationKind = Literal["oauth", "mcp", "custom"]


IntegrationStatus = Literal["active", "broken", "disconnected"]


FlowStatus = Literal["pending", "connected", "failed", "expired"]


@dataclass(frozen=True, slots=True)
class Integration:
    """A data source of a sandbox, connected for all of it or for one end user."""

    id: str
    sandbox_id: str
    kind: IntegrationKind
    app: str
    end_user_id: str  # "" = the whole sandbox
    status: IntegrationStatus
    status_reason: str
    config: dict[str, Any]  # not secret, but sealed at rest (account logins are personal)
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectFlow:
    """An OAuth connect flow, from Connect to its callback."""

    id: str
    sandbox_id: str
    app: str
    end_user_id: str  # who started it
    for_end_user: bool  # connect for that end user (else for the whole sandbox)
    status: FlowStatus
    reason: str
    integration_id: str  # set once connected
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None = None


class IntegrationStore(abc.ABC):
    """Connections of a sandbox (or of one of its end users) and their connect flows."""

    @abc.abstractmethod
    async def create_integration(
        self,
        sandbox_id: str,
        *,
        kind: IntegrationKind,
        app: str,
        end_user_id: str,
        config: dict[str, Any],
        credentials: dict[str, Any],
    ) -> Integration:
        """Record a new active connection; return it.

        A live (active or broken) connection of the same (app, end user) is
        archived as disconnected in the same transaction: connecting again
        replaces it. ``config`` and ``credentials`` are sealed, bound to the
        row. NotFound for an unknown sandbox.
        """

    @abc.abstractmethod
    async def get_integration(self, sandbox_id: str, integration_id: str) -> Integration:
        """The connection; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def list_integrations(
        self, sandbox_id: str, *, end_user_id: str | None = None, include_disconnected: bool = False
    ) -> list[Integration]:
        """Connections of the sandbox, oldest first.

        ``end_user_id`` given: that end user's and the sandbox-wide ones (what
        a run of theirs may use); None: all of them.
        """

    @abc.abstractmethod
    async def read_integration_credentials(
        self, sandbox_id: str, integration_id: str
    ) -> dict[str, Any]:
        """The connection's credentials, opened. NotFound unless in this sandbox."""

    @abc.abstractmethod
    async def replace_integration_credentials(
        self, sandbox_id: str, integration_id: str, credentials: dict[str, Any]
    ) -> None:
        """Store new credentials (e.g. a rotated token pair) in one write."""

    @abc.abstractmethod
    async def set_integration_status(
        self, sandbox_id: str, integration_id: str, status: IntegrationStatus, reason: str = ""
    ) -> Integration:
        """Change the connection's status (with a reason for broken/disconnected)."""

    @abc.abstractmethod
    async def touch_integration(self, sandbox_id: str, integration_id: str) -> None:
        """Record that the connection was just used (last_used_at)."""

    @abc.abstractmethod
    def integration_lock(
        self, sandbox_id: str, integration_id: str
    ) -> AbstractAsyncContextManager[None]:
        """A lock per connection for read-refresh-replace of its credentials.

        Same guarantees as :meth:`provider_resource_lock` (PostgreSQL: an
        advisory lock across replicas). Not reentrant.
        """

    @abc.abstractmethod
    async def create_connect_flow(
        self,
        sandbox_id: str,
        *,
        app: str,
        end_user_id: str,
        for_end_user: bool,
        state_hash: str,
        code_verifier: str,
        expires_at: datetime,
    ) -> ConnectFlow:
        """Record a pending connect flow. The verifier is sealed; only the state's
        hash is kept. NotFound for an unknown sandbox."""

    @abc.abstractmethod
    async def get_connect_flow(self, sandbox_id: str, flow_id: str) -> ConnectFlow:
        """The flow; NotFound unless it is in this sandbox."""

    @abc.abstractmethod
    async def find_connect_flow(self, state_hash: str) -> tuple[ConnectFlow, str] | None:
        """The flow whose state hashes to ``state_hash`` and its code verifier, or None."""

    @abc.abstractmethod
    async def finish_connect_flow(
        self,
        sandbox_id: str,
        flow_id: str,
        status: FlowStatus,
        *,
        reason: str = "",
        integration_id: str = "",
    ) -> ConnectFlow:
        """Move a pending flow to its end state and return it.

        Only a pending flow moves: if it already ended (a second callback, a
        race), it is returned unchanged and the caller must not act on it.
        """
