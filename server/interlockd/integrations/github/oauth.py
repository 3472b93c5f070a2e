"""GitHub's OAuth web flow over httpx: authorize URL, code exchange, refresh, revoke.

GitHub's token endpoint answers a refusal with HTTP 200 and an ``error``
field (``bad_verification_code``, ``bad_refresh_token``, ...); every refusal,
and every failure to get a usable answer, is raised as :class:`OAuthError`
with GitHub's code (or ``unreachable`` / ``http_error`` / ``invalid_response``).
Refresh tokens (GitHub Apps with expiring user tokens) are single-use: this
module only performs the calls; serializing refreshes and storing the new
pair is :mod:`interlockd.integrations.github.token`'s job.

Stateless apart from the client id and secret. Never logs or puts a token or
the secret in an error.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from interlockd.integrations.base import OAuthError

DEFAULT_WEB_BASE_URL = "https://github.com"
DEFAULT_API_BASE_URL = "https://api.github.com"
#: The REST API version every request asks for.
API_VERSION = "2022-11-28"
#: GitHub refuses API requests without a User-Agent.
USER_AGENT = "interlockd"
API_HEADERS = {
    "accept": "application/vnd.github+json",
    "x-github-api-version": API_VERSION,
    "user-agent": USER_AGENT,
}


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What the token endpoint granted: an access token and, for expiring ones, a refresh token."""

    access_token: str
    token_type: str
    scopes: tuple[str, ...]  # OAuth Apps; () for GitHub Apps
    expires_at: int | None  # epoch seconds; None: does not expire
    refresh_token: str | None
    refresh_token_expires_at: int | None

    def credentials(self) -> dict[str, Any]:
        """The grant as a connection's credentials (what :class:`Credentials` stores)."""
        out: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "scope": ",".join(self.scopes),
        }
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        if self.refresh_token_expires_at is not None:
            out["refresh_token_expires_at"] = self.refresh_token_expires_at
        return out


class GitHubOAuth:
    """The OAuth calls of one GitHub OAuth App or GitHub App, over a caller-owned client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        client_id: str,
        client_secret: str,
        web_base_url: str = DEFAULT_WEB_BASE_URL,
        api_base_url: str = DEFAULT_API_BASE_URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self.client_id = client_id
        self._client_secret = client_secret
        self._web = web_base_url.rstrip("/")
        self._api = api_base_url.rstrip("/")
        self._clock = clock

    def authorize_url(
        self, *, state: str, code_challenge: str, redirect_uri: str, scopes: Sequence[str] = ()
    ) -> str:
        """Where to send the user: GitHub's consent page, with PKCE S256."""
        params = {"client_id": self.client_id, "redirect_uri": redirect_uri}
        if scopes:
            params["scope"] = " ".join(scopes)
        params |= {
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        return f"{self._web}/login/oauth/authorize?{urllib.parse.urlencode(params)}"

    async def exchange(self, *, code: str, code_verifier: str, redirect_uri: str) -> TokenGrant:
        """Trade an authorization code (and its PKCE verifier) for tokens."""
        return await self._token_request(
            {
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """A new token pair for ``refresh_token``, which GitHub retires: store the new pair."""
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def revoke(self, access_token: str) -> bool:
        """Delete the user's whole grant of this app, named by one of its access tokens.

        True when GitHub revoked it; False when GitHub knows no such live token
        for these client credentials (404/422: the token is already dead, or
        the client credentials are wrong — see :meth:`token_works`).
        OAuthError for any other answer.
        """
        url = f"{self._api}/applications/{urllib.parse.quote(self.client_id, safe='')}/grant"
        try:
            response = await self._http.request(
                "DELETE",
                url,
                json={"access_token": access_token},
                auth=httpx.BasicAuth(self.client_id, self._client_secret),
                headers=API_HEADERS,
            )
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code == 204:
            return True
        if response.status_code in (404, 422):
            return False
        raise OAuthError(
            "http_error", f"revoking answered HTTP {response.status_code}{_message(response)}"
        )

    async def token_works(self, access_token: str) -> bool:
        """Whether the API still accepts ``access_token`` (``GET /user``: 200 yes, 401 no)."""
        try:
            response = await self._http.get(
                f"{self._api}/user",
                headers={**API_HEADERS, "authorization": f"Bearer {access_token}"},
            )
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code == 200:
            return True
        if response.status_code == 401:
            return False
        raise OAuthError("http_error", f"checking the token answered HTTP {response.status_code}")

    async def _token_request(self, params: dict[str, str]) -> TokenGrant:
        form = {"client_id": self.client_id, "client_secret": self._client_secret, **params}
        try:
            # Without Accept: application/json GitHub answers form-encoded.
            response = await self._http.post(
                f"{self._web}/login/oauth/access_token",
                data=form,
                headers={"accept": "application/json", "user-agent": USER_AGENT},
            )
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code != 200:
            raise OAuthError(
                "http_error",
                f"GitHub's token endpoint answered HTTP {response.status_code}{_message(response)}",
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OAuthError("invalid_response", "GitHub's token endpoint answered no JSON object")
        if body.get("error"):
            raise OAuthError(str(body["error"]), str(body.get("error_description") or ""))
        return self._grant(body)

    def _grant(self, body: dict[str, Any]) -> TokenGrant:
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise OAuthError("invalid_response", "GitHub's token answer has no access_token")
        refresh_token = body.get("refresh_token")
        if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
            raise OAuthError(
                "invalid_response", "GitHub's token answer has a malformed refresh_token"
            )
        now = int(self._clock())
        scope = body.get("scope")
        return TokenGrant(
            access_token=access_token,
            token_type=str(body.get("token_type") or "bearer"),
            scopes=tuple(s for s in re.split(r"[\s,]+", scope) if s)
            if isinstance(scope, str)
            else (),
            expires_at=_deadline(now, body.get("expires_in"), "expires_in"),
            refresh_token=refresh_token,
            refresh_token_expires_at=_deadline(
                now, body.get("refresh_token_expires_in"), "refresh_token_expires_in"
            ),
        )


def _deadline(now: int, seconds: Any, name: str) -> int | None:
    """``now + seconds``; GitHub has sent these as numbers and as numeric strings."""
    if seconds is None:
        return None
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise OAuthError("invalid_response", f"GitHub's token answer has a malformed {name}")
    return now + seconds


def _unreachable(exc: httpx.HTTPError) -> OAuthError:
    return OAuthError("unreachable", f"could not reach GitHub ({type(exc).__name__})")


def _message(response: httpx.Response) -> str:
    """``": <GitHub's message>"`` when the body has one, short; else ``""``."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return f": {body['message'][:200]}"
    return ""
