"""Median-of-repeats timers: wall clock for CPU work, CUDA events for GPU work.

Each *sample* runs the function ``number`` times back to back and records the time per call; the result is
summarized by :class:`TimingStats` (median first: the machines are shared and noisy, means lie).
``number=None`` calibrates it so one sample takes at least ``min_sample_s``.

>>> stats = time_cpu(lambda: sum(range(1000)), repeats=5)
>>> stats.repeats, stats.min_s <= stats.median_s <= stats.max_s
(5, True)
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from lowbit.errors import BackendError, LowbitError

__all__ = ["TimingStats", "time_cpu", "time_cuda", "time_fn"]


@dataclass(frozen=True)
class TimingStats:
    """Seconds per call over ``repeats`` samples (each the mean of ``number`` back-to-back calls)."""

    median_s: float
    mean_s: float
    min_s: float
    max_s: float
    iqr_s: float
    repeats: int
    number: int
    samples_s: tuple[float, ...]
    clock: str

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def median_us(self) -> float:
        return self.median_s * 1e6

    def __str__(self) -> str:
        return (f"{self.median_ms:.4g} ms median (min {self.min_s * 1e3:.4g}, IQR {self.iqr_s * 1e3:.3g}, "
                f"{self.repeats}x{self.number}, {self.clock})")

    @classmethod
    def from_samples(cls, samples: list[float], number: int, clock: str) -> "TimingStats":
        ordered = sorted(samples)
        if len(ordered) >= 2:
            q = statistics.quantiles(ordered, n=4, method="inclusive")
            iqr = q[2] - q[0]
        else:
            iqr = 0.0
        return cls(median_s=statistics.median(ordered), mean_s=statistics.fmean(ordered), min_s=ordered[0],
                   max_s=ordered[-1], iqr_s=iqr, repeats=len(ordered), number=number,
                   samples_s=tuple(samples), clock=clock)


def _check(warmup: int, repeats: int, number: int | None, min_sample_s: float) -> None:
    if not isinstance(repeats, int) or repeats < 1:
        raise LowbitError(f"repeats must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise LowbitError(f"warmup must be an int >= 0, got {warmup!r}")
    if number is not None and (not isinstance(number, int) or number < 1):
        raise LowbitError(f"number must be None or an int >= 1, got {number!r}")
    if not min_sample_s >= 0:
        raise LowbitError(f"min_sample_s must be >= 0, got {min_sample_s!r}")


def _calibrate(one_call_s: float, min_sample_s: float, max_number: int = 1_000_000) -> int:
    if one_call_s <= 0:
        return max_number if min_sample_s > 0 else 1
    return int(min(max_number, max(1, -(-min_sample_s // one_call_s))))


def time_cpu(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20, number: int | None = None,
             min_sample_s: float = 1e-3) -> TimingStats:
    """Time ``fn()`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats`` samples."""
    _check(warmup, repeats, number, min_sample_s)
    for _ in range(warmup):
        fn()
    if number is None:
        start = time.perf_counter()
        fn()
        number = _calibrate(time.perf_counter() - start, min_sample_s)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return TimingStats.from_samples(samples, number, "perf_counter")


def time_cuda(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20, number: int | None = None,
              min_sample_s: float = 1e-3, device: Any = None) -> TimingStats:
    """Time GPU work enqueued by ``fn()`` with CUDA events on the current stream of ``device``."""
    _check(warmup, repeats, number, min_sample_s)
    import torch

    if not torch.cuda.is_available():
        raise BackendError("time_cuda needs a CUDA device and none is available", hint="use time_cpu")
    with torch.cuda.device(device if device is not None else torch.cuda.current_device()):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()

        def sample(n: int) -> float:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) * 1e-3 / n

        if number is None:
            number = _calibrate(sample(1), min_sample_s)
        samples = [sample(number) for _ in range(repeats)]
    return TimingStats.from_samples(samples, number, "cuda-event")


def time_fn(fn: Callable[[], Any], *, device: str = "cpu", **kwargs: Any) -> TimingStats:
    """:func:`time_cpu` for ``device="cpu"``, :func:`time_cuda` for ``"cuda"``/``"cuda:N"``."""
    if device == "cpu":
        return time_cpu(fn, **kwargs)
    if str(device).startswith("cuda"):
        return time_cuda(fn, device=None if device == "cuda" else device, **kwargs)
    raise LowbitError(f"unknown timing device {device!r}; expected 'cpu' or 'cuda[:N]'")
