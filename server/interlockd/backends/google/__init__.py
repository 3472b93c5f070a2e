"""Vertex AI Agent Engine (``provider kind "google"``): deployed ADK agents over REST.

Needs the ``google`` extra (google-auth) unless a static access token is
configured. This module describes the kind (its settings and ``build``);
``backend`` runs turns; ``adk`` translates ADK events; ``auth`` keeps the OAuth
token fresh off the event loop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from interlockd.backends.base import AgentBackend, RemoteBackendSettings
from interlockd.backends.registry import BackendDeps, BackendKind


class GoogleProviderSettings(RemoteBackendSettings):
    """A deployed ADK agent on Vertex AI Agent Engine."""

    kind: Literal["google"] = "google"
    #: The Vertex AI root URL (default: from the engine's location).
    base_url: str = ""
    #: The project and location of engines named by bare ID, and the engine used
    #: when a request names none.
    project: str = ""
    location: str = "us-central1"
    reasoning_engine_id: str = ""
    #: A static OAuth access token; without it, Application Default Credentials
    #: (the google extra), refreshed before they expire.
    access_token: SecretStr | None = None
    #: Lifetime of the run-scoped token the deployed agent's dispatch tool calls
    #: back with (it is revoked when the turn ends anyway).
    dispatch_token_seconds: float = Field(default=900.0, gt=0)
    #: Attempts for a call that fails transiently before the turn's first event
    #: (429, 503, connection errors), with backoff. Nothing is retried after it.
    max_attempts: int = Field(default=3, ge=1, le=10)


def build(p: GoogleProviderSettings, deps: BackendDeps) -> AgentBackend:
    """The backend of one ``kind = "google"`` table."""
    from interlockd.backends.google.backend import GoogleAgentEngineBackend

    return GoogleAgentEngineBackend(
        deps.name,
        project=p.project,
        location=p.location,
        reasoning_engine_id=p.reasoning_engine_id,
        base_url=p.base_url,
        access_token=p.access_token.get_secret_value() if p.access_token else "",
        models=p.allowed_models(65_536),
        connect_timeout=p.connect_timeout_seconds,
        read_timeout=p.read_timeout_seconds,
        max_attempts=p.max_attempts,
        # The token never outlives the longest turn.
        dispatch_token_seconds=min(p.dispatch_token_seconds, deps.max_run_seconds),
        tool_timeout=deps.tool_timeout_seconds,
    )


KIND = BackendKind(GoogleProviderSettings, build)
