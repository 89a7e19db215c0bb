"""DSSE envelopes: the spec's PAE vector, round trips, and every rejection of open_envelope."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from proctor.errors import VerificationError
from proctor.lineage.dsse import (
    MAX_ENVELOPE_SIGNATURES,
    envelope_keyid,
    open_envelope,
    pae,
    sign_envelope,
)
from proctor.note import NoteSigner, generate_signer

TYPE = "application/vnd.in-toto+json"
SIGNER = generate_signer("test.example/log")
OTHER = generate_signer("test.example/log")
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1"}'


def test_pae_matches_the_dsse_specification_example() -> None:
    # DSSE protocol.md, "Signature definition": the worked example.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", "\u2014".encode()) == "DSSEv1 3 t\u00e9 3 \u2014".encode()
    assert pae("", b"") == b"DSSEv1 0  0 "


def envelope(signer: NoteSigner = SIGNER, payload: bytes = PAYLOAD) -> dict[str, Any]:
    return sign_envelope(payload, payload_type=TYPE, signer=signer)


def test_round_trip_returns_the_payload() -> None:
    env = envelope()
    assert env["payloadType"] == TYPE
    assert base64.b64decode(env["payload"]) == PAYLOAD
    assert (
        env["signatures"][0]["keyid"]
        == envelope_keyid(SIGNER)
        == "+".join(SIGNER.verifier.to_string().split("+")[:2])
    )
    assert open_envelope(env, payload_type=TYPE, verifier=SIGNER.verifier) == PAYLOAD


def test_signature_is_over_pae_not_the_payload() -> None:
    sig = base64.b64decode(envelope()["signatures"][0]["sig"])
    assert SIGNER.verifier.verify(pae(TYPE, PAYLOAD), sig)
    assert not SIGNER.verifier.verify(PAYLOAD, sig)


def test_foreign_signatures_are_ignored_when_one_by_the_trusted_key_verifies() -> None:
    env = envelope()
    env["signatures"].insert(0, envelope(OTHER)["signatures"][0])
    assert open_envelope(env, payload_type=TYPE, verifier=SIGNER.verifier) == PAYLOAD


def _mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    env = copy.deepcopy(envelope())
    target: Any = env
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return env


def _flip_last(text: str) -> str:
    # Changes only the padding bits of the last base64 digit: same bytes, other text.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = text.rstrip("=")
    i = alphabet.index(body[-1])
    return body[:-1] + alphabet[i ^ 1] + text[len(body) :]


GOOD = envelope()
BINARY = envelope(payload=b"\xfb\xef\xbe\xff")  # base64 "++++/w==": has URL-safe counterparts
REJECTIONS = [
    ("not-an-object", ["x"], "expected a DSSE envelope"),
    ("unknown-field", {**GOOD, "extra": 1}, "expected a DSSE envelope"),
    ("missing-field", _mutate(("payload",), KeyError), "expected a DSSE envelope"),
    ("no-signatures", _mutate(("signatures",), []), "expected 1 to"),
    ("signatures-not-a-list", _mutate(("signatures",), {}), "expected 1 to"),
    (
        "too-many-signatures",
        _mutate(("signatures",), GOOD["signatures"] * (MAX_ENVELOPE_SIGNATURES + 1)),
        "expected 1 to",
    ),
    ("signature-unknown-field", _mutate(("signatures", 0, "x"), 1), "exactly 'keyid' and 'sig'"),
    ("signature-keyid-not-string", _mutate(("signatures", 0, "keyid"), 7), "keyid: expected a string"),
    ("wrong-payload-type", _mutate(("payloadType",), "application/json"), "expected payloadType"),
    ("payload-type-not-string", _mutate(("payloadType",), None), "expected payloadType"),
    ("payload-not-base64", _mutate(("payload",), "!!!"), "expected standard base64"),
    ("payload-url-safe", {**BINARY, "payload": "----_w=="}, "expected standard base64"),
    ("payload-unpadded", {**BINARY, "payload": "++++/w"}, "expected standard base64"),
    ("payload-padding-bits", _mutate(("payload",), _flip_last(GOOD["payload"])), "canonical"),
    ("payload-changed", _mutate(("payload",), base64.b64encode(b"{}").decode()), "invalid signature"),
    (
        "sig-padding-bits",
        _mutate(("signatures", 0, "sig"), _flip_last(GOOD["signatures"][0]["sig"])),
        "canonical",
    ),
    ("sig-truncated", _mutate(("signatures", 0, "sig"), base64.b64encode(bytes(63)).decode()), "invalid"),
    (
        "sig-of-other-key",
        _mutate(("signatures", 0, "sig"), envelope(OTHER)["signatures"][0]["sig"]),
        "invalid",
    ),
    ("keyid-of-other-key", _mutate(("signatures", 0, "keyid"), envelope_keyid(OTHER)), "no signature by"),
    ("keyid-lone-surrogate", _mutate(("signatures", 0, "keyid"), "\ud800"), "no signature by"),
]


@pytest.mark.parametrize(("env", "message"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_open_envelope_fails_closed(env: Any, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        open_envelope(env, payload_type=TYPE, verifier=SIGNER.verifier)


def test_a_bad_signature_by_the_trusted_key_is_an_error_even_next_to_a_good_one() -> None:
    env = envelope()
    bad = dict(env["signatures"][0], sig=base64.b64encode(bytes(64)).decode())
    env["signatures"] = [env["signatures"][0], bad]
    with pytest.raises(VerificationError, match=r"signatures\[1\]: invalid signature"):
        open_envelope(env, payload_type=TYPE, verifier=SIGNER.verifier)


def test_sign_envelope_refuses_an_empty_type_and_a_huge_payload() -> None:
    with pytest.raises(ValueError, match="payload type"):
        sign_envelope(PAYLOAD, payload_type="", signer=SIGNER)
    with pytest.raises(ValueError, match="at most"):
        sign_envelope(bytes((1 << 20) + 1), payload_type=TYPE, signer=SIGNER)
