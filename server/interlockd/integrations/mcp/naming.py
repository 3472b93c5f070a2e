"""Names of an MCP server's tools as the router exposes them: ``mcp__<server>__<tool>``.

Every provider accepts ``[A-Za-z0-9_-]{1,64}``; MCP tool names may hold dots,
slashes or anything else and be longer. A name is sanitised (other characters
become ``_``) and, when that alone would not do — too long, or equal to
another tool's name after sanitising — shortened and suffixed with a hash of
the original, so names stay unique and the same from run to run (prompt
caches depend on it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MAX_NAME = 64
PREFIX = "mcp"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_HASH_CHARS = 8


def sanitise(part: str) -> str:
    """``part`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    return _UNSAFE.sub("_", part) or "_"


def tool_names(server: str, tools: Iterable[str]) -> dict[str, str]:
    """Our name for each of the server's tool names, in sorted order of the originals.

    Deterministic for a given set of names: the first (in sorted order) of
    tools that sanitise alike keeps the plain name, the others get a hash suffix.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for tool in sorted(set(tools)):
        plain = f"{PREFIX}__{sanitise(server)}__{sanitise(tool)}"
        name = (
            plain if len(plain) <= MAX_NAME and plain not in taken else _hashed(plain, server, tool)
        )
        names[tool] = name
        taken.add(name)
    return names


def _hashed(plain: str, server: str, tool: str) -> str:
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:_HASH_CHARS]
    return f"{plain[: MAX_NAME - _HASH_CHARS - 1]}_{digest}"
