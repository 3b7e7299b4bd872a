"""The paged KV-cache memory format (``paged-kv/v1`` and ``paged-kv/v2``): the one specification kernels and
runtime share.

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

Keys grouped per channel (``key_grouping="channel"``, format ``paged-kv/v2``)
------------------------------------------------------------------------------
A few channels of K (after RoPE) carry outliers much larger than the rest, in every token; a per-token
scale must cover them, which flattens every other channel of the token to a few levels. KIVI's remedy is to
give each *channel* its own scale over a run of tokens. In v2 the keys of a page are quantized per channel
over the page's ``S`` tokens; values stay per token (v1). Only K's tensors differ from v1:

=================  ===========================  ========================================================
tensor             shape                        contents
=================  ===========================  ========================================================
``k``              ``[P, H, S, B]`` uint8        the codes, laid out exactly as in v1 (token rows)
``k_scales``       ``[P, H, D]``                 one scale per page, head and channel
``k_zeros``        ``[P, H, D]``                 with ``zero_point``: one zero per page, head and channel
``k_stage``        ``[N, H, S, D]`` float32      the keys of *open* pages, unquantized (``staging_dtype``)
``stage_map``      ``[P]`` int32                 page -> its row of ``k_stage`` (meaningful for open pages)
=================  ===========================  ========================================================

The codes keep v1's token rows (rather than channel rows) so that the attention kernel unpacks keys the same
way for both groupings and no new whole-byte rule (``S * nbits``) appears; only the scale broadcast changes
(one scale row ``[D]`` per page instead of one per token).

*Open and sealed pages.* A page is **sealed** by the append that writes its last offset ``S - 1``; it is
**open** before. Tokens of an open page live in ``k_stage[stage_map[page]]`` at their offset, rounded to
``staging_dtype`` (exact for the default float32) and nothing else. When a page is sealed its ``S`` keys
``x[t, c]`` (staged ones and this append's, all rounded to ``staging_dtype``) are quantized once, exactly as
``lowbit.quant.quantize(x.T, dtype, group_size=S, zero_point=zp, scale_dtype=scale_dtype)`` quantizes the
``[D, S]`` transposed page (one group per channel row); the codes are then stored in token rows. So no key
is quantized twice and no scale is ever computed from lossy data. Dequantization of token ``t`` channel
``c`` of a sealed page is ``value(code[t, c]) * s[c]`` (``(value - z[c]) * s[c]`` with zero points).

A sequence of ``n`` tokens reads pages ``0 .. ceil(n / S) - 1`` of its block table: all but the last are
sealed; the last is sealed exactly when ``n`` is a multiple of ``S``, else it is open and read from
staging. Rules for writers: every offset of a page is written before (or by) the append that writes
offset ``S - 1``, and a sealed page is not written again until it is reused from offset 0 (a sequence's
tokens are appended in order, as the runtime does). ``stage_map`` must give every page an append touches
a staging row, and every open page a reader reads; pages may share a row when at most one of them is open
at a time (the runtime gives each sequence one row). :func:`allocate` defaults to one row per page (the
identity map, always valid); :class:`lowbit.runtime.PagedKVCache` keeps one row per live sequence instead.

Prefill caveat: attention reads keys from the cache, and a page's keys change representation when it is
sealed (exact while open, quantized after). A query therefore sees exact keys for the not yet sealed tail
of its sequence, as in KIVI, and results can depend on where prompt chunks end relative to page ends.

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
>>> fmt2 = KVCacheFormat("int4", num_kv_heads=1, head_dim=8, page_size=4, key_grouping="channel")
>>> layer2 = allocate(fmt2, num_pages=2)
>>> fmt2.format_id, layer2.k_scales.shape, layer2.k_stage.shape
('paged-kv/v2', torch.Size([2, 1, 8]), torch.Size([2, 1, 4, 8]))
>>> keys = torch.randn(6, 1, 8)
>>> append(layer2, keys, keys, torch.arange(6))                    # seals page 0; page 1 holds 2 staged keys
>>> k2, _ = read_pages(layer2, torch.tensor([[0, 1]]), seq_lens=torch.tensor([6]))
>>> bool(torch.equal(k2[0, :, 4:6], keys[4:6].transpose(0, 1)))   # open page: exact
True
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import KernelArgumentError, QuantizationError
from .plans import cached_plan, known_plan

FORMAT_NAME = "paged-kv"
FORMAT_VERSION = 1
#: key grouping -> format version
FORMAT_VERSIONS = {"token": 1, "channel": 2}
KEY_GROUPINGS = tuple(FORMAT_VERSIONS)
DENSE = ("float32", "float16", "bfloat16")
_SCALE_TYPES = ("float16", "bfloat16", "float32")
_STAGING_TYPES = ("float32", "float16", "bfloat16")

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FORMAT_VERSIONS", "KEY_GROUPINGS", "KVCacheFormat", "KVLayer",
           "allocate", "quantize_tokens", "dequantize_tokens", "quantize_key_pages", "dequantize_key_pages",
           "KeyAppendPlan", "plan_key_append", "append", "read_pages", "resize_staging", "layer_nbytes"]


@dataclass(frozen=True)
class KVCacheFormat:
    """Type and geometry of a paged KV cache (see the module docstring for the memory layout).

    ``group_size`` is the channels per scale of per-token groups (V always; K with ``key_grouping="token"``).
    ``key_grouping="channel"`` quantizes K per channel over each page (format ``paged-kv/v2``); its open
    pages are staged in ``staging_dtype``.
    """

    dtype: str
    num_kv_heads: int
    head_dim: int
    page_size: int = 16
    group_size: int | None = None  # channels per scale; None = head_dim (one scale per token and head)
    zero_point: bool | None = None  # None = True for uint types, False otherwise
    scale_dtype: str = "float16"
    key_grouping: str = "token"  # "token" (v1) or "channel" (v2: K scales per page and channel)
    staging_dtype: str = "float32"  # keys of open pages with key_grouping="channel"

    def __post_init__(self) -> None:
        from .dtypes import dtype as as_dtype

        d = as_dtype(self.dtype)
        object.__setattr__(self, "dtype", d.name)
        for name in ("num_kv_heads", "head_dim", "page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantizationError(f"KV cache {name} must be a positive integer, got {value!r}")
        if self.key_grouping not in KEY_GROUPINGS:
            raise QuantizationError(f"KV key_grouping must be 'token' or 'channel', got {self.key_grouping!r}",
                                    hint="'token': one scale per token and channel group (paged-kv/v1); "
                                         "'channel': K scales per channel over each page (paged-kv/v2)")
        stg = self.staging_dtype
        if not isinstance(stg, str) or as_dtype(stg).name not in _STAGING_TYPES:
            raise QuantizationError(f"KV staging_dtype must be one of {', '.join(_STAGING_TYPES)}, got {stg!r}")
        object.__setattr__(self, "staging_dtype", as_dtype(stg).name)
        if d.name in DENSE:
            if self.key_grouping == "channel":
                raise QuantizationError(f"a {d.name} KV cache stores values, not codes: it has no key grouping",
                                        hint="use key_grouping='channel' with a 1-8 bit cache type (e.g. u4)")
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
    def channel_keys(self) -> bool:
        """Whether K is quantized per channel over each page (``paged-kv/v2``)."""
        return self.key_grouping == "channel"

    @property
    def version(self) -> int:
        return FORMAT_VERSIONS[self.key_grouping]

    @property
    def format_id(self) -> str:
        """``"paged-kv/v1"`` (per-token groups) or ``"paged-kv/v2"`` (keys per channel and page)."""
        return f"{FORMAT_NAME}/v{self.version}"

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

    def _side_bytes(self, groups: int) -> int:
        return groups * _elem_size(self.scale_dtype) * (2 if self.zero_point else 1)

    def bytes_per_token(self) -> int:
        """Bytes one token occupies in one layer: K and V, all kv heads, codes + per-token scales + zeros.

        With ``key_grouping="channel"`` K's scales belong to pages, not tokens: they are in
        :meth:`bytes_per_page`, not here (nor is the staging of open pages)."""
        per_head = 2 * self.code_bytes
        if not self.dense:
            per_head += self._side_bytes(self.num_groups) * (1 if self.channel_keys else 2)
        return self.num_kv_heads * per_head

    def bytes_per_page(self) -> int:
        """Bytes one sealed page occupies in one layer (codes, scales and zeros of K and V)."""
        extra = self.num_kv_heads * self._side_bytes(self.head_dim) if self.channel_keys else 0
        return self.page_size * self.bytes_per_token() + extra

    def sequence_bytes(self, num_tokens: int) -> int:
        """Bytes decode attention reads for one sequence of ``num_tokens`` tokens in one layer: the tokens'
        codes and scales; with ``key_grouping="channel"`` the page scales of sealed pages and the staged keys
        of the open page's tokens instead of their K codes."""
        if not self.channel_keys:
            return num_tokens * self.bytes_per_token()
        sealed, open_tokens = divmod(num_tokens, self.page_size)
        staged = self.num_kv_heads * self.head_dim * _elem_size(self.staging_dtype)
        v_per_token = self.num_kv_heads * (self.code_bytes + self._side_bytes(self.num_groups))
        return sealed * self.bytes_per_page() + open_tokens * (v_per_token + staged)

    def describe(self) -> str:
        if self.dense:
            return f"{self.dtype}, page {self.page_size}"
        keys = f", K per channel ({self.staging_dtype} staging)" if self.channel_keys else ""
        return (f"{self.dtype} g{self.group_size}{' zero-point' if self.zero_point else ''} "
                f"({self.scale_dtype} scales){keys}, page {self.page_size}")


@dataclass(frozen=True)
class KVLayer:
    """One layer's pages (tensors are updated in place by :func:`append`). ``k_stage`` and ``stage_map``
    exist with ``key_grouping="channel"`` only."""

    format: KVCacheFormat
    k: Any
    v: Any
    k_scales: Any = None
    v_scales: Any = None
    k_zeros: Any = None
    v_zeros: Any = None
    k_stage: Any = None
    stage_map: Any = None
    _plans: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def launch_plan(self, key: Any, build: Any) -> Any:
        """What a kernel prepared once to run on these pages for ``key`` (launches bound to the cache
        tensors), built by ``build()`` on first use and kept with the layer (:func:`lowbit.plans.cached_plan`)."""
        return cached_plan(self._plans, key, build)

    def known_launch_plan(self, key: Any) -> Any:
        """The plan :meth:`launch_plan` built for ``key``, or None (nothing is built here)."""
        return known_plan(self._plans, key)

    @property
    def num_pages(self) -> int:
        return int(self.k.shape[0])

    @property
    def staging_slots(self) -> int:
        """Rows of ``k_stage`` (0 without per-channel keys)."""
        return 0 if self.k_stage is None else int(self.k_stage.shape[0])


def allocate(fmt: KVCacheFormat, num_pages: int, device: Any = "cpu", *, staging_slots: int | None = None,
             stage_map: Any = None) -> KVLayer:
    """Zero-filled pages for one layer.

    With ``key_grouping="channel"``: ``staging_slots`` rows of key staging (default ``num_pages``) and the
    page -> row map ``stage_map`` (an int32 ``[num_pages]`` tensor to share, e.g. across layers; default the
    identity when every page has its own row, else all ``-1``: the caller assigns rows)."""
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
    if not fmt.channel_keys:
        return KVLayer(fmt, codes(), codes(), side(), side(), *zeros)
    page_side = lambda: torch.zeros(num_pages, fmt.num_kv_heads, fmt.head_dim, dtype=sdt, device=device)  # noqa: E731
    rows = num_pages if staging_slots is None else int(staging_slots)
    stage = torch.zeros(rows, fmt.num_kv_heads, fmt.page_size, fmt.head_dim, dtype=getattr(torch, fmt.staging_dtype),
                        device=device)
    if stage_map is None:
        stage_map = (torch.arange(num_pages, dtype=torch.int32, device=device) if rows == num_pages
                     else torch.full((num_pages,), -1, dtype=torch.int32, device=device))
    return KVLayer(fmt, codes(), codes(), page_side(), side(), page_side() if fmt.zero_point else None, zeros[1],
                   stage, stage_map)


def resize_staging(layer: KVLayer, staging_slots: int) -> KVLayer:
    """``layer`` with ``staging_slots`` rows of key staging (the existing rows copied; the rest zero)."""
    import torch

    old = layer.k_stage
    new = torch.zeros(staging_slots, *old.shape[1:], dtype=old.dtype, device=old.device)
    keep = min(staging_slots, int(old.shape[0]))
    new[:keep] = old[:keep]
    return replace(layer, k_stage=new)


def quantize_tokens(fmt: KVCacheFormat, x: Any) -> tuple[Any, Any, Any]:
    """``x`` ``[..., D]`` -> ``(codes [..., B] uint8, scales [..., D//g], zeros or None)`` (dense: ``(x, None, None)``).

    The same bits as ``quantize_arrays(x, fmt.dtype, ...)`` (the rule in the module doc), by the format's
    :class:`lowbit.quant.rows.RowQuantizer`: a decode step appends a few rows per layer, where the general
    quantizer's checks cost more than the arithmetic."""
    import torch

    if fmt.dense:
        return x.to(getattr(torch, fmt.dtype)), None, None
    lead = tuple(x.shape[:-1])
    packed, scales, zeros = _row_quantizer(fmt.dtype, fmt.group_size, fmt.zero_point, fmt.scale_dtype)(
        x.reshape(-1, fmt.head_dim).to(torch.float32))
    zeros = None if zeros is None else zeros.reshape(*lead, fmt.num_groups)
    return packed.reshape(*lead, fmt.code_bytes), scales.reshape(*lead, fmt.num_groups), zeros


@functools.lru_cache(maxsize=None)
def _row_quantizer(dtype: str, group_size: int, zero_point: bool, scale_dtype: str) -> Any:
    from .quant.rows import RowQuantizer

    return RowQuantizer(dtype, group_size, zero_point, scale_dtype)


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


def quantize_key_pages(fmt: KVCacheFormat, keys: Any) -> tuple[Any, Any, Any]:
    """Full pages of keys ``[N, H, S, D]`` -> ``(codes [N, H, S, B] uint8, scales [N, H, D], zeros or None)``:
    each channel quantized over the page's ``S`` tokens, exactly as ``lowbit.quant.quantize`` quantizes the
    transposed page ``[D, S]`` with one group per row (the keys are first rounded to ``staging_dtype``)."""
    import torch

    from .packing import pack
    from .quant import quantize

    n, h, s, d = (int(v) for v in keys.shape)
    staged = keys.to(getattr(torch, fmt.staging_dtype)).to(torch.float32)
    rows = staged.transpose(-1, -2).reshape(n * h * d, s)
    qt = quantize(rows, fmt.dtype, group_size=s, zero_point=fmt.zero_point, scale_dtype=fmt.scale_dtype)
    codes = qt.codes().reshape(n, h, d, s).transpose(-1, -2).contiguous()
    zeros = None if qt.zeros is None else qt.zeros.reshape(n, h, d)
    return pack(codes, fmt.nbits, axis=-1), qt.scales.reshape(n, h, d), zeros


def dequantize_key_pages(fmt: KVCacheFormat, codes: Any, scales: Any, zeros: Any = None) -> Any:
    """The fp32 keys ``[..., S, D]`` of sealed pages from codes ``[..., S, B]`` and per-channel ``[..., D]``."""
    import torch

    from .dtypes import dtype as as_dtype
    from .packing import unpack

    values = as_dtype(fmt.dtype).decode(unpack(codes, fmt.nbits, fmt.head_dim, axis=-1)).to(torch.float32)
    if zeros is not None:
        values = values - zeros.to(torch.float32)[..., None, :]
    return values * scales.to(torch.float32)[..., None, :]


@dataclass(frozen=True)
class KeyAppendPlan:
    """What an append writes for per-channel keys: staged rows and the pages it seals.

    ``stage_rows [T']`` flat staging rows (``stage_map[page] * S + offset``) receive ``stage_values
    [T', H, D]``; pages ``sealed [N]`` receive ``codes [N, H, S, B]``, ``scales [N, H, D]``, ``zeros``."""

    stage_rows: Any
    stage_values: Any
    sealed: Any
    codes: Any
    scales: Any
    zeros: Any


def plan_key_append(layer: KVLayer, k: Any, slots: Any) -> KeyAppendPlan:
    """The writes that append keys ``k [T, H, D]`` at ``slots [T]`` to a ``key_grouping="channel"`` layer.

    A page whose offset ``S - 1`` is among ``slots`` is sealed: its keys are the staged ones (earlier
    appends) overlaid with this append's, quantized by :func:`quantize_key_pages`. Other tokens are staged.
    Nothing is written here; :func:`append` and the ``kv_append`` kernels apply the plan."""
    import torch

    fmt = layer.format
    size = fmt.page_size
    slots = slots.to(layer.k.device).long()
    staged = k.to(device=layer.k.device, dtype=getattr(torch, fmt.staging_dtype))
    page, offset = slots // size, slots % size
    sealed = torch.unique(page[offset == size - 1])
    in_sealed = torch.isin(page, sealed)
    if sealed.numel():
        rows = layer.stage_map[sealed].long().clamp(min=0)
        full = layer.k_stage[rows].clone()                        # [N, H, S, D]: earlier offsets
        which = torch.searchsorted(sealed, page[in_sealed])
        full[which, :, offset[in_sealed]] = staged[in_sealed]     # this append's offsets
        codes, scales, zeros = quantize_key_pages(fmt, full)
    else:
        codes = scales = zeros = None
    rest = ~in_sealed
    row = layer.stage_map[page[rest]].long()
    if row.numel() and row.device.type == "cpu" and (int(row.min()) < 0 or int(row.max()) >= layer.staging_slots):
        bad = int(page[rest][(row < 0) | (row >= layer.staging_slots)][0])
        raise KernelArgumentError(f"page {bad} gets staged keys, but stage_map gives it row "
                                  f"{int(layer.stage_map[bad])}, outside [0, {layer.staging_slots})",
                                  hint="assign each open page a row of k_stage in stage_map")
    stage_rows = row * size + offset[rest]
    return KeyAppendPlan(stage_rows, staged[rest], sealed, codes, scales, zeros)


def append(layer: KVLayer, k: Any, v: Any, slots: Any) -> None:
    """Quantize ``k``, ``v`` ``[T, H, D]`` and store token ``t`` at flat slot ``slots[t]`` (in place)."""
    fmt = layer.format
    slots = slots.to(layer.k.device).long()
    page, offset = slots // fmt.page_size, slots % fmt.page_size
    sides = [(v, layer.v, layer.v_scales, layer.v_zeros)]
    if fmt.channel_keys:
        plan = plan_key_append(layer, k, slots)
        rows, offs = plan.stage_rows // fmt.page_size, plan.stage_rows % fmt.page_size
        layer.k_stage[rows, :, offs] = plan.stage_values
        if plan.codes is not None:
            layer.k[plan.sealed] = plan.codes
            layer.k_scales[plan.sealed] = plan.scales
            if plan.zeros is not None:
                layer.k_zeros[plan.sealed] = plan.zeros
    else:
        sides.insert(0, (k, layer.k, layer.k_scales, layer.k_zeros))
    for x, codes, scales, zeros in sides:
        q, s, z = quantize_tokens(fmt, x)
        codes[page, :, offset] = q  # advanced indices around a slice: the value is [T, H, ...]
        if s is not None:
            scales[page, :, offset] = s
        if z is not None:
            zeros[page, :, offset] = z


def read_pages(layer: KVLayer, block_tables: Any, seq_lens: Any = None) -> tuple[Any, Any]:
    """Dequantized K and V of the pages in ``block_tables`` ``[B, P]``: each fp32 ``[B, H, P * S, D]``,
    token ``t`` of row ``b`` at index ``t`` (page ``block_tables[b, t // S]``, offset ``t % S``).

    With ``key_grouping="channel"`` the lengths ``seq_lens [B]`` are needed: they say which page of each row
    is open (its keys come from staging); tokens past a row's length hold whatever the pages hold."""
    import torch

    fmt = layer.format
    idx = block_tables.to(layer.k.device).long()
    b, p = (int(v) for v in idx.shape)
    if fmt.channel_keys:
        if seq_lens is None:
            raise KernelArgumentError("read_pages of a paged-kv/v2 cache (keys per channel) needs seq_lens: the "
                                      "last page of each sequence may be open, its keys in staging",
                                      hint="pass seq_lens=[tokens per row]")
        keys = dequantize_key_pages(fmt, layer.k[idx], layer.k_scales[idx],
                                    None if layer.k_zeros is None else layer.k_zeros[idx])  # [B, P, H, S, D]
        lens = seq_lens.to(layer.k.device).long()
        open_rows = torch.nonzero(lens % fmt.page_size != 0).reshape(-1)
        last = (lens[open_rows] - 1) // fmt.page_size
        stage_rows = layer.stage_map[idx[open_rows, last]].long()
        keys[open_rows, last] = layer.k_stage[stage_rows].to(torch.float32)
        sides = [keys, _dequantize_pages(fmt, layer.v, layer.v_scales, layer.v_zeros, idx)]
    else:
        sides = [_dequantize_pages(fmt, layer.k, layer.k_scales, layer.k_zeros, idx),
                 _dequantize_pages(fmt, layer.v, layer.v_scales, layer.v_zeros, idx)]
    h, s, d = fmt.num_kv_heads, fmt.page_size, fmt.head_dim
    return tuple(vals.permute(0, 2, 1, 3, 4).reshape(b, h, p * s, d) for vals in sides)


def _dequantize_pages(fmt: KVCacheFormat, codes: Any, scales: Any, zeros: Any, idx: Any) -> Any:
    return dequantize_tokens(fmt, codes[idx], None if scales is None else scales[idx],
                             None if zeros is None else zeros[idx])  # [B, P, H, S, D]


def layer_nbytes(layer: KVLayer) -> int:
    """Bytes of one layer's page storage (staging included)."""
    parts = (layer.k, layer.v, layer.k_scales, layer.v_scales, layer.k_zeros, layer.v_zeros, layer.k_stage,
             layer.stage_map)
    return sum(t.numel() * t.element_size() for t in parts if t is not None)


def _elem_size(name: str) -> int:
    return {"float16": 2, "bfloat16": 2, "float32": 4}[name]
