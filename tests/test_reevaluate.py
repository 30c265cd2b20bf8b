"""lib.reevaluate: a saved model folder evaluated on any eval file into a new folder, never into a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lib.config import REPO_ROOT
from lib.data import load_traces
from lib.embedded import build_embedded_model
from lib.contract import EVAL_RESULTS as RESULTS_NAME, EVAL_SUMMARY as SUMMARY_NAME
from lib.evaluation import generate_for
from lib.reevaluate import main, resolve_config

EVAL_FILE = REPO_ROOT / "data" / "eval_v2.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained embedded model, saved the way a run saves checkpoints/final."""
    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    return build_embedded_model(traces, seed=0, out_dir=tmp_path_factory.mktemp("run") / "checkpoints" / "final")


@pytest.fixture
def params_file(tmp_path) -> Path:
    """The embedded profile with a short generation budget, so the test takes seconds."""
    params = yaml.safe_load((REPO_ROOT / "params" / "embedded.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({**params, "max_new_tokens": 6, "eval_batch_size": 2}), encoding="utf-8")
    return path


@pytest.fixture
def eval_file(tmp_path) -> Path:
    lines = EVAL_FILE.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join([lines[0], lines[85], lines[96]]) + "\n", encoding="utf-8")
    return path


def run(model_dir: Path, eval_file: Path, out: Path, params_file: Path) -> int:
    return main(["--model", str(model_dir), "--eval-file", str(eval_file), "--out", str(out),
                 "--params", str(params_file)])


def test_reevaluates_a_saved_model_with_the_run_code(model_dir, eval_file, params_file, tmp_path):
    out = tmp_path / "reeval"
    assert run(model_dir, eval_file, out, params_file) == 0
    assert sorted(p.name for p in out.iterdir()) == [RESULTS_NAME, SUMMARY_NAME]
    results = json.loads((out / RESULTS_NAME).read_text(encoding="utf-8"))
    assert results["models"] == ["trained"] and set(results["metrics"]) == {"trained"}
    assert results["metrics"]["trained"]["n"] == 3
    assert [item["id"] for item in results["items"]] == ["eval-v2-001", "eval-v2-086", "eval-v2-097"]
    assert results["reevaluation"]["parameters"]["max_new_tokens"] == 6
    assert results["reevaluation"]["model"] == str(model_dir)
    # The same generation code with the same settings gives the same outputs.
    cfg = resolve_config(params_file, model_dir, eval_file, out)
    items = [json.loads(line) for line in eval_file.read_text(encoding="utf-8").splitlines()]
    expected = [g["output"] for g in generate_for(str(model_dir), cfg, items, "check")]
    assert [item["trained"]["output"] for item in results["items"]] == expected
    assert all(item["trained"]["tokens"] <= 6 for item in results["items"])
    assert "| trained |" in (out / SUMMARY_NAME).read_text(encoding="utf-8")


def test_refuses_a_folder_that_is_not_new(model_dir, eval_file, params_file, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(SystemExit, match="already exists"):
        run(model_dir, eval_file, out, params_file)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("marker", ["m44_summary.md", "manifest.json"])
def test_refuses_a_folder_inside_a_finished_run(model_dir, eval_file, params_file, tmp_path, marker):
    finished = tmp_path / "finished_run"
    finished.mkdir()
    (finished / marker).write_text("done", encoding="utf-8")
    out = finished / "reeval" / "nested"
    with pytest.raises(SystemExit, match="inside the finished run folder"):
        run(model_dir, eval_file, out, params_file)
    assert not (finished / "reeval").exists()


def test_refuses_a_folder_inside_the_model(model_dir, eval_file, params_file):
    with pytest.raises(SystemExit, match="inside the model folder"):
        run(model_dir, eval_file, model_dir / "eval", params_file)
    assert not (model_dir / "eval").exists()


def test_a_malformed_eval_file_is_named_with_line_and_field(model_dir, params_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = EVAL_FILE.read_text(encoding="utf-8").splitlines()[0]
    record = json.loads(good)
    del record["expected_answer"]
    bad.write_text(good + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    out = tmp_path / "never"
    with pytest.raises(SystemExit, match=r"bad\.jsonl line 2: field 'expected_answer' is missing"):
        run(model_dir, bad, out, params_file)
    assert not out.exists()


def test_invalid_parameters_are_refused_before_anything_is_written(model_dir, eval_file, tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("device: cpu\ndtype: float32\nmax_new_tokens: 0\n", encoding="utf-8")
    out = tmp_path / "never"
    with pytest.raises(SystemExit, match="max_new_tokens"):
        run(model_dir, eval_file, out, params)
    assert not out.exists()
