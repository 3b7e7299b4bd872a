"""Throughput of host-side packing, unpacking and quantization on a large weight matrix.

    .venv/bin/python benchmarks/bench_packing.py [--size 4096] [--repeats 5] [--backends numpy,torch]

Reports the median over repeats (after one warm-up run) in ms, and MB/s of the data each step reads:
the uint8 codes for pack, the packed bytes for unpack, the float32 weights for quantize (1 MB = 1e6 bytes).
These are host paths (load-time work), not kernels: they are measured to keep load time in check.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

from lowbit.dtypes import dtype
from lowbit.packing import pack, unpack
from lowbit.quant import quantize


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="the matrix is size x size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="numpy,torch")
    args = parser.parse_args(argv)
    n = args.size
    backends = args.backends.split(",")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n)).astype(np.float32)

    rows: list[tuple[str, str, str, float, float]] = []
    for backend in backends:
        to = (lambda a: a) if backend == "numpy" else _torch_from
        for nbits in (2, 3, 4, 8):
            codes = to(rng.integers(0, 2 ** nbits, (n, n)).astype(np.uint8))
            packed = pack(codes, nbits)
            ms = median_ms(lambda: pack(codes, nbits), args.repeats)
            rows.append((backend, "pack", f"{nbits}-bit", ms, n * n / ms / 1e3))
            ms = median_ms(lambda: unpack(packed, nbits, n), args.repeats)
            rows.append((backend, "unpack", f"{nbits}-bit", ms, _nbytes(packed) / ms / 1e3))
        wb = to(w)
        for name, kwargs in (("int4", {}), ("uint4", {"zero_point": True}), ("int3", {}), ("int8", {}),
                             ("float4_e2m1", {}), ("float8_e4m3fn", {}), ("uint2", {"zero_point": True})):
            label = f"{dtype(name).name} g128" + (" zp" if kwargs else "")
            ms = median_ms(lambda: quantize(wb, name, group_size=128, **kwargs), max(1, args.repeats // 2))
            rows.append((backend, "quantize", label, ms, n * n * 4 / ms / 1e3))

    print(f"matrix {n}x{n}; median of {args.repeats} runs (quantize: {max(1, args.repeats // 2)})")
    print(f"{'backend':8} {'step':9} {'case':22} {'ms':>9} {'MB/s':>9}")
    for backend, step, case, ms, mbs in rows:
        print(f"{backend:8} {step:9} {case:22} {ms:9.1f} {mbs:9.0f}")


def _torch_from(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a)


def _nbytes(a: Any) -> int:
    return a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size()


if __name__ == "__main__":
    main()
