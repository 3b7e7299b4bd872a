"""Instruction selection for a bf16 product-reduction on AVX-512 BF16 CPUs: ``vpermw`` + ``vdpbf16ps``.

A low-bit GEMV reduces ``sum(cast(x, f32)[..., :, None] * lookup(shr(words, shift), table)[None, ...], axis=k)``
over K. When ``x`` is bf16 and every table entry is exact in bf16, each product is exact in f32 whichever
way it is computed, so two K steps can share one instruction: ``vdpbf16ps acc, w, xx`` adds
``w[2i] * xx[2i] + w[2i+1] * xx[2i+1]`` to f32 lane ``i``: with the bf16 pair ``(x[k], x[k'])`` broadcast
as ``xx``, lane ``n`` adds the products of K rows ``k`` and ``k'``. The weights come from ``vpermw``: 32 bf16 table
entries picked by the low 5 bits of each 16-bit half of a 32-bit lane (``vpermi2w``: 64 entries of two
registers by the low 6 bits, for 6-bit codes). Per 32 codes that is one shift, one permute and one dot instead of
two of each and two multiply-adds.

The packing decides whether it applies: K must split into pairs ``(k, k')`` such that lane ``n``'s word,
shifted by ``s``, holds the code of ``(k, n)`` in its low half and that of ``(k', n)`` in its high half, i.e.
the code of ``(k', n)`` is the same word's bits ``s + 16 ..`` (``k' = k + 1`` when a word holds two
consecutive K rows; ``k + 2`` when it holds two of 4 rows x 2 column vectors; the activation pair follows).
2-3-bit codes are stored as two 16-bit streams per word (``PackedFormat.substreams``) so that this holds
with adjacent K rows (one 32-bit load per activation pair); a code that crosses a 16-bit word continues in
the next word's same half, and one 16-bit funnel shift (``vpshrdw``) of the two words moves both halves'
codes into place. :func:`match_reduce` / :func:`match_dot`
prove all of it for every element of the tile: :func:`lowbit.ir.interpreter.bit_origins` traces each bit of
the lookup's index back through the unpack (element moves, views, shifts by constants, masks, disjoint sums)
to a bit of a storage word; the emitter then reads the storage words itself (affine in the K step and the
lane, checked for every element).

Codes that do not fit that form (5-8 bits, or no 16-bit halves) can still take the instruction when their
decode, whatever it is, yields values bf16 holds exactly (:class:`DecodedPairDot`, :func:`match_decoded_dot`):
the decoded f32 weights of rows ``k`` and ``k + 1`` are joined into bf16 pairs by their high halves (a shift
and a masked ``or``), so a GEMM of several rows does one ``vdpbf16ps`` per 32 products instead of two
multiply-adds.

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

from lowbit.dtypes import dtype as lowbit_dtype
from lowbit.ir import nodes as n
from lowbit.ir import numerics as num
from lowbit.ir.interpreter import ZERO_BIT, bit_origins, element_origins
from lowbit.ir.types import is_code, kind_of, nbits_of

from .operands import LANES, Affine, affine, static_shape, strip_views

#: the bits of a 16-bit lane ``vpermw`` selects by (one table register of 32 bf16 entries)
INDEX_BITS = 5
#: the most table entries: ``vpermi2w`` selects from two registers by 6 bits
MAX_ENTRIES = 1 << (INDEX_BITS + 1)
DPBF16 = "lowbit_dpbf16"
PERMW = "lowbit_permw"
#: ``vpermi2w``: the 64-entry lookup, table in two registers (entries 0-31, 32-63)
PERMI2W = "lowbit_permi2w"
#: per 16-bit lane, bits ``amount ..`` of ``high:low`` (``vpshrdw``; the amount repeated in both halves)
FUNNEL16 = "lowbit_funnel16"

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
define <16 x i32> @{PERMI2W}(<16 x i32> %index, <16 x i32> %low, <16 x i32> %high) #0 {{
  %i = bitcast <16 x i32> %index to <32 x i16>
  %l = bitcast <16 x i32> %low to <32 x i16>
  %h = bitcast <16 x i32> %high to <32 x i16>
  %r = call <32 x i16> @llvm.x86.avx512.vpermi2var.hi.512(<32 x i16> %l, <32 x i16> %i, <32 x i16> %h)
  %o = bitcast <32 x i16> %r to <16 x i32>
  ret <16 x i32> %o
}}
define <16 x i32> @{FUNNEL16}(<16 x i32> %low, <16 x i32> %high, <16 x i32> %amount) #0 {{
  %l = bitcast <16 x i32> %low to <32 x i16>
  %h = bitcast <16 x i32> %high to <32 x i16>
  %a = bitcast <16 x i32> %amount to <32 x i16>
  %r = call <32 x i16> @llvm.fshr.v32i16(<32 x i16> %h, <32 x i16> %l, <32 x i16> %a)
  %o = bitcast <32 x i16> %r to <16 x i32>
  ret <16 x i32> %o
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
declare <32 x i16> @llvm.x86.avx512.permvar.hi.512(<32 x i16>, <32 x i16>)
declare <32 x i16> @llvm.x86.avx512.vpermi2var.hi.512(<32 x i16>, <32 x i16>, <32 x i16>)
declare <32 x i16> @llvm.fshr.v32i16(<32 x i16>, <32 x i16>, <32 x i16>)
attributes #0 = {{ alwaysinline nounwind readnone }}
"""


@dataclass(frozen=True)
class WordSource:
    """Where one vector of 16 lanes takes the codes of one K pair: bits ``offset ..`` of each 16-bit half
    of the 32-bit word ``low`` (the code of ``(k, n)`` in the low half, of ``(k', n)`` in the high half).

    ``shift``: the word is shifted right by it before ``vpermw`` (which reads the low 5 bits of each half; 6 for
    ``vpermi2w``),
    so the code sits at bit ``offset - shift`` of the index and the table is spread to match
    (:meth:`PairDot.table_words`); sources of one word whose codes fit one 5-bit window share a shift.
    A code that crosses a 16-bit half takes its high bits from the word ``high``: both halves at once by a
    16-bit funnel shift (``vpshrdw``) of the pair ``(high, low)`` by ``offset`` (``shift == offset``)."""

    low: Affine
    offset: int
    high: Affine | None = None
    shift: int | None = None

    def __post_init__(self) -> None:
        if self.shift is None:
            object.__setattr__(self, "shift", self.offset)

    @property
    def position(self) -> int:
        """The code's first bit in each half of the index ``vpermw`` reads."""
        return self.offset - self.shift


@dataclass(frozen=True)
class PairDot:
    """A product-reduction proved fit for ``vdpbf16ps``.

    ``x_chain``: the broadcast / expand_dims steps from the product's operand back to the bf16 activation
    tile ``x``; ``words``: the uint32 tile the codes' bits come from; K splits into pairs
    ``(q * period + lo, q * period + hi)`` for each ``(lo, hi)`` of ``pairs``, and ``sources[p][v]`` says
    which words vector ``v`` (16 outputs along the last axis) of pair ``p`` reads.
    """

    x: n.Value
    x_chain: tuple[n.Instr, ...]
    lookup: n.Lookup
    words: n.Value
    period: int
    pairs: tuple[tuple[int, int], ...]
    sources: tuple[tuple[WordSource, ...], ...]

    @property
    def index_window(self) -> int:
        """The index bits the permute reads: 5 (``vpermw``, one register) for tables of at most 32 entries,
        else 6 (``vpermi2w``, two)."""
        return index_window(len(self.lookup.table))

    def table_words(self, position: int = 0) -> tuple[int, ...]:
        """The table spread over the permute's ``2 ** index_window`` bf16 entries for codes at bit ``position``
        of the index: entry ``i`` is ``table[(i >> position) mod size]`` (the IR's tables have a power-of-two
        size, so the bits around the code do not matter); two entries per signed 32-bit word (entry ``2i`` in
        the low half), 16 words per register."""
        table = self.lookup.table
        spread = [table[(i >> position) % len(table)] for i in range(1 << self.index_window)]
        bits = _bf16_bits(spread).astype(np.uint32)
        return tuple(int(w) for w in (bits[0::2] | (bits[1::2] << 16)).view(np.int32))


def index_window(entries: int) -> int:
    """The index bits of the permute that looks up a table of ``entries`` bf16 values: 5 (``vpermw``) up to
    32 entries, 6 (``vpermi2w``) up to :data:`MAX_ENTRIES`.

    >>> index_window(16), index_window(32), index_window(64)
    (5, 5, 6)
    """
    return INDEX_BITS if entries <= 1 << INDEX_BITS else INDEX_BITS + 1


def _index_bits(entries: int) -> int:
    """The bits of a code that indexes a table of ``entries`` values."""
    return max(1, (entries - 1).bit_length())


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
    shape = static_shape(ins.x)
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
    a_shape, b_shape = static_shape(ins.a), static_shape(ins.b)
    if (ins.result.dtype != "float32" or ins.a.dtype != "float32" or ins.b.dtype != "float32"
            or a_shape is None or b_shape is None):
        return None
    (m, k), (_, nn) = a_shape, b_shape
    if k % 2 or nn % LANES:
        return None
    a_space = np.broadcast_to(np.arange(m * k, dtype=np.int64).reshape(m, k, 1), (m, k, nn))
    b_space = np.broadcast_to(np.arange(k * nn, dtype=np.int64).reshape(1, k, nn), (m, k, nn))
    return _match_operands(ins.a, ins.b, a_space, b_space, defs, 1)


def _bf16_activations(a: n.Value, defs: Mapping[str, n.Instr | None]) -> tuple[n.Cast, tuple[n.Instr, ...]] | None:
    """``(cast, chain)`` when ``a`` is ``cast(x: bfloat16 -> float32)`` behind broadcast / expand_dims steps."""
    cast_v, x_chain = strip_views(a, defs, (n.Broadcast, n.ExpandDims))
    cast = defs.get(cast_v.name)
    return (cast, x_chain) if isinstance(cast, n.Cast) and cast.x.dtype == "bfloat16" else None


def _match_operands(a: n.Value, b: n.Value, a_space: np.ndarray, b_space: np.ndarray,
                    defs: Mapping[str, n.Instr | None], axis: int) -> PairDot | None:
    """``a`` the activations, ``b`` the weights; ``a_space`` / ``b_space``: for each element of the
    iteration space, the (row-major) element of ``a`` / ``b`` it multiplies; ``axis``: the reduced axis."""
    found = _bf16_activations(a, defs)
    if found is None:
        return None
    cast, x_chain = found
    look_v, _ = strip_views(b, defs, (n.Broadcast, n.ExpandDims))
    look = defs.get(look_v.name)
    if not (isinstance(look, n.Lookup) and len(look.table) <= MAX_ENTRIES and look.x.dtype.startswith("uint")
            and _bf16_exact(look.table)):
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
    found = _pair_sources(wo[1].reshape(-1)[b_space], look, defs, axis)
    if found is None:
        return None
    words, period, pairs, sources = found
    return PairDot(x=cast.x, x_chain=x_chain, lookup=look, words=words, period=period, pairs=pairs, sources=sources)


def _code_words(codes: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """For codes given as the root bits of their index bits (``[K, N, b]``, see :func:`bit_origins`):
    ``(half, low, offset, high)`` per ``(k, n)`` when each code is bits ``offset ..`` of one 16-bit half
    (``half`` 0 or 1) of word ``low``, continued from bit 0 of the same half of word ``high`` when it
    crosses the half (``high`` -1 otherwise); None when some code is not so."""
    if np.any(codes == ZERO_BIT):
        return None
    elem, bit = codes // 32, codes % 32
    half, offset = bit[..., 0] // 16, bit[..., 0] % 16
    pos = offset[..., None] + np.arange(codes.shape[-1])
    cross = pos >= 16
    low = elem[..., 0]
    high = np.where(cross[..., -1], elem[..., -1], -1)
    want_elem = np.where(cross, high[..., None], low[..., None])
    want_bit = 16 * half[..., None] + np.where(cross, pos - 16, pos)
    if not (np.array_equal(want_elem, elem) and np.array_equal(want_bit, bit)):
        return None
    return half, low, offset, high


def _pair_sources(at_lookup: np.ndarray, look: n.Lookup, defs: Mapping[str, n.Instr | None], axis: int):
    """How K splits into pairs ``(k, k')`` whose codes the two 16-bit halves of one 32-bit word hold at
    the same offset, and where each vector of 16 outputs reads them (``at_lookup``: the lookup element
    each element of the iteration space reads, the vector axis last): ``(words, period, pairs, sources)``
    (see :class:`PairDot`), the smallest period along K whose words are affine in the K step and the lane;
    None when K does not split so."""
    found = bit_origins(look.x, defs)
    if found is None or nbits_of(found[0].dtype) != 32:
        return None
    words, bits = found
    nbits = _index_bits(len(look.table))
    at = np.moveaxis(at_lookup, axis, 0)
    extent, columns = at.shape[0], at.shape[-1]
    at = at.reshape(extent, -1, columns)
    if np.any(at != at[:, :1]) or columns % LANES:        # the weights must not vary along other axes
        return None
    layout = _code_words(bits.reshape(-1, bits.shape[-1])[at[:, 0], :nbits])
    if layout is None:
        return None
    half, low, offset, high = layout
    if np.any(half != half[:, :1]):
        return None
    key = [(low[k].tobytes(), offset[k].tobytes(), high[k].tobytes()) for k in range(extent)]
    lows = {key[k]: k for k in range(extent) if half[k, 0] == 0}
    partner: dict[int, int] = {}
    for k in range(extent):
        lo = lows.get(key[k]) if half[k, 0] == 1 else None
        if lo is not None and lo not in partner:
            partner[lo], partner[k] = k, lo
    if len(partner) != extent:
        return None
    vectors = columns // LANES
    period = 2
    while period <= extent:
        if extent % period == 0 and all(partner[k] - k == partner[k % period] - k % period for k in range(extent)):
            pairs = tuple((k, partner[k]) for k in range(period) if k < partner[k])
            if all(hi < period for _, hi in pairs):
                sources = _sources(pairs, period, vectors, low, offset, high)
                if sources is not None:
                    return words, period, pairs, share_shifts(sources, nbits, index_window(len(look.table)))
        period *= 2
    return None


def _sources(pairs, period: int, vectors: int, low: np.ndarray, offset: np.ndarray, high: np.ndarray
             ) -> tuple[tuple[WordSource, ...], ...] | None:
    """The :class:`WordSource` of every (pair, vector) for one period, or None when some source is not the
    same offset and affine words in every K step and lane."""
    steps = low.shape[0] // period
    out = []
    for lo, _ in pairs:
        row = []
        for v in range(vectors):
            cols = slice(v * LANES, (v + 1) * LANES)
            ks = np.arange(steps) * period + lo
            off, hi_words = offset[ks, cols], high[ks, cols]
            lo_at = affine(low[ks, cols])
            crosses = hi_words[0, 0] >= 0
            hi_at = affine(hi_words) if crosses else None
            if (lo_at is None or np.any(off != off[0, 0]) or np.any((hi_words >= 0) != crosses)
                    or (crosses and hi_at is None)):
                return None
            row.append(WordSource(lo_at, int(off[0, 0]), hi_at))
        out.append(tuple(row))
    return tuple(out)


def share_shifts(sources: tuple[tuple[WordSource, ...], ...], nbits: int, window: int = INDEX_BITS
                 ) -> tuple[tuple[WordSource, ...], ...]:
    """``sources`` with one shift for the codes of a word that fit one ``window``-bit window of the permute's
    index (5 bits for ``vpermw``, 6 for ``vpermi2w``).

    Per word, greedily from its lowest code: a window starts at the lowest code not yet covered and takes
    every code of ``nbits`` bits that ends inside its ``window`` bits. 2-bit codes at bits 0, 2, .., 14 of each half
    need shifts 0, 4, 8, 12 (tables for positions 0 and 2) instead of one per code: on Zen 4 a loop of
    ``vpermw`` + ``vdpbf16ps`` ran 0.446 ns per ``vdpbf16ps`` with 7 shifts per 8 and 0.410 with 3.
    Codes crossing a half keep their funnel shift.

    >>> word = Affine(0, 1, 1)
    >>> [(s.shift, s.position) for (s,) in share_shifts(tuple((WordSource(word, o),) for o in range(0, 16, 2)), 2)]
    [(0, 0), (0, 2), (4, 0), (4, 2), (8, 0), (8, 2), (12, 0), (12, 2)]
    """
    offsets: dict[Affine, set[int]] = {}
    for row in sources:
        for src in row:
            if src.high is None:
                offsets.setdefault(src.low, set()).add(src.offset)
    shift_of: dict[tuple[Affine, int], int] = {}
    for word, found in offsets.items():
        start = None
        for offset in sorted(found):
            if start is None or offset + nbits > start + window:
                start = offset
            shift_of[word, offset] = start
    return tuple(tuple(WordSource(src.low, src.offset, src.high, shift_of.get((src.low, src.offset), src.offset))
                       for src in row) for row in sources)


@dataclass(frozen=True)
class DecodedPairDot:
    """A ``dot(cast(x: bf16), w)`` whose weights other instructions decode into f32 values that bf16 holds
    exactly (:func:`bf16_exact`): codes of 5-8 bits, float codes, int8 storage.

    Per K pair ``(2q, 2q + 1)`` and vector of 16 outputs, the two rows of decoded weights are joined into
    bf16 pairs, which costs nothing in rounding: the high half of each f32 row-``2q`` weight goes to the low
    half of a 32-bit lane (a shift), the high half of the row-``2q + 1`` weight stays (a mask; one
    ``vpternlogd`` with the shift's ``or``), and one ``vdpbf16ps`` adds both products. Against a multiply-add
    per product that halves the instructions on the multiply-add ports, which bound a GEMM of 4 rows once
    the decode is shared by the rows; a GEMV gains less (its decode is the larger part).

    ``x_chain``: the broadcast / expand_dims steps from the dot's operand back to the bf16 activations
    ``x``; ``weights``: the dot's f32 ``[K, N]`` operand (decoded per element where the nest reads it).
    """

    x: n.Value
    x_chain: tuple[n.Instr, ...]
    weights: n.Value
    period: int = 2
    pairs: tuple[tuple[int, int], ...] = ((0, 1),)


def _normal_bf16(values: np.ndarray) -> bool:
    """Every finite value exact in bf16 and zero or normal (``vdpbf16ps`` reads subnormal inputs as zero)."""
    f = values[np.isfinite(values)]
    return _bf16_exact(f) and bool(np.all((f == 0) | (np.abs(f) >= 2.0 ** -126)))


#: most distinct values :func:`value_set` tracks
MAX_VALUES = 1 << 12


def value_set(v: n.Value, defs: Mapping[str, n.Instr | None], decoded: Mapping[str, str]) -> np.ndarray | None:
    """Every value an element of ``v`` can hold, for any input (a float64 superset, at most
    :data:`MAX_VALUES`), or None when ``v`` is not made, behind element moves, of: a decode of codes
    (``decoded``: value name -> code type, recorded by ``select-dequant``), a lookup, a constant, a cast of an
    integer of known range (its dtype's, or the bits it is made of, :func:`bit_origins`), or ``add`` / ``sub``
    / ``mul`` of such values (in float32, as the IR computes them).

    >>> from lowbit.ir.builder import KernelBuilder
    >>> kb = KernelBuilder("k")
    >>> q = kb.load(kb.tensor_param("q", "u8", [4]), [kb.const(0, "i32")], [4])
    >>> w = kb.binary("sub", kb.cast(q, "f32"), kb.full([4], 128.0, "f32"))
    >>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    >>> found = value_set(w, defs, {})
    >>> len(found), float(found.min()), float(found.max())
    (256, -128.0, 127.0)
    """
    src, _ = strip_views(v, defs, (n.Broadcast, n.ExpandDims, n.Reshape, n.Permute))
    if src.name in decoded:
        code = lowbit_dtype(decoded[src.name])
        return code.values() if code.nbits <= 12 else None
    ins = defs.get(src.name)
    if isinstance(ins, n.Lookup):
        return np.array(ins.table, np.float64)
    if isinstance(ins, (n.Full, n.Constant)) and kind_of(src.dtype) == "float":
        return np.array([float(np.float32(ins.value))])
    if isinstance(ins, n.Cast) and kind_of(src.dtype) == "float" and kind_of(ins.x.dtype) in ("int", "uint"):
        bounds = _int_bounds(ins.x, defs)
        return None if bounds is None else np.arange(bounds[0], bounds[1] + 1, dtype=np.float64)
    if isinstance(ins, n.Binary) and ins.op in ("add", "sub", "mul") and src.dtype == "float32":
        a, b = value_set(ins.lhs, defs, decoded), value_set(ins.rhs, defs, decoded)
        if a is None or b is None or len(a) * len(b) > MAX_VALUES * 16:
            return None
        x, y = np.meshgrid(a.astype(np.float32), b.astype(np.float32))
        with np.errstate(all="ignore"):
            out = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[ins.op](x, y)
        found = np.unique(out.astype(np.float64))
        return found if len(found) <= MAX_VALUES else None
    return None


def _int_bounds(x: n.Value, defs: Mapping[str, n.Instr | None]) -> tuple[int, int] | None:
    """``(lo, hi)`` bounding every element of the integer tile ``x``: its dtype's range when that holds at most
    :data:`MAX_VALUES` values, else from the bits it is made of (through a cast from an unsigned tile)."""
    if is_code(x.dtype):
        return None
    bits = nbits_of(x.dtype)
    if (1 << bits) <= MAX_VALUES:
        signed = kind_of(x.dtype) == "int"
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    cast = defs.get(x.name)
    unsigned = cast.x if isinstance(cast, n.Cast) and kind_of(cast.x.dtype) == "uint" else x
    if kind_of(unsigned.dtype) != "uint" or nbits_of(unsigned.dtype) > bits:
        return None
    found = bit_origins(unsigned, defs)
    if found is None:
        return None
    used = np.flatnonzero(np.any(found[1] != ZERO_BIT, axis=tuple(range(found[1].ndim - 1))))
    top = int(used.max()) + 1 if used.size else 0
    if (1 << top) > MAX_VALUES or (kind_of(x.dtype) == "int" and top >= bits):
        return None
    return 0, (1 << top) - 1


def bf16_exact(v: n.Value, defs: Mapping[str, n.Instr | None], decoded: Mapping[str, str]) -> bool:
    """Whether every element of the float32 tile ``v`` is, for every input, a value bf16 holds exactly and
    not a subnormal (``vdpbf16ps`` reads those as zero), proved from :func:`value_set`.

    >>> from lowbit.ir.builder import KernelBuilder
    >>> kb = KernelBuilder("k")
    >>> q = kb.load(kb.tensor_param("q", "i8", [4]), [kb.const(0, "i32")], [4])
    >>> w = kb.cast(q, "f32")
    >>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    >>> bf16_exact(w, defs, {}), bf16_exact(kb.binary("mul", w, w), defs, {})
    (True, False)
    """
    if v.dtype != "float32":
        return False
    found = value_set(v, defs, decoded)
    return found is not None and _normal_bf16(found)


def match_decoded_dot(ins: n.Dot, defs: Mapping[str, n.Instr | None], decoded: Mapping[str, str]
                      ) -> DecodedPairDot | None:
    """The :class:`DecodedPairDot` form of ``dot(a, b, acc)``, or None: ``a`` cast from bf16, ``b`` proved
    exact in bf16 by :func:`bf16_exact`, f32 throughout, K even and N whole vectors."""
    a_shape, b_shape = static_shape(ins.a), static_shape(ins.b)
    if (ins.result.dtype != "float32" or ins.a.dtype != "float32" or ins.b.dtype != "float32"
            or a_shape is None or b_shape is None or a_shape[1] % 2 or b_shape[1] % LANES):
        return None
    found = _bf16_activations(ins.a, defs)
    if found is None or not bf16_exact(ins.b, defs, decoded):
        return None
    cast, x_chain = found
    return DecodedPairDot(x=cast.x, x_chain=x_chain, weights=ins.b)


__all__ = ["PairDot", "DecodedPairDot", "WordSource", "share_shifts", "match_reduce", "match_dot", "match_decoded_dot",
           "bf16_exact", "value_set", "index_window", "LLVM_HELPERS", "DPBF16", "PERMW", "PERMI2W", "FUNNEL16"]
