"""Show what lowbit does, for real, on this machine.

Prints the table of low-bit formats (range, codes, bits per weight with scales) and the quantization error of
each on a random Gaussian weight matrix, group-wise along K. Later stages (kernels, runtime) add to it.

Examples:
  lowbit demo
  lowbit demo --rows 512 --cols 2048 --group-size 64 --seed 1
"""
from __future__ import annotations

import argparse

WEIGHT_TYPES = [
    "int8", "int4", "int3", "int2", "uint8", "uint4", "uint3", "uint2", "uint1",
    "float8_e4m3fn", "float8_e5m2", "float7_e3m3", "float6_e3m2", "float6_e2m3", "float5_e2m2", "float4_e2m1",
    "float3_e1m1",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=256, help="rows (N) of the random weight (default 256)")
    parser.add_argument("--cols", type=int, default=1024, help="columns (K) of the random weight (default 1024)")
    parser.add_argument("--group-size", type=int, default=128, help="quantization group size along K (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def format_table(rows: int, cols: int, group_size: int, seed: int) -> str:
    """The format table: one row per weight type with its range and the error of quantizing a Gaussian matrix."""
    import numpy as np

    from ..dtypes import dtype
    from ..quant import quantize

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((rows, cols)).astype(np.float32)
    header = (f"{'type':<15}{'bits':>5}{'codes':>7}{'min':>10}{'max':>10}{'bits/w':>8}"
              f"{'zero pt':>9}{'rel. RMSE':>11}{'SQNR dB':>9}")
    lines = [f"Group-wise quantization of a {rows}x{cols} N(0,1) matrix, group {group_size}, f16 scales",
             header, "-" * len(header)]
    for name in WEIGHT_TYPES:
        dt = dtype(name)
        zero_point = dt.kind == "uint"
        q = quantize(weight, dt, group_size=group_size, zero_point=zero_point)
        err = q.dequantize() - weight
        rel = float(np.sqrt(np.mean(err.astype(np.float64) ** 2) / np.mean(weight.astype(np.float64) ** 2)))
        sqnr = -20 * np.log10(rel) if rel > 0 else float("inf")
        overhead = 16 * (2 if zero_point else 1) / group_size
        lines.append(f"{dt.name:<15}{dt.nbits:>5}{dt.num_codes:>7}{dt.min:>10.4g}{dt.max:>10.4g}"
                     f"{dt.nbits + overhead:>8.3f}{'yes' if zero_point else 'no':>9}{rel:>11.4f}{sqnr:>9.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(format_table(args.rows, args.cols, args.group_size, args.seed))
    return 0
