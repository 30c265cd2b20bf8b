"""A params/ profile by name, as the benchmarks use it: lib.config's one loader, nothing else."""

from __future__ import annotations

from pathlib import Path

from lib.config import PROFILES, RunConfig, load_config, read_profile
from lib.model_builder import build_model_from_config, model_config_path


def load_profile(name: str) -> dict:
    return read_profile(PROFILES / f"{name}.yaml")


def run_config(profile: str, **changes) -> RunConfig:
    """params/<profile>.yaml over the defaults, then `changes`: validated as a run's parameters are."""
    return load_config(PROFILES / f"{profile}.yaml", changes)


def build_embedded(traces: list[dict], seed: int, out_dir: Path) -> Path:
    """The embedded profile's model (float32, as it trains) and its tokenizer in `out_dir`, as pre-flight builds it."""
    return build_model_from_config(model_config_path("embedded"), traces, seed, "float32", out_dir)
