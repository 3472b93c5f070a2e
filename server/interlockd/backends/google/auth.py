"""OAuth access tokens for the Vertex AI REST API.

Either a static token (tests, or a token minted elsewhere) or Application
Default Credentials through google-auth. ADC tokens live about an hour; this
refreshes them ahead of expiry, in a thread (google-auth's refresh blocks), one
refresh at a time however many turns ask.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from interlockd.errors import ProviderCredentialsRejected

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Refresh when the token has less than this left.
REFRESH_MARGIN = datetime.timedelta(minutes=5)


class TokenSource:
    """Bearer tokens for one provider: ``await token()``."""

    def __init__(self, provider: str, *, static_token: str = "", credentials: Any = None) -> None:
        self._provider = provider
        self._static = static_token
        self._credentials = credentials  # google.auth.credentials.Credentials, loaded lazily
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._static:
            return self._static
        async with self._lock:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(self._load)
            if not self._fresh():
                await asyncio.to_thread(self._refresh)
            token: str = self._credentials.token
            return token

    def _fresh(self) -> bool:
        creds = self._credentials
        if creds is None or not creds.token:
            return False
        expiry = getattr(creds, "expiry", None)  # naive UTC in google-auth
        if expiry is None:
            return True
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        return bool(expiry - now > REFRESH_MARGIN)

    def _load(self) -> Any:
        try:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError
        except ImportError:
            raise ProviderCredentialsRejected(
                self._provider,
                "Google credentials need the google extra (google-auth), or set "
                f"providers.{self._provider}.access_token",
            ) from None
        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError as exc:
            raise ProviderCredentialsRejected(
                self._provider, f"no Application Default Credentials: {exc}"
            ) from None
        return credentials

    def _refresh(self) -> None:
        from google.auth.exceptions import RefreshError
        from google.auth.transport.requests import Request

        try:
            self._credentials.refresh(Request())
        except RefreshError as exc:
            raise ProviderCredentialsRejected(
                self._provider, f"refreshing the Google credentials failed: {exc}"
            ) from None
