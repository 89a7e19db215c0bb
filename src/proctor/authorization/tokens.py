"""Biscuit token framing: size, encoding, structure, signature chain, Datalog limits.

:func:`open_token` is the only way a warrant string becomes a ``Biscuit`` in proctor.
It checks, in this order and each before the next costs more:

1. the length of the string (:data:`MAX_TOKEN_CHARS`), before anything is parsed;
2. base64url (RFC 4648 §5), padded or not;
3. the outer protobuf message is complete, with at most :data:`MAX_BLOCKS` blocks,
   before any signature is computed;
4. the signature chain from the root key (Biscuit specification, "Signature").

:func:`limited_authorizer` is the only way an authorizer is made: every Datalog
evaluation runs under explicit limits, and one that reaches them is a rejection
(reason ``limit``), never a partial answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

from biscuit_auth import (
    AuthorizationError,
    AuthorizerBuilder,
    Biscuit,
    BiscuitBlockError,
    BiscuitBuildError,
    BiscuitSerializationError,
    BiscuitValidationError,
    DataLogError,
    PublicKey,
)

from proctor.errors import KeyFormatError, WarrantError

__all__ = [
    "MAX_TOKEN_CHARS",
    "MAX_BLOCKS",
    "MAX_FACTS",
    "MAX_ITERATIONS",
    "MAX_TIME_MS",
    "BISCUIT_ERRORS",
    "biscuit_date",
    "root_public_key_of",
    "open_token",
    "inline_parameters",
    "limited_authorizer",
    "datalog_failure",
]

MAX_TOKEN_CHARS = 16 * 1024
"""Longest accepted token, in base64 characters."""
MAX_BLOCKS = 8
"""Most blocks accepted: the authority block and up to seven attenuations."""
MAX_FACTS = 1000
"""Most facts an authorizer may hold (biscuit-python's default is also 1000)."""
MAX_ITERATIONS = 100
"""Most Datalog iterations (biscuit-python's default is also 100)."""
MAX_TIME_MS = 50
"""Longest Datalog evaluation, in milliseconds (biscuit-python's default is 1). A
backstop only: the shapes of appended blocks are bounded before any evaluation
(:mod:`~proctor.authorization.attenuation`), which keeps evaluation in the tens of
microseconds; the limit is wall-clock time, so a tighter one turns a busy machine's
scheduling delays into spurious rejections."""

BISCUIT_ERRORS = (
    AuthorizationError,
    BiscuitBlockError,
    BiscuitBuildError,
    BiscuitSerializationError,
    BiscuitValidationError,
    DataLogError,
    ValueError,
)
"""What biscuit-python raises; caught at this boundary and turned into ``WarrantError``."""

_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_LIMIT_MESSAGE = "Reached Datalog execution limits"


def biscuit_date(seconds: int) -> dt.datetime:
    """A unix time as the timezone-aware datetime biscuit-python turns into a Datalog date.

    Args:
        seconds: unix seconds.

    Returns:
        The UTC datetime.
    """
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def root_public_key_of(root_public_key: bytes) -> PublicKey:
    """The Biscuit ``PublicKey`` for 32 raw Ed25519 bytes.

    Args:
        root_public_key: the raw root public key.

    Returns:
        The key, for ``Biscuit.from_bytes``.

    Raises:
        KeyFormatError: not 32 bytes, or not accepted as an Ed25519 key.
    """
    if type(root_public_key) is not bytes or len(root_public_key) != 32:
        raise KeyFormatError("expected the 32 raw bytes of the Ed25519 root public key")
    try:
        return PublicKey("ed25519/" + root_public_key.hex())
    except ValueError as e:
        raise KeyFormatError(f"the root public key is not a valid Ed25519 key: {e}") from e


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if i >= len(raw):
            raise WarrantError("the token ends inside a field header", reason="truncated")
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
    raise WarrantError("the token has a varint longer than 10 bytes", reason="malformed")


def _count_blocks(raw: bytes) -> int:
    # The outer Biscuit message (biscuit schema.proto): rootKeyId = 1 (varint),
    # authority = 2, blocks = 3 (repeated), proof = 4, all length-delimited. Walking
    # only this level tells a cut-off token apart and counts blocks before any crypto.
    counts = {2: 0, 3: 0, 4: 0}
    i = 0
    while i < len(raw):
        tag, i = _varint(raw, i)
        number, wire = tag >> 3, tag & 7
        if number == 1 and wire == 0:
            _, i = _varint(raw, i)
        elif number in counts and wire == 2:
            length, i = _varint(raw, i)
            if length > len(raw) - i:
                raise WarrantError("the token ends inside a block or its proof", reason="truncated")
            i += length
            counts[number] += 1
        else:
            raise WarrantError(
                f"unexpected field {number} (wire type {wire}) in the token", reason="malformed"
            )
    if counts[2] > 1 or counts[4] > 1:
        raise WarrantError("the token repeats its authority block or proof", reason="malformed")
    if counts[2] == 0 or counts[4] == 0:
        raise WarrantError("the token lacks its authority block or proof", reason="truncated")
    return 1 + counts[3]


def open_token(token: str, *, root_public_key: bytes) -> Biscuit:
    """Parse a token and verify its signature chain; no Datalog is run.

    Args:
        token: the base64url token.
        root_public_key: the 32-byte Ed25519 root public key.

    Returns:
        The verified Biscuit.

    Raises:
        WarrantError: ``too-large``, ``malformed``, ``truncated`` or ``forged``, by the
            numbered steps in the module docstring.
        KeyFormatError: the root key is not a 32-byte Ed25519 key.
    """
    root = root_public_key_of(root_public_key)
    # Step 1: size, before parsing anything.
    if type(token) is not str:
        raise WarrantError(f"expected a base64url token string, found {type(token).__name__}")
    if len(token) > MAX_TOKEN_CHARS:
        raise WarrantError(
            f"expected a token of at most {MAX_TOKEN_CHARS} characters, found {len(token)}",
            reason="too-large",
        )
    # Step 2: base64url (RFC 4648 §5), padded or not. Decoding leniently first means
    # that any prefix of a token decodes to a prefix of its bytes, so a cut-off token
    # is reported as truncated by step 3; non-canonical encodings are refused after.
    if _B64URL.fullmatch(token) is None:
        raise WarrantError("expected a base64url token", reason="malformed")
    bare = token.rstrip("=")
    if len(bare) % 4 == 1:
        raise WarrantError("the token's base64 ends mid-byte", reason="truncated")
    raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    # Step 3: the outer structure is complete, and has at most MAX_BLOCKS blocks.
    blocks = _count_blocks(raw)
    if blocks > MAX_BLOCKS:
        raise WarrantError(f"expected at most {MAX_BLOCKS} blocks, found {blocks}", reason="too-large")
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != bare:
        raise WarrantError("expected the canonical base64url encoding of the token", reason="malformed")
    # Step 4: every block's signature chains to the root key.
    try:
        return Biscuit.from_bytes(raw, root)
    except BISCUIT_ERRORS as e:
        raise WarrantError(
            f"the token was not signed by the root key, or was altered: {e}", reason="forged"
        ) from e


_I64_MAX = (1 << 63) - 1


def _plain(text: str) -> bool:
    # Printable ASCII without ", \\, { or }: between double quotes it has no escape and no
    # placeholder in it, so it parses back to itself and cannot end its literal.
    return (
        text.isascii()
        and text.isprintable()
        and '"' not in text
        and "\\" not in text
        and "{" not in text
        and "}" not in text
    )


def _literal(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return f'"{value}"' if _plain(value) else None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value) if 0 <= value <= _I64_MAX else None
    if isinstance(value, dt.datetime) and kind is dt.datetime:
        # RFC 3339 (…T22:13:20+00:00), as Datalog dates are written: whole seconds in
        # datetime.UTC only, the one zone biscuit-python takes as a parameter.
        whole_utc = value.tzinfo is dt.UTC and not value.microsecond
        return value.isoformat() if whole_utc else None
    return None


def inline_parameters(source: str, parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Write the parameters that need no escaping into the Datalog source itself.

    biscuit-python converts each ``{name}`` parameter at about 1.5 µs (a third of a
    warrant's minting went there); parsing the same value as a literal costs a tenth of
    that. Only values whose literal is unambiguous are written in: booleans,
    non-negative 64-bit integers, whole-second UTC dates, and strings of
    printable ASCII without ``"``, ``\\``, ``{`` or ``}``. Every other value stays a
    parameter. A written value holds no brace, so replacing one placeholder never makes
    another. A template must not hold ``{name}`` inside a string literal of its own (none
    does): biscuit reads that as text, this function would replace it.

    Args:
        source: Datalog with ``{name}`` placeholders.
        parameters: their values.

    Returns:
        The source with the inlined values, and the parameters still to pass.
    """
    kept: dict[str, Any] = {}
    for name, value in parameters.items():
        text = _literal(value)
        if text is None:
            kept[name] = value
        else:
            source = source.replace("{" + name + "}", text)
    return source, kept


def limited_authorizer(source: str, parameters: dict[str, Any]) -> AuthorizerBuilder:
    """An authorizer builder with proctor's Datalog limits set explicitly.

    Args:
        source: the authorizer's Datalog (facts, checks, policies).
        parameters: values for the ``{name}`` parameters in ``source``.

    Returns:
        The builder, limited to :data:`MAX_FACTS` facts, :data:`MAX_ITERATIONS`
        iterations and :data:`MAX_TIME_MS` milliseconds.

    Raises:
        WarrantError: (reason ``limit``) this biscuit-python cannot set limits.
    """
    builder = AuthorizerBuilder(*inline_parameters(source, parameters))
    # biscuit-python 0.4.0 has limits()/set_limits() on AuthorizerBuilder (returning
    # and taking an AuthorizerLimits with max_facts, max_iterations, max_time), but its
    # type stub omits them. Without them evaluation is unbounded: refuse (fail closed).
    get_limits = getattr(builder, "limits", None)
    set_limits = getattr(builder, "set_limits", None)
    if get_limits is None or set_limits is None:
        raise WarrantError("this biscuit-python cannot bound Datalog evaluation", reason="limit")
    limits = get_limits()
    limits.max_facts = MAX_FACTS
    limits.max_iterations = MAX_ITERATIONS
    limits.max_time = dt.timedelta(milliseconds=MAX_TIME_MS)
    set_limits(limits)
    return builder


def datalog_failure(error: Exception, what: str) -> WarrantError:
    """Turn a failed Datalog evaluation into a warrant error.

    Args:
        error: what biscuit-python raised.
        what: what was being evaluated, for the message.

    Returns:
        ``WarrantError`` with reason ``limit`` when a limit was reached, else ``scope``
        (a check failed, or an expression could not be evaluated).
    """
    if str(error).startswith(_LIMIT_MESSAGE):
        return WarrantError(f"{what}: Datalog limits reached: {error}", reason="limit")
    return WarrantError(f"{what}: {error}", reason="scope")
