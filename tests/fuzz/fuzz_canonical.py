"""Fuzz the canonical JSON decoder (``proctor.canonical.loads``) and the governor's body
parser over it (``proctor.governor.limits.parse_json``).

Refusals allowed: ``CanonicalizationError``, ``EventSizeError``. Oracles, for text
that is accepted:

- its canonical encoding is the ``rfc8785`` reference's, and parses back to a value
  whose encoding is the same bytes (decode(encode(x)) == x);
- every number keeps its decimal value (``loads`` refuses lossy numbers), read with
  the standard library's parser as ``Decimal``;
- ``parse_json`` accepts it only if no object names a member twice (checked with the
  standard library's parser, which sees every pair).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import rfc8785

from fuzz.fuzz_support import check, json_mutator
from proctor.canonical import canonicalize, loads
from proctor.errors import CanonicalizationError, EventSizeError
from proctor.governor.limits import parse_json

__all__ = ["INSTRUMENT", "mutate", "one_input"]

INSTRUMENT = ("proctor.canonical", "proctor.governor.limits")
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

LIMIT = 1 << 16
mutate = json_mutator(share=0.3)


class _Duplicate(Exception):  # noqa: N818 - a private signal
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise _Duplicate
    return dict(pairs)


def _exact(text: str) -> Any:
    """The text's value with every number as an exact Decimal (None: Python's parser
    refuses what orjson took, e.g. nesting Python's recursion limit refuses)."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return None


def one_input(data: bytes) -> None:
    """One input: canonical ``loads`` and the governor's ``parse_json``, with oracles."""
    try:
        value = loads(data, limit=LIMIT)
    except (CanonicalizationError, EventSizeError):
        return
    encoded = canonicalize(value)  # anything loads accepts must encode
    reference = rfc8785.dumps(value)
    check(
        encoded == reference, f"canonical bytes differ from rfc8785: {encoded[:200]!r} vs {reference[:200]!r}"
    )
    again = loads(encoded)
    check(canonicalize(again) == encoded, "canonical bytes do not parse back to the same value")
    check(again == value, "decode(encode(x)) != x")
    try:
        exact = _exact(data.decode("utf-8"))
        duplicate = False
    except _Duplicate:
        exact, duplicate = None, True
    if exact is not None:
        check(exact == _exact(encoded.decode()), "a number changed its decimal value on the way through")
    try:
        parse_json(data)
    except CanonicalizationError:
        return
    check(not duplicate, "parse_json accepted an object that names a member twice")
