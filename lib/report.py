"""What the notebook shows under each phase: tables and plots read back from the run folder."""

from __future__ import annotations

from pathlib import Path

from IPython.display import Image, Markdown, display

from lib.evaluation import RESULTS_NAME, scorecard
from lib.evidence import read_json
from lib.training import LOSS_PLOT_NAME


def show_training(run_dir: Path) -> None:
    plot = run_dir / LOSS_PLOT_NAME
    if plot.exists():
        display(Image(filename=str(plot)))
    else:
        print("no loss curve: training logged no step")


def show_evaluation(run_dir: Path) -> None:
    path = run_dir / RESULTS_NAME
    if not path.exists():
        print("no evaluation results: evaluation did not complete")
        return
    items = read_json(path)["items"]
    for by in ("section", "difficulty"):
        display(Markdown(f"**Scorecard by {by}** (strict accuracy and format rate)"))
        display(scorecard(items, by))
