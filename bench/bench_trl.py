"""Our training against TRL's SFTTrainer: same model, records, hyperparameters and process.

    pip install -r requirements-bench.txt          # TRL, pinned for transformers 5.24.0
    python bench/bench_trl.py [--steps 10] [--threads 2]

Gemma 3 270M (the `make gemma` package, float32 on the CPU) with params/gemma3-270m.yaml's
hyperparameters (micro-batch 4, AdamW, lr 1e-4, cosine with 10% warm-up, clipping 1.0, seed 42),
`--steps` optimizer steps each:

  TRL   trl.SFTTrainer on prompt-completion records (`completion_only_loss`, its default loss:
        the mean negative log-likelihood of the completion tokens, computed by its fused LM head),
        the records rendered exactly as lib/prompt_format.py renders them: the prompt text without BOS
        (the tokenizer adds the one BOS), the response as the completion (TRL appends EOS).
  ours  lib.training_worker.build_trainer (the LabelPositionTrainer), on lib.prompt_format.encode_traces.

The script first checks that TRL's tokenized records equal ours (input ids and loss mask, every
record): otherwise the comparison would not be of the same training. Both train a fresh copy of
the same weights (lib.model_loading.load_model) on length-grouped batches with the same seed, so they
see the same batches in the same order. It prints, per trainer, non-padding tokens/s (the
Trainer's own count; the first step excluded as warm-up), the peak resident memory the training
added to the process (peak RSS minus RSS before the model was loaded), and the loss at every
step; then the largest relative loss difference and, last, the ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import sys
import tempfile
import time
from pathlib import Path

import datasets
import psutil
import torch
from datasets import Dataset
from profiles import run_config
from transformers import PrinterCallback, TrainerCallback, TrainingArguments
from trl import SFTConfig, SFTTrainer

from lib import gguf_model
from lib.data import load_traces
from lib.model_loading import load_model, load_tokenizer
from lib.prompt_format import encode_traces, render_prompt, render_response
from lib.throughput import peak_memory, reset_peak_memory
from lib.training_worker import build_trainer, build_training_arguments

# float32 on both sides, different kernels for the same sums (the model's cross-entropy on label
# positions against TRL's chunked log-sum-exp over all positions): the first step's loss agrees to
# rounding, and AdamW's normalised updates carry such differences into later steps, as changing
# the thread count does (docs/BENCHMARKS.md). Losses further apart than this are not the same training.
LOSS_RTOL = 1e-3


class StepClock(TrainerCallback):
    """Non-padding tokens, wall seconds and this process's CPU seconds from the end of the first
    step to the end of the last. CPU time counts the work done, whatever else the machine runs."""

    def __init__(self):
        self.t0 = self.t1 = self.cpu0 = self.cpu1 = 0.0
        self.tokens0 = self.tokens1 = 0

    def on_step_end(self, args, state, control, **kwargs):
        now, cpu, tokens = time.perf_counter(), time.process_time(), state.num_input_tokens_seen
        if state.global_step == 1:
            self.t0, self.cpu0, self.tokens0 = now, cpu, tokens
        self.t1, self.cpu1, self.tokens1 = now, cpu, tokens

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens1 - self.tokens0) / (self.t1 - self.t0)


def trl_records(traces: list[dict]) -> Dataset:
    """Prompt-completion records rendered as lib/prompt_format.py renders them, BOS and EOS left to the tokenizer and TRL."""
    return Dataset.from_list([
        {"prompt": render_prompt(t["prompt"], ""), "completion": render_response(t["steps"], t["final_answer"])}
        for t in traces
    ])


def trl_config(args: TrainingArguments, max_length: int) -> SFTConfig:
    """The same TrainingArguments as ours, as an SFTConfig, with TRL's prompt-completion settings."""
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return SFTConfig(**same, completion_only_loss=True, max_length=max_length, packing=False,
                     dataset_num_proc=None)


def check_same_records(trainer: SFTTrainer, ours: list[dict]) -> None:
    """TRL's tokenized records must be ours, id for id and mask for mask."""
    theirs = trainer.train_dataset
    for n, (record, mine) in enumerate(zip(theirs, ours, strict=True), start=1):
        if record["input_ids"] != mine["input_ids"]:
            raise SystemExit(f"record {n}: TRL's input ids differ from ours; the comparison would be meaningless")
        if record["labels"] != mine["labels"]:
            raise SystemExit(f"record {n}: TRL's loss mask differs from ours")


def release_freed_memory() -> None:
    """Return freed heap memory to the OS, so each training starts from the same resident memory.

    glibc keeps the heap of freed small tensors (the activations) resident; without this the
    second training reuses the first one's and its measured peak looks smaller than it is.
    """
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


def train(name: str, make_trainer, model_dir: str, cfg, tokenizer) -> dict:
    release_freed_memory()
    before = psutil.Process().memory_info().rss
    reset_peak_memory("cpu")
    model = load_model(model_dir, cfg, tokenizer)
    clock = StepClock()
    trainer = make_trainer(model, clock)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    peak = peak_memory("cpu")[0] - before
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {"name": name, "tokens_per_s": clock.tokens_per_s, "tokens": clock.tokens1 - clock.tokens0,
              "seconds": clock.t1 - clock.t0, "cpu_seconds": clock.cpu1 - clock.cpu0, "peak": peak, "losses": losses}
    del trainer, model
    print(f"{name}: {result['tokens_per_s']:,.1f} tokens/s, peak +{peak / 2**30:.2f} GiB "
          f"(RSS before its model {before / 2**30:.2f} GiB)", flush=True)
    return result


def combine(runs: list[dict]) -> dict:
    """One trainer's rounds: tokens/s over all of them, the highest peak; each round's losses must be the same."""
    if any(r["losses"] != runs[0]["losses"] for r in runs):
        raise SystemExit(f"{runs[0]['name']}: the losses differ between rounds: training is not deterministic")
    tokens, seconds = sum(r["tokens"] for r in runs), sum(r["seconds"] for r in runs)
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / sum(r["cpu_seconds"] for r in runs),
            "peak": max(r["peak"] for r in runs), "losses": runs[0]["losses"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per trainer (default 10)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="train ours, then TRL, this many times over (a shared machine's load drifts)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()  # TRL's preprocessing bars would bury the table
    model_dir = str(gguf_model.materialise())

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        cfg = run_config("gemma3-270m", model_name=model_dir, run_dir=str(Path(tmp) / "run"),
                         max_steps=args.steps, logging_steps=1)
        traces = load_traces(cfg.path("train_file"))
        tokenizer = load_tokenizer(model_dir)
        tokenizer.padding_side = "right"
        ours_records = encode_traces(traces, tokenizer, cfg.max_seq_length)
        print(f"model: gemma-3-270m (float32, CPU, {torch.get_num_threads()} threads); {len(traces)} records; "
              f"micro-batch {cfg.batch_size}, {args.steps} steps, {cfg.optimizer}, lr {cfg.learning_rate}", flush=True)

        def trl_trainer(model, clock):
            trainer = SFTTrainer(model=model, args=trl_config(build_training_arguments(cfg, Path(tmp) / "trl"),
                                                             cfg.max_seq_length),
                                 train_dataset=trl_records(traces), processing_class=tokenizer, callbacks=[clock])
            check_same_records(trainer, ours_records)
            return trainer

        def our_trainer(model, clock):
            return build_trainer(cfg, model, tokenizer, Dataset.from_list(ours_records), Path(tmp) / "ours", [clock])

        runs = []
        for _ in range(args.rounds):
            runs += [train("ours", our_trainer, model_dir, cfg, tokenizer),
                     train("TRL", trl_trainer, model_dir, cfg, tokenizer)]

    print("\n| trainer | round | non-padding tokens (steps 2-N) | seconds | tokens/s | CPU seconds | "
          "peak memory added (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for n, r in enumerate(runs):
        print(f"| {r['name']} | {n // 2 + 1} | {r['tokens']:,} | {r['seconds']:.1f} | {r['tokens_per_s']:,.1f} | "
              f"{r['cpu_seconds']:.1f} | {r['peak'] / 2**30:.2f} |")
    ours, trl = (combine([r for r in runs if r["name"] == name]) for name in ("ours", "TRL"))
    print("\n| step | loss, TRL | loss, ours | relative difference |")
    print("|---|---|---|---|")
    worst = 0.0
    for step, (b, a) in enumerate(zip(ours["losses"], trl["losses"], strict=True), start=1):
        worst = max(worst, abs(a - b) / abs(a))
        print(f"| {step} | {a:.6f} | {b:.6f} | {abs(a - b) / abs(a):.1e} |")
    agree = "agree" if worst <= LOSS_RTOL else "DO NOT agree"
    print(f"\nlosses {agree}: largest relative difference {worst:.1e} (tolerance {LOSS_RTOL:.0e})")
    print(f"per CPU second (the work, whatever the machine's load): ours vs TRL "
          f"{ours['tokens_per_cpu_s'] / trl['tokens_per_cpu_s']:.2f}x")
    print(f"ours vs TRL: {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x tokens/s, "
          f"{ours['peak'] / trl['peak']:.2f} x peak memory")
    return 0 if worst <= LOSS_RTOL else 1


if __name__ == "__main__":
    sys.exit(main())
