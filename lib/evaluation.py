"""M44.2: generate on every eval item with the untrained and the trained model, and score each.

evaluation_results.json holds `metrics` (per model: accuracy, accuracy_lenient, format_rate, n,
mean_tokens, stopped_rate; plus `comparison`: trained vs baseline for strict and lenient accuracy
and the format rate, each with the paired difference, its 95% bootstrap CI, the exact McNemar
p-value and the discordant counts) and `items` (per eval item: id, prompt, expected_answer, section, category, difficulty, and per
model its output, extracted answer, correct (= strict), correct_strict, correct_lenient,
format_ok, tokens, stopped, seconds). lib.reevaluate writes the same file for a single model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.config import RunConfig
from lib.evidence import write_json, write_text
from lib.generation import generate_greedy
from lib.modeling import free_device_memory, load_model, load_tokenizer
from lib.preflight import Prepared
from lib.scoring import score_output, summarize
from lib.stats import paired_comparison
from lib.training import Trained

RESULTS_NAME = "evaluation_results.json"
SUMMARY_NAME = "evaluation_summary.md"
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


def generate_for(source: str, cfg: RunConfig, eval_items: list[dict], label: str) -> list[dict]:
    """Load the model at `source`, generate greedily for every item, and free it again."""
    tokenizer = load_tokenizer(source)
    model = load_model(source, cfg, tokenizer)
    try:
        return generate_greedy(
            model, tokenizer, [item["prompt"] for item in eval_items],
            cfg.eval_batch_size, cfg.max_new_tokens, label=label,
        )
    finally:
        del model
        free_device_memory()


def evaluate(cfg: RunConfig, run_dir: Path, prepared: Prepared, trained: Trained) -> dict:
    """Baseline (the model before training) and trained, same items, same decoding, same scorer."""
    sources = {"baseline": prepared.model_source, "trained": str(trained.model_dir)}
    generations = {label: generate_for(sources[label], cfg, prepared.eval_items, label) for label in MODELS}
    return write_evaluation(run_dir, cfg, prepared.eval_items, generations)


def write_evaluation(out_dir: Path, cfg: RunConfig, eval_items: list[dict],
                     generations: dict[str, list[dict]], extra: dict | None = None) -> dict:
    """Score the generations, write the results and summary files, print the headline; return the metrics.

    `generations` maps a model label (one of MODELS) to one generate_greedy record per item;
    the comparison is added only when both models are there. `extra` goes into the results file.
    """
    labels = [label for label in MODELS if label in generations]
    items = score_items(eval_items, generations)
    metrics = {label: model_metrics([item[label] for item in items]) for label in labels}
    if set(labels) == set(MODELS):
        metrics["comparison"] = compare(items, cfg.seed)
    write_json(out_dir / RESULTS_NAME, {
        "scoring": "lib/scoring.py: 'correct' is strict (taught format and matching <answer>)",
        "models": labels,
        "max_new_tokens": cfg.max_new_tokens,
        **(extra or {}),
        "metrics": metrics,
        "items": items,
    })
    write_text(out_dir / SUMMARY_NAME, render_summary(metrics, items))
    print(headline(metrics))
    return metrics


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


def model_metrics(scores: list[dict]) -> dict:
    """summarize() plus how long the outputs were and how often the model stopped by itself."""
    n = len(scores)
    return {
        **summarize(scores),
        "mean_tokens": sum(s["tokens"] for s in scores) / n if n else 0.0,
        "stopped_rate": sum(s["stopped"] for s in scores) / n if n else 0.0,
    }


def compare(items: list[dict], seed: int) -> dict:
    """Trained vs baseline on the same items: strict and lenient accuracy, format rate (see lib.stats)."""
    return {
        name: paired_comparison(
            [item["baseline"][key] for item in items], [item["trained"][key] for item in items], seed,
        )
        for name, (key, _) in COMPARED.items()
    }


def models_in(items: list[dict]) -> list[str]:
    return [label for label in MODELS if items and label in items[0]]


def headline(metrics: dict) -> str:
    """A few lines for the notebook output: each model, then the strict difference."""
    lines = [
        f"{label:>8}: accuracy {m['accuracy']:.0%} (lenient {m['accuracy_lenient']:.0%}), "
        f"format {m['format_rate']:.0%}, n={m['n']}"
        for label, m in metrics.items() if label in MODELS
    ]
    if "comparison" in metrics:
        lines.append(f"difference: {describe(metrics['comparison']['strict'])}")
    return "\n".join(lines)


def describe(c: dict) -> str:
    """'+12.00 points (95% CI +5.00 to +19.00), McNemar p = 0.0012' for one comparison."""
    return (f"{c['difference'] * 100:+.2f} points ({c['confidence']:.0%} CI {c['ci_low'] * 100:+.2f} to "
            f"{c['ci_high'] * 100:+.2f}), McNemar p = {c['mcnemar_p']:.3g}")


def verdict(c: dict, what: str) -> str:
    """One sentence: does the trained model beat the baseline with a CI that excludes zero?"""
    if c["ci_low"] > 0:
        return (f"The trained model beats the baseline on {what}: the {c['confidence']:.0%} CI of the "
                f"difference excludes zero.")
    if c["ci_high"] < 0:
        return (f"The trained model is worse than the baseline on {what}: the {c['confidence']:.0%} CI "
                f"of the difference lies below zero.")
    return (f"The trained model does not beat the baseline on {what} with confidence: the "
            f"{c['confidence']:.0%} CI of the difference includes zero.")


def scorecard(items: list[dict], by: str, labels: list[str] | None = None) -> pd.DataFrame:
    """Item count, strict and lenient accuracy and format rate per model, for each value of `by`."""
    labels = labels or models_in(items)
    frame = pd.DataFrame([
        {by: item[by], "model": label, "accuracy": item[label]["correct"],
         "accuracy_lenient": item[label]["correct_lenient"], "format_rate": item[label]["format_ok"]}
        for item in items for label in labels
    ])
    table = frame.pivot_table(index=by, columns="model", values=["accuracy", "accuracy_lenient", "format_rate"],
                              aggfunc="mean")
    table.columns = [f"{metric} ({model})" for metric, model in table.columns]
    table.insert(0, "n", pd.Series([item[by] for item in items]).value_counts())
    return table.round(2)


def render_summary(metrics: dict, items: list[dict]) -> str:
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
        *(f"| {label} | {metrics[label]['accuracy']:.2%} | {metrics[label]['accuracy_lenient']:.2%} | "
          f"{metrics[label]['format_rate']:.2%} | {metrics[label]['mean_tokens']:.1f} | "
          f"{metrics[label]['stopped_rate']:.2%} |" for label in labels),
        "",
    ]
    if "comparison" in metrics:
        lines += render_comparison(metrics)
    for by in SCORECARD_BY:
        lines += [f"## By {by}", "", scorecard(items, by, labels).to_markdown(), ""]
    lines += render_examples(items, labels[-1])
    return "\n".join(lines)


def render_comparison(metrics: dict) -> list[str]:
    base, trained, comparison = metrics["baseline"], metrics["trained"], metrics["comparison"]
    rows = []
    for name, c in comparison.items():
        key = COMPARED[name][1]
        rows.append(
            f"| {ROW_NAMES[name]} | {base[key]:.2%} | {trained[key]:.2%} | {c['difference'] * 100:+.2f} | "
            f"{c['ci_low'] * 100:+.2f} to {c['ci_high'] * 100:+.2f} | {c['mcnemar_p']:.3g} | "
            f"{c['trained_only']} / {c['baseline_only']} |"
        )
    strict = comparison["strict"]
    return [
        "## What training changed",
        "",
        "Paired over the same items: the difference is trained minus baseline, in percentage points; "
        f"the CI is a paired bootstrap ({strict['bootstrap_resamples']:,} resamples of items, seed "
        f"{strict['bootstrap_seed']}); the p-value is an exact two-sided McNemar test on the items only "
        "one model got right.",
        "",
        "| metric | baseline | trained | difference (points) | 95% CI | McNemar p | right only: trained / baseline |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Strict accuracy changed by {describe(strict)}; the format rate by "
        f"{(trained['format_rate'] - base['format_rate']) * 100:+.2f} points.",
        "",
        f"**{verdict(strict, 'strict accuracy')}**",
        "",
    ]


def render_examples(items: list[dict], label: str) -> list[str]:
    """Per section, the first item the model got right and the first it got wrong."""
    lines = [f"## Examples ({label} model)", ""]
    for section in dict.fromkeys(item["section"] for item in items):
        in_section = [item for item in items if item["section"] == section]
        for verdict_word, correct in (("right", True), ("wrong", False)):
            item = next((i for i in in_section if i[label]["correct"] == correct), None)
            if item is None:
                continue
            scored = item[label]
            fence = _fence(item["prompt"] + scored["output"])
            lines += [
                f"**{item['id']}** ({section}, {verdict_word}); expected `{item['expected_answer']}`, "
                f"extracted `{scored['extracted']}` ({scored['extracted_from']}), "
                f"format {'ok' if scored['format_ok'] else 'wrong'}, {scored['tokens']} tokens",
                "",
                f"{fence}text",
                item["prompt"],
                "--- output ---",
                scored["output"],
                fence,
                "",
            ]
    return lines


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in the text, so an output cannot close it early."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)
