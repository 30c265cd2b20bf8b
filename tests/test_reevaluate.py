"""lib.reevaluate: a saved model folder evaluated on any eval file into a new folder, never into a run,
beside the base model it was trained from when that is available."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lib.config import REPO_ROOT, load_config
from lib.contract import COMPARISON_PLOT, CONFIG
from lib.contract import EVAL_RESULTS as RESULTS_NAME
from lib.contract import EVAL_SUMMARY as SUMMARY_NAME
from lib.data import load_traces
from lib.evaluation import generate_for
from lib.reevaluate import REEVALUATION, main, resolve_config
from tests.conftest import build_embedded

EVAL_FILE = REPO_ROOT / "data" / "eval_v2.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained embedded model, saved the way a run saves checkpoints/final."""
    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    return build_embedded(traces, seed=0, out_dir=tmp_path_factory.mktemp("run") / "checkpoints" / "final")


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


def run(model_dir: Path, eval_file: Path, out: Path, params_file: Path, *extra: str) -> int:
    return main(["--model", str(model_dir), "--eval-file", str(eval_file), "--out", str(out),
                 "--params", str(params_file), *extra])


def read_results(out: Path) -> dict:
    return json.loads((out / RESULTS_NAME).read_text(encoding="utf-8"))


def provenance(out: Path) -> dict:
    return json.loads((out / REEVALUATION).read_text(encoding="utf-8"))


def outputs_of(source: Path, params_file: Path, eval_file: Path, out: Path) -> list[str]:
    """What the run's generation code gives for `source` with the command's settings."""
    cfg = resolve_config(params_file, source, eval_file, out)
    items = [json.loads(line) for line in eval_file.read_text(encoding="utf-8").splitlines()]
    return [g["output"] for g in generate_for(str(source), cfg, items, "check")]


def test_reevaluates_a_saved_model_with_the_run_code(model_dir, eval_file, params_file, tmp_path):
    out = tmp_path / "reeval"
    assert run(model_dir, eval_file, out, params_file, "--baseline", "none") == 0
    assert sorted(p.name for p in out.iterdir()) == [CONFIG, RESULTS_NAME, SUMMARY_NAME, REEVALUATION]
    results = read_results(out)
    assert results["models"] == ["trained"] and set(results["metrics"]) == {"trained"}
    assert results["metrics"]["trained"]["n"] == 3
    assert [item["id"] for item in results["items"]] == ["eval-v2-001", "eval-v2-086", "eval-v2-097"]
    assert json.loads((out / CONFIG).read_text(encoding="utf-8"))["parameters"]["max_new_tokens"] == 6
    assert provenance(out)["model"] == str(model_dir) and provenance(out)["items_in_file"] == 3
    assert provenance(out)["baseline"] == {"model": None, "how": "not evaluated (--baseline none)"}
    # The same generation code with the same settings gives the same outputs.
    expected = outputs_of(model_dir, params_file, eval_file, out)
    assert [item["trained"]["output"] for item in results["items"]] == expected
    assert all(item["trained"]["tokens"] <= 6 for item in results["items"])
    assert "| trained |" in (out / SUMMARY_NAME).read_text(encoding="utf-8")


def test_the_run_folders_base_model_is_the_baseline(model_dir, eval_file, params_file, tmp_path):
    """A run's checkpoints/final beside its base_model/: the same comparison as the run's own evaluation."""
    run_dir = tmp_path / "run"
    trained = Path(shutil.copytree(model_dir, run_dir / "checkpoints" / "final"))
    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    base = build_embedded(traces, seed=1, out_dir=run_dir / "base_model")  # another model than --model
    out = tmp_path / "reeval"
    assert run(trained, eval_file, out, params_file) == 0
    assert sorted(p.name for p in out.iterdir()) == [COMPARISON_PLOT, CONFIG, RESULTS_NAME, SUMMARY_NAME, REEVALUATION]
    results = read_results(out)
    assert results["models"] == ["baseline", "trained"]
    assert set(results["metrics"]["comparison"]) == {"strict", "lenient", "format"}
    assert provenance(out)["baseline"] == {"model": str(base), "how": "the run folder's base_model/"}
    assert [item["baseline"]["output"] for item in results["items"]] == outputs_of(base, params_file, eval_file, out)
    assert [item["trained"]["output"] for item in results["items"]] == outputs_of(trained, params_file, eval_file, out)
    assert "## What training changed" in (out / SUMMARY_NAME).read_text(encoding="utf-8")


def test_without_a_run_folder_the_profiles_model_is_the_baseline(model_dir, eval_file, params_file, tmp_path):
    """The embedded profile's base model is built again from its training file and seed, as pre-flight builds it."""
    out = tmp_path / "reeval"
    assert run(model_dir, eval_file, out, params_file) == 0
    results = read_results(out)
    assert results["models"] == ["baseline", "trained"]
    assert provenance(out)["baseline"]["model"] == str(out / "base_model")
    assert provenance(out)["baseline"]["how"].startswith("the profile's model 'embedded'")
    seed = load_config(params_file).seed
    traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
    again = build_embedded(traces, seed=seed, out_dir=tmp_path / "again")
    assert (out / "base_model" / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()


def test_an_unavailable_base_model_is_named_and_the_model_scored_alone(model_dir, eval_file, params_file, tmp_path):
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**params, "model_name": "./no-such-model-folder"}), encoding="utf-8")
    out = tmp_path / "reeval"
    assert run(model_dir, eval_file, out, missing) == 0
    results = read_results(out)
    assert results["models"] == ["trained"]
    assert provenance(out)["baseline"]["model"] is None
    assert "the profile's model './no-such-model-folder' is not available (FileNotFoundError" in \
        provenance(out)["baseline"]["how"]


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
