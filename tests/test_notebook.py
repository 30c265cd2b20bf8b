"""The notebook run twice with one seed gives the same run, and nbval re-executes it as the checked cell says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from lib.evidence import sha256_file
from tests.conftest import SHORT_PAPERMILL

pytestmark = pytest.mark.notebook


def read(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


def test_same_seed_gives_identical_runs_on_any_thread_count_and_nbval_reproduces_the_checked_cell(papermill_run,
                                                                                                   tmp_path):
    """The suite's short run through the papermill command, with two torch threads (tests/conftest.py:
    papermill_run); the second by nbval (`--nbval-lax`) with one, re-executing a parameterized copy of the first
    notebook, which also compares the cell marked NBVAL_CHECK_OUTPUT. The embedded profile's portable CPU numerics
    make the trained weights identical to the bit (on native numerics they differ within 40 steps), and the
    losses, generations and outcome line with them."""
    reference = papermill_run
    rerun = tmp_path / "rerun"
    copy = tmp_path / "nbval_copy.ipynb"
    papermill.execute_notebook(str(reference / "run.ipynb"), str(copy), prepare_only=True,
                               parameters={**SHORT_PAPERMILL, "run_dir": str(rerun)})
    sanitize = tmp_path / "sanitize.cfg"
    # nbval's kernel is driven by a test runner, not papermill: the rerun is an interactive run and says so.
    sanitize.write_text("[run folder]\nregex: evidence in \\S+\nreplace: evidence in RUN_DIR\n"
                        "[kind of run]\nregex: \\s\\(interactive run\\)\nreplace: \n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-sanitize-with", str(sanitize),
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(copy)],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-4000:]
    weights = [sha256_file(run / "checkpoints" / "final" / "model.safetensors") for run in (reference, rerun)]
    assert weights[0] == weights[1]
    history = [[(h["step"], h["loss"]) for h in read(run, "training_metrics.json")["history"]] for run in (reference, rerun)]
    outputs = [[i["trained"]["output"] for i in read(run, "evaluation_results.json")["items"]] for run in (reference, rerun)]
    assert history[0] == history[1] and len(history[0]) == 5
    assert outputs[0] == outputs[1] and len(outputs[0]) == 20  # eval_limit: the first 20 items
    assert read(reference, "evaluation_results.json")["eval_limit"] == 20
    summary = (reference / "m44_summary.md").read_text(encoding="utf-8")
    assert "**Caveat**: only the first 20 eval items were scored (parameter eval_limit)." in summary
    assert read(rerun, "claim.json")["launcher"] == "interactive"
