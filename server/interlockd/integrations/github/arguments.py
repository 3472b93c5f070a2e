"""The GitHub tools' arguments: the schema pieces they declare and the checks of a call.

Each check takes the call's arguments (names already known to the tool's
schema) and returns the value it asked for, or raises :class:`ToolError` naming
the argument at fault and what it must be; the model reads that message and
corrects the call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from interlockd.integrations.github.api import MAX_PER_PAGE
from interlockd.tools.base import ToolError
from interlockd.vocabulary import ToolSpec

_REPO = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]{0,38})/([A-Za-z0-9._-]{1,100})")

REPO_PROPERTY = {
    "type": "string",
    "description": "The repository as owner/name, e.g. octocat/hello-world.",
}


def object_schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def limit(default: int, what: str) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_PER_PAGE,
        "description": f"How many {what} to return (1-{MAX_PER_PAGE}, default {default}).",
    }


PAGE = {"type": "integer", "minimum": 1, "description": "Which page of results (default 1)."}


def check_names(arguments: Mapping[str, Any], spec: ToolSpec) -> None:
    known = spec.parameters.get("properties", {})
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        takes = ", ".join(known) or "no arguments"
        raise ToolError(
            f"unknown argument(s) {', '.join(map(repr, unknown))}; {spec.name} takes {takes}"
        )


def string(
    arguments: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    max_chars: int = 1_000,
    allow_empty: bool = False,
) -> str | None:
    value = arguments.get(name)
    if value is None:
        if required:
            raise ToolError(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise ToolError(f"'{name}' must be a string, not {_kind(value)}")
    if not allow_empty and not value.strip():
        raise ToolError(f"'{name}' must not be empty")
    if len(value) > max_chars:
        raise ToolError(f"'{name}' is too long ({len(value)} characters; at most {max_chars})")
    return value


def required_string(arguments: Mapping[str, Any], name: str, *, max_chars: int = 1_000) -> str:
    value = string(arguments, name, required=True, max_chars=max_chars)
    assert value is not None
    return value


def integer(
    arguments: Mapping[str, Any],
    name: str,
    *,
    default: int | None,
    low: int,
    high: int | None = None,
) -> int:
    value = arguments.get(name)
    if value is None:
        if default is None:
            raise ToolError(f"'{name}' is required")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"'{name}' must be an integer, not {_kind(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ToolError(f"'{name}' must be {bounds}, not {value}")
    return value


def choice(arguments: Mapping[str, Any], name: str, choices: Sequence[str], default: str) -> str:
    value = arguments.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise ToolError(f"'{name}' must be one of {', '.join(choices)}, not {value!r}")
    return value


def strings(arguments: Mapping[str, Any], name: str, *, max_items: int) -> list[str]:
    value = arguments.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ToolError(f"'{name}' must be a list of non-empty strings")
    if len(value) > max_items:
        raise ToolError(f"'{name}' has {len(value)} items; at most {max_items}")
    return list(value)


def repo(arguments: Mapping[str, Any]) -> tuple[str, str]:
    value = required_string(arguments, "repo", max_chars=140)
    match = _REPO.fullmatch(value.strip())
    if match is None or match[2] in (".", ".."):
        raise ToolError(f"'repo' must be owner/name (e.g. octocat/hello-world), not {value!r}")
    return match[1], match[2]


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
