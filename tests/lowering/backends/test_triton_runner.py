"""lowbit.lowering.triton.runner: generated source runs under Triton's interpreter on a CPU, per kernel."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from lowbit.errors import BackendError  # noqa: E402
from lowbit.lowering.triton import runner  # noqa: E402
from lowbit.lowering.triton.source import source_path  # noqa: E402

VECTOR_ADD = '''
import triton
import triton.language as tl


@triton.jit
def _scaled(v, alpha):
    return v * alpha


@triton.jit
def vector_add(x, y, out, n, alpha, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(x + offs, mask=mask)
    b = tl.load(y + offs, mask=mask)
    tl.store(out + offs, _scaled(a, alpha) + b, mask=mask)
'''

TILE_MATMUL = '''
import triton
import triton.language as tl


@triton.jit
def matmul_f16(a, b, c, M, N, K, ldc, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        ta = tl.load(a + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        tb = tl.load(b + kk[:, None] * N + rn[None, :], mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(ta, tb, acc)
    tl.store(c + rm[:, None] * ldc + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))
'''

HEURISTIC = '''
import triton
import triton.language as tl


@triton.heuristics({"BLOCK": lambda args: triton.next_power_of_2(args["n"])})
@triton.jit
def negate(x, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x + offs, -tl.load(x + offs, mask=offs < n), mask=offs < n)
'''


def test_vector_add_interpreted_matches_fp64(tmp_path):
    mod = runner.load(VECTOR_ADD, mode="interpret", name="vector_add", cache_dir=tmp_path)
    assert mod.mode == "interpret" and set(mod.kernels) == {"_scaled", "vector_add"}
    assert mod.path.read_text() == VECTOR_ADD
    gen = torch.Generator().manual_seed(0)
    n = 1000
    x = torch.randn(n, generator=gen)
    y = torch.randn(n, generator=gen)
    out = torch.full((n + 24,), float("nan"))  # tail beyond n must stay untouched (store mask)
    mod.launch("vector_add", (triton.cdiv(n, 256),), x, y, out, n, 0.5, BLOCK=256)
    expected = (0.5 * x.double() + y.double()).float()  # fp32 a*0.5 is exact; one rounding of the add
    assert torch.equal(out[:n], expected)
    assert torch.isnan(out[n:]).all()


def test_masked_fp16_tile_matmul_matches_fp64(tmp_path):
    mod = runner.load(TILE_MATMUL, mode="interpret", name="matmul_f16", cache_dir=tmp_path)
    gen = torch.Generator().manual_seed(1)
    M, N, K, pad = 50, 40, 70, 5
    a = torch.randn(M, K, generator=gen).half()
    b = torch.randn(K, N, generator=gen).half()
    c = torch.full((M, N + pad), float("nan"))
    mod.launch("matmul_f16", (1, 1), a, b, c, M, N, K, N + pad, BM=64, BN=64, BK=32)
    reference = a.double() @ b.double()
    # fp32 accumulation of 70 exact fp16 products: |error| <= K * 2^-24 * sum|a||b| (a loose bound)
    bound = K * 2.0**-24 * (a.double().abs() @ b.double().abs())
    assert torch.all((c[:, :N].double() - reference).abs() <= bound + 1e-12)
    assert torch.isnan(c[:, N:]).all()  # masked columns of the padded output were not written


def test_heuristics_wrapped_kernel_is_interpreted(tmp_path):
    mod = runner.load(HEURISTIC, mode="interpret", name="negate", cache_dir=tmp_path)
    assert runner.is_interpreted(mod.kernel("negate"))
    x = torch.arange(5.0)
    mod.launch("negate", (1,), x, 5)
    assert torch.equal(x, -torch.arange(5.0))


def test_user_triton_code_is_unaffected(tmp_path):
    env_before = os.environ.get("TRITON_INTERPRET")
    load_before = tl.load
    mod = runner.load(VECTOR_ADD, mode="interpret", name="vector_add", cache_dir=tmp_path)
    x = torch.ones(8)
    mod.launch("vector_add", (1,), x, x, torch.empty(8), 8, 1.0, BLOCK=8)

    @triton.jit
    def user_kernel(p):
        tl.store(p, 1.0)

    assert isinstance(user_kernel, JITFunction) and not isinstance(user_kernel, InterpretedFunction)
    assert isinstance(mod.kernel("vector_add"), InterpretedFunction)
    assert isinstance(mod.kernel("_scaled"), InterpretedFunction)
    assert not triton.knobs.runtime.interpret
    assert os.environ.get("TRITON_INTERPRET") == env_before
    assert tl.load is load_before  # the interpreter's patches of triton.language were undone


def test_native_mode_keeps_jit_functions_and_modules_are_reused(tmp_path):
    native = runner.load(VECTOR_ADD, mode="native", name="vector_add", cache_dir=tmp_path)
    assert isinstance(native.kernel("vector_add"), JITFunction)
    interp = runner.load(VECTOR_ADD, mode="interpret", name="vector_add", cache_dir=tmp_path)
    assert interp.module is not native.module
    assert runner.load(VECTOR_ADD, mode="native", name="vector_add", cache_dir=tmp_path) is native
    assert native.path == interp.path == source_path(VECTOR_ADD, name="vector_add", cache_dir=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_native_launch_without_cuda_explains(tmp_path):
    native = runner.load(VECTOR_ADD, mode="native", name="vector_add", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="no CUDA device") as err:
        native.launch("vector_add", (1,), torch.ones(4), torch.ones(4), torch.empty(4), 4, 1.0, BLOCK=4)
    assert "interpret" in str(err.value)
    assert runner.resolve_mode("auto") == "interpret"


def test_errors_are_backend_errors(tmp_path):
    with pytest.raises(BackendError, match="unknown Triton run mode"):
        runner.resolve_mode("gpu")
    with pytest.raises(BackendError, match="does not parse") as err:
        runner.load("import triton\n\ndef broken(:\n    pass\n", mode="interpret", cache_dir=tmp_path)
    assert err.value.location is not None and err.value.location.line == 3
    mod = runner.load(VECTOR_ADD, mode="interpret", name="vector_add", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="no kernel 'missing'"):
        mod.kernel("missing")
    failing = runner.load(
        "import triton\nimport triton.language as tl\n\n@triton.jit\ndef bad(x):\n    tl.store(x, undefined_name)\n",
        mode="interpret", name="bad", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="interpreter failed running kernel 'bad'"):
        failing.launch("bad", (1,), torch.zeros(1))


def test_corrupt_cached_source_is_rewritten(tmp_path):
    path = source_path(VECTOR_ADD, name="va", cache_dir=tmp_path)
    path.write_text("garbage")
    assert source_path(VECTOR_ADD, name="va", cache_dir=tmp_path).read_text() == VECTOR_ADD
    assert np.array_equal(np.frombuffer(path.read_bytes(), np.uint8), np.frombuffer(VECTOR_ADD.encode(), np.uint8))


LIBRARY_CALLS = '''
import triton
import triton.language as tl


@triton.jit
def row_stats(x, out, BR: tl.constexpr, BC: tl.constexpr):
    r = tl.arange(0, BR)
    c = tl.arange(0, BC)
    t = tl.load(x + r[:, None] * BC + c[None, :])
    acc = tl.zeros([BR], dtype=tl.float32) + tl.sum(t, axis=1) + tl.max(t, axis=1)
    tl.store(out + r, acc + tl.cdiv(BC, 3))
'''


def _language_state():
    mods, classes = runner._language_objects()
    return {m.__name__: dict(vars(m)) for m in mods}, {c: dict(vars(c)) for c in classes}


def test_library_jit_functions_run_and_leave_triton_language_untouched(tmp_path):
    """tl.zeros / tl.sum / tl.max / tl.cdiv are JITFunctions in triton.language; they must run interpreted,
    and the interpreter's patches (which leak into tl.core on such calls) must all be undone."""
    modules_before, classes_before = _language_state()
    mod = runner.load(LIBRARY_CALLS, mode="interpret", name="row_stats", cache_dir=tmp_path)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    out = torch.empty(4)
    mod.launch("row_stats", (1,), x, out, BR=4, BC=8)
    expected = x.double().sum(1) + x.double().max(1).values + 3
    assert torch.allclose(out.double(), expected, rtol=0, atol=8 * 2.0**-24 * expected.abs().max().item() + 1e-6)
    modules_after, classes_after = _language_state()
    for name, before in modules_before.items():
        changed = [k for k, v in before.items() if modules_after[name].get(k) is not v]
        assert not changed, f"{name}: {changed[:5]} still patched"
    for cls, before in classes_before.items():
        assert set(classes_after[cls]) == set(before), f"{cls.__name__} gained/lost attributes"
        assert all(classes_after[cls][k] is v for k, v in before.items()), f"{cls.__name__} still patched"
    import triton.language.extra.libdevice  # noqa: F401  (a submodule imported meanwhile stays reachable)

    # A native compile of the same source still works after the interpreted run.
    from lowbit.lowering.triton.aot import compile_aot

    art = compile_aot(LIBRARY_CALLS, "row_stats", {"x": "*fp32", "out": "*fp32"}, {"BR": 4, "BC": 8}, "sm_80",
                      cache_dir=tmp_path)
    assert art.stats["st.global"] >= 1 and art.stats["ld.global"] >= 1
