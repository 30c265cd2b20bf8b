"""lib.verify on real run folders: the notebook run once through papermill, then copied and damaged per test."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.contract import MANIFEST as MANIFEST_NAME, MODEL_CARD, REQUIRED_ALWAYS
from lib.evaluation import write_evaluation
from lib.evidence import write_json, write_manifest, write_text
from lib.execute import render_html
from lib.run import Run, RunFailed
from lib.verify import NotARunFolder, check, main, verify
from tests.conftest import profile
from tests.test_evaluation import eval_items, generations


def status_of(run_dir: Path) -> str:
    return re.search(r"^- \*\*status\*\*: (.*)$", read(run_dir, "m44_summary.md"), re.M)[1]


@pytest.fixture(scope="module")
def executed_run(papermill_run, tmp_path_factory) -> Path:
    """As `python -m lib.execute` leaves it: run.html rendered, then the manifest rewritten."""
    run_dir = tmp_path_factory.mktemp("verify") / "run"
    shutil.copytree(papermill_run, run_dir)
    render_html(run_dir / "run.ipynb")
    write_manifest(run_dir, final=True)
    return run_dir


@pytest.fixture(scope="module")
def failed_run(invalid_parameter_run) -> Path:
    run_dir, done = invalid_parameter_run
    assert done.returncode != 0 and status_of(run_dir) == "failed in parameters"
    return run_dir


def copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "run"))


def read(run_dir: Path, name: str) -> str:
    return (run_dir / name).read_text(encoding="utf-8")


def edit(run_dir: Path, name: str, old: str, new: str) -> None:
    text = read(run_dir, name)
    assert text.count(old) == 1, f"{old!r} in {name}"
    (run_dir / name).write_text(text.replace(old, new), encoding="utf-8", newline="\n")


def line_of(run_dir: Path, name: str, start: str) -> str:
    return next(line for line in read(run_dir, name).splitlines() if line.startswith(start))


def other_percent(shown: str) -> str:
    return "57.00%" if shown != "57.00%" else "58.00%"


def naming(problems: list[str], name: str) -> list[str]:
    return [p for p in problems if p.startswith(f"{name}:")]


@pytest.mark.notebook
def test_a_papermill_run_folder_passes_with_run_ipynb_not_hash_checked(papermill_run, capsys):
    assert verify(papermill_run) == []
    assert main([str(papermill_run)]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = json.loads(read(papermill_run, MANIFEST_NAME))["files"]
    assert out[-1] == f"OK: {len(listed) - 1} files verified"  # all but run.ipynb
    assert any(line.startswith("note: run.ipynb: saved by papermill after manifest.json") for line in out)
    summary = read(papermill_run, "m44_summary.md")
    assert "- **trained vs baseline**: strict accuracy " in summary and " points (95% CI " in summary


@pytest.mark.notebook
def test_the_folder_lib_execute_leaves_passes_with_every_file_checked(executed_run, capsys):
    assert main([str(executed_run)]) == 0
    listed = json.loads(read(executed_run, MANIFEST_NAME))["files"]
    assert {"run.ipynb", "run.html"} <= {f["path"] for f in listed}
    assert capsys.readouterr().out.splitlines()[-1] == f"OK: {len(listed)} files verified"


@pytest.mark.notebook
@pytest.mark.parametrize("name", [
    "training_metrics.json", "evaluation_results.json", "loss_curve.png", "training_log.txt",
    "m44_summary.md", "checkpoints/final/model.safetensors", "run.ipynb", "run.html",
])
def test_one_changed_byte_names_the_file(executed_run, tmp_path, name, capsys):
    run_dir = copy(executed_run, tmp_path)
    data = bytearray((run_dir / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (run_dir / name).write_bytes(bytes(data))
    assert any(p.startswith(f"{name}: sha256 differs from manifest.json (same size, changed content)")
               for p in verify(run_dir))
    assert main([str(run_dir)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAILED: ")


@pytest.mark.notebook
def test_after_raw_papermill_run_ipynb_may_change_but_must_stay_a_notebook(papermill_run, tmp_path):
    run_dir = copy(papermill_run, tmp_path)
    notebook = json.loads(read(run_dir, "run.ipynb"))
    notebook["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "saved again"})
    (run_dir / "run.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    assert verify(run_dir) == []
    (run_dir / "run.ipynb").write_text("not a notebook", encoding="utf-8")
    assert verify(run_dir) == ["run.ipynb: not a notebook (not JSON with a list of cells)"]


@pytest.mark.notebook
def test_files_missing_or_added_after_the_manifest_are_named(executed_run, tmp_path):
    run_dir = copy(executed_run, tmp_path)
    (run_dir / "loss_curve.png").unlink()
    (run_dir / "notes.txt").write_text("added later\n", encoding="utf-8")
    assert sorted(verify(run_dir)) == [
        "loss_curve.png: listed in manifest.json but missing",
        "notes.txt: in the folder but not listed in manifest.json",
    ]


@pytest.mark.notebook
@pytest.mark.parametrize("name", ["env_snapshot.txt", "training_metrics.json", "evaluation_summary.md"])
def test_a_missing_required_file_is_named_even_if_the_manifest_is_rewritten(papermill_run, tmp_path, name):
    run_dir = copy(papermill_run, tmp_path)
    (run_dir / name).unlink()
    assert f"{name}: listed in manifest.json but missing" in verify(run_dir)
    write_manifest(run_dir)
    status = "completed" if status_of(run_dir) == "completed" else "failed"
    if name in REQUIRED_ALWAYS or status == "completed":
        assert f"{name}: required in a {status} run, missing" in verify(run_dir)


def summary_line_problem(run_dir: Path, name: str, old: str, new: str) -> str:
    """How the problem the verifier must name for `old` edited to `new` in a rendered file begins: the file, the
    line and column of the first difference, and the two characters."""
    number = read(run_dir, name).split("\n").index(old) + 1
    column = next(n for n, (a, b) in enumerate(zip(new, old)) if a != b)
    source = "evaluation_results.json" if name == "evaluation_summary.md" else "m44_summary.json"
    return (f"{name}: differs from what {source} renders: line {number}, column {column + 1}: the file has "
            f"{new[column]!r} where the rendering has {old[column]!r}")


def only_problem(run_dir: Path) -> str:
    problems = verify(run_dir)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.notebook
def test_an_edited_accuracy_in_m44_summary_names_the_file_and_the_line(papermill_run, tmp_path):
    run_dir = copy(papermill_run, tmp_path)
    line = line_of(run_dir, "m44_summary.md", "- **trained**: accuracy ")
    shown = line.split()[3]
    changed = line.replace(f"accuracy {shown}", f"accuracy {other_percent(shown)}")
    expected = summary_line_problem(run_dir, "m44_summary.md", line, changed)
    edit(run_dir, "m44_summary.md", line, changed)
    assert any(p.startswith(expected) for p in verify(run_dir))  # the manifest names it too
    write_manifest(run_dir)  # re-hashed after the edit: the text still is not what the facts render
    assert only_problem(run_dir).startswith(expected)


@pytest.mark.notebook
def test_an_edited_loss_in_m44_summary_is_named(papermill_run, tmp_path):
    run_dir = copy(papermill_run, tmp_path)
    line = line_of(run_dir, "m44_summary.md", "- **loss**: ")
    last = json.loads(read(run_dir, "training_metrics.json"))["history"][-1]
    changed = line.replace(f"-> {last['loss']:.4f}", "-> 0.0001")
    expected = summary_line_problem(run_dir, "m44_summary.md", line, changed)
    edit(run_dir, "m44_summary.md", line, changed)
    write_manifest(run_dir)
    assert only_problem(run_dir).startswith(expected)


@pytest.mark.notebook
def test_facts_edited_together_with_their_summary_still_disagree_with_the_metrics(papermill_run, tmp_path):
    """Changing a number consistently in m44_summary.json and .md is caught against training_metrics.json."""
    run_dir = copy(papermill_run, tmp_path)
    facts = json.loads(read(run_dir, "m44_summary.json"))
    steps = facts["training"]["steps_completed"]
    facts["training"]["steps_completed"] = steps + 90
    (run_dir / "m44_summary.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
    edit(run_dir, "m44_summary.md", f", {steps} steps, ", f", {steps + 90} steps, ")
    write_manifest(run_dir)
    problems = verify(run_dir)
    assert f"m44_summary.json: training.steps_completed is {steps + 90}, but training_metrics.json gives {steps}" in problems
    # The notebook printed the run's real outcome line, and the model card rendered the real steps: the edited facts
    # give neither.
    assert len(problems) == 3 and any(p.startswith("run.ipynb: does not record this run's outcome") for p in problems)
    assert any(p.startswith(f"{MODEL_CARD}: ") and f"{steps} optimizer steps" in p for p in problems), problems


@pytest.mark.notebook
def test_an_edited_format_rate_in_evaluation_summary_is_named(papermill_run, tmp_path):
    run_dir = copy(papermill_run, tmp_path)
    row = line_of(run_dir, "evaluation_summary.md", "| trained | ")
    cells = row.split(" | ")
    cells[3] = other_percent(cells[3])
    changed = " | ".join(cells)
    expected = summary_line_problem(run_dir, "evaluation_summary.md", row, changed)
    edit(run_dir, "evaluation_summary.md", row, changed)
    write_manifest(run_dir)
    assert only_problem(run_dir).startswith(expected)


@pytest.mark.notebook
def test_an_edited_metric_in_the_results_disagrees_with_the_items_and_both_summaries(papermill_run, tmp_path):
    run_dir = copy(papermill_run, tmp_path)
    results = json.loads(read(run_dir, "evaluation_results.json"))
    counted = results["metrics"]["trained"]["accuracy"]
    edited = 0.57 if counted != 0.57 else 0.58
    results["metrics"]["trained"]["accuracy"] = edited
    (run_dir / "evaluation_results.json").write_text(json.dumps(results), encoding="utf-8")
    write_manifest(run_dir)
    problems = verify(run_dir)
    assert f"evaluation_results.json: metrics.trained.accuracy is {edited}, but its items gives {counted}" in problems
    assert any(p.startswith("m44_summary.json: evaluation is ") for p in problems)
    assert any(p.startswith("evaluation_summary.md: differs from what evaluation_results.json renders: line ")
               for p in problems)


@pytest.mark.notebook
def test_a_committed_folder_without_its_model_weights_passes(executed_run, tmp_path, capsys):
    run_dir = copy(executed_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")  # ignored by git: a clone of the repository lacks them
    shutil.rmtree(run_dir / "base_model")
    assert main([str(run_dir)]) == 0
    assert any(line.startswith("note: checkpoints/: ") for line in capsys.readouterr().out.splitlines())
    partial = copy(executed_run, tmp_path / "partial")
    (partial / "checkpoints" / "final" / "config.json").unlink()  # there, but incomplete: checked
    assert verify(partial) == ["checkpoints/final/config.json: listed in manifest.json but missing"]


@pytest.mark.notebook
def test_crlf_line_endings_from_a_checkout_are_named_as_such(executed_run, tmp_path):
    run_dir = copy(executed_run, tmp_path)
    path = run_dir / "training_log.txt"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert naming(verify(run_dir), "training_log.txt") == [
        "training_log.txt: differs from manifest.json only in line endings (CRLF; a git checkout converted it?)"
    ]


@pytest.mark.notebook
def test_a_failed_run_passes_with_its_failure_files(failed_run, tmp_path):
    assert (failed_run / "failure_analysis.md").is_file()
    assert not (failed_run / "evaluation_results.json").exists()
    assert verify(failed_run) == []
    run_dir = copy(failed_run, tmp_path)
    (run_dir / "failure_analysis.md").unlink()
    write_manifest(run_dir)
    assert verify(run_dir) == ["failure_analysis.md: required in a failed run, missing"]


def test_a_folder_that_is_no_run_folder_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "lib.verify", str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{tmp_path} is not a run folder: it holds neither manifest.json, m44_summary.md nor claim.json" in done.stderr
    assert main([str(tmp_path / "absent")]) == 2
    with pytest.raises(NotARunFolder, match="is not a folder"):
        check(tmp_path / "absent")


def fake_training_and_evaluation(cfg, run_dir):
    """Both phases' files through the real writers, in a second instead of a notebook run."""
    write_json(run_dir / "training_metrics.json", {
        "status": "completed", "steps_completed": 20, "runtime_s": 1.5,
        "history": [{"step": 10, "loss": 2.5}, {"step": 20, "loss": 1.25}],
    })
    write_text(run_dir / "training_log.txt", "step 10 loss 2.5\nstep 20 loss 1.25\n")
    write_evaluation(run_dir, cfg, eval_items(), generations(), len(eval_items()))


def test_a_completed_run_built_directly_passes_and_a_failure_analysis_in_it_is_named(tmp_path, official_params):
    run = Run.start({**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run")})
    run.phase("evaluation", fake_training_and_evaluation)
    run.finish()
    assert status_of(run.dir) == "completed"
    summary = read(run.dir, "m44_summary.md")
    assert "- **trained**: accuracy 66.7% (lenient 66.7%), format rate 100.0%, n=3" in summary
    assert verify(run.dir) == []
    (run.dir / "failure_analysis.md").write_text("# invented\n", encoding="utf-8")
    write_manifest(run.dir)
    assert verify(run.dir) == ["failure_analysis.md: present, but m44_summary.json says the run completed"]


def boom(cfg, run_dir):
    raise OSError("disk on fire")


def test_a_run_without_papermill_passes_and_a_changed_file_is_named(tmp_path, official_params):
    """lib.run.Run used directly (no run.ipynb): quick, so the verifier is covered without the notebook."""
    run = Run.start({**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run")})
    run.phase("preflight", boom)
    with pytest.raises(RunFailed, match="disk on fire"):
        run.finish()
    assert verify(run.dir) == []
    edit(run.dir, "training_metrics.json", '"steps_completed": 0', '"steps_completed": 7')
    assert verify(run.dir) == [
        "training_metrics.json: sha256 differs from manifest.json (same size, changed content)",
        "m44_summary.json: training.steps_completed is 0, but training_metrics.json gives 7",
    ]
