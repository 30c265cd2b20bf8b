"""M44.2: generate on every eval item with the untrained and the trained model, and score each."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.config import RunConfig
from lib.evidence import write_json, write_text
from lib.generation import generate_greedy
from lib.modeling import free_device_memory, load_model, load_tokenizer
from lib.preflight import Prepared
from lib.scoring import score_output, summarize
from lib.training import Trained

RESULTS_NAME = "evaluation_results.json"
SUMMARY_NAME = "evaluation_summary.md"
MODELS = ("baseline", "trained")


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

    items = []
    for n, item in enumerate(prepared.eval_items):
        record = {key: item[key] for key in ("id", "prompt", "expected_answer", "section", "category", "difficulty")}
        for label in MODELS:
            gen = generations[label][n]
            score = score_output(gen["output"], item["expected_answer"])
            record[label] = {**gen, **score, "correct": score["correct_strict"]}
        items.append(record)

    metrics = {label: summarize([item[label] for item in items]) for label in MODELS}
    write_json(run_dir / RESULTS_NAME, {
        "scoring": "lib/scoring.py: 'correct' is strict (taught format and matching <answer>)",
        "max_new_tokens": cfg.max_new_tokens,
        "metrics": metrics,
        "items": items,
    })
    write_text(run_dir / SUMMARY_NAME, render_summary(metrics, items))
    for label in MODELS:
        m = metrics[label]
        print(f"{label:>8}: accuracy {m['accuracy']:.0%} (lenient {m['accuracy_lenient']:.0%}), "
              f"format {m['format_rate']:.0%}, n={m['n']}")
    return metrics


def scorecard(items: list[dict], by: str) -> pd.DataFrame:
    """Item count, strict accuracy and format rate per model, for each value of `by` (section, ...)."""
    frame = pd.DataFrame([
        {by: item[by], "model": label, "accuracy": item[label]["correct"], "format_rate": item[label]["format_ok"]}
        for item in items for label in MODELS
    ])
    table = frame.pivot_table(index=by, columns="model", values=["accuracy", "format_rate"], aggfunc="mean")
    table.columns = [f"{metric} ({model})" for metric, model in table.columns]
    table.insert(0, "n", pd.Series([item[by] for item in items]).value_counts())
    return table.round(2)


def render_summary(metrics: dict, items: list[dict]) -> str:
    base, trained = metrics["baseline"], metrics["trained"]
    lines = [
        "# M44.2 evaluation summary",
        "",
        f"{trained['n']} eval items, greedy decoding, scored by the rules in `lib/scoring.py`.",
        "",
        "| model | accuracy (strict) | accuracy (lenient) | format rate |",
        "|---|---|---|---|",
        *(f"| {label} | {metrics[label]['accuracy']:.2%} | {metrics[label]['accuracy_lenient']:.2%} | "
          f"{metrics[label]['format_rate']:.2%} |" for label in MODELS),
        "",
        f"Training changed strict accuracy by {trained['accuracy'] - base['accuracy']:+.2%} and the "
        f"format rate by {trained['format_rate'] - base['format_rate']:+.2%}.",
        "",
        "## By section",
        "",
        scorecard(items, "section").to_markdown(),
        "",
        "## Examples (trained model)",
        "",
    ]
    right = [i for i in items if i["trained"]["correct"]][:3]
    wrong = [i for i in items if not i["trained"]["correct"]][:3]
    for verdict, chosen in (("right", right), ("wrong", wrong)):
        for item in chosen:
            lines += [
                f"**{item['id']}** ({item['section']}, {verdict}); expected `{item['expected_answer']}`",
                "",
                "```text",
                item["prompt"],
                "--- output ---",
                item["trained"]["output"],
                "```",
                "",
            ]
    return "\n".join(lines)
