"""M44.3: complete the evidence set whatever happened, gather the facts, render the summaries, hash it all."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from lib.config import RunConfig, save_invalid_parameters
from lib.contract import (
    CONFIG, DATA_REPORT, ENV_SNAPSHOT, EVAL_RESULTS, FAILURE_ANALYSIS, FINAL_MODEL, GPU_SNAPSHOT, MANIFEST, MODEL_CARD,
    PHASE_ORDER, PHASES, PREFLIGHT, SUMMARY, SUMMARY_FACTS, TRAINING_LOG, TRAINING_METRICS, required,
)
from lib.evidence import read_json, write_json, write_manifest, write_text
from lib.run_folder import is_official, read_claim
from lib.repository import describe_repository
from lib.snapshot import write_env_snapshot, write_gpu_snapshot
from lib.model_card import render_model_card
from lib.summary import caveats, configuration, finetune_facts, outcome_line, render_failure_analysis, render_summary
from lib.telemetry_summary import load_telemetry
from lib.verify import consistency

GUARD = "repository guard"


def repository_guard(before: dict, run_dir: Path) -> tuple[dict, dict | None]:
    """The repository state for the facts, and a failed phase record if it changed during the run.

    The run writes only inside its folder: a change anywhere it could write fails the run.
    """
    after = describe_repository(run_dir)
    if (before["status"], before["diff_sha256"]) == (after["status"], after["diff_sha256"]):
        return {**before, "unchanged": True, "change": ""}, None
    new_lines = sorted(set(after["status"].splitlines()) - set(before["status"].splitlines()))
    cause = "the repository changed outside the run folder during the run: " + (
        ", ".join(new_lines[:5]) or "tracked files were edited (git diff differs)")
    guard = {"name": GUARD, "status": "failed", "duration_s": 0.0, "cause": cause, "traceback": ""}
    return {**before, "unchanged": False, "change": cause}, guard


def consolidate_from_files(run_dir: Path, cause: str) -> dict:
    """Consolidate a run whose notebook stopped before M44.3, from config.json and phases.json alone.

    Used by lib.execute when the kernel died or was stopped between phases: the phase that was
    running failed with `cause`, the phases that never started are skipped, and the evidence is
    completed exactly as the notebook would have completed it.
    """
    # Either file is missing when the notebook stopped before its first cell got that far.
    if not (run_dir / CONFIG).exists():
        save_invalid_parameters(run_dir, {})
    cfg, params = _read_config(run_dir)
    state = (read_json(run_dir / PHASES) if (run_dir / PHASES).exists()
             else {"repository_before": describe_repository(run_dir), "phases": []})
    phases = state["phases"]
    for record in phases:
        if record["status"] == "running":
            record.update(status="failed", cause=cause)
    started = {record["name"] for record in phases}
    never = [name for name in PHASE_ORDER if name not in started]
    if never and not any(record["status"] == "failed" for record in phases):
        # Stopped between phases, or before the first: the next phase is the one that did not happen.
        phases.append({"name": never.pop(0), "status": "failed", "duration_s": 0.0, "cause": cause, "traceback": ""})
    phases += [{"name": name, "status": "skipped", "duration_s": 0.0, "cause": f"skipped because the run stopped: {cause}",
                "traceback": ""} for name in never]
    repository, guard = repository_guard(state["repository_before"], run_dir)
    if guard is not None:
        phases.append(guard)
    write_json(run_dir / PHASES, {"repository_before": state["repository_before"], "phases": phases})
    claim = read_claim(run_dir)
    return consolidate(run_dir, cfg, params, phases, repository, claim.launcher if claim else "unknown")


def record_late_failure(run_dir: Path, phase: str, cause: str, traceback: str) -> dict:
    """A failure after M44.3 (rendering the report): added as a failed phase, and the evidence consolidated again.

    The facts, the summary, the failure analysis and the manifest are rewritten from the files, so the
    folder says plainly that the run failed at the end, and why. Returns the new facts.
    """
    state, facts = read_json(run_dir / PHASES), read_json(run_dir / SUMMARY_FACTS)
    phases = [*state["phases"], {"name": phase, "status": "failed", "duration_s": 0.0, "cause": cause,
                                 "traceback": traceback}]
    write_json(run_dir / PHASES, {**state, "phases": phases})
    cfg, params = _read_config(run_dir)
    return consolidate(run_dir, cfg, params, phases, facts["repository"], facts["launcher"])


def _read_config(run_dir: Path) -> tuple[RunConfig | None, dict]:
    """The run's config (None when its parameters were invalid) and its parameters as config.json records them."""
    cfg = RunConfig.load(run_dir)
    return cfg, cfg.to_dict() if cfg else read_json(run_dir / CONFIG)["parameters"]


def consolidate(run_dir: Path, cfg: RunConfig | None, params: dict, phases: list[dict], repository: dict,
                launcher: str) -> dict:
    """Fill in what skipped phases could not write, then write the facts, the summaries and the manifest.

    `phases` are the run's phase records as dicts (name, status, duration_s, cause, traceback), in order;
    `repository` is the state recorded at the start plus `unchanged` and `change` from the guard;
    `launcher` is who claimed the folder. Returns the facts.
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
    for stray in sorted(run_dir.glob(".*.tmp")):  # half a write of a process killed mid-write: never evidence
        stray.unlink()
        print(f"removed {stray.name}: a temporary file left by a process stopped while writing")
    facts = gather_facts(run_dir, cfg, params, phases, repository, launcher)
    write_facts(run_dir, facts)
    missing = [name for name in required(failed is None) if not (run_dir / name).exists()]
    if missing:  # every path above writes them; a check, not an assert, so that it holds under python -O
        raise RuntimeError(f"evidence set incomplete after consolidation: {', '.join(missing)} missing")
    if problems := consistency(run_dir):
        # The run did its work; the writer and the checker disagree. The results stay, and the folder says so.
        facts = {**facts, "inconsistent": problems}
        write_facts(run_dir, facts)
        for problem in problems:
            print(f"EVIDENCE INCONSISTENT: {problem}")
    print(outcome_line(facts))
    print(f"evidence in {run_dir}: {', '.join(required(failed is None) + (MANIFEST,))}")
    return facts


def write_facts(run_dir: Path, facts: dict) -> None:
    """The facts, the text rendered from them (the model card, the summary, the failure analysis) and the manifest
    over it all."""
    write_json(run_dir / SUMMARY_FACTS, facts)
    if facts["model_card"]:  # after evaluation, whose results it states; replaces the card peft saves
        write_text(run_dir / MODEL_CARD, render_model_card(facts, read_json(run_dir / CONFIG)["parameters"]))
    if facts["failed"] is not None:
        write_text(run_dir / FAILURE_ANALYSIS, render_failure_analysis(facts))
    write_text(run_dir / SUMMARY, render_summary(facts))
    write_manifest(run_dir)


def gather_facts(run_dir: Path, cfg: RunConfig | None, params: dict, phases: list[dict], repository: dict,
                 launcher: str) -> dict:
    """Everything the summary states, read once from the run's state and its evidence files."""
    failed = next((p for p in phases if p["status"] == "failed"), None)
    metrics = read_json(run_dir / TRAINING_METRICS)
    history = metrics.get("history") or []
    results_path = run_dir / EVAL_RESULTS
    evaluation = read_json(results_path)["metrics"] if results_path.exists() else None
    config = read_json(run_dir / CONFIG)
    preflight = run_dir / PREFLIGHT
    state = read_json(run_dir / PHASES) if (run_dir / PHASES).exists() else {}
    return {
        "status": "completed" if failed is None else f"failed in {failed['name']}",
        "failed": None if failed is None else {k: failed[k] for k in ("name", "cause", "duration_s")},
        "skipped": [{"name": p["name"], "cause": p["cause"]} for p in phases if p["status"] == "skipped"],
        "run_folder": run_dir.name,
        "launcher": launcher,
        # A run stepped through in Jupyter: what showed it, how often each phase ran, parameters changed (lib/run.py).
        "interactive": state.get("interactive"),
        "rehearsal": state.get("rehearsal"),  # an official run: what armed it (lib/rehearsal.py)
        "model": cfg.model_name if cfg else f"{params.get('model_name')!r} (parameters invalid)",
        "device_dtype": f"{cfg.device} / {cfg.dtype}" if cfg else "unknown",
        "processes": process_facts(cfg, metrics),
        "hardware": _hardware(),
        "run_time_s": round(sum(p["duration_s"] for p in phases), 3),
        "config_sha256": config.get("sha256", "n/a"),
        "data": data_facts(run_dir),
        "preflight": read_json(preflight)["checks"] if preflight.exists() else None,
        "repository": {k: repository.get(k) for k in ("commit", "dirty", "unchanged", "change")},
        "caveats": caveats(cfg.to_dict()) if cfg else [],  # from valid parameters only
        "configuration": configuration(cfg.to_dict()) if cfg else "other",
        "official_folder": is_official(run_dir),
        "memory": metrics.get("memory"),
        "finetune": finetune_facts(cfg.to_dict() if cfg else None, metrics.get("finetune")),
        # Written with the facts (write_facts) for every final checkpoint, full fine-tunes too.
        "model_card": MODEL_CARD if cfg and (run_dir / FINAL_MODEL).is_dir() else None,
        "training": {
            "status": metrics["status"],
            "steps_completed": metrics["steps_completed"],
            "runtime_s": metrics["runtime_s"],
            "skipped_writes": metrics.get("skipped_writes", 0),  # rewrites between steps given up: a file held
            "first": _point(history[0]) if history else None,
            "last": _point(history[-1]) if history else None,
        },
        "evaluation": evaluation,
        "phases": [{k: p[k] for k in ("name", "status", "duration_s", "cause")} for p in phases],
        "plots": plot_files(run_dir),
        "telemetry": load_telemetry(run_dir),
        "failure": None if failed is None else {
            "last_step": history[-1]["step"] if history else None,
            "last_loss": history[-1]["loss"] if history else None,
            "traceback": failed["traceback"],
        },
    }


def process_facts(cfg: RunConfig | None, metrics: dict) -> dict:
    """How many processes trained, on which backend and sharding: the worker's record when it ran, else the config."""
    block = metrics.get("processes") or {}
    count = block.get("world_size") or (cfg.num_processes if cfg else 1)
    return {"count": count, "backend": block.get("backend"), "sharding": cfg.sharding if cfg else None}


def data_facts(run_dir: Path) -> dict | None:
    """The data files (path, sha256, records) and the data policy's one-line outcome, from data_report.json."""
    path = run_dir / DATA_REPORT
    if not path.exists():  # pre-flight did not get as far as loading both files
        return None
    report = read_json(path)
    return {"files": report["files"], "summary": report["summary"]}


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
