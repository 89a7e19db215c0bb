"""Tool input schemas as Cedar types, and tool arguments as typed Cedar values.

A tool's ``inputSchema`` (JSON Schema, as an MCP server lists it) becomes an
:class:`ArgType` tree (:func:`from_json_schema`), which gives both the Cedar JSON
schema type a policy is validated against (:meth:`ArgType.cedar`) and the check and
conversion of one call's arguments into a Cedar context value (:meth:`ArgType.value`).
The mapping (ADR 0018):

============================  =============================================================
JSON Schema                   Cedar
============================  =============================================================
``string``                    ``String`` (``enum``/``const``: the value must be a member)
``integer``                   ``Long`` (a JSON integer within 64 bits; ``3.0`` is 3)
``number``                    ``decimal`` when the value has at most 4 fraction digits
                              and fits Cedar's range, else the call is denied
``boolean``                   ``Bool``
``array`` with ``items``      ``Set<item>`` (order and repeats are lost, as in any Set)
``object`` with properties    a record: ``required`` attributes required, the others
                              optional; a key the schema does not declare denies the
                              call unless ``additionalProperties`` allows it (then it is
                              left out of the record, present in ``arguments_json``)
``T`` or ``null``             ``T``, optional; ``null`` is read as absent
anything else                 ``String`` holding the value's canonical JSON (``anyOf``,
                              ``oneOf``, maps, mixed enums, tuples, no ``type``, and
                              objects with a property named ``__…``: Cedar reads the
                              keys ``__entity``, ``__extn`` and ``__expr`` of a context
                              record as escapes, not as names)
============================  =============================================================

Local ``$ref`` (``#/$defs/…``, ``#/definitions/…``) are followed up to
:data:`MAX_DEPTH` levels; deeper (recursive) schemas become canonical-JSON strings.
This module is pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from proctor.canonical import canonicalize
from proctor.errors import ArgumentsMismatchError, CanonicalizationError  # re-exported here

__all__ = [
    "MAX_DEPTH",
    "DECIMAL_MAX",
    "ArgumentsMismatchError",
    "ArgType",
    "from_json_schema",
    "nullable",
    "decimal_text",
]

MAX_DEPTH = 8
"""How deep records, sets and ``$ref`` nest before a value is kept as JSON text."""

DECIMAL_MAX = Decimal("922337203685477.5807")
"""Cedar's ``decimal`` is a 64-bit integer of ten-thousandths: this is its largest value."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_SCALARS = {"string": "String", "integer": "Long", "number": "decimal", "boolean": "Bool"}


def decimal_text(value: int | float, where: str) -> str:
    """A JSON number as Cedar ``decimal`` text (``"0.7"``, ``"3.0"``).

    Args:
        value: the number.
        where: the argument's path, for the message.

    Returns:
        The text Cedar's ``decimal()`` parses.

    Raises:
        ArgumentsMismatchError: more than 4 fraction digits, or out of Cedar's range.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentsMismatchError(f"{where}: expected a finite number, found {value!r}")
    try:
        # repr is the shortest text that reads back as the same float.
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as e:  # pragma: no cover - repr of a finite float always parses
        raise ArgumentsMismatchError(f"{where}: expected a number, found {value!r}") from e
    exponent = exact.as_tuple().exponent
    if not isinstance(exponent, int):  # pragma: no cover - finite by the check above
        raise ArgumentsMismatchError(f"{where}: expected a finite number, found {value!r}")
    if exponent < -4:
        raise ArgumentsMismatchError(
            f"{where}: expected a number with at most 4 fraction digits (Cedar decimal), found {value!r}; "
            "denied rather than rounded"
        )
    if abs(exact) > DECIMAL_MAX:
        raise ArgumentsMismatchError(
            f"{where}: expected a number within ±{DECIMAL_MAX} (Cedar decimal), found {value!r}"
        )
    text = format(exact.quantize(Decimal(1)) if exponent > 0 else exact, "f")
    return text if "." in text else text + ".0"


@dataclass(frozen=True)
class ArgType:
    """One node of a tool's argument type.

    Attributes:
        kind: ``"String"``, ``"Long"``, ``"decimal"``, ``"Bool"``, ``"Set"``,
            ``"Record"`` or ``"json"`` (any value, as its canonical JSON in a ``String``).
        members: for scalars with ``enum``/``const``, the allowed values (else ``None``).
        element: for ``Set``, the element type.
        fields: for ``Record``, name to ``(type, required)``.
        open: for ``Record``, whether undeclared keys are allowed (and dropped).
    """

    kind: str
    members: tuple[Any, ...] | None = None
    element: ArgType | None = None
    fields: tuple[tuple[str, ArgType, bool], ...] = ()
    open: bool = False

    def cedar(self) -> dict[str, Any]:
        """The Cedar JSON schema type of this node.

        Returns:
            E.g. ``{"type": "String"}``, ``{"type": "Extension", "name": "decimal"}``,
            ``{"type": "Set", "element": …}``, ``{"type": "Record", "attributes": …}``.
        """
        if self.kind == "json":
            return {"type": "String"}
        if self.kind == "decimal":
            return {"type": "Extension", "name": "decimal"}
        if self.kind == "Set" and self.element is not None:
            return {"type": "Set", "element": self.element.cedar()}
        if self.kind == "Record":
            attributes: dict[str, Any] = {}
            for name, kind, required in self.fields:
                spec = kind.cedar()
                if not required:
                    spec["required"] = False
                attributes[name] = spec
            return {"type": "Record", "attributes": attributes}
        return {"type": self.kind}

    def value(self, value: Any, where: str) -> Any:
        """Check one argument value against this type and give its Cedar JSON value.

        Args:
            value: the argument (parsed JSON).
            where: its path (``"write_file.path"``), for the message.

        Returns:
            The value as Cedar's JSON entity/context format reads it (a decimal as
            ``{"__extn": {"fn": "decimal", "arg": "0.7"}}``).

        Raises:
            ArgumentsMismatchError: it does not fit; the message says what was expected.
        """
        kind = self.kind
        if kind == "json":
            try:
                return canonicalize(value).decode()
            except CanonicalizationError as e:
                raise ArgumentsMismatchError(f"{where}: expected canonical JSON, found {e}") from e
        if kind == "String":
            if type(value) is not str:
                raise ArgumentsMismatchError(f"{where}: expected a string, found {_found(value)}")
            out: Any = value
        elif kind == "Bool":
            if type(value) is not bool:
                raise ArgumentsMismatchError(f"{where}: expected a boolean, found {_found(value)}")
            out = value
        elif kind == "Long":
            if type(value) is float and value.is_integer():
                value = int(value)
            if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
                raise ArgumentsMismatchError(f"{where}: expected a 64-bit integer, found {_found(value)}")
            out = value
        elif kind == "decimal":
            if type(value) not in (int, float):
                raise ArgumentsMismatchError(f"{where}: expected a number, found {_found(value)}")
            out = {"__extn": {"fn": "decimal", "arg": decimal_text(value, where)}}
        elif kind == "Set" and self.element is not None:
            if type(value) is not list:
                raise ArgumentsMismatchError(f"{where}: expected an array, found {_found(value)}")
            return [self.element.value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            return self._record(value, where)
        if self.members is not None and not any(type(m) is type(value) and m == value for m in self.members):
            raise ArgumentsMismatchError(f"{where}: expected one of {list(self.members)!r}, found {value!r}")
        return out

    def _record(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ArgumentsMismatchError(f"{where}: expected an object, found {_found(value)}")
        declared = {name for name, _, _ in self.fields}
        extra = sorted(k for k in value if k not in declared)
        if extra and not self.open:
            raise ArgumentsMismatchError(
                f"{where}: the input schema declares {sorted(declared)}, found the undeclared "
                f"argument(s) {extra} (additionalProperties is not allowed)"
            )
        out: dict[str, Any] = {}
        for name, kind, required in self.fields:
            item = value.get(name)
            if item is None:
                # A JSON null for an optional (nullable) field reads as absent.
                if required:
                    found = "null" if name in value else "none"
                    raise ArgumentsMismatchError(
                        f"{where}.{name}: expected a required argument, found {found}"
                    )
                continue
            out[name] = kind.value(item, f"{where}.{name}")
        return out


def _found(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array"}
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    return f"{names.get(type(value), type(value).__name__)} {value!r}"[:200]


_JSON = ArgType("json")


def from_json_schema(schema: Any, *, root: Mapping[str, Any] | None = None, depth: int = 0) -> ArgType:
    """The argument type of a JSON Schema (the table in the module docstring).

    Args:
        schema: a JSON Schema node (the tool's ``inputSchema`` at the top).
        root: the document ``$ref`` resolves against (the top node when ``None``).
        depth: nesting so far (callers leave it 0).

    Returns:
        The type; never raises for an unusual schema (it becomes ``json``).
    """
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return _JSON
    if root is None:
        root = schema
    ref = schema.get("$ref")
    if ref is not None:
        target = _resolve(ref, root)
        return _JSON if target is None else from_json_schema(target, root=root, depth=depth + 1)
    kind = schema.get("type")
    if type(kind) is list:
        named = [k for k in kind if k != "null"]
        kind = named[0] if len(named) == 1 else None
    elif kind is None:
        options = schema.get("anyOf") or schema.get("oneOf")
        if type(options) is list:
            named = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if len(named) == 1 and len(options) == 2:
                return from_json_schema(named[0], root=root, depth=depth + 1)
        return _JSON
    if any(k in schema for k in ("anyOf", "oneOf", "allOf", "not", "if")):
        return _JSON
    if kind in _SCALARS:
        return _scalar(schema, _SCALARS[kind])
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return _JSON
        return ArgType("Set", element=from_json_schema(items, root=root, depth=depth + 1))
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping) or any(type(k) is not str for k in properties):
            return _JSON
        if any(k.startswith("__") for k in properties):
            return _JSON  # Cedar would read such a key as an escape (__entity, __extn, __expr)
        additional = schema.get("additionalProperties", False)
        if not properties and additional not in (False, None):
            return _JSON  # a map: keys are data, not names a policy can know
        required = schema.get("required", [])
        required = set(required) if type(required) is list else set()
        fields = tuple(
            (
                name,
                from_json_schema(spec, root=root, depth=depth + 1),
                name in required and not nullable(spec),
            )
            for name, spec in sorted(properties.items())
        )
        return ArgType("Record", fields=fields, open=additional not in (False, None))
    return _JSON


def nullable(schema: Any) -> bool:
    """Whether a JSON Schema node admits ``null`` (``type: [T, "null"]`` or ``anyOf`` with null).

    Args:
        schema: the node.

    Returns:
        ``True`` if a ``null`` value is allowed (such a field is optional in Cedar).
    """
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    if type(kind) is list:
        return "null" in kind
    options = schema.get("anyOf") or schema.get("oneOf")
    return type(options) is list and any(isinstance(o, Mapping) and o.get("type") == "null" for o in options)


def _scalar(schema: Mapping[str, Any], kind: str) -> ArgType:
    members: tuple[Any, ...] | None = None
    if "const" in schema:
        members = (schema["const"],)
    elif type(schema.get("enum")) is list:
        members = tuple(m for m in schema["enum"] if m is not None)
    if members is not None:
        probe = ArgType(kind)
        try:
            for m in members:
                probe.value(m, "enum")
        except ArgumentsMismatchError:
            return _JSON  # members of another type than declared: keep the JSON
    return ArgType(kind, members=members)


def _resolve(ref: Any, root: Mapping[str, Any]) -> Any:
    if type(ref) is not str or not ref.startswith("#/"):
        return None
    node: Any = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
