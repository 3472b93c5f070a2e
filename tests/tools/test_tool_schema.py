"""Tool schemas rewritten for providers that accept a JSON Schema subset."""

from __future__ import annotations

from typing import Any

import orjson

from interlockd.tool_schema import REJECTED_KEYWORDS, clean_schema


def keywords(schema: Any) -> set[str]:
    """Every key used anywhere in ``schema`` outside property-name maps."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            children = value.values() if key == "properties" else [value]
            for child in children:
                found |= keywords(child)
    elif isinstance(schema, list):
        for item in schema:
            found |= keywords(item)
    return found


def test_local_refs_are_inlined_and_rejected_keywords_dropped() -> None:
    """$defs/$ref are inlined, $schema/$id/additionalProperties removed, meaning kept."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:x",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "owner": {"$ref": "#/$defs/user", "description": "who owns it"},
            "tags": {"type": "array", "items": {"$ref": "#/definitions/tag"}},
        },
        "required": ["owner"],
        "$defs": {"user": {"type": "object", "properties": {"login": {"type": "string"}}}},
        "definitions": {"tag": {"type": "string", "enum": ["a", "b"]}},
    }
    out = clean_schema(schema)
    assert not keywords(out) & (REJECTED_KEYWORDS | {"additionalProperties"})
    assert out["required"] == ["owner"]
    assert out["properties"]["owner"] == {
        "type": "object",
        "properties": {"login": {"type": "string"}},
        "description": "who owns it",
    }
    assert out["properties"]["tags"]["items"] == {"type": "string", "enum": ["a", "b"]}


def test_a_property_named_like_a_keyword_is_kept() -> None:
    """Property names are data, not keywords: a property called $ref survives."""
    out = clean_schema({"type": "object", "properties": {"$ref": {"type": "string"}}})
    assert out["properties"] == {"$ref": {"type": "string"}}


def test_recursive_ref_becomes_an_open_schema_with_its_description() -> None:
    """A self-referencing definition is inlined once, then left open, never looping."""
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "$defs": {
            "node": {
                "type": "object",
                "description": "a tree node",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
    }
    out = clean_schema(schema)
    assert "$ref" not in orjson.dumps(out).decode()
    assert out["properties"]["root"]["properties"]["children"]["items"] == {
        "description": "a tree node"
    }


def test_result_is_always_an_object_schema() -> None:
    """An empty or non-object schema still yields {"type": "object", "properties": {}}."""
    assert clean_schema({}) == {"type": "object", "properties": {}}
    assert clean_schema({"anyOf": [{"$ref": "#/$defs/missing"}]}) == {
        "anyOf": [{}],
        "type": "object",
        "properties": {},
    }
