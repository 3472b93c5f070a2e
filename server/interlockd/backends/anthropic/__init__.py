"""Claude Managed Agents (``provider kind "anthropic"``), through the official SDK.

Needs the ``anthropic`` extra. This module describes the kind (its settings and
``build``) without loading the SDK; ``backend`` runs turns; ``events`` reads the
session's events into the neutral ones; ``resources`` keeps the agents and
environments; ``errors`` maps SDK failures and owns the retry policy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from interlockd.backends.base import AgentBackend, RemoteBackendSettings
from interlockd.backends.registry import BackendDeps, BackendKind
from interlockd.errors import FailedPrecondition


class AnthropicProviderSettings(RemoteBackendSettings):
    """Claude Managed Agents."""

    kind: Literal["anthropic"] = "anthropic"
    #: The API's base URL (default: the SDK's, api.anthropic.com).
    base_url: str = ""
    #: The deployment's key; a sandbox's own key (its secret ``anthropic_api_key``)
    #: takes precedence.
    api_key: SecretStr | None = None
    #: Agent and environment creates allowed per minute per daemon; a create
    #: beyond the budget waits for room instead of failing.
    creates_per_minute: float = Field(default=60.0, ge=1)
    #: The managed environment's network access.
    networking: Literal["unrestricted", "limited"] = "unrestricted"
    #: Ask for token deltas (``event_deltas[]=agent.message``) so text streams as
    #: it is produced, not a whole message at a time.
    token_deltas: bool = True
    #: Attempts for a provider call that fails transiently before the turn's
    #: first event (429, 5xx, overloaded, connection errors), with backoff and
    #: the provider's retry-after honoured. Nothing is retried after it.
    max_attempts: int = Field(default=3, ge=1, le=10)


def build(p: AnthropicProviderSettings, deps: BackendDeps) -> AgentBackend:
    """The backend of one ``kind = "anthropic"`` table; the SDK loads here."""
    try:
        from interlockd.backends.anthropic.backend import AnthropicBackend
    except ImportError as exc:
        raise FailedPrecondition(
            f"providers.{deps.name}: kind 'anthropic' needs the anthropic extra "
            f"(pip install 'interlockd[anthropic]'): {exc}"
        ) from None
    return AnthropicBackend(
        deps.name,
        api_key=p.api_key.get_secret_value() if p.api_key else "",
        base_url=p.base_url,
        models=p.allowed_models(64_000),
        connect_timeout=p.connect_timeout_seconds,
        read_timeout=p.read_timeout_seconds,
        creates_per_minute=p.creates_per_minute,
        networking=p.networking,
        token_deltas=p.token_deltas,
        max_attempts=p.max_attempts,
    )


KIND = BackendKind(AnthropicProviderSettings, build)
