"""Load and check the reasoning-trace training set and the eval set (JSON Lines)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

EVAL_SECTIONS = ("core", "trace_sensitive", "edge_case")
EVAL_DIFFICULTIES = ("easy", "medium", "hard")
# Messages use JSON's names for types: the reader of an error is looking at a JSON file.
_JSON_TYPE_NAMES = {
    str: "a string", int: "an integer", float: "a number", bool: "a boolean",
    list: "a list", dict: "an object", type(None): "null",
}


class DataError(ValueError):
    """A data file holds a record that does not match its schema."""


class _Record:
    """One parsed JSONL line and where it came from, for checks whose errors name file, line and field."""

    def __init__(self, path: Path, line: int, value: object):
        self.path, self.line, self.value = path, line, value

    def error(self, message: str) -> DataError:
        return DataError(f"{self.path} line {self.line}: {message}")

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


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _read_jsonl(path: str | Path, what: str) -> Iterator[_Record]:
    """Yield each non-blank line of a JSONL file as a _Record holding a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            record = _Record(path, number, value)
            if not isinstance(value, dict):
                raise record.error(f"record must be a JSON object (got {_json_type(value)})")
            yield record


def _check_trace(record: _Record) -> dict:
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


def load_traces(path: str | Path) -> list[dict]:
    """Read a ReasoningTrace JSONL file; raise DataError naming the file, line and field of a bad record."""
    return [_check_trace(record) for record in _read_jsonl(path, "training traces file")]


def load_eval(path: str | Path) -> list[dict]:
    """Read an eval-set JSONL file; raise DataError naming the file, line and field of a bad record."""
    return [_check_eval_item(record) for record in _read_jsonl(path, "eval set file")]


def normalize_prompt(prompt: str) -> str:
    """The form in which two prompts count as the same question: whitespace collapsed, case folded."""
    return " ".join(prompt.split()).casefold()


def _shorten(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def check_datasets(traces: list[dict], eval_items: list[dict]) -> list[str]:
    """Problems that would make the eval score meaningless: repeated prompts, eval prompts seen in training."""
    problems = []
    first_trace: dict[str, int] = {}  # normalized prompt -> 1-based record number
    for number, trace in enumerate(traces, start=1):
        key = normalize_prompt(trace["prompt"])
        if key in first_trace:
            problems.append(
                f"training records {first_trace[key]} and {number} have the same prompt {_shorten(trace['prompt'])}"
            )
        else:
            first_trace[key] = number

    first_eval: dict[str, str] = {}  # normalized prompt -> eval id
    for item in eval_items:
        key = normalize_prompt(item["prompt"])
        if key in first_trace:
            problems.append(
                f"eval item {item['id']} repeats training record {first_trace[key]}: {_shorten(item['prompt'])}"
            )
        if key in first_eval:
            problems.append(f"eval items {first_eval[key]} and {item['id']} have the same prompt")
        else:
            first_eval[key] = item["id"]

    for eval_id, count in sorted(Counter(item["id"] for item in eval_items).items()):
        if count > 1:
            problems.append(f"eval id {eval_id!r} is used by {count} items")
    return problems
