"""Canonical JSON: RFC 8785 (JCS) over a restricted, I-JSON-safe subset.

Every hashed or signed JSON object in proctor is encoded here. The subset is:
strings, integers within ±(2**53 - 1), booleans, null, arrays, and objects whose
keys are ASCII strings. Inside that subset the output of ``orjson`` with sorted
keys is byte-for-byte the RFC 8785 encoding (property-tested against the
``rfc8785`` reference package in ``tests/unit/test_canonical.py``), and it
is about fifty times faster. Values outside the subset are rejected rather than
encoded, because each excluded kind is where JCS implementations disagree:

- floats (RFC 8785 §3.2.2.3 number serialisation; NaN and infinities are not JSON),
- integers beyond 2**53 (I-JSON, RFC 7493 §2.2, and RFC 8785 §3.2.2.3),
- non-ASCII object keys (RFC 8785 §3.2.3 sorts by UTF-16 code units, not code points),
- lone surrogates in strings (RFC 8785 §3.2.2.2 requires valid Unicode).

A shared primitive at the bottom of the package tree: it imports nothing of proctor but
:mod:`proctor.errors`, so that every layer (policy, warrants, lineage events) may use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from proctor.errors import CanonicalizationError, EventSizeError

__all__ = ["MAX_SAFE_INTEGER", "MAX_DEPTH", "canonicalize", "loads"]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer magnitude accepted (I-JSON, RFC 7493 §2.2)."""

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted."""


def _check(value: Any, path: str, depth: int) -> None:
    # Exact type checks: bool is a subclass of int, and subclasses of str/dict may
    # serialise differently, so only the built-in types themselves are accepted.
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return
        raise CanonicalizationError(f"{path}: expected an integer within ±(2**53 - 1), found {value}")
    if depth >= MAX_DEPTH:
        raise CanonicalizationError(f"{path}: expected at most {MAX_DEPTH} levels of nesting")
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise CanonicalizationError(
                    f"{path}: expected object keys that are ASCII strings, found {key!r}"
                )
            _check(item, f"{path}.{key}", depth + 1)
        return
    if kind is list:
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
        return
    if kind is float:
        raise CanonicalizationError(
            f"{path}: expected an integer, string, boolean or null; found the "
            f"non-integer number {value!r} (floats, NaN and infinities are not accepted)"
        )
    raise CanonicalizationError(
        f"{path}: expected a JSON string, integer, boolean, null, array or object; found {kind.__name__}"
    )


def canonicalize(value: Mapping[str, Any] | Sequence[Any] | Any, *, limit: int | None = None) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON.

    Args:
        value: a JSON value within the subset described in the module docstring.
        limit: if given, the largest accepted encoding in bytes.

    Returns:
        The canonical UTF-8 bytes.

    Raises:
        CanonicalizationError: ``value`` lies outside the subset.
        EventSizeError: the encoding is longer than ``limit``.
    """
    _check(value, "$", 0)
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as e:  # lone surrogates, mostly
        raise CanonicalizationError(f"$: cannot be encoded as UTF-8 JSON: {e}") from e
    if limit is not None and len(data) > limit:
        raise EventSizeError(f"expected at most {limit} bytes of canonical JSON, found {len(data)}")
    return data


def loads(data: bytes | str, *, limit: int | None = None) -> Any:
    """Parse JSON text and check that it lies within the canonical subset.

    The text itself need not be canonical; re-encode with :func:`canonicalize`.

    Raises:
        CanonicalizationError: not JSON, or outside the subset.
        EventSizeError: longer than ``limit`` bytes.
    """
    raw = data.encode() if isinstance(data, str) else data
    if limit is not None and len(raw) > limit:
        raise EventSizeError(f"expected at most {limit} bytes of JSON, found {len(raw)}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CanonicalizationError(f"expected JSON text, found invalid JSON: {e}") from e
    _check(value, "$", 0)
    return value
