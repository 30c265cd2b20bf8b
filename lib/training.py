"""M44.1 as the notebook sees it: start the training worker, stream its output, report how it ended.

The kernel starts `python -m lib.trainer RUN_DIR MODEL_SOURCE` and waits for it, so a crash that kills
the training outright (out-of-memory kill, segfault, a signal) kills only the worker: the kernel lives
on to document the failure. The worker rewrites training_metrics.json at every logging step, so
whatever stops it, the metrics say how far it got; the plots are drawn here from that file.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lib.config import REPO_ROOT, RunConfig
from lib.contract import FINAL_MODEL, TRAINING_METRICS
from lib.evidence import read_json, write_json
from lib.plots import plot_training

if TYPE_CHECKING:
    from lib.preflight import Prepared

INTERRUPTED_EXIT = 130  # the worker's exit code when stopped by Ctrl-C or SIGTERM (the shell convention)
STOP_GRACE_S = 60  # how long an interrupted worker gets to write its metrics before it is killed


@dataclass(frozen=True)
class Trained:
    """What evaluation needs from training."""

    model_dir: Path
    steps_completed: int
    final_loss: float


class TrainingFailed(RuntimeError):
    """The worker failed, or died; the first line of the message is the cause."""


def train(cfg: RunConfig, run_dir: Path, prepared: Prepared) -> Trained:
    """Run the training in a worker process, stream its output here, draw the plots, and report how it ended."""
    command = [sys.executable, "-B", "-m", "lib.trainer", str(run_dir), prepared.model_source]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
    worker = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace",
    )
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        for line in worker.stdout:
            print(line, end="", flush=True)
            tail.append(line)
        returncode = worker.wait()
    except KeyboardInterrupt:  # Ctrl-C / "interrupt kernel" while training: stop the worker cleanly
        _stop(worker)
        _record_failure(run_dir, "interrupted in the notebook (KeyboardInterrupt)")
        _write_plots(run_dir)
        raise
    metrics = read_json(run_dir / TRAINING_METRICS) if (run_dir / TRAINING_METRICS).exists() else {}
    if returncode == 0 and metrics.get("status") == "completed":
        _write_plots(run_dir)
        return Trained(
            model_dir=run_dir / FINAL_MODEL,
            steps_completed=metrics["steps_completed"],
            final_loss=metrics["history"][-1]["loss"],
        )
    cause = metrics.get("error") or _describe_exit(returncode)
    _record_failure(run_dir, cause)
    _write_plots(run_dir)
    raise TrainingFailed(
        f"{cause} ({metrics.get('steps_completed', 0)} of {cfg.max_steps} steps completed)\n"
        f"training process exit code {returncode}; its last lines:\n{''.join(tail)}"
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


def _stop(worker: subprocess.Popen) -> None:
    # SIGTERM lets the worker write its metrics; on Windows terminate() ends it at once.
    worker.terminate()
    try:
        worker.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:  # POSIX: killed by a signal the worker could not handle
        name = signal.Signals(-returncode).name
        return f"training process killed by {name} (out-of-memory killer, segfault or kill)"
    return f"training process exited with code {returncode} without recording a cause"


def _record_failure(run_dir: Path, cause: str) -> None:
    """Mark the metrics failed with the cause, keeping the history the worker last wrote."""
    path = run_dir / TRAINING_METRICS
    metrics = read_json(path) if path.exists() else {"steps_completed": 0, "runtime_s": 0.0, "history": []}
    if metrics.get("status") != "failed":
        write_json(path, {**metrics, "status": "failed", "error": metrics.get("error") or cause})
