"""The seam between the compute scheduler and a place runtimes run.

A compute provider hosts *compute sessions*: one long-lived machine (a
process, a sandbox, a sprite) per (sandbox, end user, agent) key, running a
runtime server (e.g. hermes-agent's API server) that the router reaches over
HTTP. The scheduler decides when to create, resume, suspend, archive or
destroy one; a provider only carries the decision out and says what it can do
(:class:`Capabilities`) and what it costs (:class:`ComputePrice`).

Providers know nothing of the store, tenants or gRPC: they get a
:class:`SessionSpec` (what to run, with which labels) and return
:class:`ComputeSession` snapshots. Errors are :class:`ComputeError` with a
message an operator can act on.

Also here, what every compute kind's settings table has
(:class:`ComputeProviderSettings`); each kind narrows ``kind`` and adds its own.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from interlockd.errors import InterlockError, Unavailable
from interlockd.plugins import ProviderKind
from interlockd.vocabulary import SessionSpec

#: Where a session is: ``running`` serves requests; ``suspended`` keeps its state
#: and resumes quickly; ``archived`` keeps its state cold (slow resume);
#: ``destroyed`` is gone; ``failed`` needs destroying.
SessionStatus = Literal["creating", "running", "suspended", "archived", "destroyed", "failed"]


class ComputeProviderSettings(BaseModel):
    """One place self-hosted runtimes run; its table name is the provider's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The kind's name (each kind's model narrows it to a one-value Literal).
    kind: str
    #: Most sessions running on it at once (0: no limit); placement spills past it.
    capacity: int = Field(default=0, ge=0)
    #: What an active session costs, in US dollars per hour, for the ledger; unset:
    #: the provider's published price (local: 0 — set your host's cost here).
    usd_per_hour: float | None = Field(default=None, ge=0)


@dataclass(frozen=True, slots=True)
class ComputeDeps:
    """What the daemon hands a compute kind's ``build`` for one configured table."""

    #: The table's name: the provider's name in placements and the ledger.
    name: str
    #: The daemon's data directory; relative paths in settings are under it.
    data_dir: Path

    def resolve(self, path: Path) -> Path:
        """``path`` made absolute under ``data_dir`` when relative."""
        return path if path.is_absolute() else self.data_dir / path


class ComputeError(Unavailable):
    """The provider could not do what was asked (UNAVAILABLE: another provider may)."""

    reason = "COMPUTE_UNAVAILABLE"

    def __init__(self, provider: str, message: str) -> None:
        InterlockError.__init__(self, f"compute provider {provider}: {message}")
        self.provider = provider

    @property
    def metadata(self) -> dict[str, str]:
        return {"compute_provider": self.provider}


@dataclass(frozen=True, slots=True)
class ComputePrice:
    """What a provider charges while a session is active (USD per second), and at rest."""

    active_usd_per_second: float
    suspended_usd_per_second: float = 0.0
    price_version: str = ""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do; the scheduler plans around what it cannot."""

    #: It can stop a session and keep its state (else it idles by itself, or not at all).
    suspend: bool
    #: It can move a stopped session to cold storage.
    archive: bool
    #: It stops idle sessions on its own after about this many seconds (0: never).
    self_idles_after: float = 0.0
    regions: tuple[str, ...] = ()  # empty: the one it has
    sizes: tuple[str, ...] = ()  # empty: fixed
    #: Measured (or published) seconds to get a running session from each state.
    cold_start_seconds: float = 5.0
    resume_seconds: float = 1.0


def fill_placeholders(spec: SessionSpec, *, host: str, port: int, state_dir: str) -> SessionSpec:
    """``spec`` with ``{host}``, ``{port}`` and ``{state_dir}`` replaced in its command and
    env values (for providers whose sessions have a machine of their own)."""

    def fill(value: str) -> str:
        return (
            value.replace("{host}", host)
            .replace("{port}", str(port))
            .replace("{state_dir}", state_dir)
        )

    return dataclasses.replace(
        spec,
        command=[fill(arg) for arg in spec.command],
        env={name: fill(value) for name, value in spec.env.items()},
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How the router reaches the runtime: a base URL and headers to add."""

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ComputeSession:
    """A provider's view of one session."""

    provider: str
    external_id: str
    key: str
    status: SessionStatus
    labels: Mapping[str, str] = field(default_factory=dict)
    region: str = ""


class ComputeProvider(abc.ABC):
    """One place compute sessions run."""

    name: str
    capabilities: Capabilities
    price: ComputePrice

    @abc.abstractmethod
    async def ensure(self, spec: SessionSpec, external_id: str | None = None) -> ComputeSession:
        """Return a *running* session for ``spec``: resume ``external_id`` if given and it
        still exists (its state kept), else create one. Wait until the runtime answers its
        health path. Idempotent. ComputeError when it cannot."""

    @abc.abstractmethod
    async def endpoint(self, session: ComputeSession) -> Endpoint:
        """How to reach the runtime of a running session (fetch anew after a resume:
        URLs and tokens may change)."""

    @abc.abstractmethod
    async def suspend(self, session: ComputeSession) -> ComputeSession:
        """Stop it, keeping its state. A provider without suspend returns it unchanged."""

    @abc.abstractmethod
    async def archive(self, session: ComputeSession) -> ComputeSession:
        """Move a suspended session's state to cold storage (resumable, slowly)."""

    @abc.abstractmethod
    async def destroy(self, session: ComputeSession) -> None:
        """Delete it and its state. Idempotent: an absent session is not an error."""

    @abc.abstractmethod
    async def health(self) -> bool:
        """Whether the provider itself answers (not any one session)."""

    @abc.abstractmethod
    async def list(self, labels: Mapping[str, str] | None = None) -> list[ComputeSession]:
        """The provider's sessions created by this router (filtered by labels when given)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop what the provider runs locally and close connections (shutdown)."""


S = TypeVar("S", bound=ComputeProviderSettings)


@dataclass(frozen=True, slots=True)
class ComputeKind(ProviderKind[S, ComputeDeps, ComputeProvider]):
    """A compute kind: ``compute.providers.<name>.kind`` selects it (see ``plugins.py``)."""
