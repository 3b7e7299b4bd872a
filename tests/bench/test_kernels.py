"""The kernel benchmark's results on a tiny problem: one row per (implementation, M), checked against
float64 before timing, n/a and wrong results reported as such, ratios only between rows that ran."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lowbit.bench import kernels as K  # noqa: E402
from lowbit.bench.roofline import quantized_weight_bytes  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

from .conftest import TINY_SHAPE, tiny_settings  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    ticks: list[str] = []
    settings = tiny_settings()
    out = K.run_kernels(settings, ticks.append)
    assert len(ticks) == K.count_steps(settings)
    return out


def test_rows_cover_every_selection(rows) -> None:
    keys = [(r.impl, r.weight_type, r.m, r.act_dtype) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 3 + 2 * 2 * 2
    for m in (1, 2):
        for impl, wtype, act in (("torch-fp32", "float32", "float32"), ("torch-bf16", "bfloat16", "bfloat16"),
                                 ("torch-int4", "int4", "bfloat16")):
            assert (impl, wtype, m, act) in keys
        for wtype in ("int4", "uint3"):
            for act in ("float32", "bfloat16"):             # lowbit: every activation dtype of the settings
                assert ("lowbit-interpret", wtype, m, act) in keys


def test_every_row_ran_checked_and_timed(rows) -> None:
    for r in rows:
        assert r.status == "ok", (r.impl, r.status, r.detail)
        assert r.shape == TINY_SHAPE and r.group_size == 128
        assert r.rel_err is not None and r.rel_err <= r.tolerance
        assert r.median_s > 0 and r.min_s <= r.median_s and r.repeats == 1 and r.number >= 1
        assert r.copies >= 1 and r.gbps is None and r.roofline is None   # not annotated yet
    fp32 = next(r for r in rows if r.impl == "torch-fp32")
    assert fp32.copies == K.rotation_copies(TINY_SHAPE[0] * TINY_SHAPE[1] * 4, 1 << 16, cold=True) == 3
    assert [(r.m, r.impl) for r in rows[:3]] == [(1, "torch-fp32"), (1, "torch-bf16"), (1, "torch-int4")]


def test_bytes_are_the_stored_weight_plus_activations_and_outputs(rows) -> None:
    n, k = TINY_SHAPE
    uint3 = quantize(torch.randn(n, k), "uint3", group_size=128, zero_point=True)
    for r in rows:
        act = {"float32": 4, "bfloat16": 2}[r.act_dtype]
        weight = {"torch-fp32": n * k * 4, "torch-bf16": n * k * 2, "torch-int4": n * k // 2 + n * (k // 128) * 4,
                  "lowbit-interpret": None}[r.impl]
        if weight is None:
            weight = quantized_weight_bytes(uint3) if r.weight_type == "uint3" else n * k // 2 + n * (k // 128) * 2
        assert r.bytes == weight + r.m * k * act + r.m * n * act, r.impl
        assert r.zero_point is (r.weight_type == "uint3") or not r.impl.startswith("lowbit")


def test_annotate_adds_bandwidth_and_speedups(rows) -> None:
    out = K.annotate(rows, gbps=10.0)
    by = {(r.impl, r.weight_type, r.m, r.act_dtype): r for r in out}
    for r in out:
        assert r.gbps == pytest.approx(r.bytes / r.median_s / 1e9)
        assert r.roofline == pytest.approx(r.gbps / 10.0)
    for m, act in ((1, "float32"), (2, "float32"), (1, "bfloat16")):
        i4 = by[("lowbit-interpret", "int4", m, act)]
        u3 = by[("lowbit-interpret", "uint3", m, act)]
        assert set(i4.speedup) == {"torch-fp32", "torch-bf16", "torch-int4"}
        assert set(u3.speedup) == {"torch-fp32", "torch-bf16"}           # torch-int4 only for 4-bit types
        base = by[("torch-bf16", "bfloat16", m, "bfloat16")]
        assert i4.speedup["torch-bf16"] == pytest.approx(base.median_s / i4.median_s)
        assert by[("torch-fp32", "float32", m, "float32")].speedup == {}


def test_unavailable_backend_gives_na_rows_without_numbers(monkeypatch) -> None:
    monkeypatch.setattr(K, "backend_status", lambda name, device="cpu": "backend xyz is not installed")
    out = K.annotate(K.run_kernels(tiny_settings(ms=(1,), types=("int4",))), gbps=10.0)
    lowbit = [r for r in out if r.is_lowbit]
    assert [r.act_dtype for r in lowbit] == ["float32", "bfloat16"]
    for row in lowbit:
        assert row.status == "n/a" and "not available: backend xyz" in row.detail
        assert row.median_s is None and row.gbps is None and row.speedup == {}
    assert all(r.ok for r in out if not r.is_lowbit)


def test_wrong_results_are_not_timed(monkeypatch) -> None:
    import lowbit.ops

    real = lowbit.ops.matmul
    monkeypatch.setattr(lowbit.ops, "matmul",
                        lambda x, q, bias=None, *, backend=None: real(x, q, backend=backend) * 1.01)
    out = K.run_kernels(tiny_settings(ms=(1,), types=("int4",)))
    for row in (r for r in out if r.is_lowbit):
        assert row.status == "wrong" and "float64 reference" in row.detail
        assert row.rel_err > row.tolerance and row.median_s is None


def test_failing_kernel_is_an_error_row(monkeypatch) -> None:
    import lowbit.ops

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(lowbit.ops, "matmul", broken)
    row = next(r for r in K.run_kernels(tiny_settings(ms=(1,), types=("int4",))) if r.is_lowbit)
    assert row.status == "error" and "RuntimeError: boom" in row.detail and row.median_s is None


def test_rotation_copies() -> None:
    assert K.rotation_copies(8 << 20, 96 << 20, cold=True) == 13
    assert K.rotation_copies(1 << 30, 96 << 20, cold=True) == 1
    assert K.rotation_copies(1, 96 << 20, cold=True) == K.MAX_COPIES
    assert K.rotation_copies(8 << 20, 96 << 20, cold=False) == 1
    assert K.default_flush_bytes() >= 64 << 20


def test_group_size_must_divide_k() -> None:
    from lowbit.errors import LowbitError

    with pytest.raises(LowbitError, match="does not divide K"):
        K.run_kernels(tiny_settings(group_size=96))


def test_interleaved_rounds_give_every_row_all_samples() -> None:
    probes: list[float] = []

    def probe() -> float:
        probes.append(10.0 * (len(probes) + 1))
        return probes[-1]

    out = K.run_kernels(tiny_settings(ms=(1,), types=("int2",), repeats=3, act_dtypes=("bfloat16",)),
                        bandwidth_probe=probe)
    assert probes == [10.0, 20.0, 30.0]                  # one bandwidth sample per timing round
    assert len(out) == 4 and all(r.ok and r.repeats == 3 and r.iqr_s >= 0 for r in out)
    for r in out:                                        # every sample kept with the bandwidth of its round
        assert r.round_gbps == (10.0, 20.0, 30.0) and len(r.samples_s) == 3
        assert sorted(r.samples_s)[1] == pytest.approx(r.median_s)


def test_roofline_pairs_each_round_with_its_bandwidth() -> None:
    from lowbit.bench.results import KernelRow

    # 1e7 bytes in 1 ms at 10 GB/s, then in 2 ms at 5 GB/s, then 4 ms at 5 GB/s: fractions 1.0, 1.0, 0.5
    row = KernelRow(impl="lowbit-tvm", n=8, k=8, m=1, weight_type="int4", status="ok", bytes=10**7,
                    median_s=2e-3, samples_s=(1e-3, 2e-3, 4e-3), round_gbps=(10.0, 5.0, 5.0))
    (out,) = K.annotate([row], gbps=20.0)
    assert out.roofline == pytest.approx(1.0)            # median of the paired fractions
    assert out.gbps == pytest.approx(5.0)                # achieved: bytes / median time
    unpaired = KernelRow(impl="lowbit-tvm", n=8, k=8, m=1, weight_type="int4", status="ok", bytes=10**7,
                         median_s=2e-3, samples_s=(1e-3, 2e-3, 4e-3))
    assert K.annotate([unpaired], gbps=20.0)[0].roofline == pytest.approx(0.25)   # 5 GB/s of 20


def test_each_sample_follows_untimed_calls(monkeypatch) -> None:
    """Other work's spinning thread pools must not land in a sample: it starts after untimed calls."""
    calls: list[str] = []
    rotation = K._Rotation(["w"])
    cand = K._Candidate(None, lambda w: calls.append("call"), rotation)
    monkeypatch.setattr(K, "SETTLE_S", 0.0)
    cand.number = 3
    cand.sample()
    assert len(calls) == 1 + 3 and len(cand.samples) == 1   # >= 1 untimed call, then `number` timed ones


def test_failure_while_timing_is_an_error_row(monkeypatch) -> None:
    import lowbit.ops

    real = lowbit.ops.matmul
    calls = {"n": 0}

    def flaky(x, q, bias=None, *, backend=None):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("crashed on call 2")
        return real(x, q, backend=backend)

    monkeypatch.setattr(lowbit.ops, "matmul", flaky)
    out = K.run_kernels(tiny_settings(ms=(1,), types=("int4",), repeats=2, act_dtypes=("float32",)))
    row = next(r for r in out if r.is_lowbit)
    assert row.status == "error" and "crashed on call 2" in row.detail and row.median_s is None
    assert row.rel_err is not None                      # it passed the check before it failed
    assert all(r.ok for r in out if not r.is_lowbit)



def test_every_activation_dtype_gets_the_f32_bound(rows) -> None:
    from lowbit.bench.reference import f32_tolerance

    # bf16 rows: the same bound after the output's own rounding (check_matmul's output_rounding)
    assert {r.tolerance for r in rows if r.is_lowbit} == {f32_tolerance(TINY_SHAPE[1])}
