"""Group-wise round-to-nearest quantization: ``quantize(w, dtype, group_size, zero_point, ...)``.

``w`` has shape ``[..., K]``; each run of ``g = group_size`` consecutive elements along the last axis shares one
scale ``s`` (and, with ``zero_point=True``, one integer zero ``z``). ``group_size=None`` (or ``-1``) means
per-channel: one group spanning K. Codes are round-to-nearest (ties to even) of ``w / s``; all arithmetic is
float64 on the input's backend (numpy, or torch on the input's device), so for float32/float16/bfloat16
weights every code is the exactly rounded ``w / s``.

Scale rules (``absmax``, ``lo = min(w, 0)``, ``hi = max(w, 0)`` per group):

==========================  =================  ===========================  =========================
weight dtype                reconstruction     scale                        zero
==========================  =================  ===========================  =========================
float (any)                 ``value(q) * s``   ``absmax / dtype.max``       none
int{n}, n >= 2, symmetric   ``q * s``          ``absmax / (2**(n-1) - 1)``  none
uint{n}, n >= 2, symmetric  ``(q - m) * s``    ``absmax / (2**(n-1) - 1)``  implicit ``m = 2**(n-1)``
int{n} / uint{n}, zero pt.  ``(q - z) * s``    ``(hi - lo) / (2**n - 1)``   ``qmin + round(-lo / s)``
==========================  =================  ===========================  =========================

Codes: ``q = round(w / s)`` (floats: the nearest format value, saturating), or ``round(w / s) + z``, clipped
to ``[qmin, qmax]`` = ``[dtype.min, dtype.max]``.

* Symmetric ints never use the code ``-2**(n-1)`` (it would make the range lopsided); it still decodes.
* ``uint{n}`` without zero points is GPTQ's symmetric mode: the zero is the fixed midpoint ``m = 2**(n-1)``,
  not stored (``QuantizedTensor.implicit_zero``); the levels equal those of symmetric ``int{n}``.
* ``int1`` / ``uint1`` without zero points are refused: two levels {-1, 0} (or a midpoint of 1 with a single
  level above it) leave no symmetric positive level to map absmax onto. Float weight types never have zero
  points.
* The scale is rounded **up** to the scale dtype (the smallest representable value >= the exact ratio), so
  every weight lies inside the representable range: the error is at most half a step, ``s / 2`` for ints,
  half the gap between the two format values around ``w / s`` times ``s`` for floats.
* A scale below the scale dtype's smallest *normal* number is raised to it (kernels that flush subnormals
  then still see a non-zero scale); the bounds above still hold with the stored scale. A scale above the
  scale dtype's max raises :class:`~lowbit.QuantizationError` (use a wider ``scale_dtype``).
* An all-zero group gets scale 1 (and zero ``qmin``, or the zero code): it dequantizes to exact zeros.
* Zeros are integers in ``[qmin, qmax]`` stored in ``zero_dtype`` (default: the scale dtype), which must hold
  each of them exactly (float16 and bfloat16 hold every 8-bit code range; float8_e4m3fn does not).
* ``K`` must be a multiple of ``group_size``; NaN/inf anywhere raises :class:`~lowbit.QuantizationError` with
  the first bad index. Empty tensors: leading dimensions may be 0 (empty result); ``K = 0`` is refused.

>>> import numpy as np
>>> qt = quantize(np.array([[1.0, -7.0, 3.5, 2.0]], np.float32), "int4", group_size=None)
>>> qt.codes(), qt.scales                    # scale 7 / 7 = 1; 3.5 is a tie -> 4; -7 is code 9
(array([[1, 9, 4, 2]], dtype=uint8), array([[1.]], dtype=float16))
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType, dtype as as_dtype
from ..errors import QuantizationError
from ..packing import pack
from . import storage
from .formats import DENSE_ROWMAJOR
from .qtensor import QuantizedTensor

__all__ = ["quantize", "quantize_arrays"]

#: CPU tensors are quantized by the numpy implementation (then moved to torch); the torch implementation
#: serves other devices. Tests switch this off to run the torch implementation on CPU.
_CPU_VIA_NUMPY = True

_SCALE_TYPES = ("float16", "bfloat16", "float32", "float8_e4m3fn", "float8_e5m2")


def quantize(w: Any, dtype: Any, group_size: int | None = 128, zero_point: bool = False,
             scale_dtype: Any = "float16", zero_dtype: Any = None) -> QuantizedTensor:
    """Quantize ``w [..., K]`` group-wise to ``dtype`` (1..8 bits) with round-to-nearest; see the module docs.

    >>> import numpy as np
    >>> qt = quantize(np.linspace(-1, 1, 8).reshape(2, 4), "uint4", group_size=2, zero_point=True)
    >>> qt.shape, qt.scales.shape, qt.zeros.dtype
    ((2, 4), (2, 2), dtype('float16'))
    """
    d = as_dtype(dtype)
    packed, scales, zeros, g = quantize_arrays(w, d, group_size, zero_point, scale_dtype, zero_dtype)
    return QuantizedTensor(packed, scales, zeros, d, g, tuple(int(v) for v in np.shape(w)), DENSE_ROWMAJOR)


def quantize_arrays(w: Any, dtype: Any, group_size: int | None = 128, zero_point: bool = False,
                    scale_dtype: Any = "float16", zero_dtype: Any = None) -> tuple[Any, Any, Any, int]:
    """What :func:`quantize` stores, without the :class:`QuantizedTensor` around it: ``(packed codes [..., B]
    uint8, scales [..., K // g], zeros or None, g)``, torch tensors on ``w``'s device for a torch ``w``, numpy
    arrays for the rest. For callers that quantize many small tensors (a KV cache, token by token).

    >>> import numpy as np
    >>> packed, scales, zeros, g = quantize_arrays(np.array([[1.0, -7.0, 3.5, 2.0]]), "int4", group_size=2)
    >>> packed, scales, zeros, g        # codes 1, -7 (9) | 7, 4, two per byte, low nibble first
    (array([[145,  71]], dtype=uint8), array([[1. , 0.5]], dtype=float16), None, 2)
    """
    d = as_dtype(dtype)
    if d.nbits > 8:
        raise QuantizationError(f"weights quantize to 1..8-bit dtypes; got {d.name}",
                                hint="keep 16/32-bit weights as they are")
    if not isinstance(zero_point, (bool, np.bool_)):
        raise QuantizationError(f"zero_point must be True or False; got {zero_point!r}")
    mode = _mode(d, bool(zero_point))
    sd = _scale_dtype(scale_dtype)
    zd = _zero_dtype(d, sd, zero_dtype) if mode == "asymmetric" else None
    if mode != "asymmetric" and zero_dtype is not None:
        raise QuantizationError(f"zero_dtype={zero_dtype!r} was given, but there are no zero points "
                                f"(zero_point={zero_point}, dtype {d.name})", hint="drop zero_dtype")

    on_torch = storage.is_torch(w)
    if on_torch and _CPU_VIA_NUMPY and w.device.type == "cpu" and w.dtype.is_floating_point:
        # numpy is several times faster than torch's CPU kernels here; the numbers are identical
        plain = w.detach()
        if str(plain.dtype) not in ("torch.float16", "torch.float32", "torch.float64"):
            plain = plain.float()  # bfloat16 / float8: exact in float32, which numpy has
        arrays = quantize_arrays(plain.numpy(), d, group_size, zero_point, scale_dtype, zero_dtype)
        return tuple(None if a is None else storage.to_torch(a, w.device) for a in arrays[:3]) + (arrays[3],)
    w64 = _as_float64(w, on_torch)
    shape = tuple(int(s) for s in w64.shape)
    if not shape:
        raise QuantizationError("cannot quantize a 0-d value; expected a tensor of shape [..., K]")
    k = shape[-1]
    if k == 0:
        raise QuantizationError(f"the last axis (K) is empty in a tensor of shape {list(shape)}; "
                                "there is nothing to group")
    g = _group_size(group_size, k)
    _check_finite(w64, on_torch)

    xp = _Torch() if on_torch else _Numpy()
    groups = w64.reshape(*shape[:-1], k // g, g)
    gmin, gmax = xp.amin(groups), xp.amax(groups)
    if mode == "asymmetric":
        lo, hi = xp.minimum(gmin, 0.0), xp.maximum(gmax, 0.0)
        target = (hi - lo) / float(2 ** d.nbits - 1)
    elif mode == "symmetric-uint":
        target = xp.maximum_(-gmin, gmax) / float(2 ** (d.nbits - 1) - 1)
    else:
        target = xp.maximum_(-gmin, gmax) / float(d.max)  # absmax / max
    target = xp.where(target == 0, 1.0, target)
    s = _round_up_scale(target, sd, g)

    x = groups / s[..., None]  # float64: exact ratios of float32 weights and scales, rounded once
    zeros = None
    if mode == "asymmetric":
        z = xp.clip(xp.round(-lo / s) + d.min, d.min, d.max)
        x = xp.round_(x)
        x += z[..., None]
        zeros = storage.to_storage(z, zd)
    elif mode == "symmetric-uint":
        x = xp.round_(x)
        x += float(2 ** (d.nbits - 1))
    codes = d.encode(x)  # floats: RNE + saturation; ints: RNE + clip to [min, max] (a no-op here)
    return pack(codes.reshape(shape), d.nbits, axis=-1), storage.to_storage(s, sd), zeros, g


# ---------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------
def _mode(d: DType, zero_point: bool) -> str:
    if d.is_float:
        if zero_point:
            raise QuantizationError(f"{d.name} is a float type: it has no zero point (w ~ value * scale)",
                                    hint="use zero_point=False, or an int/uint type for asymmetric quantization")
        return "float"
    if zero_point:
        return "asymmetric"
    if d.nbits == 1:
        raise QuantizationError(f"{d.name} has two codes: symmetric quantization has no positive level",
                                hint="use zero_point=True (levels {0, s} or {-s, 0} per group)")
    return "symmetric-uint" if d.kind == "uint" else "symmetric"


def _scale_dtype(spec: Any) -> DType:
    sd = as_dtype(spec)
    if sd.name not in _SCALE_TYPES:
        raise QuantizationError(f"scale_dtype must be one of {', '.join(_SCALE_TYPES)}; got {sd.name}")
    return sd


def _zero_dtype(d: DType, sd: DType, spec: Any) -> DType:
    zd = sd if spec is None else as_dtype(spec)
    if zd.name not in storage.STORABLE:
        raise QuantizationError(f"zero_dtype must be one of {', '.join(storage.STORABLE)}; got {zd.name}")
    levels = np.arange(d.min, d.max + 1, dtype=np.float64)
    if zd.is_float:
        exact = bool(np.all(zd.decode(zd.encode(levels)).astype(np.float64) == levels))
    else:
        exact = zd.min <= d.min and zd.max >= d.max
    if not exact:
        origin = "the scale dtype " if spec is None else ""
        raise QuantizationError(f"zero points of {d.name} are integers in [{d.min}, {d.max}], which {origin}"
                                f"{zd.name} cannot all hold exactly",
                                hint="pass zero_dtype='float16' (or 'int8'/'uint8' matching the code range)")
    return zd


def _group_size(spec: Any, k: int) -> int:
    if spec is None or (isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec == -1):
        return k
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)) or spec < 1:
        raise QuantizationError(f"group_size must be a positive integer, or None / -1 for per-channel; got {spec!r}")
    g = int(spec)
    if k % g:
        near = sorted((q for q in range(1, k + 1) if k % q == 0), key=lambda q: (abs(np.log2(q / g)), -q))[:3]
        raise QuantizationError(f"group_size {g} does not divide K = {k} (the last axis)",
                                hint=f"use group_size=None for one group per row, or a divisor of {k} such as "
                                     f"{', '.join(map(str, sorted(near)))}")
    return g


def _as_float64(w: Any, on_torch: bool) -> Any:
    if on_torch:
        import torch

        if not w.dtype.is_floating_point:
            raise QuantizationError(f"expected floating-point weights; got a tensor of {w.dtype}",
                                    hint="convert with .float() first")
        return w.detach().to(torch.float64)
    if isinstance(w, (np.ndarray, np.generic)):
        arr = np.asarray(w)
        floating = arr.dtype.kind == "f" or (arr.dtype.kind == "V" and arr.dtype.name.startswith(("float", "bfloat")))
        if not floating:
            raise QuantizationError(f"expected floating-point weights; got an array of {arr.dtype}",
                                    hint="convert with .astype(np.float32) first")
        return arr.astype(np.float64)
    try:
        return np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise QuantizationError(f"expected a float array or tensor; got {type(w).__name__} ({exc})") from None


def _check_finite(w64: Any, on_torch: bool) -> None:
    if on_torch:
        import torch

        bad = ~torch.isfinite(w64)
        if w64.numel() == 0 or not bool(bad.any()):
            return
        where = tuple(int(i) for i in bad.nonzero()[0])
    else:
        bad = ~np.isfinite(w64)
        if not bad.any():
            return
        where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise QuantizationError(f"weights must be finite; found {float(w64[where])} at index {where}",
                            hint="replace or mask NaN/inf before quantizing")


def _round_up_scale(target: Any, sd: DType, g: int) -> Any:
    """The smallest ``sd`` value >= ``target`` (float64 > 0), at least ``sd.smallest_normal``."""
    too_big = target > sd.max
    if bool(too_big.any()):
        on_torch = storage.is_torch(target)
        where = tuple(int(i) for i in (too_big.nonzero()[0] if on_torch else np.argwhere(too_big)[0]))
        *row, j = where
        raise QuantizationError(f"group {j} of row {tuple(row)} (elements {j * g}..{(j + 1) * g - 1}) needs scale "
                                f"{float(target[where]):.6g}, above the largest {sd.name} ({sd.max:.6g})",
                                hint="use scale_dtype='float32' or 'bfloat16'")
    code = sd.encode(target)
    if storage.is_torch(target):
        import torch

        code = code.to(torch.int64)
        code = code + (storage.to_float64(sd.decode(code)) < target).to(torch.int64)
        return torch.clamp(sd.decode(code).to(torch.float64), min=sd.smallest_normal)
    code = code.astype(np.int64)
    code = code + (sd.decode(code).astype(np.float64) < target)
    return np.maximum(sd.decode(code).astype(np.float64), sd.smallest_normal)


class _Numpy:
    maximum_ = staticmethod(np.maximum)
    where = staticmethod(np.where)
    round = staticmethod(np.rint)  # half to even
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    clip = staticmethod(np.clip)

    @staticmethod
    def round_(x: Any) -> Any:
        return np.rint(x, out=x)

    @staticmethod
    def amax(x: Any) -> Any:
        return np.max(x, axis=-1)

    @staticmethod
    def amin(x: Any) -> Any:
        return np.min(x, axis=-1)


class _Torch:
    def __init__(self) -> None:
        import torch

        self.t = torch

    def maximum_(self, a: Any, b: Any) -> Any:
        return self.t.maximum(a, b)

    def round_(self, x: Any) -> Any:
        return x.round_()

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.t.where(c, self.t.as_tensor(a, dtype=b.dtype, device=b.device), b)

    def round(self, x: Any) -> Any:
        return self.t.round(x)  # half to even

    def minimum(self, x: Any, v: float) -> Any:
        return self.t.clamp(x, max=v)

    def maximum(self, x: Any, v: float) -> Any:
        return self.t.clamp(x, min=v)

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return self.t.clamp(x, lo, hi)

    def amax(self, x: Any) -> Any:
        return self.t.amax(x, dim=-1)

    def amin(self, x: Any) -> Any:
        return self.t.amin(x, dim=-1)
