"""Dequant selection: every method, on every code of every type, equals the exact value (an independent
``fractions`` decoder and ml_dtypes where it has the type), through the interpreter after lowering."""
from __future__ import annotations

import importlib.util
import math
import pathlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import lowbit
import lowbit.lowering.passes
from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, interpret, print_kernel
from lowbit.ir import nodes as n
from lowbit.ir.types import is_code
from lowbit.lowering.passes import run_passes
from lowbit.lowering.passes.dequant import (LUT_MAX_BITS, DequantCost, applicable_methods, default_method, dequant_cost,
                                            fits_f16, lut_byte_table, method_weight, select_method)
from lowbit.lowering.target import parse_target

_spec = importlib.util.spec_from_file_location("lowbit_validate", pathlib.Path(__file__).with_name("lowbit_validate.py"))
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)

CODE_TYPES = tuple(t for t in V.WEIGHT_TYPES if is_code(t))
OUTS = {"float16": np.float16, "float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
ML = {"float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
      "float4_e2m1": ml_dtypes.float4_e2m1fn, "float6_e3m2": ml_dtypes.float6_e3m2fn,
      "float6_e2m3": ml_dtypes.float6_e2m3fn, "int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4,
      "int2": ml_dtypes.int2, "uint2": ml_dtypes.uint2}


def exact(dtype: str, code: int) -> float:
    """The value of one code from the format's definition (DESIGN section 3), exactly."""
    d = lowbit.dtype(dtype)
    nb = d.nbits
    if d.kind == "uint":
        return float(code)
    if d.kind == "int":
        return float(code - (1 << nb) if code >> (nb - 1) else code)
    E, M = d.exponent_bits, d.mantissa_bits
    bias = (1 << (E - 1)) - 1
    sign = -1 if code >> (nb - 1) else 1
    e, m = (code >> M) & ((1 << E) - 1), code & ((1 << M) - 1)
    if dtype == "float8_e5m2" and e == 31:
        return sign * float("inf") if m == 0 else float("nan")
    if dtype == "float8_e4m3fn" and e == 15 and m == 7:
        return float("nan")
    if e == 0:
        magnitude = Fraction(m, 1 << M) * Fraction(2) ** (1 - bias)
    else:
        magnitude = (1 + Fraction(m, 1 << M)) * Fraction(2) ** (e - bias)
    return math.copysign(float(magnitude), sign)                      # keeps -0.0


def reference(dtype: str, codes: np.ndarray, out: str) -> np.ndarray:
    vals = np.array([exact(dtype, int(c)) for c in codes.ravel()], np.float64).reshape(codes.shape)
    with np.errstate(over="ignore"):                                   # e.g. 2**64 -> f16 is inf, as it should be
        ref = vals.astype(np.float32).astype(OUTS[out])               # the cast rule: decode, then f32 -> out
    if dtype in ML:                                                    # a second, independent decoder
        ml = codes.astype(np.uint8).view(ML[dtype]) if dtype.startswith("float8") else \
            np.array([ML[dtype](v) for v in vals.ravel()]).reshape(codes.shape)
        assert V._bits_equal(ml.astype(np.float32).astype(OUTS[out]), ref)
    return ref


def all_codes(dtype: str, shape=(16, 16)) -> np.ndarray:
    nb = lowbit.dtype(dtype).nbits
    return np.resize(np.arange(1 << nb, dtype=np.uint8), shape)


def cast_kernel(dtype: str, out: str) -> n.Kernel:
    kb = KernelBuilder("dequant")
    x = kb.tensor_param("x", dtype, ["R", "C"])
    y = kb.tensor_param("y", out, ["R", "C"], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.cast(kb.load(x, [0, 0], [16, 16]), out), [0, 0])
    return kb.build()


def run_lowered(kernel: n.Kernel, target: str, options, args: dict, passes=("infer-layouts", "lower-lowbit")):
    low = run_passes(kernel, parse_target(target), passes, options=options)
    packed = {k: (low.param_formats[k].pack(v) if k in low.param_formats else v) for k, v in args.items()}
    return low, interpret(low.kernel, packed)


CASES = [(t, out, m) for t in CODE_TYPES for out in OUTS for m in applicable_methods(t, out)]


@pytest.mark.parametrize("dtype,out,method", CASES)
def test_every_code_every_method(dtype, out, method):
    codes = all_codes(dtype)
    target = "triton:sm_90" if method == "magic" else "tvm:llvm"
    low, res = run_lowered(cast_kernel(dtype, out), target, {"dequant": method},
                           {"x": codes, "y": np.zeros((16, 16), OUTS[out])})
    assert V._bits_equal(res["y"], reference(dtype, codes, out)), (dtype, out, method)
    assert not any(is_code(v.dtype) for i in low.kernel.walk() for v in i.outputs)


@pytest.mark.parametrize("target", ["triton:cpu", "triton:sm_90"])
@pytest.mark.parametrize("dtype", CODE_TYPES)
def test_select_dequant_on_a_user_view(dtype, target):
    """A kernel that reads packed bytes itself (``view`` u8 -> codes), rewritten by select-dequant alone."""
    nb = lowbit.dtype(dtype).nbits
    kb = KernelBuilder("user_view")
    x = kb.tensor_param("x", "u8", ["R", "B"])
    y = kb.tensor_param("y", "f32", ["R", "C"], intent="out")
    kb.set_grid(1)
    codes = kb.view(kb.load(x, [0, 0], [16, 2 * nb]), dtype)           # 2n bytes per row = 16 codes
    kb.store(y, kb.cast(kb.permute(codes, (1, 0)), "f32"), [0, 0])
    k = kb.build()
    logical = all_codes(dtype)
    args = {"x": lowbit.pack(logical, nb), "y": np.zeros((16, 16), np.float32)}
    want = reference(dtype, logical.T, "float32")
    for passes in (("select-dequant",), ("infer-layouts", "select-dequant")):
        low, res = run_lowered(k, target, None, dict(args, y=np.zeros((16, 16), np.float32)), passes)
        assert V._bits_equal(res["y"], want)
        assert "view(" in print_kernel(k) and not any(is_code(v.dtype) for i in low.kernel.walk() for v in i.outputs)


@pytest.mark.parametrize("dtype", ["int3", "uint3", "int5", "float4_e2m1"])
def test_a_view_of_codes_as_wider_codes_joins_them(dtype):
    """``view`` uint1 codes -> ``n``-bit codes (the bit planes' join): code ``j`` of a row is made of bits
    ``j n .. j n + n - 1`` of the row, little-endian, as numpy unpacks them; select-dequant joins the carriers.
    A view that does not join whole codes (3-bit codes as 2-bit ones) is refused with the instruction."""
    nb = lowbit.dtype(dtype).nbits
    kb = KernelBuilder("join")
    x = kb.tensor_param("x", "u8", ["R", "B"])
    y = kb.tensor_param("y", "f32", ["R", "C"], intent="out")
    kb.set_grid(1)
    bits = kb.view(kb.load(x, [0, 0], [16, 2 * nb]), "uint1")          # [16, 16 n] single bits
    kb.store(y, kb.cast(kb.view(bits, dtype), "f32"), [0, 0])
    logical = all_codes(dtype)
    args = {"x": lowbit.pack(logical, nb), "y": np.zeros((16, 16), np.float32)}
    for target in ("tvm:llvm", "triton:cpu"):
        low, res = run_lowered(kb.build(), target, None, dict(args), ("infer-layouts", "select-dequant"))
        assert V._bits_equal(res["y"], reference(dtype, logical, "float32")), target
        assert not any(is_code(v.dtype) for i in low.kernel.walk() for v in i.outputs)
    kb = KernelBuilder("narrow")
    x = kb.tensor_param("x", "u8", ["R", "B"])
    y = kb.tensor_param("y", "f32", ["R", "C"], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.cast(kb.view(kb.view(kb.load(x, [0, 0], [16, 6]), "uint3"), "uint2"), "f32"), [0, 0])
    with pytest.raises(CompileError, match="not whole groups of codes"):
        run_passes(kb.build(), parse_target("tvm:llvm"), ("select-dequant",))


@pytest.mark.parametrize("dtype", ["int3", "uint5", "float4_e2m1", "float8_e4m3fn"])
@pytest.mark.parametrize("out", ["int32", "int8", "bool"])
def test_casts_to_integers(dtype, out):
    codes = all_codes(dtype)
    npout = {"int32": np.int32, "int8": np.int8, "bool": bool}[out]
    vals = np.array([exact(dtype, int(c)) for c in codes.ravel()]).reshape(codes.shape)
    if out == "bool":
        want = vals.astype(np.float32) != 0
    else:
        info = np.iinfo(npout)
        want = np.clip(np.rint(np.nan_to_num(vals, nan=0.0)), info.min, info.max).astype(npout)
    _, res = run_lowered(cast_kernel(dtype, out), "tvm:llvm", None, {"x": codes, "y": np.zeros((16, 16), npout)})
    assert np.array_equal(res["y"], want)


def test_literal_codes_are_folded():
    """``other=cast(literal -> code)`` is encoded at compile time with the interpreter's encode."""
    kb = KernelBuilder("other")
    x = kb.tensor_param("x", "float4_e2m1", ["R", "C"])
    y = kb.tensor_param("y", "f32", ["R", "C"], intent="out")
    kb.set_grid(1)
    t = kb.load(x, [0, 0], [16, 16], other=kb.cast(kb.const(2.6), "float4_e2m1"))
    kb.store(y, kb.cast(t, "f32"), [0, 0])
    codes = all_codes("float4_e2m1", (9, 11))
    low = V.validate_pass(kb.build(), "lower-lowbit", "triton:sm_90", before=("infer-layouts",),
                          sizes={"R": 9, "C": 11}, args={"x": codes, "y": np.zeros((9, 11), np.float32)})
    out = V.run_kernel(low.kernel, {"x": codes, "y": np.zeros((9, 11), np.float32)}, low.param_formats,
                       {"R": 9, "C": 11})["y"]
    assert out.shape == (9, 11)                                        # edges: the interpreter clips the store


# ---------------------------------------------------------------------------------------------------- the rule
def test_rule_and_override():
    assert default_method("int4", "float16", "cuda") == "magic"
    assert default_method("int4", "float32", "cpu") == "top"     # its multiply leaves the dot's K loop
    assert default_method("int5", "bfloat16", "cpu") == "top"
    assert method_weight("int4", "float32", "arith", "cpu") < method_weight("int5", "float32", "arith", "cpu")
    assert default_method("int1", "float32", "cpu") == "lut"
    assert default_method("uint4", "float32", "cpu") == "arith"
    assert default_method("int4", "float16", "cpu") == "arith"
    assert default_method("float8_e5m2", "float16", "cpu") == "shift"
    assert default_method("float6_e3m2", "float16", "cuda") == "bits"
    assert select_method("uint4", "float16", "cpu", {"dequant": "magic"}) == "magic"
    assert select_method("uint4", "float16", "cuda", {"dequant": {"uint4": "arith"}}) == "arith"
    assert select_method("int2", "float16", "cuda", {"dequant": {"uint4": "arith"}}) == "magic"
    with pytest.raises(CompileError, match="cannot decode float6_e3m2") as err:
        select_method("float6_e3m2", "float16", "cpu", {"dequant": "magic"})
    assert "methods for float6_e3m2: bits" in str(err.value)


def test_direct_f16_only_where_every_value_fits():
    assert fits_f16("float8_e4m3fn") and fits_f16("float4_e2m1") and fits_f16("float6_e3m2")
    assert not fits_f16("float8_e5m2")                                  # five exponent bits: via f32 or shift
    assert not fits_f16("float7_e5m1") and not fits_f16("float8_e7m0")
    text = print_kernel(run_passes(cast_kernel("float6_e3m2", "float16"), parse_target("tvm:llvm"),
                                   ["lower-lowbit"]).kernel)
    assert "f32[" not in text and "view(" in text and "mul(" in text   # placed straight into f16, rebiased


# ---------------------------------------------------------------------------------------------------- lut
LUT_TYPES = tuple(t for t in CODE_TYPES if lowbit.dtype(t).nbits <= LUT_MAX_BITS)
LUT_CARRIERS = ("uint16", "uint32")                   # the selects of a lookup pick bit patterns


def count(kernel: n.Kernel, opcode: str, dtypes=None) -> int:
    return sum(1 for ins in kernel.walk() if ins.opcode == opcode and (dtypes is None or ins.result.dtype in dtypes))


def test_lut_is_offered_for_every_type_of_at_most_4_bits():
    assert len(LUT_TYPES) == 14 and "float2_e1m0" in LUT_TYPES and "uint4" in LUT_TYPES
    for t in CODE_TYPES:
        offered = "lut" in applicable_methods(t, "float16")
        assert offered == (lowbit.dtype(t).nbits <= 4), t
    assert select_method("float4_e2m1", "float16", "cuda", {"dequant": "lut"}) == "lut"
    assert select_method("uint4", "bfloat16", "cpu", {"dequant": {"uint4": "lut"}}) == "lut"
    with pytest.raises(CompileError, match="'lut' cannot decode uint5 into float16 .*at most 4 bits") as err:
        select_method("uint5", "float16", "cpu", {"dequant": "lut"})
    assert "methods for uint5: arith, magic" in str(err.value)


@pytest.mark.parametrize("dtype", LUT_TYPES)
def test_lut_is_a_select_tree_or_a_byte_table(dtype):
    """The shape of the lookup: 2**n - 1 selects over the codes (1-bit codes, uint4, whose f16 values need
    more than their high byte), else a byte table: 2**(n-2) words, 2**(n-2) - 1 selects, one variable shift."""
    nb = lowbit.dtype(dtype).nbits
    low = run_passes(cast_kernel(dtype, "float16"), parse_target("tvm:llvm"), ["lower-lowbit"],
                     options={"dequant": "lut"}).kernel
    values = np.array([exact(dtype, c) for c in range(1 << nb)], np.float64)
    f16 = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(values.astype(np.float16).astype(np.float64), values)   # every value is an exact f16
    if nb == 1 or np.any(f16 & 0xFF):
        assert lut_byte_table(dtype) is None and count(low, "where", LUT_CARRIERS) == 2 ** nb - 1
    else:
        words = lut_byte_table(dtype)
        assert len(words) == 2 ** (nb - 2) and count(low, "where", LUT_CARRIERS) == 2 ** (nb - 2) - 1
        table = np.array(words, "<u4").view(np.uint8).astype(np.uint16) << 8   # little-endian bytes
        assert np.array_equal(table, f16)
    assert count(low, "mul", ("float16", "float32")) == count(low, "sub", ("float16", "float32")) == 0


@pytest.mark.parametrize("dtype", LUT_TYPES)
def test_lut_on_scalar_codes(dtype):
    """Rank-0 codes (literals encoded at compile time: the type's min and max) decoded by the lookup."""
    d = lowbit.dtype(dtype)
    kb = KernelBuilder("scalar")
    y = kb.tensor_param("y", "f32", ["N"], intent="out")
    h = kb.tensor_param("h", "f16", ["N"], intent="out")
    kb.set_grid(1)
    for i, value in enumerate((float(d.min), float(d.max))):
        code = kb.cast(kb.const(value), dtype)
        kb.store(y, kb.full([1], kb.cast(code, "f32")), [i])
        kb.store(h, kb.full([1], kb.cast(code, "f16")), [i])
    want = [exact(dtype, int(d.encode(np.array([v]))[0])) for v in (float(d.min), float(d.max))]
    assert want == [float(d.min), float(d.max)]                                   # the independent decoder agrees
    low, res = run_lowered(kb.build(), "tvm:llvm", {"dequant": "lut"},
                           {"y": np.zeros(2, np.float32), "h": np.zeros(2, np.float16)}, ("select-dequant",))
    assert count(low.kernel, "where", LUT_CARRIERS) + count(low.kernel, "shr", ("uint32",)) >= 4  # table lookups
    assert V._bits_equal(res["y"], np.array(want, np.float32))
    assert V._bits_equal(res["h"], np.array(want, np.float16))


# ---------------------------------------------------------------------------------------------------- costs
def test_costs_are_counted_on_the_emitted_ir():
    """Hand counts of the sequences the module docstring describes."""
    assert dequant_cost("int1", "float16", "lut") == DequantCost(2, 1, 0)          # ge, where; view
    assert dequant_cost("uint4", "float32", "lut") == DequantCost(15 + 7, 1, 0)    # 15 selects, 4 bit tests
    assert dequant_cost("float2_e1m0", "float16", "lut") == DequantCost(4, 1, 0)   # shl, shr, shl, cast u16
    assert dequant_cost("float4_e2m1", "float16", "lut") == DequantCost(11, 1, 0)  # + 3 selects, 3 tests, and
    assert dequant_cost("float4_e2m1", "float16", "bits") == DequantCost(5, 3, 0)   # cast u16, shl, shr, and, mul
    assert dequant_cost("uint4", "float16", "magic") == DequantCost(3, 1, 0)       # cast u16, or, sub
    assert dequant_cost("int4", "float32", "arith") == DequantCost(3, 1, 1)        # shl, shr, cast; i32 reinterpret
    assert dequant_cost("int4", "float32", "arith").weight("cuda") == 6
    for t in LUT_TYPES:                                                            # bf16 = f32, then one cast
        for m in applicable_methods(t, "float32"):
            f32, bf16 = dequant_cost(t, "float32", m), dequant_cost(t, "bfloat16", m)
            assert (bf16.alu, bf16.free) == (f32.alu + 1, f32.free)


OLD_RULE = {"cuda": "magic", "cpu": "arith"}


def _tie_default(t: str, out: str, kind: str) -> str:
    """The method the rule falls back on (its ties): CUDA ``magic``; CPU ``top`` where it applies (signed codes
    of 2-8 bits into f32/bf16), else ``arith``; ``shift`` for e5m2, ``bits`` for other floats."""
    d = lowbit.dtype(t)
    if d.kind not in ("int", "uint"):
        return "shift" if t == "float8_e5m2" else "bits"
    return "top" if kind == "cpu" and "top" in applicable_methods(t, out) else OLD_RULE[kind]


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_the_rule_is_the_cheapest_method(kind):
    """The default has the least weighted cost; it differs from the tie defaults (CUDA magic; CPU top for signed
    codes into f32/bf16, else arith) only where another method is strictly cheaper: ``lut`` for 1-bit ints and
    float2_e1m0 -> f16 (and uint1 -> f16 on CUDA)."""
    changed = set()
    for t in CODE_TYPES:
        for out in OUTS:
            chosen = default_method(t, out, kind)
            costs = {m: method_weight(t, out, m, kind) for m in applicable_methods(t, out) if m != "table"}
            assert costs[chosen] == min(costs.values()), (t, out, kind, costs)
            old = _tie_default(t, out, kind)
            if chosen != old:
                assert costs[chosen] < costs[old], (t, out, kind, costs)
                changed.add((t, out, chosen))
    want = {("int1", o, "lut") for o in OUTS} | {("float2_e1m0", "float16", "lut")}   # bits 5 > 4; to f32 4 < 5
    if kind == "cuda":
        want.add(("uint1", "float16", "lut"))                                      # magic 3 > ge + where
    assert changed == want
    signed = [t for t in CODE_TYPES if lowbit.dtype(t).kind == "int" and lowbit.dtype(t).nbits >= 2]
    assert {default_method(t, o, kind) for t in signed for o in ("float32", "bfloat16")} == \
        {"cpu": {"top"}, "cuda": {"magic"}}[kind]


@pytest.mark.parametrize("entries", [2, 8, 16, 32])
def test_table_wins_where_the_target_has_a_register_table(entries):
    """With a register table of ``entries`` (32 on AVX-512 CPUs), every code of at most log2(entries) bits takes
    ``table`` (one ``lookup``, plus a cast where the values are not all exact in the output), wider codes keep the
    rule without it."""
    for t in CODE_TYPES:
        for out in OUTS:
            chosen = default_method(t, out, "cpu", table_entries=entries)
            if 1 << lowbit.dtype(t).nbits <= entries:
                assert chosen == "table", (t, out)
                c = dequant_cost(t, out, "table")
                assert c.convert == 0 and c.alu <= 2, (t, out, c)
            else:
                assert chosen == default_method(t, out, "cpu"), (t, out)


def test_table_register_entries_by_target():
    from lowbit.lowering.target import host_has_avx2, host_has_avx512, register_table_entries

    cpu = parse_target("tvm:llvm")
    assert register_table_entries(cpu, "float32") == (32 if host_has_avx512() else 8 if host_has_avx2() else 0)
    assert register_table_entries(cpu, "float16") == 0
    for t in ("triton:sm_90", "triton:cpu", "tvm:cuda:sm_90"):
        assert register_table_entries(parse_target(t), "float32") == 0


def _readme_cost_rows():
    text = (pathlib.Path(lowbit.lowering.passes.__file__).parent / "README.md").read_text()
    block = text.split("<!-- dequant-costs -->")[1]
    rows = [line.strip().strip("|").split("|") for line in block.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0]]
    return head, [[c.strip() for c in r] for r in rows[1:]]


def test_readme_cost_table_is_the_emitted_ir():
    """Every number of the README's table equals :func:`dequant_cost` (and the default columns the rule)."""
    head, rows = _readme_cost_rows()
    assert head == ["type", "out", "arith", "magic", "top", "bits", "lut", "CUDA", "CPU"]
    short = {"f16": "float16", "f32": "float32"}
    seen = set()
    for row in rows:
        t, out = row[0], short[row[1]]
        seen.add((t, out))
        for m, cell in zip(head[2:7], row[2:7]):
            if cell == "-":
                assert m not in applicable_methods(t, out), (t, out, m)
                continue
            c = dequant_cost(t, out, m)
            weights = f"{method_weight(t, out, m, 'cuda')}/{method_weight(t, out, m, 'cpu')}"
            want = f"{c.alu} ({weights})" if c.convert else f"{c.alu}"
            assert cell.replace("**", "") == want, (t, out, m, cell, want)
        assert row[7].replace("**", "") == default_method(t, out, "cuda"), (t, out)
        assert row[8].replace("**", "") == default_method(t, out, "cpu"), (t, out)
    assert seen == {(t, o) for t in LUT_TYPES for o in ("float16", "float32")}


# ---------------------------------------------------------------------------------------------------- backends
def lut_gemv(dtype: str, bk: int = 64, bn: int = 32) -> n.Kernel:
    """y[N] = sum_k x[k] * (w[k, :] dequantized to f16) * s[k // bk, :], one f32 partial sum per tile."""
    kb = KernelBuilder("lut_gemv")
    x = kb.tensor_param("x", "f32", ["K"])
    w = kb.tensor_param("w", dtype, ["K", "N"])
    s = kb.tensor_param("s", "f32", [f"cdiv(K, {bk})", "N"])
    y = kb.tensor_param("y", "f32", ["N"], intent="out")
    kb.set_grid(f"cdiv(N, {bn})")
    n0 = kb.mul(kb.program_id(0), bn, name="n0")
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bn], "f32", name="acc")], iv_name="k") as loop:
        k = loop.iv
        tx = kb.broadcast_to(kb.expand_dims(kb.load(x, [k], [bk], name="tx"), 1), [bk, bn])
        tw = kb.cast(kb.cast(kb.load(w, [k, n0], [bk, bn], name="tw"), "f16", name="deq"), "f32")
        ts = kb.broadcast_to(kb.load(s, [kb.floordiv(k, bk), n0], [1, bn], name="ts"), [bk, bn])
        part = kb.sum(kb.mul(kb.mul(tw, ts), tx), 0)
        loop.yield_([kb.add(loop.args[0], part)])
    kb.store(y, loop.results[0], [n0])
    return kb.build()


@pytest.mark.parametrize("backend", ["tvm", "triton"])
@pytest.mark.parametrize("dtype", ["int1", "float2_e1m0", "float4_e2m1", "uint4"])
def test_lut_gemv_through_the_backends(dtype, backend, tmp_path, monkeypatch):
    """A LUT-dequantized GEMV generated, compiled and run by TVM (LLVM) and Triton (its interpreter) equals
    lowbit.ir.interpret on the original kernel and an fp64 reference, bit for bit: inputs are small dyadic
    numbers, so every f32 sum is exact in any order."""
    torch = pytest.importorskip("torch")
    pytest.importorskip(backend)
    from lowbit.driver import compile_ir

    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    kk, nn = 128, 40                                                   # N: a partial tile (padded storage)
    rng = np.random.default_rng(7)
    nb = lowbit.dtype(dtype).nbits
    codes = rng.integers(0, 1 << nb, (kk, nn)).astype(np.uint8)
    args = {"x": rng.integers(-3, 4, kk).astype(np.float32), "w": codes,
            "s": (2.0 ** rng.integers(-1, 2, (kk // 64, nn))).astype(np.float32), "y": np.zeros(nn, np.float32)}
    kernel = lut_gemv(dtype)
    want = interpret(kernel, {k: v.copy() for k, v in args.items()})["y"]
    values = np.array([exact(dtype, c) for c in range(1 << nb)])[codes] * np.repeat(args["s"], 64, 0)
    assert np.array_equal(want, (args["x"].astype(np.float64) @ values).astype(np.float32))
    compiled = compile_ir(kernel, backend, options={"dequant": "lut"}, disk_cache=False)
    low = compiled.lowered.kernel
    int_to_float = [i for i in low.walk() if i.opcode == "cast" and i.x.dtype in ("int32", "uint32", "uint16")
                    and i.result.dtype.startswith("float")]
    assert not int_to_float and count(low, "mul", ("float16",)) == count(low, "sub", ("float16",)) == 0  # a lookup
    assert (count(low, "where", LUT_CARRIERS) > 0) == (nb == 1 or dtype == "uint4" or nb > 2)
    targs = {k: torch.from_numpy(np.ascontiguousarray(compiled.param_formats[k].pack(v) if k == "w" else v.copy()))
             for k, v in args.items()}
    compiled.launch(targs, shape_bindings={"K": kk, "N": nn})
    assert np.array_equal(targs["y"].numpy(), want)
