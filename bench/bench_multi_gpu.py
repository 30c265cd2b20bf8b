"""DDP and FSDP2 on several GPUs, through the run's own workers: the check the CPU tests cannot make.

    python bench/bench_multi_gpu.py [--gpus 2] [--steps 6] [--layers 18]      # on a machine with >= 2 GPUs

Accelerate shards only on accelerators, so `sharding: fsdp` is tested on the CPU at the level of
FSDP2 itself (tests/fsdp_ranks.py). Run this once on a multi-GPU machine (no hub needed: Gemma 2B's
architecture with random weights, the embedded tokenizer, whose ids are valid Gemma ids). For
`sharding: none` (DDP) and `sharding: fsdp` it starts lib.training_worker through torchrun exactly as the
notebook does (lib.launcher.run_worker) with the official parameters, AdamW (FSDP refuses Adafactor),
bfloat16, `--steps` steps; then the sharded evaluation (lib.evaluation_worker) on the first 32 eval items.
It prints per sharding the loss at each step, rank 0's peak GPU memory and the time, and checks:
  - both runs complete, and their first loss agrees (same weights, same data) within 1%;
  - FSDP's peak memory per GPU is below DDP's (it shards weights, gradients and optimizer state);
  - the saved model loads as one ordinary folder with its embedding still tied to the output head;
  - the sharded evaluation of the FSDP checkpoint equals one process's, output for output.
Exit code 0 when every check holds. Copy the printed table into docs/BENCHMARKS.md with the date,
the GPUs and the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GemmaConfig, GemmaForCausalLM

from profiles import build_embedded
from lib.config import REPO_ROOT, load_config
from lib.contract import CONFIG, EVAL_RESULTS, FINAL_MODEL, TRAINING_METRICS
from lib.data import load_eval, load_traces
from lib.evaluation import generate_for
from lib.evidence import read_json, write_json
from lib.launcher import run_worker
from lib.model_loading import load_tokenizer

GEMMA_2B = dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256)
EVAL_ITEMS = 32
FIRST_LOSS_RTOL = 0.01  # bfloat16 forward passes of the same weights on the same records


def build_model(out: Path, layers: int) -> Path:
    """Gemma 2B's architecture (or fewer layers), random weights, bfloat16, with the embedded tokenizer."""
    tokenizer_dir = build_embedded(load_traces(REPO_ROOT / "data" / "dev-reasoning-v2.jsonl"), 0, out / "tok")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    config = GemmaConfig(**{**GEMMA_2B, "num_hidden_layers": layers}, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    # Initialised on the host in bfloat16 (5 GB): this process keeps no CUDA memory the ranks would lack.
    model = GemmaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model"


def run(tmp: Path, model_dir: Path, sharding: str, gpus: int, steps: int) -> dict:
    run_dir = tmp / sharding
    run_dir.mkdir()
    eval_file = tmp / "eval_subset.jsonl"
    cfg = load_config(REPO_ROOT / "params" / "m44.yaml", {
        "model_name": str(model_dir), "num_processes": gpus, "sharding": sharding, "optimizer": "adamw_torch",
        "max_steps": steps, "logging_steps": 1, "eval_file": str(eval_file), "max_new_tokens": 32,
        "max_seq_length": 768,  # the embedded tokenizer makes longer sequences than Gemma's (up to 591 tokens)
        "run_dir": str(run_dir)})
    write_json(run_dir / CONFIG, {"valid": True, "sha256": cfg.sha256(), "parameters": cfg.to_dict()})
    t0 = time.perf_counter()
    trained = run_worker("lib.training_worker", [str(run_dir), str(model_dir)], gpus, "training process")
    seconds = time.perf_counter() - t0
    if trained.returncode != 0:
        raise SystemExit(f"{sharding}: training failed: {trained.cause()}\n{trained.details()}")
    evaluated = run_worker("lib.evaluation_worker", [str(run_dir), str(model_dir), str(run_dir / FINAL_MODEL)], gpus,
                           "evaluation process")
    if evaluated.returncode != 0:
        raise SystemExit(f"{sharding}: evaluation failed: {evaluated.cause()}\n{evaluated.details()}")
    metrics = read_json(run_dir / TRAINING_METRICS)
    return {"cfg": cfg, "run_dir": run_dir, "seconds": seconds, "losses": [h["loss"] for h in metrics["history"]],
            "peak": metrics["history"][-1]["peak_memory_bytes"], "processes": metrics["processes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="processes, one per GPU (default 2)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (default 6)")
    parser.add_argument("--layers", type=int, default=GEMMA_2B["num_hidden_layers"], help="decoder layers (18: Gemma 2B)")
    args = parser.parse_args(argv)
    if torch.cuda.device_count() < args.gpus:
        raise SystemExit(f"--gpus {args.gpus}: {torch.cuda.device_count()} CUDA devices visible")
    problems = []
    with tempfile.TemporaryDirectory(prefix="bench-multi-gpu-") as tmp:
        tmp = Path(tmp)
        model_dir = build_model(tmp, args.layers)
        items = load_eval(REPO_ROOT / "data" / "eval_v2.jsonl")[:EVAL_ITEMS]
        (tmp / "eval_subset.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
        runs = {sharding: run(tmp, model_dir, sharding, args.gpus, args.steps) for sharding in ("none", "fsdp")}

        print(f"\n{args.gpus} x {torch.cuda.get_device_name(0)}; Gemma architecture, {args.layers} layers, "
              f"random weights, bf16, AdamW; torch {torch.__version__}")
        print("| sharding | loss by step | rank 0 peak GPU memory | training wall time |\n|---|---|---|---|")
        for sharding, r in runs.items():
            losses = " ".join(f"{loss:.4f}" for loss in r["losses"])
            print(f"| {sharding} | {losses} | {r['peak'] / 2**30:.2f} GiB | {r['seconds']:.0f} s |")
        ddp, fsdp = runs["none"], runs["fsdp"]
        if abs(fsdp["losses"][0] - ddp["losses"][0]) > FIRST_LOSS_RTOL * abs(ddp["losses"][0]):
            problems.append(f"first loss: DDP {ddp['losses'][0]:.4f}, FSDP {fsdp['losses'][0]:.4f}")
        if fsdp["peak"] >= ddp["peak"]:
            problems.append(f"FSDP's peak memory {fsdp['peak']} is not below DDP's {ddp['peak']}")
        saved = AutoModelForCausalLM.from_pretrained(fsdp["run_dir"] / FINAL_MODEL)
        if saved.get_input_embeddings().weight is not saved.get_output_embeddings().weight:
            problems.append("the FSDP checkpoint's embedding is not tied to its output head")
        del saved
        # One process (this one, on cuda:0) evaluating the FSDP checkpoint, as the kernel does for num_processes 1.
        one = generate_for(str(fsdp["run_dir"] / FINAL_MODEL), fsdp["cfg"], items, "trained")
        shared = read_json(fsdp["run_dir"] / EVAL_RESULTS)["items"]
        differ = [i for i, (a, b) in enumerate(zip(one, shared)) if a["output"] != b["trained"]["output"]]
        if differ:
            problems.append(f"sharded evaluation differs from one process on items {differ}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK: DDP and FSDP2 train, save and evaluate as one process does" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
