"""bfloat16 matrix products on this CPU, by layout, against float32 and the float32-GEMM route.

    python bench/bench_bf16_matmul.py [--tokens 64] [--seconds 2]

A Gemma 2B MLP projection (hidden 2,048 -> intermediate 16,384) on `--tokens` positions, the three
products one training step makes of it, timed in one process:

  forward       x @ W.T      the right operand transposed: the layout of every nn.Linear forward
  grad input    g @ W        both operands row-major: the backward's product
  grad weight   g.T @ x      the left operand transposed

each in float32, in bfloat16 with torch's own kernels, and in bfloat16 through
lib.cpu_bfloat16.bfloat16_matmuls (float32 GEMM, rounded back). Prints GFLOP/s per cell and, per
row, how much faster the route is than torch's bfloat16 kernels.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from lib.cpu_bfloat16 import bfloat16_matmuls, needs_float32_gemm

HIDDEN, INTERMEDIATE = 2048, 16384


def rate(fn, flops: int, seconds: float) -> float:
    fn()  # warm-up
    runs, t0 = 0, time.perf_counter()
    while runs < 1 or time.perf_counter() - t0 < seconds:
        fn()
        runs += 1
    return flops * runs / (time.perf_counter() - t0) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="positions (default 64: the slow cell takes a minute)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per cell (at least one run)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(args.tokens, HIDDEN)
    w = torch.randn(INTERMEDIATE, HIDDEN) * 0.02
    g = torch.randn(args.tokens, INTERMEDIATE)
    products = {
        "forward x @ W.T": lambda x, w, g: x @ w.t(),
        "grad input g @ W": lambda x, w, g: g @ w,
        "grad weight g.T @ x": lambda x, w, g: g.t() @ x,
    }
    flops = 2 * args.tokens * HIDDEN * INTERMEDIATE
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {torch.get_num_threads()} threads; "
          f"{args.tokens} tokens x {HIDDEN} x {INTERMEDIATE}; float32 GEMM route taken: "
          f"{needs_float32_gemm('cpu', torch.bfloat16)}")
    print("\n| product | float32 | bfloat16, torch's kernels | bfloat16 through float32 GEMM | route / torch's |")
    print("|---|---|---|---|---|")
    b16 = [t.bfloat16() for t in (x, w, g)]
    for name, product in products.items():
        f32 = rate(lambda: product(x, w, g), flops, args.seconds)
        native = rate(lambda: product(*b16), flops, args.seconds)
        with bfloat16_matmuls("cpu", torch.bfloat16):  # a no-op where torch has bfloat16 GEMM
            routed = rate(lambda: product(*b16), flops, args.seconds)
        print(f"| {name} | {f32:.1f} | {native:.2f} | {routed:.1f} | {routed / native:.1f}x |")
    print("\nGFLOP/s; each cell the mean over at least one run and --seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
