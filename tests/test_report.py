"""The HTML report: the displays rendered from facts, and the report itself in a real browser.

The browser tests use headless Chromium (Debian's chromium and chromium-driver; `.ci/run` installs
both, elsewhere they skip, saying what to install). At 1400 and 900 px wide, the first screen of a
completed run states the outcome, the data files, the headline numbers and the comparison chart, and
that of a failed run the phase, the root cause and the pre-flight table; no page scrolls sideways,
and nothing above the pre-flight table is a traceback. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib import report
from lib.config import REPO_ROOT
from lib.report import card_html, examples_html, scorecard_html
from lib.run import Run
from tests.conftest import profile
from tests.test_evaluation import build_items
from tests.test_summary import completed_facts, preflight_failed_facts
from tests.test_verify import fake_training_and_evaluation

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
WIDTHS = (1400, 900)
FIRST_SCREEN = 1000  # px: what a reviewer sees before scrolling
MAX_PAGE_HEIGHT = 8000  # px at 1400 wide, for the demo run
MAX_REPORT_BYTES = 2 * 2**20
LABELS = ["baseline", "trained"]
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
PYTHON_DICT = re.compile(r"\{'[^']*': ")


def blocks(page: str, tag: str, kind: str) -> list[str]:
    """The inner HTML of each <tag class="kind ..."> in `page`, for tags that hold no element of the same tag."""
    return re.findall(rf'<{tag} class="{kind}[^"]*"[^>]*>(.*?)</{tag}>', page, re.S)


# --- the displays, from facts (no browser) --------------------------------------------------------


def test_examples_show_baseline_and_trained_output_side_by_side_for_right_and_wrong_items():
    items = build_items()
    page = examples_html(items, LABELS)
    articles = blocks(page, "article", "m44-example")
    # Per section the first item the trained model got right and the first it got wrong: core has both.
    assert [re.search(r"<b>(eval-\d)</b>", a)[1] for a in articles] == ["eval-1", "eval-2", "eval-3"]
    for article, item in zip(articles, [items[0], items[1], items[2]]):
        pair = article.split('<div class="m44-pair">')[1]  # the outputs, after the prompt
        assert pair.index("baseline: ") < pair.index("trained: ")  # baseline left, trained right
        for label in LABELS:
            shown = f"<pre>{item[label]['output'].replace('<', '&lt;').replace('>', '&gt;')}</pre>"
            assert shown in pair, (label, pair)
    assert 'baseline: <span class="m44-wrong">wrong</span>' in articles[0]
    assert 'trained: <span class="m44-right">right</span>' in articles[0]
    assert 'trained: <span class="m44-wrong">wrong</span>' in articles[1]


def test_a_long_output_is_cut_in_the_report_only():
    items = build_items()
    items[0]["trained"]["output"] = "x" * (report.EXAMPLE_CHARS + 50)
    page = examples_html(items, LABELS)
    assert f"<pre>{'x' * report.EXAMPLE_CHARS} [...]</pre>" in page


def test_scorecards_show_each_rate_as_a_percentage_with_one_decimal():
    table = scorecard_html(build_items(), "section", LABELS)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in table.split("<tbody>")[1].split("</tr>")[:-1]]
    # Per metric baseline then trained. core: strict 0/2 and 1/2, lenient 1/2 and 1/2, format 0/2 and 2/2.
    assert rows == [["core", "2", "0.0%", "50.0%", "50.0%", "50.0%", "0.0%", "100.0%"],
                    ["edge_case", "1", "0.0%", "100.0%", "100.0%", "100.0%", "0.0%", "100.0%"]]


def test_the_failed_card_lists_root_causes_apart_from_skipped_checks_then_the_checks():
    card = card_html(preflight_failed_facts(), None)
    causes = re.findall(r"<li>(.*?)</li>", blocks(card, "ul", "m44-causes")[0])
    effects = re.findall(r"<li>(.*?)</li>", blocks(card, "ul", "m44-consequences")[0])
    assert causes == ["eval data: FileNotFoundError: eval file not found: data/none.jsonl"]
    assert effects == ["check train/eval leakage: not checked: eval data failed",
                       "phase training: skipped because preflight failed",
                       "phase evaluation: skipped because training skipped"]
    statuses = re.findall(r'<tr class="m44-(\w+)"><td><span class="m44-status">(\w+)</span></td><td>([^<]*)</td>', card)
    assert [(s, word, name) for s, word, name in statuses if s != "pass"] == [
        ("fail", "FAIL", "eval data"), ("skip", "SKIP", "train/eval leakage")]
    order = [card.index(marker) for marker in ('class="m44-outcome"', 'class="m44-causes"', 'class="m44-consequences"',
                                               'class="m44-next"', 'class="m44-checks"', 'class="m44-statements"')]
    assert order == sorted(order)
    assert "failed in phase <b>preflight</b>" in card
    assert not TRACEBACK.search(card) and "Traceback" not in card  # it is in failure_analysis.md, further down
    assert 'class="m44-chart"' not in card  # nothing was evaluated


def test_the_completed_card_names_the_data_and_shows_the_headline_numbers_and_chart():
    facts = completed_facts()
    card = card_html(facts, b"\x89PNG fake")
    assert "<code>dev-reasoning-v2.jsonl</code>, 550 records" in card and "sha256 " + "ab" * 32 in card
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in blocks(card, "table", "m44-headline")[0].split("</tr>")]
    assert ["strict accuracy", "0.0%", "66.7%", "+66.7"] == rows[1][:4]
    assert ["format rate", "0.0%", "100.0%", "+100.0", "+20.6 to +100.0", "0.25"] == rows[3]
    image = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', card)
    assert image and "strict accuracy baseline 0.0%, trained 66.7%" in image[2]
    assert "M44 is post-submission, evidence-only.<br>M42 remains the authoritative submission artifact." in card
    assert "COMPLETED" in card and "m44-causes" not in card


def test_every_display_reads_the_folder_and_has_no_text_form_for_the_terminal(tmp_path, official_params, monkeypatch,
                                                                              capsys):
    """papermill --log-output prints each display's text/plain: the displays have none, so `make demo` shows
    the phases' progress and the outcome, never a table or a dict."""
    run = Run.start({**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run")})
    run.phase("evaluation", fake_training_and_evaluation)
    run.consolidate()
    shown = []
    monkeypatch.setattr(report, "display", lambda bundle, raw, **kwargs: shown.append(bundle))
    monkeypatch.setattr(report, "update_display", lambda bundle, raw, **kwargs: shown.append(bundle))
    report.show_summary_card()
    for show in (report.show_preflight, report.show_training, report.show_evaluation, report.show_outcome):
        show(run.dir)
    assert "(display " not in capsys.readouterr().out  # no helper failed
    assert len(shown) == 6 and all(set(bundle) <= {"text/html", "text/markdown"} for bundle in shown), shown
    card = shown[-2]["text/html"]  # the update of the card at the top
    assert 'class="m44-card m44-completed"' in card and "66.7%" in card


# --- the report in a browser ---------------------------------------------------------------------


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
                 "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> Path:
    """A pre-flight failure through the main command: the eval file does not exist."""
    folder = tmp_path_factory.mktemp("failed")
    params = folder / "missing-eval.yaml"
    params.write_text(yaml.safe_dump({**profile("embedded"), "eval_file": "data/no-such-eval.jsonl"}), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lib.execute", "--params", str(params), "--run-dir", str(folder / "run")],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    return folder / "run"


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


def open_report(driver, run_dir: Path, width: int, shot: str) -> dict:
    """Load run.html in a viewport `width` x FIRST_SCREEN px, check it is clean, save the first screen."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": FIRST_SCREEN, "deviceScaleFactor": 1, "mobile": False})
    driver.get_log("browser")  # drain what earlier pages logged
    driver.get((run_dir / "run.html").as_uri())
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


@pytest.mark.notebook
def test_completed_report_opens_on_the_outcome_data_numbers_and_chart(browser, demo_run):
    run_dir, _ = demo_run
    assert (run_dir / "run.html").stat().st_size < MAX_REPORT_BYTES
    metrics = json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))
    evaluation = json.loads((run_dir / "evaluation_results.json").read_text(encoding="utf-8"))["metrics"]
    for width in WIDTHS:
        page = open_report(browser, run_dir, width, f"report-completed-{width}.png")
        assert "COMPLETED" in on_first_screen(page, "outcome")
        facts = on_first_screen(page, "facts")
        for name in ("dev-reasoning-v2.jsonl", "eval_v2.jsonl"):
            assert name in facts and sha256(REPO_ROOT / "data" / name) in facts, (name, facts)
        history = metrics["history"]
        assert f"{metrics['steps_completed']} steps" in facts
        assert f"loss {history[0]['loss']:.4f} (step {history[0]['step']}) → {history[-1]['loss']:.4f}" in facts
        headline = on_first_screen(page, "headline")
        for name, key in (("strict accuracy", "accuracy"), ("lenient accuracy", "accuracy_lenient"),
                          ("format rate", "format_rate")):
            c = evaluation["comparison"][name.split()[0]]
            row = (f"{name}\t{percent(evaluation['baseline'][key])}\t{percent(evaluation['trained'][key])}\t"
                   f"{c['difference'] * 100:+.1f}\t{c['ci_low'] * 100:+.1f} to {c['ci_high'] * 100:+.1f}")
            assert row in headline, (row, headline)
        on_first_screen(page, "chart")
        assert "M44 is post-submission, evidence-only." in page["visible"]
        assert "M42 remains the authoritative submission artifact." in page["visible"]
        if width == 1400:
            assert page["height"] < MAX_PAGE_HEIGHT, f"the page is {page['height']} px tall at {width} px"
    # The code stays in the notebook and is hidden in the report; the last cell shows no object.
    notebook = json.loads((run_dir / "run.ipynb").read_text(encoding="utf-8"))
    html = (run_dir / "run.html").read_text(encoding="utf-8")
    assert any("Run.start(globals())" in "".join(cell["source"]) for cell in notebook["cells"])
    assert "Run.start(globals())" not in html
    assert not [o for cell in notebook["cells"] for o in cell.get("outputs", []) if o["output_type"] == "execute_result"]


@pytest.mark.notebook
def test_failed_report_opens_on_the_phase_cause_and_checks(browser, failed_run):
    for width in WIDTHS:
        page = open_report(browser, failed_run, width, f"report-failed-{width}.png")
        outcome = on_first_screen(page, "outcome")
        assert "FAILED" in outcome and "preflight" in outcome
        assert "no-such-eval.jsonl" in on_first_screen(page, "causes")
        checks = on_first_screen(page, "checks")
        assert "FAIL\teval data" in checks and "SKIP\ttrain/eval leakage" in checks


@pytest.mark.notebook
def test_the_design_cards_nbconvert_command_renders_the_same_report(failed_run, tmp_path):
    """README's two-step flow (papermill, then jupyter nbconvert with the template) and lib.execute agree."""
    shutil.copy(failed_run / "run.ipynb", tmp_path / "run.ipynb")
    jupyter = Path(sys.executable).with_name("jupyter")
    done = subprocess.run(
        [str(jupyter), "nbconvert", "--to", "html", "--no-input",
         "--TemplateExporter.extra_template_basedirs=lib/report_template", "--template", "m44",
         str(tmp_path / "run.ipynb")],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run.html").read_bytes() == (failed_run / "run.html").read_bytes()
    assert b"An Exception was encountered" not in (tmp_path / "run.html").read_bytes()
