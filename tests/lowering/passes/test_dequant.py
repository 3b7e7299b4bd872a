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
from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, interpret, print_kernel
from lowbit.ir import nodes as n
from lowbit.ir.types import is_code
from lowbit.lowering.passes import run_passes
from lowbit.lowering.passes.dequant import applicable_methods, default_method, fits_f16, select_method
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
    assert default_method("int4", "float32", "cpu") == "arith"
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
