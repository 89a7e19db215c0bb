"""Console session rules (:mod:`proctor.console.session`), on a real in-process governor:
a session is one canonical statement signed by an active admin, for at most an hour,
for its origin; anything else is refused, and a suspended admin's session ends."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.cli_console import parse_ttl
from proctor.console.session import MAX_SESSION_S, issue_token, statement, verify_session
from proctor.errors import AuthenticationError, PrincipalError
from proctor.governor.service import Governor

ORIGIN = "https://gov.example"
NOW = 1_800_000_000.0
ID = "A" * 22


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(key: PrincipalKey, text: bytes) -> str:
    return f"pcs1.{b64url(text)}.{b64url(key.sign(text))}"


def admin(gov_data: Path) -> PrincipalKey:
    return PrincipalKey.load(gov_data / "keys" / "admin.key")


def good(gov_data: Path) -> bytes:
    return statement("admin", int(NOW) + 600, ID, origin=ORIGIN)


def test_session_of_an_active_admin_verifies(governor: Governor, gov_data: Path) -> None:
    session = verify_session(signed(admin(gov_data), good(gov_data)), governor, origin=ORIGIN, now=NOW)
    assert session.principal == "admin"
    assert session.expires == int(NOW) + 600


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.replace(b"\n", b"\r\n"),
        lambda s: s.replace(b"principal admin", b"principal  admin"),
        lambda s: s.replace(b"v1\n", b"v2\n"),
        lambda s: s + b"extra 1\n",
        lambda s: s.rstrip(b"\n"),
        lambda s: b"\n".join([s.split(b"\n")[0], s.split(b"\n")[2], s.split(b"\n")[1], *s.split(b"\n")[3:]]),
        lambda s: s.replace(b"expires ", b"expires +"),
        lambda s: s.replace(b"origin https", b"origin javascript"),
    ],
    ids=[
        "crlf",
        "double-space",
        "version",
        "extra-field",
        "no-final-newline",
        "reordered",
        "signed-number",
        "scheme",
    ],
)
def test_session_statement_has_one_canonical_form(governor: Governor, gov_data: Path, mangle: object) -> None:
    text = mangle(good(gov_data))  # type: ignore[operator]
    with pytest.raises(AuthenticationError) as refused:
        verify_session(signed(admin(gov_data), text), governor, origin=ORIGIN, now=NOW)
    assert refused.value.reason == "malformed"


def test_session_expiring_beyond_the_longest_lifetime_is_refused(governor: Governor, gov_data: Path) -> None:
    key = admin(gov_data)
    longest = statement("admin", int(NOW) + MAX_SESSION_S, ID, origin=ORIGIN)
    verify_session(signed(key, longest), governor, origin=ORIGIN, now=NOW)
    too_long = statement("admin", int(NOW) + MAX_SESSION_S + 1, ID, origin=ORIGIN)
    with pytest.raises(AuthenticationError, match="expiring within"):
        verify_session(signed(key, too_long), governor, origin=ORIGIN, now=NOW)
    with pytest.raises(AuthenticationError, match="expired"):
        verify_session(signed(key, good(gov_data)), governor, origin=ORIGIN, now=NOW + 600)


def test_session_bound_to_another_origin_is_refused(governor: Governor, gov_data: Path) -> None:
    with pytest.raises(AuthenticationError) as refused:
        verify_session(
            signed(admin(gov_data), good(gov_data)), governor, origin="https://evil.example", now=NOW
        )
    assert refused.value.reason == "origin"


def test_session_signed_by_another_key_is_refused(governor: Governor, gov_data: Path) -> None:
    mallory = PrincipalKey.generate("admin")  # claims to be admin, with its own key
    with pytest.raises(AuthenticationError) as refused:
        verify_session(signed(mallory, good(gov_data)), governor, origin=ORIGIN, now=NOW)
    assert refused.value.reason == "signature"


def test_session_of_a_non_admin_or_suspended_admin_is_refused(governor: Governor, gov_data: Path) -> None:
    alice = PrincipalKey.load(gov_data / "alice.key")
    with pytest.raises(PrincipalError):
        verify_session(issue_token(alice, ttl_s=600, now=NOW), governor, origin=ORIGIN, now=NOW)
    # A second admin, signed in, then suspended: its very next check fails.
    ops = PrincipalKey.generate("ops")
    governor.add_principal("ops", ops.public_key_b64, attrs={"role": "admin"}, zone="", by="admin")
    token = issue_token(ops, ttl_s=600, now=NOW)
    assert verify_session(token, governor, origin=ORIGIN, now=NOW).principal == "ops"
    governor.set_principal_status("ops", "suspended", by="admin")
    with pytest.raises((PrincipalError, AuthenticationError)):
        verify_session(token, governor, origin=ORIGIN, now=NOW)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), (" 60m ", 3600)], ids=str
)
def test_console_token_ttl_forms(text: str, seconds: int) -> None:
    """A console token's --ttl is read in seconds, s, m or h."""
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0", "2h", "61m", "15 m", "1d", "-5m", "", "1e3"], ids=repr)
def test_console_token_ttl_beyond_an_hour_or_malformed_is_refused(text: str) -> None:
    """A console token --ttl beyond an hour, or malformed, is refused."""
    with pytest.raises(ValueError, match="--ttl"):
        parse_ttl(text)


def test_session_cookie_is_secure_over_https_and_strict_always(governor: Governor, gov_data: Path) -> None:
    """The session cookie is Secure over HTTPS and SameSite=Strict always."""
    from fastapi.testclient import TestClient

    from proctor.console import mount
    from proctor.governor.app import create_app

    app = create_app(governor)
    mount(app)
    for scheme in ("https", "http"):
        client = TestClient(app, base_url=f"{scheme}://gov.example")
        token = issue_token(admin(gov_data), ttl_s=600, now=time.time())
        answer = client.post(
            "/console/signin",
            data={"token": token},
            headers={"Origin": f"{scheme}://gov.example"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/" in cookie
        assert ("Secure" in cookie) == (scheme == "https")
        assert 590 <= int(re.search(r"Max-Age=(\d+)", cookie).group(1)) <= 600  # type: ignore[union-attr]
