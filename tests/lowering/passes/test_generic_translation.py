"""Translation validation of the generic passes: every example kernel (``examples/*.lbk`` and the
``@lowbit.jit`` examples) and a set of builder kernels give bit-identical reference-interpreter results
before and after each of specialize, fold, simplify-indices, cse, dce and vectorize, on random inputs.

The oracle is the interpreter running the *unchanged* input kernel; the passes never see it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lowbit.dsl import load_file
from lowbit.dsl.frontend import parse_constant
from lowbit.ir import KernelBuilder
from lowbit.lowering.passes.validate import validate_kernel

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
GENERIC = ["specialize", "fold", "simplify-indices", "fold", "cse", "dce", "vectorize"]


def _example_module(name: str):
    key = f"lowbit_generic_passes_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


LBK = [("vector_add", {}), ("softmax", {}), ("lowbit_gemm", {}), ("lowbit_gemm", {"W": "int3", "G": "64"}),
       ("lowbit_gemm", {"W": "float4_e2m1", "G": "16", "BK": "64"}), ("lowbit_gemm", {"W": "float6_e3m2"})]


def test_every_example_is_covered():
    covered = {name for name, _ in LBK} | {"gemm_fp16", "decode_attention"}
    present = {p.stem for p in EXAMPLES.glob("*.lbk")} | {p.stem for p in EXAMPLES.glob("*.py")}
    assert present <= covered, f"examples without translation validation: {sorted(present - covered)}"


@pytest.mark.parametrize("name,consts", LBK, ids=[f"{n}-{'-'.join(c.values()) or 'default'}" for n, c in LBK])
def test_kernel_file_examples(name, consts):
    constants = {k: parse_constant(k, v) for k, v in consts.items()}
    kernel = load_file(EXAMPLES / f"{name}.lbk").compile(constants=constants).ir
    report = validate_kernel(kernel, "tvm:llvm", GENERIC, trials=2, seed=3)
    assert report.ok, report.format()


@pytest.mark.parametrize("name,constants", [("gemm_fp16", {}), ("gemm_fp16", {"BM": 16, "BK": 16}),
                                            ("decode_attention", {}), ("decode_attention", {"KV": "float4_e2m1"})])
def test_jit_examples(name, constants):
    kernel = getattr(_example_module(name), name).ir(**constants)
    report = validate_kernel(kernel, "triton:cpu", GENERIC, trials=2, seed=5)
    assert report.ok, report.format()


# ----------------------------------------------------------------------------------------------------
# builder kernels exercising what the examples do not: shared memory, branches, scalar params, index
# arithmetic with floordiv / mod / minimum, unspecialized constants, loops with constant trip counts
# ----------------------------------------------------------------------------------------------------

def build_smem_gemm(bm=16, bn=16, bk=8):
    kb = KernelBuilder("smem_gemm")
    a = kb.tensor_param("a", "f16", ["M", "K"])
    b = kb.tensor_param("b", "f16", ["K", "N"])
    c = kb.tensor_param("c", "f32", ["M", "N"], intent="out")
    kb.set_grid(f"cdiv(M, {bm})", f"cdiv(N, {bn})")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    sa = kb.alloc_shared("f16", [2, bm, bk], name="sa")
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bm, bn], "f32")]) as loop:
        stage = kb.mod(kb.floordiv(loop.iv, bk), 2, name="stage")
        sl = kb.shared_slice(sa, [stage, 0, 0], [bm, bk])
        kb.copy_to_shared(sl, a, [m0, loop.iv])
        kb.barrier()
        ta = kb.load_shared(sl)
        ta2 = kb.load_shared(sl)                     # a duplicate read CSE may merge (no write in between)
        tb = kb.load(b, [loop.iv, n0], [bk, bn])
        acc = kb.dot(ta, tb, loop.args[0])
        loop.yield_([kb.add(acc, kb.dot(kb.sub(ta, ta2), tb))])
    kb.store(c, loop.results[0], [m0, n0])
    return kb.build()


def build_index_soup(block=8):
    """Offsets built from floordiv / mod / minimum / maximum of program ids, loop variables and sizes."""
    kb = KernelBuilder("index_soup")
    x = kb.tensor_param("x", "i32", ["R", "C"])
    y = kb.tensor_param("y", "i32", ["R", "C"], intent="inout")
    kb.set_grid("cdiv(R, 2)", "2")
    pid, q = kb.program_id(0), kb.program_id(1)
    row = kb.floordiv(kb.add(kb.mul(pid, 4), kb.mul(q, 2)), 2, name="row")        # 2*pid + q
    with kb.for_range(0, kb.symbol("C"), block) as loop:
        j = loop.iv
        col = kb.add(kb.mul(kb.floordiv(j, block), block), kb.mod(kb.add(j, block * 3), block), name="col")  # j
        lim = kb.minimum(kb.add(j, block), kb.symbol("C"), name="lim")
        t = kb.load(x, [row, col], [1, block], other=-7)
        shift = kb.sub(lim, j, name="width")                                          # min(block, C - j)
        width = kb.broadcast_to(shift, [1, block])
        kb.store(y, kb.add(t, width), [row, kb.maximum(col, 0)])
        nonneg = kb.ge(j, 0)                                                         # always true
        kb.begin_if(nonneg)
        kb.store(y, kb.add(t, 1), [row, col])
        kb.begin_else()
        kb.store(y, kb.sub(t, 1), [row, col])
        kb.end_if()
        loop.yield_([])
    return kb.build()


def build_branchy_scalar():
    kb = KernelBuilder("branchy")
    x = kb.tensor_param("x", "i32", ["N"])
    out = kb.tensor_param("out", "i32", ["N"], intent="out")
    bias = kb.scalar_param("bias", "i32")
    kb.constant("B")                                  # unspecialized: bound by specialize from ctx.constants
    kb.set_grid("cdiv(N, 8)")
    pid = kb.program_id(0)
    off = kb.mul(pid, 8, name="off")
    t = kb.load(x, [off], [8], name="t")
    zero = kb.mul(t, 0)                               # folds to 0
    kb.begin_if(kb.eq(kb.mod(pid, 2), 0))
    even = kb.add(kb.mul(t, kb.symbol("B")), zero, name="even")
    kb.begin_else([even])
    odd = kb.add(kb.add(t, bias), kb.const(0), name="odd")
    (r,) = kb.end_if([odd], names=["r"])
    with kb.for_range(0, 1, 1, [r]) as one:          # one trip: inlined by fold
        one.yield_([kb.add(one.args[0], kb.mul(kb.const(3), kb.const(-4)))])
    with kb.for_range(5, 5, 1, [one.results[0]]) as none:  # zero trips
        none.yield_([kb.sub(none.args[0], 100)])
    kb.store(out, none.results[0], [off])
    return kb.build()


def build_wrapping_constants():
    """Constant arithmetic that wraps, floors and rounds: fold must reproduce the interpreter bit for bit."""
    kb = KernelBuilder("wrapping")
    out8 = kb.tensor_param("o8", "i8", [4], intent="out")
    outf = kb.tensor_param("of", "f16", [4], intent="out")
    kb.set_grid(1)
    i8 = [kb.add(kb.const(127, "i8"), kb.const(1, "i8")), kb.floordiv(kb.const(-7, "i8"), kb.const(2, "i8")),
          kb.mod(kb.const(-7, "i8"), kb.const(3, "i8")), kb.cast(kb.const(300.7, "f32"), "i8")]
    f16 = [kb.cast(kb.const(1.0009765625 + 2 ** -11, "f32"), "f16"),
           kb.add(kb.const(65504.0, "f16"), kb.const(32.0, "f16")),
           kb.sqrt(kb.const(2.0, "f16")), kb.cast(kb.const(-3, "i32"), "f16")]
    for out, vals in ((out8, i8), (outf, f16)):
        tiles = [kb.reshape(kb.broadcast_to(v, [1]), [1]) for v in vals]
        for i, t in enumerate(tiles):
            kb.store(out, t, [i])
    return kb.build()


BUILDERS = {"smem_gemm": build_smem_gemm, "index_soup": build_index_soup, "branchy": build_branchy_scalar,
            "wrapping": build_wrapping_constants}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_kernels(name):
    kernel = BUILDERS[name]()
    constants = {"B": 3} if name == "branchy" else None
    report = validate_kernel(kernel, "tvm:llvm", GENERIC, constants=constants, trials=3, seed=11)
    assert report.ok, report.format()


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("pass_name", ["fold", "simplify-indices", "cse", "dce"])
def test_each_pass_alone(name, pass_name):
    """Each pass on its own (not only after the others have normalized the IR)."""
    kernel = BUILDERS[name]()
    passes = ["specialize", pass_name] if name == "branchy" else [pass_name]
    constants = {"B": 3} if name == "branchy" else None
    report = validate_kernel(kernel, "tvm:llvm", passes, constants=constants, trials=2, seed=2)
    assert report.ok, report.format()


def test_divisibility_promise_keeps_results():
    """With K and N promised to be multiples of the tile sizes, more axes are proven in bounds; the
    interpreter (which raises on an unchecked out-of-bounds access) confirms every proof on such shapes."""
    kernel = getattr(_example_module("gemm_fp16"), "gemm_fp16").ir()
    from lowbit.lowering.passes import run_passes
    from lowbit.lowering.target import parse_target

    options = {"divisibility": {"M": 32, "N": 32, "K": 32}}
    lowered = run_passes(kernel, parse_target("tvm:llvm"), GENERIC, options=options).kernel
    accesses = [ins for ins in lowered.walk() if ins.opcode in ("load", "store")]
    assert all(ins.checked == (False, False) for ins in accesses)
    import numpy as np
    from lowbit.ir import interpret

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 96)).astype(np.float16)
    b = rng.standard_normal((96, 32)).astype(np.float16)
    want = interpret(kernel, {"a": a, "b": b, "c": np.zeros((64, 32), np.float16)})["c"]
    got = interpret(lowered, {"a": a, "b": b, "c": np.zeros((64, 32), np.float16)})["c"]
    np.testing.assert_array_equal(got, want)
