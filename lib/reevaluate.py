"""Evaluate a saved model folder on any eval file, through the run's own generation and scoring code.

    python -m lib.reevaluate --model submission_runs/<run>/checkpoints/final \\
        --eval-file data/eval_v2.jsonl --out reevaluations/<name> [--params params/embedded.yaml] \\
        [--baseline auto|none|<model folder or hub id>]

--model is whole weights or, from a lora/qlora run, peft's adapter folder: then the base model it names
(adapter_config.json) is loaded and the adapter applied, as the run's evaluation does (lib.model_loading);
pass the run's --params file, so that a QLoRA adapter gets its 4-bit base.

Settings (device, dtype, attention, eval_batch_size, max_new_tokens, seed) come from the
official defaults overlaid with the --params file, by lib.config.load_config as every entry point
resolves them; model_name, eval_file and run_dir are set from --model, --eval-file
and --out. The eval file is read by lib.data.load_eval (a malformed record is refused, naming
file, line and field); generation, scoring and the output files come from lib.evaluation.

The base model is evaluated too, so that a re-evaluation shows what training changed, as a run does.
With --baseline auto (the default) it is the run folder's base_model/ when --model is a run's
checkpoints/<name> and the folder is there, else the profile's model_name (resolved as pre-flight
resolves it: the embedded model is built again from the profile's training file and seed, into
--out/base_model/; a hub model needs access or the local cache). If neither is available the
command says why and scores --model alone. --baseline none skips it; a folder or hub id names it.

--out must be a new (or empty) folder, not inside the model folder and not inside a finished
run folder (any folder above it holding m44_summary.md or manifest.json): a finished run's
evidence is never added to or changed.

The evaluation itself is a run's: the evaluation worker (lib/evaluation_worker.py) with the run's
environment, on the items eval_limit keeps. What it writes into --out: evaluation_results.json,
evaluation_summary.md and comparison.png, the same files a run writes: --model is labelled "trained" and
the base model "baseline", so `metrics` and `items` read as in a run's file. Without a baseline, `metrics`
has no "baseline" and no "comparison", `models` is ["trained"] and there is no chart. Beside them:
config.json (the resolved parameters) and reevaluation.json (model folder, the baseline and how it was
found, eval file, its sha256 and its item count).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lib.config import RunConfig, load_config
from lib.console import utf8_output
from lib.contract import ADAPTER_CONFIG, BASE_MODEL, CHECKPOINTS, MANIFEST, SUMMARY
from lib.data import DataError, load_eval, load_traces
from lib.evaluation import EvaluationFailed, evaluate_in_worker
from lib.evidence import sha256_file, write_json
from lib.lora import is_adapter
from lib.model_source import resolve_model_source

REEVALUATION = "reevaluation.json"  # what was evaluated, against which baseline, on which file (--out only)
# Files whose presence marks a run folder as finished (consolidation writes them last).
FINISHED_MARKERS = (SUMMARY, MANIFEST)


def resolve_config(params_file: Path | None, model: Path, eval_file: Path, out: Path) -> RunConfig:
    """Defaults, then the params file, then this command's paths: the one loader every entry point uses."""
    return load_config(params_file, {"model_name": str(model), "eval_file": str(eval_file), "run_dir": str(out)})


def refuse_out(out: Path, model: Path) -> None:
    """Raise SystemExit unless `out` is a new or empty folder outside the model and any finished run."""
    out, model = out.resolve(), model.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"--out {out} already exists and is not an empty folder: choose a new folder")
    if out == model or model in out.parents:
        raise SystemExit(f"--out {out} is inside the model folder {model}: choose a folder outside it")
    for folder in (out, *out.parents):
        found = [name for name in FINISHED_MARKERS if (folder / name).is_file()]
        if found:
            raise SystemExit(
                f"--out {out} is inside the finished run folder {folder} (it holds {', '.join(found)}); "
                "a finished run is never changed: choose a folder outside it"
            )


def find_baseline(choice: str, model: Path, params_file: Path | None, out: Path) -> tuple[str | None, str]:
    """The base model to score beside --model, and how it was found; (None, why) when there is none."""
    if choice == "none":
        return None, "not evaluated (--baseline none)"
    if choice != "auto":
        return choice, "named by --baseline"
    in_run = model.parent.parent / BASE_MODEL
    if model.parent.name == CHECKPOINTS and (in_run / "config.json").is_file():
        return str(in_run), f"the run folder's {BASE_MODEL}/"
    profile = load_config(params_file, {"run_dir": str(out)})
    try:  # as pre-flight resolves it; the embedded model's tokenizer is trained on the training texts
        traces = load_traces(profile.path("train_file")) if profile.builds_model else []
        source = resolve_model_source(profile, traces, out)
    except (OSError, ImportError, RuntimeError, ValueError) as exc:  # missing, no package, no access, bad data
        return None, (f"not evaluated: the profile's model {profile.model_name!r} is not available "
                      f"({type(exc).__name__}: {exc})")
    return source.source, f"the profile's model {profile.model_name!r}: {source.detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved model folder (config, weights, tokenizer), or an adapter folder")
    parser.add_argument("--eval-file", type=Path, required=True, help="a JSONL file of the eval schema")
    parser.add_argument("--out", type=Path, required=True, help="a NEW folder for the result files")
    parser.add_argument("--params", type=Path, help="a params/ YAML file (default: the official defaults, lib/config.py)")
    parser.add_argument("--baseline", default="auto",
                        help="the base model to compare with: auto (default: the run's base_model/, else the "
                             "profile's model), none, or a model folder or hub id")
    args = parser.parse_args(argv)
    utf8_output()
    model, eval_file, out = (p if p.is_absolute() else Path.cwd() / p for p in (args.model, args.eval_file, args.out))

    if not (model / "config.json").is_file() and not is_adapter(model):
        raise SystemExit(f"--model {model}: not a saved model folder (neither config.json nor {ADAPTER_CONFIG})")
    refuse_out(out, model)
    try:
        cfg = resolve_config(args.params, model, eval_file, out)
        eval_items = load_eval(eval_file)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        kind = "eval file" if isinstance(exc, (DataError, FileNotFoundError)) else "parameters"
        raise SystemExit(f"{kind}: {exc}") from None
    if cfg.device == "cuda" and not torch.cuda.is_available():
        # As in pre-flight: no silent CPU fallback; say device: cpu in the params file instead.
        raise SystemExit("device is 'cuda' but no CUDA device was found; use a params file with device: cpu")

    out.mkdir(parents=True, exist_ok=True)
    baseline, how = find_baseline(args.baseline, model, args.params, out)
    print(f"baseline: {baseline or '-'} ({how})", flush=True)
    write_json(out / REEVALUATION, {
        "model": str(model),
        "baseline": {"model": baseline, "how": how},
        "eval_file": str(eval_file),
        "eval_file_sha256": sha256_file(eval_file),
        "items_in_file": len(eval_items),
    })
    cfg.save(out)  # the evaluation worker's parameters, as in a run folder
    sources = {label: source for label, source in (("baseline", baseline), ("trained", str(model))) if source}
    try:
        evaluate_in_worker(cfg, out, sources)
    except EvaluationFailed as exc:
        raise SystemExit(f"lib.reevaluate: the evaluation failed: {exc}") from None
    print(f"Results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
