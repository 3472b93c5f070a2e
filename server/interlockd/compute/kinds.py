"""The compute kinds: the one table of what ``compute.providers.<name>.kind`` may say.

Each kind is a provider's own module or folder describing itself (its settings
model and ``build``); third-party packages add kinds through the
``interlockd.compute`` entry-point group (see ``plugins.py``). The daemon's
configuration assembles its compute tables' union from :func:`compute_kinds`,
and :func:`build_compute_provider` builds each configured table through its kind.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from importlib.metadata import EntryPoint
from typing import Any

from interlockd.compute import daytona, local, sprites
from interlockd.compute.base import (
    ComputeDeps,
    ComputeKind,
    ComputeProvider,
    ComputeProviderSettings,
)
from interlockd.plugins import load_kinds

#: The entry-point group third-party compute kinds register in.
GROUP = "interlockd.compute"

#: The kinds that ship with interlockd, in the order error messages list them.
BUILTIN: tuple[ComputeKind[Any], ...] = (local.KIND, daytona.KIND, sprites.KIND)


def load_compute_kinds(found: Iterable[EntryPoint] | None = None) -> dict[str, ComputeKind[Any]]:
    """The built-in kinds and the installed (or ``found``) entry points', by name."""
    return load_kinds(GROUP, BUILTIN, ComputeKind, ComputeProviderSettings, found)


@functools.cache
def compute_kinds() -> dict[str, ComputeKind[Any]]:
    """The kinds of this process: loaded once, when the configuration is first read."""
    return load_compute_kinds()


def build_compute_provider(settings: ComputeProviderSettings, deps: ComputeDeps) -> ComputeProvider:
    """The provider of one configured table: built by its kind, named after the table,
    priced at ``usd_per_hour`` when the table sets it."""
    provider = compute_kinds()[settings.kind].build(settings, deps)
    provider.name = deps.name
    if settings.usd_per_hour is not None:
        provider.price = dataclasses.replace(
            provider.price,
            active_usd_per_second=settings.usd_per_hour / 3600,
            price_version=f"config-{deps.name}",
        )
    return provider
