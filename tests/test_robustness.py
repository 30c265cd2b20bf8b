"""No input and no accident leaves a run undocumented or mislabelled (issue 18's probes, through the real entry points).

Non-finite and out-of-range parameters, two launchers racing into one folder, another run starting
beside this one, empty data files, a disk that fills once the notebook is done, run folders inside
the project's own folders, and the messages for bad files, paths and profiles.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.contract import REQUIRED_ALWAYS, REQUIRED_ON_FAILURE
from lib.units import format_size
from lib.verify import verify
from tests.conftest import SHORT_ARGS, launch, papermill_command, profile, with_fault

pytestmark = pytest.mark.notebook
EMBEDDED = str(REPO_ROOT / "params" / "embedded.yaml")
FAILS_FAST = ["-p", "eval_file=data/no-such-eval.jsonl"]  # a documented pre-flight failure: the quickest real run
# The claim is one atomic O_EXCL create (lib/run_folder.py): rounds sample which launcher wins and how far the
# winner got when stopped, not a probability of failure; each round costs ~15-25 s of two kernels starting.
RACE_ROUNDS = 3


def facts(run_dir: Path) -> dict:
    return json.loads((run_dir / "m44_summary.json").read_text(encoding="utf-8"))


def remove(run_dir: Path) -> None:
    """Delete a (sealed, read-only) run folder."""
    for path in [run_dir, *run_dir.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(run_dir)


# --- 1. non-finite and out-of-range numbers --------------------------------------------------


@pytest.mark.parametrize("line", ["learning_rate: .nan", "warmup_ratio: .nan", "max_grad_norm: .inf",
                                  "seed: 18446744073709551616"])
def test_a_profile_with_a_non_finite_or_huge_number_is_refused_by_name_before_anything(tmp_path, line):
    params = tmp_path / "bad.yaml"
    params.write_text(Path(EMBEDDED).read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    done = launch("--params", str(params), "--run-dir", str(tmp_path / "run"))
    name = line.split(":")[0]
    assert done.returncode == 2 and f"parameter '{name}' must be" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_papermill_with_a_nan_parameter_documents_a_failed_parameters_phase(tmp_path):
    run_dir = tmp_path / "run"
    done = papermill_command(run_dir, {**profile("embedded"), "learning_rate": float("nan")})
    assert done.returncode != 0 and "FAILED in phase parameters" in done.stderr, done.stderr[-2000:]
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["valid"] is False and config["parameters"]["learning_rate"] == "nan"
    assert "parameter 'learning_rate' must be a finite number, got nan" in facts(run_dir)["failed"]["cause"]
    assert verify(run_dir) == []


# --- 2. two launchers, one folder ------------------------------------------------------------


def test_two_launchers_racing_into_one_folder_give_exactly_one_run_that_verifies(tmp_path):
    """Each round: two launchers at once into one new folder. The loser is refused before it writes anything;
    the winner is stopped at once (SIGTERM) and documents that: one run, which verifies."""
    for round_ in range(RACE_ROUNDS):
        run_dir = tmp_path / f"race-{round_}"
        command = [sys.executable, "-m", "lib.execute", "--params", EMBEDDED, *FAILS_FAST, "--run-dir", str(run_dir)]
        launchers = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, encoding="utf-8") for _ in range(2)]
        losers = []
        while not losers:  # the loser exits within a second; the winner runs on
            losers = [p for p in launchers if p.poll() is not None]
            time.sleep(0.05)
        (loser,) = losers
        (winner,) = [p for p in launchers if p is not loser]
        winner.terminate()
        out, err = winner.communicate(timeout=300)
        _, loser_err = loser.communicate()
        assert loser.returncode == 2 and str(run_dir) in loser_err, loser_err
        assert "claimed" in loser_err or "already holds a run" in loser_err, loser_err
        claim = json.loads((run_dir / "claim.json").read_text(encoding="utf-8"))
        assert claim["pid"] == winner.pid  # the winner's run, the only one
        assert winner.returncode in (1, 143), out[-2000:] + err[-2000:]
        assert verify(run_dir) == [], (round_, out[-2000:], err[-3000:])


# --- 3. another run beside this one ----------------------------------------------------------


def test_another_run_starting_beside_this_one_does_not_fail_its_repository_guard():
    runs = REPO_ROOT / "submission_runs"
    first, second = runs / f"test-guard-a-{os.getpid()}", runs / f"test-guard-b-{os.getpid()}"
    try:
        one = subprocess.Popen([sys.executable, "-m", "lib.execute", "--params", EMBEDDED, *SHORT_ARGS,
                                "--run-dir", str(first)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, encoding="utf-8")
        read = []
        for line in one.stdout:  # the first run is past its start-of-run snapshot of the repository
            read.append(line)
            if line.startswith("M44."):  # a phase's line (pre-flight's "running" may be missed by a poll)
                break
        else:
            raise AssertionError("the first run never started pre-flight:\n" + "".join(read)[-3000:])
        other = launch("--params", EMBEDDED, *FAILS_FAST, "--run-dir", str(second))
        rest, _ = one.communicate(timeout=900)
        assert other.returncode == 1 and facts(second)["failed"]["name"] == "preflight"
        assert one.returncode == 0, rest[-3000:]
        assert facts(first)["repository"]["unchanged"] is True
        assert verify(first) == [] and verify(second) == []
    finally:
        for run_dir in (first, second):
            if run_dir.exists():
                remove(run_dir)


# --- 4. empty data files ---------------------------------------------------------------------


def test_empty_data_files_fail_preflight_naming_each_file(tmp_path):
    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_text("", encoding="utf-8")
    blank.write_text("\n  \n\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    done = launch("--params", EMBEDDED, "-p", f"train_file={empty}", "-p", f"eval_file={blank}",
                  "--run-dir", str(run_dir))
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads((run_dir / "preflight.json").read_text(encoding="utf-8"))["checks"]}
    assert checks["training data"]["status"] == checks["eval data"]["status"] == "fail"
    assert f"{empty}: training traces file holds no records" in checks["training data"]["detail"]
    assert f"{blank}: eval set file holds no records" in checks["eval data"]["detail"]
    assert verify(run_dir) == []


# --- 5. a full disk at the end ---------------------------------------------------------------


def test_a_report_that_cannot_be_written_is_the_runs_documented_failure(tmp_path):
    run_dir = tmp_path / "run"
    done = launch("--params", EMBEDDED, *SHORT_ARGS, "--run-dir", str(run_dir), env=with_fault("report_disk_full"))
    assert done.returncode == 1, done.stdout[-3000:]
    assert "FAILED report: No space left on device" in done.stdout
    assert facts(run_dir)["status"] == "failed in report" and not (run_dir / "run.html").exists()
    for name in REQUIRED_ALWAYS + REQUIRED_ON_FAILURE:
        assert (run_dir / name).is_file(), name
    analysis = (run_dir / "failure_analysis.md").read_text(encoding="utf-8")
    assert "- **phase**: report" in analysis and "No space left on device" in analysis
    assert verify(run_dir) == []  # a documented failure: complete evidence of what happened


def test_when_not_even_the_failure_can_be_written_the_launcher_says_so_and_the_folder_fails(tmp_path):
    run_dir = tmp_path / "run"
    done = launch("--params", EMBEDDED, *SHORT_ARGS, "--run-dir", str(run_dir), env=with_fault("disk_full_at_the_end"))
    assert done.returncode == 1
    assert "EVIDENCE INCOMPLETE" in done.stdout and "does not verify" in done.stdout
    problems = verify(run_dir)
    assert any(p.startswith("run.html: missing; lib.execute renders it for every run") for p in problems), problems


# --- 7. run folders only under submission_runs/ or outside the repository --------------------


@pytest.mark.parametrize("inside", ["data/run-here", "lib/run-here", "submission_runs"])
def test_a_run_folder_inside_the_projects_own_folders_is_refused(inside):
    done = launch("--params", EMBEDDED, "--run-dir", inside)
    assert done.returncode == 2 and "parameter 'run_dir'" in done.stderr, done.stderr
    assert not (REPO_ROOT / "data" / "run-here").exists() and not (REPO_ROOT / "lib" / "run-here").exists()


def test_the_notebook_refuses_a_run_folder_inside_lib(tmp_path):
    done = papermill_command(REPO_ROOT / "lib" / "run-here", profile("embedded"), mkdir=False,
                             output=tmp_path / "run.ipynb", params_file=tmp_path / "params.yaml")
    assert done.returncode != 0 and "REFUSED: parameter 'run_dir'" in done.stderr, done.stderr[-2000:]
    assert "inside the repository but not under submission_runs" in done.stderr
    assert not (REPO_ROOT / "lib" / "run-here").exists() and not (REPO_ROOT / "lib" / "run-here-params.yaml").exists()


# --- 8. messages that name the file, line or parameter, and what to do -----------------------


def test_a_non_utf8_byte_names_the_file_and_line(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    lines = (REPO_ROOT / "data" / "eval_v2.jsonl").read_bytes().splitlines()[:3]
    bad.write_bytes(b"\n".join([*lines[:2], lines[2].replace(b'"prompt": "', b'"prompt": "\xe9', 1)]) + b"\n")
    done = subprocess.run([sys.executable, "-m", "lib.data_check", "--eval", str(bad), "--params", EMBEDDED],
                          cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 1
    assert f"{bad} line 3: not UTF-8 text (byte 0xe9" in done.stdout + done.stderr


@pytest.mark.parametrize("args, message", [
    (["--params", "params/no-such-profile.yaml"], "profile params/no-such-profile.yaml not found"),
    (["-p", "seed=18446744073709551616"], "parameter 'seed' must be <= 4294967295"),
    (["--run-dir", "/proc/m44-run"], "cannot create the run folder /proc/m44-run"),
    (["--run-dir", "/tmp/" + "x" * 300], "choose a shorter run_dir"),
], ids=["missing profile", "huge seed", "unwritable parent", "over-long name"])
def test_launcher_refusals_name_the_parameter_or_path_and_the_fix(args, message):
    done = launch(*(args if "--params" in args else ["--params", EMBEDDED, *args]))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_profile_names_its_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: 10\nlearning_rate: [0.1\n", encoding="utf-8")
    done = launch("--params", str(broken))
    assert done.returncode == 2 and f"{broken} line 3, column 1: not valid YAML" in done.stderr, done.stderr


def test_a_missing_local_model_folder_is_named_as_a_folder(tmp_path):
    done = launch("--preflight-only", "--params", EMBEDDED, "-p", "model_name=./models/no-such-model",
                  "--run-dir", str(tmp_path / "run"))
    assert "model folder ./models/no-such-model does not exist (parameter 'model_name')" in done.stdout
    line = next(line for line in done.stdout.splitlines() if line.startswith("[FAIL] model source"))
    assert "does not exist" in line and "repo id" not in line.lower()  # not taken for a malformed hub id


@pytest.mark.parametrize("n, shown", [(0, "0 bytes"), (512, "512 bytes"), (3 * 2**20, "3.0 MiB"),
                                      (730 * 2**20, "730 MiB"), (5 * 2**30 + 2**29, "5.5 GiB")])
def test_sizes_are_shown_in_a_readable_unit(n, shown):
    assert format_size(n) == shown
