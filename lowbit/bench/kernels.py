"""The kernel benchmark: lowbit's low-bit GEMV/GEMM against torch's matmuls on Llama layer shapes.

For every weight shape ``[N, K]`` a random Gaussian weight is drawn; for every weight type it is quantized
group-wise (``uint`` types with zero points, the others symmetric) and ``lowbit.ops.matmul(x, qweight,
backend=b)`` is timed for every M and backend. The baselines get the same problem, on the dequantized
int4 weight: ``torch-fp32`` and ``torch-bf16`` (``F.linear`` on the dense weight) and ``torch-int4``
(torch's int4 CPU kernel on the very same int4 codes); on a CUDA device (``settings.device``) ``torch-fp32``,
``torch-fp16`` and ``torch-bf16`` (cuBLAS). See :mod:`lowbit.bench.baselines`.

On a CUDA device every implementation is timed as a CUDA graph of many calls, replayed between two CUDA
events: the GPU's time for the kernels, without Python's launch gaps between them (a serving loop that
replays its decode step as a graph sees that time). The host time of an eager call is in each row's detail.

Before any implementation is timed its result is checked against the float64 reference
(:mod:`lowbit.bench.reference`); a wrong result is reported as such and not timed. The implementations of
one shape that pass are timed together, in interleaved rounds (each round takes one sample of each, from a
different starting point), so the ratios compare samples taken under the same load of a shared machine.

*Cold* timing (the default): weights cycle through enough copies to span ``flush_bytes`` (3x the last-level
cache by default), so every call reads its weight from DRAM as in LLM decode, where each layer's weight is
read once per token. ``cold=False`` times one copy again and again (cache-resident: compute speed).

Rows come back without bandwidth figures; :func:`annotate` adds the achieved GB/s, the roofline fraction
and the speed-ups once the bandwidth measured in the same run is known.

>>> from lowbit.bench.config import KernelSettings
>>> s = KernelSettings(shapes=((64, 256),), ms=(1,), types=("int4",), backends=(), repeats=1, cold=False)
>>> rows = run_kernels(s)
>>> sorted((r.impl, r.status) for r in rows)
[('torch-bf16', 'ok'), ('torch-fp32', 'ok'), ('torch-int4', 'ok')]
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import statistics
from typing import Any, Callable, Sequence

from lowbit.errors import LowbitError

from .config import KernelSettings
from .results import KernelRow
from .roofline import MatmulBytes, achieved_gbps, dense_weight_bytes, int4pack_weight_bytes, roofline_fraction

__all__ = ["run_kernels", "annotate", "count_steps", "backend_status", "rotation_copies", "default_flush_bytes",
           "BASELINE_TYPE", "MAX_COPIES"]

#: the weight the baselines multiply (dequantized): the same int4 codes torch's int4 kernel runs
BASELINE_TYPE = "int4"
MAX_COPIES = 64
#: each timing sample runs an implementation this long at least (several calls for the fastest kernels)
MIN_SAMPLE_S = 1e-3
#: before each timed sample an implementation runs untimed for this long, as in a model that calls it back to
#: back: the thread pools of whatever ran before stop spinning (torch's OpenMP workers spin for milliseconds
#: after a parallel region and hold a core the next implementation's pool needs: up to 4 ms per call measured
#: on 0.3 ms kernels), this implementation's own pool is awake and the cores are at their working clock.
#: (Sleeping instead left the cores idle and the next calls up to 2x slow.) The spinning lasts 10-20 ms on a
#: 2-core VM (AVX2 host: the first lowbit calls after 10 torch int4 or bf16 GEMVs took ~4 ms, then 0.65 ms from
#: 10-20 ms on): with 10 ms here the implementation sampled after torch's int4 kernel, whichever it was, ran
#: ~1.1 ms where the others ran 0.65 (int4 x f32 4096^2 GEMV, README run of 2026-11-23); 50 ms leaves a margin.
SETTLE_S = 0.05

Tick = Callable[[str], None]


def default_flush_bytes(device: str = "cpu") -> int:
    """Bytes the cold rotation spans: 3x the last-level cache, at least 64 MiB (128 MiB when unknown); on a CUDA
    device 3x its L2 cache, at least 256 MiB."""
    if device.startswith("cuda"):
        import torch

        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
        return max(3 * l2, 256 << 20)
    from .machine import last_level_cache_bytes

    llc = last_level_cache_bytes()
    return max(3 * llc, 64 << 20) if llc else 128 << 20


def rotation_copies(nbytes: int, flush_bytes: int, cold: bool) -> int:
    """How many copies of an ``nbytes`` weight make a rotation span ``flush_bytes`` (1 when not cold).

    >>> rotation_copies(8 << 20, 96 << 20, cold=True), rotation_copies(64 << 20, 96 << 20, cold=True)
    (13, 2)
    """
    if not cold or nbytes <= 0:
        return 1
    return int(max(1, min(MAX_COPIES, math.floor(flush_bytes / nbytes) + 1)))


@functools.lru_cache(maxsize=None)
def backend_status(backend: str, device: str = "cpu") -> str | None:
    """None when ``lowbit.ops.matmul(..., backend=backend)`` can run on ``device``'s tensors here, else why not."""
    try:
        import lowbit.ops  # noqa: F401
        from lowbit.kernels.library import resolve_backend
    except ImportError as err:
        return f"lowbit's kernels cannot be imported ({err})"
    try:
        resolve_backend(backend, "cuda" if device.startswith("cuda") else "cpu")
    except LowbitError as err:
        return err.message
    return None


def count_steps(settings: KernelSettings) -> int:
    """Progress-bar steps of :func:`run_kernels`: per shape one per quantization, one per checked
    implementation and one per timing round."""
    lowbit_runs = len(settings.ms) * len(settings.backends) * len(settings.act_dtypes)
    baselines = 4 if settings.device.startswith("cuda") else 3     # dense ones and torch-int4, per M
    per_shape = len(settings.ms) * baselines + 1 + len(settings.types) * (1 + lowbit_runs) + settings.repeats
    return len(settings.shapes) * per_shape


def _seed_for(settings: KernelSettings, n: int, k: int) -> int:
    return (settings.seed * 1_000_003 + n * 7919 + k) % (2 ** 63)


def _row_subset(qt: Any, rows: Any) -> Any:
    """The quantized rows ``rows`` of ``qt`` (to dequantize only what the check needs)."""
    from lowbit.quant import QuantizedTensor

    pick = lambda a: None if a is None else a[rows]  # noqa: E731
    return QuantizedTensor(pick(qt.packed), pick(qt.scales), pick(qt.zeros), qt.dtype, qt.group_size,
                           (int(rows.numel()), qt.shape[1]), qt.format)


def _describe_error(err: BaseException) -> str:
    text = err.message if isinstance(err, LowbitError) else f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())[:300]


class _Shape:
    """The data of one weight shape: the random weight, activations per M and the checked rows."""

    def __init__(self, settings: KernelSettings, n: int, k: int):
        import torch

        from .reference import check_rows

        gen = torch.Generator().manual_seed(_seed_for(settings, n, k))     # the same data on every device
        self.n, self.k = n, k
        self.weight = torch.randn(n, k, generator=gen).to(settings.device)
        self.x = {m: torch.randn(m, k, generator=gen).to(settings.device) for m in settings.ms}
        self.rows = check_rows(n, settings.check_rows)


class _Rotation:
    """Copies of one weight handed out in turn. Every implementation using the weight (each M, each backend)
    draws from the same cursor, so each call gets the least recently used copy: cold when the copies span
    more than the caches."""

    def __init__(self, copies: Sequence[Any]):
        self.copies = list(copies)
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.copies)

    def next(self) -> Any:
        w = self.copies[self.cursor]
        self.cursor = (self.cursor + 1) % len(self.copies)
        return w


class _Candidate:
    """An implementation that passed its check, ready to be sampled: ``call(weight)`` on rotating copies."""

    def __init__(self, row: KernelRow, call: Callable[[Any], Any], rotation: _Rotation):
        self.row = row
        self.call = call
        self.rotation = rotation
        self.number = 1
        self.samples: list[float] = []
        self.round_gbps: list[float] = []   # the bandwidth probe of the round of each sample
        self.failure: str | None = None

    def __call__(self) -> Any:
        return self.call(self.rotation.next())

    def calibrate(self, min_sample_s: float) -> None:
        """Warm every copy once, then choose calls per sample so a sample lasts ``min_sample_s``."""
        import time

        self.run_for(SETTLE_S)
        for _ in range(len(self.rotation)):
            self()
        start = time.perf_counter()
        self()
        one = time.perf_counter() - start
        self.number = int(min(1000, max(1, math.ceil(min_sample_s / one)))) if one > 0 else 1000

    def run_for(self, seconds: float) -> None:
        """Call untimed, back to back, for ``seconds`` (at least once)."""
        import time

        end = time.perf_counter() + seconds
        self()
        while time.perf_counter() < end:
            self()

    def sample(self) -> None:
        """One timed sample of ``number`` calls, after running untimed for :data:`SETTLE_S`."""
        from .timing import time_cpu

        self.run_for(SETTLE_S)
        self.samples.append(time_cpu(self, warmup=0, repeats=1, number=self.number).median_s)

    def result(self) -> KernelRow:
        from .timing import TimingStats

        if self.failure is not None:
            return dataclasses.replace(self.row, status="error", detail=self.failure)
        stats = TimingStats.from_samples(self.samples, self.number, "perf_counter")
        paired = len(self.round_gbps) == len(self.samples)
        return dataclasses.replace(self.row, status="ok", median_s=stats.median_s, min_s=stats.min_s,
                                   iqr_s=stats.iqr_s, repeats=stats.repeats, number=stats.number,
                                   copies=len(self.rotation), samples_s=tuple(self.samples),
                                   round_gbps=tuple(self.round_gbps) if paired else ())


class _CudaCandidate(_Candidate):
    """A :class:`_Candidate` on a CUDA device: ``number`` calls (over the rotating copies) are captured once in a
    CUDA graph and each sample is one replay timed with CUDA events. Without a graph (an implementation that
    cannot be captured) the ``number`` calls are launched eagerly between the events."""

    def __init__(self, row: KernelRow, call: Callable[[Any], Any], rotation: _Rotation):
        super().__init__(row, call, rotation)
        self.graph: Any = None
        self.host_s: float | None = None     # host time of one eager call (launch included), synchronized

    def calibrate(self, min_sample_s: float) -> None:
        import time

        import torch

        for _ in range(len(self.rotation)):
            self()
        torch.cuda.synchronize()
        calls = max(len(self.rotation), 8)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        begin.record()
        for _ in range(calls):
            self()
        end.record()
        end.synchronize()
        self.host_s = (time.perf_counter() - start) / calls
        one = begin.elapsed_time(end) * 1e-3 / calls          # an upper bound: launch gaps included
        self.number = int(min(1000, max(len(self.rotation), math.ceil(min_sample_s / one) if one > 0 else 1000)))
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(self.number):
                    self()
            graph.replay()
            torch.cuda.synchronize()
            self.graph = graph
        except Exception:  # noqa: BLE001 - timed eagerly instead
            torch.cuda.synchronize()
            self.graph = None

    def sample(self) -> None:
        import torch

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        if self.graph is not None:
            self.graph.replay()
        else:
            for _ in range(self.number):
                self()
        end.record()
        end.synchronize()
        self.samples.append(begin.elapsed_time(end) * 1e-3 / self.number)

    def result(self) -> KernelRow:
        row = super().result()
        if row.status != "ok":
            return row
        how = (f"CUDA graph of {self.number} calls" if self.graph is not None
               else f"{self.number} eager calls (not capturable in a CUDA graph)")
        host = f"; an eager call takes {self.host_s * 1e6:.1f} us of host time" if self.host_s else ""
        return dataclasses.replace(row, detail=f"{row.detail}; timed as a {how}{host}".lstrip("; "))


def _candidate(settings: KernelSettings, row: KernelRow, call: Callable[[Any], Any],
               rotation: _Rotation) -> _Candidate:
    cls = _CudaCandidate if settings.device.startswith("cuda") else _Candidate
    return cls(row, call, rotation)


def _checked(base: KernelRow, first: Callable[[], Any], check: Callable[[Any], Any]) -> KernelRow:
    """``base`` after one run checked against float64: status ``ok`` (to be timed), ``wrong`` or ``error``."""
    try:
        result = check(first())
    except Exception as err:  # noqa: BLE001 - a failing implementation is a result, not a crash of the run
        return dataclasses.replace(base, status="error", detail=_describe_error(err))
    base = dataclasses.replace(base, rel_err=result.rel_err, tolerance=result.tolerance)
    if not result.ok:
        return dataclasses.replace(base, status="wrong",
                                   detail=f"result does not match the float64 reference: {result}")
    return dataclasses.replace(base, status="ok")


def _copies(first: Any, nbytes: int, flush: int, cold: bool, clone: Callable[[Any], Any]) -> _Rotation:
    return _Rotation([first] + [clone(first) for _ in range(rotation_copies(nbytes, flush, cold) - 1)])


def _baselines(settings: KernelSettings, data: _Shape, flush: int,
               tick: Tick) -> tuple[list[KernelRow], list[_Candidate]]:
    import torch
    import torch.nn.functional as F

    from lowbit.quant import quantize

    from .baselines import int4_unsupported_reason, int4pack_linear, to_int4pack
    from .reference import BF16_TOLERANCE, FP16_TOLERANCE, check_matmul, f32_tolerance

    n, k, g = data.n, data.k, settings.group_size
    on_gpu = settings.device.startswith("cuda")
    qt = quantize(data.weight, BASELINE_TYPE, group_size=g)
    dense = qt.dequantize()                     # float32 [N, K]
    dense_rows = dense[data.rows]
    tick(f"{n}x{k} baselines")
    int4_reason = "torch's int4 kernel for CPUs (the GPU baselines are cuBLAS fp16 / bf16)" if on_gpu else \
        int4_unsupported_reason(n, k, g)
    packed = None
    if int4_reason is None:
        try:
            packed = to_int4pack(qt, torch.bfloat16)
        except Exception as err:  # noqa: BLE001
            int4_reason = _describe_error(err)
    clone = lambda t: t.clone()  # noqa: E731
    dense_types = (("torch-fp32", torch.float32),) + ((("torch-fp16", torch.float16),) if on_gpu else ()) + \
        (("torch-bf16", torch.bfloat16),)
    dense_lists: dict[str, _Rotation] = {}
    for impl, wdtype in dense_types:
        w = dense.to(wdtype)
        dense_lists[impl] = _copies(w, w.numel() * w.element_size(), flush, settings.cold, clone)
    int4_list = None
    if packed is not None:
        pw, sz = packed
        int4_list = _copies(pw, int4pack_weight_bytes(n, k, g, 2), flush, settings.cold, clone)
    done: list[KernelRow] = []
    ready: list[_Candidate] = []
    detail = f"F.linear on the dequantized {BASELINE_TYPE} g{g} weight" + (" (cuBLAS)" if on_gpu else "")
    for m in settings.ms:
        x = data.x[m]
        xb = x.to(torch.bfloat16)
        common = dict(n=n, k=k, m=m, group_size=g)
        dense_runs = [("torch-fp32", x, f32_tolerance(k)), ("torch-bf16", xb, BF16_TOLERANCE)]
        if on_gpu:
            dense_runs.insert(1, ("torch-fp16", x.to(torch.float16), FP16_TOLERANCE))
        for impl, act, tol in dense_runs:
            ws = dense_lists[impl]
            w0 = ws.copies[0]
            nbytes = MatmulBytes(m, n, k, dense_weight_bytes(n, k, w0.element_size()), act.element_size(),
                                 act.element_size())
            base = KernelRow(impl=impl, weight_type=str(w0.dtype).removeprefix("torch."), status="error",
                             detail=detail, act_dtype=str(act.dtype).removeprefix("torch."), bytes=nbytes.total,
                             bits_per_weight=nbytes.bits_per_weight, **common)
            row = _checked(base, lambda w=w0, act=act: F.linear(act, w),
                           lambda y, act=act, w=w0: check_matmul(y, act, w[data.rows], data.rows, tol))
            if row.status == "ok":
                ready.append(_candidate(settings, row, lambda w, act=act: F.linear(act, w), ws))
            else:
                done.append(row)
            tick(f"{n}x{k} M={m} {impl}")
        nbytes = MatmulBytes(m, n, k, int4pack_weight_bytes(n, k, g, 2), 2, 2)
        base = KernelRow(impl="torch-int4", weight_type="int4", status="n/a", act_dtype="bfloat16",
                         detail="aten._weight_int4pack_mm_for_cpu on the same int4 codes", bytes=nbytes.total,
                         bits_per_weight=nbytes.bits_per_weight, zero_point=False, **common)
        if int4_list is None:
            done.append(dataclasses.replace(base, detail=f"not available: {int4_reason}"))
        else:
            row = _checked(base, lambda xb=xb: int4pack_linear(xb, int4_list.copies[0], sz, g),
                           lambda y, xb=xb: check_matmul(y, xb, dense_rows, data.rows, BF16_TOLERANCE))
            if row.status == "ok":
                ready.append(_candidate(settings, row, lambda p, xb=xb: int4pack_linear(xb, p, sz, g), int4_list))
            else:
                done.append(row)
        tick(f"{n}x{k} M={m} torch-int4")
    return done, ready


def _lowbit(settings: KernelSettings, data: _Shape, wtype: str, flush: int,
            tick: Tick) -> tuple[list[KernelRow], list[_Candidate]]:
    import torch

    from lowbit.dtypes import dtype
    from lowbit.quant import quantize

    from lowbit.kernels.matmul import product_rounding, takes_zeros_out

    from .reference import OUTPUT_ROUNDING, check_matmul, f32_tolerance, zero_out_magnitudes
    from .roofline import quantized_weight_bytes

    n, k, g = data.n, data.k, settings.group_size
    zero_point = dtype(wtype).kind == "uint"
    qt = quantize(data.weight, wtype, group_size=g, zero_point=zero_point)
    row_subset = _row_subset(qt, data.rows)
    w_rows = row_subset.dequantize()
    zero_out = zero_out_magnitudes(row_subset) if zero_point else None
    tick(f"{n}x{k} quantize {wtype}")
    done: list[KernelRow] = []
    passed: list[tuple[KernelRow, Any, str]] = []
    for backend in settings.backends:
        reason = backend_status(backend, settings.device)
        for m in settings.ms:
            for act in settings.act_dtypes:
                x = data.x[m].to(getattr(torch, act))
                nbytes = MatmulBytes(m, n, k, quantized_weight_bytes(qt), x.element_size(), x.element_size())
                base = KernelRow(impl=f"lowbit-{backend}", n=n, k=k, m=m, weight_type=wtype, status="n/a",
                                 group_size=g, zero_point=zero_point, act_dtype=act, bytes=nbytes.total,
                                 bits_per_weight=nbytes.bits_per_weight)
                if reason is not None:
                    done.append(dataclasses.replace(base, detail=f"not available: {reason}"))
                else:
                    from lowbit.ops import matmul

                    kind = "cuda" if settings.device.startswith("cuda") else "cpu"
                    mags = zero_out if zero_point and takes_zeros_out(m, qt, backend, kind, act) else None
                    # f32 sums, plus the weights' rounding where a GPU's tensor cores take them in half precision
                    tol = f32_tolerance(k) + product_rounding(m, qt, backend, kind, act)
                    row = _checked(base, lambda x=x, backend=backend: matmul(x, qt, backend=backend),
                                   lambda y, x=x, u=OUTPUT_ROUNDING[act], mags=mags, tol=tol: check_matmul(
                                       y, x, w_rows, data.rows, tol, output_rounding=u, magnitudes=mags))
                    if row.status == "ok":
                        passed.append((row, x, backend))
                    else:
                        done.append(row)
                tick(f"{n}x{k} M={m} {wtype} x {act} {backend}")
    if not passed:
        return done, []
    # deep copies carry the kernels' repacked weights (every backend and M was run above): no copy pays
    # for a repack while it is timed
    weights = _copies(qt, quantized_weight_bytes(qt), flush, settings.cold, copy.deepcopy)
    from lowbit.ops import matmul

    ready = [_candidate(settings, row, lambda q, x=x, backend=backend: matmul(x, q, backend=backend), weights)
             for row, x, backend in passed]
    return done, ready


def _measure(candidates: Sequence[_Candidate], repeats: int, tick: Tick, label: str,
             probe: Callable[[], float] | None = None) -> None:
    """``repeats`` rounds; each round takes one sample of every candidate, starting at a different one, so
    all implementations of a shape see the same machine conditions (the machines are shared and noisy).
    ``probe()`` (a bandwidth sample, GB/s) runs once per round, between the kernels; each sample is stored with
    its round's bandwidth (the machine's bandwidth moves: see :func:`annotate`). Every sample is preceded by
    :data:`SETTLE_S` of untimed calls, so no implementation pays for the spinning threads of the one before."""
    for c in candidates:
        try:
            c.calibrate(MIN_SAMPLE_S)
        except Exception as err:  # noqa: BLE001
            c.failure = _describe_error(err)
    live = [c for c in candidates if c.failure is None]
    for r in range(repeats):
        gbps = probe() if probe is not None else None
        for i in range(len(live)):
            c = live[(i + r) % len(live)]
            if c.failure is None:
                try:
                    c.sample()
                except Exception as err:  # noqa: BLE001
                    c.failure = _describe_error(err)
                else:
                    if gbps is not None:
                        c.round_gbps.append(gbps)
        tick(f"{label} timing round {r + 1}/{repeats}")


def run_kernels(settings: KernelSettings, tick: Tick | None = None,
                bandwidth_probe: Callable[[], float] | None = None) -> list[KernelRow]:
    """Time every selected (shape, M, type, backend) and the baselines; rows in a stable order.

    Per shape, every implementation is first run once and checked; those that pass are then timed together
    in ``settings.repeats`` interleaved rounds. ``tick(description)`` is called after each step
    (:func:`count_steps` of them), e.g. to move a progress bar. ``bandwidth_probe()`` is called once per
    timing round and returns the memory bandwidth it sampled (GB/s), kept with each row's samples of that
    round. Threads are
    whatever the caller set (see :func:`lowbit.bench.threads.use_threads`).
    """
    for n, k in settings.shapes:
        if k % settings.group_size:
            raise LowbitError(f"group size {settings.group_size} does not divide K = {k} of shape {n}x{k}",
                              hint="pick a group size that divides every K, e.g. --group-size 128 for Llama shapes")
    tick = tick or (lambda _text: None)
    flush = settings.flush_bytes if settings.flush_bytes is not None else default_flush_bytes(settings.device)
    rows: list[KernelRow] = []
    for n, k in settings.shapes:
        data = _Shape(settings, n, k)
        done, ready = _baselines(settings, data, flush, tick)
        for wtype in settings.types:
            more_done, more_ready = _lowbit(settings, data, wtype, flush, tick)
            done += more_done
            ready += more_ready
        _measure(ready, settings.repeats, tick, f"{n}x{k}", bandwidth_probe)
        rows += sorted(done + [c.result() for c in ready], key=_order_key(settings))
        del data, ready
    return rows


def _order_key(settings: KernelSettings) -> Callable[[KernelRow], tuple]:
    baselines = ("torch-fp32", "torch-fp16", "torch-bf16", "torch-int4")
    types = {t: i for i, t in enumerate(settings.types)}
    backends = {f"lowbit-{b}": i for i, b in enumerate(settings.backends)}
    acts = {a: i for i, a in enumerate(settings.act_dtypes)}

    def key(r: KernelRow) -> tuple:
        if r.impl in baselines:
            return (r.m, 0, 0, baselines.index(r.impl), 0)
        return (r.m, 1, acts.get(r.act_dtype, len(acts)), types.get(r.weight_type, len(types)),
                backends.get(r.impl, len(backends)))

    return key


def annotate(rows: Sequence[KernelRow], gbps: float | None) -> list[KernelRow]:
    """Rows with achieved GB/s, roofline fraction and speed-ups over each baseline.

    The roofline fraction of a row with per-round bandwidth samples (``round_gbps``) is the median over the
    rounds of (bytes / that round's time) / that round's bandwidth; otherwise it is taken against ``gbps``.
    Round by round because a shared VM's bandwidth moves between states (33 and ~50 GB/s here, as the host
    places the two vCPUs) and the kernels' times move with it.

    A lowbit row gets ``speedup[baseline] = baseline time / its time`` for each baseline timed ``ok`` on the
    same (N, K, M); ``torch-int4`` only for 4-bit weight types. Rows that are not ``ok`` get nothing.
    """
    baselines = {(r.n, r.k, r.m, r.impl): r for r in rows if not r.is_lowbit and r.ok}
    out = []
    for r in rows:
        if not r.ok:
            out.append(r)
            continue
        achieved = achieved_gbps(r.bytes, r.median_s) if r.bytes else None
        fraction = _paired_roofline(r)
        if fraction is None and r.bytes and gbps:
            fraction = roofline_fraction(r.bytes, r.median_s, gbps)
        speedup = {}
        if r.is_lowbit:
            for name in ("torch-fp32", "torch-fp16", "torch-bf16", "torch-int4"):
                b = baselines.get((r.n, r.k, r.m, name))
                if b is None or (name == "torch-int4" and r.nbits != 4):
                    continue
                speedup[name] = b.median_s / r.median_s
        out.append(dataclasses.replace(r, gbps=achieved, roofline=fraction, speedup=speedup))
    return out


def _paired_roofline(row: KernelRow) -> float | None:
    """Median over the timing rounds of the roofline fraction against the bandwidth of the same round."""
    if not row.bytes or not row.round_gbps or len(row.round_gbps) != len(row.samples_s):
        return None
    return statistics.median(roofline_fraction(row.bytes, s, g) for s, g in zip(row.samples_s, row.round_gbps))
