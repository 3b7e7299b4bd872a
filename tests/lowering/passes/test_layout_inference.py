"""Layout inference (pass ``infer-layouts``): target fragments, propagation rules, conversions, conflicts,
determinism, linear work, and translation validation through the interpreter."""
from __future__ import annotations

import importlib.util
import pathlib
import re

import numpy as np
import pytest

from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, print_kernel
from lowbit.ir import nodes as n
from lowbit.layout import column_local, local, reduce, spatial
from lowbit.lowering.passes import run_passes
from lowbit.lowering.passes.layout_rules import replicate, view_layout
from lowbit.lowering.target import parse_target

_spec = importlib.util.spec_from_file_location("lowbit_validate", pathlib.Path(__file__).with_name("lowbit_validate.py"))
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)

TARGETS = ("triton:cpu", "triton:sm_90", "tvm:llvm")


def values(kernel: n.Kernel) -> dict[str, n.Value]:
    out = {}
    for ins in kernel.walk():
        for v in ins.outputs:
            out[v.name] = v
        if isinstance(ins, n.For):
            out.update({v.name: v for v in ins.iter_args})
    return out


def infer(kernel, target="triton:sm_90"):
    return run_passes(kernel, parse_target(target), ["infer-layouts"])


def gemm_f16(bm=16, bn=32, bk=16):
    kb = KernelBuilder("gemm")
    a = kb.tensor_param("a", "f16", ["M", "K"])
    b = kb.tensor_param("b", "f16", ["K", "N"])
    c = kb.tensor_param("c", "f32", ["M", "N"], intent="out")
    kb.set_grid(f"cdiv(M, {bm})", f"cdiv(N, {bn})")
    m0, n0 = kb.mul(kb.program_id(0), bm, name="m0"), kb.mul(kb.program_id(1), bn, name="n0")
    with kb.for_range(0, kb.symbol("K"), bk, [kb.zeros([bm, bn], "f32", name="acc")], iv_name="k") as loop:
        ta = kb.load(a, [m0, loop.iv], [bm, bk], name="ta")
        tb = kb.load(b, [loop.iv, n0], [bk, bn], name="tb")
        loop.yield_([kb.dot(ta, tb, loop.args[0], name="acc_next")])
    kb.store(c, loop.results[0], [m0, n0])
    return kb.build()


def row_softmax(bm=4, bn=32):
    kb = KernelBuilder("softmax")
    x = kb.tensor_param("x", "f32", ["M", "N"])
    o = kb.tensor_param("o", "f32", ["M", "N"], intent="out")
    kb.set_grid(f"cdiv(M, {bm})")
    row = kb.mul(kb.program_id(0), bm, name="row")
    t = kb.load(x, [row, 0], [bm, bn], other=float("-inf"), name="t")
    m = kb.max(t, 1, keepdims=True, name="m")
    e = kb.exp(kb.sub(t, m), name="e")
    kb.store(o, kb.div(e, kb.sum(e, 1, keepdims=True, name="s")), [row, 0])
    return kb.build()


# ---------------------------------------------------------------------------------------------------- targets
def test_cuda_dot_gets_mma_fragments_scaled_by_warps():
    k = infer(gemm_f16(bm=32, bn=64, bk=32)).kernel
    v = values(k)
    fa = column_local(2, 2).spatial(8, 4).local(1, 2)           # mma.m16n8k16 A, B, C fragments (PTX ISA)
    fb = local(2, 1).column_spatial(4, 8).local(2, 1)
    fc = local(2, 1).spatial(8, 4).local(1, 2)
    # 4 warps, all along N (64 / 8 = 8 atoms divide by 4): wm = 1, wn = 4; repeats rm = 2, rn = 2, rk = 2
    assert v["acc_next"].type.layout == spatial(1, 4) * local(2, 2) * fc
    assert v["ta"].type.layout == replicate(4, 2) * local(2, 2) * fa
    assert v["tb"].type.layout == spatial(1, 4) * local(2, 2) * fb
    # the accumulator's loop-carried value, its init and the loop result share the C layout
    assert v["acc"].type.layout == v["acc.1"].type.layout == v["acc_next"].type.layout
    for name in ("ta", "tb", "acc_next"):
        assert v[name].type.layout.spatial_size == 128


def test_fragment_facts_match_ptx():
    fa = column_local(2, 2).spatial(8, 4).local(1, 2)
    fb = local(2, 1).column_spatial(4, 8).local(2, 1)
    lane = 5                                                        # groupID 1, threadID_in_group 1
    assert fa.worker_indices(lane).tolist() == [[1, 2], [1, 3], [9, 2], [9, 3], [1, 10], [1, 11], [9, 10], [9, 11]]
    assert fb.worker_indices(lane).tolist() == [[2, 1], [3, 1], [10, 1], [11, 1]]


def test_cpu_layouts_put_lanes_on_the_contiguous_axis():
    target = parse_target("tvm:llvm")
    lanes = target.vector_bytes // 4
    k = infer(row_softmax(bm=4, bn=64), "tvm:llvm").kernel
    t = values(k)["t"].type.layout
    assert t.spatial_size == target.workers
    table = t.index_table()                                         # [worker, local, (i, j)]
    # within a thread, consecutive lanes hold consecutive elements of a row, for every local slot
    for thread in range(target.num_threads):
        w = thread * lanes
        rows = table[w:w + lanes]
        assert (rows[:, :, 0] == rows[0, :, 0]).all()
        assert (rows[:, :, 1] == rows[0, :, 1] + np.arange(lanes)[:, None]).all()
    # local slots step by the vector width along the row
    assert (np.diff(table[0, :, 1])[: 64 // lanes - 1] == lanes).all()


# ---------------------------------------------------------------------------------------------------- rules
def test_reduce_and_broadcast_use_replication():
    k = infer(row_softmax(), "triton:sm_90").kernel
    v = values(k)
    lt = v["t"].type.layout
    assert v["m"].type.layout == reduce(lt, [1], keepdims=True)
    assert v["m"].type.layout.replication > 1
    assert v["e"].type.layout == lt and v["s"].type.layout == reduce(lt, [1], keepdims=True)


def test_before_and_after_text():
    k = row_softmax()
    before = print_kernel(k)
    assert "layout=" not in before
    assert "%m = max(%t, axis=1, keepdims=true) : f32[4, 1]\n" in before
    after = print_kernel(infer(k, "triton:cpu").kernel)
    # every register tile now carries a layout; scalars do not
    for line in after.splitlines():
        if re.search(r"^\s+%.* : (f32|bool|i32)\[", line):
            assert "layout=RegisterLayout(" in line, line
    assert "%row = mul(%pid0, %c) : i32\n" in after
    lay = values(infer(k, "triton:cpu").kernel)["t"].type.layout
    assert lay == local(4, 8) * spatial(1, 4)                      # 4 lanes along the row, 8 slots apart
    assert re.search(r"%t = load\(%x, \[%row, %c\.\d\], other=%c\.\d\) : f32\[4, 32\] layout=RegisterLayout\("
                     r"shape=\[4, 32\], mode_shape=\[4, 8, 4\], spatial_modes=\[2\], local_modes=\[0, 1\]\)", after)


def test_view_keeps_each_workers_bits():
    lay = spatial(4, 2).local(1, 8)                                 # 8 u8 per worker along the row
    assert view_layout(lay, 8, 32) == spatial(4, 2).local(1, 2)
    assert view_layout(lay, 8, 4) == spatial(4, 2).local(1, 16)
    assert view_layout(spatial(4, 8), 32, 8) == spatial(4, 8).local(1, 4)   # a spatial row splits locally
    assert view_layout(spatial(4, 8), 8, 32) is None                         # bits of 4 workers: impossible


def test_pinned_annotations_are_kept_and_propagated():
    kb = KernelBuilder("pin")
    x = kb.tensor_param("x", "f32", ["N"])
    o = kb.tensor_param("o", "f32", ["N"], intent="out")
    kb.set_grid(1)
    pinned = spatial(8).local(4)
    t = kb.load(x, [0], [32], layout=pinned, name="t")
    kb.store(o, kb.exp(kb.mul(t, 2.0), name="e"), [0])
    k = infer(kb.build(), "triton:sm_90").kernel
    v = values(k)
    assert v["t"].type.layout == pinned and v["e"].type.layout == pinned


def test_deterministic_and_idempotent():
    k = gemm_f16()
    first = infer(k).kernel
    assert infer(k).kernel == first
    assert print_kernel(infer(first).kernel) == print_kernel(first)


# ---------------------------------------------------------------------------------------------------- conflicts
def masks_kernel():
    """One index vector masks two unrelated tiles along different axes: its layouts disagree."""
    kb = KernelBuilder("masks")
    x = kb.tensor_param("x", "f32", ["M", "N"])
    z = kb.tensor_param("z", "f32", ["N", "P"])
    o1 = kb.tensor_param("o1", "f32", ["M", "N"], intent="out")
    o2 = kb.tensor_param("o2", "f32", ["N", "P"], intent="out")
    kb.set_grid(1)
    lim = kb.symbol("N")
    r = kb.arange(0, 32, name="r")
    mx = kb.broadcast_to(kb.lt(kb.expand_dims(r, 0), lim), [64, 32])
    mz = kb.broadcast_to(kb.lt(kb.expand_dims(r, 1), lim), [32, 16])
    kb.store(o1, kb.load(x, [0, 0], [64, 32], mask=mx, other=-1.0), [0, 0])
    kb.store(o2, kb.load(z, [0, 0], [32, 16], mask=mz, other=-2.0), [0, 0])
    return kb.build()


@pytest.mark.parametrize("target", TARGETS)
def test_disagreeing_derived_layouts_get_an_explicit_conversion(target):
    low = V.validate_pass(masks_kernel(), "infer-layouts", target, sizes={"M": 50, "N": 30, "P": 16})
    text = print_kernel(low.kernel)
    conversions = [ins for ins in low.kernel.walk() if isinstance(ins, n.Reshape) and ins.x.shape == ins.result.shape]
    assert len(conversions) == low.facts["infer-layouts"]["conversions"] >= 1
    for c in conversions:
        assert c.x.type.layout != c.result.type.layout
        assert re.search(rf"%{re.escape(c.result.name)} = reshape\(%{re.escape(c.x.name)}\) : ", text)


def test_conflicting_annotations_raise_naming_both():
    kb = KernelBuilder("clash")
    x = kb.tensor_param("x", "f32", ["N"])
    o = kb.tensor_param("o", "f16", ["N"], intent="out")
    kb.set_grid(1)
    t = kb.load(x, [0], [32], layout=spatial(32), name="t")
    h = kb.cast(t, "f16", layout=spatial(8).local(4), name="h")
    kb.store(o, h, [0])
    with pytest.raises(CompileError) as err:
        infer(kb.build())
    msg = str(err.value)
    assert "%h = cast" in msg and "%t is annotated" in msg and "%h is annotated" in msg
    assert "spatial_modes=[0], local_modes=[]" in msg and "local_modes=[1]" in msg
    assert "hint:" in msg


def test_pinned_dot_operand_on_cuda_is_converted_to_the_fragment():
    kb = KernelBuilder("pinned_dot")
    a = kb.tensor_param("a", "f16", ["M", "K"])
    b = kb.tensor_param("b", "f16", ["K", "N"])
    c = kb.tensor_param("c", "f32", ["M", "N"], intent="out")
    kb.set_grid(1)
    ta = kb.load(a, [0, 0], [16, 16], layout=spatial(16, 4).local(1, 4) * replicate(2, 2), name="ta")
    tb = kb.load(b, [0, 0], [16, 8], name="tb")
    kb.store(c, kb.dot(ta, tb, name="d"), [0, 0])
    low = V.validate_pass(kb.build(), "infer-layouts", "triton:sm_90", sizes={"M": 16, "N": 8, "K": 16})
    dot = next(i for i in low.kernel.walk() if isinstance(i, n.Dot))
    assert dot.a.name.startswith("ta.cvt")
    assert dot.a.type.layout == replicate(4, 2) * column_local(2, 2).spatial(8, 4).local(1, 2)


# ---------------------------------------------------------------------------------------------------- size
def test_work_is_linear_in_the_kernel_size():
    def chain(length):
        kb = KernelBuilder("chain")
        x = kb.tensor_param("x", "f32", ["N"])
        o = kb.tensor_param("o", "f32", ["N"], intent="out")
        kb.set_grid(1)
        t = kb.load(x, [0], [64])
        for i in range(length):
            t = kb.exp(kb.reshape(kb.reshape(t, [8, 8]), [64])) if i % 2 else kb.mul(t, t)
        kb.store(o, t, [0])
        return kb.build()

    for length in (50, 400):
        low = infer(chain(length), "triton:cpu")
        facts = low.facts["infer-layouts"]
        assert facts["evaluations"] <= 4 * facts["edges"]
        assert facts["edges"] <= 3 * length + 2


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("build", [gemm_f16, row_softmax, lambda: V.build_lowbit_gemm("uint4", group=16)])
def test_translation_validation(target, build):
    sizes = {"M": 21, "N": 37, "K": 40, "P": 16}
    V.validate_pass(build(), "infer-layouts", target, sizes=sizes)
