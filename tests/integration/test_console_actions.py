"""The console's actions and policy pages against a real ``proctor serve``: each action
goes through the governor's own operation ``by`` the admin signed in and shows the log
event it recorded with its leaf index; a refused one does nothing and says why; the
policy page shows the history and a diff between two versions; log content is escaped."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gov_server import GovernorServer, client_of
from gov_support import EXE, POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.console.session import COOKIE, issue_token

pytestmark = pytest.mark.slow

APPROVAL = """
@id("write-needs-approval")
@approval("required")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    root = tmp_path_factory.mktemp("console-actions")
    policy = root / "policy"
    shutil.copytree(POLICIES / "run", policy)
    (policy / "approvals.cedar").write_text(APPROVAL)
    gov = GovernorServer(root / "gov", policy=policy)
    try:
        yield gov
    finally:
        gov.stop()


@pytest.fixture(scope="module")
def cookie(server: GovernorServer) -> str:
    key = PrincipalKey.load(server.data / "keys" / "admin.key")
    answer = httpx.post(
        server.url + "/console/signin",
        data={"token": issue_token(key, ttl_s=3600, now=time.time())},
        headers={"Origin": server.url},
    )
    assert answer.status_code == 303
    return str(answer.cookies[COOKIE])


def get(server: GovernorServer, path: str, cookie: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Cookie": f"{COOKIE}={cookie}"}, timeout=30)


def act(server: GovernorServer, cookie: str, action: str, target: str, reason: str = "") -> tuple[int, str]:
    """Confirm ``action`` as a person would: its confirmation page, then its form."""
    confirm = get(server, f"/console/confirm?{httpx.QueryParams(action=action, target=target)}", cookie)
    assert confirm.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', confirm.text)
    assert csrf is not None
    answer = httpx.post(
        server.url + "/console/act",
        data={"csrf": csrf.group(1), "action": action, "target": target, "reason": reason},
        headers={"Cookie": f"{COOKIE}={cookie}", "Origin": server.url},
        timeout=60,
    )
    return answer.status_code, answer.text


def event_of(page: str) -> tuple[int, dict[str, Any]]:
    index = re.search(r'<strong id="leaf-index">(\d+)</strong>', page)
    shown = re.search(r'<pre id="event">(.*?)</pre>', page, re.S)
    assert index is not None
    assert shown is not None
    return int(index.group(1)), json.loads(html.unescape(shown.group(1)))


def logged(server: GovernorServer, index: int) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.url}/v1/log/entries/{index}").json()["event"]
    return found


def test_console_approve_decides_through_the_governor_and_shows_the_event(
    server: GovernorServer, cookie: str
) -> None:
    with client_of(server) as alice:
        body = {
            "action": "mcp.call",
            "resource": "fs/write_file",
            "arguments": {"path": "/tmp/x"},
            "executable_digest": EXE,
        }
        asked = alice.authorize(body)["approval"]["id"]
    page = get(server, "/console", cookie).text
    assert asked in page  # listed as pending
    assert "write-needs-approval" in page
    status, done = act(server, cookie, "approve", asked, "looks fine")
    assert status == 200, done
    index, event = event_of(done)
    assert event == logged(server, index)
    assert event["type"] == "approval.decided"
    assert event["status"] == "approved"
    assert event["by"] == "admin"
    assert asked not in get(server, "/console/live.json", cookie).text  # no longer pending
    # Deciding it again is refused by the governor: nothing is done, the page says why.
    status, again = act(server, cookie, "deny", asked)
    assert status == 409
    assert "Nothing was done" in again


def test_console_revokes_a_warrant_and_a_principal(server: GovernorServer, cookie: str) -> None:
    with client_of(server) as alice:
        warrant = alice.authorize(
            {"action": "exec", "resource": "/bin/echo", "argv": ["echo"], "executable_digest": EXE}
        )
    status, done = act(server, cookie, "revoke-warrant", warrant["warrant"]["id"])
    assert status == 200, done
    index, event = event_of(done)
    assert event["target"] == {"kind": "warrant", "id": warrant["warrant"]["id"]}
    assert logged(server, index) == event
    server.admin("principal", "add", "bob", "--attr", "role=dev", "--out", str(server.data / "bob.key"))
    status, done = act(server, cookie, "revoke-principal", "bob", "left")
    assert status == 200, done
    _, event = event_of(done)
    assert event["target"] == {"kind": "principal", "id": "bob"}
    principals = {
        p["name"]: p["status"] for p in get(server, "/console/live.json", cookie).json()["principals"]
    }
    assert principals["bob"] == "suspended"


def test_console_action_on_an_unknown_target_does_nothing(server: GovernorServer, cookie: str) -> None:
    size = int(httpx.get(server.url + "/v1/log/checkpoint").text.split("\n")[1])
    status, page = act(server, cookie, "revoke-execution", "ex_nosuchexecution")
    assert status == 404
    assert "Nothing was done" in page
    assert int(httpx.get(server.url + "/v1/log/checkpoint").text.split("\n")[1]) == size
    assert get(server, "/console/confirm?action=format-disk&target=x", cookie).status_code == 422


def test_console_escapes_what_the_log_holds(server: GovernorServer, cookie: str) -> None:
    with client_of(server) as alice:
        body = {"action": "exec", "resource": "/bin/echo", "argv": ["echo"], "executable_digest": EXE}
        warrant = alice.authorize(body)["warrant"]["id"]
    status, done = act(server, cookie, "revoke-warrant", warrant, "<script>alert(1)</script>")
    assert status == 200
    assert "<script>alert(1)</script>" not in done
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in done
    _, event = event_of(done)
    assert event["reason"] == "<script>alert(1)</script>"
    confirm = get(server, "/console/confirm?action=suspend&target=%3Cscript%3Ex", cookie).text
    assert "<script>x" not in confirm
    assert "&lt;script&gt;x" in confirm


def test_console_suspend_and_resume_record_their_events(server: GovernorServer, cookie: str) -> None:
    server.admin("principal", "add", "carol", "--attr", "role=dev", "--out", str(server.data / "carol.key"))
    for action, change in (("suspend", "suspended"), ("resume", "resumed")):
        status, done = act(server, cookie, action, "carol")
        assert status == 200, done
        index, event = event_of(done)
        assert event["type"] == "principal.changed"
        assert event["change"] == change
        assert event["by"] == "admin"
        assert logged(server, index) == event


def test_console_policy_page_shows_the_history_and_a_diff(
    server: GovernorServer, cookie: str, tmp_path: Path
) -> None:
    newer = tmp_path / "policy2"
    shutil.copytree(POLICIES / "run", newer)
    (newer / "approvals.cedar").write_text(APPROVAL.replace("fs/write_file", "fs/<b>move_file"))
    server.admin("policy", "push", str(newer))
    versions = get(server, "/console/live.json", cookie).json()["policy"]["versions"]
    assert len(versions) == 2
    assert versions[0]["active"]
    new, old = versions[0]["digest"], versions[1]["digest"]
    page = get(server, f"/console/policy?{httpx.QueryParams(old=old, new=new)}", cookie).text
    diff = html.unescape(re.search(r'<pre class="diff" id="diff">(.*?)</pre>', page, re.S).group(1))  # type: ignore[union-attr]
    assert (
        '-permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/write_file");'
        in diff
    )
    assert (
        '+permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"fs/<b>move_file");'
        in diff
    )
    assert "fs/<b>move_file" not in page  # escaped
    assert "Unknown bundle" in get(server, f"/console/policy?old={old}&new=sha256:{'0' * 64}", cookie).text
    assert "dev-exec" in get(server, f"/console/policy?show={old}", cookie).text
