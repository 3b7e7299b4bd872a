"""What the language means: small kernels run by the reference interpreter against numpy, plus the IR
structure the rules promise (loop-carried values, if results, promotion, static branches)."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.dsl import compile_source
from lowbit.errors import CompileError
from lowbit.ir import Cast, For, If, interpret, walk


def run(src, args, **constants):
    k = compile_source(src, "t.lbk", constants=constants or None).ir
    interpret(k, args)
    return k


def test_nested_loops_carry_through_both_levels():
    src = """
def rowsum(x: f32[M, N], out: Out[f32[M]], BM: const = 2, BN: const = 4):
    grid(cdiv(M, BM))
    r = block(0) * BM
    acc = zeros([BM], f32)
    total = 0.0
    for c in range(0, N, BN):
        for j in range(0, 1):
            acc = acc + sum(load(x, [r, c], [BM, BN]), axis=1)
            total += 1.0
    store(out, acc / total * cast(cdiv(N, BN), f32), [r])
"""
    x = np.arange(5 * 10, dtype=np.float32).reshape(5, 10)
    out = np.zeros(5, np.float32)
    k = run(src, {"x": x, "out": out})
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-6)
    loops = [i for i in walk(k.body) if isinstance(i, For)]
    assert len(loops) == 2
    assert [a.type.shape for a in loops[0].iter_args] == [(2,), ()]  # acc and total, sorted by name


def test_runtime_if_inside_loop_and_names_new_in_both_branches():
    src = """
def k(x: f32[N], y: Out[f32[N]]):
    grid(1)
    acc = zeros([4], f32)
    for i in range(0, N, 4):
        t = load(x, [i], [4])
        if i % 8 == 0:
            acc = acc + t
            s = 1.0
        else:
            acc = acc - t
            s = -1.0
        acc = acc * s
    store(y, acc, [0])
"""
    x = np.arange(16, dtype=np.float32)
    y = np.zeros(16, np.float32)
    k = run(src, {"x": x, "y": y})
    acc = np.zeros(4, np.float32)
    for i in range(0, 16, 4):
        t = x[i:i + 4]
        acc, s = (acc + t, 1.0) if i % 8 == 0 else (acc - t, -1.0)
        acc = acc * s
    np.testing.assert_array_equal(y[:4], acc)
    ifs = [i for i in walk(k.body) if isinstance(i, If)]
    assert len(ifs) == 1 and len(ifs[0].results) == 2


def test_if_without_else_keeps_previous_value():
    src = """
def k(x: f32[N], y: Out[f32[N]]):
    grid(cdiv(N, 4))
    o = block(0) * 4
    t = load(x, [o], [4])
    if block(0) == 1:
        t = t * 10.0
    store(y, t, [o])
"""
    x = np.arange(12, dtype=np.float32)
    y = np.zeros(12, np.float32)
    run(src, {"x": x, "y": y})
    np.testing.assert_array_equal(y, np.where((np.arange(12) // 4) == 1, x * 10, x))


def test_static_if_on_dtype_and_ternaries():
    src = """
def k(x: W[N], y: Out[f32[N]], W: dtype = f32, SCALE: const = 2):
    grid(1)
    t = load(x, [0], [8])
    if W == f32:
        v = t
    else:
        v = cast(t, f32)
    v = v * (2.0 if SCALE > 1 else 1.0)
    first = block(0) == 0
    v = v + (1.0 if first else 0.0)
    store(y, v, [0])
"""
    x = np.arange(8, dtype=np.float32)
    y = np.zeros(8, np.float32)
    k = run(src, {"x": x, "y": y})
    np.testing.assert_array_equal(y, x * 2 + 1)
    assert not any(isinstance(i, Cast) and i.x.name == "t" for i in walk(k.body))
    codes = np.array([0, 1, 2, 3, 4, 5, 6, 7], np.uint8)
    y2 = np.zeros(8, np.float32)
    run(src, {"x": codes, "y": y2}, W="float4_e2m1")
    np.testing.assert_array_equal(y2, np.array([0, .5, 1, 1.5, 2, 3, 4, 6], np.float32) * 2 + 1)


def test_promotion_weak_literals_and_broadcasting():
    src = """
def k(a: i32[N], h: f16[N], out: Out[f16[M, N]], cmp: Out[f32[N]]):
    grid(1)
    ai = load(a, [0], [4])
    hv = load(h, [0], [4])
    mixed = ai * hv + 1          # i32 with f16 -> f16; the int literal takes f16
    rows = arange(3)[:, None]    # [3, 1] i32
    grid2 = cast(rows, f16) + mixed[None, :]
    store(out, grid2, [0, 0])
    ok = (ai > 1) & (ai < 3) | (ai == 0)
    store(cmp, where(ok, 1.0, 0.0), [0])
"""
    a = np.array([0, 1, 2, 3], np.int32)
    h = np.array([0.5, 1.5, 2.5, 3.5], np.float16)
    out = np.zeros((3, 4), np.float16)
    cmp = np.zeros(4, np.float32)
    k = run(src, {"a": a, "h": h, "out": out, "cmp": cmp})
    mixed = (a.astype(np.float16) * h + np.float16(1)).astype(np.float16)
    np.testing.assert_array_equal(out, np.arange(3, dtype=np.float16)[:, None] + mixed[None, :])
    np.testing.assert_array_equal(cmp, [1.0, 0.0, 1.0, 0.0])
    assert any(i.result.name == "mixed" and i.result.dtype == "float16" for i in walk(k.body)
               if getattr(i, "result", None) is not None)


def test_bit_unpacking_with_masks_and_shifts():
    src = """
def unpack(p: u8[N], out: Out[u8[M]]):
    grid(1)
    b = load(p, [0], [4])
    lo = b & 15
    hi = b >> 4
    store(out, lo, [0])
    store(out, hi, [4])
"""
    p = np.array([0x21, 0x43, 0x65, 0x87], np.uint8)
    out = np.zeros(8, np.uint8)
    run(src, {"p": p, "out": out})
    np.testing.assert_array_equal(out, [1, 3, 5, 7, 2, 4, 6, 8])


def test_shape_attributes_symbols_and_shared_memory():
    src = """
def k(x: f32[M, N], y: Out[f32[M, N]], B: const = 4):
    grid(cdiv(M, B))
    r = block(0) * B
    s = alloc_shared([B, 8], f32)
    for c in range(0, x.shape[1], 8):
        copy_to_shared(s, x, [r, c])
        barrier()
        t = load_shared(s)
        store(y, t * cast(N, f32), [r, c])
        barrier()
"""
    x = np.arange(6 * 12, dtype=np.float32).reshape(6, 12)
    y = np.zeros_like(x)
    run(src, {"x": x, "y": y})
    np.testing.assert_array_equal(y, x * 12)


def test_layout_annotations_reach_the_ir():
    src = """
L = spatial(4, 8).local(4, 8)

def k(x: f16[M, N], y: Out[f16[M, N]]):
    grid(1)
    t = load(x, [0, 0], [16, 64], layout=L)
    acc = zeros([16, 64], f32, layout=local(2, 1).spatial(8, 8).local(1, 8))
    store(y, cast(cast(t, f32) + acc, f16), [0, 0])
"""
    k = compile_source(src).ir
    loads = [i for i in walk(k.body) if type(i).__name__ == "Load"]
    assert loads[0].result.type.layout.shape == (16, 64)
    x = np.ones((16, 64), np.float16)
    y = np.zeros_like(x)
    interpret(k, {"x": x, "y": y})
    np.testing.assert_array_equal(x, y)


def test_scalar_arithmetic_and_compile_time_folding():
    src = """
G = 2 ** 5
def k(y: Out[i32[N]], H: const = G // 4 + 1):
    grid(1)
    n = min(H, 100) * 2      # compile time: 18
    v = block(0) + n         # run time i32 scalar
    w = v // 4 - -v % 5      # Python floor semantics in the IR
    store(y, full([1], w, i32), [0])
"""
    y = np.zeros(1, np.int32)
    run(src, {"y": y})
    v = 0 + 18
    assert y[0] == v // 4 - (-v % 5)


def test_reassigning_a_constant_kind_in_a_loop_is_an_error():
    src = """
def k(x: f32[N], W: dtype = f16):
    grid(1)
    for i in range(2):
        W = f32
"""
    with pytest.raises(CompileError, match="'W' is the dtype f16 and cannot be reassigned inside a loop"):
        compile_source(src)
