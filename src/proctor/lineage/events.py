"""Lineage events: the leaves of the Merkle log.

An event is one canonical JSON object (RFC 8785, see :mod:`proctor.canonical`)
of at most :data:`MAX_EVENT_BYTES` bytes with these common fields:

- ``v``: the event format version, an integer; only :data:`EVENT_VERSIONS` are accepted
  (an unknown version is rejected, never guessed at);
- ``type``: one of :data:`EVENT_TYPES`;
- ``time``: RFC 3339 UTC timestamp ending in ``Z``;
- ``node``: optional, the governor node that wrote it;
- ``parent``: optional ``{"index": N, "leaf_hash": "<base64>"}`` naming an earlier
  event this one follows from (authorization ancestry). The log checks on append
  that the index is earlier and the hash is that entry's leaf hash.

Type-specific fields are free-form within the canonical subset. An :class:`Event`
always holds a validated event and its canonical bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proctor.canonical import canonicalize, loads
from proctor.errors import EventError

__all__ = ["MAX_EVENT_BYTES", "EVENT_VERSIONS", "EVENT_TYPES", "ParentLink", "Event"]

MAX_EVENT_BYTES = 64 * 1024
EVENT_VERSIONS = frozenset({1})
EVENT_TYPES = frozenset(
    {
        "policy.activated",
        "principal.changed",
        "decision",
        "warrant.issued",
        "warrant.failed",
        "execution.started",
        "execution.verified",
        "execution.terminated",
        "execution.completed",
        "revocation",
        "approval",
        "approval.requested",
        "approval.decided",
        "witness.cosigned",
        "witness.alarm",
        "key.declared",
    }
)
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


def _b64_hash(text: Any, where: str) -> bytes:
    if type(text) is not str:
        raise EventError(f"{where}: expected a base64 string, found {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EventError(f"{where}: expected standard base64, found {text!r}") from e
    if len(raw) != 32 or base64.b64encode(raw).decode() != text:
        raise EventError(f"{where}: expected the base64 of a 32-byte SHA-256 hash, found {text!r}")
    return raw


@dataclass(frozen=True, slots=True)
class ParentLink:
    """A link to an earlier event: its log index and its RFC 9162 leaf hash."""

    index: int
    leaf_hash: bytes

    def to_json(self) -> dict[str, Any]:
        """The link as it appears in an event."""
        return {"index": self.index, "leaf_hash": base64.b64encode(self.leaf_hash).decode()}


def _parse_parent(value: Any) -> ParentLink:
    if type(value) is not dict or set(value) != {"index", "leaf_hash"}:
        raise EventError(f"parent: expected an object with exactly 'index' and 'leaf_hash', found {value!r}")
    index = value["index"]
    if type(index) is not int or index < 0:
        raise EventError(f"parent.index: expected a non-negative integer, found {index!r}")
    return ParentLink(index, _b64_hash(value["leaf_hash"], "parent.leaf_hash"))


@dataclass(frozen=True, slots=True)
class Event:
    """A validated lineage event and its canonical encoding.

    Build one with :meth:`from_dict` or :meth:`from_bytes`; both validate, so an
    ``Event`` you hold is always acceptable to the log (save for the parent link,
    which only the log can check).
    """

    data: Mapping[str, Any] = field(repr=False)
    raw: bytes

    @property
    def type(self) -> str:
        """The event type, e.g. ``"decision"``."""
        return str(self.data["type"])

    @property
    def parent(self) -> ParentLink | None:
        """The ancestry link, if the event has one."""
        value = self.data.get("parent")
        return None if value is None else _parse_parent(value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Validate an event object and encode it canonically.

        Raises:
            EventError: a common field is missing or malformed, or the version or
                type is unknown (subclasses say when the value is not canonical
                JSON or too large).
        """
        if not isinstance(data, Mapping):
            raise EventError(f"expected an event object, found {type(data).__name__}")
        plain = dict(data)
        raw = canonicalize(plain, limit=MAX_EVENT_BYTES)
        _validate(plain)
        return cls(plain, raw)

    @classmethod
    def from_bytes(cls, raw: bytes, *, strict: bool = False) -> Event:
        """Parse and validate an event from JSON bytes.

        Args:
            raw: JSON text.
            strict: require ``raw`` to be exactly the canonical encoding (as it
                must be for a stored leaf); otherwise it is re-encoded.

        Raises:
            EventError: as :meth:`from_dict`, or ``strict`` and not canonical.
        """
        value = loads(raw, limit=MAX_EVENT_BYTES)
        if type(value) is not dict:
            raise EventError(f"expected a JSON object, found {type(value).__name__}")
        event = cls.from_dict(value)
        if strict and event.raw != raw:
            raise EventError("expected canonical RFC 8785 JSON, found a different encoding")
        return event

    def to_bytes(self) -> bytes:
        """The canonical encoding (the Merkle leaf)."""
        return self.raw


def _real_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text[:19])  # the regex fixed the shape; this checks the date
    except ValueError:
        return False
    return True


def _validate(data: dict[str, Any]) -> None:
    v = data.get("v")
    if type(v) is not int or v not in EVENT_VERSIONS:
        raise EventError(f"v: expected an event format version in {sorted(EVENT_VERSIONS)}, found {v!r}")
    kind = data.get("type")
    if type(kind) is not str or kind not in EVENT_TYPES:
        raise EventError(f"type: expected one of {sorted(EVENT_TYPES)}, found {kind!r}")
    time = data.get("time")
    if type(time) is not str or not _RFC3339_UTC.fullmatch(time) or not _real_date(time):
        raise EventError(
            f"time: expected an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z, found {time!r}"
        )
    node = data.get("node")
    if node is not None and (type(node) is not str or not node):
        raise EventError(f"node: expected a non-empty string, found {node!r}")
    if "parent" in data:
        _parse_parent(data["parent"])
