"""The real notebook, executed through papermill on the embedded default (minutes, CPU only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_SUCCESS, STATEMENTS
from lib.evidence import sha256_file
from tests.conftest import NOTEBOOK, profile

pytestmark = pytest.mark.notebook
SHORT_RUN = {"max_steps": 40, "logging_steps": 10, "max_new_tokens": 48, "eval_limit": 12}


def read(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


def execute(run_dir: Path, **params) -> None:
    run_dir.mkdir(parents=True)
    papermill.execute_notebook(
        str(NOTEBOOK), str(run_dir / "run.ipynb"), cwd=str(REPO_ROOT), progress_bar=False,
        parameters={**profile("embedded"), **params, "run_dir": str(run_dir)},
    )


def test_demo_leaves_the_complete_evidence_set(demo_run):
    run_dir, done = demo_run
    for name in REQUIRED_ALWAYS + REQUIRED_ON_SUCCESS + ("run.ipynb", "run.html", "loss_curve.png", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "failure_analysis.md").exists()
    assert f"Report: {run_dir / 'run.html'}" in done.stdout
    assert "step  1500/1500" in done.stdout  # training progress streamed to the terminal live
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


def test_same_seed_gives_identical_losses_and_generations(tmp_path):
    for name in ("a", "b"):
        execute(tmp_path / name, **SHORT_RUN)
    history = [[(h["step"], h["loss"]) for h in read(tmp_path / n, "training_metrics.json")["history"]] for n in "ab"]
    outputs = [[i["trained"]["output"] for i in read(tmp_path / n, "evaluation_results.json")["items"]] for n in "ab"]
    assert history[0] == history[1] and len(history[0]) == 5
    assert outputs[0] == outputs[1] and len(outputs[0]) == 12  # eval_limit: the first 12 items
    assert read(tmp_path / "a", "evaluation_results.json")["eval_limit"] == 12
    summary = (tmp_path / "a" / "m44_summary.md").read_text(encoding="utf-8")
    assert "**Caveat**: only the first 12 eval items were scored (parameter eval_limit)." in summary


def test_nbval_reproduces_the_checked_summary_cell(tmp_path):
    """nbval re-executes a parameterized copy and compares the cells marked NBVAL_CHECK_OUTPUT."""
    reference = tmp_path / "reference"
    execute(reference, **SHORT_RUN)
    copy = tmp_path / "nbval_copy.ipynb"
    papermill.execute_notebook(
        str(reference / "run.ipynb"), str(copy), prepare_only=True,
        parameters={**profile("embedded"), **SHORT_RUN, "run_dir": str(tmp_path / "rerun")},
    )
    sanitize = tmp_path / "sanitize.cfg"
    sanitize.write_text(
        "[run folder]\nregex: evidence in \\S+\nreplace: evidence in RUN_DIR\n", encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-sanitize-with", str(sanitize),
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(copy)],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert (tmp_path / "rerun" / "m44_summary.md").is_file()
