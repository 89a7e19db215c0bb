"""Parameters written into Datalog source parse back to exactly the value passed, and a
value that could escape its literal is never written in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from biscuit_auth import AuthorizerBuilder, BiscuitBuilder, KeyPair, Rule
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.authorization.tokens import biscuit_date, inline_parameters
from proctor.authorization.warrants import WarrantClaims, mint_warrant, verify_warrant

KEY = KeyPair()
I64 = (1 << 63) - 1


def _facts(source: str, parameters: dict[str, Any]) -> list[list[Any]]:
    """Every ``f`` fact of the authority block, as Python values."""
    token = BiscuitBuilder(source, parameters).build(KEY.private_key)
    authorizer = AuthorizerBuilder("allow if true;").build(token)
    return sorted((row.terms for row in authorizer.query(Rule("g($x, $y) <- f($x, $y)"))), key=repr)


values = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
    st.sampled_from(['a"); f("x", 1', "\\", '\\"', "{v}", "{w}", "a\nb", "é", "", " "]),
    st.booleans(),
    st.integers(min_value=-I64 - 1, max_value=I64),
    st.integers(min_value=0, max_value=253_402_300_799).map(biscuit_date),  # to 9999-12-31
)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_written_or_passed_a_value_reads_back_as_itself(v: Any, w: Any) -> None:
    source = "f(1, {v});\nf(2, {w});"
    written, kept = inline_parameters(source, {"v": v, "w": w})
    assert set(kept) <= {"v", "w"}
    assert _facts(written, kept) == [[1, v], [2, w]]
    assert _facts(written, kept) == _facts(source, {"v": v, "w": w})


@pytest.mark.parametrize(
    "value",
    ['x"); f(3, "y', "back\\slash", "{w}", "}", "tab\there", "new\nline", "ünïcode", -1, I64 + 1, 1.5, None],
)
def test_a_value_that_needs_escaping_stays_a_parameter(value: Any) -> None:
    written, kept = inline_parameters("f(1, {v});", {"v": value})
    assert kept == {"v": value}
    assert written == "f(1, {v});"


def test_plain_values_are_written_in() -> None:
    when = dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)
    written, kept = inline_parameters(
        "f({a}, {b}, {c}, {d});", {"a": "/usr/bin/pg_dump", "b": 7, "c": False, "d": when}
    )
    assert kept == {}
    assert written == 'f("/usr/bin/pg_dump", 7, false, 2026-12-05T06:00:00+00:00);'


def test_a_hostile_claim_cannot_add_to_the_authority_block() -> None:
    # Principal names and paths are validated; an obligation's string value is free text.
    hostile = 'x");\nresource("/bin/sh");\nobligation("network", "any'
    claims = WarrantClaims(
        warrant_id="wr_0123456789abcdefghijklmnop",
        principal="eve",
        action="exec",
        resource="/usr/bin/true",
        args_digest="sha256:" + "ab" * 32,
        zone="",
        executable_digest="",
        obligations={"note": hostile, "network": "none"},
        not_before=1_700_000_000,
        expires=1_700_000_600,
        lease_ttl_ms=30_000,
        decision_index=1,
        parent="",
    )
    seed = bytes(range(32))
    from proctor.authorization.keys import PrincipalKey

    root = PrincipalKey.from_private_bytes("admin", seed)
    token = mint_warrant(claims, root_private_key=seed)
    verified = verify_warrant(token, root_public_key=root.public_key, now=1_700_000_060, request=None)
    assert isinstance(verified, WarrantClaims)
    assert verified == claims
    assert verified.resource == "/usr/bin/true"
    assert dict(verified.obligations) == {"note": hostile, "network": "none"}


def test_a_date_in_another_zone_stays_a_parameter() -> None:
    from zoneinfo import ZoneInfo

    for zone in (ZoneInfo("UTC"), ZoneInfo("Europe/London"), dt.timezone(dt.timedelta(hours=2))):
        when = dt.datetime(2026, 1, 5, 12, 0, tzinfo=zone)
        assert inline_parameters("f({d});", {"d": when}) == ("f({d});", {"d": when})
