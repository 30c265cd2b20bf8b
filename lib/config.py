"""The run's parameters: one dataclass, one loader (profile file + overrides), validated once, frozen.

Every entry point builds its config here: the notebook from its parameters cell (`RunConfig.from_parameters`),
`lib.execute`, `lib.reevaluate`, `lib.data_check`, the benchmarks and the tests from a profile file and
overrides (`load_config`). Types come from the annotations (bool, int, float, str, Literal choices),
ranges from each field's metadata; a bad value is refused with the parameter's name and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lib.contract import CONFIG
from lib.evidence import read_json, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES = REPO_ROOT / "params"

# Names IPython puts in a kernel's namespace; everything else at the top level of the
# notebook before the config cell is a parameter.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _range(low: float, high: float) -> dict:
    return {"min": low, "max": high}


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one M44 run. The defaults are the official contract.

    The notebook's parameters cell and params/m44.yaml repeat these defaults (papermill needs literals
    in the cell); tests/test_config.py keeps the three equal.
    """

    # model
    # hub id, local model folder, "gemma-3-270m-gguf", or a model built here from a committed config with
    # seeded random weights: "embedded" (tiny) or "gemma-2b-shape" (Gemma 2B's architecture, to measure)
    model_name: str = "google/gemma-2b"
    device: Literal["cuda", "cpu"] = "cuda"
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # on the CPU, "portable" gives the same numbers on other x86-64 machines (one thread, AVX2 kernels, MKL's
    # compatible path: slower);
    # "native" uses this machine's threads and kernels (lib/launcher.py, PORTABLE_CPU)
    cpu_numerics: Literal["native", "portable"] = "native"
    attn_implementation: Literal["eager", "sdpa"] = "eager"
    # data
    train_file: str = "data/dev-reasoning-v2.jsonl"
    eval_file: str = "data/eval_v2.jsonl"
    max_seq_length: int = field(default=512, metadata=_range(16, 131_072))  # a longer record fails pre-flight
    train_repeats: Literal["keep", "drop"] = "keep"  # a training prompt repeating an earlier one: kept, or dropped
    eval_leakage: Literal["fail", "report"] = "fail"  # an eval prompt also in training: fails pre-flight, or reported
    # training
    seed: int = field(default=42, metadata=_range(0, 2**32 - 1))  # numpy's seed range
    max_steps: int = field(default=400, metadata=_range(1, 1_000_000))
    batch_size: int = field(default=1, metadata=_range(1, 4096))
    gradient_accumulation_steps: int = field(default=4, metadata=_range(1, 4096))
    optimizer: Literal["adafactor", "adamw_torch"] = "adafactor"
    learning_rate: float = field(default=2e-5, metadata=_range(0.0, 1.0))
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_ratio: float = field(default=0.05, metadata=_range(0.0, 0.5))
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 1.0))
    max_grad_norm: float = field(default=1.0, metadata=_range(0.0, 1e6))  # 0 disables clipping
    logging_steps: int = field(default=10, metadata=_range(1, 1_000_000))
    # several processes (torchrun); the global batch is batch_size x gradient_accumulation_steps x num_processes
    num_processes: int = field(default=1, metadata=_range(1, 64))  # one per GPU; >1 starts them through torchrun
    sharding: Literal["none", "fsdp"] = "none"  # with several processes: none = DDP (a full copy each), fsdp = FSDP2
    # what training changes (docs/FINETUNING.md): every weight (full), or low-rank adapters on a frozen base through
    # peft (lora), on a base loaded in 4-bit NF4 through bitsandbytes on a CUDA GPU (qlora). The lora_* defaults are
    # TRL's (ModelConfig: r 16, alpha 32, dropout 0.05) with peft's "all-linear" target (the QLoRA paper's choice)
    finetune: Literal["full", "lora", "qlora"] = "full"
    lora_r: int = field(default=16, metadata=_range(1, 4096))  # the adapters' rank
    lora_alpha: int = field(default=32, metadata=_range(1, 65_536))  # the update is scaled by lora_alpha / lora_r
    lora_dropout: float = field(default=0.05, metadata=_range(0.0, 0.9))  # dropout on each adapter's input
    # peft's "all-linear" (every linear layer but the output head), or module names separated by commas: q_proj,v_proj
    lora_target_modules: str = "all-linear"
    merge_adapter: bool = False  # lora/qlora: also save the base with the adapter merged in (checkpoints/final/merged)
    # evaluation
    eval_limit: int = field(default=0, metadata=_range(0, 1_000_000))  # score the first N eval items only; 0: all
    eval_batch_size: int = field(default=16, metadata=_range(1, 4096))
    max_new_tokens: int = field(default=256, metadata=_range(1, 32_768))
    # system metrics (lib/telemetry.py): seconds between samples of the GPUs and the processes beside training and
    # evaluation, into system_metrics.jsonl; the sampling costs well under 1% of the phase (docs/BENCHMARKS.md)
    telemetry_interval_s: float = field(default=2.0, metadata=_range(0.1, 3600.0))
    # where the evidence goes
    run_dir: str = "submission_runs/m44_v1"
    # an official run (submission_runs/m44_v<N>) starts only after a rehearsal of this configuration passed here
    # (lib/rehearsal.py); false waives that, and the waiver is recorded
    require_rehearsal: bool = True

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_value(f, hints[f.name], getattr(self, f.name))
        if self.sharding == "fsdp" and (self.device != "cuda" or self.num_processes < 2):
            # Accelerate shards only on accelerators; on the CPU the Trainer would quietly run DDP instead.
            raise ValueError(
                "parameter 'sharding': fsdp shards the model across several GPUs; it needs device: cuda and "
                f"num_processes >= 2 (got device: {self.device}, num_processes: {self.num_processes}); "
                "use sharding: none otherwise"
            )
        if self.sharding == "fsdp" and self.optimizer == "adafactor":
            # transformers' Adafactor keeps its factored state as plain tensors and adds FSDP2's sharded
            # (DTensor) gradients to them: the first optimizer step fails (tests/fsdp_ranks.py shows it).
            raise ValueError(
                "parameter 'optimizer': adafactor does not work on FSDP2's sharded parameters; "
                "use optimizer: adamw_torch with sharding: fsdp (its state is sharded too)"
            )
        self._check_finetune()

    def _check_finetune(self) -> None:
        """The fine-tuning mode against the parameters it depends on, each refusal naming the fields and the fix."""
        names = [name.strip() for name in self.lora_target_modules.split(",")]
        if self.lora_target_modules != LORA_ALL_LINEAR and not all(map(MODULE_NAME.fullmatch, names)):
            raise ValueError(
                f"parameter 'lora_target_modules' must be {LORA_ALL_LINEAR} or module names separated by commas "
                f"(letters, digits, _ and .), e.g. q_proj,v_proj; got {self.lora_target_modules!r}")
        if self.merge_adapter and self.finetune == "full":
            raise ValueError("parameter 'merge_adapter': there is no adapter to merge with finetune: full (a full "
                             "fine-tune saves whole weights already); set merge_adapter: false, or finetune: lora")
        if self.finetune == "full":
            return
        if self.sharding == "fsdp":
            raise ValueError(f"parameter 'finetune': {self.finetune} is not supported with sharding: fsdp (the adapters "
                             "are small and the frozen base is not sharded); use sharding: none (DDP) or finetune: full")
        if self.finetune == "qlora" and self.device != "cuda":
            raise ValueError(
                "parameter 'finetune': qlora loads the base model in 4-bit through bitsandbytes, whose 4-bit "
                f"kernels need a CUDA GPU, so it needs device: cuda (got device: {self.device}); "
                "use finetune: lora on a CPU")
        if self.finetune == "qlora" and self.num_processes > 1:
            raise ValueError(
                f"parameter 'finetune': qlora trains on one GPU (num_processes: 1), got num_processes: "
                f"{self.num_processes}; use finetune: lora with several processes")

    @property
    def trains_adapter(self) -> bool:
        """LoRA or QLoRA: training saves an adapter (peft's folder format) instead of whole weights."""
        return self.finetune != "full"

    @classmethod
    def from_parameters(cls, params: Mapping) -> RunConfig:
        """Build from a complete name -> value mapping (the notebook's parameters cell), naming unknown and missing names."""
        refuse_unknown(params)
        missing = [name for name in parameter_names() if name not in params]
        if missing:
            raise ValueError(f"missing parameter(s): {', '.join(map(repr, missing))}")
        return cls(**params)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, run_dir: Path) -> Path:
        """config.json: the resolved parameters and their hash, the first evidence of every run."""
        return write_json(run_dir / CONFIG, {"valid": True, "sha256": self.sha256(), "parameters": self.to_dict()})

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig | None:
        """The config a run folder's config.json records; None when its parameters were invalid."""
        record = read_json(run_dir / CONFIG)
        return cls.from_parameters(record["parameters"]) if record.get("valid") else None

    def sha256(self) -> str:
        """Hash of the resolved parameters, stable across runs and platforms."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, name: str) -> Path:
        """A path parameter resolved against the repository root (the notebook's cwd varies)."""
        return resolve_path(getattr(self, name))

    @property
    def builds_model(self) -> bool:
        """A model built in the run folder, with a tokenizer trained on the training texts (lib/model_builder.py)."""
        return self.model_name in BUILT_MODELS


LORA_ALL_LINEAR = "all-linear"  # peft's shorthand: every linear layer except the output head
MODULE_NAME = re.compile(r"[A-Za-z0-9_.]+")

# model_name values that build a model from models/<folder>/config.json with seeded random weights.
BUILT_MODELS = {"embedded": "embedded", "gemma-2b-shape": "gemma-2b"}


def parameter_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def refuse_unknown(params: Mapping, where: str = "") -> None:
    """Raise ValueError naming every key of `params` that is not a parameter (and where it was written)."""
    unknown = sorted(set(params) - set(parameter_names()))
    if unknown:
        raise ValueError(f"{where}unknown parameter(s) {', '.join(map(repr, unknown))}; "
                         f"known parameters: {', '.join(parameter_names())}")


def save_invalid_parameters(run_dir: Path, params: Mapping) -> Path:
    """config.json of a run whose parameters failed validation: each value as written, for the evidence."""
    return write_json(run_dir / CONFIG, {"valid": False, "parameters": {k: repr(v) for k, v in params.items()}})


def default_parameters() -> dict:
    """The official contract: every parameter's default."""
    return {f.name: f.default for f in dataclasses.fields(RunConfig)}


def resolve_path(value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO_ROOT / path


def repo_relative(value: str | Path) -> str:
    """A path that still works (for a parameter, a tool's argument) but names nothing outside the repository:
    relative to the repository root when inside it, else as it is."""
    path = Path(value)
    try:
        return path.resolve().relative_to(REPO_ROOT.resolve()).as_posix() if path.is_absolute() else path.as_posix()
    except (ValueError, OSError):
        return str(path)


def display_path(value: str | Path) -> str:
    """A path as the evidence records it, naming nothing of the user's machine: relative to the repository when
    inside it (`data/eval_v2.jsonl`), under the home folder as `~/...`, else as it is. Evidence is meant to be shared:
    `C:\\Users\\<name>\\...` would name the user and their folders."""
    path = Path(value)
    if not path.is_absolute():
        return path.as_posix()
    for root, shown in ((REPO_ROOT, None), (Path.home(), "~")):
        try:
            relative = path.resolve().relative_to(root.resolve())
        except (ValueError, OSError):
            continue
        return relative.as_posix() if shown is None else f"~/{relative.as_posix()}"
    return str(path)


def without_local_paths(text: str) -> str:
    """`text` (a traceback, a message) with the repository's and the home folder's absolute paths shortened as
    display_path shortens them."""
    for root, shown in ((REPO_ROOT, ""), (Path.home(), "~/")):
        for spelled in {str(root), str(root.resolve())}:
            if len(spelled) > 1:  # a home folder of "/" would shorten every path
                text = text.replace(spelled + ("\\" if "\\" in spelled else "/"), shown)
    return text


def load_config(profile: str | Path | None = None, overrides: Mapping | None = None) -> RunConfig:
    """The one way to a config outside the notebook: defaults, then a profile file, then overrides."""
    params = {**default_parameters(), **(read_profile(profile) if profile is not None else {}), **(overrides or {})}
    refuse_unknown(params)
    return RunConfig(**params)


def read_profile(path: str | Path) -> dict:
    """A params/ YAML file as a dict of parameters; a missing, malformed or unknown-keyed file is named."""
    import yaml  # here, not at the top: lib.verify imports this module and needs no YAML

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"profile {path} not found (profiles live in {PROFILES.relative_to(REPO_ROOT)}/)")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"profile {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"profile {path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(params, dict):
        raise ValueError(f"profile {path}: expected a mapping of parameter names to values, got {type(params).__name__}")
    refuse_unknown(params, f"profile {path}: ")
    return params


def parse_override(text: str) -> tuple[str, object]:
    """`NAME=VALUE` from a command line; the value is read as a YAML scalar (`400`, `2.0e-5`, `cpu`, `true`)."""
    import yaml

    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"-p {text!r}: expected NAME=VALUE, e.g. -p max_steps=300")
    refuse_unknown({name: raw}, f"-p {text!r}: ")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw  # not a YAML scalar: a string, validated like any other value
    if isinstance(value, str):  # YAML reads 2e-5, nan and inf as text; on a command line they are numbers
        for number in (int, float):
            try:
                return name, number(value)
            except ValueError:
                pass
    return name, value


_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


def check_value(f: dataclasses.Field, hint: object, value: object) -> None:
    """Raise ValueError naming the parameter when `value` does not fit its annotation and range."""
    name = f.name
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices or isinstance(value, bool):
            raise ValueError(f"parameter {name!r} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"parameter {name!r} must be bool (true or false), got {type(value).__name__} {value!r}")
        return
    # bool is an int subclass, and YAML turns "yes" into True: never accept it for a number.
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = isinstance(value, str) if hint is str else (
        numeric and (hint is float or isinstance(value, int)))
    if not ok:
        hint_name = _TYPE_NAMES.get(hint, str(hint))
        fix = ""
        if hint is float and isinstance(value, str):
            fix = " (YAML reads a number like 2e-5 without a decimal point as text: write 2.0e-5)"
        raise ValueError(f"parameter {name!r} must be {hint_name}, got {type(value).__name__} {value!r}{fix}")
    if hint is str:
        if not value.strip():
            raise ValueError(f"parameter {name!r} must not be empty")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if low is not None and value < low:
        raise ValueError(f"parameter {name!r} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"parameter {name!r} must be <= {high}, got {value!r}")


# A parameter's value is a literal (papermill injects literals); modules, classes, functions and the
# objects the notebook's later cells bind are not parameters.
_LITERAL_TYPES = (str, int, float, bool, list, type(None))


def collect_parameters(namespace: dict) -> dict:
    """The notebook's parameters: its top-level literal values, minus the kernel's own names.

    A literal under an unknown name (a typo in the cell, `-p max_stpes 10`) is kept, so that
    validation names it.
    """
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and name not in _KERNEL_NAMES and isinstance(value, _LITERAL_TYPES)
    }
