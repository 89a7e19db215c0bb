"""The health dashboard (``/health``): its numbers are ``/metrics``'s, they move when
load is applied (over server-sent events, while the page is open), readiness shows a
governor that is not ready, log content is text, and both viewports work."""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser_support import NARROW, local_only, screenshot, watch_errors
from gov_server import GovernorServer, cli, client_of
from gov_support import EXE, POLICIES
from proctor.console.health_pages import MAX_STREAMS

pytestmark = pytest.mark.slow

#: The node's name is the governor's own word, shown on the page: markup in it is text.
NODE = "<script>alert('node')</script><img src=x onerror=alert(1)>"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")
#: Samples that move between two reads by themselves (clocks and heartbeats).
_MOVING = ("proctor_checkpoint_age_seconds", "proctor_node_heartbeat", "proctor_trust_lag_seconds")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(
        tmp_path_factory.mktemp("health"), policy=POLICIES / "run", serve_args=("--node", NODE)
    )
    try:
        yield gov
    finally:
        gov.stop()


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` parsed: each sample's line name (with its labels) to its value."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        found = _SAMPLE.match(line)
        if found and not line.startswith("#"):
            values[found.group(1)] = float(found.group(2))
    return values


def decisions(url: str) -> float:
    return sum(v for k, v in scrape(url).items() if k.startswith("proctor_decisions_total{"))


def authorize(server: GovernorServer, count: int) -> None:
    """``count`` decisions through the real client: allowed (echo) and denied (touch)."""
    with client_of(server) as alice:
        for n in range(count):
            exe = "/usr/bin/touch" if n % 4 == 0 else "/bin/echo"
            alice.authorize(
                {"action": "exec", "resource": exe, "argv": [exe, str(n)], "executable_digest": EXE}
            )


def shown_total(page: Any) -> int:
    return int(page.locator("#decisions-total").inner_text())


def wait_shown(page: Any, selector: str, check: Any, timeout: float = 30) -> str:
    """The text of ``selector`` once ``check(text)`` holds (polled here: the page's
    Content-Security-Policy forbids the string evaluation of ``wait_for_function``)."""
    deadline = time.monotonic() + timeout
    while True:
        text = str(page.locator(selector).inner_text())
        if check(text) or time.monotonic() > deadline:
            assert check(text), f"{selector}: {text!r}"
            return text
        page.wait_for_timeout(100)


def test_the_numbers_move_live_when_load_is_applied(server: GovernorServer, page: Any) -> None:
    aborted = local_only(page, server.url)
    errors = watch_errors(page)
    page.goto(server.url + "/health")
    page.locator("#live", has_text="live").wait_for()
    before = shown_total(page)
    assert before == decisions(server.url)
    # Load, while the page stays open: the total follows over the stream, not a reload.
    authorize(server, 40)
    wait_shown(page, "#decisions-total", lambda t: int(t) >= before + 40)
    wait_shown(page, "#rate", lambda t: t != "\u2014" and float(t) > 0)
    assert page.locator("#chart-rate polyline, #chart-rate circle").count() >= 1
    # A running execution holds a lease: the page counts it, then lets it go.
    job = subprocess.Popen(
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
            "sleep",
            "60",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page.locator("#leases", has_text="1").wait_for(timeout=30_000)
        screenshot(page, "health")
    finally:
        job.terminate()
        job.wait(timeout=30)
    page.locator("#leases", has_text="0").wait_for(timeout=30_000)
    # Quiet again: the page's total is /metrics's.
    expected = decisions(server.url)
    wait_shown(page, "#decisions-total", lambda t: int(t) == expected)
    assert aborted == []
    assert errors == []


def test_the_snapshot_holds_the_numbers_of_metrics(server: GovernorServer) -> None:
    authorize(server, 5)
    deadline = time.monotonic() + 20
    while True:
        snapshot = httpx.get(f"{server.url}/health.json", timeout=10).json()
        metrics = scrape(server.url)
        shown = {k: v for k, v in snapshot["metrics"].items() if not k.startswith(_MOVING)}
        # JSON has no NaN: a sample /metrics writes NaN ("none yet") is null in the snapshot.
        differs = {
            k: (v, metrics.get(k))
            for k, v in shown.items()
            if metrics.get(k) != v and not (v is None and math.isnan(metrics.get(k, 0.0)))
        }
        if not differs or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # read a moment apart: the next snapshot is at most a second old
    assert differs == {}
    assert "proctor_decision_seconds_count" in shown
    assert snapshot["decisions"]["total"] == sum(
        v for k, v in metrics.items() if k.startswith("proctor_decisions_total{")
    )
    assert snapshot["log"]["size"] == metrics["proctor_log_size"]
    assert snapshot["leases"]["active"] == metrics["proctor_active_leases"]
    # Anyone sees a node's name, zone, status, heartbeat and lag; not its URL or version.
    (node,) = snapshot["nodes"]
    assert node["node"] == NODE
    assert set(node) == {"node", "zone", "status", "heartbeat_age_ms", "applied", "lag"}


def test_the_stream_sends_a_snapshot_a_second_to_a_bounded_number_of_clients(server: GovernorServer) -> None:
    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as held:
        first = held.enter_context(http.stream("GET", f"{server.url}/health/stream"))
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/event-stream")
        # One iterator, kept: a generator left behind would be closed, and the stream with it.
        lines = first.iter_lines()
        seqs: list[int] = []
        while len(seqs) < 2:
            line = next(lines)
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
        assert seqs[1] > seqs[0]
        for _ in range(MAX_STREAMS - 1):
            assert held.enter_context(http.stream("GET", f"{server.url}/health/stream")).status_code == 200
        with http.stream("GET", f"{server.url}/health/stream") as refused:
            assert refused.status_code == 429, (refused.headers, refused.read())
            refused.read()
            assert refused.json()["error"] == "too-many-streams"
        assert httpx.get(f"{server.url}/health.json", timeout=10).status_code == 200  # the page still works
    # Every client went away: their slots are free again.
    deadline = time.monotonic() + 20
    while True:
        with httpx.stream("GET", f"{server.url}/health/stream", timeout=30) as again:
            if again.status_code == 200 or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    assert again.status_code == 200


def test_markup_in_a_node_name_is_text(server: GovernorServer, page: Any) -> None:
    dialogs: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    errors = watch_errors(page)
    served = httpx.get(f"{server.url}/health", timeout=10).text
    assert NODE not in served
    assert "&lt;script&gt;alert(" in served
    page.goto(server.url + "/health")
    page.locator("#live", has_text="live").wait_for()  # after a live redraw too
    assert page.locator("#nodes td").first.inner_text() == NODE
    assert page.locator("#nodes script, #nodes img, main img").count() == 0
    assert page.locator("[data-field=node]").inner_text() == NODE
    assert dialogs == []
    assert errors == []


def test_a_governor_that_is_not_ready_shows_not_ready(tmp_path: Path, page: Any) -> None:
    gov = GovernorServer(tmp_path / "nopolicy")  # no policy pushed: /readyz says not ready
    try:
        assert httpx.get(f"{gov.url}/readyz", timeout=10).status_code == 503
        errors = watch_errors(page)
        page.goto(gov.url + "/health")
        assert page.locator("#ready-text").inner_text() == "Not ready"
        page.locator("#live", has_text="live").wait_for()
        assert page.locator("#ready-text").inner_text() == "Not ready"
        row = page.locator("#checks tr", has_text="policy")
        assert "error" in row.inner_text()
        assert "bad" in (row.locator("td").nth(1).get_attribute("class") or "")
        assert errors == []
    finally:
        gov.stop()


def test_the_page_fits_a_narrow_screen_and_the_keyboard_reaches_its_links(
    server: GovernorServer, browser: Any, page: Any
) -> None:
    page.goto(server.url + "/health")
    page.locator("#live", has_text="live").wait_for()
    page.focus("a[href='/metrics']")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/metrics"
    context = browser.new_context(viewport=NARROW)
    try:
        narrow = context.new_page()
        errors = watch_errors(narrow)
        narrow.goto(server.url + "/health")
        narrow.locator("#live", has_text="live").wait_for()
        assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        screenshot(narrow, "health-narrow")
        assert errors == []
    finally:
        context.close()


def test_an_admin_signed_in_sees_each_nodes_url_version_and_reason(server: GovernorServer) -> None:
    token = cli("console", "token", "--data", str(server.data), "--json")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        signed = http.post(
            "/console/signin",
            data={"token": json.loads(token.stdout)["token"]},
            headers={"Origin": server.url},
        )
        assert signed.status_code == 303, signed.text
        (node,) = http.get("/health.json").json()["nodes"]
        assert node["url"].startswith("http://127.0.0.1:")
        assert {"version", "reason"} <= set(node)
        assert node["url"] in http.get("/health").text
    (public,) = httpx.get(f"{server.url}/health.json", timeout=10).json()["nodes"]
    assert "url" not in public
