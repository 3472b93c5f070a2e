"""GitHub as a connectable app: the catalog entry, the connect flow's OAuth steps, the tools.

Built from the operator's config (an OAuth App, or a GitHub App with user
tokens: client id and secret, scopes, base URLs). Owns one httpx client
shared by every connection's tools; close it with :meth:`GitHubApp.aclose`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from interlockd.integrations.base import (
    Connection,
    ConnectionBroken,
    Credentials,
    ExchangeResult,
    OAuthApp,
    OAuthError,
)
from interlockd.integrations.github.api import DEFAULT_MAX_WAIT, GitHubAPI, TokenSource
from interlockd.integrations.github.oauth import (
    DEFAULT_API_BASE_URL,
    DEFAULT_WEB_BASE_URL,
    USER_AGENT,
    GitHubOAuth,
)
from interlockd.integrations.github.token import (
    REFRESH_MARGIN,
    GitHubAccessToken,
    reconnect_command,
)
from interlockd.integrations.github.tools import TOOL_CLASSES, TOOL_SPECS
from interlockd.tools.base import Tool, ToolError
from interlockd.vocabulary import ToolSpec

#: What an OAuth App asks for unless configured: repositories, issues and files, private ones too.
DEFAULT_SCOPES = ("repo",)
# An access token this close to its expiry is refreshed before revoking with it.
_REVOKE_MARGIN = 60.0


class GitHubApp(OAuthApp):
    """GitHub: read repositories, issues and files; open issues and comment on them."""

    name = "github"
    description = "GitHub: read repositories, issues and files; open issues and comment on them."

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        web_base_url: str = DEFAULT_WEB_BASE_URL,
        api_base_url: str = DEFAULT_API_BASE_URL,
        timeout: float = 30.0,
        refresh_margin: float = REFRESH_MARGIN,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scopes = tuple(scopes)
        self._api_base_url = api_base_url
        self._refresh_margin = refresh_margin
        self._max_wait = max_wait
        self._clock = clock
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"user-agent": USER_AGENT},
        )
        self.oauth = GitHubOAuth(
            self._http,
            client_id=client_id,
            client_secret=client_secret,
            web_base_url=web_base_url,
            api_base_url=api_base_url,
            clock=clock,
        )

    async def aclose(self) -> None:
        """Close the HTTP client (the app's tools stop working)."""
        await self._http.aclose()

    # ---- catalog and tools ------------------------------------------------------------

    def tool_specs(self) -> list[ToolSpec]:
        return list(TOOL_SPECS)

    def tools(self, connection: Connection, credentials: Credentials) -> list[Tool]:
        token = GitHubAccessToken(
            credentials,
            self.oauth,
            reconnect=reconnect_command(connection.end_user_id),
            refresh_margin=self._refresh_margin,
            clock=self._clock,
        )
        api = self.api(token)
        return [cls(api, source_id=connection.integration_id) for cls in TOOL_CLASSES]

    def api(self, token: TokenSource) -> GitHubAPI:
        """The REST API as one token sees it."""
        return GitHubAPI(
            self._http,
            token,
            base_url=self._api_base_url,
            max_wait=self._max_wait,
            clock=self._clock,
        )

    # ---- the connect flow ---------------------------------------------------------------

    def authorize_url(self, *, state: str, code_challenge: str, redirect_uri: str) -> str:
        return self.oauth.authorize_url(
            state=state,
            code_challenge=code_challenge,
            redirect_uri=redirect_uri,
            scopes=self.scopes,
        )

    async def exchange(self, *, code: str, code_verifier: str, redirect_uri: str) -> ExchangeResult:
        grant = await self.oauth.exchange(
            code=code, code_verifier=code_verifier, redirect_uri=redirect_uri
        )
        try:
            user, _ = await self.api(_NewToken(grant.access_token)).user()
        except ToolError as exc:
            raise OAuthError(
                "user_lookup_failed", f"reading the new account failed: {exc}"
            ) from None
        login = user.get("login")
        if not isinstance(login, str) or not login:
            raise OAuthError("user_lookup_failed", "GitHub's /user answer has no login")
        return ExchangeResult(
            credentials=grant.credentials(),
            config={"login": login, "scopes": list(grant.scopes)},
        )

    async def revoke(self, credentials: Mapping[str, Any]) -> None:
        """Delete the user's grant of this app upstream (all its tokens stop working).

        A grant GitHub no longer has (the user removed it, the refresh token is
        dead) counts as revoked. An access token near its expiry is refreshed
        first, since GitHub revokes by a live access token.
        """
        access_token = credentials.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise OAuthError("invalid_credentials", "the stored credentials hold no access token")
        refresh_token = credentials.get("refresh_token")
        expires_at = credentials.get("expires_at")
        if (
            isinstance(refresh_token, str)
            and refresh_token
            and expires_at is not None
            and float(expires_at) - self._clock() < _REVOKE_MARGIN
        ):
            try:
                access_token = (await self.oauth.refresh(refresh_token)).access_token
            except OAuthError as exc:
                if exc.code == "bad_refresh_token":
                    return  # nothing left to revoke: the grant's last token is dead
                raise
        if await self.oauth.revoke(access_token):
            return
        # GitHub knows no live token like it for these client credentials: fine if
        # the token is dead; if it still works, the client credentials are wrong.
        if await self.oauth.token_works(access_token):
            raise OAuthError(
                "revoke_refused",
                "GitHub refused to revoke a grant whose token still works; check the "
                "GitHub app's client id and secret",
            )


class _NewToken:
    """The token of an exchange that just happened: nothing to refresh, nothing to mark."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get(self) -> str:
        return self._token

    async def after_unauthorized(self, rejected: str) -> str:
        raise ConnectionBroken("GitHub rejected the access token it just issued")

    async def broken(self, reason: str) -> ConnectionBroken:
        return ConnectionBroken(reason)
