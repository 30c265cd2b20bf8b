"""What the notebook shows under each phase, read back from the run folder's evidence files.

Display only: these helpers write nothing (every evidence file is written inside a phase), and none
of them can stop the run: an error while showing something is printed in its place, and the run goes
on to consolidation exactly as it would have without it. The report (run.html) is the executed
notebook with its code hidden, so these displays are the report's content. The summary card at the
top is a display that `show_outcome` replaces at the end (Jupyter's update_display, which papermill
and nbclient write into the executed notebook), so the first screen of the report states how the
run ended.
"""

from __future__ import annotations

import functools
import html
import warnings
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Image, Markdown, display, update_display

from lib.contract import (
    CONFIG, ENV_SNAPSHOT, EVAL_RESULTS, GPU_SNAPSHOT, MANIFEST, PLOTS, SUMMARY, TRAINING_METRICS,
)
from lib.evidence import read_json
from lib.results import SCORECARD_BY, example_items, scorecard_rows

# tqdm.auto warns in a kernel without ipywidgets; the run shows no progress bars (lib/modeling.py
# turns them off), it prints one line per logging step and per generation batch instead.
warnings.filterwarnings("ignore", message="IProgress not found")

CARD_ID = "m44-summary-card"
EXAMPLE_CHARS = 600  # long generations are cut in the report; the JSON keeps them whole


def never_fails(show):
    """Run a display helper; if it raises, print what went wrong instead of stopping the notebook."""

    @functools.wraps(show)
    def safe(*args, **kwargs):
        try:
            return show(*args, **kwargs)
        except Exception as exc:
            print(f"(display {show.__name__} failed: {type(exc).__name__}: {exc}; "
                  "the evidence files are not affected)")
            return None

    return safe


@never_fails
def show_summary_card() -> None:
    """The first output of the run; `show_outcome` fills it with m44_summary.md."""
    display(Markdown(
        "**M44 run in progress.** When the run ends, this card is replaced by its summary. "
        "If a report shows this text, the notebook stopped before consolidation."
    ), display_id=CARD_ID)


@never_fails
def show_preflight(run_dir: Path) -> None:
    """The resolved parameters, the snapshots' key facts as a table, the full files folded below."""
    config = read_json(run_dir / CONFIG)
    display(pd.DataFrame({"value": {k: repr(v) for k, v in config["parameters"].items()}}).rename_axis(
        f"parameters (sha256 {config.get('sha256', 'n/a')[:12]})"))
    snapshots = {
        name: (run_dir / name).read_text(encoding="utf-8")
        for name in (ENV_SNAPSHOT, GPU_SNAPSHOT) if (run_dir / name).exists()
    }
    facts = {key: value for text in snapshots.values() for key, value in _top_facts(text).items()}
    if facts:
        with pd.option_context("display.max_colwidth", None):
            display(pd.DataFrame({"value": facts}).rename_axis("environment"))
    for name, text in snapshots.items():
        display(HTML(f"<details><summary>{name}</summary><pre>{html.escape(text)}</pre></details>"))


def _top_facts(text: str) -> dict[str, str]:
    """`key: value` lines before the first section heading of a snapshot file."""
    facts = {}
    for line in text.split("\n## ")[0].splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith((" ", "#")):
            facts[key] = value
        elif line and not line.startswith(("#", " ")):
            facts["GPU"] = line  # the gpu snapshot's one-line statement
    return facts


@never_fails
def show_training(run_dir: Path) -> None:
    """The training plots the phase drew (loss, learning rate, throughput, memory)."""
    path = run_dir / TRAINING_METRICS
    history = read_json(path).get("history", []) if path.exists() else []
    if not history:
        print("no training curves: training logged no step")
        return
    for name in PLOTS:
        if (run_dir / name).is_file():
            display(Image(filename=str(run_dir / name)))


@never_fails
def show_evaluation(run_dir: Path) -> None:
    """The scorecards, then example generations, right and wrong, per section."""
    path = run_dir / EVAL_RESULTS
    if not path.exists():
        print("no evaluation results: evaluation did not complete")
        return
    items = read_json(path)["items"]
    for by in SCORECARD_BY:
        display(Markdown(f"**Scorecard by {by}**"))
        display(pd.DataFrame(scorecard_rows(items, by)).set_index(by).round(2))
    display(Markdown("**Example generations** (trained model; one right and one wrong per section, where there is one)"))
    display(HTML(_examples(items)))


def _examples(items: list[dict]) -> str:
    rows = []
    for verdict, item in example_items(items, "trained"):
        output = item["trained"]["output"]
        cut = output[:EXAMPLE_CHARS] + (" [...]" if len(output) > EXAMPLE_CHARS else "")
        rows.append(
            f"<tr><td>{html.escape(item['id'])}<br>{item['section']}<br><b>{verdict}</b></td>"
            f"<td><pre>{html.escape(item['prompt'][:EXAMPLE_CHARS])}</pre></td>"
            f"<td>{html.escape(item['expected_answer'])}</td><td><pre>{html.escape(cut)}</pre></td></tr>"
        )
    head = "<tr><th>item</th><th>prompt</th><th>expected</th><th>trained output</th></tr>"
    return f'<table style="text-align: left">{head}{"".join(rows)}</table>'


@never_fails
def show_outcome(run_dir: Path) -> None:
    """Fill the summary card at the top with m44_summary.md, and list the manifest here."""
    summary = (run_dir / SUMMARY).read_text(encoding="utf-8")
    update_display(Markdown(summary), display_id=CARD_ID)
    manifest = read_json(run_dir / MANIFEST)["files"]
    display(Markdown(f"**Artifact manifest** ({MANIFEST}; run.ipynb and run.html are added when the report is rendered)"))
    with pd.option_context("display.max_colwidth", None):  # whole hashes: a reviewer compares them
        display(pd.DataFrame(manifest).set_index("path"))
