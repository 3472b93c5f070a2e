"""Checking tool arguments against a tool's JSON schema before anything runs.

Models get arguments wrong, and neither end of MCP validates for us: the SDK's
low-level server hands the handler whatever the client sent, and a remote
server's tools are only as careful as their authors. So the run's runner
(:mod:`interlockd.tools.runner`) checks every call here, whichever provider
made it, and MCP sources check a remote tool's arguments before sending them.
Schemas never fetch remote ``$ref``\\ s: an unresolvable reference is a
validation failure, not a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema.validators import Draft202012Validator, validator_for

#: Longest validation message handed back (they quote the offending value).
_MAX_MESSAGE = 300


class ArgumentValidator:
    """A tool's parameter schema, compiled once."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """ValueError if ``schema`` is not a valid JSON schema."""
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(dict(schema))
        except schema_errors.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {_short(exc.message)}") from None
        self._validator = cls(dict(schema))

    def problem(self, arguments: Any) -> str | None:
        """Why ``arguments`` do not match the schema (one message the model can act on), or None."""
        try:
            error = schema_errors.best_match(self._validator.iter_errors(arguments))
        except schema_errors.SchemaError as exc:
            # Raised lazily for parts of a schema only reached by some instances.
            return f"the tool's schema is invalid: {_short(exc.message)}"
        except Exception as exc:  # an unresolvable $ref (referencing's errors have no common root)
            return f"the tool's schema could not be applied: {type(exc).__name__}"
        if error is None:
            return None
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"arguments{where}: {_short(error.message)}"


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
