"""M44.0: snapshot everything, then check all the one shot needs before spending it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import huggingface_hub
import psutil
import torch
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from lib import gguf_model
from lib.config import RunConfig
from lib.data import check_datasets, load_eval, load_traces
from lib.embedded import build_embedded_model
from lib.modeling import load_tokenizer
from lib.render import IGNORE_INDEX, encode_traces
from lib.resources import GIB, estimate_training_memory
from lib.snapshot import append_model_provenance, write_env_snapshot, write_gpu_snapshot

BASE_MODEL_DIR = "base_model"  # where the embedded model is built, inside the run folder


@dataclass(frozen=True)
class Prepared:
    """Everything the later phases take from pre-flight."""

    traces: list[dict]
    eval_items: list[dict]
    model_source: str  # a hub id or a local folder, loaded the same way either way


def run_preflight(cfg: RunConfig, run_dir: Path) -> Prepared:
    """Write the snapshots, run every check, print a pass/fail table, and raise if any failed."""
    write_env_snapshot(run_dir)
    write_gpu_snapshot(run_dir)

    found: dict = {}
    checks: list[tuple[str, Callable[[], str]]] = [
        ("device", lambda: _check_device(cfg)),
        ("CUDA architecture", lambda: _check_cuda_arch(cfg)),
        ("training data", lambda: _load(found, "traces", load_traces, cfg.path("train_file"))),
        ("eval data", lambda: _load(found, "eval_items", load_eval, cfg.path("eval_file"))),
        ("train/eval overlap", lambda: _check_overlap(found)),
        ("model access", lambda: _resolve_model(found, cfg, run_dir)),
        ("sequence length", lambda: _encode(found, cfg)),
        ("memory", lambda: _check_memory(found, cfg)),
        ("disk space", lambda: _check_disk(found, run_dir)),
        ("run folder", lambda: _check_run_folder(run_dir)),
    ]
    failures = []
    for name, check in checks:
        try:
            detail, ok = check(), True
        except Exception as exc:  # each check reports; the phase fails after all have run
            detail, ok = f"{type(exc).__name__}: {exc}", False
            failures.append(f"{name}: {detail}")
        print(f"[{'PASS' if ok else 'FAIL'}] {name:<20} {detail}", flush=True)
    if failures:
        raise RuntimeError("pre-flight failed: " + "; ".join(failures))
    return Prepared(**{k: found[k] for k in ("traces", "eval_items", "model_source")})


def _check_device(cfg: RunConfig) -> str:
    if cfg.device == "cpu":
        return "CPU run (device: cpu)"
    if not torch.cuda.is_available():
        # Never fall back to the CPU: the official run is defined on the GPU.
        raise RuntimeError("no CUDA device found, and device is 'cuda'; there is no CPU fallback")
    return torch.cuda.get_device_name(0)


def cuda_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build with `arch_list` runs kernels on a device of `capability`.

    A cubin built for sm_XY runs on devices X.Y' with Y' >= Y (same major); PTX for compute_XY
    is compiled on the fly for any later device. The RTX 5090 (12.0) needs sm_120 or PTX <= 120.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        arch_major, arch_minor = int(number[:-1]), int(number[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def _check_cuda_arch(cfg: RunConfig) -> str:
    if cfg.device == "cpu":
        return "not needed (device: cpu)"
    if not torch.cuda.is_available():
        raise RuntimeError("not checked: no CUDA device")
    capability, archs = torch.cuda.get_device_capability(0), torch.cuda.get_arch_list()
    sm = f"sm_{capability[0]}{capability[1]}"
    if not cuda_arch_supported(capability, archs):
        raise RuntimeError(
            f"the device is {sm}, which this torch build ({torch.__version__}, CUDA {torch.version.cuda}) "
            f"has no kernels for (built for {' '.join(archs)}); install a build that lists it "
            "(the RTX 5090 needs a cu128 or newer wheel: see README)"
        )
    return f"{sm} is in the torch build's list ({' '.join(archs)})"


def _load(found: dict, key: str, loader: Callable, path: Path) -> str:
    found[key] = loader(path)
    return f"{len(found[key])} records from {path.name}"


def _check_overlap(found: dict) -> str:
    if "traces" not in found or "eval_items" not in found:
        raise RuntimeError("not checked: a data file did not load")
    problems = check_datasets(found["traces"], found["eval_items"])
    if problems:
        raise ValueError("; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return "no duplicate prompts, no eval prompt in training"


def _resolve_model(found: dict, cfg: RunConfig, run_dir: Path) -> str:
    """The embedded model is built here; a local folder must exist; a hub model must be reachable."""
    if cfg.uses_embedded_model:
        if "traces" not in found:
            raise RuntimeError("not built: the embedded tokenizer is trained on the training data")
        found["model_source"] = str(build_embedded_model(found["traces"], cfg.seed, run_dir / BASE_MODEL_DIR))
        return f"embedded model built in {BASE_MODEL_DIR}/"
    if cfg.model_name == gguf_model.MODEL_NAME:
        # Converted once into a cache outside the repository; fails with how to install the package.
        folder = gguf_model.materialise()
        found["model_source"] = str(folder)
        append_model_provenance(run_dir, folder)
        return gguf_model.describe(folder)
    local = Path(cfg.model_name)
    if local.is_dir():
        found["model_source"] = str(local)
        return f"local folder {local}"
    detail = _check_hub_access(cfg.model_name)
    found["model_source"] = cfg.model_name
    return detail


def _check_hub_access(repo_id: str) -> str:
    """Credentials present and the (gated) model reachable with them, or already in the local cache."""
    cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    token = huggingface_hub.get_token()  # HF_TOKEN, or the token `hf auth login` stored
    if token is None:
        if isinstance(cached, str):
            return f"no Hugging Face token, but {repo_id} is in the local cache"
        raise RuntimeError(
            f"no Hugging Face credentials: set HF_TOKEN or run `hf auth login`, and accept the "
            f"license on the model page of {repo_id} (or set model_name to a local model folder)"
        )
    try:
        info = huggingface_hub.model_info(repo_id, token=token)
    except GatedRepoError:
        raise RuntimeError(f"the token has no access to the gated {repo_id}: accept its license on the hub") from None
    except RepositoryNotFoundError:
        raise RuntimeError(f"no model {repo_id} on the hub (or the token cannot see it)") from None
    except Exception as exc:  # offline, proxy, outage: the weights may still be cached
        if isinstance(cached, str):
            return f"hub unreachable ({type(exc).__name__}), but {repo_id} is in the local cache"
        raise RuntimeError(f"{repo_id} is neither reachable ({type(exc).__name__}: {exc}) nor cached") from None
    return f"hub model {repo_id} reachable with the token (revision {info.sha})"


def _encode(found: dict, cfg: RunConfig) -> str:
    if "model_source" not in found or "traces" not in found:
        raise RuntimeError("not checked: no model source or no training data")
    tokenizer = load_tokenizer(found["model_source"])
    # The worker encodes the same way for training; here every record must fit, untruncated.
    examples = encode_traces(found["traces"], tokenizer, cfg.max_seq_length)
    longest = max(len(e["input_ids"]) for e in examples)
    found["loss_tokens"] = max(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    return (f"longest record {longest} tokens <= max_seq_length {cfg.max_seq_length}; "
            f"longest response {found['loss_tokens']} tokens")


def _check_memory(found: dict, cfg: RunConfig) -> str:
    if "model_source" not in found:
        raise RuntimeError("not checked: no model source")
    footprint = estimate_training_memory(found["model_source"], cfg, found.get("loss_tokens"))
    found["footprint"] = footprint
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"not checked: no CUDA device (estimate {footprint.describe()})")
        free, total = torch.cuda.mem_get_info(0)
        where = f"free GPU memory {free / GIB:.1f} of {total / GIB:.1f} GiB"
    else:
        free = psutil.virtual_memory().available
        where = f"available RAM {free / GIB:.1f} GiB"
    if footprint.total > free:
        raise RuntimeError(
            f"training needs about {footprint.total / GIB:.1f} GiB ({footprint.describe()}), more than the "
            f"{where}: lower batch_size or max_seq_length, or free the device"
        )
    return f"estimate {footprint.describe()} fits the {where}"


def _check_disk(found: dict, run_dir: Path) -> str:
    if "footprint" not in found:
        raise RuntimeError("not checked: no size estimate")
    needed = int(found["footprint"].checkpoint * 1.1)  # safetensors headers, tokenizer, config
    free = shutil.disk_usage(run_dir).free
    if needed > free:
        raise RuntimeError(f"the checkpoint needs about {needed / GIB:.2f} GiB, only {free / GIB:.2f} GiB free")
    return f"checkpoint ~{needed / GIB:.2f} GiB, {free / GIB:.1f} GiB free"


def _check_run_folder(run_dir: Path) -> str:
    # Run.start refused a used folder already; this line puts the fact in the table.
    return f"{run_dir.name}/ held no earlier run"
