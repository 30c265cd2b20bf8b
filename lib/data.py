"""Load and check the reasoning-trace training set and the eval set (JSON Lines).

Loading refuses malformed records, naming file, line and field. The checks then apply the data
policy (DESIGN.md) and return results that pre-flight prints one line each and the evidence
keeps as JSON (``DataReport.to_dict``):

- training prompts: a prompt that repeats an earlier one is reported; the record is kept
  (policy "keep") or dropped ("drop"). Never a failure.
- eval items: a repeated id, or an item identical to another in prompt text and expected answer,
  fails (it would be scored twice). Prompts that differ only in case, spacing or Unicode form
  are distinct items ("What is the capital of FRANCE?" is a deliberate edge case), noted as variants.
- train/eval leakage: an eval prompt that appears in training once both are normalised
  (``normalize_prompt``) fails (policy "fail") or is reported (policy "report").

``python -m lib.data_check ...`` runs the same checks and more without starting a run (lib/data_check.py).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lib.config import display_path
from lib.scoring import answers_match

EVAL_SECTIONS = ("core", "trace_sensitive", "edge_case")
EVAL_DIFFICULTIES = ("easy", "medium", "hard")
REPEAT_POLICIES = ("keep", "drop")  # a training prompt that repeats an earlier one
LEAKAGE_POLICIES = ("fail", "report")  # an eval prompt that also appears in training
EXAMPLES = 5  # findings listed per kind in a check's result; the counts cover all of them
MAX_LISTED = 20  # kinds of fault named in one error before "... and N more"
NORMALISATION = "case folded, whitespace collapsed, Unicode NFKC (superscripts, subscripts and fractions kept)"
# Messages use JSON's names for types: the reader of an error is looking at a JSON file.
_JSON_TYPE_NAMES = {
    str: "a string", int: "an integer", float: "a number", bool: "a boolean",
    list: "a list", dict: "an object", type(None): "null",
}
# NFKC would turn "5²" into "52" and "½" into "1⁄2": a different question, not another spelling.
_KEPT_DECOMPOSITIONS = ("<super>", "<sub>", "<fraction>")


class DataError(ValueError):
    """A data file holds a record that does not match its schema, or the data break the policy.

    One record's error also carries its `line`, its `fault` (the message without the place) and whether the fault
    is the schema's (`schema`), so that a file's errors can be grouped (lib.data._load).
    """

    def __init__(self, message: str, line: int | None = None, fault: str = "", schema: bool = False):
        super().__init__(message)
        self.line, self.fault, self.schema = line, fault or message, schema


# --------------------------------------------------------------------------- loading


class _Record:
    """One parsed JSONL line and where it came from, for checks whose errors name file, line and field."""

    def __init__(self, path: Path, line: int, value: object):
        self.path, self.line, self.value = path, line, value

    def error(self, message: str, schema: bool = True) -> DataError:
        return DataError(f"{display_path(self.path)} line {self.line}: {message}", self.line, message, schema)

    def field(self, container: dict, key: str, expected: type, name: str | None = None) -> object:
        """container[key] if it is present and of the expected type; otherwise a DataError naming the field."""
        name = name or key
        if key not in container:
            raise self.error(f"field {name!r} is missing")
        value = container[key]
        # bool is a subclass of int in Python, but true/false is not a step number in JSON.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise self.error(f"field {name!r} must be {_JSON_TYPE_NAMES[expected]} (got {_json_type(value)})")
        return value

    def text(self, container: dict, key: str) -> str:
        """A string field that must hold something other than whitespace (a bare "?" is fine)."""
        value = self.field(container, key, str)
        if not value.strip():
            raise self.error(f"field {key!r} must not be empty")
        return value

    def choice(self, container: dict, key: str, allowed: tuple[str, ...]) -> str:
        value = self.field(container, key, str)
        if value not in allowed:
            raise self.error(f"field {key!r} must be one of {', '.join(allowed)} (got {value!r})")
        return value


def _unpaired_surrogate(value: object, where: str = "") -> tuple[str, str] | None:
    """(where, the character) of the first unpaired surrogate in a parsed JSON value's strings and keys; or None."""
    if isinstance(value, str):
        char = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
        return None if char is None else (where, char)
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else f"field {key!r}"
            if found := _unpaired_surrogate(key, f"a key in {where or 'the record'}") or _unpaired_surrogate(item, inner):
                return found
    if isinstance(value, list):
        for n, item in enumerate(value):
            if found := _unpaired_surrogate(item, f"{where}[{n}]"):
                return found
    return None


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_lines(path: Path, raw: bytes) -> Iterator[_Record | DataError]:
    """For each non-blank line, a _Record holding a JSON object, or the DataError that says why not."""
    # JSON Lines separates records with "\n" only; a "\r" before it is whitespace to json.loads.
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            fault = (f"not UTF-8 text (byte 0x{line_bytes[exc.start]:02x} at byte {exc.start + 1} of the line); "
                     "save the file as UTF-8")
            yield DataError(f"{display_path(path)} line {number}: {fault}", number, fault)
            continue
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark, as some Windows editors write
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            fault = f"not valid JSON ({exc.msg} at column {exc.colno})"
            yield DataError(f"{display_path(path)} line {number}: {fault}", number, fault)
            continue
        record = _Record(path, number, value)
        if not isinstance(value, dict):
            yield record.error(f"record must be a JSON object (got {_json_type(value)})")
        elif (found := _unpaired_surrogate(value)) is not None:
            # A \\ud83d escape without its pair: valid JSON, but no UTF-8 file (the evidence) can hold it.
            where, char = found
            yield record.error(f"{where} holds an unpaired surrogate escape (\\u{ord(char):04x}), half of a "
                               "character that UTF-8 cannot store; write the whole character instead", schema=False)
        else:
            yield record


@dataclass(frozen=True)
class DataFile:
    """The records of one JSONL file, each with its 1-based line number, and the file's sha256."""

    path: Path
    sha256: str
    records: list[dict]
    lines: list[int]  # lines[i] is the line of records[i]

    def describe(self) -> dict:
        return {"path": display_path(self.path), "sha256": self.sha256, "records": len(self.records)}


# What identifies each schema (a key the other has not), to recognise a file given in the other's place.
_SCHEMA_KEYS = {"training traces file": "final_answer", "eval set file": "expected_answer"}
SCHEMA_HELP = "the schemas of both files: docs/DATA.md"


def _load(path: str | Path, what: str, check: Callable[[_Record], dict]) -> DataFile:
    """Read and check every record; raise one DataError naming every malformed line, the same fault once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {display_path(path)}")
    raw = path.read_bytes()
    records, lines, errors, values = [], [], [], []
    for parsed in _parse_lines(path, raw):
        if isinstance(parsed, DataError):
            errors.append(parsed)
            continue
        values.append(parsed.value)
        try:
            records.append(check(parsed))
        except DataError as exc:  # keep going: the user fixes every bad line in one pass
            errors.append(exc)
        else:
            lines.append(parsed.line)
    if errors:
        raise DataError(_describe_errors(path, what, errors, values))
    if not records:
        raise DataError(f"{display_path(path)}: {what} holds no records (the file is empty or has only blank lines)")
    return DataFile(path, hashlib.sha256(raw).hexdigest(), records, lines)


def _describe_errors(path: Path, what: str, errors: list[DataError], values: list[object]) -> str:
    """One line per kind of fault with the lines that have it (a fault on every line is said once), a hint when
    the file is the other schema's, and where the schema is."""
    by_fault: dict[str, list[int]] = {}
    for error in errors:
        by_fault.setdefault(error.fault, []).append(error.line)
    shown = [f"{display_path(path)} {_lines(numbers)}: {fault}" for fault, numbers in list(by_fault.items())[:MAX_LISTED]]
    if len(by_fault) > MAX_LISTED:
        shown.append(f"... and {_plural(len(by_fault) - MAX_LISTED, 'other fault')}")
    other = next(name for name in _SCHEMA_KEYS if name != what)
    if values and all(isinstance(v, dict) and _SCHEMA_KEYS[other] in v for v in values):
        shown.insert(0, f"{display_path(path)} holds {other.removesuffix(' file')} records ({_SCHEMA_KEYS[other]!r} on every line), "
                        f"not a {what}: are the training and eval files swapped?")
    if any(error.schema for error in errors):
        shown.append(f"({SCHEMA_HELP})")
    return "\n".join(shown)


def _lines(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    listed = ", ".join(map(str, numbers[:5]))
    return f"lines {listed}" + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")


def _check_trace(record: _Record) -> dict:
    # Step numbers may start at 0 and step types are free text ("setup", "formula", ...):
    # users' exports differ, and rendering uses only the content.
    trace = record.value
    record.field(trace, "trace_version", str)
    record.text(trace, "prompt")
    record.field(trace, "final_answer", str)
    steps = record.field(trace, "steps", list)
    if not steps:
        raise record.error("field 'steps' must be a non-empty list")
    for n, step in enumerate(steps):
        name = f"steps[{n}]"
        if not isinstance(step, dict):
            raise record.error(f"field {name!r} must be an object (got {_json_type(step)})")
        record.field(step, "i", int, f"{name}.i")
        record.field(step, "type", str, f"{name}.type")
        record.field(step, "content", str, f"{name}.content")
    record.field(trace, "meta", dict)
    return trace


def _check_eval_item(record: _Record) -> dict:
    item = record.value
    record.text(item, "id")
    record.text(item, "prompt")
    record.text(item, "expected_answer")
    record.choice(item, "section", EVAL_SECTIONS)
    record.field(item, "category", str)
    record.choice(item, "difficulty", EVAL_DIFFICULTIES)
    return item


def load_trace_file(path: str | Path) -> DataFile:
    """A ReasoningTrace JSONL file with each record's line; DataError names file, line and field of every bad record."""
    return _load(path, "training traces file", _check_trace)


def load_eval_file(path: str | Path) -> DataFile:
    """An eval-set JSONL file with each record's line; DataError names file, line and field of every bad record."""
    return _load(path, "eval set file", _check_eval_item)


def load_traces(path: str | Path) -> list[dict]:
    """The records of a ReasoningTrace JSONL file (see load_trace_file)."""
    return load_trace_file(path).records


def load_eval(path: str | Path) -> list[dict]:
    """The records of an eval-set JSONL file (see load_eval_file)."""
    return load_eval_file(path).records


# --------------------------------------------------------------------------- checks


def normalize_prompt(prompt: str) -> str:
    """The form in which two prompts count as the same question (``NORMALISATION``).

    Unicode compatibility forms fold together (full-width letters, ligatures, non-breaking
    spaces), except superscripts, subscripts and vulgar fractions, which change the question.
    Case folds after NFKC and NFKC runs again, as Unicode's caseless matching prescribes.
    """
    text = _nfkc_keeping_scripts_and_fractions(_nfkc_keeping_scripts_and_fractions(prompt).casefold())
    return " ".join(text.split())


def _nfkc_keeping_scripts_and_fractions(text: str) -> str:
    # Character by character, then NFC over the whole: the same as NFKC for every other character.
    kept = (
        char if unicodedata.decomposition(char).startswith(_KEPT_DECOMPOSITIONS)
        else unicodedata.normalize("NFKC", char)
        for char in unicodedata.normalize("NFC", text)
    )
    return unicodedata.normalize("NFC", "".join(kept))


def _shorten(text: str, width: int = 60) -> str:
    # Not whitespace-collapsed: a variant may differ from its twin only in spacing.
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class CheckResult:
    """One data check: a pre-flight line (``line()``) and its findings, JSON-serialisable (``asdict``)."""

    name: str
    status: str  # "pass"; "warn": reported, the run goes ahead; "fail": the run must not start
    detail: str  # what was checked and found, one line
    counts: dict[str, int]
    examples: list[dict] = field(default_factory=list)  # the first EXAMPLES findings of each kind, with lines
    problems: list[str] = field(default_factory=list)  # every finding that fails the check, one sentence each

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        return f"[{self.status.upper()}] {self.name}: {self.detail}"


def _status(failed: bool, noted: bool) -> str:
    return "fail" if failed else "warn" if noted else "pass"


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _first_by_prompt(data: DataFile) -> dict[str, int]:
    """Normalised prompt -> index of the first record that has it."""
    first: dict[str, int] = {}
    for index, record in enumerate(data.records):
        first.setdefault(normalize_prompt(record["prompt"]), index)
    return first


def _repeats(train: DataFile) -> list[tuple[int, int]]:
    """(index, index of the earlier record with the same normalised prompt) for every repeat."""
    first = _first_by_prompt(train)
    earlier = (first[normalize_prompt(record["prompt"])] for record in train.records)
    return [(index, first_index) for index, first_index in enumerate(earlier) if first_index != index]


def check_training_prompts(train: DataFile, repeats: str = "keep") -> CheckResult:
    """Report training prompts that repeat an earlier one (after normalising); kept or dropped, never a failure."""
    _check_policy("repeats", repeats, REPEAT_POLICIES)
    found = _repeats(train)
    other_answer = [
        (index, earlier) for index, earlier in found
        if not answers_match(train.records[index]["final_answer"], train.records[earlier]["final_answer"])
    ]
    examples = [
        {
            "kind": "repeated_prompt", "line": train.lines[index], "first_line": train.lines[earlier],
            "prompt": _shorten(train.records[index]["prompt"]),
            "same_answer": (index, earlier) not in other_answer,
        }
        for index, earlier in found[:EXAMPLES]
    ]
    n = len(train.records)
    if not found:
        detail = f"{n} records, no prompt repeats an earlier one"
    else:
        handled = "kept" if repeats == "keep" else f"dropped; {n - len(found)} records left to train on"
        detail = f"{n} records, {len(found)} repeat an earlier prompt ({handled})"
        if other_answer:
            detail += f"; {_plural(len(other_answer), 'repeat has', 'repeats have')} another answer"
    counts = {"records": n, "repeats": len(found), "repeats_with_other_answer": len(other_answer),
              "dropped": len(found) if repeats == "drop" else 0}
    return CheckResult("training prompts", _status(False, bool(found)), detail, counts, examples)


def apply_repeat_policy(train: DataFile, repeats: str) -> tuple[DataFile, list[dict]]:
    """The training records to train on under the policy, and the dropped ones (line, first line, prompt)."""
    _check_policy("repeats", repeats, REPEAT_POLICIES)
    if repeats == "keep":
        return train, []
    found = dict(_repeats(train))
    kept = [index for index in range(len(train.records)) if index not in found]
    dropped = [
        {"line": train.lines[index], "first_line": train.lines[earlier],
         "prompt": _shorten(train.records[index]["prompt"])}
        for index, earlier in found.items()
    ]
    subset = DataFile(train.path, train.sha256, [train.records[i] for i in kept], [train.lines[i] for i in kept])
    return subset, dropped


def check_eval_items(eval_set: DataFile) -> CheckResult:
    """Fail on a repeated id or an item identical to another (prompt and expected answer); note prompt variants."""
    name = eval_set.path.name
    # "variant": the prompt differs from an earlier one only after normalising; "other_answer": the
    # same prompt text with another expected answer. Both are distinct items under the policy.
    findings: dict[str, list[dict]] = {"repeated_id": [], "identical_item": [], "variant": [], "other_answer": []}
    problems = []
    first_id: dict[str, int] = {}
    first_item: dict[tuple[str, str], int] = {}
    first_prompt: dict[str, int] = {}
    for index, item in enumerate(eval_set.records):
        line = eval_set.lines[index]
        where = f"{name} line {line} (id {item['id']})"
        if (earlier := first_id.setdefault(item["id"], index)) != index:
            findings["repeated_id"].append({"kind": "repeated_id", "id": item["id"], "line": line,
                                            "first_line": eval_set.lines[earlier]})
            problems.append(f"{where} repeats the id of line {eval_set.lines[earlier]}")
        identity = (item["prompt"], item["expected_answer"])
        if (earlier := first_item.setdefault(identity, index)) != index:
            other = eval_set.records[earlier]
            findings["identical_item"].append({"kind": "identical_item", "id": item["id"], "line": line,
                                               "first_id": other["id"], "first_line": eval_set.lines[earlier],
                                               "prompt": _shorten(item["prompt"])})
            problems.append(f"{where} is identical to line {eval_set.lines[earlier]} (id {other['id']}) in prompt "
                            "and expected answer, so it would be scored twice")
        elif (earlier := first_prompt.setdefault(normalize_prompt(item["prompt"]), index)) != index:
            other = eval_set.records[earlier]
            kind = "other_answer" if item["prompt"] == other["prompt"] else "variant"
            findings[kind].append({"kind": kind, "id": item["id"], "line": line, "first_id": other["id"],
                                   "first_line": eval_set.lines[earlier], "prompt": _shorten(item["prompt"]),
                                   "first_prompt": _shorten(other["prompt"])})
    ids = len(first_id)
    repeated, identical, variants, other_answer = (len(kind) for kind in findings.values())
    if problems:
        parts = []
        if repeated:
            parts.append(f"{_plural(repeated, 'id')} used again")
        if identical:
            parts.append(f"{_plural(identical, 'item')} identical to an earlier one (prompt and expected answer)")
        detail = f"{len(eval_set.records)} items: " + ", ".join(parts)
    else:
        detail = f"{_plural(ids, 'distinct id')}, no duplicate item"
    if variants:
        detail += (f"; {_plural(variants, 'prompt differs', 'prompts differ')} from an earlier one only in case, "
                   "spacing or Unicode form (distinct items)")
    if other_answer:
        detail += (f"; {_plural(other_answer, 'prompt repeats', 'prompts repeat')} an earlier one with another "
                   "expected answer (distinct items)")
    counts = {"items": len(eval_set.records), "distinct_ids": ids, "repeated_ids": repeated,
              "identical_items": identical, "variants": variants, "same_prompt_other_answer": other_answer}
    examples = [example for kind in findings.values() for example in kind[:EXAMPLES]]
    noted = bool(variants or other_answer)
    return CheckResult("eval items", _status(bool(problems), noted), detail, counts, examples, problems)


def check_leakage(train: DataFile, eval_set: DataFile, leakage: str = "fail") -> CheckResult:
    """An eval prompt that appears in training after normalising: a failure, or reported under policy "report"."""
    _check_policy("leakage", leakage, LEAKAGE_POLICIES)
    first = _first_by_prompt(train)
    pairs = []
    for index, item in enumerate(eval_set.records):
        if (earlier := first.get(normalize_prompt(item["prompt"]))) is not None:
            pairs.append({"kind": "leaked_prompt", "eval_line": eval_set.lines[index], "id": item["id"],
                          "train_line": train.lines[earlier], "prompt": _shorten(item["prompt"])})
    sentences = [
        f"{eval_set.path.name} line {pair['eval_line']} (id {pair['id']}) repeats {train.path.name} line "
        f"{pair['train_line']}: {pair['prompt']!r}"
        for pair in pairs
    ]
    n = len(eval_set.records)
    how = "case, spacing, Unicode normalised"
    if not pairs:
        detail = f"none of {n} eval prompts appears in training ({how})"
    else:
        verb = "appears" if len(pairs) == 1 else "appear"
        detail = f"{len(pairs)} of {n} eval prompts {verb} in training ({how})"
        if leakage == "report":
            detail += "; reported, not refused (leakage policy 'report')"
    failed = bool(pairs) and leakage == "fail"
    return CheckResult("train/eval leakage", _status(failed, bool(pairs)), detail,
                       {"eval_prompts": n, "leaked": len(pairs)}, pairs[:EXAMPLES], sentences if failed else [])


def _check_policy(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} policy must be one of {', '.join(allowed)} (got {value!r})")


@dataclass(frozen=True)
class DataReport:
    """Every data check on one training file and one eval file; ``to_dict`` is data_report.json."""

    files: dict[str, dict]
    policy: dict[str, str]
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> list[str]:
        return [problem for check in self.checks for problem in check.problems]

    def summary(self) -> str:
        failed = [check.name for check in self.checks if not check.ok]
        noted = [check.name for check in self.checks if check.status == "warn"]
        outcome = f"failed: {', '.join(failed)}" if failed else "all passed"
        return f"data checks {outcome}" + (f" (notes on {', '.join(noted)})" if noted else "")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "summary": self.summary(), "files": self.files, "policy": self.policy,
                "checks": [asdict(check) for check in self.checks]}


def check_data(train: DataFile, eval_set: DataFile, repeats: str = "keep", leakage: str = "fail") -> DataReport:
    """Run every data check of the policy on loaded files."""
    checks = [
        check_training_prompts(train, repeats), check_eval_items(eval_set), check_leakage(train, eval_set, leakage),
    ]
    return DataReport(
        files={"train": train.describe(), "eval": eval_set.describe()},
        policy={"repeats": repeats, "leakage": leakage, "prompt_normalisation": NORMALISATION},
        checks=checks,
    )


def load_training_records(path: str | Path, repeats: str) -> list[dict]:
    """The records training uses: the file's, with later repeats of a prompt dropped when `repeats` is "drop"."""
    return apply_repeat_policy(load_trace_file(path), repeats)[0].records
