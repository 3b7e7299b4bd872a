"""Kernels for the TVM code generator tests, built with lowbit.ir.KernelBuilder.

Each ``build_*`` returns a verified Kernel. The tests run it through ``lowbit.ir.interpret`` (the oracle)
and through the TVM build on the same inputs; references never live here.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from lowbit.ir import KernelBuilder  # noqa: E402


def build_vector_add(dtype: str = "f32", block: int = 64):
    kb = KernelBuilder("vector_add")
    x = kb.tensor_param("x", dtype, ["N"])
    y = kb.tensor_param("y", dtype, ["N"])
    out = kb.tensor_param("out", dtype, ["N"])
    kb.constant("BLOCK", block)
    kb.set_grid("cdiv(N, BLOCK)")
    off = kb.mul(kb.program_id(0), kb.symbol("BLOCK"), name="off")
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


def build_gemm(dtype: str = "f16", bm: int = 16, bn: int = 32, bk: int = 16, shared: bool = False):
    """c = a @ b with an f32 accumulator, a K loop and edge masks; optionally through double-buffered
    shared memory (alloc_shared, shared_slice, copy_to_shared, barrier, load_shared)."""
    kb = KernelBuilder(f"gemm_{dtype}" + ("_smem" if shared else ""))
    a = kb.tensor_param("a", dtype, ["M", "K"])
    b = kb.tensor_param("b", dtype, ["K", "N"])
    c = kb.tensor_param("c", dtype, ["M", "N"], intent="out")
    kb.set_grid(f"cdiv(M, {bm})", f"cdiv(N, {bn})")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    acc = kb.zeros([bm, bn], "f32", name="acc")
    if shared:
        sa = kb.alloc_shared(dtype, [2, bm, bk], name="sa")
        sb = kb.alloc_shared(dtype, [2, bk, bn], name="sb")
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
    kb.store(c, kb.cast(acc_out, dtype), [m0, n0])
    return kb.build()


def build_packed_w4_gemv(bn: int = 32, bk: int = 64, group: int = 32, zero_point: int = 8):
    """y[n] = sum_k x[k] * (q[k, n] - zp) * s[k // G, n], q uint4 stored packed as wp u32[K, N // 8]
    (element n of a row in bits [4 (n % 8), 4 (n % 8) + 4) of word n // 8): explicit shr/and/cast unpack,
    as the low-bit lowering produces; group scales in f16."""
    kb = KernelBuilder("packed_w4_gemv")
    x = kb.tensor_param("x", "f32", ["K"])
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
        nib = kb.and_(kb.shr(kb.expand_dims(words, 2), shifts), 15, name="nib")      # [bk, bn/8, 8]
        codes = kb.reshape(nib, [bk, bn], name="codes")
        q = kb.sub(kb.cast(codes, "f32"), float(zero_point), name="q")
        g = kb.floordiv(k, kb.symbol("G"), name="g")
        ts = kb.cast(kb.load(s, [g, n0], [ng, bn], name="ts"), "f32")
        w = kb.reshape(kb.mul(kb.reshape(q, [ng, group, bn]), kb.reshape(ts, [ng, 1, bn])), [bk, bn], name="w")
        xs = kb.expand_dims(kb.load(x, [k], [bk], name="xs"), 1)
        part = kb.sum(kb.mul(xs, w), 0, name="part")
        loop.yield_([kb.add(loop.args[0], part)])
    kb.store(y, loop.results[0], [n0])
    return kb.build()


def build_fp4_gemm(group: int = 32, bm: int = 16, bn: int = 32, bk: int = 64):
    """c = a @ (float4 w * s): code-typed weights, for the full pass pipeline (lower-lowbit packs them)."""
    kb = KernelBuilder("fp4_gemm")
    a = kb.tensor_param("a", "f16", ["M", "K"])
    w = kb.tensor_param("w", "float4_e2m1", ["K", "N"])
    s = kb.tensor_param("s", "f16", ["K // G", "N"])
    c = kb.tensor_param("c", "f16", ["M", "N"], intent="out")
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
        deq = kb.reshape(kb.mul(kb.reshape(q, [ng, group, bn]), ts), [bk, bn], name="deq")
        loop.yield_([kb.dot(ta, deq, loop.args[0])])
    kb.store(c, kb.cast(loop.results[0], "f16"), [m0, n0])
    return kb.build()


def build_branchy(block: int = 8):
    """Even programs double their block, odd ones add a scalar parameter (If with results)."""
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


def build_decode_attention(bs: int = 16, d: int = 32):
    """out[h] = softmax(q[h] . K^T * scale) V, online softmax with carried (m, l, acc)."""
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
    m0 = kb.full([1], float("-inf"), "f32", name="m")
    l0 = kb.zeros([1], "f32", name="l")
    a0 = kb.zeros([1, d], "f32", name="acc")
    with kb.for_range(0, seq, bs, [m0, l0, a0], iv_name="j") as loop:
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


def build_elementwise(dtype: str, ops: tuple[str, ...], n: int = 64):
    """out_<op>[i] = op(a[i], b[i]) for each binary op (and unary ops on a): one program, many stores."""
    kb = KernelBuilder(f"ew_{dtype}")
    a = kb.tensor_param("a", dtype, [n])
    b = kb.tensor_param("b", dtype, [n])
    ta, tb = kb.load(a, [0], [n], name="ta"), kb.load(b, [0], [n], name="tb")
    for op in ops:
        if op in ("eq", "ne", "lt", "le", "gt", "ge"):
            o = kb.tensor_param(f"out_{op}", "bool", [n])
            kb.store(o, kb.binary(op, ta, tb), [0])
        elif op.startswith("u_"):
            o = kb.tensor_param(f"out_{op}", dtype, [n])
            kb.store(o, kb.unary(op[2:], ta), [0])
        else:
            o = kb.tensor_param(f"out_{op}", dtype, [n])
            kb.store(o, kb.binary(op, ta, tb), [0])
    return kb.build()


def build_casts(src: str, dsts: tuple[str, ...], n: int = 64):
    kb = KernelBuilder(f"casts_{src}")
    x = kb.tensor_param("x", src, [n])
    t = kb.load(x, [0], [n], name="t")
    for d in dsts:
        o = kb.tensor_param(f"out_{d}", d, [n])
        kb.store(o, kb.cast(t, d), [0])
    return kb.build()


def build_views(n: int = 16):
    """Bit views: f32 -> u32, u32 -> u8 (split), u8 -> u32 (join), f16 -> i16, and back."""
    kb = KernelBuilder("views")
    f = kb.tensor_param("f", "f32", [n])
    h = kb.tensor_param("h", "f16", [n])
    o_u32 = kb.tensor_param("o_u32", "u32", [n])
    o_u8 = kb.tensor_param("o_u8", "u8", [4 * n])
    o_join = kb.tensor_param("o_join", "u32", [n])
    o_i16 = kb.tensor_param("o_i16", "i16", [n])
    o_f32 = kb.tensor_param("o_f32", "f32", [n])
    tf = kb.load(f, [0], [n], name="tf")
    bits = kb.view(tf, "u32", name="bits")
    kb.store(o_u32, bits, [0])
    bytes_ = kb.view(bits, "u8", name="bytes")
    kb.store(o_u8, bytes_, [0])
    kb.store(o_join, kb.view(kb.add(bytes_, 1), "u32"), [0])
    kb.store(o_i16, kb.view(kb.load(h, [0], [n]), "i16"), [0])
    kb.store(o_f32, kb.view(kb.xor(bits, kb.cast(kb.full([n], -2147483648, "i32"), "u32")), "f32"), [0])
    return kb.build()


def build_reductions(dtype: str, m: int = 6, n: int = 40):
    """sum/max/min over both axes (keepdims both ways) into separate outputs."""
    kb = KernelBuilder(f"reduce_{dtype}")
    x = kb.tensor_param("x", dtype, [m, n])
    t = kb.load(x, [0, 0], [m, n], name="t")
    for op in ("sum", "max", "min"):
        o0 = kb.tensor_param(f"{op}0", dtype, [n])
        o1 = kb.tensor_param(f"{op}1", dtype, [m, 1])
        kb.store(o0, kb.reduce(op, t, 0), [0])
        kb.store(o1, kb.reduce(op, t, 1, keepdims=True), [0, 0])
    tot = kb.tensor_param("total", dtype, [1])
    kb.store(tot, kb.expand_dims(kb.sum(kb.sum(t, 1), 0), 0), [0])
    return kb.build()


def build_loops():
    """Scalar loop-carried values swapped every iteration, a step of 3, a zero-trip loop, and a tile
    carried through a loop whose body reads it after computing the next value (needs a copy)."""
    kb = KernelBuilder("loops")
    out = kb.tensor_param("out", "i32", [8])
    n = kb.scalar_param("n", "i32")
    with kb.for_range(0, n, 1, [kb.const(1), kb.const(2)]) as swap:
        a, b = swap.args
        swap.yield_([kb.add(b, 10), a])
    with kb.for_range(2, n, 3, [kb.const(0)]) as stepped:
        stepped.yield_([kb.add(kb.mul(stepped.args[0], 7), stepped.iv)])
    with kb.for_range(n, 0, 1, [kb.const(5)]) as empty:
        empty.yield_([kb.add(empty.args[0], 1)])
    with kb.for_range(0, n, 1, [kb.arange(0, 4)]) as tiles:
        cur = tiles.args[0]
        nxt = kb.add(kb.reshape(kb.permute(kb.reshape(cur, [2, 2]), [1, 0]), [4]), 1)
        tiles.yield_([kb.add(nxt, cur)])
    vals = [swap.results[0], swap.results[1], stepped.results[0], empty.results[0]]
    head = kb.full([4], 0, "i32")
    idx = kb.arange(0, 4)
    for i, v in enumerate(vals):
        head = kb.where(kb.eq(idx, i), kb.broadcast_to(v, [4]), head)
    kb.store(out, head, [0])
    kb.store(out, tiles.results[0], [4])
    return kb.build()


def build_masked():
    """Explicit load/store masks, a non-zero `other`, and an unchecked axis."""
    kb = KernelBuilder("masked")
    x = kb.tensor_param("x", "f32", ["N"])
    y = kb.tensor_param("y", "f32", ["N"])
    z = kb.tensor_param("z", "f32", ["N"])
    idx = kb.arange(0, 16)
    even = kb.eq(kb.mod(idx, 2), 0)
    t = kb.load(x, [0], [16], mask=even, other=-5.0)
    kb.store(y, t, [0], mask=kb.lt(idx, 12))
    kb.store(z, kb.load(x, [0], [8], checked=[False]), [0], checked=[False])
    return kb.build()


def build_int8_dot(m: int = 8, n: int = 16, k: int = 32):
    kb = KernelBuilder("int8_dot")
    a = kb.tensor_param("a", "i8", [m, k])
    b = kb.tensor_param("b", "i8", [k, n])
    c = kb.tensor_param("c", "i32", [m, n])
    kb.store(c, kb.dot(kb.load(a, [0, 0], [m, k]), kb.load(b, [0, 0], [k, n]), kb.full([m, n], 2147483000, "i32")),
             [0, 0])
    return kb.build()


def build_layout_add(n: int = 64):
    """A vector add whose tiles carry register layouts (as layout inference would leave them)."""
    from lowbit.layout import local, spatial

    lay = spatial(4).local(n // 64).spatial(16)      # 64 workers, lanes along the axis
    kb = KernelBuilder("layout_add")
    x = kb.tensor_param("x", "f32", ["N"])
    out = kb.tensor_param("out", "f32", ["N"])
    kb.set_grid(f"cdiv(N, {n})")
    off = kb.mul(kb.program_id(0), n, name="off")
    t = kb.load(x, [off], [n], layout=lay, name="t")
    kb.store(out, kb.add(kb.mul(t, t), t), [off])
    del local
    return kb.build()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def build_shifts(dtype: str = "i32", n: int = 64):
    kb = KernelBuilder(f"shifts_{dtype}")
    a = kb.tensor_param("a", dtype, [n])
    s = kb.tensor_param("s", dtype, [n])
    o_shl = kb.tensor_param("o_shl", dtype, [n])
    o_shr = kb.tensor_param("o_shr", dtype, [n])
    ta, ts = kb.load(a, [0], [n]), kb.load(s, [0], [n])
    kb.store(o_shl, kb.shl(ta, ts), [0])
    kb.store(o_shr, kb.shr(ta, ts), [0])
    return kb.build()


def build_shared_roundtrip():
    """store_shared of a transposed tile into one stage of a shared buffer, barrier, load_shared back;
    num_programs; an if without else that stores."""
    kb = KernelBuilder("shared_roundtrip")
    x = kb.tensor_param("x", "f32", ["P", 16, 8])
    out = kb.tensor_param("out", "f32", ["P", 8, 16])
    flag = kb.tensor_param("flag", "i32", [4])
    kb.set_grid("P")
    pid = kb.program_id(0)
    buf = kb.alloc_shared("f32", [2, 8, 16], name="buf")
    stage = kb.shared_slice(buf, [kb.mod(pid, 2), 0, 0], [8, 16], name="stage")
    t = kb.reshape(kb.load(x, [pid, 0, 0], [1, 16, 8]), [16, 8])
    kb.store_shared(stage, kb.transpose(t))
    kb.barrier()
    back = kb.load_shared(stage, name="back")
    total = kb.add(back, kb.cast(kb.num_programs(0), "f32"))
    kb.store(out, kb.expand_dims(total, 0), [pid, 0, 0])
    kb.begin_if(kb.eq(pid, 0))
    kb.store(flag, kb.full([4], 7, "i32"), [0])
    kb.end_if()
    return kb.build()


@pytest.fixture(scope="session")
def K():
    """The ``build_*`` functions of this file as attributes (``K.build_gemm("f32")``)."""
    import types

    return types.SimpleNamespace(**{k: v for k, v in globals().items() if k.startswith("build_")})


@pytest.fixture
def tvm_cpu() -> None:
    """Skips the test where the driver has no TVM CPU backend (the library's kernels compile through it)."""
    from lowbit.kernels.library import _registered

    if not _registered("tvm", "cpu"):
        pytest.skip("no TVM CPU backend here")
