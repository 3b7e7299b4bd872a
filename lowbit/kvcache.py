"""The paged KV-cache memory format (``paged-kv/v1``): the one specification kernels and runtime share.

This module is the format's definition *and* its torch reference: :func:`append` (quantize and store new
tokens) and :func:`read_pages` (gather and dequantize) are what lowbit's ``kv_append`` and decode-attention
kernels must reproduce bit for bit (append) and to fp32 rounding (read).

Pages
-----
A cache holds, per layer, ``num_pages`` pages of ``page_size`` tokens. A token is addressed by a flat
*slot* ``page * page_size + offset``; which pages belong to which sequence (block tables) is the
runtime's business (:mod:`lowbit.runtime.paged_cache`), not part of this format.

Per layer there are two sets of tensors, one for K and one for V, each shaped by (page, kv head, token
in page): for a cache of ``P`` pages, ``H`` kv heads, page size ``S``, head dim ``D``:

================  ===========================  =========================================================
tensor            shape                        contents
================  ===========================  =========================================================
``k`` / ``v``     ``[P, H, S, B]`` uint8        low-bit types: the ``D`` codes of one token and head, a
                                               dense little-endian bitstream (:func:`lowbit.pack`),
                                               ``B = ceil(D * nbits / 8)`` bytes
``k`` / ``v``     ``[P, H, S, D]`` dense        ``float16`` / ``bfloat16`` / ``float32`` caches: the values
``k_scales`` ...  ``[P, H, S, D // g]``         low-bit only: one scale per token, head and group of ``g``
                                               consecutive channels (``scale_dtype``, default float16)
``k_zeros`` ...   ``[P, H, S, D // g]``         only with ``zero_point``: integer zero points stored in
                                               ``scale_dtype``
================  ===========================  =========================================================

So the scales/zeros are **per token, per channel group** (group size ``g`` divides ``D``; the default
``g = D`` is one scale per token and head). Each token is quantized on its own when appended, so appending
never rewrites earlier tokens.

Numerics
--------
A token's head vector ``x[0:D]`` (fp32, K after RoPE) is quantized exactly as
``lowbit.quant.quantize(x, dtype, group_size=g, zero_point=zp, scale_dtype=scale_dtype)`` quantizes one
row (float64 arithmetic, round-to-nearest-even, scales rounded up to ``scale_dtype``; see
:mod:`lowbit.quant.quantizer` for the scale rules per type). Dequantization of channel ``c`` is::

    value(code[c]) * s[c // g]                       (symmetric ints, float types)
    (value(code[c]) - z[c // g]) * s[c // g]         (zero_point: ints and uints)

computed in fp32 (exact with 16-bit scales), where ``value`` is :meth:`lowbit.DType.decode`. Without
``zero_point`` uints are refused, as by ``quantize``; by default uint types get zero points and the
others do not.

>>> import torch
>>> fmt = KVCacheFormat("uint4", num_kv_heads=2, head_dim=8, page_size=4)
>>> layer = allocate(fmt, num_pages=2)
>>> layer.k.shape, layer.k_scales.shape, fmt.bytes_per_token()     # 4 code bytes + 2+2 scale/zero bytes
(torch.Size([2, 2, 4, 4]), torch.Size([2, 2, 4, 1]), 32)
>>> x = torch.linspace(-1, 1, 16).reshape(1, 2, 8)
>>> append(layer, x, x, torch.tensor([5]))                         # page 1, offset 1
>>> k, v = read_pages(layer, torch.tensor([[1]]))
>>> float((k[0, :, 1] - x[0]).abs().max()) <= float(layer.k_scales[1, :, 1].max()) / 2
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import QuantizationError

FORMAT_NAME = "paged-kv"
FORMAT_VERSION = 1
DENSE = ("float32", "float16", "bfloat16")
_SCALE_TYPES = ("float16", "bfloat16", "float32")

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "KVCacheFormat", "KVLayer", "allocate", "quantize_tokens",
           "dequantize_tokens", "append", "read_pages", "layer_nbytes"]


@dataclass(frozen=True)
class KVCacheFormat:
    """Type and geometry of a paged KV cache (see the module docstring for the memory layout)."""

    dtype: str
    num_kv_heads: int
    head_dim: int
    page_size: int = 16
    group_size: int | None = None  # channels per scale; None = head_dim (one scale per token and head)
    zero_point: bool | None = None  # None = True for uint types, False otherwise
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        from .dtypes import dtype as as_dtype

        d = as_dtype(self.dtype)
        object.__setattr__(self, "dtype", d.name)
        for name in ("num_kv_heads", "head_dim", "page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantizationError(f"KV cache {name} must be a positive integer, got {value!r}")
        if d.name in DENSE:
            object.__setattr__(self, "group_size", None)
            object.__setattr__(self, "zero_point", False)
            return
        if d.nbits > 8:
            raise QuantizationError(f"a KV cache stores float32/float16/bfloat16 or a 1-8 bit type; got {d.name}")
        g = self.head_dim if self.group_size is None else self.group_size
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or self.head_dim % g:
            raise QuantizationError(f"KV group size {self.group_size!r} must divide head_dim={self.head_dim}",
                                    hint="use None (one group per head) or a divisor of head_dim")
        object.__setattr__(self, "group_size", g)
        zp = d.kind == "uint" if self.zero_point is None else bool(self.zero_point)
        object.__setattr__(self, "zero_point", zp)
        if as_dtype(self.scale_dtype).name not in _SCALE_TYPES:
            raise QuantizationError(f"KV scale_dtype must be one of {', '.join(_SCALE_TYPES)}, got {self.scale_dtype!r}")
        object.__setattr__(self, "scale_dtype", as_dtype(self.scale_dtype).name)
        if d.is_float and zp:
            raise QuantizationError(f"{d.name} is a float type: a KV cache of it has no zero points")
        if d.kind == "uint" and not zp:
            raise QuantizationError(f"a {d.name} KV cache needs zero points (it could only hold non-negative "
                                    f"values)", hint=f"use zero_point=True or int{d.nbits}")
        if d.kind == "int" and d.nbits == 1 and not zp:
            raise QuantizationError("an int1 KV cache needs zero points", hint="use zero_point=True")

    @property
    def dense(self) -> bool:
        return self.dtype in DENSE

    @property
    def nbits(self) -> int:
        from .dtypes import dtype as as_dtype

        return as_dtype(self.dtype).nbits

    @property
    def num_groups(self) -> int:
        return 1 if self.dense else self.head_dim // self.group_size

    @property
    def code_bytes(self) -> int:
        """Bytes of one token's codes for one head (``B`` in the table); ``D * elem`` for dense caches."""
        return (self.head_dim * self.nbits + 7) // 8

    def bytes_per_token(self) -> int:
        """Bytes one token occupies in one layer: K and V, all kv heads, codes + scales + zeros."""
        per_head = self.code_bytes
        if not self.dense:
            per_head += self.num_groups * _elem_size(self.scale_dtype) * (2 if self.zero_point else 1)
        return 2 * self.num_kv_heads * per_head

    def describe(self) -> str:
        if self.dense:
            return f"{self.dtype}, page {self.page_size}"
        return (f"{self.dtype} g{self.group_size}{' zero-point' if self.zero_point else ''} "
                f"({self.scale_dtype} scales), page {self.page_size}")


@dataclass(frozen=True)
class KVLayer:
    """One layer's pages (tensors are updated in place by :func:`append`)."""

    format: KVCacheFormat
    k: Any
    v: Any
    k_scales: Any = None
    v_scales: Any = None
    k_zeros: Any = None
    v_zeros: Any = None

    @property
    def num_pages(self) -> int:
        return int(self.k.shape[0])


def allocate(fmt: KVCacheFormat, num_pages: int, device: Any = "cpu") -> KVLayer:
    """Zero-filled pages for one layer."""
    import torch

    lead = (num_pages, fmt.num_kv_heads, fmt.page_size)
    if fmt.dense:
        dt = getattr(torch, fmt.dtype)
        return KVLayer(fmt, torch.zeros(*lead, fmt.head_dim, dtype=dt, device=device),
                       torch.zeros(*lead, fmt.head_dim, dtype=dt, device=device))
    codes = lambda: torch.zeros(*lead, fmt.code_bytes, dtype=torch.uint8, device=device)  # noqa: E731
    sdt = getattr(torch, fmt.scale_dtype)
    side = lambda: torch.zeros(*lead, fmt.num_groups, dtype=sdt, device=device)  # noqa: E731
    zeros = (side(), side()) if fmt.zero_point else (None, None)
    return KVLayer(fmt, codes(), codes(), side(), side(), *zeros)


def quantize_tokens(fmt: KVCacheFormat, x: Any) -> tuple[Any, Any, Any]:
    """``x`` ``[..., D]`` -> ``(codes [..., B] uint8, scales [..., D//g], zeros or None)`` (dense: ``(x, None, None)``)."""
    import torch

    if fmt.dense:
        return x.to(getattr(torch, fmt.dtype)), None, None
    from .quant import quantize

    lead = tuple(x.shape[:-1])
    qt = quantize(x.reshape(-1, fmt.head_dim).to(torch.float32), fmt.dtype, group_size=fmt.group_size,
                  zero_point=fmt.zero_point, scale_dtype=fmt.scale_dtype)
    zeros = None if qt.zeros is None else qt.zeros.reshape(*lead, fmt.num_groups)
    return qt.packed.reshape(*lead, fmt.code_bytes), qt.scales.reshape(*lead, fmt.num_groups), zeros


def dequantize_tokens(fmt: KVCacheFormat, codes: Any, scales: Any = None, zeros: Any = None) -> Any:
    """The fp32 values ``[..., D]`` of stored tokens (inverse of :func:`quantize_tokens` up to rounding)."""
    import torch

    if fmt.dense:
        return codes.to(torch.float32)
    from .dtypes import dtype as as_dtype
    from .packing import unpack

    values = as_dtype(fmt.dtype).decode(unpack(codes, fmt.nbits, fmt.head_dim, axis=-1)).to(torch.float32)
    values = values.reshape(*values.shape[:-1], fmt.num_groups, fmt.group_size)
    if zeros is not None:
        values = values - zeros.to(torch.float32)[..., None]
    return (values * scales.to(torch.float32)[..., None]).reshape(*values.shape[:-2], fmt.head_dim)


def append(layer: KVLayer, k: Any, v: Any, slots: Any) -> None:
    """Quantize ``k``, ``v`` ``[T, H, D]`` and store token ``t`` at flat slot ``slots[t]`` (in place)."""
    fmt = layer.format
    slots = slots.to(layer.k.device).long()
    page, offset = slots // fmt.page_size, slots % fmt.page_size
    for x, codes, scales, zeros in ((k, layer.k, layer.k_scales, layer.k_zeros),
                                    (v, layer.v, layer.v_scales, layer.v_zeros)):
        q, s, z = quantize_tokens(fmt, x)
        codes[page, :, offset] = q  # advanced indices around a slice: the value is [T, H, ...]
        if s is not None:
            scales[page, :, offset] = s
        if z is not None:
            zeros[page, :, offset] = z


def read_pages(layer: KVLayer, block_tables: Any) -> tuple[Any, Any]:
    """Dequantized K and V of the pages in ``block_tables`` ``[B, P]``: each fp32 ``[B, H, P * S, D]``,
    token ``t`` of row ``b`` at index ``t`` (page ``block_tables[b, t // S]``, offset ``t % S``)."""
    fmt = layer.format
    idx = block_tables.to(layer.k.device).long()
    out = []
    for codes, scales, zeros in ((layer.k, layer.k_scales, layer.k_zeros), (layer.v, layer.v_scales, layer.v_zeros)):
        vals = dequantize_tokens(fmt, codes[idx], None if scales is None else scales[idx],
                                 None if zeros is None else zeros[idx])  # [B, P, H, S, D]
        b, p, h, s, d = vals.shape
        out.append(vals.permute(0, 2, 1, 3, 4).reshape(b, h, p * s, d))
    return out[0], out[1]


def layer_nbytes(layer: KVLayer) -> int:
    """Bytes of one layer's page storage."""
    parts = (layer.k, layer.v, layer.k_scales, layer.v_scales, layer.k_zeros, layer.v_zeros)
    return sum(t.numel() * t.element_size() for t in parts if t is not None)


def _elem_size(name: str) -> int:
    return {"float16": 2, "bfloat16": 2, "float32": 4}[name]
