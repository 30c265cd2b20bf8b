"""Plots saved as PNG files in the run folder (the report embeds them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # the object API: no global pyplot state, no GUI backend


def plot_loss(history: list[dict], path: Path) -> Path:
    """Training loss per logged step, with a moving average when there are enough points."""
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", alpha=0.45, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smoothed = pd.Series(losses).rolling(window, min_periods=1).mean()
        ax.plot(steps, smoothed, color="tab:blue", label=f"moving average ({window} logs)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
