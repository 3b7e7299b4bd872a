"""Arbitrary-bit dtypes: names, value tables, exact encode/decode.

A :class:`DType` describes how an ``nbits``-wide *code* (an unsigned bit pattern, ``0 <= code < 2**nbits``)
maps to a number. ``decode`` turns codes into values, ``encode`` turns values into codes with exact
round-to-nearest-even.

>>> f4 = dtype("float4_e2m1")
>>> f4.values()[:8]
array([0. , 0.5, 1. , 1.5, 2. , 3. , 4. , 6. ])
>>> f4.encode([1.0, 2.5, -7.0, 0.25])        # 2.5 and 0.25 are ties: to the even code; -7 saturates
array([ 2,  4, 15,  0], dtype=uint8)

Types
-----
* ``int1`` .. ``int8`` (two's complement: code ``c`` means ``c - 2**n`` when ``c >= 2**(n-1)``), ``int32``;
  ``uint1`` .. ``uint8`` (code ``c`` means ``c``).
* ``float{n}_e{E}m{M}`` for every ``E >= 1, M >= 0, 1 + E + M = n``, ``2 <= n <= 8`` (``float4_e2m1``,
  ``float6_e3m2``, ``float3_e1m1``, ``float8_e4m3``, ...): sign-magnitude, bias ``2**(E-1) - 1``, IEEE
  subnormals, and **no inf/nan codes**: the top binade is ordinary (the rule of OCP MX FP4/FP6).
  This holds for the generic 8-bit names too: ``float8_e4m3`` is the finite-only e4m3 (max 480), *not*
  ``ml_dtypes.float8_e4m3`` (IEEE-like, max 240, with inf/nan), and ``float8_e3m4`` likewise.
* ``float8_e4m3fn`` and ``float8_e5m2`` follow OCP FP8 (as ``ml_dtypes`` and torch do): e4m3fn has NaN
  (``S.1111.111``) and no inf, max 448; e5m2 is IEEE-like with inf and NaNs, max 57344. The name
  ``float8_e5m2`` means the OCP type even though it also matches the generic pattern.
* ``float16``, ``bfloat16``, ``float32`` (IEEE binary16 / bfloat16 / binary32).

Aliases: ``i3``, ``u4``, ``i32``, ``f4e2m1``, ``f6e3m2``, ``f8e4m3fn``, ``f8e5m2``, ``f16``, ``bf16``, ``f32``
(``f{n}e{E}m{M}`` for every generic float), and the ml_dtypes spellings ``float4_e2m1fn``, ``float6_e3m2fn``,
``float6_e2m3fn`` (any ``float{n}_e{E}m{M}fn`` with ``n < 8``), which name the same values.

Encoding rules (``DType.encode``)
---------------------------------
* Values are converted to float64 (exact for float16/bfloat16/float32 inputs) and rounded **to nearest,
  ties to the even code** (the code whose lowest bit is 0; for formats with ``M >= 1`` this is IEEE's
  ties-to-even), including in the subnormal range.
* Finite values beyond the range **saturate** to ``+-max`` on every type, including the IEEE-like ones
  (float8_e5m2, float16, bfloat16, float32): unlike ``ml_dtypes`` / IEEE casts, which give inf (e5m2, f16)
  or NaN (e4m3fn), ``encode`` never turns a finite number into a non-finite one.
* ``+-inf`` becomes the inf code where the type has one, else saturates to ``+-max``.
* The sign of zero is kept (``-0.0`` and negative values that round to zero give the ``-0`` code).
* NaN becomes the type's canonical positive quiet NaN code (e4m3fn ``0x7f``, e5m2 ``0x7e``, float16
  ``0x7e00``, bfloat16 ``0x7fc0``, float32 ``0x7fc00000``). Types without a NaN code (integers and the
  finite-only floats) encode NaN as **+max**: a conspicuous finite value, like saturating inf. (Zero would
  hide the NaN among genuine zeros; ``lowbit.quant.quantize`` rejects NaN input outright.)
* Integer kinds round half to even, then clip to ``[min, max]``.

Codes come back as uint8 (uint16 for 16-bit types, uint32 for 32-bit ones). ``decode`` gives float32 for
float kinds and int32 for integer kinds. Both take numpy arrays, Python scalars or lists (result: numpy)
and torch tensors (result: a torch tensor on the same device); torch is imported only for torch input.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from .errors import DTypeError

Kind = Literal["int", "uint", "float"]
Specials = Literal["none", "nan", "inf_nan"]

__all__ = ["DType", "dtype", "all_dtypes", "VALID_FORMS"]

VALID_FORMS = ("int1..int8, uint1..uint8, int32, float{n}_e{E}m{M} with 1 + E + M = n <= 8 and E >= 1 "
               "(e.g. float4_e2m1, float6_e3m2, float3_e1m1), float8_e4m3fn, float8_e5m2, float16, bfloat16, "
               "float32; short aliases i4, u4, i32, f4e2m1, f8e4m3fn, f16, bf16, f32")

_TABLE_MAX_BITS = 16  # types with at most this many bits have a code -> value table


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass(frozen=True, repr=False)
class DType:
    """A number format of ``nbits`` bits. Get one with :func:`dtype`; compare with ``==``.

    ``specials`` says which codes are not finite numbers: ``"none"`` (all finite: the sub-byte rule),
    ``"nan"`` (OCP e4m3fn: only ``S.1111.111`` is NaN) or ``"inf_nan"`` (IEEE-like: exponent all ones).

    >>> d = dtype("f6e3m2")
    >>> (d.name, d.nbits, d.kind, d.exponent_bits, d.mantissa_bits, d.bias, d.max)
    ('float6_e3m2', 6, 'float', 3, 2, 3, 28.0)
    """

    name: str
    nbits: int
    kind: Kind
    exponent_bits: int = 0
    mantissa_bits: int = 0
    bias: int | None = None
    specials: Specials = "none"  # floats: "none" (all finite), "nan" (OCP e4m3fn), "inf_nan" (IEEE-like)

    # ---- descriptive properties ------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"lowbit.dtype({self.name!r})"

    def __str__(self) -> str:
        return self.name

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_signed(self) -> bool:
        return self.kind != "uint"

    @property
    def num_codes(self) -> int:
        return 1 << self.nbits

    @property
    def has_inf(self) -> bool:
        return self.specials == "inf_nan"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none" and self.is_float

    @functools.cached_property   # computed once per dtype (quantizers read it per call)
    def max(self) -> float | int:
        """The largest finite value (a Python float for float kinds, an int for integer kinds)."""
        if self.kind == "int":
            return (1 << (self.nbits - 1)) - 1
        if self.kind == "uint":
            return (1 << self.nbits) - 1
        return float(_float_value_exact(self, self.max_code))

    @property
    def min(self) -> float | int:
        """The smallest (most negative) finite value."""
        if self.kind == "int":
            return -(1 << (self.nbits - 1))
        if self.kind == "uint":
            return 0
        return -self.max

    @functools.cached_property   # computed once per dtype (quantizers read it per call)
    def smallest_normal(self) -> float:
        """Floats only: the smallest positive normal value, ``2**(1 - bias)``."""
        self._require_float("smallest_normal")
        return float(Fraction(2) ** (1 - self.bias))

    @functools.cached_property   # computed once per dtype (quantizers read it per call)
    def smallest_subnormal(self) -> float:
        """Floats only: the smallest positive value, ``2**(1 - bias - M)``."""
        self._require_float("smallest_subnormal")
        return float(Fraction(2) ** (1 - self.bias - self.mantissa_bits))

    @functools.cached_property   # computed once per dtype (quantizers read it per call)
    def max_code(self) -> int:
        """The code of :attr:`max` (for floats: the largest finite positive code)."""
        if self.kind == "int":
            return (1 << (self.nbits - 1)) - 1
        if self.kind == "uint":
            return (1 << self.nbits) - 1
        top = (1 << (self.nbits - 1)) - 1  # all exponent and mantissa bits set
        if self.specials == "none":
            return top
        if self.specials == "nan":
            return top - 1
        return top - (1 << self.mantissa_bits)  # below the inf code

    @property
    def nan_code(self) -> int | None:
        """The code ``encode`` gives NaN: the canonical quiet NaN, or ``None`` if the type has no NaN."""
        if not self.has_nan:
            return None
        if self.specials == "nan":
            return (1 << (self.nbits - 1)) - 1  # S.1111.111 with S = 0
        emax = (1 << self.exponent_bits) - 1
        return (emax << self.mantissa_bits) | (1 << (self.mantissa_bits - 1))  # quiet bit set

    @property
    def codes_dtype(self) -> np.dtype:
        """The numpy dtype of codes: uint8, uint16 or uint32."""
        return np.dtype(np.uint8 if self.nbits <= 8 else np.uint16 if self.nbits <= 16 else np.uint32)

    def _require_float(self, what: str) -> None:
        if not self.is_float:
            raise DTypeError(f"{what} is defined for float dtypes only; {self.name} is an integer type")

    # ---- tables ------------------------------------------------------------------------------------
    def values(self) -> np.ndarray:
        """The code -> value table as float64, index = code (read-only; NaN/inf where the type has them).

        >>> dtype("int2").values()
        array([ 0.,  1., -2., -1.])
        """
        if self.nbits > _TABLE_MAX_BITS:
            raise DTypeError(f"{self.name} has 2**{self.nbits} codes; it has no value table",
                             hint="use decode() on the codes you need")
        return _values_table(self)

    # ---- conversion --------------------------------------------------------------------------------
    def decode(self, codes: Any) -> Any:
        """Codes (any integer dtype, values in ``[0, 2**nbits)``) -> values (float32; int32 for int kinds).

        >>> dtype("int3").decode([1, 7, 4])
        array([ 1, -1, -4], dtype=int32)
        """
        if _is_torch(codes):
            return _decode_torch(self, codes)
        arr = _as_numpy_codes(codes, self)
        if self.nbits > _TABLE_MAX_BITS:
            bits = arr.astype(np.uint32)
            return np.array(bits.view(np.float32 if self.is_float else np.int32))
        return np.asarray(_decode_table(self)[arr])

    def encode(self, values: Any) -> Any:
        """Values -> codes, exact round-to-nearest-even (see the module docstring for inf/NaN/overflow).

        >>> dtype("uint2").encode([0.5, 1.5, 2.5, 9.0, -1.0])
        array([0, 2, 2, 3, 0], dtype=uint8)
        """
        if _is_torch(values):
            return _encode_torch(self, values)
        x = _as_numpy_float64(values, self)
        if self.kind != "float":
            return _encode_int_numpy(self, x)
        if self.nbits > _TABLE_MAX_BITS:
            return _encode_f32_numpy(self, x)
        return _encode_float_numpy(self, x)


# ---------------------------------------------------------------------------------------------------
# Exact values (python ints and Fractions) and cached tables
# ---------------------------------------------------------------------------------------------------
def _float_value_exact(d: DType, code: int) -> Fraction | float:
    """The value of one float code, exactly (float('nan') / float('inf') for special codes)."""
    mbits, ebits = d.mantissa_bits, d.exponent_bits
    sign = -1 if (code >> (d.nbits - 1)) & 1 else 1
    e = (code >> mbits) & ((1 << ebits) - 1)
    m = code & ((1 << mbits) - 1)
    emax = (1 << ebits) - 1
    if d.specials == "inf_nan" and e == emax:
        return sign * float("inf") if m == 0 else float("nan")
    if d.specials == "nan" and e == emax and m == (1 << mbits) - 1:
        return float("nan")
    if e == 0:
        return sign * Fraction(m, 1 << mbits) * Fraction(2) ** (1 - d.bias)
    return sign * (1 + Fraction(m, 1 << mbits)) * Fraction(2) ** (e - d.bias)


@functools.lru_cache(maxsize=None)
def _values_table(d: DType) -> np.ndarray:
    codes = np.arange(d.num_codes, dtype=np.int64)
    if d.kind == "uint":
        table = codes.astype(np.float64)
    elif d.kind == "int":
        table = np.where(codes >= (1 << (d.nbits - 1)), codes - (1 << d.nbits), codes).astype(np.float64)
    else:
        mbits = d.mantissa_bits
        e = (codes >> mbits) & ((1 << d.exponent_bits) - 1)
        m = codes & ((1 << mbits) - 1)
        neg = ((codes >> (d.nbits - 1)) & 1).astype(bool)
        frac = m.astype(np.float64) / float(1 << mbits)
        mag = np.where(e == 0, np.ldexp(frac, 1 - d.bias), np.ldexp(1.0 + frac, (e - d.bias).astype(np.int32)))
        emax = (1 << d.exponent_bits) - 1
        if d.specials == "inf_nan":
            mag = np.where(e == emax, np.where(m == 0, np.inf, np.nan), mag)
        elif d.specials == "nan":
            mag = np.where((e == emax) & (m == (1 << mbits) - 1), np.nan, mag)
        table = np.where(neg, -mag, mag)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def _decode_table(d: DType) -> np.ndarray:
    table = _values_table(d).astype(np.float32 if d.is_float else np.int32)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def _boundaries(d: DType) -> np.ndarray:
    """Decision points for encoding a magnitude ``a`` of a float type: its code is ``#{bounds < a}``.

    Between consecutive finite values ``v[i] < v[i+1]`` lies the midpoint ``m[i]`` (exact in float64: the
    values have at most 24 significant bits). A magnitude exactly on ``m[i]`` must go to the even code: to
    ``i`` when ``i`` is even (``m[i] < a`` is false, as wanted) and to ``i + 1`` when ``i`` is odd, which
    the next float64 below ``m[i]`` as the boundary achieves (nothing lies strictly between the two).
    """
    mags = _values_table(d)[: d.max_code + 1]
    mids = (mags[:-1] + mags[1:]) / 2.0
    odd = (np.arange(len(mids)) & 1) == 1
    bounds = np.where(odd, np.nextafter(mids, -np.inf), mids)
    bounds.setflags(write=False)
    return bounds


_TORCH_TABLES: dict[tuple[DType, str, str], Any] = {}


def _torch_table(d: DType, which: str, device: Any) -> Any:
    import torch

    key = (d, which, str(device))
    table = _TORCH_TABLES.get(key)
    if table is None:
        source = _decode_table(d) if which == "decode" else _boundaries(d)
        table = torch.from_numpy(np.array(source)).to(device)
        _TORCH_TABLES[key] = table
    return table


# ---------------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------------
def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _as_numpy_codes(codes: Any, d: DType) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.size == 0 and arr.dtype == np.float64 and not isinstance(codes, np.ndarray):
        arr = arr.astype(np.int64)  # an empty Python list
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"codes for {d.name} must be integers; got an array of {arr.dtype}",
                         hint="codes are unsigned bit patterns; use encode() to turn values into codes")
    if arr.size and (arr.dtype.kind == "i" or np.iinfo(arr.dtype).max >= d.num_codes):
        bad = (arr < 0) | (arr >= d.num_codes) if arr.dtype.kind == "i" else arr >= d.num_codes
        if bad.any():
            where = _first_index(bad)
            raise DTypeError(f"codes for {d.name} must lie in [0, {d.num_codes - 1}]; got {arr[where]} at "
                             f"index {where}",
                             hint="codes are unsigned bit patterns of the dtype's width")
    return arr


def _as_numpy_float64(values: Any, d: DType) -> np.ndarray:
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind in "biuf" or (kind == "V" and arr.dtype.type.__module__.startswith("ml_dtypes")):
        with np.errstate(all="ignore"):
            return arr.astype(np.float64)
    raise DTypeError(f"values to encode as {d.name} must be real numbers; got an array of {arr.dtype}")


# ---------------------------------------------------------------------------------------------------
# numpy paths
# ---------------------------------------------------------------------------------------------------
def _encode_int_numpy(d: DType, x: np.ndarray) -> np.ndarray:
    r = np.array(x, dtype=np.float64)  # a fresh array (also for 0-d input), rounded in place
    np.rint(r, out=r)  # half to even
    np.clip(r, d.min, d.max, out=r)
    if not np.isfinite(x).all():
        r[np.isnan(r)] = d.max
    work = np.int64 if d.nbits > 8 else np.int16
    return np.asarray((r.astype(work) & (d.num_codes - 1)).astype(d.codes_dtype))


def _encode_float_numpy(d: DType, x: np.ndarray) -> np.ndarray:
    code = np.asarray(np.searchsorted(_boundaries(d), np.abs(x), side="left").astype(d.codes_dtype))
    sign = np.asarray(np.signbit(x).astype(d.codes_dtype) << (d.nbits - 1))
    code |= sign
    if not np.isfinite(x).all():
        if d.has_inf:
            inf = np.isinf(x)
            code[inf] = (d.max_code + 1) | sign[inf]
        code[np.isnan(x)] = d.nan_code if d.has_nan else d.max_code
    return code


def _encode_f32_numpy(d: DType, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)  # IEEE round-to-nearest-even, subnormals included
    f = np.where(np.isinf(f) & np.isfinite(x), np.copysign(np.float32(d.max), x).astype(np.float32), f)
    bits = np.asarray(f, dtype=np.float32).view(np.uint32)
    return np.asarray(np.where(np.isnan(x), np.uint32(d.nan_code), bits).astype(np.uint32))


# ---------------------------------------------------------------------------------------------------
# torch paths (same algorithms, on the tensor's device)
# ---------------------------------------------------------------------------------------------------
def _torch_codes_dtype(d: DType) -> Any:
    import torch

    return torch.uint8 if d.nbits <= 8 else torch.uint16 if d.nbits <= 16 else torch.uint32


def _decode_torch(d: DType, codes: Any) -> Any:
    import torch

    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise DTypeError(f"codes for {d.name} must be integers; got a tensor of {codes.dtype}",
                         hint="codes are unsigned bit patterns; use encode() to turn values into codes")
    c = codes.to(torch.int64)
    bad = (c < 0) | (c >= d.num_codes)
    if c.numel() and bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise DTypeError(f"codes for {d.name} must lie in [0, {d.num_codes - 1}]; got {int(c[where])} at "
                         f"index {where}", hint="codes are unsigned bit patterns of the dtype's width")
    if d.nbits > _TABLE_MAX_BITS:
        signed = torch.where(c >= (1 << 31), c - (1 << 32), c).to(torch.int32)
        return signed.view(torch.float32) if d.is_float else signed
    return _torch_table(d, "decode", c.device)[c]


def _encode_torch(d: DType, values: Any) -> Any:
    import torch

    if values.dtype.is_complex:
        raise DTypeError(f"values to encode as {d.name} must be real numbers; got a tensor of {values.dtype}")
    x = values.to(torch.float64)
    out_dtype = _torch_codes_dtype(d)
    finite = bool(torch.isfinite(x).all())
    if d.kind != "float":
        r = torch.round(x).clamp_(d.min, d.max)  # torch.round: half to even
        if not finite:
            r = torch.where(torch.isnan(r), torch.full_like(r, d.max), r)
        work = torch.int64 if d.nbits > 8 else torch.int16
        return (r.to(work) & (d.num_codes - 1)).to(out_dtype)
    if d.nbits > _TABLE_MAX_BITS:
        f = x.to(torch.float32)
        f = torch.where(torch.isinf(f) & torch.isfinite(x), torch.copysign(torch.full_like(f, d.max), f), f)
        code = f.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        code = torch.where(torch.isnan(x), torch.full_like(code, d.nan_code), code)
        return code.to(out_dtype)
    sign = torch.signbit(x).to(torch.int32) << (d.nbits - 1)
    bounds = _torch_table(d, "bounds", x.device)
    code = torch.searchsorted(bounds, x.abs().contiguous(), out_int32=True) | sign
    if not finite:
        if d.has_inf:
            code = torch.where(torch.isinf(x), (d.max_code + 1) | sign, code)
        nan = d.nan_code if d.has_nan else d.max_code
        code = torch.where(torch.isnan(x), torch.full_like(code, nan), code)
    return code.to(out_dtype)


# ---------------------------------------------------------------------------------------------------
# Registry and name resolution
# ---------------------------------------------------------------------------------------------------
def _build_registry() -> tuple[dict[str, DType], dict[str, str]]:
    types: dict[str, DType] = {}
    aliases: dict[str, str] = {}
    for n in range(1, 9):
        types[f"int{n}"] = DType(f"int{n}", n, "int")
        types[f"uint{n}"] = DType(f"uint{n}", n, "uint")
        aliases[f"i{n}"] = f"int{n}"
        aliases[f"u{n}"] = f"uint{n}"
    types["int32"] = DType("int32", 32, "int")
    aliases["i32"] = "int32"
    for n in range(2, 9):
        for e in range(1, n):
            m = n - 1 - e
            name = f"float{n}_e{e}m{m}"
            specials: Specials = "inf_nan" if name == "float8_e5m2" else "none"
            types[name] = DType(name, n, "float", e, m, (1 << (e - 1)) - 1, specials)
            aliases[f"f{n}e{e}m{m}"] = name
            if n < 8:
                aliases[f"{name}fn"] = name  # ml_dtypes spelling ("finite"): same values
    types["float8_e4m3fn"] = DType("float8_e4m3fn", 8, "float", 4, 3, 7, "nan")
    aliases["f8e4m3fn"] = "float8_e4m3fn"
    types["float16"] = DType("float16", 16, "float", 5, 10, 15, "inf_nan")
    types["bfloat16"] = DType("bfloat16", 16, "float", 8, 7, 127, "inf_nan")
    types["float32"] = DType("float32", 32, "float", 8, 23, 127, "inf_nan")
    aliases.update(f16="float16", bf16="bfloat16", f32="float32")
    return types, aliases


_TYPES, _ALIASES = _build_registry()

# numpy / torch / ml_dtypes dtype names whose meaning is identical to ours (others are refused: for example
# ml_dtypes.float8_e4m3 is IEEE-like, while our float8_e4m3 is finite-only).
_FOREIGN_OK = {"int1", "int2", "int3", "int4", "int5", "int6", "int7", "int8", "int32", "uint1", "uint2", "uint3",
               "uint4", "uint5", "uint6", "uint7", "uint8", "float16", "bfloat16", "float32", "float8_e4m3fn",
               "float8_e5m2", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"}


def all_dtypes() -> list[DType]:
    """Every canonical dtype, sorted by (kind, nbits, name).

    >>> [d.name for d in all_dtypes() if d.nbits == 3]
    ['float3_e1m1', 'float3_e2m0', 'int3', 'uint3']
    """
    return sorted(_TYPES.values(), key=lambda d: (d.kind, d.nbits, d.name))


def _explain(name: str) -> str:
    m = re.fullmatch(r"float(\d+)_e(\d+)m(\d+)(fn)?", name)
    if m:
        n, e, mm = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if n > 8:
            return f"generic float{n}_e..m.. formats have at most 8 bits (use float16, bfloat16 or float32)"
        if 1 + e + mm != n:
            return f"1 + E + M = {1 + e + mm} does not equal the width {n}"
        if e < 1:
            return "a float needs at least one exponent bit (E >= 1)"
        if m.group(4) and n == 8:
            return "of the 8-bit 'fn' types only float8_e4m3fn exists"
    if re.fullmatch(r"u?int(\d+)", name):
        return "integer types have 1 to 8 bits (or int32)"
    return "not a known dtype name"


def dtype(spec: Any) -> DType:
    """Look a dtype up by name or alias (a :class:`DType` is returned unchanged).

    numpy, ml_dtypes and torch dtype objects are accepted where their meaning is the same as ours.

    >>> dtype("u4") == dtype("uint4"), dtype("float4_e2m1fn").name, dtype("bf16").max
    (True, 'float4_e2m1', 3.3895313892515355e+38)
    """
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        found = _TYPES.get(key) or _TYPES.get(_ALIASES.get(key, ""))
        if found is not None:
            return found
        choices = list(_TYPES) + list(_ALIASES)
        close = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
        raise DTypeError(f"unknown dtype {spec!r} ({_explain(key)}); valid forms: {VALID_FORMS}", hint=hint)
    foreign = _foreign_name(spec)
    if foreign is not None:
        if foreign in _FOREIGN_OK:
            return dtype(foreign)
        raise DTypeError(f"no lowbit dtype has the meaning of {spec!r}",
                         hint="pass a lowbit dtype name; valid forms: " + VALID_FORMS)
    raise DTypeError(f"expected a dtype name or DType; got {type(spec).__name__} {spec!r}",
                     hint="valid forms: " + VALID_FORMS)


def _foreign_name(spec: Any) -> str | None:
    if isinstance(spec, np.dtype):
        return spec.name
    if isinstance(spec, type) and issubclass(spec, np.generic):
        return np.dtype(spec).name
    if type(spec).__module__ == "torch" and type(spec).__name__ == "dtype":
        return str(spec).removeprefix("torch.")
    return None
