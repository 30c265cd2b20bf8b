"""The HTML report in a real browser: headless Chromium (Debian's chromium and chromium-driver).

`.ci/run` installs both; elsewhere the tests skip, saying what to install. The first screen of a
completed and of a failed run must state the outcome, with numbers equal to the JSON files.
A screenshot of each first screen is kept in build/test-artifacts/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import REPO_ROOT
from tests.conftest import profile

pytestmark = pytest.mark.notebook
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
SCREEN = (1280, 900)
MAX_REPORT_BYTES = 2 * 2**20


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root on a machine without network: no sandbox, no background connections.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={SCREEN[0]},{SCREEN[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_report(driver, run_dir: Path, shot: str) -> tuple[str, int]:
    """Load run.html, check it is clean, save the first screen; return the card's text, image count."""
    driver.get_log("browser")  # drain what earlier pages logged
    driver.get((run_dir / "run.html").as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    images = driver.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert all(done and w > 0 and h > 0 for done, w, h in images), images
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / shot))
    card = driver.execute_script("""
        const heading = [...document.querySelectorAll('h1')].find(h => h.textContent.startsWith('M44 summary'));
        const card = heading.closest('.jp-OutputArea-output');
        return [card.innerText, card.getBoundingClientRect().top];""")
    text, top = card
    assert top < SCREEN[1] / 2, f"the summary card starts at {top}px, below the first screen"
    return text, len(images)


def percent(value: float) -> str:
    return f"{value:.2%}"


def test_completed_report_opens_on_the_outcome_with_the_json_numbers(browser, demo_run):
    run_dir, _ = demo_run
    assert (run_dir / "run.html").stat().st_size < MAX_REPORT_BYTES
    card, images = open_report(browser, run_dir, "report-completed-first-screen.png")
    assert images >= 2  # the loss curve and the learning rate at least, all decoded
    metrics = json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))
    evaluation = json.loads((run_dir / "evaluation_results.json").read_text(encoding="utf-8"))["metrics"]
    assert "status: completed" in card
    assert f"{metrics['steps_completed']} steps" in card
    history = metrics["history"]
    assert f"{history[0]['loss']:.4f} (step {history[0]['step']}) -> {history[-1]['loss']:.4f}" in card
    for label in ("baseline", "trained"):
        m = evaluation[label]
        assert re.search(rf"{label}: accuracy {re.escape(percent(m['accuracy']))}.*format rate "
                         rf"{re.escape(percent(m['format_rate']))}", card), (label, card)
    assert "M44 is post-submission, evidence-only." in card
    assert "M42 remains the authoritative submission artifact." in card
    # The code stays in the notebook and is hidden in the report.
    html = (run_dir / "run.html").read_text(encoding="utf-8")
    assert "Run.start(globals())" in (run_dir / "run.ipynb").read_text(encoding="utf-8")
    assert "Run.start(globals())" not in html


def test_failed_report_opens_on_the_failure(browser, tmp_path):
    params = tmp_path / "invalid.yaml"
    params.write_text(yaml.safe_dump({**profile("embedded"), "eval_file": "data/no-such-eval.jsonl"}), encoding="utf-8")
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lib.execute", "--params", str(params), "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    card, _ = open_report(browser, run_dir, "report-failed-first-screen.png")
    assert "status: failed in preflight" in card
    assert "no-such-eval.jsonl" in card
