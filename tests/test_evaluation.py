"""The evaluation scorecard and summary: numbers that agree with the per-item records."""

from __future__ import annotations

import pytest

from lib.evaluation import render_summary, scorecard
from lib.scoring import score_output, summarize

GOOD = "<reasoning>6 × 7 = 42</reasoning>\n<answer>42</answer>"
ITEMS_SPEC = [  # (section, expected, baseline output, trained output)
    ("core", "42", "42", GOOD),
    ("core", "42", "", "<reasoning>x</reasoning>\n<answer>41</answer>"),
    ("edge_case", "42", "the answer is 42", GOOD),
]


def build_items() -> list[dict]:
    items = []
    for n, (section, expected, base, trained) in enumerate(ITEMS_SPEC, start=1):
        item = {"id": f"eval-{n}", "prompt": "What is 6 × 7?", "expected_answer": expected,
                "section": section, "category": "arithmetic", "difficulty": "easy"}
        for label, output in (("baseline", base), ("trained", trained)):
            score = score_output(output, expected)
            item[label] = {"output": output, **score, "correct": score["correct_strict"]}
        items.append(item)
    return items


def test_scorecard_counts_and_rates_per_section():
    table = scorecard(build_items(), "section")
    assert table.loc["core", "n"] == 2 and table.loc["edge_case", "n"] == 1
    assert table.loc["core", "accuracy (trained)"] == 0.5
    assert table.loc["core", "format_rate (trained)"] == 1.0
    assert table.loc["edge_case", "accuracy (baseline)"] == 0.0  # right number, wrong format: not strict


def test_summary_states_the_headline_numbers_and_examples():
    items = build_items()
    metrics = {label: summarize([i[label] for i in items]) for label in ("baseline", "trained")}
    text = render_summary(metrics, items)
    assert "| trained | 66.67% | 66.67% | 100.00% |" in text
    assert "| baseline | 0.00% | 66.67% | 0.00% |" in text
    assert "format rate by +100.00%" in text
    assert "**eval-1** (core, right)" in text and "**eval-2** (core, wrong)" in text


@pytest.mark.parametrize("by", ["section", "difficulty", "category"])
def test_scorecard_covers_every_item_once(by):
    assert scorecard(build_items(), by)["n"].sum() == len(ITEMS_SPEC)
