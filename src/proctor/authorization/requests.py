"""Request authentication: HTTP Message Signatures (RFC 9421) with Ed25519, over a
Content-Digest (RFC 9530).

A signed request carries three headers::

    Content-Digest:  sha-256=:<base64 of SHA-256(body)>:
    Signature-Input: sig1=("@method" "@path" "@query" "content-digest");created=<unix s>;
                     nonce="<n>";keyid="<principal>";alg="ed25519"        (one line)
    Signature:       sig1=:<base64 of the Ed25519 signature>:

This is a strict profile of RFC 9421: exactly one signature, labelled ``sig1``;
exactly these four covered components, in this order; exactly the parameters
``created``, ``nonce``, ``keyid`` and ``alg`` (in any order, each once), with
``alg="ed25519"`` (RFC 9421 §3.3.6). Anything else is rejected as malformed rather
than interpreted, so the verifier never has to decide what an unusual signature
means. Because only the canonical serialisation is accepted, the received
``Signature-Input`` member *is* the ``@signature-params`` value of the signature
base (RFC 9421 §2.3).

Ordering rule of :func:`verify_request`: the nonce is remembered only after the
signature verified, so an attacker cannot burn a client's nonces with forged
requests, and a replay is reported only for a request that was genuinely signed.

Pure: no clock (callers pass ``now`` as unix seconds), no I/O; the key directory and
the nonce cache are callables the caller provides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import PrincipalKey, valid_principal_name
from proctor.errors import AuthenticationError, KeyFormatError

__all__ = [
    "SIGNATURE_LABEL",
    "COVERED_COMPONENTS",
    "MAX_HEADER_BYTES",
    "MAX_FUTURE_SKEW",
    "content_digest",
    "combine_fields",
    "signature_base",
    "sign_request",
    "verify_request",
]

SIGNATURE_LABEL = "sig1"
COVERED_COMPONENTS = ("@method", "@path", "@query", "content-digest")
MAX_HEADER_BYTES = 8192
"""Longest accepted value of each signature header."""
MAX_FUTURE_SKEW = 60
"""Seconds a ``created`` time may lie ahead of the verifier's clock."""

_PARAMS = frozenset({"created", "nonce", "keyid", "alg"})
_INNER_LIST = "(" + " ".join(f'"{c}"' for c in COVERED_COMPONENTS) + ")"
_TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_PARAM = re.compile(r';([a-z*][a-z0-9_.*-]*)=(0|[1-9][0-9]{0,14}|"[\x20\x21\x23-\x5b\x5d-\x7e]*")')
_SIGNATURE = re.compile(r"sig1=:([A-Za-z0-9+/]+={0,2}):")
_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body`` with SHA-256.

    Args:
        body: the request content.

    Returns:
        ``sha-256=:<base64>:``.
    """
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def _split_target(target: str) -> tuple[str, str]:
    # RFC 9421 §2.2.6: @path is the absolute path, "/" when empty.
    # RFC 9421 §2.2.7: @query is "?" and the query, "?" alone when there is none.
    if target == "":
        target = "/"
    if type(target) is not str or _TARGET.fullmatch(target) is None or "#" in target:
        raise AuthenticationError(
            f"expected a request target in origin-form (/path?query) of visible ASCII, found {target!r}",
            reason="malformed",
        )
    path, _, query = target.partition("?")
    return path, "?" + query


def signature_base(method: str, target: str, digest: str, signature_params: str) -> bytes:
    """The RFC 9421 §2.5 signature base over the covered components.

    Args:
        method: the HTTP method, as sent (RFC 9421 §2.2.1: case-sensitive, not normalised).
        target: path and optional ``?query``.
        digest: the ``Content-Digest`` value.
        signature_params: the ``@signature-params`` value: inner list and parameters.

    Returns:
        The lines ``"<component>": <value>`` joined by LF, ending with the
        ``"@signature-params"`` line, with no trailing LF.

    Raises:
        AuthenticationError: (reason ``malformed``) the method or target is not acceptable.
    """
    if type(method) is not str or _TCHAR.fullmatch(method) is None:
        raise AuthenticationError(f"expected an HTTP method token, found {method!r}", reason="malformed")
    path, query = _split_target(target)
    lines = (
        f'"@method": {method}',
        f'"@path": {path}',
        f'"@query": {query}',
        f'"content-digest": {digest}',
        f'"@signature-params": {signature_params}',
    )
    return "\n".join(lines).encode("ascii")


def sign_request(
    method: str, target: str, body: bytes, key: PrincipalKey, *, now: int, nonce: str | None = None
) -> dict[str, str]:
    """Sign a request as principal ``key.name``.

    Args:
        method: the HTTP method, e.g. ``POST``.
        target: path and optional ``?query``, exactly as sent.
        body: the request content (``b""`` when there is none).
        key: the principal's key; its name becomes ``keyid``.
        now: the current time, unix seconds; becomes ``created``.
        nonce: a fresh value of 8-128 base64url characters; by default 16 random
            bytes, base64url without padding.

    Returns:
        The headers ``Content-Digest``, ``Signature-Input`` and ``Signature``.

    Raises:
        AuthenticationError: (reason ``malformed``) the method, target or nonce is not
            acceptable.
        ValueError: ``now`` is not a non-negative integer.
    """
    if type(now) is not int or now < 0:
        raise ValueError(f"expected now as non-negative unix seconds, found {now!r}")
    if nonce is None:
        nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    elif type(nonce) is not str or _NONCE.fullmatch(nonce) is None:
        raise AuthenticationError(
            f"expected a nonce of 8-128 base64url characters, found {nonce!r}", reason="malformed"
        )
    digest = content_digest(body)
    params = f'{_INNER_LIST};created={now};nonce="{nonce}";keyid="{key.name}";alg="ed25519"'
    signature = key.sign(signature_base(method, target, digest, params))
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{SIGNATURE_LABEL}={params}",
        "Signature": f"{SIGNATURE_LABEL}=:{base64.b64encode(signature).decode()}:",
    }


def combine_fields(fields: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's header fields as one value per lower-case name.

    Field lines of the same name are combined in order, joined by ``", "`` (RFC 9110
    §5.3), never resolved to one of them: a ``Signature`` (or ``Signature-Input``,
    ``Content-Digest``) sent twice becomes a list, which :func:`verify_request` refuses
    as malformed (the strict profile takes exactly one member).

    Args:
        fields: ``(name, value)`` pairs as an ASGI server delivers them (latin-1 bytes).

    Returns:
        ``{lower-case name: value}``.
    """
    out = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in fields}
    if len(out) == len(fields):
        return out  # no name repeated (the usual case)
    out = {}
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        previous = out.get(name)
        out[name] = value if previous is None else f"{previous}, {value}"
    return out


def _lookup(headers: Mapping[str, str]) -> dict[str, str]:
    # Field names are case-insensitive (RFC 9110 §5.1); a name given twice, in any
    # case, is ambiguous and rejected rather than resolved. So is a list: no value of
    # the strict profile holds a comma, so a comma means several members or several
    # field lines combined (RFC 9110 §5.3, see combine_fields).
    wanted = {"signature-input", "signature", "content-digest"}
    found: dict[str, str] = {}
    for name, value in headers.items():
        if type(name) is not str:
            continue
        lower = name.lower()
        if lower not in wanted:
            continue
        if lower in found:
            raise AuthenticationError(f"header {lower} appears more than once", reason="malformed")
        if type(value) is not str:
            raise AuthenticationError(f"header {lower}: expected a string value", reason="malformed")
        if len(value) > MAX_HEADER_BYTES:
            raise AuthenticationError(
                f"header {lower}: expected at most {MAX_HEADER_BYTES} bytes, found {len(value)}",
                reason="malformed",
            )
        if not value.isascii() or not value.isprintable():
            raise AuthenticationError(
                f"header {lower}: expected visible ASCII without control characters", reason="malformed"
            )
        if "," in value:
            raise AuthenticationError(
                f"header {lower}: expected exactly one member, found a list (the field was sent "
                "more than once, or holds several signatures)",
                reason="malformed",
            )
        found[lower] = value
    return found


def _parse_signature_input(value: str) -> tuple[str, int, str, str]:
    # RFC 9421 §4.1, strict profile: sig1=(<the four components>)<params>, canonical form.
    prefix = f"{SIGNATURE_LABEL}={_INNER_LIST}"
    if not value.startswith(prefix):
        raise AuthenticationError(
            f"Signature-Input: expected {prefix}…, found {value[:120]!r}", reason="malformed"
        )
    rest = value[len(prefix) :]
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise AuthenticationError(
                f"Signature-Input: expected ;name=value parameters, found {rest[pos : pos + 60]!r}",
                reason="malformed",
            )
        name, raw = m.group(1), m.group(2)
        if name in params:
            raise AuthenticationError(f"Signature-Input: parameter {name} given twice", reason="malformed")
        params[name] = raw
        pos = m.end()
    if set(params) != _PARAMS:
        raise AuthenticationError(
            f"Signature-Input: expected exactly the parameters {sorted(_PARAMS)}, found {sorted(params)}",
            reason="malformed",
        )
    created_raw, nonce_raw, keyid_raw, alg_raw = (params[k] for k in ("created", "nonce", "keyid", "alg"))
    if created_raw.startswith('"'):
        raise AuthenticationError("Signature-Input: created must be an integer", reason="malformed")
    if not (nonce_raw.startswith('"') and keyid_raw.startswith('"') and alg_raw.startswith('"')):
        raise AuthenticationError("Signature-Input: nonce, keyid and alg must be strings", reason="malformed")
    nonce, keyid, alg = nonce_raw[1:-1], keyid_raw[1:-1], alg_raw[1:-1]
    if alg != "ed25519":
        raise AuthenticationError(
            f'Signature-Input: expected alg="ed25519", found {alg!r}', reason="malformed"
        )
    if _NONCE.fullmatch(nonce) is None:
        raise AuthenticationError(
            f"Signature-Input: expected a nonce of 8-128 base64url characters, found {nonce!r}",
            reason="malformed",
        )
    if not valid_principal_name(keyid):
        raise AuthenticationError(
            f"Signature-Input: expected keyid to be a principal name, found {keyid!r}", reason="malformed"
        )
    return value[len(SIGNATURE_LABEL) + 1 :], int(created_raw), nonce, keyid


def _parse_signature(value: str) -> bytes:
    # RFC 9421 §4.2: sig1=:<sf-binary>:, a 64-byte Ed25519 signature in canonical base64.
    m = _SIGNATURE.fullmatch(value)
    if m is None:
        raise AuthenticationError(
            f"Signature: expected sig1=:<base64>:, found {value[:120]!r}", reason="malformed"
        )
    try:
        raw = base64.b64decode(m.group(1), validate=True)
    except (ValueError, binascii.Error) as e:
        raise AuthenticationError(f"Signature: expected base64: {e}", reason="malformed") from e
    if len(raw) != 64 or base64.b64encode(raw).decode() != m.group(1):
        raise AuthenticationError(
            "Signature: expected the canonical base64 of a 64-byte Ed25519 signature", reason="malformed"
        )
    return raw


def verify_request(
    method: str,
    target: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    public_key_for: Callable[[str], bytes | None],
    now: int,
    window: int = 300,
    remember_nonce: Callable[[str, str, int], bool],
) -> str:
    """Authenticate a signed request and return who signed it.

    Steps (RFC 9421 §3.2, with RFC 9530 for the content):
      1. ``Signature-Input`` and ``Signature`` are present (any letter case), each
         once and a single member (no comma), visible ASCII, at most
         :data:`MAX_HEADER_BYTES`.
      2. Both parse under the strict profile in the module docstring (§4.1, §4.2).
      3. ``Content-Digest`` is present and equals SHA-256 of the body (RFC 9530 §2),
         compared in constant time.
      4. ``created`` lies within ``[now - window, now + MAX_FUTURE_SKEW]`` (§2.3, §3.2 step 5).
      5. ``keyid`` names a known principal key (§3.2 step 6).
      6. The Ed25519 signature verifies over the rebuilt signature base (§2.5, §3.3.6).
      7. Only then the nonce is remembered until ``created + window``; a nonce seen
         before is a replay (§7.2.2).

    Args:
        method: the HTTP method as received.
        target: path and optional ``?query`` as received.
        body: the request content as received.
        headers: the request headers; names are matched case-insensitively.
        public_key_for: keyid → the principal's 32-byte public key, or ``None`` if unknown.
        now: the current time, unix seconds.
        window: how many seconds a signature stays acceptable (and its nonce remembered).
        remember_nonce: ``(keyid, nonce, expires_at)`` → ``True`` if new, ``False`` if seen.

    Returns:
        The authenticated principal name (``keyid``).

    Raises:
        AuthenticationError: with ``reason`` ``unsigned``, ``malformed``, ``bad-signature``
            (also for a body that does not match its digest), ``stale``, ``unknown-key``
            or ``replayed``.
        KeyFormatError: ``public_key_for`` returned something other than 32 bytes.
        ValueError: ``window`` is not a positive integer or ``now`` is not an integer.
    """
    if type(window) is not int or window <= 0:
        raise ValueError(f"expected a positive window in seconds, found {window!r}")
    if type(now) is not int:
        raise ValueError(f"expected now as unix seconds, found {now!r}")
    # Step 1
    found = _lookup(headers)
    if "signature-input" not in found or "signature" not in found:
        raise AuthenticationError("expected Signature-Input and Signature headers", reason="unsigned")
    # Step 2
    params, created, nonce, keyid = _parse_signature_input(found["signature-input"])
    signature = _parse_signature(found["signature"])
    # Step 3
    digest = found.get("content-digest")
    if digest is None or _DIGEST.fullmatch(digest) is None:
        raise AuthenticationError(
            "expected a Content-Digest header of the form sha-256=:<base64>:", reason="malformed"
        )
    if not hmac.compare_digest(digest.encode(), content_digest(body).encode()):
        raise AuthenticationError("Content-Digest does not match the body", reason="bad-signature")
    # Step 4
    if not now - window <= created <= now + MAX_FUTURE_SKEW:
        raise AuthenticationError(
            f"expected created within [{now - window}, {now + MAX_FUTURE_SKEW}], found {created}",
            reason="stale",
        )
    # Step 5
    public_key = public_key_for(keyid)
    if public_key is None:
        raise AuthenticationError(f"no key is known for principal {keyid!r}", reason="unknown-key")
    if type(public_key) is not bytes or len(public_key) != 32:
        raise KeyFormatError(f"the key directory returned a malformed public key for {keyid!r}")
    try:
        verifier = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as e:
        raise KeyFormatError(f"the key directory returned an invalid public key for {keyid!r}") from e
    # Step 6
    base = signature_base(method, target, digest, params)
    try:
        verifier.verify(signature, base)
    except InvalidSignature:
        raise AuthenticationError(
            f"the signature does not verify with the key of {keyid!r}", reason="bad-signature"
        ) from None
    # Step 7
    if not remember_nonce(keyid, nonce, created + window):
        raise AuthenticationError(f"nonce {nonce!r} of {keyid!r} was already used", reason="replayed")
    return keyid
