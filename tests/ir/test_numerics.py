"""Interpreter semantics of casts, views, integer and float arithmetic, reductions — through kernels, against
independent references (Python ints, fractions, ml_dtypes, the byte examples of DESIGN.md)."""
from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from lowbit.ir import InterpreterError, KernelBuilder, interpret
from lowbit.ir.types import numpy_dtype


def run(fn, inputs, out_dtype, out_len=None):
    """Load every input vector whole, apply ``fn(kb, *tiles)``, store the result; return the output."""
    kb = KernelBuilder("ew")
    params = [kb.tensor_param(f"x{i}", d, [f"N{i}"]) for i, (d, _) in enumerate(inputs)]
    out = kb.tensor_param("out", out_dtype, ["R"])
    tiles = [kb.load(p, [0], [len(a)]) for p, (_, a) in zip(params, inputs)]
    result = fn(kb, *tiles)
    kb.store(out, result, [0])
    n = out_len if out_len is not None else result.shape[0]
    args = {f"x{i}": np.asarray(a).astype(numpy_dtype(p.dtype)) for i, (p, (_, a)) in enumerate(zip(params, inputs))}
    args["out"] = np.zeros(n, numpy_dtype(out.dtype))
    interpret(kb.build(), args)
    return args["out"]


def cast_to(dtype):
    return lambda kb, t: kb.cast(t, dtype)


# --------------------------------------------------------------------------------------------- casts

SPECIAL = [2.5, 3.5, -2.5, -0.5, 0.5, 1.5, 126.6, -128.5, 1e10, -1e10, float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("dst,lo,hi", [("int8", -128, 127), ("uint8", 0, 255), ("int32", -2**31, 2**31 - 1),
                                       ("int16", -2**15, 2**15 - 1)])
def test_float_to_int_rounds_half_even_and_saturates(dst, lo, hi):
    got = run(cast_to(dst), [("f32", SPECIAL)], dst)
    expect = [0 if v != v else (hi if v == float("inf") else lo if v == float("-inf") else min(hi, max(lo, round(v))))
              for v in np.float32(SPECIAL).tolist()]
    assert got.tolist() == expect


def test_int_to_native_int_wraps_and_to_codes_saturates():
    vals = [-1, 256, 257, 300, -129, 7, 8, -8, -9, 100]
    assert run(cast_to("u8"), [("i32", vals)], "u8").tolist() == [v % 256 for v in vals]
    codes = run(cast_to("int4"), [("i32", vals)], "int4")
    assert codes.tolist() == [min(7, max(-8, v)) & 0xF for v in vals]
    assert run(cast_to("uint4"), [("i32", vals)], "uint4").tolist() == [min(15, max(0, v)) for v in vals]


def test_float_to_low_bit_float_matches_ml_dtypes():
    vals = np.array([0.0, 0.25, 0.75, 1.25, 2.5, 3.5, 5.0, -0.3, -1.75, 4.9, 6.0], np.float32)  # ties included
    got = run(cast_to("float4_e2m1"), [("f32", vals)], "float4_e2m1")
    np.testing.assert_array_equal(got, vals.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF)
    sat = run(cast_to("float4_e2m1"), [("f32", [100.0, -100.0])], "float4_e2m1")
    assert sat.tolist() == [0b0111, 0b1111]          # +-6, the largest finite values


def test_float_rounding_between_float_types(rng):
    x = (rng.standard_normal(500) * 10.0 ** rng.integers(-6, 6, 500)).astype(np.float32)
    h = run(cast_to("f16"), [("f32", x)], "f16")
    b = run(cast_to("bf16"), [("f32", x)], "bf16")
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, x.astype(np.float16))
    np.testing.assert_array_equal(b.view(np.uint16), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    # every result is a nearest neighbour (exact check with fractions on a sample)
    for v, r in zip(x[:50].tolist(), b[:50].astype(np.float32).tolist()):
        step = Fraction(2) ** (int(np.floor(np.log2(abs(v)))) - 7) if v != 0 else 0
        assert abs(Fraction(r) - Fraction(v)) <= step / 2


def _round_sig(x: int, sig: int) -> int:
    """Exact round-half-even of a positive integer to ``sig`` significant bits (fractions)."""
    e = x.bit_length() - sig
    if e <= 0:
        return x
    q = Fraction(x, 2 ** e)
    f = int(q)
    rem = q - f
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and f % 2 == 1):
        f += 1
    return f * 2 ** e


def test_int_to_bf16_rounds_once():
    vals = [257, 259, 2**24 + 2**16 + 1, 2**30 + 2**22 + 3, 123456789]
    got = run(cast_to("bf16"), [("i32", vals)], "bf16").astype(np.float64)
    assert got.tolist() == [float(_round_sig(v, 8)) for v in vals]
    assert got[2] == 2**24 + 2**17          # not 2**24, which double rounding through f32 would give


def test_decode_code_types():
    codes = np.arange(16, dtype=np.uint8)
    assert run(cast_to("f16"), [("uint4", codes)], "f16").tolist() == list(range(16))
    assert run(cast_to("i32"), [("int3", codes[:8])], "i32").tolist() == [0, 1, 2, 3, -4, -3, -2, -1]
    np.testing.assert_array_equal(run(cast_to("bf16"), [("float4_e2m1", codes)], "bf16").astype(np.float32),
                                  codes.view(ml_dtypes.float4_e2m1fn).astype(np.float32))
    c8 = np.arange(256, dtype=np.uint8)
    c8 = c8[(c8 & 0x7F) != 0x7F]                           # e4m3fn NaN codes compared separately
    np.testing.assert_array_equal(run(cast_to("f32"), [("float8_e4m3fn", c8)], "f32"),
                                  c8.view(ml_dtypes.float8_e4m3fn).astype(np.float32))
    nan = run(cast_to("f32"), [("float8_e4m3fn", [0x7F])], "f32")
    assert np.isnan(nan[0])
    assert run(cast_to("bool"), [("int3", [0, 1, 7])], "bool").tolist() == [False, True, True]


# --------------------------------------------------------------------------------------------- views

def test_view_matches_design_byte_examples():
    # DESIGN.md section 3: int3 [1,-1,2,-4,3,0,-2,1] -> b9 38 38; float4_e2m1 [1,-0.5,6,0] -> 92 07
    got = run(lambda kb, t: kb.view(kb.cast(t, "int3"), "u8"), [("i32", [1, -1, 2, -4, 3, 0, -2, 1])], "u8")
    assert got.tolist() == [0xB9, 0x38, 0x38]
    got = run(lambda kb, t: kb.view(kb.cast(t, "float4_e2m1"), "u8"), [("f32", [1.0, -0.5, 6.0, 0.0])], "u8")
    assert got.tolist() == [0x92, 0x07]


def test_view_round_trip_and_native_bits(rng):
    codes = rng.integers(0, 16, 32).astype(np.uint8)
    kb = KernelBuilder("rt")
    x = kb.tensor_param("x", "uint4", ["R", "C"])
    y = kb.tensor_param("y", "u32", ["R", "W"])
    z = kb.tensor_param("z", "uint4", ["R", "C"])
    w = kb.view(kb.load(x, [0, 0], [2, 16]), "u32")
    kb.store(y, w, [0, 0])
    kb.store(z, kb.view(w, "uint4"), [0, 0])
    args = {"x": codes.reshape(2, 16), "y": np.zeros((2, 2), np.uint32), "z": np.zeros((2, 16), np.uint8)}
    interpret(kb.build(), args)
    np.testing.assert_array_equal(args["z"], codes.reshape(2, 16))
    words = [sum(int(c) << (4 * i) for i, c in enumerate(row[j * 8:(j + 1) * 8])) for row in codes.reshape(2, 16)
             for j in range(2)]
    assert args["y"].ravel().tolist() == words
    h = rng.standard_normal(8).astype(np.float16)
    assert run(lambda kb, t: kb.view(t, "u16"), [("f16", h)], "u16").tolist() == h.view(np.uint16).tolist()
    f = np.array([1.0, -2.5], np.float32)
    assert run(lambda kb, t: kb.view(t, "u8"), [("f32", f)], "u8").tolist() == list(f.view(np.uint8))


# --------------------------------------------------------------------------------------------- integer ops

def test_integer_division_is_floor_division():
    a, b = [-7, 7, -7, 7, 0], [2, -2, -2, 2, 3]
    assert run(lambda kb, x, y: kb.floordiv(x, y), [("i32", a), ("i32", b)], "i32").tolist() == \
        [p // q for p, q in zip(a, b)]
    assert run(lambda kb, x, y: kb.mod(x, y), [("i32", a), ("i32", b)], "i32").tolist() == \
        [p % q for p, q in zip(a, b)]
    with pytest.raises(InterpreterError, match="integer floordiv by zero"):
        run(lambda kb, x, y: kb.floordiv(x, y), [("i32", [1]), ("i32", [0])], "i32")


def test_shifts_wrapping_and_bitwise():
    assert run(lambda kb, x: kb.shr(x, 2), [("i32", [-16, 16, -1])], "i32").tolist() == [-4, 4, -1]
    assert run(lambda kb, x: kb.shr(x, 31), [("u32", [2**31, 2**32 - 1])], "u32").tolist() == [1, 1]
    assert run(lambda kb, x: kb.shl(x, 4), [("u8", [0x1F, 0xF1])], "u8").tolist() == [0xF0, 0x10]
    with pytest.raises(InterpreterError, match=r"shifts? .*in \[0, 32\)"):
        run(lambda kb, x: kb.shl(x, 32), [("i32", [1])], "i32")
    assert run(lambda kb, x: kb.add(x, 1), [("i32", [2**31 - 1])], "i32").tolist() == [-2**31]
    assert run(lambda kb, x: kb.mul(x, x), [("i8", [16, -12])], "i8").tolist() == [0, -112]
    assert run(lambda kb, x, y: kb.xor(kb.and_(x, y), kb.or_(x, 1)), [("u16", [0xF0F0]), ("u16", [0xFF00])],
               "u16").tolist() == [(0xF0F0 & 0xFF00) ^ (0xF0F0 | 1)]
    assert run(lambda kb, x: kb.not_(x), [("u8", [0x0F])], "u8").tolist() == [0xF0]
    assert run(lambda kb, x: kb.not_(kb.lt(x, 2)), [("i32", [1, 3])], "bool").tolist() == [False, True]


# --------------------------------------------------------------------------------------------- float ops

def test_f16_rounds_after_every_op(rng):
    a, b, c = (rng.standard_normal(300).astype(np.float16) * 30 for _ in range(3))
    got = run(lambda kb, x, y, z: kb.add(kb.mul(x, y), z), [("f16", a), ("f16", b), ("f16", c)], "f16")
    a64, b64, c64 = (v.astype(np.float64) for v in (a, b, c))
    prod = (a64 * b64).astype(np.float16).astype(np.float64)          # exact product, rounded once
    np.testing.assert_array_equal(got, (prod + c64).astype(np.float16))


def test_math_functions_against_float64(rng):
    x = (rng.random(64) * 4 + 0.1).astype(np.float32)
    x64 = x.astype(np.float64)
    cases = {"exp": np.exp(x64), "exp2": np.exp2(x64), "log": np.log(x64), "log2": np.log2(x64),
             "sqrt": np.sqrt(x64), "rsqrt": 1 / np.sqrt(x64), "tanh": np.tanh(x64),
             "sigmoid": 1 / (1 + np.exp(-x64)), "floor": np.floor(x64), "ceil": np.ceil(x64), "neg": -x64}
    for op, ref in cases.items():
        got = run(lambda kb, t, op=op: kb.unary(op, t), [("f32", x)], "f32")
        np.testing.assert_allclose(got, ref, rtol=4e-7, err_msg=op)
    m = run(lambda kb, p, q: kb.maximum(p, q), [("f32", [1.0, float("nan")]), ("f32", [float("nan"), 2.0])], "f32")
    assert np.isnan(m).all()


def test_reductions_accumulate_in_f32_and_wrap_for_ints():
    assert run(lambda kb, t: kb.sum(t, 0, keepdims=True), [("f16", [2048, 1, 1])], "f16").tolist() == [2050]
    assert run(lambda kb, t: kb.sum(t, 0, keepdims=True), [("i8", [100, 100])], "i8").tolist() == [-56]
    assert run(lambda kb, t: kb.max(t, 0, keepdims=True), [("bf16", [1.5, -3, 7.25])], "bf16").tolist() == [7.25]
    assert run(lambda kb, t: kb.min(t, 0, keepdims=True), [("u16", [9, 3, 65535])], "u16").tolist() == [3]


def test_int8_dot_and_where_on_codes(rng):
    a = rng.integers(-128, 128, (4, 64)).astype(np.int8)
    b = rng.integers(-128, 128, (64, 8)).astype(np.int8)
    kb = KernelBuilder("idot")
    pa = kb.tensor_param("a", "i8", ["M", "K"])
    pb = kb.tensor_param("b", "i8", ["K", "N"])
    pc = kb.tensor_param("c", "i32", ["M", "N"])
    kb.store(pc, kb.dot(kb.load(pa, [0, 0], [4, 64]), kb.load(pb, [0, 0], [64, 8])), [0, 0])
    c = np.zeros((4, 8), np.int32)
    interpret(kb.build(), {"a": a, "b": b, "c": c})
    np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    got = run(lambda kb, p, q: kb.where(kb.lt(kb.arange(0, 4), 2), p, q),
              [("uint4", [1, 2, 3, 4]), ("uint4", [9, 10, 11, 12])], "uint4")
    assert got.tolist() == [1, 2, 11, 12]
    assert run(cast_to("f32"), [("bool", [True, False])], "f32").tolist() == [1.0, 0.0]


def test_literals_round_once_to_the_tile_dtype():
    big = 2**24 + 2**16 + 1
    got = run(lambda kb, t: kb.add(t, kb.const(big, "bf16")), [("bf16", [0.0])], "bf16")
    assert got.astype(np.float64).tolist() == [float(_round_sig(big, 8))]
    got = run(lambda kb, t: kb.add(t, 0.1), [("f16", [0.0])], "f16")
    assert got.tolist() == [float(np.float16(0.1))]
