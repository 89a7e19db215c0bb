"""Fixtures of the browser tests (tests/browser_support.py): one chromium per module,
a fresh page (its own context: no cookies shared between tests) per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from browser_support import DESKTOP, launch_browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright: one per test module, because
    Playwright's sync driver runs an event loop in this thread while it lives, and a
    test after it that calls ``asyncio.run`` would find that loop running."""
    yield from launch_browser()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page at 1280x800 in a context of its own."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()
