"""Tests for `python -m lib.data_check`: what a user sees before spending the one shot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib import data_check, model_source
from lib.config import REPO_ROOT

DATA = REPO_ROOT / "data"
FIXTURES = Path(__file__).parent / "data"
EMBEDDED = REPO_ROOT / "params" / "embedded.yaml"


def _check(capsys, *args: str) -> tuple[int, str]:
    status = data_check.main(list(args))
    return status, capsys.readouterr().out


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _profile(tmp_path: Path, **values) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items()), encoding="utf-8")
    return path


def test_shipped_files_pass_under_the_embedded_profile(capsys, tmp_path):
    report = tmp_path / "report.json"
    status, out = _check(capsys, "--train", str(DATA / "dev-reasoning-v2.jsonl"), "--eval", str(DATA / "eval_v2.jsonl"),
                         "--params", str(EMBEDDED), "--json", str(report))
    assert status == 0
    lines = out.splitlines()
    assert "[PASS] training prompts: 550 records, no prompt repeats an earlier one" in lines
    assert "[PASS] eval items: 100 distinct ids, no duplicate item" in lines
    assert any(line.startswith("[PASS] record lengths: longest record ") for line in lines)
    assert "Token lengths (embedded, built from the 550 training texts; as training encodes them)" in out
    assert lines[-1] == "A run would accept these files."
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["ok"] is True and data["files"]["train"]["records"] == 550
    assert [check["name"] for check in data["checks"]] == [
        "training prompts", "eval items", "train/eval leakage", "record lengths",
    ]
    # Every training record fits: the longest is the one the length check names.
    length = data["checks"][3]
    assert length["counts"]["over_max_seq_length"] == 0 and length["counts"]["longest_tokens"] <= 768


def test_users_files_are_accepted_with_notes(capsys):
    # The data: repeated training prompts and a FRANCE/France pair are notes, not refusals.
    status, out = _check(capsys, "--train", str(FIXTURES / "user_train.jsonl"),
                         "--eval", str(FIXTURES / "user_eval.jsonl"), "--params", str(EMBEDDED))
    assert status == 0
    assert "[WARN] training prompts: 8 records, 3 repeat an earlier prompt (kept)" in out
    assert ("  user_eval.jsonl line 6 (id user-eval-006) is a variant of line 5 (id user-eval-005): "
            "'What is the capital of FRANCE?'") in out
    assert "  user_train.jsonl line 7 repeats line 1: 'what is 12 +  30?'" in out
    # Counts per section and category, and the answer types of both files.
    assert "edge_case                4" in out and "formatting               2" in out
    assert "currency                2       1" in out and "fraction                0       1" in out
    assert out.rstrip().endswith("A run would accept these files.")


def test_every_problem_is_named_and_the_exit_status_is_1(capsys, tmp_path):
    train = _records(FIXTURES / "user_train.jsonl")
    items = _records(FIXTURES / "user_eval.jsonl")
    items[1]["prompt"] = "WHAT is 12 + 30?"  # a training prompt in other case
    items[2]["id"] = items[0]["id"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    profile = _profile(tmp_path, model_name="embedded", device="cpu", dtype="float32", max_seq_length=50)
    status, out = _check(capsys, "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"),
                         "--params", str(profile))
    assert status == 1
    problems = out[out.index("A run would refuse these files"):].splitlines()
    assert problems[0] == "A run would refuse these files (4 problems):"
    assert problems[1:3] == [
        "  eval.jsonl line 3 (id user-eval-001) repeats the id of line 1",
        "  eval.jsonl line 2 (id user-eval-002) repeats train.jsonl line 1: 'WHAT is 12 + 30?'",
    ]
    # The two longest records (a 3-step and a 2-step trace) exceed 50 tokens, named by line.
    assert all("tokens, over max_seq_length 50; raise max_seq_length" in line for line in problems[3:])
    assert [line.split(":")[0] for line in problems[3:]] == ["  train.jsonl line 2", "  train.jsonl line 8"]


def test_malformed_lines_are_all_named(capsys, tmp_path):
    good = (FIXTURES / "user_eval.jsonl").read_text(encoding="utf-8").splitlines()[0]
    broken = tmp_path / "eval.jsonl"
    broken.write_bytes(good.encode() + b"\n{oops\n" + "caf\u00e9".encode("latin-1") + b"\n")
    status, out = _check(capsys, "--train", str(FIXTURES / "user_train.jsonl"), "--eval", str(broken),
                         "--params", str(EMBEDDED))
    assert status == 1
    assert out.splitlines()[-2:] == [
        f"  {broken} line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"  {broken} line 3: not UTF-8 text (byte 0xe9 at byte 4 of the line); save the file as UTF-8",
    ]


def test_drop_and_report_policies(capsys, tmp_path):
    items = _records(FIXTURES / "user_eval.jsonl")
    items[0]["prompt"] = "What is 12 + 30?"
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    status, out = _check(capsys, "--train", str(FIXTURES / "user_train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"),
                         "--params", str(EMBEDDED), "--repeats", "drop", "--leakage", "report")
    assert status == 0
    assert "[WARN] training prompts: 8 records, 3 repeat an earlier prompt (dropped; 5 records left to train on)" in out
    assert "reported, not refused (leakage policy 'report')" in out
    assert "  eval.jsonl line 1 (id user-eval-001) repeats user_train.jsonl line 1: 'What is 12 + 30?'" in out
    assert "Token lengths (embedded, built from the 5 training texts" in out  # trained on what is kept


def test_unreachable_hub_model_is_not_measured_and_does_not_fail(capsys, tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(model_source.huggingface_hub, "model_info", offline)
    monkeypatch.setenv("HF_TOKEN", "hf_a_token_of_no_account")  # the hub is asked only with credentials
    profile = _profile(tmp_path, model_name="example-org/not-cached-model")
    status, out = _check(capsys, "--train", str(FIXTURES / "user_train.jsonl"),
                         "--eval", str(FIXTURES / "user_eval.jsonl"), "--params", str(profile))
    assert status == 0
    assert ("[WARN] record lengths: token lengths not measured: the profile's tokenizer is not available here "
            "(RuntimeError: example-org/not-cached-model is neither reachable (ConnectionError: no network) nor "
            "cached)") in out


def test_bad_profile_is_a_usage_error(capsys, tmp_path):
    assert data_check.main(["--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    unknown = _profile(tmp_path, max_seq_len=64)
    assert data_check.main(["--params", str(unknown)]) == 2
    assert "unknown parameter(s) 'max_seq_len'" in capsys.readouterr().err


def test_python_dash_m_lib_data_check_runs_the_check(tmp_path):
    # The documented entry point, in a fresh process: exit status and the closing line.
    result = subprocess.run(
        [sys.executable, "-m", "lib.data_check", "--train", str(FIXTURES / "user_train.jsonl"),
         "--eval", str(FIXTURES / "user_eval.jsonl"), "--params", str(EMBEDDED)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("A run would accept these files.")


@pytest.mark.parametrize("argv", [["--repeats", "sometimes"], ["check"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_check.main(argv)
    assert exit_.value.code == 2
