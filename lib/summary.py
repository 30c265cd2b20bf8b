"""m44_summary.md and failure_analysis.md, rendered from the run's facts (m44_summary.json): pure functions.

Consolidation gathers the facts once and writes them; the verifier renders them again and compares
the text byte for byte, and checks the facts against the files they came from. The report's first
screen (lib/report.py) is built from the same facts with the same helpers below. The facts:

    status            "completed" or "failed in <phase>"
    failed            {name, cause, duration_s} of the first failed phase, or null
    skipped           [{name, cause}] of the phases that did not run
    run_folder, launcher, model, device_dtype, hardware, config_sha256, run_time_s
    configuration     "official" (the official contract's parameters) or "other"; official_folder: m44_v<N> or not
    processes         {count, backend, sharding}: the training processes (torchrun when count > 1)
    rehearsal         an official run's arming (lib/rehearsal.py): the rehearsal that passed, or the waiver; else null
    interactive       null, or for a run stepped through in Jupyter: {detected_by, starts, runs: {phase: n},
                      parameter_changes: [{phase, run, changed: {name: [old, new]}}]} (phases.json)
    data              {files: {train, eval: {path, sha256, records}}, summary} from data_report.json, or null
                      when pre-flight stopped before both files were read
    preflight         preflight.json's checks [{name, status ("pass" | "fail" | "skip"), detail}], or null
    repository        {commit, dirty, unchanged, change}
    caveats           what a reader must know before reading the numbers (random weights, eval_limit)
    memory            training_metrics.json's {estimate_bytes, peak_bytes, kind}, or null
    finetune          {mode, settings, trainable_parameters, all_parameters, adapter_bytes}: the mode and the lora_*
                      settings (null for full) from config.json; the counts and the adapter's size on disk from
                      training_metrics.json's `finetune` (null before training recorded them)
    model_card        checkpoints/final/README.md when consolidation wrote it (a final checkpoint exists), else null
    training          {status, steps_completed, runtime_s, first: {step, loss} | null, last: ...}
    evaluation        evaluation_results.json's `metrics`, or null
    phases            [{name, status, duration_s, cause}]
    plots             the PNG files of the folder
    telemetry         the facts of system_metrics.jsonl (lib/telemetry_summary.py), or null when no phase was sampled
    failure           {last_step, last_loss, traceback} after a failure, else null
    inconsistent      only when consolidation's own check of the facts found problems (lib.verify.consistency):
                      the run's results stand, and the summary and the report say which files disagree
"""

from __future__ import annotations

from lib.config import default_parameters
from lib.contract import FAILURE_ANALYSIS, MANIFEST, STATEMENTS, TELEMETRY, TRAINING_METRICS
from lib.printable import fence, one_line, table_cell, visible
from lib.results import MODELS, describe, percent
from lib.units import GIB, format_size

# What the two required statements mean, for a reader who knows neither milestone.
STATEMENTS_MEANING = (
    "That is: this run (milestone M44) adds evidence after the submission and changes nothing in it; "
    "the artifact submitted at milestone M42 is still the one that counts."
)
DATA_ROLES = (("train", "training data"), ("eval", "eval data"))

# What to do after a failure, by the phase that failed: the cause above says what, this says how on.
NEXT_STEPS = {
    "parameters": "correct the parameter the cause names (params file or -p override)",
    "preflight": "fix what each failed check names (each says how); checks marked not checked run once their "
                 "inputs are fixed",
    "training": "read the last lines of training_log.txt and the traceback in failure_analysis.md; lower "
                "batch_size or max_seq_length after an out-of-memory failure",
    "evaluation": "read the traceback in failure_analysis.md; the trained model is in checkpoints/final and "
                  "`python -m lib.reevaluate` scores it again without training",
    "repository guard": "leave the repository alone while a run is in progress (the cause names what changed)",
}
# How a stop begins its cause: a signal to lib.execute (lib.run_folder.stop_cause), an interrupt of the kernel
# (lib/run.py) or a signal to the worker (lib/launcher.py).
STOP_CAUSES = ("stopped", "interrupted")
STOPPED = "nothing to fix: the run was stopped on request, as the cause says"
RERUN = "then start a new run into a new run_dir; this folder stays as the record of this attempt"
NO_TRACEBACK = "(no exception: the phase's own check failed)"
INCONSISTENT = ("**The evidence is inconsistent.** The run did its work and its results below stand, but the checker "
                "(lib/verify.py) disagrees with files the run wrote; judge those files against each disagreement:")


# lib.throughput.peak_memory's kinds, in words.
MEMORY_KINDS = {"cpu_rss": "the training process's peak resident memory", "cuda_allocated": "the CUDA allocator's peak"}


# Parameters that say where and how a run starts, not what it computes: no run differs from the official one by them.
NOT_THE_CONFIGURATION = ("run_dir", "require_rehearsal")


def differences_from_official(params: dict) -> list[str]:
    """Each parameter of a run's config.json that differs from the official contract, with both values."""
    official = default_parameters()
    return [f"{name} {params[name]!r} (official: {value!r})" for name, value in official.items()
            if name not in NOT_THE_CONFIGURATION and params.get(name, value) != value]


def configuration(params: dict) -> str:
    """"official" when a run's valid parameters are the official contract's, else "other"."""
    return "other" if differences_from_official(params) else "official"


def run_label(facts: dict) -> str:
    """What ran, in words, for a title: the official run, or how it differs from it."""
    if facts.get("configuration") == "official":
        return "the official run" if facts.get("official_folder") else "the official configuration, in a scratch folder"
    return f"not the official configuration: {one_line(facts['model'])} on {facts['device_dtype']}"


DIFFER = " from the official contract: "  # in a caveat, before the parameters that differ (the report folds them)


def caveats(params: dict) -> list[str]:
    """What a reader must know before the numbers, from the run's valid parameters (config.json's)."""
    notes = []
    if differences := differences_from_official(params):
        notes.append(f"not the official configuration: {len(differences)} parameter"
                     f"{'s differ' if len(differences) > 1 else ' differs'}{DIFFER}" + ", ".join(differences))
    if params.get("model_name") == "gemma-2b-shape":
        notes.append("the weights are random (Gemma 2B's architecture with seeded random weights): this run "
                     "measures memory and time at full size; its accuracy is meaningless")
    if params.get("eval_limit"):
        notes.append(f"only the first {params['eval_limit']} eval items were scored (parameter eval_limit)")
    return notes


def finetune_facts(params: dict | None, recorded: dict | None) -> dict:
    """The facts' `finetune`: the mode and lora_* settings from valid parameters (None: invalid), the counts and
    the adapter's size from training_metrics.json's `finetune` (None: training recorded none)."""
    recorded = recorded or {}
    mode = params["finetune"] if params else "unknown (parameters invalid)"
    settings = {"r": params["lora_r"], "alpha": params["lora_alpha"], "dropout": params["lora_dropout"],
                "target_modules": params["lora_target_modules"], "merge_adapter": params["merge_adapter"]
                } if params and mode != "full" else None
    return {"mode": mode, "settings": settings,
            **{key: recorded.get(key) for key in ("trainable_parameters", "all_parameters", "adapter_bytes")}}


def memory_line(memory: dict | None) -> str | None:
    """'peak 17.9 GiB measured (...); pre-flight estimated 19.6 GiB, 1.10x the peak', or None before a step."""
    if not memory or memory.get("peak_bytes") is None:
        return None
    peak, estimate = memory["peak_bytes"], memory["estimate_bytes"]
    line = f"peak {peak / GIB:.2f} GiB measured in training ({MEMORY_KINDS.get(memory['kind'], memory['kind'])})"
    if estimate is None:
        return line + "; no pre-flight estimate"
    return line + f"; pre-flight estimated {estimate / GIB:.2f} GiB, {estimate / peak:.2f}x the peak"


def finetune_text(finetune: dict) -> str:
    """'lora (r 16, alpha 32, dropout 0.05, all-linear): 1,474,560 of 269,572,736 parameters trained (0.55%);
    adapter 5.6 MiB on disk', from the facts' `finetune`."""
    settings = finetune["settings"]
    text = finetune["mode"] + (f" (r {settings['r']}, alpha {settings['alpha']}, dropout {settings['dropout']:g}, "
                               f"{one_line(settings['target_modules'])})" if settings else "")
    if finetune["trainable_parameters"] is None:
        return text + ": training recorded no parameter counts"
    trainable, total = finetune["trainable_parameters"], finetune["all_parameters"]
    text += f": {trainable:,} of {total:,} parameters trained ({trainable / total:.2%})"
    if finetune["adapter_bytes"] is not None:
        text += f"; adapter {format_size(finetune['adapter_bytes'])} on disk"
    return text


def completed(facts: dict) -> bool:
    return facts["status"] == "completed"


def skipped_text(facts: dict) -> str:
    return ", ".join(f"{p['name']} ({p['cause']})" for p in facts["skipped"]) or "nothing"


def checks_with(facts: dict, status: str) -> list[dict]:
    return [c for c in facts["preflight"] or [] if c["status"] == status]


def root_causes(facts: dict) -> list[str]:
    """Why the run failed, one item per cause: the failed pre-flight checks, else the failed phase's cause."""
    failed = facts["failed"]
    if failed is None:
        return []
    if failed["name"] == "preflight" and checks_with(facts, "fail"):
        return [visible(f"{c['name']}: {c['detail']}") for c in checks_with(facts, "fail")]
    return [visible(failed["cause"])]


def consequences(facts: dict) -> list[str]:
    """What did not run because of the root causes: pre-flight checks left unchecked, then skipped phases."""
    return ([visible(f"check {c['name']}: {c['detail']}") for c in checks_with(facts, "skip")]
            + [visible(f"phase {p['name']}: {p['cause']}") for p in facts["skipped"]])


def next_step(facts: dict) -> str:
    failed = facts["failed"]
    how = STOPPED if failed["cause"].startswith(STOP_CAUSES) else NEXT_STEPS.get(
        failed["name"], f"read the traceback in {FAILURE_ANALYSIS}")
    return f"{how[0].upper()}{how[1:]}; {RERUN}."


def data_line(entry: dict | None) -> str:
    """'data/eval_v2.jsonl (100 records), sha256 ...' for one data file of the facts."""
    if entry is None:
        return "not loaded (the run stopped before pre-flight read both data files)"
    return f"{one_line(file_name(entry['path']))} ({entry['records']} records), sha256 {entry['sha256']}"


def file_name(path: str) -> str:
    """The last part of a path written on any platform: a Windows run's facts render the same on Linux."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def data_files(facts: dict) -> list[tuple[str, dict | None]]:
    """(role, file fact) for the training and the eval data, in that order."""
    files = (facts["data"] or {}).get("files", {})
    return [(role, files.get(key)) for key, role in DATA_ROLES]


def status_label(facts: dict) -> str:
    """The status in capitals; an interactive run, and evidence the checker disagrees with, say so wherever it shows."""
    return facts["status"].upper() + interactive_suffix(facts) + (" (EVIDENCE INCONSISTENT)" if facts.get("inconsistent")
                                                                  else "")


def interactive_suffix(facts: dict) -> str:
    return " (interactive run)" if facts.get("interactive") else ""


def outcome_line(facts: dict) -> str:
    """One deterministic line: the status and the numbers a reviewer looks at first."""
    training = facts["training"]
    line = f"M44 {status_label(facts)}: {training['steps_completed']} training steps"
    if training["first"]:
        line += f", loss {training['first']['loss']:.4f} -> {training['last']['loss']:.4f}"
    evaluation = facts["evaluation"]
    if evaluation:
        line += "; " + "; ".join(
            f"{label} accuracy {percent(evaluation[label]['accuracy'])} format {percent(evaluation[label]['format_rate'])}"
            for label in MODELS if label in evaluation
        )
    return line


def render_summary(facts: dict) -> str:
    """m44_summary.md: the outcome (on failure its causes and what to do), the statements, the key facts, the phases."""
    training, evaluation, repo = facts["training"], facts["evaluation"], facts["repository"]
    lines = [f"# M44 summary: {status_label(facts)}, {run_label(facts)}", ""]
    if facts["failed"]:
        lines += [f"**Failed in phase {facts['failed']['name']}.** Root cause:", ""]
        lines += [f"- {cause}" for cause in root_causes(facts)]
        lines += ["", "Not done as a consequence:", ""]
        lines += [f"- {line}" for line in consequences(facts) or ["nothing"]]
        lines += ["", f"**Next**: {next_step(facts)} Details and traceback: {FAILURE_ANALYSIS}.", ""]
    lines += [
        # A blank quote line between them, so that Markdown shows the two statements as two lines.
        STATEMENTS[0],
        ">",
        STATEMENTS[1],
        "",
        STATEMENTS_MEANING,
        "",
    ]
    if facts.get("inconsistent"):
        lines += [INCONSISTENT, ""] + [f"- {visible(problem)}" for problem in facts["inconsistent"]] + [""]
    if facts.get("interactive"):
        lines += [interactive_text(facts["interactive"]), ""]
    lines += [f"**Caveat**: {note}." for note in facts.get("caveats") or []] + ([""] if facts.get("caveats") else [])
    verdict = ("unchanged during the run (git status and tracked-file diff identical before and after)"
               if repo["unchanged"] else f"CHANGED during the run ({one_line(repo['change'])})")
    lines += [
        f"- **status**: {facts['status']}",
        f"- **run folder**: {one_line(facts['run_folder'])} (claimed by {facts['launcher']})",
        *([f"- **rehearsal**: {facts['rehearsal']}"] if facts.get("rehearsal") else []),
        f"- **model**: {one_line(facts['model'])}",
        f"- **device / dtype**: {facts['device_dtype']}",
        *([f"- **processes**: {facts['processes']['count']} (torchrun, {facts['processes']['backend']}, "
           f"sharding {facts['processes']['sharding']})"] if facts["processes"]["count"] > 1 else []),
        f"- **hardware**: {facts['hardware']}",
        *(f"- **{role}**: {data_line(entry)}" for role, entry in data_files(facts)),
        *([f"- **data policy**: {facts['data']['summary']}"] if facts["data"] else []),
        f"- **run time**: {facts['run_time_s']:.1f} s over all phases",
        f"- **config sha256**: {facts['config_sha256']}",
        f"- **repository**: commit {repo['commit']}, {'with' if repo['dirty'] else 'no'} uncommitted changes; {verdict}",
        f"- **fine-tuning**: {finetune_text(facts['finetune'])}",
        f"- **training**: {training['status']}, {training['steps_completed']} steps, {training['runtime_s']:.1f} s"
        + (f" ({training['skipped_writes']} rewrites of {TRAINING_METRICS} between logging steps skipped: another "
           "program held the file)" if training.get("skipped_writes") else ""),
        *([f"- **memory**: {memory}"] if (memory := memory_line(facts.get("memory"))) else []),
        *([f"- **machine**: {machine}"] if (machine := telemetry_line(facts.get("telemetry"))) else []),
    ]
    if training["first"]:
        first, last = training["first"], training["last"]
        lines.append(f"- **loss**: {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']})")
    if evaluation:
        for label in MODELS:
            if label in evaluation:
                m = evaluation[label]
                lines.append(f"- **{label}**: accuracy {percent(m['accuracy'])} (lenient {percent(m['accuracy_lenient'])}), "
                             f"format rate {percent(m['format_rate'])}, n={m['n']}")
        if "comparison" in evaluation:
            lines.append(f"- **trained vs baseline**: strict accuracy {describe(evaluation['comparison']['strict'])}")
    lines += ["", "## Phases", "", "| phase | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['status']} | {p['duration_s']:.1f} | {table_cell(p['cause'])} |" for p in facts["phases"]]
    plots = ", ".join(facts["plots"]) or "none (training logged no step)"
    card = f" Model card: {facts['model_card']} (rendered from these facts)." if facts.get("model_card") else ""
    lines += ["", f"Plots: {plots}. File hashes: {MANIFEST}.{card}", ""]
    if facts.get("telemetry"):
        lines += [*telemetry_section(facts["telemetry"]), ""]
    return "\n".join(lines)


def telemetry_line(telemetry: dict | None) -> str | None:
    """The machine during training (else the first phase sampled) in one short line, for the first screen:
    'training (612 s): GPU 0 busy 94% (peak 100%), peak 71 °C, 0.210 kWh, never throttled', or without a GPU
    'training (92 s): workers 187% of one core (of 2), peak 1.21 GiB resident; no GPU sampled'. None when no phase
    was sampled; every phase in full is in the summary's section."""
    if not telemetry or not telemetry["phases"]:
        return None
    phases = telemetry["phases"]
    phase = next((p for p in phases if p["phase"] == "training"), phases[0])
    line = machine_text(phase) + ("" if phase["gpus"] else "; no GPU sampled")
    if errors := sum(p["error_count"] or 0 for p in phases):
        line += f"; {errors} sampler errors, recorded in {TELEMETRY} (the run went on)"
    return line


def machine_text(phase: dict) -> str:
    """One phase: each GPU's utilisation, temperature, energy and throttling; without a GPU, the CPU share and peak
    resident memory of the workers (or of the kernel, for a phase that ran no worker)."""
    parts = [f"GPU {gpu['index']} busy {_share(gpu['utilization_mean'])} (peak {_share(gpu['utilization_peak'])}), "
             f"peak {_value(gpu['temperature_peak_c'], '{:.0f} °C')}, {_value(gpu['energy_kwh'], '{:.3f} kWh')}, "
             f"{throttling_text(gpu)}" for gpu in phase["gpus"]]
    if not parts:
        who = "workers" if phase["workers_peak"] else "kernel"
        parts.append(f"{who} {_share(phase[f'{who}_cpu_percent_mean'])} of one core (of {phase['cpu_count']}), "
                     f"peak {_gib(phase[f'{who}_rss_peak_bytes'])} resident")
    return f"{phase['phase']} ({phase['duration_s']:.0f} s): " + "; ".join(parts)


def throttling_text(gpu: dict) -> str:
    if not gpu["throttled_s"]:
        return "never throttled"
    reasons = ", ".join(f"{reason} {seconds:.0f} s" for reason, seconds in gpu["throttled_by"].items())
    return f"throttled {gpu['throttled_s']:.0f} s ({reasons})"


def telemetry_section(telemetry: dict) -> list[str]:
    """m44_summary.md's section on the machine: per phase the processes and the system, per GPU its readings."""
    phases = telemetry["phases"]
    first = phases[0]
    lines = ["## System metrics", "",
             f"{telemetry['samples']} samples in {TELEMETRY}, every {first['interval_s']:g} s beside each phase's "
             f"worker (fields: docs/TELEMETRY.md). GPU: {first['gpu']}. CPU shares in % of one core "
             f"({first['cpu_count']} logical cores); the sampler's own CPU time is its cost to the run.", "",
             "| phase | seconds | samples | sampler CPU | workers | workers CPU | workers peak resident | kernel CPU | "
             "kernel peak resident | system memory peak | disk free, lowest |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        cost = "n/a" if p["sampler_cpu_s"] is None else (
            f"{p['sampler_cpu_s']:.2f} s ({p['sampler_cpu_s'] / p['duration_s']:.2%})" if p["duration_s"]
            else f"{p['sampler_cpu_s']:.2f} s")
        lines.append(f"| {p['phase']} | {p['duration_s']:.1f} | {p['samples']} | {cost} | {p['workers_peak']} | "
                     f"{_share(p['workers_cpu_percent_mean'])} | {_gib(p['workers_rss_peak_bytes'])} | "
                     f"{_share(p['kernel_cpu_percent_mean'])} | {_gib(p['kernel_rss_peak_bytes'])} | "
                     f"{_gib(p['memory_used_peak_bytes'])} | {_gib(p['disk_free_min_bytes'])} |")
    gpus = [(p["phase"], gpu) for p in phases for gpu in p["gpus"]]
    if gpus:
        lines += ["", "| phase | GPU | busy, mean | busy, peak | memory peak | temperature peak | power peak | "
                      "energy | throttling |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {phase} | {gpu['index']}: {table_cell(gpu['name'] or '')} | {_share(gpu['utilization_mean'])} | "
                  f"{_share(gpu['utilization_peak'])} | {_gib(gpu['memory_used_peak_bytes'])} | "
                  f"{_value(gpu['temperature_peak_c'], '{:.0f} °C')} | {_value(gpu['power_peak_w'], '{:.0f} W')} | "
                  f"{_value(gpu['energy_kwh'], '{:.4f} kWh')} | {throttling_text(gpu)} |" for phase, gpu in gpus]
    if not all(p["stopped"] for p in phases):
        lines += ["", "Not stopped (the kernel ended during the phase; its timeline ends at the last sample): "
                  + ", ".join(p["phase"] for p in phases if not p["stopped"]) + "."]
    if telemetry["errors"]:
        lines += ["", f"Sampler errors (each recorded once in {TELEMETRY}; sampling and the run went on):", ""]
        lines += [f"- {error['phase']}: {one_line(str(error['message']))}" for error in telemetry["errors"]]
    if telemetry["unreadable_lines"]:
        lines += ["", f"{telemetry['unreadable_lines']} line(s) of {TELEMETRY} are not JSON (a line cut off when the "
                      "kernel was killed mid-write) and were left out."]
    return lines


def _value(value: float | None, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def _gib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / GIB:.2f} GiB"


def _share(percent: float | None) -> str:
    return "n/a" if percent is None else f"{percent:.0f}%"


def interactive_text(interactive: dict) -> str:
    """The paragraph that says a run was stepped through, not executed as the official run is."""
    runs = ", ".join(f"{phase} {n}" for phase, n in interactive["runs"].items()) or "none"
    changes = "; ".join(
        ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in change["changed"].items())
        + f" (applied from {change['phase']}, run {change['run']})"
        for change in interactive["parameter_changes"]) or "none"
    return (f"Interactive run, stepped through cell by cell ({one_line(interactive['detected_by'])}): not the official "
            f"run. "
            f"Times each phase ran: {runs}; the evidence is from each phase's last run (running a phase again "
            f"deleted its evidence and that of every later phase). Started {interactive['starts']} time(s) in this "
            f"folder. Parameters changed while stepping through: {changes}.")


def render_failure_analysis(facts: dict) -> str:
    """failure_analysis.md: the failed phase, its root causes apart from their consequences, the traceback."""
    failed, failure = facts["failed"], facts["failure"]
    reached = "none"
    if failure["last_step"] is not None:
        reached = f"{failure['last_step']} (loss {failure['last_loss']:.4f})"
    traceback = visible(failure["traceback"].rstrip()) or NO_TRACEBACK
    return "\n".join([
        "# M44 failure analysis",
        "",
        f"- **phase**: {failed['name']}",
        f"- **cause**: {one_line(failed['cause'])}",
        f"- **after**: {failed['duration_s']:.1f} s in the phase",
        f"- **last training step reached**: {reached}",
        f"- **skipped**: {skipped_text(facts)}",
        "",
        "## Root cause",
        "",
        *(f"- {cause}" for cause in root_causes(facts)),
        "",
        "## Not done as a consequence",
        "",
        *(f"- {line}" for line in consequences(facts) or ["nothing"]),
        "",
        "## Next",
        "",
        next_step(facts),
        "",
        "Nothing was retried. Every evidence file was still written; see m44_summary.md.",
        "",
        "## Traceback",
        "",
        f"{fence(traceback)}text",
        traceback,
        fence(traceback),
        "",
    ])
