"""Batched vs one-at-a-time greedy generation on the eval set: same outputs, how much faster.

    OMP_NUM_THREADS=1 python bench/bench_generation.py [--model DIR] [--params params/embedded.yaml]

It loads one model (by default the untrained embedded model, built from the training file into
a temporary folder; or any saved model folder, e.g. submission_runs/<run>/checkpoints/final),
generates on every eval item with lib.generation.generate_greedy twice, batched
(eval_batch_size) and one item at a time, checks the outputs are identical, and prints a table
and, as its last line, the speedup. Settings resolve as in lib.reevaluate: the defaults,
then the params file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

from profiles import build_embedded
from lib.config import REPO_ROOT
from lib.data import load_eval, load_traces
from lib.generation import generate_greedy
from lib.model_loading import load_model, load_tokenizer
from lib.reevaluate import resolve_config


def timed_generation(model, tokenizer, prompts: list[str], batch_size: int,
                     max_new_tokens: int) -> tuple[list[dict], float]:
    """generate_greedy's records and wall seconds; its progress lines are dropped."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        records = generate_greedy(model, tokenizer, prompts, batch_size, max_new_tokens)
    return records, time.perf_counter() - t0


def report_differences(items: list[dict], batched: list[dict], single: list[dict]) -> int:
    differing = [(item, b, s) for item, b, s in zip(items, batched, single) if b["output"] != s["output"]]
    for item, b, s in differing[:5]:
        prefix = next((n for n, (x, y) in enumerate(zip(b["output"], s["output"])) if x != y),
                      min(len(b["output"]), len(s["output"])))
        print(f"DIFFERENT {item['id']}: same for {prefix} characters, then\n"
              f"  batched: {b['output'][prefix:prefix + 60]!r}\n  single:  {s['output'][prefix:prefix + 60]!r}")
    return len(differing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a saved model folder (default: build the untrained embedded model)")
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params" / "embedded.yaml")
    parser.add_argument("--eval-file", type=Path, default=REPO_ROOT / "data" / "eval_v2.jsonl")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        model_dir = args.model
        if model_dir is None:
            traces = load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl")
            model_dir = build_embedded(traces, seed=0, out_dir=Path(tmp) / "embedded")
        cfg = resolve_config(args.params, model_dir, args.eval_file, Path(tmp) / "unused")
        items = load_eval(args.eval_file)
        prompts = [item["prompt"] for item in items]
        tokenizer = load_tokenizer(str(model_dir))
        model = load_model(str(model_dir), cfg, tokenizer)
        print(f"model: {'untrained embedded (built)' if args.model is None else model_dir}; device {cfg.device}, "
              f"dtype {cfg.dtype}, max_new_tokens {cfg.max_new_tokens}, torch threads {torch.get_num_threads()}")
        timed_generation(model, tokenizer, prompts[:2], 2, 4)  # warm-up: first-call allocations
        batched, t_batched = timed_generation(model, tokenizer, prompts, cfg.eval_batch_size, cfg.max_new_tokens)
        single, t_single = timed_generation(model, tokenizer, prompts, 1, cfg.max_new_tokens)

    print("\n| mode | items | tokens generated | seconds | items/s |\n|---|---|---|---|---|")
    for mode, records, seconds in ((f"batched ({cfg.eval_batch_size})", batched, t_batched),
                                   ("one at a time", single, t_single)):
        tokens = sum(r["tokens"] for r in records)
        print(f"| {mode} | {len(items)} | {tokens} | {seconds:.1f} | {len(items) / seconds:.2f} |")
    differing = report_differences(items, batched, single)
    print(f"\noutputs identical: {differing == 0} ({len(items) - differing}/{len(items)} equal)")
    print(f"speedup: {t_single / t_batched:.2f}x (batched vs one at a time)")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
