"""Instruction selection for a product with 1- or 2-bit codes on AVX-512 CPUs: a lookup of activation sums.

A low-bit GEMM ``a @ lookup(shr(words, shift), table)`` with ``b``-bit codes (``b`` = 1, 2) can add ``p = 4 // b``
K rows at once: for K rows ``k_0 .. k_{p-1}`` and one row ``m`` of ``a``, the 16 sums

    ``S[i] = table[i_0] * a[m, k_0] + table[i_1] * a[m, k_1] + ...``  (``i_j``: bits ``j b .. j b + b - 1`` of ``i``)

form one vector, and output ``n`` adds ``S[i]`` for the 4-bit field ``i`` its ``p`` codes make together: one
``vpermps`` (which selects by the low 4 bits of each index lane) and one add (half of them emitted as
multiply-adds by 1.0, for the pipes: see ``_lookup_sum_nest``) per 16 outputs and ``p`` K rows, plus one shift
per field, instead of one shift, one ``vpermd`` and one multiply-add per code. ``S`` is
built once per K group and row of ``a`` and shared by every vector of 16 outputs (a GEMV's 128 outputs per
program: 8 vectors), so it costs ``p`` multiplies per 8 lookups.

The packing decides whether it applies: the ``p`` codes of a K group must sit side by side in one 32-bit word,
code ``k_j`` at bits ``s + j b ..``, for every output lane, the storage order ``PackedFormat.groups`` gives
(:func:`lowbit.lowering.passes.lowbit_lowering.groups_for`). :func:`match_dot` proves it for every element of
the tile from the bit origins of the lookup's index (:func:`lowbit.ir.interpreter.bit_origins`), and finds,
per K group and vector of 16 outputs, the word (affine in the K step and the lane) and the field's offset.

Rounding: each product ``table[c] * a[m, k]`` is one f32 product as before (or fused into the multiply-add
that adds it to the group's sum); the sums are f32 sums in another order (a float ``sum`` is not ordered).
The lookup itself is exact.

>>> ls = LookupSum(words=None, bits=2, period=2, fields=((0, 1),), sources=(), table=(-2., -1., 0., 1.))
>>> [list(map(float, t[:6])) for t in ls.field_tables()]   # entry i: table[i & 3] and table[i >> 2]
[[-2.0, -1.0, 0.0, 1.0, -2.0, -1.0], [-2.0, -2.0, -2.0, -2.0, -1.0, -1.0]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from lowbit.ir import nodes as n
from lowbit.ir.interpreter import ZERO_BIT, bit_origins, element_origins
from lowbit.ir.types import nbits_of

from .operands import LANES, Affine, affine, static_shape, strip_views

#: the bits of a table index ``vpermps`` reads
FIELD_BITS = 4
PERMPS = "llvm.x86.avx512.permvar.sf.512"


@dataclass(frozen=True)
class FieldSource:
    """Where one vector of 16 lanes takes one 4-bit field: ``word`` shifted right by ``offset``."""

    word: Affine
    offset: int


@dataclass(frozen=True)
class LookupSum:
    """A product proved fit for a lookup of activation sums (see the module doc).

    ``words``: the uint32 tile the codes' bits come from; ``bits``: bits per code; K splits into fields of
    ``FIELD_BITS // bits`` rows ``q * period + k``, ``k`` running over one entry of ``fields`` (its lowest code
    first), and ``sources[f][v]`` says where vector ``v`` (16 outputs) reads field ``f``; ``table``: the
    lookup's values.
    """

    words: n.Value | None
    bits: int
    period: int
    fields: tuple[tuple[int, ...], ...]
    sources: tuple[tuple[FieldSource, ...], ...]
    table: tuple[float, ...]

    def field_tables(self) -> tuple[tuple[float, ...], ...]:
        """Per code of a field: the value of that code's field in each of the 16 indices (the table has
        ``2 ** bits`` entries, so a field is an index as it stands)."""
        mask = (1 << self.bits) - 1
        per_group = FIELD_BITS // self.bits
        return tuple(tuple(float(self.table[(i >> (j * self.bits)) & mask]) for i in range(LANES))
                     for j in range(per_group))


def match_dot(ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> LookupSum | None:
    """The :class:`LookupSum` form of ``dot(a, b, acc)`` (f32 throughout, ``b`` a lookup of 1- or 2-bit codes
    through broadcasts / expand_dims), or None when any condition of the module doc does not hold."""
    a_shape, b_shape = static_shape(ins.a), static_shape(ins.b)
    if (ins.result.dtype != "float32" or ins.a.dtype != "float32" or ins.b.dtype != "float32"
            or a_shape is None or b_shape is None):
        return None
    k, nn = b_shape
    look_v, _ = strip_views(ins.b, defs, (n.Broadcast, n.ExpandDims))
    look = defs.get(look_v.name)
    if not (isinstance(look, n.Lookup) and len(look.table) in (2, 4) and look.x.dtype.startswith("uint")
            and all(np.isfinite(look.table))):
        return None
    bits = (len(look.table) - 1).bit_length()
    per_group = FIELD_BITS // bits
    if k % per_group or nn % LANES:
        return None
    wo = element_origins(ins.b, defs)
    found = bit_origins(look.x, defs)
    if wo is None or wo[0].name != look.result.name or found is None or nbits_of(found[0].dtype) != 32:
        return None
    words, origin = found
    codes = origin.reshape(-1, origin.shape[-1])[wo[1].reshape(k, nn), :bits]      # [K, N, bits]
    if np.any(codes == ZERO_BIT):
        return None
    word, first = codes[..., 0] // 32, codes[..., 0] % 32
    if not np.array_equal(codes, codes[..., :1] + np.arange(bits)):                   # consecutive bits of one word
        return None
    # K rows k .. k + p - 1 (k a multiple of p) must hold consecutive codes of one word, in every lane
    lead = np.arange(0, k, per_group)
    for j in range(1, per_group):
        if not (np.array_equal(word[lead + j], word[lead]) and np.array_equal(first[lead + j], first[lead] + j * bits)):
            return None
    if np.any(first[lead] + FIELD_BITS > 32):
        return None
    period = per_group
    while period <= k:
        if k % period == 0:
            sources = _sources(word, first, period, per_group, nn // LANES)
            if sources is not None:
                fields = tuple(tuple(range(g, g + per_group)) for g in range(0, period, per_group))
                return LookupSum(words, bits, period, fields, sources, tuple(float(v) for v in look.table))
        period *= 2
    return None


def _sources(word: np.ndarray, first: np.ndarray, period: int, per_group: int, vectors: int
             ) -> tuple[tuple[FieldSource, ...], ...] | None:
    """The :class:`FieldSource` of every (group, vector) for one period, or None when some field is not at one
    offset of affine words in every K step and lane."""
    steps = word.shape[0] // period
    out = []
    for g in range(0, period, per_group):
        ks = np.arange(steps) * period + g
        row = []
        for v in range(vectors):
            cols = slice(v * LANES, (v + 1) * LANES)
            at, off = affine(word[ks, cols]), first[ks, cols]
            if at is None or np.any(off != off[0, 0]):
                return None
            row.append(FieldSource(at, int(off[0, 0])))
        out.append(tuple(row))
    return tuple(out)


__all__ = ["LookupSum", "FieldSource", "match_dot", "FIELD_BITS", "PERMPS"]
