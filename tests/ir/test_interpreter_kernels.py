"""Builder-made kernels run by the reference interpreter, against fp64 numpy / ml_dtypes references."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import lowbit
from lowbit.ir import InterpreterError, interpret


F16_EPS = 2.0 ** -11   # unit roundoff of float16


def test_vector_add_odd_length(K, rng):
    n = 1000                      # not a multiple of the 64-wide block: the last program is masked
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    interpret(K.build_vector_add(), {"x": x, "y": y, "out": out})
    np.testing.assert_array_equal(out, (x.astype(np.float64) + y).astype(np.float32))


def test_vector_add_f16_rounds_once_per_op(K, rng):
    n = 333
    x = (rng.standard_normal(n) * 1000).astype(np.float16)
    y = rng.standard_normal(n).astype(np.float16)
    out = np.zeros(n, np.float16)
    interpret(K.build_vector_add("f16"), {"x": x, "y": y, "out": out})
    exact = x.astype(np.float64) + y.astype(np.float64)      # exact sum, rounded once
    np.testing.assert_array_equal(out, exact.astype(np.float16))


@pytest.mark.parametrize("m,n", [(37, 50), (8, 64), (1, 1)])
def test_row_softmax(K, rng, m, n):
    x = (rng.standard_normal((m, n)) * 3).astype(np.float32)
    out = np.zeros((m, n), np.float32)
    interpret(K.build_row_softmax(), {"x": x, "out": out})
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("m,n,k", [(37, 45, 70), (16, 32, 16), (3, 5, 7)])
def test_gemm_f16(K, rng, shared, m, n, k):
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    c = np.zeros((m, n), np.float16)
    interpret(K.build_gemm_f16(shared=shared), {"a": a, "b": b, "c": c})
    ref = a.astype(np.float64) @ b.astype(np.float64)
    # f32 accumulation (K * 2^-24 relative to sum |a||b|) then one rounding to f16
    bound = F16_EPS * np.abs(ref) + k * 2.0 ** -23 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
    assert np.all(np.abs(c.astype(np.float64) - ref) <= bound + 1e-7)


def test_gemm_shared_equals_register_version(K, rng):
    a = rng.standard_normal((20, 40)).astype(np.float16)
    b = rng.standard_normal((40, 33)).astype(np.float16)
    c1, c2 = np.zeros((20, 33), np.float16), np.zeros((20, 33), np.float16)
    interpret(K.build_gemm_f16(), {"a": a, "b": b, "c": c1})
    interpret(K.build_gemm_f16(shared=True), {"a": a, "b": b, "c": c2})
    np.testing.assert_array_equal(c1, c2)


def _decode_reference(wdtype: str, codes: np.ndarray) -> np.ndarray:
    """Independent decoders: ml_dtypes for fp4, two's complement by hand for ints."""
    if wdtype == "float4_e2m1":
        return codes.view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    if wdtype == "uint4":
        return codes.astype(np.float64)
    if wdtype == "int3":
        return np.where(codes >= 4, codes.astype(np.int64) - 8, codes).astype(np.float64)
    raise AssertionError(wdtype)


@pytest.mark.parametrize("wdtype,zeros,nbits", [("uint4", True, 4), ("float4_e2m1", False, 4), ("int3", False, 3)])
def test_lowbit_weight_gemm_with_group_scales(K, rng, wdtype, zeros, nbits):
    m, n, k, g = 5, 45, 96, 32           # odd M and N; K is 1.5 tiles of 64
    a = rng.standard_normal((m, k)).astype(np.float16)
    q = rng.integers(0, 1 << nbits, size=(k, n)).astype(np.uint8)
    s = (rng.random((k // g, n)) * 0.1 + 0.01).astype(np.float16)
    args = {"a": a, "w": q, "s": s, "c": np.zeros((m, n), np.float16)}
    wq = _decode_reference(wdtype, q)
    if zeros:
        z = rng.integers(0, 16, size=(k // g, n)).astype(np.uint8)
        args["z"] = z
        wq = wq - np.repeat(z.astype(np.float64), g, axis=0)
    w = wq * np.repeat(s.astype(np.float64), g, axis=0)
    kernel = K.build_lowbit_gemm(wdtype if wdtype != "int3" else "i3", zeros)
    interpret(kernel, args)
    ref = a.astype(np.float64) @ w
    # dequantized weights are rounded to f16 (relative F16_EPS each), f32 accumulation, f16 output
    absprod = np.abs(a.astype(np.float64)) @ np.abs(w)
    bound = F16_EPS * np.abs(ref) + (F16_EPS + k * 2.0 ** -23) * absprod * 1.01
    err = np.abs(args["c"].astype(np.float64) - ref)
    assert np.all(err <= bound + 1e-6), float(np.max(err - bound))


def test_packed_u4_gemv_matches_logical(K, rng):
    k, n = 50, 40                          # K: 3 full blocks + a masked one; N: second program half empty
    x = rng.standard_normal(k).astype(np.float32)
    codes = rng.integers(0, 16, size=(k, n)).astype(np.uint8)
    # the host packing convention (lowbit.pack: dense little-endian bitstream), read as uint32 words
    packed = np.asarray(lowbit.pack(codes, 4, axis=-1)).view("<u4").reshape(k, n // 8)
    y = np.zeros(n, np.float32)
    interpret(K.build_packed_u4_gemv(), {"x": x, "wp": packed.astype(np.uint32), "y": y})
    np.testing.assert_allclose(y, x.astype(np.float64) @ codes.astype(np.float64), rtol=1e-5, atol=1e-5)


def _attention_reference(q, k, v, scale, sm_scale):
    k = k * scale[:, None]
    s = (q @ k.T) * sm_scale
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return (p @ v) / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kv_dtype", ["f16", "float8_e4m3fn"])
@pytest.mark.parametrize("seq", [77, 16, 1])
def test_decode_attention(K, rng, kv_dtype, seq):
    h, d = 3, 32
    q = rng.standard_normal((h, d)).astype(np.float16)
    kscale = (rng.random(seq) + 0.5).astype(np.float32)
    if kv_dtype == "f16":
        k = rng.standard_normal((seq, d)).astype(np.float16)
        v = rng.standard_normal((seq, d)).astype(np.float16)
        k64, v64 = k.astype(np.float64), v.astype(np.float64)
    else:
        k = rng.standard_normal((seq, d)).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        v = rng.standard_normal((seq, d)).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        k64 = k.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
        v64 = v.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    out = np.zeros((h, d), np.float16)
    sm = 1.0 / np.sqrt(d)
    interpret(K.build_decode_attention(kv_dtype), {"q": q, "k": k, "v": v, "k_scale": kscale, "out": out,
                                                 "sm_scale": sm})
    # the kernel rounds scaled keys and probabilities to f16 before its dots: a few f16 ulps
    ref = _attention_reference(q.astype(np.float64), k64, v64, kscale.astype(np.float64), np.float32(sm))
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=1e-2, atol=4e-3)


def test_if_with_results_and_scalar_param(K):
    x = np.arange(30, dtype=np.int32)
    out = np.zeros(30, np.int32)
    interpret(K.build_branchy(), {"x": x, "out": out, "bias": 100})
    block = np.arange(30) // 8
    np.testing.assert_array_equal(out, np.where(block % 2 == 0, x * 2, x + 100))


@pytest.mark.parametrize("mn,pq", [((5, 3), (8, 8)), ((7, 9), (6, 5)), ((1, 1), (3, 2))])
def test_edge_masks_loads_read_other_and_stores_skip(K, mn, pq):
    x = (np.arange(np.prod(mn)) + 10).astype(np.int16).reshape(mn)
    y = np.full(pq, 1234, np.int16)
    interpret(K.build_edge_copy(), {"x": x, "y": y})
    expect = np.full(pq, -1, np.int16)
    r, c = min(mn[0], pq[0]), min(mn[1], pq[1])
    expect[:r, :c] = x[:r, :c]
    np.testing.assert_array_equal(y, expect)


def test_explicit_mask_and_unchecked_axis_raise():
    from lowbit.ir import KernelBuilder

    kb = KernelBuilder("masked")
    x = kb.tensor_param("x", "f32", ["N"])
    y = kb.tensor_param("y", "f32", ["N"])
    idx = kb.arange(0, 8)
    even = kb.eq(kb.mod(idx, 2), 0)
    t = kb.load(x, [0], [8], mask=even, other=-5.0)
    kb.store(y, t, [0], mask=kb.lt(idx, 6))
    k = kb.build()
    x_arr = np.arange(10, dtype=np.float32)
    y_arr = np.full(10, 99, np.float32)
    interpret(k, {"x": x_arr, "y": y_arr})
    np.testing.assert_array_equal(y_arr, [0, -5, 2, -5, 4, -5, 99, 99, 99, 99])

    kb = KernelBuilder("unchecked")
    x = kb.tensor_param("x", "f32", ["N"])
    y = kb.tensor_param("y", "f32", ["N"])
    kb.store(y, kb.load(x, [0], [8], checked=[False]), [0])
    k = kb.build()
    interpret(k, {"x": np.ones(8, np.float32), "y": np.zeros(8, np.float32)})   # in bounds: fine
    with pytest.raises(InterpreterError, match="unchecked"):
        interpret(k, {"x": np.ones(5, np.float32), "y": np.zeros(5, np.float32)})


def test_argument_checks(K):
    k = K.build_vector_add()
    good = {"x": np.zeros(4, np.float32), "y": np.zeros(4, np.float32), "out": np.zeros(4, np.float32)}
    with pytest.raises(InterpreterError, match="missing argument"):
        interpret(k, {"x": good["x"], "y": good["y"]})
    with pytest.raises(InterpreterError, match="size N is 4"):
        interpret(k, {**good, "y": np.zeros(5, np.float32)})
    with pytest.raises(InterpreterError, match="as float32"):
        interpret(k, {**good, "y": np.zeros(4, np.float64)})
    with pytest.raises(InterpreterError, match="specialized to 64"):
        interpret(k, good, constants={"BLOCK": 32})
    kl = K.build_lowbit_gemm("uint4", False)
    args = {"a": np.zeros((2, 64), np.float16), "w": np.full((64, 3), 16, np.uint8),
            "s": np.zeros((2, 3), np.float16), "c": np.zeros((2, 3), np.float16)}
    with pytest.raises(InterpreterError, match="not a uint4 code"):
        interpret(kl, args)
    args["w"][:] = 1
    with pytest.raises(InterpreterError, match=r"K // G = 2"):
        interpret(kl, {**args, "s": np.zeros((3, 3), np.float16)})


def test_unspecialized_constant_and_shape_bindings():
    from lowbit.ir import KernelBuilder

    kb = KernelBuilder("scale_rows")
    x = kb.tensor_param("x", "i32", ["R * C"])         # composite size: R, C from shape_bindings
    kb.constant("F")                                    # value given at run time
    kb.set_grid("R")
    r = kb.program_id(0)
    off = kb.mul(r, kb.symbol("C"))
    t = kb.load(x, [off], [4])
    kb.store(x, kb.mul(t, kb.symbol("F")), [off], mask=kb.lt(kb.arange(0, 4), kb.symbol("C")))
    k = kb.build()
    arr = np.arange(6, dtype=np.int32)
    interpret(k, {"x": arr}, constants={"F": 3}, shape_bindings={"R": 2, "C": 3})
    np.testing.assert_array_equal(arr, np.arange(6) * 3)
    with pytest.raises(InterpreterError, match="constant F has no value"):
        interpret(k, {"x": arr}, shape_bindings={"R": 2, "C": 3})
    with pytest.raises(lowbit.CompileError, match="size symbol 'R' has no value"):
        interpret(k, {"x": arr}, constants={"F": 3})
