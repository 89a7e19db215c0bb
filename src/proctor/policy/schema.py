"""The Cedar schema proctor evaluates against, and what the engine reads from a bundle's schema.

Every request is a Cedar request in the namespace ``Proctor``. :data:`DEFAULT_SCHEMA`
is this schema, in Cedar's JSON schema format; written in Cedar's schema syntax it is::

    namespace Proctor {
      entity Principal = { role: String, zone: String, tenant?: String };
      entity Executable;             // id: the absolute path, "/usr/bin/pg_dump"
      entity Tool;                   // id: "server/tool", "filesystem/write_file"

      type Context = {
        argc: Long,                  // len(argv)
        args: { a0?: String, a1?: String, …, a31?: String },  // argv by position
        argv: Set<String>,           // every argument, as a set
        command_line: String,        // argv joined by single spaces
        zone: String,                // the zone of the environment it would run in
        time: { epoch: Long, hour: Long, minute: Long, weekday: Long, date: String },
        executable_digest: String,   // "sha256:<hex>" or ""
        parent_warrant: String,      // id of the parent warrant or ""
        counters: { rate_1m: Long, rate_1h: Long, concurrency: Long, budget_used: Long,
                    starts_1m: Long },
        arguments_json: String,      // canonical JSON of the tool arguments, "" for exec
        arguments: Set<String>,      // "name=value" for each top-level scalar tool argument
      };

      action "exec" appliesTo { principal: Principal, resource: Executable, context: Context };
      action "mcp.call", "tool.call" appliesTo { principal: Principal, resource: Tool, context: Context };
    }

:mod:`proctor.policy.context` documents how each context field is filled.

A bundle that carries tool catalogs (``*.tools.json``, ADR 0018) has this schema
composed with them (:meth:`~proctor.policy.tool_catalog.ToolCatalog.compose`):
``mcp.call``'s context becomes ``ToolCallContext``, the record above plus
``tool: { write_file?: {path: String, content: String}, … }``, the called tool's typed
arguments under its name.

A bundle may carry its own schema (``schema.json``) instead. The engine then requires,
at compile time (:func:`read_schema` and the engine's probe requests):

- JSON schema format, namespace ``Proctor``, with the entity types and the three
  actions above accepting exactly the context proctor builds (the context record may
  not be changed: proctor fills it, policies read it);
- ``Proctor::Principal`` declared as a record whose attributes are all ``String``
  and include ``role`` and ``zone``. Further attributes (``tenant``, ``team`` …) extend
  what policies may read; declare them optional (``"required": false``) unless every
  principal has them. Attributes a principal carries but the schema does not declare
  are not given to Cedar (a validated policy cannot read them anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from proctor.errors import PolicyValidationError

__all__ = [
    "NAMESPACE",
    "ACTIONS",
    "PRINCIPAL_TYPE",
    "ACTION_TYPE",
    "RESOURCE_TYPES",
    "ARG_POSITIONS",
    "MAX_ARGV",
    "COUNTERS",
    "REQUIRED_PRINCIPAL_ATTRS",
    "DEFAULT_SCHEMA",
    "SchemaInfo",
    "read_schema",
]

NAMESPACE = "Proctor"
ACTIONS = ("exec", "mcp.call", "tool.call")
"""The actions proctor governs, as Cedar action ids ``Proctor::Action::"<action>"``."""

PRINCIPAL_TYPE = "Proctor::Principal"
ACTION_TYPE = "Proctor::Action"
RESOURCE_TYPES = {
    "exec": "Proctor::Executable",
    "mcp.call": "Proctor::Tool",
    "tool.call": "Proctor::Tool",
}
"""The Cedar entity type of the resource of each action."""

ARG_POSITIONS = 32
"""``argv[0]`` … ``argv[31]`` appear in ``context.args``; later ones only in ``argv`` and ``command_line``."""

MAX_ARGV = 1024
"""A request with a longer argument vector is denied."""

COUNTERS = ("rate_1m", "rate_1h", "concurrency", "budget_used", "starts_1m")
"""The stateful counters the caller computes; a missing counter is 0. The governor's:
warrants issued to the principal in the last minute and hour, its running executions,
its warrants since 00:00 UTC, and its execution starts in the last 60 s (see
:mod:`proctor.policy.context`). A bundle schema must declare all of them."""

REQUIRED_PRINCIPAL_ATTRS = ("role", "zone")


def _string(required: bool = True) -> dict[str, Any]:
    return {"type": "String"} if required else {"type": "String", "required": False}


def _long() -> dict[str, Any]:
    return {"type": "Long"}


def _record(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attributes}


def _context_type() -> dict[str, Any]:
    return _record(
        {
            "argc": _long(),
            "args": _record({f"a{i}": _string(required=False) for i in range(ARG_POSITIONS)}),
            "argv": {"type": "Set", "element": {"type": "String"}},
            "command_line": _string(),
            "zone": _string(),
            "time": _record(
                {
                    "epoch": _long(),
                    "hour": _long(),
                    "minute": _long(),
                    "weekday": _long(),
                    "date": _string(),
                }
            ),
            "executable_digest": _string(),
            "parent_warrant": _string(),
            "counters": _record({name: _long() for name in COUNTERS}),
            "arguments_json": _string(),
            "arguments": {"type": "Set", "element": {"type": "String"}},
        }
    )


def _default_schema() -> dict[str, Any]:
    def applies(resource: str) -> dict[str, Any]:
        return {
            "appliesTo": {
                "principalTypes": ["Principal"],
                "resourceTypes": [resource],
                "context": {"type": "Context"},
            }
        }

    return {
        NAMESPACE: {
            "commonTypes": {"Context": _context_type()},
            "entityTypes": {
                "Principal": {
                    "shape": _record({"role": _string(), "zone": _string(), "tenant": _string(False)})
                },
                "Executable": {},
                "Tool": {},
            },
            "actions": {
                "exec": applies("Executable"),
                "mcp.call": applies("Tool"),
                "tool.call": applies("Tool"),
            },
        }
    }


DEFAULT_SCHEMA: str = json.dumps(_default_schema(), indent=2) + "\n"
"""The default Cedar JSON schema (namespace ``Proctor``); see the module docstring."""


@dataclass(frozen=True)
class SchemaInfo:
    """What the engine needs to know about a bundle's schema beyond what Cedar checks.

    Attributes:
        principal_attrs: the declared attributes of ``Proctor::Principal``.
        required_attrs: those of them a principal must have.
        action_groups: whether any action declares ``memberOf`` (then ``action in …``
            scopes are not used to narrow which policies a request is evaluated against).
    """

    principal_attrs: frozenset[str]
    required_attrs: frozenset[str]
    action_groups: bool


def _is_string_type(spec: Any) -> bool:
    if type(spec) is not dict:
        return False
    kind = spec.get("type")
    return kind == "String" or (kind == "EntityOrCommon" and spec.get("name") == "String")


def read_schema(text: str) -> SchemaInfo:
    """Read the parts of a Cedar JSON schema the engine relies on.

    Cedar itself parses and checks the schema; this only checks what proctor adds:
    the ``Proctor`` namespace, and a ``Principal`` record of string attributes that
    include ``role`` and ``zone``.

    Args:
        text: the schema, Cedar JSON schema format.

    Returns:
        The declared principal attributes and whether actions form groups.

    Raises:
        PolicyValidationError: not JSON, or not the shape described above.
    """

    def fail(found: str) -> PolicyValidationError:
        return PolicyValidationError(
            "the bundle schema is not usable by proctor", diagnostics=(f"schema: {found}",)
        )

    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise fail(f"expected Cedar JSON schema text, found invalid JSON ({e})") from e
    namespace = doc.get(NAMESPACE) if type(doc) is dict else None
    if type(namespace) is not dict:
        raise fail(
            f"expected the namespace {NAMESPACE!r}, found {sorted(doc) if type(doc) is dict else doc!r}"
        )
    entity_types = namespace.get("entityTypes")
    principal = entity_types.get("Principal") if type(entity_types) is dict else None
    if type(principal) is not dict:
        raise fail("expected the entity type Principal, found none")
    shape = principal.get("shape")
    common = namespace.get("commonTypes")
    if type(shape) is dict and shape.get("type") != "Record" and type(common) is dict:
        name = shape.get("name") if shape.get("type") == "EntityOrCommon" else shape.get("type")
        shape = common.get(name) if type(name) is str else None
    if shape is None:
        shape = {"type": "Record", "attributes": {}}
    if type(shape) is not dict or shape.get("type") != "Record" or type(shape.get("attributes")) is not dict:
        raise fail(f"expected Principal to have a record shape, found {shape!r}")
    attrs: dict[str, Any] = shape["attributes"]
    for name, spec in sorted(attrs.items()):
        if not _is_string_type(spec):
            raise fail(f"expected Principal attribute {name!r} to be a String, found {spec!r}")
    missing = [name for name in REQUIRED_PRINCIPAL_ATTRS if name not in attrs]
    if missing:
        raise fail(f"expected Principal to declare the attributes role and zone, found no {missing}")
    required = frozenset(n for n, spec in attrs.items() if spec.get("required", True) is not False)
    # Action groups in any namespace make `action in …` depend on the hierarchy.
    groups = any(
        type(spec) is dict and bool(spec.get("memberOf"))
        for ns in doc.values()
        if type(ns) is dict and type(ns.get("actions")) is dict
        for spec in ns["actions"].values()
    )
    return SchemaInfo(frozenset(attrs), required, groups)
