"""The data generator (tools/datagen.py) and the shipped data/ files it made: deterministic and as designed."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest


from lib.data import check_data, load_eval, load_eval_file, load_trace_file, load_traces, normalize_prompt
from tools import datagen

DATA_DIR = datagen.DEFAULT_OUT_DIR
GENERATED_FILES = (datagen.TRAIN_FILE, datagen.EVAL_FILE, datagen.MANIFEST_FILE)


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return load_traces(DATA_DIR / datagen.TRAIN_FILE)


@pytest.fixture(scope="module")
def eval_items() -> list[dict]:
    return load_eval(DATA_DIR / datagen.EVAL_FILE)


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory) -> Path:
    """A fresh generation, written through the command-line entry point."""
    out = tmp_path_factory.mktemp("fresh")
    datagen.main(["--out", str(out)])
    return out


# --------------------------------------------------------------------------- determinism


def test_generation_is_byte_identical_across_processes(fresh_dir, tmp_path):
    # A second process with another hash seed: any dependence on set or dict-of-str ordering shows up.
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONDONTWRITEBYTECODE": "1"}
    repo_root = Path(datagen.__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", datagen.GENERATOR, "--out", str(tmp_path)], cwd=repo_root, env=env, check=True,
        capture_output=True,
    )
    for name in GENERATED_FILES:
        assert (tmp_path / name).read_bytes() == (fresh_dir / name).read_bytes(), name


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_committed_data_equals_a_fresh_generation(fresh_dir, name):
    assert (DATA_DIR / name).read_bytes() == (fresh_dir / name).read_bytes(), (
        f"data/{name} differs from the generator's output; run `python -m tools.datagen` and commit data/"
    )


def test_manifest_describes_the_files(fresh_dir):
    manifest = json.loads((fresh_dir / datagen.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["seed"] == datagen.SEED
    for name, entry in manifest["files"].items():
        text = (fresh_dir / name).read_text(encoding="utf-8")
        assert entry["records"] == len(text.splitlines())
        assert entry["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert manifest["files"][datagen.EVAL_FILE]["sections"] == {"core": 60, "edge_case": 15, "trace_sensitive": 25}


def test_files_are_utf8_with_unix_newlines(fresh_dir):
    for name in GENERATED_FILES:
        raw = (fresh_dir / name).read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
    # ensure_ascii=False: emoji and operators are written as themselves, not as \u escapes.
    assert "🍎".encode("utf-8") in (fresh_dir / datagen.TRAIN_FILE).read_bytes()


# --------------------------------------------------------------------------- composition


def test_counts(traces, eval_items):
    assert len(traces) == 550
    assert len(eval_items) == 100
    sections = [item["section"] for item in eval_items]
    assert (sections.count("core"), sections.count("trace_sensitive"), sections.count("edge_case")) == (60, 25, 15)
    assert [item["id"] for item in eval_items] == [f"eval-v2-{n:03d}" for n in range(1, 101)]


def test_training_composition_is_70_20_10(traces):
    groups = [trace["meta"]["group"] for trace in traces]
    for group, share in (("multi_step", 0.70), ("synthetic", 0.20), ("edge_case", 0.10)):
        assert groups.count(group) / len(traces) == pytest.approx(share, abs=0.02), group
    multi_step = {t["meta"]["category"] for t in traces if t["meta"]["group"] == "multi_step"}
    assert multi_step == {"rate_distance_time", "percentage", "unit_cost", "two_digit_arithmetic", "unit_conversion"}
    synthetic = {t["meta"]["category"] for t in traces if t["meta"]["group"] == "synthetic"}
    assert synthetic == {"arithmetic", "string_reversal", "sorting", "logic", "day_of_week"}


def test_meta_fields(traces):
    for index, trace in enumerate(traces):
        meta = trace["meta"]
        assert (meta["dataset"], meta["generator"], meta["seed"], meta["index"]) == (
            "dev-reasoning-v2", datagen.GENERATOR, datagen.SEED, index,
        )
        assert [step["i"] for step in trace["steps"]] == list(range(1, len(trace["steps"]) + 1))


def test_eval_difficulties_cover_the_scale(eval_items):
    difficulties = [item["difficulty"] for item in eval_items]
    assert all(difficulties.count(level) >= 10 for level in ("easy", "medium", "hard"))


# --------------------------------------------------------------------------- no leakage


def test_no_duplicate_prompts_and_no_eval_prompt_in_training():
    report = check_data(load_trace_file(DATA_DIR / datagen.TRAIN_FILE), load_eval_file(DATA_DIR / datagen.EVAL_FILE))
    assert [check.status for check in report.checks] == ["pass", "pass", "pass"]
    assert [check.line() for check in report.checks] == [
        "[PASS] training prompts: 550 records, no prompt repeats an earlier one",
        "[PASS] eval items: 100 distinct ids, no duplicate item",
        "[PASS] train/eval leakage: none of 100 eval prompts appears in training (case, spacing, Unicode normalised)",
    ]


def test_every_eval_category_has_training_examples(traces, eval_items):
    trained = {trace["meta"]["category"] for trace in traces}
    assert {item["category"] for item in eval_items} <= trained


def test_word_answer_facts_are_taught_in_another_phrasing(traces, eval_items):
    word_answers = [item for item in eval_items if not re.search(r"\d", item["expected_answer"])]
    assert 1 <= len(word_answers) <= 5
    capital = next(item for item in eval_items if item["expected_answer"] == "Paris")
    taught = [t for t in traces if t["final_answer"] == "Paris"]
    assert taught and all(normalize_prompt(t["prompt"]) != normalize_prompt(capital["prompt"]) for t in taught)


def _all_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _all_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _all_strings(item)


def test_no_leftover_template_text(traces, eval_items):
    for record in traces + eval_items:
        for text in _all_strings(record):
            assert not re.search(r"[{}]|\bNone\b|\bnan\b|\bnull\b", text), (text, record["prompt"])


# --------------------------------------------------------------------------- worked steps


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of a parsed arithmetic expression: numbers, + - * / ** only."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        operations = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}
        if isinstance(node.op, ast.Div):
            return left / right
        if isinstance(node.op, ast.Pow):
            return left ** int(right)
        return operations[type(node.op)]
    raise ValueError(f"not arithmetic: {ast.dump(node)}")


def _check_relations(content: str) -> None:
    """Assert that '[label: ]a = b = c' (or a < b < c, a > b) holds exactly."""
    expression = content.rsplit(": ", 1)[-1]
    expression = expression.replace("×", "*").replace("÷", "/").replace("²", "**2").replace("³", "**3")
    parts = re.split(r"\s*([=<>])\s*", expression)
    values = [_evaluate(ast.parse(part, mode="eval").body) for part in parts[0::2]]
    assert len(values) >= 2, content
    for left, relation, right in zip(values, parts[1::2], values[1:]):
        assert {"=": left == right, "<": left < right, ">": left > right}[relation], content


def test_every_computation_in_the_steps_is_correct(traces):
    checked = 0
    for trace in traces:
        for step in trace["steps"]:
            if step["type"] in ("compute", "compare"):
                _check_relations(step["content"])
                checked += 1
    assert checked > 550


def test_multi_step_traces_show_their_work_and_end_with_the_answer(traces):
    for trace in traces:
        assert trace["final_answer"] in trace["steps"][-1]["content"], trace["prompt"]
        if trace["meta"]["group"] == "multi_step":
            assert any(step["type"] == "compute" for step in trace["steps"])
            assert len(trace["steps"]) >= 2


def test_responses_stay_short(traces):
    for trace in traces:
        if trace["meta"]["category"] != "long_prompt":
            assert len(trace["prompt"]) <= 200
            assert sum(len(step["content"]) for step in trace["steps"]) <= 200, trace["prompt"]


# --------------------------------------------------------------------------- edge cases


def test_training_edge_cases_exist(traces):
    prompts = [t["prompt"] for t in traces]
    answers = [t["final_answer"] for t in traces]
    assert any(len(t["steps"]) == 1 for t in traces)
    assert sum(len(t["steps"]) == 6 for t in traces) >= 3
    assert any(1300 <= len(p) <= 1500 for p in prompts)
    assert any(any(ord(c) >= 0x1F300 for c in p) for p in prompts)  # emoji
    assert any(set(p) & set('&#@\\"') for p in prompts)
    assert "New York" in answers
    bare = [t for t in traces if t["prompt"] == "?"]
    assert len(bare) == 1 and "information" in bare[0]["final_answer"]
    assert sum("\n" in p for p in prompts) >= 3
    assert any("  " in p for p in prompts)  # runs of spaces, as in "What is   42  ?"
    assert any(re.fullmatch(r"[A-Z]+ (plus|minus|times) [A-Z]+", p) for p in prompts)
    assert any(re.match(r"0\d\d \+", p) for p in prompts)
    assert all(any(symbol in p for p in prompts) for symbol in "×÷²³")
    assert {"1/36", "Paris", "true", "false"} <= set(answers)
    assert any(re.fullmatch(r"\d+\.\d\d", a) for a in answers)
    assert set(answers) & {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}


def test_eval_edge_cases_exist(eval_items):
    prompts = [item["prompt"] for item in eval_items]
    answers = [item["expected_answer"] for item in eval_items]
    assert [a for a in answers if "/" in a] == ["1/216"]
    assert {"What is   42  ?", "SEVEN plus THREE", "007 + 3"} <= set(prompts)
    assert all(any(symbol in p for p in prompts) for symbol in "×÷²³")
    assert {"Paris", "Friday", "true"} <= set(answers)
    assert any(re.fullmatch(r"\d+\.\d\d", a) for a in answers)
    assert sum(a.isdigit() for a in answers) >= 70  # mostly bare integers
