"""The governance console in a real browser against a real ``proctor serve``: sign-in with
the admin key file (WebCrypto Ed25519 in the page) and with a token, a revoke from the
console kills a real ``proctor run`` execution, the keyboard alone can do it, log
content is text, no console errors, both viewports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_support import NARROW, local_only, screenshot, watch_errors
from gov_server import GovernorServer, cli
from gov_support import POLICIES

pytestmark = pytest.mark.slow

#: A path an admin never chose: markup in it must show as text.
MARKUP = "<script>alert('x')<"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("console-ui"), policy=POLICIES / "run")
    try:
        yield gov
    finally:
        gov.stop()


def run(server: GovernorServer, *command: str) -> subprocess.Popen[bytes]:
    """``proctor run -- COMMAND`` under alice, in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proctor",
            "run",
            "--server",
            server.url,
            "--key",
            str(server.key),
            "--",
            *command,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(job: subprocess.Popen[bytes]) -> None:
    if job.poll() is None:
        job.kill()
        job.wait(timeout=30)


def token(server: GovernorServer) -> str:
    printed = cli("console", "token", "--ttl", "10m", "--data", str(server.data), "--json")
    return str(json.loads(printed.stdout)["token"])


def sign_in_with_key(server: GovernorServer, page: Any) -> None:
    page.goto(server.url + "/console")
    assert page.url.endswith("/console/signin")  # redirected: not signed in
    page.get_by_label("Admin key file").set_input_files(str(server.data / "keys" / "admin.key"))
    page.get_by_role("button", name="Sign in with key").click()
    page.get_by_role("heading", name="Governance console", exact=True).wait_for()


def test_console_revoke_kills_a_real_running_execution(server: GovernorServer, page: Any) -> None:
    aborted = local_only(page, server.url)
    errors = watch_errors(page)
    job = run(server, "sleep", "60")
    try:
        sign_in_with_key(server, page)
        assert page.get_by_text("Signed in as").first.is_visible()
        # The execution appears by the page's own poll (no reload).
        row = page.locator("#rows-executions tr", has_text="/sleep")
        row.wait_for(timeout=30_000)
        assert "alice" in row.inner_text()
        screenshot(page, "console")
        row.get_by_role("link", name="Revoke execution").click()
        page.get_by_role("heading", name="Confirm: Revoke execution").wait_for()
        assert "its enforcer kills the execution's whole process tree" in page.locator(".notice").inner_text()
        page.get_by_label("Reason (recorded in the log)").fill("browser test")
        screenshot(page, "console-confirm")
        page.locator("#confirm").click()
        page.get_by_role("heading", name="Done").wait_for()
        index = int(page.locator("#leaf-index").inner_text())
        event = json.loads(page.locator("#event").inner_text())
        assert event["type"] == "revocation"
        assert event["target"]["kind"] == "execution"
        assert event["by"] == "admin"
        assert event["reason"] == "browser test"
        assert page.get_by_role("link", name="see it in the lineage explorer").get_attribute("href") == (
            f"/lineage?index={index}"
        )
        screenshot(page, "console-done")
        # The real child dies: proctor run exits once its tree is killed, and the
        # execution's timeline (linked from the result) ends with its termination.
        job.wait(timeout=60)
        page.get_by_role("link", name="its timeline").click()
        page.get_by_text("execution.terminated").first.wait_for(timeout=30_000)
        screenshot(page, "console-revoked-timeline")
        page.goto(server.url + "/console")
        page.locator("#rows-executions", has_text="Nothing is running.").wait_for(timeout=30_000)
    finally:
        stop(job)
    assert aborted == []
    assert errors == []


def test_keyboard_alone_signs_in_with_a_token_and_revokes(server: GovernorServer, page: Any) -> None:
    errors = watch_errors(page)
    job = run(server, "sleep", "61")
    try:
        page.goto(server.url + "/console/signin")

        def tab_to(check: str, limit: int = 40) -> None:
            for _ in range(limit):
                page.keyboard.press("Tab")
                if page.evaluate(check):
                    return
            raise AssertionError(f"the keyboard never reached: {check}")

        tab_to("document.activeElement.id === 'token'")
        page.keyboard.type(token(server))
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Governance console", exact=True).wait_for()
        page.locator("#rows-executions tr", has_text="/sleep").wait_for(timeout=30_000)
        page.reload()  # the row is in the server-rendered page now
        tab_to("document.activeElement.textContent === 'Revoke execution'")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Confirm: Revoke execution").wait_for()
        tab_to("document.activeElement.id === 'confirm'")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Done").wait_for()
        assert json.loads(page.locator("#event").inner_text())["type"] == "revocation"
        job.wait(timeout=60)
    finally:
        stop(job)
    assert errors == []


def test_markup_in_an_execution_renders_as_text(
    server: GovernorServer, page: Any, browser: Any, tmp_path: Path
) -> None:
    errors = watch_errors(page)
    dialogs: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    folder = tmp_path / MARKUP
    folder.mkdir()
    exe = folder / "script>sleep"  # the path reads <script>alert('x')</script>sleep
    shutil.copy("/bin/sleep", exe)
    os.chmod(exe, 0o755)
    job = run(server, str(exe), "60")
    try:
        sign_in_with_key(server, page)
        cell = page.locator("#rows-executions td", has_text="<script>alert('x')</script>sleep")
        cell.wait_for(timeout=30_000)
        page.reload()  # and in the server-rendered rows
        page.locator("#rows-executions td", has_text="<script>alert('x')</script>sleep").wait_for()
        page.locator("#rows-decisions td", has_text="<script>alert('x')</script>sleep").first.wait_for()
        assert page.locator("#rows-executions script").count() == 0
        # Narrow screen: nothing wider than it.
        context = browser.new_context(viewport=NARROW)
        try:
            narrow = context.new_page()
            narrow_errors = watch_errors(narrow)
            narrow.goto(server.url + "/console/signin")
            narrow.get_by_label("Token", exact=True).fill(token(server))
            narrow.get_by_role("button", name="Sign in with token").click()
            narrow.get_by_role("heading", name="Governance console", exact=True).wait_for()
            narrow.locator("#rows-executions td", has_text="sleep").first.wait_for()
            time.sleep(0.2)
            assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
            screenshot(narrow, "console-narrow")
            narrow.goto(server.url + "/console/signin")
            assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
            screenshot(narrow, "console-signin-narrow")
            assert narrow_errors == []
        finally:
            context.close()
    finally:
        stop(job)
    assert dialogs == []
    assert errors == []


def test_a_wrong_key_file_says_why_and_signs_nobody_in(
    server: GovernorServer, page: Any, tmp_path: Path
) -> None:
    errors = watch_errors(page)
    page.goto(server.url + "/console/signin")
    # alice's key is a real key, of a principal who is not an admin.
    page.get_by_label("Admin key file").set_input_files(str(server.key))
    page.get_by_role("button", name="Sign in with key").click()
    page.get_by_role("alert").filter(has_text="not an active admin").wait_for()
    screenshot(page, "console-signin-refused")
    bogus = tmp_path / "bogus.key"
    bogus.write_text("{}")
    page.get_by_label("Admin key file").set_input_files(str(bogus))
    page.get_by_role("button", name="Sign in with key").click()
    page.locator("#key-status", has_text="expected a proctor key file").wait_for()
    page.goto(server.url + "/console")
    assert page.url.endswith("/console/signin")
    # A 403 for alice's sign-in is a console error line; nothing else is.
    assert all("403" in e for e in errors), errors
