"""The daemon's packages import one way: each layer only from the layers below it.

From the bottom up (docs/architecture.md draws it):

0. ground — the error root, ids, logging, the turn's vocabulary, tool schema dialects;
1. ``store/`` (persistence, sealing);
2. ``pauses`` (the kill switches, read from the store);
3. providers — ``backends/`` and ``compute/``, neither importing the other;
4. ``tools/``, ``integrations/``, ``context/``, and ``config`` (the daemon's settings,
   which include each provider's);
5. ``runs/`` (a turn's phases);
6. edges — ``api/`` (the only gRPC) and ``http/``, and ``listen`` (the ports they bind: the
   probe, whether a worker shares them);
7. wiring — ``daemon``, ``cli``, ``workers`` (the supervisor of ``serve --workers``),
   ``storage`` (which store).

A module may import its own package and anything lower. The check reads every
import statement of server/interlockd (those under ``if TYPE_CHECKING:`` too:
a type-only arrow is still an arrow), so a new upward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "server" / "interlockd"

LAYERS: dict[str, int] = {
    "errors": 0,
    "plugins": 0,
    "ids": 0,
    "logs": 0,
    "tool_schema": 0,
    "listen": 6,
    "config": 4,
    "vocabulary": 0,
    "store": 1,
    "pauses": 2,
    "backends": 3,
    "compute": 3,
    "tools": 4,
    "integrations": 4,
    "context": 4,
    "runs": 5,
    "api": 6,
    "http": 6,
    "daemon": 7,
    "cli": 7,
    "storage": 7,
    "workers": 7,
}
#: Packages of one layer that must not import each other.
APART = [{"backends", "compute"}, {"api", "http"}]

#: Arrows that still run upward: each is a debt with its way out; the list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def unit(module: str) -> str:
    """The layer unit of a dotted module under interlockd (its first component)."""
    return module.split(".")[1] if module.count(".") else module


def imports() -> list[tuple[str, str]]:
    """(importing file's unit, imported unit) for every import of an interlockd module."""
    arrows = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts)
        source = unit(module) if module != "interlockd.__init__" else "__init__"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "interlockd":
                    targets = [f"interlockd.{a.name}" for a in node.names]
                elif node.module.startswith("interlockd."):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("interlockd.")]
            arrows.extend((source, unit(t)) for t in targets)
    return arrows


def test_every_module_has_a_layer() -> None:
    """Each top-level module or package of the daemon is placed in a layer."""
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()}
    units = {u for u in units if not u.startswith(("__", ".")) and u != "py"}
    assert units - {"typed"} <= set(LAYERS), sorted(units - set(LAYERS))


def test_imports_run_downward() -> None:
    """No module imports a higher layer, nor a package it must stay apart from."""
    wrong = set()
    for source, target in imports():
        if source == target or source == "__init__":
            continue
        upward = LAYERS[target] > LAYERS[source]
        sideways = any({source, target} <= group for group in APART)
        if upward or sideways:
            wrong.add((source, target))
    assert wrong - KNOWN == set(), sorted(wrong - KNOWN)
    assert KNOWN - wrong == set(), f"fixed: drop {sorted(KNOWN - wrong)} from KNOWN"
