"""`python -m lib.data check`: the data checks pre-flight runs, and what to look at before the one shot.

    python -m lib.data check --train data/dev-reasoning-v2.jsonl --eval data/eval_v2.jsonl --params params/embedded.yaml
    python -m lib.data check --params params/embedded.yaml      # the files the profile names

It starts no run and writes nothing unless --json is given. It prints the data policy's checks
(lib.data), whether every training record fits the profile's max_seq_length under the profile's
tokenizer (encoded as training encodes it), record counts per section, category and difficulty,
token length distributions, and the answer types of both files. Exit status: 0 when a run would
accept the files, 1 when it would not (every problem is named with file and line), 2 for a usage
or profile error. A tokenizer that cannot be loaded here (a hub model with no network) is reported
as "not measured" and does not decide the exit status: that is about the files, not this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import huggingface_hub
import numpy as np
from tabulate import tabulate
from transformers import PreTrainedTokenizerBase

from lib import gguf_model
from lib.config import RunConfig, load_config
from lib.data import (
    EXAMPLES,
    LEAKAGE_POLICIES,
    REPEAT_POLICIES,
    CheckResult,
    DataError,
    DataFile,
    DataReport,
    apply_repeat_policy,
    check_data,
    load_eval_file,
    load_trace_file,
)
from lib.embedded import build_tokenizer, model_config_path, read_config
from lib.modeling import load_tokenizer
from lib.render import encode_prompt, encode_trace
from lib.scoring import answer_type


# Findings that are reported but never refuse a run (lib.data's policy).
NOTE_KINDS = ("repeated_prompt", "variant", "other_answer")


class TokenizerUnavailable(RuntimeError):
    """The profile's tokenizer cannot be loaded on this machine; the message says why."""


def load_profile(params: Path | None) -> RunConfig:
    """The resolved run parameters: the official defaults, then the profile (lib.config.load_config)."""
    return load_config(params)


def load_profile_tokenizer(cfg: RunConfig, traces: list[dict]) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer a run with `cfg` trains with, and a few words on where it came from."""
    if cfg.builds_model:
        vocab_size = read_config(model_config_path(cfg.model_name)).vocab_size
        return build_tokenizer(traces, vocab_size), f"{cfg.model_name}, built from the {len(traces)} training texts"
    try:
        if cfg.model_name == gguf_model.MODEL_NAME:
            folder = gguf_model.materialise()  # converted once into a cache outside the repository
            return load_tokenizer(str(folder)), f"{cfg.model_name} ({folder})"
        if Path(cfg.model_name).is_dir():
            return load_tokenizer(cfg.model_name), f"local folder {cfg.model_name}"
        return _hub_tokenizer(cfg.model_name), f"hub model {cfg.model_name}"
    except TokenizerUnavailable:
        raise
    except Exception as exc:  # a missing package, a gated model, a broken folder: all say why
        raise TokenizerUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _hub_tokenizer(model_id: str) -> PreTrainedTokenizerBase:
    """From the local Hugging Face cache if it is there, else from the hub; one quick probe first.

    Without the probe, a machine with no network spends about a minute in download retries.
    """
    cached = huggingface_hub.try_to_load_from_cache(model_id, "tokenizer_config.json")
    if isinstance(cached, str):
        return load_tokenizer(str(Path(cached).parent))
    try:
        huggingface_hub.model_info(model_id, timeout=10)
    except Exception as exc:
        raise TokenizerUnavailable(f"{model_id} is not in the local cache and the hub did not answer ({exc})") from exc
    return load_tokenizer(model_id)


def _distribution(lengths: list[int]) -> dict:
    return {
        "min": min(lengths), "median": statistics.median(lengths),
        # "higher": a length some record really has, not an interpolation between two.
        "p95": int(np.percentile(lengths, 95, method="higher")), "max": max(lengths),
    }


def measure_lengths(
    train: DataFile, eval_set: DataFile, tokenizer: PreTrainedTokenizerBase, max_seq_length: int,
) -> tuple[CheckResult, list[dict]]:
    """A check that every training record fits max_seq_length, and rows of the length table."""
    lengths = [len(encode_trace(trace, tokenizer)["input_ids"]) for trace in train.records]
    prompts = [len(encode_prompt(item["prompt"], tokenizer)) for item in eval_set.records]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    longest_prompt = max(range(len(prompts)), key=prompts.__getitem__)
    over = [(line, length) for line, length in zip(train.lines, lengths) if length > max_seq_length]
    rows = [
        {"records": "training (prompt + response)", "n": len(lengths), **_distribution(lengths),
         "longest": f"line {train.lines[longest]}"},
        {"records": "eval prompts", "n": len(prompts), **_distribution(prompts),
         "longest": f"line {eval_set.lines[longest_prompt]}"},
    ]
    detail = (f"longest training record {lengths[longest]} tokens ({train.path.name} line {train.lines[longest]}), "
              f"max_seq_length {max_seq_length}")
    if over:
        detail = f"{len(over)} of {len(lengths)} training records over max_seq_length {max_seq_length}; {detail}"
    problems = [
        f"{train.path.name} line {line}: {length} tokens, over max_seq_length {max_seq_length}; "
        "raise max_seq_length rather than cut the answer off"
        for line, length in over
    ]
    examples = [{"kind": "over_max_seq_length", "line": line, "tokens": length} for line, length in over[:EXAMPLES]]
    counts = {"records": len(lengths), "over_max_seq_length": len(over), "longest_tokens": lengths[longest]}
    return CheckResult("sequence length", "fail" if over else "pass", detail, counts, examples, problems), rows


def _count_table(values: Iterable[str], name: str) -> str:
    counts = Counter(values)
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
        cfg = load_profile(params)
    except ValueError as exc:  # a missing or malformed profile, an unknown name, a bad value: all named
        print(f"lib.data check: {exc}", file=sys.stderr)
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
        tokenizer, tokenizer_note = load_profile_tokenizer(cfg, trained_on.records)
    except TokenizerUnavailable as exc:
        checks.append(CheckResult("sequence length", "warn", f"token lengths not measured: {exc}", {}))
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
        print(f"\nA run would refuse these files ({len(problems)} problems):")
        print("\n".join(f"  {problem}" for problem in problems))
        return 1
    print("\nA run would accept these files.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.data", description="Check data files before a run.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run pre-flight's data checks and show the data, without a run")
    check.add_argument("--train", type=Path, help="training traces (JSONL); default: the profile's train_file")
    check.add_argument("--eval", type=Path, help="eval set (JSONL); default: the profile's eval_file")
    check.add_argument("--params", type=Path,
                       help="profile (params/*.yaml) on top of the official defaults: tokenizer, max_seq_length, "
                       "data policy")
    check.add_argument("--repeats", choices=REPEAT_POLICIES,
                       help="training prompts that repeat an earlier one: keep or drop (default: the profile's "
                       "train_repeats)")
    check.add_argument("--leakage", choices=LEAKAGE_POLICIES,
                       help="eval prompts found in training: fail or report (default: the profile's eval_leakage)")
    check.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    return run_check(args.train, args.eval, args.params, args.repeats, args.leakage, args.json)
