"""``specialize``: constants bound into the kernel (values, symbol() -> const, folded shapes and grid), errors a
user can cause, and the default pipelines per target."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, interpret, print_kernel
from lowbit.lowering.passes import PASSES, default_pipeline, run_passes
from lowbit.lowering.passes.pipelines import FULL_PIPELINE, TARGETS, available
from lowbit.lowering.target import parse_target

TARGET = parse_target("tvm:llvm")


def build_grouped():
    kb = KernelBuilder("grouped")
    w = kb.tensor_param("w", "f32", ["K", "N"])
    s = kb.tensor_param("s", "f32", ["K // G", "N"], intent="out")
    kb.constant("G")
    kb.constant("SCALE", dtype="f32")
    kb.set_grid("cdiv(K, G)")
    g = kb.program_id(0)
    rows = kb.mul(g, kb.symbol("G"), name="rows")
    t = kb.load(w, [rows, 0], [4, 8], name="t")
    kb.store(s, kb.mul(kb.max(t, 0, keepdims=True), kb.symbol("SCALE")), [g, 0])
    return kb.build()


def test_specialize_binds_values_symbols_shapes_and_grid():
    kernel = build_grouped()
    out = run_passes(kernel, TARGET, ["specialize"], constants={"G": 4, "SCALE": 0.5}).kernel
    text = print_kernel(out)
    assert text.splitlines()[:3] == [
        "kernel grouped(%w: f32[K, N] @global in, %s: f32[K // 4, N] @global out)",
        "    constants(G: i32 = 4, SCALE: f32 = 0.5)",
        "    grid(cdiv(K, 4)) {"]
    assert '%G = const(4) : i32' in text and '%SCALE = const(0.5) : f32' in text and "symbol(" not in text
    # the specialized kernel runs without constants=, and agrees with the generic one
    w = np.arange(12 * 8, dtype=np.float32).reshape(12, 8)
    got = interpret(out, {"w": w, "s": np.zeros((3, 8), np.float32)})["s"]
    want = interpret(kernel, {"w": w, "s": np.zeros((3, 8), np.float32)}, constants={"G": 4, "SCALE": 0.5})["s"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, w.reshape(3, 4, 8).max(axis=1) * 0.5)


def test_specialize_without_constants_keeps_the_kernel():
    kernel = build_grouped()
    assert run_passes(kernel, TARGET, ["specialize"]).kernel == kernel


@pytest.mark.parametrize("constants,message", [
    ({"H": 4}, "has no constant 'H'"),
    ({"G": 2.5}, "must be an int"),
    ({"G": True}, "cannot be the bool"),
    ({"SCALE": "x"}, "must be a number"),
])
def test_specialize_errors(constants, message):
    with pytest.raises(CompileError, match=message) as info:
        run_passes(build_grouped(), TARGET, ["specialize"], constants=constants)
    assert info.value.hint


def test_specialize_refuses_to_change_a_value():
    kernel = run_passes(build_grouped(), TARGET, ["specialize"], constants={"G": 4}).kernel
    assert run_passes(kernel, TARGET, ["specialize"], constants={"G": 4}).kernel == kernel
    with pytest.raises(CompileError, match="already 4"):
        run_passes(kernel, TARGET, ["specialize"], constants={"G": 8})


def test_default_pipelines_for_every_target():
    assert set(TARGETS) == {("tvm", "cpu"), ("triton", "cpu"), ("triton", "cuda"), ("tvm", "cuda")}
    for text in ("tvm:llvm", "triton:cpu", "triton:sm_90", "tvm:cuda:sm_80"):
        names = default_pipeline(parse_target(text))
        assert names == available(FULL_PIPELINE)
        assert all(name in PASSES for name in names)
        assert names[:2] == ("specialize", "fold") and names[-1] == "vectorize"
        assert {"simplify-indices", "cse", "dce"} <= set(names)


def test_available_drops_unregistered_passes():
    assert available(("fold", "no-such-pass", "dce")) == ("fold", "dce")
