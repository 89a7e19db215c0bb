"""Tool catalogs in a policy bundle: typed ``context.tool``, known tools, bound definitions.

A bundle may carry tool catalog fragments (``*.tools.json``, written by
``proctor gateway mcp schema`` from an MCP server's live ``tools/list``; ADR 0018).
A fragment is::

    {
      "proctor": "tool-catalog/1",
      "server": "filesystem",
      "tools": [{"name": "write_file", "definition_digest": "sha256:…",
                 "inputSchema": {…}}, …],
      "cedar": {"write_file": {"type": "Record", "attributes": {…}}, …}   // optional
    }

``cedar`` is the generated Cedar type of each tool's arguments, for people to read;
when present it must equal what :mod:`proctor.policy.tool_types` derives from the
input schemas (a hand-edited type is refused, regenerate the fragment instead).

When a bundle carries catalogs, :meth:`ToolCatalog.compose` extends the bundle's
schema: the context of ``mcp.call`` becomes the common type ``ToolCallContext``,
proctor's context plus ``tool``, a record with one optional attribute per catalogued
tool name (``context.tool.write_file.path``); every policy is validated against it,
so a misspelled tool or argument name is a validation error. And:

- a policy naming a literal ``Proctor::Tool`` that no catalog declares is refused
  (:meth:`ToolCatalog.unknown_tools`);
- so is one testing ``context.tool has NAME`` (or ``has`` deeper in ``context.tool``)
  for an attribute the catalog does not declare (:meth:`ToolCatalog.unknown_keys`):
  Cedar's validator types such a test as ``false`` and does not check what it guards,
  so ``forbid … when { context.tool has wirte_file && … }`` would validate and never
  fire — a misspelling that fails open;
- an ``mcp.call`` is denied unless its server has a catalog, the tool is in it, the
  call's ``executable_digest`` is the catalogued definition digest, and the arguments
  fit the input schema (:meth:`ToolCatalog.tool_context`); then ``context.tool`` holds
  the called tool's typed arguments under its name.

Pure: no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from proctor.errors import PolicyValidationError
from proctor.policy.request import PolicyRequest
from proctor.policy.schema import NAMESPACE
from proctor.policy.tool_types import ArgType, ArgumentsMismatchError, from_json_schema

__all__ = [
    "CATALOG_FORMAT",
    "TOOLS_FILE",
    "CONTEXT_TYPE",
    "TOOL_ENTITY",
    "CatalogTool",
    "ToolCatalog",
]

CATALOG_FORMAT = "tool-catalog/1"
"""The ``proctor`` field of a fragment."""

TOOLS_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.tools\.json")
"""What a catalog fragment's file name in a bundle looks like."""

CONTEXT_TYPE = "ToolCallContext"
"""The common type the composed schema gives ``mcp.call``'s context."""

TOOL_ENTITY = f"{NAMESPACE}::Tool"
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class CatalogTool:
    """One catalogued tool.

    Attributes:
        name: the tool's name (``write_file``).
        definition_digest: ``sha256:<hex>`` of its definition (bound into warrants).
        arguments: its argument type, from its ``inputSchema``.
    """

    name: str
    definition_digest: str
    arguments: ArgType


def _fail(message: str, found: str) -> PolicyValidationError:
    return PolicyValidationError(message, diagnostics=(found,))


def _parse_fragment(file: str, text: str) -> tuple[str, dict[str, CatalogTool]]:
    def bad(found: str) -> PolicyValidationError:
        return _fail("a tool catalog fragment is malformed", f"{file}: {found}")

    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise bad(f"expected JSON, found invalid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("proctor") != CATALOG_FORMAT:
        found = doc.get("proctor") if isinstance(doc, dict) else type(doc).__name__
        raise bad(f"expected an object with proctor {CATALOG_FORMAT!r}, found {found!r}")
    unknown = sorted(set(doc) - {"proctor", "server", "tools", "cedar"})
    if unknown:
        raise bad(f"expected the fields proctor, server, tools, cedar, found also {unknown}")
    server = doc.get("server")
    if type(server) is not str or not _SERVER.fullmatch(server):
        raise bad(f"expected a server name like 'filesystem' (no '/'), found {server!r}")
    entries = doc.get("tools")
    if type(entries) is not list:
        raise bad(f"expected tools to be a list, found {type(entries).__name__}")
    tools: dict[str, CatalogTool] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"name", "definition_digest", "inputSchema"}:
            raise bad(f"tools[{i}]: expected name, definition_digest and inputSchema, found {entry!r}"[:300])
        name, digest, schema = entry["name"], entry["definition_digest"], entry["inputSchema"]
        if type(name) is not str or not name or name in tools:
            raise bad(f"tools[{i}]: expected a new non-empty tool name, found {name!r}")
        if name.startswith("__"):
            # context.tool has one attribute per tool name, and Cedar reads a record key
            # __entity, __extn or __expr as an escape, not as a name.
            raise bad(f"tools[{i}]: expected a tool name that does not start with '__', found {name!r}")
        if type(digest) is not str or not _DIGEST.fullmatch(digest):
            raise bad(f"tools[{i}] ({name}): expected definition_digest sha256:<64 hex>, found {digest!r}")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise bad(f"tools[{i}] ({name}): expected an object inputSchema, found {schema!r}"[:300])
        tools[name] = CatalogTool(name, digest, from_json_schema(schema))
    cedar = doc.get("cedar")
    if cedar is not None:
        derived = {name: tool.arguments.cedar() for name, tool in tools.items()}
        if cedar != derived:
            raise bad("its cedar types differ from those its input schemas give; regenerate the fragment")
    return server, tools


@dataclass(frozen=True)
class ToolCatalog:
    """The tool catalogs of one bundle.

    Attributes:
        servers: server name to tool name to :class:`CatalogTool`.
    """

    servers: Mapping[str, Mapping[str, CatalogTool]]

    @classmethod
    def from_fragments(cls, fragments: Mapping[str, str]) -> ToolCatalog:
        """Parse a bundle's catalog fragments.

        Args:
            fragments: file name to fragment text.

        Returns:
            The catalog.

        Raises:
            PolicyValidationError: a fragment is malformed, two fragments describe the
                same server, or one tool name has different argument types on two servers.
        """
        servers: dict[str, Mapping[str, CatalogTool]] = {}
        seen: dict[str, tuple[str, ArgType]] = {}
        for file, text in sorted(fragments.items()):
            server, tools = _parse_fragment(file, text)
            if server in servers:
                raise _fail("tool catalogs overlap", f"{file}: server {server!r} is described twice")
            for name, tool in tools.items():
                other = seen.get(name)
                if other is not None and other[1] != tool.arguments:
                    raise _fail(
                        "tool catalogs conflict",
                        f"{file}: tool {name!r} of {server!r} has other argument types than on "
                        f"{other[0]!r}; context.tool.{name} cannot have both",
                    )
                seen[name] = (server, tool.arguments)
            servers[server] = MappingProxyType(tools)
        return cls(MappingProxyType(servers))

    def context_type(self) -> dict[str, Any]:
        """The Cedar type of ``context.tool``: one optional record per catalogued tool name."""
        attributes: dict[str, Any] = {}
        for tools in self.servers.values():
            for name, tool in tools.items():
                attributes[name] = {**tool.arguments.cedar(), "required": False}
        return {"type": "Record", "attributes": dict(sorted(attributes.items()))}

    def compose(self, schema_text: str) -> str:
        """The bundle's schema with ``mcp.call``'s context extended by ``tool``.

        Args:
            schema_text: the bundle's Cedar JSON schema.

        Returns:
            The composed schema, JSON text.

        Raises:
            PolicyValidationError: the schema does not declare ``mcp.call``'s context as
                a record or a common record type, or already has ``tool`` or
                ``ToolCallContext``.
        """

        def bad(found: str) -> PolicyValidationError:
            return _fail("the bundle schema cannot take the tool catalog", f"schema: {found}")

        try:
            doc = orjson.loads(schema_text)
            namespace = doc[NAMESPACE]
            applies = namespace["actions"]["mcp.call"]["appliesTo"]
            context = applies["context"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise bad(f"expected the action mcp.call with a context, found none ({e!r})") from e
        common = namespace.setdefault("commonTypes", {})
        if not isinstance(common, dict) or CONTEXT_TYPE in common:
            raise bad(f"expected no common type {CONTEXT_TYPE!r}, found one")
        record = context
        if isinstance(context, dict) and context.get("type") != "Record":
            name = context.get("name") if context.get("type") == "EntityOrCommon" else context.get("type")
            record = common.get(name) if type(name) is str else None
        if not isinstance(record, dict) or record.get("type") != "Record":
            raise bad(f"expected mcp.call's context to be a record, found {context!r}")
        record = copy.deepcopy(record)
        attributes = record.setdefault("attributes", {})
        if "tool" in attributes:
            raise bad("expected mcp.call's context to have no attribute 'tool' (the catalog adds it)")
        attributes["tool"] = self.context_type()
        common[CONTEXT_TYPE] = record
        applies["context"] = {"type": CONTEXT_TYPE}
        return orjson.dumps(doc).decode()

    def _known(self, uid: str) -> bool:
        server, _, tool = uid.partition("/")
        return tool in self.servers.get(server, {})

    def unknown_tools(self, policies: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The literal ``Proctor::Tool`` entities that no catalog declares.

        Args:
            policies: Cedar's JSON form of the policies (id → policy, ``staticPolicies``).

        Returns:
            ``(policy id, tool id)`` for each unknown tool named, sorted.
        """
        found: set[tuple[str, str]] = set()

        def walk(policy_id: str, node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == TOOL_ENTITY and type(node.get("id")) is str:
                    if not self._known(node["id"]):
                        found.add((policy_id, node["id"]))
                    return
                for value in node.values():
                    walk(policy_id, value)
            elif isinstance(node, list):
                for value in node:
                    walk(policy_id, value)

        for policy_id, policy in policies.items():
            walk(policy_id, policy)
        return sorted(found)

    def unknown_keys(self, policies: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The ``has`` tests under ``context.tool`` for attributes the catalog does not declare.

        Args:
            policies: Cedar's JSON form of the policies (id → policy).

        Returns:
            ``(policy id, "context.tool.…")`` for each, sorted.
        """
        tool_type = self.context_type()
        found: set[tuple[str, str]] = set()

        def context_path(node: Any) -> list[str] | None:
            attrs: list[str] = []
            while isinstance(node, dict) and isinstance(node.get("."), dict):
                attrs.append(str(node["."].get("attr")))
                node = node["."].get("left")
            return attrs[::-1] if node == {"Var": "context"} else None

        def declared(path: list[str]) -> set[str] | None:
            spec: Any = tool_type
            for name in path:
                attributes = spec.get("attributes") if spec.get("type") == "Record" else None
                spec = attributes.get(name) if isinstance(attributes, dict) else None
                if not isinstance(spec, dict):
                    return None
            return set(spec.get("attributes", {})) if spec.get("type") == "Record" else None

        def walk(policy_id: str, node: Any) -> None:
            if isinstance(node, dict):
                test = node.get("has")
                if isinstance(test, dict):
                    path = context_path(test.get("left"))
                    if path is not None and path[:1] == ["tool"]:
                        names = declared(path[1:])
                        if names is not None and test.get("attr") not in names:
                            found.add((policy_id, ".".join(["context", *path, str(test.get("attr"))])))
                for value in node.values():
                    walk(policy_id, value)
            elif isinstance(node, list):
                for value in node:
                    walk(policy_id, value)

        for policy_id, policy in policies.items():
            walk(policy_id, policy)
        return sorted(found)

    def tool_context(self, request: PolicyRequest) -> dict[str, Any]:
        """``context.tool`` for an ``mcp.call``: the called tool's typed arguments under its name.

        Args:
            request: a well-formed ``mcp.call`` request.

        Returns:
            ``{TOOL: {…typed arguments…}}``.

        Raises:
            ArgumentsMismatchError: the server or tool is not catalogued, the definition
                digest differs, or the arguments do not fit the input schema (the call is
                denied, with this message as the reason).
        """
        server, _, name = request.resource.partition("/")
        tools = self.servers.get(server)
        if tools is None:
            raise ArgumentsMismatchError(
                f"server {server!r} has no tool catalog in the policy bundle (catalogued: "
                f"{', '.join(sorted(self.servers))}); with catalogs, calls to other servers are denied"
            )
        tool = tools.get(name)
        if tool is None:
            raise ArgumentsMismatchError(
                f"tool {name!r} is not in the catalog of server {server!r} the policy bundle carries"
            )
        if request.executable_digest != tool.definition_digest:
            found = request.executable_digest or "none"
            raise ArgumentsMismatchError(
                f"the definition of {request.resource} is not the catalogued one: expected digest "
                f"{tool.definition_digest}, found {found}; regenerate the catalog and review the policy"
            )
        arguments = request.arguments if request.arguments is not None else {}
        return {name: tool.arguments.value(arguments, name)}
