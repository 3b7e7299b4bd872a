"""An fp16 GEMM written in Python with @lowbit.jit: c = a @ b, accumulated in f32.

Run it: ``python examples/gemm_fp16.py`` (the reference interpreter on small matrices, checked against torch).
This module uses ``from __future__ import annotations``, so the shape names M, N, K need no declaration.
"""
from __future__ import annotations

from lowbit.jit import jit


@jit
def gemm_fp16(a: f16[M, K], b: f16[K, N], c: Out[f16[M, N]],
              BM: const = 32, BN: const = 32, BK: const = 32):
    grid(cdiv(M, BM), cdiv(N, BN))
    m0 = block(0) * BM
    n0 = block(1) * BN
    acc = zeros([BM, BN], f32)
    for k in range(0, K, BK):
        ta = load(a, [m0, k], [BM, BK])
        tb = load(b, [k, n0], [BK, BN])
        acc = dot(ta, tb, acc)
    store(c, cast(acc, f16), [m0, n0])


def main() -> None:
    import torch

    torch.manual_seed(0)
    a = torch.randn(40, 72, dtype=torch.float16)
    b = torch.randn(72, 48, dtype=torch.float16)
    c = torch.empty(40, 48, dtype=torch.float16)
    gemm_fp16(a, b, c)
    ref = a.double() @ b.double()
    print(gemm_fp16.ir())
    print(f"max |c - ref| = {(c.double() - ref).abs().max().item():.4f} (max |ref| = {ref.abs().max().item():.1f})")


if __name__ == "__main__":
    main()
