"""The run's parameters: collected from the notebook, validated once, frozen."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Names IPython puts in a kernel's namespace; everything else at the top level of the
# notebook before the config cell is a parameter.
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _choices(*values: str) -> dict:
    return {"choices": values}


def _at_least(low: float) -> dict:
    return {"min": low}


def _between(low: float, high: float) -> dict:
    return {"min": low, "max": high}


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one M44 run. Defaults live in the notebook's parameters cell."""

    # model
    model_name: str  # hub id, local model folder, "embedded", or "gemma-3-270m-gguf" (lib/gguf_model.py)
    device: str = field(metadata=_choices("cuda", "cpu"))
    dtype: str = field(metadata=_choices("bfloat16", "float32"))
    attn_implementation: str = field(metadata=_choices("eager", "sdpa"))
    # data
    train_file: str
    eval_file: str
    max_seq_length: int = field(metadata=_at_least(16))
    # training
    seed: int = field(metadata=_at_least(0))
    max_steps: int = field(metadata=_at_least(1))
    batch_size: int = field(metadata=_at_least(1))
    gradient_accumulation_steps: int = field(metadata=_at_least(1))
    optimizer: str = field(metadata=_choices("adafactor", "adamw_torch"))
    learning_rate: float = field(metadata=_between(0.0, 1.0))
    lr_scheduler: str = field(metadata=_choices("constant", "linear", "cosine"))
    warmup_ratio: float = field(metadata=_between(0.0, 0.5))
    weight_decay: float = field(metadata=_between(0.0, 1.0))
    max_grad_norm: float = field(metadata=_at_least(0.0))
    logging_steps: int = field(metadata=_at_least(1))
    # evaluation
    eval_batch_size: int = field(metadata=_at_least(1))
    max_new_tokens: int = field(metadata=_at_least(1))
    # where the evidence goes
    run_dir: str

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if self.device == "cpu" and self.dtype == "bfloat16":
            raise ValueError(
                "parameter 'dtype': bfloat16 training on the CPU is slow and imprecise; "
                "use dtype: float32 with device: cpu"
            )

    @classmethod
    def from_parameters(cls, params: dict) -> RunConfig:
        """Build from a name -> value mapping, rejecting unknown and missing names."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"known parameters: {', '.join(sorted(names))}"
            )
        missing = sorted(names - set(params))
        if missing:
            raise ValueError(f"missing parameter(s): {', '.join(map(repr, missing))}")
        return cls(**params)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Hash of the resolved parameters, stable across runs and platforms."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, name: str) -> Path:
        """A path parameter resolved against the repository root (the notebook's cwd varies)."""
        p = Path(getattr(self, name))
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def uses_embedded_model(self) -> bool:
        return self.model_name == "embedded"


def _check_field(f: dataclasses.Field, value: object) -> None:
    expected = {"str": str, "int": int, "float": float}[f.type]
    # bool is an int subclass, and YAML turns "yes" into True: never accept it for a number.
    ok = isinstance(value, expected) and not isinstance(value, bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(
            f"parameter {f.name!r} must be {f.type}, got {type(value).__name__} {value!r}"
        )
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(
            f"parameter {f.name!r} must be one of {', '.join(meta['choices'])}, got {value!r}"
        )
    if "min" in meta and value < meta["min"]:
        raise ValueError(f"parameter {f.name!r} must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ValueError(f"parameter {f.name!r} must be <= {meta['max']}, got {value!r}")
    if expected is str and not value.strip():
        raise ValueError(f"parameter {f.name!r} must not be empty")


def collect_parameters(namespace: dict) -> dict:
    """The notebook's parameters: its top-level names so far, minus the kernel's own."""
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _KERNEL_NAMES
        and not isinstance(value, types.ModuleType)
    }
