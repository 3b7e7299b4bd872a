"""torch/numpy <-> TVM tensors through DLPack, sharing memory (no copies) wherever DLPack allows.

TVM kernels take torch tensors directly (TVM's FFI speaks DLPack), so most callers never convert. These
helpers are for the rest: holding a ``tvm.runtime.Tensor``, or viewing one's memory from torch.

>>> import torch
>>> x = torch.arange(4.0)
>>> t = to_tvm(x)                       # same memory: writes through t are seen by x
>>> to_torch(t).data_ptr() == x.data_ptr()
True
"""
from __future__ import annotations

from typing import Any

from lowbit.errors import BackendError

from .target import import_tvm

__all__ = ["ALIGNMENT", "aligned", "to_tvm", "to_torch", "to_numpy"]

#: Byte alignment TVM requires of tensor data (``FromDLPack`` rejects anything else).
ALIGNMENT = 64


def aligned(t: Any) -> Any:
    """The torch tensor ``t`` itself when it is contiguous and :data:`ALIGNMENT`-byte aligned (TVM takes it
    without a copy), else a contiguous, aligned copy (torch's CPU allocator aligns to 64 bytes).

    >>> import torch
    >>> t = torch.zeros(64)
    >>> aligned(t) is t, aligned(t[1:]).data_ptr() % ALIGNMENT
    (True, 0)
    """
    if t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0:
        return t
    import torch

    copy = t.clone(memory_format=torch.contiguous_format)
    if copy.data_ptr() % ALIGNMENT:
        copy = torch.empty_like(copy).copy_(t)
    return copy


def to_tvm(x: Any, *, allow_copy: bool = True) -> Any:
    """A ``tvm.runtime.Tensor`` viewing ``x`` (a torch tensor or numpy array) without copying.

    TVM tensors must be contiguous and 64-byte aligned (TVM's codegen assumes aligned buffers; torch's CPU
    allocator aligns to 64, small numpy arrays and offset views often are not). Any other ``x`` is copied
    when ``allow_copy`` (the copy does not write back, so never pass one as a kernel *output*), else
    BackendError. Read-only numpy arrays are copied too.
    """
    tvm = import_tvm()
    if isinstance(x, tvm.runtime.Tensor):
        return x
    import numpy as np

    if isinstance(x, np.ndarray):
        aligned = x.ctypes.data % ALIGNMENT == 0
        if x.flags.c_contiguous and x.flags.writeable and aligned and x.dtype.kind in "biuf":
            return tvm.runtime.from_dlpack(x)
        if not allow_copy:
            raise BackendError(f"numpy array (contiguous={x.flags.c_contiguous}, writeable={x.flags.writeable}, "
                               f"{ALIGNMENT}-byte aligned={aligned}, dtype={x.dtype}) cannot be shared with TVM "
                               "without a copy", hint="allocate it with torch (64-byte aligned) or allow_copy=True")
        return tvm.runtime.tensor(np.ascontiguousarray(x))
    import torch

    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            x = x.detach()
        if not x.is_contiguous() or x.data_ptr() % ALIGNMENT:
            if not allow_copy:
                what = "not contiguous" if not x.is_contiguous() else f"not {ALIGNMENT}-byte aligned"
                raise BackendError(f"torch tensor (strides {tuple(x.stride())}, offset {x.storage_offset()}) is "
                                   f"{what}; TVM needs contiguous, aligned memory",
                                   hint="pass x.clone() or allow_copy=True")
            x = x.clone(memory_format=torch.contiguous_format)
        return tvm.runtime.from_dlpack(x)
    raise BackendError(f"expected a torch tensor, numpy array or TVM tensor, got {type(x).__name__}")


def to_torch(t: Any) -> Any:
    """A torch tensor sharing ``t``'s memory (``t``: a TVM tensor; torch tensors pass through)."""
    import torch

    if isinstance(t, torch.Tensor):
        return t
    tvm = import_tvm()
    if not isinstance(t, tvm.runtime.Tensor):
        raise BackendError(f"expected a TVM tensor, got {type(t).__name__}")
    return torch.from_dlpack(t)


def to_numpy(t: Any) -> Any:
    """A numpy array with ``t``'s values (a TVM tensor; a copy, as TVM's ``.numpy()`` makes)."""
    tvm = import_tvm()
    if not isinstance(t, tvm.runtime.Tensor):
        raise BackendError(f"expected a TVM tensor, got {type(t).__name__}")
    return t.numpy()
