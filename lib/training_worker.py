"""The training worker: `python -m lib.training_worker RUN_DIR MODEL_SOURCE`, started by lib.training.train.

One training run through the Hugging Face Trainer, in one process or, under torchrun, in one per
device: the Trainer then runs DDP (or FSDP2 with `sharding: fsdp`) and each rank trains on its own
micro-batches. Rank 0 alone writes the evidence: it rewrites training_metrics.json atomically at every
logging step and at the end, so whatever stops the run, the metrics say how far it got, and it saves
the model. Exit codes (lib/launcher.py): 0 trained and saved; 1 an exception (traceback printed, and
recorded for torchrun); 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from lib import lora
from lib.config import RunConfig, repo_relative
from lib.console import describe_exception, utf8_output
from lib.contract import CHECKPOINTS, CONFIG, FINAL_MODEL, MERGED_MODEL, PREFLIGHT, TRAINING_LOG, TRAINING_METRICS
from lib.cpu_bfloat16 import bfloat16_matmuls
from lib.data import load_training_records
from lib.evidence import HeldFile, read_json, write_json
from lib.launcher import join_processes, leave_process_group, process_group_backend, worker_main
from lib.model_loading import DTYPES, load_model, load_tokenizer
from lib.progress import time_left
from lib.prompt_format import IGNORE_INDEX, encode_traces
from lib.throughput import Peak, measure_peak_flops, model_flops_utilization, peak_memory, reset_peak_memory

PRINTED_LINES = 20  # training's progress lines in the notebook at most; training_log.txt holds every logging step
PACK_SEQUENCES = False  # decided by measurement: see build_collator and docs/BENCHMARKS.md
STEP_WRITE_INTERVAL_S = 1.0  # how often training_metrics.json is rewritten between logging steps


class MetricsFile:
    """training_metrics.json, rewritten atomically at every logging step and at the end, by rank 0 alone.

    With several processes it also holds `processes` (describe_processes) and every figure counts
    all of them: tokens, samples, and the peak that MFU divides by is the sum over the ranks' devices.
    """

    def __init__(self, path: Path, cfg: RunConfig, num_records: int, num_parameters: int, peak: Peak,
                 processes: dict | None = None, writer: bool = True, memory_estimate: int | None = None):
        self.path = path
        self.memory_estimate = memory_estimate  # pre-flight's total for one device, in bytes
        self.writer = writer
        # What training changes: the mode, the parameters it trains of all, and (set after saving) the adapter's
        # size on disk; consolidation states them (m44_summary.json) and the model card renders them.
        self.finetune = {"mode": cfg.finetune, "trainable_parameters": num_parameters, "all_parameters": num_parameters,
                         "adapter_bytes": None}
        self.static = {
            "max_steps": cfg.max_steps, "num_records": num_records, "num_parameters": num_parameters,
            "device_peak_flops": peak.flops, "device_peak_flops_source": peak.source,
            **({"processes": processes} if processes else {}),
        }
        self.peak_flops = processes["peak_flops_all_ranks"] if processes else peak.flops
        self.history: list[dict] = []
        self.steps_completed = 0  # the Trainer's own step counter, not the last logged step
        self.summary: dict = {}
        # Whole-run throughput (total_tokens, tokens_per_s, mfu), kept current by EvidenceLogger.
        self.throughput: dict = {"total_tokens": 0, "tokens_per_s": None, "mfu": None}
        self.t0 = self.written_at = time.perf_counter()
        self.skipped_writes = 0  # between-step rewrites given up on because another program held the file

    def write(self, status: str, error: str | None = None) -> None:
        if not self.writer:
            return
        self.written_at = time.perf_counter()
        write_json(self.path, self.record(status, error))

    def write_between_steps(self) -> None:
        """A rewrite between logging steps, best-effort: a held file is skipped and counted, training goes on.

        The logging steps' and the final writes (`write`) must succeed: they are what the evidence states.
        """
        try:
            self.write("running")
        except HeldFile as exc:
            self.skipped_writes += 1
            print(f"note: {exc} (skipped this rewrite between logging steps; training goes on)", flush=True)

    def record(self, status: str, error: str | None) -> dict:
        return {
            "status": status,  # "running" only while the worker lives
            **({"error": error} if error else {}),
            "steps_completed": self.steps_completed,
            **self.static,
            "finetune": self.finetune,
            "runtime_s": round(time.perf_counter() - self.t0, 3),
            "train_runtime": self.summary.get("train_runtime"),
            "train_samples_per_second": self.summary.get("train_samples_per_second"),
            "train_loss": self.summary.get("train_loss"),
            **self.throughput,
            "memory": self.memory(),
            "skipped_writes": self.skipped_writes,
            "history": self.history,
        }

    def memory(self) -> dict:
        """The measured peak (the highest logged: the allocator's on CUDA, resident memory on a CPU) beside
        pre-flight's estimate for the same device."""
        logged = [h for h in self.history if "peak_memory_bytes" in h]
        peak = max(logged, key=lambda h: h["peak_memory_bytes"]) if logged else {}
        return {"estimate_bytes": self.memory_estimate, "peak_bytes": peak.get("peak_memory_bytes"),
                "kind": peak.get("memory_kind")}


class EvidenceLogger(TrainerCallback):
    """One flushed line per logging step in training_log.txt, and the metrics file rewritten.

    Each record also carries the throughput since the previous one: non-padding tokens/s (the
    Trainer's own `num_input_tokens_seen`, counted with "non_padding" and summed over all ranks),
    samples/s (all ranks), seconds per optimizer step, and peak memory (rank 0's device). A non-finite
    loss stops the run: training on is pointless and the evidence must say so. Every rank runs this
    callback with the same logs (the loss is the mean over the ranks), so every rank stops at the same
    step; only rank 0 writes and prints.
    """

    def __init__(self, metrics: MetricsFile, log_path: Path, max_steps: int, device: str):
        self.metrics = metrics
        self.log_path = log_path
        self.max_steps = max_steps
        self.device = device
        self.first_logged: tuple[int, float] | None = None  # (step, elapsed s) of the first logging step
        self.train_t0 = self.last_t = time.perf_counter()
        self.last_step = 0
        self.last_tokens = 0
        self.peak_bytes = 0

    def on_step_end(self, args, state, control, **kwargs):
        """Count every optimizer step where the metrics file can say it, and always log the last one."""
        self.metrics.steps_completed = state.global_step
        if state.global_step >= state.max_steps:
            control.should_log = True  # logging_steps need not divide max_steps: the last step is in the history
        elif not control.should_log and time.perf_counter() - self.metrics.written_at >= STEP_WRITE_INTERVAL_S:
            # Between logging steps too, so that a worker killed mid-interval leaves the count nearly exact;
            # at most once a second, as each write is fsynced.
            self.metrics.write_between_steps()
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        reset_peak_memory(self.device)  # the training's peak (weights included), not loading's
        self.train_t0 = self.last_t = time.perf_counter()
        self.last_step, self.last_tokens = state.global_step, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" not in logs:  # the end-of-training record: runtime, samples/s, mean loss
            self.metrics.summary = logs
            self._update_totals(state, time.perf_counter())
            return
        for key in ("train_runtime", "train_tokens_per_second"):  # the Trainer's since-start figures:
            logs.pop(key, None)  # tokens_per_s below is per interval, and the totals are in the summary
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        record["elapsed_s"] = round(time.perf_counter() - self.metrics.t0, 3)
        self.first_logged = self.first_logged or (state.global_step, record["elapsed_s"])  # the pace starts here
        record.update(self._interval(args, state))
        line = (
            f"step {state.global_step:>5}/{self.max_steps} | loss {logs['loss']:.4f} | "
            f"lr {logs.get('learning_rate', float('nan')):.2e} | "
            f"grad_norm {logs.get('grad_norm', float('nan')):.3f} | "
            f"{record['tokens_per_s']:,.0f} tok/s | {record['elapsed_s']:.1f} s | "
            f"{time_left(state.global_step, self.max_steps, record['elapsed_s'], self.first_logged)}"
        )
        if state.is_world_process_zero:
            with self.log_path.open("a", encoding="utf-8", newline="\n") as f:
                f.write(line + "\n")
            # The notebook shows about PRINTED_LINES of them (the log file has every one): a page, not a scroll.
            every = args.logging_steps * math.ceil(self.max_steps / args.logging_steps / PRINTED_LINES)
            if state.global_step % every == 0 or state.global_step in (args.logging_steps, self.max_steps):
                print(line, flush=True)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"non-finite loss {logs['loss']} at step {state.global_step}")
        self.metrics.history.append(record)  # JSON holds no NaN: a non-finite loss stays in the log
        self._update_totals(state, self.last_t)
        self.metrics.write("running")

    def _interval(self, args, state) -> dict:
        """Throughput since the previous logging step (or the start of training)."""
        now = time.perf_counter()
        seconds = max(now - self.last_t, 1e-9)
        steps = state.global_step - self.last_step
        tokens = state.num_input_tokens_seen - self.last_tokens
        # Samples as the Trainer counts them for train_samples_per_second: steps x batch x accumulation x ranks.
        samples = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        memory, kind = peak_memory(self.device)
        self.peak_bytes = max(self.peak_bytes, memory)  # RSS is a current value: keep the highest seen
        self.last_t, self.last_step, self.last_tokens = now, state.global_step, state.num_input_tokens_seen
        return {
            "tokens_per_s": round(tokens / seconds, 1),
            "samples_per_s": round(samples / seconds, 3),
            "step_time_s": round(seconds / steps, 4) if steps else None,
            "peak_memory_bytes": self.peak_bytes,
            "memory_kind": kind,
        }

    def _update_totals(self, state, now: float) -> None:
        """Whole-run tokens, tokens/s and MFU so far: present whatever stops the run."""
        seconds = max(now - self.train_t0, 1e-9)
        tokens = state.num_input_tokens_seen
        mfu = model_flops_utilization(self.metrics.static["num_parameters"], tokens, seconds, self.metrics.peak_flops)
        self.metrics.throughput = {
            "total_tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "mfu": round(mfu, 6),
        }


class LabelPositionTrainer(Trainer):
    """The Trainer, with the output logits computed only where the loss reads them.

    The response is about two thirds of a record's tokens; the prompt's full-vocabulary logits
    (256,000 wide for Gemma) are computed, upcast to float32 and thrown away by the plain loss.
    The model's own `logits_to_keep` (a boolean mask) and loss (`shift_labels`) do the work,
    so the loss is the model's ForCausalLMLoss, Gemma's final logit soft-capping included, on
    exactly the positions it would count anyway. Hand-written only because the Trainer has no
    switch for it (Liger Kernel's fused loss does this and more, but needs a CUDA GPU and Triton).
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, label_positions_only(inputs), return_outputs, num_items_in_batch)


def label_positions_only(inputs: dict) -> dict:
    """Model inputs that ask for logits and loss only at positions whose next token is a label."""
    shifted = F.pad(inputs["labels"][..., 1:], (0, 1), value=IGNORE_INDEX)  # position t predicts t+1
    keep = shifted != IGNORE_INDEX
    # use_cache=False: the config's default builds a KV cache in training, for nothing, and with a
    # cache transformers' masking does not detect packed sequences (they would see each other).
    return {**inputs, "logits_to_keep": keep, "shift_labels": shifted[keep], "use_cache": False}


def build_collator(tokenizer: PreTrainedTokenizerBase, packed: bool = PACK_SEQUENCES):
    if packed:
        # One row of concatenated records, position ids restarting at 0 for each: no padding.
        return DataCollatorWithFlattening(separator_id=IGNORE_INDEX)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def build_trainer(cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                  output_dir: Path, callbacks: list[TrainerCallback] = (), packed: bool = PACK_SEQUENCES,
                  **overrides) -> Trainer:
    """The run's Trainer: the fast configuration, for both profiles (and the benchmark)."""
    trainer = LabelPositionTrainer(
        model=model,
        args=build_training_arguments(cfg, output_dir, **overrides),
        train_dataset=dataset,
        data_collator=build_collator(tokenizer, packed),
        processing_class=tokenizer,  # also tells the token counter which id is padding
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # it would print every log dict a second time
    return trainer


def build_training_arguments(cfg: RunConfig, output_dir: Path, **overrides) -> TrainingArguments:
    """The run's TrainingArguments; `overrides` only for the benchmark's measured options."""
    return TrainingArguments(
        **sharding_arguments(cfg),
        # Relative to the repository (the worker's working folder) when inside it: the Trainer pickles its arguments
        # into checkpoints/final/training_args.bin, evidence that must not name the user's folders.
        output_dir=repo_relative(output_dir),
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
        include_num_input_tokens_seen="non_padding",  # tokens/s and MFU count real tokens only
        # Several processes: every parameter takes part in the loss, so DDP need not search the
        # graph for unused ones at every step (the Trainer's default does, and warns about it).
        ddp_find_unused_parameters=False,
        ddp_backend=process_group_backend(cfg.device, cfg.num_processes),
        **overrides,
    )


def sharding_arguments(cfg: RunConfig) -> dict:
    """The Trainer's FSDP settings for `sharding: fsdp`; nothing for DDP or one process.

    FSDP2 full shard through Accelerate: each decoder layer (the model's `_no_split_modules`) is
    one unit whose parameters are gathered for its forward and backward and resharded after;
    Accelerate puts Gemma's tied input embedding and output head in one unit, as FSDP2 needs for a
    shared parameter. The model is saved as one ordinary folder (a full state dict gathered on rank 0),
    as with DDP, so evaluation loads it unchanged.
    """
    if cfg.sharding != "fsdp":
        return {}
    return {"fsdp": True, "fsdp_config": {
        "version": 2,
        "reshard_after_forward": True,  # full shard (ZeRO-3); False keeps layers gathered until backward
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": "FULL_STATE_DICT",
        "cpu_ram_efficient_loading": False,  # each rank loads the weights; fine for a 2B model
        "activation_checkpointing": False,
    }}


def run_training(cfg: RunConfig, run_dir: Path, model_source: str) -> None:
    """Train once and save the final model; the metrics file records how it ended, always."""
    processes = join_processes(cfg.device, cfg.num_processes)  # first: it selects this rank's GPU
    tokenizer = load_tokenizer(model_source)
    tokenizer.padding_side = "right"
    # The same records pre-flight checked, encoded the same deterministic way.
    records = load_training_records(cfg.path("train_file"), cfg.train_repeats)
    dataset = Dataset.from_list(encode_traces(records, tokenizer, cfg.max_seq_length))
    model = load_model(model_source, cfg, tokenizer)
    if cfg.trains_adapter:  # the base frozen, low-rank adapters (and the rows of added tokens) trained
        model = lora.add_adapter(model, cfg, lora.added_rows(model_source, tokenizer))
    trainable, num_parameters = lora.count_parameters(model)
    peak = measure_peak_flops(cfg.device, DTYPES[cfg.dtype])  # < 1 s: the denominator of MFU
    estimate = read_json(run_dir / PREFLIGHT).get("memory_estimate") if (run_dir / PREFLIGHT).exists() else None
    metrics = MetricsFile(run_dir / TRAINING_METRICS, cfg, len(dataset), num_parameters, peak,
                          describe_processes(cfg, processes, peak), writer=processes.is_main_process,
                          memory_estimate=estimate["total"] if estimate else None)
    metrics.finetune["trainable_parameters"] = trainable
    logger = EvidenceLogger(metrics, run_dir / TRAINING_LOG, cfg.max_steps, cfg.device)
    trainer = build_trainer(cfg, model, tokenizer, dataset, run_dir / CHECKPOINTS, [logger])
    where = f"rank {processes.process_index} of {processes.num_processes} on {device_name(processes)}, " if (
        processes.num_processes > 1) else ""
    print(f"training {trainable:,} of {num_parameters:,} parameters ({cfg.finetune}) on {len(dataset)} records "
          f"for {cfg.max_steps} steps "
          f"({where}process {os.getpid()}); device peak {peak.flops / 1e9:,.1f} GFLOP/s ({peak.source})", flush=True)
    metrics.write("running")
    try:
        with bfloat16_matmuls(cfg.device, DTYPES[cfg.dtype]):  # a no-op except bfloat16 on a CPU without its kernels
            trainer.train()
        final = run_dir / FINAL_MODEL
        if not cfg.trains_adapter:
            trainer.save_model(str(final))  # rank 0 writes (FSDP: after gathering the shards)
        elif processes.is_main_process:
            # peft itself rather than trainer.save_model, which cannot say save_embedding_layers=False: peft's "auto"
            # would save the whole grown embedding (670 MB for gemma-3-270m), though the added rows it lacks are in
            # the adapter already (trainable tokens) and the rest is the base's.
            lora.save_base_reference(model, model_source, final)
            model.save_pretrained(str(final), save_embedding_layers=False)
            tokenizer.save_pretrained(str(final))
            metrics.finetune["adapter_bytes"] = lora.adapter_bytes(final)
            if cfg.merge_adapter:
                del trainer, model  # the merged copy is built from the saved adapter, in the memory training used
                save_merged(cfg, tokenizer, final, run_dir / MERGED_MODEL)
    except BaseException as exc:  # KeyboardInterrupt included: the metrics must say why it stopped
        if isinstance(exc, KeyboardInterrupt):
            cause = f"interrupted by {str(exc) or 'Ctrl-C'}"
        else:
            cause = describe_exception(exc).split("\n")[0]
        metrics.write("failed", error=cause)
        raise
    metrics.write("completed")  # the plots are drawn by the kernel, from this file (lib/training.py)
    if processes.num_processes > 1:
        leave_process_group(processes)


def save_merged(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, adapter_dir: Path, out_dir: Path) -> None:
    """merge_adapter: the base with the saved adapter merged in, as whole weights with the tokenizer. The base is
    loaded in the run's dtype even after QLoRA: merged into a 4-bit base, the update would be quantized away."""
    gc.collect()
    model = load_model(str(adapter_dir), dataclasses.replace(cfg, finetune="lora", merge_adapter=False), tokenizer)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    print(f"merged weights saved in {out_dir.relative_to(adapter_dir.parents[1]).as_posix()}/", flush=True)


def describe_processes(cfg: RunConfig, processes: PartialState, peak: Peak) -> dict | None:
    """The world size, backend and sharding, and each rank's device and matmul peak; None for one process."""
    if processes.num_processes == 1:
        return None
    ranks = gather_object([{"rank": processes.process_index, "device": device_name(processes), "pid": os.getpid(),
                            "device_peak_flops": peak.flops}])
    return {
        "world_size": processes.num_processes,
        "launcher": "torchrun",
        "backend": processes.backend,
        "sharding": "FSDP2 full shard" if cfg.sharding == "fsdp" else "none (DDP: a full copy on each rank)",
        "ranks": sorted(ranks, key=lambda r: r["rank"]),
        "peak_flops_all_ranks": sum(r["device_peak_flops"] for r in ranks),
    }


def device_name(processes: PartialState) -> str:
    """'cuda:1 (NVIDIA H100 80GB HBM3)', or 'cpu' (Accelerate calls every rank's CPU cpu:0)."""
    if processes.device.type == "cuda":
        return f"{processes.device} ({torch.cuda.get_device_name(processes.device)})"
    return processes.device.type


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"the run folder; its {CONFIG} holds the parameters")
    parser.add_argument("model_source", help="hub id or local folder, as resolved by pre-flight")
    args = parser.parse_args(argv)
    utf8_output()
    return worker_main(lambda: run_training(
        RunConfig.load(args.run_dir), args.run_dir, args.model_source))


if __name__ == "__main__":
    sys.exit(main())
