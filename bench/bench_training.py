"""Training throughput: the original M44 configuration against ours, in one process.

    OMP_NUM_THREADS=2 python bench/bench_training.py [--threads 2] [--tokens 40000]
    python bench/bench_training.py --gemma-2b [--batch-size 4]       # on a CUDA GPU

Same machine, model, data and process for both; each configuration trains a fresh copy of the
same weights until it has processed `--tokens` non-padding tokens (the Trainer's own
"non_padding" count), the first optimizer step excluded as warm-up:

  original  the first M44 attempt: the plain Trainer, micro-batch 1, gradient accumulation 4,
            Adafactor, every record padded to 128 tokens; longer records truncated to 128, as
            the original did (it tokenized with truncation); full-vocabulary logits everywhere.
  ours      what lib/training_worker.py builds for a run (lib.training_worker.build_trainer), with the
            profile's micro-batch (or --batch-size) and the same accumulation and optimizer as
            the original, so that only the speed settings differ.

It measures the device's dense-matmul peak in the training dtype in the same run and prints each
configuration's utilisation, 6 x parameters x tokens/s / peak. The last line is the speedup of
ours over the original in non-padding tokens per second.

On a CPU it uses the embedded model (built from data/dev-reasoning-v2.jsonl, float32) and
params/embedded.yaml. With --gemma-2b it builds Gemma 2B's published architecture with random
weights (no hub: the lent GPU has no internet) in bfloat16 on CUDA with params/m44.yaml, and also
reports the peak GPU memory of the official configuration (micro-batch 1, accumulation 4, records
of the full 512 tokens, Adafactor, bf16). Token ids come from the embedded tokenizer, whose ids are
valid Gemma ids; its sequences are longer than Gemma's tokenizer would make them. Without a GPU,
--gemma-2b runs a tiny stand-in of the same architecture on the CPU, to exercise the code path.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    GemmaConfig,
    GemmaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from profiles import build_embedded
from lib.config import REPO_ROOT, RunConfig, load_config
from lib.data import load_traces
from lib.model_loading import DTYPES, free_device_memory, load_model, load_tokenizer
from lib.prompt_format import IGNORE_INDEX, encode_traces
from lib.throughput import measure_peak_flops
from lib.training_worker import build_trainer

TRAIN_FILE = REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"
ORIGINAL_SEQ = 128  # the original padded (and truncated) every record to 128 tokens
ORIGINAL = {"batch_size": 1, "gradient_accumulation_steps": 4, "optimizer": "adafactor"}
GEMMA_2B = dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256)
STAND_IN = dict(vocab_size=256000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=32)
MAX_ENCODED_LENGTH = 768  # the embedded tokenizer's longest record is ~590 tokens


class TokenBudget(TrainerCallback):
    """Stops training once `tokens` non-padding tokens are processed; times all but the first step."""

    def __init__(self, tokens: int, device: str):
        self.tokens, self.device = tokens, device
        self.t0 = self.t1 = 0.0
        self.tokens0 = self.tokens1 = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.device == "cuda":
            torch.cuda.synchronize()  # time finished work, not queued kernels
        if state.global_step == 1:  # warm-up step: allocations, kernel selection
            self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen
        elif state.num_input_tokens_seen - self.tokens0 >= self.tokens:
            self.t1, self.tokens1 = time.perf_counter(), state.num_input_tokens_seen
            control.should_training_stop = True

    @property
    def measured(self) -> tuple[int, float]:
        return self.tokens1 - self.tokens0, self.t1 - self.t0


def run_config(params_file: Path, model_dir: str, out: Path, **changes) -> RunConfig:
    return load_config(params_file, {"model_name": model_dir, "train_file": str(TRAIN_FILE), "run_dir": str(out),
                                     **changes})


def original_trainer(cfg: RunConfig, model, tokenizer, records: list[dict], out: Path, budget,
                     seq: int = ORIGINAL_SEQ) -> Trainer:
    """The first attempt's setup: the plain Trainer on records padded (and truncated) to `seq` (128)."""
    cut = [{k: v[:seq] for k, v in r.items()} for r in records]
    args = TrainingArguments(
        output_dir=str(out), max_steps=10**6, per_device_train_batch_size=1, gradient_accumulation_steps=4,
        optim="adafactor", learning_rate=cfg.learning_rate, bf16=cfg.dtype == "bfloat16",
        use_cpu=cfg.device == "cpu", seed=cfg.seed, logging_steps=cfg.logging_steps, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=seq,
                                      label_pad_token_id=IGNORE_INDEX)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(cut), data_collator=collator,
                      processing_class=tokenizer, callbacks=[budget])
    trainer.remove_callback(PrinterCallback)
    return trainer


def our_trainer(cfg: RunConfig, model, tokenizer, records: list[dict], out: Path, budget, options,
                packed: bool = False) -> Trainer:
    return build_trainer(dataclasses.replace(cfg, max_steps=10**6), model, tokenizer, Dataset.from_list(records),
                         out, [budget], packed=packed, gradient_checkpointing=options.gradient_checkpointing,
                         torch_compile=options.torch_compile)


def make_model(model_dir: str | None, architecture: dict | None, cfg: RunConfig, tokenizer):
    """A fresh copy of the same weights: loaded from the embedded folder, or Gemma 2B seeded."""
    if architecture is None:
        return load_model(model_dir, cfg, tokenizer)
    torch.manual_seed(0)
    config = GemmaConfig(**architecture, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    config._attn_implementation = cfg.attn_implementation
    with torch.device(cfg.device):  # initialised where it trains: no 10 GB float32 copy on the host
        return GemmaForCausalLM._from_config(config, dtype=DTYPES[cfg.dtype])


def official_peak_memory(cfg: RunConfig, make, tokenizer, out: Path) -> int:
    """Peak CUDA memory of the official configuration on records of the full max_seq_length."""
    n = cfg.max_seq_length
    prompt = n // 3
    ids = [tokenizer.bos_token_id] + [(7 * i) % 900 + 10 for i in range(n - 1)]
    records = [{"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]}] * 32
    model = make(cfg)
    torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(dataclasses.replace(cfg, max_steps=3), model, tokenizer, Dataset.from_list(records), out)
    trainer.train()
    peak = torch.cuda.max_memory_allocated()
    del trainer, model
    free_device_memory()
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemma-2b", action="store_true", help="Gemma 2B architecture, random weights, CUDA bf16")
    parser.add_argument("--tokens", type=int, help="non-padding tokens per configuration (default 40,000 CPU, 200,000 GPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--batch-size", type=int, help="our micro-batch (default: the profile's batch_size)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="ours with activation checkpointing")
    parser.add_argument("--torch-compile", action="store_true", help="ours through torch.compile")
    parser.add_argument("--packed", action="store_true", help="also ours with padding-free packed batches")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    architecture = (GEMMA_2B if cuda else STAND_IN) if args.gemma_2b else None
    params_file = REPO_ROOT / "params" / ("m44.yaml" if args.gemma_2b else "embedded.yaml")
    tokens = args.tokens or (200_000 if args.gemma_2b and cuda else 40_000)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        traces = load_traces(TRAIN_FILE)
        model_dir = str(build_embedded(traces, seed=0, out_dir=tmp / "embedded"))
        device_changes = {} if cuda or not args.gemma_2b else {"device": "cpu", "dtype": "float32"}
        cfg = run_config(params_file, model_dir, tmp / "run", **device_changes)
        ours_cfg = dataclasses.replace(cfg, **{**ORIGINAL, "batch_size": args.batch_size or cfg.batch_size})
        tokenizer = load_tokenizer(model_dir)
        tokenizer.padding_side = "right"
        records = encode_traces(traces, tokenizer, MAX_ENCODED_LENGTH)
        truncated = sum(len(r["input_ids"]) > ORIGINAL_SEQ for r in records)

        def make(c):
            return make_model(model_dir, architecture, c, tokenizer)

        peak = measure_peak_flops(cfg.device, DTYPES[cfg.dtype], budget_s=2.0)
        model_name = ("Gemma 2B architecture, random weights" if architecture is GEMMA_2B else
                      "STAND-IN: tiny Gemma architecture (no CUDA GPU here)" if architecture else "embedded")
        print(f"model: {model_name}; device {cfg.device}, dtype {cfg.dtype}, attention {cfg.attn_implementation}; "
              f"torch threads {torch.get_num_threads()}")
        print(f"data: {len(records)} records of {TRAIN_FILE.name}; {truncated} longer than {ORIGINAL_SEQ} tokens "
              f"(the original truncates them); {tokens:,} non-padding tokens per configuration")
        print(f"device peak: {peak.flops / 1e9:,.1f} GFLOP/s ({peak.source})")

        options = (", checkpointing" if args.gradient_checkpointing else "") + (
            ", torch.compile" if args.torch_compile else "")
        ours_settings = f"{ours_cfg.batch_size} x {ours_cfg.gradient_accumulation_steps}, %s, label-position logits"
        configurations = [
            ("original", cfg, original_trainer, f"1 x 4, padded to {ORIGINAL_SEQ}, full logits"),
            ("ours", ours_cfg, lambda *a: our_trainer(*a, args), ours_settings % "length-grouped" + options),
        ]
        if args.packed:  # measured, not used: see PACK_SEQUENCES in lib/training_worker.py
            configurations.append(("ours, packed", ours_cfg, lambda *a: our_trainer(*a, args, packed=True),
                                   ours_settings % "packed (no padding)" + options))
        rows = []
        for name, c, build, settings in configurations:
            model = make(c)
            n_params = sum(p.numel() for p in model.parameters())
            budget = TokenBudget(tokens, c.device)
            build(c, model, tokenizer, records, tmp / name.replace(", ", "-"), budget).train()
            counted, seconds = budget.measured
            rows.append((name, settings, counted, seconds, counted / seconds, n_params))
            del model
            free_device_memory()
        memory = official_peak_memory(cfg, make, tokenizer, tmp / "official") if args.gemma_2b and cuda else None

    print(f"\nparameters: {rows[0][5]:,}\n")
    print("| configuration | micro-batch x accumulation, batches, loss | non-padding tokens | seconds | tokens/s | utilization |")
    print("|---|---|---|---|---|---|")
    for name, settings, counted, seconds, rate, n_params in rows:
        print(f"| {name} | {settings} | {counted:,} | {seconds:.1f} | {rate:,.0f} | "
              f"{6 * n_params * rate / peak.flops:.2%} |")
    if memory is not None:
        print(f"\nofficial configuration peak memory (1 x 4, {cfg.max_seq_length}-token records, Adafactor, bf16): "
              f"{memory / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)")
    print(f"speedup: {rows[1][4] / rows[0][4]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
