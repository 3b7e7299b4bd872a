"""lowbit's matmul as torch.library custom ops, so models with quantized linears trace under ``torch.compile``.

Two ops are registered when this module is imported (it imports torch):

* ``torch.ops.lowbit.matmul(x, packed, scales, zeros, bias, dtype, group_size, shape, format_name,
  format_version, backend) -> Tensor``: ``x [..., K] @ W.T (+ bias)`` in ``x``'s dtype, by
  :func:`lowbit.ops.matmul`, for the weight ``W [N, K]`` given by the plain tensors of a
  :class:`~lowbit.quant.QuantizedTensor` (``packed`` codes, ``scales``, ``zeros`` or ``None``) and its
  metadata (dtype name, group size, logical shape ``[N, K]``, packed format id). ``backend`` ``None`` picks
  the best for ``x``'s device (TVM on a CPU, Triton on CUDA).
* ``torch.ops.lowbit.dequantize(packed, scales, zeros, dtype, group_size, shape, format_name,
  format_version) -> Tensor``: the float32 weight ``[N, K]`` (used by the backward of ``matmul``).

Both have fake (meta) implementations, so FakeTensor / ``torch.compile`` (``aot_eager`` or ``inductor``)
trace them without running a kernel; the ops themselves run eagerly as graph calls.

**Repacking is cached.** The kernels read weights in their own storage order (repacked from the dense codes
on first use). The op gets plain tensors, so it keeps a process-wide cache keyed by the *identity* of the
weight tensors' storages (a weak reference: no weight is kept alive by the cache), their offsets, shapes,
strides and version counters, plus the metadata. An in-place update of the weights through torch
(``copy_``, ``load_state_dict``) bumps the version and forces a repack; freed weights drop their cache
entry. (Inference tensors have no version counter: weights created under ``torch.inference_mode()`` are
assumed unchanged; writes that bypass torch, e.g. through ``.numpy()``, are not seen either.)

**Autograd.** The gradient with respect to ``x`` is implemented: ``dx = dy @ W`` with ``W`` the float32
dequantized weight, rounded once to ``x``'s dtype; ``d bias = sum of dy`` over the leading dimensions. The
quantized weight itself is not differentiable: if ``scales`` or ``zeros`` require grad the op raises
:class:`lowbit.KernelArgumentError` (rather than silently returning no gradient).

>>> import torch
>>> from lowbit.quant import quantize
>>> w = quantize(torch.randn(8, 64), "uint4", group_size=32, zero_point=True)
>>> x = torch.randn(2, 64)
>>> y = quant_matmul(x, w, backend="interpret")
>>> bool(torch.allclose(y, x @ w.dequantize().T, atol=1e-4))
True
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from .errors import KernelArgumentError
from .quant import DENSE_ROWMAJOR, FormatId, QuantizedTensor

__all__ = ["quant_matmul", "quant_dequantize", "weight_args", "rebuild", "cached_weight", "cache_size", "clear_cache"]

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# QuantizedTensor <-> plain op arguments
# ---------------------------------------------------------------------------------------------------------
def weight_args(qweight: QuantizedTensor) -> tuple:
    """The op arguments describing ``qweight``: ``(packed, scales, zeros, dtype, group_size, shape,
    format_name, format_version)`` (torch storage needed; move numpy weights with ``qweight.to(device)``)."""
    if not isinstance(qweight, QuantizedTensor):
        raise KernelArgumentError(f"expected a lowbit.quant.QuantizedTensor; got {type(qweight).__name__}")
    if not qweight.is_torch:
        raise KernelArgumentError("the torch ops need a QuantizedTensor with torch storage; it holds numpy arrays",
                                  hint="move it with qweight.to('cpu') (or a CUDA device)")
    return (qweight.packed, qweight.scales, qweight.zeros, qweight.dtype.name, qweight.group_size,
            list(qweight.shape), qweight.format.name, qweight.format.version)


def rebuild(packed: Tensor, scales: Tensor, zeros: Optional[Tensor], dtype: str, group_size: int,
            shape: List[int], format_name: str, format_version: int) -> QuantizedTensor:
    """A :class:`QuantizedTensor` view of the op's tensors (validated; nothing is copied)."""
    qt = QuantizedTensor(packed, scales, zeros, dtype, int(group_size), tuple(int(s) for s in shape),
                         FormatId(format_name, int(format_version)))
    qt.check_format(DENSE_ROWMAJOR)
    return qt


# ---------------------------------------------------------------------------------------------------------
# the repack cache
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    refs: tuple           # StorageWeakRef of every weight tensor: the entry dies with any of them
    repacked: dict        # the QuantizedTensor's per-format cache of kernel storages


_CACHE: dict[tuple, _Entry] = {}
_LOCK = threading.Lock()


def _tensor_key(t: Tensor) -> tuple:
    version = -1 if t.is_inference() else t._version
    return (StorageWeakRef(t.untyped_storage()), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype, t.device, version)


def _purge() -> None:
    for key in [k for k, e in _CACHE.items() if any(r.expired() for r in e.refs)]:
        del _CACHE[key]


def cached_weight(packed: Tensor, scales: Tensor, zeros: Optional[Tensor], dtype: str, group_size: int,
                  shape: List[int], format_name: str, format_version: int) -> QuantizedTensor:
    """:func:`rebuild`, sharing the kernel storages (repacked codes) built by earlier calls on the same,
    unmodified weight tensors."""
    qt = rebuild(packed, scales, zeros, dtype, group_size, shape, format_name, format_version)
    tensors = [t for t in (packed, scales, zeros) if t is not None]
    parts = tuple(_tensor_key(t) for t in tensors)
    key = (parts, qt.dtype.name, qt.group_size, qt.shape, qt.format, zeros is None)
    with _LOCK:
        entry = _CACHE.get(key)
        if entry is None or any(r.expired() for r in entry.refs):
            _purge()
            entry = _Entry(tuple(p[0] for p in parts), qt.packed_cache)
            _CACHE[key] = entry
            return qt
    return qt.share_packed_cache(entry.repacked)


def cache_size() -> int:
    """Live entries in the repack cache (weights seen by the op and not yet freed)."""
    with _LOCK:
        _purge()
        return len(_CACHE)


def clear_cache() -> None:
    """Forget every cached kernel storage (they are rebuilt on the next call)."""
    with _LOCK:
        _CACHE.clear()


# ---------------------------------------------------------------------------------------------------------
# the ops
# ---------------------------------------------------------------------------------------------------------
def _check_x(x: Tensor, shape: List[int]) -> None:
    n, k = (int(s) for s in shape)
    if x.dim() < 1 or x.shape[-1] != k:
        raise KernelArgumentError(f"lowbit::matmul: x must have shape [..., {k}] (K of the weight [{n}, {k}]); "
                                  f"got {list(x.shape)}")


@torch.library.custom_op("lowbit::matmul", mutates_args=())
def _matmul(x: Tensor, packed: Tensor, scales: Tensor, zeros: Optional[Tensor], bias: Optional[Tensor],
            dtype: str, group_size: int, shape: List[int], format_name: str, format_version: int,
            backend: Optional[str]) -> Tensor:
    from .ops import matmul

    qt = cached_weight(packed, scales, zeros, dtype, group_size, shape, format_name, format_version)
    return matmul(x, qt, bias, backend=backend)


@_matmul.register_fake
def _matmul_fake(x, packed, scales, zeros, bias, dtype, group_size, shape, format_name, format_version, backend):
    _check_x(x, shape)
    return x.new_empty((*x.shape[:-1], int(shape[0])))


@torch.library.custom_op("lowbit::dequantize", mutates_args=())
def _dequantize(packed: Tensor, scales: Tensor, zeros: Optional[Tensor], dtype: str, group_size: int,
                shape: List[int], format_name: str, format_version: int) -> Tensor:
    return rebuild(packed, scales, zeros, dtype, group_size, shape, format_name, format_version).dequantize("float32")


@_dequantize.register_fake
def _dequantize_fake(packed, scales, zeros, dtype, group_size, shape, format_name, format_version):
    return packed.new_empty([int(s) for s in shape], dtype=torch.float32)


def _refuse_weight_grad(scales: Tensor, zeros: Optional[Tensor]) -> None:
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t is not None and t.requires_grad:
            raise KernelArgumentError(f"lowbit::matmul: the quantized weight's {name} require grad, but lowbit "
                                      f"computes gradients only for x and bias",
                                      hint=f"call .requires_grad_(False) on the {name} (QuantLinear keeps them "
                                           f"as buffers), or fine-tune a float copy of the weight")


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, packed, scales, zeros, bias, dtype, group_size, shape, format_name, format_version, _ = inputs
    _refuse_weight_grad(scales, zeros)
    ctx.meta = (dtype, group_size, list(shape), format_name, format_version)
    ctx.x_dtype = x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.save_for_backward(packed, scales, zeros)


def _backward(ctx: Any, grad: Tensor) -> tuple:
    packed, scales, zeros = ctx.saved_tensors
    dtype, group_size, shape, format_name, format_version = ctx.meta
    n = int(shape[0])
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = torch.ops.lowbit.dequantize(packed, scales, zeros, dtype, group_size, shape, format_name, format_version)
        grad_x = torch.matmul(grad.to(torch.float32), w).to(ctx.x_dtype)
    if ctx.needs_input_grad[4]:
        grad_bias = grad.reshape(-1, n).to(torch.float32).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, grad_bias, None, None, None, None, None, None


torch.library.register_autograd("lowbit::matmul", _backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------
# Python entry points
# ---------------------------------------------------------------------------------------------------------
def quant_matmul(x: Tensor, qweight: QuantizedTensor, bias: Optional[Tensor] = None, *,
                 backend: Optional[str] = None) -> Tensor:
    """``x [..., K] @ qweight.T (+ bias)`` through the ``lowbit::matmul`` op (traceable by torch.compile;
    differentiable in ``x`` and ``bias``). Same arguments and result as :func:`lowbit.ops.matmul`."""
    packed, scales, zeros, *meta = weight_args(qweight)
    _refuse_weight_grad(scales, zeros)
    return torch.ops.lowbit.matmul(x, packed, scales, zeros, bias, *meta, backend)


def quant_dequantize(qweight: QuantizedTensor) -> Tensor:
    """The float32 weight through the ``lowbit::dequantize`` op (what the backward of the matmul uses)."""
    return torch.ops.lowbit.dequantize(*weight_args(qweight))
