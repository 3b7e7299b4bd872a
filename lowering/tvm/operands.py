"""Shared steps of proving a product's operands fit a CPU instruction pattern (:mod:`.pair_dot`,
:mod:`.lookup_sum`): static shapes, view chains, and storage-word positions affine in the loop indices.

>>> import numpy as np
>>> affine(np.array([[3, 4, 5], [11, 12, 13]]))      # 3 + 8 q + lane
Affine(base=3, per_q=8, per_lane=1)
>>> affine(np.array([[0, 1], [5, 7]])) is None
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lowbit.ir import nodes as n


#: f32 lanes of one 512-bit vector: the outputs one fused instruction (``vdpbf16ps``, ``vpermps``) covers
LANES = 16


@dataclass(frozen=True)
class Affine:
    """An element number of the storage words, ``base + q * per_q + lane * per_lane`` for K step ``q`` and
    vector lane ``lane``."""

    base: int
    per_q: int
    per_lane: int


def affine(values: np.ndarray) -> Affine | None:
    """``values[q, lane]`` as an :class:`Affine`, or None when it is not one."""
    q_count, lanes = values.shape
    per_q = int(values[1, 0] - values[0, 0]) if q_count > 1 else 0
    per_lane = int(values[0, 1] - values[0, 0]) if lanes > 1 else 0
    fit = values[0, 0] + per_q * np.arange(q_count)[:, None] + per_lane * np.arange(lanes)[None, :]
    return Affine(int(values[0, 0]), per_q, per_lane) if np.array_equal(fit, values) else None


def static_shape(v: n.Value) -> tuple[int, ...] | None:
    """``v``'s shape as ints, or None when some extent is symbolic."""
    shape = v.type.shape
    return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None


def strip_views(v: n.Value, defs: Mapping[str, n.Instr | None], allowed: tuple[type, ...]
                ) -> tuple[n.Value, tuple[n.Instr, ...]]:
    """Follow ``v`` back through instructions of the ``allowed`` view types: (the source, the steps, outermost
    first)."""
    chain: list[n.Instr] = []
    while isinstance(defs.get(v.name), allowed):
        ins = defs[v.name]
        chain.append(ins)
        v = ins.x
    return v, tuple(chain)


def view_index(chain: Sequence[n.Instr], idx: Sequence[str]) -> list[str]:
    """The index (TIR text) into the source of ``chain`` (broadcast / expand_dims steps, outermost first)
    of element ``idx`` of its result."""
    idx = list(idx)
    for ins in chain:
        if isinstance(ins, n.ExpandDims):
            idx = idx[:ins.axis] + idx[ins.axis + 1:]
        else:
            src = [int(d) for d in ins.x.type.shape]
            dst = [int(d) for d in ins.result.type.shape]
            idx = idx[len(dst) - len(src):]
            idx = ["0" if s == 1 and d != 1 else i for s, d, i in zip(src, dst[len(dst) - len(src):], idx)]
    return idx


__all__ = ["LANES", "Affine", "affine", "static_shape", "strip_views", "view_index"]
