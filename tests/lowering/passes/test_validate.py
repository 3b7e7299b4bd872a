"""Translation validation (``lowbit.lowering.passes.validate`` and ``lowbit check FILE --validate``): broken
passes registered for the test are found and reported (pass, output, max error, IR diff); re-stored
parameters go through ``ctx.param_formats``; random shapes respect the kernel's divisibility needs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from lowbit.dsl.check_command import main as check_main
from lowbit.ir import Binary, Constant, Full, KernelBuilder, Load, Store, Value
from lowbit.lowering.passes import PASSES, register_pass
from lowbit.lowering.passes.body_rewriter import BodyRewriter
from lowbit.lowering.passes.manager import _DEFAULT_PIPELINES
from lowbit.lowering.passes.validate import choose_shape_bindings, compare, validate_kernel

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def test_pass():
    """Register passes for one test; unregister afterwards."""
    names = []

    def register(name, fn):
        names.append(name)
        register_pass(name, "a pass registered by a test")(fn)

    yield register
    for name in names:
        PASSES.pop(name, None)


def build_add_five():
    kb = KernelBuilder("add_five")
    x = kb.tensor_param("x", "i32", ["N"])
    out = kb.tensor_param("out", "i32", ["N"], intent="out")
    kb.set_grid("cdiv(N, 16)")
    off = kb.mul(kb.program_id(0), 16, name="off")
    kb.store(out, kb.add(kb.load(x, [off], [16], name="t"), 5, name="r"), [off])
    return kb.build()


class _BumpConstant(BodyRewriter):
    def visit(self, ins):
        if isinstance(ins, (Constant, Full)) and ins.value == 5:
            return [replace(ins, value=6)]
        return [self.default(ins)]


def test_a_wrong_pass_is_reported_with_output_error_and_diff(test_pass):
    test_pass("test-bump-constant", lambda kernel, ctx: _BumpConstant().run(kernel))
    report = validate_kernel(build_add_five(), "tvm:llvm", ["fold", "test-bump-constant", "dce"], trials=2)
    assert not report.ok
    m = report.mismatch
    assert (m.pass_name, m.position, m.output, m.max_error) == ("test-bump-constant", 2, "out", 1.0)
    assert m.differing == m.shape_bindings["N"]          # every element is off by one
    assert "-  %c.2 = full(5) : i32[16]" in m.ir_diff and "+  %c.2 = full(6) : i32[16]" in m.ir_diff
    text = report.format()
    assert "FAILED at pass 'test-bump-constant' (#2 of 3)" in text
    assert f"output 'out': {m.differing} of {m.differing} element(s) differ from the input kernel's, max error 1" \
        in text and "IR diff:" in text


def test_a_crashing_pass_and_a_wrong_bounds_proof_are_reported(test_pass):
    def crash(kernel, ctx):
        raise RuntimeError("boom")

    class _Unchecked(BodyRewriter):
        def visit(self, ins):
            if isinstance(ins, (Load, Store)):
                return [replace(ins, checked=(False,))]
            return [self.default(ins)]

    test_pass("test-crash", crash)
    test_pass("test-unchecked", lambda kernel, ctx: _Unchecked().run(kernel))
    report = validate_kernel(build_add_five(), "tvm:llvm", ["fold", "test-crash"])
    assert not report.ok and report.mismatch.pass_name == "test-crash"
    assert "crashed: RuntimeError: boom" in report.mismatch.detail
    # N is chosen so that the last tile is partial (the bindings are random): an unchecked access faults
    reports = [validate_kernel(build_add_five(), "tvm:llvm", ["test-unchecked"], seed=s) for s in range(4)]
    failed = [r for r in reports if not r.ok]
    assert failed, "some random N should not be a multiple of 16"
    for r in failed:
        assert r.mismatch.pass_name == "test-unchecked"
        assert "the interpreter fails after this pass" in r.mismatch.detail and "unchecked" in r.mismatch.detail
        assert r.mismatch.shape_bindings["N"] % 16


@dataclass(frozen=True)
class OffsetFormat:
    """A toy storage format: stored = codes + offset (unpack subtracts ``unpack_offset``)."""

    offset: int
    unpack_offset: int

    def pack(self, codes):
        return (codes.astype(np.int64) + self.offset).astype(np.int32)

    def unpack(self, storage, shape):
        assert tuple(storage.shape) == tuple(shape)
        return (storage.astype(np.int64) - self.unpack_offset).astype(np.int32)


def _restore(unpack_offset):
    """A pass storing x and out as codes + 7: loads subtract 7, stores add 7."""

    def run(kernel, ctx):
        seven = {}

        class _Rewrite(BodyRewriter):
            def visit(self, ins):
                if isinstance(ins, Load) and ins.tensor.name == "x":
                    raw = Value(ins.result.name + ".raw", ins.result.type)
                    k = Value(ins.result.name + ".k", ins.result.type)
                    return [replace(ins, result=raw), Full(k, 7), Binary(ins.result, "sub", raw, k)]
                if isinstance(ins, Store) and ins.tensor.name == "out":
                    k = Value(ins.value.name + ".k", ins.value.type)
                    bumped = Value(ins.value.name + ".stored", ins.value.type)
                    return [Full(k, 7), Binary(bumped, "add", ins.value, k), replace(ins, value=bumped)]
                return [self.default(ins)]

        out = _Rewrite().run(kernel)
        ctx.param_formats["x"] = OffsetFormat(7, 7)
        ctx.param_formats["out"] = OffsetFormat(7, unpack_offset)
        return out

    return run


def test_restored_parameters_go_through_their_formats(test_pass):
    test_pass("test-offset-storage", _restore(7))
    test_pass("test-offset-storage-bad", _restore(6))
    good = validate_kernel(build_add_five(), "tvm:llvm", ["test-offset-storage", "fold", "cse", "dce"])
    assert good.ok, good.format()
    bad = validate_kernel(build_add_five(), "tvm:llvm", ["test-offset-storage-bad"])
    assert not bad.ok and bad.mismatch.output == "out" and bad.mismatch.max_error == 1.0


def test_shape_bindings_respect_divisibility_needs():
    kb = KernelBuilder("needs")
    w = kb.tensor_param("w", "f32", ["K", "N"])
    s = kb.tensor_param("s", "f32", ["K // 32", "N"])
    q = kb.tensor_param("q", "f32", ["H", "HKV"])
    kb.set_grid("cdiv(N, 16)", "H")
    ratio = kb.floordiv(kb.symbol("H"), kb.symbol("HKV"))             # H must be a multiple of HKV
    with kb.for_range(0, kb.symbol("K"), 64) as loop:
        kb.store(w, kb.load(w, [loop.iv, 0], [1, 1]), [ratio, 0])
        loop.yield_([])
    kb.store(s, kb.load(q, [0, 0], [1, 1]), [0, 0])
    kernel = kb.build()
    rng = np.random.default_rng(0)
    for _ in range(30):
        b = choose_shape_bindings(kernel, rng)
        assert b["K"] % 32 == 0 and 32 <= b["K"] <= 4 * 64
        assert b["H"] % b["HKV"] == 0
        assert 1 <= b["N"] <= 48                                    # a few 16-wide tiles


def test_compare_is_bitwise_with_nan_matching_nan():
    a = np.array([0.0, np.nan, 1.0, -0.0], np.float32)
    assert compare(a, a.copy()) == (0, 0.0)
    assert compare(a, np.array([-0.0, np.nan, 1.0, -0.0], np.float32)) == (1, 0.0)   # -0.0 is not 0.0
    assert compare(a, np.array([0.0, np.nan, 1.5, -0.0], np.float32)) == (1, 0.5)
    assert compare(a, np.array([0.0, np.nan, 1.5, -0.0], np.float32), atol=0.5)[0] == 0
    assert compare(a, np.array([0.0, 1.0, 1.0, -0.0], np.float32))[1] == np.inf


def test_check_command_validate(capsys, test_pass, monkeypatch):
    rc = check_main([str(EXAMPLES / "lowbit_gemm.lbk"), "--validate", "--const", "W=int3", "--const", "G=64"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "validate lowbit_gemm for tvm:llvm" in out.out and "keep every output identical" in out.out
    rc = check_main([str(EXAMPLES / "vector_add.lbk"), "--validate", "--target", "triton:sm_90"])
    assert rc == 0 and "for triton:sm_90" in capsys.readouterr().out
    test_pass("test-bump-constant", lambda kernel, ctx: _BumpAll().run(kernel))
    monkeypatch.setitem(_DEFAULT_PIPELINES, ("tvm", "cpu"), ("specialize", "fold", "test-bump-constant"))
    rc = check_main([str(EXAMPLES / "vector_add.lbk"), "--validate"])
    out = capsys.readouterr()
    assert rc == 1
    assert "FAILED at pass 'test-bump-constant' (#3 of 3)" in out.out and "output 'out'" in out.out
    assert "translation validation failed for vector_add" in out.err
    assert check_main([str(EXAMPLES / "vector_add.lbk"), "--validate", "--target", "nope"]) == 1
    assert "unknown target" in capsys.readouterr().err


class _BumpAll(BodyRewriter):
    """Turns every float add into a subtract."""

    def visit(self, ins):
        if isinstance(ins, Binary) and ins.op == "add" and ins.result.dtype == "float32":
            return [replace(ins, op="sub")]
        return [self.default(ins)]
