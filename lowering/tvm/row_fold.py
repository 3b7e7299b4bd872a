"""Reducing the lanes of several rows at once on the CPU: ``R`` rows of ``v`` lanes folded together by
two-source shuffles, ``R`` results in the lanes of one vector.

A reduction over a row's ``v`` lanes (one SIMD vector) halves it ``log2(v)`` times: lane ``t`` combined with
lane ``t + w/2`` of the current width ``w``. Done row by row, each step is a shuffle within a vector of ``w``
lanes that shrinks to scalars; decode attention reduces 8 score rows of 16 lanes per page that way (their
maximum, then their sum). Folded together, every step works on full vectors of two rows:

* **merge** two vectors ``A``, ``B`` that each hold ``g`` groups of ``w`` lanes (group ``j``: lanes
  ``[j w, (j + 1) w)``, a partial row): a shuffle takes the first half of every group of ``A`` then of ``B``,
  another the second halves, and one combine makes a vector of ``2 g`` groups of ``w / 2`` lanes. ``R`` rows
  (one group of ``v`` lanes each) become one vector in ``log2(R)`` rounds of ``R/2, R/4, ..., 1`` merges;
* **fold** the groups of one vector, halving each (a vector of half the lanes), until they are one lane.

Each lane meets the same partner as in the row-by-row halving (``t`` and ``t + w/2`` within its row), so a
float sum is rounded exactly as before. For 8 rows of 16 lanes: 7 merges and 1 fold, 16 shuffles and 8
combines, where the rows alone took 32 combines and their extractions. Rows stay in order: the result's
lane ``r`` is row ``r``'s.

>>> merge_indices(4, 1, 4)          # two rows of 4 lanes -> 2 groups of 2 partial lanes
((0, 1, 4, 5), (2, 3, 6, 7))
>>> rows = [[1, 2, 3, 4], [10, 20, 30, 40], [5, 6, 7, 8], [0, 0, 0, 1]]
>>> fold_rows(rows, lambda a, b: a + b)
[10, 100, 26, 1]
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["merge_indices", "fold_indices", "fold_steps", "fold_rows"]


def merge_indices(v: int, groups: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two shuffles of a merge of vectors ``A``, ``B`` of ``v`` lanes holding ``groups`` groups of ``width``
    lanes: each new lane's index into ``A ++ B`` (``T.Shuffle``'s numbering), first halves then second halves;
    the new vector holds ``2 * groups`` groups of ``width / 2`` lanes (``A``'s groups first)."""
    half = width // 2
    first = tuple((0 if j < groups else v) + (j % groups) * width + t for j in range(2 * groups) for t in range(half))
    return first, tuple(i + half for i in first)


def fold_indices(groups: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two shuffles of a fold of one vector of ``groups`` groups of ``width`` lanes: each lane's index
    into the vector, first halves then second halves (a vector of ``groups * width / 2`` lanes)."""
    half = width // 2
    first = tuple(j * width + t for j in range(groups) for t in range(half))
    return first, tuple(i + half for i in first)


def fold_steps(rows: int, v: int) -> list[tuple[int, int, int]]:
    """The steps folding ``rows`` rows of ``v`` lanes (both powers of two, ``2 <= rows <= v``): ``(vectors,
    groups, width)`` before each step, where ``vectors > 1`` means a round of merges and ``vectors == 1`` a
    fold."""
    if rows < 2 or v < rows or rows & (rows - 1) or v & (v - 1):
        raise ValueError(f"folding needs power-of-two rows and lanes with 2 <= rows <= lanes; got {rows}, {v}")
    steps, vectors, groups, width = [], rows, 1, v
    while width > 1:
        steps.append((vectors, groups, width))
        if vectors > 1:
            vectors, groups = vectors // 2, groups * 2
        width //= 2
    return steps


def fold_rows(rows: Sequence[Sequence[Any]], combine: Callable[[Any, Any], Any]) -> list[Any]:
    """The steps run on Python rows (the worked example): each row's lanes combined pairwise, one value per
    row."""
    v = len(rows[0])
    cur = [list(r) for r in rows]
    for vectors, groups, width in fold_steps(len(rows), v):
        if vectors > 1:
            lo, hi = merge_indices(v, groups, width)
            pairs = [a + b for a, b in zip(cur[0::2], cur[1::2])]
        else:
            lo, hi = fold_indices(groups, width)
            pairs = cur
        cur = [[combine(p[i], p[j]) for i, j in zip(lo, hi)] for p in pairs]
    return cur[0]
