"""Canonical JSON numbers with fractions (RFC 8785 §3.2.2.3): the ECMAScript text of
every finite float, byte-equal to the ``rfc8785`` reference, and the lossless-number
rule of :func:`proctor.canonical.loads`."""

from __future__ import annotations

import gc
import json
import math
import struct
import tracemalloc
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proctor.canonical import MAX_SAFE_INTEGER, canonicalize, loads, number_text
from proctor.errors import CanonicalizationError

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B, ids=[bits for bits, _ in APPENDIX_B])
def test_floats_are_written_as_rfc8785_appendix_b(bits: str, text: str) -> None:
    value = _double(bits)
    assert number_text(value) == text
    assert canonicalize({"n": value}) == b'{"n":' + text.encode() + b"}"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "0.7"),
        (1.0, "1"),
        (-0.0, "0"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (2.0**60, "1152921504606847000"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.000123, "0.000123"),
        (1e300, "1e+300"),
        (-2.5, "-2.5"),
        (123.456, "123.456"),
    ],
    ids=lambda v: repr(v) if isinstance(v, float) else None,
)
def test_ecmascript_number_formatting(value: float, text: str) -> None:
    assert number_text(value) == text


# Every finite double (subnormals, -0.0, the extremes), plus the ranges where the
# format switches: integers past 2**53 printed in full up to 1e21, exponents at 1e21
# and 1e-7, subnormals.
finite_floats = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=2.0**53, max_value=1e22).map(lambda f: f * (1, -1)[int(f) % 2])
    | st.floats(min_value=1e-8, max_value=1e-5)
    | st.floats(min_value=-2.2250738585072014e-308, max_value=2.2250738585072014e-308)
    | st.integers(min_value=-340, max_value=308).map(lambda e: float(f"1e{e}"))
    | st.integers(min_value=-(2**63), max_value=2**63).map(float)
)


@settings(max_examples=3000)
@given(finite_floats)
@example(-0.0)
@example(5e-324)
@example(1.7976931348623157e308)
@example(9007199254740993.0)
def test_float_bytes_equal_rfc8785_reference(value: float) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)
    assert canonicalize([value]) == rfc8785.dumps([value])


ascii_keys = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | finite_floats
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(ascii_keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=800)
@given(documents)
def test_documents_with_floats_equal_rfc8785_reference(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@settings(max_examples=800)
@given(documents)
def test_canonical_bytes_with_floats_parse_back_to_the_same_bytes(value: Any) -> None:
    data = canonicalize(value)
    assert canonicalize(loads(data)) == data


@settings(max_examples=500)
@given(documents)
def test_other_encoders_text_parses_to_the_canonical_bytes(value: Any) -> None:
    # Python's json and orjson write shortest round-trip digits in their own format
    # (1e-05, 1e+16, 1.0): lossless, so accepted, and re-encoded canonically.
    expected = rfc8785.dumps(value)
    assert canonicalize(loads(json.dumps(value))) == expected
    assert canonicalize(loads(orjson.dumps(value))) == expected


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (math.nan, r"\$\.a\[0\]"),
        (math.inf, r"\$\.a\[0\]"),
        (-math.inf, r"\$\.a\[0\]"),
    ],
    ids=["nan", "inf", "neg-inf"],
)
def test_nan_and_infinities_are_refused_with_their_path(value: float, where: str) -> None:
    with pytest.raises(CanonicalizationError, match=where + r": expected a finite number"):
        canonicalize({"a": [value, 0.5]})


def test_integers_beyond_2_53_are_still_refused_next_to_floats() -> None:
    with pytest.raises(CanonicalizationError, match=r"\$\.b: expected an integer within"):
        canonicalize({"a": 0.5, "b": 2**53})
    assert canonicalize({"a": 0.5, "b": float(2**53)}) == b'{"a":0.5,"b":9007199254740992}'


def test_errors_other_than_numbers_are_found_when_floats_are_present() -> None:
    for bad, message in [
        ({"é": 1}, "ASCII strings"),
        ((1, 2), "found tuple"),
        ("\ud800", "cannot be encoded"),
    ]:
        with pytest.raises(CanonicalizationError, match=message):
            canonicalize({"f": 0.5, "x": bad})


def test_deep_nesting_is_refused_when_floats_are_present() -> None:
    value: Any = 0.5
    for _ in range(40):
        value = [value]
    with pytest.raises(CanonicalizationError, match="levels of nesting"):
        canonicalize(value)
    with pytest.raises(CanonicalizationError, match="levels of nesting"):
        loads(b"[" * 40 + b"0.5" + b"]" * 40)


def test_a_float_and_an_equal_integer_encode_alike() -> None:
    # RFC 8785: both are the number 1; a digest over canonical bytes cannot tell them apart.
    assert canonicalize({"t": 1.0}) == canonicalize({"t": 1}) == b'{"t":1}'
    assert canonicalize({"t": -0.0}) == canonicalize({"t": 0}) == b'{"t":0}'


def test_the_float_free_path_is_unchanged() -> None:
    value = {"b": [1, "x", None, True], "a": {"z": -(2**53 - 1)}}
    assert canonicalize(value) == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.7", 0.7),
        ("1.50", 1.5),
        ("1e2", 100.0),
        ("1E-7", 1e-7),
        ("5e-324", 5e-324),
        ("-0.0", -0.0),
        ("0.30000000000000004", 0.1 + 0.2),
        ("1152921504606847000", 2.0**60),
        ("100000000000000000000", 1e20),
        ("1.7976931348623157e308", 1.7976931348623157e308),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_lossless_numbers_are_accepted(text: str, value: float) -> None:
    parsed = loads('{"n": ' + text + "}")
    assert parsed == {"n": value}
    assert type(parsed["n"]) is float


@pytest.mark.parametrize(
    "text",
    [
        "9007199254740993",
        "-9007199254740993",
        "1152921504606846976",
        "18446744073709551617",
        "0.30000000000000000001",
        "0.1000000000000000055511151231257827",
        "1e-400",
        "2.5e-324",
        "1e400",
    ],
)
def test_numbers_a_double_cannot_hold_as_written_are_refused(text: str) -> None:
    # Policy sees the canonical text; a tool that parses the original exactly would
    # see another number. Refused on parsing, wherever the number is.
    with pytest.raises(CanonicalizationError, match=r"expected numbers that an IEEE 754 double holds|JSON"):
        loads('{"a": "9007199254740993", "b": [0.5, ' + text + "]}")


def test_number_like_strings_are_not_numbers() -> None:
    text = r'{"a": "9007199254740993 \" 1e-400", "b": 0.5}'
    assert loads(text) == {"a": '9007199254740993 " 1e-400', "b": 0.5}


def test_documents_with_floats_leave_nothing_behind() -> None:
    """Parsing and encoding a document with a float once left its frames (and the
    document) on a module-level exception's growing traceback: a gigabyte after 50,000
    documents in a governor serving tool calls with float arguments. Found by fuzzing."""
    doc = '{"arguments": {"temperature": 0.7, "top_p": [0.25, 1e-7], "text": "' + "x" * 4000 + '"}}'
    for _ in range(50):
        canonicalize(loads(doc))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            canonicalize(loads(doc))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"{grown} bytes kept after 2,000 documents"
