"""The access token of one GitHub connection, refreshed once however many callers ask.

GitHub Apps with expiring user tokens hand out an access token for eight hours
and a refresh token that works exactly once: two refreshes with the same
refresh token end the user's grant. So every refresh happens under the
connection's lock (:meth:`Credentials.lock`, which holds across runs and
replicas), the credentials are read again inside the lock (another caller may
have refreshed while this one waited), and the new pair is stored before the
lock is released. The refresh runs to completion even when the caller that
started it is cancelled: abandoning it halfway would lose the only valid
refresh token.

A refused refresh (``bad_refresh_token``), an expired refresh token, or a
rejected token that cannot be refreshed (OAuth App tokens have no refresh
token) marks the connection broken and raises :class:`ConnectionBroken`
telling the user to reconnect. Never logs or reports a token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from interlockd.integrations.base import AccessToken, ConnectionBroken, Credentials, OAuthError
from interlockd.integrations.github.oauth import GitHubOAuth
from interlockd.tools.base import ToolError

#: Refresh when less than this many seconds of the access token are left.
REFRESH_MARGIN = 300.0


def reconnect_command(end_user_id: str) -> str:
    """The CLI command that connects GitHub again for ``end_user_id`` ("" = sandbox-wide)."""
    command = "interlock integrations connect github"
    return f"{command} --end-user {end_user_id}" if end_user_id else command


class GitHubAccessToken(AccessToken):
    """A connection's GitHub access token over its :class:`Credentials`.

    The credentials hold ``access_token`` and, for expiring tokens,
    ``expires_at``, ``refresh_token`` and ``refresh_token_expires_at`` (epoch
    seconds) — the shape of :meth:`TokenGrant.credentials`.
    """

    def __init__(
        self,
        credentials: Credentials,
        oauth: GitHubOAuth,
        *,
        reconnect: str = reconnect_command(""),
        refresh_margin: float = REFRESH_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._oauth = oauth
        self._reconnect = reconnect
        self._margin = refresh_margin
        self._clock = clock
        self._pending: set[asyncio.Task[str]] = set()

    async def get(self) -> str:
        credentials = await self._credentials.read()
        if not self._due(credentials):
            return _access_token(credentials)

        async def under_lock() -> str:
            fresh = await self._credentials.read()
            if not self._due(fresh):  # another caller refreshed while this one waited
                return _access_token(fresh)
            return await self._refresh(fresh)

        return await self._locked(under_lock())

    async def after_unauthorized(self, rejected: str) -> str:
        async def under_lock() -> str:
            fresh = await self._credentials.read()
            if _access_token(fresh) != rejected:  # another caller refreshed already
                return _access_token(fresh)
            if not fresh.get("refresh_token"):
                raise await self.broken(
                    "GitHub rejected the access token and it has no refresh token "
                    "(revoked, or the authorization was removed)"
                )
            return await self._refresh(fresh)

        return await self._locked(under_lock())

    async def broken(self, reason: str) -> ConnectionBroken:
        """Mark the connection broken for ``reason``; return the error to raise to the model."""
        await self._credentials.mark_broken(reason)
        return ConnectionBroken(
            f"GitHub access was revoked or expired; the user must reconnect GitHub "
            f"({self._reconnect}) before GitHub tools work again"
        )

    def _due(self, credentials: Mapping[str, Any]) -> bool:
        """Whether the stored access token should be refreshed before use."""
        expires_at = credentials.get("expires_at")
        if expires_at is None or not credentials.get("refresh_token"):
            return False  # a token that does not expire, or cannot be refreshed anyway
        return float(expires_at) - self._clock() < self._margin

    async def _locked(self, work: Coroutine[Any, Any, str]) -> str:
        """Run ``work`` under the connection's lock, to the end even if the caller is cancelled."""

        async def run() -> str:
            async with self._credentials.lock():
                return await work

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[str]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away does not need it

    async def _refresh(self, credentials: Mapping[str, Any]) -> str:
        """Trade the stored refresh token for a new pair and store it (lock held)."""
        refresh_token = str(credentials["refresh_token"])
        refresh_expires = credentials.get("refresh_token_expires_at")
        if refresh_expires is not None and float(refresh_expires) <= self._clock():
            raise await self.broken("the GitHub refresh token expired")
        try:
            grant = await self._oauth.refresh(refresh_token)
        except OAuthError as exc:
            if exc.code == "bad_refresh_token":
                raise await self.broken(
                    "GitHub refused the refresh token (bad_refresh_token)"
                ) from None
            if exc.code in ("unreachable", "http_error"):
                advice = "try again shortly"
            else:  # incorrect_client_credentials and the like: the operator's to fix
                advice = "the router's GitHub app settings need attention"
            raise ToolError(
                f"could not refresh the GitHub access token ({exc.code}); {advice}"
            ) from None
        await self._credentials.replace(grant.credentials())
        return grant.access_token


def _access_token(credentials: Mapping[str, Any]) -> str:
    token = credentials.get("access_token")
    if not isinstance(token, str) or not token:
        raise ToolError("the GitHub connection has no access token; reconnect GitHub")
    return token
