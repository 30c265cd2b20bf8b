"""M44.2: generate on every eval item with the untrained and the trained model, score each, write the results.

The files' content is built and rendered by lib/results.py (pure); this module loads models and generates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import RunConfig
from lib.contract import COMPARISON_PLOT, EVAL_RESULTS, EVAL_SUMMARY
from lib.evidence import write_json, write_text
from lib.generation import generate_greedy
from lib.modeling import free_device_memory, load_model, load_tokenizer
from lib.plots import plot_comparison
from lib.results import MODELS, build_results, headline, render_evaluation_summary

if TYPE_CHECKING:
    from lib.preflight import Prepared
    from lib.training import Trained


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
    """Score the generations, write evaluation_results.json, its summary and the comparison chart; return the metrics."""
    results = build_results(eval_items, generations, cfg.seed, cfg.max_new_tokens, extra)
    write_json(out_dir / EVAL_RESULTS, results)
    write_text(out_dir / EVAL_SUMMARY, render_evaluation_summary(results["metrics"], results["items"]))
    if "comparison" in results["metrics"]:
        _write_comparison_plot(results["metrics"], out_dir / COMPARISON_PLOT)
    print(headline(results["metrics"]))
    return results["metrics"]


def _write_comparison_plot(metrics: dict, path: Path) -> None:
    """The chart on the report's first screen. Not a required file, and the summary lists the plots drawn:
    a plotting error is printed and never turns a finished evaluation into a failed one (as in training)."""
    try:
        plot_comparison(metrics, path)
    except Exception as exc:
        print(f"comparison chart not drawn: {type(exc).__name__}: {exc}", flush=True)
