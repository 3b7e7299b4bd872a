"""The baselines lowbit's kernels are compared with, timed in the same run: torch's own matmuls.

* ``torch-fp32``: ``torch.nn.functional.linear`` on the dequantized weight in float32;
* ``torch-bf16``: the same in bfloat16 (weight and activations);
* ``torch-int4``: torch's int4 CPU kernel ``aten._weight_int4pack_mm_for_cpu`` (bfloat16 activations,
  its fast path: with float32 activations it is several times slower on this CPU).

torch's int4 format (torch 2.13): ``aten._convert_weight_to_int4pack_for_cpu(codes, 1)`` takes unpacked
codes ``u`` in ``[0, 16)`` as int32 ``[N, K]`` (N a multiple of 16) and returns uint8 ``[N, K / 2]``; the
kernel computes ``w = (u - 8) * scale + zero`` per group of ``qGroupSize`` (32, 64, 128 or 256) consecutive
K, with ``scale_and_zero [K / g, N, 2]`` in the activation dtype. lowbit's 4-bit integer weights map onto
it exactly (up to rounding the scales to bfloat16):

=====================  ===============================  =========================
lowbit weight          torch code ``u``                 ``zero``
=====================  ===============================  =========================
uint4, symmetric       ``q`` (implicit zero 8)          ``0``
uint4, zero point z    ``q``                            ``(8 - z) * s``
int4 (value v)         ``v + 8``                        ``-z * s`` (``0`` if none)
=====================  ===============================  =========================

>>> import torch
>>> from lowbit.quant import quantize
>>> qt = quantize(torch.randn(32, 256), "uint4", group_size=64, zero_point=True)
>>> packed, sz = to_int4pack(qt)
>>> x = torch.randn(2, 256, dtype=torch.bfloat16)
>>> y = int4pack_linear(x, packed, sz, 64)                  # bf16 [2, 32]
>>> from lowbit.bench.reference import BF16_TOLERANCE, check_matmul
>>> rows = torch.arange(32)
>>> check_matmul(y, x, qt.dequantize(), rows, BF16_TOLERANCE).ok
True
"""
from __future__ import annotations

from typing import Any, Callable

from lowbit.errors import BackendError

__all__ = ["BASELINES", "to_int4pack", "int4pack_linear", "INT4_GROUP_SIZES", "int4_unsupported_reason"]

#: baseline name -> (weight dtype, activation dtype) as torch dtype names
BASELINES: dict[str, tuple[str, str]] = {
    "torch-fp32": ("float32", "float32"),
    "torch-bf16": ("bfloat16", "bfloat16"),
    "torch-int4": ("int4", "bfloat16"),
}
INT4_GROUP_SIZES = (32, 64, 128, 256)


def int4_unsupported_reason(n: int, k: int, group_size: int) -> str | None:
    """Why torch's int4 CPU kernel cannot run an ``[N, K]`` weight with this group size (None: it can)."""
    import torch

    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return f"torch {torch.__version__} has no aten._weight_int4pack_mm_for_cpu"
    if group_size not in INT4_GROUP_SIZES:
        return f"group size {group_size} (torch's int4 kernel takes {', '.join(map(str, INT4_GROUP_SIZES))})"
    if n % 16:
        return f"N = {n} is not a multiple of 16"
    if k % group_size:
        return f"K = {k} is not a multiple of the group size {group_size}"
    return None


def to_int4pack(qweight: Any, act_dtype: Any = None) -> tuple[Any, Any]:
    """(packed weight, scale_and_zero) for torch's int4 CPU kernel from a 4-bit integer ``QuantizedTensor``.

    ``act_dtype``: the dtype of the activations the kernel will get (default bfloat16); scales and zeros
    are stored in it. Raises :class:`lowbit.BackendError` for weights torch's kernel cannot represent.
    """
    import torch

    act_dtype = torch.bfloat16 if act_dtype is None else act_dtype
    d = qweight.dtype
    if d.name not in ("int4", "uint4") or len(qweight.shape) != 2:
        raise BackendError(f"torch's int4 kernel takes a 2-D int4/uint4 weight; got {d.name} {list(qweight.shape)}",
                           hint="quantize the weight to int4 or uint4")
    n, k = qweight.shape
    reason = int4_unsupported_reason(n, k, qweight.group_size)
    if reason:
        raise BackendError(f"torch's int4 CPU kernel cannot run this weight: {reason}")
    codes = qweight.codes()
    codes = codes if isinstance(codes, torch.Tensor) else torch.from_numpy(codes)
    u = codes.to(torch.int32)
    if d.name == "int4":
        u = u ^ 8  # two's complement nibble -> offset binary: u = v + 8
    scales = qweight.scales
    scales = (scales if isinstance(scales, torch.Tensor) else torch.from_numpy(scales.astype("float32"))).float()
    if qweight.zeros is not None:
        zeros = qweight.zeros
        z = (zeros if isinstance(zeros, torch.Tensor) else torch.from_numpy(zeros.astype("float32"))).float()
        offset = (8 - z) if d.name == "uint4" else -z
        zero = offset * scales
    else:
        zero = torch.zeros_like(scales)  # uint4 symmetric: implicit zero 8 == torch's offset; int4: none
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.contiguous(), 1)
    scale_and_zero = torch.stack([scales.t(), zero.t()], dim=-1).to(act_dtype).contiguous()
    return packed, scale_and_zero


def int4pack_linear(x: Any, packed: Any, scale_and_zero: Any, group_size: int) -> Any:
    """``x [M, K] @ W.T`` with torch's int4 CPU kernel (``x`` in the dtype of ``scale_and_zero``)."""
    import torch

    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scale_and_zero)


def dense_linear() -> Callable[[Any, Any], Any]:
    """``torch.nn.functional.linear`` (``x @ W.T``), the dense baselines' operation."""
    import torch

    return torch.nn.functional.linear
