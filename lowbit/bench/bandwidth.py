"""Memory read bandwidth of this machine: the roofline a memory-bound kernel (GEMV, decode) is judged by.

A large array (default 256 MiB, far beyond any cache) is read in full by a reduction, ``repeats`` times;
the median time gives GB/s (1 GB = 1e9 bytes). Three instruments:
- ``"torch"``: ``x.sum()`` on float32, with torch's intra-op threads set to ``threads`` for the call;
- ``"numpy"``: ``np.add.reduce`` over ``threads`` equal slices on a thread pool (numpy releases the GIL);
- ``"cuda"``: ``x.sum()`` on a CUDA device, timed with CUDA events (the GPU's memory: HBM on an H200).

Measure in the same run as the kernel you compare with: the machines are shared and the number moves.

>>> r = read_bandwidth(nbytes=64 << 20, threads=1, repeats=3)          # doctest: +SKIP
>>> f"{r.gbps:.1f} GB/s"                                               # doctest: +SKIP
'15.2 GB/s'
"""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from lowbit.errors import LowbitError
from lowbit.lowering.target import torch_threads

__all__ = ["BandwidthResult", "BandwidthProbe", "read_bandwidth", "measure_bandwidth", "usable_cores", "METHODS"]

METHODS = ("torch", "numpy", "cuda")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BandwidthResult:
    """Median read bandwidth (``gbps``, 1e9 bytes/s) of ``repeats`` full reads of ``nbytes`` bytes."""

    gbps: float
    threads: int
    nbytes: int
    repeats: int
    method: str
    samples_gbps: tuple[float, ...]

    @property
    def seconds_per_read(self) -> float:
        return self.nbytes / (self.gbps * 1e9)

    def __str__(self) -> str:
        if self.method == "cuda":
            return f"{self.gbps:.1f} GB/s read (cuda, {self.nbytes / 2**20:.0f} MiB, median of {self.repeats})"
        return (f"{self.gbps:.1f} GB/s read ({self.method}, {self.threads} thread{'s' if self.threads > 1 else ''}, "
                f"{self.nbytes / 2**20:.0f} MiB, median of {self.repeats})")


class BandwidthProbe:
    """One probe array, allocated and read once up front, then timed full reads on demand (:meth:`sample`).

    Reusing one array keeps allocation and first-touch page faults out of the samples: a freshly allocated
    array read once measured anywhere from 13 to 64 GB/s on the 2-core machine where warm reads measure ~35.

    >>> with BandwidthProbe(nbytes=1 << 20, threads=1) as probe:                  # doctest: +SKIP
    ...     gbps = probe.sample()
    """

    def __init__(self, nbytes: int = 256 << 20, threads: int = 1, method: str = "torch", warmup: int = 1,
                 device: str = "cuda"):
        if method not in METHODS:
            raise LowbitError(f"unknown bandwidth method {method!r}; expected one of {', '.join(METHODS)}")
        if not isinstance(nbytes, int) or nbytes < 4096:
            raise LowbitError(f"nbytes must be an int >= 4096, got {nbytes!r}")
        if not isinstance(threads, int) or threads < 1:
            raise LowbitError(f"threads must be an int >= 1, got {threads!r}")
        import numpy as np

        self.count = nbytes // 4
        self.nbytes = self.count * 4
        self.threads, self.method = threads, method
        self._pool: ThreadPoolExecutor | None = None
        if method in ("torch", "cuda"):
            import torch

            if method == "cuda" and not torch.cuda.is_available():
                raise LowbitError("the cuda bandwidth probe needs a CUDA device, and torch sees none",
                                  hint="use method='torch' (this CPU's memory) or run on a GPU machine")

            self._data = torch.ones(self.count, dtype=torch.float32, device=device if method == "cuda" else "cpu")
        else:
            array = np.ones(self.count, dtype=np.float32)
            bounds = np.linspace(0, self.count, threads + 1).astype(np.int64)
            self._parts = [array[bounds[i]:bounds[i + 1]] for i in range(threads)]
            self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        for _ in range(warmup):
            self._read()

    def _read(self) -> float:
        import numpy as np

        if self.method == "cuda":
            total = float(self._data.sum())
        elif self.method == "torch":
            with torch_threads(self.threads):
                total = float(self._data.sum())
        elif self._pool is None:
            total = float(np.add.reduce(self._parts[0]))
        else:
            total = float(sum(self._pool.map(np.add.reduce, self._parts)))
        if not np.isclose(total, self.count, rtol=1e-3):  # the read really touched every element
            raise LowbitError(f"bandwidth probe summed {total}, expected {self.count}")
        return total

    def sample(self, warmup: int = 0) -> float:
        """GB/s of one timed full read of the array, after ``warmup`` untimed ones (e.g. to let the thread pools
        of other work stop spinning before the timed read)."""
        for _ in range(warmup):
            self._read()
        if self.method == "cuda":
            import torch

            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            self._data.sum()
            end.record()
            end.synchronize()
            return self.nbytes / (begin.elapsed_time(end) * 1e-3) / 1e9
        start = time.perf_counter()
        self._read()
        return self.nbytes / (time.perf_counter() - start) / 1e9

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "BandwidthProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_bandwidth(nbytes: int = 256 << 20, threads: int = 1, repeats: int = 5, method: str = "torch",
                   warmup: int = 1, device: str = "cuda") -> BandwidthResult:
    """Measure the read bandwidth of ``threads`` threads streaming an ``nbytes`` float32 array (``method="cuda"``:
    of ``device``'s memory)."""
    if not isinstance(repeats, int) or repeats < 1:
        raise LowbitError(f"repeats must be an int >= 1, got {repeats!r}")
    with BandwidthProbe(nbytes, threads, method, warmup, device) as probe:
        samples = [probe.sample() for _ in range(repeats)]
    return BandwidthResult(gbps=statistics.median(samples), threads=threads, nbytes=probe.nbytes, repeats=repeats,
                           method=method, samples_gbps=tuple(samples))


def measure_bandwidth(threads: Sequence[int] | None = None, nbytes: int = 256 << 20, repeats: int = 5,
                      method: str = "torch") -> dict[int, BandwidthResult]:
    """:func:`read_bandwidth` for each thread count (default: 1 and all usable cores)."""
    counts = sorted(set(threads)) if threads is not None else sorted({1, usable_cores()})
    return {n: read_bandwidth(nbytes=nbytes, threads=n, repeats=repeats, method=method) for n in counts}
