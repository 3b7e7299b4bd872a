"""lowbit.bench timing and bandwidth instruments: shapes and sanity only, never speed thresholds."""
from __future__ import annotations

import math
import time

import pytest
import torch

from lowbit.bench.bandwidth import METHODS, BandwidthResult, measure_bandwidth, read_bandwidth
from lowbit.bench.timing import TimingStats, time_cpu, time_cuda, time_fn
from lowbit.errors import BackendError, LowbitError


def test_time_cpu_counts_calls_and_orders_stats():
    calls = []
    stats = time_cpu(lambda: calls.append(1), warmup=2, repeats=4, number=3)
    assert len(calls) == 2 + 4 * 3
    assert isinstance(stats, TimingStats) and stats.repeats == 4 and stats.number == 3
    assert len(stats.samples_s) == 4 and stats.min_s <= stats.median_s <= stats.max_s
    assert stats.iqr_s >= 0 and math.isclose(stats.median_ms, stats.median_s * 1e3)


def test_time_cpu_calibrates_number_and_measures_sleep():
    calls = []
    stats = time_cpu(lambda: calls.append(1), warmup=0, repeats=2, min_sample_s=1e-3)
    assert stats.number > 1 and len(calls) == 1 + 2 * stats.number
    slept = time_cpu(lambda: time.sleep(0.002), warmup=0, repeats=2, number=1)
    assert slept.min_s >= 0.002  # sleep never returns early: a lower bound, not a speed threshold


def test_time_args_are_checked():
    with pytest.raises(LowbitError, match="repeats"):
        time_cpu(lambda: None, repeats=0)
    with pytest.raises(LowbitError, match="number"):
        time_cpu(lambda: None, number=0)
    with pytest.raises(LowbitError, match="unknown timing device"):
        time_fn(lambda: None, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_time_cuda_without_gpu_explains():
    with pytest.raises(BackendError, match="needs a CUDA device"):
        time_cuda(lambda: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_time_cuda_events():
    x = torch.randn(1 << 20, device="cuda")
    stats = time_fn(lambda: x.mul_(1.0), device="cuda", repeats=3)
    assert stats.clock == "cuda-event" and stats.median_s > 0


_NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("method", [m if m != "cuda" else pytest.param(m, marks=[
    pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA, reason="needs CUDA")]) for m in METHODS])
def test_read_bandwidth_sane(method):
    result = read_bandwidth(nbytes=(8 << 20) + 3, threads=2, repeats=2, method=method)
    assert isinstance(result, BandwidthResult) and result.method == method and result.threads == 2
    assert result.nbytes == 8 << 20  # rounded down to whole float32 elements
    assert len(result.samples_gbps) == 2 and all(math.isfinite(g) and g > 0 for g in result.samples_gbps)
    assert min(result.samples_gbps) <= result.gbps <= max(result.samples_gbps)
    assert math.isclose(result.seconds_per_read, result.nbytes / result.gbps / 1e9)


def test_probe_sample_reads_untimed_first(monkeypatch):
    from lowbit.bench.bandwidth import BandwidthProbe

    with BandwidthProbe(nbytes=1 << 20, threads=1, warmup=0) as probe:
        reads = []
        real = probe._read
        monkeypatch.setattr(probe, "_read", lambda: reads.append(1) or real())
        assert probe.sample() > 0 and len(reads) == 1
        assert probe.sample(warmup=2) > 0 and len(reads) == 1 + 3


def test_measure_bandwidth_thread_counts_and_torch_threads_restored():
    before = torch.get_num_threads()
    results = measure_bandwidth(threads=[2, 1], nbytes=4 << 20, repeats=1)
    assert sorted(results) == [1, 2] and all(r.threads == n for n, r in results.items())
    assert torch.get_num_threads() == before


def test_bandwidth_args_are_checked():
    with pytest.raises(LowbitError, match="unknown bandwidth method"):
        read_bandwidth(method="magic")
    with pytest.raises(LowbitError, match="threads"):
        read_bandwidth(nbytes=1 << 20, threads=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_bandwidth_without_gpu_explains():
    from lowbit.errors import LowbitError

    with pytest.raises(LowbitError, match="CUDA device"):
        read_bandwidth(nbytes=1 << 20, method="cuda")
