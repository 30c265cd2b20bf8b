"""Check a finished run folder against its manifest, the evidence contract and its own facts.

    python -m lib.verify submission_runs/m44_v1

Prints one line per problem, naming the file, then "OK: <n> files verified" (exit 0) or
"FAILED: <k> problems" (exit 1). A folder holding neither manifest.json nor m44_summary.md is
not a run folder: exit 2. `verify(run_dir)` returns the problems (empty when the folder holds).
It reads only: no torch, no model, nothing written.

What is checked:

1. The manifest. Every listed file must exist with the listed size and sha256; every file in the
   folder must be listed (manifest.json itself excepted). Two exceptions, both reported as
   "not verified" notes rather than problems:
   - run.ipynb and run.html. Consolidation writes the manifest from inside the notebook, while
     papermill is still executing it: papermill saves run.ipynb again after the last cell, and
     nbconvert renders run.html later still. `python -m lib.execute` then rewrites the manifest
     with `"final": true`. The rule: in a final manifest run.ipynb and run.html are checked like
     every other file. In any other (the raw papermill CLI, or a check from inside the notebook),
     run.ipynb may differ from its entry and either may be unlisted; run.ipynb must still be a
     notebook (JSON with cells).
   - Model weights. checkpoints/ and base_model/ are ignored by git (.gitignore), so a
     committed run folder arrives without them: a listed weights folder that is wholly absent
     is noted. If it is there at all, every file listed in it must match.
   A notebook that does not match a final manifest was rewritten after the run (a second papermill
   call into the finished folder does that): the problem says so and how to restore it. After the
   raw papermill flow, where run.ipynb is not hash-checked, it must at least record this run's
   outcome line; a notebook that does not (a refused second run's) is named the same way.
2. The contract (lib/contract.py): the files required by the outcome m44_summary.json states, the
   two verbatim statements, no failure_analysis.md in a completed run, run.html for a run made by
   lib.execute (unless writing it is the failure the run documents). A claimed folder that never
   reached consolidation is explained: which phase was running and whether its launcher still runs.
3. The facts. m44_summary.json against the files it was gathered from (training_metrics.json,
   evaluation_results.json's metrics, preflight.json's checks, config.json with the data files' names,
   the plots present, system_metrics.jsonl's facts computed again; the data files' sha256 are taken as recorded, the
   files may be elsewhere), and m44_summary.md and failure_analysis.md against their rendering from it
   (lib/summary.py), byte for byte; so is the final checkpoint's model card (lib/model_card.py), where the checkpoint
   folder is present.
   evaluation_results.json's metrics against the same computation from its own items, and
   evaluation_summary.md against its rendering from them (lib/results.py). Numbers are never
   parsed back out of text: the text is rendered again from the numbers and compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lib.contract import (
    CLAIM, CONFIG, DATA_REPORT, EVAL_RESULTS, EVAL_SUMMARY, FAILURE_ANALYSIS, FINAL_MODEL, MANIFEST, MODEL_CARD,
    NOTEBOOK, PHASES, PREFLIGHT, REPORT, STATEMENTS, SUMMARY, SUMMARY_FACTS, TELEMETRY, TRAINING_METRICS, WEIGHT_DIRS, required,
)
from lib.console import utf8_output
from lib.evidence import sha256_file
from lib.results import compute_metrics, render_evaluation_summary
from lib.run_folder import process_alive, read_claim
from lib.model_card import render_model_card
from lib.summary import caveats, completed, configuration, finetune_facts, outcome_line, render_failure_analysis, render_summary
from lib.telemetry_summary import load_telemetry

RESTORE = "restore it from git (git checkout -- <run folder>) once the folder is committed"


class NotARunFolder(ValueError):
    """The folder is not a run folder at all (exit 2), as opposed to a run folder with problems."""


@dataclass
class Verification:
    """What `check` found; `verify` returns only the problems."""

    problems: list[str] = field(default_factory=list)
    verified: int = 0  # files whose size and sha256 match the manifest
    notes: list[str] = field(default_factory=list)  # files deliberately not hash-checked, and why


def verify(run_dir: Path, report_pending: bool = False) -> list[str]:
    """The problems of the run folder `run_dir`, one line each naming its file; [] when it holds.

    `report_pending`: the notebook checks its own folder before lib.execute renders run.html.
    """
    return check(run_dir, report_pending).problems


def consistency(run_dir: Path) -> list[str]:
    """The checks of the facts alone (3. below): what consolidation runs on its own output before the manifest
    stands, so that a disagreement between writer and checker is stated in the summary, not only found later."""
    problems: list[str] = []
    check_facts_and_results(run_dir, load_json(run_dir, SUMMARY_FACTS, problems), problems)
    return problems


def check(run_dir: Path, report_pending: bool = False) -> Verification:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolder(f"{run_dir} is not a folder")
    if not any((run_dir / name).is_file() for name in (MANIFEST, SUMMARY, CLAIM)):
        raise NotARunFolder(f"{run_dir} is not a run folder: it holds neither {MANIFEST}, {SUMMARY} nor {CLAIM}")
    result = Verification()
    if not (run_dir / SUMMARY_FACTS).exists() and not (run_dir / MANIFEST).exists():
        result.problems.append(describe_unfinished(run_dir))
        return result
    check_manifest(run_dir, result)
    facts = load_json(run_dir, SUMMARY_FACTS, result.problems)
    check_contract(run_dir, facts, result.problems, report_pending)
    if facts is not None and (run_dir / MANIFEST).is_file() and not is_final(run_dir):
        # The raw papermill flow: run.ipynb is not hash-checked, but it must be this run's.
        guarded(result.problems, NOTEBOOK, check_notebook_outcome, run_dir, facts, result.problems)
    check_facts_and_results(run_dir, facts, result.problems)
    return result


def check_facts_and_results(run_dir: Path, facts: dict | None, problems: list[str]) -> None:
    if facts is not None:
        guarded(problems, SUMMARY_FACTS, check_facts, run_dir, facts, problems)
    results = load_json(run_dir, EVAL_RESULTS, problems)
    if results is not None:
        guarded(problems, EVAL_RESULTS, check_results, run_dir, results, problems)
    elif (run_dir / EVAL_SUMMARY).is_file() and not (run_dir / EVAL_RESULTS).exists():
        problems.append(f"{EVAL_SUMMARY}: present without {EVAL_RESULTS}")


# --- 1. the manifest -------------------------------------------------------------------------


def check_manifest(run_dir: Path, result: Verification) -> None:
    entries = read_manifest(run_dir, result.problems)
    if entries is None:
        return
    final = is_final(run_dir)  # lib.execute rewrote the manifest after run.ipynb and run.html
    absent_weights = {d for d in WEIGHT_DIRS if not (run_dir / d).exists()}
    for path, entry in entries.items():
        file = run_dir / path
        if path.split("/")[0] in absent_weights:
            continue
        if not file.is_file():
            result.problems.append(f"{path}: listed in {MANIFEST} but missing")
        elif path == NOTEBOOK and not final:
            check_notebook(file, result)
        elif (problem := compare_file(file, path, entry)) is not None:
            if path == NOTEBOOK:
                problem += (": the executed notebook was rewritten after the run (a second papermill call into "
                            f"this finished folder does that); {RESTORE}")
            result.problems.append(problem)
        else:
            result.verified += 1
    for folder in sorted(absent_weights):
        listed = sum(1 for path in entries if path.split("/")[0] == folder)
        if listed:
            result.notes.append(f"{folder}/: {listed} listed files absent (model weights, not committed); not verified")
    for path in unlisted(run_dir, entries):
        if path in (NOTEBOOK, REPORT) and not final:
            result.notes.append(f"{path}: written after {MANIFEST} (papermill/nbconvert); not verified")
        else:
            result.problems.append(f"{path}: in the folder but not listed in {MANIFEST}")


def is_final(run_dir: Path) -> bool:
    """Whether lib.execute wrote the manifest last, after the executed notebook and the report."""
    try:
        return json.loads(read_text(run_dir / MANIFEST)).get("final") is True
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(run_dir: Path, problems: list[str]) -> dict[str, dict] | None:
    """The manifest's entries by path, or None (with the problem recorded) when it is unusable."""
    path = run_dir / MANIFEST
    if not path.is_file():
        problems.append(f"{MANIFEST}: missing (the run did not reach consolidation?)")
        return None
    try:
        manifest = json.loads(read_text(path))
        entries = {e["path"]: e for e in manifest["files"]}
        if manifest["algorithm"] != "sha256" or not all(
            isinstance(name, str) and isinstance(e["bytes"], int) and isinstance(e["sha256"], str)
            for name, e in entries.items()
        ):
            raise ValueError("expected sha256 entries, each with a path, bytes and sha256")
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{MANIFEST}: unreadable ({type(exc).__name__}: {exc})")
        return None
    for path in list(entries):
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or "\\" in path:
            problems.append(f"{MANIFEST}: entry {path!r} points outside the run folder")
            del entries[path]
    return entries


def compare_file(file: Path, path: str, entry: dict) -> str | None:
    size = file.stat().st_size
    if size != entry["bytes"] and _lf_sha256(file) == entry["sha256"]:
        # The usual cause on Windows: git's autocrlf rewrote the line endings on checkout.
        return f"{path}: differs from {MANIFEST} only in line endings (CRLF; a git checkout converted it?)"
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, {MANIFEST} says {entry['bytes']}"
    if sha256_file(file) != entry["sha256"]:
        return f"{path}: sha256 differs from {MANIFEST} (same size, changed content)"
    return None


def _lf_sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def check_notebook(file: Path, result: Verification) -> None:
    try:
        notebook = json.loads(read_text(file))
        is_notebook = isinstance(notebook, dict) and isinstance(notebook.get("cells"), list)
    except (ValueError, UnicodeDecodeError):
        is_notebook = False
    if not is_notebook:
        result.problems.append(f"{NOTEBOOK}: not a notebook (not JSON with a list of cells)")
    else:
        result.notes.append(f"{NOTEBOOK}: saved by papermill after {MANIFEST}; not hash-checked")


def check_notebook_outcome(run_dir: Path, facts: dict, problems: list[str]) -> None:
    """run.ipynb must record this run's outcome line (the consolidation cell prints it); raw papermill flow only."""
    path = run_dir / NOTEBOOK
    if not path.is_file():
        return
    try:
        cells = json.loads(read_text(path))["cells"]
    except (ValueError, KeyError, TypeError):
        return  # named by the manifest check
    printed = "".join("".join(output.get("text", "")) for cell in cells for output in cell.get("outputs", [])
                      if output.get("output_type") == "stream")
    if outcome_line(facts) not in printed:
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for cell in cells for o in cell.get("outputs", [])
                  if o.get("output_type") == "error"]
        problems.append(
            f"{NOTEBOOK}: does not record this run's outcome ({outcome_line(facts)!r})"
            + (f"; it ends in {errors[0].splitlines()[0]!r}" if errors else "")
            + f": it is another command's notebook (a second papermill call into this folder writes one); {RESTORE}")


def describe_unfinished(run_dir: Path) -> str:
    """Why a claimed folder has no consolidation: which phase was running, and whether its launcher still runs."""
    claim = read_claim(run_dir)
    state = load_json(run_dir, PHASES, [])
    running = [p["name"] for p in (state or {}).get("phases", []) if p.get("status") == "running"]
    where = (f"phase {running[-1]} was running" if running else
             f"the last phase recorded is {state['phases'][-1]['name']}" if state and state.get("phases") else
             "no phase had started")
    if claim is None:
        return f"{SUMMARY_FACTS}: missing: the run never reached consolidation ({where})"
    launcher = f"{claim.launcher} (pid {claim.pid} on {claim.host}, started {claim.started_utc})"
    if process_alive(claim.pid):
        return f"{SUMMARY_FACTS}: missing: the run is still in progress or was abandoned: {where}; its launcher {launcher} is running"
    return (f"{SUMMARY_FACTS}: missing: the run never reached consolidation: {where} when its launcher {launcher} "
            "stopped without documenting it (killed with SIGKILL, or the machine went down). The folder is kept as "
            "the evidence of that attempt; start the next run in a new folder")


def unlisted(run_dir: Path, entries: dict) -> list[str]:
    on_disk = (p.relative_to(run_dir).as_posix() for p in sorted(run_dir.rglob("*")) if p.is_file())
    return [path for path in on_disk if path != MANIFEST and path not in entries]


# --- 2. the contract -------------------------------------------------------------------------


def check_contract(run_dir: Path, facts: dict | None, problems: list[str], report_pending: bool = False) -> None:
    if facts is None:
        if not (run_dir / SUMMARY_FACTS).exists():
            problems.append(f"{SUMMARY_FACTS}: missing (the run did not reach consolidation?)")
        done = not (run_dir / FAILURE_ANALYSIS).exists()  # a guess, to name the missing files anyway
    else:
        done = completed(facts)
    status = "completed" if done else "failed"
    problems += [f"{name}: required in a {status} run, missing" for name in required(done) if not (run_dir / name).is_file()]
    if done and (run_dir / FAILURE_ANALYSIS).exists():
        problems.append(f"{FAILURE_ANALYSIS}: present, but {SUMMARY_FACTS} says the run completed")
    report_failed = facts is not None and any(p["name"] == "report" and p["status"] == "failed" for p in facts["phases"])
    if (facts is not None and facts["launcher"] == "lib.execute" and not report_failed and not report_pending
            and not (run_dir / REPORT).is_file()):
        problems.append(f"{REPORT}: missing; lib.execute renders it for every run it starts, so the launcher did not "
                        "finish (stopped, or the disk filled) and the evidence is incomplete")
    if (run_dir / SUMMARY).is_file():
        lines = read_text(run_dir / SUMMARY).split("\n")
        problems += [f"{SUMMARY}: lacks the required line {line!r}" for line in STATEMENTS if line not in lines]


# --- 3. the facts ----------------------------------------------------------------------------


def check_facts(run_dir: Path, facts: dict, problems: list[str]) -> None:
    """m44_summary.json against its sources; m44_summary.md and failure_analysis.md against its rendering."""
    say = Disagreements(SUMMARY_FACTS, problems)
    training = load_json(run_dir, TRAINING_METRICS, problems)
    if training is not None:
        history = training.get("history") or []
        say.expect("training.skipped_writes", facts["training"].get("skipped_writes"),
                   training.get("skipped_writes", 0), TRAINING_METRICS)
        for key in ("status", "steps_completed", "runtime_s"):
            say.expect(f"training.{key}", facts["training"][key], training.get(key), TRAINING_METRICS)
        say.expect("memory", facts.get("memory"), training.get("memory"), TRAINING_METRICS)
        for key, record in (("first", history[0] if history else None), ("last", history[-1] if history else None)):
            point = None if record is None else {"step": record["step"], "loss": record["loss"]}
            say.expect(f"training.{key}", facts["training"][key], point, TRAINING_METRICS)
    results = load_json(run_dir, EVAL_RESULTS, [])  # an unreadable one is reported by check()
    say.expect("evaluation", facts["evaluation"], results.get("metrics") if results else None, EVAL_RESULTS)
    report = load_json(run_dir, DATA_REPORT, problems)
    expected = None if report is None else {"files": report.get("files"), "summary": report.get("summary")}
    say.expect("data", facts["data"], expected, DATA_REPORT)
    state = load_json(run_dir, PHASES, problems)
    if state is not None:
        recorded = [{k: p[k] for k in ("name", "status", "duration_s", "cause")} for p in state.get("phases", [])]
        say.expect("phases", facts["phases"], recorded, PHASES)
        say.expect("interactive", facts.get("interactive"), state.get("interactive"), PHASES)
        say.expect("rehearsal", facts.get("rehearsal"), state.get("rehearsal"), PHASES)
    preflight = load_json(run_dir, PREFLIGHT, problems)
    say.expect("preflight", facts["preflight"], preflight.get("checks") if preflight else None, PREFLIGHT)
    config = load_json(run_dir, CONFIG, problems)
    if config is not None:
        say.expect("config_sha256", facts["config_sha256"], config.get("sha256", "n/a"), CONFIG)
        say.expect("caveats", facts["caveats"], caveats(config["parameters"]) if config.get("valid") else [], CONFIG)
        say.expect("configuration", facts.get("configuration"),
                   configuration(config["parameters"]) if config.get("valid") else "other", CONFIG)
        if config.get("valid"):
            say.expect("model", facts["model"], config["parameters"]["model_name"], CONFIG)
            say.expect("processes.count", facts["processes"]["count"], config["parameters"]["num_processes"], CONFIG)
        say.expect("finetune", facts["finetune"], finetune_facts(
            config["parameters"] if config.get("valid") else None, (training or {}).get("finetune")),
            f"{CONFIG} and {TRAINING_METRICS}")
    if training is not None and training.get("processes"):
        say.expect("processes.count", facts["processes"]["count"], training["processes"]["world_size"], TRAINING_METRICS)
    # Against the manifest, not the folder: a plot deleted later is the manifest check's to name.
    entries = read_manifest(run_dir, [])
    listed = sorted(path for path in entries if "/" not in path and path.endswith(".png")) if entries else None
    if listed is not None:
        say.expect("plots", facts["plots"], listed, MANIFEST)
    say.expect("telemetry", facts.get("telemetry"), load_telemetry(run_dir), TELEMETRY)
    check_model_card(run_dir, facts, config, problems)
    same_text(run_dir, SUMMARY, render_summary(facts), problems)
    if facts["failed"]:
        same_text(run_dir, FAILURE_ANALYSIS, render_failure_analysis(facts), problems)


def check_model_card(run_dir: Path, facts: dict, config: dict | None, problems: list[str]) -> None:
    """The final checkpoint's model card against its rendering; only where the checkpoint is (weights are not
    committed: a committed run folder has neither)."""
    if not (run_dir / FINAL_MODEL).is_dir():
        return
    if facts["model_card"] is None:
        problems.append(f"{FINAL_MODEL}: a final checkpoint, but {SUMMARY_FACTS} records no model card for it")
    elif not (run_dir / MODEL_CARD).is_file():
        problems.append(f"{MODEL_CARD}: missing, but {SUMMARY_FACTS} says consolidation wrote it")
    elif config is not None and config.get("valid"):
        same_text(run_dir, MODEL_CARD, render_model_card(facts, config["parameters"]), problems)


def check_results(run_dir: Path, results: dict, problems: list[str]) -> None:
    """The metrics must be what the items give (a hand-edited metric shows up here), the summary their rendering."""
    items, metrics = results["items"], results["metrics"]
    expected = compute_metrics(items, results["models"])
    say = Disagreements(EVAL_RESULTS, problems)
    for label in sorted(set(metrics) | set(expected)):
        for key in sorted(set(metrics.get(label, {})) | set(expected.get(label, {}))):
            say.expect(f"metrics.{label}.{key}", metrics.get(label, {}).get(key),
                       expected.get(label, {}).get(key), "its items")
    same_text(run_dir, EVAL_SUMMARY, render_evaluation_summary(metrics, items), problems)


def same_text(run_dir: Path, name: str, expected: str, problems: list[str]) -> None:
    """A rendered file must be exactly what its facts render to; the first difference is shown, escaped."""
    path = run_dir / name
    if not path.is_file():
        return  # the contract check names a missing required file
    text = read_text(path)
    if text != expected:
        source = SUMMARY_FACTS if name in (SUMMARY, FAILURE_ANALYSIS, MODEL_CARD) else EVAL_RESULTS
        problems.append(f"{name}: differs from what {source} renders: {first_difference(text, expected)}")


def first_difference(shown: str, rendered: str) -> str:
    """Where two texts first differ: the line and column, both characters escaped, and the line around it."""
    at = next((i for i, (a, b) in enumerate(zip(shown, rendered)) if a != b), min(len(shown), len(rendered)))
    line = shown.count("\n", 0, at) + 1
    column = at - (shown.rfind("\n", 0, at) + 1) + 1

    def char(text: str) -> str:
        return repr(text[at]) if at < len(text) else "(end of text)"

    def around(text: str) -> str:
        start = max(text.rfind("\n", 0, at) + 1, at - 40)
        return repr(text[start:at + 40])

    return (f"line {line}, column {column}: the file has {char(shown)} where the rendering has {char(rendered)} "
            f"(file: {around(shown)}; rendering: {around(rendered)})")


def guarded(problems: list[str], file: str, fn, *args) -> None:
    """Run one check; a JSON file lacking a key or holding the wrong type is a problem, not a crash."""
    try:
        fn(*args)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        problems.append(f"{file}: cannot be checked, malformed ({type(exc).__name__}: {exc})")


@dataclass
class Disagreements:
    """Collects 'FILE: <what> is X, but SOURCE gives Y' problems for one facts file."""

    file: str
    problems: list[str]

    def expect(self, what: str, shown: object, expected: object, source: str) -> None:
        if shown != expected:
            self.problems.append(f"{self.file}: {what} is {shown!r}, but {source} gives {expected!r}")


def load_json(run_dir: Path, name: str, problems: list[str]) -> dict | None:
    """The JSON file, or None: absent (the contract check reports that) or unreadable (reported here)."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path))
    except ValueError as exc:
        problems.append(f"{name}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{name}: not a JSON object")
        return None
    return data


def read_text(path: Path) -> str:
    """The file's text exactly as written: no newline translation (a model may generate a carriage return).

    A changed byte can break UTF-8; the manifest check names the file, so read on regardless.
    """
    return path.read_bytes().decode("utf-8", errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder, e.g. submission_runs/m44_v1")
    args = parser.parse_args(argv)
    utf8_output()
    try:
        result = check(args.run_dir)
    except NotARunFolder as exc:
        print(f"lib.verify: {exc}", file=sys.stderr)
        return 2
    for line in result.problems:
        print(line)
    for line in result.notes:
        print(f"note: {line}")
    if result.problems:
        print(f"FAILED: {len(result.problems)} problems")
        return 1
    print(f"OK: {result.verified} files verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
