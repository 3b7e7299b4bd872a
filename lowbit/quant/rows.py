"""A fixed quantization applied to many small ``[rows, K]`` arrays: a KV cache's tokens, one decode step at a time.

:func:`lowbit.quant.quantize_arrays` takes any input and checks everything on every call; for the few rows a
decode step appends per layer that costs ~200-400 us of Python, most of a low-bit KV cache's append. A
:class:`RowQuantizer` settles the configuration once (mode, code range, scale and zero types) and then runs
the same float64 arithmetic in ~20 numpy operations. Its results are **bit for bit** those of
``quantize_arrays`` with the same arguments (tests compare every code type); an input it does not take on its
fast path (non-finite values, a scale above the scale type's range) goes to ``quantize_arrays``, which raises
the usual error.

>>> import numpy as np
>>> rq = RowQuantizer("int4", group_size=2)
>>> packed, scales, zeros = rq(np.array([[1.0, -7.0, 3.5, 2.0]]))
>>> packed, scales, zeros           # the same as quantize_arrays(..., "int4", group_size=2)
(array([[145,  71]], dtype=uint8), array([[1. , 0.5]], dtype=float16), None)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import dtype as as_dtype
from ..packing import pack_trusted
from . import storage
from .quantizer import quantize_arrays

__all__ = ["RowQuantizer"]

class RowQuantizer:
    """``quantize_arrays(x, dtype, group_size, zero_point, scale_dtype)`` for float ``x [..., K]`` (numpy, or
    CPU torch: results come back as torch tensors then), returning ``(packed, scales, zeros or None)``.

    Arguments are checked once, here, by ``quantize_arrays`` itself (on a one-group example), so a bad
    configuration raises the same :class:`~lowbit.QuantizationError` it would.
    """

    def __init__(self, dtype: Any, group_size: int | None = 128, zero_point: bool = False,
                 scale_dtype: Any = "float16"):
        self.dtype = d = as_dtype(dtype)
        self.scale_dtype = sd = as_dtype(scale_dtype)
        self.group_size = group_size
        self.zero_point = zero_point
        probe = 1 if group_size is None or group_size == -1 else group_size
        quantize_arrays(np.zeros((1, probe)), d, probe, zero_point, sd)       # raises for a bad configuration
        if d.is_float:
            self._mode, self._levels = "float", float(d.max)
        elif zero_point:
            self._mode, self._levels = "asymmetric", float(2 ** d.nbits - 1)
        else:
            self._mode, self._levels = "symmetric-" + d.kind, float(2 ** (d.nbits - 1) - 1)
        self._scale_np = storage.numpy_type(sd)
        self._bits_np = {1: np.uint8, 2: np.uint16, 4: np.uint32}[np.dtype(self._scale_np).itemsize]

    def __call__(self, x: Any) -> tuple[Any, Any, Any]:
        on_torch = storage.is_torch(x)
        if on_torch:
            if x.device.type != "cpu" or not x.dtype.is_floating_point:
                return self._general(x)
            import torch

            plain = x.detach()
            if plain.dtype not in (torch.float16, torch.float32, torch.float64):
                plain = plain.float()       # bfloat16 / float8: exact in float32, which numpy has
            arr = plain.numpy()
        else:
            arr = np.asarray(x)
        if arr.ndim == 0 or arr.shape[-1] == 0 or arr.dtype.kind != "f":
            return self._general(x)
        k = arr.shape[-1]
        g = k if self.group_size is None or self.group_size == -1 else self.group_size
        if k % g or k % 8:
            return self._general(x)
        lead = arr.shape[:-1]
        w = arr.astype(np.float64).reshape(*lead, k // g, g)
        gmin, gmax = w.min(axis=-1), w.max(axis=-1)
        if self._mode == "asymmetric":
            lo = np.minimum(gmin, 0.0)
            target = (np.maximum(gmax, 0.0) - lo) / self._levels
        else:
            target = np.maximum(-gmin, gmax) / self._levels
        if not np.isfinite(target).all() or (target > self.scale_dtype.max).any():
            return self._general(x)        # non-finite input or a scale out of range: the general path's error
        target[target == 0] = 1.0
        s = self._round_up(target)
        q = w / s[..., None]
        zeros = None
        d = self.dtype
        if self._mode == "asymmetric":
            z = _clip(np.rint(-lo / s) + d.min, d.min, d.max)
            q = np.rint(q, out=q)
            q += z[..., None]
            zeros = z.astype(self._scale_np)
        elif self._mode == "symmetric-uint":
            q = np.rint(q, out=q)
            q += float(2 ** (d.nbits - 1))
        if d.is_float:
            codes = d.encode(q)
        else:   # dtypes' integer encode for finite values: nearest (ties to even), clipped, two's complement
            codes = (_clip(np.rint(q, out=q), d.min, d.max).astype(np.int16) & (d.num_codes - 1)).astype(np.uint8)
        packed = pack_trusted(codes.reshape(*lead, k), d.nbits)
        scales = s.astype(self._scale_np)
        if not on_torch:
            return packed, scales, zeros
        return tuple(None if a is None else storage.to_torch(a, share=True) for a in (packed, scales, zeros))

    def _general(self, x: Any) -> tuple[Any, Any, Any]:
        return quantize_arrays(x, self.dtype, self.group_size, self.zero_point, self.scale_dtype)[:3]

    def _round_up(self, target: np.ndarray) -> np.ndarray:
        """The smallest scale-type value >= ``target`` (> 0, <= the type's max), at least its smallest normal.
        The cast lands on one of the two values around ``target`` (ml_dtypes casts through float32, so not
        always the nearer one); one code up where it fell below (positive floats order like their bits)."""
        s = target.astype(self._scale_np)
        bits = s.view(self._bits_np)
        bits += (s.astype(np.float64) < target).astype(self._bits_np)
        return np.maximum(s.astype(np.float64), self.scale_dtype.smallest_normal)


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``np.clip(x, lo, hi)`` in place, without its Python wrapper."""
    return np.minimum(np.maximum(x, lo, out=x), hi, out=x)
