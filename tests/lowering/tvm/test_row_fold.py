"""``lowbit.lowering.tvm.row_fold``: reducing several rows' lanes at once pairs the same lanes as the row-by-row
halving, so float sums round alike; the generated code's sums equal that halving bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.lowering.tvm.row_fold import fold_indices, fold_rows, fold_steps, merge_indices


def _halving(row: np.ndarray) -> np.float32:
    """Lane ``t`` plus lane ``t + w/2`` while the row has ``w > 1`` lanes, in float32."""
    row = row.astype(np.float32)
    while row.size > 1:
        half = row.size // 2
        row = (row[:half] + row[half:]).astype(np.float32)
    return row[0]


@pytest.mark.parametrize("rows, lanes", [(2, 2), (2, 16), (4, 4), (8, 16), (16, 16), (4, 32)])
def test_folding_rows_rounds_like_halving_each_row(rows, lanes):
    rng = np.random.default_rng(rows * lanes)
    x = (rng.standard_normal((rows, lanes)) * 2.0 ** rng.integers(-20, 20, (rows, lanes))).astype(np.float32)
    got = fold_rows([list(r) for r in x], lambda a, b: np.float32(a + b))
    assert [np.float32(g).tobytes() for g in got] == [_halving(r).tobytes() for r in x]


def test_steps_and_indices():
    assert fold_steps(8, 16) == [(8, 1, 16), (4, 2, 8), (2, 4, 4), (1, 8, 2)]      # 4 + 2 + 1 merges, 1 fold
    assert merge_indices(8, 2, 4) == ((0, 1, 4, 5, 8, 9, 12, 13), (2, 3, 6, 7, 10, 11, 14, 15))
    assert fold_indices(4, 2) == ((0, 2, 4, 6), (1, 3, 5, 7))
    for rows, lanes in ((3, 16), (1, 16), (32, 16), (4, 12)):
        with pytest.raises(ValueError, match="power-of-two rows and lanes"):
            fold_steps(rows, lanes)
