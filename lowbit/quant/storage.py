"""Array containers for scales and zero points, on numpy (with ml_dtypes) and torch.

Scales and zeros are stored as ordinary arrays of a standard element type; this module maps lowbit dtypes
to those element types and converts between numpy and torch bit-exactly (bfloat16 and float8 included).

>>> import numpy as np
>>> to_storage(np.array([0.5, 3.0]), dtype("bfloat16")).dtype
dtype(bfloat16)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType, dtype

__all__ = ["STORABLE", "is_torch", "numpy_type", "torch_type", "to_storage", "to_float64", "to_torch",
           "to_numpy"]

#: lowbit dtypes that have a standard container on both numpy (ml_dtypes) and torch.
STORABLE = ("float16", "bfloat16", "float32", "float8_e4m3fn", "float8_e5m2", "int8", "uint8", "int32")


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def numpy_type(d: DType) -> np.dtype:
    if d.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, d.name))
    return np.dtype(d.name)


def torch_type(d: DType) -> Any:
    import torch

    return getattr(torch, d.name)


def to_storage(values64: Any, d: DType) -> Any:
    """float64 values, exactly representable in ``d``, as an array of ``d``'s container type."""
    if is_torch(values64):
        return values64.to(torch_type(d))
    return np.asarray(values64).astype(numpy_type(d))


def to_float64(x: Any) -> Any:
    if is_torch(x):
        import torch

        return x.to(torch.float64)
    return np.asarray(x).astype(np.float64)


def to_torch(x: Any, device: Any = "cpu", *, share: bool = False) -> Any:
    """A numpy array (ml_dtypes included) as a torch tensor on ``device``, bit for bit. ``share``: on the CPU,
    view the array's memory instead of copying it (for a fresh array no one else holds)."""
    import torch

    if is_torch(x):
        return x.to(device)
    arr = np.ascontiguousarray(x)
    name = _ML_DTYPES.get(arr.dtype)
    if name is not None:  # ml_dtypes: move the bits, reinterpret
        arr = arr.view({1: np.uint8, 2: np.int16}[arr.dtype.itemsize])
    t = torch.from_numpy(arr if share else arr.copy())
    return (t if name is None else t.view(getattr(torch, name))).to(device)


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device, bfloat16/float8 included) as a numpy array, bit for bit."""
    import torch

    if not is_torch(x):
        return np.asarray(x)
    t = x.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        name = str(t.dtype).removeprefix("torch.")
        raw = torch.int16 if t.element_size() == 2 else torch.uint8
        return t.view(raw).numpy().view(numpy_type(dtype(name))).copy()
    return t.numpy().copy()


#: numpy dtypes of ml_dtypes' types -> their name (torch has the same names)
_ML_DTYPES = {numpy_type(dtype(name)): name for name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")}
