"""lowbit.lowering.tvm: host/CUDA targets, build + run + export/reload, DLPack, CUDA source -> nvcc cubin."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

from lowbit.errors import BackendError  # noqa: E402
from lowbit.lowering.tvm import build as tb  # noqa: E402
from lowbit.lowering.tvm import target as tt  # noqa: E402
from lowbit.lowering.tvm.tensors import to_numpy, to_torch, to_tvm  # noqa: E402


def _vector_add(n: int = 1000):
    tt.import_tvm()
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vadd(A: T.Buffer((n,), "float32"), B: T.Buffer((n,), "float32"), C: T.Buffer((n,), "float32")):
        for i in range(n):
            with T.sblock("c"):
                vi = T.axis.spatial(n, i)
                C[vi] = A[vi] + B[vi]

    return vadd


def _scheduled_cpu(n: int = 1000):
    tvm = tt.import_tvm()
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": _vector_add(n)}))
    (i,) = sch.get_loops(sch.get_sblock("c"))
    outer, inner = sch.split(i, [None, tt.host_cpu().lanes(32)])
    sch.parallel(outer)
    sch.vectorize(inner)
    return sch.mod


def _cpuinfo_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_host_cpu_and_targets():
    host = tt.host_cpu()
    assert host.vector_bits in (128, 256, 512) and host.lanes(32) == host.vector_bits // 32
    assert host.cores == len(os.sched_getaffinity(0))
    flags = _cpuinfo_flags()
    if "avx512f" in flags:
        assert host.has("avx512f")
    elif flags:         # (a VM may hide AVX-512 from a CPU model that has it: see target.py)
        assert not any(f.startswith("avx512") for f in host.features) and host.vector_bits <= 256
    if "avx2" in flags:
        assert host.has("avx2") and host.vector_bits >= 256
    cpu = tt.cpu_target_dict()
    mattr = {"mattr": host.mattr} if host.disabled else {}
    assert cpu == {"kind": "llvm", "mcpu": host.mcpu, "num-cores": host.cores, **mattr} and host.mcpu != "generic"
    assert tt.cpu_target_dict(mcpu=host.mcpu) == {"kind": "llvm", "mcpu": host.mcpu, "num-cores": host.cores}
    assert str(tt.cpu_target().attrs["mcpu"]) == host.mcpu
    assert tt.cuda_target_dict("sm_80") == {"kind": "cuda", "arch": "sm_80"}
    assert tt.is_cuda_target("sm_90") and not tt.is_cuda_target("cpu")
    with pytest.raises(BackendError, match="unknown CUDA architecture"):
        tt.cuda_target_dict("hopper")
    with pytest.raises(BackendError, match="LLVM does not know the CPU"):
        tt.cpu_target_dict(mcpu="not-a-cpu")
    with pytest.raises(BackendError, match="cannot make a TVM target"):
        tt.as_target(3.5)


def _vector_add_asm(target: dict) -> str:
    """The assembly of a vector add in 16-lane f32 vectors (512 bits, the width lowbit's CPU code uses)."""
    tvm = tt.import_tvm()
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": _vector_add(1024)}))
    (i,) = sch.get_loops(sch.get_sblock("c"))
    sch.vectorize(sch.split(i, [None, 16])[1])
    return str(tb.build(sch.mod, target).executable.mod.inspect_source("asm"))


def test_features_the_cpu_does_not_report_are_turned_off(monkeypatch):
    """A VM may hide AVX-512 from a CPU whose model has it (a Zen 4 VM is still ``znver4``): code for the model
    dies on its first AVX-512 instruction. Pretend this CPU reports its model's AVX-512 features absent."""
    tvm = tt.import_tvm()
    model = tt.host_cpu.__wrapped__()
    named = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(
        tvm.target.Target({"kind": "llvm", "mcpu": model.mcpu}))}
    masked = frozenset(f for f in named if f.startswith("avx512"))
    if not masked or "avx2" not in named:
        pytest.skip(f"LLVM's {model.mcpu!r} has no AVX-512 to hide")
    monkeypatch.setattr(tt, "_reported_absent", lambda _tvm: masked | {"not-a-feature-of-the-model"})
    host = tt.host_cpu.__wrapped__()
    assert host.disabled == masked and host.features == named - masked and host.vector_bits == 256
    assert "-avx512f" in host.mattr and host.lanes(32) == 8
    monkeypatch.setattr(tt, "host_cpu", lambda: host)
    target = tt.cpu_target_dict()
    assert target["mattr"] == host.mattr
    assert "zmm" in _vector_add_asm({"kind": "llvm", "mcpu": host.mcpu})      # the model's code: AVX-512
    asm = _vector_add_asm(target)
    assert "zmm" not in asm and "ymm" in asm


def test_thread_pool_uses_every_core():
    if "TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        expected = int(os.environ.get("TVM_NUM_THREADS") or os.environ["OMP_NUM_THREADS"])
    else:
        expected = len(os.sched_getaffinity(0))
    tt.import_tvm()
    start = tt.num_threads()
    assert start == expected
    try:
        assert tt.set_num_threads(1) == 1
    finally:
        assert tt.set_num_threads(start) == start
    with pytest.raises(BackendError, match="thread count"):
        tt.set_num_threads(0)


@pytest.mark.parametrize("user_value", [None, "12345"])
def test_thread_pool_spins_briefly_unless_the_user_says(user_value):
    """TVM's default ~150 ms of sched_yield after a launch starves torch's next parallel op (see target.py)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TVM_THREAD_POOL_SPIN_COUNT"}
    if user_value is not None:
        env["TVM_THREAD_POOL_SPIN_COUNT"] = user_value
    code = ("import os; from lowbit.lowering.tvm import target as t; t.import_tvm(); "
            "print(os.environ['TVM_THREAD_POOL_SPIN_COUNT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (user_value or "2000")
    assert 0 < tt.SPIN_COUNT < 300000  # TVM's own default


def test_cpu_build_run_export_reload(tmp_path):
    n = 1000
    kernel = tb.build(_scheduled_cpu(n), "cpu")
    assert kernel.entry == "main" and tt.host_cpu().mcpu in kernel.target
    gen = np.random.default_rng(0)
    a = gen.standard_normal(n).astype(np.float32)
    b = gen.standard_normal(n).astype(np.float32)
    expected = (a.astype(np.float64) + b.astype(np.float64)).astype(np.float32)  # one rounding of the exact sum
    ta, tb_, c = torch.tensor(a), torch.tensor(b), torch.empty(n)  # torch's allocator aligns to 64 bytes
    kernel(ta, tb_, c)  # torch tensors go in directly
    assert np.array_equal(c.numpy(), expected)

    path = kernel.export(tmp_path / "vadd.so")
    again = tb.load_library(path)
    c2 = to_tvm(np.zeros(n, np.float32))
    again(to_tvm(a), to_tvm(b), c2)  # numpy arrays: shared when 64-byte aligned, else copied
    assert np.array_equal(to_numpy(c2), expected)
    with pytest.raises(BackendError, match="no TVM library"):
        tb.load_library(tmp_path / "missing.so")
    with pytest.raises(BackendError, match="entry 'nope'"):
        tb.load_library(path, entry="nope")


def test_dlpack_shares_memory():
    x = torch.arange(6.0).reshape(2, 3)
    t = to_tvm(x)
    assert t.data_ptr() == x.data_ptr() and tuple(t.shape) == (2, 3)
    back = to_torch(t)
    back[0, 0] = 42.0
    assert x[0, 0] == 42.0  # same memory both ways
    arr = torch.zeros(64, dtype=torch.int32).numpy()  # 64-byte aligned numpy memory is shared
    assert to_tvm(arr).data_ptr() == arr.ctypes.data
    assert torch.equal(to_torch(to_tvm(x.t())), x.t())  # non-contiguous: copied, same values
    with pytest.raises(BackendError, match="not contiguous"):
        to_tvm(x.t(), allow_copy=False)
    shifted = torch.arange(20.0)[1:]  # 4-byte offset: contiguous but not 64-byte aligned
    assert torch.equal(to_torch(to_tvm(shifted)), shifted)
    with pytest.raises(BackendError, match="not 64-byte aligned"):
        to_tvm(shifted, allow_copy=False)
    with pytest.raises(BackendError, match="expected a torch tensor"):
        to_tvm([1, 2, 3])


def _thread_bound_module(n: int = 4096):
    tvm = tt.import_tvm()
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": _vector_add(n)}))
    (i,) = sch.get_loops(sch.get_sblock("c"))
    bx, tx = sch.split(i, [None, 128])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return sch.mod


def test_cuda_source_and_nvcc_cubin():
    source = tb.cuda_source(_thread_bound_module(), "sm_90")
    assert '__global__' in source and "threadIdx.x" in source and "vadd_kernel" in source
    if tb.find_nvcc() is None:
        pytest.skip("nvcc not installed")
    cubin = tb.nvcc_cubin(source, "sm_90")
    assert cubin[:4] == b"\x7fELF" and b"vadd_kernel" in cubin
    with pytest.raises(BackendError, match="nvcc failed"):
        tb.nvcc_cubin("this is not CUDA", "sm_90")


def test_cuda_source_of_cpu_build_is_an_error():
    with pytest.raises(BackendError, match="no CUDA code"):
        tb.cuda_source(tb.build(_scheduled_cpu(64), "cpu"))


def test_build_failures_are_backend_errors():
    # TVM quietly turns a CUDA build without thread bindings into host code; lowbit refuses it.
    with pytest.raises(BackendError, match="contains no GPU kernel"):
        tb.build(_vector_add(64), "sm_90")
    # Thread-bound loops cannot be compiled for the CPU.
    with pytest.raises(BackendError, match="TVM could not build"):
        tb.build(_thread_bound_module(256), "cpu")
