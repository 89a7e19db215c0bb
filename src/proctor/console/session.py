"""Console sign-in and sessions: who is signed in on a request, and whether a POST
may act.

A session is a *statement* signed with an admin's Ed25519 key, nothing else; the
server keeps no session table, so any worker process or node serving the same store
checks it alike (``proctor serve --workers``, ``--shared``). The statement (UTF-8,
one field a line, domain-separated by its first line)::

    proctor console session v1
    principal <name>
    expires <unix seconds>
    id <22 characters of base64url: 16 random bytes>
    origin <the origin it is bound to, or ->
    challenge <the server's challenge it answers, or ->

and the session token is ``pcs1.<base64url(statement)>.<base64url(signature)>``. Two
ways make one:

- the sign-in page's script (``static/console_signin.js``) asks for a challenge
  (:func:`new_challenge`), reads the admin's key file the user picks and signs a
  statement with ``origin`` and ``challenge`` set, in the browser (WebCrypto Ed25519:
  the private key never leaves it);
- ``proctor console token`` signs one with ``origin -`` and ``challenge -``
  (:func:`issue_token`), which the user pastes into the sign-in form.

Rules (:func:`verify_session`, on every request):

1. The token is well formed; the statement has exactly the six fields, in order.
2. It has not expired, and expires at most :data:`MAX_SESSION_S` from now (a session
   lives at most an hour, however it was made).
3. An ``origin`` other than ``-`` is this request's origin.
4. The signature verifies under the public key the governor holds for ``principal``
   *now*, and ``principal`` is an active admin *now*: a suspended or revoked admin's
   session dies on its next request, on every node.

At sign-in (:func:`sign_in`), also: a challenge is this server's (an HMAC under a key
derived from the data directory's warrant key, so every node of a deployment knows
it), unexpired (:data:`CHALLENGE_TTL_S`), for this origin; and each challenge and each
token id signs in once: it is claimed in the governor's replay cache (in the store when
shared), so a statement or token seen before is refused.

A POST must come from a page of this origin (:func:`verify_post`): its ``Origin`` header
is this origin, and its form carries the session's CSRF token (a digest of the
session token, which the page's script cannot read: the cookie is ``HttpOnly``),
compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import weakref
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import Response

from proctor.authorization.keys import PrincipalKey, valid_principal_name
from proctor.errors import AuthenticationError, PrincipalError, ProctorError, StoreError

if TYPE_CHECKING:
    from proctor.governor.service import Governor

__all__ = [
    "CHALLENGE_TTL_S",
    "COOKIE",
    "MAX_SESSION_S",
    "Session",
    "clear_cookie",
    "csrf_token",
    "issue_token",
    "new_challenge",
    "request_origin",
    "session_of",
    "set_cookie",
    "sign_in",
    "signed_in",
    "statement",
    "verify_post",
    "verify_session",
]

MAX_SESSION_S = 3600
"""The longest a session may live: a statement expiring later than this from now is refused."""
CHALLENGE_TTL_S = 120
"""How long a sign-in challenge may be answered."""
COOKIE = "proctor_console"
"""The session cookie's name."""

_PREFIX = "pcs1."
_HEAD = "proctor console session v1"
_FIELDS = ("principal", "expires", "id", "origin", "challenge")
_MAX_TOKEN = 2048
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.:\[\]-]{1,253}")
_CHALLENGE = re.compile(r"c1\.[A-Za-z0-9_-]{22}\.[0-9]{1,12}\.[A-Za-z0-9_-]{43}")
_CHALLENGE_INFO = b"proctor console challenge v1"
_CSRF_INFO = b"proctor console csrf v1\n"
_KEYS: weakref.WeakKeyDictionary[Governor, bytes] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Session:
    """A verified session statement."""

    principal: str
    expires: int
    id: str
    origin: str
    challenge: str
    token: str


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str, what: str) -> bytes:
    if not _B64.fullmatch(text):
        raise AuthenticationError(f"{what}: expected base64url, found other characters", reason="malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise AuthenticationError(f"{what}: expected base64url: {e}", reason="malformed") from e


def statement(
    principal: str, expires: int, session_id: str, *, origin: str = "-", challenge: str = "-"
) -> bytes:
    """The bytes an admin signs for a session (the module docstring's format)."""
    lines = [_HEAD, f"principal {principal}", f"expires {expires}", f"id {session_id}"]
    lines += [f"origin {origin}", f"challenge {challenge}"]
    return ("\n".join(lines) + "\n").encode()


def issue_token(key: PrincipalKey, *, ttl_s: int, now: float) -> str:
    """A session token signed by ``key`` (``proctor console token``), valid ``ttl_s``
    seconds from ``now``, for any origin, to be pasted into the sign-in form once.

    Raises:
        ValueError: ``ttl_s`` is not 1 to :data:`MAX_SESSION_S`.
    """
    if type(ttl_s) is not int or not 1 <= ttl_s <= MAX_SESSION_S:
        raise ValueError(f"expected a lifetime of 1 to {MAX_SESSION_S} seconds, found {ttl_s!r}")
    signed = statement(key.name, int(now) + ttl_s, _b64e(secrets.token_bytes(16)))
    return f"{_PREFIX}{_b64e(signed)}.{_b64e(key.sign(signed))}"


def _parse(token: str) -> tuple[dict[str, str], bytes, bytes]:
    """Step 1: the statement's fields, its bytes and the signature."""
    if type(token) is not str or len(token) > _MAX_TOKEN or not token.startswith(_PREFIX):
        raise AuthenticationError(
            f"expected a console token {_PREFIX}STATEMENT.SIGNATURE of at most {_MAX_TOKEN} characters",
            reason="malformed",
        )
    parts = token[len(_PREFIX) :].split(".")
    if len(parts) != 2:
        raise AuthenticationError("expected a token of two base64url parts after pcs1.", reason="malformed")
    signed, signature = _b64d(parts[0], "statement"), _b64d(parts[1], "signature")
    if len(signature) != 64:
        raise AuthenticationError(f"expected a 64-byte signature, found {len(signature)}", reason="malformed")
    try:
        lines = signed.decode("ascii").split("\n")
    except UnicodeDecodeError as e:
        raise AuthenticationError("expected an ASCII statement", reason="malformed") from e
    if len(lines) != len(_FIELDS) + 2 or lines[0] != _HEAD or lines[-1] != "":
        raise AuthenticationError(
            f"expected a statement starting {_HEAD!r} with five fields", reason="malformed"
        )
    fields: dict[str, str] = {}
    for name, line in zip(_FIELDS, lines[1:-1], strict=True):
        label, _, value = line.partition(" ")
        if label != name or not value:
            raise AuthenticationError(
                f"expected the field {name!r}, found {label[:20]!r}", reason="malformed"
            )
        fields[name] = value
    ok = (
        valid_principal_name(fields["principal"])
        and fields["expires"].isdigit()
        and len(fields["expires"]) <= 12
        and _ID.fullmatch(fields["id"]) is not None
        and (fields["origin"] == "-" or _ORIGIN.fullmatch(fields["origin"]) is not None)
        and (fields["challenge"] == "-" or _CHALLENGE.fullmatch(fields["challenge"]) is not None)
    )
    if not ok:
        raise AuthenticationError("expected a statement's fields in their formats", reason="malformed")
    if (
        statement(
            fields["principal"],
            int(fields["expires"]),
            fields["id"],
            origin=fields["origin"],
            challenge=fields["challenge"],
        )
        != signed
    ):
        raise AuthenticationError("expected a statement in its one canonical form", reason="malformed")
    return fields, signed, signature


def verify_session(token: str, governor: Governor, *, origin: str, now: float) -> Session:
    """The session ``token`` proves, checked as the module docstring's rules 1-4 say.

    Raises:
        AuthenticationError: malformed, expired, too long-lived, for another origin,
            or badly signed.
        PrincipalError: the signer is not (or no longer) an active admin.
    """
    fields, signed, signature = _parse(token)  # Step 1
    expires = int(fields["expires"])
    if expires <= now:  # Step 2
        raise AuthenticationError(f"the session expired at {expires}", reason="stale")
    if expires > now + MAX_SESSION_S:
        raise AuthenticationError(
            f"expected a session expiring within {MAX_SESSION_S} s, found {expires - int(now)} s",
            reason="stale",
        )
    if fields["origin"] not in ("-", origin):  # Step 3 (an origin is no secret)
        raise AuthenticationError(
            f"the session is bound to {fields['origin']!r}, not {origin!r}", reason="origin"
        )
    principal = fields["principal"]  # Step 4
    public = governor.public_key_for(principal)
    # An unknown principal and a bad signature are refused alike (no existence oracle).
    refused = AuthenticationError(
        f"the session's signature does not verify for {principal!r}", reason="signature"
    )
    if public is None:
        raise refused
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
    except InvalidSignature as e:
        raise refused from e
    if not governor.is_admin(principal):
        raise PrincipalError(f"{principal!r} is not an active admin")
    return Session(principal, expires, fields["id"], fields["origin"], fields["challenge"], token)


def request_origin(request: Request) -> str:
    """This request's origin as a browser names it: ``scheme://host[:port]``."""
    return f"{request.url.scheme}://{request.url.netloc}"


def session_of(request: Request) -> Session | None:
    """The valid session on ``request`` (its cookie), or ``None`` (none, or any failure)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        governor = request.app.state.governor
        return verify_session(token, governor, origin=request_origin(request), now=governor.now())
    except (ProctorError, ValueError, AttributeError):
        return None  # fail closed: whatever went wrong, nobody is signed in


def signed_in(request: Request) -> str | None:
    """The admin signed in on ``request`` (its session re-verified now), or ``None``."""
    session = session_of(request)
    return None if session is None else session.principal


def csrf_token(session: Session) -> str:
    """The CSRF token of ``session``: a digest of its token (which the page cannot read)."""
    return _b64e(hashlib.sha256(_CSRF_INFO + session.token.encode()).digest())


def verify_post(request: Request, session: Session, form_token: str) -> None:
    """Refuse a POST that is not from a page of this origin for this session.

    Raises:
        AuthenticationError: the ``Origin`` header is missing or another origin
            (reason ``origin``), or the CSRF token is missing or wrong (``csrf``).
    """
    _verify_origin(request)
    if not hmac.compare_digest(form_token.encode(), csrf_token(session).encode()):
        raise AuthenticationError(
            "expected this session's CSRF token with the form, found another", reason="csrf"
        )


def _verify_origin(request: Request) -> None:
    sent = request.headers.get("origin")
    mine = request_origin(request)
    if sent is None or not hmac.compare_digest(sent.encode(), mine.encode()):
        raise AuthenticationError(f"expected a request from {mine}, found Origin {sent!r}", reason="origin")


# -- sign-in ---------------------------------------------------------------------


def _challenge_key(governor: Governor) -> bytes:
    """The MAC key of challenges: derived from the data directory's warrant key, which
    every node of a deployment holds (HKDF-SHA256, its own ``info``)."""
    cached = _KEYS.get(governor)
    if cached is None:
        seed = PrincipalKey.load(governor.data.keys_path / "warrant.key").private_bytes()
        cached = _KEYS[governor] = HKDF(hashes.SHA256(), 32, salt=None, info=_CHALLENGE_INFO).derive(seed)
    return cached


def _mac(governor: Governor, nonce: str, expires: int, origin: str) -> str:
    message = b"\n".join([_CHALLENGE_INFO, nonce.encode(), str(expires).encode(), origin.encode()])
    return _b64e(hmac.new(_challenge_key(governor), message, hashlib.sha256).digest())


def new_challenge(request: Request) -> dict[str, object]:
    """A sign-in challenge for this origin: random, expiring in :data:`CHALLENGE_TTL_S`,
    answerable once; with the server's time and the longest session it grants."""
    governor: Governor = request.app.state.governor
    now = int(governor.now())
    nonce, expires, origin = _b64e(os.urandom(16)), now + CHALLENGE_TTL_S, request_origin(request)
    return {
        "challenge": f"c1.{nonce}.{expires}.{_mac(governor, nonce, expires, origin)}",
        "origin": origin,
        "now": now,
        "session_expires": now + MAX_SESSION_S,
    }


def _claim_once(governor: Governor, what: str, expires: int, now: int) -> None:
    """Claim ``what`` in the replay cache (the store's, when shared) or refuse it."""
    nonces = governor.nonces
    fresh = nonces.remember("console", what, expires, now=now)
    if fresh and nonces.shared:
        try:
            fresh = nonces.claim("console", what, expires).result(timeout=10)
        except FutureTimeout as e:  # refused, as a signed request would be (authentication.py)
            raise StoreError("the store did not claim the sign-in within 10 s") from e
    governor.persist_nonces()
    if not fresh:
        raise AuthenticationError("this challenge or token was used already: sign in anew", reason="replayed")


def sign_in(request: Request, token: str) -> Session:
    """Verify a sign-in (a statement answering a challenge, or a pasted token) and claim it.

    Raises:
        AuthenticationError: not from this origin, a bad or used challenge, or any
            failure of :func:`verify_session`.
        PrincipalError: the signer is not an active admin.
    """
    _verify_origin(request)
    governor: Governor = request.app.state.governor
    now = governor.now()
    session = verify_session(token, governor, origin=request_origin(request), now=now)
    claim, until = session.id, session.expires
    if session.challenge != "-":
        if session.origin == "-":
            raise AuthenticationError("expected a challenge's answer bound to its origin", reason="origin")
        _, nonce, expires_text, mac = session.challenge.split(".")
        expires = int(expires_text)
        if not hmac.compare_digest(mac, _mac(governor, nonce, expires, session.origin)):
            raise AuthenticationError("expected a challenge this server issued", reason="challenge")
        if expires <= now or expires > now + CHALLENGE_TTL_S:
            raise AuthenticationError("the challenge expired: sign in anew", reason="stale")
        claim, until = f"c:{nonce}", expires
    _claim_once(governor, claim, until, int(now))
    return session


def set_cookie(response: Response, request: Request, session: Session) -> None:
    """Carry ``session`` in the cookie: ``HttpOnly; SameSite=Strict; Path=/``, ``Secure``
    over https, expiring with the session."""
    max_age = max(0, session.expires - int(request.app.state.governor.now()))
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    """Sign out: the cookie is removed (the token itself lives until it expires)."""
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
