"""Fuzz the governor's signed requests: an HTTP/1.1 request as bytes, its header fields
combined as the governor combines them (``combine_fields``), its RFC 9421 signature
verified (``verify_request``), and its body parsed as the governor parses bodies
(``parse_json``, then the body models and ``AuthorizeRequest``).

Refusals allowed: ``AuthenticationError`` (signature), ``CanonicalizationError`` (body
JSON), ``RequestShapeError`` (body models). Oracles:

- a request that verifies is one the test principal signed: the same method, target
  and body as a seed (any header may be respelled, none of what is signed);
- presenting it again is refused as a replay;
- a request signed here by ``sign_request`` verifies, unless signing refused it;
- an authorize request that parses prints a body that parses to the same request.
"""

from __future__ import annotations

from typing import Any

from fuzz.fuzz_support import NOW, REQUEST_KEY, SIGNED_REQUESTS, check
from proctor.authorization.requests import combine_fields, sign_request, verify_request
from proctor.errors import AuthenticationError, CanonicalizationError, RequestShapeError
from proctor.governor.limits import parse_json
from proctor.governor.model import BODIES, AuthorizeRequest, parse_body

__all__ = ["INSTRUMENT", "one_input", "split_request"]

INSTRUMENT = (
    "proctor.authorization.requests",
    "proctor.canonical",
    "proctor.governor.limits",
    "proctor.governor.model",
    "proctor.governor.boundary",
)
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

_SIGNED = frozenset(SIGNED_REQUESTS)
_MAX_BODY_MODELS = 1 << 12


def split_request(data: bytes) -> tuple[str, str, list[tuple[bytes, bytes]], bytes] | None:
    """``METHOD target HTTP/1.1``, header lines ``name: value``, a blank line, the body
    (the harness's framing; the server's is uvicorn's). ``None`` if not of that form."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        fields.append((name, value.strip(b" \t")))
    return parts[0].decode("latin-1"), parts[1].decode("latin-1"), fields, body


def _key(name: str) -> bytes | None:
    return REQUEST_KEY.public_key if name == REQUEST_KEY.name else None


def _verify(
    method: str, target: str, body: bytes, headers: dict[str, str], seen: set[tuple[str, str]]
) -> str:
    def remember(keyid: str, nonce: str, _expires: int) -> bool:
        if (keyid, nonce) in seen:
            return False
        seen.add((keyid, nonce))
        return True

    return verify_request(
        method, target, body, headers, public_key_for=_key, now=NOW, remember_nonce=remember
    )


def _signature(method: str, target: str, fields: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = combine_fields(fields)
    seen: set[tuple[str, str]] = set()
    try:
        who = _verify(method, target, body, headers, seen)
    except AuthenticationError:
        return
    check(who == REQUEST_KEY.name, f"verified as {who!r}")
    check(
        (method, target, body) in _SIGNED, f"a request the test key never signed verified: {method} {target}"
    )
    try:
        _verify(method, target, body, headers, seen)
    except AuthenticationError as e:
        check(e.reason == "replayed", f"a replay was refused as {e.reason}, not replayed")
    else:
        check(False, "a replayed request verified twice")


def _sign(method: str, target: str, body: bytes) -> None:
    try:
        headers = sign_request(method, target, body, REQUEST_KEY, now=NOW, nonce="fuzz-nonce-0001")
    except AuthenticationError:
        return
    _verify(method, target, body, headers, set())  # anything it signs must verify


def _body(body: bytes) -> None:
    if len(body) > _MAX_BODY_MODELS:
        return
    try:
        doc: Any = parse_json(body)
    except CanonicalizationError:
        return
    for model in BODIES:
        try:
            parse_body(model, doc)
        except RequestShapeError:
            pass
    try:
        request = AuthorizeRequest.from_json(doc)
    except RequestShapeError:
        return
    check(
        AuthorizeRequest.from_json(request.to_json()) == request, "an authorize request does not round-trip"
    )


def one_input(data: bytes) -> None:
    """One input: a whole HTTP request."""
    parsed = split_request(data)
    if parsed is None:
        return
    method, target, fields, body = parsed
    _signature(method, target, fields, body)
    _sign(method, target, body)
    _body(body)
