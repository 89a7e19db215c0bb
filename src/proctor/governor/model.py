"""The governor's request and reply shapes (the JSON of ``POST /v1/authorize``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proctor.errors import ProctorError
from proctor.policy import ACTIONS, Decision

__all__ = ["RequestShapeError", "AuthorizeRequest", "AuthorizeResult", "MAX_ARGV"]

MAX_ARGV = 1024


class RequestShapeError(ProctorError):
    """An API request body does not have the expected shape (HTTP 422)."""


def _str(doc: Mapping[str, Any], key: str, *, default: str | None = None, limit: int = 4096) -> str:
    value = doc.get(key, default)
    if type(value) is not str:
        raise RequestShapeError(f"{key}: expected a string, found {type(value).__name__}")
    if len(value) > limit:
        raise RequestShapeError(f"{key}: expected at most {limit} characters, found {len(value)}")
    return value


@dataclass(frozen=True)
class AuthorizeRequest:
    """What a principal asks to execute.

    Attributes:
        action: ``exec``, ``mcp.call`` or ``tool.call``.
        resource: an absolute executable path, or ``server/tool``.
        argv: the exact argument vector (``exec``), argv[0] included.
        arguments: the exact tool arguments (``mcp.call``/``tool.call``).
        zone: the zone of the environment it would run in ("" = the principal's).
        executable_digest: ``sha256:<hex>`` of the measured executable, if known.
        parent_warrant: a warrant token this request is delegated under, if any.
    """

    action: str
    resource: str
    argv: tuple[str, ...] = ()
    arguments: Mapping[str, Any] | None = None
    zone: str = ""
    executable_digest: str = ""
    parent_warrant: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any) -> AuthorizeRequest:
        """Parse and check the request body.

        Raises:
            RequestShapeError: a field is missing, of the wrong type, or unknown.
        """
        if type(doc) is not dict:
            raise RequestShapeError(f"expected a JSON object, found {type(doc).__name__}")
        known = {"action", "resource", "argv", "arguments", "zone", "executable_digest", "parent_warrant"}
        unknown = set(doc) - known
        if unknown:
            raise RequestShapeError(f"unknown fields {sorted(unknown)}; expected some of {sorted(known)}")
        action = _str(doc, "action")
        if action not in ACTIONS:
            raise RequestShapeError(f"action: expected one of {list(ACTIONS)}, found {action!r}")
        resource = _str(doc, "resource")
        if not resource:
            raise RequestShapeError("resource: expected a non-empty string")
        argv = doc.get("argv", [])
        if type(argv) is not list or not all(type(a) is str for a in argv):
            raise RequestShapeError("argv: expected an array of strings")
        if len(argv) > MAX_ARGV:
            raise RequestShapeError(f"argv: expected at most {MAX_ARGV} entries, found {len(argv)}")
        arguments = doc.get("arguments")
        if arguments is not None and type(arguments) is not dict:
            raise RequestShapeError(f"arguments: expected an object, found {type(arguments).__name__}")
        return cls(
            action=action,
            resource=resource,
            argv=tuple(argv),
            arguments=arguments,
            zone=_str(doc, "zone", default=""),
            executable_digest=_str(doc, "executable_digest", default=""),
            parent_warrant=_str(doc, "parent_warrant", default="", limit=16384),
        )

    def to_json(self) -> dict[str, Any]:
        """The request body."""
        out: dict[str, Any] = {"action": self.action, "resource": self.resource}
        if self.argv:
            out["argv"] = list(self.argv)
        if self.arguments is not None:
            out["arguments"] = dict(self.arguments)
        for key in ("zone", "executable_digest", "parent_warrant"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class AuthorizeResult:
    """The governor's answer: the decision, where it was logged, and the warrant on allow."""

    decision: Decision
    log_index: int | None
    warrant: str | None = None
    warrant_id: str | None = None
    warrant_index: int | None = None
    expires: int | None = None
    lease_ttl_ms: int | None = None

    @property
    def allowed(self) -> bool:
        """Whether a warrant was issued."""
        return self.decision.allow and self.warrant is not None

    def to_json(self) -> dict[str, Any]:
        """The reply body of ``POST /v1/authorize``."""
        out: dict[str, Any] = {
            "allow": self.allowed,
            "decision": self.decision.to_json(),
            "log_index": self.log_index,
        }
        if self.warrant is not None:
            out["warrant"] = {
                "token": self.warrant,
                "id": self.warrant_id,
                "log_index": self.warrant_index,
                "expires": self.expires,
                "lease_ttl_ms": self.lease_ttl_ms,
            }
        return out
