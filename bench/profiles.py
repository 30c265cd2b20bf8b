"""A params/ profile by name, as the benchmarks use it: lib.config's one loader, nothing else."""

from __future__ import annotations

from lib.config import PROFILES, RunConfig, load_config, read_profile


def load_profile(name: str) -> dict:
    return read_profile(PROFILES / f"{name}.yaml")


def run_config(profile: str, **changes) -> RunConfig:
    """params/<profile>.yaml over the defaults, then `changes`: validated as a run's parameters are."""
    return load_config(PROFILES / f"{profile}.yaml", changes)
