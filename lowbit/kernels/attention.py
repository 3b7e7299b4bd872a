"""Host side of decode attention and KV append over the paged cache (``attention.lbk``).

The cache is :mod:`lowbit.kvcache`'s ``paged-kv/v1`` or ``paged-kv/v2`` format, read by the kernel as it is
stored (no repacking): codes are dense little-endian bitstreams per token and head, which the kernel
reinterprets with ``view``. Functions here trust their inputs (``lowbit.ops`` checks them).

* :func:`run_decode_attention`: one launch of ``decode_attention`` (grid ``B x Hkv x splits``) and, with
  split-KV, one of ``attention_merge``. With keys per channel (v2) the kernel reads each sequence's sealed
  pages from codes with one scale row per page (``k_scales [P, H, D]`` passed as ``[P, H, 1, D]``) and its
  open last page from ``k_stage`` (row ``stage_map[page]``), choosing per page with a run-time ``if``;
* :func:`run_kv_append`: a dense (float16 / bfloat16 / float32) cache takes keys and values in one ``kv_store``
  launch; integer codes, symmetric or with zero points, and float codes with a mantissa, with float16 /
  bfloat16 scales (:func:`quantize_constants`) are quantized into their pages by the ``kv_quantize`` kernel,
  whose float32 arithmetic gives the bits of the format's float64 quantizer (the argument is in the kernel);
  other formats (float codes without a mantissa, float32 scales) are quantized on the host
  (:func:`lowbit.kvcache.quantize_tokens`) and written with the ``kv_scatter`` kernel. Keys per channel are
  staged with ``kv_scatter``; an append that seals a page (decided with ``host_decision``) quantizes it on the
  host (:func:`lowbit.kvcache.plan_key_append`).

>>> import torch
>>> from lowbit import kvcache
>>> fmt = kvcache.KVCacheFormat("int8", num_kv_heads=1, head_dim=16, page_size=4)
>>> layer = kvcache.allocate(fmt, num_pages=3)
>>> k = torch.randn(6, 1, 16); v = torch.randn(6, 1, 16)
>>> run_kv_append(layer, k, v, torch.tensor([8, 9, 10, 11, 0, 1]), "interpret")
>>> q = torch.randn(1, 2, 16)
>>> out = run_decode_attention(q, layer, torch.tensor([[2, 0]], dtype=torch.int32),
...                            torch.tensor([6], dtype=torch.int32), 0.25, None, 1, "interpret")
>>> out.shape
torch.Size([1, 2, 16])
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from .library import compiled, pow2_at_least

__all__ = ["AttentionPlan", "attention_constants", "attention_plan", "choose_splits", "quantize_constants",
           "run_decode_attention", "run_kv_append", "store_launch"]

FILE = "attention.lbk"


def _side(fmt: Any, prefix: str) -> dict[str, Any]:
    """The kernel constants describing one of K / V (``prefix`` "K" or "V") in format ``fmt``."""
    dense = fmt.dense
    return {f"{prefix}DENSE": int(dense), f"{prefix}ST": fmt.dtype if dense else "uint8", f"{prefix}V": fmt.dtype,
            f"{prefix}W": fmt.head_dim if dense else fmt.code_bytes,
            f"{prefix}G": fmt.head_dim if dense else fmt.group_size, f"{prefix}Z": int(bool(fmt.zero_point))}


def attention_constants(fmt: Any, q_dtype: str, num_q_heads: int, window: int | None, splits: int,
                        out_dtype: str | None = None) -> dict[str, Any]:
    """The constants of ``decode_attention`` for a cache format, query dtype, head count, split count and output
    dtype (None: the query's)."""
    consts = dict(QT=q_dtype, OT=out_dtype or q_dtype, D=fmt.head_dim, QG=num_q_heads // fmt.num_kv_heads,
                  PAGE=fmt.page_size,
                  KSD=fmt.scale_dtype if not fmt.dense else "float16",
                  VSD=fmt.scale_dtype if not fmt.dense else "float16",
                  KCHAN=int(fmt.channel_keys), KSG=fmt.staging_dtype, WINDOW=int(window or 0), SPLIT=splits)
    consts.update(_side(fmt, "K"))
    consts.update(_side(fmt, "V"))
    return consts


def choose_splits(batch: int, kv_heads: int, max_pages: int, device: Any, backend: str) -> int:
    """How many parts to split each sequence's pages into: enough programs to fill the device when
    ``batch * kv_heads`` alone does not, never fewer than 4 pages per part, at most 16 parts."""
    import torch

    if backend == "interpret" or (backend == "triton" and device.type != "cuda"):
        return 1
    if device.type == "cuda":
        workers = int(torch.cuda.get_device_properties(device).multi_processor_count)
    else:
        from ..lowering.target import cpu_threads

        workers = cpu_threads()
    programs = batch * kv_heads
    if programs >= workers:
        return 1
    return max(1, min(-(-workers // programs), max_pages // 4, 16))


def _placeholder(dtype: str, device: Any) -> Any:
    import torch

    return torch.zeros(1, 1, 1, 1, dtype=getattr(torch, dtype), device=device)


def run_decode_attention(q: Any, layer: Any, block_tables: Any, seq_lens: Any, scale: float,
                         window: int | None, splits: int, backend: str, out_dtype: Any = None) -> Any:
    """``softmax(q k^T * scale) v`` per sequence over its cached tokens, ``[B, Hq, D]`` in ``out_dtype`` (None:
    ``q``'s dtype).

    ``q`` contiguous ``[B, Hq, D]``; ``block_tables`` contiguous int32 ``[B, MP]``; ``seq_lens`` int32
    ``[B]`` (each at least 1); ``splits`` parts of split-KV (1: no split). The launches are bound to the
    layer's pages once per call shape (:func:`attention_plan`, kept with the layer).
    """
    return attention_plan(q, layer, block_tables, scale, window, splits, backend, out_dtype).run(q, block_tables,
                                                                                                  seq_lens)


def attention_plan(q: Any, layer: Any, block_tables: Any, scale: float, window: int | None, splits: int,
                   backend: str, out_dtype: Any = None) -> "AttentionPlan":
    """The launches of :func:`run_decode_attention` for ``q``'s dtype, shape and device and ``block_tables``'
    shape (int32 when run), bound to ``layer``'s pages: built on first use, then kept with the layer."""
    b, hq, _ = q.shape
    out_dtype = q.dtype if out_dtype is None else out_dtype
    key = ("decode_attention", int(b), int(hq), q.dtype, out_dtype, q.device, int(block_tables.shape[1]),
           float(scale), window, splits, backend)
    return layer.launch_plan(key, lambda: AttentionPlan.build(q, layer, block_tables, scale, window, splits,
                                                               backend, out_dtype))


def _split_parts(splits: int, b: int, hq: int, d: int, device: Any) -> dict[str, Any]:
    """Split-KV's partial outputs, maxima and sums (``po``, ``pm``, ``pl``); placeholders for one split."""
    import torch

    if splits == 1:
        return dict(po=torch.empty(1, 1, 1, 1, dtype=torch.float32, device=device),
                    pm=torch.empty(1, 1, 1, dtype=torch.float32, device=device),
                    pl=torch.empty(1, 1, 1, dtype=torch.float32, device=device))
    return dict(po=torch.empty(splits, b, hq, d, dtype=torch.float32, device=device),
                pm=torch.empty(splits, b, hq, dtype=torch.float32, device=device),
                pl=torch.empty(splits, b, hq, dtype=torch.float32, device=device))


@dataclass(frozen=True)
class AttentionPlan:
    """``decode_attention`` (and with split-KV ``attention_merge``) bound to one layer's pages for one call
    shape: ``main`` takes ``q``, ``block_table``, ``seq_lens``, ``o`` (and ``po``, ``pm``, ``pl`` with
    split-KV), ``merge`` takes ``po``, ``pm``, ``pl``, ``o``; ``new_output`` and ``new_parts`` allocate the
    output and split-KV's partial results."""

    main: Any
    new_output: Callable[[], Any]
    merge: Any = None
    new_parts: Callable[[], dict[str, Any]] | None = None

    def run(self, q: Any, block_tables: Any, seq_lens: Any) -> Any:
        """The attention of ``q`` (of the dtype, shape and device the plan was built for, like ``block_tables``
        and ``seq_lens``: only their memory layout is checked here) into a new output."""
        out = self.new_output()
        if self.merge is None:
            self.main.trusted(q, block_tables, seq_lens, out)
            return out
        parts = self.new_parts()
        self.main.trusted(q, block_tables, seq_lens, out, parts["po"], parts["pm"], parts["pl"])
        self.merge.trusted(parts["po"], parts["pm"], parts["pl"], out)
        return out

    @staticmethod
    def build(q: Any, layer: Any, block_tables: Any, scale: float, window: int | None, splits: int, backend: str,
              out_dtype: Any) -> "AttentionPlan":
        import torch

        fmt = layer.format
        device = q.device
        kind = "cuda" if device.type == "cuda" else "cpu"
        b, hq, d = (int(v) for v in q.shape)
        q_dtype, o_dtype = (str(t).removeprefix("torch.") for t in (q.dtype, out_dtype))
        consts = attention_constants(fmt, q_dtype, hq, window, splits, o_dtype)
        kernel = compiled(FILE, "decode_attention", backend, kind, **consts)
        ksd, vsd = consts["KSD"], consts["VSD"]
        new_output = functools.partial(torch.empty, (b, hq, d), dtype=out_dtype, device=device)
        new_parts = functools.partial(_split_parts, splits, b, hq, d, device)
        parts = new_parts()
        ks, kz = layer.k_scales, layer.k_zeros
        if fmt.channel_keys:  # one scale row per page: the kernel reads [page, head, 0, :]
            ks = ks.view(ks.shape[0], ks.shape[1], 1, ks.shape[2])
            kz = None if kz is None else kz.view(ks.shape)
            stage, stage_map = layer.k_stage, layer.stage_map
        else:
            stage, stage_map = _placeholder(fmt.staging_dtype, device), torch.zeros(1, dtype=torch.int32, device=device)
        out = new_output()
        # the varying tensors are examples of the dtypes and shapes (any layout: the caller's may be strided)
        q = torch.empty((b, hq, d), dtype=q.dtype, device=device)
        block_tables = torch.zeros(tuple(block_tables.shape), dtype=torch.int32, device=device)
        args = dict(q=q, kc=layer.k, vc=layer.v, kstage=stage, stage_map=stage_map,
                    ks=ks if ks is not None else _placeholder(ksd, device),
                    kz=kz if kz is not None else _placeholder(ksd, device),
                    vs=layer.v_scales if layer.v_scales is not None else _placeholder(vsd, device),
                    vz=layer.v_zeros if layer.v_zeros is not None else _placeholder(vsd, device),
                    block_table=block_tables, seq_lens=torch.ones(b, dtype=torch.int32, device=device), o=out,
                    sm_scale=float(scale), **parts)
        vary = ("q", "block_table", "seq_lens", "o") + (("po", "pm", "pl") if splits > 1 else ())
        main = kernel.bind(args, vary, check=False)     # every argument is built here to the signature
        if splits == 1:
            return AttentionPlan(main, new_output)
        merge = compiled(FILE, "attention_merge", backend, kind, OT=o_dtype, SPLIT=splits, D=d,
                         BH=min(pow2_at_least(hq), 16))
        return AttentionPlan(main, new_output, merge.bind(dict(o=out, **parts), ("po", "pm", "pl", "o"), check=False),
                             new_parts)


#: significant bits of the scale types the ``kv_quantize`` kernel rounds to (its argument that float32
#: quotients round like exact ones needs short scales: float32 scales stay with the host's quantizer)
_SCALE_BITS = {"float16": 11, "bfloat16": 8}


@functools.lru_cache(maxsize=None)
def quantize_constants(fmt: Any) -> dict[str, Any] | None:
    """The ``kv_quantize`` constants for a cache format whose tokens that kernel quantizes, else None.

    It takes integer codes, symmetric (int2..int8) or with zero points (int1..int8, uint1..uint8), and float
    codes with a mantissa (``float8_e4m3fn``, ``float4_e2m1``, ...; not the ``e*m0`` ones), with float16 /
    bfloat16 scales, a head dimension of whole 32-code words; other formats are quantized on the host
    (:func:`lowbit.kvcache.quantize_tokens`). Either way the bits are the same.

    >>> from lowbit.kvcache import KVCacheFormat
    >>> quantize_constants(KVCacheFormat("int4", num_kv_heads=2, head_dim=64))["WORDS"]
    8
    >>> quantize_constants(KVCacheFormat("uint4", num_kv_heads=2, head_dim=64))["QMAX"]   # zero points
    15
    >>> quantize_constants(KVCacheFormat("float4_e2m1", num_kv_heads=2, head_dim=64))["LEVELS"]
    6.0
    >>> quantize_constants(KVCacheFormat("float3_e2m0", num_kv_heads=2, head_dim=64)) is None
    True
    """
    from ..dtypes import dtype as as_dtype

    if fmt.dense or fmt.scale_dtype not in _SCALE_BITS or fmt.head_dim % 32:
        return None
    d = as_dtype(fmt.dtype)
    scale = as_dtype(fmt.scale_dtype)
    common = dict(SD=fmt.scale_dtype, BITS=d.nbits, D=fmt.head_dim, G=fmt.group_size,
                  WORDS=fmt.head_dim * d.nbits // 32, PAGE=fmt.page_size, DROP=24 - _SCALE_BITS[fmt.scale_dtype],
                  TINY=float(scale.smallest_normal))
    if d.is_float:
        if fmt.zero_point or d.mantissa_bits < 1:      # (e*m0: ties go to the even code, not the even mantissa)
            return None
        return dict(common, ZP=0, LEVELS=float(d.max), QMIN=0, QMAX=0, FLOAT=1, MBITS=d.mantissa_bits,
                    BIAS=d.bias, NORMAL=d.smallest_normal)
    if d.kind not in ("int", "uint") or (not fmt.zero_point and (d.kind != "int" or d.nbits < 2)):
        return None
    if fmt.zero_point:
        levels, qmin, qmax = 2 ** d.nbits - 1, int(d.min), int(d.max)
    else:
        levels = 2 ** (d.nbits - 1) - 1
        qmin, qmax = -levels, levels
    return dict(common, ZP=int(fmt.zero_point), LEVELS=levels, QMIN=qmin, QMAX=qmax)


@functools.lru_cache(maxsize=None)
def _scale_max(scale_dtype: str) -> float:
    from ..dtypes import dtype as as_dtype

    return float(as_dtype(scale_dtype).max)


#: with zero points the kernel adds and multiplies magnitudes up to 2 * LEVELS * max |x| in float32: inputs
#: beyond this bound (far beyond any activation) keep the host's quantizer
_ZP_INPUT_BOUND = 2.0 ** 100


def _quantizable(values: list[Any], constants: dict[str, Any]) -> bool:
    """Every value finite with a scale inside the scale type's range: what the kernel assumes (the host's
    quantizer raises its usual error for the rest). With zero points the range ``hi - lo`` is at most twice
    the largest magnitude (a conservative test: a scale near the top of the range may take the host path).
    Decided on the host from each tensor's largest magnitude (``host_decision``: a replayed decode step checks it
    again)."""
    import torch

    from ..lowering.tvm.launcher import host_decision

    def fits(magnitudes: list[float]) -> bool:
        bound = max(magnitudes, default=0.0)
        if constants["ZP"]:
            return bound <= _ZP_INPUT_BOUND and 2 * bound / constants["LEVELS"] <= _scale_max(constants["SD"])
        return bound / constants["LEVELS"] <= _scale_max(constants["SD"])     # False for NaN and inf

    return host_decision([torch.linalg.vector_norm(x, float("inf")) for x in values if x.numel()], fits)


def _quantize_into(layer: Any, side: str, x: Any, slots: Any, codes: Any, scales: Any, zeros: Any,
                   constants: dict[str, Any], backend: str) -> None:
    """``kv_quantize``: tokens ``x [T, H, D]`` quantized into ``codes`` / ``scales`` (/ ``zeros``) at ``slots``
    (bound once per source shape and kept with the layer)."""
    import torch

    kind = "cuda" if x.device.type == "cuda" else "cpu"

    def bind() -> Any:
        kernel = compiled(FILE, "kv_quantize", backend, kind, T=str(x.dtype).removeprefix("torch."), **constants)
        held = zeros if zeros is not None else torch.zeros(1, scales.shape[1], 1, scales.shape[-1],
                                                          dtype=scales.dtype, device=scales.device)
        return kernel.bind(dict(src=x, slots=slots, codes=codes.view(torch.int32), scales=scales, zeros=held),
                           ("src", "slots"))

    layer.launch_plan(("kv_quantize", side, tuple(x.shape), x.dtype, backend), bind).trusted(x, slots)


def _staging_rows(layer: Any, slots: Any) -> Any:
    """The flat rows of ``k_stage`` (``stage_map[page] * S + offset``) that an append at int32 ``slots`` to a
    keys-per-channel ``layer`` writes, when that is all it does (no token takes its page's last offset, which
    seals the page); else None. Decided on the host with ``host_decision``, so that a replayed decode step
    (almost every one: a page seals once in ``page_size`` tokens) decides again."""
    from ..lowering.tvm.launcher import host_decision

    size = layer.format.page_size
    offsets = slots % size
    if not host_decision([offsets.amax()], lambda v: v[0] < size - 1):
        return None
    return layer.stage_map[slots // size] * size + offsets


def _kernel_float(x: Any, device: Any) -> Any:
    """Tokens ``x`` on ``device`` as float16, bfloat16 or float32 (their own type when it is one of those; else
    float32, as the host quantizer reads them)."""
    import torch

    if x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return x.to(device=device)
    return x.to(device=device, dtype=torch.float32)


def store_launch(layer: Any, k: Any, v: Any, backend: str) -> Any:
    """``kv_store`` bound to ``layer``'s dense pages for tokens shaped and typed like ``k``, ``v [T, H, D]``
    (float16, bfloat16 or float32, each its own; bound once, kept with the layer): ``.trusted(k, v, slots)``
    rounds each token once into the cache at its int32 slot."""
    import torch

    fmt = layer.format

    def bind() -> Any:
        kernel = compiled(FILE, "kv_store", backend, "cuda" if k.device.type == "cuda" else "cpu",
                          KT=str(k.dtype).removeprefix("torch."), VT=str(v.dtype).removeprefix("torch."),
                          DT=fmt.dtype, HH=fmt.num_kv_heads, D=fmt.head_dim, PAGE=fmt.page_size)
        examples = dict(k=torch.empty(k.shape, dtype=k.dtype, device=k.device),     # (shapes and dtypes: the
                        v=torch.empty(v.shape, dtype=v.dtype, device=v.device),     # tensors vary per call)
                        slots=torch.zeros(int(k.shape[0]), dtype=torch.int32, device=k.device))
        return kernel.bind(dict(examples, kc=layer.k, vc=layer.v), ("k", "v", "slots"))

    return layer.launch_plan(("kv_store", tuple(k.shape), k.dtype, v.dtype, backend), bind)


def run_kv_append(layer: Any, k: Any, v: Any, slots: Any, backend: str) -> None:
    """Quantize ``k``, ``v`` ``[T, Hkv, D]`` and store token ``t`` at flat slot ``slots[t]`` (``kv_store``,
    ``kv_quantize``, or the host's quantizer and ``kv_scatter``).

    Keys per channel (v2): the keys go to their pages' staging rows, and the pages this append seals get their
    codes and per-channel scales (:func:`lowbit.kvcache.plan_key_append`, on the host: a recorded decode step
    that seals a page is not kept, see :mod:`lowbit.runtime.cpu_graphs`)."""
    import torch

    fmt = layer.format
    device = layer.k.device
    slots32 = slots.to(device=device, dtype=torch.int32).contiguous()
    if int(slots32.shape[0]) == 0:
        return
    if fmt.dense:       # (never with keys per channel)
        k, v = _kernel_float(k, device).contiguous(), _kernel_float(v, device).contiguous()
        store_launch(layer, k, v, backend).trusted(k, v, slots32)
        return
    from ..kvcache import plan_key_append, quantize_tokens
    from ..lowering.tvm.launcher import host_work

    kind = "cuda" if device.type == "cuda" else "cpu"

    def scatter(src: Any, rows: Any, dst: Any, page: int, what: str) -> None:
        """``dst [*, H, page, W]`` (the layer's ``what``) row ``rows[t]`` (flat ``index * page + offset``)
        <- ``src [t]``; the launch is bound to ``dst`` once per source shape (kept with the layer)."""
        if src is None or int(src.shape[0]) == 0:
            return
        src = src.contiguous()
        rows = rows.to(device=device, dtype=torch.int32).contiguous()

        def bind() -> Any:
            kernel = compiled(FILE, "kv_scatter", backend, kind, T=str(src.dtype).removeprefix("torch."),
                              HH=int(src.shape[1]), WW=int(src.shape[2]), PAGE=page, BT=16)
            return kernel.bind(dict(src=src, slots=rows, dst=dst), ("src", "slots"))

        layer.launch_plan(("kv_scatter", what, tuple(src.shape), src.dtype, page, backend), bind)(src=src, slots=rows)

    sides = [("v", v, layer.v, layer.v_scales, layer.v_zeros)]
    stage_rows = _staging_rows(layer, slots32) if fmt.channel_keys else None
    if stage_rows is not None:
        staged = k.to(device=device, dtype=getattr(torch, fmt.staging_dtype))
        scatter(staged, stage_rows, layer.k_stage, fmt.page_size, "k_stage")
    elif fmt.channel_keys:
        host_work("keys per channel: the pages an append seals are found and quantized on the host", transient=True)
        plan = plan_key_append(layer, k.to(device=device, dtype=torch.float32), slots32)
        scatter(plan.stage_values, plan.stage_rows, layer.k_stage, fmt.page_size, "k_stage")
        if plan.codes is not None:
            n, h, size = int(plan.sealed.shape[0]), fmt.num_kv_heads, fmt.page_size
            token_rows = (plan.sealed[:, None] * size + torch.arange(size, device=device)[None, :]).reshape(-1)
            scatter(plan.codes.transpose(1, 2).reshape(n * size, h, -1), token_rows, layer.k, size, "k")
            for src, dst, what in ((plan.scales, layer.k_scales, "k_scales"), (plan.zeros, layer.k_zeros, "k_zeros")):
                if src is not None:  # [P, H, D] seen as pages of one row
                    scatter(src, plan.sealed, dst.view(dst.shape[0], h, 1, dst.shape[2]), 1, what)
    else:
        sides.insert(0, ("k", k, layer.k, layer.k_scales, layer.k_zeros))
    fused = quantize_constants(fmt)
    if fused is not None and _quantizable([x for _, x, *_ in sides], fused):
        for side, x, codes, scales, zeros in sides:
            _quantize_into(layer, side, _kernel_float(x, device).contiguous(), slots32, codes, scales, zeros, fused,
                           backend)
        return
    # one quantizer call for both sides: its fixed cost is most of a low-bit append's host time
    host_work("a low-bit KV cache's host quantizer")
    values = [x.to(device=device, dtype=torch.float32) for _, x, *_ in sides]
    parts = [p.split(int(k.shape[0])) if p is not None else [None] * len(sides)
             for p in quantize_tokens(fmt, torch.cat(values))]
    quantized = list(zip(*parts))
    for (side, _, codes, scales, zeros), (qc, qs, qz) in zip(sides, quantized):
        for src, dst, what in ((qc, codes, side), (qs, scales, f"{side}_scales"), (qz, zeros, f"{side}_zeros")):
            scatter(src, slots32, dst, fmt.page_size, what)
