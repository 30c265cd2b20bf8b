"""Where an optimizer step's time goes on the 0.6M-parameter embedded model: compute or fixed overhead.

    OMP_NUM_THREADS=1 python bench/bench_step_overhead.py [--steps 40]

bench/bench_training.py's two configurations (the original: micro-batch 1 x 4, padded to 128
tokens, full logits; ours: lib.training_worker.build_trainer, length-grouped, label-position logits),
each also on records cut to their last 16 tokens (the original then padded to 16), which divides
the model's work per micro-batch by ~5-8 and leaves the per-step work (Python, autograd bookkeeping, the optimizer's loop over its
tensors, data collation, callbacks) as it is. One thread, CPU time of this process per optimizer
step (time.process_time, steadier than wall time on a shared machine), the first step excluded.
If cutting the work by 8 barely changes the step's time, the step is bound by its overhead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_training import ORIGINAL_SEQ, TRAIN_FILE, original_trainer, run_config
from datasets import Dataset
from transformers import TrainerCallback

from profiles import build_embedded
from lib.config import REPO_ROOT
from lib.data import load_traces
from lib.model_loading import load_model, load_tokenizer
from lib.prompt_format import encode_traces
from lib.training_worker import build_trainer

SHORT = 16  # tokens per record in the cut runs


class CpuClock(TrainerCallback):
    """CPU seconds per optimizer step, the first excluded; stops after `steps` steps."""

    def __init__(self, steps: int):
        self.steps, self.t0, self.t1 = steps, 0.0, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.t0 = time.process_time()
        elif state.global_step == self.steps:
            self.t1 = time.process_time()
            control.should_training_stop = True

    @property
    def per_step(self) -> float:
        return (self.t1 - self.t0) / (self.steps - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        tmp = Path(tmp)
        traces = load_traces(TRAIN_FILE)
        model_dir = str(build_embedded(traces, seed=0, out_dir=tmp / "embedded"))
        cfg = run_config(REPO_ROOT / "params" / "embedded.yaml", model_dir, tmp / "run")
        cfg = dataclasses.replace(cfg, gradient_accumulation_steps=4, optimizer="adafactor", max_steps=10**6)
        tokenizer = load_tokenizer(model_dir)
        tokenizer.padding_side = "right"
        full = encode_traces(traces, tokenizer, cfg.max_seq_length)
        short = [{k: v[-SHORT:] for k, v in r.items()} for r in full]  # the end of the response: all labels

        def ours(records, clock, out):
            return build_trainer(cfg, load_model(model_dir, cfg, tokenizer), tokenizer, Dataset.from_list(records),
                                 out, [clock])

        def original(records, clock, out):
            # The original pads every record to 128 tokens; the cut records to their own 16.
            return original_trainer(cfg, load_model(model_dir, cfg, tokenizer), tokenizer, records, out, clock,
                                    seq=ORIGINAL_SEQ if records is full else SHORT)

        rows = []
        for name, build in (("original, 1 x 4, padded to 128", original), ("ours, 8 x 4, length-grouped", ours)):
            for label, records in (("records as they are", full), (f"records cut to {SHORT} tokens", short)):
                clock = CpuClock(args.steps)
                build(records, clock, tmp / f"{len(rows)}").train()
                rows.append((name, label, clock.per_step))
                print(f"{name}, {label}: {clock.per_step * 1000:.1f} ms CPU per optimizer step", flush=True)

    print("\n| configuration | records | CPU ms per optimizer step |\n|---|---|---|")
    for name, label, per_step in rows:
        print(f"| {name} | {label} | {per_step * 1000:.1f} |")
    for name in dict.fromkeys(r[0] for r in rows):
        whole, cut = (r[2] for r in rows if r[0] == name)
        print(f"{name}: cutting the records to {SHORT} tokens leaves {cut / whole:.0%} of the step's CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
