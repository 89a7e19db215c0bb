"""What a measurement says was executed, and whether a warrant covers it.

For ``exec`` the resource a policy decides on *is* the measured file the command line
names (``argv[0]`` resolved as ``execvp`` does, symlinks resolved): for a script, the
script — run directly through its ``#!`` line or given to an interpreter
(``python3 job.py``) — with the interpreter measured alongside; otherwise the
executable. Its digest is the warrant's ``executable_digest``. A resource named by the
caller that differs from it is refused before anything starts, and a warrant that
binds no executable digest cannot start an ``exec``.

:func:`check_measurement` is the one comparison the enforcer (before it starts the
command), the governor (before it records ``execution.started``) and the receipt
verifier (offline) all make:

1. the measurement is well-formed: ``files`` is a list of ``{path, digest, role}``, the
   first the ``executable`` or ``interpreter``, at most one ``script``;
2. the warrant binds an executable digest (an ``exec`` warrant that does not cannot
   start anything);
3. the warrant's resource equals the measured resource's path;
4. the warrant's executable digest equals the measured resource's digest.

A tool call (``mcp.call``, ``tool.call``) executes no file: what runs is a tool whose
definition (name, description, input schema, and any other field the definition has)
the gateway or SDK read before the call. Its measurement is ``{"tool": {"resource":
"server/tool", "definition_digest": "sha256:<hex>"}}`` (:func:`tool_measurement`, the
digest :func:`tool_definition_digest`), bound to the warrant's ``executable_digest``:

5. a tool measurement is for a tool action only (an ``exec`` cannot start on one: step
   1 of the exec rules needs measured files);
6. a tool-action warrant that binds a definition digest starts only on a tool
   measurement (measured files, or none, say nothing about the tool's definition);
7. the warrant's resource equals the measured tool's resource;
8. the warrant's definition digest, when it binds one, equals the measured one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proctor.canonical import canonicalize
from proctor.errors import IntegrityError

__all__ = [
    "TOOL_ACTIONS",
    "MeasuredResource",
    "check_measurement",
    "measured_resource",
    "tool_definition_digest",
    "tool_measurement",
]

TOOL_ACTIONS = ("mcp.call", "tool.call")
"""The actions whose resource is a tool, measured by its definition digest."""

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ROLES = ("executable", "interpreter", "script")
_MAX_FILES = 8
_MAX_RESOURCE = 512


@dataclass(frozen=True)
class MeasuredResource:
    """The file a measured command line names.

    Attributes:
        path: its absolute path, symlinks resolved.
        digest: ``sha256:<hex>`` of its content.
        interpreter: the path of the interpreter that runs it, ``""`` for none.
        tool: the resource is a tool (``path`` its ``server/tool`` or name, ``digest``
            its definition digest), not a file.
    """

    path: str
    digest: str
    interpreter: str = ""
    tool: bool = False


def tool_definition_digest(definition: Mapping[str, Any]) -> str:
    """The digest a warrant binds for a tool: ``sha256:`` + hex SHA-256 of the RFC 8785
    canonical JSON of the tool's definition.

    Args:
        definition: the tool's definition as JSON, at least ``name`` and
            ``inputSchema``; ``description`` is ``""`` when absent, and every other
            field present (``title``, ``annotations``, ``outputSchema``) is included.

    Returns:
        ``sha256:<64 hex>``.

    Raises:
        IntegrityError: no name or input schema, or not canonicalisable JSON.
    """
    if not isinstance(definition, Mapping):
        raise IntegrityError(f"tool definition: expected an object, found {type(definition).__name__}")
    name, schema = definition.get("name"), definition.get("inputSchema")
    if type(name) is not str or not name or not isinstance(schema, Mapping):
        raise IntegrityError(
            f"tool definition: expected a name and an inputSchema object, found {sorted(definition)!r:.120}"
        )
    whole = {k: v for k, v in definition.items() if v is not None}
    whole["description"] = whole.get("description") or ""
    try:
        data = canonicalize(whole)
    except (TypeError, ValueError) as e:
        raise IntegrityError(f"tool definition {name!r}: not canonical JSON: {e}") from e
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tool_measurement(resource: str, definition_digest: str) -> dict[str, Any]:
    """The measurement of one tool call (steps 5-8).

    Args:
        resource: the warrant's resource (``server/tool`` or a tool name).
        definition_digest: :func:`tool_definition_digest` of the definition called.

    Returns:
        ``{"tool": {"resource", "definition_digest"}}``.
    """
    return {"tool": {"resource": resource, "definition_digest": definition_digest}}


def _measured_tool(measurement: Mapping[str, Any]) -> MeasuredResource:
    if set(measurement) != {"tool"}:
        raise IntegrityError(
            f"measurement: expected a tool measurement alone, found the keys {sorted(measurement)!r:.120}"
        )
    tool = measurement["tool"]
    if type(tool) is not dict or set(tool) != {"resource", "definition_digest"}:
        raise IntegrityError(
            f"measurement.tool: expected {{resource, definition_digest}}, found {tool!r:.120}"
        )
    resource, digest = tool["resource"], tool["definition_digest"]
    if type(resource) is not str or not 0 < len(resource) <= _MAX_RESOURCE:
        raise IntegrityError(f"measurement.tool.resource: expected a tool name, found {resource!r:.80}")
    if type(digest) is not str or _DIGEST.fullmatch(digest) is None:
        raise IntegrityError(
            f"measurement.tool.definition_digest: expected sha256:<64 hex>, found {digest!r:.80}"
        )
    return MeasuredResource(resource, digest, tool=True)


def measured_resource(measurement: Any) -> MeasuredResource:
    """The resource a measurement (``Measurement.to_json()``) names (step 1).

    Args:
        measurement: the measurement as JSON.

    Returns:
        The script if one was measured, else the executable; for a tool measurement,
        the tool (``tool=True``).

    Raises:
        IntegrityError: the measurement is not well-formed.
    """
    if not isinstance(measurement, Mapping):
        raise IntegrityError(f"measurement: expected an object, found {type(measurement).__name__}")
    if "tool" in measurement:
        return _measured_tool(measurement)
    files = measurement.get("files")
    if type(files) is not list or not 1 <= len(files) <= _MAX_FILES:
        raise IntegrityError(
            f"measurement.files: expected 1 to {_MAX_FILES} measured files, found {files!r:.80}"
        )
    parsed: list[tuple[str, str, str]] = []
    for i, f in enumerate(files):
        if type(f) is not dict or set(f) != {"path", "digest", "role"}:
            raise IntegrityError(f"measurement.files[{i}]: expected {{path, digest, role}}, found {f!r:.80}")
        path, digest, role = f["path"], f["digest"], f["role"]
        if type(path) is not str or not path.startswith("/"):
            raise IntegrityError(
                f"measurement.files[{i}].path: expected an absolute path, found {path!r:.80}"
            )
        if type(digest) is not str or _DIGEST.fullmatch(digest) is None:
            raise IntegrityError(
                f"measurement.files[{i}].digest: expected sha256:<64 hex>, found {digest!r:.80}"
            )
        if role not in _ROLES:
            raise IntegrityError(f"measurement.files[{i}].role: expected one of {_ROLES}, found {role!r:.40}")
        parsed.append((path, digest, role))
    if parsed[0][2] == "script":
        raise IntegrityError("measurement.files[0]: expected the executable or interpreter, found the script")
    scripts = [p for p in parsed if p[2] == "script"]
    if len(scripts) > 1 or (parsed[0][2] == "interpreter" and not scripts):
        raise IntegrityError("measurement.files: expected at most one script, and one with an interpreter")
    if scripts:
        return MeasuredResource(scripts[0][0], scripts[0][1], interpreter=parsed[0][0])
    return MeasuredResource(parsed[0][0], parsed[0][1])


def check_measurement(
    measurement: Any, *, action: str, resource: str, executable_digest: str
) -> MeasuredResource:
    """Whether a warrant's ``(action, resource, executable_digest)`` covers what was measured.

    Args:
        measurement: the measurement as JSON.
        action: the warrant's action (``exec`` and the tool actions are bound to a
            measurement).
        resource: the warrant's resource.
        executable_digest: the warrant's executable digest.

    Returns:
        The measured resource.

    Raises:
        IntegrityError: a numbered step of the module docstring failed; the message
            says what was expected and what was found.
    """
    found = measured_resource(measurement)  # step 1
    if action in TOOL_ACTIONS:
        return _check_tool(found, resource=resource, definition_digest=executable_digest)
    if found.tool:  # step 5
        raise IntegrityError(f"a tool measurement cannot start an {action!r}: it executes no file")
    if action != "exec":
        return found
    if not executable_digest:  # step 2
        raise IntegrityError("the warrant binds no executable digest: it cannot start an exec")
    if resource != found.path:  # step 3
        raise IntegrityError(f"the warrant is for {resource!r}, but the command executes {found.path!r}")
    if not hmac.compare_digest(executable_digest, found.digest):  # step 4
        raise IntegrityError(
            f"the warrant binds executable digest {executable_digest}, "
            f"but {found.path!r} measures {found.digest}"
        )
    return found


def _check_tool(found: MeasuredResource, *, resource: str, definition_digest: str) -> MeasuredResource:
    """Steps 6-8 for a tool-action warrant."""
    if not found.tool:
        if definition_digest:  # step 6
            raise IntegrityError(
                f"the warrant binds tool definition digest {definition_digest}, but the measurement "
                "measures no tool definition"
            )
        return found
    if resource != found.path:  # step 7
        raise IntegrityError(f"the warrant is for tool {resource!r}, but the call measured {found.path!r}")
    if definition_digest and not hmac.compare_digest(definition_digest, found.digest):  # step 8
        raise IntegrityError(
            f"the warrant binds tool definition digest {definition_digest}, "
            f"but {found.path!r} was called with definition {found.digest}"
        )
    return found
