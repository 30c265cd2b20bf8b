"""Evaluation results as data, and the text rendered from them: pure functions, no model, no torch.

evaluation_results.json holds `metrics` (per model: accuracy, accuracy_lenient, format_rate, n,
mean_tokens, stopped_rate; plus `comparison`: trained vs baseline for strict and lenient accuracy and
the format rate, each with the paired difference, its 95% CI, the exact McNemar p-value and the
discordant counts) and `items` (per eval item: id, prompt, expected_answer, section, category,
difficulty, and per model its output, extracted answer, correct (= strict), correct_strict,
correct_lenient, format_ok, tokens, stopped, seconds).

The evaluation phase builds the file with `build_results` and writes `render_evaluation_summary`
of it; the verifier recomputes both from the items and compares: one function per number.
"""

from __future__ import annotations

from tabulate import tabulate

from lib.printable import code_span, fence, table_cell, visible
from lib.scoring import score_output
from lib.stats import paired_comparison, word_verdict

MODELS = ("baseline", "trained")
ITEM_KEYS = ("id", "prompt", "expected_answer", "section", "category", "difficulty")
# Paired comparisons: name -> (per-item score key, metric key). Strict accuracy is the headline;
# lenient shows what the model knows regardless of format; the format rate is what a small
# fine-tune changes first.
COMPARED = {
    "strict": ("correct_strict", "accuracy"),
    "lenient": ("correct_lenient", "accuracy_lenient"),
    "format": ("format_ok", "format_rate"),
}
ROW_NAMES = {"strict": "strict accuracy", "lenient": "lenient accuracy", "format": "format rate"}
SCORECARD_BY = ("section", "category", "difficulty")
# Scorecard columns: (column name, per-item score key), each shown for every model side by side.
SCORECARD_METRICS = (("strict", "correct_strict"), ("lenient", "correct_lenient"), ("format", "format_ok"))


def build_results(eval_items: list[dict], generations: dict[str, list[dict]], max_new_tokens: int,
                  extra: dict | None = None) -> dict:
    """The whole evaluation_results.json: settings, metrics (and the comparison when both models ran), items.

    `generations` maps a model label (one of MODELS) to one generate_greedy record per item.
    """
    labels = [label for label in MODELS if label in generations]
    items = score_items(eval_items, generations)
    return {
        "scoring": "lib/scoring.py: 'correct' is strict (taught format and matching <answer>)",
        "models": labels,
        "max_new_tokens": max_new_tokens,
        **(extra or {}),
        "metrics": compute_metrics(items, labels),
        "items": items,
    }


def score_items(eval_items: list[dict], generations: dict[str, list[dict]]) -> list[dict]:
    """One record per eval item: its fields, and per model the generation merged with its score."""
    items = []
    for n, item in enumerate(eval_items):
        record = {key: item[key] for key in ITEM_KEYS}
        for label, outputs in generations.items():
            gen = outputs[n]
            score = score_output(gen["output"], item["expected_answer"])
            record[label] = {**gen, **score, "correct": score["correct_strict"]}
        items.append(record)
    return items


def compute_metrics(items: list[dict], labels: list[str]) -> dict:
    """Per model metrics from the scored items, and the paired comparison when both models are there."""
    metrics = {label: model_metrics([item[label] for item in items]) for label in labels}
    if set(labels) == set(MODELS):
        metrics["comparison"] = compare(items)
    return metrics


def rate(values) -> float:
    """The share of true values; 0.0 for none. Every rate of the evidence is computed here."""
    values = [bool(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def model_metrics(scores: list[dict]) -> dict:
    """Accuracy (strict and lenient), format rate, output length and how often the model stopped by itself."""
    n = len(scores)
    return {
        "n": n,
        "accuracy": rate(s["correct_strict"] for s in scores),
        "accuracy_lenient": rate(s["correct_lenient"] for s in scores),
        "format_rate": rate(s["format_ok"] for s in scores),
        "mean_tokens": sum(s["tokens"] for s in scores) / n if n else 0.0,
        "stopped_rate": rate(s["stopped"] for s in scores),
    }


def compare(items: list[dict]) -> dict:
    """Trained vs baseline on the same items: strict and lenient accuracy, format rate (see lib.stats)."""
    return {
        name: paired_comparison([item["baseline"][key] for item in items], [item["trained"][key] for item in items])
        for name, (key, _) in COMPARED.items()
    }


def models_in(items: list[dict]) -> list[str]:
    return [label for label in MODELS if items and label in items[0]]


def percent(rate: float) -> str:
    """A rate in [0, 1] as the evidence shows every rate: a percentage with one decimal ('7.5%')."""
    return f"{rate * 100:.1f}%"


def points(difference: float) -> str:
    """A difference of two rates in signed percentage points with one decimal ('+7.5')."""
    return f"{difference * 100:+.1f}"


def ci_text(c: dict) -> str:
    """'-0.9 to +2.9': a comparison's confidence interval in points."""
    return f"{points(c['ci_low'])} to {points(c['ci_high'])}"


def headline(metrics: dict) -> str:
    """A few lines for the notebook output: each model, then the strict difference."""
    lines = [
        f"{label:>8}: accuracy {percent(m['accuracy'])} (lenient {percent(m['accuracy_lenient'])}), "
        f"format {percent(m['format_rate'])}, n={m['n']}"
        for label, m in metrics.items() if label in MODELS
    ]
    if "comparison" in metrics:
        lines.append(f"difference: {describe(metrics['comparison']['strict'])}")
    return "\n".join(lines)


def describe(c: dict) -> str:
    """'+12.0 points (95% CI +5.0 to +19.0), McNemar p = 0.0012' for one comparison."""
    return (f"{points(c['difference'])} points ({c['confidence']:.0%} CI {ci_text(c)}), "
            f"McNemar p = {c['mcnemar_p']:.3g}")


def comparison_rows(metrics: dict) -> list[dict]:
    """Per compared metric: its name, both rates, the difference and its CI, McNemar, the discordant counts."""
    base, trained = metrics["baseline"], metrics["trained"]
    return [
        {"metric": ROW_NAMES[name], "baseline": base[COMPARED[name][1]], "trained": trained[COMPARED[name][1]],
         **c}
        for name, c in metrics["comparison"].items()
    ]


def scorecard_rows(items: list[dict], by: str, labels: list[str] | None = None) -> list[dict]:
    """Per value of `by` (sorted): item count, then per metric (strict, lenient, format) each model's rate."""
    labels = labels or models_in(items)
    rows = []
    for value in sorted({item[by] for item in items}):
        group = [item for item in items if item[by] == value]
        row = {by: value, "n": len(group)}
        for metric, key in SCORECARD_METRICS:
            for label in labels:
                row[f"{metric} ({label})"] = rate(item[label][key] for item in group)
        rows.append(row)
    return rows


def formatted(row: dict) -> dict:
    """A table row with every rate as a percentage (counts and names unchanged)."""
    return {k: percent(v) if isinstance(v, float) else v for k, v in row.items()}


def render_scorecard(items: list[dict], by: str, labels: list[str]) -> str:
    rows = [{**formatted(row), by: table_cell(row[by])} for row in scorecard_rows(items, by, labels)]
    return tabulate(rows, headers="keys", tablefmt="pipe", disable_numparse=True)


def render_evaluation_summary(metrics: dict, items: list[dict]) -> str:
    """evaluation_summary.md, from the results file's metrics and items alone."""
    labels = [label for label in MODELS if label in metrics]
    n = metrics[labels[-1]]["n"]
    lines = [
        "# M44.2 evaluation summary",
        "",
        f"{n} eval items, greedy decoding, scored by the rules in `lib/scoring.py` "
        "(strict: the taught format and a matching `<answer>`; lenient: the answer found anywhere).",
        "",
        "| model | accuracy (strict) | accuracy (lenient) | format rate | mean tokens | stopped by itself |",
        "|---|---|---|---|---|---|",
        *(f"| {label} | {percent(metrics[label]['accuracy'])} | {percent(metrics[label]['accuracy_lenient'])} | "
          f"{percent(metrics[label]['format_rate'])} | {metrics[label]['mean_tokens']:.1f} | "
          f"{percent(metrics[label]['stopped_rate'])} |" for label in labels),
        "",
    ]
    if "comparison" in metrics:
        lines += _render_comparison(metrics)
    for by in SCORECARD_BY:
        lines += [f"## By {by}", "", render_scorecard(items, by, labels), ""]
    if "comparison" in metrics:
        lines += _render_changed(items)
    lines += _render_examples(items, labels)
    return "\n".join(lines)


def _render_comparison(metrics: dict) -> list[str]:
    rows = [
        f"| {r['metric']} | {percent(r['baseline'])} | {percent(r['trained'])} | {points(r['difference'])} | "
        f"{ci_text(r)} | {r['mcnemar_p']:.3g} | {r['trained_only']} / {r['baseline_only']} |"
        for r in comparison_rows(metrics)
    ]
    strict, fmt = metrics["comparison"]["strict"], metrics["comparison"]["format"]
    return [
        "## What training changed",
        "",
        "Paired over the same items: the difference is trained minus baseline, in percentage points; "
        f"the {strict['confidence']:.0%} CI is Newcombe's hybrid score interval for paired proportions "
        f"({strict['ci_method']}); the p-value is an exact two-sided McNemar test on the items only one model "
        "got right. The verdict needs both: a CI that excludes zero and p < 0.05.",
        "",
        f"| metric | baseline | trained | difference (points) | {strict['confidence']:.0%} CI | McNemar p | "
        "right only: trained / baseline |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Strict accuracy changed by {describe(strict)}; the format rate by {describe(fmt)}.",
        "",
        f"**{word_verdict(strict, 'strict accuracy')}**",
        "",
    ]


def changed_items(items: list[dict]) -> dict[str, list[dict]]:
    """The items whose strict correctness training changed: right only after training, right only before.

    Their counts are the discordant pairs of the strict comparison's McNemar test (`trained_only`, `baseline_only`).
    """
    return {
        "right only after training": [i for i in items if i["trained"]["correct"] and not i["baseline"]["correct"]],
        "right only before training": [i for i in items if i["baseline"]["correct"] and not i["trained"]["correct"]],
    }


def example_items(items: list[dict], label: str, limit: int = 8) -> list[tuple[str, dict]]:
    """A few items to show whole, each with why it was chosen.

    With both models: up to two items training made right and one it made wrong (the evidence McNemar counts),
    then per section (in order of appearance) the first item `label` got right and the first it got wrong, until
    `limit`. With one model, the per-section choice alone.
    """
    chosen: list[tuple[str, dict]] = []
    if set(MODELS) <= set(models_in(items)):
        changed = changed_items(items)
        chosen += [("right only after training", i) for i in changed["right only after training"][:2]]
        chosen += [("right only before training", i) for i in changed["right only before training"][:1]]
    for section in dict.fromkeys(item["section"] for item in items):
        in_section = [item for item in items if item["section"] == section]
        for verdict_word, correct in (("right", True), ("wrong", False)):
            item = next((i for i in in_section if bool(i[label]["correct"]) is correct), None)
            if item is not None and all(item is not other for _, other in chosen):
                chosen.append((f"{section}, {label} {verdict_word}", item))
    return chosen[:limit]


def right_or_wrong(scored: dict) -> str:
    return "right" if scored["correct"] else "wrong"


def scored_line(scored: dict) -> str:
    """What the scorer made of one output: the verdict, the extracted answer, the format, the length."""
    extracted = ("nothing" if scored["extracted"] is None
                 else f"{code_span(scored['extracted'])} ({scored['extracted_from']})")
    return (f"{right_or_wrong(scored)}; extracted {extracted}, "
            f"format {'ok' if scored['format_ok'] else 'wrong'}, {scored['tokens']} tokens")


def _render_changed(items: list[dict]) -> list[str]:
    """Every item whose strict correctness changed, in a table: what McNemar's discordant counts are made of."""
    changed = changed_items(items)
    after, before = (len(group) for group in changed.values())
    lines = ["## Items whose strict correctness changed", "",
             f"{after} right only after training, {before} right only before: the discordant pairs the McNemar "
             "test above counts. Answers as the scorer extracted them; outputs whole in evaluation_results.json.", ""]
    if not after + before:
        return lines + ["None: both models got the same items right.", ""]
    lines += ["| change | id | section | expected | baseline extracted | trained extracted |", "|---|---|---|---|---|---|"]
    for change, group in changed.items():
        lines += [f"| {change} | {table_cell(i['id'])} | {table_cell(i['section'])} | "
                  f"{table_cell(i['expected_answer'])} | {_extracted_cell(i['baseline'])} | "
                  f"{_extracted_cell(i['trained'])} |" for i in group]
    return lines + [""]


def _extracted_cell(scored: dict) -> str:
    return "(nothing)" if scored["extracted"] is None else table_cell(scored["extracted"])


def _render_examples(items: list[dict], labels: list[str]) -> list[str]:
    """The examples the report shows, each model's output whole, non-printing characters escaped."""
    lines = [f"## Examples ({' and '.join(labels)} output per item, non-printing characters escaped)", ""]
    for why, item in example_items(items, labels[-1]):
        shown = [visible(item["prompt"]), *(visible(item[label]["output"]) for label in labels)]
        ticks = fence("\n".join(shown))
        lines += [f"{code_span(item['id'])} ({why}); expected {code_span(item['expected_answer'])}", ""]
        lines += [f"- {label}: {scored_line(item[label])}" for label in labels]
        lines += ["", f"{ticks}text", shown[0]]
        for label, output in zip(labels, shown[1:]):
            lines += [f"--- {label} output ---", output]
        lines += [ticks, ""]
    return lines
