"""``cse`` and ``dce``: IR before/after, memory ordering (no load merged across a store, loops that store, shared
writes and barriers), exact constant identity (-0.0 vs 0.0), layouts, dead loop-carried and branch values;
every rewrite is also translation-validated with the interpreter."""
from __future__ import annotations

import numpy as np

from lowbit.ir import KernelBuilder, interpret, print_kernel
from lowbit.layout import spatial
from lowbit.lowering.passes.cleanup import common_subexpressions as cse
from lowbit.lowering.passes.cleanup import dead_code_elimination as dce
from lowbit.lowering.passes.validate import validate_kernel


def body_text(kernel) -> str:
    return "\n".join(print_kernel(kernel).splitlines()[2:-1])


def build_memory():
    kb = KernelBuilder("mem")
    x = kb.tensor_param("x", "f32", ["N"])
    y = kb.tensor_param("y", "f32", ["N"])
    kb.set_grid(1)
    a = kb.load(x, [0], [4], name="a")
    b = kb.load(x, [0], [4], name="b")                 # same load, nothing written in between: merged
    kb.store(y, kb.add(a, b, name="s"), [0])
    c = kb.load(x, [0], [4], name="c")                 # after a store (y may alias x): not merged
    kb.store(x, kb.add(kb.add(c, a), kb.add(a, c)), [0])   # add(c, a) == add(a, c)
    with kb.for_range(0, kb.symbol("N"), 4) as loop:  # the body stores: the load before it is not reused
        d = kb.load(x, [0], [4], name="d")
        kb.store(x, d, [loop.iv])
        loop.yield_([])
    f = kb.load(y, [0], [4], name="f")
    with kb.for_range(0, 8, 4, [f]) as loop2:          # no store in the body: the load before it is reused
        e = kb.load(y, [0], [4], name="e")
        loop2.yield_([kb.add(loop2.args[0], e)])
    kb.store(y, loop2.results[0], [4])
    return kb.build()


def test_cse_respects_stores():
    kernel = build_memory()
    assert body_text(cse(kernel)) == """\
  %c = const(0) : i32
  %a = load(%x, [%c]) : f32[4]
  %s = add(%a, %a) : f32[4]
  store(%y, %s, [%c])
  %c.1 = load(%x, [%c]) : f32[4]
  %add = add(%c.1, %a) : f32[4]
  %add.2 = add(%add, %add) : f32[4]
  store(%x, %add.2, [%c])
  %N = symbol("N") : i32
  %c.2 = const(4) : i32
  for %i = %c to %N step %c.2 iter_args() {
    %d = load(%x, [%c]) : f32[4]
    store(%x, %d, [%i])
    yield
  }
  %f = load(%y, [%c]) : f32[4]
  %c.3 = const(8) : i32
  %f.2 = for %i.1 = %c to %c.3 step %c.2 iter_args(%f.1: f32[4] = %f) {
    %add.3 = add(%f.1, %f) : f32[4]
    yield %add.3
  }
  store(%y, %f.2, [%c.2])"""
    report = validate_kernel(kernel, "tvm:llvm", ["cse", "dce"], trials=3, seed=1)
    assert report.ok, report.format()


def test_cse_keeps_a_load_after_a_store_to_an_aliasing_tensor():
    """x and y are the same array: the store to y changes what the third load of x reads. Merging it with
    the first load would give x[0:4] = 4 x0 instead of (2 x0 + x0) * 2 = 6 x0."""
    kernel = build_memory()
    x0 = np.arange(1, 13, dtype=np.float32)
    for k in (kernel, cse(kernel), dce(cse(kernel))):
        buf = x0.copy()
        interpret(k, {"x": buf, "y": buf})
        np.testing.assert_array_equal(buf[:4], 6 * x0[:4])


def test_cse_with_shared_memory_writes_and_barriers():
    kb = KernelBuilder("smem")
    x = kb.tensor_param("x", "f32", [8])
    kb.set_grid(1)
    buf = kb.alloc_shared("f32", [8], name="buf")
    kb.copy_to_shared(buf, x, [0])
    r1 = kb.load_shared(buf, name="r1")
    r2 = kb.load_shared(buf, name="r2")                  # merged with r1
    kb.store_shared(buf, kb.add(r1, r2))
    r3 = kb.load_shared(buf, name="r3")                  # after a shared write: kept
    kb.barrier()
    r4 = kb.load_shared(buf, name="r4")                  # after a barrier: kept
    kb.store(x, kb.add(r3, r4), [0])
    kernel = kb.build()
    assert body_text(cse(kernel)) == """\
  %buf = alloc_shared() : f32[8] @shared
  %c = const(0) : i32
  copy_to_shared(%buf, %x, [%c])
  %r1 = load_shared(%buf) : f32[8]
  %add = add(%r1, %r1) : f32[8]
  store_shared(%buf, %add)
  %r3 = load_shared(%buf) : f32[8]
  barrier()
  %r4 = load_shared(%buf) : f32[8]
  %add.1 = add(%r3, %r4) : f32[8]
  store(%x, %add.1, [%c])"""
    report = validate_kernel(kernel, "tvm:llvm", ["cse", "dce"], trials=2)
    assert report.ok, report.format()


def test_cse_keys_are_exact():
    kb = KernelBuilder("keys")
    o = kb.tensor_param("o", "f32", [8])
    kb.set_grid(1)
    pz = kb.full([8], 0.0, "f32", name="pz")
    nz = kb.full([8], -0.0, "f32", name="nz")                       # -0.0 is not 0.0
    l1 = kb.full([8], 1.0, "f32", layout=spatial(8), name="l1")
    l2 = kb.full([8], 1.0, "f32", layout=spatial(2).local(4), name="l2")   # another layout: not merged
    t = kb.load(o, [0], [8], name="t")
    m1 = kb.minimum(t, pz, name="m1")
    m2 = kb.minimum(pz, t, name="m2")                 # min of floats is not commutative bit for bit (-0.0, 0.0)
    s1 = kb.sub(t, pz, name="s1")
    s2 = kb.sub(pz, t, name="s2")
    total = kb.add(kb.add(kb.add(m1, m2), kb.add(s1, s2)), kb.add(nz, kb.cast(kb.add(l1, kb.cast(l2, "f32",
                                                                                                    layout=spatial(8))),
                                                                                   "f32")))
    kb.store(o, total, [0])
    kernel = kb.build()
    after = cse(kernel)
    assert after == kernel        # nothing here is a common subexpression
    report = validate_kernel(kernel, "tvm:llvm", ["cse"], trials=2)
    assert report.ok, report.format()


def build_loop_values():
    kb = KernelBuilder("carried")
    x = kb.tensor_param("x", "f32", ["N"])
    out = kb.tensor_param("out", "f32", [4], intent="out")
    flag = kb.scalar_param("flag", "i32")
    kb.set_grid(1)
    zero = kb.zeros([4], "f32", name="zero")
    count0 = kb.const(0, name="count0")
    with kb.for_range(0, kb.symbol("N"), 4, [zero, zero, count0]) as loop:
        acc, aux, count = loop.args
        t = kb.load(x, [loop.iv], [4], name="t")
        acc2 = kb.add(acc, kb.mul(t, aux), name="acc2")   # aux feeds acc: kept
        aux2 = kb.add(aux, t, name="aux2")
        count2 = kb.add(count, 1, name="count2")          # only feeds itself: pruned
        loop.yield_([acc2, aux2, count2])
    kb.begin_if(kb.gt(flag, 0))                             # the branch's second result is unused
    kb.begin_else([loop.results[0], kb.neg(loop.results[1])])
    (keep, unused) = kb.end_if([loop.results[1], loop.results[0]], names=["keep", "unused"])
    kb.store(out, keep, [0])
    with kb.for_range(0, 3, 1) as dead:                     # no result, no effect: removed
        kb.load(x, [dead.iv], [4], name="dead_load")
        dead.yield_([])
    return kb.build()


EXPECTED_CARRIED = """\
  %zero = full(0.0) : f32[4]
  %N = symbol("N") : i32
  %c = const(0) : i32
  %c.1 = const(4) : i32
  %zero.3, %zero.4 = for %i = %c to %N step %c.1 iter_args(%zero.1: f32[4] = %zero, %zero.2: f32[4] = %zero) {
    %t = load(%x, [%i]) : f32[4]
    %mul = mul(%t, %zero.2) : f32[4]
    %acc2 = add(%zero.1, %mul) : f32[4]
    %aux2 = add(%zero.2, %t) : f32[4]
    yield %acc2, %aux2
  }
  %gt = gt(%flag, %c) : bool
  %keep = if %gt -> (f32[4]) {
    yield %zero.3
  } else {
    yield %zero.4
  }
  store(%out, %keep, [%c])"""


def test_dce_prunes_dead_carried_values_and_branches():
    kernel = build_loop_values()
    after = dce(kernel)
    text = body_text(after)
    assert "%count2" in body_text(kernel) and "%dead_load" in body_text(kernel)
    assert text == EXPECTED_CARRIED
    report = validate_kernel(kernel, "tvm:llvm", ["dce"], trials=3, seed=4)
    assert report.ok, report.format()


def test_dce_drops_a_carried_value_nothing_needs():
    kb = KernelBuilder("carried2")
    x = kb.tensor_param("x", "f32", ["N"])
    out = kb.tensor_param("out", "f32", [4], intent="out")
    kb.set_grid(1)
    with kb.for_range(0, kb.symbol("N"), 4, [kb.zeros([4], "f32", name="z"), kb.const(0, name="n0")]) as loop:
        acc, n = loop.args
        loop.yield_([kb.add(acc, kb.load(x, [loop.iv], [4], name="t"), name="acc2"), kb.add(n, 1, name="n2")])
    kb.store(out, loop.results[0], [0])
    after = dce(kb.build())
    (loop_ins,) = [ins for ins in after.body if ins.opcode == "for"]
    assert [v.name for v in loop_ins.inits] == ["z"]
    assert "%n2" not in body_text(after) and "%n0" not in body_text(after)
    report = validate_kernel(kb.build(), "tvm:llvm", ["dce"], trials=2)
    assert report.ok, report.format()
