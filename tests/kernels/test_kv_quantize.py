"""The ``kv_quantize`` kernel (``attention.lbk``): a low-bit KV cache's new tokens quantized on the device.

Reference: :func:`lowbit.quant.quantize_arrays` (float64 arithmetic, scales rounded up to the scale type with
ml_dtypes), the rule the host path applies. The kernel computes in float32 and must give the same bits: codes,
scales and the pages they land in, for every symmetric integer width, integers with zero points, float codes
(with a mantissa), float16 / bfloat16 scales, one and several groups per head, and inputs built to sit on and
next to the rounding boundaries (a quotient one float32 step from ``k + 1/2`` or from a midpoint of two float
codes' values, a target one step above a scale value, exact ties, zero and tiny groups).
"""
from __future__ import annotations

import numpy as np
import pytest

from lowbit import QuantizationError, kvcache, ops
from lowbit.kernels.attention import quantize_constants, run_kv_append
from lowbit.quant.quantizer import quantize_arrays

from .conftest import require_backend

torch = pytest.importorskip("torch")

D, H, PAGE, PAGES = 64, 2, 4, 6


def _boundary_tokens(nbits: int, group: int, scale_dtype: str, seed: int) -> torch.Tensor:
    """``[T, H, D]`` float32 tokens whose groups hit the roundings: random magnitudes over many binades,
    a zero group, subnormal-scale groups, and groups whose scale ``s`` is fixed by an element ``L s`` (so the
    target is exactly a scale value) with the others at ``(k + 1/2) s`` and one float32 step either side."""
    rng = np.random.default_rng(seed)
    levels = 2 ** (nbits - 1) - 1
    rows = []
    for scale_exp in (-30, -12, -3, 0, 4, 9):
        rows.append(rng.standard_normal(D) * 2.0 ** scale_exp)
    rows.append(np.zeros(D))
    rows.append(np.full(D, 2.0 ** -20) * np.sign(rng.standard_normal(D)))
    sd = {"float16": np.float16, "bfloat16": None}[scale_dtype]
    for trial in range(6):
        row = np.empty(D)
        for g0 in range(0, D, group):
            s = float(np.float32(rng.uniform(0.01, 3.0)))
            s = float(np.float16(s)) if sd is not None else float(torch.tensor(s).to(torch.bfloat16).float())
            k = rng.integers(-levels, levels, size=group).astype(np.float64)
            half = np.float32((k + 0.5) * s)
            step = rng.integers(-1, 2, size=group)          # below, on, above the half point
            vals = np.where(step < 0, np.nextafter(half, np.float32(-np.inf)),
                            np.where(step > 0, np.nextafter(half, np.float32(np.inf)), half))
            vals[0] = levels * s * (1 if trial % 2 else -1)  # the group's amax: target == s exactly
            if trial >= 4:                                   # or one float32 step above it: s one code up
                vals[0] = np.nextafter(np.float32(vals[0]), np.float32(np.sign(vals[0]) * np.inf))
            row[g0:g0 + group] = vals
        rows.append(row)
    x = np.stack(rows).astype(np.float32)
    return torch.from_numpy(x).reshape(-1, H, D)


def _expected(x: torch.Tensor, fmt: kvcache.KVCacheFormat) -> tuple[torch.Tensor, torch.Tensor]:
    packed, scales, _, _ = quantize_arrays(x.reshape(-1, D).double().numpy(), fmt.dtype, group_size=fmt.group_size,
                                           zero_point=False, scale_dtype=fmt.scale_dtype)
    codes = torch.from_numpy(np.asarray(packed)).reshape(x.shape[0], H, -1)
    scales = torch.from_numpy(np.asarray(scales).view(np.uint16).astype(np.int32)).reshape(x.shape[0], H, -1)
    return codes, scales


def _check(backend: str, dtype: str, group: int | None, scale_dtype: str, x_dtype=torch.float32, seed=0) -> None:
    fmt = kvcache.KVCacheFormat(dtype, num_kv_heads=H, head_dim=D, page_size=PAGE, group_size=group,
                                scale_dtype=scale_dtype)
    assert quantize_constants(fmt) is not None
    if dtype.startswith("float"):
        x = _float_tokens(dtype, fmt.group_size, scale_dtype, seed).to(x_dtype)
    else:
        x = _boundary_tokens(fmt.nbits, fmt.group_size, scale_dtype, seed).to(x_dtype)
    n = x.shape[0] // 2
    k, v = x[:n], x[n:2 * n]
    layer = kvcache.allocate(fmt, PAGES)
    slots = torch.randperm(PAGES * PAGE, generator=torch.Generator().manual_seed(seed))[:n]
    run_kv_append(layer, k, v, slots, backend)
    launched = k.dtype if k.dtype != torch.float64 else torch.float32       # float64 is quantized from float32
    assert layer.known_launch_plan(("kv_quantize", "k", tuple(k.shape), launched, backend)) is not None
    for side, src in (("k", k), ("v", v)):
        codes, scales = _expected(src.float(), fmt)
        got_codes = getattr(layer, side)[slots // PAGE, :, slots % PAGE]
        got_scales = getattr(layer, f"{side}_scales")[slots // PAGE, :, slots % PAGE]
        assert torch.equal(got_codes, codes), f"{backend} {dtype} g{group} {scale_dtype}: {side} codes"
        assert torch.equal(got_scales.view(torch.int16).to(torch.int32) & 0xFFFF, scales), \
            f"{backend} {dtype} g{group} {scale_dtype}: {side} scales"


@pytest.mark.parametrize("dtype", ["int2", "int3", "int4", "int5", "int6", "int7", "int8"])
@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_interpreter_matches_the_float64_quantizer(dtype, scale_dtype):
    _check("interpret", dtype, 16, scale_dtype)
    _check("interpret", dtype, None, scale_dtype, seed=1)


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_half_precision_tokens(x_dtype):
    _check("interpret", "int4", 32, "float16", x_dtype=x_dtype, seed=2)


def _sd_step(h: float, scale_dtype: str, up: int) -> float:
    """The scale-type value ``up`` steps above (below, negative) the scale-type value ``h``."""
    if scale_dtype == "float16":
        bits = np.array([h], np.float16).view(np.uint16).astype(np.int64) + up
        return float(bits.astype(np.uint16).view(np.float16)[0])
    bits = torch.tensor([h]).to(torch.bfloat16).view(torch.int16).to(torch.int64) + up
    return float(bits.to(torch.int16).view(torch.bfloat16).float()[0])


def _zero_point_tokens(nbits: int, group: int, scale_dtype: str, seed: int) -> torch.Tensor:
    """``[T, H, D]`` float32 tokens for codes with zero points: random rows over many binades, one-signed,
    zero and tiny rows, and groups whose range ``hi - lo`` is a float32 sum that rounds to ``L h`` (``L`` the
    levels, ``h`` a scale value) from above (so the scale is the next value up), from below and exactly, or
    puts ``-lo / s`` on a tie; their other elements sit on and one float32 step either side of ``(k + 1/2) s``."""
    rng = np.random.default_rng(seed)
    levels = 2 ** nbits - 1
    rows = [rng.standard_normal(D) * 2.0 ** e for e in (-30, -12, -3, 0, 4, 9)]
    rows += [np.abs(rng.standard_normal(D)) + 0.5, -np.abs(rng.standard_normal(D)) * 3, np.zeros(D),
             np.full(D, 2.0 ** -20) * np.sign(rng.standard_normal(D))]
    f32 = np.float32
    for trial in range(8):
        row = np.empty(D)
        for g0 in range(0, D, group):
            h = _sd_step(float(rng.uniform(0.01, 3.0)), scale_dtype, 0)
            top = f32(levels * h)                                  # exact: h has at most 11 significant bits
            case = (trial + g0 // group) % 4
            if case == 0:      # hi - lo = L h + tiny, rounds down to L h: the scale is one value above h
                hi, lo, s = top, -f32(np.spacing(top) / 4), _sd_step(h, scale_dtype, 1)
            elif case == 1:    # hi - lo = L h - tiny, rounds up to L h: the scale is h
                below = np.nextafter(top, f32(0))
                gap = f32(top - below)
                hi, lo, s = below, -np.nextafter(gap, f32(0)), h
            elif case == 2:    # hi - lo = L h exactly
                hi, lo, s = f32(top - 3 * h), -f32(3 * h), h
            else:              # -lo / s = j + 1/2 exactly: the zero point's tie
                j = int(rng.integers(1, max(2, levels - 1)))
                lo = -f32((j + 0.5) * h)
                hi, s = f32(levels * h + lo), h
            k = rng.integers(int(np.ceil(lo / s)), max(int(np.ceil(lo / s)) + 1, int(np.floor(hi / s))), size=group)
            half = f32((k + 0.5) * s)
            step = rng.integers(-1, 2, size=group)
            vals = np.where(step < 0, np.nextafter(half, f32(-np.inf)),
                            np.where(step > 0, np.nextafter(half, f32(np.inf)), half))
            vals = np.clip(vals, lo, hi)
            vals[0], vals[1] = hi, lo
            row[g0:g0 + group] = vals
        rows.append(row)
    return torch.from_numpy(np.stack(rows).astype(np.float32)).reshape(-1, H, D)


def _check_zero_points(backend: str, dtype: str, group: int | None, scale_dtype: str, seed: int = 0) -> None:
    fmt = kvcache.KVCacheFormat(dtype, num_kv_heads=H, head_dim=D, page_size=PAGE, group_size=group,
                                scale_dtype=scale_dtype, zero_point=True)
    assert quantize_constants(fmt) is not None
    x = _zero_point_tokens(fmt.nbits, fmt.group_size, scale_dtype, seed)
    n = x.shape[0] // 2
    k, v = x[:n], x[n:2 * n]
    layer = kvcache.allocate(fmt, PAGES)
    slots = torch.randperm(PAGES * PAGE, generator=torch.Generator().manual_seed(seed))[:n]
    run_kv_append(layer, k, v, slots, backend)
    assert layer.known_launch_plan(("kv_quantize", "k", tuple(k.shape), k.dtype, backend)) is not None
    what = f"{backend} {dtype} g{group} {scale_dtype}"
    for side, src in (("k", k), ("v", v)):
        packed, scales, zeros, _ = quantize_arrays(src.reshape(-1, D).double().numpy(), fmt.dtype,
                                                   group_size=fmt.group_size, zero_point=True,
                                                   scale_dtype=scale_dtype)
        at = (slots // PAGE, slice(None), slots % PAGE)
        assert torch.equal(getattr(layer, side)[at], torch.from_numpy(np.asarray(packed)).reshape(n, H, -1)), \
            f"{what}: {side} codes"
        for name, want in (("scales", scales), ("zeros", zeros)):
            got = getattr(layer, f"{side}_{name}")[at].view(torch.int16).to(torch.int32) & 0xFFFF
            want = torch.from_numpy(np.asarray(want).view(np.uint16).astype(np.int32)).reshape(n, H, -1)
            assert torch.equal(got, want), f"{what}: {side} {name}"


@pytest.mark.parametrize("dtype", ["uint1", "uint2", "uint3", "uint4", "uint8", "int4", "int5"])
@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16"])
def test_zero_points_interpreter_matches_the_float64_quantizer(dtype, scale_dtype):
    _check_zero_points("interpret", dtype, 16, scale_dtype)
    _check_zero_points("interpret", dtype, None, scale_dtype, seed=1)


COMPILED_CASES = [  # backend, zero points, code type, group, scale type
    ("tvm", False, "int2", 32, "float16"), ("tvm", False, "int3", None, "float16"),
    ("tvm", False, "int4", 16, "float16"), ("tvm", False, "int4", None, "bfloat16"),
    ("tvm", False, "int8", 32, "bfloat16"), ("triton", False, "int3", 16, "bfloat16"),
    ("triton", False, "int4", None, "float16"),
    ("tvm", True, "uint2", 32, "float16"), ("tvm", True, "uint4", 16, "float16"),
    ("tvm", True, "uint4", None, "bfloat16"), ("tvm", True, "int3", 32, "bfloat16"),
    ("tvm", True, "uint8", 16, "float16"), ("triton", True, "uint4", 16, "bfloat16"),
    ("triton", True, "uint3", None, "float16"),
]


@pytest.mark.parametrize("backend,zero_point,dtype,group,scale_dtype", COMPILED_CASES)
def test_compiled_kernels_match_the_float64_quantizer(backend, zero_point, dtype, group, scale_dtype):
    require_backend(backend)
    (_check_zero_points if zero_point else _check)(backend, dtype, group, scale_dtype)


def _float_tokens(dtype: str, group: int, scale_dtype: str, seed: int) -> torch.Tensor:
    """``[T, H, D]`` float32 tokens for float codes: random rows over many binades, zero, negative-zero and tiny
    rows, and groups whose scale ``s`` is fixed by an element ``max s`` (or one float32 step above it) with
    the others on the midpoints ``m s`` between the format's magnitudes (ties, in the subnormals too) and one
    float32 step either side, each with a random sign."""
    from lowbit.dtypes import dtype as as_dtype

    d = as_dtype(dtype)
    mags = np.unique(np.abs(d.values()[np.isfinite(d.values())]))
    mids = (mags[:-1] + mags[1:]) / 2
    rng = np.random.default_rng(seed)
    f32 = np.float32
    rows = [rng.standard_normal(D) * 2.0 ** e for e in (-30, -12, -3, 0, 4, 9)]
    rows += [np.zeros(D), -np.zeros(D), np.full(D, 2.0 ** -20) * np.sign(rng.standard_normal(D))]
    for trial in range(7):
        row = np.empty(D)
        for g0 in range(0, D, group):
            s = _sd_step(float(rng.uniform(0.01, 3.0)), scale_dtype, 0)
            mid = f32(rng.choice(mids, size=group) * s)                     # exact: few significant bits
            step = rng.integers(-1, 2, size=group)
            vals = np.where(step < 0, np.nextafter(mid, f32(0)), np.where(step > 0, np.nextafter(mid, f32(np.inf)),
                                                                         mid))
            vals = vals * np.where(rng.integers(0, 2, size=group) == 1, -1, 1)
            vals[0] = f32(d.max * s) * (1 if trial % 2 else -1)             # the group's amax: target == s exactly
            if trial >= 4:                                                  # or one float32 step above it
                vals[0] = np.nextafter(f32(vals[0]), f32(np.sign(vals[0]) * np.inf))
            row[g0:g0 + group] = vals
        rows.append(row)
    return torch.from_numpy(np.stack(rows).astype(np.float32)).reshape(-1, H, D)


FLOAT_CODES = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float7_e3m3", "float6_e3m2", "float6_e2m3",
               "float5_e2m2", "float4_e2m1", "float4_e1m2", "float3_e1m1"]


@pytest.mark.parametrize("dtype", FLOAT_CODES)
def test_float_codes_interpreter_matches_the_float64_quantizer(dtype):
    _check("interpret", dtype, 16, "float16")
    _check("interpret", dtype, None, "bfloat16", seed=1)


@pytest.mark.parametrize("backend,dtype,group,scale_dtype", [
    ("tvm", "float8_e4m3fn", 16, "float16"), ("tvm", "float8_e5m2", None, "bfloat16"),
    ("tvm", "float4_e2m1", 32, "float16"), ("tvm", "float6_e3m2", None, "float16"),
    ("triton", "float8_e4m3fn", None, "bfloat16"), ("triton", "float4_e2m1", 16, "float16")])
def test_float_codes_compiled_kernels_match_the_float64_quantizer(backend, dtype, group, scale_dtype):
    require_backend(backend)
    _check(backend, dtype, group, scale_dtype)


def test_formats_the_kernel_does_not_take():
    """Float codes without a mantissa, float32 scales and head dimensions of partial words stay on the host."""
    for kwargs in (dict(dtype="float3_e2m0"), dict(dtype="int4", scale_dtype="float32"),
                   dict(dtype="int4", head_dim=48), dict(dtype="uint4", zero_point=True, head_dim=48),
                   dict(dtype="float16")):
        fmt = kvcache.KVCacheFormat(**{"num_kv_heads": H, "head_dim": D, **kwargs})
        assert quantize_constants(fmt) is None, kwargs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e9])
def test_input_the_kernel_cannot_take_gets_the_quantizers_error(bad):
    """Non-finite values and scales past the scale type's range go to the host quantizer, which raises;
    nothing is written."""
    fmt = kvcache.KVCacheFormat("int4", num_kv_heads=H, head_dim=D, page_size=PAGE)
    layer = kvcache.allocate(fmt, PAGES)
    before = layer.k.clone(), layer.k_scales.clone()
    k = torch.randn(2, H, D)
    k[1, 0, 3] = bad
    with pytest.raises(QuantizationError):
        ops.kv_append(layer, k, torch.randn(2, H, D), torch.tensor([0, 1]), backend="interpret")
    assert torch.equal(layer.k, before[0]) and torch.equal(layer.k_scales, before[1])
