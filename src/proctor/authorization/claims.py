"""What a warrant says, and what an enforcer is about to do.

:class:`WarrantClaims` are the facts of a warrant's authority block; a
:class:`WarrantRequest` is what the enforcer measured locally just before executing.
Both validate themselves when constructed, so one you hold is always well-formed:
an invalid value raises :class:`~proctor.errors.WarrantError` with reason
``malformed`` instead of producing a token nobody can verify.

Conventions shared with the warrant module:

- ``zone`` ``""`` in the claims means any zone; ``executable_digest`` ``""`` in the
  claims means the executable is not bound. In a request, ``""`` means unknown, which
  matches only an unbound claim.
- Digests are ``sha256:<64 lowercase hex>``. :func:`args_digest` hashes the RFC 8785
  canonical JSON of the exact argv list (``exec``) or tool arguments object.
- Times are unix seconds, within what a Biscuit date can hold.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proctor.authorization.keys import valid_principal_name
from proctor.canonical import MAX_SAFE_INTEGER, canonicalize
from proctor.errors import CanonicalizationError, WarrantError

__all__ = [
    "ACTIONS",
    "MAX_TIME",
    "WarrantClaims",
    "WarrantRequest",
    "args_digest",
    "new_warrant_id",
    "valid_warrant_id",
]

ACTIONS = frozenset({"exec", "mcp.call", "tool.call"})
"""The actions a warrant may authorize."""

MAX_TIME = 253402300799
"""9999-12-31T23:59:59Z, the latest time a warrant may carry."""

_WARRANT_ID = re.compile(r"wr_[A-Za-z0-9_-]{1,64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_OBLIGATION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_RESOURCE = 4096
_MAX_OBLIGATIONS = 32
_MAX_OBLIGATION_STR = 1024
_FIELDS = (
    "warrant_id",
    "principal",
    "action",
    "resource",
    "args_digest",
    "zone",
    "executable_digest",
    "obligations",
    "not_before",
    "expires",
    "lease_ttl_ms",
    "decision_index",
    "parent",
)


def _bad(message: str) -> WarrantError:
    return WarrantError(message, reason="malformed")


def valid_warrant_id(value: str) -> bool:
    """Whether ``value`` is a warrant id: ``wr_`` and 1-64 of ``[A-Za-z0-9_-]``.

    Args:
        value: the candidate id.

    Returns:
        ``True`` if it is well-formed.
    """
    return type(value) is str and _WARRANT_ID.fullmatch(value) is not None


def new_warrant_id() -> str:
    """A fresh random warrant id.

    Returns:
        ``wr_`` followed by 128 random bits in lowercase base32 (26 characters).
    """
    return "wr_" + base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


def args_digest(argv_or_arguments: Sequence[str] | Mapping[str, Any]) -> str:
    """The digest that binds a warrant to exact arguments.

    Args:
        argv_or_arguments: the argv list of an ``exec`` (strings, program name first),
            or the arguments object of a tool call.

    Returns:
        ``sha256:`` and the hex SHA-256 of the RFC 8785 canonical JSON of the list or object.

    Raises:
        WarrantError: (reason ``malformed``) a string or bytes was given instead of a
            list, an argv element is not a string, or the value is outside the
            canonical JSON subset.
    """
    value: list[Any] | dict[str, Any]
    if isinstance(argv_or_arguments, Mapping):
        value = dict(argv_or_arguments)
    elif isinstance(argv_or_arguments, str | bytes | bytearray):
        # A command line as one string is the classic bug: refuse, do not split.
        raise _bad("expected an argv list or an arguments object, found a string")
    elif isinstance(argv_or_arguments, Sequence):
        value = list(argv_or_arguments)
        for i, arg in enumerate(value):
            if type(arg) is not str:
                raise _bad(f"argv[{i}]: expected a string, found {type(arg).__name__}")
    else:
        raise _bad(f"expected an argv list or an arguments object, found {type(argv_or_arguments).__name__}")
    try:
        data = canonicalize(value)
    except CanonicalizationError as e:
        raise _bad(f"arguments are not canonical JSON: {e}") from e
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_text(name: str, value: object, *, empty: bool = False) -> str:
    if type(value) is not str:
        raise _bad(f"{name}: expected a string, found {type(value).__name__}")
    if not value and not empty:
        raise _bad(f"{name}: expected a non-empty string")
    if len(value) > _MAX_RESOURCE:
        raise _bad(f"{name}: expected at most {_MAX_RESOURCE} characters, found {len(value)}")
    if any(c < " " or c == "\x7f" for c in value):
        raise _bad(f"{name}: expected no control characters, found {value!r}")
    return value


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{name}: expected an integer in [{low}, {high}], found {value!r}")
    return value


def _check_scope(action: str, resource: str, args: str, zone: str, exe: str) -> None:
    if action not in ACTIONS:
        raise _bad(f"action: expected one of {sorted(ACTIONS)}, found {action!r}")
    resource = _check_text("resource", resource)
    if action == "exec" and not resource.startswith("/"):
        raise _bad(f"resource: expected an absolute path for exec, found {resource!r}")
    if action == "mcp.call":
        server, _, tool = resource.partition("/")
        if not server or not tool:
            raise _bad(f"resource: expected server/tool for mcp.call, found {resource!r}")
    if type(args) is not str or _DIGEST.fullmatch(args) is None:
        raise _bad(f"args_digest: expected sha256:<64 hex>, found {args!r}")
    if zone != "" and not valid_principal_name(zone):
        raise _bad(f"zone: expected '' or a name of [A-Za-z0-9._-], found {zone!r}")
    if exe != "" and (type(exe) is not str or _DIGEST.fullmatch(exe) is None):
        raise _bad(f"executable_digest: expected '' or sha256:<64 hex>, found {exe!r}")


@dataclass(frozen=True)
class WarrantRequest:
    """What the enforcer is about to do, measured locally.

    Attributes:
        action: ``exec``, ``mcp.call`` or ``tool.call``.
        resource: the absolute path of the executable, or ``server/tool``, or the tool.
        args_digest: :func:`args_digest` of the actual argv or arguments.
        zone: the enforcer's zone, ``""`` if it has none.
        executable_digest: ``sha256:<hex>`` of the executable, ``""`` if not measured.

    Raises:
        WarrantError: (reason ``malformed``) on construction, if any field is invalid.
    """

    action: str
    resource: str
    args_digest: str
    zone: str = ""
    executable_digest: str = ""

    def __post_init__(self) -> None:
        _check_scope(self.action, self.resource, self.args_digest, self.zone, self.executable_digest)


@dataclass(frozen=True)
class WarrantClaims:
    """The facts of a warrant's authority block.

    Attributes:
        warrant_id: ``wr_…``, unique.
        principal: the principal it was issued to.
        action: ``exec``, ``mcp.call`` or ``tool.call``.
        resource: an absolute path (``exec``), ``server/tool`` (``mcp.call``), or a tool name.
        args_digest: :func:`args_digest` of the exact argv or arguments.
        zone: the required environment zone, ``""`` for any.
        executable_digest: the required executable digest, ``""`` when not bound.
        obligations: name → int, str or bool (read-only after construction).
        not_before: first valid second, unix time.
        expires: first invalid second, unix time; later than ``not_before``.
        lease_ttl_ms: lease time-to-live in milliseconds, positive.
        decision_index: the log index of the decision that allowed it.
        parent: the parent warrant's id, ``""`` for none.

    Raises:
        WarrantError: (reason ``malformed``) on construction, if any field is invalid.
    """

    warrant_id: str
    principal: str
    action: str
    resource: str
    args_digest: str
    zone: str
    executable_digest: str
    obligations: Mapping[str, int | str | bool] = field(hash=False)
    not_before: int
    expires: int
    lease_ttl_ms: int
    decision_index: int
    parent: str = ""

    def __post_init__(self) -> None:
        if not valid_warrant_id(self.warrant_id):
            raise _bad(f"warrant_id: expected wr_ and 1-64 of [A-Za-z0-9_-], found {self.warrant_id!r}")
        if not valid_principal_name(self.principal):
            raise _bad(f"principal: expected a principal name, found {self.principal!r}")
        _check_scope(self.action, self.resource, self.args_digest, self.zone, self.executable_digest)
        if not isinstance(self.obligations, Mapping):
            raise _bad(f"obligations: expected a mapping, found {type(self.obligations).__name__}")
        if len(self.obligations) > _MAX_OBLIGATIONS:
            raise _bad(f"obligations: expected at most {_MAX_OBLIGATIONS}, found {len(self.obligations)}")
        frozen: dict[str, int | str | bool] = {}
        for name, value in self.obligations.items():
            if type(name) is not str or _OBLIGATION.fullmatch(name) is None:
                raise _bad(f"obligations: expected names of [a-z0-9_] starting with a letter, found {name!r}")
            if type(value) is bool:
                pass
            elif type(value) is int:
                _check_int(f"obligations.{name}", value, -MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
            elif type(value) is str:
                if len(value) > _MAX_OBLIGATION_STR:
                    raise _bad(f"obligations.{name}: expected at most {_MAX_OBLIGATION_STR} characters")
            else:
                raise _bad(f"obligations.{name}: expected int, str or bool, found {type(value).__name__}")
            frozen[name] = value
        object.__setattr__(self, "obligations", MappingProxyType(frozen))
        _check_int("not_before", self.not_before, 0, MAX_TIME)
        _check_int("expires", self.expires, self.not_before + 1, MAX_TIME)
        _check_int("lease_ttl_ms", self.lease_ttl_ms, 1, MAX_SAFE_INTEGER)
        _check_int("decision_index", self.decision_index, 0, MAX_SAFE_INTEGER)
        if self.parent != "" and not valid_warrant_id(self.parent):
            raise _bad(f"parent: expected '' or a warrant id, found {self.parent!r}")
        if self.parent == self.warrant_id:
            raise _bad("parent: a warrant cannot be its own parent")

    def ids(self) -> tuple[str, ...]:
        """The warrant ids whose revocation revokes this warrant.

        Returns:
            ``(warrant_id,)``, or ``(warrant_id, parent)`` when there is a parent.
        """
        return (self.warrant_id, self.parent) if self.parent else (self.warrant_id,)

    def to_json(self) -> dict[str, Any]:
        """The claims as a JSON object in the canonical subset.

        Returns:
            One key per attribute; ``obligations`` as a plain object.
        """
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        data["obligations"] = dict(self.obligations)
        return data

    @classmethod
    def from_json(cls, data: object) -> WarrantClaims:
        """Parse claims from :meth:`to_json` output.

        Args:
            data: a decoded JSON object.

        Returns:
            The claims.

        Raises:
            WarrantError: (reason ``malformed``) not an object with exactly the claim
                fields, or any field invalid.
        """
        if type(data) is not dict or set(data) != set(_FIELDS):
            found = sorted(data) if type(data) is dict else type(data).__name__
            raise _bad(f"expected an object with exactly the fields {sorted(_FIELDS)}, found {found}")
        return cls(**data)
