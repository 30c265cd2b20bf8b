"""Building a model from a committed config: transformers' own seeded init against lib.model_builder.init_model.

    python bench/bench_init.py [--config models/gemma-2b/config.json] [--dtype bfloat16]

In one process, one after the other, the same architecture in the same dtype on the CPU:

  transformers  torch.manual_seed, then AutoModelForCausalLM.from_config: torch's default init of every
                layer, then transformers' normal_ draws over every matrix again
  ours          lib.model_builder.init_model: meta device, empty storage, one seeded random byte per weight

then saving ours as a model folder (save_pretrained, as the build does) and building ours a second
time to show it is the same bytes (sha256 of every tensor). Prints seconds and peak RSS above the
start for each.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from transformers import AutoModelForCausalLM

from lib.model_builder import init_model, model_config_path, read_config
from lib.model_loading import DTYPES
from lib.throughput import peak_memory, reset_peak_memory


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=model_config_path("gemma-2b-shape"))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    config, dtype = read_config(args.config), DTYPES[args.dtype]
    rows = []

    def measure(label, fn):
        gc.collect()
        start = psutil.Process().memory_info().rss
        reset_peak_memory("cpu")
        t0 = time.perf_counter()
        result = fn()
        rows.append((label, time.perf_counter() - t0, peak_memory("cpu")[0] - start))
        print(f"{label}: {rows[-1][1]:.1f} s", flush=True)
        return result

    def transformers_init():
        torch.manual_seed(args.seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)

    measure("transformers: from_config, seeded", transformers_init)  # dropped at once
    ours = measure("ours: lib.model_builder.init_model", lambda: init_model(config, args.seed, dtype))
    first = fingerprint(ours)
    with tempfile.TemporaryDirectory(prefix="bench-init-") as tmp:
        measure("ours: save_pretrained", functools.partial(ours.save_pretrained, tmp))
    del ours
    again = measure("ours again, same seed", lambda: init_model(config, args.seed, dtype))
    same = fingerprint(again) == first
    n = sum(p.numel() for p in again.parameters())

    print(f"\n{args.config.name} of {args.config.parent.name}: {n:,} parameters in {args.dtype}; "
          f"torch threads {torch.get_num_threads()}")
    print("\n| step | seconds | peak RSS above the start (GiB) |\n|---|---|---|")
    for label, seconds, memory in rows:
        print(f"| {label} | {seconds:.1f} | {memory / 2**30:.2f} |")
    print(f"\nsame seed, same tensors: {same} (sha256 {first})")
    print(f"ours vs transformers: {rows[0][1] / rows[1][1]:.1f}x faster")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
