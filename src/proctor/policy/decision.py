"""The decision: allow or deny, and why.

A :class:`Decision` is what the governor logs for every request. It is the same for
the same bundle, request and ``now`` (policy ids sorted, errors sorted, obligations
with sorted keys), so replaying a logged request reproduces it exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proctor.errors import CanonicalizationError, PolicyError
from proctor.policy.obligations import ObligationValue
from proctor.policy.request import PolicyRequest

__all__ = ["Decision", "deny_all", "describe_denial", "safe_request_digest"]

_FIELDS = frozenset(
    {"allow", "policies", "errors", "obligations", "bundle_digest", "request_digest", "reason"}
)


_NONE: Mapping[str, ObligationValue] = MappingProxyType({})


@dataclass(frozen=True)
class Decision:
    """The result of evaluating one request against one policy bundle.

    Attributes:
        allow: ``True`` only when Cedar allowed with no evaluation error and the
            trust-boundary rule held.
        policies: the ids of the determining policies, sorted: for an allow the
            permits, for a deny the forbids that matched (empty for a default deny,
            or when proctor overruled Cedar's allow). A policy's id is its ``@id``
            annotation, else Cedar's positional id (``policy0`` …) over the bundle's
            files concatenated in name order.
        errors: evaluation errors, sorted; any error means deny.
        obligations: on an allow, the combined obligations
            (:mod:`proctor.policy.obligations`); empty on a deny.
        bundle_digest: the digest of the policy bundle that decided (``""`` if none).
        request_digest: :meth:`PolicyRequest.digest` (``""`` if it could not be computed).
        reason: one sentence saying why.
    """

    allow: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...]
    obligations: Mapping[str, ObligationValue] = field(default_factory=lambda: MappingProxyType({}))
    bundle_digest: str = ""
    request_digest: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        obligations = self.obligations
        empty = type(obligations) is dict and not obligations  # a deny's, the common case
        kept = _NONE if empty else MappingProxyType(dict(sorted(obligations.items())))
        object.__setattr__(self, "obligations", kept)

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON object.

        Returns:
            ``{"allow", "policies", "errors", "obligations", "bundle_digest",
            "request_digest", "reason"}``.
        """
        return {
            "allow": self.allow,
            "policies": list(self.policies),
            "errors": list(self.errors),
            "obligations": dict(self.obligations),
            "bundle_digest": self.bundle_digest,
            "request_digest": self.request_digest,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Decision:
        """Parse the JSON form written by :meth:`to_json`.

        Args:
            doc: the JSON object.

        Returns:
            The decision.

        Raises:
            PolicyError: a field is missing, unknown, or of the wrong type.
        """
        if not isinstance(doc, Mapping) or set(doc) != _FIELDS:
            found = sorted(doc) if isinstance(doc, Mapping) else type(doc).__name__
            raise PolicyError(f"decision: expected the fields {sorted(_FIELDS)}, found {found}")
        if type(doc["allow"]) is not bool:
            raise PolicyError(f"decision.allow: expected a boolean, found {doc['allow']!r}")
        for name in ("policies", "errors"):
            value = doc[name]
            if type(value) is not list or any(type(v) is not str for v in value):
                raise PolicyError(f"decision.{name}: expected an array of strings, found {value!r}")
        obligations = doc["obligations"]
        if not isinstance(obligations, Mapping) or any(
            type(k) is not str or type(v) not in (int, str, bool) for k, v in obligations.items()
        ):
            raise PolicyError(
                f"decision.obligations: expected an object of integers, strings and booleans, "
                f"found {obligations!r}"
            )
        for name in ("bundle_digest", "request_digest", "reason"):
            if type(doc[name]) is not str:
                raise PolicyError(f"decision.{name}: expected a string, found {doc[name]!r}")
        return cls(
            allow=doc["allow"],
            policies=tuple(doc["policies"]),
            errors=tuple(doc["errors"]),
            obligations=obligations,
            bundle_digest=doc["bundle_digest"],
            request_digest=doc["request_digest"],
            reason=doc["reason"],
        )


def safe_request_digest(request: PolicyRequest | None) -> str:
    """The request's digest, or ``""`` when there is no request or it cannot be hashed.

    Args:
        request: the request, or ``None``.

    Returns:
        :meth:`PolicyRequest.digest`, or ``""``.
    """
    if request is None:
        return ""
    try:
        return request.digest()
    except (CanonicalizationError, TypeError, ValueError, AttributeError):
        return ""


def deny_all(reason: str, *, bundle_digest: str = "", request: PolicyRequest | None = None) -> Decision:
    """A deny for when no policy could be consulted (no valid bundle, unknown principal …).

    Args:
        reason: one sentence saying why.
        bundle_digest: the digest of the bundle in force, if any.
        request: the request, when there is one (its digest is recorded).

    Returns:
        A deny with no policies, errors or obligations.
    """
    return Decision(
        allow=False,
        policies=(),
        errors=(),
        obligations={},
        bundle_digest=bundle_digest,
        request_digest=safe_request_digest(request),
        reason=reason,
    )


def describe_denial(
    decision: Mapping[str, Any], *, principal: str = "", action: str = "", resource: str = "", zone: str = ""
) -> str:
    """One line for a person: who was denied what, where, why, and by which policies.

    Args:
        decision: a decision as JSON (:meth:`Decision.to_json`, as the governor answers).
        principal, action, resource: the request as evaluated ("" to leave out).
        zone: the environment zone asked for ("" : the principal's own zone).

    Returns:
        ``denied: alice exec /bin/ls (zone 'dev'): <reason>; determining policies: a, b``
        (the policies only when some decided and the reason does not name them).
    """
    reason = str(decision.get("reason", "") or "no reason given")
    for prefix in ("denied: ", "denied "):
        reason = reason.removeprefix(prefix)
    what = " ".join(part for part in (principal, action, resource) if part)
    where = f"zone {zone!r}" if zone else "the principal's zone"
    head = f"denied: {what} ({where})" if what else "denied"
    # The determining policies, once: those the reason does not already name.
    policies = [
        str(p)
        for p in decision.get("policies", ()) or ()
        if re.search(rf"(?<![\w.-]){re.escape(str(p))}(?![\w.-])", reason) is None
    ]
    tail = f"; determining policies: {', '.join(policies)}" if policies else ""
    return f"{head}: {reason}{tail}"
