"""Instruction selection for a product with 1- or 2-bit codes (or integer codes in bit planes) on AVX-512 CPUs:
a lookup of activation sums.

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

Integer codes stored in bit planes (``PackedFormat.bit_planes``, chosen for 3-bit codes by
:func:`lowbit.lowering.passes.lowbit_lowering.planes_for`) are added one bit at a time, 4 K rows per lookup: a
code's value is affine in its bits, ``table[c] = table[0] + sum_b c_b d_b``, so bit ``b``'s sums are ``d_b`` times
``S_1[i] = sum_j i_j a[m, k_j]``, one table per K group and row, and ``table[0]`` times the sum of the activations
(entry 15 of ``S_1``, accumulated) is added to each output once, after the K loop. :func:`match_dot` checks the
affinity exactly; each plane is found like a field of 1-bit codes.

Rounding: each product ``table[c] * a[m, k]`` is one f32 product as before (or fused into the multiply-add
that adds it to the group's sum); the sums are f32 sums in another order (a float ``sum`` is not ordered).
The lookup itself is exact. With bit planes, a plane's sums are ``S_1`` rounded once, then times ``d_b``
(exact for int and uint codes: powers of two), and ``table[0]`` multiplies a rounded sum of the activations.

>>> plane = LookupPlane(table=(-2., -1., 0., 1.), sources=())
>>> [list(map(float, t[:6])) for t in plane.field_tables(2)]   # entry i: table[i & 3] and table[i >> 2]
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
class LookupPlane:
    """The bits of every code that one run of lookups reads: ``table`` gives their values (``2 ** bits``
    entries) and ``sources[f][v]`` where vector ``v`` (16 outputs) reads field ``f``. A code's value is the sum
    of its planes' values."""

    table: tuple[float, ...]
    sources: tuple[tuple[FieldSource, ...], ...]

    def field_tables(self, bits: int) -> tuple[tuple[float, ...], ...]:
        """Per code of a field: the value of that code's bits in each of the 16 indices (the table has
        ``2 ** bits`` entries, so a field is an index as it stands)."""
        mask = (1 << bits) - 1
        return tuple(tuple(float(self.table[(i >> (j * bits)) & mask]) for i in range(LANES))
                     for j in range(FIELD_BITS // bits))


@dataclass(frozen=True)
class LookupSum:
    """A product proved fit for a lookup of activation sums (see the module doc).

    ``words``: the uint32 tile the codes' bits come from; ``bits``: bits per code in each plane; K splits into
    fields of ``FIELD_BITS // bits`` rows ``q * period + k``, ``k`` running over one entry of ``fields`` (its
    lowest code first); ``planes``: one per run of bits of a code (all of a dense code's bits, or each bit of
    a code stored in bit planes).
    """

    words: n.Value | None
    bits: int
    period: int
    fields: tuple[tuple[int, ...], ...]
    planes: tuple[LookupPlane, ...]


def match_dot(ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> LookupSum | None:
    """The :class:`LookupSum` form of ``dot(a, b, acc)`` (f32 throughout, ``b`` a lookup of 1- or 2-bit codes,
    or of integer codes stored in bit planes, through broadcasts / expand_dims), or None when any condition of
    the module doc does not hold."""
    a_shape, b_shape = static_shape(ins.a), static_shape(ins.b)
    if (ins.result.dtype != "float32" or ins.a.dtype != "float32" or ins.b.dtype != "float32"
            or a_shape is None or b_shape is None):
        return None
    k, nn = b_shape
    look_v, _ = strip_views(ins.b, defs, (n.Broadcast, n.ExpandDims))
    look = defs.get(look_v.name)
    if not (isinstance(look, n.Lookup) and len(look.table) in (2, 4, 8) and look.x.dtype.startswith("uint")
            and all(np.isfinite(look.table))):
        return None
    nbits = (len(look.table) - 1).bit_length()
    if nn % LANES:
        return None
    wo = element_origins(ins.b, defs)
    found = bit_origins(look.x, defs)
    if wo is None or wo[0].name != look.result.name or found is None or nbits_of(found[0].dtype) != 32:
        return None
    words, origin = found
    codes = origin.reshape(-1, origin.shape[-1])[wo[1].reshape(k, nn), :nbits]      # [K, N, nbits]
    if np.any(codes == ZERO_BIT):
        return None
    table = tuple(float(v) for v in look.table)
    if np.array_equal(codes, codes[..., :1] + np.arange(nbits)):        # consecutive bits of one word
        bits, runs, tables = nbits, [codes[..., 0]], [table]
    else:                                                               # one plane per bit
        bits, runs, tables = 1, [codes[..., b] for b in range(nbits)], _bit_tables(table)
    if FIELD_BITS % bits or tables is None:
        return None
    per_group = FIELD_BITS // bits
    if k % per_group:
        return None
    lead = np.arange(0, k, per_group)
    places = [(run // 32, run % 32) for run in runs]      # per run: [K, N] word and first bit of each code
    for word, first in places:  # K rows k .. k + p - 1 (k a multiple of p): consecutive codes of one word, every lane
        for j in range(1, per_group):
            if not (np.array_equal(word[lead + j], word[lead])
                    and np.array_equal(first[lead + j], first[lead] + j * bits)):
                return None
        if np.any(first[lead] + FIELD_BITS > 32):
            return None
    period = per_group
    while period <= k:
        if k % period == 0:
            sources = [_sources(word, first, period, per_group, nn // LANES) for word, first in places]
            if all(src is not None for src in sources):
                fields = tuple(tuple(range(g, g + per_group)) for g in range(0, period, per_group))
                return LookupSum(words, bits, period, fields,
                                 tuple(LookupPlane(t, src) for t, src in zip(tables, sources)))
        period *= 2
    return None


def _bit_tables(table: tuple[float, ...]) -> list[tuple[float, float]] | None:
    """Per bit ``b`` of a code, the 2-entry table of its share of the value, ``table[0]`` in bit 0's, when the
    table is exactly affine in the bits (``table[c] == table[0] + sum_b bit_b(c) (table[1 << b] - table[0])``,
    true of every integer code's value, of no float code's); else None.

    >>> _bit_tables((0., 1., 2., 3., -4., -3., -2., -1.))      # int3
    [(0.0, 1.0), (0.0, 2.0), (0.0, -4.0)]
    >>> _bit_tables((0., 0.5, 1., 1.5, 2., 3., 4., 6.)) is None   # a float format
    True
    """
    nbits = (len(table) - 1).bit_length()
    steps = [table[1 << b] - table[0] for b in range(nbits)]
    if any(table[c] != table[0] + sum(d for b, d in enumerate(steps) if c >> b & 1) for c in range(len(table))):
        return None
    return [(table[0] if b == 0 else 0.0, (table[0] if b == 0 else 0.0) + d) for b, d in enumerate(steps)]


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


__all__ = ["LookupSum", "LookupPlane", "FieldSource", "match_dot", "FIELD_BITS", "PERMPS"]
