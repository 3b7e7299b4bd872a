"""lowbit's kernels as torch-facing operations: low-bit matmul, paged KV append and decode attention, and the
decoder layer's RMSNorm, rotary embeddings and gated SiLU.

Every op checks its arguments (raising :class:`lowbit.KernelArgumentError` / :class:`lowbit.FormatError`
with what was expected), picks a backend and runs kernels from :mod:`lowbit.kernels`, which are written
in lowbit's DSL and compiled by :func:`lowbit.driver.compile_ir`.

``backend``: ``"triton"``, ``"tvm"``, ``"interpret"`` (lowbit's reference interpreter: CPU only, slow,
always there) or ``None``: the best available for the tensors' device (Triton on CUDA, TVM on a CPU).

>>> import torch
>>> from lowbit.quant import quantize
>>> w = quantize(torch.randn(64, 128), "uint4", group_size=32, zero_point=True)
>>> x = torch.randn(3, 128)
>>> y = matmul(x, w, backend="interpret")
>>> y.shape, bool(torch.allclose(y, x @ w.dequantize().T, atol=1e-4))
(torch.Size([3, 64]), True)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from .errors import FormatError, KernelArgumentError
from .kernels.attention import AttentionPlan, attention_plan, choose_splits, run_kv_append, store_launch
from .kernels.decoder import RowsLaunch, add_rms_norm_launch, rms_norm_launch, rope_launch, silu_mul_launch
from .kernels.library import device_of, resolve_backend
from .kernels.matmul import MatmulPlan, matmul_plan
from .kvcache import KVLayer
from .plans import cached_plan
from .quant import DENSE_ROWMAJOR, QuantizedTensor

__all__ = ["matmul", "decode_attention", "kv_append", "rms_norm", "add_rms_norm", "rope", "silu_mul"]

_ACT_DTYPES = ("float16", "bfloat16", "float32")
#: the types of scalar options that may key a checked call signature (hashable, checked by value)
_PLAIN = (int, float, type(None))


# ---------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------
def _torch() -> Any:
    import torch

    return torch


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def _need_tensor(op: str, name: str, value: Any) -> None:
    if not isinstance(value, _torch().Tensor):
        raise KernelArgumentError(f"{op}: {name} must be a torch tensor; got {type(value).__name__}")


def _need_float(op: str, name: str, value: Any) -> None:
    _need_tensor(op, name, value)
    if _dtype_name(value) not in _ACT_DTYPES:
        raise KernelArgumentError(f"{op}: {name} must be float16, bfloat16 or float32; got {_dtype_name(value)}",
                                  hint=f"convert it with {name}.float()")


def _need_int(op: str, name: str, value: Any) -> None:
    _need_tensor(op, name, value)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == _torch().bool:
        raise KernelArgumentError(f"{op}: {name} must be an integer tensor; got {_dtype_name(value)}")


def _need_shape(op: str, name: str, value: Any, expected: tuple, meaning: str) -> None:
    if tuple(int(s) for s in value.shape) != tuple(expected):
        raise KernelArgumentError(f"{op}: {name} must have shape {list(expected)} ({meaning}); "
                                  f"got {list(value.shape)}")


def _need_device(op: str, name: str, value: Any, device: Any) -> None:
    if value.device != device:
        raise KernelArgumentError(f"{op}: {name} is on {value.device}, but the other arguments are on {device}",
                                  hint=f"move it with .to('{device}')")


def _check_out_dtype(op: str, out_dtype: Any) -> None:
    """``out_dtype`` is None (the input's dtype) or a float type a kernel writes (checked before it keys a call
    signature: an unhashable value is this error, not a TypeError from the lookup)."""
    torch = _torch()
    if out_dtype is not None and out_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise KernelArgumentError(f"{op}: out_dtype must be torch.float16, torch.bfloat16 or torch.float32 (or None "
                                  f"for the input's dtype); got {out_dtype!r}")


def _need_contiguous(op: str, name: str, value: Any) -> None:
    if not value.is_contiguous():
        raise KernelArgumentError(f"{op}: {name} must be contiguous (the kernel updates or reads it in place as "
                                  f"laid out by lowbit.kvcache.allocate)",
                                  hint="allocate the cache with lowbit.kvcache.allocate and do not slice it")


# ---------------------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------------------
def matmul(x: Any, qweight: Any, bias: Any = None, *, backend: str | None = None, out_dtype: Any = None) -> Any:
    """``x [..., K] @ W.T (+ bias)`` for a quantized weight ``W [N, K]``; ``[..., N]`` in ``out_dtype``.

    ``qweight``: a :class:`lowbit.quant.QuantizedTensor` of shape ``[N, K]`` of any 1-8 bit type, any group
    size, with or without zero points (numpy storage is accepted with CPU tensors). Its codes are repacked
    once into the kernel's storage and cached on it. Products and sums are f32; the result is rounded once,
    to ``out_dtype``: ``torch.float16``, ``bfloat16`` or ``float32``; None (the default) is ``x``'s dtype.
    A model that keeps its residual stream in f32 takes f32 straight from the kernel (no conversion, no
    rounding to the activations' type in between). ``bias``: ``[N]`` float or ``None``.

    >>> import torch
    >>> from lowbit.quant import quantize
    >>> w = quantize(torch.randn(8, 64), "float4_e2m1", group_size=None)
    >>> matmul(torch.randn(2, 5, 64, dtype=torch.float16), w, backend="interpret").shape
    torch.Size([2, 5, 8])
    >>> matmul(torch.randn(3, 64, dtype=torch.bfloat16), w, backend="interpret", out_dtype=torch.float32).dtype
    torch.float32
    """
    op = "matmul"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    if type(x) is torch.Tensor and type(qweight) is QuantizedTensor:
        signature = _matmul_signature(x, bias, backend, out_dtype)
        checked = qweight.known_launch_plan(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(x, bias)
    _need_float(op, "x", x)
    if not isinstance(qweight, QuantizedTensor):
        raise KernelArgumentError(f"{op}: qweight must be a lowbit.quant.QuantizedTensor; got {type(qweight).__name__}",
                                  hint="quantize the weight with lowbit.quant.quantize(w, dtype, group_size)")
    if len(qweight.shape) != 2:
        raise KernelArgumentError(f"{op}: qweight must be 2-D [N, K]; got shape {list(qweight.shape)}")
    qweight.check_format(DENSE_ROWMAJOR)
    n, k = qweight.shape
    if x.dim() < 1 or int(x.shape[-1]) != k:
        raise KernelArgumentError(f"{op}: x must have shape [..., {k}] (K of the weight [{n}, {k}]); "
                                  f"got {list(x.shape)}")
    if qweight.is_torch:
        if qweight.device != x.device:
            raise KernelArgumentError(f"{op}: qweight is on {qweight.device}, but x is on {x.device}",
                                      hint=f"move the weight with qweight.to('{x.device}')")
    elif x.device.type != "cpu":
        raise KernelArgumentError(f"{op}: qweight has numpy storage, but x is on {x.device}",
                                  hint=f"move the weight with qweight.to('{x.device}')")
    if bias is not None:
        _need_tensor(op, "bias", bias)
        if not bias.dtype.is_floating_point:
            raise KernelArgumentError(f"{op}: bias must be a float tensor; got {_dtype_name(bias)}")
        _need_shape(op, "bias", bias, (n,), "N, the weight's rows")
        _need_device(op, "bias", bias, x.device)
        bias = bias.to(torch.float32).contiguous()
    name = resolve_backend(backend, device_of(x))
    x2d = x.reshape(-1, k).contiguous()
    plan = matmul_plan(x2d, qweight, bias, name, out_dtype=out_dtype)
    y = plan.run(x2d, bias).reshape(*x.shape[:-1], n)
    if type(x) is torch.Tensor and type(qweight) is QuantizedTensor:
        qweight.launch_plan(signature, lambda: _CheckedMatmul(plan, tuple(x2d.shape), tuple(y.shape)))
    return y


def _matmul_signature(x: Any, bias: Any, backend: str | None, out_dtype: Any = None) -> tuple:
    """What :func:`matmul`'s checks of ``x``, ``bias``, ``backend`` and ``out_dtype`` depend on, for a given
    weight."""
    return ("ops.matmul", x.dtype, x.shape, x.device, backend, out_dtype,
            None if bias is None else (type(bias), bias.dtype, bias.shape, bias.device))


@dataclass(frozen=True)
class _CheckedMatmul:
    """:func:`matmul` for a call signature (:func:`_matmul_signature`) that passed its checks once with this
    weight: the same plan, run without the checks (~4 us of Python per call instead of ~15)."""

    plan: MatmulPlan
    x2d_shape: tuple[int, int]
    out_shape: tuple[int, ...]

    def run(self, x: Any, bias: Any) -> Any:
        if bias is not None:
            bias = bias.to(_torch().float32).contiguous()
        flat = len(self.out_shape) == 2             # x is [M, K] already (each view costs ~1 us)
        x2d = x if flat else x.reshape(*self.x2d_shape)
        if not x2d.is_contiguous():
            x2d = x2d.contiguous()
        y = self.plan.run(x2d, bias)
        return y if flat else y.view(*self.out_shape)


# ---------------------------------------------------------------------------------------------------------
# paged KV cache
# ---------------------------------------------------------------------------------------------------------
def _check_layer(op: str, layer: Any) -> Any:
    if not isinstance(layer, KVLayer):
        raise KernelArgumentError(f"{op}: layer must be a lowbit.kvcache.KVLayer; got {type(layer).__name__}",
                                  hint="allocate one with lowbit.kvcache.allocate(format, num_pages)")
    fmt = layer.format
    if not fmt.dense and (fmt.head_dim * fmt.nbits) % 8:
        raise FormatError(f"{op}: a {fmt.dtype} cache with head_dim {fmt.head_dim} stores {fmt.head_dim * fmt.nbits} "
                          f"bits per token and head, not whole bytes; lowbit's attention kernel reads each "
                          f"token's codes as whole bytes",
                          hint="use a head_dim that makes head_dim * bits a multiple of 8")
    names = ["k", "v", "k_scales", "v_scales", "k_zeros", "v_zeros"]
    if fmt.channel_keys:
        names += ["k_stage", "stage_map"]
        for name in ("k_stage", "stage_map"):
            if getattr(layer, name) is None:
                raise KernelArgumentError(f"{op}: a {fmt.format_id} layer (keys per channel) needs layer.{name}; "
                                          f"got None", hint="allocate the layer with lowbit.kvcache.allocate")
        if layer.stage_map.dtype != _torch().int32 or tuple(layer.stage_map.shape) != (layer.num_pages,):
            raise KernelArgumentError(f"{op}: layer.stage_map must be int32 [{layer.num_pages}] (a staging row per "
                                      f"page); got {_dtype_name(layer.stage_map)} {list(layer.stage_map.shape)}")
    for name in names:
        t = getattr(layer, name)
        if t is not None:
            _need_tensor(op, f"layer.{name}", t)
            _need_device(op, f"layer.{name}", t, layer.k.device)
            _need_contiguous(op, f"layer.{name}", t)
    return fmt


def _check_staging_rows(op: str, layer: Any, pages: list[int], what: str) -> None:
    """Every page in ``pages`` has a staging row: ``stage_map[page]`` in ``[0, staging_slots)``. Read through a
    numpy view of ``stage_map`` (CPU only): no torch op that reads values, so a decode step recorded for replay
    (:mod:`lowbit.runtime.cpu_graphs`) may make this check."""
    rows = layer.stage_map.numpy()[pages].tolist() if pages else []
    for page, row in zip(pages, rows):
        if not 0 <= row < layer.staging_slots:
            raise KernelArgumentError(f"{op}: {what} page {page} has staging row {row}, outside "
                                      f"[0, {layer.staging_slots}) (layer.k_stage rows)",
                                      hint="assign each open page a row of layer.k_stage in layer.stage_map "
                                           "(lowbit.runtime.PagedKVCache does this)")


def kv_append(layer: Any, k: Any, v: Any, slots: Any, *, backend: str | None = None) -> None:
    """Quantize ``k``, ``v`` ``[T, Hkv, D]`` into ``layer`` (in place), token ``t`` at flat slot ``slots[t]``
    (``page * page_size + offset``).

    The result is bit-identical to :func:`lowbit.kvcache.append`: integer codes (symmetric or with zero points)
    and float codes with a mantissa, with float16 / bfloat16 scales, are quantized by the ``kv_quantize``
    kernel straight into their pages (float32 arithmetic that provably rounds like the format's float64
    quantizer); other formats by that quantizer on the host, then the ``kv_scatter`` kernel writes codes,
    scales and zeros into their pages. With keys per channel (``paged-kv/v2``) keys are staged until their page
    is full, then the page is quantized per channel (the rules are in :mod:`lowbit.kvcache`: a page's offsets
    are written before or with its last).

    >>> import torch
    >>> from lowbit import kvcache
    >>> layer = kvcache.allocate(kvcache.KVCacheFormat("int4", num_kv_heads=2, head_dim=8, page_size=4), 2)
    >>> kv_append(layer, torch.randn(3, 2, 8), torch.randn(3, 2, 8), torch.tensor([4, 5, 0]), backend="interpret")
    """
    op = "kv_append"
    torch = _torch()
    signature = None
    if type(layer) is KVLayer and type(k) is torch.Tensor and type(v) is torch.Tensor and type(slots) is torch.Tensor:
        signature = ("ops.kv_append", k.dtype, k.shape, k.device, v.dtype, v.shape, v.device, slots.dtype,
                     slots.shape, slots.device, backend)
        checked = layer.known_launch_plan(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(layer, k, v, slots)
    fmt = _check_layer(op, layer)
    device = layer.k.device
    _need_float(op, "k", k)
    _need_float(op, "v", v)
    _need_int(op, "slots", slots)
    if k.dim() != 3:
        raise KernelArgumentError(f"{op}: k must be [T, {fmt.num_kv_heads}, {fmt.head_dim}]; got {list(k.shape)}")
    t = int(k.shape[0])
    for name, value in (("k", k), ("v", v)):
        _need_shape(op, name, value, (t, fmt.num_kv_heads, fmt.head_dim), "tokens, kv heads, head_dim")
        _need_device(op, name, value, device)
    _need_shape(op, "slots", slots, (t,), "one flat slot per token")
    _need_device(op, "slots", slots, device)
    name = resolve_backend(backend, device_of(layer.k))
    checked = _CheckedAppend(name, store_launch(layer, k, v, name) if fmt.dense and t else None)
    checked.run(layer, k, v, slots)
    if signature is not None:
        layer.launch_plan(signature, lambda: checked)


@dataclass(frozen=True)
class _CheckedAppend:
    """:func:`kv_append` for a call signature that passed its checks once with this layer (a dense cache: with
    its ``kv_store`` launch): what depends on the values (the slots, and with keys per channel their staging
    rows) is still checked on every call."""

    backend: str
    store: Any = None

    def run(self, layer: Any, k: Any, v: Any, slots: Any) -> None:
        op = "kv_append"
        fmt = layer.format
        if layer.k.device.type == "cpu" and int(slots.shape[0]):
            values = slots.tolist()
            lo, hi = min(values), max(values)
            capacity = layer.num_pages * fmt.page_size
            if lo < 0 or hi >= capacity:
                raise KernelArgumentError(f"{op}: slots must lie in [0, {capacity}) ({layer.num_pages} pages of "
                                          f"{fmt.page_size}); got values in [{lo}, {hi}]")
            if fmt.channel_keys:
                _check_staging_rows(op, layer, sorted({value // fmt.page_size for value in values}), "written")
        if self.store is None:
            run_kv_append(layer, k, v, slots, self.backend)
        else:                   # (a store launch is bound only for a signature with tokens)
            self.store.trusted(k, v, slots.to(_torch().int32))


def decode_attention(q: Any, layer: Any, block_tables: Any, seq_lens: Any, *, scale: float | None = None,
                     window: int | None = None, num_splits: int | None = None, out_dtype: Any = None,
                     backend: str | None = None) -> Any:
    """One decode step of attention over the paged cache: ``[B, Hq, D]`` in ``out_dtype`` (None: ``q``'s dtype;
    the f32 result is rounded once, so a model gets the input type of the matmul that reads it).

    ``q [B, Hq, D]``: one query per sequence; ``Hq`` a multiple of the cache's kv heads (GQA: query head
    ``h`` reads kv head ``h // (Hq // Hkv)``). ``block_tables [B, MP]`` integer page ids (entries past a
    sequence's pages are ignored); ``seq_lens [B]`` tokens in the cache per sequence (at least 1, the
    query's own included). ``scale`` defaults to ``1 / sqrt(D)``; ``window``: only the last ``window``
    tokens are attended (sliding window). ``num_splits``: split-KV parts (``None``: chosen from the device
    and the batch). Softmax and every sum are f32. The cache may hold keys per token (``paged-kv/v1``) or per
    channel (``paged-kv/v2``: sealed pages from codes, each sequence's open last page from its staging row).

    On a CPU the lengths and page ids are checked against the cache; on CUDA they are not read back (no
    synchronization): out-of-range pages read zeros instead of faulting.
    """
    op = "decode_attention"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    signature = None
    if (type(layer) is KVLayer and type(q) is torch.Tensor and type(block_tables) is torch.Tensor
            and type(seq_lens) is torch.Tensor and type(scale) in _PLAIN and type(window) in _PLAIN
            and type(num_splits) in _PLAIN):
        signature = ("ops.decode_attention", q.dtype, q.shape, q.device, block_tables.dtype, block_tables.shape,
                     block_tables.device, seq_lens.dtype, seq_lens.shape, seq_lens.device, scale, window,
                     num_splits, out_dtype, backend)
        checked = layer.known_launch_plan(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(q, layer, block_tables, seq_lens)
    fmt = _check_layer(op, layer)
    device = layer.k.device
    _need_float(op, "q", q)
    if q.dim() != 3 or int(q.shape[2]) != fmt.head_dim or int(q.shape[1]) % fmt.num_kv_heads:
        raise KernelArgumentError(f"{op}: q must be [B, Hq, {fmt.head_dim}] with Hq a multiple of the cache's "
                                  f"{fmt.num_kv_heads} kv heads; got {list(q.shape)}")
    _need_device(op, "q", q, device)
    b = int(q.shape[0])
    _need_int(op, "block_tables", block_tables)
    _need_int(op, "seq_lens", seq_lens)
    if block_tables.dim() != 2 or int(block_tables.shape[0]) != b or int(block_tables.shape[1]) < 1:
        raise KernelArgumentError(f"{op}: block_tables must be [{b}, max_pages] (one row per sequence); "
                                  f"got {list(block_tables.shape)}")
    _need_shape(op, "seq_lens", seq_lens, (b,), "one length per sequence")
    _need_device(op, "block_tables", block_tables, device)
    _need_device(op, "seq_lens", seq_lens, device)
    max_pages = int(block_tables.shape[1])
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise KernelArgumentError(f"{op}: window must be a positive int or None; got {window!r}")
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                   or num_splits < 1):
        raise KernelArgumentError(f"{op}: num_splits must be a positive int or None; got {num_splits!r}")
    name = resolve_backend(backend, device_of(q))
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise KernelArgumentError(f"{op}: scale must be a real number or None; got {scale!r}")
    scale = 1.0 / math.sqrt(fmt.head_dim) if scale is None else float(scale)
    splits = num_splits or (choose_splits(b, fmt.num_kv_heads, max_pages, device, name) if b else 1)
    out_dtype = q.dtype if out_dtype is None else out_dtype
    plan = attention_plan(q, layer, block_tables, scale, window, splits, name, out_dtype) if b else None
    checked = _CheckedAttention(plan, out_dtype)
    out = checked.run(q, layer, block_tables, seq_lens)
    if signature is not None:
        layer.launch_plan(signature, lambda: checked)
    return out


@dataclass(frozen=True)
class _CheckedAttention:
    """:func:`decode_attention` for a call signature that passed its checks once with this layer: its launches
    (None for an empty batch) and output dtype; the lengths and page ids are still checked on every call."""

    plan: AttentionPlan | None
    out_dtype: Any

    def run(self, q: Any, layer: Any, block_tables: Any, seq_lens: Any) -> Any:
        if self.plan is None:
            return _torch().empty(q.shape, dtype=self.out_dtype, device=q.device)
        if layer.k.device.type == "cpu":
            _check_pages("decode_attention", layer, block_tables, seq_lens)
        int32 = _torch().int32
        return self.plan.run(q, block_tables.to(int32), seq_lens.to(int32))


def _check_pages(op: str, layer: Any, block_tables: Any, seq_lens: Any) -> None:
    """Every length fits the block table and every page a sequence uses exists (with keys per channel, every
    open last page has a staging row). On Python lists: a decode step's few rows check in ~2 us, where the
    same test as torch ops costs ~25 us per layer."""
    page = layer.format.page_size
    max_pages = int(block_tables.shape[1])
    lens = seq_lens.tolist()
    lo, hi = min(lens), max(lens)
    if lo < 1 or hi > max_pages * page:
        raise KernelArgumentError(f"{op}: seq_lens must lie in [1, {max_pages * page}] (block_tables has "
                                  f"{max_pages} pages of {page} per sequence); got values in [{lo}, {hi}]")
    rows = block_tables.tolist()
    used = [row[:(n + page - 1) // page] for row, n in zip(rows, lens)]      # each at least one page
    first, last = min(min(ids) for ids in used), max(max(ids) for ids in used)
    if first < 0 or last >= layer.num_pages:
        raise KernelArgumentError(f"{op}: block_tables name pages outside [0, {layer.num_pages}); got ids in "
                                  f"[{first}, {last}]")
    if layer.format.channel_keys:  # each open last page is read from its staging row
        _check_staging_rows(op, layer, [row[(n - 1) // page] for row, n in zip(rows, lens) if n % page], "open")


# ---------------------------------------------------------------------------------------------------------
# the decoder layer's small ops
# ---------------------------------------------------------------------------------------------------------
#: call signatures of :func:`rms_norm` / :func:`add_rms_norm` / :func:`rope` / :func:`silu_mul` that passed their
#: checks -> their launch
#: (checks depend on dtypes, shapes, devices and options only, never on values)
_CHECKED_ROWS: dict[tuple, "_CheckedRows"] = {}


@dataclass(frozen=True)
class _CheckedRows:
    """A ``decoder.lbk`` launch for a checked call signature, with the inputs' reshape to rows (None when they
    are contiguous rows already; every input but the last, which is a weight or table, takes it) and the outputs'
    view back (None likewise)."""

    launch: RowsLaunch
    rows: tuple[int, int] | None
    out_view: tuple[int, ...] | None

    def run(self, x: Any, *rest: Any) -> Any:
        if self.rows is None:
            out = self.launch.run(*[t.contiguous() for t in (x, *rest)])
        else:
            row_inputs = [t.reshape(self.rows).contiguous() for t in (x, *rest[:-1])]
            out = self.launch.run(*row_inputs, *[t.contiguous() for t in rest[-1:]])
        if self.out_view is None:
            return out
        return tuple(o.view(self.out_view) for o in out) if isinstance(out, tuple) else out.view(self.out_view)


def _remember(signature: tuple | None, checked: _CheckedRows) -> _CheckedRows:
    """``checked``, kept under ``signature`` (None: a call that cannot be keyed) for the next calls."""
    if signature is not None:
        cached_plan(_CHECKED_ROWS, signature, lambda: checked)
    return checked


def _rows_of(x: Any, out_width: int, launch: RowsLaunch) -> _CheckedRows:
    """The call of a launch over rows for ``x [..., W]``, whose output is ``[..., out_width]``."""
    if x.dim() == 2:
        return _CheckedRows(launch, None, None)
    return _CheckedRows(launch, (-1, int(x.shape[-1])), (*x.shape[:-1], out_width))


def rms_norm(x: Any, weight: Any, *, eps: float = 1e-6, out_dtype: Any = None, backend: str | None = None) -> Any:
    """RMSNorm over the last axis: ``weight * (x * rsqrt(mean(x^2) + eps))``, computed in f32 and rounded once to
    ``out_dtype`` (None: ``x``'s dtype). ``x [..., H]`` and ``weight [H]`` float16, bfloat16 or float32.

    Llama's RMSNorm in one launch; with ``out_dtype`` the result comes in the type the next matmul reads.

    >>> import torch
    >>> x = torch.tensor([[3.0, 4.0]])
    >>> rms_norm(x, torch.tensor([1.0, 2.0]), eps=0.0, backend="interpret")    # rms = sqrt(12.5)
    tensor([[0.8485, 2.2627]])
    """
    op = "rms_norm"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    signature = None
    if type(x) is torch.Tensor and type(weight) is torch.Tensor and type(eps) in _PLAIN:
        signature = (op, x.dtype, x.shape, x.device, weight.dtype, weight.shape, weight.device, eps, out_dtype,
                     backend)
        checked = _CHECKED_ROWS.get(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(x, weight)
    h = _check_norm_args(op, x, weight, eps)
    name = resolve_backend(backend, device_of(x))
    launch = rms_norm_launch(x.numel() // h, h, x.dtype, weight.dtype, x.dtype if out_dtype is None else out_dtype,
                             float(eps), x.device, name)
    return _remember(signature, _rows_of(x, h, launch)).run(x, weight)


def add_rms_norm(x: Any, delta: Any, weight: Any, *, eps: float = 1e-6, out_dtype: Any = None,
                 backend: str | None = None) -> tuple[Any, Any]:
    """The residual add before an RMSNorm, in one launch: ``s = x + delta`` (computed in f32, rounded once to
    ``x``'s dtype) and :func:`rms_norm` of ``s``; returns ``(s, normed)``. ``x``, ``delta [..., H]`` (same shape)
    and ``weight [H]`` float16, bfloat16 or float32; ``normed`` in ``out_dtype`` (None: ``x``'s dtype).

    A decoder layer adds each block's output to its float32 residual stream and normalizes the sum for the next
    block: ``x, h = add_rms_norm(x, block_out, norm_weight)`` replaces ``x = x + block_out; h = rms_norm(x, ...)``
    with the same bits and one launch instead of an add and a launch.

    >>> import torch
    >>> s, y = add_rms_norm(torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 1.0]]), torch.tensor([1.0, 2.0]),
    ...                     eps=0.0, backend="interpret")
    >>> s, y                                                                 # s = [3, 4]: as rms_norm's example
    (tensor([[3., 4.]]), tensor([[0.8485, 2.2627]]))
    """
    op = "add_rms_norm"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    signature = None
    if type(x) is torch.Tensor and type(delta) is torch.Tensor and type(weight) is torch.Tensor and type(eps) in _PLAIN:
        signature = (op, x.dtype, x.shape, x.device, delta.dtype, delta.shape, delta.device, weight.dtype, weight.shape,
                     weight.device, eps, out_dtype, backend)
        checked = _CHECKED_ROWS.get(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(x, delta, weight)
    h = _check_norm_args(op, x, weight, eps)
    _need_float(op, "delta", delta)
    _need_shape(op, "delta", delta, tuple(int(d) for d in x.shape), "x's shape")
    _need_device(op, "delta", delta, x.device)
    name = resolve_backend(backend, device_of(x))
    launch = add_rms_norm_launch(x.numel() // h, h, x.dtype, delta.dtype, weight.dtype,
                                 x.dtype if out_dtype is None else out_dtype, float(eps), x.device, name)
    return _remember(signature, _rows_of(x, h, launch)).run(x, delta, weight)


def _check_norm_args(op: str, x: Any, weight: Any, eps: Any) -> int:
    """The checks :func:`rms_norm` and :func:`add_rms_norm` share; returns ``H`` (``x``'s last axis)."""
    _need_float(op, "x", x)
    _need_float(op, "weight", weight)
    if x.dim() < 1 or int(x.shape[-1]) < 1:
        raise KernelArgumentError(f"{op}: x must have shape [..., H] with H >= 1; got {list(x.shape)}")
    _need_shape(op, "weight", weight, (int(x.shape[-1]),), "H, x's last axis")
    _need_device(op, "weight", weight, x.device)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < math.inf:
        raise KernelArgumentError(f"{op}: eps must be a finite real number >= 0; got {eps!r}")
    return int(x.shape[-1])


def silu_mul(gate_up: Any, *, out_dtype: Any = None, backend: str | None = None) -> Any:
    """The gated SiLU of a Llama MLP: ``silu(gate) * up`` where ``gate_up [..., 2 I]`` holds ``gate`` in its
    first ``I`` columns and ``up`` in the last ``I`` (one stacked matmul makes both); ``[..., I]`` computed in
    f32, rounded once to ``out_dtype`` (None: ``gate_up``'s dtype). Gates below about -88 give 0 (``e^-gate``
    overflows), as torch's ``silu`` does.

    >>> import torch
    >>> silu_mul(torch.tensor([[0.0, 2.0, 5.0, 3.0]]), backend="interpret")   # silu(0) * 5, silu(2) * 3
    tensor([[0.0000, 5.2848]])
    """
    op = "silu_mul"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    signature = None
    if type(gate_up) is torch.Tensor:
        signature = (op, gate_up.dtype, gate_up.shape, gate_up.device, out_dtype, backend)
        checked = _CHECKED_ROWS.get(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(gate_up)
    _need_float(op, "gate_up", gate_up)
    if gate_up.dim() < 1 or int(gate_up.shape[-1]) < 2 or int(gate_up.shape[-1]) % 2:
        raise KernelArgumentError(f"{op}: gate_up must have shape [..., 2 * I] (gate, then up) with I >= 1; got "
                                  f"{list(gate_up.shape)}", hint="concatenate gate and up on the last axis")
    name = resolve_backend(backend, device_of(gate_up))
    width = int(gate_up.shape[-1])
    target = gate_up.dtype if out_dtype is None else out_dtype
    launch = silu_mul_launch(gate_up.numel() // width, width, gate_up.dtype, target, gate_up.device, name)
    return _remember(signature, _rows_of(gate_up, width // 2, launch)).run(gate_up)


def rope(x: Any, cos: Any, sin: Any, *, out_dtype: Any = None, backend: str | None = None) -> Any:
    """Rotary position embeddings, Hugging Face's "rotate half" convention: ``x * cos + rotate_half(x) * sin``
    for every head, ``rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])``; computed in f32, rounded once to
    ``out_dtype`` (None: ``x``'s dtype).

    ``x [T, H, D]`` (D even), float16, bfloat16 or float32; ``cos``, ``sin`` ``[T, D]`` float32: token ``t``'s
    angles, pair ``(i, i + D/2)``'s in both columns (as transformers builds them).

    >>> import torch
    >>> x = torch.tensor([[[1.0, 2.0]]])                                   # one token, one head, D = 2
    >>> rope(x, torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]]), backend="interpret")  # a quarter turn
    tensor([[[-2.,  1.]]])
    """
    op = "rope"
    torch = _torch()
    _check_out_dtype(op, out_dtype)
    signature = None
    if type(x) is torch.Tensor and type(cos) is torch.Tensor and type(sin) is torch.Tensor:
        signature = (op, x.dtype, x.shape, x.device, cos.dtype, cos.shape, cos.device, sin.dtype, sin.shape,
                     sin.device, out_dtype, backend)
        checked = _CHECKED_ROWS.get(signature)
        if checked is not None:                 # this signature passed the checks below before
            return checked.run(x, cos, sin)
    _need_float(op, "x", x)
    if x.dim() != 3 or int(x.shape[2]) % 2 or int(x.shape[2]) < 2:
        raise KernelArgumentError(f"{op}: x must be [T, H, D] with D even; got {list(x.shape)}")
    t, d = int(x.shape[0]), int(x.shape[2])
    for name, value in (("cos", cos), ("sin", sin)):
        _need_tensor(op, name, value)
        if value.dtype != torch.float32:
            raise KernelArgumentError(f"{op}: {name} must be float32; got {_dtype_name(value)}",
                                      hint=f"convert it with {name}.float()")
        _need_shape(op, name, value, (t, d), "one row of angles per token")
        _need_device(op, name, value, x.device)
    name = resolve_backend(backend, device_of(x))
    launch = rope_launch(t, int(x.shape[1]), d, x.dtype, x.dtype if out_dtype is None else out_dtype, x.device,
                         name)
    return _remember(signature, _CheckedRows(launch, None, None)).run(x, cos, sin)
