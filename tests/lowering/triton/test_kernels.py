"""Generated Triton code for whole kernels, run under Triton's interpreter on CPU torch tensors (and natively
with CUDA), against lowbit.ir.interpret (the oracle) on the same data. Few programs with big tiles keep the
interpreter fast.

Tolerances (stated per test) follow from the accumulation precision: both sides compute the same rounded
operations; only the order of float32 sums may differ (tl.dot / tl.sum vs numpy), which moves a sum of n
terms by at most about 2 n 2^-24 sum|terms|.
"""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.ir import KernelBuilder

EPS32 = 2.0 ** -24


def build_vector_add(dtype: str, block: int):
    """out = x * y + x, elementwise (two rounded ops in the IR dtype)."""
    kb = KernelBuilder(f"vector_fma_{dtype}")
    x = kb.tensor_param("x", dtype, ["N"])
    y = kb.tensor_param("y", dtype, ["N"])
    out = kb.tensor_param("out", dtype, ["N"], intent="out")
    kb.constant("BLOCK", block)
    kb.set_grid("cdiv(N, BLOCK)")
    off = kb.mul(kb.program_id(0), kb.symbol("BLOCK"), name="off")
    a = kb.load(x, [off], [block], name="a")
    b = kb.load(y, [off], [block], name="b")
    kb.store(out, kb.add(kb.mul(a, b), a), [off])
    return kb.build()


def build_row_softmax(bm: int, bn: int):
    """out = softmax(x * scale) per row; the row tile is bn wide (bn need not be a power of two)."""
    kb = KernelBuilder("row_softmax")
    x = kb.tensor_param("x", "f32", ["M", "N"])
    out = kb.tensor_param("out", "f32", ["M", "N"], intent="out")
    scale = kb.scalar_param("scale", "f32")
    kb.set_grid(f"cdiv(M, {bm})")
    row = kb.mul(kb.program_id(0), bm, name="row")
    t = kb.mul(kb.load(x, [row, 0], [bm, bn], other=float("-inf"), name="t"), scale)
    m = kb.max(t, 1, keepdims=True, name="m")
    e = kb.exp(kb.sub(t, m), name="e")
    s = kb.sum(e, 1, keepdims=True, name="s")
    kb.store(out, kb.div(e, s), [row, 0])
    return kb.build()


def build_gemm(dtype: str, bm: int, bn: int, bk: int, out_dtype: str | None = None):
    """c = a @ b with a K loop, an f32 accumulator and edge masks on every axis."""
    kb = KernelBuilder(f"gemm_{dtype}")
    a = kb.tensor_param("a", dtype, ["M", "K"])
    b = kb.tensor_param("b", dtype, ["K", "N"])
    c = kb.tensor_param("c", out_dtype or dtype, ["M", "N"], intent="out")
    kb.constant("BM", bm)
    kb.constant("BN", bn)
    kb.constant("BK", bk)
    kb.set_grid("cdiv(M, BM)", "cdiv(N, BN)")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    with kb.for_range(0, kb.symbol("K"), kb.symbol("BK"), [kb.zeros([bm, bn], "f32", name="acc")],
                      iv_name="k") as loop:
        ta = kb.load(a, [m0, loop.iv], [bm, bk], name="ta")
        tb = kb.load(b, [loop.iv, n0], [bk, bn], name="tb")
        loop.yield_([kb.dot(ta, tb, loop.args[0])])
    kb.store(c, kb.cast(loop.results[0], out_dtype or dtype), [m0, n0])
    return kb.build()


def build_packed_gemv(bn: int, bk: int, group: int):
    """y[n] = sum_k x[k] * (q[k, n] - 8) * s[k // G, n] with q u4 codes packed 8 per u32 word along n
    (word n // 8, bits 4 (n % 8) ...), unpacked with explicit shr / and / cast."""
    kb = KernelBuilder("packed_gemv")
    x = kb.tensor_param("x", "f16", ["K"])
    wp = kb.tensor_param("wp", "u32", ["K", "NW"])
    s = kb.tensor_param("s", "f16", ["K // G", "N"])
    y = kb.tensor_param("y", "f32", ["N"], intent="out")
    kb.constant("G", group)
    kb.set_grid(f"cdiv(N, {bn})")
    n0 = kb.mul(kb.program_id(0), bn, name="n0")
    w0 = kb.floordiv(n0, 8, name="w0")
    ng = bk // group
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bn], "f32", name="acc")], iv_name="k") as loop:
        k = loop.iv
        words = kb.load(wp, [k, w0], [bk, bn // 8], name="words")
        shifts = kb.mul(kb.cast(kb.arange(0, 8), "u32"), 4, name="shifts")
        nib = kb.and_(kb.shr(kb.expand_dims(words, 2), shifts), 15, name="nib")
        q = kb.cast(kb.reshape(nib, [bk, bn], name="codes"), "f16", name="q")
        g = kb.floordiv(k, kb.symbol("G"), name="g")
        ts = kb.reshape(kb.load(s, [g, n0], [ng, bn], name="ts"), [ng, 1, bn])
        w = kb.reshape(kb.mul(kb.reshape(kb.sub(q, 8.0), [ng, group, bn]), ts), [bk, bn], name="w")
        xs = kb.expand_dims(kb.load(x, [k], [bk], name="xs"), 1)
        part = kb.sum(kb.cast(kb.mul(xs, w), "f32"), 0, name="part")
        loop.yield_([kb.add(loop.args[0], part)])
    kb.store(y, loop.results[0], [n0])
    return kb.build()


def build_branches(block: int):
    """A loop whose body branches per iteration (If with results), plus an If without results."""
    kb = KernelBuilder("branches")
    x = kb.tensor_param("x", "i32", ["N"])
    out = kb.tensor_param("out", "i32", ["N"])
    flags = kb.tensor_param("flags", "i32", ["N"], intent="out")
    bias = kb.scalar_param("bias", "i32")
    kb.set_grid(f"cdiv(N, {block})")
    pid = kb.program_id(0)
    off = kb.mul(pid, block, name="off")
    t = kb.load(x, [off], [block], name="t")
    with kb.for_range(0, 5, 1, [t], iv_name="i") as loop:
        kb.begin_if(kb.eq(kb.mod(kb.add(loop.iv, pid), 2), 0))
        even = kb.mul(loop.args[0], 3, name="even")
        kb.begin_else([even])
        odd = kb.sub(loop.args[0], bias, name="odd")
        (r,) = kb.end_if([odd], names=["r"])
        loop.yield_([r])
    kb.store(out, loop.results[0], [off])
    kb.begin_if(kb.gt(pid, 0))
    kb.store(flags, kb.full([block], 1, "i32"), [off])
    kb.end_if()
    return kb.build()


def build_decode_attention(bs: int, d: int):
    """out[h] = softmax(q[h] . K^T * scale) V with an online softmax carrying (m, l, acc) (M = 1 dots)."""
    kb = KernelBuilder("decode_attention")
    q = kb.tensor_param("q", "f16", ["H", d])
    kc = kb.tensor_param("k", "f16", ["S", d])
    vc = kb.tensor_param("v", "f16", ["S", d])
    out = kb.tensor_param("out", "f16", ["H", d])
    scale = kb.scalar_param("sm_scale", "f32")
    kb.set_grid("H")
    h = kb.program_id(0, name="h")
    tq = kb.load(q, [h, 0], [1, d], name="tq")
    seq = kb.symbol("S")
    inits = [kb.full([1], float("-inf"), "f32", name="m"), kb.zeros([1], "f32", name="l"),
             kb.zeros([1, d], "f32", name="acc")]
    with kb.for_range(0, seq, bs, inits, iv_name="j") as loop:
        m, l, acc = loop.args
        j = loop.iv
        tk = kb.load(kc, [j, 0], [bs, d], name="tk")
        tv = kb.load(vc, [j, 0], [bs, d], name="tv")
        scores = kb.mul(kb.dot(tq, kb.transpose(tk)), scale, name="scores")
        valid = kb.lt(kb.add(kb.arange(0, bs), j), seq, name="valid")
        scores = kb.where(valid, scores, float("-inf"))
        m_new = kb.maximum(m, kb.max(scores, 1), name="m_new")
        alpha = kb.exp(kb.sub(m, m_new), name="alpha")
        p = kb.exp(kb.sub(scores, kb.expand_dims(m_new, 1)), name="p")
        l_new = kb.add(kb.mul(l, alpha), kb.sum(p, 1), name="l_new")
        acc_new = kb.dot(kb.cast(p, "f16"), tv, kb.mul(acc, kb.expand_dims(alpha, 1)), name="acc_new")
        loop.yield_([m_new, l_new, acc_new])
    m, l, acc = loop.results
    kb.store(out, kb.cast(kb.div(acc, kb.expand_dims(l, 1)), "f16"), [h, 0])
    return kb.build()


# ----------------------------------------------------------------------------------------------------

def test_vector_add_f32_odd_n_bit_exact(H, rng, cache_dir, mode):
    n = 1001
    kernel = build_vector_add("f32", 256)
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    got, ref = H.run_both(kernel, {"x": x, "y": y, "out": np.full(n, np.nan, np.float32)}, cache_dir=cache_dir, mode=mode)
    H.assert_bits_equal(got["out"], ref["out"], "out")       # same two IEEE f32 ops on both sides
    assert np.array_equal(ref["out"], (x * y) + x)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_vector_add_half_types_round_per_instruction(dtype, H, rng, cache_dir, mode):
    """f16 / bf16 products and sums are rounded after each op, exactly as the IR says (bf16 is carried in
    f32 with an exact RNE helper, since the interpreter's own bf16 arithmetic is wrong)."""
    n = 777
    np_dtype = np.float16 if dtype == "f16" else H.BF16
    x = (rng.standard_normal(n) * 3).astype(np_dtype)
    y = (rng.standard_normal(n) * 3).astype(np_dtype)
    x[:4] = np.array([np.inf, -np.inf, np.nan, 0.0]).astype(np_dtype)
    got, ref = H.run_both(build_vector_add(dtype, 512), {"x": x, "y": y, "out": np.zeros(n, np_dtype)},
                          cache_dir=cache_dir, mode=mode)
    H.assert_bits_equal(got["out"], ref["out"], "out")


def test_row_softmax_padded_row_tile(H, rng, cache_dir, mode):
    """Rows of 45 in a 48-wide tile (padded to 64 in Triton): padding lanes must not enter max / sum."""
    m, n = 10, 45
    x = rng.standard_normal((m, n)).astype(np.float32) * 4
    got, ref = H.run_both(build_row_softmax(4, 48), {"x": x, "out": np.zeros((m, n), np.float32), "scale": 0.7},
                          cache_dir=cache_dir, mode=mode)
    # exp differs by <= 2 ulp between libraries; the row sum of 45 terms in another order by <= 90 ulp of
    # the sum; the quotient adds 1 ulp: 96 ulp (2^-24 relative each) covers it. Natively exp is ex2.approx
    # of x * log2(e) (|x| <= ~20 here: up to ~30 ulp per exp, also in the sum): 256 ulp.
    ulps = 96 if mode == "interpret" else 256
    H.assert_within(got["out"], ref["out"], ulps * EPS32 * np.abs(ref["out"]) + 1e-30, "softmax")
    assert np.allclose(got["out"].sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype,tiles", [("f16", (32, 32, 16)), ("f32", (32, 32, 16)), ("bf16", (16, 32, 16))])
def test_gemm_k_loop_edge_masks(dtype, tiles, H, rng, cache_dir, mode):
    m, n, k = 37, 45, 70                       # odd everywhere: every tile edge is masked
    np_dtype = {"f16": np.float16, "f32": np.float32, "bf16": H.BF16}[dtype]
    a = rng.standard_normal((m, k)).astype(np_dtype)
    b = rng.standard_normal((k, n)).astype(np_dtype)
    out_dtype = "f32"
    kernel = build_gemm(dtype, *tiles, out_dtype=out_dtype)
    got, ref = H.run_both(kernel, {"a": a, "b": b, "c": np.full((m, n), np.nan, np.float32)}, cache_dir=cache_dir, mode=mode)
    # f32 accumulation of the same products (exact for f16/bf16 inputs, one rounding each for f32) in
    # possibly another order: |diff| <= 2 K 2^-24 sum_k |a||b|.
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    H.assert_within(got["c"], ref["c"], 2 * k * EPS32 * mag, "c")
    exact = a.astype(np.float64) @ b.astype(np.float64)
    H.assert_within(got["c"], exact.astype(np.float32), 2 * k * EPS32 * mag, "c vs fp64")


def test_gemm_f16_output_rounds_once(H, rng, cache_dir, mode):
    m, n, k = 33, 40, 50
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    got, ref = H.run_both(build_gemm("f16", 32, 32, 16), {"a": a, "b": b, "c": np.zeros((m, n), np.float16)},
                          cache_dir=cache_dir, mode=mode)
    mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    # the f32 results differ by the K-sum bound; rounding them to f16 may then differ by one f16 ulp
    H.assert_within(got["c"], ref["c"], 2 * k * EPS32 * mag + H.f16_ulp(ref["c"]), "c")


def test_packed_u4_gemv_with_group_scales(H, rng, cache_dir, mode):
    k, n, group = 192, 120, 32                  # 6 groups; N = 120 is not a multiple of the 64-wide tile
    codes = rng.integers(0, 16, (k, n), dtype=np.uint32)
    words = np.zeros((k, n // 8), np.uint32)
    for j in range(8):
        words |= codes[:, j::8] << np.uint32(4 * j)
    x = rng.standard_normal(k).astype(np.float16)
    s = (rng.random((k // group, n)) * 0.1 + 0.01).astype(np.float16)
    kernel = build_packed_gemv(64, 64, group)
    got, ref = H.run_both(kernel, {"x": x, "wp": words, "s": s, "y": np.zeros(n, np.float32)}, cache_dir=cache_dir, mode=mode)
    # the products x * ((q - 8) * s) are rounded to f16 identically on both sides; only the order of the f32
    # sums may differ: <= 2 K 2^-24 sum|terms|
    w = (codes.astype(np.float16) - np.float16(8)) * np.repeat(s, group, axis=0)
    terms = (x[:, None] * w).astype(np.float32).astype(np.float64)
    H.assert_within(got["y"], ref["y"], 2 * k * EPS32 * np.abs(terms).sum(0), "y")
    H.assert_within(got["y"], terms.sum(0), 2 * k * EPS32 * np.abs(terms).sum(0) + 1e-12, "y vs fp64")


def test_if_inside_loop_and_if_without_results(H, rng, cache_dir, mode):
    n = 40
    x = rng.integers(-1000, 1000, n).astype(np.int32)
    args = {"x": x, "out": np.zeros(n, np.int32), "flags": np.zeros(n, np.int32), "bias": 5}
    got, ref = H.run_both(build_branches(16), args, cache_dir=cache_dir, mode=mode)
    for name in ("out", "flags"):
        H.assert_bits_equal(got[name], ref[name], name)
    assert (got["flags"][:16] == 0).all() and (got["flags"][16:] == 1).all()


def test_decode_attention_online_softmax(H, rng, cache_dir, mode):
    """M = 1 dots (elementwise fallback), transposes, loop-carried (m, l, acc), where with -inf."""
    heads, seq, d = 2, 45, 32
    q = rng.standard_normal((heads, d)).astype(np.float16)
    kk = rng.standard_normal((seq, d)).astype(np.float16)
    v = rng.standard_normal((seq, d)).astype(np.float16)
    args = {"q": q, "k": kk, "v": v, "out": np.zeros((heads, d), np.float16), "sm_scale": 1 / np.sqrt(d)}
    got, ref = H.run_both(build_decode_attention(16, d), args, cache_dir=cache_dir, mode=mode)
    # f32 dots of 32 / 16 terms in another order and exp's last-bit differences move the f32 result by a
    # few 1e-6 relative; rounding to f16 can then differ by one f16 ulp.
    H.assert_within(got["out"], ref["out"], H.f16_ulp(ref["out"]) + 1e-4, "out")
    scores = (q.astype(np.float64) @ kk.astype(np.float64).T) / np.sqrt(d)
    p = np.exp(scores - scores.max(1, keepdims=True))
    exact = (p / p.sum(1, keepdims=True)) @ v.astype(np.float64)
    H.assert_within(got["out"], exact, 4e-3, "out vs fp64")   # p is rounded to f16 before the PV product
