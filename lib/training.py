"""M44.1: one training run through the Hugging Face Trainer, in a worker process.

The notebook kernel starts `python -m lib.train_worker RUN_DIR MODEL_SOURCE` and waits for it, so a
crash that kills the training outright (out-of-memory kill, segfault, a signal) kills only the
worker: the kernel lives on to document the failure. The worker rewrites training_metrics.json
atomically at every logging step, so whatever stops it, the metrics say how far it got.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lib.config import REPO_ROOT, RunConfig
from lib.data import load_traces
from lib.evidence import read_json, write_json
from lib.modeling import load_model, load_tokenizer
from lib.plots import plot_loss
from lib.preflight import Prepared
from lib.render import IGNORE_INDEX, encode_traces

LOG_NAME = "training_log.txt"
METRICS_NAME = "training_metrics.json"
LOSS_PLOT_NAME = "loss_curve.png"
FINAL_MODEL_DIR = Path("checkpoints") / "final"
INTERRUPTED_EXIT = 130  # the shell convention for "stopped by Ctrl-C"
STOP_GRACE_S = 60  # how long an interrupted worker gets to write its metrics before it is killed


@dataclass(frozen=True)
class Trained:
    """What evaluation needs from training."""

    model_dir: Path
    steps_completed: int
    final_loss: float


class TrainingFailed(RuntimeError):
    """The worker failed, or died; the first line of the message is the cause."""


# --- in the notebook kernel -------------------------------------------------------------------

def train(cfg: RunConfig, run_dir: Path, prepared: Prepared) -> Trained:
    """Run the training in a worker process, stream its output here, and report how it ended."""
    command = [sys.executable, "-B", "-m", "lib.train_worker", str(run_dir), prepared.model_source]
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
        raise
    metrics = read_json(run_dir / METRICS_NAME) if (run_dir / METRICS_NAME).exists() else {}
    if returncode == 0 and metrics.get("status") == "completed":
        return Trained(
            model_dir=run_dir / FINAL_MODEL_DIR,
            steps_completed=metrics["steps_completed"],
            final_loss=metrics["history"][-1]["loss"],
        )
    cause = metrics.get("error") or _describe_exit(returncode)
    _record_failure(run_dir, cause)
    raise TrainingFailed(
        f"{cause} ({metrics.get('steps_completed', 0)} of {cfg.max_steps} steps completed)\n"
        f"training process exit code {returncode}; its last lines:\n{''.join(tail)}"
    )


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
    path = run_dir / METRICS_NAME
    metrics = read_json(path) if path.exists() else {"steps_completed": 0, "runtime_s": 0.0, "history": []}
    if metrics.get("status") != "failed":
        write_json(path, {**metrics, "status": "failed", "error": metrics.get("error") or cause})


# --- in the worker process --------------------------------------------------------------------

class MetricsFile:
    """training_metrics.json, rewritten atomically at every logging step and at the end."""

    def __init__(self, path: Path, cfg: RunConfig, num_records: int):
        self.path = path
        self.static = {"max_steps": cfg.max_steps, "num_records": num_records}
        self.history: list[dict] = []
        self.summary: dict = {}
        self.t0 = time.perf_counter()

    def write(self, status: str, error: str | None = None) -> None:
        write_json(self.path, {
            "status": status,  # "running" only while the worker lives
            **({"error": error} if error else {}),
            "steps_completed": self.history[-1]["step"] if self.history else 0,
            **self.static,
            "runtime_s": round(time.perf_counter() - self.t0, 3),
            "train_runtime": self.summary.get("train_runtime"),
            "train_samples_per_second": self.summary.get("train_samples_per_second"),
            "train_loss": self.summary.get("train_loss"),
            "history": self.history,
        })


class EvidenceLogger(TrainerCallback):
    """One flushed line per logging step in training_log.txt, and the metrics file rewritten.

    A non-finite loss stops the run: training on is pointless and the evidence must say so.
    """

    def __init__(self, metrics: MetricsFile, log_path: Path, max_steps: int):
        self.metrics = metrics
        self.log_path = log_path
        self.max_steps = max_steps

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" not in logs:  # the end-of-training record: runtime, samples/s, mean loss
            self.metrics.summary = logs
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        record["elapsed_s"] = round(time.perf_counter() - self.metrics.t0, 3)
        line = (
            f"step {state.global_step:>5}/{self.max_steps} | loss {logs['loss']:.4f} | "
            f"lr {logs.get('learning_rate', float('nan')):.2e} | "
            f"grad_norm {logs.get('grad_norm', float('nan')):.3f} | {record['elapsed_s']:.1f} s"
        )
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        print(line, flush=True)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"non-finite loss {logs['loss']} at step {state.global_step}")
        self.metrics.history.append(record)  # JSON holds no NaN: a non-finite loss stays in the log
        self.metrics.write("running")


def build_training_arguments(cfg: RunConfig, output_dir: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        optim=cfg.optimizer,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of max_steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.dtype == "bfloat16",
        use_cpu=cfg.device == "cpu",
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # the default hides a NaN loss behind the running mean
        train_sampling_strategy="group_by_length",  # less padding, same data
        save_strategy="no",  # the final model is saved explicitly below
        report_to="none",
        disable_tqdm=True,  # EvidenceLogger prints one line per logging step instead
        dataloader_num_workers=0,  # no worker processes: Windows spawns, and the data is small
    )


def run_training(cfg: RunConfig, run_dir: Path, model_source: str) -> None:
    """Train once and save the final model; the metrics file records how it ended, always."""
    tokenizer = load_tokenizer(model_source)
    tokenizer.padding_side = "right"
    # The same records pre-flight checked, encoded the same deterministic way.
    dataset = Dataset.from_list(encode_traces(load_traces(cfg.path("train_file")), tokenizer, cfg.max_seq_length))
    model = load_model(model_source, cfg, tokenizer)
    metrics = MetricsFile(run_dir / METRICS_NAME, cfg, len(dataset))
    trainer = Trainer(
        model=model,
        args=build_training_arguments(cfg, run_dir / "checkpoints"),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
        processing_class=tokenizer,
        callbacks=[EvidenceLogger(metrics, run_dir / LOG_NAME, cfg.max_steps)],
    )
    trainer.remove_callback(PrinterCallback)  # it would print every log dict a second time
    print(f"training {sum(p.numel() for p in model.parameters()):,} parameters on "
          f"{len(dataset)} records for {cfg.max_steps} steps (process {os.getpid()})", flush=True)
    metrics.write("running")
    try:
        trainer.train()
        trainer.save_model(str(run_dir / FINAL_MODEL_DIR))
    except BaseException as exc:  # KeyboardInterrupt included: the metrics must say why it stopped
        if isinstance(exc, KeyboardInterrupt):
            cause = f"interrupted by {str(exc) or 'Ctrl-C'}"
        else:
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
        metrics.write("failed", error=cause)
        raise
    finally:
        if metrics.history:
            plot_loss(metrics.history, run_dir / LOSS_PLOT_NAME)
    metrics.write("completed")
