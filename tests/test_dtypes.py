"""lowbit.dtypes against independent references: ml_dtypes, numpy's IEEE types, and exact Fractions.

The Fraction reference below is written from the format definitions (sign, biased exponent, mantissa,
IEEE subnormals, the documented special codes), in plain Python integers: it shares no code with lowbit.
"""
from __future__ import annotations

import bisect
import math
import re
import subprocess
import sys
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit
from lowbit import DTypeError
from lowbit.dtypes import DType, all_dtypes, dtype

SUB_BYTE_FLOATS = [f"float{n}_e{e}m{n - 1 - e}" for n in range(2, 9) for e in range(1, n)]
ALL_NAMES = ([f"int{n}" for n in range(1, 9)] + [f"uint{n}" for n in range(1, 9)] + ["int32"] + SUB_BYTE_FLOATS
             + ["float8_e4m3fn", "float16", "bfloat16", "float32"])
TABLE_NAMES = [n for n in ALL_NAMES if n not in ("float32", "int32")]
SMALL_FLOATS = SUB_BYTE_FLOATS + ["float8_e4m3fn"]  # SUB_BYTE_FLOATS includes float8_e5m2 (the OCP type)

ML_FLOATS = {"float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
             "float6_e3m2": ml_dtypes.float6_e3m2fn, "float6_e2m3": ml_dtypes.float6_e2m3fn,
             "float4_e2m1": ml_dtypes.float4_e2m1fn, "bfloat16": ml_dtypes.bfloat16}
ML_INTS = {"int1": ml_dtypes.int1, "int2": ml_dtypes.int2, "int4": ml_dtypes.int4,
           "uint1": ml_dtypes.uint1, "uint2": ml_dtypes.uint2, "uint4": ml_dtypes.uint4}

# Documented choices (module docstring of lowbit.dtypes), restated here as the spec.
NAN_CODE = {"float8_e4m3fn": 0x7F, "float8_e5m2": 0x7E, "float16": 0x7E00, "bfloat16": 0x7FC0,
            "float32": 0x7FC00000}


# ---------------------------------------------------------------------------------------------------
# The independent reference
# ---------------------------------------------------------------------------------------------------
def ref_format(name: str) -> tuple[int, int, int, str]:
    """(nbits, exponent bits, mantissa bits, specials) from the format's definition."""
    fixed = {"float8_e4m3fn": (8, 4, 3, "nan"), "float8_e5m2": (8, 5, 2, "ieee"), "float16": (16, 5, 10, "ieee"),
             "bfloat16": (16, 8, 7, "ieee"), "float32": (32, 8, 23, "ieee")}
    if name in fixed:
        return fixed[name]
    n, e, m = map(int, re.fullmatch(r"float(\d)_e(\d)m(\d)", name).groups())
    return n, e, m, "none"


def ref_float(name: str, code: int):
    """Exact value of a float code: a Fraction (with a separate sign for zero), 'nan', or +-inf."""
    n, e_bits, m_bits, special = ref_format(name)
    bias = 2 ** (e_bits - 1) - 1
    negative = code >> (n - 1) == 1
    exponent = (code >> m_bits) % 2 ** e_bits
    mantissa = code % 2 ** m_bits
    if special == "ieee" and exponent == 2 ** e_bits - 1:
        return "nan" if mantissa else (-math.inf if negative else math.inf)
    if special == "nan" and exponent == 2 ** e_bits - 1 and mantissa == 2 ** m_bits - 1:
        return "nan"
    if exponent == 0:
        mag = Fraction(mantissa, 2 ** m_bits) * Fraction(2) ** (1 - bias)
    else:
        mag = (1 + Fraction(mantissa, 2 ** m_bits)) * Fraction(2) ** (exponent - bias)
    return -mag if negative else mag


def ref_int(name: str, code: int) -> int:
    n = int(re.search(r"\d+", name).group())
    if name.startswith("uint"):
        return code
    return code - 2 ** n if code >= 2 ** (n - 1) else code


class RefEncoder:
    """Exact round-to-nearest-even with saturation, by search over the exact positive values."""

    def __init__(self, name: str):
        self.name = name
        self.n, _, _, self.special = ref_format(name)
        pos = [(ref_float(name, c), c) for c in range(2 ** (self.n - 1))]
        self.pos = [(v, c) for v, c in pos if isinstance(v, Fraction)]
        self.vals = [v for v, _ in self.pos]
        assert self.vals == sorted(self.vals)

    def __call__(self, x: float) -> int:
        sign = (1 << (self.n - 1)) if math.copysign(1.0, x) < 0 else 0
        top = self.pos[-1][1]
        if math.isnan(x):
            return NAN_CODE.get(self.name, top)  # no NaN code: +max (documented)
        if math.isinf(x):
            return ((top + 1) if self.special == "ieee" else top) | sign
        a = abs(Fraction(x))
        if a >= self.vals[-1]:
            return top | sign
        i = bisect.bisect_right(self.vals, a) - 1  # vals[i] <= a < vals[i + 1]
        (lo, clo), (hi, chi) = self.pos[i], self.pos[i + 1]
        if a - lo < hi - a:
            return clo | sign
        if a - lo > hi - a:
            return chi | sign
        return (clo if clo % 2 == 0 else chi) | sign


def ref_int_encode(name: str, x: float) -> int:
    n = int(re.search(r"\d+", name).group())
    lo, hi = (0, 2 ** n - 1) if name.startswith("uint") else (-(2 ** (n - 1)), 2 ** (n - 1) - 1)
    if math.isnan(x):
        return hi % 2 ** n
    v = hi if x == math.inf else lo if x == -math.inf else min(max(round(Fraction(x)), lo), hi)
    return v % 2 ** n


def same_values(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal as values, NaN where NaN, and the same sign of zero."""
    with np.errstate(invalid="ignore"):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    nan = np.isnan(want)
    return bool(np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan], want[~nan])
                and np.array_equal(np.signbit(got[~nan]), np.signbit(want[~nan])))


def ref_table(name: str) -> np.ndarray:
    n = 16 if name in ("float16", "bfloat16") else int(re.search(r"\d+", name).group())
    if name.startswith(("int", "uint")):
        return np.array([ref_int(name, c) for c in range(2 ** n)], np.float64)
    out = []
    for c in range(2 ** n):
        v = ref_float(name, c)
        if v == "nan":
            out.append(np.nan)
        elif v == 0:
            out.append(-0.0 if c >> (n - 1) else 0.0)
        else:
            out.append(float(v))  # exact: every value has few significant bits
    return np.array(out, np.float64)


# ---------------------------------------------------------------------------------------------------
# Names and attributes
# ---------------------------------------------------------------------------------------------------
def test_registry_is_exactly_the_documented_set():
    names = sorted(d.name for d in all_dtypes())
    assert names == sorted(set(ALL_NAMES))
    assert len(names) == 49


@pytest.mark.parametrize("alias,name", [
    ("u4", "uint4"), ("i3", "int3"), ("i1", "int1"), ("u8", "uint8"), ("i32", "int32"), ("f4e2m1", "float4_e2m1"),
    ("f6e3m2", "float6_e3m2"), ("f8e4m3fn", "float8_e4m3fn"), ("f8e5m2", "float8_e5m2"), ("f16", "float16"),
    ("bf16", "bfloat16"), ("f32", "float32"), ("float4_e2m1fn", "float4_e2m1"), ("float6_e3m2fn", "float6_e3m2"),
    ("float6_e2m3fn", "float6_e2m3"), ("f3e1m1", "float3_e1m1"), ("  BF16 ", "bfloat16"),
])
def test_aliases(alias, name):
    assert dtype(alias) is dtype(name)
    assert dtype(alias).name == name


def test_dtype_object_round_trip_and_repr():
    d = dtype("f4e2m1")
    assert dtype(d) is d
    assert repr(d) == "lowbit.dtype('float4_e2m1')" and str(d) == "float4_e2m1"
    assert d == DType("float4_e2m1", 4, "float", 2, 1, 1, "none")
    with pytest.raises(Exception):
        d.nbits = 3  # frozen


def test_foreign_dtype_objects():
    assert dtype(torch.bfloat16) is dtype("bfloat16")
    assert dtype(np.float16) is dtype("float16")
    assert dtype(np.dtype("int8")) is dtype("int8")
    assert dtype(np.dtype(ml_dtypes.float4_e2m1fn)) is dtype("float4_e2m1")
    assert dtype(torch.float8_e5m2) is dtype("float8_e5m2")
    # ml_dtypes.float8_e4m3 is IEEE-like (max 240); ours is finite-only (max 480): refused, not confused.
    with pytest.raises(DTypeError):
        dtype(np.dtype(ml_dtypes.float8_e4m3))
    with pytest.raises(DTypeError):
        dtype(torch.float64)
    with pytest.raises(DTypeError, match="expected a dtype name"):
        dtype(3)


@pytest.mark.parametrize("bad,fragment,suggestion", [
    ("flaot16", "not a known dtype name", "float16"),
    ("float5_e2m3", "1 + E + M = 6", "float6_e2m3"),
    ("int9", "1 to 8 bits", "int8"),
    ("uint4x", "not a known", "uint4"),
    ("float9_e4m4", "at most 8 bits", None),
    ("float8_e3m4fn", "only float8_e4m3fn", None),
    ("float8_e5m2fn", "only float8_e4m3fn", None),
])
def test_unknown_names(bad, fragment, suggestion):
    with pytest.raises(DTypeError) as info:
        dtype(bad)
    text = str(info.value)
    assert fragment in text
    assert "valid forms" in text and "float{n}_e{E}m{M}" in text
    if suggestion:
        assert f"'{suggestion}'" in info.value.hint


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n.startswith(("float", "bfloat"))])
def test_float_attributes(name):
    d = dtype(name)
    n, e, m, special = ref_format(name)
    assert (d.nbits, d.kind, d.exponent_bits, d.mantissa_bits, d.bias) == (n, "float", e, m, 2 ** (e - 1) - 1)
    assert d.is_float and d.is_signed and d.num_codes == 2 ** n
    assert d.has_nan == (special != "none") and d.has_inf == (special == "ieee")
    finite = [ref_float(name, c) for c in ([0, 1] if n > 16 else range(2 ** (n - 1)))]
    finite = [v for v in finite if isinstance(v, Fraction)]
    assert d.smallest_subnormal == float(finite[1])
    assert d.smallest_normal == float(Fraction(2) ** (1 - (2 ** (e - 1) - 1)))
    if n <= 16:
        assert d.max == float(max(finite)) and d.min == -d.max
        assert isinstance(d.max, float)


def test_known_extremes():
    known = {"float4_e2m1": 6.0, "float6_e3m2": 28.0, "float6_e2m3": 7.5, "float8_e4m3fn": 448.0,
             "float8_e5m2": 57344.0, "float8_e4m3": 480.0, "float3_e1m1": 3.0, "float2_e1m0": 2.0,
             "float16": 65504.0, "bfloat16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),
             "float32": float(np.finfo(np.float32).max)}
    for name, mx in known.items():
        assert dtype(name).max == mx, name
    for name, ml in ML_FLOATS.items():
        info = ml_dtypes.finfo(ml)
        assert dtype(name).max == float(info.max)
        assert dtype(name).smallest_normal == float(info.smallest_normal)
        assert dtype(name).smallest_subnormal == float(info.smallest_subnormal)
    assert dtype("float32").smallest_subnormal == float(np.finfo(np.float32).smallest_subnormal)
    # the generic 8-bit e4m3 is finite-only: it differs from ml_dtypes' IEEE-like float8_e4m3 (max 240)
    assert float(ml_dtypes.finfo(ml_dtypes.float8_e4m3).max) == 240.0 != dtype("float8_e4m3").max


def test_integer_attributes():
    for n in range(1, 9):
        i, u = dtype(f"int{n}"), dtype(f"uint{n}")
        assert (i.min, i.max, u.min, u.max) == (-(2 ** (n - 1)), 2 ** (n - 1) - 1, 0, 2 ** n - 1)
        assert i.kind == "int" and u.kind == "uint" and i.is_signed and not u.is_signed
        assert i.bias is None and not i.is_float and i.codes_dtype == np.uint8
    assert (dtype("int32").min, dtype("int32").max) == (-(2 ** 31), 2 ** 31 - 1)
    with pytest.raises(DTypeError):
        dtype("int4").smallest_normal
    with pytest.raises(DTypeError, match="no value table"):
        dtype("float32").values()


# ---------------------------------------------------------------------------------------------------
# decode: exhaustive over every code
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TABLE_NAMES)
def test_decode_every_code_matches_fractions(name):
    d = dtype(name)
    want = ref_table(name)
    codes = np.arange(d.num_codes, dtype=np.int64)
    assert same_values(d.values(), want)
    got = d.decode(codes)
    assert got.dtype == (np.float32 if d.is_float else np.int32)
    assert same_values(got, want)  # every value of every <= 16-bit type is exact in float32


@pytest.mark.parametrize("name", sorted(ML_FLOATS) + sorted(ML_INTS))
def test_decode_every_code_matches_ml_dtypes(name):
    ml = {**ML_FLOATS, **ML_INTS}[name]
    d = dtype(name)
    raw = np.arange(d.num_codes, dtype=np.uint16 if d.nbits == 16 else np.uint8)
    with np.errstate(invalid="ignore"):
        want = raw.view(ml).astype(np.float64)
    assert same_values(d.decode(raw), want)


def test_decode_float16_float32_int32_against_numpy():
    raw16 = np.arange(2 ** 16, dtype=np.uint16)
    assert same_values(dtype("float16").decode(raw16), raw16.view(np.float16))
    rng = np.random.default_rng(1)
    raw32 = np.concatenate([rng.integers(0, 2 ** 32, 200_000, dtype=np.uint32),
                            np.array([0, 1, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x80000000,
                                      0x807FFFFF], np.uint32)])
    assert same_values(dtype("float32").decode(raw32), raw32.view(np.float32))
    assert np.array_equal(dtype("int32").decode(raw32), raw32.view(np.int32))
    assert np.array_equal(dtype("int32").decode(raw32.astype(np.int64)), raw32.view(np.int32))


def test_hand_checked_tables():
    assert list(dtype("float2_e1m0").values()) == [0.0, 2.0, -0.0, -2.0]
    assert list(dtype("float3_e1m1").values()[:4]) == [0.0, 1.0, 2.0, 3.0]
    assert list(dtype("float3_e2m0").values()[:4]) == [0.0, 1.0, 2.0, 4.0]
    assert list(dtype("float4_e2m1").values()[:8]) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert list(dtype("int3").values()) == [0, 1, 2, 3, -4, -3, -2, -1]
    assert list(dtype("int1").values()) == [0, -1]
    assert dtype("float6_e3m2").values()[1] == 0.0625 and dtype("float6_e3m2").values()[31] == 28.0


def test_decode_rejects_bad_codes():
    with pytest.raises(DTypeError, match=r"\[0, 15\]; got 16 at index \(1,\)"):
        dtype("int4").decode([3, 16])
    with pytest.raises(DTypeError, match="got -1"):
        dtype("uint2").decode(np.array([[0], [-1]], np.int8))
    with pytest.raises(DTypeError, match="must be integers"):
        dtype("uint2").decode([0.0, 1.0])
    with pytest.raises(DTypeError, match="got 4"):
        dtype("uint2").decode(torch.tensor([1, 4]))
    with pytest.raises(DTypeError, match="must be integers"):
        dtype("uint2").decode(torch.tensor([1.0]))
    assert dtype("int4").decode([]).shape == (0,)
    assert dtype("int4").decode(np.zeros((2, 0), np.uint8)).shape == (2, 0)


# ---------------------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TABLE_NAMES + ["float8_e5m2"])
def test_encode_inverts_decode_on_every_code(name):
    d = dtype(name)
    codes = np.arange(d.num_codes)
    back = d.encode(d.decode(codes))
    assert back.dtype == d.codes_dtype
    values = d.values()
    nan = np.isnan(values)
    assert np.array_equal(back[~nan], codes[~nan])  # both zeros keep their sign
    assert np.all(back[nan] == NAN_CODE.get(name, -1))


def test_encode_float32_round_trip_and_rne():
    d = dtype("float32")
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 2 ** 32, 100_000, dtype=np.uint32)
    f = raw.view(np.float32)
    back = d.encode(f)
    ok = ~np.isnan(f)
    assert np.array_equal(back[ok], raw[ok]) and np.all(back[~ok] == 0x7FC00000)
    x = rng.standard_normal(10_000) * np.exp2(rng.integers(-140, 120, 10_000))  # float64, subnormals incl.
    assert np.array_equal(d.encode(x), x.astype(np.float32).view(np.uint32))
    assert list(d.encode([1e39, -1e300, np.inf, -np.inf])) == [0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000]


def dense_grid(name: str, rng: np.random.Generator) -> np.ndarray:
    """Values, midpoints (exact ties), their float64 neighbours, subnormal and overflow region, inf, nan."""
    vals = np.array([float(v) for v in RefEncoder(name).vals])
    mids = (vals[:-1] + vals[1:]) / 2
    mx = vals[-1]
    gap = vals[-1] - vals[-2]
    pts = [vals, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
           np.nextafter(vals, np.inf), np.nextafter(vals, -np.inf),
           np.array([0.0, vals[1] / 2, vals[1] / 4, np.nextafter(vals[1] / 2, 1.0), mx + gap / 2, mx + gap,
                     np.nextafter(mx + gap / 2, 0), mx * 2, 1e30, 1e300, np.inf, np.nan, 5e-324]),
           rng.uniform(-1.2 * mx, 1.2 * mx, 300),
           np.exp2(rng.uniform(np.log2(vals[1]) - 3, np.log2(mx) + 2, 300))]
    grid = np.concatenate(pts)
    return np.concatenate([grid, -grid])


@pytest.mark.parametrize("name", SMALL_FLOATS)
def test_encode_matches_exact_rne(name):
    grid = dense_grid(name, np.random.default_rng(len(name)))
    ref = RefEncoder(name)
    want = np.array([ref(float(x)) for x in grid])
    got = dtype(name).encode(grid)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(grid[i], int(got[i]), int(want[i])) for i in bad[:5]]


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_encode_16bit_matches_exact_rne(name):
    rng = np.random.default_rng(3)
    ref = RefEncoder(name)
    vals = np.array([float(v) for v in ref.vals])
    pick = rng.integers(1, len(vals) - 1, 1500)
    mids = (vals[pick] + vals[pick + 1]) / 2
    grid = np.concatenate([mids, np.nextafter(mids, 0), np.nextafter(mids, np.inf), vals[pick],
                           rng.standard_normal(500) * np.exp2(rng.integers(-140, 128, 500)),
                           [vals[1] / 2, vals[-1] * 1.5, 1e300, np.inf, np.nan, 0.0]])
    grid = np.concatenate([grid, -grid])
    want = np.array([ref(float(x)) for x in grid])
    assert np.array_equal(dtype(name).encode(grid), want)


def test_encode_16bit_agrees_with_numpy_and_ml_dtypes_in_range():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(200_000) * np.exp2(rng.integers(-30, 16, 200_000))).astype(np.float32)
    x16 = x[np.abs(x) <= 65504]
    assert np.array_equal(dtype("float16").encode(x16), x16.astype(np.float16).view(np.uint16))
    assert np.array_equal(dtype("bfloat16").encode(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))


@pytest.mark.parametrize("name", sorted(ML_FLOATS))
def test_encode_agrees_with_ml_dtypes_where_semantics_coincide(name):
    d = dtype(name)
    rng = np.random.default_rng(5)
    mids = (d.values()[: d.max_code] + d.values()[1: d.max_code + 1]) / 2
    x = np.concatenate([rng.uniform(-d.max, d.max, 20_000), mids, -mids, d.values()[: d.max_code + 1]])
    x = x.astype(np.float32)  # ml_dtypes rounds float32 input correctly
    x = x[np.abs(x) <= d.max]
    raw = x.astype(ML_FLOATS[name]).view(np.uint16 if d.nbits == 16 else np.uint8)
    assert np.array_equal(d.encode(x), raw)


def test_documented_differences_from_ml_dtypes():
    big = np.array([1e6, -1e6], np.float32)
    # e5m2: ml_dtypes overflows to inf, lowbit saturates to +-57344
    assert list(big.astype(ml_dtypes.float8_e5m2).view(np.uint8)) == [0x7C, 0xFC]
    assert list(dtype("float8_e5m2").encode(big)) == [0x7B, 0xFB]
    # e4m3fn: ml_dtypes overflows to NaN, lowbit saturates to +-448
    assert list(big.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)) == [0x7F, 0xFF]
    assert list(dtype("float8_e4m3fn").encode(big)) == [0x7E, 0xFE]
    # ...but +-inf stays inf where the type has inf
    assert list(dtype("float8_e5m2").encode([np.inf, -np.inf])) == [0x7C, 0xFC]
    # NaN: lowbit gives the canonical positive NaN; ml_dtypes keeps the sign (e4m3fn) and, on the
    # NaN-free sub-byte floats, gives a zero; lowbit gives +max there.
    nans = np.array([np.nan, -np.nan], np.float32)
    assert list(nans.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)) == [0x7F, 0xFF]
    assert list(dtype("float8_e4m3fn").encode(nans)) == [0x7F, 0x7F]
    assert list(dtype("float4_e2m1").encode(nans)) == [0x7, 0x7]
    assert dtype("float4_e2m1").decode(dtype("float4_e2m1").encode(np.nan)) == 6.0


@pytest.mark.parametrize("name", [f"int{n}" for n in range(1, 9)] + [f"uint{n}" for n in range(1, 9)] + ["int32"])
def test_integer_encode(name):
    d = dtype(name)
    rng = np.random.default_rng(6)
    lim = min(d.max, 300) + 3
    halves = np.arange(-2 * lim, 2 * lim + 1) / 2
    grid = np.concatenate([halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
                           rng.uniform(-lim, lim, 300), [np.inf, -np.inf, np.nan, 1e300, -1e300, -0.0, 2.0 ** 40]])
    want = np.array([ref_int_encode(name, float(x)) for x in grid])
    got = d.encode(grid)
    assert got.dtype == d.codes_dtype and np.array_equal(got, want)
    assert np.array_equal(d.decode(got[: len(halves)]), np.clip(np.rint(halves), d.min, d.max))


def test_encode_accepts_scalars_lists_and_float_types():
    f4 = dtype("float4_e2m1")
    assert f4.encode(2.5).shape == () and int(f4.encode(2.5)) == 4
    assert list(f4.encode([1, 2, 3])) == [2, 4, 5]  # python ints
    assert list(f4.encode(np.array([1.25, 1.75], np.float16))) == [2, 4]  # ties: 1.0 (code 2), 2.0 (code 4)
    assert list(f4.encode(np.array([1.25], ml_dtypes.bfloat16))) == [2]
    assert list(f4.encode(np.array([True, False]))) == [2, 0]
    with pytest.raises(DTypeError, match="real numbers"):
        f4.encode(np.array([1 + 2j]))
    with pytest.raises(DTypeError, match="real numbers"):
        f4.encode(["a"])


@pytest.mark.parametrize("name", ["int4", "uint3", "int32", "float4_e2m1", "float8_e5m2", "float8_e4m3fn",
                                  "float16", "float32"])
def test_scalars_give_0d_arrays(name):
    d = dtype(name)
    for value in (2.5, -np.inf, np.inf, np.nan, -0.0, 1e9, np.float32(3.0)):
        code = d.encode(value)
        assert isinstance(code, np.ndarray) and code.shape == () and code.dtype == d.codes_dtype
        want = d.encode(np.array([value]))[0]
        assert code == want
        assert isinstance(d.decode(code), np.ndarray) and d.decode(code).shape == ()


def test_init_docstring_example():
    f4 = lowbit.dtype("f4e2m1")
    out = f4.decode(f4.encode([1.0, 2.9, -7.0]))
    assert out.dtype == np.float32 and list(out) == [1.0, 3.0, -6.0]


# ---------------------------------------------------------------------------------------------------
# torch in -> torch out
# ---------------------------------------------------------------------------------------------------
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["float4_e2m1", "float6_e3m2", "float8_e4m3fn", "float8_e5m2", "float3_e2m0",
                                  "int3", "uint5", "int1", "float16", "bfloat16", "float32", "int32"])
def test_torch_matches_numpy(name, device):
    d = dtype(name)
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(2000) * rng.choice([0.01, 1, 100, 1e5], 2000),
                        [np.inf, -np.inf, np.nan, -0.0, 0.0, 3e38]]).astype(np.float32)
    x = x.reshape(-1, 2)
    tx = torch.from_numpy(x).to(device)
    codes = d.encode(tx)
    want_dtype = torch.uint8 if d.nbits <= 8 else torch.uint16 if d.nbits <= 16 else torch.uint32
    assert codes.dtype == want_dtype and codes.device.type == device and codes.shape == tx.shape
    np_codes = d.encode(x)
    assert np.array_equal(codes.cpu().to(torch.int64).numpy(), np_codes.astype(np.int64))
    back = d.decode(codes)
    assert back.device.type == device and back.dtype == (torch.float32 if d.is_float else torch.int32)
    assert same_values(back.cpu().numpy(), d.decode(np_codes))
    # int64 and int32 code tensors decode too
    assert same_values(d.decode(codes.to(torch.int64)).cpu().numpy(), d.decode(np_codes))


def test_torch_bfloat16_and_float16_inputs_are_exact():
    x = torch.randn(1000, dtype=torch.float32).to(torch.bfloat16)
    assert np.array_equal(dtype("bfloat16").encode(x).to(torch.int64).numpy(),
                          x.view(torch.int16).numpy().view(np.uint16).astype(np.int64))
    h = torch.randn(1000).to(torch.float16)
    assert np.array_equal(dtype("float16").encode(h).to(torch.int64).numpy(),
                          h.numpy().view(np.uint16).astype(np.int64))


def test_import_does_not_import_torch():
    code = ("import sys, numpy as np, lowbit.dtypes as d, lowbit.packing as p; "
            "c = d.dtype('f4e2m1').encode(np.ones(3)); p.unpack(p.pack(c, 4), 4, 3); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
