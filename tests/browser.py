"""The report in a real browser: headless Chromium through Selenium, and what a page shows on its first screen.

Needs Debian's chromium and chromium-driver (`.ci/run` installs both); the `browser` fixture (tests/conftest.py)
skips without them, saying what to install. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lib.config import REPO_ROOT
from tools.browser import CHROMEDRIVER, CHROMIUM  # noqa: F401  (the tests import them from here)

ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
WIDTHS = (1400, 900)
FIRST_SCREEN = 1000  # px: what a reviewer sees before scrolling
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
PYTHON_DICT = re.compile(r"\{'[^']*': ")


# Per element: its page position and visible text; text inside a closed <details> has no box and is left out.
PAGE_STATE = """
const box = el => { const r = el.getBoundingClientRect(); return [r.top + scrollY, r.bottom + scrollY]; };
const one = sel => { const el = document.querySelector(sel); return el ? [...box(el), el.innerText] : null; };
const table = document.querySelector('table.m44-checks');
const limit = table ? box(table)[0] : Infinity;
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
let above = [], visible = [];
while (walker.nextNode()) {
  const range = document.createRange(); range.selectNodeContents(walker.currentNode);
  const rects = range.getClientRects();
  if (!rects.length) continue;
  visible.push(walker.currentNode.textContent);
  if (rects[0].top + scrollY < limit) above.push(walker.currentNode.textContent);
}
return {
  height: document.documentElement.scrollHeight,
  sideways: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  outcome: one('.m44-outcome'), causes: one('.m44-causes'), checks: one('table.m44-checks'),
  facts: one('.m44-facts'), headline: one('.m44-headline'), chart: one('.m44-chart img'),
  above: above.join(' '), visible: visible.join(' '),
  images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]),
};"""


def open_report(driver, run_dir: Path, width: int, shot: str, page_name: str = "run.html") -> dict:
    """Load a page in a viewport `width` x FIRST_SCREEN px, check it is clean, save the first screen."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": FIRST_SCREEN, "deviceScaleFactor": 1, "mobile": False})
    driver.get_log("browser")  # drain what earlier pages logged
    driver.get((run_dir / page_name).as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / shot))
    page = driver.execute_script(PAGE_STATE)
    assert all(done and w > 0 and h > 0 for done, w, h, _ in page["images"]), page["images"]
    assert all(alt and "No description" not in alt for *_, alt in page["images"]), page["images"]
    assert page["sideways"] <= 0, f"{width} px: the page scrolls sideways by {page['sideways']} px"
    assert not TRACEBACK.search(page["above"]), f"{width} px: a traceback above the pre-flight table"
    assert not PYTHON_DICT.search(page["visible"]), f"{width} px: a Python dict on the page"
    assert "An Exception was encountered" not in page["visible"] and "In [" not in page["visible"]
    return page


def on_first_screen(page: dict, name: str) -> str:
    top, bottom, text = page[name]
    assert bottom <= FIRST_SCREEN, f"{name} ends at {bottom:.0f} px, below the first screen"
    return text


def percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
