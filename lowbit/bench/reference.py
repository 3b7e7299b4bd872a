"""Checking a benchmarked matmul against the float64 reference before its time counts.

A result ``y [M, N]`` is compared on a subset of output columns (rows of ``W``, spread over N) with
``x @ W.T`` computed in float64 from the exact inputs. The error of each element is measured against
``(|x| @ |W|.T)``, the scale every rounding error of a dot product is proportional to, so one tolerance
fits any shape and weight type:

* float32 arithmetic (lowbit's kernels, torch fp32): ``2 (K + 64) 2^-24`` -- the bound of a float32 dot
  product of length K with any summation order, with room for a rounded output;
* lowbit's kernels with bfloat16 / float16 activations: the float32 bound after one rounding of the output
  to its dtype (``u |y|`` with ``u = 2^-8`` / ``2^-11``, taken off the error first: ``output_rounding``); the
  products of the exact inputs and the sums are float32;
* bfloat16 arithmetic (torch bf16, torch int4): ``2^-6`` -- a few bf16 roundings (``2^-9`` each)
  plus the float32 bound; a wrongly packed weight is off by O(1).

A kernel that takes zero points out of its sums (``s (sum x q - z sum x)``, lowbit's CPU GEMV) rounds terms
``x q s`` and ``x z s``: its error is measured against ``|x| @ ((|q| + |z|) |s|).T`` instead
(:func:`zero_out_magnitudes`, passed as ``magnitudes``).

>>> import torch
>>> w, x = torch.randn(64, 256), torch.randn(2, 256)
>>> rows = check_rows(64, 16)
>>> check_matmul(x @ w.T, x, w[rows], rows, tolerance=f32_tolerance(256)).ok
True
>>> check_matmul(x @ w.T + 0.01, x, w[rows], rows, tolerance=f32_tolerance(256)).ok
False
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CheckResult", "check_rows", "check_matmul", "f32_tolerance", "zero_out_magnitudes", "OUTPUT_ROUNDING",
           "BF16_TOLERANCE", "FP16_TOLERANCE"]

BF16_TOLERANCE = 2.0 ** -6
#: a float16 product of float16 operands, accumulated in float32 and rounded to float16 (cuBLAS): the operands'
#: roundings (2 x 2^-11) and the output's (2^-11) with a margin
FP16_TOLERANCE = 2.0 ** -9


def f32_tolerance(k: int) -> float:
    """Relative error bound of a float32 dot product of length ``k`` (see the module docstring)."""
    return 2.0 * (k + 64) * 2.0 ** -24


#: unit roundoff of the output dtype of a kernel that computes in float32 and rounds its result once
OUTPUT_ROUNDING = {"float32": 0.0, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


@dataclass(frozen=True)
class CheckResult:
    """``rel_err``: max over checked elements of ``|y - ref| / (|x| @ |W|.T)``; ``ok``: within ``tolerance``."""

    rel_err: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tolerance  # NaN compares False: a NaN result fails

    def __str__(self) -> str:
        return f"relative error {self.rel_err:.3g} (tolerance {self.tolerance:.3g})"


def check_rows(n: int, count: int) -> Any:
    """``count`` output columns spread evenly over ``[0, n)`` (all of them when ``n <= count``), as a tensor."""
    import torch

    if n <= count:
        return torch.arange(n)
    return torch.linspace(0, n - 1, count).round().to(torch.int64).unique()


def zero_out_magnitudes(qweight: Any) -> Any:
    """``(|q| + |z|) |s|`` per weight (float64 ``[N, K]``) of a quantized weight with zero points: what each
    product's rounding is proportional to when the zero points leave the sums (module docstring)."""
    import torch

    n, k = (int(v) for v in qweight.shape)
    g = qweight.group_size
    q = qweight.dtype.decode(qweight.codes()).to(torch.float64).reshape(n, k // g, g)
    s = qweight.scales.to(torch.float64).abs().unsqueeze(-1)
    z = qweight.zeros.to(torch.float64).abs().unsqueeze(-1)
    return ((q.abs() + z) * s).reshape(n, k)


def check_matmul(y: Any, x: Any, w_rows: Any, rows: Any, tolerance: float, output_rounding: float = 0.0,
                 magnitudes: Any = None) -> CheckResult:
    """Compare ``y[:, rows]`` with ``x @ w_rows.T`` in float64; ``w_rows`` is ``W[rows]`` (dense, any float).

    ``output_rounding``: the unit roundoff ``u`` of a final rounding of the result; the error it allows,
    ``u (|ref| + tolerance (|x| @ |W|.T))``, is taken off each element's error before the comparison.
    ``magnitudes``: what the error scales with per weight (default ``|w_rows|``; :func:`zero_out_magnitudes`).

    >>> import torch
    >>> w, x = torch.randn(64, 256), torch.randn(2, 256)
    >>> y = (x @ w.T).bfloat16()
    >>> check_matmul(y, x, w, torch.arange(64), f32_tolerance(256), output_rounding=2.0 ** -8).ok
    True
    >>> check_matmul(y * 1.02, x, w, torch.arange(64), f32_tolerance(256), output_rounding=2.0 ** -8).ok
    False
    """
    import torch

    x64 = x.reshape(-1, x.shape[-1]).to(torch.float64)
    w64 = w_rows.to(torch.float64)
    got = y.reshape(-1, y.shape[-1])[:, rows].to(torch.float64)
    ref = x64 @ w64.T
    scale = x64.abs() @ (w64.abs() if magnitudes is None else magnitudes.to(torch.float64)).T
    allowed = output_rounding * (ref.abs() + tolerance * scale)
    err = ((got - ref).abs() - allowed).clamp_min(0) / scale.clamp_min(torch.finfo(torch.float64).tiny)
    rel = float(err.max()) if err.numel() else 0.0
    if not torch.isfinite(got).all():
        rel = float("nan")
    return CheckResult(rel_err=rel, tolerance=tolerance)
