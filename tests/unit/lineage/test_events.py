"""Lineage events: common fields, versions, types, parent links, size."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.errors import EventError, EventSizeError
from proctor.lineage.events import MAX_EVENT_BYTES, Event

B64_HASH = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def ev(**extra: Any) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z", **extra}


def test_valid_event_is_canonical() -> None:
    e = Event.from_dict(ev(node="gov-1", b=2, a=1))
    assert e.raw == b'{"a":1,"b":2,"node":"gov-1","time":"2026-11-26T06:00:00Z","type":"decision","v":1}'
    assert e.type == "decision"
    assert e.parent is None
    assert Event.from_bytes(e.raw, strict=True) == e


def test_parent_link_parses() -> None:
    e = Event.from_dict(ev(parent={"index": 3, "leaf_hash": B64_HASH}))
    assert e.parent is not None
    assert e.parent.index == 3
    assert e.parent.to_json() == {"index": 3, "leaf_hash": B64_HASH}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "decision", "time": "2026-11-26T06:00:00Z"}, "v: expected an event format version"),
        (ev(v=2), "v: expected an event format version"),
        (ev(v="1"), "v: expected"),
        (ev(v=True), "v: expected"),
        (ev(type="made.up"), "type: expected one of"),
        (ev(type=None), "type: expected one of"),
        (ev(time="2026-11-26 06:00:00"), "time: expected an RFC 3339"),
        (ev(time="2026-11-26T06:00:00+01:00"), "time: expected an RFC 3339"),
        (ev(time="2026-13-45T06:00:00Z"), "time: expected an RFC 3339"),
        (ev(node=""), "node: expected a non-empty string"),
        (ev(parent=3), "parent: expected an object"),
        (ev(parent={"index": 1}), "parent: expected an object"),
        (ev(parent={"index": -1, "leaf_hash": B64_HASH}), "parent.index"),
        (ev(parent={"index": True, "leaf_hash": B64_HASH}), "parent.index"),
        (ev(parent={"index": 1, "leaf_hash": "AAAA"}), "32-byte"),
        (ev(parent={"index": 1, "leaf_hash": "not base64!"}), "base64"),
        (ev(parent={"index": 1, "leaf_hash": B64_HASH, "x": 1}), "exactly"),
    ],
    ids=[
        "no-version",
        "unknown-version",
        "string-version",
        "bool-version",
        "unknown-type",
        "null-type",
        "space-time",
        "offset-time",
        "impossible-date",
        "empty-node",
        "parent-int",
        "parent-missing-hash",
        "parent-negative",
        "parent-bool",
        "parent-short-hash",
        "parent-bad-b64",
        "parent-extra-key",
    ],
)
def test_invalid_events_are_rejected(event: dict[str, Any], expected: str) -> None:
    with pytest.raises(EventError, match=expected):
        Event.from_dict(event)


def test_oversize_event_is_rejected() -> None:
    with pytest.raises(EventSizeError):
        Event.from_dict(ev(blob="x" * MAX_EVENT_BYTES))


def test_strict_parse_rejects_non_canonical_bytes() -> None:
    raw = b'{"v":1, "type":"decision","time":"2026-11-26T06:00:00Z"}'
    assert Event.from_bytes(raw).raw != raw
    with pytest.raises(EventError, match="canonical"):
        Event.from_bytes(raw, strict=True)


@pytest.mark.parametrize(
    "raw", [b"[]", b'"x"', b"null", b"not json"], ids=["array", "string", "null", "text"]
)
def test_non_object_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(EventError):
        Event.from_bytes(raw)
