"""Who is calling: bearer keys to sandboxes (or to the operator).

Keys are 256-bit random secrets, so a single SHA-256 is the right hash (a slow
password hash protects low-entropy secrets; these aren't). Only hashes are
stored. A short in-process cache keeps the hot path (every Run) off the
database; revoking through this daemon drops the entry at once, and other
replicas see a revocation within the cache's lifetime.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from interlockd.api.handlers import Context
from interlockd.errors import Unauthenticated
from interlockd.store.base import Store

API_KEY_PREFIX = "ilk_"
OPERATOR_KEY_PREFIX = "ilop_"
_CACHE_SECONDS = 2.0
_CACHE_MAX = 10_000


def new_secret(prefix: str) -> str:
    """A new key secret: ``prefix`` + 43 characters of URL-safe base64 (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret shown in listings to recognise it."""
    return secret[:12]


@dataclass(frozen=True, slots=True)
class SandboxPrincipal:
    sandbox_id: str
    key_id: str


class Authenticator:
    """Resolves the ``authorization`` metadata of a call."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, SandboxPrincipal]] = {}

    @staticmethod
    def _bearer(context: Context, needs: str) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return token.strip()
                raise Unauthenticated("authorization metadata must be 'Bearer <key>'")
        raise Unauthenticated(
            f"missing authorization metadata: send 'authorization: Bearer <{needs}>'"
        )

    async def sandbox(self, context: Context) -> SandboxPrincipal:
        """The sandbox the call's API key opens, or Unauthenticated."""
        secret = self._bearer(context, "sandbox API key")
        digest = hash_secret(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._store.find_api_key(digest)
        if key is None:
            if secret.startswith(OPERATOR_KEY_PREFIX):
                raise Unauthenticated("this is the operator key; this call needs a sandbox API key")
            raise Unauthenticated("invalid or revoked API key")
        principal = SandboxPrincipal(key.sandbox_id, key.id)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal

    async def operator(self, context: Context) -> None:
        """Pass if the call carries the operator key, else Unauthenticated."""
        secret = self._bearer(context, "operator key")
        if not await self._store.is_operator_key(hash_secret(secret)):
            raise Unauthenticated(
                "invalid operator key: sandbox administration needs the operator key"
            )

    async def sandbox_or_operator(self, context: Context) -> str | None:
        """The sandbox a sandbox API key confines the call to, or None for the operator
        key; Unauthenticated (the sandbox key's reason) when it is neither."""
        try:
            return (await self.sandbox(context)).sandbox_id
        except Unauthenticated as not_a_sandbox_key:
            try:
                await self.operator(context)
            except Unauthenticated:
                raise not_a_sandbox_key from None
            return None

    def forget_key(self, key_id: str) -> None:
        """Drop a revoked key from the cache at once."""
        for digest, (_, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]
