"""M44.0: snapshot everything, then check all the one shot needs before spending it.

Each check is a function of its inputs, run through a `Checks` table that prints one [PASS], [WARN],
[FAIL] or [SKIP] line per check and records them in preflight.json. [WARN] is a finding that does not
stop the run (repeated training prompts, kept by the data policy). A check whose input could not be had
(a data file did not load, the model could not be resolved) is skipped and says why: the failures are
the root causes, the skips their consequences. The phase fails after all checks have run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil
import torch
from packaging.version import Version

from lib import lora
from lib.config import RunConfig, resolve_path
from lib.console import describe_exception
from lib.contract import DATA_REPORT, PREFLIGHT
from lib.data import (
    CheckResult, DataFile, apply_repeat_policy, check_data, check_eval_items, check_leakage, check_training_prompts,
    load_eval_file, load_trace_file,
)
from lib.evidence import write_json
from lib.launcher import backend
from lib.model_source import ModelSource, resolve_model_source
from lib.model_loading import DTYPES, load_model, load_tokenizer
from lib.prompt_format import check_record_lengths, encode_prompt
from lib.resources import BYTES, Footprint, count_parameters, estimate_training_memory
from lib.repository import UNKNOWN_COMMIT, describe_repository
from lib.run_folder import check_location, is_official, refuse_used_folder
from lib.snapshot import append_model_provenance, nvidia_gpus, write_env_snapshot, write_gpu_snapshot
from lib.units import GIB, format_size

CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # the first CUDA build with sm_120 (RTX 5090) kernels
WINDOWS = sys.platform == "win32"
# bitsandbytes 0.45.3 (February 2025) is the first release whose wheels carry CUDA 12.8 kernels, with sm_120
# (RTX 50xx); requirements-qlora.txt pins a newer one.
BITSANDBYTES_SM120 = "0.45.3"
QLORA_INSTALL = "install the pinned build: pip install -r requirements-qlora.txt (after the CUDA torch, README)"


@dataclass(frozen=True)
class Prepared:
    """Everything the later phases take from pre-flight."""

    model_source: str  # a hub id or a local folder, loaded the same way either way


@dataclass(frozen=True)
class Unavailable:
    """What a failed or skipped check hands on instead of its value; checks that need it are skipped."""

    reason: str


class Checks:
    """Runs checks in order, prints one line each, and keeps them as records for preflight.json."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def run(self, name: str, check: Callable[..., Any], *inputs: Any) -> Any:
        """`check(*inputs)` returns a detail line, (value, detail line), or a lib.data CheckResult.

        The value is returned; a CheckResult's own status (pass, warn or fail) and line are recorded.
        """
        missing = sorted({i.reason for i in inputs if isinstance(i, Unavailable)})
        if missing:
            self._add(name, "skip", f"not checked: {'; '.join(missing)}")
            return Unavailable(f"{name} not checked")
        try:
            result = check(*inputs)
        except Exception as exc:  # each check reports; the phase fails after all have run
            self._add(name, "fail", describe_exception(exc))
            return Unavailable(f"{name} failed")
        if isinstance(result, CheckResult):
            detail = result.detail + "".join(f"\n    {problem}" for problem in result.problems)
            self._add(name, result.status, detail)
            return result if result.ok else Unavailable(f"{name} failed")
        value, detail = result if isinstance(result, tuple) else (None, result)
        self._add(name, "pass", detail)
        return value

    def _add(self, name: str, status: str, detail: str) -> None:
        self.records.append({"name": name, "status": status, "detail": detail})
        print(f"[{status.upper()}] {name:<20} {detail}", flush=True)

    def raise_if_failed(self) -> None:
        """Raise naming the failed checks; their details are each check's own line (the root causes), said once."""
        failed = [r["name"] for r in self.records if r["status"] == "fail"]
        if failed:
            skipped = sum(r["status"] == "skip" for r in self.records)
            raise RuntimeError(f"{len(failed)} pre-flight check{'s' * (len(failed) > 1)} failed ({', '.join(failed)})"
                               + (f"; {skipped} not run as a consequence" if skipped else "")
                               + "; each failed check says what to fix")


def run_preflight(cfg: RunConfig, run_dir: Path, rehearsal_for: Path | None = None) -> Prepared:
    """Write the snapshots, run every check, record the table, and raise if any check failed.

    `rehearsal_for`: the run folder a rehearsal prepares (lib.execute --preflight-only). The checks then
    run in the scratch `run_dir`, the "run folder" check looks at that folder without touching it, and a
    tiny training step on the device shows what only a real start would otherwise reveal.
    """
    write_env_snapshot(run_dir)
    write_gpu_snapshot(run_dir)

    checks = Checks()
    device = checks.run("device", check_device, cfg)
    checks.run("CUDA architecture", check_cuda_arch, cfg, device)
    checks.run("CPU numerics", check_cpu_numerics, cfg)
    checks.run("4-bit quantization", check_quantization, cfg)
    checks.run("repository", check_repository, cfg, run_dir)
    train = checks.run("training data", load_data, load_trace_file, cfg.path("train_file"))
    eval_set = checks.run("eval data", load_data, load_eval_file, cfg.path("eval_file"))
    checks.run("training prompts", check_training_prompts, train, cfg.train_repeats)
    checks.run("eval items", check_eval_items, eval_set)
    checks.run("train/eval leakage", check_leakage, train, eval_set, cfg.eval_leakage)
    kept = checks.run("training records", keep_training_records, cfg, run_dir, train, eval_set)
    # Only the embedded model needs the data (its tokenizer is trained on it); a hub model is checked regardless.
    model = checks.run("model source", resolve_model, cfg, kept if cfg.builds_model else None, run_dir)
    lengths = checks.run("record lengths", record_lengths, cfg, model, kept)
    footprint = checks.run("memory", check_memory, cfg, device, model, lengths)
    checks.run("disk space", check_disk, footprint, rehearsal_for or run_dir)
    if rehearsal_for is None:
        checks.run("run folder", check_run_folder, run_dir)
    else:
        checks.run("run folder", check_target_folder, rehearsal_for)
        checks.run("tiny training step", check_tiny_step, cfg, device, model)
    # The estimate for one device, per component: the training worker records its measured peak beside it.
    estimate = per_device(footprint, cfg, model.source).to_dict() if isinstance(footprint, Footprint) else None
    write_json(run_dir / PREFLIGHT, {"checks": checks.records, "memory_estimate": estimate})
    checks.raise_if_failed()
    return Prepared(model_source=model.source)


def install_command() -> str:
    """The command that replaces this torch by the same version's CUDA 12.8 build, for Linux and for Windows."""
    pip = f"pip install --force-reinstall torch=={torch.__version__.split('+')[0]} --index-url {CUDA_INDEX}"
    return f"Linux: .venv/bin/python -m {pip} ; Windows: .venv\\Scripts\\python -m {pip}"


def check_device(cfg: RunConfig) -> tuple[str, str]:
    n = cfg.num_processes
    if n > 1 and WINDOWS:
        # torchrun on Windows (gloo only, no libuv rendezvous) has not run here yet: refused, not risked.
        raise RuntimeError(f"num_processes is {n}: several processes through torchrun have not been tested on "
                           "Windows (gloo only, no libuv rendezvous); set num_processes: 1, or run on Linux")
    if cfg.device == "cpu":
        if n == 1:
            return "cpu", "CPU run (device: cpu)"
        # More processes than cores is slower, never wrong: stated, not failed.
        return "cpu", (f"CPU run (device: cpu): {n} processes ({backend('cpu')}) on {os.cpu_count()} logical cores "
                       f"(torchrun gives each one thread unless OMP_NUM_THREADS is set)")
    if not torch.cuda.is_available():
        # Never fall back to the CPU: the official run is defined on the GPU. Say why there is none.
        gpus = nvidia_gpus()
        if torch.version.cuda is None and gpus:
            raise RuntimeError(
                f"this torch ({torch.__version__}) is a CPU build, and this machine has an NVIDIA GPU ({gpus[0]}): "
                f"install the CUDA build: {install_command()}")
        if gpus:
            raise RuntimeError(
                f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device although nvidia-smi "
                f"lists {gpus[0]}: the driver may be older than CUDA {torch.version.cuda} needs (nvidia-smi shows "
                "the CUDA version it supports), or CUDA_VISIBLE_DEVICES hides the GPU")
        raise RuntimeError(
            "no CUDA device found, and device is 'cuda' (there is no CPU fallback): check that `nvidia-smi` lists the "
            "GPU (no driver: install NVIDIA's), that this torch is a CUDA build (`python -c \"import torch; "
            f"print(torch.version.cuda)\"` prints a version, not None: {install_command()}), and that "
            "CUDA_VISIBLE_DEVICES does not hide the GPU")
    visible = torch.cuda.device_count()
    if visible < n:
        raise RuntimeError(
            f"num_processes is {n}, one per GPU, but {visible} CUDA device(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): lower num_processes "
            "or make more devices visible"
        )
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    build = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if n == 1:
        return names[0], f"{names[0]} ({build})"
    return names[0], f"{n} processes ({backend('cuda')}, {build}), one per device: " + ", ".join(
        f"rank {i} cuda:{i} {name}" for i, name in enumerate(names))


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


def check_cuda_arch(cfg: RunConfig, device: str) -> str:
    if cfg.device == "cpu":
        return "not needed (device: cpu)"
    capabilities = {f"cuda:{i}": torch.cuda.get_device_capability(i) for i in range(cfg.num_processes)}
    if len(set(capabilities.values())) > 1:
        # The ranks step in lockstep: the slowest device sets the pace, and kernels and numerics differ.
        raise RuntimeError(
            "the devices are of different architectures ("
            + ", ".join(f"{d} sm_{c[0]}{c[1]}" for d, c in capabilities.items())
            + "): make devices of one kind visible with CUDA_VISIBLE_DEVICES"
        )
    capability, archs = capabilities["cuda:0"], torch.cuda.get_arch_list()
    sm = f"sm_{capability[0]}{capability[1]}"
    if not cuda_arch_supported(capability, archs):
        raise RuntimeError(
            f"the device is {sm}, which this torch build ({torch.__version__}, CUDA {torch.version.cuda}) "
            f"has no kernels for (built for {' '.join(archs)}); install a build that lists it "
            f"(the RTX 5090 needs a cu128 or newer wheel): {install_command()}"
        )
    return f"{sm} is in the torch build's list ({' '.join(archs)})"


def check_repository(cfg: RunConfig, run_dir: Path) -> CheckResult:
    """The commit the evidence names and the state the repository guard compares: git must be able to tell them."""
    repository = describe_repository(run_dir)
    if repository["commit"] != UNKNOWN_COMMIT:
        state = "with uncommitted changes (recorded)" if repository["dirty"] else "no uncommitted changes"
        return CheckResult("repository", "pass", f"commit {repository['commit'][:12]}, {state}", {})
    why = ("git cannot name the commit (git is not on PATH, or this is not a git checkout): the evidence could not say "
           "which code ran, and the repository guard could not see a change outside the run folder")
    if is_official(resolve_path(cfg.run_dir)):
        return CheckResult("repository", "fail", f"{why}; an official run needs both: install Git (on Windows Git for "
                           "Windows, with git on PATH) and run from a clone of the repository", {})
    return CheckResult("repository", "warn", f"{why} (an official run would fail here)", {})


def check_cpu_numerics(cfg: RunConfig) -> CheckResult:
    """Whether a CPU run's numbers will be the same on other machines (parameter cpu_numerics; lib/launcher.py)."""
    if cfg.device != "cpu":
        return CheckResult("CPU numerics", "pass", "not used (device: cuda): the numbers are this GPU's", {})
    capability = torch.backends.cpu.get_cpu_capability()
    if cfg.cpu_numerics == "native":
        return CheckResult("CPU numerics", "pass", f"native: {torch.get_num_threads()} threads, {capability} kernels; "
                           "another machine or thread count may give slightly other numbers", {})
    if capability not in ("AVX2", "AVX512"):  # not an x86-64 CPU with AVX2
        return CheckResult("CPU numerics", "warn", f"portable asked for, but this CPU has no AVX2 ({capability}): the "
                           "workers run its own kernels, and its numbers may differ from other machines'", {})
    return CheckResult("CPU numerics", "pass", "portable: the workers run one thread, torch's AVX2 kernels (this CPU: "
                       f"{capability}) and MKL's compatible path, so that other x86-64 machines give the same numbers",
                       {})


def check_quantization(cfg: RunConfig) -> str:
    """finetune: qlora quantizes the base through bitsandbytes's CUDA kernels: a CUDA device, the package, and a
    build with kernels for the device's architecture, shown by quantizing and dequantizing a small tensor on it."""
    if cfg.finetune != "qlora":
        return f"not needed (finetune: {cfg.finetune})"
    if not torch.cuda.is_available():
        raise RuntimeError("finetune: qlora needs a CUDA GPU: bitsandbytes quantizes to 4-bit with CUDA kernels, and "
                           "no CUDA device was found; use finetune: lora on this machine, or run on a GPU")
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional
    except ImportError:
        raise RuntimeError(f"finetune: qlora needs bitsandbytes, which is not installed: {QLORA_INSTALL}") from None
    capability = torch.cuda.get_device_capability(0)
    if problem := bitsandbytes_problem(bitsandbytes.__version__, capability):
        raise RuntimeError(problem)
    sm = f"sm_{capability[0]}{capability[1]}"
    try:
        weights = torch.randn(64, 64, device="cuda", dtype=DTYPES[cfg.dtype])
        packed, state = bnb_functional.quantize_4bit(weights, quant_type=lora.QUANT_TYPE)
        error = (bnb_functional.dequantize_4bit(packed, state) - weights).abs().max().item()
    except Exception as exc:  # "no kernel image is available for execution on the device", a missing library
        raise RuntimeError(f"bitsandbytes {bitsandbytes.__version__} cannot quantize on this GPU ({sm}): "
                           f"{type(exc).__name__}: {exc}; {QLORA_INSTALL}") from None
    if not error < 1.0:  # NF4 of N(0, 1) values is off by at most ~0.3; more means broken kernels
        raise RuntimeError(f"bitsandbytes {bitsandbytes.__version__} on {sm}: NF4 round trip off by {error:.3g}; "
                           f"{QLORA_INSTALL}")
    return f"bitsandbytes {bitsandbytes.__version__}: NF4 quantize and dequantize ran on {sm} (error {error:.3f})"


def bitsandbytes_problem(version: str, capability: tuple[int, int]) -> str | None:
    """Why this bitsandbytes version has no kernels for a device of `capability`; None when it has."""
    if capability >= (12, 0) and Version(version) < Version(BITSANDBYTES_SM120):
        return (f"bitsandbytes {version} has no kernels for this GPU (sm_{capability[0]}{capability[1]}, Blackwell): "
                f"{BITSANDBYTES_SM120} is the first release with them; {QLORA_INSTALL}")
    return None


def load_data(loader: Callable[[Path], DataFile], path: Path) -> tuple[DataFile, str]:
    data = loader(path)  # a malformed, empty or non-UTF-8 file raises, naming file and line
    return data, f"{len(data.records)} records from {path.name} (sha256 {data.sha256[:12]})"


def keep_training_records(cfg: RunConfig, run_dir: Path, train: DataFile, eval_set: DataFile) -> tuple[DataFile, str]:
    """The records training will use under the repeat policy; data_report.json records every finding."""
    report = check_data(train, eval_set, cfg.train_repeats, cfg.eval_leakage)
    write_json(run_dir / DATA_REPORT, report.to_dict())
    kept, dropped = apply_repeat_policy(train, cfg.train_repeats)
    note = f", {len(dropped)} later repeats dropped (train_repeats: drop)" if dropped else ""
    return kept, f"{len(kept.records)} of {len(train.records)} records{note}; {report.summary()} ({DATA_REPORT})"


def resolve_model(cfg: RunConfig, kept: DataFile | None, run_dir: Path) -> tuple[ModelSource, str]:
    model = resolve_model_source(cfg, kept.records if kept else [], run_dir)
    if model.provenance_dir is not None:
        append_model_provenance(run_dir, model.provenance_dir)
    return model, model.detail


def record_lengths(cfg: RunConfig, model: ModelSource, kept: DataFile) -> CheckResult:
    """Every record within max_seq_length under the model's tokenizer (lib.prompt_format.check_record_lengths)."""
    return check_record_lengths(kept, load_tokenizer(model.source), cfg.max_seq_length)[0]


def check_memory(cfg: RunConfig, device: str, model: ModelSource, lengths: CheckResult) -> tuple[Footprint, str]:
    """The estimate for one device against every device's free memory; returns the whole model's footprint (disk)."""
    added = len(lora.added_rows(model.source, load_tokenizer(model.source))) if cfg.trains_adapter else 0
    footprint = estimate_training_memory(model.source, cfg, lengths.counts["longest_response_tokens"],
                                         lengths.counts["longest_tokens"], added)
    each = per_device(footprint, cfg, model.source)
    n = cfg.num_processes
    if cfg.device == "cuda":
        free_by_device = {f"cuda:{i}": torch.cuda.mem_get_info(i) for i in range(n)}
        lacking = [name for name, (free, _) in free_by_device.items() if each.total > free]
        where = "free GPU memory " + ", ".join(
            (f"{name} " if n > 1 else "") + f"{free / GIB:.1f} of {total / GIB:.1f} GiB"
            for name, (free, total) in free_by_device.items())
    else:
        # Every process on this machine holds its own copy: n times the estimate from one RAM.
        free = psutil.virtual_memory().available
        lacking = ["RAM"] if each.total * n > free else []
        where = f"available RAM {free / GIB:.1f} GiB" + (f" for {n} processes" if n > 1 else "")
    described = each.describe() + (" per process" if n > 1 else "") + (
        f" (FSDP: weights, gradients and optimizer state sharded {n} ways)" if cfg.sharding == "fsdp" else "")
    if lacking:
        raise RuntimeError(
            f"training needs about {each.total / GIB:.1f} GiB ({described}), more than the {where}"
            + (f" (short: {', '.join(lacking)})" if n > 1 else "")
            + ": lower batch_size or max_seq_length, or free the device"
        )
    return footprint, f"estimate {described} fits the {where}"


def per_device(footprint: Footprint, cfg: RunConfig, model_source: str) -> Footprint:
    """What one device holds: everything under DDP. Under FSDP 1/n of the weights, gradients and optimizer
    state, plus the unit gathered in full for its forward and backward, whose largest is the (tied)
    embedding, vocabulary x hidden; the activations are each rank's own, unchanged."""
    if cfg.sharding != "fsdp":
        return footprint
    n = cfg.num_processes
    _, config = count_parameters(model_source)
    text = getattr(config, "text_config", config)
    gathered = text.vocab_size * text.hidden_size * BYTES[cfg.dtype]
    return dataclasses.replace(footprint, weights=footprint.weights // n + gathered,
                               gradients=footprint.gradients // n + gathered, optimizer=footprint.optimizer // n)


def check_disk(footprint: Footprint, run_dir: Path) -> str:
    needed = int(footprint.saved * 1.1)  # safetensors headers, tokenizer, config
    free = shutil.disk_usage(next(p for p in (run_dir, *run_dir.parents) if p.exists())).free  # a rehearsal's target may not exist yet
    if needed > free:
        raise RuntimeError(f"the checkpoint needs about {format_size(needed)}, only {format_size(free)} free "
                           f"on the drive of {run_dir}: free space or choose a run_dir on another drive")
    return f"checkpoint about {format_size(needed)}, {format_size(free)} free"


def check_run_folder(run_dir: Path) -> str:
    # Run.start refused a used folder already; this line puts the fact in the table.
    return f"{run_dir.name}/ held no earlier run"


def check_target_folder(run_dir: Path) -> str:
    """The folder a rehearsal prepares: allowed, unused, and its parent writable; nothing is created or claimed."""
    check_location(run_dir)
    refuse_used_folder(run_dir)
    parent = next(p for p in run_dir.parents if p.exists())
    with tempfile.TemporaryFile(dir=parent):  # write access where the run creates its folder; the folder itself
        pass                                  # is never written: an existing one is asked, not probed
    if run_dir.exists() and not os.access(run_dir, os.W_OK):
        raise PermissionError(f"{run_dir} exists but is not writable: the run could not write its evidence there")
    state = "exists, empty" if run_dir.exists() else "does not exist yet"
    return f"{run_dir} {state}: free for the run, and {parent} is writable (nothing was created or claimed)"


def check_tiny_step(cfg: RunConfig, device: str, model: ModelSource) -> str:
    """One forward and backward pass of the resolved model on the device, in the run's dtype, on a few tokens."""
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model.source)
    network = load_model(model.source, cfg, tokenizer)
    if cfg.trains_adapter:  # as the training worker wraps it: a frozen base alone has nothing to backpropagate to
        network = lora.add_adapter(network, cfg, lora.added_rows(model.source, tokenizer))
    ids = torch.tensor([encode_prompt("What is 2 + 2?", tokenizer)], device=cfg.device)
    loss = network(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss of a tiny step is {loss.item()} on {cfg.device} in {cfg.dtype}")
    del network
    return (f"forward and backward on {ids.shape[1]} tokens, {cfg.device} {cfg.dtype}: loss {loss.item():.3f} "
            f"({time.perf_counter() - t0:.1f} s with loading; python {sys.version.split()[0]})")
