"""The loaders and the data policy (lib.data): schemas, line numbers, repeats, duplicates, leakage."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.data import (
    EXAMPLES,
    MAX_LISTED,
    DataError,
    apply_repeat_policy,
    check_data,
    check_eval_items,
    check_leakage,
    check_training_prompts,
    load_eval,
    load_eval_file,
    load_trace_file,
    load_traces,
    normalize_prompt,
)

DATA_DIR = REPO_ROOT / "data"
TRAIN_FILE, EVAL_FILE = "dev-reasoning-v2.jsonl", "eval_v2.jsonl"


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return load_traces(DATA_DIR / TRAIN_FILE)


@pytest.fixture(scope="module")
def eval_items() -> list[dict]:
    return load_eval(DATA_DIR / EVAL_FILE)




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
    cases = ((TRAIN_FILE, load_traces, traces), (EVAL_FILE, load_eval, eval_items))
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


# --------------------------------------------------------------------------- loading: lines, hashes, bytes

USER_TRAIN = Path(__file__).parent / "data" / "user_train.jsonl"
USER_EVAL = Path(__file__).parent / "data" / "user_eval.jsonl"


def _trace(prompt: str, answer: str = "4") -> dict:
    return {**GOOD_TRACE, "prompt": prompt, "final_answer": answer}


def _item(n: int, prompt: str, answer: str = "4", id_: str | None = None) -> dict:
    return {**GOOD_ITEM, "id": id_ or f"eval-{n:03d}", "prompt": prompt, "expected_answer": answer}


def _jsonl(path: Path, records: list[dict]) -> Path:
    return _write_lines(path, *(json.dumps(record, ensure_ascii=False) for record in records))


def test_loaders_keep_line_numbers_and_hash_the_bytes(tmp_path):
    path = _write_lines(tmp_path / "t.jsonl", "", json.dumps(GOOD_TRACE), "  ", json.dumps(_trace("Other?")))
    data = load_trace_file(path)
    assert data.lines == [2, 4] and [r["prompt"] for r in data.records] == ["?", "Other?"]
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.describe() == {"path": str(path), "sha256": data.sha256, "records": 2}
    assert load_traces(path) == data.records


def test_users_export_loads_unchanged():
    # Step numbers from 0, free step types, answers such as "$31.5" and "Paris" (issue 11).
    data = load_trace_file(USER_TRAIN)
    steps = data.records[1]["steps"]
    assert [s["i"] for s in steps] == [0, 1, 2] and [s["type"] for s in steps] == ["setup", "formula", "calculation"]
    assert data.records[1]["final_answer"] == "$31.5"
    assert data.lines == [1, 2, 3, 5, 6, 7, 8, 9]  # line 4 is blank
    assert [item["expected_answer"] for item in load_eval(USER_EVAL)][3:6] == ["$31.5", "Paris", "Paris"]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \n\t\n"])
@pytest.mark.parametrize(("loader", "what"), [(load_traces, "training traces file"), (load_eval, "eval set file")])
def test_empty_file_is_an_error_naming_the_file(tmp_path, loader, what, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: {what} holds no records")):
        loader(path)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(GOOD_ITEM).encode("utf-8")
    bad = json.dumps({**GOOD_ITEM, "prompt": "caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    with pytest.raises(DataError) as error:
        load_eval(path)
    column = bad.index(b"\xe9") + 1
    assert str(error.value) == (
        f"{path} line 3: not UTF-8 text (byte 0xe9 at byte {column} of the line); save the file as UTF-8"
    )


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "windows.jsonl"
    line = json.dumps(GOOD_ITEM).encode()
    path.write_bytes(b"\xef\xbb\xbf" + line + b"\r\n" + line + b"\r\n")
    assert load_eval(path) == [GOOD_ITEM, GOOD_ITEM]


def test_every_malformed_record_is_named_and_each_fault_once(tmp_path):
    lines = [json.dumps(GOOD_ITEM), "{not json", _with(GOOD_ITEM, section="misc"), json.dumps(GOOD_ITEM), "[]"]
    path = _write_lines(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(DataError) as error:
        load_eval(path)
    assert str(error.value).splitlines() == [
        f"{path} line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path} line 3: field 'section' must be one of core, trace_sensitive, edge_case (got 'misc')",
        f"{path} line 5: record must be a JSON object (got a list)",
        "(the schemas of both files: docs/DATA.md)",
    ]
    # The same fault on many lines is one line naming them; many kinds of fault are cut at MAX_LISTED.
    many = _write_lines(tmp_path / "many.jsonl", *["[]"] * 100)
    with pytest.raises(DataError) as error:
        load_eval(many)
    assert str(error.value).splitlines()[0] == (
        f"{many} lines 1, 2, 3, 4, 5 and 95 more: record must be a JSON object (got a list)")
    kinds = _write_lines(tmp_path / "kinds.jsonl", *[_with(GOOD_ITEM, section=f"s{n}") for n in range(MAX_LISTED + 3)])
    with pytest.raises(DataError) as error:
        load_eval(kinds)
    message = str(error.value).splitlines()
    assert len(message) == MAX_LISTED + 2 and message[-2] == "... and 3 other faults"


def test_swapped_files_are_recognised(tmp_path):
    train = _write_lines(tmp_path / "train.jsonl", json.dumps(GOOD_ITEM), json.dumps({**GOOD_ITEM, "id": "x-2"}))
    with pytest.raises(DataError) as error:
        load_trace_file(train)
    assert str(error.value).splitlines()[0] == (
        f"{train} holds eval set records ('expected_answer' on every line), not a training traces file: "
        "are the training and eval files swapped?")


def test_an_unpaired_surrogate_is_named_as_such(tmp_path):
    path = _write_lines(tmp_path / "eval.jsonl", json.dumps(GOOD_ITEM).replace('"prompt": "', '"prompt": "\\ud83d'))
    with pytest.raises(DataError, match=r"line 1: field 'prompt' holds an unpaired surrogate escape ..ud83d."):
        load_eval(path)


# --------------------------------------------------------------------------- normalising prompts


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "what is the capital of FRANCE?"),
        ("What is   42  ?", "what is 42 ?"),
        ("What\nis 42?", "What is 42?"),
        ("What is 42?", "What\u00a0is 42?"),  # a no-break space
        ("\uff37hat is \uff14\uff12?", "What is 42?"),  # full-width letters and digits
        ("caf\u00e9?", "cafe\u0301?"),  # composed and decomposed accents
        ("STRASSE?", "stra\u00dfe?"),  # case folding, not just lower-casing
    ],
)
def test_prompts_that_are_the_same_question(a, b):
    assert normalize_prompt(a) == normalize_prompt(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is 5\u00b2?", "What is 52?"),  # NFKC alone would make these equal
        ("What is x\u2082?", "What is x2?"),
        ("What is \u00bd of 8?", "What is 1\u20442 of 8?"),
        ("What is 7 + 8?", "What is 7 - 8?"),
    ],
)
def test_prompts_that_are_different_questions(a, b):
    assert normalize_prompt(a) != normalize_prompt(b)


# --------------------------------------------------------------------------- training prompts


def test_repeated_training_prompts_are_reported_and_kept():
    result = check_training_prompts(load_trace_file(USER_TRAIN))
    assert result.ok and result.status == "warn" and result.problems == []
    assert result.line() == "[WARN] training prompts: 8 records, 3 repeat an earlier prompt (kept)"
    assert [(e["line"], e["first_line"], e["prompt"]) for e in result.examples] == [
        (5, 1, "What is 12 + 30?"),
        (7, 1, "what is 12 +  30?"),  # the same question after normalising
        (9, 2, "A book costs $10.50. What do 3 books cost?"),
    ]
    # "$31.50" repeats "$31.5": the same answer, so not counted as another answer.
    assert result.counts == {"records": 8, "repeats": 3, "repeats_with_other_answer": 0, "dropped": 0}


def test_the_issues_74_repeats_are_not_a_failure(tmp_path):
    records = [_trace(f"What is {n} + 1?", str(n + 1)) for n in range(476)]
    records += [_trace(f"What is {n} + 1?", str(n + 1)) for n in range(74)]
    result = check_training_prompts(load_trace_file(_jsonl(tmp_path / "t.jsonl", records)))
    assert result.ok and result.detail == "550 records, 74 repeat an earlier prompt (kept)"
    assert len(result.examples) == EXAMPLES and result.examples[0] == {
        "kind": "repeated_prompt", "line": 477, "first_line": 1, "prompt": "What is 0 + 1?", "same_answer": True,
    }


def test_repeat_with_another_answer_is_counted(tmp_path):
    records = [_trace("What is 2 + 2?", "4"), _trace("what is 2 + 2?", "5"), _trace("Other?")]
    result = check_training_prompts(load_trace_file(_jsonl(tmp_path / "t.jsonl", records)))
    assert result.detail == "3 records, 1 repeat an earlier prompt (kept); 1 repeat has another answer"
    assert result.examples[0]["same_answer"] is False and result.ok


def test_drop_policy_keeps_the_first_of_each_prompt():
    train = load_trace_file(USER_TRAIN)
    kept, dropped = apply_repeat_policy(train, "drop")
    assert kept.lines == [1, 2, 3, 6, 8] and kept.sha256 == train.sha256
    assert [(d["line"], d["first_line"]) for d in dropped] == [(5, 1), (7, 1), (9, 2)]
    assert apply_repeat_policy(train, "keep") == (train, [])
    result = check_training_prompts(train, "drop")
    assert result.detail == "8 records, 3 repeat an earlier prompt (dropped; 5 records left to train on)"
    assert result.counts["dropped"] == 3 and result.ok


def test_no_repeats_passes(tmp_path):
    result = check_training_prompts(load_trace_file(_jsonl(tmp_path / "t.jsonl", [_trace("A?"), _trace("B?")])))
    assert result.line() == "[PASS] training prompts: 2 records, no prompt repeats an earlier one"


# --------------------------------------------------------------------------- eval items


def test_case_variants_are_distinct_eval_items():
    # The issue: "What is the capital of France?" and "... FRANCE?" is a deliberate edge case.
    result = check_eval_items(load_eval_file(USER_EVAL))
    assert result.ok and result.status == "warn" and result.problems == []
    assert result.detail == (
        "10 distinct ids, no duplicate item; 1 prompt differs from an earlier one only in case, spacing or "
        "Unicode form (distinct items)"
    )
    assert result.examples == [{
        "kind": "variant", "id": "user-eval-006", "line": 6, "first_id": "user-eval-005", "first_line": 5,
        "prompt": "What is the capital of FRANCE?", "first_prompt": "What is the capital of France?",
    }]


def test_repeated_id_and_identical_item_fail_naming_both_lines(tmp_path):
    items = [_item(1, "A?"), _item(2, "B?"), _item(3, "C?", id_="eval-001"), _item(4, "A?", "4"), _item(5, "A?", "5")]
    path = _jsonl(tmp_path / "e.jsonl", items)
    result = check_eval_items(load_eval_file(path))
    assert not result.ok and result.status == "fail"
    assert result.detail == (
        "5 items: 1 id used again, 1 item identical to an earlier one (prompt and expected answer); "
        "1 prompt repeats an earlier one with another expected answer (distinct items)"
    )
    assert result.problems == [
        "e.jsonl line 3 (id eval-001) repeats the id of line 1",
        "e.jsonl line 4 (id eval-004) is identical to line 1 (id eval-001) in prompt and expected answer, "
        "so it would be scored twice",
    ]
    assert result.counts == {"items": 5, "distinct_ids": 4, "repeated_ids": 1, "identical_items": 1,
                             "variants": 0, "same_prompt_other_answer": 1}


# --------------------------------------------------------------------------- train/eval leakage


def test_leakage_fails_listing_the_pairs(tmp_path):
    train = load_trace_file(_jsonl(tmp_path / "train.jsonl", [_trace("X?"), _trace("What is 2 + 2?"), _trace("Y?")]))
    items = [_item(1, "Other?"), _item(2, "\uff37HAT is 2 +  2?")]  # full-width W, case and spacing
    eval_set = load_eval_file(_jsonl(tmp_path / "eval.jsonl", items))
    result = check_leakage(train, eval_set)
    assert result.line() == (
        "[FAIL] train/eval leakage: 1 of 2 eval prompts appears in training (case, spacing, Unicode normalised)"
    )
    assert result.problems == ["eval.jsonl line 2 (id eval-002) repeats train.jsonl line 2: '\uff37HAT is 2 +  2?'"]
    assert result.examples == [{"kind": "leaked_prompt", "eval_line": 2, "id": "eval-002", "train_line": 2,
                                "prompt": "\uff37HAT is 2 +  2?"}]
    reported = check_leakage(train, eval_set, "report")
    assert reported.ok and reported.status == "warn" and reported.problems == []
    assert reported.detail.endswith("; reported, not refused (leakage policy 'report')")


def test_policies_are_checked():
    train = load_trace_file(USER_TRAIN)
    with pytest.raises(ValueError, match="repeats policy must be one of keep, drop"):
        check_training_prompts(train, "ignore")
    with pytest.raises(ValueError, match="leakage policy must be one of fail, report"):
        check_leakage(train, load_eval_file(USER_EVAL), "warn")


# --------------------------------------------------------------------------- the report


def test_report_is_json_and_names_every_problem(tmp_path):
    train = load_trace_file(_jsonl(tmp_path / "train.jsonl", [_trace("A?"), _trace("A?")]))
    eval_set = load_eval_file(_jsonl(tmp_path / "eval.jsonl", [_item(1, "a?"), _item(2, "B?", id_="eval-001")]))
    report = check_data(train, eval_set)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["summary"] == (
        "data checks failed: eval items, train/eval leakage (notes on training prompts)"
    )
    assert data["policy"]["repeats"] == "keep" and data["policy"]["leakage"] == "fail"
    assert data["files"]["train"] == {"path": str(train.path), "sha256": train.sha256, "records": 2}
    assert [c["name"] for c in data["checks"]] == ["training prompts", "eval items", "train/eval leakage"]
    assert report.problems == [
        "eval.jsonl line 2 (id eval-001) repeats the id of line 1",
        "eval.jsonl line 1 (id eval-001) repeats train.jsonl line 1: 'a?'",
    ]
    assert check_data(train, load_eval_file(USER_EVAL)).problems == []


