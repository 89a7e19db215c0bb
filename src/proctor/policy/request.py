"""The policy request: what is asked, by whom, where, in what state.

A :class:`PolicyRequest` is everything a decision depends on except the policy
bundle and the time ``now``, which the caller passes to
:meth:`~proctor.policy.engine.PolicyEngine.decide`. Its JSON form
(:meth:`PolicyRequest.to_json`) is what the governor logs with each decision, and
:meth:`PolicyRequest.digest` is the SHA-256 of its RFC 8785 canonical encoding, so a
logged decision can be replayed and its request recognised.

Construction only copies (``argv`` to a tuple, mappings to read-only copies); it does
not judge. A malformed request — an unknown action, a relative executable path, an
over-long argument vector, tool arguments outside the canonical JSON subset — is
denied by the engine with the reason, because a deny is a decision, not an exception.
:meth:`PolicyRequest.from_json`, a parser, does reject a malformed document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from proctor.canonical import canonicalize
from proctor.errors import CanonicalizationError, PolicyError

__all__ = ["REQUEST_VERSION", "PolicyRequest"]

REQUEST_VERSION = 1
"""The ``v`` of a request's JSON form; other versions are rejected."""

_FIELDS = frozenset(
    {
        "v",
        "principal",
        "principal_attrs",
        "action",
        "resource",
        "argv",
        "arguments",
        "zone",
        "executable_digest",
        "parent_warrant",
        "counters",
    }
)


def _readonly(value: Any) -> Any:
    # Copy mappings so a caller mutating its dict afterwards cannot change the request.
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class PolicyRequest:
    """One authorization question, in the terms of the Cedar schema.

    Attributes:
        principal: the principal's name; Cedar ``Proctor::Principal::"<principal>"``.
        principal_attrs: the principal's attributes, all strings; always ``role``
            (``""`` if unset) and ``zone``, plus any others (``tenant`` …).
        action: one of :data:`~proctor.policy.schema.ACTIONS`.
        resource: for ``exec`` the executable's absolute path (Cedar
            ``Proctor::Executable``); for ``mcp.call`` and ``tool.call``
            ``"server/tool"`` (Cedar ``Proctor::Tool``).
        argv: for ``exec``, the argument vector, ``argv[0]`` included.
        arguments: for tool calls, the arguments (a JSON object), else ``None``.
        zone: the zone of the environment it would run in (``""``: unknown).
        executable_digest: ``"sha256:<hex>"`` of the executable, when known.
        parent_warrant: the id of the parent warrant, ``""`` if none.
        counters: stateful constraints computed by the caller, e.g.
            ``{"rate_1m": 3, "rate_1h": 40, "concurrency": 1, "budget_used": 0}``;
            a missing counter is 0.
    """

    principal: str
    principal_attrs: Mapping[str, str]
    action: str
    resource: str
    argv: tuple[str, ...] = ()
    arguments: Mapping[str, Any] | None = None
    zone: str = ""
    executable_digest: str = ""
    parent_warrant: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.argv, list):
            object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "principal_attrs", _readonly(self.principal_attrs))
        object.__setattr__(self, "counters", _readonly(self.counters))

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON object (plain dicts and lists), with ``"v": 1``.

        Returns:
            A new dict; :meth:`from_json` gives back an equal request.
        """
        arguments = self.arguments
        copied = dict(arguments) if isinstance(arguments, Mapping) else arguments
        return self._document(list(self.argv), copied)

    def _document(self, argv: Any, arguments: Any) -> dict[str, Any]:
        # The JSON form's fields, written once: to_json() and wellformed_digest() differ
        # only in how argv and the arguments are given.
        return {
            "v": REQUEST_VERSION,
            "principal": self.principal,
            "principal_attrs": dict(self.principal_attrs),
            "action": self.action,
            "resource": self.resource,
            "argv": argv,
            "arguments": arguments,
            "zone": self.zone,
            "executable_digest": self.executable_digest,
            "parent_warrant": self.parent_warrant,
            "counters": dict(self.counters),
        }

    def digest(self) -> str:
        """``"sha256:<hex>"`` of the RFC 8785 canonical JSON of :meth:`to_json`.

        Returns:
            The digest; equal requests have equal digests.

        Raises:
            CanonicalizationError: the request holds a value outside the canonical
                JSON subset (a float in the tool arguments, say).
        """
        return "sha256:" + hashlib.sha256(canonicalize(self.to_json())).hexdigest()

    def wellformed_digest(self) -> str:
        """:meth:`digest` of a request
        :func:`~proctor.policy.context.request_problem` accepted: the same string, with
        less work.

        The document is :meth:`to_json`'s, built without its copies of argv and the
        arguments (orjson writes a tuple as an array; the tool arguments go in already
        encoded). Of the RFC 8785 encoding, only the tool arguments are walked for the
        canonical subset (:func:`~proctor.canonical.canonicalize`, at the depth they have
        in the request): the checks established that every other value is a string, a
        safe integer, or a list or map of them. What remains is that object keys be ASCII
        (only the principal's attribute names are the caller's) and strings be UTF-8
        (orjson refuses a lone surrogate). Anything else takes :meth:`digest`, which
        raises the precise error.

        Raises:
            CanonicalizationError: as :meth:`digest`.
        """
        try:
            if all(name.isascii() for name in self.principal_attrs):
                arguments = self.arguments
                # {"a": X} encodes as b'{"a":' + X + b"}", and X is one level down, as in the request.
                encoded = None if arguments is None else orjson.Fragment(canonicalize({"a": arguments})[5:-1])
                data = orjson.dumps(self._document(self.argv, encoded), option=orjson.OPT_SORT_KEYS)
                return "sha256:" + hashlib.sha256(data).hexdigest()
        except (CanonicalizationError, TypeError, orjson.JSONEncodeError):
            pass
        return self.digest()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PolicyRequest:
        """Parse the JSON form written by :meth:`to_json` (a logged request).

        Args:
            doc: the JSON object.

        Returns:
            The request.

        Raises:
            PolicyError: unknown or missing fields, an unknown version, or a field of
                the wrong type (the message says what was expected and found).
        """
        if not isinstance(doc, Mapping):
            raise PolicyError(f"request: expected a JSON object, found {type(doc).__name__}")
        keys = set(doc)
        if keys != _FIELDS:
            missing, unknown = sorted(_FIELDS - keys), sorted(keys - _FIELDS)
            raise PolicyError(
                f"request: expected the fields {sorted(_FIELDS)}, found missing {missing} "
                f"and unknown {unknown}"
            )
        if type(doc["v"]) is not int or doc["v"] != REQUEST_VERSION:
            raise PolicyError(f"request.v: expected {REQUEST_VERSION}, found {doc['v']!r}")
        for name in ("principal", "action", "resource", "zone", "executable_digest", "parent_warrant"):
            if type(doc[name]) is not str:
                raise PolicyError(f"request.{name}: expected a string, found {doc[name]!r}")
        attrs, counters, argv, arguments = (
            doc["principal_attrs"],
            doc["counters"],
            doc["argv"],
            doc["arguments"],
        )
        if not isinstance(attrs, Mapping) or any(
            type(k) is not str or type(v) is not str for k, v in attrs.items()
        ):
            raise PolicyError(f"request.principal_attrs: expected an object of strings, found {attrs!r}")
        if not isinstance(counters, Mapping) or any(
            type(k) is not str or type(v) is not int for k, v in counters.items()
        ):
            raise PolicyError(f"request.counters: expected an object of integers, found {counters!r}")
        if type(argv) is not list or any(type(a) is not str for a in argv):
            raise PolicyError(f"request.argv: expected an array of strings, found {argv!r}")
        if arguments is not None and not isinstance(arguments, Mapping):
            raise PolicyError(f"request.arguments: expected an object or null, found {arguments!r}")
        return cls(
            principal=doc["principal"],
            principal_attrs=attrs,
            action=doc["action"],
            resource=doc["resource"],
            argv=tuple(argv),
            arguments=dict(arguments) if arguments is not None else None,
            zone=doc["zone"],
            executable_digest=doc["executable_digest"],
            parent_warrant=doc["parent_warrant"],
            counters=counters,
        )
