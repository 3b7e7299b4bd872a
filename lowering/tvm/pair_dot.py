"""Instruction selection for a bf16 product-reduction on AVX-512 BF16 CPUs: ``vpermw`` + ``vdpbf16ps``.

A low-bit GEMV reduces ``sum(cast(x, f32)[..., :, None] * lookup(shr(words, shift), table)[None, ...], axis=k)``
over K. When ``x`` is bf16 and every table entry is exact in bf16, each product is exact in f32 whichever
way it is computed, so two K steps can share one instruction: ``vdpbf16ps acc, w, xx`` adds
``w[2i] * xx[2i] + w[2i+1] * xx[2i+1]`` to f32 lane ``i``: with the bf16 pair ``(x[k], x[k'])`` broadcast
as ``xx``, lane ``n`` adds the products of K rows ``k`` and ``k'``. The weights come from ``vpermw``: 32 bf16 table
entries picked by the low 5 bits of each 16-bit half of a 32-bit lane. Per 32 codes that is one shift, one
permute and one dot instead of two of each and two multiply-adds.

The packing decides whether it applies: K must split into pairs ``(k, k')`` such that lane ``n``'s word,
shifted by ``s``, holds the code of ``(k, n)`` in its low half and that of ``(k', n)`` in its high half, i.e.
the code of ``(k', n)`` is the same word shifted by ``s + 16`` (``k' = k + 1`` when a word holds two
consecutive K rows; ``k + 2`` when it holds two of 4 rows x 2 column vectors; the activation pair follows). :func:`match_reduce` / :func:`match_dot` prove that for every element of the tile by
tracing each element back through the view instructions (broadcast, reshape, permute, expand_dims) to the
word it reads and evaluating the shift amounts (:func:`lowbit.ir.interpreter.evaluate_constant`).

Rounding: the products are exact either way; the sums are f32 sums in another order (a float ``sum`` is
not ordered), and the instruction flushes subnormal inputs and outputs to zero (an absolute error below
2^-126 per product).

The two instructions reach TVM as calls of two always-inlined LLVM functions (:data:`LLVM_HELPERS`,
imported with the ``pragma_import_llvm`` attribute): TVM's own LLVM code generator types bf16 vectors as
``<32 x i16>``, which ``llvm.x86.avx512bf16.dpbf16ps.512`` does not accept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from lowbit.ir import nodes as n
from lowbit.ir import numerics as num
from lowbit.ir.interpreter import element_origins, evaluate_constant
from lowbit.ir.types import nbits_of

#: f32 lanes of one ``vdpbf16ps`` (32 bf16 products)
LANES = 16
#: the most table entries ``vpermw`` selects from (the low 5 bits of a 16-bit lane)
MAX_ENTRIES = 32
DPBF16 = "lowbit_dpbf16"
PERMW = "lowbit_permw"

LLVM_HELPERS = f"""
define <16 x float> @{DPBF16}(<16 x float> %acc, <16 x i32> %w, <16 x i32> %x) #0 {{
  %wb = bitcast <16 x i32> %w to <32 x bfloat>
  %xb = bitcast <16 x i32> %x to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %wb, <32 x bfloat> %xb)
  ret <16 x float> %r
}}
define <16 x i32> @{PERMW}(<16 x i32> %index, <16 x i32> %table) #0 {{
  %i = bitcast <16 x i32> %index to <32 x i16>
  %t = bitcast <16 x i32> %table to <32 x i16>
  %r = call <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16> %t, <32 x i16> %i)
  %o = bitcast <32 x i16> %r to <16 x i32>
  ret <16 x i32> %o
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
declare <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16>, <32 x i16>)
attributes #0 = {{ alwaysinline nounwind readnone }}
"""


@dataclass(frozen=True)
class PairDot:
    """A product-reduction proved fit for ``vdpbf16ps``.

    ``x_chain`` / ``w_chain``: the broadcast / expand_dims steps from the product's operands back to the
    bf16 activation tile ``x`` and to the ``lookup``; ``index`` is the lookup's u32 index tile.
    """

    x: n.Value
    x_chain: tuple[n.Instr, ...]
    lookup: n.Lookup
    w_chain: tuple[n.Instr, ...]
    #: K splits into pairs ``(q * period + lo, q * period + hi)`` for each ``(lo, hi)`` of ``pairs``
    period: int = 2
    pairs: tuple[tuple[int, int], ...] = ((0, 1),)

    @property
    def index(self) -> n.Value:
        return self.lookup.x

    def table_words(self) -> tuple[int, ...]:
        """The table repeated to 32 bf16 entries, two per signed 32-bit word (entry ``2i`` in the low half)."""
        size = len(self.lookup.table)
        bits = _bf16_bits([self.lookup.table[i % size] for i in range(MAX_ENTRIES)]).astype(np.uint32)
        return tuple(int(w) for w in (bits[0::2] | (bits[1::2] << 16)).view(np.int32))


def _static_shape(v: n.Value) -> tuple[int, ...] | None:
    shape = v.type.shape
    return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None


def _strip_views(v: n.Value, defs: Mapping[str, n.Instr | None], allowed: tuple[type, ...]
                 ) -> tuple[n.Value, tuple[n.Instr, ...]]:
    """Follow ``v`` back through instructions of the ``allowed`` view types: (the source, the steps, outermost
    first)."""
    chain: list[n.Instr] = []
    while isinstance(defs.get(v.name), allowed):
        ins = defs[v.name]
        chain.append(ins)
        v = ins.x
    return v, tuple(chain)


def _bf16_bits(values: Sequence[float]) -> np.ndarray:
    """The bf16 bit patterns (uint16) of ``values`` rounded as the interpreter rounds."""
    return num.cast(np.array(values, np.float32), "float32", "bfloat16").view(np.uint16)


def _bf16_exact(values: Sequence[float]) -> bool:
    f = np.array(values, np.float32)
    back = num.cast(num.cast(f, "float32", "bfloat16"), "bfloat16", "float32")
    return bool(np.all(np.isfinite(f)) and np.array_equal(f.view(np.uint32), back.view(np.uint32)))


def match_reduce(ins: n.Reduce, defs: Mapping[str, n.Instr | None]) -> PairDot | None:
    """The :class:`PairDot` form of ``sum(a * b, axis)`` (``axis`` not the last, the vector axis), or None
    when any condition of the module doc does not hold."""
    shape = _static_shape(ins.x)
    if (ins.op != "sum" or ins.x.dtype != "float32" or shape is None or ins.axis == len(shape) - 1
            or shape[ins.axis] % 2 or shape[-1] % LANES):
        return None
    mul = defs.get(ins.x.name)
    if not (isinstance(mul, n.Binary) and mul.op == "mul"):
        return None
    space = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    for a, b in ((mul.lhs, mul.rhs), (mul.rhs, mul.lhs)):
        found = _match_operands(a, b, space, space, defs, ins.axis)
        if found is not None:
            return found
    return None


def match_dot(ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> PairDot | None:
    """The :class:`PairDot` form of ``dot(a, b, acc)`` over the iteration space ``(M, K, N)``, or None."""
    a_shape, b_shape = _static_shape(ins.a), _static_shape(ins.b)
    if (ins.result.dtype != "float32" or ins.a.dtype != "float32" or ins.b.dtype != "float32"
            or a_shape is None or b_shape is None):
        return None
    (m, k), (_, nn) = a_shape, b_shape
    if k % 2 or nn % LANES:
        return None
    a_space = np.broadcast_to(np.arange(m * k, dtype=np.int64).reshape(m, k, 1), (m, k, nn))
    b_space = np.broadcast_to(np.arange(k * nn, dtype=np.int64).reshape(1, k, nn), (m, k, nn))
    return _match_operands(ins.a, ins.b, a_space, b_space, defs, 1)


def _match_operands(a: n.Value, b: n.Value, a_space: np.ndarray, b_space: np.ndarray,
                    defs: Mapping[str, n.Instr | None], axis: int) -> PairDot | None:
    """``a`` the activations, ``b`` the weights; ``a_space`` / ``b_space``: for each element of the
    iteration space, the (row-major) element of ``a`` / ``b`` it multiplies; ``axis``: the reduced axis."""
    cast_v, x_chain = _strip_views(a, defs, (n.Broadcast, n.ExpandDims))
    cast = defs.get(cast_v.name)
    if not (isinstance(cast, n.Cast) and cast.x.dtype == "bfloat16"):
        return None
    look_v, w_chain = _strip_views(b, defs, (n.Broadcast, n.ExpandDims))
    look = defs.get(look_v.name)
    if not (isinstance(look, n.Lookup) and len(look.table) <= MAX_ENTRIES and nbits_of(look.x.dtype) == 32
            and look.x.dtype.startswith("uint") and _bf16_exact(look.table)):
        return None
    # x must be the same along the vector (last) axis: one pair of activations per K pair
    xo = element_origins(a, defs)
    if xo is None or xo[0].name != cast.result.name:
        return None
    x_at = xo[1].reshape(-1)[a_space]
    if np.any(x_at != x_at[..., :1]):
        return None
    wo = element_origins(b, defs)
    if wo is None or wo[0].name != look.result.name:
        return None
    split = _pair_k(wo[1].reshape(-1)[b_space], look, defs, axis)
    if split is None:
        return None
    return PairDot(x=cast.x, x_chain=x_chain, lookup=look, w_chain=w_chain, period=split[0], pairs=split[1])


def _pair_k(at_lookup: np.ndarray, look: n.Lookup, defs: Mapping[str, n.Instr | None],
            axis: int) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """How K splits into pairs ``(k, k')`` whose codes one 32-bit word holds at shifts ``s`` and ``s + 16``
    (with the table's index bits inside each 16-bit half) at every other index of the iteration space
    (``at_lookup``: the lookup element each element reads): ``(period, pairs)`` with ``pairs`` the pairs
    of ``range(period)``, repeating every ``period`` along K; None when K does not split so."""
    shr_origin = element_origins(look.x, defs)
    if shr_origin is None:
        return None
    shr = defs.get(shr_origin[0].name)
    if not (isinstance(shr, n.Binary) and shr.op == "shr"):
        return None
    words = element_origins(shr.lhs, defs)
    shifts = evaluate_constant(shr.rhs, defs)
    if words is None or shifts is None:
        return None
    shifts = np.broadcast_to(shifts, tuple(int(d) for d in shr.result.type.shape)).reshape(-1).astype(np.int64)
    at_shr = shr_origin[1].reshape(-1)[at_lookup]
    word = np.moveaxis(words[1].reshape(-1)[at_shr], axis, 0)
    shift = np.moveaxis(shifts[at_shr], axis, 0)
    extent = word.shape[0]
    index_bits = max(1, (len(look.table) - 1).bit_length())
    lows = {}
    for k in range(extent):
        if np.all(shift[k] >= 0) and np.all(shift[k] + index_bits <= 16):
            lows[(word[k].tobytes(), (shift[k] + 16).tobytes())] = k
    partner = {}
    for k in range(extent):
        lo = lows.get((word[k].tobytes(), shift[k].tobytes()))
        if lo is not None and lo not in partner:
            partner[lo], partner[k] = k, lo
    if len(partner) != extent:
        return None
    period = 2
    while period <= extent:
        if extent % period == 0 and all(partner[k] - k == partner[k % period] - k % period for k in range(extent)):
            pairs = tuple((k, partner[k]) for k in range(period) if k < partner[k])
            if all(hi < period for _, hi in pairs):
                return period, pairs
        period *= 2
    return None


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


__all__ = ["PairDot", "match_reduce", "match_dot", "view_index", "LLVM_HELPERS", "DPBF16", "PERMW", "LANES"]
