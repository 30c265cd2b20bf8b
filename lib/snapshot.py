"""Pre-flight snapshots of the code, the software environment and the GPU."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

import psutil
import torch
from torch.utils import collect_env

from lib.config import display_path, without_local_paths
from lib.contract import CONFIG, ENV_SNAPSHOT, GPU_SNAPSHOT
from lib.evidence import write_text
from lib.keep_awake import KEEP_AWAKE_ENV
from lib.launcher import backend
from lib.nvml import describe_nvml
from lib.redaction import REDACTED, secret_env_names
from lib.repository import command_output, describe_repository
from lib.units import GIB

# Every distribution the run imports, directly or through transformers' Trainer.
PACKAGES = (
    "torch", "transformers", "tokenizers", "accelerate", "datasets", "safetensors",
    "huggingface_hub", "numpy", "pandas", "matplotlib", "papermill", "nbconvert",
    "nbclient", "ipykernel", "nbval", "pytest", "PyYAML",
)


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# Environment variables that change what the run does (caches, devices, threads, offline mode).
_ENV_PREFIXES = ("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "CUDA_", "PYTORCH_", "TORCH_", "NCCL_", "OMP_", "MKL_")


def _environment_variables() -> list[str]:
    secret = set(secret_env_names())
    names = sorted(n for n in os.environ if n.startswith(_ENV_PREFIXES) or n in secret)
    return [f"{n}={REDACTED if n in secret else os.environ[n]}" for n in names] or ["(none set)"]


def _memory_gib() -> str:
    memory = psutil.virtual_memory()
    return f"{memory.total / GIB:.1f} GiB total, {memory.available / GIB:.1f} GiB available"


def _collect_env() -> str:
    try:
        return collect_env.get_pretty_env_info()
    except Exception as exc:  # e.g. a broken CUDA install: the snapshot says so and goes on
        return f"collect_env failed: {type(exc).__name__}: {exc}"


def write_env_snapshot(run_dir: Path) -> Path:
    """Code, Python, torch/CUDA, packages, OS and hardware, and the resolved config of this run."""
    repo = describe_repository(run_dir)
    config = (run_dir / CONFIG).read_text(encoding="utf-8")  # written by Run.start
    lines = [
        "# Environment snapshot (M44.0 pre-flight)",
        "",
        f"commit: {repo['commit']}",
        f"working tree dirty: {repo['dirty']} (ignored paths marked !!; the run folder left out)",
        *(f"  {line}" for line in repo["status"].splitlines()),
        f"python: {sys.version.split()[0]} ({display_path(sys.executable)})",
        f"torch: {torch.__version__}",
        f"torch.version.cuda: {torch.version.cuda}",
        f"cudnn: {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}",
        f"os: {platform.platform()}",
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        f"ram: {_memory_gib()}",
        f"keep awake: {os.environ.get(KEEP_AWAKE_ENV, 'not requested (a run started without lib.execute)')}",
        *_processes_lines(config),
        "",
        "## environment variables (credentials: set or not; their values never appear)",
        *_environment_variables(),
        "",
        "## packages",
        *(f"{name}=={version}" for name, version in _package_versions().items()),
        "",
        "## resolved config (config.json)",
        config.rstrip(),
        "",
        "## torch.utils.collect_env",
        _collect_env(),
        "",
    ]
    return write_text(run_dir / ENV_SNAPSHOT, "\n".join(lines))


def _processes_lines(config: str) -> list[str]:
    """With several processes, the line that states them: world size, backend, sharding and each rank's device.

    From the parameters (config.json), as planned before the start; training_metrics.json records them as run.
    """
    parameters = json.loads(config).get("parameters", {})
    n = parameters.get("num_processes", 1)
    if not isinstance(n, int) or n == 1:  # one process, or parameters that failed validation
        return []
    device = parameters["device"]
    ranks = ", ".join(f"rank {r} on {f'cuda:{r}' if device == 'cuda' else 'cpu'}" for r in range(n))
    return [f"processes: {n} (torchrun), backend {backend(device)}, sharding {parameters['sharding']}; {ranks}"]


def append_model_provenance(run_dir: Path, model_dir: Path) -> None:
    """Add a model folder's PROVENANCE.md (where the weights came from, their terms) to env_snapshot.txt.

    Pre-flight calls it once the model is resolved, which is after the snapshot was written.
    """
    provenance = model_dir / "PROVENANCE.md"
    snapshot = run_dir / ENV_SNAPSHOT
    if provenance.is_file() and snapshot.is_file():
        text = snapshot.read_text(encoding="utf-8").rstrip("\n")
        text_of = without_local_paths(provenance.read_text(encoding="utf-8"))  # written into a cache: full paths
        section = f"## model provenance ({display_path(provenance)})\n\n{text_of}"
        write_text(snapshot, f"{text}\n\n{section}")


def nvidia_gpus() -> list[str]:
    """The NVIDIA GPUs the driver lists (`nvidia-smi -L`), whatever torch build is installed; [] without a driver."""
    listed = command_output(["nvidia-smi", "-L"]) or ""
    return [line.split(": ", 1)[1].split(" (UUID")[0] for line in listed.splitlines() if line.startswith("GPU ")]


def write_gpu_snapshot(run_dir: Path) -> Path:
    smi = command_output(["nvidia-smi"])
    query = command_output([
        "nvidia-smi",
        "--query-gpu=name,memory.total,memory.free,driver_version,compute_cap",
        "--format=csv",
    ])
    lines = ["# GPU snapshot (M44.0 pre-flight)", ""]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(
                f"torch device {i}: {props.name}, {props.total_memory / GIB:.1f} GiB, "
                f"compute capability {props.major}.{props.minor}"
            )
        lines.append(f"torch build architectures: {' '.join(torch.cuda.get_arch_list())}")
    else:
        lines.append("No CUDA device is visible to torch (torch.cuda.is_available() is False).")
    # What the system metrics (lib/telemetry.py) can read here: the driver and its GPUs, or "no NVIDIA GPU".
    lines.append(f"NVML: {describe_nvml()}")
    lines += _processes_lines((run_dir / CONFIG).read_text(encoding="utf-8"))
    lines += ["", "## nvidia-smi --query-gpu", query or "nvidia-smi query unavailable on this machine"]
    lines += ["", "## nvidia-smi", smi or "nvidia-smi not found or failed: no NVIDIA driver on this machine"]
    return write_text(run_dir / GPU_SNAPSHOT, "\n".join(lines) + "\n")
