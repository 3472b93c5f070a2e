"""The seams of integrations: connectable apps, their connections, their credentials.

An *integration* is a data source of a sandbox — an OAuth app connection
(GitHub), an MCP server, a custom source — connected once for the whole
sandbox or for one end user, and from then on a source of tools in every
runtime. This module holds what every kind shares:

- :class:`Connection`: one connected integration as its tools see it;
- :class:`Credentials`: its sealed credentials, read and replaced under a
  lock that holds across concurrent runs (refresh tokens are single-use);
- :class:`AccessToken`: a bearer token that refreshes itself;
- :class:`App`: a catalog entry — what can be connected and the tools a
  connection of it provides; :class:`OAuthApp` adds the authorize / exchange /
  revoke steps of the connect flow.

Tool names of an integration are namespaced ``<app>__<tool>`` (MCP servers:
``mcp__<server>__<tool>``): letters, digits, ``_`` and ``-`` only, as every
provider accepts, and stable from run to run.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

from interlockd.tools.base import Tool, ToolError
from interlockd.vocabulary import ToolSpec

IntegrationKind = Literal["oauth", "mcp", "custom"]


class ConnectionBroken(ToolError):
    """The connection's credentials no longer work; the user must reconnect.

    Raised by tools (it is a :class:`ToolError`, so the model reads the
    message); the runner marks the connection broken.
    """


@dataclass(frozen=True, slots=True)
class Connection:
    """One connected integration, as its tools see it."""

    integration_id: str
    sandbox_id: str
    end_user_id: str  # "" when connected for the whole sandbox
    kind: IntegrationKind
    app: str  # "github"; an MCP server's name
    config: Mapping[str, Any]  # what is not secret: URLs, scopes, the account's login


class Credentials(abc.ABC):
    """The sealed credentials of one connection (e.g. OAuth tokens)."""

    @abc.abstractmethod
    async def read(self) -> dict[str, Any]:
        """The current credentials (opened). ConnectionBroken if the connection is broken."""

    @abc.abstractmethod
    async def replace(self, credentials: Mapping[str, Any]) -> None:
        """Store new credentials atomically (e.g. a refreshed token pair)."""

    @abc.abstractmethod
    def lock(self) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion for read-refresh-replace, across runs and replicas."""

    @abc.abstractmethod
    async def mark_broken(self, reason: str) -> None:
        """Mark the connection broken (its tools then tell the user to reconnect)."""


class AccessToken(abc.ABC):
    """A bearer token for a connection's API, refreshed by its owner."""

    @abc.abstractmethod
    async def get(self) -> str:
        """A token valid for a while yet (refreshed ahead of its expiry, under the lock)."""

    @abc.abstractmethod
    async def after_unauthorized(self, rejected: str) -> str:
        """A fresh token after the API refused ``rejected`` (401).

        Refreshes once under the lock (unless another caller already did:
        then its token is returned); raises :class:`ConnectionBroken` (after
        marking the connection broken) when no refresh is possible.
        """


class App(abc.ABC):
    """Something a sandbox or end user can connect, and the tools it provides."""

    #: The app's name: the ``app`` of Connect and of its connections.
    name: str
    kind: IntegrationKind
    #: One line for the catalog.
    description: str

    @abc.abstractmethod
    def tool_specs(self) -> list[ToolSpec]:
        """The tools a connection provides (names namespaced), in a stable order."""

    @abc.abstractmethod
    def tools(self, connection: Connection, credentials: Credentials) -> list[Tool]:
        """The tools of one connection, executing with its credentials."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections. Called once at shutdown."""


class OAuthApp(App):
    """An app connected through OAuth 2 authorization code + PKCE (S256)."""

    kind: IntegrationKind = "oauth"

    @abc.abstractmethod
    def authorize_url(self, *, state: str, code_challenge: str, redirect_uri: str) -> str:
        """Where to send the user to grant access."""

    @abc.abstractmethod
    async def exchange(self, *, code: str, code_verifier: str, redirect_uri: str) -> ExchangeResult:
        """Trade the callback's code for credentials; raise OAuthError on refusal."""

    @abc.abstractmethod
    async def revoke(self, credentials: Mapping[str, Any]) -> None:
        """Revoke the grant upstream (best effort is not enough: raise OAuthError on failure)."""


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """What a successful code exchange yields."""

    credentials: dict[str, Any]  # sealed at rest
    config: dict[str, Any]  # shown in List: e.g. {"login": "octocat", "scopes": [...]}


class OAuthError(Exception):
    """The provider refused an OAuth step; ``code`` is its error code (bad_verification_code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
