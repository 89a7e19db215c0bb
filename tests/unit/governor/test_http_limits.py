"""The HTTP boundary's pure parts: head checks, duplicate JSON names, field combining,
stream slots and audience, and the file descriptor budget."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.authorization.requests import combine_fields
from proctor.errors import CanonicalizationError, ConfigError
from proctor.governor.limits import (
    MAX_BODY,
    MAX_HEAD_BYTES,
    BodyTooLargeError,
    HeadTooLargeError,
    RequestLimitError,
    check_head,
    parse_json,
)
from proctor.governor.server import plan_limits
from proctor.governor.stream import StreamAudience, StreamSlots


def scope(*fields: tuple[bytes, bytes], path: bytes = b"/v1/authorize") -> dict[str, Any]:
    return {"headers": list(fields), "raw_path": path, "query_string": b""}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((), 0),
        (((b"content-length", b"0"),), 0),
        (((b"content-length", str(MAX_BODY).encode()),), MAX_BODY),
        (((b"transfer-encoding", b"chunked"),), None),
    ],
    ids=["none", "zero", "at-limit", "chunked"],
)
def test_check_head_returns_the_declared_length(
    fields: tuple[tuple[bytes, bytes], ...], expected: int | None
) -> None:
    assert check_head(scope(*fields)) == expected


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (((b"content-length", str(MAX_BODY + 1).encode()),), BodyTooLargeError),
        (((b"content-length", b"1" * 40),), RequestLimitError),
        (((b"content-length", b"-1"),), RequestLimitError),
        (((b"content-length", b"1"), (b"content-length", b"1")), RequestLimitError),
        (((b"x-pad", b"a" * MAX_HEAD_BYTES),), HeadTooLargeError),
        (tuple((b"x-f%d" % i, b"1") for i in range(101)), HeadTooLargeError),
    ],
    ids=["over-limit", "huge-number", "negative", "twice", "long-head", "many-fields"],
)
def test_check_head_refuses(fields: tuple[tuple[bytes, bytes], ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        check_head(scope(*fields))


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":1}',
        b'{"a":{"b":1,"b":2}}',
        b'[{"x":"y"},{"z":1,"z":1}]',
        b'{"a\\"":1,"a\\"":2}',
        b'{"\\u0061":1,"a":2}',  # the same name, escaped differently
    ],
    ids=["top", "nested", "in-array", "escaped-quote", "escape-spelling"],
)
def test_duplicate_member_names_are_refused(text: bytes) -> None:
    with pytest.raises(CanonicalizationError, match="unique member names"):
        parse_json(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200)
@given(json_values)
def test_json_without_duplicates_round_trips(value: Any) -> None:
    assert parse_json(orjson.dumps(value)) == value


def test_repeated_fields_are_combined_never_resolved() -> None:
    fields = [(b"Signature", b"sig1=:a:"), (b"host", b"x"), (b"signature", b"sig1=:b:")]
    assert combine_fields(fields) == {"signature": "sig1=:a:, sig1=:b:", "host": "x"}


def test_stream_slots_cap_per_principal_and_in_total() -> None:
    slots = StreamSlots(total=3, per_principal=2)
    assert slots.acquire("alice") is None
    assert slots.acquire("alice") is None
    assert "alice" in str(slots.acquire("alice"))
    assert slots.acquire("bob") is None
    assert "3 streams" in str(slots.acquire("carol"))
    slots.release("alice")
    assert slots.acquire("carol") is None
    assert (slots.open(), slots.open("alice"), slots.open("carol")) == (3, 1, 1)
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(total=0)


def test_stream_audience() -> None:
    owners = {("warrant", "w_a"): "alice", ("warrant", "w_parent"): "bob", ("execution", "ex_a"): "alice"}
    calls: list[tuple[str, str]] = []

    def owner(kind: str, target: str) -> str | None:
        calls.append((kind, target))
        return owners.get((kind, target))

    audience = StreamAudience(owner)

    def sees(message: dict[str, Any], **kw: Any) -> bool:
        return audience.visible(message, caller="alice", admin=False, **kw)

    def rev(kind: str, target: Any) -> dict[str, Any]:
        return {"type": "revocation", "seq": 1, "kind": kind, "target": target}

    assert sees({"type": "policy", "seq": 1, "bundle": "sha256:x"})
    assert sees(rev("policy", "sha256:x"))
    assert sees(rev("principal", "alice"))
    assert not sees(rev("principal", "bob"))
    assert sees(rev("warrant", "w_a"))
    assert not sees(rev("warrant", "w_parent"))
    assert sees(rev("warrant", "w_parent"), chain={"w_a", "w_parent"})  # an ancestor of its own
    assert sees(rev("execution", "ex_a"))
    assert not sees(rev("execution", "ex_unknown"))
    assert not sees(rev("warrant", 5))
    assert not sees({"type": "other", "seq": 1})
    assert audience.visible(rev("principal", "bob"), caller="alice", admin=True)
    before = len(calls)
    assert sees(rev("warrant", "w_a"))
    assert len(calls) == before  # owners are cached


def test_a_stream_that_names_an_execution_gets_no_other_executions_revocation() -> None:
    owners = {("execution", "ex_a"): "alice", ("execution", "ex_b"): "alice", ("warrant", "w_b"): "alice"}
    audience = StreamAudience(lambda kind, target: owners.get((kind, target)))

    def rev(kind: str, target: str) -> dict[str, Any]:
        return {"type": "revocation", "seq": -1, "kind": kind, "target": target, "recorded": False}

    for admin in (False, True):

        def sees(message: dict[str, Any], admin: bool = admin) -> bool:
            return audience.visible(message, caller="alice", admin=admin, chain={"w_a"}, execution="ex_a")

        assert sees(rev("execution", "ex_a"))
        assert not sees(rev("execution", "ex_b"))  # a sibling of the same principal: not this one's
        # What may concern this execution indirectly still comes through.
        assert sees(rev("principal", "alice"))
        assert sees(rev("warrant", "w_a"))
        assert sees(rev("policy", "sha256:x"))
        assert sees({"type": "policy", "seq": 3, "bundle": "sha256:x"})
    # A stream that names none (the SDK's, the console's) still carries every one of its own.
    assert audience.visible(rev("execution", "ex_b"), caller="alice", admin=False)
    assert audience.visible(rev("warrant", "w_b"), caller="alice", admin=False)


@pytest.mark.parametrize(
    ("fd_limit", "reserve", "connections", "streams"),
    [
        (128, 32, 96, 48),
        (512, 128, 384, 192),
        (20000, 256, 19744, 1024),
        (1 << 20, 256, (1 << 20) - 256, 1024),
    ],
    ids=["128", "512", "20000", "max"],
)
def test_the_descriptor_budget_keeps_a_reserve(
    fd_limit: int, reserve: int, connections: int, streams: int
) -> None:
    limits = plan_limits(fd_limit)
    assert (limits.fd_reserve, limits.max_connections, limits.max_streams) == (reserve, connections, streams)
    assert limits.max_streams_per_principal <= limits.max_streams
    assert limits.max_streams <= limits.max_connections // 2  # the other half stays for short calls


def test_too_few_descriptors_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 128"):
        plan_limits(100)
