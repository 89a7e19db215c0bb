"""Signed lease answers: the governor's word that a lease was granted or renewed.

The governor answers ``POST /v1/executions`` (``start``) and ``POST
/v1/executions/{id}/renew`` (``renew``) with a signature by its **warrant key** (the
Ed25519 key whose public half the enforcer already trusts: it verified the warrant
with it) over a :class:`LeaseAnswer`. Without it, anyone on the path, or a process that
copied the deployment's public keys, could answer every renewal ``{"ok": true}`` and
keep a revoked execution alive (ADR 0017).

Signed bytes (rule 1): :data:`LEASE_ANSWER_CONTEXT` followed by the RFC 8785
canonical JSON (:mod:`proctor.canonical`) of::

    {"execution", "kind", "lease_expires_ms", "lease_ttl_ms", "nonce", "ok",
     "terminate", "warrant"}

The context keeps these bytes apart from anything else the warrant key signs (Biscuit
blocks are protobuf, and their signed payload ends in a 4-byte algorithm and a 32-byte
public key, never in ``}``). The signature travels base64-encoded as ``lease_sig``
beside the answer's other fields.

Verification (:func:`verify_lease_answer`), numbered as the code cites it:

1. The answer is a JSON object with ``lease_sig``: the canonical base64 of 64 bytes.
2. The signed object is rebuilt from the **enforcer's own** execution id, answer kind
   and request nonce, and from the answer's ``ok``, ``terminate``,
   ``lease_expires_ms``, ``lease_ttl_ms`` and ``warrant`` (each of its JSON type): an
   answer for another execution, another kind or another request (a replay) does not
   verify.
3. The Ed25519 signature verifies under the trusted warrant key.
4. A granted lease is for the warrant the enforcer verified and for its TTL (the
   warrant's own ``lease_ttl_ms``), compared in constant time and exactly.

Pure: no I/O, no clock. Every failure raises :class:`~proctor.errors.VerificationError`
saying what was expected and what was found.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.canonical import MAX_SAFE_INTEGER, canonicalize
from proctor.errors import VerificationError

__all__ = [
    "LEASE_ANSWER_CONTEXT",
    "LEASE_SIG_FIELD",
    "LeaseAnswer",
    "lease_answer_bytes",
    "named_start",
    "request_nonce",
    "sign_lease_answer",
    "verify_lease_answer",
]

LEASE_ANSWER_CONTEXT = b"proctor/lease-answer/v1\n"
"""The domain separator in front of every signed lease answer (rule 1)."""

LEASE_SIG_FIELD = "lease_sig"
"""The answer's field that carries the signature, base64 (RFC 4648 §4, padded)."""

_EXECUTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the governor's ids; one goes into a path

Kind = Literal["start", "renew"]
_KINDS = ("start", "renew")
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")  # as authorization.requests accepts
_SIG_NONCE = re.compile(r';nonce="([A-Za-z0-9_-]{8,128})"')


@dataclass(frozen=True)
class LeaseAnswer:
    """What the governor signs about one start or renewal. Validated when built.

    Attributes:
        execution: the execution's id.
        kind: ``"start"`` or ``"renew"``.
        nonce: the nonce of the signed request this answers (8-128 base64url chars).
        ok: whether the lease was granted (a start always is).
        terminate: why the execution must die when not ``ok`` (``""`` when ``ok``).
        lease_expires_ms: the lease's new end, governor unix milliseconds (``0`` when
            not ``ok``).
        lease_ttl_ms: the lease's TTL, milliseconds.
        warrant: the id of the warrant the execution runs under.
    """

    execution: str
    kind: Kind
    nonce: str
    ok: bool
    terminate: str
    lease_expires_ms: int
    lease_ttl_ms: int
    warrant: str

    def __post_init__(self) -> None:
        """Refuse a malformed answer (the types are checked exactly: no ``True`` as 1)."""
        _expect("execution", self.execution, str)
        if not self.execution:
            raise VerificationError("lease answer: expected an execution id, found an empty one")
        if self.kind not in _KINDS:
            raise VerificationError(f"lease answer: expected kind start or renew, found {self.kind!r}")
        _expect("nonce", self.nonce, str)
        if _NONCE.fullmatch(self.nonce) is None:
            raise VerificationError(
                f"lease answer: expected a nonce of 8-128 base64url characters, found {self.nonce!r}"
            )
        _expect("ok", self.ok, bool)
        _expect("terminate", self.terminate, str)
        _expect("warrant", self.warrant, str)
        for name in ("lease_expires_ms", "lease_ttl_ms"):
            value = getattr(self, name)
            _expect(name, value, int)
            if not 0 <= value <= MAX_SAFE_INTEGER:
                raise VerificationError(f"lease answer: expected {name} in 0..2**53-1, found {value}")

    def to_json(self) -> dict[str, Any]:
        """The signed object (rule 1), without the context."""
        return {
            "execution": self.execution,
            "kind": self.kind,
            "lease_expires_ms": self.lease_expires_ms,
            "lease_ttl_ms": self.lease_ttl_ms,
            "nonce": self.nonce,
            "ok": self.ok,
            "terminate": self.terminate,
            "warrant": self.warrant,
        }


def lease_answer_bytes(answer: LeaseAnswer) -> bytes:
    """The bytes signed for ``answer`` (rule 1).

    Args:
        answer: the lease answer.

    Returns:
        :data:`LEASE_ANSWER_CONTEXT` then the canonical JSON of :meth:`LeaseAnswer.to_json`.
    """
    return LEASE_ANSWER_CONTEXT + canonicalize(answer.to_json())


def sign_lease_answer(answer: LeaseAnswer, sign: Callable[[bytes], bytes]) -> str:
    """The ``lease_sig`` of ``answer`` (the governor's side).

    Args:
        answer: the lease answer.
        sign: Ed25519 signing with the warrant key (``PrincipalKey.sign``).

    Returns:
        The signature, base64 (padded).
    """
    return base64.b64encode(sign(lease_answer_bytes(answer))).decode()


def request_nonce(signature_input: str) -> str:
    """The nonce of a signed request, from its ``Signature-Input`` field (RFC 9421).

    Args:
        signature_input: the field's value, as sent (enforcer) or as verified (governor).

    Returns:
        The nonce.

    Raises:
        VerificationError: no nonce, or more than one.
    """
    found = _SIG_NONCE.findall(signature_input)
    if len(found) != 1:
        raise VerificationError(
            f"Signature-Input: expected one nonce, found {len(found)} in {signature_input[:120]!r}"
        )
    return str(found[0])


def named_start(answer: object, warrant: object) -> str | None:
    """The execution a start answer that was *not* accepted names, if the answer says it
    runs under ``warrant`` and the id has the governor's shape (it goes into the path of
    its finish); else ``None``. Nothing here is verified: its governor may have recorded
    that start, and the enforcer finishes it naming the warrant, which the governor
    checks against the execution it names (``POST /v1/executions/{id}/finish``)."""
    if not isinstance(answer, dict) or type(warrant) is not str or answer.get("warrant") != warrant:
        return None
    execution = answer.get("execution")
    return execution if type(execution) is str and _EXECUTION_ID.fullmatch(execution) else None


def verify_lease_answer(
    body: Any,
    *,
    kind: Kind,
    execution: str,
    nonce: str,
    warrant: str,
    lease_ttl_ms: int,
    warrant_key: bytes,
) -> LeaseAnswer:
    """Verify a governor's lease answer against the request the enforcer sent.

    Args:
        body: the answer's parsed JSON.
        kind: ``"start"`` or ``"renew"``: what was asked.
        execution: the execution asked about (a start: the id the answer names, which
            the signature then covers).
        nonce: the nonce of the request this answers (:func:`request_nonce`).
        warrant: the id of the warrant the enforcer verified.
        lease_ttl_ms: the TTL that warrant grants.
        warrant_key: the trusted warrant key (raw Ed25519 public key, 32 bytes).

    Returns:
        The verified answer.

    Raises:
        VerificationError: missing or malformed signature, a signature that does not
            verify (tampered, another execution, kind or nonce), or a granted lease for
            another warrant or TTL.
    """
    # 1. An object carrying a well-formed signature.
    if not isinstance(body, dict):
        raise VerificationError(f"lease answer: expected a JSON object, found {type(body).__name__}")
    signature = _signature(body.get(LEASE_SIG_FIELD))
    # 2. Rebuilt from what the enforcer asked, and what the answer says.
    fields: dict[str, Any] = body

    def field(name: str, default: Any = None) -> Any:
        return fields.get(name, default)

    answer = LeaseAnswer(
        execution=execution,
        kind=kind,
        nonce=nonce,
        ok=field("ok", True) if kind == "start" else field("ok"),
        terminate=field("terminate", ""),
        lease_expires_ms=field("lease_expires_ms", 0),
        lease_ttl_ms=field("lease_ttl_ms"),
        warrant=field("warrant"),
    )
    # 3. Signed by the warrant key.
    if len(warrant_key) != 32:
        raise VerificationError(f"expected a 32-byte Ed25519 warrant key, found {len(warrant_key)} bytes")
    try:
        Ed25519PublicKey.from_public_bytes(warrant_key).verify(signature, lease_answer_bytes(answer))
    except InvalidSignature as e:
        raise VerificationError(
            f"the {kind} answer for {execution} is not signed by the warrant key for this request "
            f"(nonce {nonce}): tampered, replayed, or for another execution"
        ) from e
    # 4. A granted lease: the verified warrant's, for its TTL.
    if answer.ok:
        if not hmac.compare_digest(answer.warrant.encode(), warrant.encode()):
            raise VerificationError(f"lease answer: expected warrant {warrant!r}, found {answer.warrant!r}")
        if answer.lease_ttl_ms != lease_ttl_ms:
            raise VerificationError(
                f"lease answer: expected the warrant's lease TTL {lease_ttl_ms} ms, found "
                f"{answer.lease_ttl_ms} ms"
            )
    return answer


def _signature(value: Any) -> bytes:
    if value is None:
        raise VerificationError(f"lease answer: expected a {LEASE_SIG_FIELD}, found none (unsigned)")
    if type(value) is not str:
        raise VerificationError(f"{LEASE_SIG_FIELD}: expected base64 text, found {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as e:
        raise VerificationError(f"{LEASE_SIG_FIELD}: expected base64: {e}") from e
    if len(raw) != 64 or base64.b64encode(raw).decode() != value:
        raise VerificationError(
            f"{LEASE_SIG_FIELD}: expected the canonical base64 of a 64-byte Ed25519 signature, "
            f"found {len(raw)} bytes"
        )
    return raw


def _expect(name: str, value: Any, kind: type) -> None:
    if type(value) is not kind:
        raise VerificationError(
            f"lease answer: expected {name} to be {kind.__name__}, found {type(value).__name__}"
        )
