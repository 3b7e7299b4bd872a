"""lowbit.ops.matmul against torch fp64 dequantize-then-matmul, with the error bound of conftest.py.

The grid: every 1-8 bit weight type x group {32, 128, per-channel} x {with, without zero points where the
quantizer allows them} x M in {1, 3, 16, 33} (GEMV path for M <= 4, GEMM above) x two (N, K) shapes per
group, one with odd N (and odd K for per-channel), K a multiple of the group and not of the K tile.

* lowbit's reference interpreter runs the whole grid;
* TVM runs a covering subset by default (every weight type once, the other axes rotated so that every
  group, zero-point mode, M and shape appears across types) and the whole grid with
  ``LOWBIT_FULL_KERNEL_GRID=1`` (each specialization is a separate LLVM build, ~2 s);
* Triton (its interpreter on a CPU) runs a representative subset.
"""
from __future__ import annotations

import itertools
import os
import zlib

import pytest

torch = pytest.importorskip("torch")

from lowbit import ops  # noqa: E402
from lowbit.dtypes import all_dtypes  # noqa: E402
from lowbit.kernels.matmul import CODES_KN, MatmulConfig, choose_config, run_matmul, takes_zeros_out  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

from .conftest import assert_within, matmul_reference, matmul_tolerance, require_backend  # noqa: E402

WEIGHT_TYPES = [d.name for d in all_dtypes() if d.nbits <= 8]
GROUPS = {32: ((40, 96), (37, 160)), 128: ((72, 256), (31, 384)), None: ((48, 64), (33, 99))}
MS = (1, 3, 16, 33)
#: activation dtype and bias per M (every combination appears for every weight type)
X_DTYPES = {1: torch.float16, 3: torch.float32, 16: torch.bfloat16, 33: torch.float16}
WITH_BIAS = {1: False, 3: True, 16: False, 33: True}
FULL = os.environ.get("LOWBIT_FULL_KERNEL_GRID") == "1"


def zero_modes(name: str) -> tuple[bool, ...]:
    d = next(t for t in all_dtypes() if t.name == name)
    if d.is_float:
        return (False,)
    return (True,) if d.nbits == 1 else (False, True)


GRID = [(t, g, z) for t in WEIGHT_TYPES for g in GROUPS for z in zero_modes(t)]


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def check_case(backend: str, dtype: str, group, zero_point: bool, shape, m: int) -> None:
    n, k = shape
    gen = torch.Generator().manual_seed(_seed(dtype, group, zero_point, shape, m))
    w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=group, zero_point=zero_point)
    x = torch.randn(m, k, generator=gen).to(X_DTYPES[m])
    bias = torch.randn(n, generator=gen) if WITH_BIAS[m] else None
    y = ops.matmul(x, w, bias, backend=backend)
    assert y.dtype == x.dtype and y.shape == (m, n)
    ref, absdot = matmul_reference(x, w, bias, zero_out=takes_zeros_out(m, w, backend, xtype=str(x.dtype)[6:]))
    tol = matmul_tolerance(absdot, ref, k, x.dtype)
    assert_within(y, ref, tol, f"{backend} {dtype} g={group} zeros={zero_point} M={m} N={n} K={k} x={x.dtype}")


@pytest.mark.parametrize("dtype,group,zero_point", [pytest.param(*c, id=f"{c[0]}-g{c[1]}-{'z' if c[2] else 'sym'}")
                                                    for c in GRID])
def test_grid_interpreter(dtype, group, zero_point):
    for shape, m in itertools.product(GROUPS[group], MS):
        check_case("interpret", dtype, group, zero_point, shape, m)


def _tvm_cases():
    """Every weight type once, the other axes rotated (a covering subset), or the whole grid."""
    if FULL:
        return [(t, g, z, s, m) for t, g, z in GRID for s in GROUPS[g] for m in MS]
    groups = list(GROUPS)
    cases = []
    for i, t in enumerate(WEIGHT_TYPES):
        g = groups[i % 3]
        zs = zero_modes(t)
        z = zs[(i // 3) % len(zs)]
        m = MS[i % 4]
        cases.append((t, g, z, GROUPS[g][(i // 2) % 2], m))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("dtype,group,zero_point,shape,m", [
    pytest.param(*c, id=f"{c[0]}-g{c[1]}-{'z' if c[2] else 'sym'}-{c[3][0]}x{c[3][1]}-M{c[4]}") for c in _tvm_cases()])
def test_grid_tvm(dtype, group, zero_point, shape, m):
    require_backend("tvm")
    check_case("tvm", dtype, group, zero_point, shape, m)


TRITON_CASES = [("uint4", 128, True, (72, 256), 1), ("int3", 32, False, (37, 160), 33),
                ("float4_e2m1", 32, False, (40, 96), 3), ("float8_e4m3fn", None, False, (33, 99), 16),
                ("uint8", None, True, (48, 64), 33), ("int1", 128, True, (31, 384), 3),
                ("float6_e3m2", 128, False, (72, 256), 16), ("uint2", 32, False, (37, 160), 1)]


@pytest.mark.parametrize("dtype,group,zero_point,shape,m", [
    pytest.param(*c, id=f"{c[0]}-g{c[1]}-{'z' if c[2] else 'sym'}-M{c[4]}") for c in TRITON_CASES])
def test_subset_triton(dtype, group, zero_point, shape, m):
    require_backend("triton")
    check_case("triton", dtype, group, zero_point, shape, m)


# ---------------------------------------------------------------------------------------------------------
# edges named in the specification, paths, split-K, storage dtypes, caching
# ---------------------------------------------------------------------------------------------------------
EDGES = [("uint4", 40, True, 72, 200, 5), ("int4", None, False, 72, 200, 33), ("int8", 40, False, 9, 200, 2),
         ("float4_e2m1", None, False, 17, 200, 17)]


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("dtype,group,zero_point,n,k,m", EDGES)
def test_group_not_a_power_of_two(backend, dtype, group, zero_point, n, k, m):
    """K = 200 with group 40 (tiles of whole groups) or per-channel (scale after the loop)."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(_seed(dtype, group, n, k, m))
    w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=group, zero_point=zero_point)
    x = torch.randn(m, k, generator=gen)
    y = ops.matmul(x, w, backend=backend)
    ref, absdot = matmul_reference(x, w)
    assert_within(y, ref, matmul_tolerance(absdot, ref, k, x.dtype), f"{backend} {dtype} g={group}")


@pytest.mark.slow
@pytest.mark.parametrize("m", [1, 16])
def test_llm_sized_edges_tvm(m):
    """N = 2880 (not a multiple of 128) and K = 8256 = 129 x 64 with group 64."""
    require_backend("tvm")
    gen = torch.Generator().manual_seed(m)
    w = quantize(torch.randn(2880, 8256, generator=gen), "uint4", group_size=64, zero_point=True)
    x = torch.randn(m, 8256, generator=gen).half()
    y = ops.matmul(x, w, backend="tvm")
    ref, absdot = matmul_reference(x, w, zero_out=takes_zeros_out(m, w, "tvm", xtype="float16"))
    assert_within(y, ref, matmul_tolerance(absdot, ref, 8256, x.dtype), f"2880x8256 M={m}")


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("cfg", [MatmulConfig(16, 32, 32, 1, 1, split=3), MatmulConfig(4, 64, 64, 2, 0, split=4),
                                 MatmulConfig(16, 32, 64, 2, 1, split=2)], ids=["gemm-mode1", "gemv-mode2", "gemm-mode2"])
def test_split_k_equals_unsplit(backend, cfg):
    """Split-K (partial sums per K range, then ``splitk_reduce``) agrees with the single pass and the fp64
    reference, bias included; the last split is shorter than the others (K = 320 = 5 tiles of 64)."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(3)
    w = quantize(torch.randn(45, 320, generator=gen), "int5", group_size=32 if cfg.mode == 1 else 64)
    x = torch.randn(3, 320, generator=gen)
    bias = torch.randn(45, generator=gen)
    split = run_matmul(x, w, bias.float(), backend, cfg)
    single = run_matmul(x, w, bias.float(), backend, MatmulConfig(cfg.bm, cfg.bn, cfg.bk, cfg.mode, cfg.dot, 1))
    ref, absdot = matmul_reference(x, w, bias)
    assert_within(split, ref, matmul_tolerance(absdot, ref, 320, x.dtype, cfg.split), f"split {cfg}")
    assert_within(split, single.double(), 2 * matmul_tolerance(absdot, ref, 320, x.dtype, cfg.split), "split vs single")


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
def test_f32_output_from_half_activations(backend, x_dtype):
    """``out_dtype=torch.float32``: the f32 sums come out unrounded (the bound has no output rounding: a
    half-precision rounding of the result would exceed it), on the GEMV, GEMM and split-K paths, with a bias;
    ``out_dtype=None`` keeps x's dtype."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(21)
    w = quantize(torch.randn(40, 256, generator=gen), "int4", group_size=64)
    bias = torch.randn(40, generator=gen)
    for m, cfg in ((1, None), (5, MatmulConfig(16, 32, 64, 1, 1)), (3, MatmulConfig(4, 32, 64, 2, 0, split=2))):
        x = torch.randn(m, 256, generator=gen).to(x_dtype)
        ref, absdot = matmul_reference(x, w, bias)
        tol = matmul_tolerance(absdot, ref, 256, torch.float32, cfg.split if cfg else 1)
        if cfg is None:
            y = ops.matmul(x, w, bias, backend=backend, out_dtype=torch.float32)
            assert ops.matmul(x, w, bias, backend=backend).dtype == x_dtype
        else:
            y = run_matmul(x, w, bias.float(), backend, cfg, out_dtype=torch.float32)
        assert y.dtype == torch.float32 and y.shape == (m, 40)
        assert_within(y, ref, tol, f"{backend} x {x_dtype} -> f32, M = {m}, {cfg}")


def test_both_paths_and_all_modes_agree():
    """GEMV and GEMM paths, and the three ways groups meet K tiles, on one weight (interpreter)."""
    gen = torch.Generator().manual_seed(4)
    w = quantize(torch.randn(24, 256, generator=gen), "uint3", group_size=64)   # implicit zero 4
    x = torch.randn(5, 256, generator=gen)
    ref, absdot = matmul_reference(x, w)
    tol = matmul_tolerance(absdot, ref, 256, x.dtype)
    for cfg in (MatmulConfig(8, 16, 128, 1, 0), MatmulConfig(8, 16, 16, 2, 1), MatmulConfig(16, 32, 64, 1, 1),
                MatmulConfig(8, 32, 32, 2, 0)):
        assert_within(run_matmul(x, w, None, "interpret", cfg), ref, tol, str(cfg))
    wc = quantize(torch.randn(24, 256, generator=gen), "uint3", group_size=None)
    ref, absdot = matmul_reference(x, wc)
    for cfg in (MatmulConfig(8, 16, 32, 0, 1), MatmulConfig(8, 16, 64, 0, 0)):
        assert_within(run_matmul(x, wc, None, "interpret", cfg), ref, matmul_tolerance(absdot, ref, 256, x.dtype),
                      str(cfg))


@pytest.mark.parametrize("dtype,m", [("uint5", 1), ("uint6", 1), ("int6", 4), ("uint6", 5)])
def test_bf16_activations_meet_looked_up_codes_with_zero_points(dtype, m):
    """5-6-bit codes met by bf16 activations are looked up in a bf16 table (on AVX-512 BF16 hosts, 64 entries
    for 6 bits) while the zero points are taken out of the group sums; the default tiles, edges in N."""
    require_backend("tvm")
    gen = torch.Generator().manual_seed(_seed(dtype, m, "bf16-zeros"))
    w = quantize(torch.randn(72, 384, generator=gen), dtype, group_size=128, zero_point=True)
    x = torch.randn(m, 384, generator=gen).to(torch.bfloat16)
    ref, absdot = matmul_reference(x, w, None, zero_out=takes_zeros_out(m, w, "tvm", xtype="bfloat16"))
    assert_within(ops.matmul(x, w, backend="tvm"), ref, matmul_tolerance(absdot, ref, 384, x.dtype),
                  f"{dtype} M={m} bf16 with zeros")


@pytest.mark.parametrize("dtype,scale_dtype,zero_dtype", [("uint4", "float32", "uint8"),
                                                          ("int4", "bfloat16", "bfloat16"),
                                                          ("int4", "float8_e4m3fn", "int8"),
                                                          ("uint6", "float16", "float32")])
def test_scale_and_zero_storage_dtypes(dtype, scale_dtype, zero_dtype):
    gen = torch.Generator().manual_seed(5)
    w = quantize(torch.randn(20, 64, generator=gen), dtype, group_size=32, zero_point=True,
                 scale_dtype=scale_dtype, zero_dtype=zero_dtype)
    x = torch.randn(2, 64, generator=gen)
    ref, absdot = matmul_reference(x, w)
    assert_within(ops.matmul(x, w, backend="interpret"), ref, matmul_tolerance(absdot, ref, 64, x.dtype),
                  f"scales {scale_dtype} zeros {zero_dtype}")


def test_weights_packed_once_and_cached():
    gen = torch.Generator().manual_seed(6)
    w = quantize(torch.randn(16, 64, generator=gen), "int4", group_size=32)
    x = torch.randn(2, 64, generator=gen)
    y1 = ops.matmul(x, w, backend="interpret")
    cached = w.get_packed(CODES_KN, lambda q: pytest.fail("the weight was not cached"))
    assert w.is_torch and torch.equal(cached.q, w.codes().T)
    y2 = ops.matmul(x, w, backend="interpret")
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("cfg", [None, MatmulConfig(4, 32, 32, 1, 0, split=3)], ids=["chosen", "split-k"])
def test_launch_plan_reused_across_calls(backend, cfg):
    """The plan of the first call (configuration, launches bound to the weight) serves later calls with new
    activations, outputs and biases, and a second row count gets its own; every result matches the fp64
    reference of its own inputs. A misaligned activation takes the full launch (a copy) and still agrees."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(11)
    w = quantize(torch.randn(40, 96, generator=gen), "int3", group_size=32)
    for m in (1, 3, 1):
        for with_bias in (False, True, True):
            x = torch.randn(m, 96, generator=gen)
            bias = torch.randn(40, generator=gen) if with_bias else None
            ref, absdot = matmul_reference(x, w, bias)
            tol = matmul_tolerance(absdot, ref, 96, x.dtype, cfg.split if cfg else 1)
            assert_within(run_matmul(x, w, bias, backend, cfg), ref, tol, f"m={m} bias={with_bias}")
    plans = w.packed_cache[("launch plans",)]
    assert {key[1] for key in plans} == {1, 3} and len(plans) == 4      # (m, with / without bias)
    x = torch.randn(3 * 96 + 1, generator=gen)[1:].view(3, 96)          # contiguous, 4 bytes off alignment
    assert x.data_ptr() % 64
    ref, absdot = matmul_reference(x, w)
    tol = matmul_tolerance(absdot, ref, 96, x.dtype, cfg.split if cfg else 1)
    assert_within(run_matmul(x, w, None, backend, cfg), ref, tol, "misaligned x")


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
def test_deep_copy_of_a_used_weight_runs_on_its_own_storage(backend):
    """A weight deep-copied after use (the benchmark's cold rotation does this) carries its storages and plans,
    and the copy's plans launch on the copy's storage: wiping the original's leaves the copy's results right."""
    import copy

    require_backend(backend)
    gen = torch.Generator().manual_seed(12)
    w = quantize(torch.randn(40, 64, generator=gen), "int4", group_size=32)
    x = torch.randn(1, 64, generator=gen)
    ref, absdot = matmul_reference(x, w)
    tol = matmul_tolerance(absdot, ref, 64, x.dtype)
    assert_within(ops.matmul(x, w, backend=backend), ref, tol, "original")
    twin = copy.deepcopy(w)
    for name, entry in w.packed_cache.items():
        if isinstance(name, str):
            entry[1].q.zero_()
            entry[1].s.zero_()
    assert float(ops.matmul(x, w, backend=backend).abs().max()) == 0.0          # the original's storage is wiped
    assert_within(ops.matmul(x, twin, backend=backend), ref, tol, "deep copy")


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
def test_checked_signatures_skip_the_checks_and_stay_right(backend, monkeypatch):
    """ops.matmul checks a call signature (x's dtype, shape and device, the bias's, the backend) once per
    weight, then runs its plan directly. Later calls of that signature with other values, strides, alignment or
    grad still agree with the fp64 reference; a new signature is checked, and bad arguments still raise."""
    from lowbit.errors import LowbitError

    require_backend(backend)
    gen = torch.Generator().manual_seed(13)
    w = quantize(torch.randn(24, 64, generator=gen), "int3", group_size=32)

    def check(x, bias, what):
        ref, absdot = matmul_reference(x.reshape(-1, 64), w, None if bias is None else bias.float())
        y = ops.matmul(x, w, bias, backend=backend)
        assert y.shape == (*x.shape[:-1], 24) and y.dtype == x.dtype, what
        assert_within(y.reshape(-1, 24), ref, matmul_tolerance(absdot, ref, 64, x.dtype), what)

    bias = torch.randn(24, generator=gen, dtype=torch.float16)
    check(torch.randn(2, 3, 64, generator=gen), bias, "first call")
    assert w.known_launch_plan(ops._matmul_signature(torch.empty(2, 3, 64), bias, backend)) is not None

    def unchecked(*args, **kwargs):
        raise AssertionError("a checked signature was checked again")

    monkeypatch.setattr(ops, "_need_float", unchecked)
    check(torch.randn(2, 3, 64, generator=gen), bias, "same signature, new values")
    check(torch.randn(3, 2, 64, generator=gen).transpose(0, 1), bias, "strided")
    check(torch.randn(6 * 64 + 1, generator=gen)[1:].view(2, 3, 64), bias, "4 bytes off alignment")
    check(torch.randn(2, 3, 64, generator=gen, requires_grad=True), bias, "requires grad")
    with pytest.raises(AssertionError, match="checked again"):
        ops.matmul(torch.randn(2, 64), w, bias, backend=backend)                  # a new signature is checked
    with pytest.raises(AssertionError, match="checked again"):                    # so is a new output dtype
        ops.matmul(torch.randn(2, 3, 64), w, bias, backend=backend, out_dtype=torch.float16)
    monkeypatch.undo()
    check(torch.randn(2, 64, generator=gen), None, "2-D, no bias")
    check(torch.randn(64, 2, generator=gen).t(), None, "2-D, strided")
    for call, message in [(lambda: ops.matmul(torch.randn(2, 3, 63), w, bias, backend=backend), "x must have shape"),
                          (lambda: ops.matmul(torch.randn(2, 3, 64).double(), w, bias, backend=backend), "float16"),
                          (lambda: ops.matmul(torch.randn(2, 3, 64), w, bias[:5], backend=backend), "bias must have")]:
        with pytest.raises(LowbitError, match=message):
            call()


def test_launch_plans_bounded_lru_and_shared_by_views():
    from lowbit.plans import MAX_PLANS

    w = quantize(torch.randn(8, 32), "int4", group_size=32)
    built = []
    for key in range(MAX_PLANS + 3):
        w.launch_plan(key, lambda key=key: built.append(key) or key)
    plans = w.packed_cache[("launch plans",)]
    assert len(plans) == MAX_PLANS and 0 not in plans and MAX_PLANS + 2 in plans     # oldest dropped first
    view = quantize(torch.randn(8, 32), "int4", group_size=32).share_packed_cache(w.packed_cache)
    assert view.launch_plan(3, lambda: pytest.fail("rebuilt")) == 3                  # 3 is now the most recent
    assert w.launch_plan(0, lambda: "again") == "again" and built == list(range(MAX_PLANS + 3))
    assert 4 not in plans and 3 in plans                                               # least recently used dropped


@pytest.mark.parametrize("group,k", [(128, 128), (None, 96), (32, 96)])
def test_prepared_storage_is_64_byte_aligned(group, k):
    # one group: the transposed scales are a view of the quantizer's numpy array (16-byte aligned); a launch
    # bound to a misaligned tensor copies it on every call instead of taking the fast path
    from lowbit.kernels.matmul import prepare_weight

    w = quantize(torch.randn(40, k), "uint4", group_size=group, zero_point=True)
    prepared = prepare_weight(w, None, torch.device("cpu"), "float16", "float16")
    for name in ("q", "s", "z"):
        t = getattr(prepared, name)
        assert t.is_contiguous() and t.data_ptr() % 64 == 0, name
    assert torch.equal(prepared.s.float(), w.scales.float().t()) and torch.equal(prepared.z.float(), w.zeros.float().t())


def test_numpy_weights_leading_dims_and_empty_batch():
    gen = torch.Generator().manual_seed(7)
    w = quantize(torch.randn(12, 32, generator=gen).numpy(), "float5_e2m2", group_size=16)
    x = torch.randn(2, 3, 32, generator=gen)
    y = ops.matmul(x, w, backend="interpret")
    assert y.shape == (2, 3, 12)
    ref, absdot = matmul_reference(x, w)
    assert_within(y.reshape(6, 12), ref, matmul_tolerance(absdot, ref, 32, x.dtype), "leading dims")
    assert ops.matmul(torch.randn(0, 32), w, backend="interpret").shape == (0, 12)


def test_config_choice():
    assert choose_config(1, 4096, 4096, 128, "triton", "cuda", 132).dot == 0
    assert choose_config(3, 4096, 4096, 128, "tvm", "cpu", 2).bm == 4
    assert choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2).dot == 1
    per_channel = choose_config(16, 64, 200, 200, "tvm", "cpu", 2)
    assert per_channel.mode == 0
    g40 = choose_config(16, 64, 200, 40, "tvm", "cpu", 2)
    assert g40.mode == 1 and g40.bk % 40 == 0
    g256 = choose_config(16, 64, 1024, 256, "tvm", "cpu", 2)
    assert g256.mode == 2 and 256 % g256.bk == 0
    # few output tiles and a long K: split-K fills the device
    assert choose_config(1, 64, 8192, 128, "triton", "cuda", 132).split > 1
    assert choose_config(64, 8192, 8192, 128, "triton", "cuda", 132).split == 1


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("dtype", ["uint1", "uint4"])
def test_zero_points_out_of_the_sums(backend, dtype):
    """``zsum``: ``s (sum x q - z sum x)`` per group stays within the bound with ``|x| (|q| + |z|) |s|`` for
    ``|x w|``; the form that keeps the zero inside the sum stays within the tight bound. uint1 with zeros is
    the hard case: most weights are ``q = z = 1`` (exactly 0), so the terms cancel."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(12)
    w = quantize(torch.randn(40, 256, generator=gen), dtype, group_size=32, zero_point=True)
    for m, act in ((1, torch.float32), (4, torch.bfloat16), (1, torch.float16)):
        x = torch.randn(m, 256, generator=gen).to(act)
        inside = MatmulConfig(m, 16, 32, 1, 1, gdot=1)
        out = MatmulConfig(m, 16, 32, 1, 1, gdot=1, zsum=1)
        ref, absdot = matmul_reference(x, w)
        assert_within(run_matmul(x, w, None, backend, inside), ref, matmul_tolerance(absdot, ref, 256, x.dtype),
                      f"zero inside, M={m} x={act}")
        ref, loose = matmul_reference(x, w, zero_out=True)
        assert_within(run_matmul(x, w, None, backend, out), ref, matmul_tolerance(loose, ref, 256, x.dtype),
                      f"zero out, M={m} x={act}")
    # cheap codes stream with the GEMV's tile (gdot) at any row count on TVM's CPU target
    assert takes_zeros_out(1, w, "tvm") and takes_zeros_out(4, w, "tvm") and takes_zeros_out(16, w, "tvm")
    assert not takes_zeros_out(1, w, "interpret")
    dear = quantize(torch.randn(40, 256, generator=gen), "uint6", group_size=32, zero_point=True)
    assert takes_zeros_out(4, dear, "tvm") and not takes_zeros_out(16, dear, "tvm")
    assert not takes_zeros_out(1, quantize(torch.randn(40, 256, generator=gen), "uint4", group_size=32), "tvm")
    with pytest.raises(ValueError):
        MatmulConfig(1, 16, 32, 1, 1, zsum=1)             # the zero leaves a group's sum only with gdot


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
def test_half_precision_dot_operands(backend):
    """``ct = float16`` (tensor-core operands on GPUs): each dequantized weight is rounded once to f16, so
    the bound gains ``2^-11 sum_k |x_k w_k|`` (plus ``2^-25 sum_k |x_k|`` for f16 subnormals)."""
    require_backend(backend)
    gen = torch.Generator().manual_seed(8)
    w = quantize(torch.randn(40, 256, generator=gen), "uint4", group_size=64, zero_point=True)
    x = torch.randn(20, 256, generator=gen).half()
    y = run_matmul(x, w, None, backend, MatmulConfig(16, 32, 64, 1, 1, ct="float16"))
    ref, absdot = matmul_reference(x, w)
    tol = matmul_tolerance(absdot, ref, 256, x.dtype) + 2.0 ** -11 * absdot + 2.0 ** -25 * x.double().abs().sum(1, keepdim=True)
    assert_within(y, ref, tol, "ct=float16")


def test_bad_arguments_raise_lowbit_errors():
    from lowbit.errors import LowbitError
    from lowbit.quant import FormatId, QuantizedTensor

    gen = torch.Generator().manual_seed(9)
    w = quantize(torch.randn(16, 64, generator=gen), "int4", group_size=32)
    x = torch.randn(2, 64, generator=gen)
    cases = [
        (lambda: ops.matmul(x.numpy(), w), "x must be a torch tensor"),
        (lambda: ops.matmul(x.double(), w), "float16, bfloat16 or float32"),
        (lambda: ops.matmul(x.int(), w), "float16, bfloat16 or float32"),
        (lambda: ops.matmul(torch.randn(2, 63), w), r"x must have shape \[\.\.\., 64\]"),
        (lambda: ops.matmul(x, torch.randn(16, 64)), "QuantizedTensor"),
        (lambda: ops.matmul(x, w, torch.randn(15)), r"bias must have shape \[16\]"),
        (lambda: ops.matmul(x, w, torch.arange(16)), "bias must be a float tensor"),
        (lambda: ops.matmul(x, w, backend="cuda"), "backend must be one of"),
        (lambda: ops.matmul(torch.randn(2, 64, device="meta"), w), "qweight is on cpu, but x is on meta"),
        (lambda: ops.matmul(x, w, torch.randn(16, device="meta")), "bias is on meta"),
        (lambda: ops.matmul(x, w, out_dtype=torch.float64), "out_dtype must be torch.float16"),
        (lambda: ops.matmul(x, w, out_dtype="float32"), "out_dtype must be torch.float16"),
        (lambda: ops.matmul(x, w, out_dtype=[torch.float32]), "out_dtype must be torch.float16"),   # unhashable
    ]
    w3 = quantize(torch.randn(2, 16, 64, generator=gen), "int4", group_size=32)
    cases.append((lambda: ops.matmul(x, w3), r"qweight must be 2-D"))
    other = QuantizedTensor(w.packed, w.scales, w.zeros, w.dtype, w.group_size, w.shape, FormatId("tile-other", 1))
    cases.append((lambda: ops.matmul(x, other), "packed as tile-other/v1"))
    for call, message in cases:
        with pytest.raises(LowbitError, match=message):
            call()
