"""A workload: one scripted conversation, the same for every provider it is run on.

A workload file says who the agent is (system prompt, the tools it may call),
how many end users hold the conversation and what they say, turn by turn::

    name: support
    system: You are the support agent of an online shop.
    tools: [search_conversations]
    users: 3
    max_output_tokens: 256          # optional: the cap of every turn ...
    turns:
      - message: Hi, my order 4412 arrived damaged.
      - message: What was the order number I gave you earlier?
        expect_tool: search_conversations   # optional: the tool a good answer calls
        max_output_tokens: 128              # ... or of one turn

``tools`` is the allow-list of every turn (empty or absent: every tool of the
sandbox, as in ``RunRequest.tools``). A turn may also be just its message
(``- Hello``). Files ending in ``.yaml`` or
``.yml`` are read with PyYAML when it is installed (it is not a dependency of
the client: a JSON document is valid YAML, and is read without it); ``.json``
and ``.toml`` are read with the standard library.

This module only parses and checks; it never talks to a daemon. Every error
names the file and the field at fault.
"""

from __future__ import annotations

import importlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Turn", "Workload", "WorkloadError", "load_workload", "parse_workload"]

# What RunRequest accepts (proto/interlock/v1/router.proto); checked here so a
# typo fails before the first run instead of as N identical errors.
_MAX_LABEL_VALUE = 256
_MAX_TOOLS = 128
_MAX_OUTPUT_TOKENS = 2**31 - 1
_MAX_USERS = 10_000
_MAX_TURNS = 1_000

_TOP_KEYS = frozenset({"name", "system", "tools", "users", "turns", "max_output_tokens"})
_TURN_KEYS = frozenset({"message", "expect_tool", "max_output_tokens"})


class WorkloadError(ValueError):
    """The workload file cannot be read or says something invalid; the message names where."""


@dataclass(frozen=True)
class Turn:
    """One user message of the conversation."""

    message: str
    #: The tool a good answer calls (reported as "expected tool called"); empty: none.
    expect_tool: str = ""
    #: Output token cap of this turn's provider calls; 0: the model's default.
    max_output_tokens: int = 0


@dataclass(frozen=True)
class Workload:
    """The conversation every provider is given, and how many end users hold it."""

    name: str
    system: str
    tools: tuple[str, ...]
    users: int
    turns: tuple[Turn, ...]


def load_workload(path: str | Path) -> Workload:
    """Read and check a workload file (YAML, JSON or TOML, by its extension)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{path}: cannot read it: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = _load_yaml(text, path)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise WorkloadError(f"{path}: not valid {suffix.lstrip('.') or 'YAML'}: {exc}") from None
    return parse_workload(data, source=str(path))


def _load_yaml(text: str, path: Path) -> Any:
    try:
        # Imported by name: PyYAML is optional and ships no type stubs.
        yaml = importlib.import_module("yaml")
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            raise WorkloadError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                "or write the workload as .json or .toml"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkloadError(f"{path}: not valid YAML: {exc}") from None


def parse_workload(data: Any, *, source: str = "workload") -> Workload:
    """Check the parsed document of a workload file and build the :class:`Workload`."""
    if not isinstance(data, Mapping):
        raise WorkloadError(f"{source}: expected a mapping with name, system, tools, turns")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise WorkloadError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}"
        )
    name = _string(data.get("name"), f"{source}: name", required=True)
    if len(name) > _MAX_LABEL_VALUE:
        raise WorkloadError(f"{source}: name must be at most {_MAX_LABEL_VALUE} characters")
    system = _string(data.get("system", ""), f"{source}: system")
    tools = data.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools):
        raise WorkloadError(f"{source}: tools must be a list of tool names")
    if len(tools) > _MAX_TOOLS:
        raise WorkloadError(f"{source}: tools names {len(tools)} tools; at most {_MAX_TOOLS}")
    users = _integer(data.get("users", 1), f"{source}: users", 1, _MAX_USERS)
    default_cap = _integer(
        data.get("max_output_tokens", 0), f"{source}: max_output_tokens", 0, _MAX_OUTPUT_TOKENS
    )
    raw_turns = data.get("turns")
    if not isinstance(raw_turns, list) or not raw_turns:
        raise WorkloadError(f"{source}: turns must be a non-empty list of user messages")
    if len(raw_turns) > _MAX_TURNS:
        raise WorkloadError(f"{source}: turns has {len(raw_turns)} entries; at most {_MAX_TURNS}")
    turns = tuple(
        _turn(raw, f"{source}: turns[{i}]", default_cap, tools) for i, raw in enumerate(raw_turns)
    )
    return Workload(name=name, system=system, tools=tuple(tools), users=users, turns=turns)


def _turn(raw: Any, where: str, default_cap: int, tools: list[str]) -> Turn:
    if isinstance(raw, str):
        raw = {"message": raw}
    if not isinstance(raw, Mapping):
        raise WorkloadError(f"{where}: expected a message, or a mapping with message")
    unknown = sorted(set(map(str, raw)) - _TURN_KEYS)
    if unknown:
        raise WorkloadError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TURN_KEYS))}"
        )
    message = _string(raw.get("message"), f"{where}.message", required=True)
    if not message.strip():
        raise WorkloadError(f"{where}.message must not be blank")
    expect_tool = _string(raw.get("expect_tool", ""), f"{where}.expect_tool")
    if expect_tool and tools and expect_tool not in tools:
        raise WorkloadError(
            f"{where}.expect_tool: {expect_tool!r} is not in the tools allow-list "
            f"({', '.join(tools)})"
        )
    cap = _integer(
        raw.get("max_output_tokens", default_cap),
        f"{where}.max_output_tokens",
        0,
        _MAX_OUTPUT_TOKENS,
    )
    return Turn(message=message, expect_tool=expect_tool, max_output_tokens=cap)


def _string(value: Any, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise WorkloadError(f"{where} must be {'a non-empty' if required else 'a'} string")
    return value


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WorkloadError(f"{where} must be an integer from {low} to {high}, got {value!r}")
    return value
