"""Check a finished run folder against its manifest, the evidence contract and its own numbers.

    python -m lib.verify submission_runs/m44_v1

Prints one line per problem, naming the file, then "OK: <n> files verified" (exit 0) or
"FAILED: <k> problems" (exit 1). A folder holding neither manifest.json nor m44_summary.md is
not a run folder: exit 2. `verify(run_dir)` returns the problems (empty when the folder holds).

What is checked:

1. The manifest. Every listed file must exist with the listed size and sha256; every file in the
   folder must be listed (manifest.json itself excepted). Two exceptions, both reported as
   "not verified" notes rather than problems:
   - run.ipynb and run.html. Consolidation writes the manifest from inside the notebook, while
     papermill is still executing it: papermill saves run.ipynb again after the last cell, and
     nbconvert renders run.html later still. `python -m lib.execute` then rewrites the manifest,
     so its manifest lists run.html. The rule: if the manifest lists run.html it is final and
     run.ipynb and run.html are checked like every other file. If it does not (the raw
     papermill CLI, or a check from inside the notebook), run.ipynb may differ from its entry
     and either may be unlisted; run.ipynb must still be a notebook (JSON with cells).
   - Model weights. checkpoints/ and base_model/ are ignored by git (.gitignore), so a
     committed run folder arrives without them: a listed weights folder that is wholly absent
     is noted. If it is there at all, every file listed in it must match.
2. The contract: REQUIRED_ALWAYS, plus REQUIRED_ON_SUCCESS or REQUIRED_ON_FAILURE
   (lib/consolidation.py) by the status line of m44_summary.md (`- **status**: completed` or
   `failed in <phase>`); the two verbatim statements; no failure_analysis.md in a completed run.
3. The numbers. m44_summary.md against training_metrics.json (status, steps, runtime, first and
   last loss), config.json (its sha256) and evaluation_results.json (accuracy, lenient accuracy,
   format rate and n per model, the strict comparison); evaluation_summary.md against
   evaluation_results.json (n, the table per model, the comparison table, sentence and verdict,
   the bootstrap settings); and evaluation_results.json's metrics against its own items.
   Numbers are compared as text, formatted the way the summaries format them (percentages to
   2 decimals, losses to 4), so rounding never makes a false alarm.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lib.consolidation import REQUIRED_ALWAYS, REQUIRED_ON_FAILURE, REQUIRED_ON_SUCCESS, STATEMENTS
from lib.evaluation import COMPARED, MODELS, RESULTS_NAME, ROW_NAMES, SUMMARY_NAME, verdict
from lib.evidence import MANIFEST_NAME, sha256_file

SUMMARY = "m44_summary.md"
METRICS = "training_metrics.json"
NOTEBOOK, REPORT = "run.ipynb", "run.html"
WEIGHT_DIRS = ("checkpoints", "base_model")  # ignored by git: a committed run folder lacks them
# describe() in lib/evaluation.py: '+12.00 points (95% CI +5.00 to +19.00), McNemar p = 0.0012'
DESCRIBED = re.compile(r"([+-]\d+\.\d+) points \((\d+%) CI ([+-]\d+\.\d+) to ([+-]\d+\.\d+)\), McNemar p = (\S+)")


class NotARunFolder(ValueError):
    """The folder is not a run folder at all (exit 2), as opposed to a run folder with problems."""


@dataclass
class Verification:
    """What `check` found; `verify` returns only the problems."""

    problems: list[str] = field(default_factory=list)
    verified: int = 0  # files whose size and sha256 match the manifest
    notes: list[str] = field(default_factory=list)  # files deliberately not hash-checked, and why


def verify(run_dir: Path) -> list[str]:
    """The problems of the run folder `run_dir`, one line each naming its file; [] when it holds."""
    return check(run_dir).problems


def check(run_dir: Path) -> Verification:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolder(f"{run_dir} is not a folder")
    if not ((run_dir / MANIFEST_NAME).is_file() or (run_dir / SUMMARY).is_file()):
        raise NotARunFolder(f"{run_dir} is not a run folder: it holds neither {MANIFEST_NAME} nor {SUMMARY}")
    result = Verification()
    check_manifest(run_dir, result)
    status = run_status(run_dir, result)
    check_contract(run_dir, status, result.problems)
    check_numbers(run_dir, result.problems)
    return result


# --- 1. the manifest -------------------------------------------------------------------------


def check_manifest(run_dir: Path, result: Verification) -> None:
    entries = read_manifest(run_dir, result.problems)
    if entries is None:
        return
    final = REPORT in entries  # lib.execute rewrote the manifest after rendering the report
    absent_weights = {d for d in WEIGHT_DIRS if not (run_dir / d).exists()}
    for path, entry in entries.items():
        file = run_dir / path
        if path.split("/")[0] in absent_weights:
            continue
        if not file.is_file():
            result.problems.append(f"{path}: listed in {MANIFEST_NAME} but missing")
        elif path == NOTEBOOK and not final:
            check_notebook(file, result)
        elif (problem := compare_file(file, path, entry)) is not None:
            result.problems.append(problem)
        else:
            result.verified += 1
    for folder in sorted(absent_weights):
        listed = sum(1 for path in entries if path.split("/")[0] == folder)
        if listed:
            result.notes.append(f"{folder}/: {listed} listed files absent (model weights, not committed); not verified")
    for path in unlisted(run_dir, entries):
        if path in (NOTEBOOK, REPORT) and not final:
            result.notes.append(f"{path}: written after {MANIFEST_NAME} (papermill/nbconvert); not verified")
        else:
            result.problems.append(f"{path}: in the folder but not listed in {MANIFEST_NAME}")


def read_manifest(run_dir: Path, problems: list[str]) -> dict[str, dict] | None:
    """The manifest's entries by path, or None (with the problem recorded) when it is unusable."""
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        problems.append(f"{MANIFEST_NAME}: missing (the run did not reach consolidation?)")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entries = {e["path"]: e for e in manifest["files"]}
        if manifest["algorithm"] != "sha256" or not all(
            isinstance(name, str) and isinstance(e["bytes"], int) and isinstance(e["sha256"], str)
            for name, e in entries.items()
        ):
            raise ValueError("expected sha256 entries, each with a path, bytes and sha256")
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{MANIFEST_NAME}: unreadable ({type(exc).__name__}: {exc})")
        return None
    for path in list(entries):
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or "\\" in path:
            problems.append(f"{MANIFEST_NAME}: entry {path!r} points outside the run folder")
            del entries[path]
    return entries


def compare_file(file: Path, path: str, entry: dict) -> str | None:
    size = file.stat().st_size
    if size != entry["bytes"] and _lf_sha256(file) == entry["sha256"]:
        # The usual cause on Windows: git's autocrlf rewrote the line endings on checkout.
        return f"{path}: differs from {MANIFEST_NAME} only in line endings (CRLF; a git checkout converted it?)"
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, {MANIFEST_NAME} says {entry['bytes']}"
    if sha256_file(file) != entry["sha256"]:
        return f"{path}: sha256 differs from {MANIFEST_NAME} (same size, changed content)"
    return None


def _lf_sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def check_notebook(file: Path, result: Verification) -> None:
    try:
        notebook = json.loads(file.read_text(encoding="utf-8"))
        is_notebook = isinstance(notebook, dict) and isinstance(notebook.get("cells"), list)
    except (ValueError, UnicodeDecodeError):
        is_notebook = False
    if not is_notebook:
        result.problems.append(f"{NOTEBOOK}: not a notebook (not JSON with a list of cells)")
    else:
        result.notes.append(f"{NOTEBOOK}: saved by papermill after {MANIFEST_NAME}; not hash-checked")


def unlisted(run_dir: Path, entries: dict) -> list[str]:
    on_disk = (p.relative_to(run_dir).as_posix() for p in sorted(run_dir.rglob("*")) if p.is_file())
    return [path for path in on_disk if path != MANIFEST_NAME and path not in entries]


# --- 2. the contract -------------------------------------------------------------------------


def run_status(run_dir: Path, result: Verification) -> str:
    """'completed' or 'failed', from m44_summary.md; guessed from the other files when unreadable."""
    status = summary_fields(run_dir).get("status")
    if status == "completed" or (status or "").startswith("failed in "):
        return "completed" if status == "completed" else "failed"
    if (run_dir / SUMMARY).is_file():
        result.problems.append(f"{SUMMARY}: no '- **status**: completed' or '- **status**: failed in <phase>' line")
    return "failed" if (run_dir / REQUIRED_ON_FAILURE[0]).exists() else "completed"


def check_contract(run_dir: Path, status: str, problems: list[str]) -> None:
    required = REQUIRED_ALWAYS + (REQUIRED_ON_SUCCESS if status == "completed" else REQUIRED_ON_FAILURE)
    problems += [f"{name}: required in a {status} run, missing" for name in required if not (run_dir / name).is_file()]
    if status == "completed":
        problems += [f"{name}: present, but {SUMMARY} says the run completed"
                     for name in REQUIRED_ON_FAILURE if (run_dir / name).exists()]
    if (run_dir / SUMMARY).is_file():
        lines = read_text(run_dir / SUMMARY).splitlines()
        problems += [f"{SUMMARY}: lacks the required line {line!r}" for line in STATEMENTS if line not in lines]


# --- 3. the numbers --------------------------------------------------------------------------


def check_numbers(run_dir: Path, problems: list[str]) -> None:
    training = load_json(run_dir, METRICS, problems)
    results = load_json(run_dir, RESULTS_NAME, problems)
    evaluation = results.get("metrics") if results else None
    if results is not None and not isinstance(evaluation, dict):
        problems.append(f"{RESULTS_NAME}: no 'metrics' object")
        evaluation = None
    sources = f"{METRICS} and {RESULTS_NAME}"
    if evaluation:
        guarded(problems, RESULTS_NAME, RESULTS_NAME, check_results, results, problems)
    if (run_dir / SUMMARY).is_file():
        config = load_json(run_dir, "config.json", problems)
        guarded(problems, SUMMARY, sources, check_summary, summary_fields(run_dir), training, evaluation, config,
                problems)
    if not (run_dir / SUMMARY_NAME).is_file():
        return
    if evaluation:
        text = read_text(run_dir / SUMMARY_NAME)
        guarded(problems, SUMMARY_NAME, RESULTS_NAME, check_evaluation_summary, text, evaluation, problems)
    elif not (run_dir / RESULTS_NAME).exists():  # (an unreadable one is reported above)
        problems.append(f"{SUMMARY_NAME}: present without {RESULTS_NAME}")


def guarded(problems: list[str], file: str, sources: str, fn, *args) -> None:
    """Run one check; a JSON file lacking a key or holding the wrong type is a problem, not a crash."""
    try:
        fn(*args)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        problems.append(f"{file}: cannot be checked, {sources} malformed ({type(exc).__name__}: {exc})")


def check_results(results: dict, problems: list[str]) -> None:
    """The metrics must be what the items say (a hand-edited metric shows up here)."""
    items = results.get("items") or []
    for label in (label for label in MODELS if label in results["metrics"]):
        m = results["metrics"][label]
        scored = [item.get(label) or {} for item in items]
        counted = {
            "n": len(scored),
            "accuracy": _mean(s.get("correct_strict", s.get("correct")) for s in scored),
            "accuracy_lenient": _mean(s.get("correct_lenient") for s in scored),
            "format_rate": _mean(s.get("format_ok") for s in scored),
        }
        for key, value in counted.items():
            if not isinstance(m.get(key), (int, float)) or abs(m[key] - value) > 1e-9:
                problems.append(f"{RESULTS_NAME}: metrics.{label}.{key} is {m.get(key)!r}, its items give {value!r}")


def _mean(values) -> float:
    values = [bool(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def summary_fields(run_dir: Path) -> dict[str, str]:
    """The '- **name**: value' lines of m44_summary.md above its phase table (causes there are free text)."""
    path = run_dir / SUMMARY
    if not path.is_file():
        return {}
    fields = {}
    for line in read_text(path).splitlines():
        if line.startswith("## "):
            break
        if match := re.match(r"- \*\*(.+?)\*\*: (.*)$", line):
            fields[match[1]] = match[2]
    return fields


def check_summary(fields: dict, training: dict | None, evaluation: dict | None, config: dict | None,
                  problems: list[str]) -> None:
    say = Disagreements(SUMMARY, problems)
    if training is not None:
        check_training_lines(fields, training, say)
    if config is not None:
        say.expect("config sha256", fields.get("config sha256"), config.get("sha256", "n/a"), "config.json")
    evaluation = evaluation or {}
    for label in MODELS:
        line = fields.get(label)
        if label not in evaluation:
            if line is not None:
                problems.append(f"{SUMMARY}: has a {label} line, but {RESULTS_NAME} has no {label} metrics")
            continue
        m = evaluation[label]
        match = _match(r"accuracy (\S+) \(lenient (\S+)\), format rate (\S+), n=(\d+)", line, say, label)
        if match:
            keys = ("accuracy", "accuracy_lenient", "format_rate")
            for what, shown, key in zip(("accuracy", "lenient accuracy", "format rate"), match.groups(), keys):
                say.expect(f"{label} {what}", shown, f"{m[key]:.2%}", RESULTS_NAME)
            say.expect(f"{label} n", match[4], str(m["n"]), RESULTS_NAME)
    if "comparison" in evaluation:
        match = _match(r"strict accuracy " + DESCRIBED.pattern, fields.get("trained vs baseline"), say,
                       "trained vs baseline")
        if match:
            check_described(match, evaluation["comparison"]["strict"], "trained vs baseline", say)


def check_training_lines(fields: dict, training: dict, say: Disagreements) -> None:
    match = _match(r"(\w+), (\d+) steps, (\S+) s", fields.get("training"), say, "training")
    if match:
        say.expect("training status", match[1], str(training.get("status")), METRICS)
        say.expect("training steps", match[2], str(training.get("steps_completed")), METRICS)
        say.expect("training runtime", match[3], f"{training.get('runtime_s', 0):.1f}", METRICS)
    if fields.get("status") == "completed" and training.get("status") != "completed":
        say.problems.append(f"{METRICS}: status {training.get('status')!r} in a run {SUMMARY} calls completed")
    history = training.get("history") or []
    if not history:
        if "loss" in fields:
            say.problems.append(f"{SUMMARY}: has a loss line, but {METRICS} has no history")
        return
    match = _match(r"(\S+) \(step (\d+)\) -> (\S+) \(step (\d+)\)", fields.get("loss"), say, "loss")
    if match:
        first, last = history[0], history[-1]
        say.expect("first loss", match[1], f"{first['loss']:.4f}", METRICS)
        say.expect("first loss step", match[2], str(first["step"]), METRICS)
        say.expect("last loss", match[3], f"{last['loss']:.4f}", METRICS)
        say.expect("last loss step", match[4], str(last["step"]), METRICS)


def check_evaluation_summary(text: str, evaluation: dict, problems: list[str]) -> None:
    # Only the part above the scorecards: the examples below quote model outputs (free text).
    head = text.split("\n## By ", 1)[0].splitlines()
    say = Disagreements(SUMMARY_NAME, problems)
    labels = [label for label in MODELS if label in evaluation]
    n_line = next((line for line in head if re.match(r"\d+ eval items", line)), None)
    say.expect("item count", n_line.split()[0] if n_line else None, str(evaluation[labels[-1]]["n"]), RESULTS_NAME)
    rows = table_rows(head, MODELS)
    for label in MODELS:
        if label not in evaluation:
            if label in rows:
                problems.append(f"{SUMMARY_NAME}: has a {label} row, but {RESULTS_NAME} has no {label} metrics")
            continue
        m = evaluation[label]
        expected = [f"{m['accuracy']:.2%}", f"{m['accuracy_lenient']:.2%}", f"{m['format_rate']:.2%}",
                    f"{m['mean_tokens']:.1f}", f"{m['stopped_rate']:.2%}"]
        names = ("accuracy", "lenient accuracy", "format rate", "mean tokens", "stopped rate")
        say.row(label, rows.get(label), names, expected)
    if "comparison" in evaluation:
        check_comparison(head, evaluation, say)


def check_comparison(head: list[str], evaluation: dict, say: Disagreements) -> None:
    comparison = evaluation["comparison"]
    rows = table_rows(head, ROW_NAMES.values())
    for name, c in comparison.items():
        key = COMPARED[name][1]
        expected = [f"{evaluation['baseline'][key]:.2%}", f"{evaluation['trained'][key]:.2%}",
                    f"{c['difference'] * 100:+.2f}", f"{c['ci_low'] * 100:+.2f} to {c['ci_high'] * 100:+.2f}",
                    f"{c['mcnemar_p']:.3g}", f"{c['trained_only']} / {c['baseline_only']}"]
        names = ("baseline", "trained", "difference", "CI", "McNemar p", "right only")
        say.row(ROW_NAMES[name], rows.get(ROW_NAMES[name]), names, expected)
    strict = comparison["strict"]
    sentence = next((line for line in head if line.startswith("Strict accuracy changed by ")), None)
    match = _match(DESCRIBED.pattern + r"; the format rate by ([+-]\d+\.\d+) points\.", sentence, say,
                   "'Strict accuracy changed by' sentence", search=True)
    if match:
        check_described(match, strict, "strict accuracy sentence", say)
        change = (evaluation["trained"]["format_rate"] - evaluation["baseline"]["format_rate"]) * 100
        say.expect("format rate change", match[6], f"{change:+.2f}", RESULTS_NAME)
    settings = [m for line in head if (m := re.search(r"\(([\d,]+) resamples of items, seed (-?\d+)\)", line))]
    shown = settings[0].groups() if settings else (None, None)
    say.expect("bootstrap resamples", shown[0], f"{strict['bootstrap_resamples']:,}", RESULTS_NAME)
    say.expect("bootstrap seed", shown[1], str(strict["bootstrap_seed"]), RESULTS_NAME)
    if f"**{verdict(strict, 'strict accuracy')}**" not in head:
        say.problems.append(f"{SUMMARY_NAME}: its verdict is not the one the strict comparison's CI gives "
                            f"({strict['ci_low'] * 100:+.2f} to {strict['ci_high'] * 100:+.2f})")


def check_described(match: re.Match, c: dict, what: str, say: Disagreements) -> None:
    expected = (f"{c['difference'] * 100:+.2f}", f"{c['confidence']:.0%}", f"{c['ci_low'] * 100:+.2f}",
                f"{c['ci_high'] * 100:+.2f}", f"{c['mcnemar_p']:.3g}")
    names = ("difference", "confidence", "CI low", "CI high", "McNemar p")
    for name, shown, value in zip(names, match.groups(), expected):
        say.expect(f"{what} {name}", shown, value, RESULTS_NAME)


def table_rows(lines: list[str], names) -> dict[str, list[str]]:
    """Markdown table rows whose first cell is one of `names`, as their remaining cells."""
    rows = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and cells[0] in names:
            rows[cells[0]] = cells[1:]
    return rows


@dataclass
class Disagreements:
    """Collects 'FILE: <what> says X, SOURCE has Y' problems for one summary file."""

    file: str
    problems: list[str]

    def expect(self, what: str, shown: str | None, expected: str, source: str) -> None:
        if shown is None:
            self.problems.append(f"{self.file}: states no {what} ({source} has {expected})")
        elif shown != expected:
            self.problems.append(f"{self.file}: {what} says {shown}, {source} has {expected}")

    def row(self, name: str, cells: list[str] | None, names: tuple[str, ...], expected: list[str]) -> None:
        if cells is None or len(cells) < len(expected):
            self.problems.append(f"{self.file}: no complete '{name}' table row")
            return
        for what, shown, value in zip(names, cells, expected):
            self.expect(f"{name} {what}", shown, value, RESULTS_NAME)


def _match(pattern: str, line: str | None, say: Disagreements, what: str, search: bool = False) -> re.Match | None:
    """The line parsed by `pattern`, or None with the problem recorded."""
    if line is None:
        say.problems.append(f"{say.file}: no {what} line")
        return None
    match = (re.search if search else re.fullmatch)(pattern, line)
    if match is None:
        say.problems.append(f"{say.file}: cannot read the {what} line {line!r}")
    return match


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
    # A changed byte can break UTF-8; the manifest check names the file, so read on regardless.
    return path.read_text(encoding="utf-8", errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder, e.g. submission_runs/m44_v1")
    args = parser.parse_args(argv)
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
