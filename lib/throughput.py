"""Training throughput evidence: peak memory, the device's matmul peak, model FLOPs utilisation.

Tokens are counted by the Trainer itself (`include_num_input_tokens_seen="non_padding"`); this
module turns counts and wall time into the numbers the metrics file and the benchmark report.
It also holds the one speed fix a CPU without bfloat16 matrix kernels needs (`bfloat16_matmuls`).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Matrix sizes for the peak measurement: big enough to run near the device's best matmul rate,
# small enough that the measurement stays well under a second.
PEAK_MATMUL_SIZE = {"cuda": 8192, "cpu": 1024}
PEAK_BUDGET_S = 0.3
# torch's CPU capabilities with no bfloat16 GEMM kernel (oneDNN's needs AVX-512): see bfloat16_matmuls.
CPUS_WITHOUT_BF16_GEMM = {"DEFAULT", "AVX2"}
# Operands are upcast in slices of at most this many elements (64 MB of float32), so that a 256,000-row
# embedding used as the output layer never gets a whole float32 copy.
UPCAST_SLICE = 1 << 24
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


# --- bfloat16 on a CPU without bfloat16 matrix kernels ----------------------------------------

def needs_float32_gemm(device: str, dtype: torch.dtype) -> bool:
    """Whether bfloat16 matrix products on this device are better computed by float32 GEMM."""
    return (device == "cpu" and dtype == torch.bfloat16
            and torch.backends.cpu.get_cpu_capability() in CPUS_WITHOUT_BF16_GEMM)


def bfloat16_matmuls(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The context to train or generate in: on a CPU without bfloat16 GEMM (x86 without AVX-512),
    every bfloat16 matrix product, backward included, is computed by float32 GEMM and rounded back.

    Why: torch 2.13 then falls back to a scalar loop for bfloat16 products whose right operand is
    row-major, which is the backward pass's layout (gradient x weight): measured on this project's
    AVX2 machine, 0.09 GFLOP/s against 3 for the forward's layout and 42 for float32 (docs/BENCHMARKS.md),
    so one training step of Gemma 2B would take hours. The result is the same bfloat16 product a GPU
    computes (float32 accumulation, one rounding); the cost is transient float32 copies of operand
    slices of at most UPCAST_SLICE elements. Anywhere else it is a no-op.
    """
    return _Float32Gemm() if needs_float32_gemm(device, dtype) else contextlib.nullcontext()


_aten = torch.ops.aten


class _Float32Gemm(TorchDispatchMode):
    """Routes bfloat16 mm and bmm on the CPU through float32 (see bfloat16_matmuls).

    addmm (a layer with a bias) is left alone: its forward has the fast layout, and its backward
    is made of mm calls, which are routed. Gemma's layers have no bias.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _aten.mm.default and _is_cpu_bf16(*args):
            return _mm_in_float32(*args)
        if func is _aten.bmm.default and _is_cpu_bf16(*args):
            # Attention's batched products: small (heads x tokens x tokens), upcast whole.
            return torch.bmm(args[0].float(), args[1].float()).to(torch.bfloat16)
        return func(*args, **(kwargs or {}))


def _is_cpu_bf16(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.bfloat16 and a.device.type == b.device.type == "cpu"


def _mm_in_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for bfloat16 matrices by float32 GEMM, sliced along the largest dimension."""
    (m, k), n = a.shape, b.shape[1]
    out = torch.empty(m, n, dtype=torch.bfloat16)
    if n >= max(m, k):  # e.g. the output layer's forward: columns of b
        step = max(1, UPCAST_SLICE // max(k, m))
        a32 = a.float()
        for j in range(0, n, step):
            out[:, j:j + step] = a32 @ b[:, j:j + step].float()
    elif m >= k:  # e.g. the output layer's weight gradient: rows of a
        step = max(1, UPCAST_SLICE // max(k, n))
        b32 = b.float()
        for i in range(0, m, step):
            out[i:i + step] = a[i:i + step].float() @ b32
    else:  # the inner dimension is the largest (the output layer's input gradient): sum over slices
        step = max(1, UPCAST_SLICE // max(m, n))
        total = torch.zeros(m, n, dtype=torch.float32)
        for j in range(0, k, step):
            total.addmm_(a[:, j:j + step].float(), b[j:j + step].float())
        out.copy_(total)
    return out
