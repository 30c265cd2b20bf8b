"""The run's figures, saved as PNG files in the run folder by the phase that has the numbers (the report embeds them).

Each figure states what it shows in its title and axis labels, with units; linear axes of amounts
(memory, throughput) start at zero, so a small change looks small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API: no global pyplot state, no GUI backend
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

from lib.contract import LEARNING_RATE_PLOT, LOSS_PLOT, MEMORY_PLOT, THROUGHPUT_PLOT
from lib.results import comparison_rows, points
from lib.summary import MEMORY_KINDS
from lib.units import GIB

SIZE, DPI = (6.4, 3.2), 120  # 768 x 384 px: two side by side on a wide screen, one per row at 900 px
BASELINE_COLOR, TRAINED_COLOR = "#8c8c8c", "tab:blue"
RUN_COLORS = ("tab:blue", "tab:orange")  # run A, run B (lib/compare.py)
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.2, 1, 5 and 2e-05 rather than 10^-1 or an offset


def plot_training(history: list[dict], run_dir: Path) -> list[Path]:
    """The loss with a moving average, then learning rate, throughput and memory where the history has them."""
    paths = [plot_loss(history, run_dir / LOSS_PLOT)]
    if points_of(history, "learning_rate"):
        paths.append(plot_learning_rate(history, run_dir / LEARNING_RATE_PLOT))
    if points_of(history, "tokens_per_s"):
        paths.append(plot_throughput(history, run_dir / THROUGHPUT_PLOT))
    if points_of(history, "peak_memory_bytes"):
        paths.append(plot_memory(history, run_dir / MEMORY_PLOT))
    return paths


def points_of(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that hold `key`; two empty lists when none does."""
    found = [(h["step"], h[key]) for h in history if h.get(key) is not None]
    return [s for s, _ in found], [v for _, v in found]


def plot_loss(history: list[dict], path: Path) -> Path:
    """Training loss per logged step on a log axis with plain tick labels, and its moving average."""
    steps, losses = points_of(history, "loss")
    fig, ax = _figure("Training loss (response tokens only)")
    ax.plot(steps, losses, color="tab:blue", alpha=0.45, marker=".", markersize=3, label="loss at the logging step")
    window = max(1, len(losses) // 20)
    if window > 1:
        smoothed = pd.Series(losses).rolling(window, min_periods=1).mean()
        ax.plot(steps, smoothed, color="tab:blue", label=f"moving average of {window} logs")
    ax.set_ylabel("cross-entropy (nats / token), log scale")
    ax.set_yscale("log")
    # Ticks at 1-2-5 per decade (every integer multiple within less than a decade), labelled as plain
    # numbers: a log axis labelled only at the powers of ten hides how far the loss fell.
    within_decade = max(losses) / min(losses) < 10
    ax.yaxis.set_major_locator(LogLocator(subs=tuple(range(1, 10)) if within_decade else (1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize="small")
    return _save(fig, ax, path)


def plot_learning_rate(history: list[dict], path: Path) -> Path:
    steps, rates = points_of(history, "learning_rate")
    fig, ax = _figure("Learning rate per optimizer step (warmup, then the schedule's decay)")
    ax.plot(steps, rates, color="tab:green", marker=".", markersize=3)
    ax.set_ylabel("learning rate")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.set_ylim(bottom=0)
    return _save(fig, ax, path)


def plot_throughput(history: list[dict], path: Path) -> Path:
    steps, rates = points_of(history, "tokens_per_s")
    mean = float(np.mean(rates))
    # The mean is named in the title: a legend would cover points wherever the curve goes.
    fig, ax = _figure(f"Training throughput per logging interval (dashed: their mean, {mean:,.0f} tokens/s)")
    ax.plot(steps, rates, color="tab:green", marker=".", markersize=3)
    ax.axhline(mean, color="0.4", linestyle="--", linewidth=1)
    ax.set_ylabel("non-padding tokens / s")
    ax.set_ylim(bottom=0)
    return _save(fig, ax, path)


def plot_memory(history: list[dict], path: Path) -> Path:
    steps, used = points_of(history, "peak_memory_bytes")
    kind = next((h["memory_kind"] for h in history if h.get("memory_kind")), "")
    fig, ax = _figure(f"Peak memory so far: {MEMORY_KINDS.get(kind, kind or 'as measured')}")
    ax.plot(steps, [u / GIB for u in used], color="tab:purple", marker=".", markersize=3)
    ax.set_ylabel("GiB (axis from 0)")
    ax.set_ylim(0, max(used) / GIB * 1.15)
    return _save(fig, ax, path)


def plot_comparison(metrics: dict, path: Path) -> Path:
    """Baseline vs trained per compared metric, and the paired difference with its confidence interval.

    `metrics` is evaluation_results.json's `metrics` with both models and the comparison.
    """
    rows = comparison_rows(metrics)
    names = [r["metric"].replace(" ", "\n") for r in rows]  # two short lines fit under a pair of bars
    confidence = rows[0]["confidence"]
    fig = Figure(figsize=(7.2, 2.9), dpi=100)  # 720 x 290 px: beside the card's numbers on a wide screen
    rates, diffs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})

    x, width = np.arange(len(rows)), 0.38
    for offset, label, color in ((-width / 2, "baseline", BASELINE_COLOR), (width / 2, "trained", TRAINED_COLOR)):
        bars = rates.bar(x + offset, [r[label] * 100 for r in rows], width, label=label, color=color)
        rates.bar_label(bars, fmt="%.1f", fontsize=7.5, padding=2)
    rates.set_xticks(x, names)
    rates.set_ylim(0, 115)
    rates.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    rates.set_ylabel(f"% of {rows[0]['n']} eval items")
    rates.set_title("Baseline vs trained (%)", fontsize="medium")
    rates.legend(fontsize="small", loc="upper left", ncols=2)

    y = np.arange(len(rows))[::-1]
    middle = np.array([r["difference"] for r in rows]) * 100
    low = np.array([r["ci_low"] for r in rows]) * 100
    high = np.array([r["ci_high"] for r in rows]) * 100
    diffs.errorbar(middle, y, xerr=[middle - low, high - middle], fmt="o", color=TRAINED_COLOR, capsize=5)
    diffs.axvline(0, color="0.3", linewidth=0.8)
    left, right = min(float(low.min()), 0.0), max(float(high.max()), 0.0)  # zero always in view
    pad = max(3.0, (right - left) * 0.08)
    diffs.set_xlim(left - pad, right + pad)
    diffs.set_ylim(-0.6, len(rows) - 0.4)
    # The numbers in the tick labels, where no point or interval can cover them.
    diffs.set_yticks(y, [f"{r['metric']}\n{points(r['difference'])} ({points(r['ci_low'])} to {points(r['ci_high'])})"
                         for r in rows], fontsize=8)
    diffs.yaxis.set_minor_locator(NullLocator())
    diffs.set_xlabel("trained minus baseline (points)")
    diffs.set_title(f"Difference with its {confidence:.0%} CI", fontsize="medium")
    diffs.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_loss_overlay(curves: dict[str, list[dict]], target) -> None:
    """Two runs' training loss on one log axis, by optimizer step (left) and by non-padding tokens seen (right).

    `curves` maps a run's label to its points ({step, tokens, loss}; tokens may be None); `target` is a path or a
    binary file (lib/compare.py embeds the PNG in its page).
    """
    fig = Figure(figsize=(11, 3.4), dpi=100)  # 1100 x 340 px: the page's width at 1400 px, scaled down at 900
    by_step, by_tokens = fig.subplots(1, 2, sharey=True)
    losses = [p["loss"] for curve in curves.values() for p in curve]
    for (label, curve), color in zip(curves.items(), RUN_COLORS):
        by_step.plot([p["step"] for p in curve], [p["loss"] for p in curve], color=color, marker=".",
                     markersize=3, label=label)
        seen = [p for p in curve if p.get("tokens") is not None]
        by_tokens.plot([p["tokens"] for p in seen], [p["loss"] for p in seen], color=color, marker=".", markersize=3,
                       label=label)
    by_step.set_title("Training loss by optimizer step", fontsize="medium")
    by_step.set_xlabel("optimizer step")
    by_step.set_ylabel("cross-entropy (nats / token), log scale")
    by_step.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_tokens.set_title("Training loss by non-padding tokens seen", fontsize="medium")
    by_tokens.set_xlabel("non-padding tokens seen")
    by_tokens.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    by_step.set_yscale("log")
    within_decade = max(losses) / min(losses) < 10  # as plot_loss: ticks that show how far the loss fell
    by_step.yaxis.set_major_locator(LogLocator(subs=tuple(range(1, 10)) if within_decade else (1.0, 2.0, 5.0)))
    by_step.yaxis.set_major_formatter(PLAIN)
    by_step.yaxis.set_minor_formatter(NullFormatter())
    for ax in (by_step, by_tokens):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(target, format="png")


PHASE_COLORS = ("#e8eef7", "#f4ece1", "#e9f3e6", "#f1e6f2")  # light fills behind the curves, one per phase


def plot_timeline(records: list[dict], path: Path) -> Path:
    """The machine during the run from system_metrics.jsonl's records (lib/telemetry.py), the phases shaded.

    With GPU readings: utilisation, memory used and temperature per GPU. Without: the CPU share and the resident
    memory of the workers and of the kernel.
    """
    samples = sorted((r for r in records if r.get("kind") == "sample" and r.get("time") is not None),
                     key=lambda r: r["time"])
    stamped = [r for r in records if r.get("time") is not None and r.get("phase")]
    t0 = min(r["time"] for r in stamped)
    # Seconds for a short run (the demo), minutes for a long one.
    unit, per = ("minutes", 60) if max(r["time"] for r in stamped) - t0 > 300 else ("seconds", 1)
    x = [(s["time"] - t0) / per for s in samples]
    devices = sorted({g["index"] for s in samples for g in s.get("gpus") or []})
    interval = next((r["interval_s"] for r in records if r.get("kind") == "start"), None)
    if devices:
        panels = [("GPU utilisation (%)", "utilization_percent", 1, 105), ("GPU memory used (GiB)", "memory_used_bytes",
                  1 / GIB, None), ("GPU temperature (°C)", "temperature_c", 1, None)]
        series = [[(f"GPU {i}", [_gpu_value(s, i, key, scale) for s in samples]) for i in devices]
                  for _, key, scale, _ in panels]
    else:
        panels = [("CPU (% of one core)", None, 1, None), ("resident memory (GiB)", None, 1 / GIB, None)]
        series = [[(who, [_scaled(s.get(f"{who}_{key}"), scale) for s in samples]) for who in ("workers", "kernel")]
                  for key, scale in (("cpu_percent", 1), ("rss_bytes", 1 / GIB))]
    fig = Figure(figsize=(SIZE[0], 1.6 * len(panels) + 0.8), dpi=DPI)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    every = f", a sample every {interval:g} s" if interval else ""
    axes[0].set_title(f"The machine during the run (system_metrics.jsonl{every})", fontsize="medium")
    for ax, (label, _, _, top), lines in zip(axes, panels, series):
        for number, (phase, (start, end)) in enumerate(_phase_spans(stamped, t0, per).items()):
            ax.axvspan(start, end, color=PHASE_COLORS[number % len(PHASE_COLORS)], zorder=0)
            if ax is axes[-1]:  # named once, along the bottom of the lowest panel
                ax.text(start, 0.03, f" {phase}", transform=ax.get_xaxis_transform(), ha="left", va="bottom",
                        fontsize="small", color="0.3")
        for name, values in lines:
            ax.plot(x, values, marker=".", markersize=2, linewidth=1, label=name)
        ax.set_ylabel(label, fontsize="small")
        ax.set_ylim(0, top)  # amounts from zero: a small change looks small
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="x-small", loc="best")
    axes[-1].set_xlabel(f"{unit} since the first sampled phase started (shaded: the phases)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _phase_spans(records: list[dict], t0: float, per: float) -> dict[str, tuple[float, float]]:
    """Each phase's first and last time stamp, in units of `per` seconds since t0."""
    spans: dict[str, tuple[float, float]] = {}
    for r in records:
        t = (r["time"] - t0) / per
        start, end = spans.get(r["phase"], (t, t))
        spans[r["phase"]] = (min(start, t), max(end, t))
    return spans


def _gpu_value(sample: dict, index: int, key: str, scale: float) -> float:
    reading = next((g for g in sample.get("gpus") or [] if g.get("index") == index), {})
    return _scaled(reading.get(key), scale)


def _scaled(value, scale: float) -> float:
    return float("nan") if value is None else value * scale  # NaN: a gap in the line where a reading is missing


def _figure(title: str):
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize="medium")
    return fig, ax


def _save(fig: Figure, ax, path: Path) -> Path:
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
