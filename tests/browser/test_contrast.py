"""Accessibility basics across the pages: every text's colour against its background
meets WCAG 2.1 AA contrast (4.5:1, or 3:1 for large text), and every form control has
a label — computed in the browser from the styles as rendered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from browser_support import NARROW
from gov_server import GovernorServer

pytestmark = pytest.mark.slow

PAGES = ("/", "/proofs", "/lineage", "/health", "/console/signin")

# For each element with its own visible text: its colour, the first opaque background
# up its ancestors (white if none), its size and weight; the WCAG relative luminance
# and contrast ratio (WCAG 2.1, 1.4.3 and its definitions).
CONTRAST = """() => {
  const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || style.visibility === "hidden" || style.display === "none" || el.offsetParent === null && style.position !== "fixed") continue;
    checked += 1;
    const fg = rgba(style.color).slice(0, 3), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) bad.push(`${el.tagName} "${el.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)} < ${needed}`);
  }
  return {bad, checked};
}"""

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
  .filter((c) => c.type !== "hidden" && !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.getAttribute("aria-labelledby"))
  .map((c) => c.outerHTML.slice(0, 80))"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("contrast"))
    try:
        yield gov
    finally:
        gov.stop()


@pytest.mark.parametrize("path", PAGES)
def test_every_text_meets_aa_contrast_and_every_control_has_a_label(
    server: GovernorServer, browser: Any, path: str
) -> None:
    for viewport in ({"width": 1280, "height": 800}, NARROW):
        context = browser.new_context(viewport=viewport)
        try:
            page = context.new_page()
            page.goto(server.url + path)
            page.wait_for_load_state("networkidle")
            seen = page.evaluate(CONTRAST)
            assert seen["checked"] >= 5, (path, viewport, seen)  # the page's texts were looked at
            assert seen["bad"] == [], (path, viewport)
            assert page.evaluate(UNLABELLED) == [], (path, viewport)
        finally:
            context.close()


def test_the_check_finds_faint_text_and_an_unlabelled_field(page: Any) -> None:
    page.set_content('<p style="color:#aaaaaa">faint grey on white</p><p>ok</p><input type="text">')
    seen = page.evaluate(CONTRAST)
    assert seen["checked"] == 2
    assert len(seen["bad"]) == 1
    assert "faint grey" in seen["bad"][0]
    assert len(page.evaluate(UNLABELLED)) == 1
