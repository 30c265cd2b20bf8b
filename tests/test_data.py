"""Tests for the dataset generator (lib.datagen), the loaders (lib.data) and the committed data/ files."""

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

from lib import datagen
from lib.data import DataError, check_datasets, load_eval, load_traces, normalize_prompt

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
        [sys.executable, "-m", "lib.datagen", "--out", str(tmp_path)], cwd=repo_root, env=env, check=True,
        capture_output=True,
    )
    for name in GENERATED_FILES:
        assert (tmp_path / name).read_bytes() == (fresh_dir / name).read_bytes(), name


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_committed_data_equals_a_fresh_generation(fresh_dir, name):
    assert (DATA_DIR / name).read_bytes() == (fresh_dir / name).read_bytes(), (
        f"data/{name} differs from the generator's output; run `python -m lib.datagen` and commit data/"
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
            "dev-reasoning-v2", "lib.datagen", datagen.SEED, index,
        )
        assert [step["i"] for step in trace["steps"]] == list(range(1, len(trace["steps"]) + 1))


def test_eval_difficulties_cover_the_scale(eval_items):
    difficulties = [item["difficulty"] for item in eval_items]
    assert all(difficulties.count(level) >= 10 for level in ("easy", "medium", "hard"))


# --------------------------------------------------------------------------- no leakage


def test_no_duplicate_prompts_and_no_eval_prompt_in_training(traces, eval_items):
    assert check_datasets(traces, eval_items) == []


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


# --------------------------------------------------------------------------- loaders

GOOD_TRACE = {
    "trace_version": "1.0",
    "prompt": "?",  # a bare question mark is a valid prompt
    "final_answer": "More information is needed.",
    "steps": [{"i": 1, "type": "given", "content": "Only a question mark."}],
    "meta": {"dataset": "x", "unknown_key": [1, 2]},  # extra keys are accepted
    "extra_top_level_key": True,
}
GOOD_ITEM = {
    "id": "eval-v2-001", "prompt": "What is 2 + 2?", "expected_answer": "4",
    "section": "core", "category": "arithmetic", "difficulty": "easy", "notes": "extra keys are accepted",
}


def _write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loaders_round_trip_every_record(tmp_path, traces, eval_items):
    cases = ((datagen.TRAIN_FILE, load_traces, traces), (datagen.EVAL_FILE, load_eval, eval_items))
    for name, loader, records in cases:
        lines = (DATA_DIR / name).read_text(encoding="utf-8").splitlines()
        assert records == [json.loads(line) for line in lines]
        copy = _write_lines(tmp_path / name, *(json.dumps(r, ensure_ascii=False) for r in records))
        assert loader(copy) == records


def test_loaders_accept_extra_keys_and_skip_blank_lines(tmp_path):
    traces = _write_lines(tmp_path / "t.jsonl", json.dumps(GOOD_TRACE), "   ", "", json.dumps(GOOD_TRACE))
    assert load_traces(traces) == [GOOD_TRACE, GOOD_TRACE]
    assert load_eval(_write_lines(tmp_path / "e.jsonl", "", json.dumps(GOOD_ITEM))) == [GOOD_ITEM]


def _with(record: dict, **changes) -> str:
    """The record as a JSON line, with fields replaced (value ...) or removed (value None)."""
    changed = {**record, **changes}
    return json.dumps({key: value for key, value in changed.items() if value is not None})


BAD_TRACES = [
    ('{"prompt": "x" "final_answer": "y"}', "not valid JSON (Expecting ',' delimiter at column 16)"),
    ("[1, 2]", "record must be a JSON object (got a list)"),
    (_with(GOOD_TRACE, final_answer=None), "field 'final_answer' is missing"),
    (_with(GOOD_TRACE, prompt=5), "field 'prompt' must be a string (got an integer)"),
    (_with(GOOD_TRACE, prompt=""), "field 'prompt' must not be empty"),
    (_with(GOOD_TRACE, trace_version=1.0), "field 'trace_version' must be a string (got a number)"),
    (_with(GOOD_TRACE, steps=[]), "field 'steps' must be a non-empty list"),
    (_with(GOOD_TRACE, steps="1. add"), "field 'steps' must be a list (got a string)"),
    (_with(GOOD_TRACE, steps=[GOOD_TRACE["steps"][0], "add"]), "field 'steps[1]' must be an object (got a string)"),
    (
        _with(GOOD_TRACE, steps=[*GOOD_TRACE["steps"] * 2, {"i": 3, "type": "compute", "content": 7}]),
        "field 'steps[2].content' must be a string (got an integer)",
    ),
    (_with(GOOD_TRACE, steps=[{"i": True, "type": "given", "content": "x"}]), "field 'steps[0].i' must be an integer"),
    (_with(GOOD_TRACE, steps=[{"i": 1, "content": "x"}]), "field 'steps[0].type' is missing"),
    (_with(GOOD_TRACE, meta=["x"]), "field 'meta' must be an object (got a list)"),
]
BAD_ITEMS = [
    ("{'id': 'single quotes'}", "not valid JSON"),
    (_with(GOOD_ITEM, id=None), "field 'id' is missing"),
    (_with(GOOD_ITEM, expected_answer=15), "field 'expected_answer' must be a string (got an integer)"),
    (
        _with(GOOD_ITEM, section="misc"),
        "field 'section' must be one of core, trace_sensitive, edge_case (got 'misc')",
    ),
    (_with(GOOD_ITEM, difficulty="extreme"), "field 'difficulty' must be one of easy, medium, hard (got 'extreme')"),
    (_with(GOOD_ITEM, category=None), "field 'category' is missing"),
    (_with(GOOD_ITEM, prompt="  "), "field 'prompt' must not be empty"),
]


@pytest.mark.parametrize(
    ("loader", "good", "bad_line", "message"),
    [(load_traces, GOOD_TRACE, *case) for case in BAD_TRACES] + [(load_eval, GOOD_ITEM, *case) for case in BAD_ITEMS],
)
def test_malformed_record_names_file_line_and_field(tmp_path, loader, good, bad_line, message):
    # Line 1 is fine and line 2 is blank, so the error must count blank lines to say "line 3".
    path = _write_lines(tmp_path / "bad.jsonl", json.dumps(good), "", bad_line)
    with pytest.raises(DataError) as error:
        loader(path)
    assert str(error.value).startswith(f"{path} line 3: {message}")


@pytest.mark.parametrize(("loader", "what"), [(load_traces, "training traces file"), (load_eval, "eval set file")])
def test_missing_file_names_path_and_role(tmp_path, loader, what):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{what} not found: {missing}")):
        loader(missing)


def test_check_datasets_reports_each_problem():
    trace = {**GOOD_TRACE, "prompt": "What is 2 + 2?"}
    twin = {**GOOD_TRACE, "prompt": "  what is 2 +  2? "}
    items = [{**GOOD_ITEM, "prompt": "WHAT IS 2 + 2?"}, {**GOOD_ITEM, "prompt": "Other?"}]
    problems = check_datasets([trace, twin], items)
    assert any("training records 1 and 2" in p for p in problems)
    assert any("eval item eval-v2-001 repeats training record 1" in p for p in problems)
    assert any("eval id 'eval-v2-001' is used by 2 items" in p for p in problems)
    assert check_datasets([trace], [{**GOOD_ITEM, "prompt": "Other?"}]) == []
