"""Independent references for the lowbit.nn tests.

:func:`reference_weight` decodes a QuantLinear's buffers in float64 **without lowbit's code**: the codes are
read from the dense little-endian bitstream with ``numpy.unpackbits``, int codes are sign-extended by hand,
float4_e2m1 codes are decoded by ``ml_dtypes``, and ``(value - zero) * scale`` is evaluated in float64 with the
scales/zeros reinterpreted from the raw-bit buffers.

Error bound of one quantized linear (u = 2^-24, the f32 unit roundoff; the kernel forms products and sums in
f32, the dequantized weights are exact in f32 for 16-bit scales): any summation order of the K products,
split-K partial sums (at most 16), the scale and the bias stays within ``gamma_n * sum_k |x_k w_k|`` with
``n = K + 20`` and ``gamma_n = n u / (1 - n u)``; rounding to the output dtype adds ``u_out |y|`` (f16 2^-11,
bf16 2^-8, f32 2^-24) plus half its smallest subnormal.
"""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

U32 = 2.0 ** -24
U_OUT = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}
TINY_OUT = {torch.float16: 2.0 ** -25, torch.bfloat16: 2.0 ** -134, torch.float32: 2.0 ** -150}
_ML_FLOATS = {"float4_e2m1": ml_dtypes.float4_e2m1fn, "float8_e4m3fn": ml_dtypes.float8_e4m3fn}


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def decode_codes(codes: np.ndarray, name: str, nbits: int) -> np.ndarray:
    """float64 values of integer ``codes`` of the lowbit type ``name``."""
    codes = codes.astype(np.int64)
    if name.startswith("uint"):
        return codes.astype(np.float64)
    if name.startswith("int"):
        return np.where(codes >= 2 ** (nbits - 1), codes - 2 ** nbits, codes).astype(np.float64)
    if name in _ML_FLOATS:
        return codes.astype(np.uint8).view(_ML_FLOATS[name]).astype(np.float64)
    raise NotImplementedError(name)


def reference_weight(layer: Any) -> torch.Tensor:
    """The float64 weight ``[N, K]`` a QuantLinear stands for, decoded from its buffers (see the module doc)."""
    n, k = layer.out_features, layer.in_features
    nbits = layer.weight_dtype.nbits
    name = layer.weight_dtype.name
    packed = layer.weight_packed.detach().cpu().numpy()
    bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :k * nbits].reshape(n, k, nbits)
    codes = (bits.astype(np.int64) << np.arange(nbits)).sum(-1)
    values = torch.from_numpy(decode_codes(codes, name, nbits))
    g = layer.group_size
    scales = layer.weight_scales.view(getattr(torch, layer.scale_dtype.name)).double().cpu()
    values = values.reshape(n, k // g, g)
    if layer.weight_zeros is not None:
        zeros = layer.weight_zeros.view(getattr(torch, layer.zero_dtype.name)).double().cpu()
        values = values - zeros[..., None]
    elif name.startswith("uint"):
        values = values - 2 ** (nbits - 1)  # GPTQ's symmetric uint: the implicit midpoint zero
    return (values * scales[..., None]).reshape(n, k)


def linear_reference(x: torch.Tensor, w64: torch.Tensor,
                     bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x @ W.T + b, |x| @ |W|.T + |b|)`` in float64, shaped like the output."""
    x64 = x.detach().double().cpu()
    ref = x64 @ w64.T
    absdot = x64.abs() @ w64.abs().T
    if bias is not None:
        ref = ref + bias.detach().double().cpu()
        absdot = absdot + bias.detach().double().cpu().abs()
    return ref, absdot


def linear_tolerance(absdot: torch.Tensor, ref: torch.Tensor, k: int, out_dtype: Any) -> torch.Tensor:
    u_out = U_OUT[out_dtype]
    return u_out * ref.abs() + (1 + u_out) * gamma(k + 20) * absdot + TINY_OUT[out_dtype]


def assert_within(got: torch.Tensor, ref: torch.Tensor, tol: torch.Tensor, what: str) -> None:
    err = (got.detach().double().cpu() - ref).abs()
    bad = ~(err <= tol)
    if bool(bad.any()):
        i = int(torch.nonzero(bad.reshape(-1))[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.numel()} elements exceed the bound; first at "
                             f"flat index {i}: got {float(got.reshape(-1)[i])}, want {float(ref.reshape(-1)[i])}, "
                             f"|err| {float(err.reshape(-1)[i]):.3e} > tol {float(tol.reshape(-1)[i]):.3e}")
