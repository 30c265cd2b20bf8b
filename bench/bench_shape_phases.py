"""How long the gemma-2b-shape profile's phases take on this machine, outside the notebook.

    python bench/bench_shape_phases.py [--profile gemma-2b-shape] [--native]

With the profile's parameters (params/gemma-2b-shape.yaml) and the run's own functions, one after
the other in one process: building the model folder (lib.model_builder.build_model_from_config:
tokenizer, seeded init, save), loading it (lib.model_loading.load_model), saving it again as training
saves its final checkpoint (save_pretrained), and greedy generation of the profile's eval slice
(lib.generation.generate_greedy, `eval_limit` items, `max_new_tokens`) inside
lib.cpu_bfloat16.bfloat16_matmuls, as evaluation would run it; with --native also without it.
Training steps are timed by bench/bench_memory.py (its last table). Together they give the
profile's wall time on this machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from profiles import load_profile, run_config

from lib.cpu_bfloat16 import bfloat16_matmuls
from lib.data import load_eval, load_traces
from lib.generation import generate_greedy
from lib.model_builder import build_model_from_config, model_config_path
from lib.model_loading import DTYPES, load_model, load_tokenizer


def timed(label: str, rows: list, fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    rows.append((label, time.perf_counter() - t0))
    print(f"{label}: {rows[-1][1]:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gemma-2b-shape")
    parser.add_argument("--native", action="store_true", help="also generate with torch's own bfloat16 kernels")
    args = parser.parse_args(argv)
    limit = load_profile(args.profile)["eval_limit"]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-shape-") as tmp:
        cfg = run_config(args.profile, run_dir=str(Path(tmp) / "run"))
        dtype = DTYPES[cfg.dtype]
        traces = load_traces(cfg.path("train_file"))
        prompts = [item["prompt"] for item in load_eval(cfg.path("eval_file"))[:limit]]
        print(f"profile {args.profile}: {cfg.device}, {cfg.dtype}; eval slice {limit} items x {cfg.max_new_tokens} "
              f"new tokens, batch {cfg.eval_batch_size}; torch threads {torch.get_num_threads()}", flush=True)
        folder = timed("build: tokenizer, seeded init, save", rows, build_model_from_config,
                       model_config_path("gemma-2b-shape"), traces, cfg.seed, cfg.dtype, Path(tmp) / "base_model")
        tokenizer = load_tokenizer(str(folder))
        model = timed("load (lib.model_loading.load_model)", rows, load_model, str(folder), cfg, tokenizer)
        timed("save (as the final checkpoint)", rows, model.save_pretrained, Path(tmp) / "final")
        routes = [("float32 GEMM", bfloat16_matmuls(cfg.device, dtype))]
        if args.native:
            routes.append(("torch's bfloat16 kernels", None))
        for name, context in routes:
            def generate():
                if context is None:
                    return generate_greedy(model, tokenizer, prompts, cfg.eval_batch_size, cfg.max_new_tokens)
                with context:
                    return generate_greedy(model, tokenizer, prompts, cfg.eval_batch_size, cfg.max_new_tokens)
            out = timed(f"generate {limit} items ({name})", rows, generate)
            print(f"  {sum(r['tokens'] for r in out)} tokens generated", flush=True)

    print("\n| phase | seconds |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
