"""A user's own exported data through the real notebook: repeats and case variants run; leakage and duplicates stop.

The files are built the way the user's export looks (step indices from 0, free step types, repeated
training prompts, an eval edge case that differs from another item only in case), on top of the
shipped training file so the embedded model has something to learn from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.verify import verify
from tests.conftest import papermill_command, profile

pytestmark = pytest.mark.notebook
USER_EVAL = REPO_ROOT / "tests" / "data" / "user_eval.jsonl"
SHIPPED_TRAIN = REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"
REPEATS = 74  # as many as the user's file had
SHORT = {"max_steps": 12, "logging_steps": 4, "max_new_tokens": 16, "eval_batch_size": 10}


def read(run_dir: Path, name: str):
    return json.loads((run_dir / name).read_text(encoding="utf-8"))


def training_file_with_repeats(tmp_path: Path) -> Path:
    """The shipped records, then REPEATS of them again (an export that lists some traces twice)."""
    lines = SHIPPED_TRAIN.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "dev-reasoning-v2-export.jsonl"
    path.write_text("\n".join(lines + lines[:REPEATS]) + "\n", encoding="utf-8")
    return path


def execute(run_dir: Path, **params) -> bool:
    """The papermill command on the user's files; True when the run completed."""
    return papermill_command(run_dir, {**profile("embedded"), **SHORT, **params}).returncode == 0


def test_repeated_prompts_and_case_variants_run_to_completion_and_are_reported(tmp_path):
    train = training_file_with_repeats(tmp_path)
    run_dir = tmp_path / "run"
    assert execute(run_dir, train_file=str(train), eval_file=str(USER_EVAL)), read(run_dir, "m44_summary.json")["failed"]

    report = read(run_dir, "data_report.json")
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and report["policy"]["repeats"] == "keep"
    assert checks["training prompts"]["status"] == "warn"
    assert f"{REPEATS} repeat an earlier prompt" in checks["training prompts"]["detail"]
    first = checks["training prompts"]["examples"][0]
    assert (first["line"], first["first_line"]) == (551, 1)  # line numbers of both records
    assert checks["eval items"]["status"] == "warn" and "only in case, spacing or Unicode" in checks["eval items"]["detail"]
    preflight = {c["name"]: c for c in read(run_dir, "preflight.json")["checks"]}
    assert preflight["training prompts"]["status"] == "warn"
    assert preflight["training records"]["detail"].startswith(f"{550 + REPEATS} of {550 + REPEATS} records")

    results = read(run_dir, "evaluation_results.json")
    eval_ids = [json.loads(line)["id"] for line in USER_EVAL.read_text(encoding="utf-8").splitlines()]
    assert [item["id"] for item in results["items"]] == eval_ids  # every item, the FRANCE variant included
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert f"- **training data**: {train.name} ({550 + REPEATS} records)" in summary and "notes on training prompts" in summary
    assert verify(run_dir) == []


def test_the_drop_policy_trains_on_the_first_of_each_prompt(tmp_path):
    """The repeat policy through the worker too: it trains on exactly the records pre-flight kept."""
    train = training_file_with_repeats(tmp_path)
    run_dir = tmp_path / "run"
    assert execute(run_dir, train_file=str(train), eval_file=str(USER_EVAL), train_repeats="drop", max_steps=2,
                   logging_steps=1)
    preflight = {c["name"]: c for c in read(run_dir, "preflight.json")["checks"]}
    assert preflight["training records"]["detail"].startswith(f"550 of {550 + REPEATS} records, {REPEATS} later repeats dropped")
    assert read(run_dir, "training_metrics.json")["num_records"] == 550


def test_leakage_and_a_repeated_id_stop_preflight_naming_file_line_and_the_other_record(tmp_path):
    items = [json.loads(line) for line in USER_EVAL.read_text(encoding="utf-8").splitlines()]
    leaked = json.loads(SHIPPED_TRAIN.read_text(encoding="utf-8").splitlines()[9])["prompt"]  # training line 10
    items.append({**items[0], "id": "user-eval-011", "prompt": leaked.upper()})  # eval line 11: case changed
    items.append({**items[1], "prompt": "A different question?"})  # eval line 12 repeats line 2's id
    eval_file = tmp_path / "eval_leaky.jsonl"
    eval_file.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert not execute(run_dir, eval_file=str(eval_file))

    facts = read(run_dir, "m44_summary.json")
    assert facts["failed"]["name"] == "preflight"
    preflight = {c["name"]: c for c in read(run_dir, "preflight.json")["checks"]}
    leak, ids = preflight["train/eval leakage"], preflight["eval items"]
    assert leak["status"] == ids["status"] == "fail"
    assert "eval_leaky.jsonl line 11 (id user-eval-011)" in leak["detail"]
    assert "dev-reasoning-v2.jsonl line 10" in leak["detail"]
    assert "user-eval-002" in ids["detail"] and "line 12" in ids["detail"] and "line 2" in ids["detail"]
    analysis = (run_dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert "train/eval leakage" in analysis and "eval items" in analysis
    assert verify(run_dir) == []
