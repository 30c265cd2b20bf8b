"""m44_summary.md and failure_analysis.md rendered from facts: number formats, the outcome first, root causes
apart from their consequences. Facts are built here by hand, as consolidation would gather them."""

from __future__ import annotations

import copy

import pytest

from lib import run_folder
from lib.config import default_parameters
from lib.contract import STATEMENTS
from lib.results import ci_text, describe, percent, points
from lib.summary import (
    STATEMENTS_MEANING, caveats, consequences, next_step, outcome_line, render_failure_analysis, render_summary, root_causes,
)
from tests.test_evaluation import build_items, build_metrics

SHA = "ab" * 32
CHECKS = [
    {"name": "device", "status": "pass", "detail": "CPU run (device: cpu)"},
    {"name": "training data", "status": "pass", "detail": "550 records from dev-reasoning-v2.jsonl"},
    {"name": "eval data", "status": "fail", "detail": "FileNotFoundError: eval file not found: data/none.jsonl"},
    {"name": "train/eval leakage", "status": "skip", "detail": "not checked: eval data failed"},
    {"name": "model source", "status": "pass", "detail": "embedded model built in base_model/"},
]


def completed_facts() -> dict:
    return {
        "status": "completed",
        "failed": None,
        "skipped": [],
        "run_folder": "embedded-1",
        "launcher": "lib.execute",
        "model": "embedded",
        "device_dtype": "cpu / float32",
        "processes": {"count": 1, "backend": None, "sharding": "none"},
        "hardware": "no GPU; CPU x86_64, 2 logical cores, torch 2.13.0",
        "run_time_s": 95.25,
        "config_sha256": "c" * 64,
        "data": {"files": {"train": {"path": "C:\\Users\\me\\m44\\data\\dev-reasoning-v2.jsonl", "sha256": SHA,
                                     "records": 550},
                           "eval": {"path": "/home/me/m44/data/eval_v2.jsonl", "sha256": "cd" * 32, "records": 3}},
                 "summary": "no repeated training prompts; eval items distinct; no train/eval leakage"},
        "preflight": [{**c, "status": "pass"} for c in CHECKS],
        "repository": {"commit": "abc123", "dirty": False, "unchanged": True, "change": ""},
        "caveats": [],
        "configuration": "official",
        "official_folder": True,
        "memory": {"estimate_bytes": 3 * 2**30, "peak_bytes": 2**31, "kind": "cpu_rss"},
        "finetune": {"mode": "full", "settings": None, "trainable_parameters": 695_552, "all_parameters": 695_552,
                     "adapter_bytes": None},
        "model_card": "checkpoints/final/README.md",
        "training": {"status": "completed", "steps_completed": 1500, "runtime_s": 66.0,
                     "first": {"step": 1, "loss": 6.9016}, "last": {"step": 1500, "loss": 0.1012}},
        "evaluation": build_metrics(build_items()),
        "phases": [{"name": name, "status": "completed", "duration_s": 1.0, "cause": ""}
                   for name in ("parameters", "preflight", "training", "evaluation")],
        "plots": ["comparison.png", "loss_curve.png"],
        "failure": None,
    }


def preflight_failed_facts() -> dict:
    facts = completed_facts()
    cause = "RuntimeError: pre-flight failed: eval data: FileNotFoundError: ... (1 dependent checks not run)"
    facts.update(
        status="failed in preflight",
        failed={"name": "preflight", "cause": cause, "duration_s": 1.5},
        skipped=[{"name": "training", "cause": "skipped because preflight failed"},
                 {"name": "evaluation", "cause": "skipped because training skipped"}],
        preflight=copy.deepcopy(CHECKS),
        evaluation=None,
        plots=[],
        failure={"last_step": None, "last_loss": None, "traceback": "Traceback (most recent call last):\n  boom\n"},
    )
    facts["data"] = None  # pre-flight stopped before it had read both files
    facts["training"].update(status="skipped", steps_completed=0, runtime_s=0.0, first=None, last=None)
    facts["phases"][1:] = [{"name": "preflight", "status": "failed", "duration_s": 1.5, "cause": cause},
                           {"name": "training", "status": "skipped", "duration_s": 0.0, "cause": "skipped because preflight failed"},
                           {"name": "evaluation", "status": "skipped", "duration_s": 0.0, "cause": "skipped because training skipped"}]
    return facts


@pytest.mark.parametrize(("rate", "shown"), [(0.075, "7.5%"), (1 / 3, "33.3%"), (0.0, "0.0%"), (1.0, "100.0%"),
                                             (0.0049, "0.5%")])
def test_every_rate_is_a_percentage_with_one_decimal(rate, shown):
    assert percent(rate) == shown


def test_differences_are_signed_points_with_one_decimal():
    c = {"difference": 0.075, "ci_low": -0.0049, "ci_high": 0.15, "confidence": 0.95, "mcnemar_p": 0.0123}
    assert (points(0.075), points(-0.01), points(0.0)) == ("+7.5", "-1.0", "+0.0")
    assert ci_text(c) == "-0.5 to +15.0"
    assert describe(c) == "+7.5 points (95% CI -0.5 to +15.0), McNemar p = 0.0123"


def test_a_completed_summary_states_outcome_statements_data_and_numbers_in_one_format():
    text = render_summary(completed_facts())
    lines = text.splitlines()
    assert lines[0] == "# M44 summary: COMPLETED, the official run"
    assert all(line in lines for line in STATEMENTS)
    assert lines.index(STATEMENTS_MEANING) == lines.index(STATEMENTS[1]) + 2  # right below the statements
    # The file's name whatever platform wrote the path: a Windows run's facts render the same on Linux.
    assert f"- **training data**: dev-reasoning-v2.jsonl (550 records), sha256 {SHA}" in lines
    assert f"- **eval data**: eval_v2.jsonl (3 records), sha256 {'cd' * 32}" in lines
    assert "- **data policy**: no repeated training prompts; eval items distinct; no train/eval leakage" in lines
    assert "- **trained**: accuracy 66.7% (lenient 66.7%), format rate 100.0%, n=3" in lines
    assert "- **baseline**: accuracy 0.0% (lenient 66.7%), format rate 0.0%, n=3" in lines
    assert "- **loss**: 6.9016 (step 1) -> 0.1012 (step 1500)" in lines
    assert "- **trained vs baseline**: strict accuracy +66.7 points (95% CI " in text
    assert "Root cause" not in text
    assert outcome_line(completed_facts()) == ("M44 COMPLETED: 1500 training steps, loss 6.9016 -> 0.1012; "
                                               "baseline accuracy 0.0% format 0.0%; trained accuracy 66.7% format 100.0%")


def test_failed_checks_are_the_root_causes_and_skipped_checks_and_phases_their_consequences():
    facts = preflight_failed_facts()
    assert root_causes(facts) == ["eval data: FileNotFoundError: eval file not found: data/none.jsonl"]
    assert consequences(facts) == [
        "check train/eval leakage: not checked: eval data failed",
        "phase training: skipped because preflight failed",
        "phase evaluation: skipped because training skipped",
    ]
    text = render_summary(facts)
    lines = text.splitlines()
    assert lines[:5] == ["# M44 summary: FAILED IN PREFLIGHT, the official run", "", "**Failed in phase preflight.** Root cause:", "",
                         "- eval data: FileNotFoundError: eval file not found: data/none.jsonl"]
    effects = lines.index("Not done as a consequence:")
    assert lines[effects + 2:effects + 5] == [f"- {line}" for line in consequences(facts)]
    assert effects < lines.index(STATEMENTS[0])  # the outcome comes before the statements
    assert "- **eval data**: not loaded (the run stopped before pre-flight read both data files)" in lines
    assert not any(line.startswith("- **data policy**") for line in lines)
    assert f"**Next**: {next_step(facts)}" in text and "new run_dir" in next_step(facts)
    assert "Traceback" not in text  # it is in failure_analysis.md
    analysis = render_failure_analysis(facts).splitlines()
    root, effect = analysis.index("## Root cause"), analysis.index("## Not done as a consequence")
    assert analysis[root + 2:effect] == ["- eval data: FileNotFoundError: eval file not found: data/none.jsonl", ""]
    assert analysis.index("## Traceback") > effect
    assert "  boom" in analysis


def test_a_failure_outside_pre_flight_has_its_cause_as_the_one_root_cause():
    facts = completed_facts()
    facts.update(status="failed in training", failed={"name": "training", "cause": "OutOfMemoryError: CUDA", "duration_s": 3.0},
                 skipped=[{"name": "evaluation", "cause": "skipped because training failed"}],
                 failure={"last_step": 3, "last_loss": 5.5, "traceback": "Traceback ..."}, evaluation=None)
    assert root_causes(facts) == ["OutOfMemoryError: CUDA"]
    assert consequences(facts) == ["phase evaluation: skipped because training failed"]
    assert "batch_size" in next_step(facts)
    assert "- **last training step reached**: 3 (loss 5.5000)" in render_failure_analysis(facts)


@pytest.mark.parametrize("cause", [
    None,  # lib.run_folder.stop_cause: a phase read the launcher's stop request, or lib.execute consolidated after it
    "interrupted: KeyboardInterrupt (Ctrl-C, or the kernel interrupted from Jupyter)",  # lib/run.py: no request
    "interrupted by signal SIGTERM (all 2 processes stopped)",  # lib/launcher.py: the training worker
], ids=["stop request", "kernel interrupted", "worker interrupted"])
def test_a_stopped_run_is_not_told_to_fix_its_phase(cause, tmp_path):
    if cause is None:
        run_folder.request_stop(tmp_path, "SIGTERM", "lib.execute")
        cause = run_folder.stop_cause(tmp_path)
    facts = preflight_failed_facts()
    facts["failed"]["cause"] = cause
    assert next_step(facts).startswith("Nothing to fix: the run was stopped on request")
    assert "new run_dir" in next_step(facts)


def test_a_kernel_that_died_is_not_a_stop_on_request():
    facts = preflight_failed_facts()
    facts["failed"]["cause"] = "the notebook stopped: the kernel died in the middle of a cell (ended from outside)"
    assert not next_step(facts).startswith("Nothing to fix") and next_step(facts).startswith("Fix what each failed check names")


def test_invalid_parameters_leave_the_data_unknown():
    facts = preflight_failed_facts()
    facts.update(data=None, preflight=None, failed={"name": "parameters", "cause": "ValueError: max_steps", "duration_s": 0.0})
    text = render_summary(facts)
    assert "- **training data**: not loaded (the run stopped before pre-flight read both data files)" in text
    assert root_causes(facts) == ["ValueError: max_steps"]


def test_memory_is_stated_beside_the_estimate_and_caveats_come_before_the_numbers():
    facts = completed_facts()
    lines = render_summary(facts).splitlines()
    assert ("- **memory**: peak 2.00 GiB measured in training (the training process's peak resident memory); "
            "pre-flight estimated 3.00 GiB, 1.50x the peak") in lines
    facts.update(memory=None, caveats=caveats({**default_parameters(), "model_name": "gemma-2b-shape", "eval_limit": 4}))
    lines = render_summary(facts).splitlines()
    assert not any(line.startswith("- **memory**") for line in lines)  # training logged no step
    notes = [line for line in lines if line.startswith("**Caveat**")]
    assert notes == ["**Caveat**: not the official configuration: 2 parameters differ from the official contract: "
                     "model_name 'gemma-2b-shape' (official: 'google/gemma-2b'), eval_limit 4 (official: 0).",
                     "**Caveat**: the weights are random (Gemma 2B's architecture with seeded random weights): this "
                     "run measures memory and time at full size; its accuracy is meaningless.",
                     "**Caveat**: only the first 4 eval items were scored (parameter eval_limit)."]
    assert lines.index(notes[0]) < next(i for i, line in enumerate(lines) if line.startswith("- **trained**"))
    assert caveats(default_parameters()) == []
    assert caveats({**default_parameters(), "run_dir": "elsewhere"}) == []  # where a run is written is not what ran
