"""OAuth tokens for the Vertex AI REST API: refreshed ahead of expiry, off the event loop."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any

import pytest
from google.auth import credentials as ga_credentials

from interlockd.backends.google.auth import TokenSource
from interlockd.errors import ProviderCredentialsRejected


class CountingCredentials(ga_credentials.Credentials):  # type: ignore[misc]
    """google-auth credentials whose refresh mints numbered tokens, valid for ``life``."""

    def __init__(self, life: datetime.timedelta) -> None:
        super().__init__()
        self.life = life
        self.refreshes = 0
        self.threads: set[int] = set()

    def refresh(self, request: Any) -> None:
        self.threads.add(threading.get_ident())
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + self.life


async def test_static_token_is_used_as_is() -> None:
    """A configured access token needs no credentials at all."""
    assert await TokenSource("google", static_token="static").token() == "static"


async def test_refreshes_once_for_concurrent_callers_in_a_thread() -> None:
    """Twenty turns asking at once cause one refresh, run off the event loop's thread."""
    creds = CountingCredentials(datetime.timedelta(hours=1))
    source = TokenSource("google", credentials=creds)
    tokens = await asyncio.gather(*(source.token() for _ in range(20)))
    assert set(tokens) == {"tok-1"}
    assert creds.refreshes == 1
    assert threading.get_ident() not in creds.threads


async def test_token_near_expiry_is_refreshed_before_use() -> None:
    """A token with less than the margin left is replaced before it is handed out."""
    creds = CountingCredentials(datetime.timedelta(minutes=2))
    source = TokenSource("google", credentials=creds)
    assert await source.token() == "tok-1"
    assert await source.token() == "tok-2"  # 2 minutes left is inside the 5-minute margin
    creds.life = datetime.timedelta(hours=1)
    assert await source.token() == "tok-3"
    assert await source.token() == "tok-3"


async def test_failed_refresh_is_a_credentials_error() -> None:
    """A refresh google-auth refuses becomes FAILED_PRECONDITION naming the cause."""
    from google.auth.exceptions import RefreshError

    class Broken(CountingCredentials):
        def refresh(self, request: Any) -> None:
            raise RefreshError("invalid_grant: token revoked")

    source = TokenSource("google", credentials=Broken(datetime.timedelta(hours=1)))
    with pytest.raises(ProviderCredentialsRejected, match="token revoked"):
        await source.token()
