"""Provider kinds, and the entry points through which other packages add more.

Owns the shape every pluggable provider shares — a pydantic settings model whose
``kind`` field names it, and a ``build(settings, deps)`` function — and the loader
that joins a package's built-in kinds with those other distributions register in
an entry-point group (``interlockd.backends``, ``interlockd.compute``). Each entry
point names its kind and points at a :class:`ProviderKind` object, e.g. in a
plugin's ``pyproject.toml``::

    [project.entry-points."interlockd.backends"]
    echo = "interlock_echo:KIND"

This module knows no particular provider: ``backends/kinds.py`` and
``compute/kinds.py`` hold the two tables. It must never import a provider's
module itself (a provider's heavy SDK loads only when ``build`` runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, get_args

from pydantic import BaseModel

from interlockd.errors import FailedPrecondition

S = TypeVar("S", bound=BaseModel)
D = TypeVar("D")
P = TypeVar("P")
K = TypeVar("K", bound="ProviderKind[Any, Any, Any]")

#: The origin of the kinds that ship with interlockd.
BUILT_IN = "built-in"


class PluginError(FailedPrecondition):
    """A registered provider kind cannot be used; the message names its entry point."""

    reason = "PLUGIN_INVALID"


@dataclass(frozen=True, slots=True)
class ProviderKind(Generic[S, D, P]):
    """One kind of provider: how its table is read and how it is built."""

    #: The pydantic model of its settings table; its ``kind`` field's default
    #: (a one-value ``Literal``) is the kind's name in configuration.
    settings: type[S]
    #: Builds the provider from its validated settings and what the daemon hands
    #: it. Called once per configured table, at start; raises an InterlockError
    #: naming the key when the settings cannot work (an extra not installed).
    build: Callable[[S, D], P]
    #: Where it comes from: ``built-in``, or the distribution that registered it.
    origin: str = BUILT_IN

    @property
    def name(self) -> str:
        """The kind's name: what a table's ``kind`` key says."""
        return str(self.settings.model_fields["kind"].default)

    @property
    def summary(self) -> str:
        """One line on what it is (the first line of its settings' docstring)."""
        doc = (self.settings.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def load_kinds(
    group: str,
    builtin: Sequence[K],
    expected: type[K],
    settings_base: type[BaseModel],
    found: Iterable[EntryPoint] | None = None,
) -> dict[str, K]:
    """The built-in kinds, then those registered in entry-point ``group``, by name.

    ``found`` defaults to the group's installed entry points. Raises
    :class:`PluginError` when one fails to import, is not an ``expected`` whose
    settings derive from ``settings_base`` with a one-value ``kind``, is registered
    under a name other than its kind's, or takes a name already taken: a provider
    kind silently missing would only show later, as an unknown kind.
    """
    kinds = {kind.name: kind for kind in builtin}
    registered = entry_points(group=group) if found is None else found
    for point in sorted(registered, key=lambda p: p.name):
        where = f"entry point {point.name!r} ({point.value}) of group {group!r}"
        try:
            kind = point.load()
        except Exception as exc:  # a plugin's import error, whatever it is
            raise PluginError(f"{where} could not be loaded: {type(exc).__name__}: {exc}") from None
        if not isinstance(kind, expected):
            raise PluginError(f"{where} is not a {expected.__name__}")
        if not (isinstance(kind.settings, type) and issubclass(kind.settings, settings_base)):
            raise PluginError(f"{where}: its settings are not a {settings_base.__name__}")
        field = kind.settings.model_fields["kind"]
        if not isinstance(field.default, str) or get_args(field.annotation) != (field.default,):
            raise PluginError(f'{where}: its settings need kind: Literal["<name>"] = "<name>"')
        if kind.name != point.name:
            raise PluginError(f"{where} names kind {kind.name!r}: register it as {kind.name!r}")
        if kind.name in kinds:
            raise PluginError(
                f"{where}: kind {kind.name!r} is already provided by {kinds[kind.name].origin}"
            )
        origin = point.dist.name if point.dist is not None else point.value.partition(":")[0]
        kinds[kind.name] = replace(kind, origin=origin)
    return kinds
