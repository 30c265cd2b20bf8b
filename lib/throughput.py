"""Training throughput evidence: peak memory, the device's matmul peak, model FLOPs utilisation.

Tokens are counted by the Trainer itself (`include_num_input_tokens_seen="non_padding"`); this
module turns counts and wall time into the numbers the metrics file and the benchmark report.
The matmuls run as training runs them (lib/cpu_bfloat16.py on a CPU without bfloat16 kernels).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from lib.cpu_bfloat16 import bfloat16_matmuls, needs_float32_gemm

# Matrix sizes for the peak measurement: big enough to run near the device's best matmul rate,
# small enough that the measurement stays well under a second.
PEAK_MATMUL_SIZE = {"cuda": 8192, "cpu": 1024}
PEAK_BUDGET_S = 0.3
LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class Peak:
    """A device's measured dense-matmul rate in FLOP/s, and how it was measured."""

    flops: float
    source: str


def peak_memory(device: str) -> tuple[int, str]:
    """(bytes, kind): the CUDA allocator's peak on a GPU; on a CPU the process's peak resident memory
    since start or `reset_peak_memory` (Linux's VmHWM; Windows' peak working set; elsewhere the current
    resident memory, as no peak is kept)."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "cuda_allocated"
    if LINUX:
        status = Path("/proc/self/status").read_text(encoding="utf-8")
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024, "cpu_rss"
    info = psutil.Process().memory_info()
    return getattr(info, "peak_wset", info.rss), "cpu_rss"


def reset_peak_memory(device: str) -> None:
    """Start a new peak: the CUDA allocator's, or on Linux the process's resident high-water mark."""
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif LINUX:
        # "5" resets the peak resident set size (the kernel's Documentation/filesystems/proc.rst).
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def measure_peak_flops(device: str, dtype: torch.dtype, budget_s: float = PEAK_BUDGET_S) -> Peak:
    """The best rate of repeated square matmuls in the training dtype, within `budget_s` seconds.

    Measured rather than taken from a datasheet: the achievable rate on this device, with this
    torch build and thread count, is the honest denominator for utilisation. The matmuls run the
    way training runs them (`bfloat16_matmuls`).
    """
    n = PEAK_MATMUL_SIZE["cuda" if device == "cuda" else "cpu"]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with bfloat16_matmuls(device, dtype):
        _sync(device)
        torch.mm(a, b)  # warm-up: kernel selection and first-touch allocation
        _sync(device)
        best = float("inf")
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            for _ in range(4 if device == "cuda" else 1):  # a GPU matmul is too short to time alone
                torch.mm(a, b)
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / (4 if device == "cuda" else 1))
    threads = f", {torch.get_num_threads()} threads" if device != "cuda" else ""
    dtype_name = str(dtype).removeprefix("torch.")
    route = " through float32 GEMM" if needs_float32_gemm(device, dtype) else ""
    return Peak(2 * n**3 / best, f"measured: best {n}x{n} {dtype_name} matmul{route} on {device}{threads}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_flops_utilization(num_parameters: int, tokens: int, seconds: float, peak_flops: float) -> float:
    """The standard 6·N·tokens estimate of training FLOPs (forward 2N, backward 4N per token) over
    what the device could have done in the same time."""
    return 6 * num_parameters * tokens / seconds / peak_flops
