"""Pre-flight snapshots of the code, the software environment and the GPU."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils import collect_env

from lib.config import REPO_ROOT
from lib.evidence import write_text

# Every distribution the run imports, directly or through transformers' Trainer.
PACKAGES = (
    "torch", "transformers", "tokenizers", "accelerate", "datasets", "safetensors",
    "huggingface_hub", "numpy", "pandas", "matplotlib", "papermill", "nbconvert",
    "nbclient", "ipykernel", "nbval", "pytest", "PyYAML",
)


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    """Output of a command, or None when it is absent or fails (a snapshot never raises)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def describe_repository() -> dict:
    """Commit and working-tree state of the repository the run executes from."""
    sha = _run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT)
    status = _run(["git", "status", "--porcelain"], cwd=REPO_ROOT)
    return {
        "commit": sha or "unknown (not a git checkout)",
        "dirty": None if status is None else bool(status),
        "status": status or "",
    }


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _memory_gib() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return f"{pages / 2**30:.1f} GiB"
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return "unknown"


def write_env_snapshot(run_dir: Path) -> Path:
    """Code, Python, torch/CUDA, packages, OS and hardware, and the resolved config of this run."""
    repo = describe_repository()
    config = (run_dir / "config.json").read_text(encoding="utf-8")  # written by Run.start
    lines = [
        "# Environment snapshot (M44.0 pre-flight)",
        "",
        f"commit: {repo['commit']}",
        f"working tree dirty: {repo['dirty']}",
        *(f"  {line}" for line in repo["status"].splitlines()),
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"torch: {torch.__version__}",
        f"torch.version.cuda: {torch.version.cuda}",
        f"cudnn: {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}",
        f"os: {platform.platform()}",
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        f"ram: {_memory_gib()}",
        "",
        "## packages",
        *(f"{name}=={version}" for name, version in _package_versions().items()),
        "",
        "## resolved config (config.json)",
        config.rstrip(),
        "",
        "## torch.utils.collect_env",
        collect_env.get_pretty_env_info(),
        "",
    ]
    return write_text(run_dir / "env_snapshot.txt", "\n".join(lines))


def write_gpu_snapshot(run_dir: Path) -> Path:
    smi = _run(["nvidia-smi"])
    query = _run([
        "nvidia-smi",
        "--query-gpu=name,memory.total,memory.free,driver_version,compute_cap",
        "--format=csv",
    ])
    lines = ["# GPU snapshot (M44.0 pre-flight)", ""]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(
                f"torch device {i}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                f"compute capability {props.major}.{props.minor}"
            )
        lines.append(f"torch build architectures: {' '.join(torch.cuda.get_arch_list())}")
    else:
        lines.append("No CUDA device is visible to torch (torch.cuda.is_available() is False).")
    lines += ["", "## nvidia-smi --query-gpu", query or "nvidia-smi query unavailable on this machine"]
    lines += ["", "## nvidia-smi", smi or "nvidia-smi not found or failed: no NVIDIA driver on this machine"]
    return write_text(run_dir / "gpu_snapshot.txt", "\n".join(lines) + "\n")
