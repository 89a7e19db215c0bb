"""Canonical JSON: RFC 8785 (JCS) over an I-JSON-safe subset.

Every hashed or signed JSON object in proctor is encoded here. The subset is:
strings, integers within ±(2**53 - 1), finite floats, booleans, null, arrays, and
objects whose keys are ASCII strings, nested at most :data:`MAX_DEPTH` deep. Values
outside it are rejected rather than encoded, because each excluded kind is where JCS
implementations disagree or where readers would see another value:

- NaN and infinities (not JSON; RFC 8785 §3.2.2.3),
- integers beyond 2**53 (I-JSON, RFC 7493 §2.2, and RFC 8785 §3.2.2.3),
- non-ASCII object keys (RFC 8785 §3.2.3 sorts by UTF-16 code units, not code points),
- lone surrogates in strings (RFC 8785 §3.2.2.2 requires valid Unicode).

Encoding, two paths with the same output (ADR 0001):

- Without floats, the output of ``orjson`` with sorted keys is byte-for-byte the
  RFC 8785 encoding, and about fifty times faster than the reference. The check walk
  stops at the first float and hands the value to the second path.
- With floats, each float is written by :func:`number_text` (RFC 8785 §3.2.2.3:
  ECMAScript ``Number::toString``, shortest round-trip digits, ``1.0`` → ``1``,
  ``1e21`` → ``1e+21``, ``-0.0`` → ``0``) and spliced into orjson's output as a
  pre-encoded fragment; strings, keys and their order are still orjson's.

Both are property-tested byte-equal to the ``rfc8785`` reference package
(``tests/unit/test_canonical.py``, ``tests/unit/test_canonical_numbers.py``).

Parsing (:func:`loads`) accepts any JSON text of the subset, canonical or not, and one
more rule: a number is accepted only if its canonical text denotes the same decimal
value as the text received (a *lossless* number). ``0.7``, ``1.50``, ``1e2``, ``5e-324``
pass; ``9007199254740993`` (read as …992), ``0.30000000000000000001`` (read as 0.3),
``1e-400`` (read as 0) are refused, so that policy, which sees the canonical text, and
a tool that parses the original text exactly can never see different numbers. An
integer token beyond 2**53 that is lossless (``1152921504606847000``, the canonical
text of the float 2**60) is read as that float, so canonical bytes always parse back
to a value that re-encodes to the same bytes.

``1.0`` and ``1`` encode alike (``1``), as RFC 8785 requires: digests and signatures
over canonical bytes cannot tell them apart, and nothing in proctor may decide on the
Python type of a number that came through here without saying so.

A shared primitive at the bottom of the package tree: it imports nothing of proctor but
:mod:`proctor.errors`, so that every layer (policy, warrants, lineage events) may use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from proctor.errors import CanonicalizationError, EventSizeError

__all__ = ["MAX_SAFE_INTEGER", "MAX_DEPTH", "canonicalize", "loads", "number_text"]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer magnitude accepted (I-JSON, RFC 7493 §2.2)."""

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted."""


class _FloatSeen(Exception):  # noqa: N818 - a private signal, not an error
    """The fast check met a float: take the second path, which checks the whole value
    again. Raised as a new instance each time: one instance raised again and again
    keeps every traceback it went through, and with them the frames and the documents
    they held (a gigabyte after 50,000 documents with floats, found by fuzzing)."""


class _Refusal(Exception):  # noqa: N818 - private; becomes a CanonicalizationError
    """A value outside the subset. The walk builds no path on its way down (that is
    most of its cost); each level adds its step while the refusal passes back up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str] = []

    def error(self) -> CanonicalizationError:
        """The error to raise, naming the path (``$.a[1].b``)."""
        return CanonicalizationError(f"${''.join(reversed(self.steps))}: {self.message}")


def _out_of_range(value: int) -> _Refusal:
    return _Refusal(f"expected an integer within ±(2**53 - 1), found {value}")


def _wrong_key(key: object) -> _Refusal:
    return _Refusal(f"expected object keys that are ASCII strings, found {key!r}")


_TOO_DEEP = f"expected at most {MAX_DEPTH} levels of nesting"


def _check(value: Any, depth: int) -> None:
    # Exact type checks: bool is a subclass of int, and subclasses of str/dict may
    # serialise differently, so only the built-in types themselves are accepted.
    # Strings, null, booleans and safe integers inside containers are passed over
    # without a call (most values are those).
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return
        raise _out_of_range(value)
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise _Refusal(_TOO_DEEP)
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _wrong_key(key)
            kind = type(item)
            if kind is str or item is None or kind is bool:
                continue
            if kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            try:
                _check(item, depth + 1)
            except _Refusal as r:
                r.steps.append(f".{key}")
                raise
        return
    if kind is list:
        if depth >= MAX_DEPTH:
            raise _Refusal(_TOO_DEEP)
        for i, item in enumerate(value):
            kind = type(item)
            if kind is str or item is None or kind is bool:
                continue
            try:
                _check(item, depth + 1)
            except _Refusal as r:
                r.steps.append(f"[{i}]")
                raise
        return
    if kind is float:
        raise _FloatSeen
    raise _Refusal(f"expected a JSON string, number, boolean, null, array or object; found {kind.__name__}")


def number_text(value: float) -> str:
    """The RFC 8785 §3.2.2.3 text of a finite float: ECMAScript ``Number::toString``.

    ECMA-262 (Number::toString, radix 10): let ``s`` (``k`` digits) and ``n`` be such
    that ``k`` is as small as possible and ``s * 10**(n - k)`` is the value; Python's
    ``repr`` gives those shortest round-trip digits. Then:

    1. ``k ≤ n ≤ 21``: the digits, then ``n - k`` zeros (``1e20`` → ``100000000000000000000``);
    2. ``0 < n ≤ 21``: the digits with a point after the ``n``-th (``0.7``, ``123.45``);
    3. ``-6 < n ≤ 0``: ``0.``, ``-n`` zeros, the digits (``0.000001``);
    4. otherwise an exponent ``e+``/``e-`` ``|n - 1|`` after the first digit and, if
       ``k > 1``, a point and the others (``1e+21``, ``1.5e-7``).

    Zero (``-0.0`` included) is ``0``; a negative value is ``-`` and the text of its
    magnitude.

    Raises:
        CanonicalizationError: NaN or an infinity.
    """
    if not math.isfinite(value):
        raise CanonicalizationError(
            f"expected a finite number, found {value!r} (NaN and infinities are not JSON)"
        )
    if value == 0:
        return "0"
    text = repr(value)
    if "e" not in text and text[-2:] != ".0":
        return text  # 1e-4 <= |value| < 1e16 with a fraction: repr already is rule 2 or 3
    if value < 0:
        return "-" + number_text(-value)
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    if whole != "0":
        n = len(whole) + (int(exponent) if exponent else 0)
        digits = (whole + fraction).rstrip("0")
    else:  # 0.000123: repr writes values in [1e-4, 1) without an exponent
        stripped = fraction.lstrip("0")
        n = len(stripped) - len(fraction)
        digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(e)}"


def _rebuilt(value: Any, depth: int, number: Callable[[Any], Any]) -> Any:
    """``value`` checked whole, with each float and each integer beyond 2**53 replaced
    by ``number(it)``; arrays and objects are copied, the rest kept.

    Raises:
        _Refusal: a value outside the subset.
    """
    kind = type(value)
    if kind is float or (kind is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER):
        return number(value)
    if kind is not dict and kind is not list:
        _check(value, depth)  # a scalar, or a kind that is refused
        return value
    if depth >= MAX_DEPTH:
        raise _Refusal(_TOO_DEEP)
    if kind is list:
        items: list[Any] = []
        for i, item in enumerate(value):
            kind = type(item)
            if kind is str or item is None or kind is bool:
                items.append(item)
                continue
            try:
                items.append(_rebuilt(item, depth + 1, number))
            except _Refusal as r:
                r.steps.append(f"[{i}]")
                raise
        return items
    members: dict[str, Any] = {}
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            raise _wrong_key(key)
        kind = type(item)
        if kind is str or item is None or kind is bool:
            members[key] = item
            continue
        try:
            members[key] = _rebuilt(item, depth + 1, number)
        except _Refusal as r:
            r.steps.append(f".{key}")
            raise
    return members


def _fragment(value: Any) -> orjson.Fragment:
    """A float as its canonical text, which orjson copies into its output as is."""
    if type(value) is int:
        raise _out_of_range(value)
    try:
        return orjson.Fragment(number_text(value))
    except CanonicalizationError as e:
        raise _Refusal(str(e)) from None


def canonicalize(value: Mapping[str, Any] | Sequence[Any] | Any, *, limit: int | None = None) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON.

    Args:
        value: a JSON value within the subset described in the module docstring.
        limit: if given, the largest accepted encoding in bytes.

    Returns:
        The canonical UTF-8 bytes.

    Raises:
        CanonicalizationError: ``value`` lies outside the subset (the message names
            the path, what was expected and what was found).
        EventSizeError: the encoding is longer than ``limit``.
    """
    try:
        try:
            _check(value, 0)
        except _FloatSeen:
            value = _rebuilt(value, 0, _fragment)
    except _Refusal as r:
        raise r.error() from None
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as e:  # lone surrogates, mostly
        raise CanonicalizationError(f"$: cannot be encoded as UTF-8 JSON: {e}") from e
    if limit is not None and len(data) > limit:
        raise EventSizeError(f"expected at most {limit} bytes of canonical JSON, found {len(data)}")
    return data


# A JSON string (escapes included; Friedl's unrolled loop: linear, no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Outside strings, in text that parsed as JSON, these runs are exactly the number tokens.
_NUMBER = re.compile(rb"[-0-9][-+.0-9eE]*")


def _check_lossless(raw: bytes) -> None:
    """Refuse a number whose canonical text would denote another value than its text.

    Raises:
        CanonicalizationError: the first such number, with what it would read as.
    """
    # Without an escaped quote (or an escaped backslash before a closing quote) every
    # other quote opens a string, and splitting runs at C speed, unlike the regex.
    escaped = b'\\"' in raw
    outside = _STRING.sub(b"", raw) if escaped else b"".join(raw.split(b'"')[0::2])
    for token in _NUMBER.findall(outside):
        digits = token[1:] if token[0] == 0x2D else token  # "-"
        if len(digits) <= 15 and digits.isdigit():
            continue  # an integer a double holds exactly
        parsed = float(token)
        shortest = repr(parsed)
        if shortest.encode() == token:
            continue  # written as its shortest round-trip digits: exact by construction
        try:
            exact = math.isfinite(parsed) and Decimal(token.decode()) == Decimal(shortest)
        except ArithmeticError:  # an exponent beyond Decimal's range (1e-99999999999999999999)
            exact = False
        if not exact:
            shown = token.decode() if len(token) <= 40 else token[:40].decode() + "…"
            read = number_text(parsed) if math.isfinite(parsed) else "an infinity"
            raise CanonicalizationError(
                "expected numbers that an IEEE 754 double holds as written (RFC 8785 §3.2.2.3, "
                f"I-JSON), found {shown}, which would read as {read}"
            )


def loads(data: bytes | str, *, limit: int | None = None) -> Any:
    """Parse JSON text and check that it lies within the canonical subset.

    The text itself need not be canonical; re-encode with :func:`canonicalize`. Numbers
    must be lossless (module docstring); an integer token beyond 2**53 that is the
    canonical text of a float is read as that float.

    Raises:
        CanonicalizationError: not JSON, outside the subset, or a number that a double
            does not hold as written.
        EventSizeError: longer than ``limit`` bytes.
    """
    raw = data.encode() if isinstance(data, str) else data
    if limit is not None and len(raw) > limit:
        raise EventSizeError(f"expected at most {limit} bytes of JSON, found {len(raw)}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CanonicalizationError(f"expected JSON text, found invalid JSON: {e}") from e
    try:
        _check(value, 0)
    except (_FloatSeen, _Refusal):
        # A float, or an integer beyond 2**53 that may be a float's canonical text: check
        # every number on the text, then the whole value (which raises any other error).
        _check_lossless(raw)
        try:
            value = _rebuilt(value, 0, float)
        except _Refusal as r:
            raise r.error() from None
    return value
