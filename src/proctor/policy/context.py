"""How a :class:`~proctor.policy.request.PolicyRequest` becomes a Cedar request.

Principal, action and resource:

- principal ``Proctor::Principal::"<request.principal>"``, an entity whose attributes
  are ``request.principal_attrs`` (only those the schema declares; all strings), so
  ``proctor principal add alice --attr role=dev`` makes ``principal.role == "dev"``;
- action ``Proctor::Action::"exec"``, ``"mcp.call"`` or ``"tool.call"``;
- resource ``Proctor::Executable::"<absolute path>"`` for ``exec``, else
  ``Proctor::Tool::"<server/tool>"``. Resources are not entities in the store: they
  have no attributes and no parents.

The context, with every field always present (the schema is in
:mod:`proctor.policy.schema`; the engine hands Cedar only the fields the policies that
can apply read, :mod:`proctor.policy.slices`). For ``argv = ("pg_dump", "--schema-only", "db1")``,
zone ``"prod"`` and ``now = 1767225600`` (2026-01-01T00:00:00Z, a Thursday)::

    {
      "argc": 3,
      "args": {"a0": "pg_dump", "a1": "--schema-only", "a2": "db1"},
      "argv": ["pg_dump", "--schema-only", "db1"],      // a Cedar Set<String>
      "command_line": "pg_dump --schema-only db1",
      "zone": "prod",
      "time": {"epoch": 1767225600, "hour": 0, "minute": 0, "weekday": 3, "date": "2026-01-01"},
      "executable_digest": "sha256:9f2c…",
      "parent_warrant": "",
      "counters": {"rate_1m": 3, "rate_1h": 40, "concurrency": 1, "budget_used": 0, "starts_1m": 1},
      "arguments_json": "",
      "arguments": []
    }

- ``args`` has ``a0`` … ``a31`` for the positions present, and no key for the others;
  Cedar's validator therefore requires ``context.args has a1 && context.args.a1 ==
  "db1"``. Positions past 31 are only in ``argv`` and ``command_line``.
- ``command_line`` is argv joined by single spaces, for ``like "pg_dump *"`` (it
  cannot tell ``["a b"]`` from ``["a", "b"]``; match ``args`` when that matters).
- ``time`` is UTC, from ``now``: ``weekday`` 0 is Monday, ``date`` is ``YYYY-MM-DD``.
- ``counters`` are the caller's; the governor gives ``rate_1m`` and ``rate_1h``
  (warrants issued to the principal in the last minute and hour), ``budget_used``
  (warrants since 00:00 UTC), ``concurrency`` (its executions running) and
  ``starts_1m`` (its execution starts in the last 60 s). A counter the caller does not
  give is 0.
- For ``mcp.call`` and ``tool.call``: ``arguments_json`` is the RFC 8785 canonical JSON
  of the arguments (``{"mode":"r","path":"/etc/hosts"}``: keys sorted, no spaces), for
  ``like "*\\"path\\":\\"/etc/*"``; ``arguments`` holds ``"name=value"`` for each
  top-level string, number or boolean argument (``"path=/etc/hosts"``, ``"n=3"``,
  ``"temperature=0.7"``, ``"dry_run=true"``), for ``context.arguments.contains("mode=r")``.
  A number is written as in ``arguments_json`` (RFC 8785 §3.2.2.3, via
  :func:`~proctor.canonical.number_text`): ``1.0`` gives ``"n=1"`` exactly as ``1`` does,
  ``1e21`` gives ``"x=1e+21"``, ``1e-7`` ``"x=1e-7"``. Names containing
  ``=`` are left out of ``arguments`` (they would be ambiguous), as are nested values
  and nulls; all are in ``arguments_json``. For ``exec`` both are empty.

A request that breaks these rules is denied before Cedar sees it
(:func:`request_problem` says why): an unknown action; an ``exec`` resource that is
not an absolute path or an empty ``argv``; ``argv`` with more than
:data:`~proctor.policy.schema.MAX_ARGV` entries or a NUL byte; ``argv`` on a tool call
or ``arguments`` on ``exec``; principal attributes that are not strings or lack
``role`` or ``zone``; unknown or negative counters; an executable digest that is not
``sha256:`` and 64 hex digits; ``now`` that is not integer seconds in years 1970 to 9999.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import Any

import orjson

from proctor.canonical import MAX_SAFE_INTEGER, canonicalize, number_text
from proctor.policy.request import PolicyRequest
from proctor.policy.schema import (
    ACTIONS,
    ARG_POSITIONS,
    COUNTERS,
    MAX_ARGV,
    PRINCIPAL_TYPE,
    REQUIRED_PRINCIPAL_ATTRS,
)

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_NOW",
    "request_problem",
    "time_record",
    "build_context",
    "principal_entity_json",
]

MAX_NOW = 253402300799
"""9999-12-31T23:59:59Z, the last second ``now`` may be."""

CONTEXT_FIELDS = (
    "argc",
    "args",
    "argv",
    "command_line",
    "zone",
    "time",
    "executable_digest",
    "parent_warrant",
    "counters",
    "arguments_json",
    "arguments",
)
"""The top-level fields of every request's context, in the order they are built."""

_ARG_KEYS = tuple(f"a{i}" for i in range(ARG_POSITIONS))
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COUNTER_SET = frozenset(COUNTERS)
_ZERO_COUNTERS = dict.fromkeys(COUNTERS, 0)


def _is_mapping(value: object) -> bool:
    # A request's own mappings are read-only copies (PolicyRequest): those are told at
    # once, before the abstract class's slower check.
    return type(value) is MappingProxyType or type(value) is dict or isinstance(value, Mapping)


def request_problem(request: PolicyRequest, now: int) -> str | None:
    """Say why a request cannot be evaluated, or ``None`` if it can.

    Args:
        request: the request.
        now: the decision time, unix seconds.

    Returns:
        ``None``, or one sentence naming what was expected and what was found.
    """
    if type(now) is not int or not 0 <= now <= MAX_NOW:
        return f"now must be integer unix seconds between 0 and {MAX_NOW}, found {now!r}"
    principal, action, resource = request.principal, request.action, request.resource
    if type(principal) is not str or not principal:
        return f"the principal must be a non-empty string, found {principal!r}"
    if type(action) is not str or action not in ACTIONS:  # exact: a str subclass may compare as one
        return f"the action must be one of {', '.join(ACTIONS)}, found {action!r}"
    if type(resource) is not str or not resource:
        return f"the resource must be a non-empty string, found {resource!r}"
    attrs = request.principal_attrs
    if not _is_mapping(attrs) or any(type(k) is not str or type(v) is not str for k, v in attrs.items()):
        return f"principal attributes must map strings to strings, found {attrs!r}"
    for name in REQUIRED_PRINCIPAL_ATTRS:
        if name not in attrs:
            return f'principal attributes must include {name!r} (use "" when unset)'
    argv = request.argv
    if type(argv) is not tuple or any(type(a) is not str for a in argv):
        return f"argv must be a tuple of strings, found {argv!r}"
    if len(argv) > MAX_ARGV:
        return f"argv has {len(argv)} entries, more than the limit of {MAX_ARGV}"
    if any("\x00" in a for a in argv):
        return "argv contains a NUL character, which no executable can receive"
    if action == "exec":
        if not resource.startswith("/"):
            return f"an exec resource must be an absolute path, found {resource!r}"
        if not argv:
            return "an exec request must carry its argv, argv[0] included; found an empty argv"
        if request.arguments is not None:
            return "an exec request carries argv, not tool arguments; found arguments"
    else:
        if argv:
            return f"a {action} request carries arguments, not argv; found argv {list(argv)!r}"
        if request.arguments is not None and not _is_mapping(request.arguments):
            return f"tool arguments must be a JSON object, found {type(request.arguments).__name__}"
    for name in ("zone", "executable_digest", "parent_warrant"):
        if type(getattr(request, name)) is not str:
            return f"{name} must be a string, found {getattr(request, name)!r}"
    if request.executable_digest and not _DIGEST.fullmatch(request.executable_digest):
        return (
            f"executable_digest must be sha256:<64 hex digits> or empty, found {request.executable_digest!r}"
        )
    counters = request.counters
    if not _is_mapping(counters):
        return f"counters must be a mapping, found {counters!r}"
    for name, value in counters.items():
        if type(name) is not str or name not in _COUNTER_SET:
            return f"unknown counter {name!r}; known counters are {', '.join(COUNTERS)}"
        if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
            return f"counter {name!r} must be a non-negative integer, found {value!r}"
    return None


def time_record(now: int) -> dict[str, Any]:
    """The ``context.time`` record for ``now`` (UTC).

    Args:
        now: unix seconds, 0 … :data:`MAX_NOW`.

    Returns:
        ``{"epoch", "hour", "minute", "weekday" (0 = Monday), "date" ("YYYY-MM-DD")}``.
    """
    days, seconds = divmod(now, 86400)
    return {
        "epoch": now,
        "hour": seconds // 3600,
        "minute": seconds % 3600 // 60,
        "weekday": (days + 3) % 7,  # 1970-01-01 was a Thursday
        "date": date.fromordinal(_EPOCH_ORDINAL + days).isoformat(),
    }


def _argument_pairs(arguments: Mapping[str, Any]) -> list[str]:
    pairs = []
    for name, value in arguments.items():
        if "=" in name:
            continue
        kind = type(value)
        if kind is str:
            pairs.append(f"{name}={value}")
        elif kind is bool:
            pairs.append(f"{name}={'true' if value else 'false'}")
        elif kind is int:
            pairs.append(f"{name}={value}")
        elif kind is float:  # finite: canonicalize() refused NaN and infinities before
            pairs.append(f"{name}={number_text(value)}")
    pairs.sort()
    return pairs


def build_context(
    request: PolicyRequest,
    now: int,
    fields: frozenset[str] | None = None,
    time_fields: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The Cedar context of a request (see the module docstring).

    Args:
        request: a request for which :func:`request_problem` returned ``None``.
        now: unix seconds.
        fields: only these top-level fields (the ones a policy slice reads:
            :mod:`proctor.policy.slices`); ``None`` for all of them. A field not
            asked for is not computed.
        time_fields: only these fields of ``time`` (``None``: all of them).

    Returns:
        The context as a JSON object.

    Raises:
        CanonicalizationError: the tool arguments are outside the canonical JSON subset
            (when ``arguments_json`` is asked for).
    """
    argv = request.argv
    arguments = request.arguments
    out: dict[str, Any] = {}
    want = CONTEXT_FIELDS if fields is None else fields
    for name in CONTEXT_FIELDS:
        if name not in want:
            continue
        if name == "argc":
            out[name] = len(argv)
        elif name == "args":
            out[name] = dict(zip(_ARG_KEYS, argv, strict=False))
        elif name == "argv":
            out[name] = argv
        elif name == "command_line":
            out[name] = " ".join(argv)
        elif name == "time":
            record = time_record(now)
            out[name] = record if time_fields is None else {k: record[k] for k in sorted(time_fields)}
        elif name == "counters":
            out[name] = {**_ZERO_COUNTERS, **request.counters} if request.counters else _ZERO_COUNTERS
        elif name == "arguments_json":
            out[name] = "" if arguments is None else canonicalize(dict(arguments)).decode()
        elif name == "arguments":
            out[name] = [] if arguments is None else _argument_pairs(arguments)
        else:  # zone, executable_digest, parent_warrant: the request's own strings
            out[name] = getattr(request, name)
    return out


def principal_entity_json(principal: str, attrs: Mapping[str, str]) -> str:
    """The Cedar entities JSON holding just the principal.

    Args:
        principal: the principal's name.
        attrs: its attributes (already narrowed to those the schema declares).

    Returns:
        A JSON array with one entity.
    """
    entity = {"uid": {"type": PRINCIPAL_TYPE, "id": principal}, "attrs": dict(attrs), "parents": []}
    return orjson.dumps([entity]).decode()
