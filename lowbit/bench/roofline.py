"""Bytes a matmul must move, and the memory-bandwidth roofline it is judged by.

A decode-sized matmul ``y[M, N] = x[M, K] @ W[N, K].T`` is memory bound: its lower bound on time is the
bytes it has to read and write divided by the machine's bandwidth. Counted once each: the weight as stored
(packed codes + scales (+ zeros) for a quantized weight; the dense matrix for a baseline), the
activations and the outputs. Kernels that re-read data, or padding in a repacked layout, are the kernel's
own cost and show up as a lower fraction.

>>> b = MatmulBytes(m=1, n=4096, k=4096, weight=4096 * 2048 + 4096 * 32 * 2, act_itemsize=4, out_itemsize=4)
>>> b.total, round(b.bits_per_weight, 3)
(8683520, 4.125)
>>> round(roofline_fraction(b.total, seconds=0.5e-3, gbps=28.0), 3)
0.62
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MatmulBytes", "quantized_weight_bytes", "dense_weight_bytes", "roofline_fraction",
           "achieved_gbps", "int4pack_weight_bytes"]


@dataclass(frozen=True)
class MatmulBytes:
    """Bytes of one ``[M, K] x [K, N]`` product: ``weight`` (as stored) + activations + outputs."""

    m: int
    n: int
    k: int
    weight: int
    act_itemsize: int
    out_itemsize: int

    @property
    def activations(self) -> int:
        return self.m * self.k * self.act_itemsize

    @property
    def outputs(self) -> int:
        return self.m * self.n * self.out_itemsize

    @property
    def total(self) -> int:
        return self.weight + self.activations + self.outputs

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight element, scales and zeros included."""
        return self.weight * 8 / (self.n * self.k)


def quantized_weight_bytes(qweight: Any) -> int:
    """Bytes of a :class:`lowbit.quant.QuantizedTensor` as quantized: packed codes + scales + zeros."""
    return int(qweight.nbytes)


def dense_weight_bytes(n: int, k: int, itemsize: int) -> int:
    return n * k * itemsize


def int4pack_weight_bytes(n: int, k: int, group_size: int, itemsize: int = 2) -> int:
    """torch's int4 CPU format: K/2 bytes per row, plus a scale and a zero per group in the activation dtype."""
    return n * (k // 2) + 2 * n * (k // group_size) * itemsize


def achieved_gbps(nbytes: int, seconds: float) -> float:
    """Bytes moved per second, in GB/s (1 GB = 1e9 bytes)."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def roofline_fraction(nbytes: int, seconds: float, gbps: float) -> float:
    """``(bytes / seconds) / bandwidth``: 1.0 means the kernel moved its bytes at the measured bandwidth."""
    if seconds <= 0 or gbps <= 0:
        return float("nan")
    return achieved_gbps(nbytes, seconds) / gbps
