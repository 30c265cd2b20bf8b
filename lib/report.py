"""What the notebook shows under each phase, read back from the run folder's evidence files.

Display only: these helpers write nothing (every evidence file, every plot included, is written inside
a phase), and none of them can stop the run: an error while showing something is printed in its
place, and the run goes on to consolidation exactly as it would have without it. The report (run.html)
is the executed notebook with its code hidden, so these displays are the report's content; the
stylesheet for their classes is the report template's (lib/report_template/m44/m44.css).

The summary card at the top is a display that `show_outcome` replaces at the end (Jupyter's
update_display, which papermill and nbclient write into the executed notebook), so the first screen
of the report states how the run ended. Everything on it comes from the facts: m44_summary.json,
preflight.json, and the comparison chart the evaluation phase drew.

Each display carries a short text/plain form beside its HTML, for the readers that show no HTML (a console,
`jupyter nbconvert --to markdown`); `lib.execute` prints no cell output unless asked (--verbose), so no table
reaches the terminal. The card also carries inline styles, so that JupyterLab, VS Code and GitHub's viewer, which
load no report stylesheet, show it styled too.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import warnings
from pathlib import Path

from IPython.display import display, update_display

from lib.contract import (
    COMPARISON_PLOT, CONFIG, ENV_SNAPSHOT, EVAL_RESULTS, EVAL_SUMMARY, FAILURE_ANALYSIS, GPU_SNAPSHOT, LEARNING_RATE_PLOT,
    LOSS_PLOT, MANIFEST, MEMORY_PLOT, PLOTS, PREFLIGHT, STATEMENTS, SUMMARY_FACTS, TELEMETRY,
    THROUGHPUT_PLOT, TIMELINE_PLOT, TRAINING_METRICS,
)
from lib.evidence import read_json
from lib.printable import EXAMPLE_CHARS, esc, folded_pre, one_line
from lib.results import (
    SCORECARD_BY, SCORECARD_METRICS, changed_items, ci_text, comparison_rows, example_items, formatted, models_in,
    percent, points, right_or_wrong, scorecard_rows,
)
from lib.stats import word_verdict
from lib.summary import (
    DIFFER, NO_TRACEBACK, STATEMENTS_MEANING, checks_with, completed, data_files, data_line, file_name, finetune_text,
    interactive_suffix, interactive_text, machine_text, memory_line, next_step, outcome_line, root_causes, run_label,
    telemetry_line,
)
from lib.units import GIB, MIB

# tqdm.auto warns in a kernel without ipywidgets; the run shows no progress bars (lib/model_loading.py
# turns them off), it prints one line per logging step and per generation batch instead. The
# notebook imports this module first, so the filter is in place before anything imports tqdm.
warnings.filterwarnings("ignore", message="IProgress not found")

CARD_ID = "m44-summary-card"
STATUS_WORDS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}

# Per training plot: a caption that explains what the figure alone cannot.
CAPTIONS = {
    LOSS_PLOT: "Loss on the response tokens only (the prompt is masked), at each logging step; the darker line "
               "is a moving average.",
    LEARNING_RATE_PLOT: "Warmup over the first warmup_ratio of the steps, then the lr_scheduler's decay "
                        "(both in config.json).",
    THROUGHPUT_PLOT: "Non-padding tokens per second over each logging interval. Batches are grouped by length "
                     "(the Trainer's length-grouped sampler orders each mega-batch longest first), so intervals "
                     "of long and of short records alternate, and long ones use the device better: the sawtooth "
                     "is the data order, not a slowdown. Other load on a shared machine shows here too.",
    MEMORY_PLOT: "The highest value seen so far, so the line never falls; the axis starts at 0. The first point "
                 "already holds the model, its gradients and the optimizer state (and, measured on the CPU, the "
                 "process's libraries).",
}

# The history key each training plot other than the loss draws (lib/plots.py), for its alt text.
PLOT_KEYS = {LEARNING_RATE_PLOT: "learning_rate", THROUGHPUT_PLOT: "tokens_per_s", MEMORY_PLOT: "peak_memory_bytes"}
SIDE_BY_SIDE = ("section", "difficulty")  # short scorecards, shown next to each other on a wide page


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


def _show(html_text: str, plain: str, **kwargs) -> None:
    display({"text/html": html_text, "text/plain": plain}, raw=True, **kwargs)


# The card's look without the report's stylesheet (JupyterLab, VS Code, GitHub): border, badge, causes.
CARD_STYLE = {"completed": "#1a7f37", "failed": "#c62828", "pending": "#57606a"}


def card_style(kind: str) -> str:
    return (f"border:1px solid #d0d7de;border-left:6px solid {CARD_STYLE[kind]};border-radius:6px;"
            "padding:8px 14px;margin:4px 0 8px")


def badge_style(kind: str) -> str:
    return f"background:{CARD_STYLE[kind]};color:#fff;padding:1px 8px;border-radius:4px;font-weight:bold"


# --- the displays, one per notebook section ------------------------------------------------------


@never_fails
def show_summary_card() -> None:
    """The first output of the run; `show_outcome` fills it with the outcome."""
    pending = ("M44 run in progress. When the run ends, this card is replaced by its outcome. If a report shows this "
               "text, the notebook stopped before consolidation.")
    _show(f'<section class="m44-card" style="{card_style("pending")}"><p class="m44-outcome">{pending}</p></section>',
          pending, display_id=CARD_ID)


@never_fails
def show_preflight(run_dir: Path) -> None:
    """The resolved parameters and the snapshots' key facts; the full snapshots folded. The checks themselves are
    the phase's printed lines above (and, after a failure, the table on the card): shown once."""
    parts = []
    config = read_json(run_dir / CONFIG)
    parts.append(f"<h4>Parameters <small>(config.json, sha256 <code>{esc(config.get('sha256', 'n/a'))}"
                 "</code>)</small></h4>" + pairs_html(config["parameters"], "m44-params"))
    snapshots = {
        name: (run_dir / name).read_text(encoding="utf-8")
        for name in (ENV_SNAPSHOT, GPU_SNAPSHOT) if (run_dir / name).exists()
    }
    facts = {key: value for text in snapshots.values() for key, value in _top_facts(text).items()}
    if facts:
        parts.append("<h4>Environment</h4>" + pairs_html(facts, "m44-env"))
    parts += [f"<details><summary>{name} (whole file)</summary><pre>{esc(text)}</pre></details>"
              for name, text in snapshots.items()]
    _show("\n".join(parts), f"Parameters: {len(config['parameters'])} values ({CONFIG}); environment: "
          f"{', '.join(snapshots)}.")


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
    """The training plots the phase drew, each with a caption and an alt text stating its numbers."""
    path = run_dir / TRAINING_METRICS
    metrics = read_json(path) if path.exists() else {}
    history = metrics.get("history") or []
    if not history:
        _show("<p>No training curves: training logged no step.</p>", "No training curves: training logged no step.")
        return
    drawn = [name for name in PLOTS if (run_dir / name).is_file()]
    figures = [figure_html((run_dir / name).read_bytes(), training_alt(name, history), CAPTIONS[name]) for name in drawn]
    _show(f"<p>{training_line(metrics)}</p><div class=\"m44-figures\">{''.join(figures)}</div>",
          f"{html.unescape(training_line(metrics))} Plots: {', '.join(drawn)}.")


@never_fails
def show_evaluation(run_dir: Path) -> None:
    """The scorecards, then example generations of both models side by side, right and wrong, per section."""
    path = run_dir / EVAL_RESULTS
    if not path.exists():
        _show("<p>No evaluation results: evaluation did not complete.</p>",
              "No evaluation results: evaluation did not complete.")
        return
    items = read_json(path)["items"]
    labels = models_in(items)
    tables = "".join(f"<div>{scorecard_html(items, by, labels)}</div>" for by in SCORECARD_BY if by in SIDE_BY_SIDE)
    _show("<h4>Scorecards</h4><p>Share of items per group; strict: the taught format and the right answer; "
          "lenient: the right answer anywhere; format: the taught format.</p>"
          f'<div class="m44-tables">{tables}</div>'
          + "".join(scorecard_html(items, by, labels) for by in SCORECARD_BY if by not in SIDE_BY_SIDE)
          + (changed_html(items) if len(labels) > 1 else "")
          + f"<h4>Example generations</h4><p>{' and '.join(labels).capitalize()} output side by side: items training "
            f"changed, then per section an item the {labels[-1]} model got right and one it got wrong. Non-printing "
            f"characters are shown escaped (\\r, \\x00); outputs longer than {EXAMPLE_CHARS} characters are folded "
            f"(whole in {EVAL_RESULTS}).</p>"
          + examples_html(items, labels),
          f"Scorecards, the items training changed and example generations: {EVAL_SUMMARY}.")


@never_fails
def show_outcome(run_dir: Path) -> None:
    """Fill the summary card at the top from the facts; here, the failure analysis and the manifest."""
    facts = read_json(run_dir / SUMMARY_FACTS)
    chart = run_dir / COMPARISON_PLOT
    update_display({"text/html": card_html(facts, chart.read_bytes() if chart.is_file() else None),
                    "text/plain": card_text(facts)}, display_id=CARD_ID, raw=True)
    if not completed(facts):  # the card above says what failed and why; the traceback goes here, at the end
        traceback = facts["failure"]["traceback"].rstrip() or NO_TRACEBACK
        _show(f"<h4>Traceback of the failure ({FAILURE_ANALYSIS})</h4><pre>{esc(traceback)}</pre>",
              f"Traceback of the failure: {FAILURE_ANALYSIS}.")
    if facts.get("telemetry") and (run_dir / TIMELINE_PLOT).is_file():
        _show(timeline_html(facts["telemetry"], (run_dir / TIMELINE_PLOT).read_bytes()),
              f"The machine during the run: {'; '.join(machine_text(p) for p in facts['telemetry']['phases'])}.")
    files = read_json(run_dir / MANIFEST)["files"]
    _show(manifest_html(files), f"{MANIFEST}: {len(files)} files, each with its sha256.")


# --- HTML built from the facts (pure functions) ---------------------------------------------------


def card_html(facts: dict, chart_png: bytes | None) -> str:
    """The first screen: the outcome; on failure its root causes, what did not run, what to do, the checks;
    the model, hardware and data; the headline numbers with their CIs and the chart; the statements."""
    ok = completed(facts)
    parts = [f'<p class="m44-outcome">{outcome_html(facts)}</p>']
    if facts.get("inconsistent"):
        parts += ['<p class="m44-inconsistent"><b>The evidence is inconsistent.</b> The run did its work and its '
                  "results below stand, but the checker (lib/verify.py) disagrees with files the run wrote: judge "
                  "those files against each disagreement, listed in m44_summary.md:</p>",
                  list_html(facts["inconsistent"], "m44-causes")]
    if facts.get("interactive"):
        parts.append(f'<p class="m44-interactive">{esc(interactive_text(facts["interactive"]))}</p>')
    parts += [caveat_html(note) for note in facts.get("caveats") or []]
    if not ok:
        parts += [
            "<h3>Root cause</h3>", list_html(root_causes(facts), "m44-causes"),
            "<h3>Not done as a consequence</h3>", list_html(short_consequences(facts), "m44-consequences"),
            f'<p class="m44-next"><b>Next:</b> {esc(next_step(facts))} The traceback is at the end '
            f"of this report and in {FAILURE_ANALYSIS}.</p>",
        ]
        if facts["preflight"]:
            parts.append(checks_html(facts["preflight"]))
    parts.append(facts_html(facts))
    evaluation = facts["evaluation"]
    if evaluation and "comparison" in evaluation:
        chart = "" if chart_png is None else figure_html(
            chart_png, comparison_alt(evaluation),
            "Left: the share of eval items each model got right, or in the taught format. Right: the paired "
            "difference, trained minus baseline, with its confidence interval; an interval clear of 0 marks a "
            "difference unlikely to be chance.", "m44-chart")
        parts.append(f'<div class="m44-columns"><div>{headline_html(evaluation)}</div>{chart}</div>')
    statements = "<br>".join(esc(line.removeprefix("> ")) for line in STATEMENTS)
    parts.append(f'<div class="m44-statements"><blockquote>{statements}</blockquote>'
                 f"<p>{esc(STATEMENTS_MEANING)}</p></div>")
    kind = "completed" if ok else "failed"
    return (f'<section class="m44-card m44-{kind}" style="{card_style(kind)}" aria-label="M44 run outcome">'
            f'{"".join(parts)}</section>')


def caveat_html(note: str) -> str:
    """A caveat; a list of parameters that differ is folded (details), the first screen being for the outcome."""
    head, listed, rest = note.partition(DIFFER)
    if not listed:
        return f'<p class="m44-caveat"><b>Caveat:</b> {esc(note)}.</p>'
    return (f'<details class="m44-caveat"><summary><b>Caveat:</b> {esc(head + DIFFER.rstrip(": "))}</summary>'
            f"<p>{esc(rest)}.</p></details>")


def short_consequences(facts: dict) -> list[str]:
    """What did not run, short: the checks not run by name (the table below says why), the phases skipped."""
    skipped = [c["name"] for c in checks_with(facts, "skip")]
    checks = [f"pre-flight checks not run (SKIP below): {', '.join(skipped)}"] if skipped else []
    return checks + [f"phase {p['name']}: {p['cause']}" for p in facts["skipped"]] or ["nothing"]


def card_text(facts: dict) -> str:
    """The card as plain text: the outcome, what ran, what a reader must know, and on failure its causes."""
    lines = [outcome_line(facts), f"What ran: {run_label(facts)}."]
    lines += [f"Caveat: {note}." for note in facts.get("caveats") or []]
    if not completed(facts):
        lines += [f"Root cause: {cause}" for cause in root_causes(facts)] + [f"Next: {next_step(facts)}"]
    return "\n".join(lines)


def outcome_html(facts: dict) -> str:
    folder = f" · run folder <code>{esc(facts['run_folder'])}</code>"
    what = f' · <span class="m44-kind">{esc(run_label(facts))}</span>'
    if completed(facts):
        phases = len(facts["phases"])
        return (f'<span class="m44-badge" style="{badge_style("completed")}">COMPLETED{interactive_suffix(facts)}</span> '
                f"M44 run: all {phases} phases "
                f"completed in {facts['run_time_s']:.1f} s{what}{folder}")
    failed = facts["failed"]
    return (f'<span class="m44-badge" style="{badge_style("failed")}">FAILED{interactive_suffix(facts)}</span> '
            "M44 run failed in phase "
            f'<b>{esc(failed["name"])}</b> after {failed["duration_s"]:.1f} s{what}{folder}')


def facts_html(facts: dict) -> str:
    """Model, hardware, data files with their sha256, training: what ran, on what."""
    model = next((c["detail"] for c in facts["preflight"] or [] if c["name"] == "model source"), "")
    rows = {
        "model": f"<code>{esc(facts['model'])}</code> ({esc(facts['device_dtype'])})"
                 + (f"; {esc(model)}" if model else ""),
        "hardware": esc(facts["hardware"]),
    }
    for role, entry in data_files(facts):
        rows[role] = data_line(entry) if entry is None else (
            f"<code>{esc(file_name(entry['path']))}</code>, {entry['records']} records, "
            f'<span class="m44-hash">sha256 {entry["sha256"]}</span>')
    if facts["data"]:
        rows["data policy"] = esc(facts["data"]["summary"])
    if facts["finetune"]["mode"] != "full":  # a full fine-tune is the contract's; the summary states it either way
        rows["fine-tuning"] = esc(finetune_text(facts["finetune"]))
    if memory := memory_line(facts.get("memory")):
        rows["memory"] = esc(memory)
    if machine := telemetry_line(facts.get("telemetry")):
        rows["machine"] = esc(machine)
    training = facts["training"]
    line = f"{training['status']}, {training['steps_completed']} steps in {training['runtime_s']:.1f} s"
    if training["first"]:
        first, last = training["first"], training["last"]
        line += (f"; loss {first['loss']:.4f} (step {first['step']}) &rarr; {last['loss']:.4f} "
                 f"(step {last['step']})")
    rows["training"] = line
    return '<dl class="m44-facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows.items()) + "</dl>"


def headline_html(evaluation: dict) -> str:
    """Baseline and trained per compared metric, the paired difference with its CI, McNemar; the verdict."""
    strict = evaluation["comparison"]["strict"]
    rows = [[r["metric"], percent(r["baseline"]), percent(r["trained"]), points(r["difference"]), ci_text(r),
             f"{r['mcnemar_p']:.3g}"] for r in comparison_rows(evaluation)]
    headers = ["", "baseline", "trained", "difference (points)", f"{strict['confidence']:.0%} CI",
               "McNemar p"]
    return (f"<h3>On {evaluation['trained']['n']} eval items, before and after training</h3>"
            + table_html(headers, rows, "m44-headline")
            + f'<p class="m44-verdict">{esc(word_verdict(strict, "strict accuracy"))}</p>')


def comparison_alt(evaluation: dict) -> str:
    rows = comparison_rows(evaluation)
    return ("Chart. Left, bars per metric: " + "; ".join(
        f"{r['metric']} baseline {percent(r['baseline'])}, trained {percent(r['trained'])}" for r in rows)
        + f". Right, trained minus baseline with its {rows[0]['confidence']:.0%} CI: " + "; ".join(
        f"{r['metric']} {points(r['difference'])} points ({ci_text(r)})" for r in rows) + ".")


def training_line(metrics: dict) -> str:
    line = f"{metrics['steps_completed']} of {metrics.get('max_steps', '?')} steps in {metrics['runtime_s']:.1f} s"
    if metrics.get("tokens_per_s"):
        line += f"; {metrics['total_tokens']:,} non-padding tokens at {metrics['tokens_per_s']:,.0f} tokens/s overall"
    if metrics.get("mfu") is not None:
        line += f", model FLOPs utilization {metrics['mfu']:.1%} of the measured matmul peak"
    return esc(line) + "."


def training_alt(name: str, history: list[dict]) -> str:
    """What each training plot shows, in numbers from the history it was drawn from."""
    first, last = history[0], history[-1]
    if name == LOSS_PLOT:
        return (f"Line chart, log scale: training loss per logging step, from {first['loss']:.4f} at step "
                f"{first['step']} to {last['loss']:.4f} at step {last['step']}.")
    values = [h[PLOT_KEYS[name]] for h in history if h.get(PLOT_KEYS[name]) is not None]
    if name == LEARNING_RATE_PLOT:
        return (f"Line chart: learning rate per step, peak {max(values):g}, {values[-1]:g} at step "
                f"{last['step']}.")
    if name == THROUGHPUT_PLOT:
        return (f"Line chart: non-padding tokens per second per logging interval, from {min(values):,.0f} to "
                f"{max(values):,.0f}, mean {sum(values) / len(values):,.0f}.")
    return (f"Line chart, axis from 0: peak memory {values[0] / GIB:.2f} GiB at the first logging step, "
            f"{values[-1] / GIB:.2f} GiB at the last.")



def timeline_html(telemetry: dict, png: bytes) -> str:
    """The machine during the run: the timeline the phases drew, its alt text stating the numbers of each phase."""
    phases = telemetry["phases"]
    gpu = any(phase["gpus"] for phase in phases)
    shown = ("GPU utilisation, memory and temperature" if gpu
             else "CPU share and resident memory of the workers and of the kernel")
    alt = f"Timeline chart, phases shaded: {shown} over time. " + "; ".join(machine_text(p) for p in phases) + "."
    caption = (f"A sample every {phases[0]['interval_s']:g} s while training and evaluation ran ({TELEMETRY}; "
               + ("utilisation: the share of time a kernel ran on the GPU, as NVML reports it" if gpu else
                  f"{phases[0]['gpu']}; CPU in % of one core, so two busy cores show 200%; the workers are the "
                  "processes the kernel started, the kernel is the notebook's own process")
               + "). Gaps in a line are readings that failed; the sampler's errors are listed in m44_summary.md.")
    return "<h4>The machine during the run</h4>" + figure_html(png, alt, caption, "m44-timeline")


def figure_html(png: bytes, alt: str, caption: str, kind: str = "") -> str:
    """A PNG embedded in the page (one offline file), with its alt text and caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure class="m44-figure {kind}"><img src="data:image/png;base64,{data}" '
            f'alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>')


def checks_html(checks: list[dict]) -> str:
    """preflight.json's checks: status, name, detail; a failed check is a root cause, a skipped one its consequence."""
    counts = {status: sum(c["status"] == status for c in checks) for status in STATUS_WORDS}
    rows = "".join(
        f'<tr class="m44-{c["status"]}"><td><span class="m44-status">{STATUS_WORDS[c["status"]]}</span></td>'
        f"<td>{esc(c['name'])}</td><td>{esc(c['detail'])}</td></tr>" for c in checks)
    summary = ", ".join(f"{n} {word.lower()}" for status, word in STATUS_WORDS.items() if (n := counts[status]))
    return (f'<h4>Pre-flight checks <small>({PREFLIGHT}: {summary})</small></h4>'
            f'<table class="m44-checks"><thead><tr><th>status</th><th>check</th><th>detail</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def scorecard_html(items: list[dict], by: str, labels: list[str]) -> str:
    """One scorecard: per group its item count and each metric for each model side by side, as percentages."""
    metrics = [name for name, _ in SCORECARD_METRICS]
    top = (f'<tr><th rowspan="2">{by}</th><th rowspan="2">n</th>'
           + "".join(f'<th colspan="{len(labels)}">{m}</th>' for m in metrics) + "</tr>")
    sub = "<tr>" + "".join(f"<th>{label}</th>" for _ in metrics for label in labels) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in formatted(row).values()) + "</tr>"
        for row in scorecard_rows(items, by, labels))
    return (f'<table class="m44-scorecard"><caption>by {by}</caption><thead>{top}{sub}</thead>'
            f"<tbody>{body}</tbody></table>")


def changed_html(items: list[dict]) -> str:
    """Every item whose strict correctness training changed: the items McNemar's discordant counts are made of."""
    changed = changed_items(items)
    rows = [[change, i["id"], i["section"], i["expected_answer"], _answer(i["baseline"]), _answer(i["trained"])]
            for change, group in changed.items() for i in group]
    after, before = (len(group) for group in changed.values())
    table = table_html(["change", "id", "section", "expected", "baseline extracted", "trained extracted"],
                       [[one_line(v) for v in row] for row in rows], "m44-changed") if rows else ""
    return (f"<h4>Items whose strict correctness changed <small>({after} right only after training, {before} right "
            "only before: the discordant pairs of McNemar's test)</small></h4>" + (table or "<p>None.</p>"))


def _answer(scored: dict) -> str:
    return "(nothing)" if scored["extracted"] is None else scored["extracted"]


def examples_html(items: list[dict], labels: list[str]) -> str:
    """Per example item: its prompt and expected answer, then each model's output side by side."""
    blocks = []
    for why, item in example_items(items, labels[-1]):
        head = " · ".join(html.escape(one_line(str(item[k]))) for k in ("section", "category", "difficulty"))
        outputs = "".join(
            f'<div><p class="m44-label">{label}: <span class="m44-{right_or_wrong(item[label])}">'
            f"{right_or_wrong(item[label])}</span>; extracted {_extracted(item[label])}, "
            f"format {'ok' if item[label]['format_ok'] else 'wrong'}, {item[label]['tokens']} tokens</p>"
            f"{folded_pre(item[label]['output'])}</div>"
            for label in labels)
        blocks.append(
            f'<article class="m44-example"><p class="m44-label"><b>{html.escape(one_line(item["id"]))}</b> · '
            f"{esc(why)} · {head} · expected <code>{html.escape(one_line(item['expected_answer']))}</code></p>"
            f"{folded_pre(item['prompt'], 'm44-prompt')}"
            f'<div class="m44-pair">{outputs}</div></article>')
    return "".join(blocks)


def manifest_html(files: list[dict]) -> str:
    rows = [[f"<code>{esc(f['path'])}</code>", f"{f['bytes']:,}", f'<span class="m44-hash">{f["sha256"]}</span>']
            for f in files]
    total = sum(f["bytes"] for f in files)
    return (f"<details><summary>{MANIFEST}: {len(files)} files, {total / MIB:.1f} MiB, each with its sha256 "
            "(run.ipynb and run.html are added when the report is rendered)</summary>"
            + table_html(["path", "bytes", "sha256"], rows, "m44-manifest", escape=False) + "</details>")


def pairs_html(values: dict, kind: str) -> str:
    """name = value pairs, in columns that reflow with the page width."""
    shown = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    return (f'<dl class="m44-pairs {kind}">'
            + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in shown.items())
            + "</dl>")


def table_html(headers: list[str], rows: list[list[str]], kind: str, escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "".join(f"<th>{cell(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def list_html(lines: list[str], kind: str) -> str:
    return f'<ul class="{kind}">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


def _extracted(scored: dict) -> str:
    return "nothing" if scored["extracted"] is None else f"<code>{html.escape(one_line(scored['extracted']))}</code>"
