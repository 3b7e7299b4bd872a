"""The ``simplify-indices`` pass: IR before/after, in-bounds proofs (confirmed by the interpreter, which raises
on an out-of-bounds access of an unchecked axis), decided comparisons, and random index expressions whose
values must not change (interpreter before vs after, and a direct Python evaluation)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.ir import InterpreterError, KernelBuilder, interpret, print_kernel
from lowbit.lowering.passes import run_passes
from lowbit.lowering.passes.indexing import IndexAnalysis
from lowbit.lowering.target import parse_target

TARGET = parse_target("tvm:llvm")


def simplify(kernel, **kw):
    return run_passes(kernel, TARGET, ["simplify-indices"], **kw).kernel


def body_text(kernel) -> str:
    return "\n".join(print_kernel(kernel).splitlines()[2:-1])


def build_tiles():
    kb = KernelBuilder("tiles")
    x = kb.tensor_param("x", "f32", ["N"])
    kb.set_grid("cdiv(N, 256)")
    pid = kb.program_id(0)
    with kb.for_range(0, 4, 1) as loop:
        i = loop.iv
        off = kb.mul(kb.floordiv(kb.add(kb.mul(pid, 64), kb.mul(i, 64)), 64), 64, name="off")
        kb.store(x, kb.full([64], 1.0, "f32"), [off])
        loop.yield_([])
    return kb.build()


def test_floordiv_of_aligned_sum_becomes_the_sum():
    kernel = build_tiles()
    assert "%floordiv = floordiv(%add, %c.3) : i32" in body_text(kernel)
    assert body_text(simplify(kernel)) == """\
  %pid0 = program_id(axis=0) : i32
  %c = const(0) : i32
  %c.1 = const(4) : i32
  %c.2 = const(1) : i32
  for %i = %c to %c.1 step %c.2 iter_args() {
    %c.3 = const(64) : i32
    %idx = add(%pid0, %i) : i32
    %off = mul(%idx, %c.3) : i32
    %full = full(1.0) : f32[64]
    store(%x, %full, [%off])
    yield
  }"""
    n = 1000
    for kernel_ in (kernel, simplify(kernel)):
        out = interpret(kernel_, {"x": np.zeros(n, np.float32)})["x"]
        # program p writes [64 (p + i), 64 (p + i) + 64) for i < 4: everything below 64 * (cdiv(n, 256) + 3)
        np.testing.assert_array_equal(out, (np.arange(n) < 64 * (-(-n // 256) + 3)).astype(np.float32))


def build_steps():
    kb = KernelBuilder("steps")
    x = kb.tensor_param("x", "f32", ["R", "K"])
    kb.set_grid("R")
    row = kb.program_id(0, name="row")
    with kb.for_range(0, kb.symbol("K"), 32) as loop:
        k = loop.iv
        lane = kb.mod(kb.add(k, 16), 32, name="lane")         # 16: k is a multiple of 32
        blk = kb.floordiv(kb.add(k, 16), 32, name="blk")       # k // 32
        inside = kb.lt(k, kb.symbol("K"), name="inside")       # always true in the loop
        t = kb.load(x, [row, kb.add(k, lane)], [1, 16], name="t")
        kb.begin_if(inside)
        kb.store(x, t, [row, kb.mul(blk, 32)])
        kb.end_if()
        loop.yield_([])
    return kb.build()


STEPS_AFTER = """\
  %row = program_id(axis=0) : i32
  %K = symbol("K") : i32
  %c = const(0) : i32
  %c.1 = const(32) : i32
  for %i = %c to %K step %c.1 iter_args() {
    %c.2 = const(16) : i32
    %inside = const(true) : bool
    %add.2 = add(%i, %c.2) : i32
    %t = load(%x, [%row, %add.2], checked=[false, CHECKED]) : f32[1, 16]
    if %inside -> () {
      store(%x, %t, [%row, %i], checked=[false, CHECKED])
      yield
    } else {
      yield
    }
    yield
  }"""


def test_loop_step_divisibility_bounds_and_comparisons():
    kernel = build_steps()
    after = simplify(kernel)
    # row < R is proven from the grid; the column needs K % 32 == 0, which nothing promises here
    assert body_text(after) == STEPS_AFTER.replace("CHECKED", "true")
    promised = simplify(kernel, options={"divisibility": {"K": 32}})
    assert body_text(promised) == STEPS_AFTER.replace("CHECKED", "false")
    rng = np.random.default_rng(0)
    for kk in (64, 96):                  # shapes keeping the promise: the interpreter confirms every proof
        x = rng.standard_normal((3, kk)).astype(np.float32)
        want = interpret(kernel, {"x": x.copy()})["x"]
        for k in (after, promised):
            np.testing.assert_array_equal(interpret(k, {"x": x.copy()})["x"], want)
    x = rng.standard_normal((3, 40)).astype(np.float32)   # breaks the promise: caught, not silently wrong
    with pytest.raises(InterpreterError, match="unchecked"):
        interpret(promised, {"x": x})
    np.testing.assert_array_equal(interpret(after, {"x": x.copy()})["x"], interpret(kernel, {"x": x.copy()})["x"])


def test_in_bounds_proofs_from_grid_and_constant_extents():
    kb = KernelBuilder("rows")
    q = kb.tensor_param("q", "f16", ["B", "H", 64])
    o = kb.tensor_param("o", "f16", ["B", "H", 64], intent="out")
    kb.set_grid("B", "H")
    b, h = kb.program_id(0), kb.program_id(1)
    t = kb.load(q, [b, h, 0], [1, 1, 64])
    kb.store(o, t, [b, h, 0])
    kb.store(o, t, [kb.add(b, 1), h, 0])          # b + 1 may be B: stays checked
    after = simplify(kb.build())
    checks = [ins.checked for ins in after.walk() if ins.opcode in ("load", "store")]
    assert checks == [(False, False, False), (False, False, False), (True, False, False)]
    q_ = np.arange(2 * 3 * 64, dtype=np.float16).reshape(2, 3, 64)
    out = interpret(after, {"q": q_, "o": np.zeros_like(q_)})["o"]
    np.testing.assert_array_equal(out, q_)


def test_shared_subexpressions_and_kept_names():
    kb = KernelBuilder("share")
    x = kb.tensor_param("x", "i32", ["N"])
    kb.set_grid("cdiv(N, 16)")
    pid = kb.program_id(0)
    a = kb.add(kb.mul(pid, 16), 1, name="a")
    b = kb.add(kb.mul(kb.add(pid, 0), 16), 2, name="b")      # the same 16*pid, written differently
    kb.store(x, kb.full([1], 1, "i32"), [a])
    kb.store(x, kb.full([1], 2, "i32"), [b])
    assert body_text(simplify(kb.build())) == """\
  %pid0 = program_id(axis=0) : i32
  %c = const(16) : i32
  %c.1 = const(1) : i32
  %idx = mul(%pid0, %c) : i32
  %a = add(%idx, %c.1) : i32
  %c.3 = const(2) : i32
  %b = add(%idx, %c.3) : i32
  %full = full(1) : i32[1]
  store(%x, %full, [%a])
  %full.1 = full(2) : i32[1]
  store(%x, %full.1, [%b])"""


def test_only_index_arithmetic_is_cleaned_up():
    """Dead index arithmetic goes; other dead code (a load nobody uses) is left for dce."""
    kb = KernelBuilder("dead")
    x = kb.tensor_param("x", "f32", ["N"])
    kb.set_grid(1)
    kb.add(kb.mul(kb.program_id(0), 4), 1, name="unused_index")
    kb.load(x, [0], [4], name="unused_load")
    kb.store(x, kb.zeros([4], "f32"), [0])
    text = body_text(simplify(kb.build()))
    assert "%unused_load" in text and "unused_index" not in text and "program_id" not in text


def test_analysis_bounds_and_divisibility():
    kernel = build_steps()
    a = IndexAnalysis(kernel)
    k = a.exprs["i"]
    assert str(a.upper(k)) == "32*((K + 31) // 32) - 32"
    assert a.is_nonneg(a.shape_env["K"] - 1 - k)         # k <= K - 1 inside the loop
    assert not a.is_nonneg(a.shape_env["K"] - 32 - k)    # k + 32 <= K needs K % 32 == 0
    assert a.divisor(a.exprs["add.2"]) == 16
    promised = IndexAnalysis(kernel, {"K": 32})
    assert promised.is_nonneg(promised.shape_env["K"] - 32 - promised.exprs["i"])


# ----------------------------------------------------------------------------------------------------
# random index expressions: values must not change
# ----------------------------------------------------------------------------------------------------

LEAVES = ("pid", "iv", "P", "const")


@st.composite
def expressions(draw, depth=0):
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        leaf = draw(st.sampled_from(LEAVES))
        return ("const", draw(st.integers(-20, 20))) if leaf == "const" else (leaf,)
    op = draw(st.sampled_from(["add", "sub", "mul", "floordiv", "mod", "minimum", "maximum"]))
    a = draw(expressions(depth=depth + 1))
    if op in ("floordiv", "mod"):
        return (op, a, ("const", draw(st.integers(1, 9))))
    if op == "mul":
        return (op, a, ("const", draw(st.integers(-6, 9))))
    return (op, a, draw(expressions(depth=depth + 1)))


def emit(kb, e, env):
    if e[0] == "const":
        return kb.const(e[1])
    if len(e) == 1:
        return env[e[0]]
    return kb.binary(e[0], emit(kb, e[1], env), emit(kb, e[2], env))


def evaluate(e, env):
    if e[0] == "const":
        return e[1]
    if len(e) == 1:
        return env[e[0]]
    a, b = evaluate(e[1], env), evaluate(e[2], env)
    return {"add": a + b, "sub": a - b, "mul": a * b, "floordiv": a // b if b else None,
            "mod": a % b if b else None, "minimum": min(a, b), "maximum": max(a, b)}[e[0]]


@settings(max_examples=80, deadline=None)
@given(expressions(), st.integers(0, 5), st.sampled_from([1, 2, 3, 8]))
def test_random_index_expressions_keep_their_values(e, start, step):
    """out[pid, t] = e(pid, iv, P) for the t-th trip of ``for iv in range(start, start + T*step, step)``."""
    kb = KernelBuilder("rand")
    out = kb.tensor_param("out", "i32", ["P", "T"], intent="out")
    kb.set_grid("P")
    pid = kb.program_id(0)
    stop = kb.add(kb.mul(kb.symbol("T"), step), start)
    with kb.for_range(start, stop, step) as loop:
        value = emit(kb, e, {"pid": pid, "iv": loop.iv, "P": kb.symbol("P")})
        t = kb.floordiv(kb.sub(loop.iv, start), step)
        kb.store(out, kb.reshape(kb.broadcast_to(value, [1]), [1, 1]), [pid, t])
        loop.yield_([])
    kernel = kb.build()
    after = simplify(kernel)
    for p, trips in ((3, 4), (5, 2)):
        want = np.array([[evaluate(e, {"pid": i, "iv": start + j * step, "P": p}) for j in range(trips)]
                         for i in range(p)], np.int64)
        got = interpret(after, {"out": np.full((p, trips), -99, np.int32)})["out"]
        before = interpret(kernel, {"out": np.full((p, trips), -99, np.int32)})["out"]
        np.testing.assert_array_equal(before, want)
        np.testing.assert_array_equal(got, want)
    # the stores cover exactly the tensor: both axes proven in bounds
    assert [ins.checked for ins in after.walk() if ins.opcode == "store"] == [(False, False)]
