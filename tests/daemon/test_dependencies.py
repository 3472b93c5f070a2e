"""The daemon's imports against pyproject.toml: every third-party module it imports comes
from a distribution the project declares (a dependency, or an extra the feature needs)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "interlockd"
# Extras that are tooling, never what the daemon's code may rely on.
NOT_RUNTIME = frozenset({"dev", "bench"})


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Distribution names of the dependencies and the runtime extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, listed in project.get("optional-dependencies", {}).items():
        if extra not in NOT_RUNTIME:
            requirements.extend(listed)
    return {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def imports() -> dict[str, set[str]]:
    """Third-party modules imported anywhere under server/ (lazy imports too), with where."""
    found: dict[str, set[str]] = {}
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "interlockd":
                    continue
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _top_level() -> dict[str, list[str]]:
    return packages_distributions()


@cache
def _files(dist: str) -> frozenset[str]:
    return frozenset(str(f) for f in distribution(dist).files or ())


def owner(module: str) -> str | None:
    """The installed distribution providing ``module`` (namespace packages resolved by file)."""
    candidates = sorted(set(_top_level().get(module.split(".")[0], [])))
    if len(candidates) <= 1:
        return _normal(candidates[0]) if candidates else None
    # A namespace package (google.*): the distribution holding the module's files.
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        stem = "/".join(parts[:depth])
        for dist in candidates:
            files = _files(dist)
            if f"{stem}.py" in files or f"{stem}/__init__.py" in files:
                return _normal(dist)
    return None


def test_every_third_party_import_is_declared() -> None:
    """Each module server/interlockd imports maps to a distribution pyproject.toml declares,
    so a fresh install of the package (with its extras) can import it."""
    allowed = declared()
    problems = []
    for module, where in sorted(imports().items()):
        dist = owner(module)
        if dist is None:
            problems.append(f"{module} (in {', '.join(sorted(where))}): not installed")
        elif dist not in allowed:
            problems.append(f"{module} (in {', '.join(sorted(where))}): {dist} is not declared")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_the_check_sees_namespace_packages_and_lazy_imports() -> None:
    """The scan finds imports inside functions and resolves google.* to its own distribution."""
    found = imports()
    assert "server/interlockd/daemon.py" in found["grpc_health.v1"]
    assert owner("google.protobuf.timestamp_pb2") == "protobuf"
    assert owner("google.auth.transport.requests") == "google-auth"
    assert "xllamacpp" in found  # imported lazily, on the local model's first start
