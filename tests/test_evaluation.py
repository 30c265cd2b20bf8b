"""The evaluation files: per-item records, the comparison and a summary that agree with each other."""

from __future__ import annotations

import json

import pytest

from lib.contract import EVAL_RESULTS as RESULTS_NAME, EVAL_SUMMARY as SUMMARY_NAME
from lib.evaluation import scored_items, write_evaluation
from lib.results import compare, model_metrics, render_evaluation_summary, scorecard_rows, score_items
from lib.stats import word_verdict
from tests.conftest import replace

GOOD = "<reasoning>6 × 7 = 42</reasoning>\n<answer>42</answer>"
ITEMS_SPEC = [  # (section, expected, baseline output, trained output)
    ("core", "42", "42", GOOD),
    ("core", "42", "", "<reasoning>x</reasoning>\n<answer>41</answer>"),
    ("edge_case", "42", "the answer is 42", GOOD),
]


def eval_items(spec=ITEMS_SPEC) -> list[dict]:
    return [
        {"id": f"eval-{n}", "prompt": "What is 6 × 7?", "expected_answer": expected,
         "section": section, "category": "arithmetic", "difficulty": "easy"}
        for n, (section, expected, _, _) in enumerate(spec, start=1)
    ]


def generations(spec=ITEMS_SPEC) -> dict[str, list[dict]]:
    """generate_greedy-shaped records for both models."""
    return {
        label: [{"output": row[column], "tokens": 7, "stopped": True, "seconds": 0.01} for row in spec]
        for label, column in (("baseline", 2), ("trained", 3))
    }


def build_items(spec=ITEMS_SPEC) -> list[dict]:
    return score_items(eval_items(spec), generations(spec))


def build_metrics(items: list[dict]) -> dict:
    metrics = {label: model_metrics([i[label] for i in items]) for label in ("baseline", "trained")}
    metrics["comparison"] = compare(items)
    return metrics


def test_items_keep_the_contract_fields_and_every_score():
    item = build_items()[2]
    assert {"id", "prompt", "expected_answer", "section", "category", "difficulty"} <= set(item)
    assert item["baseline"] == {
        "output": "the answer is 42", "tokens": 7, "stopped": True, "seconds": 0.01,
        "extracted": "42", "extracted_from": "answer_line", "format_ok": False,
        "correct_strict": False, "correct_lenient": True, "correct": False,
    }
    assert item["trained"]["correct"] is item["trained"]["correct_strict"] is True


def test_scorecard_counts_and_rates_per_section():
    table = {row["section"]: row for row in scorecard_rows(build_items(), "section")}
    assert table["core"]["n"] == 2 and table["edge_case"]["n"] == 1
    assert table["core"]["strict (trained)"] == 0.5
    assert table["core"]["format (trained)"] == 1.0
    assert table["edge_case"]["strict (baseline)"] == 0.0  # right number, wrong format: not strict
    assert table["edge_case"]["lenient (baseline)"] == 1.0


@pytest.mark.parametrize("by", ["section", "difficulty", "category"])
def test_scorecard_covers_every_item_once(by):
    assert sum(row["n"] for row in scorecard_rows(build_items(), by)) == len(ITEMS_SPEC)


def test_comparison_counts_the_discordant_pairs():
    comparison = compare(build_items())
    strict, lenient = comparison["strict"], comparison["lenient"]
    assert (strict["trained_only"], strict["baseline_only"]) == (2, 0)
    assert strict["difference"] == pytest.approx(2 / 3)
    assert strict["mcnemar_p"] == pytest.approx(0.5)  # 2 of 2 discordant pairs: 2 * 0.5**2
    # Lenient: baseline right on items 1 and 3, trained on 1 and 3: nothing changed.
    assert (lenient["trained_only"], lenient["baseline_only"], lenient["difference"]) == (0, 0, 0.0)
    assert lenient["ci_low"] < 0 < lenient["ci_high"] and lenient["mcnemar_p"] == 1.0  # 3 items: wide
    assert comparison["format"]["trained_only"] == 3 and comparison["format"]["difference"] == 1.0


def test_summary_states_the_headline_numbers_comparison_and_examples():
    items = build_items()
    text = render_evaluation_summary(build_metrics(items), items)
    assert "| trained | 66.7% | 66.7% | 100.0% | 7.0 | 100.0% |" in text
    assert "| baseline | 0.0% | 66.7% | 0.0% | 7.0 | 100.0% |" in text
    assert "| strict accuracy | 0.0% | 66.7% | +66.7 |" in text
    assert "| 0.5 | 2 / 0 |" in text
    assert "| format rate | 0.0% | 100.0% | +100.0 | +20.6 to +100.0 | 0.25 | 3 / 0 |" in text
    assert "the format rate by +100.0 points (95% CI +20.6 to +100.0)" in text
    # The sentence in words is the one lib.stats gives for the strict comparison (CI and test together).
    assert word_verdict(build_metrics(items)["comparison"]["strict"], "strict accuracy") in text
    assert "Newcombe's hybrid score interval" in text
    for by in ("section", "category", "difficulty"):
        assert f"## By {by}" in text
    # Scorecards in the summary's own format: percentages with one decimal, never fractions.
    assert "| core      | 2   | 0.0%                | 50.0%              |" in text
    # Every item training changed, in a table whose counts are McNemar's discordant pairs (2 / 0 above).
    assert "2 right only after training, 0 right only before: the discordant pairs" in text
    assert "| right only after training | eval-1 | core | 42 | 42 | 42 |" in text
    assert "| right only after training | eval-3 | edge_case | 42 | 42 | 42 |" in text
    # Examples: the changed items first, then per section what is not shown yet.
    heads = [line for line in text.splitlines() if line.startswith("`eval-")]
    assert heads == ["`eval-1` (right only after training); expected `42`",
                     "`eval-3` (right only after training); expected `42`",
                     "`eval-2` (core, trained wrong); expected `42`"]


def test_summary_examples_show_both_models_output_for_each_item():
    items = build_items()
    text = render_evaluation_summary(build_metrics(items), items)
    example = text[text.index("`eval-3` ("):]
    assert example.index("- baseline: wrong; extracted `42` (answer_line), format wrong") < \
        example.index("- trained: right; extracted `42` (answer_tag), format ok")
    block = example[example.index("```text"):]
    assert block.index("--- baseline output ---\nthe answer is 42") < block.index(f"--- trained output ---\n{GOOD}")
    assert "- baseline: wrong; extracted nothing, format wrong, 7 tokens" in text  # eval-2's empty output


def test_write_evaluation_writes_both_files(embedded_cfg, tmp_path, capsys):
    metrics = write_evaluation(tmp_path, embedded_cfg, eval_items(), generations(), len(eval_items()))
    results = json.loads((tmp_path / RESULTS_NAME).read_text(encoding="utf-8"))
    assert results["metrics"] == metrics
    for label in ("baseline", "trained"):
        m = results["metrics"][label]
        assert m["n"] == len(results["items"]) == 3
        assert m["accuracy"] == sum(i[label]["correct"] for i in results["items"]) / 3
        assert 0 <= m["format_rate"] <= 1
    assert results["metrics"]["comparison"]["strict"]["ci_method"] == "newcombe-hybrid-score"
    summary = (tmp_path / SUMMARY_NAME).read_text(encoding="utf-8")
    assert "## What training changed" in summary
    out = capsys.readouterr().out
    assert "trained: accuracy 66.7%" in out and "difference: +66.7 points" in out
    assert (tmp_path / "comparison.png").read_bytes().startswith(b"\x89PNG")  # drawn with the results


def test_eval_limit_scores_the_first_items_and_is_recorded(embedded_cfg, tmp_path):
    assert scored_items(embedded_cfg, eval_items()) == eval_items()  # 0: every item
    limited = replace(embedded_cfg, eval_limit=2)
    items = scored_items(limited, eval_items())
    assert [i["id"] for i in items] == [i["id"] for i in eval_items()[:2]]
    write_evaluation(tmp_path, limited, items, {k: v[:2] for k, v in generations().items()}, 3)
    results = json.loads((tmp_path / RESULTS_NAME).read_text(encoding="utf-8"))
    assert (results["eval_limit"], results["items_in_file"], results["metrics"]["trained"]["n"]) == (2, 3, 2)
    write_evaluation(tmp_path, embedded_cfg, eval_items(), generations(), 3)
    assert "eval_limit" not in json.loads((tmp_path / RESULTS_NAME).read_text(encoding="utf-8"))


def test_a_single_model_has_no_comparison(embedded_cfg, tmp_path):
    metrics = write_evaluation(tmp_path, embedded_cfg, eval_items(), {"trained": generations()["trained"]}, 3)
    assert set(metrics) == {"trained"}
    results = json.loads((tmp_path / RESULTS_NAME).read_text(encoding="utf-8"))
    assert results["models"] == ["trained"] and "baseline" not in results["items"][0]
    summary = (tmp_path / SUMMARY_NAME).read_text(encoding="utf-8")
    assert "What training changed" not in summary and "| trained | 66.7%" in summary
    assert "strict (trained)" in summary and "(baseline)" not in summary
    assert not (tmp_path / "comparison.png").exists()  # nothing to compare


def test_an_output_with_backticks_cannot_break_the_example_fence():
    spec = [("core", "42", "", "```\n<answer>42</answer>")]
    items = build_items(spec)
    text = render_evaluation_summary(build_metrics(items), items)
    assert "````text" in text
