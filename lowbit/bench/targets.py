"""The project's performance targets, judged on a run's results.

Targets (2 threads, weight N = K = 4096, group 128, GEMV: M = 1), for each lowbit backend in the run:

* W4 (``int4``) GEMV at >= 60% of the measured DRAM-bandwidth roofline;
* W4 GEMV >= 5x torch fp32 and >= 1.5x torch bf16 on the dequantized weight, and faster than torch's int4
  CPU kernel;
* W3 and W2 (``int3``, ``int2``) faster than W4 roughly in proportion to the bytes they read: the speed-up
  over W4 reaches at least :data:`PROPORTION` of the byte ratio;
* decode of the ~1B model (preset ``1b``) at W4 >= 4x the tokens/s of transformers fp32.

The kernel targets are judged per activation dtype of the lowbit rows (float32, bfloat16: the subject names it).

A target whose rows are missing, not ``ok``, or measured under other conditions (threads, group size,
model) is ``None`` ("n/a") with the reason; it never passes by default.

>>> from lowbit.bench.results import KernelRow
>>> rows = [KernelRow("lowbit-tvm", 4096, 4096, 1, "int4", "ok", median_s=5e-4, bytes=8_683_520, group_size=128,
...                   roofline=0.62, speedup={"torch-fp32": 7.0, "torch-bf16": 2.0, "torch-int4": 1.2})]
>>> checks = kernel_targets(rows, threads=2, group_size=128)
>>> [t.marker for t in checks][:4], checks[0].subject
(['PASS', 'PASS', 'PASS', 'PASS'], 'lowbit-tvm int4, x float32')
"""
from __future__ import annotations

from typing import Sequence

from .config import TARGET_SHAPE, TARGET_THREADS
from .results import DecodeRow, KernelRow, TargetCheck

__all__ = ["kernel_targets", "kernel_subject", "decode_targets", "decode_subject", "evaluate_targets", "PROPORTION", "TARGET_GROUP",
           "is_target_row"]

PROPORTION = 0.8
TARGET_GROUP = 128
W4, LOWER = "int4", ("int3", "int2")


def is_target_row(row: KernelRow) -> bool:
    """Whether a kernel row is measured at the targets' problem (N = K = 4096, M = 1, group 128)."""
    return row.shape == TARGET_SHAPE and row.m == 1 and row.group_size == TARGET_GROUP


def _conditions(threads: int, group_size: int) -> str | None:
    if threads != TARGET_THREADS:
        return f"targets are stated for {TARGET_THREADS} threads; this run used {threads}"
    if group_size != TARGET_GROUP:
        return f"targets are stated for group {TARGET_GROUP}; this run used {group_size}"
    return None


def kernel_subject(impl: str, weight_type: str, act_dtype: str) -> str:
    """The subject naming a kernel row in target checks: ``"lowbit-tvm int4, x bfloat16"``."""
    return f"{impl} {weight_type}, x {act_dtype}"


def _row(rows: Sequence[KernelRow], impl: str, wtype: str, act: str) -> KernelRow | None:
    for r in rows:
        if r.impl == impl and r.weight_type == wtype and r.act_dtype == act and is_target_row(r):
            return r
    return None


def _why_not(row: KernelRow | None, what: str) -> str:
    if row is None:
        return f"{what} was not measured at N=K=4096, M=1"
    return f"{what}: {row.status}" + (f" ({row.detail})" if row.detail else "")


def _check(name: str, requirement: str, subject: str, value: float | None, passed: bool, shown: str,
           why: str, off: str | None) -> TargetCheck:
    if value is None:
        return TargetCheck(name, requirement, why, None, subject)
    if off is not None:
        return TargetCheck(name, requirement, f"{shown}; {off}", None, subject)
    return TargetCheck(name, requirement, shown, passed, subject)


def kernel_targets(rows: Sequence[KernelRow], threads: int, group_size: int) -> list[TargetCheck]:
    """The GEMV targets for every lowbit backend present in ``rows`` (annotated rows: see kernels.annotate)."""
    off = _conditions(threads, group_size)
    checks: list[TargetCheck] = []
    for impl, act in dict.fromkeys((r.impl, r.act_dtype) for r in rows if r.is_lowbit):
        w4 = _row(rows, impl, W4, act)
        subject = kernel_subject(impl, W4, act)
        ok4 = w4 is not None and w4.ok
        why4 = _why_not(w4, subject)
        frac = w4.roofline if ok4 else None
        checks.append(_check("W4 GEMV roofline", ">= 60% of DRAM roofline", subject, frac,
                             frac is not None and frac >= 0.60, f"{frac:.0%}" if frac is not None else "",
                             why4 if not ok4 else "no bandwidth measured", off))
        for base, need, label in (("torch-fp32", 5.0, "torch fp32"), ("torch-bf16", 1.5, "torch bf16"),
                                  ("torch-int4", 1.0, "torch int4")):
            value = w4.speedup.get(base) if ok4 else None
            if label == "torch int4":
                requirement, passed = "faster than torch int4 (> 1x)", value is not None and value > need
            else:
                requirement, passed = f">= {need:g}x {label}", value is not None and value >= need
            checks.append(_check(f"W4 GEMV vs {label}", requirement, subject, value, passed,
                                 f"{value:.2f}x" if value is not None else "",
                                 why4 if not ok4 else f"baseline {label} was not timed ok", off))
        for low in LOWER:
            r = _row(rows, impl, low, act)
            value, shown = None, ""
            if ok4 and r is not None and r.ok:
                speed = w4.median_s / r.median_s
                byte_ratio = w4.bytes / r.bytes
                value = speed / byte_ratio
                shown = (f"{speed:.2f}x faster than W4 for {byte_ratio:.2f}x fewer bytes "
                         f"({value:.0%} of proportional)")
            low_subject = kernel_subject(impl, low, act)
            why = why4 if not ok4 else _why_not(r, low_subject)
            checks.append(_check(f"W{low[-1]} vs W4", f"speed-up >= {PROPORTION:.0%} of the byte ratio",
                                 low_subject, value, value is not None and value >= PROPORTION, shown, why, off))
    return checks


def decode_subject(impl: str, weight_type: str, activations: str = "float32") -> str:
    """The subject naming a decode row in target checks: ``"lowbit-tvm int4 decode, x bfloat16"``."""
    return f"{impl} {weight_type} decode, x {activations}"


def decode_targets(rows: Sequence[DecodeRow], model: str | None, threads: int) -> list[TargetCheck]:
    """Decode of the ~1B model at W4 >= 4x transformers fp32, for every lowbit backend in ``rows``."""
    checks = []
    fp32 = next((r for r in rows if r.impl == "transformers-fp32"), None)
    for impl, act in dict.fromkeys((r.impl, r.activations) for r in rows if r.impl.startswith("lowbit-")):
        row = next((r for r in rows if r.impl == impl and r.weight_type == W4 and r.activations == act), None)
        subject = decode_subject(impl, W4, act)
        requirement = ">= 4x transformers fp32 tok/s (~1B model)"
        if row is None:
            checks.append(TargetCheck("decode W4", requirement, "W4 decode was not measured", None, subject))
            continue
        value = row.speedup.get("transformers-fp32") if row.ok else None
        shown = f"{value:.2f}x ({row.tokens_per_s:.1f} vs {fp32.tokens_per_s:.1f} tok/s)" if value is not None else ""
        if value is None:
            why = (f"{impl}: {row.status} ({row.detail})" if not row.ok else "transformers fp32 not timed ok")
            checks.append(TargetCheck("decode W4", requirement, why, None, subject))
        elif model != "1b" or threads != TARGET_THREADS:
            checks.append(TargetCheck("decode W4", requirement,
                                      f"{shown}; targets are for the 1b model at {TARGET_THREADS} threads "
                                      f"(this run: {model}, {threads} threads)", None, subject))
        else:
            checks.append(TargetCheck("decode W4", requirement, shown, value >= 4.0, subject))
    return checks


def evaluate_targets(kernels: Sequence[KernelRow], decode: Sequence[DecodeRow], *, threads: int, group_size: int,
                     decode_model: str | None) -> list[TargetCheck]:
    """All targets of a run (kernel targets only when kernel rows exist, decode ones only with decode rows)."""
    checks = kernel_targets(kernels, threads, group_size) if kernels else []
    if decode:
        checks += decode_targets(decode, decode_model, threads)
    return checks
