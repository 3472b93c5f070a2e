"""Forwarding a run's tool call to the process that runs the turn.

A runtime's call (MCP, a dispatch callback) may reach any replica or worker;
only the process running the turn holds the run's tools and its event stream.
A process that does not hold the token looks it up among the grants other
processes published (:mod:`interlockd.tools.shared_grants`) and forwards the
request, unchanged, to the owner's address, marked so it is never forwarded
again; the owner checks the token once more against its own grants and
answers. The answer goes back as it came.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import orjson
import structlog

from interlockd.store.base import GrantKind, StoredGrant
from interlockd.tools.shared_grants import FORWARDED_HEADER, SharedGrants

log = structlog.get_logger(__name__)

#: The request headers an owner needs to answer as it would have directly.
_PASSED = ("authorization", "content-type", "accept", "mcp-protocol-version")


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The owner's answer (or ours, 502, when it could not be reached)."""

    status: int
    body: bytes
    content_type: str


class Forwarder:
    """Finds other processes' tokens and forwards their calls to them."""

    def __init__(self, shared: SharedGrants, *, timeout: float) -> None:
        self._shared = shared
        # No proxies from the environment, no redirects: the owner's address is the store's.
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)

    async def find(
        self, token: str, kind: GrantKind, headers: Mapping[str, str]
    ) -> StoredGrant | None:
        """The grant another process published for ``token``; None for a forwarded request."""
        if not token or headers.get(FORWARDED_HEADER):
            return None
        return await self._shared.find(token, kind)

    async def forward(
        self, grant: StoredGrant, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Forwarded:
        """POST the request to the grant's owner and return its answer."""
        passed = {name: headers[name] for name in _PASSED if name in headers}
        passed[FORWARDED_HEADER] = "1"
        try:
            answer = await self._client.post(
                grant.owner_url.rstrip("/") + path, content=body, headers=passed
            )
        except httpx.HTTPError as exc:
            log.warning("tool_call_forward_failed", run_id=grant.run_id, error=type(exc).__name__)
            message = "the process running this turn did not answer; retry"
            return Forwarded(502, orjson.dumps({"error": message}), "application/json")
        return Forwarded(
            answer.status_code,
            answer.content,
            answer.headers.get("content-type", "application/json"),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
