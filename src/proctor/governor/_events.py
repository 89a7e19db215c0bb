"""Small builders shared by the governor's modules: timestamps, digests, principal events."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from proctor.canonical import canonicalize

__all__ = ["STATUS_AFTER", "attributes_digest", "digest", "principal_event", "rfc3339"]


_second: tuple[int, str] = (-1, "")  # the last whole second formatted (replaced, never changed)


def rfc3339(now: float) -> str:
    """Unix time as an RFC 3339 UTC timestamp with millisecond precision."""
    global _second  # noqa: PLW0603 - a one-entry cache, swapped atomically
    second, ms = divmod(int(now * 1000), 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{ms:03d}Z"


def digest(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attributes_digest(attrs: Mapping[str, str], zone: str) -> str:
    """The ``attributes_digest`` of a ``principal.changed`` event: the digest of the
    canonical JSON of ``{"attrs": attrs, "zone": zone}``."""
    return digest(canonicalize({"attrs": dict(attrs), "zone": zone}))


STATUS_AFTER = {"added": "active", "resumed": "active", "suspended": "suspended", "promoted": "active"}
"""The principal's status after each kind of ``principal.changed`` event (a principal
is promoted to admin only while active)."""


def principal_event(
    name: str,
    change: str,
    attrs: Mapping[str, str],
    zone: str,
    now: float,
    *,
    node: str,
    by: str,
    public_key: str | None = None,
) -> dict[str, Any]:
    """The ``principal.changed`` event of a principal's new state.

    It says everything its ``principals`` row must hold, so that the row can be
    checked against the log (:mod:`proctor.governor.consistency`): the attributes and
    zone (and, as before, their digest), the status after the change
    (:data:`STATUS_AFTER`; a change not listed there carries none, and the check
    reports the row) and, when given, the public key (every ``added`` event should
    carry it; later changes may repeat it, or carry a new one to rotate it).
    """
    event: dict[str, Any] = {
        "v": 1,
        "type": "principal.changed",
        "time": rfc3339(now),
        "node": node,
        "principal": name,
        "change": change,
        "attributes_digest": attributes_digest(attrs, zone),
        "attrs": dict(attrs),
        "zone": zone,
        "by": by,
    }
    status = STATUS_AFTER.get(change)
    if status is not None:
        event["status"] = status
    if public_key is not None:
        event["public_key"] = public_key
    return event
