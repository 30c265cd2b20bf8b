"""Any text round-trips: what a model generates and what a user's file holds, through every writer, renderer and
checker (property-based, Hypothesis: a seeded, bounded profile, tests/conftest.py).

For arbitrary Unicode (every control character, the line and paragraph separators, format characters, the longest
output `max_new_tokens` allows) in generations, prompts, answers, ids, categories, file names and causes:
- the evidence files are written by the run's writers and checked by the run's verifier, which finds nothing;
- a rendered Markdown file breaks lines only where its text has a newline: `str.splitlines` (which also breaks at
  \\r, \\x0b, \\x85, U+2028 ...) gives the same lines as splitting at "\\n";
- rendered HTML holds no character that would not show (each is escaped as \\r, \\x0b, \\u2028).
"""

from __future__ import annotations

import ast
import copy
import tempfile
from pathlib import Path

from hypothesis import given, strategies as st

from lib.contract import EVAL_RESULTS, EVAL_SUMMARY
from lib.evidence import write_json, write_text
from lib.model_card import base_model, render_model_card
from lib.printable import escape_char, folded_pre, is_hidden, visible
from lib.report import card_html, changed_html, examples_html
from lib.results import build_results, render_evaluation_summary, score_items
from lib.summary import render_failure_analysis, render_summary
from lib.verify import consistency, first_difference, same_text
from tests.test_lora import lora_facts, lora_params
from tests.test_summary import completed_facts, preflight_failed_facts

# What breaks a line in some reader, or does not show: C0 and C1 controls, DEL, the separators, format characters.
STRANGE = [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u2028", "\u2029", "\u200b", "\ufeff", "\u202e",
                                         "\U000e0001", "\ufffd", "`", "|", "*", "\\", "<", "&"]
CHARS = st.one_of(st.sampled_from(STRANGE), st.characters(blacklist_categories=["Cs"]))  # no surrogates: UTF-8
TEXT = st.lists(CHARS, max_size=30).map("".join)
NONEMPTY = st.lists(CHARS, min_size=1, max_size=20).map("".join)
# The longest output: max_new_tokens tokens of up to a few characters each.
LONG = st.builds(lambda piece, n: piece * n, st.sampled_from(["x\r", "\u2028", "`", "\r\n", "<answer>"]),
                 st.integers(0, 256))
OUTPUT = st.one_of(TEXT, LONG, st.builds(lambda a, b: f"<reasoning>{a}</reasoning>\n<answer>{b}</answer>", TEXT, TEXT))


def item(n: int, prompt: str, expected: str, category: str, id_: str) -> dict:
    return {"id": f"{id_}-{n}", "prompt": prompt, "expected_answer": expected, "section": ["core", "edge_case"][n % 2],
            "category": category, "difficulty": ["easy", "medium", "hard"][n % 3]}


ITEMS = st.lists(st.tuples(TEXT, NONEMPTY, TEXT, TEXT, OUTPUT, OUTPUT), min_size=1, max_size=6)


def one_line_breaks_only_at_newlines(text: str) -> bool:
    return text.split("\n") == text.splitlines() + ([""] if text.endswith("\n") else [])


@given(ITEMS)
def test_evaluation_evidence_round_trips_any_text(rows):
    eval_items = [item(n, prompt, expected, category, id_) for n, (prompt, expected, category, id_, _, _) in enumerate(rows)]
    generations = {label: [{"output": row[column], "tokens": 7, "stopped": True, "seconds": 0.01} for row in rows]
                   for label, column in (("baseline", 4), ("trained", 5))}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # What lib.evaluation.write_evaluation writes, without its chart (a second per example).
        results = build_results(eval_items, generations, 256)
        write_json(out / EVAL_RESULTS, results)
        write_text(out / EVAL_SUMMARY, render_evaluation_summary(results["metrics"], results["items"]))
        assert consistency(out) == []  # the verifier reads back exactly what the writer wrote
        summary = (out / "evaluation_summary.md").read_bytes().decode("utf-8")
    assert one_line_breaks_only_at_newlines(summary)
    assert not any(is_hidden(char) for char in summary if char != "\n")


@given(ITEMS)
def test_the_reports_evaluation_html_shows_every_character(rows):
    eval_items = [item(n, prompt, expected, category, id_) for n, (prompt, expected, category, id_, _, _) in enumerate(rows)]
    generations = {label: [{"output": row[column], "tokens": 7, "stopped": True, "seconds": 0.01} for row in rows]
                   for label, column in (("baseline", 4), ("trained", 5))}
    items = score_items(eval_items, generations)
    page = examples_html(items, ["baseline", "trained"]) + changed_html(items)
    assert not any(is_hidden(char) for char in page if char != "\n")


@given(model=TEXT, path=NONEMPTY, cause=NONEMPTY, detail=TEXT, traceback=TEXT, change=TEXT)
def test_the_summary_and_the_failure_analysis_round_trip_any_text(model, path, cause, detail, traceback, change):
    facts = copy.deepcopy(preflight_failed_facts())
    facts["data"] = copy.deepcopy(completed_facts()["data"])
    facts["model"] = model
    facts["data"]["files"]["train"]["path"] = path
    facts["failed"]["cause"] = cause
    facts["preflight"][2]["detail"] = detail
    facts["failure"]["traceback"] = traceback
    facts["repository"].update(unchanged=False, change=change)
    for render, name in ((render_summary, "m44_summary.md"), (render_failure_analysis, "failure_analysis.md")):
        text = render(facts)
        with tempfile.TemporaryDirectory() as tmp:
            write_text(Path(tmp) / name, text)
            problems: list[str] = []
            same_text(Path(tmp), name, render(facts), problems)
        assert problems == [], problems
        assert one_line_breaks_only_at_newlines(text)
        assert not any(is_hidden(char) for char in text if char != "\n")
    page = card_html(facts, None)
    assert not any(is_hidden(char) for char in page if char != "\n")


@given(model=TEXT, folder=NONEMPTY)
def test_the_completed_card_shows_every_character(model, folder):
    facts = {**completed_facts(), "model": model, "run_folder": folder}
    page = card_html(facts, None)
    assert not any(is_hidden(char) for char in page if char != "\n")


def model_card_with(model: str, folder: str, hardware: str, data: str) -> str:
    facts = {**lora_facts(), "model": model, "run_folder": folder, "hardware": hardware}
    facts["data"] = {**facts["data"], "files": {key: {**entry, "path": f"data/{data}.jsonl"}
                                                for key, entry in facts["data"]["files"].items()}}
    return render_model_card(facts, lora_params())


@given(model=TEXT, folder=NONEMPTY, hardware=TEXT, data=NONEMPTY)
def test_the_model_card_round_trips_any_text(model, folder, hardware, data):
    """A model card holds the model's name, the run folder, the hardware and the data files' names: whatever they
    hold, the card shows every character, adds no line, and the verifier reads back what was written."""
    card = model_card_with(model, folder, hardware, data)
    assert not any(is_hidden(char) for char in card if char != "\n")
    if base_model(model) is None:  # a known base model adds its lines (tests/test_lora.py)
        assert card.count("\n") == model_card_with("m", "f", "h", "d").count("\n")
    snippet = card.split("```python\n")[1].split("```")[0]
    folder_line = next(line for line in snippet.splitlines() if line.startswith("folder = "))
    assert ast.parse(folder_line).body[0].value.value == f"submission_runs/{folder}/checkpoints/final"  # the same name
    with tempfile.TemporaryDirectory() as tmp:
        write_text(Path(tmp) / "README.md", card)
        problems = []
        same_text(Path(tmp), "README.md", card, problems)
        assert problems == []


@given(TEXT)
def test_visible_text_is_the_text_with_each_hidden_character_escaped(text):
    shown = visible(text)
    assert not any(is_hidden(char) for char in shown if char != "\n")
    assert shown.count("\n") == text.count("\n")  # a line of the text is a line of what is shown
    assert all(escape_char(char) in shown for char in text if is_hidden(char))
    assert all(char in shown for char in text if not is_hidden(char))


@given(TEXT, TEXT)
def test_a_difference_is_shown_where_it_is(a, b):
    shown = first_difference(a, b)
    if a == b:
        return
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert (repr(a[at]) if at < len(a) else "(end of text)") in shown
    assert (repr(b[at]) if at < len(b) else "(end of text)") in shown
    assert f"line {a.count(chr(10), 0, at) + 1}," in shown


def test_a_carriage_return_in_a_generation_is_shown_escaped_and_verified():
    """The case that marked a completed run FAILED: the untrained model generated a carriage return."""
    html = folded_pre("<reasoning>4\r2</reasoning>")
    assert "4\\r2" in html and "\r" not in html
