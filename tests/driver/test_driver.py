"""The compile driver on the reference-interpreter backend: launches, argument checks, caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.driver import compile_ir, resolve_target
from lowbit.errors import BackendError, CompileError, KernelArgumentError
from lowbit.ir import KernelBuilder


def scale_kernel():
    kb = KernelBuilder("scale")
    x = kb.tensor_param("x", "f32", ["N"], intent="in")
    y = kb.tensor_param("y", "f32", ["N"], intent="out")
    factor = kb.scalar_param("factor", "f32")
    kb.constant("B", 4)
    kb.set_grid("cdiv(N, B)")
    off = kb.mul(kb.program_id(0), 4)
    kb.store(y, kb.mul(kb.load(x, [off], [4]), factor), [off])
    return kb.build()


def test_launch_writes_outputs_in_place():
    compiled = compile_ir(scale_kernel(), "interpret")
    x = torch.arange(7, dtype=torch.float32)
    y = torch.zeros(7)
    compiled.launch({"x": x, "y": y, "factor": 3.0})
    assert torch.equal(y, x * 3)
    assert "kernel scale" in compiled.source


def test_memory_cache_returns_the_same_object():
    assert compile_ir(scale_kernel(), "interpret") is compile_ir(scale_kernel(), "interpret")


@pytest.mark.parametrize("args,pattern", [
    (dict(x=torch.zeros(7)), "missing y, factor"),
    (dict(x=torch.zeros(7), y=torch.zeros(7), factor=1.0, z=1), "unknown z"),
    (dict(x=torch.zeros(7, dtype=torch.float16), y=torch.zeros(7), factor=1.0), "must be a torch.float32 tensor"),
    (dict(x=torch.zeros(7, 2), y=torch.zeros(7), factor=1.0), "must have rank 1"),
    (dict(x=torch.zeros(7), y=torch.zeros(8), factor=1.0), "N = 8, but an earlier argument has N = 7"),
    (dict(x=torch.zeros(7), y=torch.zeros(7), factor=torch.zeros(2)), "must be a scalar"),
    (dict(x=[1.0], y=torch.zeros(1), factor=1.0), "must be a torch tensor or numpy array"),
    (dict(x=np.zeros(7, np.float64), y=torch.zeros(7), factor=1.0), "must be a float32 array"),
])
def test_argument_errors(args, pattern):
    compiled = compile_ir(scale_kernel(), "interpret")
    with pytest.raises(KernelArgumentError, match=pattern):
        compiled.launch(args)


def test_constants_are_checked():
    with pytest.raises(CompileError, match="(?s)has no constant.*BLOCK.*its constants are B"):
        compile_ir(scale_kernel(), "interpret", constants={"BLOCK": 8})


def test_targets():
    assert str(resolve_target("tvm")) == "tvm:llvm"
    assert str(resolve_target("triton")) == "triton:cpu"
    assert str(resolve_target(None)) == "tvm:llvm"
    with pytest.raises(CompileError, match="unknown target 'cuda:sm_90'.*"):
        resolve_target("cuda:sm_90")


def test_unknown_backend_is_a_clear_error():
    from lowbit.lowering.target import Target

    with pytest.raises(BackendError, match="no backend for"):
        compile_ir(scale_kernel(), Target("tvm", "rocm"))


def test_triton_backend_through_the_driver_matches_the_interpreter():
    kernel = scale_kernel()
    x = torch.randn(37)
    want, got = torch.zeros(37), torch.zeros(37)
    compile_ir(kernel, "interpret").launch({"x": x, "y": want, "factor": 1.5})
    compiled = compile_ir(kernel, "triton")
    compiled.launch({"x": x, "y": got, "factor": 1.5})
    assert torch.equal(got, want)
    assert "@triton.jit" in compiled.source


def test_tvm_backend_through_the_driver_and_its_disk_cache(tmp_path, monkeypatch):
    from lowbit.driver import clear_memory_cache

    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    clear_memory_cache()
    kernel = scale_kernel()
    x = torch.randn(37)
    want, got, again = torch.zeros(37), torch.zeros(37), torch.zeros(37)
    compile_ir(kernel, "interpret").launch({"x": x, "y": want, "factor": 1.5})
    first = compile_ir(kernel, "tvm")
    first.launch({"x": x, "y": got, "factor": 1.5})
    assert torch.equal(got, want) and not first.from_disk_cache
    assert "T.prim_func" in first.source
    clear_memory_cache()  # a new process would start here: the build comes from disk
    second = compile_ir(kernel, "tvm")
    assert second.from_disk_cache
    second.launch({"x": x, "y": again, "factor": 1.5})
    assert torch.equal(again, want)
    clear_memory_cache()


def test_a_disk_cache_shared_by_two_cpus_keeps_their_builds_apart(tmp_path, monkeypatch):
    """A cache folder on a disk two machines share: a TVM CPU build is native code for one CPU, so another CPU
    (here the same one as LLVM would name a different model, or with a flag the lowering consults missing)
    must build its own instead of loading one that may not run there."""
    import dataclasses

    pytest.importorskip("tvm")
    from lowbit.driver import clear_memory_cache
    from lowbit.lowering import target
    from lowbit.lowering.tvm import target as tvm_target

    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    clear_memory_cache()
    kernel, x = scale_kernel(), torch.randn(9)
    assert not compile_ir(kernel, "tvm").from_disk_cache
    clear_memory_cache()
    assert compile_ir(kernel, "tvm").from_disk_cache
    cpu, flags = tvm_target.host_cpu(), target.host_cpu_flags()
    other_model = "x86-64-v3" if cpu.mcpu != "x86-64-v3" else "x86-64-v2"
    others = [(lambda: dataclasses.replace(cpu, mcpu=other_model), target.host_cpu_flags),
              (tvm_target.host_cpu, lambda: flags ^ {"avx512_bf16"})]
    for host_cpu, host_cpu_flags in others:
        monkeypatch.setattr(tvm_target, "host_cpu", host_cpu)
        monkeypatch.setattr(target, "host_cpu_flags", host_cpu_flags)
        clear_memory_cache()
        build = compile_ir(kernel, "tvm")
        assert not build.from_disk_cache
        y = torch.zeros(9)
        build.launch({"x": x, "y": y, "factor": 2.0})
        assert torch.equal(y, 2 * x)
    clear_memory_cache()


def test_shape_bindings_are_checked_with_the_arguments():
    # y has N // 2 elements: N is bound only through shape_bindings
    kb = KernelBuilder("halve")
    y = kb.tensor_param("y", "f32", ["N // 2"], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.full([4], 1.0, "f32"), [0])
    compiled = compile_ir(kb.build(), "interpret")
    out = torch.zeros(4)
    compiled.launch({"y": out}, shape_bindings={"N": 8})
    assert out.tolist() == [1.0] * 4
    with pytest.raises(KernelArgumentError, match=r"its size N // 2 is 5 here"):
        compiled.launch({"y": torch.zeros(4)}, shape_bindings={"N": 10})
