"""M44.1: one training run through the Hugging Face Trainer, logged step by step."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from lib.config import RunConfig
from lib.evidence import write_json
from lib.modeling import free_device_memory, load_model, load_tokenizer
from lib.plots import plot_loss
from lib.preflight import Prepared
from lib.render import IGNORE_INDEX

LOG_NAME = "training_log.txt"
METRICS_NAME = "training_metrics.json"
LOSS_PLOT_NAME = "loss_curve.png"
FINAL_MODEL_DIR = Path("checkpoints") / "final"


@dataclass(frozen=True)
class Trained:
    """What evaluation needs from training."""

    model_dir: Path
    steps_completed: int
    final_loss: float


class EvidenceLogger(TrainerCallback):
    """Writes each logging step to training_log.txt (flushed per line) and prints progress.

    A non-finite loss stops the run: training on is pointless and the evidence must say so.
    """

    def __init__(self, log_path: Path, max_steps: int):
        self.log_path = log_path
        self.max_steps = max_steps
        self.history: list[dict] = []
        self.summary: dict = {}
        self.t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" not in logs:  # the end-of-training record: runtime, samples/s, mean loss
            self.summary = logs
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        record["elapsed_s"] = round(time.perf_counter() - self.t0, 3)
        self.history.append(record)
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


def train(cfg: RunConfig, run_dir: Path, prepared: Prepared) -> Trained:
    """Train once, save the final model, and write the log, metrics and loss curve."""
    tokenizer = load_tokenizer(prepared.model_source)
    tokenizer.padding_side = "right"
    model = load_model(prepared.model_source, cfg, tokenizer)
    dataset = Dataset.from_list(prepared.train_examples)
    logger = EvidenceLogger(run_dir / LOG_NAME, cfg.max_steps)
    trainer = Trainer(
        model=model,
        args=build_training_arguments(cfg, run_dir / "checkpoints"),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
        processing_class=tokenizer,
        callbacks=[logger],
    )
    trainer.remove_callback(PrinterCallback)  # it would print every log dict a second time
    print(f"training {sum(p.numel() for p in model.parameters()):,} parameters on "
          f"{len(dataset)} records for {cfg.max_steps} steps", flush=True)
    status, t0 = "failed", time.perf_counter()
    try:
        trainer.train()
        trainer.save_model(str(run_dir / FINAL_MODEL_DIR))
        status = "completed"
    finally:
        # Written whatever happened: a failed run's metrics say how far it got.
        write_json(run_dir / METRICS_NAME, {
            "status": status,
            "steps_completed": trainer.state.global_step,
            "max_steps": cfg.max_steps,
            "runtime_s": round(time.perf_counter() - t0, 3),
            "train_runtime": logger.summary.get("train_runtime"),
            "train_samples_per_second": logger.summary.get("train_samples_per_second"),
            "train_loss": logger.summary.get("train_loss"),
            "num_records": len(dataset),
            "history": logger.history,
        })
        if logger.history:
            plot_loss(logger.history, run_dir / LOSS_PLOT_NAME)
        del trainer, model
        free_device_memory()
    return Trained(
        model_dir=run_dir / FINAL_MODEL_DIR,
        steps_completed=logger.history[-1]["step"],
        final_loss=logger.history[-1]["loss"],
    )
