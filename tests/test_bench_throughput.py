"""lib/throughput.py's measuring helpers (the peak resident memory) and lib/cpu_bfloat16.py (bfloat16 products through float32 GEMM)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lib import cpu_bfloat16
from lib.config import REPO_ROOT
from lib.cpu_bfloat16 import bfloat16_matmuls, needs_float32_gemm


PEAK_PROBE = """
import torch
from lib.throughput import peak_memory, reset_peak_memory
reset_peak_memory("cpu")
before, kind = peak_memory("cpu")
block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
del block
freed = peak_memory("cpu")[0]
reset_peak_memory("cpu")
print(kind, before, freed, peak_memory("cpu")[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resettable peak is Linux's VmHWM")
def test_peak_rss_keeps_the_high_water_mark_until_reset():
    # In a process of its own: a test process's other threads (or another test's leftovers) move its RSS.
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    kind, before, freed, after = done.stdout.split()
    assert kind == "cpu_rss" and int(freed) >= int(before) + 60 * 2**20  # freed, still the peak
    assert int(after) < int(before) + 60 * 2**20  # reset: the freed block no longer counts


@pytest.mark.parametrize("shape", [(5, 7, 300), (300, 7, 5), (5, 300, 7), (33, 65, 17)])
def test_float32_gemm_gives_the_bfloat16_product_rounded_once(shape, monkeypatch):
    monkeypatch.setattr(cpu_bfloat16, "UPCAST_SLICE", 100)  # slice even these small operands
    m, k, n = shape
    a, b = torch.randn(m, k).bfloat16(), torch.randn(k, n).bfloat16()
    expected = (a.float() @ b.float()).bfloat16()
    assert torch.equal(cpu_bfloat16._mm_in_float32(a, b), expected)
    assert torch.equal(cpu_bfloat16._mm_in_float32(a, b.t().contiguous().t()), expected)  # any layout


def test_the_route_covers_the_backward_and_leaves_other_dtypes_alone():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32, bias=False).bfloat16()
    x = torch.randn(4, 10, 64, dtype=torch.bfloat16, requires_grad=True)

    def grads():
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        (torch.softmax(y @ y.transpose(1, 2), -1) @ y).float().square().sum().backward()
        return layer.weight.grad.clone(), x.grad.clone()

    native = grads()
    with cpu_bfloat16._Float32Gemm():
        routed = grads()
    # The same products in float32 with one rounding: equal to the native ones up to that rounding.
    for a, b in zip(native, routed):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=1e-3)
    with cpu_bfloat16._Float32Gemm():
        f = torch.randn(3, 4) @ torch.randn(4, 5)  # float32 passes through untouched
    assert f.dtype == torch.float32


def test_the_route_is_taken_only_for_bfloat16_on_a_cpu_without_bf16_kernels(monkeypatch):
    assert not needs_float32_gemm("cuda", torch.bfloat16) and not needs_float32_gemm("cpu", torch.float32)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert needs_float32_gemm("cpu", torch.bfloat16)
    assert isinstance(bfloat16_matmuls("cpu", torch.bfloat16), cpu_bfloat16._Float32Gemm)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert not needs_float32_gemm("cpu", torch.bfloat16)
