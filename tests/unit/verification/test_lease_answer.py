"""Signed lease answers (proctor.verification.lease_answer), rule by rule: what the
enforcer accepts as the governor's word that its lease was granted or renewed."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.authorization.keys import PrincipalKey
from proctor.canonical import canonicalize
from proctor.errors import VerificationError
from proctor.verification.lease_answer import (
    LEASE_ANSWER_CONTEXT,
    LEASE_SIG_FIELD,
    LeaseAnswer,
    lease_answer_bytes,
    named_start,
    request_nonce,
    sign_lease_answer,
    verify_lease_answer,
)

KEY = PrincipalKey.generate("warrant-root")
OTHER = PrincipalKey.generate("copied-public-keys")
NONCE = "n0nce-of-the-request"
EX = "ex_aaaaaaaaaaaaaaaaaaaaaaaa"
W = "w_0123456789"
TTL = 2000


def lease(**changes: Any) -> LeaseAnswer:
    fields: dict[str, Any] = {
        "execution": EX,
        "kind": "renew",
        "nonce": NONCE,
        "ok": True,
        "terminate": "",
        "lease_expires_ms": 1_700_000_002_000,
        "lease_ttl_ms": TTL,
        "warrant": W,
    }
    return LeaseAnswer(**{**fields, **changes})


def body_of(answer: LeaseAnswer, key: PrincipalKey = KEY) -> dict[str, Any]:
    """The JSON a governor sends: the answer's fields (no execution, kind or nonce for a
    renewal: the enforcer knows them), the signature and the informative rest."""
    body: dict[str, Any] = {k: v for k, v in answer.to_json().items() if k not in ("kind", "nonce")}
    if answer.kind == "renew":
        del body["execution"]
    body["bundle"] = "sha256:whatever"
    body[LEASE_SIG_FIELD] = sign_lease_answer(answer, key.sign)
    return body


def verify(body: Any, **changes: Any) -> LeaseAnswer:
    bound: dict[str, Any] = {
        "kind": "renew",
        "execution": EX,
        "nonce": NONCE,
        "warrant": W,
        "lease_ttl_ms": TTL,
        "warrant_key": KEY.public_key,
    }
    return verify_lease_answer(body, **{**bound, **changes})


def test_a_renewal_signed_for_this_request_verifies() -> None:
    assert verify(body_of(lease())) == lease()


def test_the_signed_bytes_are_the_context_then_the_canonical_object() -> None:
    answer = lease()
    assert lease_answer_bytes(answer) == LEASE_ANSWER_CONTEXT + canonicalize(answer.to_json())
    assert lease_answer_bytes(answer).startswith(b"proctor/lease-answer/v1\n{")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lease_expires_ms", 1_700_000_999_000),
        ("lease_ttl_ms", 60_000),
        ("warrant", "w_another"),
        ("terminate", "revoked"),
    ],
    ids=["tampered-expiry", "tampered-ttl", "tampered-warrant", "tampered-terminate"],
)
def test_a_tampered_answer_does_not_verify(field: str, value: Any) -> None:
    body = body_of(lease())
    body[field] = value
    with pytest.raises(VerificationError, match="not signed by the warrant key"):
        verify(body)


def test_a_replayed_answer_to_another_request_does_not_verify() -> None:
    old = body_of(lease(nonce="an-earlier-request"))
    with pytest.raises(VerificationError, match="not signed by the warrant key for this request"):
        verify(old)


def test_an_answer_for_another_execution_does_not_verify() -> None:
    theirs = body_of(lease(execution="ex_bbbbbbbbbbbbbbbbbbbbbbbb"))
    with pytest.raises(VerificationError, match="another execution"):
        verify(theirs)


def test_a_start_answer_is_not_a_renewal_answer() -> None:
    start = body_of(lease(kind="start"))
    with pytest.raises(VerificationError, match="not signed"):
        verify(start)


def test_an_unsigned_answer_is_refused() -> None:
    body = body_of(lease())
    del body[LEASE_SIG_FIELD]
    with pytest.raises(VerificationError, match="unsigned"):
        verify(body)


def test_an_answer_signed_by_another_key_is_refused() -> None:
    with pytest.raises(VerificationError, match="not signed by the warrant key"):
        verify(body_of(lease(), key=OTHER))


@pytest.mark.parametrize(
    ("signature", "says"),
    [
        (12, "expected base64 text"),
        ("not base64!", "expected base64"),
        (base64.b64encode(b"\x00" * 63).decode(), "64-byte"),
        (base64.b64encode(b"\x00" * 64).decode().rstrip("="), "expected base64"),
    ],
    ids=["not-text", "not-base64", "short", "unpadded"],
)
def test_a_malformed_signature_is_refused_saying_what_was_expected(signature: Any, says: str) -> None:
    body = body_of(lease())
    body[LEASE_SIG_FIELD] = signature
    with pytest.raises(VerificationError, match=says):
        verify(body)


def test_a_granted_lease_is_for_the_verified_warrant_only() -> None:
    # Signed by the right key for this request, but for another warrant's lease.
    with pytest.raises(VerificationError, match="expected warrant"):
        verify(body_of(lease(warrant="w_another")))


def test_a_granted_lease_has_the_warrants_ttl_not_the_answers() -> None:
    with pytest.raises(VerificationError, match="expected the warrant's lease TTL 2000 ms, found 600000 ms"):
        verify(body_of(lease(lease_ttl_ms=600_000)))


def test_a_signed_refusal_verifies_whatever_its_ttl() -> None:
    refusal = lease(ok=False, terminate="revoked", lease_expires_ms=0, warrant="")
    assert verify(body_of(refusal)).ok is False


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("ok", 1, "expected ok to be bool"),
        ("ok", None, "expected ok to be bool"),
        ("lease_expires_ms", "1700000002000", "expected lease_expires_ms to be int"),
        ("lease_ttl_ms", True, "expected lease_ttl_ms to be int"),
        ("lease_ttl_ms", -1, "expected lease_ttl_ms in 0..2"),
        ("warrant", None, "expected warrant to be str"),
    ],
    ids=["ok-int", "ok-missing", "expiry-text", "ttl-bool", "ttl-negative", "warrant-missing"],
)
def test_a_field_of_the_wrong_type_is_refused_before_any_signature_check(
    field: str, value: Any, says: str
) -> None:
    body = body_of(lease())
    body[field] = value
    with pytest.raises(VerificationError, match=says):
        verify(body)


def test_an_answer_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(VerificationError, match="expected a JSON object, found list"):
        verify([1, 2])


def test_a_start_answer_defaults_to_ok() -> None:
    start = lease(kind="start")
    body = body_of(start)
    del body["ok"]  # a start answer has no "ok": it was granted
    assert verify(body, kind="start").kind == "start"


@pytest.mark.parametrize(
    "nonce", ["short", "x" * 129, "has space!", ""], ids=["short", "long", "not-base64url", "empty"]
)
def test_a_lease_answer_needs_a_request_nonce(nonce: str) -> None:
    with pytest.raises(VerificationError, match="nonce of 8-128 base64url"):
        lease(nonce=nonce)


def test_the_request_nonce_is_read_from_signature_input() -> None:
    field = (
        'sig1=("@method" "@target-uri" "content-digest" "content-type");created=1700000000;'
        'nonce="abcdefgh12345678";keyid="alice";alg="ed25519"'
    )
    assert request_nonce(field) == "abcdefgh12345678"
    with pytest.raises(VerificationError, match="expected one nonce, found 0"):
        request_nonce("")
    with pytest.raises(VerificationError, match="expected one nonce, found 2"):
        request_nonce(field + ';nonce="zzzzzzzzzzzz"')


@settings(max_examples=50, deadline=None)
@given(
    expires=st.integers(0, 2**53 - 1),
    nonce=st.from_regex(r"[A-Za-z0-9_-]{8,128}", fullmatch=True),
    flip=st.integers(0, 64 * 8 - 1),
)
def test_sign_verify_round_trip_and_every_flipped_signature_bit_fails(
    expires: int, nonce: str, flip: int
) -> None:
    answer = lease(nonce=nonce, lease_expires_ms=expires)
    body = body_of(answer)
    assert verify(body, nonce=nonce) == answer
    raw = bytearray(base64.b64decode(body[LEASE_SIG_FIELD]))
    raw[flip // 8] ^= 1 << (flip % 8)
    body[LEASE_SIG_FIELD] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(VerificationError):
        verify(body, nonce=nonce)


@pytest.mark.parametrize(
    ("answer", "warrant", "named"),
    [
        ({"execution": "ex_abc-1", "warrant": "wr_1"}, "wr_1", "ex_abc-1"),
        ({"execution": "ex_abc", "warrant": "wr_2"}, "wr_1", None),  # another warrant's start
        ({"execution": "ex_abc"}, "wr_1", None),  # names no warrant
        ({"execution": "ex_a/renew", "warrant": "wr_1"}, "wr_1", None),  # not an id: into a path
        ({"execution": "ex_a?x=1", "warrant": "wr_1"}, "wr_1", None),
        ({"execution": "x" * 65, "warrant": "wr_1"}, "wr_1", None),
        ({"execution": 7, "warrant": "wr_1"}, "wr_1", None),
        ({"execution": "ex_abc", "warrant": 1}, 1, None),  # a warrant is a string
        (["ex_abc"], "wr_1", None),
    ],
)
def test_an_unaccepted_start_names_only_an_id_under_its_warrant(
    answer: Any, warrant: Any, named: Any
) -> None:
    assert named_start(answer, warrant) == named
