"""Browser tests: Playwright for Python driving Debian's chromium (``/usr/bin/chromium``,
installed by scripts/setup through apt; never a browser Playwright downloads).

When chromium or Playwright is missing a test skips, unless ``PROCTOR_REQUIRE_BROWSER=1``
(CI): then it fails. Screenshots go to ``$PROCTOR_ARTIFACTS/screenshots`` (by default
``.artifacts/screenshots`` in the repository), kept after the run as test artifacts.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Where the screenshots go.
ARTIFACTS = Path(os.environ.get("PROCTOR_ARTIFACTS", ROOT / ".artifacts")) / "screenshots"

#: The two viewports every page must be usable at: a laptop and a phone.
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


def chromium() -> str:
    """The path of Debian's chromium, or skip (fail under ``PROCTOR_REQUIRE_BROWSER=1``)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    why = None
    if found is None:
        why = "Debian's chromium is not installed (apt install chromium; scripts/setup does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed (scripts/setup installs the dev extras)"
    if why is not None:
        if os.environ.get("PROCTOR_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return str(found)


def launch_browser() -> Iterator[Any]:
    """A headless chromium for a whole test session (a generator for a fixture)."""
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        # --no-sandbox: the tests may run as root, where chromium refuses its sandbox.
        browser = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as ``ARTIFACTS/name.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def local_only(page: Any, origin: str) -> list[str]:
    """Abort every request ``page`` makes outside ``origin`` (no CDN: the pages must
    work offline); returns the list the aborted URLs are appended to."""
    allowed = urlsplit(origin).netloc
    aborted: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == allowed:
            r.continue_()
        else:
            aborted.append(url)
            r.abort()

    page.route("**/*", route)
    return aborted


def watch_errors(page: Any) -> list[str]:
    """The console errors and uncaught exceptions of ``page`` (CSP violations included)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


PageFactory = Callable[..., Any]
