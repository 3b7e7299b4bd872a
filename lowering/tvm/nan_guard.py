"""NaN codes out of a CPU ``dot``'s inner loop: ``dot(a, where(p, NaN, v), acc)`` as ``dot(a, v, acc)``, then NaN
in the columns that need it.

float8_e4m3fn decodes its NaN codes with ``where(code & 0x7F == 0x7F, NaN, value)`` (``bits`` in
``lowering/passes/dequant.py``). In a GEMV's K loop that is 3 of 8 vector instructions per 16 weights (``and``,
compare, a masked move into the accumulator). A NaN factor makes its product NaN whatever the other factor
(``0 * NaN`` and ``inf * NaN`` too), and a sum with a NaN term is NaN, so ``acc + a @ where(p, NaN, v)`` equals
``acc + a @ v`` with column ``j`` set to NaN wherever ``p[:, j]`` holds somewhere. The emitter computes the dot
on ``v``, checks the storage words for NaN codes in 3 instructions per word (64 codes of 8 bits on AVX-512) and,
only where a word holds one, sets the columns from ``p`` itself (an exact, slow loop that real weights never
run: a quantizer never makes NaN codes).

The word check needs ``p[k, j]`` to be "bits ``[s, s + L)`` of one storage word are all ones" for every element,
which :func:`match` proves from the bit origins of ``p``'s masked operand
(:func:`lowbit.ir.interpreter.bit_origins`): fields contiguous, disjoint, each with a bit above it in its word
that no field uses. With ``M`` the fields' bits and ``C`` the bits above them, ``z = ~w & M`` is zero in a field
exactly where the field is all ones, ``z + M`` carries into the bit above a field exactly where ``z`` is not zero
there, so ``~(z + M) & C`` is non-zero iff some field of ``w`` is all ones. The check ORs that over every word of
the tile: words no element reads (padding) can only make it run the exact loop for nothing.

>>> fields_and_carries([(0, 7), (8, 7), (16, 7), (24, 7)])     # float8_e4m3fn's 4 codes per word
(2139062143, 2155905152)
>>> w = 0x017F0203                                              # byte 2 holds a NaN code (0x7F)
>>> (~(((~w & 0x7F7F7F7F) + 0x7F7F7F7F)) & 0x80808080) != 0
True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from lowbit.ir import nodes as n
from lowbit.ir.interpreter import ZERO_BIT, bit_origins, evaluate_constant
from lowbit.ir.types import kind_of, nbits_of


@dataclass(frozen=True)
class NanGuard:
    """``operand = where(cond, NaN, values)`` where ``cond`` holds iff some field of a word of ``words`` is all ones:
    ``~((~w & fields) + fields) & carries`` (see the module docstring) is non-zero for such a word."""

    operand: n.Value
    cond: n.Value
    values: n.Value
    words: n.Value
    fields: int
    carries: int


def fields_and_carries(fields: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    """``(M, C)`` for fields ``(start, length)`` of a word (``M``: their bits, ``C``: the bit above each), or None
    when two overlap or a field's carry bit lies in a field."""
    mask = carries = 0
    for start, length in sorted(set(fields)):
        bits = ((1 << length) - 1) << start
        if mask & bits:
            return None
        mask |= bits
        carries |= 1 << (start + length)
    return None if mask & carries else (mask, carries)


def _uniform_constant(v: n.Value, defs: Mapping[str, n.Instr | None]) -> int | None:
    c = evaluate_constant(v, defs)
    if c is None:
        return None
    values = np.unique(np.asarray(c))
    return int(values[0]) if values.size == 1 and kind_of(v.dtype) in ("int", "uint") else None


def _all_nan(v: n.Value, defs: Mapping[str, n.Instr | None]) -> bool:
    c = evaluate_constant(v, defs)
    return c is not None and bool(np.all(np.isnan(np.asarray(c, dtype=np.float64))))


def _fields(masked: n.Value, mask: int, defs: Mapping[str, n.Instr | None]) -> tuple[n.Value, list] | None:
    """``(root, fields)``: ``masked == mask`` iff bits ``[s, s + L)`` of one element of ``root`` are all ones, per
    element (elements whose test can never hold are left out); None when it is not that simple."""
    found = bit_origins(masked, defs)
    if found is None:
        return None
    root, bits = found
    width = nbits_of(root.dtype)
    nb = bits.shape[-1]
    wanted = ((mask >> np.arange(nb)) & 1).astype(bool)
    flat = bits.reshape(-1, nb)
    if np.any(flat[:, ~wanted] != ZERO_BIT):
        return None                         # a bit outside the mask may be set: not an all-ones test
    sources = flat[:, wanted]
    live = np.all(sources != ZERO_BIT, axis=1)   # a known-zero bit in the field: never all ones
    sources = sources[live]
    if sources.size == 0:
        return None
    words = sources // width
    if np.any(words != words[:, :1]):
        return None
    starts = (sources % width).min(axis=1)
    length = sources.shape[1]
    if np.any(np.sort(sources % width, axis=1) != starts[:, None] + np.arange(length)):
        return None
    if np.any(starts + length >= width):
        return None                         # no bit above the field for the carry
    return root, [(int(s), length) for s in np.unique(starts)]


def match(b: n.Value, defs: Mapping[str, n.Instr | None]) -> NanGuard | None:
    """The :class:`NanGuard` of a dot operand ``b``, or None."""
    ins = defs.get(b.name)
    if not isinstance(ins, n.Where) or kind_of(b.dtype) != "float" or not _all_nan(ins.x, defs):
        return None
    test = defs.get(ins.cond.name)
    if not (isinstance(test, n.Binary) and test.op == "eq"):
        return None
    for masked, constant in ((test.lhs, test.rhs), (test.rhs, test.lhs)):
        mask = _uniform_constant(constant, defs)
        if mask is None or mask <= 0 or not masked.dtype.startswith("uint"):
            continue
        found = _fields(masked, mask, defs)
        if found is None:
            continue
        root, fields = found
        if not root.dtype.startswith("uint") or not all(isinstance(d, int) for d in root.type.shape):
            return None
        mc = fields_and_carries(fields)
        if mc is None:
            return None
        return NanGuard(operand=b, cond=ins.cond, values=ins.y, words=root, fields=mc[0], carries=mc[1])
    return None


__all__ = ["NanGuard", "match", "fields_and_carries"]
