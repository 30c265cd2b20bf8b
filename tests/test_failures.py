"""Every failure of the contract, injected through the real notebook, ends documented.

Each case runs notebooks/m44.ipynb through papermill on a short embedded run. Faults inside the
kernel or the training worker come from tests/faults/sitecustomize.py (M44_FAULT), so lib/ holds
no test hooks. A documented failure means: papermill exits non-zero, the complete evidence set is
there, failure_analysis.md names the phase and the cause, the later phases are skipped with the
reason written down, and every JSON file parses (none half written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_FAILURE, REQUIRED_ON_SUCCESS, STATEMENTS
from lib.evidence import sha256_file
from lib.repository import SCRATCH, describe_repository
from lib.verify import verify
from tests.conftest import SHORT_RUN, keep_done, kept_done, papermill_command, profile, with_fault

pytestmark = pytest.mark.notebook
PHASES = ("parameters", "preflight", "training", "evaluation")
CANARY = "hf_CANARYcanary0123456789abcdefTOKEN"


def embedded(**overrides) -> dict:
    return {**SHORT_RUN, **overrides}


def malformed_copy(tmp_path: Path) -> str:
    lines = (REPO_ROOT / "data" / "dev-reasoning-v2.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([*lines, '{"trace_version": "1.0", "prompt": "cut off'] ) + "\n", encoding="utf-8")
    return str(path)


HUB_TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def without_hub(env: dict, home: Path) -> dict:
    """`env` with no Hugging Face credentials: no token, no stored token or cached model (HF_HOME in `home`), and
    no network here (offline: fail fast)."""
    return {**{k: v for k, v in env.items() if k not in HUB_TOKENS}, "HF_HOME": str(home / "hf_home"),
            "HF_HUB_OFFLINE": "1"}


def no_hub_credentials(monkeypatch, tmp_path: Path) -> None:
    """`without_hub` for this test's own process and everything it starts."""
    for name in HUB_TOKENS:
        monkeypatch.delenv(name, raising=False)
    for name, value in without_hub({}, tmp_path).items():
        monkeypatch.setenv(name, value)


def documented(run_dir: Path, done, phase: str) -> tuple[str, str]:
    """The checks every documented failure passes; returns (failure analysis, summary)."""
    assert done.returncode != 0 and f"FAILED in phase {phase}" in done.stderr, done.stderr[-3000:]
    for name in REQUIRED_ALWAYS + REQUIRED_ON_FAILURE + ("manifest.json", "config.json"):
        assert (run_dir / name).is_file(), name
    analysis = (run_dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert f"- **phase**: {phase}\n" in analysis
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert all(line in summary.splitlines() for line in STATEMENTS)
    assert f"- **status**: failed in {phase}" in summary
    for later in PHASES[PHASES.index(phase) + 1:]:
        assert f"| {later} | skipped | 0.0 | skipped because " in summary, later
    # Nothing half written: every JSON parses, no temporary file is left, the manifest holds.
    assert not [p for p in run_dir.rglob("*.tmp")]
    for path in run_dir.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert all(sha256_file(run_dir / f["path"]) == f["sha256"] for f in manifest["files"] if f["path"] != "run.ipynb")
    return analysis, summary


def _build_preflight_root_causes(folder: Path) -> None:
    """Four setup errors at once (no hub credentials, a GPU this torch build cannot run, a missing eval file, a
    malformed training file), and every display of the notebook raising: the faults do not interfere, so one run
    serves the root-cause test and the failed-run case of the display test."""
    env = without_hub(with_fault("unsupported_gpu,display_error"), folder)
    params = embedded(model_name="google/gemma-2b", device="cuda", dtype="bfloat16",
                      train_file=malformed_copy(folder), eval_file="data/no-such-eval.jsonl")
    keep_done(folder, papermill_command(folder / "run", params, env=env))


@pytest.fixture
def preflight_root_causes(shared_run) -> tuple[Path, subprocess.CompletedProcess]:
    folder = shared_run("preflight-root-causes", _build_preflight_root_causes)
    return folder / "run", kept_done(folder)


def test_every_root_cause_of_a_preflight_failure_is_documented_in_one_run(preflight_root_causes):
    """Four setup errors at once: pre-flight names each as a root cause (one run serves the four cases)."""
    run_dir, done = preflight_root_causes
    analysis, _ = documented(run_dir, done, "preflight")
    causes = analysis.split("## Root cause")[1].split("## Not done")[0]
    for cause in ("no Hugging Face credentials", "sm_120, which this torch build", "no-such-eval.jsonl",
                  "broken.jsonl line 6: not valid JSON"):
        assert cause in causes, (cause, causes)
    metrics = json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "skipped" and metrics["history"] == []


def test_an_invalid_parameter_is_documented(invalid_parameter_run):
    analysis, _ = documented(*invalid_parameter_run, "parameters")
    assert "parameter 'max_steps' must be >= 1" in analysis.split("\n- **after**")[0]


# (id, fault, failed phase, text the cause must contain)
CASES = [
    ("non-finite loss", "nan_loss", "training", "non-finite loss nan at step 4"),
    ("out of memory", "oom", "training", "CUDA out of memory"),
    ("killed by a signal", "sigkill", "training", "training process killed by SIGKILL"),
    ("SIGTERM", "sigterm", "training", "interrupted by signal SIGTERM"),
    ("Ctrl-C", "sigint", "training", "interrupted by Ctrl-C"),
    ("disk full on the checkpoint", "disk_full", "training", "No space left on device"),
    ("exception in evaluation", "generation_error", "evaluation", "generation failed"),
    ("a file held by another program for good", "held_results", "evaluation",
     "cannot write evaluation_results.json"),
]


@pytest.mark.parametrize(("fault", "phase", "cause"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_failure_while_working_is_documented(tmp_path, fault, phase, cause):
    if fault.startswith("sig") and sys.platform == "win32":
        pytest.skip("POSIX signals")
    run_dir = tmp_path / "run"
    analysis, _ = documented(run_dir, papermill_command(run_dir, embedded(), env=with_fault(fault)), phase)
    assert cause in analysis.split("\n- **after**")[0], analysis[:2000]
    metrics = json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))
    if phase == "training":
        assert metrics["status"] == "failed" and cause.split(": ")[-1] in metrics["error"]
        assert metrics["steps_completed"] >= 2 and metrics["history"]  # how far it got is kept
        assert "last training step reached**: none" not in analysis
    else:
        assert metrics["status"] == "completed"


def display_failed_and_nothing_else(run_dir: Path, done: subprocess.CompletedProcess, completes: bool) -> None:
    """Every display the notebook made raised: the run ended as it would have, its evidence complete."""
    assert (done.returncode == 0) is completes, done.stderr[-2000:]
    names = {p.name for p in run_dir.iterdir()}
    assert set(REQUIRED_ALWAYS + (REQUIRED_ON_SUCCESS if completes else REQUIRED_ON_FAILURE)) <= names
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["status"] == ("completed" if completes else "failed in preflight")
    if completes:
        assert set(facts["plots"]) == {"comparison.png", "learning_rate.png", "loss_curve.png", "memory.png",
                                       "system_metrics.png", "throughput.png"}  # drawn by the phases, not displays
    assert verify(run_dir) == []
    assert "display failed (injected by the test)" in (run_dir / "run.ipynb").read_text(encoding="utf-8")


def test_a_failing_display_changes_nothing_about_a_completed_run(tmp_path):
    run_dir = tmp_path / "run"
    params = {**profile("embedded"), "max_steps": 6, "logging_steps": 3, "max_new_tokens": 8}
    display_failed_and_nothing_else(run_dir, papermill_command(run_dir, params, env=with_fault("display_error")), True)


def test_a_failing_display_changes_nothing_about_a_failed_run(preflight_root_causes):
    display_failed_and_nothing_else(*preflight_root_causes, False)


def test_generations_holding_any_character_are_kept_exactly_shown_escaped_and_verified(faulty_completed_run):
    """The untrained model of a real run generated a carriage return, and the run was marked FAILED by its own
    verifier. Here every output holds one of the characters that break a line somewhere or do not show (the run's
    system sampler fails too: tests/conftest.py, FAULTY_COMPLETED)."""
    run_dir = faulty_completed_run
    assert verify(run_dir) == []
    items = json.loads((run_dir / "evaluation_results.json").read_text(encoding="utf-8"))["items"]
    strange = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "\ufffd", "\u202e"]
    for n, char in enumerate(strange):  # kept exactly in the JSON, in both models' outputs
        assert f"4{char}2" in items[n]["trained"]["output"] and f"4{char}2" in items[n]["baseline"]["output"]
    for name in ("evaluation_summary.md", "m44_summary.md"):
        text = (run_dir / name).read_bytes().decode("utf-8")
        assert text.split("\n") == text.splitlines() + [""], name  # a line of the file is a line of the text
        assert not any(char in text for char in strange), name
    summary = (run_dir / "evaluation_summary.md").read_text(encoding="utf-8")
    assert "4\\r2" in summary  # item 0's carriage return, shown escaped
    assert "4\\r2" in (run_dir / "run.ipynb").read_text(encoding="utf-8").replace("\\\\", "\\")


def test_a_writer_the_checker_disagrees_with_leaves_a_completed_run_that_says_so(tmp_path):
    """A fault of the checker's kind: the work is done, the evidence disagrees with itself. The run stays completed,
    its results visible; the summary and the card name the file and the difference; the exit status is non-zero."""
    run_dir = tmp_path / "run"
    done = papermill_command(run_dir, embedded(), env=with_fault("writer_disagrees"))
    assert done.returncode != 0 and "M44 run COMPLETED, but its evidence does not verify" in done.stderr
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["status"] == "completed" and facts["evaluation"]["trained"]["n"] == 10
    problem = facts["inconsistent"][0]
    assert problem.startswith("evaluation_summary.md: differs from what evaluation_results.json renders: line 3")
    assert "the file has '\\r' where the rendering has ' '" in problem
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# M44 summary: COMPLETED (EVIDENCE INCONSISTENT), not the official configuration")
    assert "**The evidence is inconsistent.**" in summary and "- **trained**: accuracy " in summary
    assert not (run_dir / "failure_analysis.md").exists()
    assert [p for p in verify(run_dir) if "evaluation_summary.md" in p]  # lib.verify still names it


def test_the_design_cards_command_is_refused_until_rehearsed_and_the_waiver_is_documented(tmp_path, monkeypatch,
                                                                                          official_folder):
    """The design card's command with the notebook's own defaults, on this machine (no GPU, no rehearsal): refused
    before anything is claimed, the folder left usable; then with the waiver, a documented pre-flight failure."""
    no_hub_credentials(monkeypatch, tmp_path)
    run_dir = official_folder
    assert sorted(p.name for p in run_dir.iterdir()) == [".gitkeep"], "the official folder must be unused"
    before = describe_repository()
    card = [sys.executable, "-m", "papermill", "notebooks/m44.ipynb", "submission_runs/m44_v1/run.ipynb"]
    try:
        done = subprocess.run(card, cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8")
        assert done.returncode != 0 and "REFUSED: the official run into submission_runs/m44_v1 starts only after a "
        "rehearsal" in done.stderr, done.stderr[-2000:]
        assert "python -m lib.execute --preflight-only" in done.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [".gitkeep", "run.ipynb"]  # papermill's own file only

        done = subprocess.run([*card, "-p", "require_rehearsal", "False"], cwd=REPO_ROOT, capture_output=True,
                              text=True, encoding="utf-8")
        assert done.returncode != 0
        for name in REQUIRED_ALWAYS + REQUIRED_ON_FAILURE:
            assert (run_dir / name).is_file(), name
        analysis = (run_dir / "failure_analysis.md").read_text(encoding="utf-8")
        assert "- **phase**: preflight" in analysis and "no CUDA device found" in analysis
        summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
        assert all(line in summary.splitlines() for line in STATEMENTS)
        assert "rehearsal waived (require_rehearsal: false)" in summary
        assert json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))["status"] == "skipped"
        assert "No CUDA device is visible" in (run_dir / "gpu_snapshot.txt").read_text(encoding="utf-8")
    finally:  # the official folder goes back to its committed, empty state
        for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.name != ".gitkeep":
                path.chmod(0o700)
                path.rmdir() if path.is_dir() else path.unlink()
    after = describe_repository()
    assert (after["status"], after["diff_sha256"]) == (before["status"], before["diff_sha256"])


def repository_files() -> dict[str, int]:
    """Every file of the checkout (ignored ones included, bytecode caches too) and its mtime, except the
    untracked contents of the scratch folders, where other runs and tests write (as the repository guard
    leaves them out: lib/snapshot.py)."""
    tracked = set(subprocess.run(["git", "ls-files", "-z", "--", *SCRATCH], cwd=REPO_ROOT, capture_output=True,
                                 text=True, encoding="utf-8", check=True).stdout.split("\0"))
    files = {}
    for p in REPO_ROOT.rglob("*"):
        path = p.relative_to(REPO_ROOT)
        if not p.is_file() or {".git", ".venv"} & set(path.parts):
            continue
        if path.as_posix().startswith(SCRATCH) and path.as_posix() not in tracked:
            continue
        files[str(path)] = p.stat().st_mtime_ns
    return files


def used_run_folder(tmp_path: Path) -> tuple[Path, dict]:
    run_dir = tmp_path / "used"
    run_dir.mkdir()
    for name, text in (("m44_summary.md", "# an earlier run\n"), ("run.ipynb", "{}"), ("training_log.txt", "step 1\n")):
        (run_dir / name).write_text(text, encoding="utf-8")
    return run_dir, {p.name: p.read_bytes() for p in run_dir.iterdir()}


def test_a_notebook_written_into_one_folder_with_its_evidence_in_another_is_refused_before_anything(tmp_path):
    """The design card's slip: papermill writes run.ipynb into one folder while run_dir names another. Nothing is
    claimed, and the message gives the command that names the folder both ways."""
    notebook_dir, evidence_dir = tmp_path / "notebook-here", tmp_path / "evidence-there"
    notebook_dir.mkdir()
    done = papermill_command(evidence_dir, embedded(), mkdir=False, output=notebook_dir / "run.ipynb")
    assert done.returncode != 0
    assert f"papermill writes this notebook to {notebook_dir / 'run.ipynb'}, but parameter 'run_dir' is" in done.stderr
    assert f"-p run_dir {notebook_dir.as_posix()}" in done.stderr, done.stderr[-2000:]
    assert not evidence_dir.exists() and sorted(p.name for p in notebook_dir.iterdir()) == ["run.ipynb"]


def test_main_command_refuses_a_used_run_folder_and_leaves_it_untouched(tmp_path):
    run_dir, before = used_run_folder(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "lib.execute", "--params", "params/embedded.yaml", "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode != 0
    assert "already holds a run" in done.stderr and "choose a new run_dir" in done.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_notebook_refuses_a_used_run_folder_before_writing_evidence(tmp_path):
    run_dir, before = used_run_folder(tmp_path)
    done = papermill_command(run_dir, embedded(), mkdir=False)
    assert done.returncode != 0 and "already holds a run" in done.stderr
    after = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    # papermill itself writes run.ipynb before the first cell can refuse; nothing else changes.
    assert set(after) == set(before)
    assert {k: v for k, v in after.items() if k != "run.ipynb"} == {k: v for k, v in before.items() if k != "run.ipynb"}


def test_no_secret_reaches_any_artifact_and_the_repository_is_unchanged(tmp_path):
    """A complete run with a canary token in the environment, through the main command."""
    env = {**os.environ, "HF_TOKEN": CANARY, "HUGGING_FACE_HUB_TOKEN": CANARY + "2"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the run itself must keep bytecode caches out of the repository
    params = tmp_path / "short.yaml"
    params.write_text("\n".join(f"{k}: {v}" for k, v in embedded().items()) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    before = describe_repository(), repository_files()
    done = subprocess.run(
        [sys.executable, "-B", "-m", "lib.execute", "--params", str(params), "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = describe_repository(), repository_files()
    assert (after[0]["status"], after[0]["diff_sha256"]) == (before[0]["status"], before[0]["diff_sha256"])
    assert after[1] == before[1], "files appeared, changed or vanished in the repository"

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"run.ipynb", "run.html", "env_snapshot.txt", "training_log.txt"} <= {p.name for p in files}
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path
    snapshot = (run_dir / "env_snapshot.txt").read_text(encoding="utf-8")
    assert "HF_TOKEN=[REDACTED]" in snapshot and "HUGGING_FACE_HUB_TOKEN=[REDACTED]" in snapshot
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    assert "unchanged during the run" in summary
