"""The shared SQL's placeholders (``?``, ``:name``) in PostgreSQL's (``$1``, ``$2``, ...)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

# A quoted literal or identifier (kept as it is), a named placeholder, or a positional one.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<![:\w]):([A-Za-z_]\w*)|\?")


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> tuple[str, tuple[str, ...] | None]:
    """``sql`` with numbered placeholders, and the parameter names in order (None: positional).

    A statement uses one style. A name used twice is one parameter.
    """
    names: list[str] = []
    positional = 0
    out: list[str] = []
    last = 0
    for match in _TOKEN.finditer(sql):
        token = match.group(0)
        if token[0] in "'\"":
            continue
        out.append(sql[last : match.start()])
        last = match.end()
        if token == "?":
            positional += 1
            out.append(f"${positional}")
            continue
        name = match.group(1)
        if name not in names:
            names.append(name)
        out.append(f"${names.index(name) + 1}")
    out.append(sql[last:])
    if names and positional:
        raise ValueError(f"a statement mixes ? and :name placeholders: {sql[:80]!r}")
    return "".join(out), (tuple(names) if names else None)


def bind(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[str, Sequence[Any]]:
    """The statement and its arguments, as asyncpg takes them."""
    text, names = translate(sql)
    if names is None:
        if isinstance(params, Mapping):
            raise ValueError("named parameters given to a statement with ? placeholders")
        return text, params
    if not isinstance(params, Mapping):
        raise ValueError("positional parameters given to a statement with :name placeholders")
    return text, [params[name] for name in names]
