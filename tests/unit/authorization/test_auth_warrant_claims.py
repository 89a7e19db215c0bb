"""Warrant claims and requests validate themselves; argument digests are canonical."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from proctor.authorization.claims import (
    WarrantClaims,
    WarrantRequest,
    args_digest,
    new_warrant_id,
    valid_warrant_id,
)
from proctor.errors import WarrantError

DIGEST = "sha256:" + "ab" * 32


def _claims(**changes: Any) -> WarrantClaims:
    fields: dict[str, Any] = {
        "warrant_id": "wr_abc",
        "principal": "agent-1",
        "action": "exec",
        "resource": "/usr/bin/pg_dump",
        "args_digest": DIGEST,
        "zone": "",
        "executable_digest": "",
        "obligations": {"max_duration_s": 60},
        "not_before": 100,
        "expires": 200,
        "lease_ttl_ms": 30_000,
        "decision_index": 0,
        "parent": "",
    }
    fields.update(changes)
    return WarrantClaims(**fields)


def test_args_digest_is_sha256_of_the_canonical_argv() -> None:
    expected = "sha256:" + hashlib.sha256(b'["pg_dump","db1"]').hexdigest()
    assert args_digest(["pg_dump", "db1"]) == expected
    assert args_digest(("pg_dump", "db1")) == expected


def test_args_digest_of_tool_arguments_ignores_key_order() -> None:
    a = args_digest({"path": "/tmp/x", "mode": 1, "deep": {"b": True, "a": None}})
    b = args_digest({"deep": {"a": None, "b": True}, "mode": 1, "path": "/tmp/x"})
    assert (
        a
        == b
        == "sha256:" + hashlib.sha256(b'{"deep":{"a":null,"b":true},"mode":1,"path":"/tmp/x"}').hexdigest()
    )


def test_args_digest_distinguishes_argument_boundaries() -> None:
    assert args_digest(["rm", "-rf /"]) != args_digest(["rm", "-rf", "/"])


@pytest.mark.parametrize(
    "value",
    ["pg_dump db1", b"pg_dump", ["pg_dump", 1], {"x": float("nan")}, 42],
    ids=["command-string", "bytes", "non-string-arg", "nan", "int"],
)
def test_args_digest_refuses_what_is_not_an_argv_or_arguments(value: Any) -> None:
    with pytest.raises(WarrantError) as info:
        args_digest(value)
    assert info.value.reason == "malformed"


def test_new_warrant_ids_are_well_formed_and_distinct() -> None:
    ids = {new_warrant_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_warrant_id(i) and len(i) == 29 for i in ids)


def test_claims_json_round_trip() -> None:
    claims = _claims(obligations={"a": 1, "b": "x", "c": False}, parent="wr_parent", zone="prod")
    data = claims.to_json()
    assert data["obligations"] == {"a": 1, "b": "x", "c": False}
    assert WarrantClaims.from_json(data) == claims


def test_claims_are_immutable_and_hashable() -> None:
    claims = _claims()
    with pytest.raises(dataclasses.FrozenInstanceError):
        claims.resource = "/bin/sh"  # type: ignore[misc]
    with pytest.raises(TypeError):
        claims.obligations["max_duration_s"] = 10**6  # type: ignore[index]
    assert hash(claims) == hash(_claims())


def test_obligations_are_copied_on_construction() -> None:
    source: dict[str, int | str | bool] = {"max_duration_s": 60}
    claims = _claims(obligations=source)
    source["max_duration_s"] = 10**6
    assert claims.obligations["max_duration_s"] == 60


@pytest.mark.parametrize(
    "changes",
    [
        {"warrant_id": "ex_abc"},
        {"warrant_id": "wr_"},
        {"principal": "bad name"},
        {"action": "shell"},
        {"resource": "pg_dump"},
        {"resource": ""},
        {"resource": "/bin/x\n"},
        {"action": "mcp.call", "resource": "filesystem"},
        {"args_digest": "sha256:AB"},
        {"args_digest": "md5:" + "0" * 32},
        {"zone": "pro d"},
        {"executable_digest": "sha1:" + "0" * 40},
        {"obligations": {"Max": 1}},
        {"obligations": {"x": 1.5}},
        {"obligations": {"x": None}},
        {"obligations": {"x": 2**60}},
        {"obligations": [("x", 1)]},
        {"not_before": -1},
        {"not_before": 100, "expires": 100},
        {"expires": 10**13},
        {"not_before": True},
        {"lease_ttl_ms": 0},
        {"decision_index": -1},
        {"parent": "parent"},
        {"parent": "wr_abc"},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}"[:40] for k, v in c.items()),
)
def test_invalid_claims_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(WarrantError) as info:
        _claims(**changes)
    assert info.value.reason == "malformed"


def test_from_json_refuses_unknown_and_missing_fields() -> None:
    data = _claims().to_json()
    with pytest.raises(WarrantError):
        WarrantClaims.from_json({**data, "extra": 1})
    del data["zone"]
    with pytest.raises(WarrantError):
        WarrantClaims.from_json(data)


def test_request_validates_itself() -> None:
    WarrantRequest("mcp.call", "filesystem/write_file", DIGEST, "prod", "")
    WarrantRequest("tool.call", "send_email", DIGEST)
    with pytest.raises(WarrantError):
        WarrantRequest("exec", "relative/path", DIGEST)
    with pytest.raises(WarrantError):
        WarrantRequest("exec", "/bin/true", "sha256:xyz")
