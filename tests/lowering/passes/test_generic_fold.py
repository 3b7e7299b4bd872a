"""The ``fold`` pass: IR before/after for identities and control flow, and folded constants checked against
independent references (Python integers with explicit two's-complement wrapping, exact rational RNE for
float16, Python's round-half-even for float -> int)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.ir import Full, InterpreterError, KernelBuilder, interpret, print_kernel
from lowbit.lowering.passes import run_passes
from lowbit.lowering.target import parse_target

TARGET = parse_target("tvm:llvm")


def fold_dce(kernel):
    return run_passes(kernel, TARGET, ["fold", "dce"]).kernel


def body_text(kernel) -> str:
    return "\n".join(print_kernel(kernel).splitlines()[2:-1])


# ----------------------------------------------------------------------------------------------------
# before / after
# ----------------------------------------------------------------------------------------------------

def test_identities_before_after():
    kb = KernelBuilder("ident")
    xi = kb.tensor_param("xi", "i32", [8])
    xf = kb.tensor_param("xf", "f32", [8])
    kb.set_grid(1)
    ti = kb.load(xi, [0], [8], name="ti")
    tf = kb.load(xf, [0], [8], name="tf")
    a = kb.add(kb.mul(ti, 1), 0, name="a")          # int: x * 1 + 0 -> x
    z = kb.mul(ti, 0, name="z")                      # int: x * 0 -> 0
    f1 = kb.add(kb.mul(tf, 1.0), -0.0, name="f1")   # float: x * 1.0 + (-0.0) -> x
    f2 = kb.add(tf, 0.0, name="f2")                  # float: x + 0.0 is not x (-0.0 + 0.0 = +0.0): kept
    f3 = kb.mul(tf, 0.0, name="f3")                  # float: x * 0.0 is not 0 (NaN, inf, -0.0): kept
    kb.store(xi, kb.add(a, z), [0])
    kb.store(xf, kb.add(kb.add(f1, f2), f3), [0])
    kernel = kb.build()
    assert "%a = add(%mul, %c.3) : i32[8]" in body_text(kernel)
    assert body_text(fold_dce(kernel)) == """\
  %c = const(0) : i32
  %ti = load(%xi, [%c]) : i32[8]
  %tf = load(%xf, [%c]) : f32[8]
  %c.10 = full(0.0) : f32[8]
  %f2 = add(%tf, %c.10) : f32[8]
  %c.11 = full(0.0) : f32[8]
  %f3 = mul(%tf, %c.11) : f32[8]
  store(%xi, %ti, [%c])
  %add.1 = add(%tf, %f2) : f32[8]
  %add.2 = add(%add.1, %f3) : f32[8]
  store(%xf, %add.2, [%c])"""
    # the kept float ops matter: -0.0 and NaN inputs
    x = np.array([-0.0, np.nan, np.inf, 1, 2, 3, 4, 5], np.float32)
    want = interpret(kernel, {"xi": np.arange(8, dtype=np.int32), "xf": x.copy()})
    got = interpret(fold_dce(kernel), {"xi": np.arange(8, dtype=np.int32), "xf": x.copy()})
    assert want["xf"].tobytes() == got["xf"].tobytes()
    np.testing.assert_array_equal(got["xi"], np.arange(8))


def test_faulting_and_inexact_ops_are_not_folded():
    kb = KernelBuilder("faults")
    o = kb.tensor_param("o", "i32", [2])
    kb.set_grid(1)
    d = kb.floordiv(kb.const(7), kb.const(0), name="d")      # faults at run time: must stay
    s = kb.shl(kb.const(1), kb.const(40), name="s")          # shift out of range: must stay
    e = kb.exp(kb.const(1.0, "f32"), name="e")               # not correctly rounded: not folded
    kb.store(o, kb.broadcast_to(kb.add(d, s), [1]), [0])
    kb.store(o, kb.broadcast_to(kb.cast(e, "i32"), [1]), [1])
    kernel = kb.build()
    folded = fold_dce(kernel)
    assert folded == kernel
    with pytest.raises(InterpreterError, match="by zero"):
        interpret(folded, {"o": np.zeros(2, np.int32)})


def test_constant_if_and_loops_are_inlined():
    kb = KernelBuilder("control")
    o = kb.tensor_param("o", "i32", [4])
    kb.set_grid(1)
    t = kb.load(o, [0], [4], name="t")
    kb.begin_if(kb.lt(kb.const(2), kb.const(3)))
    u = kb.add(t, 5, name="u")
    kb.begin_else([u])
    w = kb.sub(t, 5, name="w")
    (r,) = kb.end_if([w], names=["r"])
    with kb.for_range(0, 4, 4, [r]) as one_trip:
        one_trip.yield_([kb.add(one_trip.args[0], one_trip.iv, name="plus_iv")])
    with kb.for_range(3, 1, 1, [one_trip.results[0]]) as no_trip:
        no_trip.yield_([kb.sub(no_trip.args[0], 100)])
    kb.store(o, no_trip.results[0], [0])
    kernel = kb.build()
    assert body_text(fold_dce(kernel)) == """\
  %c = const(0) : i32
  %t = load(%o, [%c]) : i32[4]
  %c.4 = full(5) : i32[4]
  %u = add(%t, %c.4) : i32[4]
  store(%o, %u, [%c])"""
    x = np.array([1, -2, 3, 2**31 - 3], np.int32)
    got = interpret(fold_dce(kernel), {"o": x.copy()})["o"]
    want = interpret(kernel, {"o": x.copy()})["o"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, (x.astype(np.int64) + 5).astype(np.int32))  # wraps at the top


def test_uniform_tiles_fold_through_shape_ops_and_reductions():
    kb = KernelBuilder("uniform")
    o = kb.tensor_param("o", "i32", [2, 3])
    kb.set_grid(1)
    full = kb.full([3], 7, "i32")
    tile = kb.broadcast_to(kb.expand_dims(full, 0), [2, 3])
    s = kb.sum(tile, 1)                                   # 21 per row (integer sums are exact)
    kb.store(o, kb.add(tile, kb.broadcast_to(kb.expand_dims(s, 1), [2, 3])), [0, 0])
    folded = fold_dce(kb.build())
    stored = [ins for ins in folded.walk() if ins.opcode == "store"][0]
    (definition,) = [ins for ins in folded.walk() if ins.outputs and ins.outputs[0] == stored.value]
    assert isinstance(definition, Full) and definition.value == 28


def test_source_literals_are_kept_when_exact():
    kb = KernelBuilder("lit")
    o = kb.tensor_param("o", "f32", [4])
    kb.set_grid(1)
    kb.store(o, kb.broadcast_to(kb.const(-1e30, "f32"), [4]), [0])
    assert "full(-1e+30) : f32[4]" in print_kernel(fold_dce(kb.build()))


# ----------------------------------------------------------------------------------------------------
# folded values against independent references
# ----------------------------------------------------------------------------------------------------

INT_TYPES = {"i8": (8, True), "i16": (16, True), "i32": (32, True), "u8": (8, False), "u16": (16, False),
             "u32": (32, False)}


def wrap(v: int, bits: int, signed: bool) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if signed and v >= 1 << (bits - 1) else v


def int_reference(op: str, a: int, b: int, bits: int, signed: bool):
    if op in ("eq", "ne", "lt", "le", "gt", "ge"):
        return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
    if op in ("floordiv", "mod") and b == 0:
        return None
    if op in ("shl", "shr") and not 0 <= b < bits:
        return None
    value = {"add": a + b, "sub": a - b, "mul": a * b, "floordiv": a // b if b else 0, "mod": a % b if b else 0,
             "and": a & b, "or": a | b, "xor": a ^ b, "minimum": min(a, b), "maximum": max(a, b),
             "shl": a << b if 0 <= b < bits else 0, "shr": a >> b if 0 <= b < bits else 0}[op]
    return wrap(value, bits, signed)


def fold_scalar_binary(dtype: str, op: str, a, b, out_dtype: str):
    kb = KernelBuilder("k")
    o = kb.tensor_param("o", out_dtype, [1])
    kb.set_grid(1)
    r = kb.binary(op, kb.const(a, dtype), kb.const(b, dtype))
    kb.store(o, kb.broadcast_to(r, [1]), [0])
    return kb.build()


@st.composite
def int_cases(draw):
    dtype = draw(st.sampled_from(sorted(INT_TYPES)))
    bits, signed = INT_TYPES[dtype]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edge = st.sampled_from([lo, hi, 0, 1, -1 if signed else 2, lo + 1, hi - 1])
    a = draw(st.one_of(edge, st.integers(lo, hi)))
    b = draw(st.one_of(edge, st.integers(lo, hi), st.integers(0, bits + 1).map(lambda v: max(lo, min(hi, v)))))
    op = draw(st.sampled_from(["add", "sub", "mul", "floordiv", "mod", "and", "or", "xor", "minimum", "maximum",
                               "shl", "shr", "eq", "lt", "ge"]))
    return dtype, op, a, b


@settings(max_examples=150, deadline=None)
@given(int_cases())
def test_integer_folding_wraps_and_floors_like_the_reference(case):
    dtype, op, a, b = case
    bits, signed = INT_TYPES[dtype]
    want = int_reference(op, a, b, bits, signed)
    out_dtype = "bool" if op in ("eq", "lt", "ge") else dtype
    kernel = fold_scalar_binary(dtype, op, a, b, out_dtype)
    folded = fold_dce(kernel)
    fulls = [ins for ins in folded.walk() if isinstance(ins, Full)]
    if want is None:  # division by zero / shift out of range: not folded, still faults
        assert not fulls
        with pytest.raises(InterpreterError):
            interpret(folded, {"o": np.zeros(1, np.dtype(np.bool_) if out_dtype == "bool" else
                                             interpret_dtype(out_dtype))})
        return
    assert len(fulls) == 1 and fulls[0].value == want, print_kernel(folded)
    out = interpret(folded, {"o": np.zeros(1, bool if out_dtype == "bool" else interpret_dtype(out_dtype))})["o"]
    assert out[0] == want


def interpret_dtype(short: str):
    return np.dtype({"i8": np.int8, "i16": np.int16, "i32": np.int32, "u8": np.uint8, "u16": np.uint16,
                     "u32": np.uint32}[short])


def f16_rne(x: Fraction) -> float:
    """Exact round-to-nearest-even of a rational to IEEE binary16 (overflow to inf)."""
    if x == 0:
        return 0.0
    sign = -1 if x < 0 else 1
    m = abs(x)
    if m >= Fraction(65520):
        return sign * math.inf
    e = max(math.floor(math.log2(m)), -14)
    while Fraction(2) ** e > m and e > -14:   # guard against log2 rounding
        e -= 1
    while Fraction(2) ** (e + 1) <= m:
        e += 1
    ulp = Fraction(2) ** (max(e, -14) - 10)
    q = round(m / ulp)                          # Python rounds halves to even
    return sign * float(q * ulp)


@settings(max_examples=120, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-7e4, max_value=7e4))
def test_float_cast_folding_rounds_to_nearest_even(x):
    kb = KernelBuilder("k")
    o16 = kb.tensor_param("o16", "f16", [1])
    o8 = kb.tensor_param("o8", "i8", [1])
    kb.set_grid(1)
    c = kb.const(float(x), "f32")
    kb.store(o16, kb.broadcast_to(kb.cast(c, "f16"), [1]), [0])
    kb.store(o8, kb.broadcast_to(kb.cast(c, "i8"), [1]), [0])
    folded = fold_dce(kb.build())
    values = [ins.value for ins in folded.walk() if isinstance(ins, Full)]
    want16 = f16_rne(Fraction(float(x))) if x != 0 else float(x)    # (a Fraction has no -0)
    want8 = max(-128, min(127, round(Fraction(float(x)))))
    assert len(values) == 2
    assert values[0] == want16 and math.copysign(1, values[0]) == math.copysign(1, want16)
    assert values[1] == want8


def test_transpose_of_a_square_tile_is_not_an_identity():
    # A [4, 4] transpose has the same type as its operand; folding it away would silently return x.
    kb = KernelBuilder("transpose")
    x = kb.tensor_param("x", "f32", [4, 4], intent="in")
    y = kb.tensor_param("y", "f32", [4, 4], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.transpose(kb.load(x, [0, 0], [4, 4])), [0, 0])
    kernel = kb.build()
    folded = run_passes(kernel, parse_target("tvm:llvm"), ["fold"]).kernel
    assert "permute" in print_kernel(folded)
    data = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = interpret(folded, {"x": data, "y": np.zeros((4, 4), np.float32)})["y"]
    assert np.array_equal(out, data.T)
