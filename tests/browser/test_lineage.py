"""The execution lineage explorer (/lineage) against a real governor (``proctor serve``)
and real executions: ``proctor run`` allowed, denied and revoked, and a sub-agent
(bob) running under a warrant delegated, narrowed, from alice's (the SDK).

Rules: the explorer shows an execution's timeline and its authorization ancestry;
searches by principal, execution, type and time filter; pages follow each other with
no gap or overlap; the verify button checks an event's inclusion proof in the browser
(green), and a tampered proof is red; log content is text (a ``<script>`` in an
event never runs); receipts only for those allowed; no console errors; usable at
1280x800 and 390x844.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import proctor
from browser_support import ARTIFACTS, NARROW, local_only, screenshot, watch_errors
from gov_server import GovernorServer, cli
from proctor.cli_run import receipt_timeline
from proctor.integrations.sdk import function_definition
from proctor.integrations.sdk.definition import definition_digest
from sdk_support import TOOLS_POLICY

pytestmark = pytest.mark.slow

RUN_POLICY = Path(__file__).resolve().parent.parent / "integration" / "policies" / "run" / "run.cedar"
SCRIPT = "<script>window.__pwned = 1</script>"


def search(q: str, limit: int = 5) -> list[str]:
    """Search the corpus."""
    return [f"{q}-{i}" for i in range(limit)]


@dataclass
class World:
    server: GovernorServer
    allowed: str
    revoked: str
    subagent: str
    parent_warrant: str


def _started(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    found = re.search(r"execution (ex_[a-z0-9]+) started", proc.stderr.readline())
    assert found, "proctor run did not start"
    return found.group(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("lineage")
    policy = root / "policy"
    policy.mkdir()
    (policy / "run.cedar").write_text(RUN_POLICY.read_text())
    (policy / "tools.cedar").write_text(TOOLS_POLICY)
    server = GovernorServer(root / "gov", policy=policy)
    try:
        bob_key = server.data / "bob.key"
        server.admin("principal", "add", "bob", "--attr", "role=agent", "--out", str(bob_key))
        run = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key), "--"]
        done = cli(*run[3:], "/bin/echo", "hello")
        allowed = re.search(r"execution (ex_[a-z0-9]+) started", done.stderr)
        assert allowed
        denied = cli(*run[3:], "/usr/bin/touch", str(root / "nope"), check=False)
        assert denied.returncode != 0
        proc = subprocess.Popen(
            [*run, "/bin/sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            revoked = _started(proc)
            server.admin("revoke", "--execution", revoked, "--reason", SCRIPT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        warrant_key = (server.data / "keys" / "warrant.pub").read_text().strip()
        digest = definition_digest(function_definition(search, "search"))
        args = {"q": "leases", "limit": 2}
        with (
            proctor.Client(server.url, server.key, warrant_key=warrant_key) as alice,
            proctor.Client(server.url, bob_key, warrant_key=warrant_key) as bob,
        ):
            auth = alice.authorize("search", arguments=args, executable_digest=digest)
            assert auth.warrant is not None
            assert auth.warrant_id is not None
            token = alice.delegate(
                auth.warrant, resource="search", arguments=args, expires=int(time.time()) + 300
            )
            governed: Any = proctor.governed(bob, tool="search", parent_warrant=token)(search)
            _, call = governed.run("leases", limit=2)
            assert call.status == "completed"
        yield World(server, allowed.group(1), revoked, call.execution, auth.warrant_id)
    finally:
        server.stop()


def _rows(page: Any) -> list[int]:
    return [int(x) for x in page.locator("table.events tbody tr td:first-child").all_inner_texts()]


def test_explorer_shows_a_subagents_timeline_and_ancestry(world: World, page: Any) -> None:
    aborted = local_only(page, world.server.url)
    errors = watch_errors(page)
    page.goto(f"{world.server.url}/lineage/executions/{world.subagent}")
    types = page.locator("table.events tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert types[:4] == ["decision", "warrant.issued", "execution.started", "execution.completed"]
    # The ancestry: alice's warrant, delegated to bob's, which started this execution.
    graph = page.locator("svg.ancestry")
    assert graph.is_visible()
    titles = graph.locator("g.node > title, g.node > a > title").all_text_contents()
    assert any(world.parent_warrant in t for t in titles), titles
    assert any(world.subagent in t for t in titles), titles
    listed = page.locator("ul.ancestry-list").inner_text()
    assert f"warrant {world.parent_warrant} →" in listed
    assert "(delegated)" in listed
    assert "(started)" in listed
    screenshot(page, "lineage-execution")
    # The viewport (docs/images): the end of the timeline and the graph.
    page.evaluate("window.scrollTo(0, document.getElementById('ancestry').offsetTop - 260)")
    page.screenshot(path=str(ARTIFACTS / "lineage-execution-1280.png"))
    assert aborted == []
    assert errors == []


def test_allowed_denied_and_revoked_runs_are_searchable(world: World, page: Any) -> None:
    errors = watch_errors(page)
    page.goto(f"{world.server.url}/lineage")
    page.get_by_label("Principal").fill("alice")
    page.get_by_label("Event type").select_option("decision")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"type=decision"))
    summaries = page.locator("table.events tbody tr").all_inner_texts()
    assert any(s.lstrip().count("allow") for s in summaries)
    assert any("deny" in s and "/usr/bin/touch" in s for s in summaries)
    assert set(page.locator("table.events tbody tr").evaluate_all("r => r.map(x => x.dataset.type)")) == {
        "decision"
    }
    page.goto(f"{world.server.url}/lineage?execution={world.revoked}")
    kinds = page.locator("table.events tbody tr").evaluate_all("r => r.map(x => x.dataset.type)")
    assert "revocation" in kinds
    assert "execution.started" in kinds
    page.goto(f"{world.server.url}/lineage/executions/{world.revoked}")
    assert (
        page.locator("dl.facts").inner_text().count("revoked")
        or "terminated" in page.locator("dl.facts").inner_text()
    )
    # A time range in the future holds nothing; one around now holds everything.
    page.goto(f"{world.server.url}/lineage?from=2099-01-01T00:00")
    assert _rows(page) == []
    page.goto(f"{world.server.url}/lineage?from=2020-01-01T00:00&to=2099-01-01T00:00&limit=100")
    assert len(_rows(page)) > 10
    answer = httpx.get(f"{world.server.url}/lineage?type=nonsense")
    assert answer.status_code == 400
    assert "expected one of" in answer.text
    assert errors == []


def test_paging_older_then_newer_has_no_gap_or_overlap(world: World, page: Any) -> None:
    page.goto(f"{world.server.url}/lineage?limit=4")
    first = _rows(page)
    assert first == sorted(first, reverse=True)
    assert len(first) == 4
    page.get_by_role("link", name="Older →").click()
    second = _rows(page)
    assert second == list(range(first[-1] - 1, first[-1] - 5, -1))
    page.get_by_role("link", name="← Newer").click()
    assert _rows(page) == first


def test_verify_turns_green_for_a_real_event_and_red_for_a_tampered_proof(world: World, page: Any) -> None:
    errors = watch_errors(page)
    page.goto(f"{world.server.url}/lineage/executions/{world.allowed}")
    button = page.locator("button.verify").first
    index = button.get_attribute("data-index")
    # The keyboard reaches the button and presses it.
    button.focus()
    page.keyboard.press("Enter")
    status = page.locator(f"#verify-{index}")
    status.filter(has_text="included").wait_for()
    assert "ok" in (status.get_attribute("class") or "")

    def flip(route: Any) -> None:
        proof = route.fetch().json()
        assert proof["hashes"], "a proof with no hashes cannot be tampered"
        raw = bytearray(base64.b64decode(proof["hashes"][0]))
        raw[0] ^= 0x01
        proof["hashes"][0] = base64.b64encode(bytes(raw)).decode()
        route.fulfill(status=200, content_type="application/json", body=json.dumps(proof))

    page.route("**/v1/log/proof/inclusion**", flip)
    page.reload()
    page.locator("button.verify").first.click()
    status = page.locator(f"#verify-{index}")
    status.filter(has_text="✗").wait_for()
    assert "bad" in (status.get_attribute("class") or "")
    assert "root" in status.inner_text()
    screenshot(page, "lineage-verify-red")
    assert errors == []


def test_script_in_an_event_renders_as_text(world: World, page: Any) -> None:
    errors = watch_errors(page)
    page.goto(f"{world.server.url}/lineage?type=revocation")
    assert SCRIPT in page.locator("table.events").inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.scripts.length") == 1  # lineage.js alone
    html = httpx.get(f"{world.server.url}/lineage?type=revocation").text
    assert SCRIPT not in html
    assert "&lt;script&gt;" in html
    assert errors == []


def test_receipt_download_refused_to_anonymous_and_given_to_the_admin(world: World, page: Any) -> None:
    url = f"{world.server.url}/lineage/executions/{world.allowed}"
    page.goto(url)
    assert page.locator("a[download]").count() == 0
    assert httpx.get(url + "/receipt").status_code == 403
    assert httpx.get(f"{world.server.url}/lineage/executions/ex_unknown/receipt").status_code == 403
    token = json.loads(cli("console", "token", "--json", "--data", str(world.server.data)).stdout)["token"]
    page.goto(f"{world.server.url}/console/signin")
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in with token").click()
    page.wait_for_url(re.compile(r"/console$"))
    page.goto(url)
    with page.expect_download() as download:
        page.locator("a[download]").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt_timeline(receipt)["execution"] == world.allowed


def test_the_explorer_fits_a_narrow_screen(world: World, browser: Any) -> None:
    context = browser.new_context(viewport=NARROW)
    try:
        narrow = context.new_page()
        errors = watch_errors(narrow)
        pages = (
            ("/lineage?limit=10", "lineage-narrow"),
            (f"/lineage/executions/{world.subagent}", "lineage-execution-narrow"),
        )
        for path, name in pages:
            narrow.goto(world.server.url + path)
            assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"], path
            screenshot(narrow, name)
        narrow.locator("button.verify").first.click()
        narrow.locator(".verify-status.ok").first.wait_for()
        assert errors == []
    finally:
        context.close()


def test_the_explorer_at_1280x800(world: World, page: Any) -> None:
    errors = watch_errors(page)
    page.goto(f"{world.server.url}/lineage?limit=20")
    assert page.get_by_role("heading", name="Lineage explorer").is_visible()
    page.locator("button.verify").first.click()
    page.locator(".verify-status.ok").first.wait_for()
    screenshot(page, "lineage")
    page.screenshot(path=str(ARTIFACTS / "lineage-1280.png"))
    assert errors == []


def test_the_running_servers_index_is_rebuilt_after_deletion(world: World) -> None:
    search = f"{world.server.url}/lineage?execution={world.allowed}"
    before = httpx.get(search)
    assert before.status_code == 200
    assert before.text.count('class="verify"') >= 2
    for suffix in ("", "-wal", "-shm"):
        (world.server.data / f"lineage-index.sqlite{suffix}").unlink(missing_ok=True)
    after = httpx.get(search)
    assert after.status_code == 200
    assert after.text.count('class="verify"') == before.text.count('class="verify"')
    assert (world.server.data / "lineage-index.sqlite").exists()
