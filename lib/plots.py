"""Training plots saved as PNG files in the run folder (the report embeds them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # the object API: no global pyplot state, no GUI backend

from lib.contract import LEARNING_RATE_PLOT, LOSS_PLOT, MEMORY_PLOT, THROUGHPUT_PLOT

# (history key, file, y label, log scale); a plot is drawn only when the history has its key.
CURVES = (
    ("learning_rate", LEARNING_RATE_PLOT, "learning rate", False),
    ("tokens_per_s", THROUGHPUT_PLOT, "non-padding tokens / s", False),
    ("peak_memory_bytes", MEMORY_PLOT, "peak memory (GiB)", False),
)


def plot_training(history: list[dict], run_dir: Path) -> list[Path]:
    """The loss with a moving average, then each other curve the history records."""
    paths = [plot_loss(history, run_dir / LOSS_PLOT)]
    for key, name, label, log in CURVES:
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if points:
            if key == "peak_memory_bytes":
                kind = next((h.get("memory_kind") for h in history if h.get("memory_kind")), "")
                points, label = [(s, v / 2**30) for s, v in points], f"{label} {kind}".strip()
            paths.append(_plot_curve(points, label, log, run_dir / name))
    return paths


def plot_loss(history: list[dict], path: Path) -> Path:
    """Training loss per logged step, with a moving average when there are enough points."""
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    fig, ax = _figure()
    ax.plot(steps, losses, color="tab:blue", alpha=0.45, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smoothed = pd.Series(losses).rolling(window, min_periods=1).mean()
        ax.plot(steps, smoothed, color="tab:blue", label=f"moving average ({window} logs)")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_yscale("log")
    ax.legend()
    return _save(fig, ax, path)


def _plot_curve(points: list[tuple[int, float]], label: str, log: bool, path: Path) -> Path:
    fig, ax = _figure()
    ax.plot([s for s, _ in points], [v for _, v in points], color="tab:green", marker=".", markersize=3)
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
    return _save(fig, ax, path)


def _figure():
    fig = Figure(figsize=(7, 3), dpi=90)
    return fig, fig.add_subplot()


def _save(fig: Figure, ax, path: Path) -> Path:
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
