"""M44.3: complete the evidence set whatever happened, summarise it, and hash it."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

import torch

from lib.evaluation import describe
from lib.evidence import MANIFEST_NAME, read_json, write_json, write_manifest, write_text
from lib.snapshot import write_env_snapshot, write_gpu_snapshot

if TYPE_CHECKING:  # run.py imports this module; the type is only needed for annotations
    from lib.run import Run

REQUIRED_ALWAYS = ("env_snapshot.txt", "gpu_snapshot.txt", "training_log.txt", "training_metrics.json", "m44_summary.md")
REQUIRED_ON_SUCCESS = ("evaluation_results.json", "evaluation_summary.md")
REQUIRED_ON_FAILURE = ("failure_analysis.md",)
STATEMENTS = (
    "> M44 is post-submission, evidence-only.",
    "> M42 remains the authoritative submission artifact.",
)


def consolidate(run: Run) -> dict:
    """Fill in what skipped phases could not write, then write the summary and the manifest."""
    failed = run.failed_phase
    training = run.phases.get("training")
    _write_missing_snapshots(run)
    if not (run.dir / "training_log.txt").exists():
        write_text(run.dir / "training_log.txt", f"training did not run: {_why_not(training)}\n")
    if not (run.dir / "training_metrics.json").exists():
        write_json(run.dir / "training_metrics.json", {
            "status": "failed" if training and training.status == "failed" else "skipped",
            "reason": _why_not(training),
            "steps_completed": 0,
            "runtime_s": 0.0,
            "history": [],
        })
    training_metrics = read_json(run.dir / "training_metrics.json")
    eval_path = run.dir / "evaluation_results.json"
    eval_metrics = read_json(eval_path)["metrics"] if eval_path.exists() else None

    if failed is not None:
        write_text(run.dir / "failure_analysis.md", render_failure_analysis(run, training_metrics))
    status = "completed" if failed is None else f"failed in {failed.name}"
    write_text(run.dir / "m44_summary.md", render_summary(run, status, training_metrics, eval_metrics))
    write_manifest(run.dir)

    required = REQUIRED_ALWAYS + (REQUIRED_ON_SUCCESS if failed is None else REQUIRED_ON_FAILURE)
    missing = [name for name in required if not (run.dir / name).exists()]
    assert not missing, f"evidence set incomplete: {missing}"  # every path above writes them
    print(outcome_line(status, training_metrics, eval_metrics))
    print(f"evidence in {run.dir}: {', '.join(required + (MANIFEST_NAME,))}")
    return {"status": status, "run_dir": str(run.dir), "training": training_metrics, "evaluation": eval_metrics}


def outcome_line(status: str, training: dict, evaluation: dict | None) -> str:
    """One deterministic line: the status and the numbers a reviewer looks at first."""
    line = f"M44 {status.upper()}: {training['steps_completed']} training steps"
    history = training.get("history") or []
    if history:
        line += f", loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}"
    if evaluation:
        line += "; " + "; ".join(
            f"{label} accuracy {evaluation[label]['accuracy']:.0%} format {evaluation[label]['format_rate']:.0%}"
            for label in ("baseline", "trained")
        )
    return line


def _write_missing_snapshots(run: Run) -> None:
    # Pre-flight writes these; when it never ran (invalid parameters) they are written here.
    if not (run.dir / "env_snapshot.txt").exists():
        write_env_snapshot(run.dir)
    if not (run.dir / "gpu_snapshot.txt").exists():
        write_gpu_snapshot(run.dir)


def _why_not(phase) -> str:
    if phase is None:
        return "the run stopped before training"
    return phase.cause or phase.status


def _repository_verdict(run: Run) -> str:
    guard = run.phases.get("repository guard")
    if guard is not None:
        return f"CHANGED during the run ({guard.cause})"
    return "unchanged during the run (git status and tracked-file diff identical before and after)"


def _skipped(run: Run) -> str:
    """The skipped phases with their reasons, for the failure analysis and the summary alike."""
    return ", ".join(f"{p.name} ({p.cause})" for p in run.phases.values() if p.status == "skipped") or "nothing"


def render_failure_analysis(run: Run, training_metrics: dict) -> str:
    failed = run.failed_phase
    history = training_metrics.get("history") or []
    last = history[-1] if history else None
    return "\n".join([
        "# M44 failure analysis",
        "",
        f"- **phase**: {failed.name}",
        f"- **cause**: {failed.cause}",
        f"- **after**: {failed.duration_s:.1f} s in the phase",
        f"- **last training step reached**: {last['step'] if last else 'none'}"
        + (f" (loss {last['loss']:.4f})" if last else ""),
        f"- **skipped**: {_skipped(run)}",
        "",
        "Nothing was retried. Every evidence file was still written; see m44_summary.md.",
        "",
        "## Traceback",
        "",
        "```text",
        failed.traceback.rstrip() or "(no exception: the phase's own check failed)",
        "```",
        "",
    ])


def render_summary(run: Run, status: str, training: dict, evaluation: dict | None) -> str:
    cfg = run.cfg
    history = training.get("history") or []
    failed = run.failed_phase
    lines = [
        f"# M44 summary: {status.upper()}",
        "",
        # A blank quote line between them, so that Markdown shows the two statements as two lines.
        STATEMENTS[0],
        ">",
        STATEMENTS[1],
        "",
    ]
    if failed is not None:
        lines += [
            f"**Failed in phase {failed.name}**: {failed.cause}",
            "",
            f"**Skipped**: {_skipped(run)}. "
            "Details: failure_analysis.md.",
            "",
        ]
    lines += [
        f"- **status**: {status}",
        f"- **run folder**: {run.dir.name}",
        f"- **model**: {cfg.model_name if cfg else repr(run.params.get('model_name')) + ' (parameters invalid)'}",
        f"- **device / dtype**: {f'{cfg.device} / {cfg.dtype}' if cfg else 'unknown'}",
        f"- **hardware**: {_hardware()}",
        f"- **run time**: {sum(p.duration_s for p in run.phases.values()):.1f} s over all phases",
        f"- **config sha256**: {cfg.sha256() if cfg else 'n/a'}",
        f"- **repository**: commit {run.repository_before.get('commit', 'unknown')}, "
        f"{'with' if run.repository_before.get('dirty') else 'no'} uncommitted changes; {_repository_verdict(run)}",
        f"- **training**: {training['status']}, {training['steps_completed']} steps, {training['runtime_s']:.1f} s",
    ]
    if history:
        lines.append(f"- **loss**: {history[0]['loss']:.4f} (step {history[0]['step']}) -> "
                     f"{history[-1]['loss']:.4f} (step {history[-1]['step']})")
    if evaluation:
        for label in ("baseline", "trained"):
            m = evaluation[label]
            lines.append(f"- **{label}**: accuracy {m['accuracy']:.2%} (lenient {m['accuracy_lenient']:.2%}), "
                         f"format rate {m['format_rate']:.2%}, n={m['n']}")
        if "comparison" in evaluation:
            lines.append(f"- **trained vs baseline**: strict accuracy {describe(evaluation['comparison']['strict'])}")
    lines += ["", "## Phases", "", "| phase | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {p.name} | {p.status} | {p.duration_s:.1f} | {p.cause} |" for p in run.phases.values()]
    plots = sorted(p.name for p in run.dir.glob("*.png"))
    lines += ["", f"Plots: {', '.join(plots) or 'none (training logged no step)'}. File hashes: manifest.json.", ""]
    return "\n".join(lines)


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"no GPU; CPU {platform.machine()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
