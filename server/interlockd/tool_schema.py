"""Tool input schemas made acceptable to providers that take a JSON Schema subset.

Claude Managed Agents is reported to reject ``$schema``, ``$id``, ``$defs``,
``$ref`` and ``additionalProperties`` in custom tool schemas. Tools come from
integrations and MCP servers whose schemas use all of them, so the schema is
rewritten, not refused: local references (``#/$defs/X``, ``#/definitions/X``)
are inlined, the rejected keywords dropped. A recursive reference cannot be
inlined; at the point where it recurs the schema becomes the unconstrained
``{}`` with the referenced definition's description, so the tool stays usable
(the tool itself still checks the arguments it is given).

Pure functions over JSON values; no provider is named here.

Why on the ground floor and not in ``tools/``: which dialect a provider's
service takes is the provider's own knowledge, so each backend cleans the
specs it sends (Anthropic's managed-agent definitions call this) and the
backends (layer 3) cannot import ``tools/`` (layer 4). The other way round —
the orchestrator handing backends already-cleaned specs — would make ``runs/``
know every provider's dialect, and clean schemas a provider takes as they are
(the MCP endpoint and the chat-completions providers get them unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Keywords removed everywhere they appear as schema keywords.
REJECTED_KEYWORDS = frozenset({"$schema", "$id", "$defs", "definitions", "$ref"})
_DROPPED = REJECTED_KEYWORDS | {"additionalProperties", "$comment"}
# Keywords whose value is a map of names to schemas, or a schema, or a list of them.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_VALUES = frozenset({"items", "not", "if", "then", "else", "contains", "propertyNames"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


def clean_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with local references inlined and the rejected keywords removed.

    The result is always an object schema (``{"type": "object", ...}``), as
    tool inputs are objects.
    """
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        value = schema.get(key)
        if isinstance(value, Mapping):
            definitions.update({f"#/{key}/{name}": v for name, v in value.items()})
    out = _clean(schema, definitions, ())
    if not isinstance(out, dict):
        out = {}
    out["type"] = "object"
    out.setdefault("properties", {})
    return out


def _clean(node: Any, definitions: Mapping[str, Any], resolving: tuple[str, ...]) -> Any:
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = definitions.get(ref)
        if target is None or ref in resolving:
            described = target.get("description") if isinstance(target, Mapping) else None
            own = {k: v for k, v in node.items() if k not in _DROPPED}
            if described and "description" not in own:
                own["description"] = described
            return _clean(own, definitions, resolving)
        # Sibling keywords of $ref (a description, say) refine the referenced schema.
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, definitions, (*resolving, ref))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _clean(v, definitions, resolving) for k, v in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = _clean(value, definitions, resolving)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_clean(v, definitions, resolving) for v in value]
        else:
            out[key] = value
    return out
