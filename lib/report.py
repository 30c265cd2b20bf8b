"""What the notebook shows under each phase, read back from the run folder's evidence files.

Everything shown here is also a file in the run folder; the report (run.html) is the executed
notebook with its code hidden, so these displays are the report's content. The summary card at
the top is a display that `show_outcome` replaces at the end (Jupyter's update_display, which
papermill and nbclient write into the executed notebook), so the first screen of the report
states how the run ended.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Image, Markdown, display, update_display

from lib.evaluation import RESULTS_NAME, scorecard
from lib.evidence import MANIFEST_NAME, read_json
from lib.plots import plot_training
from lib.training import METRICS_NAME

CARD_ID = "m44-summary-card"
EXAMPLE_CHARS = 600  # long generations are cut in the report; the JSON keeps them whole


def show_summary_card() -> None:
    """The first output of the run; `show_outcome` fills it with m44_summary.md."""
    display(Markdown(
        "**M44 run in progress.** When the run ends, this card is replaced by its summary. "
        "If a report shows this text, the notebook stopped before consolidation."
    ), display_id=CARD_ID)


def show_preflight(run_dir: Path) -> None:
    """The resolved parameters, the snapshots' key facts as a table, the full files folded below."""
    config = read_json(run_dir / "config.json")
    display(pd.DataFrame({"value": {k: repr(v) for k, v in config["parameters"].items()}}).rename_axis(
        f"parameters (sha256 {config.get('sha256', 'n/a')[:12]})"))
    snapshots = {
        name: (run_dir / name).read_text(encoding="utf-8")
        for name in ("env_snapshot.txt", "gpu_snapshot.txt") if (run_dir / name).exists()
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


def show_training(run_dir: Path) -> None:
    """Write the training plots (loss, learning rate, throughput, memory) as PNGs and show them."""
    path = run_dir / METRICS_NAME
    history = read_json(path).get("history", []) if path.exists() else []
    if not history:
        print("no training curves: training logged no step")
        return
    for plot in plot_training(history, run_dir):
        display(Image(filename=str(plot)))


def show_evaluation(run_dir: Path) -> None:
    """The summary file's tables, then example generations, right and wrong, per section."""
    path = run_dir / RESULTS_NAME
    if not path.exists():
        print("no evaluation results: evaluation did not complete")
        return
    items = read_json(path)["items"]
    for by in ("section", "category", "difficulty"):
        display(Markdown(f"**Scorecard by {by}**"))
        display(scorecard(items, by))
    display(Markdown("**Example generations** (trained model; one right and one wrong per section, where there is one)"))
    display(HTML(_examples(items)))


def _examples(items: list[dict]) -> str:
    rows = []
    for section in dict.fromkeys(item["section"] for item in items):
        in_section = [item for item in items if item["section"] == section]
        for verdict, correct in (("right", True), ("wrong", False)):
            item = next((i for i in in_section if bool(i["trained"]["correct"]) is correct), None)
            if item is None:
                continue
            output = item["trained"]["output"]
            cut = output[:EXAMPLE_CHARS] + (" [...]" if len(output) > EXAMPLE_CHARS else "")
            rows.append(
                f"<tr><td>{html.escape(item['id'])}<br>{section}<br><b>{verdict}</b></td>"
                f"<td><pre>{html.escape(item['prompt'][:EXAMPLE_CHARS])}</pre></td>"
                f"<td>{html.escape(item['expected_answer'])}</td><td><pre>{html.escape(cut)}</pre></td></tr>"
            )
    head = "<tr><th>item</th><th>prompt</th><th>expected</th><th>trained output</th></tr>"
    return f'<table style="text-align: left">{head}{"".join(rows)}</table>'


def show_outcome(run_dir: Path) -> None:
    """Fill the summary card at the top with m44_summary.md, and list the manifest here."""
    summary = (run_dir / "m44_summary.md").read_text(encoding="utf-8")
    update_display(Markdown(summary), display_id=CARD_ID)
    manifest = read_json(run_dir / MANIFEST_NAME)["files"]
    display(Markdown(f"**Artifact manifest** ({MANIFEST_NAME}; run.ipynb and run.html are added when the report is rendered)"))
    with pd.option_context("display.max_colwidth", None):  # whole hashes: a reviewer compares them
        display(pd.DataFrame(manifest).set_index("path"))
