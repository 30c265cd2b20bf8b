"""The demo as `make demo` runs it, read by every test that needs a real completed run (minutes, CPU only).

One file, so that one test process builds the demo once while the other runs the rest of the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_SUCCESS, STATEMENTS
from lib.evidence import sha256_file
from lib.summary import outcome_line
from lib.verify import verify
from tools.readme_figures import (
    README, SCREENSHOT_FACTS, demo_figures, numerics_fingerprint, readme_block, readme_fingerprint, replace_block,
)
from tests.browser import WIDTHS, on_first_screen, open_report, percent, sha256

pytestmark = pytest.mark.notebook
MAX_PAGE_HEIGHT = 8000  # px at 1400 wide
MAX_REPORT_BYTES = 2 * 2**20


def read(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


def test_demo_leaves_the_complete_evidence_set(demo_run):
    run_dir, stdout = demo_run
    for name in REQUIRED_ALWAYS + REQUIRED_ON_SUCCESS + ("run.ipynb", "run.html", "loss_curve.png", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "failure_analysis.md").exists()
    assert f"Report: {run_dir / 'run.html'}" in stdout
    assert "M44.1 training: step " in stdout and "about " in stdout  # progress with the time left, live
    assert "M44.1 training: completed in " in stdout
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8").splitlines()
    assert all(line in summary for line in STATEMENTS)
    manifest = {f["path"]: f["sha256"] for f in read(run_dir, "manifest.json")["files"]}
    assert {"run.ipynb", "run.html", "training_metrics.json"} <= set(manifest)
    assert all(manifest[p] == sha256_file(run_dir / p) for p in manifest)


def test_demo_trains_on_the_response_and_learns_the_format(demo_run):
    run_dir, _ = demo_run
    metrics = read(run_dir, "training_metrics.json")
    assert metrics["status"] == "completed" and metrics["steps_completed"] == 1500
    losses = [h["loss"] for h in metrics["history"]]
    assert len(losses) == len((run_dir / "training_log.txt").read_text(encoding="utf-8").splitlines())
    assert losses[-1] < losses[0] / 5
    results = read(run_dir, "evaluation_results.json")
    trained, baseline = results["metrics"]["trained"], results["metrics"]["baseline"]
    assert trained["n"] == baseline["n"] == len(results["items"]) == 100
    assert trained["format_rate"] >= 0.95
    assert baseline["format_rate"] < 0.05  # the untrained model has not seen the format
    for label in ("baseline", "trained"):
        scored = [item[label] for item in results["items"]]
        assert all({"output", "correct", "format_ok", "tokens"} <= set(s) for s in scored)
        assert results["metrics"][label]["accuracy"] == sum(s["correct"] for s in scored) / 100
        assert results["metrics"][label]["format_rate"] == sum(s["format_ok"] for s in scored) / 100
    stopped = [item["trained"]["stopped"] for item in results["items"]]
    assert sum(stopped) >= 95  # it learned to stop: end-of-turn or EOS, not the token budget


def test_demo_records_its_measured_memory_peak_under_the_pre_flight_estimate(demo_run):
    run_dir, _ = demo_run
    memory = read(run_dir, "training_metrics.json")["memory"]
    estimate = read(run_dir, "preflight.json")["memory_estimate"]
    assert memory["kind"] == "cpu_rss" and memory["estimate_bytes"] == estimate["total"]
    assert 0 < memory["peak_bytes"] <= memory["estimate_bytes"]  # the estimate never undercounts
    assert read(run_dir, "m44_summary.json")["memory"] == memory
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert "x the peak" in summary and "- **memory**: peak " in summary


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


def test_the_demo_ran_as_on_a_windows_machine(demo_run, demo_conditions):
    """The demo's output was encoded in cp1252 with UTF-8 mode off, and evidence files were held by another program
    now and then (tests/faults: held_files): it completed, every held write went through at its retry."""
    run_dir, _ = demo_run
    if demo_conditions["locale"] is None:
        pytest.skip("the cp1252 locale is not installed: localedef -i en_US -f CP1252 en_US.CP1252 (.ci/run does)")
    assert demo_conditions["held"], "no evidence write was held: the fault did not reach the run"
    assert {"training_metrics.json", "phases.json"} & set(demo_conditions["held"])
    assert read(run_dir, "training_metrics.json")["skipped_writes"] == 0  # the retries absorbed every hold
    assert verify(run_dir) == []


def test_the_demo_names_no_folder_of_this_machine(demo_run):
    """Evidence is shared: no file of the run folder holds the checkout's absolute path (nor the home folder's)."""
    run_dir, _ = demo_run
    local = {str(REPO_ROOT), str(REPO_ROOT.resolve())}
    home = str(Path.home())
    if home != "/" and not str(run_dir.resolve()).startswith(home):  # the test's own folder may be under home
        local.add(home + "/")
    naming = {p.relative_to(run_dir).as_posix(): sorted(s for s in local if s.encode("utf-8") in p.read_bytes())
              for p in run_dir.rglob("*") if p.is_file()}
    assert {name: found for name, found in naming.items() if found} == {}


def test_the_readmes_demo_figures_and_screenshot_are_this_demos(demo_run):
    """The README quotes the demo: generated by tools/readme_figures.py from a demo run, so a change that moves the
    demo's numbers fails here until `make readme-figures RUN=<a new demo folder>` is run. The portable numerics give
    the same numbers on other machines; one whose arithmetic still differs (its fingerprint) is named, not failed."""
    run_dir, _ = demo_run
    facts = read(run_dir, "m44_summary.json")
    readme = README.read_text(encoding="utf-8")
    here, there = numerics_fingerprint(), readme_fingerprint(readme)
    if here != there:
        pytest.skip(f"this machine's portable arithmetic (fingerprint {here}) is not the README's ({there}): its demo "
                    "rounds differently (docs/ARCHITECTURE.md, 'The same numbers on every machine')")
    assert readme_block(readme) == demo_figures(facts, here), (
        "the README's demo figures are stale: make demo, then make readme-figures RUN=<its folder>")
    shown = json.loads(SCREENSHOT_FACTS.read_text(encoding="utf-8"))
    assert shown["outcome"] == outcome_line(facts), "docs/report-first-screen.png is of another demo: make readme-figures"


def test_demo_leaves_the_machine_timeline_of_training_and_evaluation(demo_run):
    run_dir, _ = demo_run
    records = [json.loads(line) for line in (run_dir / "system_metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["phase"] for r in records} == {"training", "evaluation"}  # every line tagged, every line JSON
    for phase in ("training", "evaluation"):
        kinds = [r["kind"] for r in records if r["phase"] == phase]
        assert kinds[0] == "start" and kinds[-1] == "stop" and set(kinds[1:-1]) == {"sample"}, (phase, kinds)
    training = [r for r in records if r["phase"] == "training"]
    interval, times = training[0]["interval_s"], [r["time"] for r in training if r["kind"] == "sample"]
    # At least one sample per sampling period of training, none far late.
    assert len(times) >= (training[-1]["time"] - training[0]["time"]) // interval
    assert max(later - earlier for earlier, later in zip(times, times[1:])) < 2 * interval
    assert any(r.get("workers") == 1 and r.get("workers_cpu_percent") for r in training)  # the worker, seen working
    facts = read(run_dir, "m44_summary.json")["telemetry"]
    (phase,) = [p for p in facts["phases"] if p["phase"] == "training"]
    assert phase["workers_peak"] == 1 and phase["samples"] == len(times) and phase["stopped"]
    assert phase["gpus"] == [] and phase["gpu"].startswith("no NVIDIA GPU")  # the demo runs on the CPU
    page = (run_dir / "run.html").read_text(encoding="utf-8")
    assert "<dt>machine</dt><dd>training (" in page and "; no GPU sampled</dd>" in page  # on the first screen
    assert 'class="m44-figure m44-timeline"' in page
    assert "system_metrics.png" in read(run_dir, "m44_summary.json")["plots"]


def test_the_fingerprint_the_block_records_is_read_back(demo_run):
    run_dir, _ = demo_run
    block = demo_figures(read(run_dir, "m44_summary.json"), "0123456789abcdef")
    assert readme_fingerprint(replace_block(README.read_text(encoding="utf-8"), block)) == "0123456789abcdef"
