"""Target judgement on hand-made rows: pass, fail, and n/a with the reason (never a silent pass)."""
from __future__ import annotations

import pytest

from lowbit.bench.results import DecodeRow, KernelRow
from lowbit.bench.targets import decode_targets, evaluate_targets, kernel_targets


def _row(wtype: str, median_s: float, nbytes: int, **kw) -> KernelRow:
    base = dict(impl="lowbit-tvm", n=4096, k=4096, m=1, weight_type=wtype, status="ok", median_s=median_s,
                bytes=nbytes, group_size=128)
    base.update(kw)
    return KernelRow(**base)


def _by_name(checks):
    return {(c.name, c.subject): c for c in checks}


def test_all_kernel_targets_pass_and_fail() -> None:
    rows = [_row("int4", 1.0e-3, 1000, roofline=0.65, speedup={"torch-fp32": 6.0, "torch-bf16": 1.4,
                                                               "torch-int4": 1.1}),
            _row("int3", 0.8e-3, 750),     # 1.25x faster for 1.333x fewer bytes: 94% of proportional
            _row("int2", 0.9e-3, 500)]     # 1.11x for 2x: 56%
    checks = _by_name(kernel_targets(rows, threads=2, group_size=128))
    assert checks[("W4 GEMV roofline", "lowbit-tvm int4, x float32")].passed is True
    assert checks[("W4 GEMV vs torch fp32", "lowbit-tvm int4, x float32")].passed is True
    bf16 = checks[("W4 GEMV vs torch bf16", "lowbit-tvm int4, x float32")]
    assert bf16.passed is False and bf16.measured == "1.40x"
    assert checks[("W4 GEMV vs torch int4", "lowbit-tvm int4, x float32")].passed is True
    w3 = checks[("W3 vs W4", "lowbit-tvm int3, x float32")]
    assert w3.passed is True and "94% of proportional" in w3.measured
    assert checks[("W2 vs W4", "lowbit-tvm int2, x float32")].passed is False


def test_missing_or_unavailable_rows_are_na() -> None:
    rows = [_row("int4", None, 1000, status="n/a", detail="not available: no tvm"), _row("int3", 1e-3, 750)]
    checks = kernel_targets(rows, threads=2, group_size=128)
    assert len(checks) == 6 and all(c.passed is None for c in checks)
    assert "not available: no tvm" in checks[0].measured
    # measured elsewhere than the target problem: n/a as well
    off_shape = [_row("int4", 1e-3, 1000, n=11008, roofline=0.9, speedup={"torch-fp32": 9.0})]
    assert all(c.passed is None for c in kernel_targets(off_shape, threads=2, group_size=128))


def test_other_threads_or_group_never_pass() -> None:
    rows = [_row("int4", 1e-3, 1000, roofline=0.9, speedup={"torch-fp32": 9.0, "torch-bf16": 3.0, "torch-int4": 2.0})]
    for threads, group in ((1, 128), (2, 64)):
        checks = kernel_targets([r if group == 128 else _row("int4", 1e-3, 1000, group_size=64) for r in rows],
                                threads=threads, group_size=group)
        assert all(c.passed is None for c in checks)
    one = kernel_targets(rows, threads=1, group_size=128)[0]
    assert "90%" in one.measured and "2 threads" in one.measured


def test_decode_target() -> None:
    rows = [DecodeRow("transformers-fp32", "float32", "ok", tokens_per_s=2.0),
            DecodeRow("lowbit-tvm", "int4 g128", "ok", weight_type="int4", tokens_per_s=9.0,
                      speedup={"transformers-fp32": 4.5})]
    (check,) = decode_targets(rows, model="1b", threads=2)
    assert check.passed is True and "4.50x" in check.measured
    (small,) = decode_targets(rows, model="small", threads=2)
    assert small.passed is None and "1b model" in small.measured
    na = [rows[0], DecodeRow("lowbit-tvm", "int4 g128", "n/a", detail="not available: x", weight_type="int4")]
    (check,) = decode_targets(na, model="1b", threads=2)
    assert check.passed is None and "not available: x" in check.measured
    assert evaluate_targets([], rows, threads=2, group_size=128, decode_model="1b")[0].name == "decode W4"


@pytest.mark.parametrize("value, passed", [(0.59, False), (0.6, True)])
def test_roofline_threshold(value: float, passed: bool) -> None:
    (roof, *_rest) = kernel_targets([_row("int4", 1e-3, 1000, roofline=value)], threads=2, group_size=128)
    assert roof.passed is passed
