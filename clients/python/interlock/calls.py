"""What the asyncio and the blocking client share, so they cannot drift apart.

Where to connect by default, which key a call carries (and the error when
it is missing), and the request messages built from keyword arguments. No
I/O happens here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from interlock.errors import MissingCredentials
from interlock.v1 import router_pb2

__all__ = [
    "DEFAULT_ADDRESS",
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_OPERATOR_KEY",
    "Metadata",
    "api_key_metadata",
    "from_env",
    "operator_metadata",
    "run_request",
]

DEFAULT_ADDRESS = "127.0.0.1:7600"
ENV_ADDRESS = "INTERLOCK_ADDRESS"
ENV_API_KEY = "INTERLOCK_API_KEY"
ENV_OPERATOR_KEY = "INTERLOCK_OPERATOR_KEY"

Metadata = tuple[tuple[str, str], ...]


def from_env(value: str | None, variable: str) -> str | None:
    """``value`` if given, else the environment ``variable``; empty counts as unset."""
    if value:
        return value
    return os.environ.get(variable) or None


def _bearer(key: str | None, what: str, hint: str) -> Metadata:
    if not key:
        raise MissingCredentials(f"no {what} configured: {hint}")
    return (("authorization", f"Bearer {key}"),)


def api_key_metadata(key: str | None) -> Metadata:
    """Metadata of a call made with a sandbox API key; MissingCredentials without one."""
    return _bearer(key, "sandbox API key", f"pass api_key= or set {ENV_API_KEY}")


def operator_metadata(key: str | None) -> Metadata:
    """Metadata of a call made with the operator key; MissingCredentials without one."""
    return _bearer(key, "operator key", f"pass operator_key= or set {ENV_OPERATOR_KEY}")


def run_request(
    message: str,
    *,
    end_user_id: str,
    session_id: str = "",
    provider: str = "",
    model: str = "",
    system: str = "",
    tools: Iterable[str] = (),
    request_id: str = "",
    labels: Mapping[str, str] | None = None,
    max_output_tokens: int = 0,
    google_engine: str = "",
    google_location: str = "",
) -> router_pb2.RunRequest:
    """The RunRequest for one turn (see ``Client.run`` for what each field does)."""
    return router_pb2.RunRequest(
        end_user_id=end_user_id,
        session_id=session_id,
        provider=provider,
        model=model,
        system=system,
        message=message,
        tools=list(tools),
        request_id=request_id,
        labels=dict(labels or {}),
        max_output_tokens=max_output_tokens,
        google=router_pb2.GoogleRunOptions(
            reasoning_engine_id=google_engine, location=google_location
        ),
    )
