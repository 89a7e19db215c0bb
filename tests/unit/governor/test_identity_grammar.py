"""The grammar of principals' zones and attributes (proctor.governor.identity)."""

from __future__ import annotations

import pytest

from proctor.governor.identity import MAX_ATTRIBUTE_VALUE, verify_attributes, verify_zone
from proctor.governor.model import RequestShapeError


@pytest.mark.parametrize("zone", ["", "prod", "eu-west-1", "prod.eu_2", "Z", "a" * 64])
def test_good_zones_pass(zone: str) -> None:
    assert verify_zone(zone) == zone


@pytest.mark.parametrize(
    "zone",
    [
        'prod" || true\n',
        "prod ",
        " prod",
        "-prod",
        ".prod",
        "pro d",
        "prod/eu",
        "a" * 65,
        "prød",
        "prod\x00",
        1,
    ],
    ids=[
        "injection",
        "trailing-space",
        "leading-space",
        "leading-dash",
        "leading-dot",
        "inner-space",
        "slash",
        "too-long",
        "non-ascii",
        "nul",
        "not-a-string",
    ],
)
def test_bad_zones_are_refused_with_what_was_found(zone: object) -> None:
    with pytest.raises(RequestShapeError) as refused:
        verify_zone(zone)
    message = str(refused.value)
    assert message.startswith("zone: expected '' or 1-64 characters")
    assert message.endswith(f"found {zone!r}")


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"role": "dev"},
        {"role": "admin", "tenant": "acme corp", "_team": "Platform (EU) #2", "cost_centre": "C-1/2"},
        {"note": "é€日本"},
        {"role": "x" * MAX_ATTRIBUTE_VALUE},
    ],
    ids=["none", "role", "several", "unicode", "longest"],
)
def test_good_attributes_pass_unchanged(attrs: dict[str, str]) -> None:
    assert verify_attributes(attrs) == attrs


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"role": 1}, "attrs['role']: expected a string, found int"),
        ({"role": "a\\b"}, "'\\\\' at position 1"),
        ({"role": "a\tb"}, "'\\t' at position 1"),
        ({"role": "a\u200bb"}, "'\\u200b' at position 1"),  # zero-width space: not printable
        ({"role": "a\u00a0"}, "'\\xa0' at position 1"),  # no-break space: not printable
        ({"role": "dev "}, "white space at an end"),
        ({"": "x"}, "expected attribute names"),
        ({"rôle": "x"}, "expected attribute names"),
    ],
    ids=[
        "not-a-string",
        "backslash",
        "tab",
        "zero-width",
        "nbsp",
        "trailing-space",
        "empty-key",
        "non-ascii-key",
    ],
)
def test_bad_attributes_are_refused_with_what_was_found(attrs: dict[str, object], expected: str) -> None:
    with pytest.raises(RequestShapeError) as refused:
        verify_attributes(attrs)
    assert expected in str(refused.value)


def test_attributes_must_be_a_mapping() -> None:
    with pytest.raises(RequestShapeError, match="expected an object of strings, found list"):
        verify_attributes([("role", "dev")])
