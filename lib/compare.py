"""Two run folders side by side: what differs between them, how their results differ, and whether that is real.

    python -m lib.compare RUN_A RUN_B [--out DIR]
    make compare A=submission_runs/m44_v1 B=submission_runs/m44_v2

Each folder is verified first (lib.verify.check); a completed, a failed and an interrupted run (one that never
reached consolidation) can all be compared, and a run that fails verification is named on the page's first screen.
A rehearsal's scratch folder (pre-flight only) can stand for a run: it has no manifest to verify, and no results.
The comparison is gathered once as data (compare.json), and the page (compare.html, one offline file) and the
printed summary are rendered from it by the pure functions below. Both go to --out (a new or empty folder; default
a new one under build/compare/), never into a run folder.

What is compared, each as a table of only the differences with a count of what is equal: parameters
(config.json; run_dir, which names each run's own folder, left out), code (the repository state), environment and
hardware (env_snapshot.txt, gpu_snapshot.txt), data (data_report.json), outcome and phases (m44_summary.json,
phases.json). Then the results side by side: the headline metrics, the loss curves on one plot (by optimizer step
and by tokens seen), throughput and memory, accuracy per category and per difficulty. When both runs scored the
same eval items (same ids, prompts and expected answers), their trained models are compared item by item with the
paired statistics every run uses for trained vs baseline (lib/stats.py: Newcombe's CI, exact McNemar); when not,
the page says why. Run B minus run A is the difference everywhere.

Exit status: 0 compared, both runs verify; 1 compared, but a run fails verification (the page says which);
2 nothing compared (not a run folder, two copies of one run, an --out that cannot be used).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from base64 import b64encode
from pathlib import Path

from lib.config import REPO_ROOT
from lib.console import utf8_output
from lib.contract import (
    CLAIM, CONFIG, DATA_REPORT, ENV_SNAPSHOT, EVAL_RESULTS, GPU_SNAPSHOT, MANIFEST, PHASES, PREFLIGHT, SUMMARY,
    SUMMARY_FACTS, TRAINING_METRICS,
)
from lib.evidence import write_json, write_text
from lib.execute import new_run_dir
from lib.plots import plot_loss_overlay
from lib.printable import esc, folded_pre, one_line
from lib.rehearsal import RECORD as REHEARSAL
from lib.results import COMPARED, MODELS, percent, points, rate
from lib.run_folder import TOKEN_ENV
from lib.stats import Sides, paired_comparison, word_verdict
from lib.summary import file_name
from lib.units import format_size
from lib.verify import NotARunFolder, check, load_json, read_text

HTML_NAME, JSON_NAME = "compare.html", "compare.json"
COMPARE_ROOT = REPO_ROOT / "build" / "compare"
STYLESHEETS = (Path(__file__).parent / "report_template" / "m44" / "static" / "m44.css",
               Path(__file__).parent / "report_template" / "compare" / "compare.css")
LABELS = ("A", "B")
# Values that differ between any two runs by design: each run's own folder, and lib.execute's claim on it.
NOT_COMPARED = {"run_dir": "the parameter naming each run's own folder",
                f"variable {TOKEN_ENV}": "the launcher's claim on its folder (env_snapshot.txt)"}
SIDES = Sides("run B's trained model", "run A's", "right only in run B", "only in run A")
SECTIONS = {  # name -> (heading, the files its values come from)
    "parameters": ("Parameters", (CONFIG,)),
    "code": ("Code", (SUMMARY_FACTS, PHASES)),
    "environment": ("Environment", (ENV_SNAPSHOT, GPU_SNAPSHOT)),
    "hardware": ("Hardware", (ENV_SNAPSHOT, GPU_SNAPSHOT)),
    "data": ("Data", (DATA_REPORT,)),
    "outcome": ("Outcome and phases", (SUMMARY_FACTS, PHASES, PREFLIGHT, TRAINING_METRICS)),
}
GROUPS = ("category", "difficulty")
EXAMPLES = 6  # items shown whole where the two trained models disagree; compare.json lists every one
# A file a part of a run folder cannot be read as expected (hand-edited, or another version's): that part is
# stated as not comparable, and the rest of the comparison goes on.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


class Refused(ValueError):
    """Nothing can be compared (exit 2): the message names the path and the fix."""


# --- reading one run folder -------------------------------------------------------------------------------------


def read_run(path: Path) -> dict:
    """Everything the comparison reads from one run folder, after verifying it; Refused if it is no run folder.

    A rehearsal's scratch folder (`make rehearse`: pre-flight only, build/rehearsals/) is read too: it claims
    nothing and has no manifest, so there is nothing to verify, but its parameters, snapshots and data report
    are what the official run it armed must share.
    """
    try:
        result = check(path)
        verification = {"checked": True, "ok": not result.problems, "problems": result.problems,
                        "verified": result.verified, "notes": result.notes}
    except NotARunFolder as exc:
        if not all((path / name).is_file() for name in (CONFIG, PREFLIGHT)):
            raise Refused(f"{exc}; name a run folder (one holding {SUMMARY}, {MANIFEST} or {CLAIM}) or a rehearsal's "
                          f"folder (one holding {CONFIG} and {PREFLIGHT})") from None
        verification = {"checked": False, "ok": True, "problems": [], "verified": 0, "notes": [
            "a rehearsal (pre-flight only, claims nothing): it has no manifest, so there is nothing to verify"]}
    unreadable: list[str] = []  # named by the verification too; here they only make a part not comparable
    run = {name: load_json(path, name, unreadable) for name in (
        CONFIG, PHASES, SUMMARY_FACTS, TRAINING_METRICS, EVAL_RESULTS, DATA_REPORT, PREFLIGHT, CLAIM, REHEARSAL)}
    run.update({name: read_text(path / name) if (path / name).is_file() else None
                for name in (ENV_SNAPSHOT, GPU_SNAPSHOT)})
    return {**run, "path": path, "verification": verification}


def same_run(a: dict, b: dict) -> str | None:
    """Why A and B are one run (the same folder, or copies of it), or None."""
    if a["path"].resolve() == b["path"].resolve():
        return "both name the same folder"
    if a[CLAIM] and b[CLAIM] and a[CLAIM].get("token") == b[CLAIM].get("token"):
        return f"both hold the claim of one run ({CLAIM}: token {a[CLAIM].get('token')})"
    manifests = [run["path"] / MANIFEST for run in (a, b)]
    if all(m.is_file() for m in manifests) and manifests[0].read_bytes() == manifests[1].read_bytes():
        return f"their {MANIFEST} files are identical: every file has the same sha256"
    return None


# --- the comparison as data ----------------------------------------------------------------------------------------


def compare_runs(a: dict, b: dict) -> dict:
    """compare.json: both runs' identity and verification, what differs, the results, and the paired test."""
    runs = dict(zip(LABELS, (a, b)))
    results = guarded("the results", gather_results, a, b)
    return {
        "runs": {label: identity(run) for label, run in runs.items()},
        "differences": {name: guarded(SECTIONS[name][0].lower(), section, name, a, b) for name in SECTIONS},
        "not_compared": NOT_COMPARED,
        "results": results,
        "paired": guarded("the paired test", paired, a, b),
    }


def guarded(what: str, gather, *args) -> dict:
    """One part of the comparison; a malformed file makes that part not comparable instead of stopping the rest."""
    try:
        return gather(*args)
    except MALFORMED as exc:
        return {"unreadable": f"{what} could not be compared: a file holds a missing or malformed value ({exc}); "
                              "`python -m lib.verify` on each run folder names the file"}


def identity(run: dict) -> dict:
    """Where a run is, how it ended, and its verification; a malformed facts file still gives its path and check."""
    facts, claim = run[SUMMARY_FACTS] or {}, run[CLAIM] or {}
    try:
        launcher = ("lib.execute --preflight-only" if not run["verification"]["checked"] else
                    facts.get("launcher") or claim.get("launcher"))
        model = facts.get("model") or (run[CONFIG] or {}).get("parameters", {}).get("model_name")
        status = status_of(run)
    except MALFORMED:
        launcher = model = None
        status = f"unknown ({SUMMARY_FACTS} or {PHASES} is malformed)"
    return {"path": str(run["path"]), "status": status, "launcher": launcher,
            "started_utc": claim.get("started_utc"), "model": model, "verification": run["verification"]}


def status_of(run: dict) -> str:
    if run[SUMMARY_FACTS]:
        return run[SUMMARY_FACTS]["status"]
    if not run["verification"]["checked"]:
        failed = any(c["status"] == "fail" for c in (run[PREFLIGHT] or {}).get("checks", []))
        return "rehearsal: pre-flight " + ("passed" if run[REHEARSAL] else "failed" if failed else "did not finish")
    running = [p["name"] for p in (run[PHASES] or {}).get("phases", []) if p.get("status") == "running"]
    return "interrupted" + (f" in {running[-1]}" if running else "") + ", never consolidated"


def section(name: str, a: dict, b: dict) -> dict:
    """One table of differences, and the files of that part each run lacks (a failed or interrupted run's)."""
    absent = {label: [f for f in SECTIONS[name][1] if run[f] is None] for label, run in zip(LABELS, (a, b))}
    return {**differences(SECTION_VALUES[name](a), SECTION_VALUES[name](b)),
            "absent": {label: files for label, files in absent.items() if files}}


def differences(a: dict, b: dict) -> dict:
    """The names whose values differ (a name one run lacks counts as differing), and how many are equal."""
    names = [name for name in dict.fromkeys([*a, *b]) if name not in NOT_COMPARED]
    differ = [{"name": name, "A": a.get(name), "B": b.get(name)} for name in names if a.get(name) != b.get(name)]
    return {"differ": differ, "equal": len(names) - len(differ)}


def parameter_values(run: dict) -> dict:
    config = run[CONFIG]
    if config is None:
        return {}
    return dict(config["parameters"])


def code_values(run: dict) -> dict:
    """The repository state when the run started (a rehearsal's: its pass record, else its environment snapshot);
    a run's facts add whether it changed during the run."""
    snapshot = snapshot_head(run[ENV_SNAPSHOT])
    before = (run[PHASES] or {}).get("repository_before") or run[REHEARSAL] or {}
    repository = (run[SUMMARY_FACTS] or {}).get("repository") or before
    dirty = repository.get("dirty", {"True": True, "False": False}.get(snapshot.get("working tree dirty", "").split(" ")[0]))
    values = {"commit": repository.get("commit") or snapshot.get("commit"), "uncommitted changes": dirty}
    if "status" in before:
        values["uncommitted files"] = "; ".join(line.strip() for line in before["status"].splitlines()) or "none"
    if "diff_sha256" in before:
        values["uncommitted diff sha256"] = before["diff_sha256"]
    if "unchanged" in repository:
        values["repository unchanged during the run"] = repository["unchanged"]
    return {k: v for k, v in values.items() if v is not None}


def snapshot_head(text: str | None) -> dict[str, str]:
    """The `key: value` lines of a snapshot before its first section."""
    head = {}
    for line in (text or "").split("\n## ")[0].splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith((" ", "#")):
            head[key] = value
    return head


def snapshot_section(text: str | None, title: str) -> list[str]:
    """The lines of the section `## <title>` of a snapshot file."""
    for section in (text or "").split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        if heading.split(" (")[0] == title:
            return [line for line in body.splitlines() if line.strip()]
    return []


def gpu_rows(text: str | None) -> list[dict[str, str]]:
    """nvidia-smi's rows (name, memory.total, driver_version, compute_cap) from the GPU snapshot; [] without a driver."""
    lines = snapshot_section(text, "nvidia-smi --query-gpu")
    if len(lines) < 2 or "," not in lines[0]:
        return []
    header = [name.strip().split(" [")[0] for name in lines[0].split(",")]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in csv.reader(lines[1:]) if len(row) == len(header)]


def torch_devices(text: str | None) -> list[str]:
    """'NVIDIA GeForce RTX 5090, 31.4 GiB, compute capability 12.0' per device torch saw; [] on a CPU."""
    return [line.split(": ", 1)[1] for line in (text or "").splitlines() if line.startswith("torch device ")]


def environment_values(run: dict) -> dict:
    env, gpu = snapshot_head(run[ENV_SNAPSHOT]), run[GPU_SNAPSHOT]
    if not env and gpu is None:
        return {}
    devices = torch_devices(gpu)
    values = {
        "python": env.get("python", "").split(" (")[0] or None,  # the interpreter's path differs between machines
        "torch": env.get("torch"),
        "CUDA (torch build)": env.get("torch.version.cuda"),
        "cuDNN": env.get("cudnn"),
        "GPU": "; ".join(device.split(",")[0] for device in devices) or "none visible to torch",
        "NVIDIA driver": next((row.get("driver_version") for row in gpu_rows(gpu)), None) or "none",
        "os": env.get("os"),
    }
    for line in snapshot_section(run[ENV_SNAPSHOT], "packages"):
        name, _, version = line.partition("==")
        values[f"package {name}"] = version
    for line in snapshot_section(run[ENV_SNAPSHOT], "environment variables"):
        if "=" in line:
            name, _, value = line.partition("=")
            values[f"variable {name}"] = value
    return {k: v for k, v in values.items() if v is not None}


def hardware_values(run: dict) -> dict:
    env, gpu = snapshot_head(run[ENV_SNAPSHOT]), run[GPU_SNAPSHOT]
    training = run[TRAINING_METRICS] or {}
    values = {
        "CPU": env.get("cpu"),
        "RAM": env.get("ram", "").split(", ")[0] or None,  # the total; what was available is the load, not hardware
        "training processes": (training.get("processes") or {}).get("world_size") or (
            (run[CONFIG] or {}).get("parameters", {}).get("num_processes")),
    }
    for n, device in enumerate(torch_devices(gpu)):
        values[f"GPU {n}"] = device.split(", ", 1)[1] if ", " in device else device
    for n, row in enumerate(gpu_rows(gpu)):
        values[f"GPU {n} memory (nvidia-smi)"] = row.get("memory.total")
    if gpu is not None and (line := snapshot_head(gpu).get("torch build architectures")):
        values["CUDA architectures (torch build)"] = line
    return {k: v for k, v in values.items() if v is not None}


def data_values(run: dict) -> dict:
    report = run[DATA_REPORT]
    if report is None:
        return {}
    values = {}
    for key, role in (("train", "training"), ("eval", "eval")):
        entry = report["files"].get(key)
        if entry:
            values |= {f"{role} file": file_name(entry["path"]), f"{role} sha256": entry["sha256"],
                       f"{role} records": entry["records"]}
    values |= {f"policy: {name}": value for name, value in (report.get("policy") or {}).items()}
    values["data checks"] = report["summary"]
    values |= {f"check {c['name']}": f"{c['status']}: {c['detail']}" for c in report.get("checks", [])}
    return values


def outcome_values(run: dict) -> dict:
    facts = run[SUMMARY_FACTS] or {}
    training = run[TRAINING_METRICS] or {}
    values = {"status": status_of(run), "launcher": identity(run)["launcher"]}
    if facts.get("failed"):
        values |= {"failed phase": facts["failed"]["name"], "cause": facts["failed"]["cause"]}
    phases = facts.get("phases") or (run[PHASES] or {}).get("phases", [])
    for phase in phases:
        values[f"phase {phase['name']}"] = phase["status"]
        values[f"phase {phase['name']} time (s)"] = round(phase["duration_s"], 1)
    if facts:
        values["run time (s)"] = round(facts["run_time_s"], 1)
        values["interactive run"] = bool(facts.get("interactive"))
        values["rehearsal"] = facts.get("rehearsal") or "none"
    values |= {f"pre-flight {c['name']}": c["status"] for c in (run[PREFLIGHT] or {}).get("checks", [])}
    if training:
        values |= {"training": training["status"], "training steps": training["steps_completed"]}
    return values


SECTION_VALUES = {"parameters": parameter_values, "code": code_values, "environment": environment_values,
                  "hardware": hardware_values, "data": data_values, "outcome": outcome_values}


# Results side by side: (row name, kind, value from the run). The kind says how a value and a difference show.
def _metric(label: str, key: str):
    return lambda run: ((run[EVAL_RESULTS] or {}).get("metrics", {}).get(label) or {}).get(key)


def _training(key: str):
    return lambda run: (run[TRAINING_METRICS] or {}).get(key)


def _last_loss(run: dict) -> float | None:
    history = (run[TRAINING_METRICS] or {}).get("history") or []
    return history[-1]["loss"] if history else None


def _memory(key: str):
    return lambda run: ((run[TRAINING_METRICS] or {}).get("memory") or {}).get(key)


def _eval_seconds(run: dict) -> float | None:
    items = (run[EVAL_RESULTS] or {}).get("items")
    return round(sum(item[label]["seconds"] for item in items for label in MODELS if label in item), 3) if items else None


HEADLINE = [
    *((f"{label} {name}", kind, _metric(label, key)) for label in reversed(MODELS) for name, kind, key in (
        ("strict accuracy", "rate", "accuracy"), ("lenient accuracy", "rate", "accuracy_lenient"),
        ("format rate", "rate", "format_rate"), ("stopped by itself", "rate", "stopped_rate"),
        ("mean output tokens", "number", "mean_tokens"), ("eval items", "count", "n"))),
    ("training steps", "count", _training("steps_completed")),
    ("last logged loss", "loss", _last_loss),
    ("mean training loss", "loss", _training("train_loss")),
]
THROUGHPUT_AND_MEMORY = [
    ("training time", "seconds", _training("runtime_s")),
    ("non-padding tokens trained on", "count", _training("total_tokens")),
    ("tokens per second", "per_second", _training("tokens_per_s")),
    ("samples per second", "per_second", _training("train_samples_per_second")),
    ("model FLOPs utilization", "rate", _training("mfu")),
    ("model parameters", "count", _training("num_parameters")),
    ("peak memory in training", "bytes", _memory("peak_bytes")),
    ("pre-flight memory estimate", "bytes", _memory("estimate_bytes")),
    ("memory measured as", "text", _memory("kind")),
    ("generation time, both models", "seconds", _eval_seconds),
]


def side_by_side(rows: list, a: dict, b: dict) -> list[dict]:
    """Per row its value in each run and B minus A where both are numbers; rows neither run has are left out."""
    table = []
    for name, kind, value_of in rows:
        va, vb = value_of(a), value_of(b)
        if va is None and vb is None:
            continue
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        table.append({"name": name, "kind": kind, "A": va, "B": vb, "difference": vb - va if numbers else None})
    return table


def gather_results(a: dict, b: dict) -> dict:
    return {
        "headline": side_by_side(HEADLINE, a, b),
        "curves": {label: loss_points(run) for label, run in zip(LABELS, (a, b))},
        "throughput_memory": side_by_side(THROUGHPUT_AND_MEMORY, a, b),
        "groups": {by: group_rows(a, b, by) for by in GROUPS},
    }


def loss_points(run: dict) -> list[dict]:
    history = (run[TRAINING_METRICS] or {}).get("history") or []
    return [{"step": h["step"], "tokens": h.get("num_input_tokens_seen"), "loss": h["loss"]} for h in history]


def group_rows(a: dict, b: dict, by: str) -> list[dict]:
    """The trained model's strict accuracy per value of `by` in each run, with its item counts."""
    items = [trained_items(run) for run in (a, b)]
    values = sorted({item[by] for run_items in items for item in run_items})
    rows = []
    for value in values:
        groups = [[item for item in run_items if item[by] == value] for run_items in items]
        rates = [rate(item["trained"]["correct_strict"] for item in group) if group else None for group in groups]
        rows.append({by: value, "n_A": len(groups[0]), "n_B": len(groups[1]), "A": rates[0], "B": rates[1],
                     "difference": None if None in rates else rates[1] - rates[0]})
    return rows


def trained_items(run: dict) -> list[dict]:
    items = (run[EVAL_RESULTS] or {}).get("items") or []
    return [item for item in items if "trained" in item]


# --- is the difference real ----------------------------------------------------------------------------------------


def paired(a: dict, b: dict) -> dict:
    """The two trained models item by item when both runs scored the same items; else why that is not possible."""
    why = why_not_paired(a, b)
    if why:
        return {"possible": False, "why_not": why}
    by_id = {item["id"]: item for item in trained_items(b)}
    pairs = [(item, by_id[item["id"]]) for item in trained_items(a)]
    tests = {name: paired_comparison([x["trained"][key] for x, _ in pairs], [y["trained"][key] for _, y in pairs])
             for name, (key, _) in COMPARED.items()}
    return {
        "possible": True,
        "why_not": None,
        "n": len(pairs),
        "tests": tests,
        "verdict": word_verdict(tests["strict"], "strict accuracy", SIDES),
        "disagreements": disagreements(pairs),
    }


def why_not_paired(a: dict, b: dict) -> str | None:
    """Why the two runs' trained models cannot be paired item by item, in words; None when they can."""
    fix = ("a paired test needs both runs scored on the same items: run both with the same eval_file and eval_limit, "
           "or score each trained model on one eval file with `python -m lib.reevaluate`")
    items = {}
    for label, run in zip(LABELS, (a, b)):
        if run[EVAL_RESULTS] is None:
            return f"run {label} has no evaluation results (its status: {status_of(run)}), so there is nothing to pair"
        items[label] = trained_items(run)
        if not items[label]:
            return f"run {label} scored no trained model, so there is nothing to pair"
        ids = [item["id"] for item in items[label]]
        if len(set(ids)) < len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            return f"run {label}'s eval items repeat ids ({', '.join(repeated[:3])}), so items cannot be matched by id"
    ids = {label: {item["id"] for item in group} for label, group in items.items()}
    if ids["A"] != ids["B"]:
        only = {label: sorted(ids[label] - ids[other]) for label, other in (("A", "B"), ("B", "A"))}
        listed = "; ".join(f"{len(only[label])} only in run {label} ({', '.join(only[label][:3])}"
                           f"{', ...' if len(only[label]) > 3 else ''})" for label in LABELS if only[label])
        return (f"the runs scored different eval items: run A {len(ids['A'])}, run B {len(ids['B'])}; {listed}. "
                f"{fix[0].upper()}{fix[1:]}")
    by_id = {item["id"]: item for item in items["B"]}
    for field in ("expected_answer", "prompt"):
        changed = [item["id"] for item in items["A"] if item[field] != by_id[item["id"]][field]]
        if changed:
            what = "expected answer" if field == "expected_answer" else "prompt"
            return (f"the eval items have the same ids, but {len(changed)} {'has' if len(changed) == 1 else 'have'} "
                    f"another {what} in run B ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): "
                    f"different eval sets. {fix[0].upper()}{fix[1:]}")
    return None


def disagreements(pairs: list[tuple[dict, dict]]) -> list[dict]:
    """Every item on which the two trained models differ: in strict correctness first, then in the answer
    extracted, then in the output alone; each with both outputs whole."""
    found = []
    for x, y in pairs:
        ta, tb = x["trained"], y["trained"]
        if ta["correct_strict"] != tb["correct_strict"]:
            why = "right only in run B" if tb["correct_strict"] else "right only in run A"
        elif ta["extracted"] != tb["extracted"]:
            why = f"different answers, both {'right' if ta['correct_strict'] else 'wrong'}"
        elif ta["output"] != tb["output"]:
            why = "the same answer, different outputs"
        else:
            continue
        found.append({"id": x["id"], "why": why, "section": x["section"], "category": x["category"],
                      "difficulty": x["difficulty"], "prompt": x["prompt"], "expected_answer": x["expected_answer"],
                      **{label: {k: t[k] for k in ("output", "extracted", "correct_strict", "format_ok", "tokens")}
                         for label, t in zip(LABELS, (ta, tb))}})
    order = ("right only", "different answers", "the same answer")
    return sorted(found, key=lambda d: next(n for n, start in enumerate(order) if d["why"].startswith(start)))


# --- text rendered from compare.json (pure functions) ------------------------------------------------------------


def shown(value: object) -> str:
    """A value of a differences table as one visible line; a run that does not record it says so."""
    if value is None:
        return "(not recorded)"
    if isinstance(value, str):
        return one_line(value) or "(empty)"
    return json.dumps(value, ensure_ascii=False)


def shown_value(kind: str, value: object) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return percent(value)
    if kind == "seconds":
        return f"{value:,.1f} s"
    if kind == "bytes":
        return format_size(value)
    if kind == "count":
        return f"{value:,}"
    if kind == "loss":
        return f"{value:.4f}"
    if kind in ("number", "per_second"):
        return f"{value:,.1f}"
    return one_line(str(value))


def shown_difference(kind: str, difference: float | None, a: object = None) -> str:
    """B minus A: points for a rate, a signed value for an amount, with the ratio where it says more."""
    if difference is None:
        return "-"
    if kind == "rate":
        return f"{points(difference)} points"
    if kind == "bytes":
        return ("+" if difference >= 0 else "-") + format_size(abs(difference))
    text = f"{difference:+,}" if kind == "count" else f"{difference:+.4f}" if kind == "loss" else f"{difference:+,.1f}"
    if kind in ("seconds", "per_second") and a:
        text += f" (x{(a + difference) / a:.2f})"
    return text


def section_counts(section: dict) -> str:
    """'1 differs, 26 equal (run A has no data_report.json)' for one table of differences."""
    if "unreadable" in section:
        return "not comparable"
    n = len(section["differ"])
    counts = f"{n} {'differs' if n == 1 else 'differ'}, {section['equal']} equal" if n else \
        f"nothing differs, {section['equal']} equal"
    return counts + "".join(f" (run {label} has no {either(files)})" for label, files in section["absent"].items())


def either(names: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def run_line(label: str, run: dict) -> str:
    check = run["verification"]
    verified = (check["notes"][0] if not check["checked"] else f"verified ({check['verified']} files)" if check["ok"] else
                f"FAILS VERIFICATION: {len(check['problems'])} problem(s), the first: {one_line(check['problems'][0])}")
    return f"Run {label}: {one_line(run['path'])}: {run['status']}; {verified}"


def headline_row(facts: dict) -> dict | None:
    rows = facts["results"].get("headline", [])
    return next((row for row in rows if row["name"] == "trained strict accuracy"), None)


def paired_line(facts: dict) -> str:
    test = facts["paired"]
    if "unreadable" in test:
        return test["unreadable"]
    if not test["possible"]:
        return f"No paired test: {test['why_not']}"
    return f"Paired over {test['n']} items: {test['verdict']}"


def render_text(facts: dict, out: str) -> str:
    """What the command prints: both runs, what differs per part, the headline difference, the verdict, the files."""
    lines = [run_line(label, run) for label, run in facts["runs"].items()]
    lines.append("What differs (run A -> run B):")
    for name, section in facts["differences"].items():
        named = "" if "unreadable" in section else "; ".join(
            f"{one_line(d['name'])} {shown(d['A'])} -> {shown(d['B'])}" for d in section["differ"][:3])
        more = len(section.get("differ", [])) - 3
        lines.append(f"  {SECTIONS[name][0].lower()}: {section_counts(section)}"
                     + (f": {named}" if named else "") + (f"; and {more} more" if more > 0 else ""))
    if row := headline_row(facts):
        lines.append(f"Trained strict accuracy: run A {shown_value('rate', row['A'])}, run B "
                     f"{shown_value('rate', row['B'])}, difference {shown_difference('rate', row['difference'])}")
    lines.append(paired_line(facts))
    lines.append(f"Written: {out}")
    return "\n".join(lines) + "\n"


def render_html(facts: dict, stylesheet: str) -> str:
    """compare.html: the first screen (both runs, their verification, what differs, the headline and the verdict),
    then the tables of differences, the results side by side, and the paired test with the disagreeing items."""
    names = short_names([Path(facts["runs"][label]["path"]) for label in LABELS])
    title = f"Run comparison: {names[0]} vs {names[1]}"
    body = "".join([
        f"<h1>{esc(title)}</h1>",
        card_html(facts),
        "<h2>What differs</h2>",
        f"<p>Only what differs is listed, with a count of what is equal. Not compared: "
        f"{esc(', '.join(f'{k} ({v})' for k, v in facts['not_compared'].items()))}.</p>",
        *(differences_html(name, section) for name, section in facts["differences"].items()),
        "<h2>How the results differ</h2>",
        results_html(facts["results"]),
        "<h2>Is the difference real</h2>",
        paired_html(facts["paired"]),
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{stylesheet}</style></head>"
            f'<body><main class="jp-RenderedHTMLCommon jp-OutputArea-output cmp-page">{body}</main></body></html>\n')


def short_names(paths: list[Path]) -> list[str]:
    """The runs' folder names; two folders of one name (m44_v1 of two checkouts) are told apart by their parents."""
    same = len({p.name for p in paths}) == 1
    return [f"{p.parent.name}/{p.name}" if same else p.name for p in paths]


def card_html(facts: dict) -> str:
    runs = facts["runs"]
    ok = all(run["verification"]["ok"] for run in runs.values())
    items = []
    for label, run in runs.items():
        check = run["verification"]
        if not check["checked"]:
            verdict = esc(check["notes"][0])
        elif check["ok"]:
            verdict = f'<span class="m44-right">verified</span> ({check["verified"]} files match its manifest)'
        else:
            listed = "".join(f"<li>{esc(p)}</li>" for p in check["problems"][:3])
            more = len(check["problems"]) - 3
            verdict = (f'<span class="m44-wrong">FAILS VERIFICATION</span>: {len(check["problems"])} problem(s); '
                       f"its numbers below may not be what the run produced"
                       f"<ul>{listed}{f'<li>and {more} more</li>' if more > 0 else ''}</ul>"
                       f"<small>Details: <code>python -m lib.verify {esc(run['path'])}</code></small>")
        items.append(f'<li class="m44-{"pass" if check["ok"] else "fail"}"><b>Run {label}</b> '
                     f"<code>{esc(run['path'])}</code>: {esc(run['status'])}"
                     + (f", {esc(str(run['model']))}" if run["model"] else "") + f"; {verdict}</li>")
    counts = "".join(f"<dt>{SECTIONS[name][0]}</dt><dd>{esc(section_counts(section))}"
                     + ("" if "unreadable" in section or not section["differ"] else
                        ": " + esc(", ".join(d["name"] for d in section["differ"][:6]))
                        + (", ..." if len(section["differ"]) > 6 else ""))
                     + "</dd>" for name, section in facts["differences"].items())
    row = headline_row(facts)
    headline = "" if row is None else (
        f"<p><b>Trained strict accuracy</b>: run A {shown_value('rate', row['A'])}, run B "
        f"{shown_value('rate', row['B'])}, difference {shown_difference('rate', row['difference'])}.</p>")
    kind = "m44-completed" if ok else "m44-failed"
    badge = ("VERIFICATION FAILED" if not ok else "BOTH VERIFIED" if all(run["verification"]["checked"]
             for run in runs.values()) else "NO VERIFICATION PROBLEM")
    return (f'<section class="m44-card {kind}" aria-label="comparison outcome">'
            f'<p class="m44-outcome"><span class="m44-badge">{badge}</span> '
            f"Run B compared with run A; every difference is B minus A.</p>"
            f'<ul class="cmp-verification">{"".join(items)}</ul>'
            f'<dl class="m44-facts cmp-counts">{counts}</dl>{headline}'
            f'<p class="m44-verdict cmp-verdict">{esc(paired_line(facts))}</p></section>')


def differences_html(name: str, section: dict) -> str:
    heading, files = SECTIONS[name]
    head = f"<h3>{heading} <small>({esc(', '.join(files))}: {esc(section_counts(section))})</small></h3>"
    if "unreadable" in section:
        return head + f"<p>{esc(section['unreadable'])}</p>"
    if not section["differ"]:
        return head
    rows = [[d["name"], shown(d["A"]), shown(d["B"])] for d in section["differ"]]
    return head + table_html(["", "run A", "run B"], rows, f"cmp-diff cmp-{name}")


def results_html(results: dict) -> str:
    if "unreadable" in results:
        return f"<p>{esc(results['unreadable'])}</p>"
    parts = ["<h3>Headline metrics</h3>", value_table(results["headline"], "cmp-headline")]
    curves = {f"run {label}": points for label, points in results["curves"].items() if points}
    if curves:
        buffer = io.BytesIO()
        plot_loss_overlay(curves, buffer)
        alt = "Line charts, log scale: training loss of " + "; ".join(
            f"{label} from {p[0]['loss']:.4f} at step {p[0]['step']} to {p[-1]['loss']:.4f} at step {p[-1]['step']}"
            for label, p in curves.items()) + "; left by optimizer step, right by non-padding tokens seen."
        parts.append(f'<figure class="m44-figure cmp-loss"><img src="data:image/png;base64,'
                     f'{b64encode(buffer.getvalue()).decode("ascii")}" alt="{esc(alt)}"><figcaption>Loss on the '
                     "response tokens at each logging step of each run. By tokens seen, runs with different batch "
                     "sizes or sequence lengths line up by how much text they trained on.</figcaption></figure>")
    else:
        parts.append("<p>No loss curves: neither run logged a training step.</p>")
    parts += ["<h3>Throughput and memory</h3>", value_table(results["throughput_memory"], "cmp-throughput")]
    tables = [group_html(by, rows) for by, rows in results["groups"].items() if rows]
    if tables:
        parts += ["<h3>Trained model's strict accuracy per group</h3>",
                  f'<div class="m44-tables">{"".join(tables)}</div>']
    return "".join(parts)


def value_table(rows: list[dict], kind: str) -> str:
    if not rows:
        return "<p>Neither run recorded these.</p>"
    return table_html(["", "run A", "run B", "B minus A"],
                      [[row["name"], shown_value(row["kind"], row["A"]), shown_value(row["kind"], row["B"]),
                        shown_difference(row["kind"], row["difference"], row["A"])] for row in rows], kind)


def group_html(by: str, rows: list[dict]) -> str:
    body = [[one_line(str(row[by])), f"{row['n_A']} / {row['n_B']}", shown_value("rate", row["A"]),
             shown_value("rate", row["B"]), shown_difference("rate", row["difference"])] for row in rows]
    return f"<div>{table_html([by, 'items A / B', 'run A', 'run B', 'B minus A'], body, 'cmp-groups', by)}</div>"


def paired_html(test: dict) -> str:
    if "unreadable" in test:
        return f"<p>{esc(test['unreadable'])}</p>"
    if not test["possible"]:
        return f'<p class="cmp-no-pairs"><b>No paired test is possible:</b> {esc(test["why_not"])}.</p>'
    strict = test["tests"]["strict"]
    rows = [[name.replace("strict", "strict accuracy").replace("lenient", "lenient accuracy").replace(
                 "format", "format rate"),
             points(t["difference"]), f"{points(t['ci_low'])} to {points(t['ci_high'])}", f"{t['mcnemar_p']:.3g}",
             f"{t['trained_only']} / {t['baseline_only']}"] for name, t in test["tests"].items()]
    found = test["disagreements"]
    counts = {why: sum(d["why"].startswith(why) for d in found) for why in ("right only in run B", "right only in run A")}
    intro = (f"<p>Both runs scored the same {test['n']} eval items (same ids, prompts and expected answers), so their "
             "trained models are compared item by item: the difference is run B's accuracy minus run A's, with "
             f"Newcombe's {strict['confidence']:.0%} score CI for paired proportions; McNemar's exact test counts "
             f"the items only one model got right: {counts['right only in run B']} right only in run B, "
             f"{counts['right only in run A']} right only in run A. The verdict needs both: a CI that excludes "
             "zero and p &lt; 0.05.</p>")
    table = table_html(["", "B minus A (points)", f"{strict['confidence']:.0%} CI", "McNemar p",
                        "right only in B / only in A"], rows, "cmp-paired")
    return (intro + table + f'<p class="m44-verdict">{esc(test["verdict"])}</p>'
            + f"<h3>Where the two trained models disagree <small>({len(found)} items; "
            f"{min(len(found), EXAMPLES)} shown, all in {JSON_NAME})</small></h3>"
            + ("".join(example_html(d) for d in found[:EXAMPLES]) or "<p>Nowhere: both gave the same output on "
               "every item.</p>"))


def example_html(d: dict) -> str:
    head = " · ".join(esc(str(d[k])) for k in ("section", "category", "difficulty"))
    outputs = "".join(
        f'<div><p class="m44-label">run {label}: {verdict_html(t)}; extracted {extracted_html(t)}, '
        f'format {"ok" if t["format_ok"] else "wrong"}, {t["tokens"]} tokens</p>{folded_pre(t["output"])}</div>'
        for label, t in ((label, d[label]) for label in LABELS))
    return (f'<article class="m44-example"><p class="m44-label"><b>{esc(d["id"])}</b> · {esc(d["why"])} · {head} · '
            f"expected <code>{esc(one_line(d['expected_answer']))}</code></p>{folded_pre(d['prompt'], 'm44-prompt')}"
            f'<div class="m44-pair">{outputs}</div></article>')


def verdict_html(scored: dict) -> str:
    word = "right" if scored["correct_strict"] else "wrong"
    return f'<span class="m44-{word}">{word}</span>'


def extracted_html(scored: dict) -> str:
    if scored["extracted"] is None:
        return "nothing"
    text = one_line(scored["extracted"])
    return f"<code>{esc(text[:60])}</code>" + (f" ({len(text) - 60:,} more characters)" if len(text) > 60 else "")


def table_html(headers: list[str], rows: list[list[str]], kind: str, caption: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = f"<caption>by {esc(caption)}</caption>" if caption else ""
    return f'<table class="{kind}">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- the command ---------------------------------------------------------------------------------------------------


def output_folder(out: Path | None, runs: list[Path]) -> Path:
    """--out, checked: a new or empty folder inside no run folder; default a new folder under build/compare/."""
    if out is None:
        names = "-vs-".join(short_names([p.resolve() for p in runs]))
        return new_run_dir("".join(c if c.isalnum() or c in "._-" else "_" for c in names), COMPARE_ROOT)
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        found = [name for name in (SUMMARY, MANIFEST, CLAIM) if (folder / name).is_file()]
        if found or any(folder == run.resolve() for run in runs):
            raise Refused(f"--out {out} is inside the run folder {folder}; a run folder holds only its own evidence: "
                          "choose a folder outside every run folder")
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())):
        raise Refused(f"--out {out} already exists and is not an empty folder: name a new folder, or leave --out out "
                      f"for a new one under {COMPARE_ROOT.relative_to(REPO_ROOT).as_posix()}/")
    return resolved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="run A, e.g. submission_runs/m44_v1")
    parser.add_argument("run_b", type=Path, help="run B; every difference is B minus A")
    parser.add_argument("--out", type=Path, help=f"a new folder for {HTML_NAME} and {JSON_NAME} "
                                                 "(default: a new folder under build/compare/)")
    args = parser.parse_args(argv)
    utf8_output()
    try:
        out = output_folder(args.out, [args.run_a, args.run_b])
        runs = []
        for label, path in zip(LABELS, (args.run_a, args.run_b)):
            print(f"verifying run {label}: {path}", flush=True)
            runs.append(read_run(path))
        if why := same_run(*runs):
            raise Refused(f"{args.run_a} and {args.run_b} are one run ({why}): nothing can differ; name two runs")
    except Refused as exc:
        print(f"lib.compare: {exc}", file=sys.stderr)
        return 2
    facts = compare_runs(*runs)
    stylesheet = "\n".join(path.read_text(encoding="utf-8") for path in STYLESHEETS)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / JSON_NAME, {"compared_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts})
    write_text(out / HTML_NAME, render_html(facts, stylesheet))
    print(render_text(facts, f"{out / HTML_NAME} and {JSON_NAME} beside it"), end="")
    return 0 if all(run["verification"]["ok"] for run in facts["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
