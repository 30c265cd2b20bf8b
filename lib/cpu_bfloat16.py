"""bfloat16 training and generation on a CPU without bfloat16 matrix kernels (x86 without AVX-512): float32 GEMM.

Why: torch 2.13 falls back to a scalar loop for bfloat16 products whose right operand is row-major, which is the
backward pass's layout (gradient x weight): measured on this project's AVX2 machine, 0.09 GFLOP/s against 3 for the
forward's layout and 42 for float32 (docs/BENCHMARKS.md), so one training step of Gemma 2B would take hours.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# torch's CPU capabilities with no bfloat16 GEMM kernel (oneDNN's needs AVX-512): see bfloat16_matmuls.
CPUS_WITHOUT_BF16_GEMM = {"DEFAULT", "AVX2"}
# Operands are upcast in slices of at most this many elements (64 MB of float32), so that a 256,000-row
# embedding used as the output layer never gets a whole float32 copy.
UPCAST_SLICE = 1 << 24


def needs_float32_gemm(device: str, dtype: torch.dtype) -> bool:
    """Whether bfloat16 matrix products on this device are better computed by float32 GEMM."""
    return (device == "cpu" and dtype == torch.bfloat16
            and torch.backends.cpu.get_cpu_capability() in CPUS_WITHOUT_BF16_GEMM)


def bfloat16_matmuls(device: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The context to train or generate in: on a CPU without bfloat16 GEMM (x86 without AVX-512),
    every bfloat16 matrix product, backward included, is computed by float32 GEMM and rounded back.

    torch 2.13 falls back to a scalar loop for bfloat16 products whose right operand is
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
