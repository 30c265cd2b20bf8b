"""The HTML report: the displays rendered from facts, and the report itself in a real browser.

The browser tests use headless Chromium (Debian's chromium and chromium-driver; `.ci/run` installs
both, elsewhere they skip, saying what to install). At 1400 and 900 px wide, the first screen of a
completed run states the outcome, the data files, the headline numbers and the comparison chart, and
that of a failed run the phase, the root cause and the pre-flight table; no page scrolls sideways,
and nothing above the pre-flight table is a traceback. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib import report
from lib.config import REPO_ROOT, default_parameters
from lib.report import card_html, examples_html, scorecard_html
from lib.run import Run
from tests.browser import TRACEBACK, WIDTHS, on_first_screen, open_report
from tests.conftest import profile
from tests.test_evaluation import build_items
from lib.summary import caveats
from tests.test_summary import completed_facts, preflight_failed_facts
from tests.test_verify import fake_training_and_evaluation

LABELS = ["baseline", "trained"]


def blocks(page: str, tag: str, kind: str) -> list[str]:
    """The inner HTML of each <tag class="kind ..."> in `page`, for tags that hold no element of the same tag."""
    return re.findall(rf'<{tag} class="{kind}[^"]*"[^>]*>(.*?)</{tag}>', page, re.S)


# --- the displays, from facts (no browser) --------------------------------------------------------


def test_examples_show_baseline_and_trained_output_side_by_side_for_right_and_wrong_items():
    items = build_items()
    page = examples_html(items, LABELS)
    articles = blocks(page, "article", "m44-example")
    # The items training changed first (eval-1, eval-3), then per section what is not shown yet (eval-2).
    assert [re.search(r"<b>(eval-\d)</b>", a)[1] for a in articles] == ["eval-1", "eval-3", "eval-2"]
    assert "right only after training" in articles[0] and "core, trained wrong" in articles[2]
    for article, item in zip(articles, [items[0], items[2], items[1]]):
        pair = article.split('<div class="m44-pair">')[1]  # the outputs, after the prompt
        assert pair.index("baseline: ") < pair.index("trained: ")  # baseline left, trained right
        for label in LABELS:
            shown = f"<pre>{item[label]['output'].replace('<', '&lt;').replace('>', '&gt;')}</pre>"
            assert shown in pair, (label, pair)
    assert 'baseline: <span class="m44-wrong">wrong</span>' in articles[0]
    assert 'trained: <span class="m44-right">right</span>' in articles[0]
    assert 'trained: <span class="m44-wrong">wrong</span>' in articles[2]


def test_a_long_output_is_folded_in_the_report_only():
    items = build_items()
    items[0]["trained"]["output"] = "x" * (report.EXAMPLE_CHARS + 50)
    page = examples_html(items, LABELS)
    assert (f"<pre>{'x' * report.EXAMPLE_CHARS}</pre><details><summary>50 more characters</summary>"
            f"<pre>{'x' * 50}</pre></details>") in page


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
    assert effects == ["pre-flight checks not run (SKIP below): train/eval leakage",
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


def test_the_card_folds_the_parameters_that_differ_and_keeps_other_caveats_open():
    """The first screen is for the outcome: a caveat listing every parameter that differs from the official contract
    shows its count and folds the list (details); the text form keeps it whole."""
    facts = completed_facts()
    facts["caveats"] = caveats({**default_parameters(), "max_steps": 300, "seed": 7, "eval_limit": 4})
    card = card_html(facts, None)
    (folded,) = blocks(card, "details", "m44-caveat")
    summary, listed = re.match(r"<summary>(.*?)</summary><p>(.*?)</p>", folded).groups()
    assert summary == "<b>Caveat:</b> not the official configuration: 3 parameters differ from the official contract"
    assert "max_steps 300 (official: 400)" in listed and "eval_limit 4 (official: 0)" in listed
    assert blocks(card, "p", "m44-caveat") == ["<b>Caveat:</b> only the first 4 eval items were scored (parameter "
                                               "eval_limit)."]
    assert "seed 7 (official: 42)" in report.card_text(facts)


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


def test_every_display_reads_the_folder_and_has_a_short_text_form(tmp_path, official_params, monkeypatch, capsys):
    """Each display is HTML for the report plus a short text/plain for readers that show no HTML (jupyter console,
    papermill --log-output): a few lines of sentences, never a table, a dict or an object's repr."""
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
    assert len(shown) == 6 and all(set(bundle) == {"text/html", "text/plain"} for bundle in shown), shown
    for bundle in shown:
        plain = bundle["text/plain"]
        assert plain.strip() and len(plain.splitlines()) <= 12, plain
        assert not any(mark in plain for mark in ("<", "{", "|", " object at 0x")), plain
    card = shown[-2]["text/html"]  # the update of the card at the top
    assert 'class="m44-card m44-completed"' in card and "66.7%" in card


# --- the report in a browser ---------------------------------------------------------------------


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
