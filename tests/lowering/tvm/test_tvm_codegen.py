"""The TVM code generator: IR kernels compiled for the CPU and run, against lowbit.ir.interpret.

Integers and every elementwise float result must match the interpreter bit for bit (the generator
reproduces its per-instruction rounding). Where the two legitimately differ - the order of a float
summation (numpy sums pairwise, the generated loops sequentially), libm versus LLVM's ``exp``/``log`` -
each test states the bound it uses and where it comes from.
"""
from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

from lowbit.errors import BackendError, CompileError, DTypeError  # noqa: E402
from lowbit.ir import KernelBuilder, interpret  # noqa: E402
from lowbit.ir.symbolic import dim_eval  # noqa: E402
from lowbit.ir.types import is_native, numpy_dtype  # noqa: E402
from lowbit.lowering.tvm.codegen import emit_tvm  # noqa: E402
from lowbit.lowering.tvm.launcher import build_tvm, load_tvm_kernel  # noqa: E402
from lowbit.lowering.tvm.target import host_cpu  # noqa: E402

U32 = 2.0 ** -24          # float32 unit roundoff
F16_ULP = 2.0 ** -10      # float16 spacing relative to the value (upper bound, normal range)

_CACHE: dict[str, object] = {}


@pytest.fixture(scope="module")
def built(K):
    """``built(name, builder, *args)``: build once per session (TVM builds cost 0.1-1 s each)."""

    def get(key: str, make):
        if key not in _CACHE:
            kernel = make()
            _CACHE[key] = (kernel, build_tvm(kernel, "cpu"))
        return _CACHE[key]

    return get


def _random(shape, dtype: str, rng, scale: float = 1.0):
    dt = numpy_dtype(dtype)
    if dtype in ("float32", "float16", "bfloat16"):
        return (rng.standard_normal(shape) * scale).astype(np.float32).astype(dt)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dt)


def _args(kernel, sizes, rng, scalars=None, overrides=None):
    args = {}
    for p in kernel.params:
        t = p.value.type
        if t.scope == "global":
            shape = tuple(dim_eval(d, sizes) for d in t.shape)
            args[p.name] = _random(shape, t.dtype, rng)
        else:
            args[p.name] = (scalars or {})[p.name]
    args.update(overrides or {})
    return args


def _run_both(kernel, compiled, args, shape_bindings=None):
    """(interpreter results, TVM results) on copies of the same arguments."""
    ref = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    out = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    interpret(kernel, ref, shape_bindings=shape_bindings)
    compiled.launch(out, shape_bindings=shape_bindings)
    return ref, out


def _assert_bits_equal(a: np.ndarray, b: np.ndarray, what: str = ""):
    """Same values bit for bit (NaN payloads aside): compares the raw bits of floats."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16:
        both_nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
        ua = a.view(np.uint16 if a.itemsize == 2 else np.uint32)
        ub = b.view(np.uint16 if b.itemsize == 2 else np.uint32)
        bad = (ua != ub) & ~both_nan
    else:
        bad = a != b
    assert not bad.any(), f"{what}: {int(bad.sum())} differ, first at {np.argwhere(bad)[0]}: {a[bad][0]} vs {b[bad][0]}"


# ----------------------------------------------------------------------------------------------------
# whole kernels
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1000, 64, 1])
def test_vector_add_odd_length_is_exact(K, built, rng, n):
    kernel, ck = built("vadd_f32", K.build_vector_add)
    ref, out = _run_both(kernel, ck, _args(kernel, {"N": n}, rng))
    _assert_bits_equal(out["out"], ref["out"], "out")
    assert "T.parallel" in ck.text and "T.vectorized" in ck.text     # programs in parallel, lanes vectorized


def test_vector_add_f16_rounds_once_per_op(K, built, rng):
    kernel, ck = built("vadd_f16", lambda: K.build_vector_add("f16"))
    args = _args(kernel, {"N": 333}, rng)
    args["x"] = (args["x"].astype(np.float32) * 1000).astype(np.float16)
    ref, out = _run_both(kernel, ck, args)
    _assert_bits_equal(out["out"], ref["out"], "out")


@pytest.mark.parametrize("m,n", [(37, 50), (8, 64), (1, 1)])
def test_row_softmax(K, built, rng, m, n):
    kernel, ck = built("softmax", K.build_row_softmax)
    ref, out = _run_both(kernel, ck, _args(kernel, {"M": m, "N": n}, rng, overrides={
        "x": (rng.standard_normal((m, n)) * 3).astype(np.float32)}))
    # exp differs by <= 2 ulp between libm and numpy, each row sum by <= n ulp (summation order), the
    # division rounds once: per element |tvm - interp| <= 2 (n + 4) 2^-24 |interp|
    np.testing.assert_allclose(out["out"], ref["out"], rtol=2 * (n + 4) * U32, atol=0)


@pytest.mark.parametrize("dtype,shared", [("f16", False), ("f32", False), ("f16", True)])
@pytest.mark.parametrize("m,n,k", [(37, 45, 70), (16, 32, 16), (3, 5, 7)])
def test_gemm_k_loop_and_edges(K, built, rng, dtype, shared, m, n, k):
    kernel, ck = built(f"gemm_{dtype}_{shared}", lambda: K.build_gemm(dtype, shared=shared))
    ref, out = _run_both(kernel, ck, _args(kernel, {"M": m, "N": n, "K": k}, rng))
    a64 = np.abs(ref["a"].astype(np.float64))
    b64 = np.abs(ref["b"].astype(np.float64))
    # both accumulate k products in float32 (in different orders): each is within k 2^-24 (|a| @ |b|) of
    # the exact sum, so they differ by at most twice that; an f16 output adds one rounding of either side
    bound = 2 * k * U32 * (a64 @ b64)
    c_ref = ref["c"].astype(np.float64)
    if dtype == "f16":
        bound = bound + F16_ULP * np.abs(c_ref) + 2.0 ** -24
    err = np.abs(out["c"].astype(np.float64) - c_ref)
    assert np.all(err <= bound), float(np.max(err - bound))


def test_gemm_accumulator_is_updated_in_place(K, built):
    """The dot in the K loop updates the loop-carried accumulator itself (no result buffer and no copy of
    the tile per step): block by block of rows, through a small register block (``acc_1_blk``) that is
    read from and written back to the accumulator around the block's K loop."""
    _, ck = built("gemm_f32_False", lambda: K.build_gemm("f32"))
    assert "dot = T.alloc_buffer" not in ck.text
    loop_body = ck.text.split("for it", 1)[1]
    assert re.search(r"acc_1_blk\[bx\w+, .+\] = acc_1\[", loop_body)                 # block in
    assert re.search(r"acc_1_blk\[(fx\w+), (.+)\] = \(acc_1_blk\[\1, \2\] \+", loop_body)
    assert re.search(r"acc_1\[.+\] = acc_1_blk\[dx\w+, .+\]", loop_body)              # block out
    cuda_text = emit_tvm(K.build_gemm("f32"), "sm_90").text     # not on CUDA (a separate result buffer)
    assert "dot = T.alloc_buffer" in cuda_text


@pytest.mark.parametrize("k,n", [(96, 45), (64, 32), (128, 8)])
def test_packed_w4_gemv_with_group_scales(K, built, rng, k, n):
    kernel, ck = built("gemv", K.build_packed_w4_gemv)
    codes = rng.integers(0, 16, size=(k, n)).astype(np.uint8)
    nw = -(-n // 8)
    padded = np.zeros((k, nw * 8), np.uint32)
    padded[:, :n] = codes
    words = np.bitwise_or.reduce(padded.reshape(k, nw, 8) << (4 * np.arange(8, dtype=np.uint32)), axis=2)
    args = {"x": rng.standard_normal(k).astype(np.float32), "wp": words.astype(np.uint32),
            "s": (rng.random((k // 32, n)) * 0.1 + 0.01).astype(np.float16), "y": np.zeros(n, np.float32)}
    ref, out = _run_both(kernel, ck, args, shape_bindings={"N": n})
    # identical products (the generator keeps every f32 multiply rounded, like the interpreter); only the
    # order of the k-term f32 sums differs: |tvm - interp| <= 2 k 2^-24 sum_k |x w|
    w = (codes.astype(np.float64) - 8) * np.repeat(args["s"].astype(np.float64), 32, axis=0)
    bound = 2 * k * U32 * (np.abs(args["x"].astype(np.float64)) @ np.abs(w))
    assert np.all(np.abs(out["y"].astype(np.float64) - ref["y"]) <= bound)
    # and the interpreter itself against fp64 numpy on the decoded weights (sanity of the test kernel)
    np.testing.assert_allclose(ref["y"], args["x"].astype(np.float64) @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seq", [77, 16, 1])
def test_decode_attention_online_softmax(K, built, rng, seq):
    kernel, ck = built("attn", K.build_decode_attention)
    args = _args(kernel, {"H": 3, "S": seq}, rng, scalars={"sm_scale": 1 / np.sqrt(32)})
    ref, out = _run_both(kernel, ck, args)
    # probabilities are rounded to f16 before the second dot: a 1-ulp f32 difference in exp can flip one
    # f16 rounding (2^-11 relative per term), so outputs agree to a few f16 ulps of the largest output
    tol = 4 * 2.0 ** -11 * np.abs(ref["out"].astype(np.float64)).max()
    assert np.all(np.abs(out["out"].astype(np.float64) - ref["out"].astype(np.float64)) <= tol)


def test_if_with_results_and_scalar_param(K, built, rng):
    kernel, ck = built("branchy", K.build_branchy)
    args = {"x": np.arange(30, dtype=np.int32) * 1000003, "out": np.zeros(30, np.int32), "bias": 2**31 - 5}
    ref, out = _run_both(kernel, ck, args)
    _assert_bits_equal(out["out"], ref["out"])
    assert "if " in ck.text and "else:" in ck.text


def test_loops_carried_scalars_steps_and_zero_trips(K, built):
    kernel, ck = built("loops", K.build_loops)
    for n in (0, 1, 7):
        ref, out = _run_both(kernel, ck, {"out": np.zeros(8, np.int32), "n": n})
        _assert_bits_equal(out["out"], ref["out"], f"n={n}")


@pytest.mark.parametrize("n", [10, 20])
def test_explicit_masks_other_and_unchecked_axes(K, built, n):
    kernel, ck = built("masked", K.build_masked)
    args = {"x": np.arange(n, dtype=np.float32), "y": np.full(n, 99, np.float32), "z": np.full(n, 7, np.float32)}
    ref, out = _run_both(kernel, ck, args)
    for name in ("y", "z"):
        _assert_bits_equal(out[name], ref[name], name)


def test_shared_memory_store_load_and_if_without_else(K, built, rng):
    kernel, ck = built("shared_roundtrip", K.build_shared_roundtrip)
    args = {"x": rng.standard_normal((3, 16, 8)).astype(np.float32), "out": np.zeros((3, 8, 16), np.float32),
            "flag": np.zeros(4, np.int32)}
    ref, out = _run_both(kernel, ck, args)
    for name in ("out", "flag"):
        _assert_bits_equal(out[name], ref[name], name)
    np.testing.assert_array_equal(out["out"], args["x"].transpose(0, 2, 1) + 3)   # P = 3 programs


# ----------------------------------------------------------------------------------------------------
# integer and float semantics
# ----------------------------------------------------------------------------------------------------

_EDGES = {"int32": [-2**31, 2**31 - 1, -1, 0, 1, -7, 7, 46341, -46341, 65536],
          "int8": [-128, 127, -1, 0, 1, -7, 7, 64, -64, 100],
          "uint8": [0, 255, 1, 128, 127, 7, 200, 16, 2, 254],
          "int16": [-32768, 32767, -1, 0, 1, 181, -181, 256, -300, 7]}
_INT_OPS = ("add", "sub", "mul", "floordiv", "mod", "minimum", "maximum", "and", "or", "xor", "eq", "ne", "lt",
            "le", "gt", "ge")


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "int16"])
def test_integer_ops_wrap_exactly(K, built, rng, dtype):
    unary = ("u_neg", "u_abs", "u_not") if dtype.startswith("int") else ("u_not",)
    kernel, ck = built(f"ew_{dtype}", lambda: K.build_elementwise(dtype, _INT_OPS + unary, n=128))
    edges = np.array(_EDGES[dtype], dtype=dtype)
    a = np.concatenate([np.repeat(edges, 10), _random(28, dtype, rng)]).astype(dtype)
    b = np.concatenate([np.tile(edges, 10), _random(28, dtype, rng)]).astype(dtype)
    b[b == 0] = 3                                   # integer division by zero is undefined in the IR
    args = {p.name: np.zeros(128, numpy_dtype(p.value.dtype)) for p in kernel.params}
    args.update(a=a, b=b)
    ref, out = _run_both(kernel, ck, args)
    for p in kernel.params:
        _assert_bits_equal(out[p.name], ref[p.name], p.name)


@pytest.mark.parametrize("dtype", ["int32", "uint32", "int8", "uint16"])
def test_shifts_arithmetic_and_logical(K, built, rng, dtype):
    kernel, ck = built(f"shifts_{dtype}", lambda: K.build_shifts(dtype))
    bits = np.iinfo(dtype).bits
    args = {"a": _random(64, dtype, rng), "s": rng.integers(0, bits, size=64).astype(dtype),
            "o_shl": np.zeros(64, dtype), "o_shr": np.zeros(64, dtype)}
    ref, out = _run_both(kernel, ck, args)
    _assert_bits_equal(out["o_shl"], ref["o_shl"], "shl")
    _assert_bits_equal(out["o_shr"], ref["o_shr"], "shr")


_FLOAT_OPS = ("add", "sub", "mul", "div", "minimum", "maximum", "eq", "ne", "lt", "ge", "u_neg", "u_abs",
              "u_floor", "u_ceil", "u_sqrt", "u_rsqrt")
_SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.5, 65504.0, 1e-8, 3.0]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_float_elementwise_is_bit_exact(K, built, rng, dtype):
    kernel, ck = built(f"ew_{dtype}", lambda: K.build_elementwise(dtype, _FLOAT_OPS, n=128))
    special = np.array(_SPECIAL, np.float32)
    a = np.concatenate([np.repeat(special, 10), rng.standard_normal(28) * 100]).astype(np.float32)
    b = np.concatenate([np.tile(special, 10), rng.standard_normal(28)]).astype(np.float32)
    dt = numpy_dtype(dtype)
    args = {p.name: np.zeros(128, numpy_dtype(p.value.dtype)) for p in kernel.params}
    args.update(a=a.astype(dt), b=b.astype(dt))
    with np.errstate(all="ignore"):
        ref, out = _run_both(kernel, ck, args)
    for p in kernel.params:
        _assert_bits_equal(out[p.name], ref[p.name], p.name)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_functions_within_ulps(K, built, rng, dtype):
    ops = ("u_exp", "u_exp2", "u_log", "u_log2", "u_tanh", "u_sigmoid")
    kernel, ck = built(f"fn_{dtype}", lambda: K.build_elementwise(dtype, ops, n=512))
    dt = numpy_dtype(dtype)
    a = np.concatenate([rng.standard_normal(250) * 4, np.abs(rng.standard_normal(250)) * 20,
                        [0, -0.0, np.inf, -np.inf, np.nan, 1e-30, 1e-6, -1e-4, 10, -10, 88, 1]]).astype(dt)
    args = {p.name: np.zeros(512, dt) for p in kernel.params}
    args.update(a=a, b=a.copy())
    with np.errstate(all="ignore"):
        ref, out = _run_both(kernel, ck, args)
    for op in ops:
        x, y = out[f"out_{op}"].astype(np.float64), ref[f"out_{op}"].astype(np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        # libm (numpy) and LLVM's math functions are each within ~2 ulp of exact: allow 4 ulp apart
        ulp = np.spacing(np.abs(y[np.isfinite(y)]).astype(dt)).astype(np.float64)
        close = np.abs(x[np.isfinite(y)] - y[np.isfinite(y)]) <= 4 * ulp
        assert same[~np.isfinite(y)].all(), op
        assert close.all(), (op, a[np.isfinite(y)][~close][:3])


def test_float32_exp_is_vector_arithmetic_within_an_ulp_or_two_everywhere(K, built):
    """On CPUs ``exp`` (and ``sigmoid``) of float32 are polynomial vector code, not an ``expf`` call per element:
    a dense sweep over the whole range against float64, normal results within 2 ulp, subnormal results within
    one step of the subnormals, 0 below ``ln(2^-150)``, infinity above ``ln(FLT_MAX)``, NaN kept."""
    n = 4096
    kernel, ck = built("exp_sweep", lambda: K.build_elementwise("float32", ("u_exp",), n=n))
    sweep = np.linspace(-110.0, 95.0, n - 8)
    a = np.concatenate([sweep, [88.72283, 88.72284, -103.97208, -103.27893, np.inf, -np.inf, np.nan, -0.0]])
    a = a.astype(np.float32)
    args = {p.name: np.zeros(n, np.float32) for p in kernel.params}
    args.update(a=a, b=a.copy())
    assert "T.exp(" not in ck.text
    out = {k: v.copy() for k, v in args.items()}
    ck.launch(out)
    got = out["out_u_exp"].astype(np.float64)
    with np.errstate(all="ignore"):
        exact = np.exp(a.astype(np.float64))
        want = exact.astype(np.float32).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    normal = np.isfinite(want) & (want >= 2.0 ** -126)
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    far = np.abs(got[normal] - exact[normal]) > 2 * ulp
    assert not far.any(), a[normal][far][:4]
    tiny = np.isfinite(want) & (want < 2.0 ** -126)
    assert (np.abs(got[tiny] - exact[tiny]) <= 2.0 ** -149).all()


_CAST_F32 = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 127.5, 128.0, -128.5, -129.0, 255.5, 256.0, 1e10, -1e10,
                      np.nan, np.inf, -np.inf, -0.0, 65519.0, 65520.0, 1e-8, 6.1e-5, 2.0**-24 * 1.5,
                      float(np.float32(1 + 2.0**-11)), float(np.float32(1 + 3 * 2.0**-11)),
                      float(np.float32(1 + 2.0**-8)), float(np.float32(1 + 3 * 2.0**-8)), 2147483520.0,
                      2147483648.0, 4294967040.0, 4294967296.0, 3.999, -3.999] * 2, np.float32)


def test_casts_from_float32_round_and_saturate(K, built):
    dsts = ("f16", "bf16", "i8", "u8", "i16", "i32", "u32", "bool")
    kernel, ck = built("casts_f32", lambda: K.build_casts("f32", dsts, n=64))
    args = {p.name: np.zeros(64, numpy_dtype(p.value.dtype)) for p in kernel.params}
    args["x"] = _CAST_F32
    with np.errstate(all="ignore"):
        ref, out = _run_both(kernel, ck, args)
    for p in kernel.params:
        _assert_bits_equal(out[p.name], ref[p.name], p.name)
    # independent spot checks of the rules (RNE ties to even, saturation, NaN -> 0, ml_dtypes for bf16)
    assert list(out["out_i8"][:10]) == [0, 2, 2, 0, -2, 127, 127, -128, -128, 127]
    np.testing.assert_array_equal(out["out_bf16"].view(np.uint16), _CAST_F32.astype(ml_dtypes.bfloat16).view(np.uint16))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out["out_f16"].view(np.uint16), _CAST_F32.astype(np.float16).view(np.uint16))


def test_bf16_roundings_kept_in_registers(built):
    """Every bf16 result rounds (ml_dtypes: to nearest, ties to even; NaN to the quiet NaN of its sign) even
    when it never reaches memory: TVM's bf16 legalization computes bf16 values in f32 and drops the rounding
    of a ``Cast`` to bf16 that feeds another expression, so the code generator rounds on the bits first.
    Chains of bf16 arithmetic, a round trip through bf16, and int32 / float16 -> bf16 feeding an add, each
    checked step by step against ml_dtypes, on values that round (ties, carries into the exponent, overflow
    to infinity, subnormals, NaN)."""
    bf16 = ml_dtypes.bfloat16

    def make():
        kb = KernelBuilder("bf16_registers")
        x, y, z = (kb.tensor_param(name, "bf16", [64]) for name in "xyz")
        w = kb.tensor_param("w", "f32", [64])
        i = kb.tensor_param("i", "i32", [64])
        h = kb.tensor_param("h", "f16", [64])
        outs = {name: kb.tensor_param(name, "f32", [64]) for name in ("chain", "trip", "exp", "ints", "halves")}
        tx, ty, tz = (kb.load(t, [0], [64]) for t in (x, y, z))
        tw = kb.load(w, [0], [64], name="tw")
        chain = kb.mul(kb.add(kb.add(tx, ty), tz), ty)
        kb.store(outs["chain"], kb.cast(chain, "f32"), [0])
        kb.store(outs["trip"], kb.cast(kb.cast(tw, "bf16"), "f32"), [0])
        kb.store(outs["exp"], kb.cast(kb.add(kb.exp(tz), tx), "f32"), [0])
        kb.store(outs["ints"], kb.cast(kb.add(kb.cast(kb.load(i, [0], [64]), "bf16"), tz), "f32"), [0])
        kb.store(outs["halves"], kb.cast(kb.add(kb.cast(kb.load(h, [0], [64]), "bf16"), tz), "f32"), [0])
        return kb.build()

    _, ck = built("bf16_registers", make)
    rng = np.random.default_rng(3)
    x = np.ones(64, np.float32)
    x[:8] = [np.nan, np.inf, 3.3e38, -3.3e38, 2.0 ** -130, 1.0, -1.0, 256.0]
    y = rng.standard_normal(64).astype(np.float32) * 2.0 ** -8     # below x's half ulp: the sums round
    z = rng.standard_normal(64).astype(np.float32) * 2.0 ** -9
    w = rng.standard_normal(64).astype(np.float32)
    w[:6] = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, np.float32(3.3961776e38), -np.nan, 2.0 ** -133,
             1 + 2.0 ** -8 + 2.0 ** -20]
    ints = rng.integers(-2 ** 31, 2 ** 31, 64, dtype=np.int64).astype(np.int32)
    ints[:3] = [2 ** 24 + 2 ** 16 + 1, 257, -(2 ** 31)]
    halves = (rng.standard_normal(64) * 300).astype(np.float16)
    args = {"x": x.astype(bf16), "y": y.astype(bf16), "z": z.astype(bf16), "w": w, "i": ints, "h": halves}
    args.update({name: np.zeros(64, np.float32) for name in ("chain", "trip", "exp", "ints", "halves")})
    ck.launch(args)

    def r(v):      # one rounding to bf16 of float32 values, back to float32
        return np.asarray(v, np.float32).astype(bf16).astype(np.float32)

    m, e = np.frexp(ints.astype(np.float64))      # int32 -> bf16 rounds once, from the exact integer
    int_bf16 = np.ldexp(np.rint(np.ldexp(m, 8)), e - 8).astype(np.float32)
    bx, by, bz = (args[k].astype(np.float32) for k in "xyz")
    with np.errstate(all="ignore"):
        want = {"chain": r(r(r(bx + by) + bz) * by), "trip": r(w), "exp": r(r(np.exp(bz)) + bx),
                "ints": r(int_bf16 + bz), "halves": r(r(halves.astype(np.float32)) + bz)}
    for name, expect in want.items():
        np.testing.assert_array_equal(args[name].view(np.uint32), expect.view(np.uint32), err_msg=name)


@pytest.mark.parametrize("src", ["i32", "u32", "i8", "u16"])
def test_casts_from_integers(K, built, rng, src):
    dsts = ("f16", "bf16", "f32", "i8", "u8", "bool")
    kernel, ck = built(f"casts_{src}", lambda: K.build_casts(src, dsts, n=64))
    sdt = numpy_dtype(kernel.params[0].value.dtype)
    info = np.iinfo(sdt)
    # 2^24 + 2^16 + 1: float32 rounds to a bf16 tie (double rounding would then pick the even side)
    edge = [v for v in (0, 1, -1, info.min, info.max, 2**24 + 2**16 + 1, -(2**24 + 2**16 + 1), 65519, 65520,
                        2**24 + 1, 255, 256, -129) if info.min <= v <= info.max]
    x = np.concatenate([np.array(edge, dtype=np.int64), rng.integers(info.min, info.max, 64, endpoint=True)])[:64]
    args = {p.name: np.zeros(64, numpy_dtype(p.value.dtype)) for p in kernel.params}
    args["x"] = x.astype(sdt)
    ref, out = _run_both(kernel, ck, args)
    for p in kernel.params:
        _assert_bits_equal(out[p.name], ref[p.name], p.name)
    # bf16 must be the correctly rounded value of the exact integer (checked with fractions-free fp64)
    exact = args["x"].astype(np.float64)
    m, e = np.frexp(exact)
    expect = np.ldexp(np.rint(np.ldexp(m, 8)), e - 8)
    np.testing.assert_array_equal(out["out_bf16"].astype(np.float64), expect)


def test_bit_views(K, built, rng):
    kernel, ck = built("views", K.build_views)
    args = {p.name: np.zeros(tuple(dim_eval(d, {}) for d in p.value.type.shape), numpy_dtype(p.value.dtype))
            for p in kernel.params}
    args["f"] = np.array([1.0, -2.5, np.nan, np.inf, -0.0, 3e-40] + list(rng.standard_normal(10)), np.float32)
    args["h"] = rng.standard_normal(16).astype(np.float16)
    ref, out = _run_both(kernel, ck, args)
    for p in kernel.params:
        _assert_bits_equal(out[p.name], ref[p.name], p.name)
    np.testing.assert_array_equal(out["o_u8"], args["f"].view(np.uint8))          # little-endian bytes


@pytest.mark.parametrize("n", [40, 16, 64])
@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_reductions(K, built, rng, dtype, n):
    """Row lengths: 40 (8 lanes, 5 partial sums each), 16 (one vector per row: its lanes combined directly)
    and 64 (16 lanes: a four-step pairwise combine)."""
    kernel, ck = built(f"reduce_{dtype}_{n}", lambda: K.build_reductions(dtype, n=n))
    args = {p.name: np.zeros(tuple(dim_eval(d, {}) for d in p.value.type.shape), numpy_dtype(p.value.dtype))
            for p in kernel.params}
    args["x"] = _random((6, n), kernel.params[0].value.dtype, rng, scale=10)
    if dtype != "i8":
        args["x"][2, 7] = np.nan                                    # max/min/sum propagate NaN
        args["x"][4, n - 1] = -np.inf                               # the last lane of a row: min is -inf
    with np.errstate(all="ignore"):
        ref, out = _run_both(kernel, ck, args)
    x64 = np.abs(args["x"].astype(np.float64))
    for p in kernel.params[1:]:
        a, b = out[p.name], ref[p.name]
        if dtype == "i8" or not p.name.startswith(("sum", "total")):
            _assert_bits_equal(a, b, p.name)                      # wrapping int sums, max, min: exact
            continue
        # float sums: f32 accumulation in another order, <= 2 n 2^-24 sum|x|, plus the f16 rounding
        axis = {"sum0": 0, "sum1": 1, "total": None}[p.name]
        n = x64.size if axis is None else x64.shape[axis]
        bound = 2 * n * U32 * np.nansum(x64, axis=axis, keepdims=axis == 1).reshape(b.shape)
        if dtype == "f16":
            bound = bound + F16_ULP * np.abs(b.astype(np.float64))
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert np.array_equal(np.isnan(a64), np.isnan(b64)), p.name
        with np.errstate(invalid="ignore"):
            ok = np.isnan(b64) | (a64 == b64) | (np.abs(a64 - b64) <= bound)     # (a == b: the -inf sums)
        assert ok.all(), p.name


def test_one_vector_rows_reduced_straight_from_a_checked_load(built, rng):
    """Rows of 16 f32 (one vector) summed and maximized straight from a load whose tile runs past the tensor
    (rows 5-7 of 8: the checked path reads its zeros), and from one that fits (the fast path): equal to the
    interpreter (max exactly, sums within the f32 bound)."""
    from lowbit.ir import KernelBuilder

    def make():
        kb = KernelBuilder("row_reduce16")
        x = kb.tensor_param("x", "f32", ["M", 16])
        row = kb.scalar_param("row", "i32")
        outs = [kb.tensor_param(name, "f32", [8]) for name in ("sums", "maxima")]
        for out, op in zip(outs, ("sum", "max")):       # a load per reduction: each read lazily, in the reduction
            kb.store(out, kb.reduce(op, kb.load(x, [row, 0], [8, 16]), 1), [0])
        return kb.build()

    kernel, ck = built("row_reduce16", make)
    for m, row in ((5, 0), (12, 3)):
        x = (rng.standard_normal((m, 16)) * 10).astype(np.float32)
        args = {"x": x, "row": np.int32(row), "sums": np.zeros(8, np.float32), "maxima": np.zeros(8, np.float32)}
        ref, out = _run_both(kernel, ck, args, shape_bindings={"M": m})
        _assert_bits_equal(out["maxima"], ref["maxima"], f"max, M={m}")
        bound = 2 * 16 * U32 * np.abs(np.pad(x, ((0, 8), (0, 0)))[row:row + 8]).sum(1)
        assert (np.abs(out["sums"].astype(np.float64) - ref["sums"]) <= bound).all(), m


def test_short_dot_loops_are_unrolled_and_rows_reduced_together(K, built, request):
    """Two loops LLVM compiled badly inside decode attention's page loop. The K loop of a dot over a plain tile of
    at most 16 rows is unrolled (as a loop, its 16 sums were stored and reloaded on every step). The rows of a
    reduction over lanes are folded together by shuffles (:mod:`lowbit.lowering.tvm.row_fold`): row by row in a
    loop, LLVM's vectorizer had run across the rows with a gather of one lane per row at every halving step.
    Results: the same sums in the same order (the interpreter comparisons of the reduction tests)."""
    _, ck = built("gemm_f32_False", lambda: K.build_gemm("f32"))           # a [16, 16] x [16, 32] dot per K tile
    assert re.search(r"for cx\w+ in T\.unroll\(16\):", ck.text)
    request.getfixturevalue("avx512_bf16_host")                             # a row of 16 lanes is one vector
    kb = KernelBuilder("rows_max")
    x = kb.tensor_param("x", "f32", [8, 16])
    out = kb.tensor_param("m", "f32", [8], intent="out")
    kb.store(out, kb.reduce("max", kb.load(x, [0, 0], [8, 16]), 1), [0])
    fast = emit_tvm(kb.build(), "cpu").text.split("else:")[0]
    assert fast.count("T.Shuffle(") == 16 and fast.count("T.isnan(") == 8      # 7 merges and 1 fold
    assert re.search(r"for \w+ in T\.vectorized\(8\):\s+max\[\w+\] = ", fast)      # one vector of 8 results


@pytest.mark.parametrize("x_dtype", ["bf16", "f16"])
def test_dot_of_16_bit_activations_converts_them_once(built, rng, x_dtype):
    """A dot whose ``a`` is a cast of 16-bit floats reads it from an f32 buffer filled by one vectorized
    conversion, not by a scalar conversion and broadcast per row and K step: every sum within the f32 bound of
    the float64 dot of the same values, edges of M included."""
    def make():
        kb = KernelBuilder(f"act_dot_{x_dtype}")
        x = kb.tensor_param("x", x_dtype, ["M", 64])
        w = kb.tensor_param("w", "f32", [64, 32])
        out = kb.tensor_param("out", "f32", ["M", 32], intent="out")
        kb.set_grid("cdiv(M, 4)")
        m0 = kb.mul(kb.program_id(0), 4, name="m0")
        a = kb.cast(kb.load(x, [m0, 0], [4, 64], name="xt"), "f32", name="xf")
        kb.store(out, kb.dot(a, kb.load(w, [0, 0], [64, 32]), kb.zeros([4, 32], "f32")), [m0, 0])
        return kb.build()

    kernel, ck = built(f"act_dot_{x_dtype}", make)
    assert re.search(r"xf_f32 = T\.alloc_buffer\(\(4, 64\), \"float32\"", ck.text)
    assert re.search(r"for \w+ in T\.vectorized\(\d+\):\s+xf_f32\[", ck.text)
    for m in (8, 6):
        args = {"x": _random((m, 64), {"bf16": "bfloat16", "f16": "float16"}[x_dtype], rng), "w": _random((64, 32), "float32", rng),
                "out": np.zeros((m, 32), np.float32)}
        ck.launch(args, shape_bindings={"M": m})
        x64 = args["x"].astype(np.float64)
        exact, bound = x64 @ args["w"], 2 * 64 * U32 * (np.abs(x64) @ np.abs(args["w"].astype(np.float64)))
        assert np.all(np.abs(args["out"] - exact) <= bound), m


@pytest.mark.parametrize("zero_acc", [True, False])
def test_a_power_of_two_factor_of_b_moves_to_a(built, rng, zero_acc):
    """A CPU dot of ``a`` and ``c * 2^-5`` (as the ``top`` dequant emits: ``c`` the codes at the top of a word)
    multiplies each element of ``a`` by 2^-5 (staged once) instead of each element of ``b``: the
    same products, so the bits of the same dot on ``b`` scaled beforehand (a kernel without the factor), and
    within the f32 bound of the float64 dot. A factor above 1 stays on ``b`` (it may rebias a subnormal)."""
    def make(factor: float | None):
        def build():
            kb = KernelBuilder(f"pow2_dot_{zero_acc}_{factor}")
            x = kb.tensor_param("x", "f32", [8, 64])
            w = kb.tensor_param("w", "f32", [64, 32])
            acc = kb.tensor_param("acc", "f32", [8, 32])
            out = kb.tensor_param("out", "f32", [8, 32], intent="out")
            kb.set_grid(1)
            b = kb.load(w, [0, 0], [64, 32])
            if factor is not None:
                b = kb.mul(b, kb.full([64, 32], factor, "f32"))
            start = kb.zeros([8, 32], "f32") if zero_acc else kb.load(acc, [0, 0], [8, 32])
            kb.store(out, kb.dot(kb.load(x, [0, 0], [8, 64]), b, start), [0, 0])
            return kb.build()
        return built(f"pow2_dot_{zero_acc}_{factor}", build)[1]

    factored, plain, above = make(2.0 ** -5), make(None), make(2.0 ** 5)
    assert re.search(r"= x\[[^]]*\] \* T\.float32\(0\.03125\)", factored.text)          # on a's elements
    assert not re.search(r"= x\[[^]]*\] \* T\.float32\(32\.0\)", above.text)
    args = {"x": _random((8, 64), "float32", rng), "w": _random((64, 32), "float32", rng) * 64,
            "acc": _random((8, 32), "float32", rng) * (0 if zero_acc else 1), "out": np.zeros((8, 32), np.float32)}
    got = {k: v.copy() for k, v in args.items()}
    factored.launch(got)
    want = {k: v.copy() for k, v in args.items()}
    want["w"] = (args["w"] * np.float32(2.0 ** -5)).astype(np.float32)
    plain.launch(want)
    _assert_bits_equal(got["out"], want["out"], "factored dot")
    w64 = want["w"].astype(np.float64)
    exact = args["acc"] + args["x"].astype(np.float64) @ w64
    bound = 2 * 65 * U32 * (np.abs(args["acc"]) + np.abs(args["x"].astype(np.float64)) @ np.abs(w64))
    assert np.all(np.abs(got["out"] - exact) <= bound)


def test_rows_summed_together_round_like_each_row_halved(built, rng):
    """8 rows of 16 f32 summed by the folded shuffles: every sum has the bits of that row's pairwise halving
    (lane t plus lane t + w/2) in float32, over values of many binades where another order rounds otherwise."""
    def make():
        kb = KernelBuilder("rows_sum")
        x = kb.tensor_param("x", "f32", [8, 16])
        out = kb.tensor_param("s", "f32", [8], intent="out")
        kb.store(out, kb.reduce("sum", kb.load(x, [0, 0], [8, 16]), 1), [0])
        return kb.build()

    kernel, ck = built("rows_sum", make)
    x = (rng.standard_normal((8, 16)) * 2.0 ** rng.integers(-24, 24, (8, 16))).astype(np.float32)
    _, out = _run_both(kernel, ck, {"x": x, "s": np.zeros(8, np.float32)})
    halved = x.copy()
    while halved.shape[1] > 1:
        half = halved.shape[1] // 2
        halved = (halved[:, :half] + halved[:, half:]).astype(np.float32)
    _assert_bits_equal(out["s"], halved[:, 0], "sums")


def test_int8_dot_accumulates_in_int32_with_wraparound(K, built, rng):
    kernel, ck = built("int8_dot", K.build_int8_dot)
    args = {"a": _random((8, 32), "int8", rng), "b": _random((32, 16), "int8", rng), "c": np.zeros((8, 16), np.int32)}
    ref, out = _run_both(kernel, ck, args)
    _assert_bits_equal(out["c"], ref["c"])
    assert (ref["c"] < 0).any()                                   # the accumulator started near INT_MAX: wraps


# ----------------------------------------------------------------------------------------------------
# layouts, targets, artifacts, errors
# ----------------------------------------------------------------------------------------------------

def test_register_layouts_drive_the_schedule(K, built, rng):
    kernel, ck = built("layout_add", K.build_layout_add)
    ref, out = _run_both(kernel, ck, _args(kernel, {"N": 200}, rng))
    _assert_bits_equal(out["out"], ref["out"])
    # the load's layout puts 16 consecutive elements on 16 lanes: a vector loop as wide as the host's vectors
    assert f"T.vectorized({host_cpu().lanes(32)})" in ck.text
    # on CUDA the same layout maps element (worker w, slot l) to thread w
    cuda = emit_tvm(kernel, "sm_90").text
    assert "threadIdx.x" in cuda and "tx < 64" in cuda


_RESHAPES = [((32, 512), (2, 16, 128, 4)), ((4, 8), (32,)), ((6, 4), (4, 6)), ((2, 3, 4), (4, 6)),
             ((1, 1, 2048), (64, 32)), ((32, 64, 8), (32, 512)), ((3, 1, 5), (15,)), ((15,), (3, 1, 5)),
             ((2, 2, 2), (8, 1)), ((128, 2, 4, 16), (128, 128))]


@pytest.mark.parametrize("src,dst", _RESHAPES)
def test_reshape_index_maps_match_numpy(src, dst):
    """Every destination index of a reshape reads the element numpy's row-major reshape puts there."""
    import itertools

    from lowbit.lowering.tvm.tiles import reshape_map

    exprs = reshape_map(src, dst)([f"i{d}" for d in range(len(dst))])
    ops = {"T": type("T", (), {"floordiv": staticmethod(lambda a, b: a // b),
                               "floormod": staticmethod(lambda a, b: a % b)})}
    values = np.arange(int(np.prod(src))).reshape(src)
    reshaped = values.reshape(dst)
    for idx in itertools.product(*(range(s) for s in dst)):
        env = {**ops, **{f"i{d}": v for d, v in enumerate(idx)}}
        assert values[tuple(eval(e, env) for e in exprs)] == reshaped[idx], (idx, exprs)


def test_vector_width_facts_override(K):
    """A ``vector_width`` fact (value name -> lanes) beats the host's SIMD width (>= 4 f32 lanes)."""
    plain = emit_tvm(K.build_vector_add(), "cpu").text
    assert "T.vectorized(2)" not in plain
    assert "T.vectorized(2)" in emit_tvm(K.build_vector_add(), "cpu", facts={"vector_width": {"add": 2}}).text


def test_lowered_input_and_constants(K, rng):
    from lowbit.lowering.passes import run_passes
    from lowbit.lowering.target import parse_target

    kb = KernelBuilder("scaled")
    x = kb.tensor_param("x", "f32", ["N"])
    kb.constant("BLOCK")                                         # unspecialized
    kb.set_grid("cdiv(N, BLOCK)")
    off = kb.mul(kb.program_id(0), kb.symbol("BLOCK"))
    kb.store(x, kb.mul(kb.load(x, [off], [32]), 3.0), [off])
    kernel = kb.build()
    with pytest.raises(CompileError, match="constant BLOCK has no value"):
        emit_tvm(kernel, "cpu")
    lowered = run_passes(kernel, parse_target("tvm:llvm"), [])
    ck = build_tvm(lowered, constants={"BLOCK": 32})
    args = {"x": rng.standard_normal(70).astype(np.float32)}
    ref = {"x": args["x"].copy()}
    interpret(kernel, ref, constants={"BLOCK": 32})
    ck.launch(args)
    _assert_bits_equal(args["x"], ref["x"])
    assert ck.source.constants == {"BLOCK": 32}


def test_full_pass_pipeline_low_bit_gemm(K, rng):
    """float4 weights through the target's default pipeline (layouts, packing, dequant, vector facts):
    TVM on the lowered kernel against the interpreter on the *original* kernel, packed by param_formats."""
    from lowbit.lowering.passes import PASSES, run_passes
    from lowbit.lowering.target import parse_target

    if "lower-lowbit" not in PASSES or "infer-layouts" not in PASSES:
        pytest.skip("the low-bit lowering passes are not available")
    kernel = K.build_fp4_gemm()
    lowered = run_passes(kernel, parse_target("tvm:llvm"))
    assert all(is_native(p.value.dtype) for p in lowered.kernel.params)          # no code types left
    m, n, k = 3, 45, 96
    logical = {"a": rng.standard_normal((m, k)).astype(np.float16),
               "w": rng.integers(0, 16, size=(k, n)).astype(np.uint8),
               "s": (rng.random((k // 32, n)) * 0.1 + 0.01).astype(np.float16), "c": np.zeros((m, n), np.float16)}
    ref = {name: v.copy() for name, v in logical.items()}
    interpret(kernel, ref)
    packed = {name: np.asarray(lowered.param_formats[name].pack(v)) if name in lowered.param_formats else v.copy()
              for name, v in logical.items()}
    ck = build_tvm(lowered)
    ck.launch(packed, shape_bindings={"M": m, "N": n, "K": k})
    w = logical["w"].view(ml_dtypes.float4_e2m1fn).astype(np.float64) * np.repeat(
        logical["s"].astype(np.float64), 32, axis=0)
    # both round the dequantized weights to f16 the same way; the f32 sums differ in order only
    bound = 2 * k * U32 * (np.abs(logical["a"].astype(np.float64)) @ np.abs(w)) + F16_ULP * np.abs(
        ref["c"].astype(np.float64)) + 2.0 ** -24
    assert np.all(np.abs(packed["c"].astype(np.float64) - ref["c"].astype(np.float64)) <= bound)


def test_code_types_need_the_lowbit_lowering(K):
    kb = KernelBuilder("codes")
    w = kb.tensor_param("w", "uint4", ["N"])
    y = kb.tensor_param("y", "f16", ["N"])
    kb.store(y, kb.cast(kb.load(w, [0], [8]), "f16"), [0])
    with pytest.raises(CompileError, match="lower-lowbit") as info:
        emit_tvm(kb.build(), "cpu")
    assert "lower-lowbit" in (info.value.hint or "")


def test_export_reload_and_torch_arguments(K, built, rng, tmp_path):
    kernel, ck = built("gemv", K.build_packed_w4_gemv)
    path = ck.export(tmp_path / "gemv.so")
    again = load_tvm_kernel(path)
    assert again.text == ck.text
    k, n = 64, 16
    x = torch.randn(k)
    words = torch.randint(-2**31, 2**31 - 1, (k, 2), dtype=torch.int32)     # u32 param: int32 bits accepted
    s = (torch.rand(k // 32, n) * 0.1).half()
    y1, y2 = torch.zeros(n), torch.zeros(n)
    ck.launch({"x": x, "wp": words, "s": s, "y": y1}, shape_bindings={"N": n})
    again.launch({"x": x, "wp": words, "s": s, "y": y2}, shape_bindings={"N": n})
    assert torch.equal(y1, y2)
    ref = {"x": x.numpy().copy(), "wp": words.numpy().view(np.uint32).copy(), "s": s.numpy().copy(),
           "y": np.zeros(n, np.float32)}
    interpret(kernel, ref, shape_bindings={"N": n})
    assert np.allclose(y1.numpy(), ref["y"], rtol=1e-5, atol=1e-4)
    with pytest.raises(BackendError, match="missing"):
        load_tvm_kernel(tmp_path / "nothing.so")


def test_non_contiguous_and_bf16_arguments(K, built, rng):
    kernel, ck = built("ew_bfloat16", lambda: K.build_elementwise("bfloat16", _FLOAT_OPS, n=128))
    base = torch.randn(128, 2).bfloat16()
    a = base[:, 0]                                                  # strided: copied in
    b = torch.randn(128).bfloat16()
    outs = {p.name: torch.zeros(128, dtype=torch.bool if p.value.dtype == "bool" else torch.bfloat16)
            for p in kernel.params[2:]}
    out_view = torch.zeros(128, 2).bfloat16()
    outs["out_add"] = out_view[:, 1]                                # strided output: copied back
    ck.launch({"a": a, "b": b, **outs})
    expect = (a.float() + b.float()).bfloat16()
    assert torch.equal(out_view[:, 1], expect)


def test_launch_argument_errors(K, built, rng):
    kernel, ck = built("vadd_f32", K.build_vector_add)
    x, y, out = (np.zeros(10, np.float32) for _ in range(3))
    with pytest.raises(BackendError, match="missing argument"):
        ck.launch({"x": x, "y": y})
    with pytest.raises(BackendError, match="unknown argument"):
        ck.launch({"x": x, "y": y, "out": out, "z": out})
    with pytest.raises(DTypeError, match="float32"):
        ck.launch({"x": x, "y": y.astype(np.float64), "out": out})
    with pytest.raises(BackendError, match="size N is 10"):
        ck.launch({"x": x, "y": np.zeros(11, np.float32), "out": out})
    kb = KernelBuilder("halves")                     # N appears only inside N // 2: a launch must bind it
    h = kb.tensor_param("h", "f32", ["N // 2"])
    kb.store(h, kb.full([4], 1.0, "f32"), [0])
    halves = build_tvm(kb.build(), "cpu")
    with pytest.raises(BackendError, match="shape_bindings"):
        halves.launch({"h": np.zeros(5, np.float32)})
    with pytest.raises(BackendError, match="N // 2 = 6"):
        halves.launch({"h": np.zeros(5, np.float32)}, shape_bindings={"N": 12})
    h = np.zeros(5, np.float32)
    halves.launch({"h": h}, shape_bindings={"N": 11})
    assert list(h) == [1, 1, 1, 1, 0]


def test_bound_call_relaunches_with_new_tensors(K, built):
    """``bind`` checks once; later calls with new tensors of the bound dtype and shape compute on them (the
    example tensors are not kept), and anything else goes through the full launch with its conversions
    and errors."""
    import gc
    import weakref

    kernel, ck = built("vadd_f32", K.build_vector_add)
    x, y, out = torch.randn(100), torch.randn(100), torch.zeros(100)
    run = ck.bind({"x": x, "y": y, "out": out}, vary=("x", "out"))
    gone = weakref.ref(x)
    del x
    gc.collect()
    assert gone() is None                                              # the example x is not held
    for _ in range(3):
        x2, out2 = torch.randn(100), torch.zeros(100)
        run(x=x2, out=out2)
        assert torch.equal(out2, x2 + y)                               # f32 adds: exact
    odd = torch.randn(101)[1:]                                         # misaligned input: an aligned copy,
    out3 = torch.zeros(100)                                            # without the full launch
    full = type(run)._full
    type(run)._full = lambda self, tensors: pytest.fail("a read-only input took the full launch")
    try:
        run(x=odd, out=out3)
        run(x=torch.randn(100, 2)[:, 0], out=out3)                     # strided input: the same
    finally:
        type(run)._full = full
    run(x=odd, out=out3)
    assert torch.equal(out3, odd + y)
    strided = torch.zeros(100, 2)
    run(x=odd, out=strided[:, 1])                                      # strided output: the full launch copies back
    assert torch.equal(strided[:, 1], odd + y)
    with pytest.raises(DTypeError, match="float32"):
        run(x=torch.zeros(100, dtype=torch.float64), out=out3)
    with pytest.raises(BackendError, match="size N is 7, but argument y has extent 100"):
        run(x=torch.zeros(7), out=out3)
    with pytest.raises(BackendError, match="missing argument"):
        run(x=odd)
    with pytest.raises(BackendError, match="cannot vary n"):
        ck.bind({"x": odd, "y": y, "out": out3}, vary=("x", "n"))
    y_odd = torch.randn(101)[1:]                                       # a fixed tensor bound as an aligned copy
    run = ck.bind({"x": odd, "y": y_odd, "out": out3}, vary=("x", "out"))
    y_odd.add_(1.0)                                                    # its owner writes it (as a KV cache is)
    x4, out4 = torch.randn(100), torch.zeros(100)
    run(x=x4, out=out4)
    assert torch.equal(out4, x4 + y_odd)                               # the write is seen: no stale copy


@pytest.mark.parametrize("name", ["vector_add", "row_softmax", "gemm", "branchy", "decode_attention", "loops",
                                  "masked", "views", "reductions", "int8_dot", "shared_roundtrip", "casts"])
def test_every_kernel_builds_for_cuda(K, name):
    """TVM accepts the CUDA form of every test kernel (thread-bound nests, shared tiles, barriers)."""
    make = {"gemm": lambda: K.build_gemm("f16", shared=True), "reductions": lambda: K.build_reductions("f16"),
            "casts": lambda: K.build_casts("f32", ("f16", "bf16", "i8", "u32", "bool"))}.get(
        name, getattr(K, f"build_{name}", None))
    ck = build_tvm(make(), "sm_90")
    assert "__global__" in ck.cuda_source


@pytest.mark.parametrize("name", ["gemm", "gemv"])
def test_cuda_source_compiles_to_cubin(K, name):
    from lowbit.lowering.tvm.build import find_nvcc, nvcc_cubin

    kernel = K.build_gemm("f16") if name == "gemm" else K.build_packed_w4_gemv()
    ck = build_tvm(kernel, "sm_90")
    source = ck.cuda_source
    assert "__global__" in source and "threadIdx.x" in source and "__syncthreads" in source
    assert "blockIdx.x" in ck.text and 'scope="shared"' in ck.text
    with pytest.raises(BackendError, match="needs a GPU"):
        ck.launch({})
    if find_nvcc() is None:
        pytest.skip("nvcc not installed")
    cubin = nvcc_cubin(source, "sm_90", options=("-O3", "--fmad=false"))
    assert cubin[:4] == b"\x7fELF" and ck.source.func_name.encode() in cubin
