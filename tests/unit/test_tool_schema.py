"""JSON Schema -> Cedar types, and tool arguments -> typed Cedar values (proctor.policy.tool_types)."""

from __future__ import annotations

from typing import Any

import cedarpy
import orjson
import pytest

from proctor.policy.tool_types import ArgumentsMismatchError, decimal_text, from_json_schema

STRING = {"type": "String"}
LONG = {"type": "Long"}
BOOL = {"type": "Bool"}
DECIMAL = {"type": "Extension", "name": "decimal"}


def record(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attrs}


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [], **extra}


TYPES = [
    ("string", {"type": "string"}, STRING),
    ("integer", {"type": "integer"}, LONG),
    ("boolean", {"type": "boolean"}, BOOL),
    ("number", {"type": "number"}, DECIMAL),
    ("enum", {"type": "string", "enum": ["a", "b"]}, STRING),
    ("array", {"type": "array", "items": {"type": "string"}}, {"type": "Set", "element": STRING}),
    ("array-no-items", {"type": "array"}, STRING),
    ("anyOf", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, STRING),
    ("nullable-anyOf", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, LONG),
    ("nullable-list", {"type": ["number", "null"]}, DECIMAL),
    ("map", {"type": "object", "additionalProperties": {"type": "string"}}, STRING),
    ("mixed-enum", {"type": "string", "enum": ["a", 1]}, STRING),
    (
        "nested",
        obj(
            {"a": obj({"b": {"type": "array", "items": obj({"c": {"type": "number"}}, ["c"])}}, ["b"])}, ["a"]
        ),
        record(
            {
                "a": record(
                    {"b": {"type": "Set", "element": record({"c": DECIMAL})}},
                )
            }
        ),
    ),
    (
        "required-optional-nullable",
        obj(
            {"r": {"type": "string"}, "o": {"type": "string"}, "n": {"type": ["string", "null"]}}, ["r", "n"]
        ),
        record(
            {
                "n": {**STRING, "required": False},
                "o": {**STRING, "required": False},
                "r": STRING,
            }
        ),
    ),
    (
        "ref",
        {"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "$defs": {"P": {"type": "integer"}}},
        record({"p": {**LONG, "required": False}}),
    ),
    (
        "recursive-ref",
        {"$defs": {"N": obj({"next": {"$ref": "#/$defs/N"}})}, "$ref": "#/$defs/N"},
        None,  # terminates; checked below
    ),
]


@pytest.mark.parametrize(("schema", "cedar"), [t[1:] for t in TYPES], ids=[t[0] for t in TYPES])
def test_json_schema_to_cedar_type(schema: dict[str, Any], cedar: dict[str, Any] | None) -> None:
    kind = from_json_schema(schema)
    if cedar is not None:
        assert kind.cedar() == cedar
    else:
        assert "String" in orjson.dumps(kind.cedar()).decode()  # deep recursion ends as JSON text


VALUES = [
    ("string", {"type": "string"}, "x", "x"),
    ("integer", {"type": "integer"}, 3, 3),
    ("integer-float", {"type": "integer"}, 3.0, 3),
    ("number-float", {"type": "number"}, 0.7, {"__extn": {"fn": "decimal", "arg": "0.7"}}),
    ("number-int", {"type": "number"}, 3, {"__extn": {"fn": "decimal", "arg": "3.0"}}),
    ("number-4-digits", {"type": "number"}, -1.2345, {"__extn": {"fn": "decimal", "arg": "-1.2345"}}),
    ("enum-member", {"type": "string", "enum": ["a", "b"]}, "b", "b"),
    ("set", {"type": "array", "items": {"type": "integer"}}, [1, 2, 2], [1, 2, 2]),
    ("json", {"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"b": 1, "a": [2]}, '{"a":[2],"b":1}'),
    ("record-null-optional", obj({"a": {"type": ["string", "null"]}}), {"a": None}, {}),
    # Cedar reads these record keys as escapes: the object is kept as JSON text instead.
    ("record-escape-key", obj({"__expr": {"type": "string"}}), {"__expr": "x"}, '{"__expr":"x"}'),
    (
        "record-escape-key-nested",
        obj({"o": obj({"__entity": {"type": "object"}})}),
        {"o": {"__entity": {"type": "Proctor::Principal", "id": "admin"}}},
        {"o": '{"__entity":{"id":"admin","type":"Proctor::Principal"}}'},
    ),
    (
        "record-open",
        obj({"a": {"type": "string"}}, ["a"], additionalProperties=True),
        {"a": "x", "z": 1},
        {"a": "x"},
    ),
]


@pytest.mark.parametrize(("schema", "value", "cedar"), [v[1:] for v in VALUES], ids=[v[0] for v in VALUES])
def test_arguments_become_typed_values(schema: dict[str, Any], value: Any, cedar: Any) -> None:
    assert from_json_schema(schema).value(value, "t") == cedar


MISFITS = [
    ("string-gets-int", {"type": "string"}, 1, "expected a string"),
    ("bool-is-not-integer", {"type": "integer"}, True, "expected a 64-bit integer"),
    ("integer-gets-fraction", {"type": "integer"}, 1.5, "expected a 64-bit integer"),
    ("integer-too-big", {"type": "integer"}, 2**63, "expected a 64-bit integer"),
    ("number-5-digits", {"type": "number"}, 0.00001, "at most 4 fraction digits"),
    ("number-out-of-range", {"type": "number"}, 1e16, "within"),
    ("number-gets-string", {"type": "number"}, "0.7", "expected a number"),
    ("enum-non-member", {"type": "string", "enum": ["a", "b"]}, "c", "expected one of"),
    ("set-gets-string", {"type": "array", "items": {"type": "string"}}, "a", "expected an array"),
    ("set-element", {"type": "array", "items": {"type": "string"}}, ["a", 1], r"t\[1\]: expected a string"),
    ("record-missing", obj({"a": {"type": "string"}}, ["a"]), {}, "t.a: expected a required argument"),
    ("record-null-required", obj({"a": {"type": "string"}}, ["a"]), {"a": None}, "found null"),
    ("record-undeclared", obj({"path": {"type": "string"}}), {"path": "x", "pth": "y"}, "undeclared"),
    (
        "nested-misfit",
        obj({"a": obj({"b": {"type": "boolean"}})}),
        {"a": {"b": "yes"}},
        "t.a.b: expected a boolean",
    ),
]


@pytest.mark.parametrize(
    ("schema", "value", "message"), [m[1:] for m in MISFITS], ids=[m[0] for m in MISFITS]
)
def test_arguments_that_do_not_fit_are_refused(schema: dict[str, Any], value: Any, message: str) -> None:
    with pytest.raises(ArgumentsMismatchError, match=message):
        from_json_schema(schema).value(value, "t")


def test_decimal_text_is_what_cedar_parses() -> None:
    for value in (0.7, 3, -2.5, 0.0001, 922337203685477, 123456.789):
        text = decimal_text(value, "x")
        policy = f'permit(principal, action, resource) when {{ decimal("{text}") == decimal("{text}") }};'
        request = {
            "principal": 'P::"a"',
            "action": 'Action::"a"',
            "resource": 'R::"r"',
            "context": {},
        }
        assert cedarpy.is_authorized(request, policy, []).allowed, text
