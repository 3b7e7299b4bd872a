"""Instruction-level semantics of the generated code (under Triton's interpreter; natively too with CUDA),
against lowbit.ir.interpret:
integer ops (wrap-around, floor division / modulo of negatives, shifts), the IR's cast rules (round half
to even, saturation, NaN -> 0, single rounding to bf16), bit views, padded (non power of two) tiles,
small dot products, shared memory, float math. Integers and exact float ops are compared bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.ir import KernelBuilder

EPS32 = 2.0 ** -24


def _elementwise_kernel(name: str, in_dtypes: dict[str, str], n: int, body):
    """A one-program kernel loading 1-D inputs of length n, computing ``body(kb, tiles) -> {out: value}``
    and storing each output (outputs are declared from the values' dtypes)."""
    kb = KernelBuilder(name)
    params = {k: kb.tensor_param(k, d, ["N"], intent="in") for k, d in in_dtypes.items()}
    kb.set_grid(1)
    tiles = {k: kb.load(p, [0], [n], name=k + "_t") for k, p in params.items()}
    outs = body(kb, tiles)
    out_params = {k: kb.tensor_param(k, v.dtype, ["N"], intent="out") for k, v in outs.items()}
    for k, v in outs.items():
        kb.store(out_params[k], v, [0])
    return kb.build()


def _outputs(kernel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from lowbit.ir.types import numpy_dtype

    n = len(next(iter(inputs.values())))
    args = dict(inputs)
    for p in kernel.tensor_params:
        if p.name not in args:
            args[p.name] = np.zeros(n, numpy_dtype(p.value.dtype))
    return args


def _check_all(H, kernel, inputs, cache_dir, mode):
    got, ref = H.run_both(kernel, _outputs(kernel, inputs), cache_dir=cache_dir, mode=mode)
    for name in ref:
        if name not in inputs:
            H.assert_bits_equal(got[name], ref[name], name)
    return got, ref


# ----------------------------------------------------------------------------------------------------
# integers
# ----------------------------------------------------------------------------------------------------

INT_OPS = ("add", "sub", "mul", "floordiv", "mod", "minimum", "maximum", "and_", "or_", "xor")


@pytest.mark.parametrize("dtype", ["i8", "i16", "i32", "u8", "u32"])
def test_integer_arithmetic_wraps_and_floors(dtype, H, rng, cache_dir, mode):
    n = 300
    info = np.iinfo({"i8": np.int8, "i16": np.int16, "i32": np.int32, "u8": np.uint8, "u32": np.uint32}[dtype])
    a = rng.integers(info.min, int(info.max) + 1, n, dtype=np.int64).astype(info.dtype)
    b = rng.integers(info.min, int(info.max) + 1, n, dtype=np.int64).astype(info.dtype)
    if info.min < 0:  # negatives of every sign combination, small divisors, the extremes
        a[:8] = [-7, 7, -7, 7, info.min, info.max, -1, 0]
        b[:8] = [2, -2, -2, 2, -1 if dtype != "i32" else 3, -1, 3, -5]
    b[b == 0] = 3

    def body(kb, t):
        outs = {f"r_{op}": getattr(kb, op)(t["a"], t["b"]) for op in INT_OPS}
        if info.min < 0:
            outs["r_neg"] = kb.neg(t["a"])
            outs["r_abs"] = kb.abs(t["a"])
        outs["r_not"] = kb.not_(t["a"])
        outs["r_lt"] = kb.cast(kb.lt(t["a"], t["b"]), dtype)
        outs["r_eq"] = kb.cast(kb.eq(t["a"], t["a"]), dtype)
        amount = kb.and_(t["b"], info.bits - 1)          # shift amounts in [0, nbits)
        outs["r_shl"] = kb.shl(t["a"], amount)
        outs["r_shr"] = kb.shr(t["a"], amount)            # arithmetic for signed, logical for unsigned
        return outs

    kernel = _elementwise_kernel(f"intops_{dtype}", {"a": dtype, "b": dtype}, n, body)
    got, ref = _check_all(H, kernel, {"a": a, "b": b}, cache_dir, mode)
    wide_a, wide_b = a.astype(np.int64), b.astype(np.int64)
    assert np.array_equal(got["r_floordiv"], (wide_a // wide_b).astype(info.dtype))   # Python floor, wrapped
    assert np.array_equal(got["r_mod"], (wide_a % wide_b).astype(info.dtype))
    assert np.array_equal(got["r_add"], (wide_a + wide_b).astype(info.dtype))               # wraps


# ----------------------------------------------------------------------------------------------------
# casts
# ----------------------------------------------------------------------------------------------------

SPECIAL_F32 = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, 128.5, -128.5, 255.5, 256.0, 32767.5, 65535.5,
               2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0, 4294967040.0, 4294967296.0, 3e9, -3e9,
               1e30, -1e30, np.inf, -np.inf, np.nan, -0.0, 65504.0, 65519.99, 65520.0, 6e-8, 3e-8,
               1.00390625, 1.01171875, 3.0e38, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-9]


def test_float_to_int_round_half_even_saturate_nan_zero(H, rng, cache_dir, mode):
    x = np.concatenate([np.array(SPECIAL_F32, np.float32), (rng.standard_normal(200) * 1e3).astype(np.float32),
                        rng.integers(-300, 300, 60).astype(np.float32) + 0.5]).astype(np.float32)
    targets = ["i8", "i16", "i32", "u8", "u16", "u32", "bool"]

    def body(kb, t):
        outs = {f"to_{d}": kb.cast(t["x"], d) for d in targets}
        outs["h_to_i16"] = kb.cast(kb.cast(t["x"], "f16"), "i16")        # f16 source goes through f32
        outs["b_to_u8"] = kb.cast(kb.cast(t["x"], "bf16"), "u8")
        return outs

    got, ref = _check_all(H, _elementwise_kernel("f2i", {"x": "f32"}, len(x), body), {"x": x}, cache_dir, mode)
    assert got["to_i32"][:6].tolist() == [0, 2, 2, 0, -2, -2]            # ties to even
    assert got["to_i32"][SPECIAL_F32.index(np.nan)] == 0                   # NaN -> 0
    assert got["to_u8"][SPECIAL_F32.index(-np.inf)] == 0 and got["to_u8"][SPECIAL_F32.index(3e9)] == 255


def test_float_to_float_and_int_to_float_round_once(H, rng, cache_dir, mode):
    x = np.concatenate([np.array(SPECIAL_F32, np.float32), rng.standard_normal(100).astype(np.float32),
                        (rng.random(100) * 2.0**-14).astype(np.float32)]).astype(np.float32)
    big = np.array([16777217, 16777219, 33554435, 2**31 - 1, -2**31, -16777217, 2**24 + 2**16 + 1, 8388609,
                    (1 << 30) + (1 << 22), (1 << 30) + (1 << 22) + 1, 123456789, -987654321] * 4, np.int64)
    ints = np.concatenate([big, rng.integers(-2**31, 2**31, len(x) - len(big), dtype=np.int64)]).astype(np.int32)

    def body(kb, t):
        return {
            "f_to_h": kb.cast(t["x"], "f16"), "f_to_b": kb.cast(t["x"], "bf16"),
            "h_to_b": kb.cast(kb.cast(t["x"], "f16"), "bf16"), "b_to_h": kb.cast(kb.cast(t["x"], "bf16"), "f16"),
            "i_to_f": kb.cast(t["i"], "f32"), "i_to_h": kb.cast(t["i"], "f16"), "i_to_b": kb.cast(t["i"], "bf16"),
            "u_to_b": kb.cast(kb.cast(t["i"], "u32"), "bf16"), "s_to_b": kb.cast(kb.cast(t["i"], "i16"), "bf16"),
            "i_to_u8": kb.cast(t["i"], "u8"), "i_to_i8": kb.cast(t["i"], "i8"), "u8_to_i32": kb.cast(kb.cast(t["i"], "u8"), "i32"),
            "i8_to_u32": kb.cast(kb.cast(t["i"], "i8"), "u32"), "bool_to_f": kb.cast(kb.gt(t["x"], 0.0), "f32"),
            "bool_to_b": kb.cast(kb.gt(t["i"], 0), "bf16"), "b_to_bool": kb.cast(kb.cast(kb.cast(t["x"], "bf16"), "bool"), "i32"),
        }

    got, _ = _check_all(H, _elementwise_kernel("casts", {"x": "f32", "i": "i32"}, len(x), body), {"x": x, "i": ints},
                        cache_dir, mode)
    import ml_dtypes

    # independent references: exact integers rounded to 8 significant bits, ties to even (int32 -> bf16 must
    # not round through float32 first), and ml_dtypes' float32 -> bfloat16
    vals = ints[:12].astype(np.float64)
    m, e = np.frexp(vals)
    assert np.array_equal(got["i_to_b"][:12].astype(np.float64), np.ldexp(np.rint(np.ldexp(m, 8)), e - 8))
    finite = ~np.isnan(x)
    assert np.array_equal(got["f_to_b"][finite].view(np.uint16), x[finite].astype(ml_dtypes.bfloat16).view(np.uint16))
    with np.errstate(over="ignore"):
        assert np.array_equal(got["f_to_h"][finite].view(np.uint16), x[finite].astype(np.float16).view(np.uint16))


# ----------------------------------------------------------------------------------------------------
# views, padding, shapes
# ----------------------------------------------------------------------------------------------------

def build_views():
    """u32 / f32 / bf16 tiles viewed as narrower and wider types (rows of 3 words)."""
    kb = KernelBuilder("views")
    w = kb.tensor_param("w", "u32", ["R", 3])
    f = kb.tensor_param("f", "f32", ["R", 3])
    h = kb.tensor_param("h", "bf16", ["R", 4])
    o_bytes = kb.tensor_param("o_bytes", "u8", ["R", 12], intent="out")
    o_back = kb.tensor_param("o_back", "u32", ["R", 3], intent="out")
    o_i16 = kb.tensor_param("o_i16", "i16", ["R", 6], intent="out")
    o_fbits = kb.tensor_param("o_fbits", "i32", ["R", 3], intent="out")
    o_hbits = kb.tensor_param("o_hbits", "u16", ["R", 4], intent="out")
    o_hword = kb.tensor_param("o_hword", "u32", ["R", 2], intent="out")
    o_f16 = kb.tensor_param("o_f16", "f16", ["R", 6], intent="out")
    kb.set_grid(1)
    tw = kb.load(w, [0, 0], [5, 3], name="tw")
    tb = kb.view(tw, "u8", name="tb")                       # [5, 12]
    kb.store(o_bytes, tb, [0, 0])
    kb.store(o_back, kb.view(kb.add(tb, 1), "u32"), [0, 0])  # bytes + 1 (wrapping), back to words
    kb.store(o_i16, kb.view(tw, "i16"), [0, 0])
    tf = kb.load(f, [0, 0], [5, 3], name="tf")
    kb.store(o_fbits, kb.view(tf, "i32"), [0, 0])
    kb.store(o_f16, kb.view(tf, "f16"), [0, 0])
    th = kb.load(h, [0, 0], [5, 4], name="th")
    kb.store(o_hbits, kb.view(th, "u16"), [0, 0])
    kb.store(o_hword, kb.view(th, "u32"), [0, 0])
    return kb.build()


def test_views_between_word_widths_and_floats(H, rng, cache_dir, mode):
    """Row-wise little-endian bit reinterpretation, including rows of 3 words (tiles padded to 4)."""
    kernel = build_views()
    r = 5
    inputs = {"w": rng.integers(0, 2**32, (r, 3), dtype=np.uint32), "f": rng.standard_normal((r, 3)).astype(np.float32),
              "h": rng.standard_normal((r, 4)).astype(H.BF16)}
    outs = {"o_bytes": np.zeros((r, 12), np.uint8), "o_back": np.zeros((r, 3), np.uint32),
            "o_i16": np.zeros((r, 6), np.int16), "o_fbits": np.zeros((r, 3), np.int32),
            "o_hbits": np.zeros((r, 4), np.uint16), "o_hword": np.zeros((r, 2), np.uint32),
            "o_f16": np.zeros((r, 6), np.float16)}
    got, ref = H.run_both(kernel, {**inputs, **outs}, cache_dir=cache_dir, mode=mode)
    for name in outs:
        H.assert_bits_equal(got[name], ref[name], name)
    assert np.array_equal(got["o_bytes"], inputs["w"].view(np.uint8).reshape(r, 12))   # little-endian host order


def build_padded_shapes():
    """Non power-of-two tiles through reshapes, reductions, permutes and a padded store."""
    kb = KernelBuilder("padded_shapes")
    x = kb.tensor_param("x", "i32", [3, 4])
    y = kb.tensor_param("y", "f16", [6, 5])
    o1 = kb.tensor_param("o1", "i32", [4, 3], intent="out")
    o2 = kb.tensor_param("o2", "i32", [2, 6], intent="out")
    o3 = kb.tensor_param("o3", "f16", [6], intent="out")
    o4 = kb.tensor_param("o4", "f16", [5, 1], intent="out")
    o5 = kb.tensor_param("o5", "i32", [2, 3, 2], intent="out")
    o6 = kb.tensor_param("o6", "i8", [4], intent="out")
    o7 = kb.tensor_param("o7", "i32", [8], intent="inout")
    kb.set_grid(1)
    tx = kb.load(x, [0, 0], [3, 4], name="tx")
    kb.store(o1, kb.reshape(tx, [4, 3]), [0, 0])
    kb.store(o2, kb.reshape(kb.transpose(tx), [2, 6]), [0, 0])
    ty = kb.load(y, [0, 0], [6, 5], name="ty")
    # reductions of computed tiles, whose padding lanes hold non-neutral values (1.0, -1, 41)
    kb.store(o3, kb.sum(kb.add(ty, 1.0), 1), [0])                      # f16 sum: f32 accumulate, round once
    kb.store(o4, kb.transpose(kb.max(kb.sub(kb.neg(kb.abs(ty)), 1.0), 0, keepdims=True)), [0, 0])
    kb.store(o5, kb.permute(kb.reshape(tx, [3, 2, 2]), [2, 0, 1]), [0, 0, 0])
    kb.store(o6, kb.sum(kb.cast(kb.add(kb.mul(tx, 40), 41), "i8"), 0), [0])   # i8 sums wrap
    kb.store(o7, kb.full([3], 7, "i32"), [2])                          # a 3-tile (padded to 4) inside [8]
    return kb.build()


def test_padded_reshapes_reductions_and_permutes(H, rng, cache_dir, mode):
    """Non power-of-two tiles: reshapes that move elements across padded rows (gather path), reductions over
    padded axes (identity fill), permutes and broadcasts."""
    kernel = build_padded_shapes()
    inputs = {"x": rng.integers(-100, 100, (3, 4)).astype(np.int32),
              "y": (rng.standard_normal((6, 5)) * 50).astype(np.float16)}
    outs = {"o1": np.zeros((4, 3), np.int32), "o2": np.zeros((2, 6), np.int32), "o3": np.zeros(6, np.float16),
            "o4": np.zeros((5, 1), np.float16), "o5": np.zeros((2, 3, 2), np.int32), "o6": np.zeros(4, np.int8),
            "o7": np.full(8, -1, np.int32)}
    got, ref = H.run_both(kernel, {**inputs, **outs}, cache_dir=cache_dir, mode=mode)
    for name in outs:
        H.assert_bits_equal(got[name], ref[name], name)
    assert np.array_equal(got["o1"], inputs["x"].reshape(4, 3))
    assert np.array_equal(got["o2"], inputs["x"].T.reshape(2, 6))
    assert got["o7"].tolist() == [-1, -1, 7, 7, 7, -1, -1, -1]


DOT_CASES = {"small_f16": ("f16", (4, 8, 6)), "padded_k_f32": ("f32", (16, 20, 16)), "int8": ("i8", (16, 32, 16)),
             "uint8": ("u8", (16, 16, 16)), "bf16_small": ("bf16", (2, 16, 3)), "bf16_mma": ("bf16", (16, 32, 16))}


def build_dot(case: str):
    """c = (a + 1) @ (b + 1) + c for one DOT_CASES entry."""
    dtype, (m, k, n) = DOT_CASES[case]
    kb = KernelBuilder(f"dot_{case}")
    a = kb.tensor_param("a", dtype, [m, k])
    b = kb.tensor_param("b", dtype, [k, n])
    acc_dtype = "i32" if dtype in ("i8", "u8") else "f32"
    c = kb.tensor_param("c", acc_dtype, [m, n])
    kb.set_grid(1)
    # operands computed in registers, so padding lanes hold 1 (not the 0 a masked load gives)
    ta = kb.add(kb.load(a, [0, 0], [m, k], name="ta"), 1)
    tb = kb.add(kb.load(b, [0, 0], [k, n], name="tb"), 1)
    kb.store(c, kb.dot(ta, tb, kb.load(c, [0, 0], [m, n], name="tc")), [0, 0])
    return kb.build()


@pytest.mark.parametrize("case", list(DOT_CASES))
def test_dot_shapes_and_types(case, H, rng, cache_dir, mode):
    """tl.dot where every dim allows it, the broadcast-multiply-sum fallback for small tiles and uint8, and
    zeroed padding lanes when K is not a power of two."""
    dtype, (m, k, n) = DOT_CASES[case]
    acc_dtype = "i32" if dtype in ("i8", "u8") else "f32"
    kernel = build_dot(case)
    if dtype in ("i8", "u8"):
        lo, hi = (-128, 128) if dtype == "i8" else (0, 256)
        np_dtype = np.int8 if dtype == "i8" else np.uint8
        av, bv = rng.integers(lo, hi, (m, k)).astype(np_dtype), rng.integers(lo, hi, (k, n)).astype(np_dtype)
        cv = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    else:
        np_dtype = {"f16": np.float16, "f32": np.float32, "bf16": H.BF16}[dtype]
        av, bv = rng.standard_normal((m, k)).astype(np_dtype), rng.standard_normal((k, n)).astype(np_dtype)
        cv = rng.standard_normal((m, n)).astype(np.float32)
    got, ref = H.run_both(kernel, {"a": av, "b": bv, "c": cv}, cache_dir=cache_dir, mode=mode)
    if acc_dtype == "i32":
        H.assert_bits_equal(got["c"], ref["c"], "c")                 # integer dots are exact (wrapping)
    else:
        mag = (np.abs(av.astype(np.float64)) + 1) @ (np.abs(bv.astype(np.float64)) + 1) + np.abs(cv)
        H.assert_within(got["c"], ref["c"], 2 * (k + 1) * EPS32 * mag, "c")


def build_smem_pipeline(bk: int = 16, bn: int = 32):
    """Double-buffered shared memory read one iteration after the write, plus offset slices."""
    kb = KernelBuilder("smem_pipeline")
    a = kb.tensor_param("a", "f32", ["K", bn])
    out = kb.tensor_param("out", "f32", [2, bn], intent="out")
    kb.set_grid(1)
    buf = kb.alloc_shared("f32", [2, bk, bn], name="buf")
    kb.copy_to_shared(kb.shared_slice(buf, [0, 0, 0], [bk, bn]), a, [0, 0])          # prefetch stage 0
    n_iter = kb.floordiv(kb.symbol("K"), bk, name="n_iter")
    with kb.for_range(0, n_iter, 1, [kb.zeros([bn], "f32", name="acc")], iv_name="it") as loop:
        it = loop.iv
        cur = kb.shared_slice(buf, [kb.mod(it, 2), 0, 0], [bk, bn], name="cur")
        nxt = kb.shared_slice(buf, [kb.mod(kb.add(it, 1), 2), 0, 0], [bk, bn], name="nxt")
        tile = kb.load_shared(cur, name="tile")                                         # written last iteration
        kb.barrier()
        kb.copy_to_shared(nxt, a, [kb.mul(kb.add(it, 1), bk), 0])                      # masked past K
        loop.yield_([kb.add(loop.args[0], kb.sum(tile, 0))])
    half = kb.alloc_shared("f32", [2, 2 * bn], name="half")
    kb.store_shared(kb.shared_slice(half, [1, bn], [bn], name="hi"), loop.results[0])
    kb.store_shared(kb.shared_slice(half, [1, 0], [bn], name="lo"), kb.neg(loop.results[0]))
    row = kb.load_shared(kb.shared_slice(half, [1, 0], [2 * bn], name="row"), name="row_t")
    kb.store(out, kb.reshape(row, [2, bn]), [0, 0])
    return kb.build()


def test_shared_memory_forwarded_and_materialized(H, rng, cache_dir, mode):
    """Double buffering read in the next iteration (kept as a register buffer, selected with gather), a
    slice at a non-zero trailing offset read through another slice value, and plain forwarding."""
    bk, bn = 16, 32
    kernel = build_smem_pipeline(bk, bn)
    av = rng.standard_normal((48, bn)).astype(np.float32)
    got, ref = H.run_both(kernel, {"a": av, "out": np.zeros((2, bn), np.float32)}, cache_dir=cache_dir, mode=mode)
    H.assert_within(got["out"], ref["out"], 4 * 48 * EPS32 * np.abs(av).sum(0)[None, :], "out")
    assert np.allclose(got["out"][1], av.sum(0), rtol=1e-5) and np.allclose(got["out"][0], -av.sum(0), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# float math
# ----------------------------------------------------------------------------------------------------

EXACT_F = ("neg", "abs", "floor", "ceil", "sqrt")
APPROX_F = ("exp", "exp2", "log", "log2", "rsqrt", "tanh", "sigmoid")


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_float_math(dtype, H, rng, cache_dir, mode):
    n = 256
    np_dtype = {"f32": np.float32, "f16": np.float16, "bf16": H.BF16}[dtype]
    x = np.concatenate([rng.standard_normal(n - 16) * 4, [0.0, -0.0, 1e-3, -1e-3, 0.05, -0.07, 20.0, -20.0,
                                                           np.inf, -np.inf, np.nan, 0.5, 1.5, -2.5, 7.0, -7.0]])
    y = np.concatenate([rng.standard_normal(n - 8) * 3, [0.0, -0.0, 2.0, -2.0, 3.0, -3.0, np.nan, 0.5]])
    x, y = x.astype(np_dtype), y.astype(np_dtype)

    def body(kb, t):
        outs = {f"u_{op}": kb.unary(op, t["x"]) for op in EXACT_F + APPROX_F}
        for op in ("add", "sub", "mul", "div", "floordiv", "mod", "minimum", "maximum"):
            outs[f"b_{op}"] = kb.binary(op, t["x"], t["y"])
        outs["w"] = kb.where(kb.gt(t["x"], t["y"]), t["x"], t["y"])
        outs["cmp"] = kb.cast(kb.le(t["x"], t["y"]), "i32")
        return outs

    kernel = _elementwise_kernel(f"math_{dtype}", {"x": dtype, "y": dtype}, n, body)
    got, ref = H.run_both(kernel, _outputs(kernel, {"x": x, "y": y}), cache_dir=cache_dir, mode=mode)
    ulp = {"f32": 2.0**-23, "f16": 2.0**-10, "bf16": 2.0**-7}[dtype]
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(all="ignore"):
        q = xf / yf
    # natively, float % is the hardware frem lowering (x - y * trunc(x / y)): exact unless x / y is near an
    # integer, where the quotient may be off by one; compare those lanes only under the interpreter
    near_int = np.abs(q - np.round(q)) < 1e-3 if mode == "native" else np.zeros(n, bool)
    for name in ref:
        if name in ("x", "y"):
            continue
        if name.startswith("u_") and name[2:] in APPROX_F:
            # transcendental functions: numpy and the interpreter differ by a few f32 ulp (tanh: 1 - e cancels
            # up to ~8x near |x| = 1/16); natively exp / log / rsqrt are the approximate hardware instructions
            # (~2 ulp, plus |x| ulp from exp's argument scaling, log's absolute error 2^-21 near 1). After
            # rounding to f16 / bf16: one ulp of that type.
            rel = (64 * EPS32 if mode == "interpret" else 2.0**-16) if dtype == "f32" else ulp
            absolute = 0.0 if mode == "interpret" else 2.0**-21
            H.assert_within(got[name], ref[name], rel * np.abs(ref[name].astype(np.float64)) + absolute + 1e-30,
                            name)
        elif name in ("b_mod", "b_floordiv"):
            H.assert_bits_equal(got[name][~near_int], ref[name][~near_int], name)
        else:
            H.assert_bits_equal(got[name], ref[name], name)


def build_masks():
    """Explicit masks, run-time other, an unchecked axis, bool and u16 tensors."""
    kb = KernelBuilder("masks")
    x = kb.tensor_param("x", "f32", ["M", 16])
    keep = kb.tensor_param("keep", "bool", ["M", 16])
    codes = kb.tensor_param("codes", "u16", ["M", 16])
    fill = kb.scalar_param("fill", "f32")
    out = kb.tensor_param("out", "f32", ["M", 16])
    pos = kb.tensor_param("pos", "bool", ["M", 16], intent="out")
    wide = kb.tensor_param("wide", "u16", ["M", 16], intent="out")
    kb.set_grid("cdiv(M, 4)")
    r0 = kb.mul(kb.program_id(0), 4, name="r0")
    tk = kb.load(keep, [r0, 0], [4, 16], name="tk")
    tx = kb.load(x, [r0, 0], [4, 16], mask=tk, other=fill, checked=[True, False], name="tx")
    cols = kb.arange(3, 19, name="cols")
    last = kb.sub(kb.num_programs(0), 1, name="last")
    stripe = kb.lt(kb.broadcast_to(kb.mod(cols, 3), [4, 16]), 2)
    kb.store(out, kb.mul(tx, kb.cast(last, "f32")), [r0, 0], mask=stripe)
    kb.store(pos, kb.and_(kb.gt(tx, 0.0), kb.not_(tk)), [r0, 0])
    tc = kb.load(codes, [r0, 0], [4, 16], name="tc")
    kb.store(wide, kb.add(kb.shr(tc, 3), kb.shl(tc, 13)), [r0, 0])
    return kb.build()


def test_masks_other_unchecked_axes_bool_and_u16_tensors(H, rng, cache_dir, mode):
    """Explicit load/store masks, a run-time ``other``, an axis marked unchecked, bool and uint16 tensors,
    num_programs, arange with an offset start."""
    kernel = build_masks()
    m = 10
    args = {"x": rng.standard_normal((m, 16)).astype(np.float32), "keep": rng.random((m, 16)) < 0.5,
            "codes": rng.integers(0, 2**16, (m, 16)).astype(np.uint16), "fill": -3.5,
            "out": np.full((m, 16), 9.0, np.float32), "pos": np.zeros((m, 16), bool),
            "wide": np.zeros((m, 16), np.uint16)}
    got, ref = H.run_both(kernel, args, cache_dir=cache_dir, mode=mode)
    for name in ("out", "pos", "wide"):
        H.assert_bits_equal(got[name], ref[name], name)
    assert (got["out"][:, 2::3] == 9.0).all() and not (got["out"][:, 0::3] == 9.0).any()   # column mask
