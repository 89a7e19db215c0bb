"""DSSE envelopes (Dead Simple Signing Envelope v1) signed with the log's Ed25519 key.

The envelope (https://github.com/secure-systems-lab/dsse, ``envelope.md``)::

    {"payload": "<base64(body)>", "payloadType": "<type>",
     "signatures": [{"keyid": "<key name>+<8 hex key id>", "sig": "<base64(signature)>"}]}

The signature is over the pre-authentication encoding (``protocol.md``)::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with ``LEN`` the byte length as ASCII decimal without leading zeros, ``type`` as UTF-8
and ``body`` the raw payload bytes. Signing the PAE, never the payload alone, binds the
payload type: a signature made for one kind of document never verifies as another.

proctor's profile of DSSE, stricter than the specification allows and on purpose,
because every byte of a receipt must be significant (a changed byte must fail):

- base64 is the standard alphabet (RFC 4648 §4), padded and canonical: the spec lets a
  producer choose standard or URL-safe, and proctor always chooses standard, so a
  verifier of proctor envelopes refuses the other and refuses non-zero padding bits;
- the envelope and each signature carry exactly the fields above (DSSE lets consumers
  ignore unknown fields; proctor fails closed on them, as on every unknown field);
- ``keyid`` is the signed-note key name and key ID of the signer (``name+hexid``);
  it is only a hint for choosing the key, never trusted by itself.

Verification follows DSSE ``protocol.md`` "Verify": the signature is checked over the
PAE *before* the payload is handed to anything that parses it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from proctor.errors import VerificationError
from proctor.note import NoteSigner, NoteVerifier

__all__ = [
    "PAE_PREFIX",
    "MAX_ENVELOPE_SIGNATURES",
    "MAX_PAYLOAD_BYTES",
    "pae",
    "envelope_keyid",
    "sign_envelope",
    "open_envelope",
]

PAE_PREFIX = b"DSSEv1"
MAX_ENVELOPE_SIGNATURES = 16
"""The most signatures an envelope may carry, so that one cannot make a verifier work unboundedly."""
MAX_PAYLOAD_BYTES = 1 << 20
"""The largest payload accepted (1 MiB; a receipt's statement is a few hundred bytes)."""

_ED25519_SIG = 64
_ENVELOPE_KEYS = frozenset({"payload", "payloadType", "signatures"})
_SIGNATURE_KEYS = frozenset({"keyid", "sig"})


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding (DSSE ``protocol.md``, "Signature definition").

    Args:
        payload_type: the payload's type URI; encoded as UTF-8.
        payload: the serialized body, raw bytes.

    Returns:
        ``b"DSSEv1 " + LEN(type) + b" " + type + b" " + LEN(body) + b" " + body``.
    """
    kind = payload_type.encode()
    return b"%s %d %s %d %s" % (PAE_PREFIX, len(kind), kind, len(payload), payload)


def envelope_keyid(key: NoteSigner | NoteVerifier) -> str:
    """The ``keyid`` proctor writes for a signed-note key: ``<name>+<8 hex digits>``.

    Args:
        key: the signer or verifier.

    Returns:
        The key name and key ID, as in the key's signed-note verifier string.
    """
    return f"{key.name}+{key.key_id.hex()}"


def _utf8(text: str) -> bytes:
    # JSON text may hold lone surrogates; they must compare unequal, not raise.
    return text.encode("utf-8", "surrogatepass")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str, limit: int) -> bytes:
    # Canonical standard base64 only: any other spelling of the same bytes is refused,
    # so that no byte of an envelope can change without the verification failing.
    if type(text) is not str:
        raise VerificationError(f"{what}: expected a base64 string, found {type(text).__name__}")
    if len(text) > 4 * ((limit + 2) // 3):
        raise VerificationError(
            f"{what}: expected at most {limit} bytes, found {len(text)} base64 characters"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VerificationError(f"{what}: expected standard base64 (RFC 4648 §4), found {text[:40]!r}") from e
    if _b64(raw) != text:
        raise VerificationError(f"{what}: expected the canonical padded base64 encoding, found {text[:40]!r}")
    return raw


def sign_envelope(payload: bytes, *, payload_type: str, signer: NoteSigner) -> dict[str, Any]:
    """Sign ``payload`` as a DSSE envelope with one Ed25519 signature.

    Args:
        payload: the serialized body.
        payload_type: its type URI, e.g. ``application/vnd.in-toto+json``.
        signer: the signing key (the log's note signer).

    Returns:
        The envelope as a JSON object.

    Raises:
        ValueError: the payload is larger than :data:`MAX_PAYLOAD_BYTES` or the type is empty.
    """
    if not payload_type:
        raise ValueError("expected a non-empty payload type")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"expected a payload of at most {MAX_PAYLOAD_BYTES} bytes, found {len(payload)}")
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payload": _b64(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": envelope_keyid(signer), "sig": _b64(sig)}],
    }


def open_envelope(envelope: Any, *, payload_type: str, verifier: NoteVerifier) -> bytes:
    """Verify a DSSE envelope and return its payload.

    Steps (DSSE ``protocol.md``, "Verify", with proctor's profile above):
      1. The envelope has exactly ``payload``, ``payloadType`` and ``signatures``; there
         are 1 to :data:`MAX_ENVELOPE_SIGNATURES` signatures, each exactly ``keyid`` and
         ``sig``, all strings.
      2. ``payloadType`` is the expected type.
      3. The payload is canonical standard base64 of at most :data:`MAX_PAYLOAD_BYTES`.
      4. Every signature whose ``keyid`` names ``verifier`` is a valid Ed25519 signature
         over ``PAE(payloadType, payload)``; one that is not is an error, not an
         unknown signature. Signatures under other key IDs are not trusted and ignored.
      5. At least one signature by ``verifier`` verified.

    Args:
        envelope: the decoded JSON envelope.
        payload_type: the type the caller expects.
        verifier: the one trusted key.

    Returns:
        The payload bytes, authenticated; only now may they be parsed.

    Raises:
        VerificationError: any step fails (the message names what was expected and found).
    """
    # Step 1
    if type(envelope) is not dict or set(envelope) != _ENVELOPE_KEYS:
        found = sorted(envelope) if type(envelope) is dict else type(envelope).__name__
        raise VerificationError(f"expected a DSSE envelope with keys {sorted(_ENVELOPE_KEYS)}, found {found}")
    signatures = envelope["signatures"]
    if type(signatures) is not list or not 1 <= len(signatures) <= MAX_ENVELOPE_SIGNATURES:
        raise VerificationError(
            f"expected 1 to {MAX_ENVELOPE_SIGNATURES} signatures in the envelope, found "
            + (str(len(signatures)) if type(signatures) is list else type(signatures).__name__)
        )
    for i, entry in enumerate(signatures):
        if type(entry) is not dict or set(entry) != _SIGNATURE_KEYS:
            raise VerificationError(
                f"signatures[{i}]: expected exactly 'keyid' and 'sig', found {entry!r:.80}"
            )
        if type(entry["keyid"]) is not str:
            raise VerificationError(f"signatures[{i}].keyid: expected a string, found {entry['keyid']!r:.40}")
    # Step 2
    kind = envelope["payloadType"]
    if type(kind) is not str or not hmac.compare_digest(_utf8(kind), _utf8(payload_type)):
        raise VerificationError(f"expected payloadType {payload_type!r}, found {kind!r:.80}")
    # Step 3
    payload = _unb64(envelope["payload"], "payload", MAX_PAYLOAD_BYTES)
    # Step 4
    message = pae(payload_type, payload)
    wanted = _utf8(envelope_keyid(verifier))
    verified = 0
    for i, entry in enumerate(signatures):
        if not hmac.compare_digest(_utf8(entry["keyid"]), wanted):
            continue
        sig = _unb64(entry["sig"], f"signatures[{i}].sig", _ED25519_SIG)
        if len(sig) != _ED25519_SIG or not verifier.verify(message, sig):
            raise VerificationError(f"signatures[{i}]: invalid signature by trusted key {wanted.decode()}")
        verified += 1
    # Step 5
    if not verified:
        raise VerificationError(f"no signature by the trusted key {wanted.decode()} on this envelope")
    return payload
