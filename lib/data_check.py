"""`python -m lib.data_check`: the data checks pre-flight runs, and what to look at before the one shot.

    python -m lib.data_check --train D:/data/train.jsonl --eval D:/data/eval.jsonl    # the official contract's profile
    python -m lib.data_check --params params/embedded.yaml     # the files and the tokenizer a profile names

It starts no run and writes nothing unless --json is given. It prints the data policy's checks (lib.data),
whether every training record fits the profile's max_seq_length under the profile's tokenizer (pre-flight's own
check), record counts per section, category and difficulty, token length distributions, and the answer types of
both files. Without --params the profile is the official contract (the one shot's): its tokenizer is Gemma's,
from the hub or its local cache. Exit status: 0 when a run would accept the files, 1 when it would not (every
problem is named with file and line), 2 for a usage or profile error. A tokenizer that cannot be loaded here (a
hub model with no network) is reported as "not measured" and does not decide the exit status: that is about the
files, not this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tabulate import tabulate
from transformers import PreTrainedTokenizerBase

from lib.config import load_config
from lib.console import utf8_output
from lib.data import (
    EXAMPLES, LEAKAGE_POLICIES, REPEAT_POLICIES, CheckResult, DataError, DataFile, DataReport, apply_repeat_policy,
    check_data, load_eval_file, load_trace_file,
)
from lib.model_source import resolve_tokenizer
from lib.printable import one_line
from lib.prompt_format import check_record_lengths, encode_prompt
from lib.scoring import answer_type

# Findings that are reported but never refuse a run (lib.data's policy).
NOTE_KINDS = ("repeated_prompt", "variant", "other_answer")


def measure_lengths(train: DataFile, eval_set: DataFile, tokenizer: PreTrainedTokenizerBase,
                    max_seq_length: int) -> tuple[CheckResult, list[dict]]:
    """Pre-flight's record-length check, and the rows of the length table (training records, eval prompts)."""
    check, lengths = check_record_lengths(train, tokenizer, max_seq_length)
    prompts = [len(encode_prompt(item["prompt"], tokenizer)) for item in eval_set.records]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    longest_prompt = max(range(len(prompts)), key=prompts.__getitem__)
    rows = [
        {"records": "training (prompt + response)", "n": len(lengths), **_distribution(lengths),
         "longest": f"line {train.lines[longest]}"},
        {"records": "eval prompts", "n": len(prompts), **_distribution(prompts),
         "longest": f"line {eval_set.lines[longest_prompt]}"},
    ]
    return check, rows


def _distribution(lengths: list[int]) -> dict:
    return {
        "min": min(lengths), "median": statistics.median(lengths),
        # "higher": a length some record really has, not an interpolation between two.
        "p95": int(np.percentile(lengths, 95, method="higher")), "max": max(lengths),
    }


def _count_table(values: Iterable[str], name: str) -> str:
    counts = Counter(one_line(value) for value in values)  # a category is the user's text: shown on one line
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tabulate(rows, headers=[name, "records"], tablefmt="simple")


def _answer_types(train: DataFile, eval_set: DataFile) -> str:
    train_types = Counter(answer_type(trace["final_answer"]) for trace in train.records)
    eval_types = Counter(answer_type(item["expected_answer"]) for item in eval_set.records)
    kinds = sorted(set(train_types) | set(eval_types), key=lambda k: -(train_types[k] + eval_types[k]))
    rows = [[kind, train_types[kind], eval_types[kind]] for kind in kinds]
    return tabulate(rows, headers=["answer type", "training", "eval"], tablefmt="simple")


def _describe_note(example: dict, train: DataFile, eval_set: DataFile) -> str:
    """One line for a finding that is reported but does not stop a run."""
    t, e = train.path.name, eval_set.path.name
    kind = example["kind"]
    if kind == "repeated_prompt":
        answer = "" if example["same_answer"] else " (another answer)"
        return f"{t} line {example['line']} repeats line {example['first_line']}{answer}: {example['prompt']!r}"
    if kind == "leaked_prompt":  # only under the leakage policy "report"
        return (f"{e} line {example['eval_line']} (id {example['id']}) repeats {t} line {example['train_line']}: "
                f"{example['prompt']!r}")
    relation = "is a variant of" if kind == "variant" else "has the prompt, not the answer, of"
    return (f"{e} line {example['line']} (id {example['id']}) {relation} line {example['first_line']} "
            f"(id {example['first_id']}): {example['prompt']!r}")


def run_check(train_path: Path | None, eval_path: Path | None, params: Path | None, repeats: str | None,
              leakage: str | None, json_path: Path | None = None) -> int:
    """Print the report; return the exit status (0 accepted, 1 refused, 2 profile error).

    `repeats` and `leakage` override the profile's train_repeats and eval_leakage when given.
    """
    try:
        cfg = load_config(params)
    except ValueError as exc:  # a missing or malformed profile, an unknown name, a bad value: all named
        print(f"lib.data_check: {exc}", file=sys.stderr)
        return 2
    repeats = repeats or cfg.train_repeats
    leakage = leakage or cfg.eval_leakage
    train_path = train_path or cfg.path("train_file")
    eval_path = eval_path or cfg.path("eval_file")
    profile = (f"{params or 'the official defaults'}: model {cfg.model_name}, "
               f"max_seq_length {cfg.max_seq_length}")

    loaded, problems = {}, []
    for role, path, loader in (("training", train_path, load_trace_file), ("eval", eval_path, load_eval_file)):
        try:
            loaded[role] = loader(path)
        except (DataError, FileNotFoundError) as exc:
            problems += str(exc).splitlines()
            print(f"[FAIL] {role} file: {str(exc).splitlines()[0]}")
    if len(loaded) < 2:
        return _finish(problems, json_path, None)
    train, eval_set = loaded["training"], loaded["eval"]

    print(f"training: {train.path}  {len(train.records)} records  sha256 {train.sha256[:16]}")
    print(f"eval:     {eval_set.path}  {len(eval_set.records)} records  sha256 {eval_set.sha256[:16]}")
    print(f"profile:  {profile}")
    print(f"policy:   training repeats {repeats!r}, leakage {leakage!r}\n")

    report = check_data(train, eval_set, repeats, leakage)
    trained_on, _ = apply_repeat_policy(train, repeats)
    checks = list(report.checks)
    length_rows, tokenizer_note = [], ""
    try:
        tokenizer, tokenizer_note = resolve_tokenizer(cfg, trained_on.records)
    except Exception as exc:  # a missing package, a gated model, no network: the files are not at fault
        checks.append(CheckResult("record lengths", "warn", f"token lengths not measured: the profile's tokenizer "
                                  f"is not available here ({type(exc).__name__}: {exc})", {}))
    else:
        length_check, length_rows = measure_lengths(trained_on, eval_set, tokenizer, cfg.max_seq_length)
        checks.append(length_check)
    for check in checks:
        print(check.line())
    problems += [problem for check in checks for problem in check.problems]

    # Problems are listed in full at the end; here, what is reported and does not stop a run.
    examples = [
        _describe_note(example, train, eval_set)
        for check in checks for example in check.examples
        if check.status == "warn" or example["kind"] in NOTE_KINDS
    ]
    if examples:
        print(f"\nNotes (the first {EXAMPLES} of each kind; they do not stop a run)")
        print("\n".join(f"  {line}" for line in examples))
    if length_rows:
        print(f"\nToken lengths ({tokenizer_note}; as training encodes them)")
        print(tabulate(length_rows, headers="keys", tablefmt="simple"))
    _print_composition(train, eval_set)
    return _finish(problems, json_path, DataReport(report.files, report.policy, checks).to_dict())


def _print_composition(train: DataFile, eval_set: DataFile) -> None:
    """Records per section, difficulty and category (eval), per meta.category (training); answer types."""
    print(f"\nEval set: {len(eval_set.records)} items")
    for key in ("section", "difficulty", "category"):
        print(_count_table((item[key] for item in eval_set.records), key) + "\n")
    print(f"Training set: {len(train.records)} records")
    print(_count_table((str(t["meta"].get("category", "(none)")) for t in train.records), "meta.category") + "\n")
    print(_answer_types(train, eval_set))


def _finish(problems: list[str], json_path: Path | None, data: dict | None) -> int:
    if json_path is not None:
        json_path.write_text(json.dumps(data or {"ok": False, "problems": problems}, indent=2, ensure_ascii=False)
                             + "\n", encoding="utf-8")
    if problems:
        print(f"\nA run would refuse these files ({len(problems)} {'problem' if len(problems) == 1 else 'problems'}):")
        print("\n".join(f"  {problem}" for problem in problems))
        return 1
    print("\nA run would accept these files.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.data_check", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="training traces (JSONL); default: the profile's train_file")
    parser.add_argument("--eval", type=Path, help="eval set (JSONL); default: the profile's eval_file")
    parser.add_argument("--params", type=Path,
                        help="profile (params/*.yaml) on top of the official defaults: tokenizer, max_seq_length, "
                        "data policy (default: the official contract)")
    parser.add_argument("--repeats", choices=REPEAT_POLICIES,
                        help="training prompts that repeat an earlier one: keep or drop (default: the profile's "
                        "train_repeats)")
    parser.add_argument("--leakage", choices=LEAKAGE_POLICIES,
                        help="eval prompts found in training: fail or report (default: the profile's eval_leakage)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    utf8_output()
    return run_check(args.train, args.eval, args.params, args.repeats, args.leakage, args.json)


if __name__ == "__main__":
    sys.exit(main())
