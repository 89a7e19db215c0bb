"""Obligations: conditions that policy annotations attach to an allow.

A ``permit`` policy may carry these annotations (Cedar annotation values are strings):

============================  ==========================================================
``@max_duration_s("60")``     run at most this many seconds                (integer ≥ 1)
``@memory_limit_mb("512")``   memory limit in MiB                          (integer ≥ 1)
``@max_pids("64")``           at most this many processes                  (integer ≥ 1)
``@max_output_bytes("1048576")`` at most this many bytes of output         (integer ≥ 0)
``@lease_ttl_s("3")``         lease time-to-live in seconds                (integer ≥ 1)
``@no_network("true")``       no network access                            (true/false)
``@approval("required")``     an admin must approve each call before a warrant is
                              issued (:mod:`proctor.governor.approvals`); the only value
``@approval_required("true")`` the older spelling of ``@approval("required")`` (true/false)
``@approval_timeout_s("300")`` how long a requested approval waits for an admin, and is
                              usable, before it expires (integer 1 to 604800; default 300;
                              only beside ``@approval("required")``)
``@rate("10/60s")``           at most N calls of this resource (tool, executable) by the
                              principal in any W seconds
``@budget("100/86400s")``     at most N calls by the principal, all resources together,
                              in any W seconds
``@blast_radius("5/60s")``    at most N *distinct* argument sets for this resource by the
                              principal in any W seconds (repeating a call does not widen
                              what it touches; a new target does)
``@on_violation("suspend")``  what the enforcer does when an obligation or the lease is
                              broken: ``terminate`` (the default), ``suspend``, or
                              ``webhook:<http(s) URL>``; several, comma-separated
``@cross_zone("true")``       not an obligation: lets the permit allow a request whose
                              environment zone differs from the principal's
============================  ==========================================================

Integers are plain decimal digits without sign or leading zeros, at most 2**53 - 1.
A call limit (``@rate``, ``@budget``, ``@blast_radius``) is ``N/Ws``: N from 1 and W
from 1 to 31536000 (a year), both plain decimal; it is enforced by the governor at
authorization, counted in the store (:mod:`proctor.governor.call_limits`).

Besides these, a policy may carry ``@id("…")`` (its name in decisions; unique in a
bundle) and ``@description("…")``. **Any other annotation is rejected** when the
bundle is compiled, as is a malformed value (``@max_duration_s("soon")``) and an
obligation or ``@cross_zone`` on a ``forbid`` policy: a misspelt obligation
(``@max_duraton_s``) that was silently ignored would be a limit nobody enforces.

When several permit policies determine an allow, their obligations combine most
restrictively (:func:`combine_obligations`): the smallest of each limit, the OR of
each flag, the union of the ``on_violation`` responses (a permit without
``@on_violation`` contributes ``terminate``) and of each call limit (every one holds:
``"10/60s,100/3600s"``). An allow always carries
``on_violation``; other keys only when some determining permit sets them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from proctor.canonical import MAX_SAFE_INTEGER

__all__ = [
    "LIMITS",
    "FLAGS",
    "ON_VIOLATION",
    "CALL_LIMITS",
    "APPROVAL",
    "APPROVAL_TIMEOUT",
    "DEFAULT_APPROVAL_TIMEOUT_S",
    "MAX_APPROVAL_TIMEOUT_S",
    "MAX_WINDOW_S",
    "DEFAULT_RESPONSE",
    "CallLimit",
    "call_limits",
    "KNOWN_ANNOTATIONS",
    "ObligationValue",
    "PolicyAnnotations",
    "read_annotations",
    "combine_obligations",
]

ObligationValue = int | str | bool

LIMITS = {
    "max_duration_s": 1,
    "memory_limit_mb": 1,
    "max_pids": 1,
    "max_output_bytes": 0,
    "lease_ttl_s": 1,
}
"""Integer obligations and the least value each accepts."""

FLAGS = ("no_network", "approval_required")
ON_VIOLATION = "on_violation"
APPROVAL = "approval"
"""``@approval("required")``: the obligation ``approval_required: true``."""
APPROVAL_TIMEOUT = "approval_timeout_s"
DEFAULT_APPROVAL_TIMEOUT_S = 300
"""How long an approval waits and stays usable when no ``@approval_timeout_s`` says."""
MAX_APPROVAL_TIMEOUT_S = 7 * 86400
CALL_LIMITS = ("rate", "budget", "blast_radius")
"""Call-limit obligations (``N/Ws``), enforced at authorization."""
MAX_WINDOW_S = 365 * 86400
DEFAULT_RESPONSE = "terminate"
KNOWN_ANNOTATIONS = frozenset(
    {
        "id",
        "description",
        "cross_zone",
        ON_VIOLATION,
        APPROVAL,
        APPROVAL_TIMEOUT,
        *LIMITS,
        *FLAGS,
        *CALL_LIMITS,
    }
)

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CALL_LIMIT = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,8})s")


@dataclass(frozen=True)
class CallLimit:
    """One call limit: at most ``calls`` in any ``window_s`` seconds.

    Attributes:
        kind: ``rate``, ``budget`` or ``blast_radius``.
        calls: N, at least 1.
        window_s: W seconds, 1 to :data:`MAX_WINDOW_S`.
    """

    kind: str
    calls: int
    window_s: int

    def __str__(self) -> str:
        return f"{self.calls}/{self.window_s}s"


def _call_limit(kind: str, value: str) -> CallLimit | str:
    """Parse ``N/Ws``; the limit, or the problem."""
    m = _CALL_LIMIT.fullmatch(value)
    if m is None or int(m.group(2)) > MAX_WINDOW_S:
        return (
            f'@{kind}: expected "N/Ws" (N calls in any W seconds, N from 1, W from 1 to {MAX_WINDOW_S}, '
            f'e.g. "10/60s"), found {value!r}'
        )
    return CallLimit(kind, int(m.group(1)), int(m.group(2)))


def call_limits(obligations: Mapping[str, ObligationValue]) -> tuple[CallLimit, ...]:
    """The call limits an allow's obligations carry (every one holds).

    Raises:
        ValueError: a call-limit obligation that is not a comma-separated list of
            ``N/Ws`` (not from a compiled bundle: fail closed).
    """
    limits: list[CallLimit] = []
    for kind in CALL_LIMITS:
        value = obligations.get(kind)
        if value is None:
            continue
        if type(value) is not str:
            raise ValueError(f"obligation {kind}: expected a string of N/Ws limits, found {value!r}")
        for item in value.split(","):
            parsed = _call_limit(kind, item)
            if not isinstance(parsed, CallLimit):
                raise ValueError(parsed)  # noqa: TRY004 - a malformed value, not a wrong type
            limits.append(parsed)
    return tuple(limits)


_WEBHOOK = re.compile(r"webhook:https?://[^\s,]+")


@dataclass(frozen=True)
class PolicyAnnotations:
    """What one policy's annotations mean to proctor.

    Attributes:
        obligations: the obligations this policy sets (typed), without defaults.
        responses: its ``on_violation`` responses (``("terminate",)`` if unset).
        cross_zone: whether it may allow a cross-zone request.
    """

    obligations: Mapping[str, ObligationValue] = field(default_factory=lambda: MappingProxyType({}))
    responses: tuple[str, ...] = (DEFAULT_RESPONSE,)
    cross_zone: bool = False


def _flag(value: str, name: str) -> bool | str:
    if value == "true":
        return True
    if value == "false":
        return False
    return f'@{name}: expected "true" or "false", found {value!r}'


def read_annotations(
    annotations: Mapping[str, str | None], *, effect: str
) -> tuple[PolicyAnnotations, tuple[str, ...]]:
    """Parse a policy's annotations.

    Args:
        annotations: annotation name to value (Cedar's ``@name`` alone gives ``""``
            or ``None``).
        effect: ``"permit"`` or ``"forbid"``.

    Returns:
        The parsed annotations, and the problems found (empty if none). The
        caller turns problems into a validation error naming the policy.
    """
    problems: list[str] = []
    obligations: dict[str, ObligationValue] = {}
    responses: tuple[str, ...] = (DEFAULT_RESPONSE,)
    cross_zone = False
    if (
        APPROVAL_TIMEOUT in annotations
        and APPROVAL not in annotations
        and "approval_required" not in annotations
    ):
        problems.append(f'@{APPROVAL_TIMEOUT}: only beside @approval("required") on the same policy')
    for name, raw in sorted(annotations.items()):
        value = raw if raw is not None else ""
        if name not in KNOWN_ANNOTATIONS:
            problems.append(f"@{name}: unknown annotation (known: {', '.join(sorted(KNOWN_ANNOTATIONS))})")
            continue
        if name in ("id", "description"):
            if name == "id" and not value:
                problems.append('@id: expected a non-empty name, found ""')
            continue
        if effect != "permit":
            problems.append(f"@{name}: obligations and @cross_zone belong on permit policies, not {effect}")
            continue
        if name == APPROVAL:
            if value != "required":
                problems.append(f'@{APPROVAL}: expected "required", found {value!r}')
            else:
                obligations["approval_required"] = True
        elif name == APPROVAL_TIMEOUT:
            if not _DECIMAL.fullmatch(value) or not 1 <= int(value) <= MAX_APPROVAL_TIMEOUT_S:
                problems.append(
                    f"@{name}: expected a decimal integer from 1 to {MAX_APPROVAL_TIMEOUT_S}, found {value!r}"
                )
            else:
                obligations[name] = int(value)
        elif name in CALL_LIMITS:
            limit = _call_limit(name, value)
            if isinstance(limit, str):
                problems.append(limit)
            else:
                obligations[name] = str(limit)
        elif name in LIMITS:
            least = LIMITS[name]
            if not _DECIMAL.fullmatch(value) or not least <= int(value) <= MAX_SAFE_INTEGER:
                problems.append(
                    f"@{name}: expected a decimal integer from {least} to {MAX_SAFE_INTEGER}, found {value!r}"
                )
            else:
                obligations[name] = int(value)
        elif name in FLAGS or name == "cross_zone":
            flag = _flag(value, name)
            if isinstance(flag, str):
                problems.append(flag)
            elif name == "cross_zone":
                cross_zone = flag
            else:
                # @approval("required") and @approval_required("true") on one policy: true.
                obligations[name] = bool(obligations.get(name, False)) or flag
        else:  # on_violation
            items = sorted({item.strip() for item in value.split(",")})
            bad = [i for i in items if i not in ("terminate", "suspend") and not _WEBHOOK.fullmatch(i)]
            if bad or not items:
                problems.append(
                    "@on_violation: expected terminate, suspend or webhook:<http(s) URL>, "
                    f"comma-separated; found {value!r}"
                )
            else:
                responses = tuple(items)
    parsed = PolicyAnnotations(MappingProxyType(obligations), responses, cross_zone)
    return parsed, tuple(problems)


def combine_obligations(policies: Iterable[PolicyAnnotations]) -> dict[str, ObligationValue]:
    """Combine the obligations of the permits that determined an allow, most restrictively.

    Args:
        policies: the determining permit policies' annotations.

    Returns:
        The obligations, keys sorted: the minimum of each limit, the OR of each
        flag, and ``on_violation`` as the sorted, comma-joined union of responses.
    """
    combined: dict[str, ObligationValue] = {}
    responses: set[str] = set()
    for policy in policies:
        responses.update(policy.responses)
        for name, value in policy.obligations.items():
            if name in FLAGS:
                combined[name] = bool(combined.get(name, False)) or bool(value)
            elif name in CALL_LIMITS:
                current = combined.get(name)
                items = {str(value)} | (set(str(current).split(",")) if current is not None else set())
                combined[name] = ",".join(sorted(items))
            else:
                current = combined.get(name)
                combined[name] = value if current is None else min(int(current), int(value))
    combined[ON_VIOLATION] = ",".join(sorted(responses or {DEFAULT_RESPONSE}))
    return dict(sorted(combined.items()))
