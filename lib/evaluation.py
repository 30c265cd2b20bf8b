"""M44.2: generate on every eval item with the untrained and the trained model, score each, write the results.

The files' content is built and rendered by lib/results.py (pure); this module loads models and generates.
One process generates here, in the kernel; with `num_processes` > 1 the ranks of lib/evaluation_worker.py share
the items (whole batches each, the same outputs) and rank 0 scores and writes through `write_evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import RunConfig
from lib.contract import COMPARISON_PLOT, EVAL_RESULTS, EVAL_SUMMARY
from lib.evidence import read_json, write_json, write_text
from lib.generation import generate_greedy
from lib.launcher import run_worker
from lib.model_loading import DTYPES, free_device_memory, load_model, load_tokenizer
from lib.plots import plot_comparison
from lib.results import MODELS, build_results, headline, render_evaluation_summary
from lib.cpu_bfloat16 import bfloat16_matmuls
from lib.telemetry import sample_system_metrics

if TYPE_CHECKING:
    from lib.preflight import Prepared
    from lib.training import Trained


def generate_for(source: str, cfg: RunConfig, eval_items: list[dict], label: str) -> list[dict]:
    """Load the model at `source`, generate greedily for every item, and free it again."""
    tokenizer = load_tokenizer(source)
    model = load_model(source, cfg, tokenizer)
    try:
        with bfloat16_matmuls(cfg.device, DTYPES[cfg.dtype]):  # a no-op except bfloat16 on a CPU without its kernels
            return generate_greedy(
                model, tokenizer, [item["prompt"] for item in eval_items],
                cfg.eval_batch_size, cfg.max_new_tokens, label=label,
            )
    finally:
        del model
        free_device_memory()


class EvaluationFailed(RuntimeError):
    """The evaluation processes failed, or died; the first line of the message is the cause."""


@sample_system_metrics("evaluation")
def evaluate(cfg: RunConfig, run_dir: Path, prepared: Prepared, trained: Trained) -> dict:
    """Baseline (the model before training) and trained, same items, same decoding, same scorer."""
    sources = {"baseline": prepared.model_source, "trained": str(trained.model_dir)}
    if cfg.num_processes == 1:
        return evaluate_models(cfg, sources, prepared.eval_items, run_dir)
    ended = run_worker("lib.evaluation_worker", [str(run_dir), sources["baseline"], sources["trained"]],
                       cfg.num_processes, "evaluation process")
    if ended.returncode != 0:
        failed = f"failed ranks:\n{ended.details()}\n" if ended.failures else ""
        raise EvaluationFailed(f"{ended.cause()}\ntorchrun exit code {ended.returncode}; {failed}"
                               f"its last lines:\n{ended.tail}")
    return read_json(run_dir / EVAL_RESULTS)["metrics"]


def evaluate_models(cfg: RunConfig, sources: dict[str, str], eval_items: list[dict], out_dir: Path,
                    extra: dict | None = None) -> dict:
    """The evaluation, in one process: each model in `sources` (label -> model) generates on the items `eval_limit`
    keeps, the same decoding and scorer for all; the results are written into `out_dir`. Returns the metrics.

    The phase runs it on the run's models; lib.reevaluate on a saved model and its base."""
    items = scored_items(cfg, eval_items)
    generations = {label: generate_for(sources[label], cfg, items, label) for label in MODELS if label in sources}
    return write_evaluation(out_dir, cfg, items, generations, len(eval_items), extra)


def scored_items(cfg: RunConfig, eval_items: list[dict]) -> list[dict]:
    """The items evaluation scores: all of them, or the first `eval_limit` (a short run at full model size)."""
    return eval_items[:cfg.eval_limit] if cfg.eval_limit else eval_items


def write_evaluation(out_dir: Path, cfg: RunConfig, items: list[dict], generations: dict[str, list[dict]],
                     items_in_file: int, extra: dict | None = None) -> dict:
    """Score the generations on `items` (of `items_in_file`), write evaluation_results.json, its summary and the
    comparison chart; return the metrics."""
    # Recorded only when items were left out: what was scored, and the limit that left the rest out.
    limit = {"eval_limit": cfg.eval_limit, "items_in_file": items_in_file} if len(items) < items_in_file else {}
    results = build_results(items, generations, cfg.max_new_tokens, {**limit, **(extra or {})})
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
