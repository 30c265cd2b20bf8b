"""Shared fixtures: the notebook's default parameters and small valid configs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import REPO_ROOT, RunConfig, default_parameters, load_config
from lib.execute import NOTEBOOK


def profile(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "params" / f"{name}.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def official_params() -> dict:
    return default_parameters()


@pytest.fixture
def embedded_cfg(official_params, tmp_path: Path) -> RunConfig:
    return load_config(REPO_ROOT / "params" / "embedded.yaml", {"run_dir": str(tmp_path / "run")})


# make test runs two pytest-xdist processes on this project's 2-core machines: one torch thread in each
# (inherited by every kernel and worker they start), or torch's thread pools oversubscribe the cores and
# the notebook tests run several times slower (measured: the demo's 1,500 steps took 8 min instead of 1).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def replace(cfg: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The main command exactly as `make demo` runs it, into a fresh folder outside the repository.

    Session-scoped: the notebook and report tests read the same real embedded-default run.
    """
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lib.execute", "--params", "params/embedded.yaml", "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir, done
