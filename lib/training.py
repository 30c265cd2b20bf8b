"""M44.1 as the notebook sees it: start the training worker, stream its output, report how it ended.

The kernel starts `python -m lib.training_worker RUN_DIR MODEL_SOURCE` (through torchrun, once per process,
with `num_processes` > 1; lib/launcher.py) and waits for it, so a crash that kills the training outright
(out-of-memory kill, segfault, a signal) kills only the worker: the kernel lives on to document the
failure. The worker (rank 0) rewrites training_metrics.json at every logging step, so whatever stops
it, the metrics say how far it got; the plots are drawn here from that file. When a rank fails, the
cause recorded is that rank's, named, and the metrics list every failed rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import RunConfig
from lib.contract import FINAL_MODEL, TRAINING_METRICS
from lib.evidence import read_json, write_json
from lib.launcher import Ended, run_worker, worker_environment
from lib.plots import plot_training
from lib.telemetry import sample_system_metrics

if TYPE_CHECKING:
    from lib.preflight import Prepared

WHAT = "training process"


@dataclass(frozen=True)
class Trained:
    """What evaluation needs from training."""

    model_dir: Path


class TrainingFailed(RuntimeError):
    """The worker failed, or died; the first line of the message is the cause."""


@sample_system_metrics("training")
def train(cfg: RunConfig, run_dir: Path, prepared: Prepared) -> Trained:
    """Run the training in a worker process (or one per device), stream its output here, draw the plots,
    and report how it ended."""
    try:
        ended = run_worker("lib.training_worker", [str(run_dir), prepared.model_source], cfg.num_processes, WHAT,
                           worker_environment(cfg))
    except KeyboardInterrupt:  # Ctrl-C / "interrupt kernel" while training: the worker was stopped cleanly
        _record_failure(run_dir, "interrupted in the notebook (KeyboardInterrupt)")
        _write_plots(run_dir)
        raise
    metrics = read_json(run_dir / TRAINING_METRICS) if (run_dir / TRAINING_METRICS).exists() else {}
    if ended.returncode == 0 and metrics.get("status") == "completed":
        _write_plots(run_dir)
        return Trained(run_dir / FINAL_MODEL)
    cause = ended.cause(metrics.get("error"))
    _record_failure(run_dir, cause, ended)
    _write_plots(run_dir)
    ranks = f"; failed ranks:\n{ended.details()}\n" if ended.failures else "; "
    raise TrainingFailed(
        f"{cause} ({metrics.get('steps_completed', 0)} of {cfg.max_steps} steps completed)\n"
        f"{'torchrun' if cfg.num_processes > 1 else WHAT} exit code {ended.returncode}{ranks}"
        f"its last lines:\n{ended.tail}"
    )


def _write_plots(run_dir: Path) -> None:
    """The curves of whatever the worker logged, drawn in the phase so the evidence never depends on display.

    The plots are not among the files the contract requires, and the summary lists those drawn: a
    plotting error is printed, and never turns a trained model into a failed run.
    """
    path = run_dir / TRAINING_METRICS
    history = read_json(path).get("history", []) if path.exists() else []
    if not history:
        return
    try:
        plot_training(history, run_dir)
    except Exception as exc:
        print(f"training plots not drawn: {type(exc).__name__}: {exc}", flush=True)


def _record_failure(run_dir: Path, cause: str, ended: Ended | None = None) -> None:
    """Mark the metrics failed with the cause, keeping the history the worker last wrote.

    One process: what the worker recorded stands. Several: the cause names the rank that failed and
    replaces what rank 0 recorded (often only that torchrun stopped it); every failed rank is listed.
    """
    path = run_dir / TRAINING_METRICS
    metrics = read_json(path) if path.exists() else {"steps_completed": 0, "runtime_s": 0.0, "history": []}
    if ended is not None and ended.num_processes > 1:
        ranks = {"failed_rank": ended.failures[0].rank,
                 "failures": [{"rank": f.rank, "exitcode": f.exitcode, "cause": f.cause} for f in ended.failures],
                 } if ended.failures else {}
        write_json(path, {**metrics, "status": "failed", "error": cause, **ranks})
    elif metrics.get("status") != "failed":
        write_json(path, {**metrics, "status": "failed", "error": metrics.get("error") or cause})
