"""Low-bit GEMV through ``lowbit.ops.matmul`` on the CPU (TVM backend) against torch, with the roofline.

Run: ``.venv/bin/python benchmarks/bench_gemv.py [--types u4 i4 i3 i2 f4e2m1 i8] [--threads 2] [--rounds 5]``.

Problem: ``y[1, N] = x[1, K] @ W.T`` for a ``[N, K] = [4096, 4096]`` weight quantized group-wise along K
(``g = 128``, f16 scales, no zero points: uint codes use the implicit zero ``2^(n-1)``), x f32 by default.
Every call goes through the public op (argument checks, cached packed weights, launch), as a model does.

Baselines, timed in the same rounds: ``torch.mv`` in fp32 and bf16 on the *dequantized* weight (what one
would run without lowbit). ``GB/s`` is bytes moved per call (packed codes + scales + x + y) over the
median time; ``roofline`` divides it by the read bandwidth measured in the same rounds
(``lowbit.bench.bandwidth.read_bandwidth`` with the same thread count).

Weights come from DRAM, as in LLM decode (every layer's weights are read once per token): each type
rotates over enough weight copies to exceed 3x the last-level cache. ``hot`` reuses one copy (cache-
resident: compute speed). Every kernel is checked first against an fp64 reference within the f32
accumulation bound of ``tests/kernels/conftest.py`` (``gamma_(K+5) sum |x w|`` plus the output rounding).

The machines are shared: read medians, and ratios against the baselines of the same run.

Measured (AMD EPYC Zen 4, 2 threads, load average ~1; "before" is commit 5198daf run from a copy in the
same minute; ms median of 5 rounds, weights from DRAM; roofline against 34 GB/s measured in the run):

    type        before ms  after ms   after roofline   after vs torch f32 / bf16
    uint4         0.996     0.549        44 %            5.1x / 2.3x
    int4          0.971     0.530        45 %            5.3x / 2.4x
    int3          3.158     0.543        34 %            5.2x / 2.4x
    int2          0.809     0.525        24 %            5.3x / 2.5x
    float4_e2m1   1.192     0.611        39 %            4.6x / 2.1x
    int8          1.956     0.519        91 %            5.4x / 2.5x
    (M = 4: uint4 2.55 -> 1.01 ms; M = 16: uint4 8.9 -> 3.3 ms, int3 24.0 -> 5.8 ms)

One thread's CPU time (``time.thread_time``, which other processes cannot inflate) for uint4: 1.13 ms
cached / 1.49 ms from DRAM before, 0.90 / 0.95 after: the kernel is compute-bound on this CPU (5 vector
instructions per 16 codes: shift, and, convert, subtract the implicit zero, FMA), as the hand-written
prototype (``bench_tvm_gemv_prototype.py``) found.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time


def _set_threads(threads: int) -> None:
    """Thread counts must be in the environment before torch / TVM start their pools."""
    os.environ["LOWBIT_NUM_THREADS"] = str(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


ALIASES = {"u4": "uint4", "i4": "int4", "int4": "int4", "uint4": "uint4", "i3": "int3", "int3": "int3",
           "i2": "int2", "int2": "int2", "u2": "uint2", "u3": "uint3", "i8": "int8", "int8": "int8",
           "u8": "uint8", "f4e2m1": "float4_e2m1", "float4_e2m1": "float4_e2m1", "f8e4m3": "float8_e4m3fn",
           "float8_e4m3fn": "float8_e4m3fn", "f6e3m2": "float6_e3m2"}


def _llc_bytes() -> int:
    try:
        text = open("/sys/devices/system/cpu/cpu0/cache/index3/size").read().strip()
        return int(text.rstrip("KkMm")) * (1 << 20 if text[-1] in "Mm" else 1024)
    except (OSError, ValueError):
        return 32 << 20


def _copy(qt):
    """An independent copy of a QuantizedTensor (own storage, own repack cache)."""
    clone = lambda a: None if a is None else a.clone()  # noqa: E731
    return dataclasses.replace(qt, packed=clone(qt.packed), scales=clone(qt.scales), zeros=clone(qt.zeros))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--types", nargs="+", default=["u4", "i4", "i3", "i2", "f4e2m1", "i8"])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--m", type=int, default=1, help="rows of x (GEMV: 1)")
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--x-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over rounds)")
    parser.add_argument("--bandwidth-mib", type=int, default=256)
    parser.add_argument("--no-hot", action="store_true", help="skip the cache-resident timing")
    args = parser.parse_args(argv)
    _set_threads(args.threads)

    import torch

    import lowbit
    from lowbit.bench.bandwidth import read_bandwidth
    from lowbit.bench.timing import time_cpu
    from lowbit.quant import quantize

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, k, m, g = args.n, args.k, args.m, args.group
    x_dtype = getattr(torch, args.x_dtype)
    x = torch.randn(m, k).to(x_dtype)
    llc = _llc_bytes()
    u = 2.0 ** -24
    u_out = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}[x_dtype]

    kernels: dict[str, tuple] = {}
    nbytes: dict[str, int] = {}
    for alias in args.types:
        name = ALIASES.get(alias, alias)
        w = quantize(torch.randn(n, k), name, group_size=g)
        moved = math.ceil(n * k * w.dtype.nbits / 8) + w.scales.numel() * w.scales.element_size() + (
            0 if w.zeros is None else w.zeros.numel() * w.zeros.element_size()) + x.numel() * x.element_size() * 2
        copies = max(2, math.ceil(3 * llc / moved))
        ws = [w] + [_copy(w) for _ in range(copies - 1)]
        start = time.perf_counter()
        y = lowbit.ops.matmul(x, w)
        first = time.perf_counter() - start
        for c in ws[1:]:
            lowbit.ops.matmul(x, c)                         # repack every copy once (cached on it)
        wd = w.dequantize("float64")
        ref = x.double() @ wd.T
        tol = u_out * ref.abs() + (1 + u_out) * (k + 5) * u / (1 - (k + 5) * u) * (x.double().abs() @ wd.abs().T)
        err = (y.double() - ref).abs()
        ratio = float((err / tol).max())
        if not ratio <= 1.0:
            print(f"FAIL {name}: error {ratio:.3g} x the bound")
            return 1
        print(f"{name:12s} compiled+first call {first:6.2f} s; error {ratio:.2e} x bound; {copies} copies of "
              f"{moved / 2**20:.2f} MiB")
        kernels[name] = (ws, copies)
        nbytes[name] = moved

    w_f32 = quantize(torch.randn(n, k), "uint4", group_size=g).dequantize("float32")
    w_bf16 = w_f32.bfloat16()
    xf, xb = x.float(), x.bfloat16()
    baselines = {"torch f32 (dequant.)": (lambda: torch.mm(xf, w_f32.T), w_f32.numel() * 4),
                 "torch bf16 (dequant.)": (lambda: torch.mm(xb, w_bf16.T), w_bf16.numel() * 2)}

    def rotating(ws, copies):
        state = [0]

        def call():
            c = state[0] % copies
            state[0] += 1
            lowbit.ops.matmul(x, ws[c])
        return call

    cold = {name: [] for name in [*kernels, *baselines]}
    hot = {name: [] for name in kernels}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(read_bandwidth(nbytes=args.bandwidth_mib << 20, threads=args.threads, repeats=3).gbps)
        for name, (ws, copies) in kernels.items():
            cold[name].append(time_cpu(rotating(ws, copies), warmup=2, repeats=3, number=copies).median_s)
            if not args.no_hot:
                hot[name].append(time_cpu(lambda w=ws[0]: lowbit.ops.matmul(x, w), warmup=2, repeats=3,
                                          number=10).median_s)
        for name, (fn, _) in baselines.items():
            cold[name].append(time_cpu(fn, warmup=1, repeats=3, number=3).median_s)

    gbps = statistics.median(bandwidth)
    f32 = statistics.median(cold["torch f32 (dequant.)"])
    bf16 = statistics.median(cold["torch bf16 (dequant.)"])
    print(f"\nread bandwidth, {args.threads} threads: median {gbps:.1f} GB/s "
          f"(rounds {', '.join(f'{b:.1f}' for b in bandwidth)}); load average {os.getloadavg()[0]:.1f}")
    print(f"GEMV M={m} N={n} K={k} g={g}, x {args.x_dtype}, {args.threads} threads, medians of {args.rounds} "
          f"rounds [best round]\n")
    print(f"{'kernel':22s} {'ms':>16s} {'GB/s':>6s} {'roofline':>8s} {'vs f32':>7s} {'vs bf16':>8s} {'hot ms':>16s}")
    for name, times in cold.items():
        t = statistics.median(times)
        moved = baselines[name][1] if name in baselines else nbytes[name]
        rate = moved / t / 1e9
        hot_txt = (f"{statistics.median(hot[name]) * 1e3:7.3f} [{min(hot[name]) * 1e3:6.3f}]"
                   if hot.get(name) else "")
        print(f"{name:22s} {t * 1e3:7.3f} [{min(times) * 1e3:6.3f}] {rate:6.1f} {rate / gbps:8.0%} "
              f"{f32 / t:6.2f}x {bf16 / t:7.2f}x {hot_txt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
