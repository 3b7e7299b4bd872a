"""A tile's transpose on the CPU as register shuffles: ``v x v`` blocks in ``log2(v)`` stages of two-source
shuffles (``v`` the SIMD lanes of the element type: 16 for 32-bit elements on AVX-512).

A transposed tile read along its last axis reads its source down a column: one strided element per lane, a
gather (or ``v`` scalar loads and inserts). Decode attention's scores ``dot(q, transpose(k))`` read the page's
keys that way, 8 query heads x 64 channels x 16 tokens. Transposed once into a buffer instead, block by
block, each row of the result is one vector load: a ``16 x 16`` block costs 16 vector loads, 64 shuffles
(``vpermt2ps`` and kin) and 16 vector stores.

The stages swap sub-blocks: the stage of distance ``b`` pairs rows ``r`` and ``r + b`` (bit ``b`` of ``r``
clear) and exchanges the upper-right ``b x b`` block of each ``2b x 2b`` block with its lower-left one. After
the stages of every ``b`` in ``v/2, ..., 2, 1`` the block is transposed. Row ``r``'s new element ``c`` comes
from row ``r`` (index ``c``) or row ``r + b`` (index ``v + c - b``) of the pair, ``T.Shuffle``'s numbering of
the two rows' lanes in a row:

>>> lower, upper = stage_indices(4, 2)      # rows r, r + 2 of a 4 x 4 block
>>> lower, upper
((0, 1, 4, 5), (2, 3, 6, 7))
>>> a = [[4 * r + c for c in range(4)] for r in range(4)]
>>> transpose_rows(a) == [list(col) for col in zip(*a)]
True
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

E = TypeVar("E")

__all__ = ["stage_distances", "stage_indices", "shuffle_stages", "transpose_rows"]


def stage_distances(v: int) -> tuple[int, ...]:
    """The pair distances of the stages of a ``v x v`` transpose (``v`` a power of two): ``v/2, ..., 1``."""
    if v < 2 or v & (v - 1):
        raise ValueError(f"a block transpose needs a power-of-two width of at least 2, got {v}")
    return tuple(1 << s for s in reversed(range(v.bit_length() - 1)))


def stage_indices(v: int, b: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shuffle indices of the stage of distance ``b``: for the lower row ``r`` and the upper row
    ``r + b`` of a pair, each new lane's index into the concatenated lanes ``row r ++ row r + b``."""
    lower = tuple(c if not c & b else v + c - b for c in range(v))
    upper = tuple(c + b if not c & b else v + c for c in range(v))
    return lower, upper


def shuffle_stages(v: int, rows: Sequence[Sequence[str]],
                   shuffle: Callable[[str, str, tuple[int, ...]], E]) -> list[tuple[str, E]]:
    """The statements of a ``v x v`` transpose through the named rows ``rows[0] .. rows[log2 v]`` (each a list
    of ``v`` names: the block's rows before the stages and after each). ``shuffle(lo, hi, indices)`` renders
    one two-source shuffle; returns ``(target, expression)`` pairs in order."""
    out: list[tuple[str, E]] = []
    for s, b in enumerate(stage_distances(v)):
        lower, upper = stage_indices(v, b)
        src, dst = rows[s], rows[s + 1]
        for r in range(v):
            if r & b:
                continue
            out.append((dst[r], shuffle(src[r], src[r + b], lower)))
            out.append((dst[r + b], shuffle(src[r], src[r + b], upper)))
    return out


def transpose_rows(block: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The stages run on a Python block of ``v`` rows of ``v`` values: its transpose (the worked example)."""
    v = len(block)
    names = [[f"s{s}_{r}" for r in range(v)] for s in range(len(stage_distances(v)) + 1)]
    values = {names[0][r]: list(block[r]) for r in range(v)}
    for target, (lo, hi, idx) in shuffle_stages(v, names, lambda lo, hi, idx: (lo, hi, idx)):
        both = values[lo] + values[hi]
        values[target] = [both[i] for i in idx]
    return [values[name] for name in names[-1]]
