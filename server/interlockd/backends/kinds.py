"""The agent backend kinds: the one table of what ``providers.<name>.kind`` may say.

Each kind is a provider's own module or folder describing itself (its settings
model and ``build``); third-party packages add kinds through the
``interlockd.backends`` entry-point group (see ``plugins.py``). The daemon's
configuration assembles its provider tables' union from :func:`backend_kinds`,
and :func:`build_backend` builds each configured table through its kind.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib.metadata import EntryPoint
from typing import Any

from interlockd.backends import anthropic, google, hermes, local, openai_compat
from interlockd.backends.base import AgentBackend, BackendSettings
from interlockd.backends.registry import BackendDeps, BackendKind
from interlockd.plugins import load_kinds

#: The entry-point group third-party backend kinds register in.
GROUP = "interlockd.backends"

#: The kinds that ship with interlockd, in the order error messages list them.
BUILTIN: tuple[BackendKind[Any], ...] = (
    openai_compat.KIND,
    local.KIND,
    anthropic.KIND,
    google.KIND,
    hermes.KIND,
)


def load_backend_kinds(found: Iterable[EntryPoint] | None = None) -> dict[str, BackendKind[Any]]:
    """The built-in kinds and the installed (or ``found``) entry points', by name."""
    return load_kinds(GROUP, BUILTIN, BackendKind, BackendSettings, found)


@functools.cache
def backend_kinds() -> dict[str, BackendKind[Any]]:
    """The kinds of this process: loaded once, when the configuration is first read."""
    return load_backend_kinds()


def build_backend(settings: BackendSettings, deps: BackendDeps) -> AgentBackend:
    """The backend of one configured table, built by its kind."""
    return backend_kinds()[settings.kind].build(settings, deps)
