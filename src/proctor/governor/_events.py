"""Small builders shared by the governor's modules: timestamps, digests, principal events."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from proctor.lineage.canonical import canonicalize

__all__ = ["rfc3339", "digest", "principal_event"]


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
    return "sha256:" + hashlib.sha256(data).hexdigest()


def principal_event(
    name: str, change: str, attrs: Mapping[str, str], zone: str, now: float, *, node: str, by: str
) -> dict[str, Any]:
    attrs_digest = digest(canonicalize({"attrs": dict(attrs), "zone": zone}))
    return {
        "v": 1,
        "type": "principal.changed",
        "time": rfc3339(now),
        "node": node,
        "principal": name,
        "change": change,
        "attributes_digest": attrs_digest,
        "by": by,
    }
