"""Console sign-in, sessions and CSRF against a real ``proctor serve``: every console
route refuses without an admin's valid session, a POST needs this origin and the
session's CSRF token, a challenge or token signs in once, and a suspended admin's
session dies on its next request."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gov_server import GovernorServer, cli
from gov_support import POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.console.session import COOKIE, issue_token, statement

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("console"), policy=POLICIES / "run")
    try:
        gov.admin("principal", "add", "ops2", "--attr", "role=admin", "--out", str(gov.data / "ops2.key"))
        yield gov
    finally:
        gov.stop()


def admin_key(server: GovernorServer) -> PrincipalKey:
    return PrincipalKey.load(server.data / "keys" / "admin.key")


def post(
    server: GovernorServer, path: str, data: dict[str, str], *, cookie: str = "", origin: str | None = ""
) -> httpx.Response:
    headers = {}
    if origin is not None:
        headers["Origin"] = origin or server.url
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    return httpx.post(server.url + path, data=data, headers=headers, follow_redirects=False, timeout=30)


def get(server: GovernorServer, path: str, *, cookie: str = "") -> httpx.Response:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    return httpx.get(server.url + path, headers=headers, follow_redirects=False, timeout=30)


def session(server: GovernorServer, key: PrincipalKey | None = None) -> str:
    """Sign in with a fresh token of ``key`` (the admin's); the cookie's value."""
    answer = post(
        server,
        "/console/signin",
        {"token": issue_token(key or admin_key(server), ttl_s=600, now=time.time())},
    )
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies.get(COOKIE)
    assert cookie
    return cookie


def csrf_of(server: GovernorServer, cookie: str) -> str:
    page = get(server, "/console/confirm?action=suspend&target=alice", cookie=cookie)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_console_routes_refuse_without_credentials(server: GovernorServer) -> None:
    for path in (
        "/console",
        "/console/policy",
        "/console/confirm?action=suspend&target=alice",
        "/console/signout",
    ):
        answer = get(server, path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/signin"
    assert get(server, "/console/live.json").status_code == 401
    for path in ("/console/act", "/console/signout"):
        answer = post(server, path, {"action": "suspend", "target": "alice", "csrf": "x"})
        assert answer.status_code == 401, path
    assert "not signed in" in post(server, "/console/act", {"action": "suspend", "target": "alice"}).text


def test_a_cli_token_signs_in_once(server: GovernorServer) -> None:
    printed = cli("console", "token", "--ttl", "5m", "--data", str(server.data), "--json")
    token = __import__("json").loads(printed.stdout)["token"]
    first = post(server, "/console/signin", {"token": token})
    assert first.status_code == 303
    cookie = first.cookies[COOKIE]
    set_cookie = first.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    assert "path=/" in set_cookie
    assert "secure" not in set_cookie  # plain http on loopback; https adds it
    page = get(server, "/console", cookie=cookie)
    assert page.status_code == 200
    assert "Signed in as <strong>admin</strong>" in page.text
    assert get(server, "/console/live.json", cookie=cookie).json()["principals"]
    again = post(server, "/console/signin", {"token": token})
    assert again.status_code == 401
    assert "used already" in again.text


@pytest.mark.parametrize(
    "case", ["forged", "expired", "too-long", "other-origin", "garbage", "unknown-principal"]
)
def test_console_refuses_a_wrong_expired_or_forged_token(server: GovernorServer, case: str) -> None:
    key = admin_key(server)
    now = int(time.time())
    if case == "forged":
        token = issue_token(key, ttl_s=600, now=now)
        token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    elif case == "expired":
        token = issue_token(key, ttl_s=60, now=now - 120)
    elif case == "garbage":
        token = "pcs1.<script>.x"
    else:
        origin = "http://evil.example" if case == "other-origin" else "-"
        expires = now + (7200 if case == "too-long" else 600)
        signed = statement(key.name, expires, b64url(b"\x01" * 16), origin=origin)
        if case == "unknown-principal":
            signed = statement("mallory", expires, b64url(b"\x02" * 16))
        token = f"pcs1.{b64url(signed)}.{b64url(key.sign(signed))}"
    answer = post(server, "/console/signin", {"token": token})
    assert answer.status_code == (403 if case == "other-origin" else 401), answer.text
    assert COOKIE not in answer.cookies
    # The same token as a cookie opens nothing either.
    assert get(server, "/console", cookie=token).status_code == 303
    assert get(server, "/console/live.json", cookie=token).status_code == 401


def test_console_refuses_a_non_admin_principals_key(server: GovernorServer) -> None:
    alice = PrincipalKey.load(server.key)
    token = issue_token(alice, ttl_s=600, now=time.time())
    answer = post(server, "/console/signin", {"token": token})
    assert answer.status_code == 403
    assert "not an active admin" in answer.text
    assert get(server, "/console/live.json", cookie=token).status_code == 401


def test_a_challenge_answered_in_the_browser_way_signs_in_once(server: GovernorServer) -> None:
    key = admin_key(server)
    c = httpx.get(server.url + "/console/signin/challenge").json()
    assert c["origin"] == server.url
    signed = statement(
        key.name, c["session_expires"], b64url(b"\x03" * 16), origin=c["origin"], challenge=c["challenge"]
    )
    token = f"pcs1.{b64url(signed)}.{b64url(key.sign(signed))}"
    assert post(server, "/console/signin", {"token": token}).status_code == 303
    replay = post(server, "/console/signin", {"token": token})
    assert replay.status_code == 401
    assert "used already" in replay.text
    # The same challenge in another statement (another id): still used.
    other = statement(
        key.name, c["session_expires"], b64url(b"\x04" * 16), origin=c["origin"], challenge=c["challenge"]
    )
    assert (
        post(
            server, "/console/signin", {"token": f"pcs1.{b64url(other)}.{b64url(key.sign(other))}"}
        ).status_code
        == 401
    )
    # A challenge the server did not issue (its MAC changed): refused.
    fresh = httpx.get(server.url + "/console/signin/challenge").json()["challenge"]
    forged = fresh[:-3] + ("AAA" if not fresh.endswith("AAA") else "BBB")
    made = statement(
        key.name, c["session_expires"], b64url(b"\x05" * 16), origin=server.url, challenge=forged
    )
    answer = post(server, "/console/signin", {"token": f"pcs1.{b64url(made)}.{b64url(key.sign(made))}"})
    assert answer.status_code == 401
    assert "this server issued" in answer.text


def test_console_post_refuses_a_bad_or_missing_csrf_token(server: GovernorServer) -> None:
    cookie = session(server)
    for form in (
        {"action": "suspend", "target": "alice"},
        {"action": "suspend", "target": "alice", "csrf": "A" * 43},
    ):
        answer = post(server, "/console/act", form, cookie=cookie)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    # Another session's token is not this one's.
    other = csrf_of(server, session(server))
    answer = post(
        server, "/console/act", {"action": "suspend", "target": "alice", "csrf": other}, cookie=cookie
    )
    assert answer.status_code == 403
    assert get(server, "/console/live.json", cookie=cookie).json()["principals"][0]  # nothing changed
    assert all(
        p["status"] == "active" for p in get(server, "/console/live.json", cookie=cookie).json()["principals"]
    )


def test_console_post_refuses_a_foreign_or_missing_origin(server: GovernorServer) -> None:
    cookie = session(server)
    csrf = csrf_of(server, cookie)
    form = {"action": "suspend", "target": "alice", "csrf": csrf}
    for origin in ("http://evil.example", "null", None):
        answer = post(server, "/console/act", form, cookie=cookie, origin=origin)
        assert answer.status_code == 403, origin
        assert "did not come from a page of this console" in answer.text
    # Sign-in too: a token posted from another origin is refused (login CSRF).
    token = issue_token(admin_key(server), ttl_s=600, now=time.time())
    assert post(server, "/console/signin", {"token": token}, origin="http://evil.example").status_code == 403
    assert all(
        p["status"] == "active" for p in get(server, "/console/live.json", cookie=cookie).json()["principals"]
    )


def test_a_suspended_admins_session_dies_at_once(server: GovernorServer) -> None:
    ops2 = PrincipalKey.load(server.data / "ops2.key")
    cookie = session(server, ops2)
    assert get(server, "/console/live.json", cookie=cookie).status_code == 200
    admin = session(server)
    form = {"action": "suspend", "target": "ops2", "csrf": csrf_of(server, admin), "reason": "test"}
    done = post(server, "/console/act", form, cookie=admin)
    assert done.status_code == 200
    assert "leaf index" in done.text
    assert get(server, "/console/live.json", cookie=cookie).status_code == 401
    assert get(server, "/console", cookie=cookie).status_code == 303
    form = {"action": "resume", "target": "ops2", "csrf": csrf_of(server, admin)}
    assert post(server, "/console/act", form, cookie=admin).status_code == 200
    assert get(server, "/console/live.json", cookie=cookie).status_code == 200


def test_sign_out_removes_the_cookie(server: GovernorServer) -> None:
    cookie = session(server)
    answer = post(server, "/console/signout", {"csrf": csrf_of(server, cookie)}, cookie=cookie)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/signin"
    assert (
        f'{COOKIE}=""' in answer.headers["set-cookie"] or "max-age=0" in answer.headers["set-cookie"].lower()
    )


def test_console_token_refuses_a_bad_ttl(server: GovernorServer, tmp_path: Path) -> None:
    for ttl in ("2h", "0", "soon", "61m"):
        done = cli("console", "token", "--ttl", ttl, "--data", str(server.data), check=False)
        assert done.returncode == 2, ttl
        assert "--ttl" in done.stderr


def test_console_sessions_and_single_use_hold_across_worker_processes(tmp_path: Path) -> None:
    """``proctor serve --workers 2``: each connection goes to either process; a challenge
    from one is answered at the other, a session works on both, and a token or a
    challenge used at one is refused at the other (claimed in the store)."""
    gov = GovernorServer(tmp_path / "workers", serve_args=("--workers", "2"))
    try:
        key = admin_key(gov)
        cookies = []
        for n in range(6):  # new connections: the kernel spreads them over the workers
            c = httpx.get(gov.url + "/console/signin/challenge").json()
            signed = statement(
                key.name,
                c["session_expires"],
                b64url(bytes([n]) * 16),
                origin=c["origin"],
                challenge=c["challenge"],
            )
            token = f"pcs1.{b64url(signed)}.{b64url(key.sign(signed))}"
            first = post(gov, "/console/signin", {"token": token})
            assert first.status_code == 303, first.text
            cookies.append(first.cookies[COOKIE])
            for _ in range(3):
                assert post(gov, "/console/signin", {"token": token}).status_code == 401
        token = issue_token(key, ttl_s=600, now=time.time())
        assert post(gov, "/console/signin", {"token": token}).status_code == 303
        for _ in range(5):
            assert post(gov, "/console/signin", {"token": token}).status_code == 401
        for cookie in cookies:
            for _ in range(3):
                assert get(gov, "/console/live.json", cookie=cookie).status_code == 200
    finally:
        gov.stop()
