"""Canonical JSON: orjson-with-sorted-keys equals RFC 8785 on the accepted subset.

Numbers with fractions (floats) have their own tests in ``test_canonical_numbers.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonicalize, loads
from proctor.errors import CanonicalizationError, EventSizeError

ascii_keys = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    # Any valid Unicode string, control characters and astral planes included.
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=24)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(ascii_keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=600)
@given(json_values)
def test_canonical_bytes_equal_rfc8785_reference(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(json_values)
def test_loads_round_trips_canonical_bytes(value: Any) -> None:
    data = canonicalize(value)
    assert canonicalize(loads(data)) == data


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "finite number"),
        (math.inf, "finite number"),
        (-math.inf, "finite number"),
        (2**53, "integer within"),
        (-(2**53), "integer within"),
        ({"é": 1}, "ASCII strings"),
        ({1: 1}, "ASCII strings"),
        ((1, 2), "found tuple"),
        ({1, 2}, "found set"),
        (b"bytes", "found bytes"),
        ("\ud800", "cannot be encoded"),
    ],
    ids=[
        "nan",
        "inf",
        "neg-inf",
        "int-2^53",
        "int-neg-2^53",
        "non-ascii-key",
        "int-key",
        "tuple",
        "set",
        "bytes",
        "lone-surrogate",
    ],
)
def test_values_outside_the_subset_are_rejected(value: Any, expected: str) -> None:
    with pytest.raises(CanonicalizationError, match=expected):
        canonicalize({"x": value} if not isinstance(value, dict) else value)


def test_deep_nesting_is_rejected() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(CanonicalizationError, match="levels of nesting"):
        canonicalize(value)


def test_error_names_the_path() -> None:
    with pytest.raises(CanonicalizationError, match=r"\$\.a\[1\]\.b"):
        canonicalize({"a": [0, {"b": math.nan}]})


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": 1e400}',
        "{",
        "",
        '{"a": 18446744073709551617}',
        '{"a": 9007199254740993}',
    ],
    ids=["nan", "nan-member", "infinity", "overflow", "truncated", "empty", "huge-int", "int-2^53+1"],
)
def test_loads_rejects_non_json_and_inexact_numbers(text: str) -> None:
    with pytest.raises(CanonicalizationError):
        loads(text)


def test_size_limit() -> None:
    with pytest.raises(EventSizeError, match="at most 10 bytes"):
        canonicalize({"a": "x" * 20}, limit=10)
    with pytest.raises(EventSizeError):
        loads(b'"' + b"x" * 20 + b'"', limit=10)
