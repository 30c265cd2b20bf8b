"""m44_summary.md and failure_analysis.md, rendered from the run's facts (m44_summary.json): pure functions.

Consolidation gathers the facts once and writes them; the verifier renders them again and compares
the text byte for byte, and checks the facts against the files they came from. The facts:

    status            "completed" or "failed in <phase>"
    failed            {name, cause, duration_s} of the first failed phase, or null
    skipped           [{name, cause}] of the phases that did not run
    run_folder, launcher, model, device_dtype, hardware, config_sha256, run_time_s
    interactive       null, or for a run stepped through in Jupyter: {detected_by, starts, runs: {phase: n},
                      parameter_changes: [{phase, run, changed: {name: [old, new]}}]} (phases.json)
    data              {files: {train, eval: {path, sha256, records}}, summary} from data_report.json, or null
    repository        {commit, dirty, unchanged, change}
    training          {status, steps_completed, runtime_s, first: {step, loss} | null, last: ...}
    evaluation        evaluation_results.json's `metrics`, or null
    phases            [{name, status, duration_s, cause}]
    plots             the PNG files of the folder
    failure           {last_step, last_loss, traceback} after a failure, else null
"""

from __future__ import annotations

from lib.contract import FAILURE_ANALYSIS, MANIFEST, STATEMENTS
from lib.results import MODELS, describe


def status_of(facts: dict) -> str:
    return facts["status"]


def completed(facts: dict) -> bool:
    return facts["status"] == "completed"


def skipped_text(facts: dict) -> str:
    return ", ".join(f"{p['name']} ({p['cause']})" for p in facts["skipped"]) or "nothing"


def status_label(facts: dict) -> str:
    """The status in capitals; an interactive run says so wherever its status is shown."""
    return facts["status"].upper() + (" (interactive run)" if facts.get("interactive") else "")


def outcome_line(facts: dict) -> str:
    """One deterministic line: the status and the numbers a reviewer looks at first."""
    training = facts["training"]
    line = f"M44 {status_label(facts)}: {training['steps_completed']} training steps"
    if training["first"]:
        line += f", loss {training['first']['loss']:.4f} -> {training['last']['loss']:.4f}"
    evaluation = facts["evaluation"]
    if evaluation:
        line += "; " + "; ".join(
            f"{label} accuracy {evaluation[label]['accuracy']:.0%} format {evaluation[label]['format_rate']:.0%}"
            for label in MODELS if label in evaluation
        )
    return line


def render_summary(facts: dict) -> str:
    """m44_summary.md: the outcome first, the two required statements, the key facts, the phase table."""
    training, evaluation, repo = facts["training"], facts["evaluation"], facts["repository"]
    lines = [
        f"# M44 summary: {status_label(facts)}",
        "",
        # A blank quote line between them, so that Markdown shows the two statements as two lines.
        STATEMENTS[0],
        ">",
        STATEMENTS[1],
        "",
    ]
    if facts["failed"]:
        lines += [
            f"**Failed in phase {facts['failed']['name']}**: {facts['failed']['cause']}",
            "",
            f"**Skipped**: {skipped_text(facts)}. Details: {FAILURE_ANALYSIS}.",
            "",
        ]
    if facts.get("interactive"):
        lines += [interactive_text(facts["interactive"]), ""]
    verdict = ("unchanged during the run (git status and tracked-file diff identical before and after)"
               if repo["unchanged"] else f"CHANGED during the run ({repo['change']})")
    lines += [
        f"- **status**: {facts['status']}",
        f"- **run folder**: {facts['run_folder']} (claimed by {facts['launcher']})",
        f"- **model**: {facts['model']}",
        f"- **device / dtype**: {facts['device_dtype']}",
        f"- **hardware**: {facts['hardware']}",
        f"- **run time**: {facts['run_time_s']:.1f} s over all phases",
        f"- **config sha256**: {facts['config_sha256']}",
        f"- **data**: {data_line(facts['data'])}",
        f"- **repository**: commit {repo['commit']}, {'with' if repo['dirty'] else 'no'} uncommitted changes; {verdict}",
        f"- **training**: {training['status']}, {training['steps_completed']} steps, {training['runtime_s']:.1f} s",
    ]
    if training["first"]:
        first, last = training["first"], training["last"]
        lines.append(f"- **loss**: {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']})")
    if evaluation:
        for label in MODELS:
            if label in evaluation:
                m = evaluation[label]
                lines.append(f"- **{label}**: accuracy {m['accuracy']:.2%} (lenient {m['accuracy_lenient']:.2%}), "
                             f"format rate {m['format_rate']:.2%}, n={m['n']}")
        if "comparison" in evaluation:
            lines.append(f"- **trained vs baseline**: strict accuracy {describe(evaluation['comparison']['strict'])}")
    lines += ["", "## Phases", "", "| phase | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['status']} | {p['duration_s']:.1f} | {p['cause']} |" for p in facts["phases"]]
    plots = ", ".join(facts["plots"]) or "none (training logged no step)"
    lines += ["", f"Plots: {plots}. File hashes: {MANIFEST}.", ""]
    return "\n".join(lines)


def interactive_text(interactive: dict) -> str:
    """The paragraph that says a run was stepped through, not executed as the official run is."""
    runs = ", ".join(f"{phase} {n}" for phase, n in interactive["runs"].items()) or "none"
    changes = "; ".join(
        ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in change["changed"].items())
        + f" (applied from {change['phase']}, run {change['run']})"
        for change in interactive["parameter_changes"]) or "none"
    return (f"**Interactive run**, stepped through in Jupyter ({interactive['detected_by']}): not the official run. "
            f"Times each phase ran: {runs}; the evidence is from each phase's last run (running a phase again "
            f"deleted its evidence and that of every later phase). Started {interactive['starts']} time(s) in this "
            f"folder. Parameters changed while stepping through: {changes}.")


def data_line(data: dict | None) -> str:
    if data is None:
        return "not loaded (the run stopped before both data files were read)"
    files = ", ".join(f"{role} {_file_name(f['path'])} ({f['records']} records, sha256 {f['sha256'][:12]})"
                      for role, f in data["files"].items())
    return f"{files}; {data['summary']}"


def _file_name(path: str) -> str:
    """The last part of a path written on any platform: a Windows run's facts render the same on Linux."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def render_failure_analysis(facts: dict) -> str:
    """failure_analysis.md: the failed phase, its cause and traceback, how far training got, what was skipped."""
    failed, failure = facts["failed"], facts["failure"]
    reached = "none"
    if failure["last_step"] is not None:
        reached = f"{failure['last_step']} (loss {failure['last_loss']:.4f})"
    return "\n".join([
        "# M44 failure analysis",
        "",
        f"- **phase**: {failed['name']}",
        f"- **cause**: {failed['cause']}",
        f"- **after**: {failed['duration_s']:.1f} s in the phase",
        f"- **last training step reached**: {reached}",
        f"- **skipped**: {skipped_text(facts)}",
        "",
        "Nothing was retried. Every evidence file was still written; see m44_summary.md.",
        "",
        "## Traceback",
        "",
        "```text",
        failure["traceback"].rstrip() or "(no exception: the phase's own check failed)",
        "```",
        "",
    ])
