"""Hermes (Nous Research hermes-agent) as a self-hosted runtime (provider kind ``"hermes"``).

This module describes the kind (its settings and ``build``); ``config`` renders
the compute session that runs ``hermes gateway run``; ``stream`` reads its
streamed answers; ``backend`` runs turns against it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from interlockd.backends.base import AgentBackend, RemoteBackendSettings
from interlockd.backends.registry import BackendDeps, BackendKind
from interlockd.errors import FailedPrecondition
from interlockd.vocabulary import ModelInfo


class HermesProviderSettings(RemoteBackendSettings):
    """The self-hosted Hermes runtime, run on a compute provider."""

    kind: Literal["hermes"] = "hermes"
    #: The OpenAI-compatible base URL (ending in /v1) of the model Hermes calls, as
    #: Hermes' compute sessions reach it (default: the daemon's local model server,
    #: started when Hermes needs it).
    base_url: str = ""
    #: The key of the model at ``base_url``.
    api_key: SecretStr | None = None
    #: Context window assumed for models not listed.
    default_context_window: int = Field(default=8192, ge=512)
    #: The ``hermes`` executable (a path, or a name on PATH); empty:
    #: ``.runtimes/hermes/bin/hermes`` under the working directory when present
    #: (``make`` installs it there), else ``hermes`` on PATH.
    executable: str = ""
    #: The address Hermes' API server binds inside its compute session; empty: the
    #: one the compute provider gives (127.0.0.1 for a local process, an outside
    #: address on Daytona and Fly.io Sprites).
    listen_host: str = ""
    #: The cap on each of Hermes' model calls, in tokens.
    max_output_tokens: int = Field(default=4096, ge=1)


def build(p: HermesProviderSettings, deps: BackendDeps) -> AgentBackend:
    """The backend of one ``kind = "hermes"`` table.

    Without a ``base_url`` Hermes calls the local provider's model server (one
    process, whichever provider starts it), found in ``deps.backends`` when a
    session is first described.
    """
    from interlockd.backends.hermes.backend import HermesBackend
    from interlockd.backends.hermes.config import HermesSettings, find_executable
    from interlockd.backends.local import LocalBackend

    executable = find_executable(p.executable)
    if executable is None:
        raise FailedPrecondition(
            f"providers.{deps.name}: no hermes executable found ({p.executable or 'hermes'}); "
            "run `make` to install it into .runtimes/hermes, or set "
            f"providers.{deps.name}.executable"
        )
    backends = deps.backends

    async def local_model() -> str:
        for backend in (backends.get(n) for n in backends.providers()):
            if isinstance(backend, LocalBackend):
                return await backend.server.ensure_started()
        raise FailedPrecondition(
            f"providers.{deps.name}.base_url is empty and no local provider runs the model: "
            "set the model's base_url"
        )

    window = p.default_context_window
    return HermesBackend(
        HermesSettings(
            executable=executable,
            model_base_url=p.base_url,
            model_api_key=p.api_key.get_secret_value() if p.api_key else "",
            listen_host=p.listen_host or "{host}",
            context_length=max(window, *p.models.values(), 0),
            max_output_tokens=p.max_output_tokens,
        ),
        deps.name,
        local_model=None if p.base_url else local_model,
        models=p.allowed_models(p.max_output_tokens),
        default_model_info=ModelInfo(
            context_window=window, max_output_tokens=min(p.max_output_tokens, window // 4)
        ),
        connect_timeout=p.connect_timeout_seconds,
        read_timeout=p.read_timeout_seconds,
    )


KIND = BackendKind(HermesProviderSettings, build)
