"""Stepping through the notebook (`make lab`): interactive runs are labelled, re-runs are defined, nothing stale survives.

The rules on lib.run.Run directly, with quick stand-in phases that write through the real writers; then
the real thing: JupyterLab started as `make lab` starts it, a kernel started through its sessions API,
the scratch notebook executed cell by cell, saved through the contents API while training runs, a phase
run again with a changed parameter, and the report rendered.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.config import REPO_ROOT, parameter_names
from lib.contract import LAB_MARKER, PHASE_FILES, PHASE_ORDER
from lib.evaluation import write_evaluation
from lib.evidence import read_json, write_json, write_text
from lib.run import FIRST_READ_BY, Run
from lib.verify import verify
from tests.conftest import profile
from tests.test_evaluation import eval_items, generations

OFFICIAL_DIR = REPO_ROOT / "submission_runs" / "m44_v1"


@pytest.fixture
def namespace(tmp_path, official_params, monkeypatch) -> dict:
    """The globals of make lab's scratch copy after its parameters cells ran; no Jupyter server around it."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return {**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run"), LAB_MARKER: True}


def fake_preflight(cfg, run_dir):
    for name in ("env_snapshot.txt", "gpu_snapshot.txt"):
        write_text(run_dir / name, f"{name} (stand-in)\n")
    write_json(run_dir / "preflight.json", {"checks": []})
    write_text(run_dir / "base_model" / "config.json", "{}\n")
    return "prepared"


def fake_training(cfg, run_dir, prepared):
    assert prepared == "prepared"
    history = [{"step": step, "loss": 2.0 / step} for step in range(1, cfg.max_steps + 1)]
    write_json(run_dir / "training_metrics.json", {
        "status": "completed", "steps_completed": cfg.max_steps, "runtime_s": 1.0, "history": history})
    write_text(run_dir / "training_log.txt", "".join(f"step {h['step']} loss {h['loss']}\n" for h in history))
    write_text(run_dir / "checkpoints" / "final" / "model.safetensors", "weights\n")
    return "trained"


def fake_evaluation(cfg, run_dir, prepared, trained):
    assert trained == "trained"
    return write_evaluation(run_dir, cfg, eval_items(), generations())


def step_through(run: Run) -> None:
    """The notebook's phase cells, in order."""
    run.phase("preflight", fake_preflight)
    run.phase("training", fake_training, "prepared", needs="preflight")
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")


def names(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def state(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


def official_state() -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in [OFFICIAL_DIR, *OFFICIAL_DIR.iterdir()])


# --- interactive or not ---------------------------------------------------------------------


@pytest.mark.parametrize("sign", ["JPY_SESSION_NAME", "__vsc_ipynb_file__", LAB_MARKER])
def test_an_interactive_kernel_never_claims_an_official_folder(namespace, monkeypatch, sign):
    del namespace[LAB_MARKER]
    if sign == "JPY_SESSION_NAME":  # what a Jupyter server (JupyterLab, Notebook) puts in its kernels' environment
        monkeypatch.setenv("JPY_SESSION_NAME", str(REPO_ROOT / "notebooks" / "m44.ipynb"))
    else:
        namespace[sign] = str(REPO_ROOT / "notebooks" / "m44.ipynb") if sign.startswith("__vsc") else True
    before = official_state()
    with pytest.raises(ValueError, match="m44_v1 is an official one-shot folder, and this is an interactive run"):
        Run.start({**namespace, "run_dir": "submission_runs/m44_v1"})
    assert official_state() == before  # not even claimed


def test_a_kernel_without_those_signs_runs_as_papermill_and_says_nothing_of_it(namespace, tmp_path):
    del namespace[LAB_MARKER]
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    assert run.launcher == "papermill" and run.interactive is None
    assert "interactive" not in read_json(run.dir / "phases.json")
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"] is None and facts["launcher"] == "papermill"
    assert "nteractive" not in (run.dir / "m44_summary.md").read_text(encoding="utf-8")


def test_an_interactive_run_is_labelled_in_the_claim_the_facts_and_the_summary(namespace):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    assert read_json(run.dir / "claim.json")["launcher"] == "interactive"
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["launcher"] == "interactive"
    assert facts["interactive"] == {"detected_by": "make lab's scratch copy", "starts": 1, "parameter_changes": [],
                                    "runs": {"preflight": 1, "training": 1, "evaluation": 1}}
    summary = (run.dir / "m44_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# M44 summary: COMPLETED (interactive run)\n")
    assert "**Interactive run**, stepped through in Jupyter (make lab's scratch copy): not the official run." in summary
    assert verify(run.dir) == []


# --- running cells again --------------------------------------------------------------------


def test_a_phase_run_again_deletes_its_evidence_and_every_later_phase_and_unfinishes_the_run(namespace):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    preflight_files = {p: t for p, t in state(run.dir).items() if p.split("/")[0] in PHASE_FILES["preflight"]}

    run.phase("training", fake_training, "prepared", needs="preflight")
    assert names(run.dir) == {"claim.json", "config.json", "phases.json", "env_snapshot.txt", "gpu_snapshot.txt",
                              "preflight.json", "base_model", "training_metrics.json", "training_log.txt",
                              "checkpoints"}  # evaluation, summaries and manifest gone: nothing stale
    assert {p: t for p, t in state(run.dir).items() if p in preflight_files} == preflight_files  # untouched
    assert list(run.phases) == ["parameters", "preflight", "training"] and run.outcome is None
    assert "m44_summary.json: missing" in verify(run.dir)[0]  # un-finished until consolidation runs again

    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    run.consolidate()
    run.finish()  # consolidated again: one manifest, the latest
    assert verify(run.dir) == []
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"]["runs"] == {"preflight": 1, "training": 2, "evaluation": 3}
    assert [p["name"] for p in facts["phases"]] == ["parameters", "preflight", "training", "evaluation"]
    assert "Times each phase ran: preflight 1, training 2, evaluation 3" in (
        run.dir / "m44_summary.md").read_text(encoding="utf-8")


def test_a_phase_whose_input_phase_was_reset_is_skipped_with_the_cell_to_run(namespace, capsys):
    run = Run.start(namespace)
    step_through(run)
    run.phase("training", lambda cfg, run_dir, prepared: 1 / 0, "prepared", needs="preflight")
    assert run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training") is None
    assert "SKIPPED evaluation: skipped because training failed (run the training cell first)" in capsys.readouterr().out
    assert not (run.dir / "checkpoints").exists()  # the failed re-run left no weights of the earlier one
    with pytest.raises(RuntimeError, match="FAILED in phase training: ZeroDivisionError"):
        run.finish()
    assert verify(run.dir) == []


def test_a_changed_parameter_is_applied_by_the_phase_that_reads_it_and_recorded(namespace, capsys):
    namespace["max_steps"] = 3
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    namespace["max_new_tokens"] = 4  # the user edits the injected parameters cell and runs it again
    run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert "Parameters changed, applied from evaluation on: max_new_tokens 160 -> 4" in capsys.readouterr().out
    assert read_json(run.dir / "config.json")["parameters"]["max_new_tokens"] == 4
    assert read_json(run.dir / "evaluation_results.json")["max_new_tokens"] == 4
    run.finish()
    assert verify(run.dir) == []
    facts = read_json(run.dir / "m44_summary.json")
    assert facts["interactive"]["parameter_changes"] == [
        {"phase": "evaluation", "run": 2, "changed": {"max_new_tokens": [160, 4]}}]
    assert facts["config_sha256"] == run.cfg.sha256()
    assert ("Parameters changed while stepping through: max_new_tokens 160 -> 4 (applied from evaluation, run 2)."
            in (run.dir / "m44_summary.md").read_text(encoding="utf-8"))

    namespace["max_steps"] = 5  # training read it: evaluation alone cannot apply it
    before = state(run.dir)
    with pytest.raises(ValueError, match=r"max_steps \(read by training\).*Run training again.*Nothing was run"):
        run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert state(run.dir) == before  # refused before anything changed
    run.phase("training", fake_training, "prepared", needs="preflight")
    assert read_json(run.dir / "training_metrics.json")["steps_completed"] == 5


@pytest.mark.parametrize("change, message", [
    ({"run_dir": "elsewhere"}, "parameter 'run_dir' changed .* run the first code cell again"),
    ({"max_new_tokens": 0}, r"parameter 'max_new_tokens' must be >= 1, got 0 \(changed in the notebook"),
    ({"device": "cuda", "dtype": "bfloat16"}, r"device \(read by preflight\), dtype \(read by preflight\)"),
], ids=["run_dir", "invalid", "read by pre-flight"])
def test_a_parameter_change_that_cannot_apply_is_refused_and_changes_nothing(namespace, change, message):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    before = state(run.dir)
    namespace.update(change)
    with pytest.raises(ValueError, match=message):
        run.phase("evaluation", fake_evaluation, "prepared", "trained", needs="training")
    assert state(run.dir) == before


def test_a_misspelt_parameter_is_named_not_ignored(namespace, capsys):
    run = Run.start(namespace)
    run.phase("preflight", fake_preflight)
    namespace["max_new_token"] = 4
    run.phase("training", fake_training, "prepared", needs="preflight")
    assert "note: 'max_new_token' is not a parameter and changes nothing; did you mean 'max_new_tokens'?" in (
        capsys.readouterr().out)


def test_the_first_cell_run_again_starts_over_in_the_same_folder(namespace, capsys):
    run = Run.start(namespace)
    step_through(run)
    run.finish()
    again = Run.start(namespace)  # the same kernel runs the first code cell again
    assert again.dir == run.dir and names(run.dir) == {"claim.json", "config.json", "phases.json"}
    assert "Starting the run over in" in capsys.readouterr().out
    assert again.interactive.starts == 2 and again.interactive.runs == {}
    step_through(again)
    again.finish()
    assert read_json(run.dir / "m44_summary.json")["interactive"]["starts"] == 2
    assert verify(run.dir) == []


def test_a_folder_another_running_kernel_uses_is_refused_and_a_dead_kernels_is_taken_over(namespace):
    run = Run.start(namespace)
    claim = read_json(run.dir / "claim.json")
    write_json(run.dir / "claim.json", {**claim, "pid": os.getppid()})  # a process that runs: another kernel
    before = state(run.dir)
    with pytest.raises(FileExistsError, match=f"in use by another running kernel \\(pid {os.getppid()}"):
        Run.start(namespace)
    assert state(run.dir) == before
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_json(run.dir / "claim.json", {**claim, "pid": int(ended.stdout)})  # a kernel since restarted
    assert Run.start(namespace).interactive.starts == 2


def test_an_interactive_kernel_refuses_a_folder_holding_another_kind_of_run(namespace, tmp_path):
    papermill_run = Run.start({**{k: v for k, v in namespace.items() if k != LAB_MARKER},
                               "run_dir": str(tmp_path / "batch")})
    before = state(papermill_run.dir)
    with pytest.raises(FileExistsError, match="already holds a run"):
        Run.start({**namespace, "run_dir": str(tmp_path / "batch")})
    assert state(papermill_run.dir) == before


# --- the map of which phase reads which parameter ------------------------------------------


def parameters_read(module: str, seen: set[str] | None = None) -> set[str]:
    """Every `cfg.<name>` and `cfg.path("<name>")` in a lib module and the lib modules it imports, at any depth."""
    seen = set() if seen is None else seen
    seen.add(module)
    tree = ast.parse((REPO_ROOT / "lib" / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "cfg":
            found.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "path"
                and getattr(node.func.value, "id", None) == "cfg" and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lib."):
            imported = node.module.split(".")[1]
            if imported not in seen:
                found |= parameters_read(imported, seen)
    return found & set(parameter_names())


def test_each_parameter_is_first_read_by_the_phase_the_rerun_rules_say():
    """A parameter said to be read first by training or evaluation must not be read by an earlier phase's code."""
    read_by = {"preflight": parameters_read("preflight"),
               "training": parameters_read("training") | parameters_read("trainer"),
               "evaluation": parameters_read("evaluation")}
    for name, phase in FIRST_READ_BY.items():
        assert name in read_by[phase], f"{name}: not read by {phase}"
        earlier = [p for p in PHASE_ORDER[1:PHASE_ORDER.index(phase)] if name in read_by[p]]
        assert not earlier, f"{name} is read by {earlier}, before {phase}: change FIRST_READ_BY in lib/run.py"
