"""What every page shares: served locally (no CDN), the Content-Security-Policy,
keyboard navigation, and both viewports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser_support import NARROW, local_only, screenshot, watch_errors
from gov_server import GovernorServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("pages"))
    try:
        yield gov
    finally:
        gov.stop()


def test_index_and_docs_load_with_nothing_from_another_origin(server: GovernorServer, page: Any) -> None:
    aborted = local_only(page, server.url)
    errors = watch_errors(page)
    page.goto(server.url + "/")
    assert page.get_by_role("heading", name="Execution governance").is_visible()
    screenshot(page, "index")
    page.goto(server.url + "/docs")
    # Swagger UI renders the API's operations from the local bundle.
    page.get_by_text("/v1/authorize", exact=True).first.wait_for()
    screenshot(page, "docs")
    assert aborted == []
    assert errors == []


def test_every_page_and_asset_carries_a_csp_without_unsafe_inline(server: GovernorServer) -> None:
    for path in ("/", "/docs", "/static/app.css", "/static/docs.js"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in httpx.get(server.url + "/").text  # no inline script in the page


def test_static_refuses_paths_outside_its_folder(server: GovernorServer) -> None:
    for path in ("/static/../site.py", "/static/%2e%2e/site.py", "/static/../../proctor/errors.py"):
        assert httpx.get(server.url + path).status_code == 404, path


def test_keyboard_reaches_the_skip_link_then_the_navigation(server: GovernorServer, page: Any) -> None:
    page.goto(server.url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.goto(server.url + "/")
    texts = []
    for _ in range(3):
        page.keyboard.press("Tab")
        texts.append(page.evaluate("document.activeElement.textContent"))
    assert texts == ["Skip to content", "proctor", "Console"]


def test_the_index_fits_a_narrow_screen(server: GovernorServer, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport=NARROW)
    try:
        narrow = context.new_page()
        narrow.goto(server.url + "/")
        # Nothing wider than the screen: no horizontal scrolling.
        assert narrow.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        screenshot(narrow, "index-narrow")
    finally:
        context.close()
