"""lowbit's generated kernels as the runtime's ops (backends ``"tvm"`` and ``"triton"``).

``linear`` on a quantized weight is :func:`lowbit.ops.matmul`; dense weights (layers kept in f16/f32 by a
per-layer override) use torch's matmul, as any serving stack does for unquantized layers. The KV cache is written
by :func:`lowbit.ops.kv_append` and read by :func:`lowbit.ops.decode_attention`; the norms (after a residual add:
:func:`lowbit.ops.add_rms_norm`), the rotary embeddings and the MLP's gated SiLU are :func:`lowbit.ops.rms_norm`,
:func:`lowbit.ops.rope` and :func:`lowbit.ops.silu_mul`.
Prefill attention has no generated kernel yet: ``"auto"`` takes the torch reference for it (an explicit backend
name reports it missing).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from lowbit import ops
from lowbit.quant import QuantizedTensor

from . import reference_ops
from .ops import register


def _make_linear(backend: str) -> Callable:
    def linear(x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(weight, QuantizedTensor):
            return ops.matmul(x, weight, bias, backend=backend)
        return reference_ops.linear(x, weight, bias)    # dense: f32 products and sums, rounded once like ops.matmul

    return linear


def _make_kv_append(backend: str) -> Callable:
    def kv_append(layer: Any, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
        ops.kv_append(layer, k, v, slots, backend=backend)

    return kv_append


def _make_decode_attention(backend: str) -> Callable:
    def decode_attention(q: torch.Tensor, layer: Any, block_tables: torch.Tensor, lengths: torch.Tensor, *,
                         scale: float, window: int | None, out_dtype: torch.dtype) -> torch.Tensor:
        return ops.decode_attention(q, layer, block_tables, lengths, scale=scale, window=window, out_dtype=out_dtype,
                                    backend=backend)

    return decode_attention


def _make_rms_norm(backend: str) -> Callable:
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
        return ops.rms_norm(x, weight, eps=eps, out_dtype=out_dtype, backend=backend)

    return rms_norm


def _make_add_rms_norm(backend: str) -> Callable:
    def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                     out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.add_rms_norm(x, delta, weight, eps=eps, out_dtype=out_dtype, backend=backend)

    return add_rms_norm


def _make_rope(backend: str) -> Callable:
    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        return ops.rope(x, cos, sin, out_dtype=out_dtype, backend=backend)

    return rope


def _make_silu_mul(backend: str) -> Callable:
    def silu_mul(gate_up: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        return ops.silu_mul(gate_up, out_dtype=out_dtype, backend=backend)

    return silu_mul


for _backend in ("tvm", "triton"):
    register("linear", _backend)(_make_linear(_backend))
    register("kv_append", _backend)(_make_kv_append(_backend))
    register("decode_attention", _backend)(_make_decode_attention(_backend))
    register("rms_norm", _backend)(_make_rms_norm(_backend))
    register("add_rms_norm", _backend)(_make_add_rms_norm(_backend))
    register("rope", _backend)(_make_rope(_backend))
    register("silu_mul", _backend)(_make_silu_mul(_backend))
