"""Shared fixtures: the notebook's default parameters and small valid configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lib.config import REPO_ROOT, RunConfig
from lib.execute import NOTEBOOK, notebook_defaults


def profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "params" / f"{name}.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def official_params() -> dict:
    return notebook_defaults()


@pytest.fixture
def embedded_cfg(official_params, tmp_path: Path) -> RunConfig:
    params = {**official_params, **profile("embedded"), "run_dir": str(tmp_path / "run")}
    return RunConfig.from_parameters(params)


def replace(cfg: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(cfg, **changes)
