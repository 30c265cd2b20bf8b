"""M44.3: complete the evidence set whatever happened, gather the facts, render the summaries, hash it all."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from lib.config import RunConfig
from lib.contract import (
    CONFIG, ENV_SNAPSHOT, EVAL_RESULTS, FAILURE_ANALYSIS, GPU_SNAPSHOT, MANIFEST, PREFLIGHT, SUMMARY, SUMMARY_FACTS,
    TRAINING_LOG, TRAINING_METRICS, required,
)
from lib.evidence import read_json, sha256_file, write_json, write_manifest, write_text
from lib.snapshot import write_env_snapshot, write_gpu_snapshot
from lib.summary import outcome_line, render_failure_analysis, render_summary


def consolidate(run_dir: Path, cfg: RunConfig | None, params: dict, phases: list[dict], repository: dict) -> dict:
    """Fill in what skipped phases could not write, then write the facts, the summaries and the manifest.

    `phases` are the run's phase records as dicts (name, status, duration_s, cause, traceback), in order;
    `repository` is the state recorded at the start plus `unchanged` and `change` from the guard.
    Returns the facts.
    """
    failed = next((p for p in phases if p["status"] == "failed"), None)
    training = next((p for p in phases if p["name"] == "training"), None)
    if not (run_dir / ENV_SNAPSHOT).exists():  # pre-flight writes both; it never ran when parameters failed
        write_env_snapshot(run_dir)
    if not (run_dir / GPU_SNAPSHOT).exists():
        write_gpu_snapshot(run_dir)
    if not (run_dir / TRAINING_LOG).exists():
        write_text(run_dir / TRAINING_LOG, f"training did not run: {_why_not(training)}\n")
    if not (run_dir / TRAINING_METRICS).exists():
        write_json(run_dir / TRAINING_METRICS, {
            "status": "failed" if training and training["status"] == "failed" else "skipped",
            "reason": _why_not(training),
            "steps_completed": 0,
            "runtime_s": 0.0,
            "history": [],
        })
    facts = gather_facts(run_dir, cfg, params, phases, repository)
    write_json(run_dir / SUMMARY_FACTS, facts)
    if failed is not None:
        write_text(run_dir / FAILURE_ANALYSIS, render_failure_analysis(facts))
    write_text(run_dir / SUMMARY, render_summary(facts))
    write_manifest(run_dir)

    names = required(failed is None)
    missing = [name for name in names if not (run_dir / name).exists()]
    assert not missing, f"evidence set incomplete: {missing}"  # every path above writes them
    print(outcome_line(facts))
    print(f"evidence in {run_dir}: {', '.join(names + (MANIFEST,))}")
    return facts


def gather_facts(run_dir: Path, cfg: RunConfig | None, params: dict, phases: list[dict], repository: dict) -> dict:
    """Everything the summary states, read once from the run's state and its evidence files."""
    failed = next((p for p in phases if p["status"] == "failed"), None)
    metrics = read_json(run_dir / TRAINING_METRICS)
    history = metrics.get("history") or []
    results_path = run_dir / EVAL_RESULTS
    evaluation = read_json(results_path)["metrics"] if results_path.exists() else None
    config = read_json(run_dir / CONFIG)
    preflight = run_dir / PREFLIGHT
    return {
        "status": "completed" if failed is None else f"failed in {failed['name']}",
        "failed": None if failed is None else {k: failed[k] for k in ("name", "cause", "duration_s")},
        "skipped": [{"name": p["name"], "cause": p["cause"]} for p in phases if p["status"] == "skipped"],
        "run_folder": run_dir.name,
        "model": cfg.model_name if cfg else f"{params.get('model_name')!r} (parameters invalid)",
        "device_dtype": f"{cfg.device} / {cfg.dtype}" if cfg else "unknown",
        "hardware": _hardware(),
        "run_time_s": round(sum(p["duration_s"] for p in phases), 3),
        "config_sha256": config.get("sha256", "n/a"),
        # The files the run read, named and hashed for the report's first screen; their record counts
        # come from the phases that loaded them (absent when the phase did not run).
        "data": None if cfg is None else {
            "train": _data_file(cfg, "train_file", metrics.get("num_records")),
            "eval": _data_file(cfg, "eval_file", evaluation["trained"]["n"] if evaluation else None),
        },
        "preflight": read_json(preflight)["checks"] if preflight.exists() else None,
        "repository": {k: repository.get(k) for k in ("commit", "dirty", "unchanged", "change")},
        "training": {
            "status": metrics["status"],
            "steps_completed": metrics["steps_completed"],
            "runtime_s": metrics["runtime_s"],
            "first": _point(history[0]) if history else None,
            "last": _point(history[-1]) if history else None,
        },
        "evaluation": evaluation,
        "phases": [{k: p[k] for k in ("name", "status", "duration_s", "cause")} for p in phases],
        "plots": plot_files(run_dir),
        "failure": None if failed is None else {
            "last_step": history[-1]["step"] if history else None,
            "last_loss": history[-1]["loss"] if history else None,
            "traceback": failed["traceback"],
        },
    }


def _data_file(cfg: RunConfig, key: str, records: int | None) -> dict:
    path = cfg.path(key)
    return {"file": getattr(cfg, key), "sha256": sha256_file(path) if path.is_file() else None, "records": records}


def plot_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("*.png"))


def _point(record: dict) -> dict:
    return {"step": record["step"], "loss": record["loss"]}


def _why_not(phase: dict | None) -> str:
    if phase is None:
        return "the run stopped before training"
    return phase["cause"] or phase["status"]


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"no GPU; CPU {platform.machine()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
