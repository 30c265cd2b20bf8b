"""The official one shot through `python -m lib.execute`: rehearsed without spending it, and unspoilable after.

Rehearsal (pre-flight only, nothing claimed), the torch build named with the command that fixes it,
`-p` overrides validated by name, a second papermill call into a finished folder caught, and every way
of stopping the launcher documented: SIGTERM and SIGINT mid-training, SIGKILL explained by the verifier, a
kernel that dies in a cell or never sees the stop documented instead of waited for, and a signal after the last
phase stopping nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_FAILURE
from lib.verify import main as verify_main
from lib.verify import verify
from tests.conftest import SHORT_ARGS, launch, with_fault

pytestmark = pytest.mark.notebook
EMBEDDED = str(REPO_ROOT / "params" / "embedded.yaml")
OFFICIAL_DIR = REPO_ROOT / "submission_runs" / "m44_v1"
LONG = ["-p", "max_steps=400", "-p", "logging_steps=2", "-p", "max_new_tokens=8"]
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and a fake nvidia-smi script")


def no_credentials(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return {**env, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}


def table(stdout: str) -> dict[str, tuple[str, str]]:
    """The pre-flight lines: check name -> (status, detail)."""
    rows = {}
    for line in stdout.splitlines():
        if match := re.match(r"\[(PASS|WARN|FAIL|SKIP)\] (.{20}) (.*)", line):
            rows[match[2].strip()] = (match[1], match[3])
    return rows


def scratch_folder(stdout: str) -> Path:
    return Path(re.search(r"scratch folder (.+)\)", stdout)[1])


def official_state() -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in [OFFICIAL_DIR, *OFFICIAL_DIR.iterdir()])


def test_rehearsal_of_the_official_run_names_the_missing_gpu_and_credentials_and_nothing_else(tmp_path,
                                                                                             official_folder):
    before = official_state()
    done = launch("--preflight-only", env=no_credentials(tmp_path))
    try:
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        failed = {name: detail for name, (status, detail) in table(done.stdout).items() if status == "FAIL"}
        assert set(failed) == {"device", "model source"}, failed
        assert "no CUDA device found" in failed["device"]
        assert "no Hugging Face credentials" in failed["model source"]
        assert "REHEARSAL FAILED" in done.stdout and "Nothing was claimed" in done.stdout
        assert official_state() == before  # the official folder is exactly as committed, not even touched
    finally:
        shutil.rmtree(scratch_folder(done.stdout), ignore_errors=True)


def test_rehearsal_of_the_embedded_profile_passes_with_a_tiny_step(tmp_path):
    done = launch("--preflight-only", "--params", EMBEDDED, "--run-dir", str(tmp_path / "future-run"))
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = table(done.stdout)
        assert rows["tiny training step"][0] == "PASS" and "forward and backward" in rows["tiny training step"][1]
        assert rows["run folder"][0] == "PASS" and "does not exist yet" in rows["run folder"][1]
        assert not (tmp_path / "future-run").exists()  # looked at, never created
        assert "REHEARSAL PASSED" in done.stdout
    finally:
        shutil.rmtree(scratch_folder(done.stdout), ignore_errors=True)


@POSIX_ONLY
def test_a_cpu_build_of_torch_on_a_machine_with_an_nvidia_gpu_names_the_command_that_fixes_it(tmp_path):
    """The trap: the Quickstart installed torch's CPU build; the GPU's driver is there (a stand-in nvidia-smi)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA GeForce RTX 5090 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n",
                    encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = launch("--preflight-only", "--params", EMBEDDED, "-p", "device=cuda", "-p", "dtype=bfloat16", env=env)
    try:
        status, detail = table(done.stdout)["device"]
        assert status == "FAIL" and done.returncode == 1
        assert "is a CPU build, and this machine has an NVIDIA GPU (NVIDIA GeForce RTX 5090)" in detail
        command = "pip install --force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
        assert f"Linux: .venv/bin/python -m {command}" in detail
        assert f"Windows: .venv\\Scripts\\python -m {command}" in detail
    finally:
        shutil.rmtree(scratch_folder(done.stdout), ignore_errors=True)


@pytest.mark.parametrize("args, message", [
    (["-p", "max_steps=0"], "parameter 'max_steps' must be >= 1, got 0"),
    (["-p", "max_stpes=30"], "unknown parameter(s) 'max_stpes'"),
    (["-p", "learning_rate=nan"], "parameter 'learning_rate' must be a finite number, got nan"),
    (["-p", "max_steps"], "expected NAME=VALUE"),
], ids=["out of range", "unknown", "non-finite", "malformed"])
def test_a_bad_override_is_refused_by_name_before_anything_is_written(tmp_path, args, message):
    done = launch("--params", EMBEDDED, *args, "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture
def finished_run(failed_run, tmp_path) -> Path:
    """A folder lib.execute finished and sealed (a copy, read-only as the original: the tests write into it)."""
    run_dir = Path(shutil.copytree(failed_run, tmp_path / "finished"))
    assert verify(run_dir) == []
    return run_dir


def second_papermill_call(run_dir: Path) -> subprocess.CompletedProcess:
    """The design card's papermill command, repeated into a folder that already holds a run."""
    return subprocess.run([sys.executable, "-m", "papermill", "notebooks/m44.ipynb", str(run_dir / "run.ipynb"),
                           "-p", "run_dir", str(run_dir), "--cwd", str(REPO_ROOT)],
                          cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600)


def test_a_finished_folder_is_read_only_and_a_second_papermill_call_is_caught(finished_run, tmp_path):
    files = [p for p in finished_run.rglob("*") if p.is_file()]
    assert files and not any(p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for p in files)
    assert not finished_run.stat().st_mode & stat.S_IWUSR
    before = (finished_run / "run.ipynb").read_bytes()
    done = second_papermill_call(finished_run)
    assert done.returncode != 0
    if getattr(os, "geteuid", lambda: 1)() != 0:  # the permission bits hold (Windows: the read-only attribute)
        assert (finished_run / "run.ipynb").read_bytes() == before
        return
    # root ignores the bits: papermill rewrote run.ipynb, and the final manifest names it with the way back.
    problems = verify(finished_run)
    assert len(problems) == 1 and problems[0].startswith("run.ipynb: ") and "manifest.json" in problems[0], problems
    assert "a second papermill call into this finished folder" in problems[0] and "git checkout" in problems[0]


def test_a_raw_papermill_folder_overwritten_by_a_second_call_is_caught(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = subprocess.run([sys.executable, "-m", "papermill", "notebooks/m44.ipynb", str(run_dir / "run.ipynb"),
                            "-f", EMBEDDED, "-p", "run_dir", str(run_dir), "-p", "eval_file", "data/no-such-eval.jsonl"],
                           cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert first.returncode != 0 and verify(run_dir) == []  # a documented failure; run.ipynb not hash-checked
    assert second_papermill_call(run_dir).returncode != 0
    problems = verify(run_dir)
    assert len(problems) == 1 and problems[0].startswith("run.ipynb: does not record this run's outcome"), problems
    assert "already holds a run" in problems[0] and "second papermill call" in problems[0]


def start_long_run(run_dir: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """lib.execute on a long embedded run, read until its progress shows training's first logged step."""
    launcher = subprocess.Popen([sys.executable, "-m", "lib.execute", "--params", EMBEDDED, *LONG, *extra,
                                 "--run-dir", str(run_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8")
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if re.match(r"M44\.1 training: step \d+/400", line):
            return launcher, lines
    raise AssertionError("training never started:\n" + "".join(lines[-40:]))


@POSIX_ONLY
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_launcher_mid_training_leaves_complete_evidence_and_a_report(tmp_path, sig):
    run_dir = tmp_path / "run"
    launcher, lines = start_long_run(run_dir)
    launcher.send_signal(sig)
    t0 = time.monotonic()
    rest, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 128 + sig.value, "".join(lines[-20:]) + rest[-3000:]
    assert f"Stopped by {sig.name}. Next: read " in rest and time.monotonic() - t0 < 120

    for name in REQUIRED_ALWAYS + REQUIRED_ON_FAILURE + ("run.html", "manifest.json", "stop_request.json"):
        assert (run_dir / name).is_file(), name
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["failed"]["name"] == "training"
    assert facts["failed"]["cause"].startswith(f"stopped by {sig.name} sent to lib.execute (pid {launcher.pid}")
    assert {p["name"]: p["status"] for p in facts["phases"]}["evaluation"] == "skipped"
    metrics = json.loads((run_dir / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["status"] == "failed" and metrics["steps_completed"] >= 1 and metrics["history"]
    assert verify(run_dir) == []


def test_a_kernel_that_dies_in_a_cell_is_documented_not_waited_for(tmp_path):
    run_dir = tmp_path / "run"
    done = launch("--params", EMBEDDED, "--run-dir", str(run_dir), env=with_fault("kernel_dies"), timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["failed"]["name"] == "preflight"
    assert facts["failed"]["cause"].startswith("the notebook stopped: the kernel died in the middle of a cell")
    assert verify(run_dir) == []


@POSIX_ONLY
def test_a_stop_the_kernel_never_acts_on_ends_the_run_documented_after_the_grace(tmp_path):
    """The kernel blocks where Ctrl-C cannot reach it (or ipykernel lost the interrupted cell's reply): the launcher
    kills it KERNEL_GRACE_S after the signal, made short here, and documents the stop from the folder."""
    run_dir, grace_s = tmp_path / "run", 3
    launcher = subprocess.Popen(
        [sys.executable, "-c", f"import sys, lib.execute as e; e.KERNEL_GRACE_S = {grace_s}; sys.exit(e.main())",
         "--params", EMBEDDED, "--run-dir", str(run_dir)], cwd=REPO_ROOT, env=with_fault("kernel_hangs"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if line.startswith("M44.0 pre-flight: running"):
            break
    launcher.send_signal(signal.SIGTERM)
    rest, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGTERM.value, "".join(lines) + rest[-3000:]
    assert f"the notebook has not ended {grace_s} s after SIGTERM: killing its kernel" in rest
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["failed"]["name"] == "preflight"
    cause = facts["failed"]["cause"]  # the same words as a stop a phase records (lib.run_folder.stop_cause)
    assert cause.startswith(f"stopped by SIGTERM sent to lib.execute (pid {launcher.pid}, "), cause
    assert cause.endswith(f"; the notebook had not ended {grace_s} s later and its kernel was killed"), cause
    assert verify(run_dir) == []


@POSIX_ONLY
def test_a_signal_after_the_last_phase_stops_nothing_and_the_run_completes(tmp_path):
    """Once M44.3 has written the facts, an interrupt could only break the cells that show the outcome: the launcher
    answers the signal, and the run ends completed, with exit status 0 and no stop recorded."""
    run_dir = tmp_path / "run"
    done = launch("--params", EMBEDDED, *SHORT_ARGS, "--run-dir", str(run_dir), env=with_fault("signal_after_the_facts"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lib.execute: SIGTERM received after the run's phases ended: completing the evidence first" in done.stdout
    assert "COMPLETED. Summary: " in done.stdout and "Stopped by" not in done.stdout
    assert not (run_dir / "stop_request.json").exists()
    facts = json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))
    assert facts["status"] == "completed" and verify(run_dir) == []


@POSIX_ONLY
def test_a_killed_launcher_is_explained_by_the_verifier(tmp_path, capsys):
    run_dir = tmp_path / "run"
    launcher, _ = start_long_run(run_dir)
    family = psutil.Process(launcher.pid).children(recursive=True)  # the kernel and the training worker
    launcher.kill()  # SIGKILL cannot be caught: nothing of the launcher documents this
    launcher.wait()
    for process in family:  # what a killed terminal session leaves behind is not this test's business
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    assert verify_main([str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert f"its launcher lib.execute (pid {launcher.pid}" in out and "phase training was running" in out
    assert "killed with SIGKILL" in out and "start the next run in a new folder" in out
