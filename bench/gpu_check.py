"""The full-size check for a lent GPU: Gemma 2B's architecture in bfloat16, the official configuration.

    python bench/gpu_check.py                  # on a CUDA GPU (a few minutes)
    python bench/gpu_check.py --tiny           # the same code on the CPU with the embedded config, in seconds
    python bench/gpu_check.py --out DIR        # the system metrics timeline into DIR (default build/gpu-check/)

No hub and no internet needed: the model is models/gemma-2b/config.json with seeded random weights,
built on the device (lib.model_builder.init_model), with a tokenizer trained on the training records
(lib.model_builder.build_tokenizer, ~1,570 tokens; the embedding keeps Gemma's 256,000 rows). It trains
`--steps` optimizer steps through the project's trainer (lib.training_worker.build_trainer) with the
official parameters (params/m44.yaml: micro-batch 1, gradient accumulation 4, max_seq_length 512,
Adafactor, bf16, eager attention), and prints:

  ours       non-padding tokens/s (the Trainer's own count; the first step excluded as warm-up)
  MFU        6 x parameters x tokens/s over the bf16 matmul peak measured in the same run
             (lib.throughput.measure_peak_flops), beside the GPU's mean utilisation as NVML sampled it
  machine    the run's system metrics sampler (lib/telemetry.py) around both trainings, phases "ours" and
             "original": GPU utilisation, memory, temperature, power, energy and throttling through NVML (on the
             CPU: this process's CPU share and memory); the timeline goes to --out as system_metrics.jsonl and .png
  memory     the allocator's peak (torch.cuda.max_memory_allocated) and its reserved peak against
             lib.resources' estimate of the tensors' peak, and the device memory in use (CUDA
             contexts included) against the estimate's total: the figures that calibrate
             CUDA_ALLOCATOR_FACTOR and CUDA_CONTEXT_BYTES
  original   the original M44 configuration on the same GPU and weights (bench/bench_training.py:
             the plain Trainer, micro-batch 1 x 4, records padded and truncated to 128 tokens,
             full-vocabulary logits), over the same number of non-padding tokens, and the speedup

On the CPU (--tiny or --device cpu) memory is the process's peak RSS and the estimate's total.

With --finetune lora or qlora the model is saved and loaded again through lib.model_loading (qlora: in 4-bit NF4
by bitsandbytes, after pre-flight's "4-bit quantization" check), wrapped by lib.lora as the training worker wraps
it, and trained the same way; the memory lines then test the adapter modes' estimate, and the comparison with the
original configuration (a full fine-tune) is left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_training import ORIGINAL_SEQ, TokenBudget, original_trainer
from datasets import Dataset
from profiles import load_profile, run_config
from transformers import TrainerCallback

from lib import lora
from lib.config import REPO_ROOT
from lib.contract import TELEMETRY, TIMELINE_PLOT
from lib.cpu_bfloat16 import bfloat16_matmuls
from lib.data import load_traces
from lib.model_builder import build_tokenizer, init_model, model_config_path, read_config
from lib.model_loading import DTYPES, free_device_memory, load_model
from lib.preflight import check_quantization
from lib.prompt_format import IGNORE_INDEX, encode_traces
from lib.resources import estimate_training_memory
from lib.summary import machine_text
from lib.telemetry import SystemSampler, draw_timeline
from lib.telemetry_summary import load_telemetry
from lib.throughput import measure_peak_flops, model_flops_utilization, peak_memory, reset_peak_memory
from lib.training_worker import build_trainer
from lib.units import GIB


class StepClock(TrainerCallback):
    """Non-padding tokens and seconds from the end of the first optimizer step to the end of the last."""

    def __init__(self, device: str):
        self.device = device
        self.t0 = self.t1 = 0.0
        self.tokens0 = self.tokens1 = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.device == "cuda":
            torch.cuda.synchronize()  # time finished work, not queued kernels
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        if state.global_step == 1:
            self.t0, self.tokens0 = now, tokens
        self.t1, self.tokens1 = now, tokens

    @property
    def measured(self) -> tuple[int, float]:
        return self.tokens1 - self.tokens0, self.t1 - self.t0


def device_memory_in_use() -> int:
    """Device memory used by everything on the GPU (this process's CUDA context included)."""
    free, total = torch.cuda.mem_get_info()
    return total - free


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=model_config_path("gemma-2b-shape"), help="a committed model config.json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of ours (default 30)")
    parser.add_argument("--finetune", choices=("full", "lora", "qlora"), default="full",
                        help="what training changes (docs/FINETUNING.md); qlora needs a CUDA GPU and bitsandbytes")
    parser.add_argument("--tiny", action="store_true", help="= --config models/embedded/config.json --device cpu "
                        "--dtype float32 --steps 3 --interval 0.25, with the embedded profile's max_seq_length (its "
                        "tokenizer is small)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "gpu-check",
                        help=f"folder for the system metrics timeline ({TELEMETRY}, {TIMELINE_PLOT}); replaced")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between system metrics samples (default: the run's telemetry_interval_s)")
    args = parser.parse_args(argv)
    changes = {}
    if args.tiny:
        args.config, args.device, args.dtype, args.steps = model_config_path("embedded"), "cpu", "float32", 3
        args.interval = args.interval or 0.25
        changes["max_seq_length"] = load_profile("embedded")["max_seq_length"]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a lent GPU (run it with --tiny to check the script on the CPU)")

    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cfg = run_config("m44", model_name=str(args.config.parent), run_dir=str(Path(tmp) / "run"), device=args.device,
                         dtype=args.dtype, max_steps=args.steps, logging_steps=args.steps, finetune=args.finetune,
                         **changes)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / TELEMETRY).unlink(missing_ok=True)  # this check's timeline only

        def sampled(phase: str) -> SystemSampler:
            return SystemSampler(args.out / TELEMETRY, phase, args.interval or cfg.telemetry_interval_s, args.device)

        traces = load_traces(cfg.path("train_file"))
        tokenizer = build_tokenizer(traces, read_config(args.config).vocab_size)
        tokenizer.padding_side = "right"
        records = encode_traces(traces, tokenizer, cfg.max_seq_length)
        longest = max(len(r["input_ids"]) for r in records)
        loss_tokens = max(sum(label != IGNORE_INDEX for label in r["labels"]) for r in records)

        def make_model():
            t0 = time.perf_counter()
            model = init_model(read_config(args.config, tokenizer), cfg.seed, dtype, args.device, cfg.attn_implementation)
            if cfg.trains_adapter:  # saved and loaded as a run loads its base (qlora: quantized while loading)
                folder = Path(tmp) / "base"
                model.save_pretrained(str(folder))
                tokenizer.save_pretrained(str(folder))
                del model
                free_device_memory()
                print(f"4-bit quantization: {check_quantization(cfg)}")
                model = lora.add_adapter(load_model(str(folder), cfg, tokenizer), cfg, [])
            return model, time.perf_counter() - t0

        peak = measure_peak_flops(args.device, dtype, budget_s=2.0)
        name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"device: {name}; torch {torch.__version__}; {args.config.relative_to(REPO_ROOT)} in {args.dtype}, "
              f"attention {cfg.attn_implementation}")
        print(f"data: {len(records)} records, longest {longest} tokens, longest response {loss_tokens}; "
              f"micro-batch {cfg.batch_size} x accumulation {cfg.gradient_accumulation_steps}, {cfg.optimizer}, "
              f"max_seq_length {cfg.max_seq_length}")
        print(f"device peak: {peak.flops / 1e12:,.3f} TFLOP/s ({peak.source})")

        # Ours: the run's trainer, the official configuration.
        model, build_s = make_model()
        n_params = lora.count_parameters(model)[1]  # a 4-bit tensor counts the parameters it packs
        print(f"model: {n_params:,} parameters, built on {args.device} in {build_s:.1f} s", flush=True)
        clock = StepClock(args.device)
        trainer = build_trainer(cfg, model, tokenizer, Dataset.from_list(records), Path(tmp) / "ours", [clock])
        reset_peak_memory(args.device)
        with bfloat16_matmuls(args.device, dtype), sampled("ours"):
            trainer.train()
        allocated = peak_memory(args.device)[0]
        reserved = torch.cuda.max_memory_reserved() if args.device == "cuda" else None
        in_use = device_memory_in_use() if args.device == "cuda" else None
        tokens, seconds = clock.measured
        ours_rate = tokens / seconds
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        del trainer, model
        free_device_memory()

        if cfg.trains_adapter:  # the original configuration is a full fine-tune: no like-for-like comparison
            original_tokens = None
        else:  # the original configuration, fresh copies of the same weights, as many non-padding tokens
            original_tokens, original_s = run_original(cfg, make_model, tokenizer, records, tokens, Path(tmp),
                                                               sampled("original"))


    footprint = estimate_training_memory(str(args.config.parent), cfg, loss_tokens=loss_tokens, longest_tokens=longest)
    print(f"finetune: {cfg.finetune}; training {footprint.trainable:,} of {footprint.parameters:,} parameters")
    mfu = model_flops_utilization(n_params, tokens, seconds, peak.flops)
    draw_timeline(args.out)
    machine = load_telemetry(args.out)
    ours_machine = machine["phases"][0]
    busy = (f"GPU busy {ours_machine['gpus'][0]['utilization_mean']:.0f}% (NVML, mean of the samples)"
            if ours_machine["gpus"]
            else f"CPU {ours_machine['kernel_cpu_percent_mean']:.0f}% of one core (no GPU sampled)")
    print(f"\nours: {tokens:,} non-padding tokens in {seconds:.1f} s over steps 2-{args.steps}: "
          f"{ours_rate:,.1f} tokens/s; MFU {mfu:.1%}; {busy}; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if args.device == "cuda":
        print(f"memory: allocator peak {allocated / GIB:.2f} GiB (reserved peak {reserved / GIB:.2f} GiB) against the "
              f"estimated tensors' peak {footprint.tensors / GIB:.2f} GiB; device memory in use {in_use / GIB:.2f} GiB "
              f"against the estimated total {footprint.total / GIB:.2f} GiB")
    else:
        print(f"memory: peak RSS {allocated / GIB:.2f} GiB against the estimated total {footprint.total / GIB:.2f} GiB")
    print(f"estimate: {footprint.describe()}")
    print("machine: " + "; ".join(machine_text(phase) for phase in machine["phases"]))
    print(f"timeline: {machine['samples']} samples in {args.out / TELEMETRY}, drawn in {args.out / TIMELINE_PLOT}")
    if original_tokens is not None:
        original_rate = original_tokens / original_s
        print(f"original: {original_tokens:,} non-padding tokens in {original_s:.1f} s: {original_rate:,.1f} tokens/s "
              f"(1 x 4, padded and truncated to {ORIGINAL_SEQ}, full logits)")
        print(f"speedup: {ours_rate / original_rate:.2f}x (ours over the original, non-padding tokens/s)")
    return 0


def run_original(cfg, make_model, tokenizer, records: list[dict], tokens: int, tmp: Path,
                 sampler: SystemSampler) -> tuple[int, float]:
    """The original configuration over as many non-padding tokens as ours trained: (tokens, seconds)."""
    model, _ = make_model()
    budget = TokenBudget(tokens, cfg.device)
    original = original_trainer(dataclasses.replace(cfg, max_steps=10**6), model, tokenizer, records,
                                tmp / "original", budget)
    with bfloat16_matmuls(cfg.device, DTYPES[cfg.dtype]), sampler:
        original.train()
    del original, model
    free_device_memory()
    return budget.measured


if __name__ == "__main__":
    sys.exit(main())
