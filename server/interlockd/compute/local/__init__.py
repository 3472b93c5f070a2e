"""Runtimes as supervised subprocesses on this host (compute kind ``"local"``).

This module describes the kind (its settings and ``build``); ``provider`` keeps
the sessions (state directories, records, suspend and archive); ``runner``
supervises one runtime process; ``host`` handles a session's files, state
archive, port and process group on this host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from interlockd.compute.base import (
    ComputeDeps,
    ComputeKind,
    ComputeProvider,
    ComputeProviderSettings,
)


class LocalComputeSettings(ComputeProviderSettings):
    """Runtimes as supervised subprocesses on this host."""

    kind: Literal["local"] = "local"
    #: Where sessions' state directories live (under data_dir).
    root: Path = Path("compute")


def build(c: LocalComputeSettings, deps: ComputeDeps) -> ComputeProvider:
    """The provider of one ``kind = "local"`` table."""
    from interlockd.compute.local.provider import LocalComputeProvider

    return LocalComputeProvider(deps.resolve(c.root))


KIND = ComputeKind(LocalComputeSettings, build)
