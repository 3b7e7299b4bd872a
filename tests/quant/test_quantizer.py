"""lowbit.quant.quantize: exact agreement with a Fraction reference, analytical error bounds, edge cases.

The reference recomputes the documented rules (lowbit/quant/quantizer.py docstring) in exact rational
arithmetic: scale = smallest scale-dtype value >= the exact ratio (at least the smallest normal), zero =
qmin + round(-lo / s), code = round-half-even of w / s (plus the zero), clipped / saturated.
Scale-dtype tables come from numpy / ml_dtypes, not from lowbit.
"""
from __future__ import annotations

import bisect
import functools
import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch

from lowbit import QuantizationError
from lowbit.dtypes import all_dtypes, dtype
from lowbit.quant import DENSE_ROWMAJOR, QuantizedTensor, quantize

WEIGHT_TYPES = [d.name for d in all_dtypes() if d.nbits <= 8]
INT_TYPES = [n for n in WEIGHT_TYPES if not dtype(n).is_float]
FLOAT_TYPES = [n for n in WEIGHT_TYPES if dtype(n).is_float]


def modes(name: str) -> list[bool]:
    """The zero_point settings quantize accepts for a weight type (documented)."""
    d = dtype(name)
    if d.is_float:
        return [False]
    if d.nbits == 1:
        return [True]
    return [False, True]


CASES = [(n, zp) for n in WEIGHT_TYPES for zp in modes(n)]


# ---------------------------------------------------------------------------------------------------
# exact reference
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def scale_values(name: str) -> tuple[list[Fraction], float]:
    """Positive finite values of a scale dtype (sorted, exact) and its smallest normal, from numpy/ml_dtypes."""
    if name == "float16":
        raw, view, normal = np.arange(1, 0x7C00, dtype=np.uint16), np.float16, 2.0 ** -14
    elif name == "bfloat16":
        raw, view, normal = np.arange(1, 0x7F80, dtype=np.uint16), ml_dtypes.bfloat16, 2.0 ** -126
    elif name == "float8_e4m3fn":
        raw, view, normal = np.arange(1, 0x7F, dtype=np.uint8), ml_dtypes.float8_e4m3fn, 2.0 ** -6
    elif name == "float8_e5m2":
        raw, view, normal = np.arange(1, 0x7C, dtype=np.uint8), ml_dtypes.float8_e5m2, 2.0 ** -14
    else:
        raise KeyError(name)
    return [Fraction(float(v)) for v in raw.view(view).astype(np.float64)], normal


def round_up_scale(target: Fraction, scale_dtype: str) -> Fraction:
    if scale_dtype == "float32":
        s = np.float32(float(target))
        while Fraction(float(s)) < target:
            s = np.nextafter(s, np.float32(np.inf))
        while Fraction(float(np.nextafter(s, np.float32(0)))) >= target:
            s = np.nextafter(s, np.float32(0))
        return max(Fraction(float(s)), Fraction(2) ** -126)
    values, normal = scale_values(scale_dtype)
    return max(values[bisect.bisect_left(values, target)], Fraction(normal))


def rne_int(x: Fraction) -> int:
    return round(x)  # Python rounds Fractions half to even


def rne_float_code(x: Fraction, name: str) -> int:
    d = dtype(name)  # its value table is verified exhaustively in tests/test_dtypes.py
    pos = [Fraction(float(v)) for v in d.values()[: d.max_code + 1]]
    sign = (1 << (d.nbits - 1)) if x < 0 else 0
    a = abs(x)
    if a >= pos[-1]:
        return d.max_code | sign
    i = bisect.bisect_right(pos, a) - 1
    lo, hi = a - pos[i], pos[i + 1] - a
    code = i if lo < hi else i + 1 if lo > hi else (i if i % 2 == 0 else i + 1)
    return code | sign


def reference(w: np.ndarray, name: str, g: int, zero_point: bool, scale_dtype: str):
    """(codes, scales, zeros) by the documented rules, exactly."""
    d = dtype(name)
    n = d.nbits
    qmin, qmax = d.min, d.max
    rows = w.reshape(-1, w.shape[-1])
    codes = np.zeros(rows.shape, np.int64)
    scales = np.zeros((rows.shape[0], rows.shape[1] // g))
    zeros = np.zeros_like(scales)
    for r in range(rows.shape[0]):
        for j in range(rows.shape[1] // g):
            grp = [Fraction(float(v)) for v in rows[r, j * g:(j + 1) * g]]
            if zero_point:
                lo, hi = min(min(grp), 0), max(max(grp), 0)
                target = (hi - lo) / (2 ** n - 1)
            elif d.kind == "uint":  # symmetric uint: implicit midpoint zero 2**(n-1)
                target = max(abs(v) for v in grp) / Fraction(2 ** (n - 1) - 1)
            else:
                target = max(abs(v) for v in grp) / Fraction(d.max)
            s = round_up_scale(target if target else Fraction(1), scale_dtype)
            scales[r, j] = float(s)
            z = qmin + rne_int(-lo / s) if zero_point else 2 ** (n - 1) if d.kind == "uint" else 0
            zeros[r, j] = z
            for i, v in enumerate(grp):
                if d.is_float:
                    c = rne_float_code(v / s, name)
                else:
                    c = min(max(rne_int(v / s) + z, qmin), qmax) % 2 ** n
                codes[r, j * g + i] = c
    shape = w.shape
    return codes.reshape(shape), scales.reshape(*shape[:-1], -1), zeros.reshape(*shape[:-1], -1)


def sample_weights(rng: np.random.Generator, shape, outliers: bool = True) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.05)
    if outliers:
        flat = w.reshape(-1)
        idx = rng.choice(flat.size, max(1, flat.size // 50), replace=False)
        flat[idx] *= 20
    return w


# ---------------------------------------------------------------------------------------------------
# exact agreement
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,zero_point", CASES)
def test_codes_scales_zeros_are_exact(name, zero_point):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    w = sample_weights(rng, (2, 64))
    w[1, 32:] = 0.0  # an all-zero group
    w[0, 3] = w[0, 4] * -1  # equal magnitudes
    qt = quantize(w, name, group_size=32, zero_point=zero_point)
    codes, scales, zeros = reference(w, name, 32, zero_point, "float16")
    assert np.array_equal(qt.codes().astype(np.int64), codes)
    assert qt.scales.dtype == np.float16 and np.array_equal(qt.scales.astype(np.float64), scales)
    if zero_point:
        assert qt.zeros.dtype == np.float16 and np.array_equal(qt.zeros.astype(np.float64), zeros)
    else:
        assert qt.zeros is None
    assert scales[1, 1] == 1.0  # documented: all-zero group -> scale 1
    assert np.all(qt.dequantize()[1, 32:] == 0)


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float32", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("name,zero_point", [("int4", False), ("uint3", True), ("float4_e2m1", False),
                                             ("float6_e3m2", False), ("int8", True)])
def test_other_scale_dtypes_are_exact(name, zero_point, scale_dtype):
    if scale_dtype.startswith("float8") and zero_point:
        zero_dtype = "float16"  # fp8 cannot hold every integer of an 8-bit code range exactly
    else:
        zero_dtype = None
    rng = np.random.default_rng(11)
    w = sample_weights(rng, (3, 64)) * np.float32(100)
    qt = quantize(w, name, group_size=32, zero_point=zero_point, scale_dtype=scale_dtype, zero_dtype=zero_dtype)
    codes, scales, zeros = reference(w, name, 32, zero_point, scale_dtype)
    assert np.array_equal(qt.codes().astype(np.int64), codes)
    assert qt.scales.dtype.name == scale_dtype
    assert np.array_equal(qt.scales.astype(np.float64), scales)
    if zero_point:
        assert np.array_equal(qt.zeros.astype(np.float64), zeros)


def test_ties_round_to_even():
    # scale 1 (absmax 7 over int4's 7): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -3.5 -> -4
    w = np.array([[0.5, 1.5, 2.5, -3.5, 7.0, -7.0, 6.5, 0.0]], np.float32)
    qt = quantize(w, "int4", group_size=None)
    assert float(qt.scales[0, 0]) == 1.0
    assert list(dtype("int4").decode(qt.codes())[0]) == [0, 2, 2, -4, 7, -7, 6, 0]
    # float4_e2m1 with scale 1 (absmax 6): 2.5 is between 2 and 3 -> code of 2 (even); 5 between 4, 6 -> 4
    w = np.array([[2.5, 5.0, 0.25, 0.75, 6.0, -5.0]], np.float32)
    assert list(quantize(w, "float4_e2m1", group_size=None).dequantize()[0]) == [2, 4, 0, 1, 6, -4]


# ---------------------------------------------------------------------------------------------------
# analytical error bounds on every type
# ---------------------------------------------------------------------------------------------------
def float_bound(x: np.ndarray, name: str) -> np.ndarray:
    """Half the gap between the two values of ``name`` around each |x| (in units of the scale)."""
    d = dtype(name)
    pos = np.array(d.values()[: d.max_code + 1], np.float64)
    a = np.abs(x)
    i = np.clip(np.searchsorted(pos, a, side="right") - 1, 0, len(pos) - 2)
    return (pos[i + 1] - pos[i]) / 2


@pytest.mark.parametrize("group_size", [32, 128, None])
@pytest.mark.parametrize("name,zero_point", CASES)
def test_error_within_analytical_bound(name, zero_point, group_size):
    rng = np.random.default_rng(3)
    w = sample_weights(rng, (4, 256))
    qt = quantize(w, name, group_size=group_size, zero_point=zero_point)
    g = 256 if group_size is None else group_size
    assert qt.group_size == g and qt.scales.shape == (4, 256 // g)
    deq = qt.dequantize()
    assert deq.dtype == np.float32 and deq.shape == w.shape
    s = np.repeat(qt.scales.astype(np.float64), g, axis=1)
    err = np.abs(deq.astype(np.float64) - w.astype(np.float64))
    if dtype(name).is_float:
        bound = s * float_bound(w.astype(np.float64) / s, name)
    else:
        bound = s / 2
    assert np.all(err <= bound), float(np.max(err - bound))
    # and the scale is tight: not more than one scale-dtype step above the exact ratio
    absmax = np.abs(w.reshape(4, -1, g)).max(-1).astype(np.float64)
    if zero_point:
        wg = w.reshape(4, -1, g).astype(np.float64)
        ratio = (np.maximum(wg.max(-1), 0) - np.minimum(wg.min(-1), 0)) / (2 ** dtype(name).nbits - 1)
    elif dtype(name).kind == "uint":  # symmetric uint: implicit midpoint zero
        ratio = absmax / (2 ** (dtype(name).nbits - 1) - 1)
    else:
        ratio = absmax / dtype(name).max
    stored = qt.scales.astype(np.float64)
    one_up = np.nextafter(ratio.astype(np.float16), np.float16(np.inf)).astype(np.float64)
    assert np.all(stored >= ratio) and np.all(stored <= np.maximum(one_up, 2.0 ** -14))  # documented clamp


def test_float_bound_is_half_an_ulp_where_it_matters():
    # a value just above 4 in float4_e2m1 units: neighbours 4 and 6, bound 1 (in scale units)
    assert float_bound(np.array([4.1, 0.1, 5.9]), "float4_e2m1").tolist() == [1.0, 0.25, 1.0]


# ---------------------------------------------------------------------------------------------------
# torch: same numbers, torch storage on the input's device
# ---------------------------------------------------------------------------------------------------
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["numpy-impl", "torch-impl"])
def cpu_impl(request, monkeypatch):
    """CPU tensors normally go through the numpy implementation; also run the torch one on CPU."""
    import lowbit.packing
    import lowbit.quant.quantizer

    torch_impl = request.param == "torch-impl"
    monkeypatch.setattr(lowbit.quant.quantizer, "_CPU_VIA_NUMPY", not torch_impl)
    monkeypatch.setattr(lowbit.packing, "_CPU_VIA_NUMPY", not torch_impl)
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,zero_point,scale_dtype", [
    ("int4", False, "float16"), ("uint4", True, "float16"), ("float4_e2m1", False, "bfloat16"),
    ("int3", True, "bfloat16"), ("float8_e4m3fn", False, "float32"), ("uint2", True, "float8_e5m2"),
])
def test_torch_matches_numpy(name, zero_point, scale_dtype, device, cpu_impl):
    w = sample_weights(np.random.default_rng(5), (2, 3, 64))
    zero_dtype = "float16" if zero_point and scale_dtype.startswith("float8") else None
    kw = dict(group_size=32, zero_point=zero_point, scale_dtype=scale_dtype, zero_dtype=zero_dtype)
    qn = quantize(w, name, **kw)
    qt = quantize(torch.from_numpy(w).to(device), name, **kw)
    assert qt.is_torch and qt.packed.device.type == device and qt.scales.device.type == device
    assert qt.packed.dtype == torch.uint8 and qt.scales.dtype == getattr(torch, scale_dtype)
    assert qt.numpy() == qn
    deq = qt.dequantize()
    assert isinstance(deq, torch.Tensor) and deq.device.type == device and deq.dtype == torch.float32
    assert np.array_equal(deq.cpu().numpy(), qn.dequantize())


def test_torch_low_precision_inputs(cpu_impl):
    w = torch.randn(4, 64, dtype=torch.float32)
    for dt in (torch.float16, torch.bfloat16, torch.float8_e4m3fn):
        wl = w.to(dt)
        qt = quantize(wl, "int4", group_size=32)
        qn = quantize(wl.float().numpy(), "int4", group_size=32)
        assert qt.numpy() == qn  # low-precision inputs are converted exactly


# ---------------------------------------------------------------------------------------------------
# edge cases and errors
# ---------------------------------------------------------------------------------------------------
def test_group_size_must_divide_k():
    w = np.zeros((2, 100), np.float32)
    with pytest.raises(QuantizationError) as info:
        quantize(w, "int4", group_size=128)
    assert "group_size 128 does not divide K = 100" in str(info.value)
    assert "group_size=None" in info.value.hint and "100" in info.value.hint
    assert quantize(w, "int4", group_size=50).scales.shape == (2, 2)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(QuantizationError, match="group_size must be a positive integer"):
            quantize(w, "int4", group_size=bad)


def test_per_channel_spellings():
    w = sample_weights(np.random.default_rng(0), (3, 48))
    a, b, c = (quantize(w, "int4", group_size=g) for g in (None, -1, 48))
    assert a == b == c and a.group_size == 48 and a.scales.shape == (3, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_first_position(bad):
    w = np.zeros((3, 64), np.float32)
    w[1, 5] = bad
    w[2, 0] = np.nan
    with pytest.raises(QuantizationError, match=r"at index \(1, 5\)"):
        quantize(w, "int4", group_size=32)
    import lowbit.quant.quantizer

    for via_numpy in (True, False):
        lowbit.quant.quantizer._CPU_VIA_NUMPY = via_numpy
        try:
            with pytest.raises(QuantizationError, match=r"at index \(1, 5\)"):
                quantize(torch.from_numpy(w), "float4_e2m1", group_size=32)
        finally:
            lowbit.quant.quantizer._CPU_VIA_NUMPY = True


def test_empty_and_degenerate_shapes():
    qt = quantize(np.zeros((0, 64), np.float32), "int4", group_size=32)
    assert qt.shape == (0, 64) and qt.packed.shape == (0, 32) and qt.scales.shape == (0, 2)
    assert qt.dequantize().shape == (0, 64)
    qt = quantize(torch.zeros(2, 0, 64), "uint4", group_size=32, zero_point=True)
    assert qt.packed.shape == (2, 0, 32) and qt.zeros.shape == (2, 0, 2)
    with pytest.raises(QuantizationError, match="last axis"):
        quantize(np.zeros((4, 0), np.float32), "int4")
    with pytest.raises(QuantizationError, match="0-d"):
        quantize(np.float32(1.0), "int4")
    one = quantize(np.array([3.0, -1.5, 0.0]), "int2", group_size=None)  # 1-D
    assert one.shape == (3,) and one.scales.shape == (1,)


def test_all_zero_groups_are_exact():
    w = np.zeros((2, 64), np.float32)
    for name, zp in CASES:
        qt = quantize(w, name, group_size=32, zero_point=zp)
        assert np.all(qt.scales == 1)
        assert np.all(qt.dequantize() == 0)
        if zp:
            assert np.all(qt.zeros == dtype(name).min)


def test_scale_underflow_is_clamped_to_smallest_normal():
    w = np.full((1, 32), 1e-20, np.float32)
    w[0, 0] = -3e-21
    for name, zp in [("int4", False), ("uint4", True), ("float4_e2m1", False)]:
        qt = quantize(w, name, group_size=32, zero_point=zp)
        assert float(qt.scales[0, 0]) == 2.0 ** -14
        assert np.all(np.abs(qt.dequantize() - w) <= 2.0 ** -15)
    qt = quantize(w, "int4", group_size=32, scale_dtype="float32")
    assert float(np.float32(1e-20)) / 7 <= float(qt.scales[0, 0]) < 1e-20 / 6  # float32 has room: no clamping


def test_scale_overflow_is_an_error():
    w = np.ones((2, 64), np.float32)
    w[1, 40] = 1e9
    with pytest.raises(QuantizationError) as info:
        quantize(w, "int4", group_size=32)
    assert "group 1 of row (1,)" in str(info.value) and "elements 32..63" in str(info.value)
    assert "float32" in info.value.hint
    qt = quantize(w, "int4", group_size=32, scale_dtype="float32")
    assert abs(float(qt.dequantize()[1, 40]) - 1e9) <= float(qt.scales[1, 1]) / 2


@pytest.mark.parametrize("name,kwargs,pattern", [
    ("float4_e2m1", dict(zero_point=True), "no zero point"),
    ("uint1", dict(zero_point=False), "no positive level"),
    ("int1", dict(zero_point=False), "no positive level"),
    ("int4", dict(zero_dtype="float16"), "there are no zero points"),
    ("uint8", dict(zero_point=True, scale_dtype="float8_e4m3fn"), "cannot all hold exactly"),
    ("uint8", dict(zero_point=True, zero_dtype="int8"), "cannot all hold exactly"),
    ("int4", dict(scale_dtype="int8"), "scale_dtype must be one of"),
    ("int4", dict(zero_point=1), "True or False"),
    ("float16", dict(), "1..8-bit"),
    ("uint4", dict(zero_point=True, zero_dtype="float4_e2m1"), "zero_dtype must be one of"),
])
def test_argument_errors(name, kwargs, pattern):
    with pytest.raises(QuantizationError, match=pattern):
        quantize(np.ones((2, 32), np.float32), name, group_size=32, **kwargs)


def test_integer_zero_dtypes_and_input_types():
    w = sample_weights(np.random.default_rng(9), (2, 64))
    a = quantize(w, "uint4", group_size=32, zero_point=True, zero_dtype="uint8")
    b = quantize(w, "uint4", group_size=32, zero_point=True)
    assert a.zeros.dtype == np.uint8 and np.array_equal(a.zeros, b.zeros.astype(np.uint8))
    assert np.array_equal(a.dequantize(), b.dequantize())
    c = quantize(w, "int4", group_size=32, zero_point=True, zero_dtype="int8")
    assert c.zeros.dtype == np.int8 and c.zeros.min() >= -8 and c.zeros.max() <= 7
    with pytest.raises(QuantizationError, match="floating-point"):
        quantize(np.ones((2, 32), np.int32), "int4")
    with pytest.raises(QuantizationError, match="floating-point"):
        quantize(torch.ones(2, 32, dtype=torch.int64), "int4")
    from_list = quantize(w.tolist(), "int4", group_size=32)
    assert from_list == quantize(w.astype(np.float64), "int4", group_size=32)
    assert isinstance(from_list, QuantizedTensor) and from_list.format == DENSE_ROWMAJOR


def test_symmetric_uint_uses_an_implicit_midpoint_zero():
    w = np.array([[-1.0, 0.25, 1.0, -0.6]], np.float32)
    qt = quantize(w, "uint4", group_size=None)
    assert qt.zeros is None and qt.implicit_zero == 8
    # scale ~1/7 (rounded up to f16): codes round(w * 7) + 8: -1 -> 1, 0.25 -> 10, 1 -> 15, -0.6 -> 4
    assert qt.codes().tolist() == [[1, 10, 15, 4]]
    expected = (qt.codes().astype(np.float64) - 8) * qt.scales.astype(np.float64)
    assert np.array_equal(qt.dequantize().astype(np.float64), expected)
    assert quantize(w, "uint4", group_size=None, zero_point=True).implicit_zero == 0
