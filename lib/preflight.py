"""M44.0: snapshot everything, then check all the one shot needs before spending it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lib.config import RunConfig
from lib.data import check_datasets, load_eval, load_traces
from lib.embedded import build_embedded_model
from lib.modeling import load_tokenizer
from lib.render import encode_traces
from lib.snapshot import write_env_snapshot, write_gpu_snapshot

BASE_MODEL_DIR = "base_model"  # where the embedded model is built, inside the run folder


@dataclass(frozen=True)
class Prepared:
    """Everything the later phases take from pre-flight."""

    traces: list[dict]
    eval_items: list[dict]
    train_examples: list[dict]  # tokenized, loss-masked
    model_source: str  # a hub id or a local folder, loaded the same way either way


def run_preflight(cfg: RunConfig, run_dir: Path) -> Prepared:
    """Write the snapshots, run every check, print a pass/fail table, and raise if any failed."""
    write_env_snapshot(run_dir)
    write_gpu_snapshot(run_dir)

    found: dict = {}
    checks: list[tuple[str, Callable[[], str]]] = [
        ("device", lambda: _check_device(cfg)),
        ("training data", lambda: _load(found, "traces", load_traces, cfg.path("train_file"))),
        ("eval data", lambda: _load(found, "eval_items", load_eval, cfg.path("eval_file"))),
        ("train/eval overlap", lambda: _check_overlap(found)),
        ("model source", lambda: _resolve_model(found, cfg, run_dir)),
        ("sequence length", lambda: _encode(found, cfg)),
    ]
    failures = []
    for name, check in checks:
        try:
            detail, ok = check(), True
        except Exception as exc:  # each check reports; the phase fails after all have run
            detail, ok = f"{type(exc).__name__}: {exc}", False
            failures.append(f"{name}: {detail}")
        print(f"[{'PASS' if ok else 'FAIL'}] {name:<20} {detail}", flush=True)
    if failures:
        raise RuntimeError("pre-flight failed: " + "; ".join(failures))
    return Prepared(**{k: found[k] for k in ("traces", "eval_items", "train_examples", "model_source")})


def _check_device(cfg: RunConfig) -> str:
    if cfg.device == "cpu":
        return "CPU run (device: cpu)"
    if not torch.cuda.is_available():
        # Never fall back to the CPU: the official run is defined on the GPU.
        raise RuntimeError("no CUDA device found, and device is 'cuda'; there is no CPU fallback")
    return torch.cuda.get_device_name(0)


def _load(found: dict, key: str, loader: Callable, path: Path) -> str:
    found[key] = loader(path)
    return f"{len(found[key])} records from {path.name}"


def _check_overlap(found: dict) -> str:
    if "traces" not in found or "eval_items" not in found:
        raise RuntimeError("not checked: a data file did not load")
    problems = check_datasets(found["traces"], found["eval_items"])
    if problems:
        raise ValueError("; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return "no duplicate prompts, no eval prompt in training"


def _resolve_model(found: dict, cfg: RunConfig, run_dir: Path) -> str:
    if cfg.uses_embedded_model:
        if "traces" not in found:
            raise RuntimeError("not built: the embedded tokenizer is trained on the training data")
        found["model_source"] = str(build_embedded_model(found["traces"], cfg.seed, run_dir / BASE_MODEL_DIR))
        return f"embedded model built in {BASE_MODEL_DIR}/"
    found["model_source"] = cfg.model_name
    local = Path(cfg.model_name)
    return f"local folder {local}" if local.is_dir() else f"hub model {cfg.model_name}"


def _encode(found: dict, cfg: RunConfig) -> str:
    if "model_source" not in found or "traces" not in found:
        raise RuntimeError("not checked: no model source or no training data")
    tokenizer = load_tokenizer(found["model_source"])
    found["train_examples"] = encode_traces(found["traces"], tokenizer, cfg.max_seq_length)
    longest = max(len(e["input_ids"]) for e in found["train_examples"])
    return f"longest record {longest} tokens <= max_seq_length {cfg.max_seq_length}"
