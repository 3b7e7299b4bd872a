"""The float64 check run before anything is timed: it passes correct results and catches wrong ones."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lowbit.bench.reference import BF16_TOLERANCE, check_matmul, check_rows, f32_tolerance  # noqa: E402


def _problem(m: int = 3, n: int = 96, k: int = 256):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)


def test_rows_spread_and_unique() -> None:
    rows = check_rows(1000, 16)
    assert rows[0] == 0 and rows[-1] == 999 and len(rows) == 16 == len(set(rows.tolist()))
    assert check_rows(10, 16).tolist() == list(range(10))


def test_f32_and_bf16_results_pass() -> None:
    x, w = _problem()
    rows = check_rows(w.shape[0], 32)
    assert check_matmul(x @ w.T, x, w[rows], rows, f32_tolerance(256)).ok
    xb, wb = x.bfloat16(), w.bfloat16()
    res = check_matmul(torch.nn.functional.linear(xb, wb), xb, wb[rows], rows, BF16_TOLERANCE)
    assert res.ok and res.rel_err > 0


def test_wrong_results_fail() -> None:
    x, w = _problem()
    rows = check_rows(w.shape[0], 96)
    y = x @ w.T
    bad = y.clone()
    bad[1, 7] += 0.05 * (x[1].abs() @ w[7].abs())   # 5% of the element's magnitude scale
    assert not check_matmul(bad, x, w[rows], rows, BF16_TOLERANCE).ok
    swapped = y[:, torch.randperm(96, generator=torch.Generator().manual_seed(0))]
    assert not check_matmul(swapped, x, w[rows], rows, BF16_TOLERANCE).ok
    nan = y.clone()
    nan[0, 0] = float("nan")
    assert not check_matmul(nan, x, w[rows], rows, 1.0).ok
    # bf16 rounding of the weight is beyond the f32 bound
    assert not check_matmul(x @ w.bfloat16().float().T, x, w[rows], rows, f32_tolerance(256)).ok
