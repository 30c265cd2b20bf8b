"""M44.2: generate on every eval item with the untrained and the trained model, score each, write the results.

The files' content is built and rendered by lib/results.py (pure); this module loads models and generates. As
training does, evaluation runs in a worker process the kernel outlives (lib/evaluation_worker.py; one per device
with `num_processes` > 1, sharing the items), so an out-of-memory kill or a crash while generating is documented
like any failure and the kernel never holds a model; rank 0 scores and writes through `write_evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import RunConfig
from lib.contract import COMPARISON_PLOT, EVAL_RESULTS, EVAL_SUMMARY
from lib.evidence import read_json, write_json, write_text
from lib.generation import generate_greedy
from lib.launcher import run_worker, worker_environment
from lib.model_loading import DTYPES, free_device_memory, load_model, load_tokenizer
from lib.results import build_results, headline, render_evaluation_summary
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


WHAT = "evaluation process"


class EvaluationFailed(RuntimeError):
    """The evaluation processes failed, or died; the first line of the message is the cause."""


@sample_system_metrics("evaluation")
def evaluate(cfg: RunConfig, run_dir: Path, prepared: Prepared, trained: Trained) -> dict:
    """Baseline (the model before training) and trained, same items, same decoding, same scorer."""
    return evaluate_in_worker(cfg, run_dir, {"baseline": prepared.model_source, "trained": str(trained.model_dir)})


def evaluate_in_worker(cfg: RunConfig, out_dir: Path, sources: dict[str, str]) -> dict:
    """The one evaluation: each model in `sources` (label -> model) generates on the items `eval_limit` keeps, in
    the evaluation worker, which writes the results into `out_dir` (its config.json holds `cfg`). The phase runs it
    on the run's two models, lib.reevaluate on a saved model and its base. Returns the metrics."""
    args = [str(out_dir), sources["trained"], *(["--baseline", sources["baseline"]] if "baseline" in sources else [])]
    ended = run_worker("lib.evaluation_worker", args, cfg.num_processes, WHAT, worker_environment(cfg))
    if ended.returncode != 0 or not (out_dir / EVAL_RESULTS).exists():
        runner = "torchrun" if cfg.num_processes > 1 else WHAT
        ranks = f"failed ranks:\n{ended.details()}\n" if ended.failures and cfg.num_processes > 1 else ""
        raise EvaluationFailed(f"{ended.cause()}\n{runner} exit code {ended.returncode}; {ranks}"
                               f"its last lines:\n{ended.tail}")
    return read_json(out_dir / EVAL_RESULTS)["metrics"]


def scored_items(cfg: RunConfig, eval_items: list[dict]) -> list[dict]:
    """The items evaluation scores: all of them, or the first `eval_limit` (a short run at full model size)."""
    return eval_items[:cfg.eval_limit] if cfg.eval_limit else eval_items


def write_evaluation(out_dir: Path, cfg: RunConfig, items: list[dict], generations: dict[str, list[dict]],
                     items_in_file: int) -> dict:
    """Score the generations on `items` (of `items_in_file`), write evaluation_results.json, its summary and the
    comparison chart; return the metrics."""
    # Recorded only when items were left out: what was scored, and the limit that left the rest out.
    limit = {"eval_limit": cfg.eval_limit, "items_in_file": items_in_file} if len(items) < items_in_file else {}
    results = build_results(items, generations, cfg.max_new_tokens, limit)
    write_json(out_dir / EVAL_RESULTS, results)
    write_text(out_dir / EVAL_SUMMARY, render_evaluation_summary(results["metrics"], results["items"]))
    if "comparison" in results["metrics"]:
        _write_comparison_plot(results["metrics"], out_dir / COMPARISON_PLOT)
    print(headline(results["metrics"]))
    return results["metrics"]


def _write_comparison_plot(metrics: dict, path: Path) -> None:
    """The chart on the report's first screen. Not a required file, and the summary lists the plots drawn:
    a plotting error is printed and never turns a finished evaluation into a failed one (as in training)."""
    from lib.plots import plot_comparison  # here: matplotlib costs a worker's start 1.6 s, and only rank 0 draws

    try:
        plot_comparison(metrics, path)
    except Exception as exc:
        print(f"comparison chart not drawn: {type(exc).__name__}: {exc}", flush=True)
