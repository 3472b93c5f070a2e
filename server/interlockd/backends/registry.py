"""The configured agent backends, keyed by the provider string of a request.

Owns the lookup "which backend runs provider X" and the shutdown of all of
them. It is a plain dict on purpose: the daemon builds each backend from its
configuration (through its kind's ``build``, see ``kinds.py``) and registers it.

Also the two types a provider kind's module needs to describe itself:
:class:`BackendKind` (its settings model and ``build``) and :class:`BackendDeps`
(what the daemon hands ``build``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from interlockd.backends.base import AgentBackend, BackendSettings
from interlockd.errors import InvalidArgument
from interlockd.plugins import ProviderKind
from interlockd.vocabulary import RuntimeContext, SessionSpec

log = structlog.get_logger(__name__)
S = TypeVar("S", bound=BackendSettings)


class BackendRegistry:
    """Backends by provider string."""

    def __init__(self, backends: Iterable[AgentBackend] = ()) -> None:
        self._backends: dict[str, AgentBackend] = {}
        for backend in backends:
            self.register(backend)

    def register(self, backend: AgentBackend) -> None:
        """Add ``backend`` under its ``provider``; a provider string is registered once."""
        if backend.provider in self._backends:
            raise ValueError(f"provider {backend.provider!r} is already registered")
        self._backends[backend.provider] = backend

    def get(self, provider: str) -> AgentBackend:
        """The backend of ``provider``; InvalidArgument (field ``provider``) if none."""
        backend = self._backends.get(provider)
        if backend is None:
            configured = ", ".join(sorted(self._backends)) or "none"
            raise InvalidArgument(
                "provider", f"unknown provider {provider!r}; configured providers: {configured}"
            )
        return backend

    async def describe_runtime(self, provider: str, context: RuntimeContext) -> SessionSpec:
        """The compute session spec of runtime ``provider`` for ``context`` (the compute
        scheduler's ``describe``): its backend made ready, then asked."""
        backend = self.get(provider)
        await backend.prepare_runtime()
        return backend.session_spec(context)

    def providers(self) -> list[str]:
        """The registered provider strings, sorted."""
        return sorted(self._backends)

    def __contains__(self, provider: object) -> bool:
        return provider in self._backends

    async def aclose(self) -> None:
        """Close every backend, each even if another fails; then forget them."""
        backends, self._backends = self._backends, {}
        for provider, backend in backends.items():
            try:
                await backend.aclose()
            except Exception:
                log.exception("backend_close_failed", provider=provider)


@dataclass(frozen=True, slots=True)
class BackendDeps:
    """What the daemon hands a backend kind's ``build`` for one configured table."""

    #: The table's name: the provider string requests select it by.
    name: str
    #: The daemon's data directory (state a provider keeps on this host goes under it).
    data_dir: Path
    #: The registry the backend joins, filled in configuration order: a runtime
    #: may borrow a sibling's resources from it once they are built (Hermes uses
    #: the local provider's model server).
    backends: BackendRegistry
    #: Seconds a single tool call may take, and a whole turn (``[runs]``).
    tool_timeout_seconds: float = 30.0
    max_run_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class BackendKind(ProviderKind[S, BackendDeps, AgentBackend]):
    """An agent backend kind: ``providers.<name>.kind`` selects it (see ``plugins.py``)."""
