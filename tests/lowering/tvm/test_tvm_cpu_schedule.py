"""The CPU schedule mechanisms of the TVM code generator, each against lowbit.ir.interpret.

* fusion (``analysis.plan_inlining``): short sums (codes straddling words) fused into their consumer;
  a value read at the same element by several fused elementwise users (a dequant's NaN test and value);
  a costly chain feeding a many-row ``dot`` computed once instead of once per row block (CPU only);
* the ``dot`` micro-kernel (``codegen``): K unrolled when an operand is computed on the fly, rows blocked
  through a register block, partial row blocks at the edge of M still vectorized;
* the loop builder (``schedule.cpu_loops``) and the row-block rule (``schedule.dot_row_block``).

Integer results and elementwise float results must match the interpreter bit for bit; a ``dot``'s f32
sum may differ by its summation order only (the interpreter rounds an fp64 product once).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")

from lowbit.ir import KernelBuilder, interpret  # noqa: E402
from lowbit.lowering.tvm.analysis import REPEAT_BUDGET, SMALL_REDUCE, plan_inlining  # noqa: E402
from lowbit.lowering.tvm.launcher import build_tvm  # noqa: E402
from lowbit.lowering.tvm.schedule import cpu_loops, dot_row_block  # noqa: E402
from lowbit.lowering.tvm.target import host_cpu  # noqa: E402

U32 = 2.0 ** -24
LANES = 16                      # f32 lanes of the AVX-512 CPU the plans below are made for


def _run_both(kernel, args, shape_bindings=None):
    ref = {k: v.copy() for k, v in args.items()}
    out = {k: v.copy() for k, v in args.items()}
    interpret(kernel, ref, shape_bindings=shape_bindings)
    ck = build_tvm(kernel, "cpu")
    ck.launch(out, shape_bindings=shape_bindings)
    return ref, out, ck


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32) if a.dtype == np.float32 else a


# ----------------------------------------------------------------------------------------------------
# loop builder and row blocks
# ----------------------------------------------------------------------------------------------------

def test_cpu_loops_unroll_splits_an_axis():
    headers, idx = cpu_loops((64, 32), vector=16, unroll={0: 8})
    assert headers == ["for axo0 in range(8):", "for axu0 in T.unroll(8):", "for axo1 in range(2):",
                       "for axv1 in T.vectorized(16):"]
    assert idx == ["axo0 * 8 + axu0", "axo1 * 16 + axv1"]
    assert cpu_loops((4, 32), vector=16, unroll={0: 4})[0][0] == "for axu0 in T.unroll(4):"     # whole axis
    assert cpu_loops((6, 32), vector=16, unroll={0: 4})[0][0] == "for ax0 in range(6):"        # 4 does not divide 6
    # the vector axis: its loop over vectors is unrolled when u covers all of them, never split
    assert cpu_loops((32,), vector=16, unroll={0: 4})[0] == ["for axo0 in T.unroll(2):", "for axv0 in T.vectorized(16):"]
    assert cpu_loops((128,), vector=16, unroll={0: 4})[0] == ["for axo0 in range(8):", "for axv0 in T.vectorized(16):"]
    assert cpu_loops((16,), vector=16, unroll={0: 4})[0] == ["for axv0 in T.vectorized(16):"]


@pytest.mark.parametrize("m,n,vec,rows", [(16, 64, 16, 4), (1, 64, 16, 1), (6, 64, 16, 3), (10, 64, 16, 2),
                                          (7, 64, 16, 1), (8, 256, 16, 1), (8, 128, 16, 2), (12, 16, 16, 4)])
def test_dot_row_block(m, n, vec, rows, avx512_bf16_host):
    """The largest divisor of M up to 4 whose accumulators (rows * N / vec vectors) fit 16 of AVX-512's 32
    registers (and as many as given)."""
    assert dot_row_block(m, n, vec) == rows == dot_row_block(m, n, vec, 16)


@pytest.mark.parametrize("m,n,vec,rows", [(16, 64, 8, 1), (16, 16, 8, 4), (8, 32, 8, 2), (6, 16, 8, 3)])
def test_dot_row_block_on_avx2(monkeypatch, m, n, vec, rows):
    """With AVX2's 16 registers of 8 lanes the accumulators fit 8: a 64-wide row is all of them."""
    from lowbit.lowering import target

    monkeypatch.setattr(target, "host_cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    assert dot_row_block(m, n, vec) == rows


# ----------------------------------------------------------------------------------------------------
# fusion
# ----------------------------------------------------------------------------------------------------

def build_short_sum(dtype: str, extent: int, axis: int):
    kb = KernelBuilder(f"short_sum_{dtype}_{extent}_{axis}")
    shape = [4, extent, 32] if axis == 1 else [4, 32, extent]
    x = kb.tensor_param("x", dtype, shape)
    out = kb.tensor_param("out", dtype, [4, 32])
    s = kb.sum(kb.load(x, [0, 0, 0], shape, name="t"), axis, name="s")
    kb.store(out, kb.mul(s, 3), [0, 0])
    return kb.build()


@pytest.mark.parametrize("dtype", ["u32", "f32"])
@pytest.mark.parametrize("extent,axis", [(3, 1), (5, 2), (SMALL_REDUCE, 1), (SMALL_REDUCE + 1, 1)])
def test_short_sums_fuse_into_their_consumer(rng, dtype, extent, axis):
    kernel = build_short_sum(dtype, extent, axis)
    fused = extent <= SMALL_REDUCE
    assert ("s" in plan_inlining(kernel, LANES).lazy) == fused
    shape = (4, extent, 32) if axis == 1 else (4, 32, extent)
    if dtype == "u32":
        x = rng.integers(0, 2 ** 32, size=shape, dtype=np.uint64).astype(np.uint32)   # sums wrap
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    ref, out, ck = _run_both(kernel, {"x": x, "out": np.zeros((4, 32), x.dtype)})
    assert (re.search(r"\bs = T\.alloc_buffer", ck.text) is None) == fused
    # the fused sum adds in index order, as the interpreter (numpy) does for so few terms: bit for bit
    np.testing.assert_array_equal(_bits(out["out"]), _bits(ref["out"]))


def build_nan_dequant():
    """8-bit codes in u32 words: value = bits placed under an f32 exponent, code 127 -> NaN (a value used by
    two fused elementwise instructions, like the e4m3 dequant)."""
    kb = KernelBuilder("nan_dequant")
    w = kb.tensor_param("w", "u32", [64])
    out = kb.tensor_param("out", "f32", [64])
    code = kb.and_(kb.shr(kb.load(w, [0], [64], name="words"), 5), 255, name="code")
    is_nan = kb.eq(code, 127, name="is_nan")
    value = kb.view(kb.or_(kb.shl(code, 15), 0x3F800000), "f32", name="value")
    kb.store(out, kb.where(is_nan, kb.full([64], float("nan"), "f32"), value), [0])
    return kb.build()


def test_a_value_read_twice_at_one_element_is_fused(rng):
    kernel = build_nan_dequant()
    assert "code" in plan_inlining(kernel, LANES).lazy
    words = rng.integers(0, 2 ** 32, size=64, dtype=np.uint64).astype(np.uint32)
    words[:8] = (127 << 5) | np.arange(8, dtype=np.uint32)           # some NaN codes
    ref, out, ck = _run_both(kernel, {"w": words, "out": np.zeros(64, np.float32)})
    assert "code = T.alloc_buffer" not in ck.text
    assert np.isnan(out["out"][:8]).all()
    np.testing.assert_array_equal(_bits(out["out"])[8:], _bits(ref["out"])[8:])


def build_unpack_dot(bm: int, bn: int = 32, bk: int = 64):
    """c = a @ ((codes - 8) * 0.5) with 4-bit codes unpacked from u32 words [K, N / 8] inside the K loop:
    the unpack is the dot's b operand."""
    kb = KernelBuilder(f"unpack_dot_{bm}")
    a = kb.tensor_param("a", "f32", ["M", "K"])
    wp = kb.tensor_param("wp", "u32", ["K", bn // 8])
    c = kb.tensor_param("c", "f32", ["M", bn], intent="out")
    kb.set_grid(f"cdiv(M, {bm})")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bm, bn], "f32", name="acc")], iv_name="k") as loop:
        k = loop.iv
        words = kb.load(wp, [k, 0], [bk, bn // 8], name="words")
        shifts = kb.mul(kb.cast(kb.arange(0, 8), "u32"), 4, name="shifts")
        codes = kb.reshape(kb.and_(kb.shr(kb.expand_dims(words, 2), shifts), 15), [bk, bn], name="codes")
        w = kb.mul(kb.sub(kb.cast(codes, "f32"), 8.0), 0.5, name="w")
        ta = kb.load(a, [m0, k], [bm, bk], name="ta")
        loop.yield_([kb.dot(ta, w, loop.args[0])])
    kb.store(c, loop.results[0], [m0, 0])
    return kb.build()


@pytest.mark.parametrize("bm", [4, 8])
def test_costly_dot_operand_is_computed_once_per_tile_on_cpu(bm):
    """The unpack + dequant chain costs more than REPEAT_BUDGET per element: with more than one block of
    rows per tile (bm = 8: two blocks of 4) the CPU plan computes it once into a buffer; with one block
    (bm = 4) it stays fused (each element computed once, shared by the block's rows). CUDA keeps it fused."""
    assert REPEAT_BUDGET < 4
    kernel = build_unpack_dot(bm)
    cpu, cuda = plan_inlining(kernel, LANES), plan_inlining(kernel)
    assert ("w" in cpu.lazy) == (bm // dot_row_block(bm, 32, LANES) == 1)
    assert "w" in cuda.lazy


def test_dot_operand_the_generator_computes_once_stays_fused():
    """A ``dot`` whose ``b`` the code generator computes once for all rows (``b_once``: the bf16 pair dot)
    keeps its unpack fused at any row count; the predicate sees the dot and the kernel's definitions."""
    kernel = build_unpack_dot(8)
    seen = []

    def once(dot, defs):
        seen.append((dot.b.name, type(defs.get(dot.b.name)).__name__))
        return True

    assert "w" not in plan_inlining(kernel, LANES).lazy
    assert "w" in plan_inlining(kernel, LANES, once).lazy
    assert ("w", "Binary") in seen
    assert "w" not in plan_inlining(kernel, LANES, lambda dot, defs: False).lazy


@pytest.mark.parametrize("bm,m,k", [(4, 4, 128), (4, 3, 128), (8, 13, 192), (1, 2, 64)])
def test_unpack_dot_micro_kernel(rng, bm, m, k):
    """Row blocks (bm 4 and 8), a partial block at the edge of M (m = 3, 13), a GEMV tile (bm 1): every
    variant against the interpreter, within twice the f32 summation bound of a k-term dot."""
    kernel = build_unpack_dot(bm)
    codes = rng.integers(0, 16, size=(k, 32)).astype(np.uint32)
    words = np.bitwise_or.reduce(codes.reshape(k, 4, 8) << (4 * np.arange(8, dtype=np.uint32)), axis=2)
    args = {"a": rng.standard_normal((m, k)).astype(np.float32), "wp": words.astype(np.uint32),
            "c": np.zeros((m, 32), np.float32)}
    ref, out, ck = _run_both(kernel, args)
    w = (codes.astype(np.float64) - 8) * 0.5
    bound = 2 * k * U32 * (np.abs(args["a"].astype(np.float64)) @ np.abs(w))
    assert np.all(np.abs(out["c"].astype(np.float64) - ref["c"].astype(np.float64)) <= bound)
    np.testing.assert_allclose(ref["c"], args["a"].astype(np.float64) @ w, rtol=1e-5, atol=1e-4)
    text = ck.text
    if bm == 1:     # GEMV tile: the fused unpack's two vectors along N are unrolled (constant shifts and word
        # offsets), no row block; its K loop is not: each K step reads the next word at the same shifts
        # (words hold 8 codes along N), so there is nothing to fold (unpack_period 1)
        vectors = f"for axo2 in T.unroll({32 // host_cpu().lanes(32)}):"
        assert vectors in text and "_blk" not in text
        assert "T.unroll(" not in text.replace(vectors, "")
    else:           # row blocks through a register block; with a partial block, a's checked path is vectorized too
        assert "acc_1_blk" in text or re.search(r"\w+_blk = T\.alloc_buffer", text)
        assert text.count("T.vectorized") >= 4
