"""Kernels built with the IR builder, shared by the interpreter, printer/parser and verifier tests.

Each ``build_*`` returns a verified Kernel. References live in the tests (fp64 numpy, ml_dtypes), never
here.
"""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.ir import KernelBuilder


def build_vector_add(dtype: str = "f32", block: int = 64):
    kb = KernelBuilder("vector_add")
    x = kb.tensor_param("x", dtype, ["N"])
    y = kb.tensor_param("y", dtype, ["N"])
    out = kb.tensor_param("out", dtype, ["N"])
    kb.constant("BLOCK", block)
    kb.set_grid("cdiv(N, BLOCK)")
    off = kb.mul(kb.program_id(0), block, name="off")
    kb.store(out, kb.add(kb.load(x, [off], [block]), kb.load(y, [off], [block])), [off])
    return kb.build()


def build_row_softmax(bm: int = 8, bn: int = 64):
    """out[i, :] = softmax(x[i, :]) for rows of length N <= bn (masked to -inf past N)."""
    kb = KernelBuilder("row_softmax")
    x = kb.tensor_param("x", "f32", ["M", "N"])
    out = kb.tensor_param("out", "f32", ["M", "N"])
    kb.set_grid(f"cdiv(M, {bm})")
    row = kb.mul(kb.program_id(0), bm, name="row")
    t = kb.load(x, [row, 0], [bm, bn], other=float("-inf"))
    m = kb.max(t, 1, keepdims=True, name="m")
    e = kb.exp(kb.sub(t, m))
    s = kb.sum(e, 1, keepdims=True, name="s")
    kb.store(out, kb.div(e, s), [row, 0])
    return kb.build()


def build_gemm_f16(bm: int = 16, bn: int = 32, bk: int = 16, shared: bool = False):
    """c = a @ b in f16 with an f32 accumulator, K loop, edge masks; optionally through shared memory
    (double-buffered with shared_slice, copy_to_shared, barrier, load_shared)."""
    kb = KernelBuilder("gemm_f16" + ("_smem" if shared else ""))
    a = kb.tensor_param("a", "f16", ["M", "K"])
    b = kb.tensor_param("b", "f16", ["K", "N"])
    c = kb.tensor_param("c", "f16", ["M", "N"], intent="out")
    kb.constant("BM", bm)
    kb.constant("BN", bn)
    kb.set_grid("cdiv(M, BM)", "cdiv(N, BN)")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    acc = kb.zeros([bm, bn], "f32", name="acc")
    if shared:
        sa = kb.alloc_shared("f16", [2, bm, bk], name="sa")
        sb = kb.alloc_shared("f16", [2, bk, bn], name="sb")
    loop = kb.begin_for(0, kb.symbol("K"), bk, [acc], iv_name="k")
    k = loop.iv
    if shared:
        stage = kb.mod(kb.floordiv(k, bk), 2, name="stage")
        sa_s = kb.shared_slice(sa, [stage, 0, 0], [bm, bk])
        sb_s = kb.shared_slice(sb, [stage, 0, 0], [bk, bn])
        kb.copy_to_shared(sa_s, a, [m0, k])
        kb.copy_to_shared(sb_s, b, [k, n0])
        kb.barrier()
        ta, tb = kb.load_shared(sa_s, name="ta"), kb.load_shared(sb_s, name="tb")
    else:
        ta = kb.load(a, [m0, k], [bm, bk], name="ta")
        tb = kb.load(b, [k, n0], [bk, bn], name="tb")
    (acc_out,) = kb.end_for([kb.dot(ta, tb, loop.args[0])])
    kb.store(c, kb.cast(acc_out, "f16"), [m0, n0])
    return kb.build()


def build_lowbit_gemm(wdtype: str, zeros: bool, group: int = 32, bm: int = 16, bn: int = 32, bk: int = 64):
    """c = a @ dequant(w) with w ~ (q - z) * s per group of ``group`` rows of K (z only if ``zeros``)."""
    kb = KernelBuilder("lowbit_gemm")
    a = kb.tensor_param("a", "f16", ["M", "K"])
    w = kb.tensor_param("w", wdtype, ["K", "N"])
    s = kb.tensor_param("s", "f16", ["K // G", "N"])
    z = kb.tensor_param("z", "uint4", ["K // G", "N"]) if zeros else None
    c = kb.tensor_param("c", "f16", ["M", "N"])
    kb.constant("G", group)
    kb.set_grid(f"cdiv(M, {bm})", f"cdiv(N, {bn})")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    ng = bk // group
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bm, bn], "f32", name="acc")], iv_name="k") as loop:
        k = loop.iv
        ta = kb.load(a, [m0, k], [bm, bk], name="ta")
        q = kb.cast(kb.load(w, [k, n0], [bk, bn], name="q"), "f16", name="qf")
        g = kb.floordiv(k, kb.symbol("G"), name="g")
        ts = kb.reshape(kb.load(s, [g, n0], [ng, bn], name="ts"), [ng, 1, bn])
        q3 = kb.reshape(q, [ng, group, bn])
        if zeros:
            tz = kb.reshape(kb.cast(kb.load(z, [g, n0], [ng, bn], name="tz"), "f16"), [ng, 1, bn])
            q3 = kb.sub(q3, tz)
        deq = kb.reshape(kb.mul(q3, ts), [bk, bn], name="deq")
        loop.yield_([kb.dot(ta, deq, loop.args[0])])
    kb.store(c, kb.cast(loop.results[0], "f16"), [m0, n0])
    return kb.build()


def build_packed_u4_gemv(bn: int = 32, bk: int = 16):
    """y[n] = sum_k x[k] * w[k, n] where w is u4 stored packed: wp u32[K, N // 8], element n of a row in
    bits [4 (n % 8), 4 (n % 8) + 4) of word n // 8 -- the form the low-bit lowering pass produces."""
    kb = KernelBuilder("packed_u4_gemv")
    x = kb.tensor_param("x", "f32", ["K"])
    wp = kb.tensor_param("wp", "u32", ["K", "NW"])
    y = kb.tensor_param("y", "f32", ["N"])
    kb.set_grid(f"cdiv(N, {bn})")
    n0 = kb.mul(kb.program_id(0), bn, name="n0")
    w0 = kb.floordiv(n0, 8, name="w0")
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bn], "f32", name="acc")], iv_name="k") as loop:
        words = kb.load(wp, [loop.iv, w0], [bk, bn // 8], name="words")
        shifts = kb.mul(kb.cast(kb.arange(0, 8), "u32"), 4, name="shifts")
        nib = kb.and_(kb.shr(kb.expand_dims(words, 2), shifts), 15, name="nib")   # [bk, bn/8, 8]
        codes = kb.reshape(nib, [bk, bn], name="codes")
        xs = kb.expand_dims(kb.load(x, [loop.iv], [bk], name="xs"), 1)
        part = kb.sum(kb.mul(xs, kb.cast(codes, "f32")), 0, name="part")
        loop.yield_([kb.add(loop.args[0], part)])
    kb.store(y, loop.results[0], [n0])
    return kb.build()


def build_decode_attention(kv_dtype: str = "f16", bs: int = 16, d: int = 32):
    """out[h] = softmax(q[h] . K^T * scale) V over S keys, online softmax with carried (m, l, acc)."""
    kb = KernelBuilder("decode_attention")
    q = kb.tensor_param("q", "f16", ["H", d])
    kc = kb.tensor_param("k", kv_dtype, ["S", d])
    vc = kb.tensor_param("v", kv_dtype, ["S", d])
    ks = kb.tensor_param("k_scale", "f32", ["S"])      # per-token dequant scale
    out = kb.tensor_param("out", "f16", ["H", d])
    scale = kb.scalar_param("sm_scale", "f32")
    kb.set_grid("H")
    h = kb.program_id(0, name="h")
    tq = kb.load(q, [h, 0], [1, d], name="tq")                       # [1, d]
    seq = kb.symbol("S")
    m0 = kb.full([1], float("-inf"), "f32", name="m")
    l0 = kb.zeros([1], "f32", name="l")
    a0 = kb.zeros([1, d], "f32", name="acc")
    with kb.for_range(0, seq, bs, [m0, l0, a0], iv_name="j") as loop:
        m, l, acc = loop.args
        j = loop.iv
        tk = kb.cast(kb.load(kc, [j, 0], [bs, d], name="tk"), "f16")
        tk = kb.cast(kb.mul(tk, kb.expand_dims(kb.load(ks, [j], [bs], name="tks"), 1)), "f16")
        tv = kb.cast(kb.load(vc, [j, 0], [bs, d], name="tv"), "f16")
        scores = kb.mul(kb.dot(tq, kb.transpose(tk)), scale, name="scores")           # [1, bs] f32
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


def build_branchy(block: int = 8):
    """Even programs double their block, odd ones add 1 (exercises If with results), via a scalar param."""
    kb = KernelBuilder("branchy")
    x = kb.tensor_param("x", "i32", ["N"])
    out = kb.tensor_param("out", "i32", ["N"])
    bias = kb.scalar_param("bias", "i32")
    kb.set_grid(f"cdiv(N, {block})")
    pid = kb.program_id(0)
    off = kb.mul(pid, block, name="off")
    t = kb.load(x, [off], [block], name="t")
    kb.begin_if(kb.eq(kb.mod(pid, 2), 0))
    even = kb.mul(t, 2, name="even")
    kb.begin_else([even])
    odd = kb.add(t, bias, name="odd")
    (r,) = kb.end_if([odd], names=["r"])
    kb.store(out, r, [off])
    return kb.build()


def build_edge_copy(tile=(4, 4)):
    """y[i, j] = x[i, j] inside x, else -1 (out-of-bounds loads read other); y may be larger or smaller."""
    kb = KernelBuilder("edge_copy")
    x = kb.tensor_param("x", "i16", ["M", "N"])
    y = kb.tensor_param("y", "i16", ["P", "Q"])
    kb.set_grid(f"cdiv(P, {tile[0]})", f"cdiv(Q, {tile[1]})")
    i0 = kb.mul(kb.program_id(0), tile[0])
    j0 = kb.mul(kb.program_id(1), tile[1])
    kb.store(y, kb.load(x, [i0, j0], list(tile), other=-1), [i0, j0])
    return kb.build()


ALL_BUILDERS = {
    "vector_add": build_vector_add,
    "vector_add_f16": lambda: build_vector_add("f16"),
    "row_softmax": build_row_softmax,
    "gemm_f16": build_gemm_f16,
    "gemm_f16_smem": lambda: build_gemm_f16(shared=True),
    "lowbit_gemm_u4_zeros": lambda: build_lowbit_gemm("uint4", True),
    "lowbit_gemm_fp4": lambda: build_lowbit_gemm("float4_e2m1", False),
    "packed_u4_gemv": build_packed_u4_gemv,
    "decode_attention": build_decode_attention,
    "decode_attention_fp8": lambda: build_decode_attention("float8_e4m3fn"),
    "branchy": build_branchy,
    "edge_copy": build_edge_copy,
}


@pytest.fixture(scope="session")
def builders():
    """name -> function building a verified kernel."""
    return ALL_BUILDERS


@pytest.fixture(scope="session")
def K():
    """The ``build_*`` functions of this file, as attributes (``K.build_gemm_f16(shared=True)``)."""
    import types

    return types.SimpleNamespace(**{k: v for k, v in globals().items() if k.startswith("build_")})


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
