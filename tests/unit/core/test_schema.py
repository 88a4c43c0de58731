"""JSON schemas for constrained decoding (app/core/schema.py): valid, enforceable by the
grammar or refused with the keyword named, and nested with their references intact."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from app.core.schema import SchemaError, check_enforceable, check_valid, nest

PERSON: dict[str, Any] = {
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"pattern": "^[0-9]{5}$"}},
            "required": ["street"],
        },
        "My Tag": {"enum": ["a", "b"]},
    },
    "type": "object",
    "properties": {
        "home": {"$ref": "#/$defs/Address"},
        "tag": {"$ref": "#/$defs/My%20Tag"},
        "friends": {"type": "array", "items": {"$ref": "#"}},
        "nick": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": {"$ref": "#/x"}},
        "kind": {"const": "person"},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["home", "kind"],
}


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"not": {"type": "string"}}, "'not' (at #)"),
        (
            {"type": "object", "properties": {"a": {"if": {}, "then": {}}}},
            "'if' (at #/properties/a)",
        ),
        ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
        ({"type": "array", "contains": {"type": "integer"}}, "'contains'"),
        ({"allOf": [{"type": "object"}, {"required": []}]}, "'allOf' with 2"),
        ({"type": "string", "pattern": "^a$", "maxLength": 3}, "'maxLength' beside 'pattern'"),
        ({"type": "number", "minimum": 0.5, "maximum": 1.5}, "fractional bound"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "'required' names 'x'"),
        ({"$ref": "#"}, "admits no value"),
        (
            {
                "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
                "$ref": "#/$defs/A",
            },
            "admits no value",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}},
            "#/properties/a admits no value",
        ),
        ({"enum": []}, "admits no value"),
    ],
)
def test_what_the_grammar_cannot_hold_is_refused_by_name(
    schema: dict[str, Any], words: str
) -> None:
    check_valid(schema, "p")  # valid JSON Schema, every one
    with pytest.raises(SchemaError) as refused:
        check_enforceable(schema, "response_format.json_schema.schema")
    assert words in str(refused.value)
    assert refused.value.param == "response_format.json_schema.schema"


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "nonsense"}, "Invalid JSON schema"),
        ({"$ref": "#/$defs/Missing"}, "points at nothing"),
        ({"$ref": "https://example.com/s.json"}, "not anchors or other documents"),
        ({"$ref": "#anchor"}, "not anchors or other documents"),
    ],
)
def test_invalid_schemas_are_refused_even_unenforced(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        check_valid(schema, "tools[0].function.parameters")


def test_what_clients_send_is_served() -> None:
    check_enforceable(PERSON, "p")
    linked = {
        "$defs": {
            "L": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {"next": {"$ref": "#/$defs/L"}},
                        "required": ["next"],
                    },
                ]
            }
        },
        "$ref": "#/$defs/L",
    }
    check_enforceable(linked, "p")  # recursion with a way out


def test_nesting_keeps_every_reference_meaning_what_it_meant() -> None:
    reference, moved = nest(PERSON, "tool0")
    assert reference == {"$ref": "#/$defs/tool0"}
    root = {"$defs": {"tool0": moved}, "type": "object", "properties": {"arguments": reference}}
    props = moved["properties"]
    assert props["home"] == {"$ref": "#/$defs/tool0/$defs/Address"}
    assert props["friends"]["items"] == {"$ref": "#/$defs/tool0"}
    assert props["tag"] == {"$ref": "#/$defs/tool0/$defs/My Tag"}
    assert props["nick"]["default"] == {"$ref": "#/x"}  # data, not a reference
    nested = jsonschema.Draft202012Validator(root)
    original = jsonschema.Draft202012Validator(PERSON)
    instances = [
        {
            "home": {"street": "s"},
            "kind": "person",
            "friends": [{"home": {"street": "t"}, "kind": "person"}],
        },
        {"home": {"street": 1}, "kind": "person"},
        {"home": {"street": "s"}, "kind": "person", "friends": [{"kind": "person"}]},
        {"home": {"street": "s", "zip": "123"}, "kind": "person"},
    ]
    for instance in instances:
        assert nested.is_valid({"arguments": instance}) == original.is_valid(instance)
