"""Packed storage formats derived from a tile's register layout: storage order, IR plan and host repack.

One :class:`PackedFormat` is derived from ``(nbits, tile shape, register layout, vector words)``; the
kernel's unpack (built by :mod:`.lowbit_lowering` from :meth:`PackedFormat.plan`) and the host's
:meth:`~PackedFormat.pack` / :meth:`~PackedFormat.unpack` both come from that one object, so kernel and
packer cannot disagree.

Storage of one tile (``S`` words):

* **units**: the non-replicated workers of the layout (``g`` consecutive ones per unit when one worker's
  ``Lc * n`` bits are not whole bytes); unit ``u``'s bitstream holds its codes in local-slot order, code
  ``l`` at bits ``[l*n, (l+1)*n)`` (little-endian, the IR ``view`` convention; 3/5/6/7-bit codes
  straddle words);
* **words**: uint32 when a unit's bits are a multiple of 32, else uint16, else uint8; ``Wpw`` per unit;
* **order** ``[chunk, unit, word-in-chunk]`` with ``V`` words per chunk (a worker's vector load);
* **substreams** ``h = 2`` (optional): a unit's codes form two bitstreams, split on the innermost factor 2
  of its first local mode (stream ``s`` holds the slots whose digit is ``s``), each in uint16 words; word
  ``j`` of the unit is uint32 ``stream0[j] | stream1[j] << 16``. Each 16-bit half of a 32-bit lane then
  holds a code at the same bit offset as the other half, for any code width: what a 16-bit pair
  instruction (``vpermw`` + ``vdpbf16ps``) needs, where a single stream of 3- or 5-bit codes never puts two
  codes exactly 16 bits apart.
* **groups** ``p`` (optional, without substreams): the innermost factor ``p`` of a worker's first local mode
  becomes its innermost slot digit, so the codes of ``p`` consecutive rows of that mode (K rows of a GEMV's
  weight tile) sit side by side in the bitstream: a 4-bit field for ``p`` 2-bit or 4 1-bit codes, what a
  lookup of activation sums (``vpermps`` over a table of ``x[k] w0 + x[k+1] w1``) indexes with.
* **bit planes** (optional, one stream): a unit's codes are cut into blocks of 32 (in slot order), each
  stored as ``n`` uint32 words, word ``b`` holding bit ``b`` of the block's codes (code ``i`` at bit ``i``).
  A 4-bit field of a word then holds one bit of 4 consecutive codes (with groups of 4: of 4 K rows), so a
  lookup of activation sums can add 3-bit codes one bit at a time: 3 lookups per 4 K rows instead of 4
  multiply-adds.

The logical tensor ``[D0, ..., Dr-1]`` is padded with code 0 to whole tiles and stored as
``[cdiv(D0, T0), ..., cdiv(Dr-1, Tr-1), S]``.

>>> import numpy as np
>>> from lowbit.layout import spatial, local
>>> fmt = derive_format("uint4", spatial(4, 2).local(2, 4), vector_bytes=4)
>>> fmt.tile_shape, fmt.units, fmt.words_per_unit, fmt.storage_dtype, fmt.storage_shape((10, 9))
((8, 8), 8, 1, 'uint32', (2, 2, 8))
>>> codes = np.random.default_rng(0).integers(0, 16, (10, 9)).astype(np.uint8)
>>> bool((fmt.unpack(fmt.pack(codes), (10, 9)) == codes).all())
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from math import gcd, prod
from typing import Any, Sequence

import numpy as np

from lowbit.errors import CompileError, FormatError
from lowbit.ir.symbolic import Dim
from lowbit.layout import RegisterLayout
from lowbit.quant.formats import FormatId

from .layout_rules import reshape_layout, view_layout

_WORD_DTYPES = {32: "uint32", 16: "uint16", 8: "uint8"}
#: codes per block of bit planes: one uint32 word per bit
_PLANE_BLOCK = 32
_NP_WORD = {32: np.dtype("<u4"), 16: np.dtype("<u2"), 8: np.dtype(np.uint8)}


@dataclass(frozen=True)
class UnpackPlan:
    """The data movement of the kernel's unpack, with the layout of every intermediate.

    Storage tile ``[1, .., 1, S]`` -> ``reshape [C, U, V]`` -> ``permute [1, 0, 2]`` -> ``reshape [U, Wpw]``
    (words) -> ``view`` as codes ``[U, g * Lc]`` -> ``reshape split_shape`` -> ``permute perm`` ->
    ``reshape tile_shape`` (layout ``tile_layout``). Steps whose shapes do not change are left out.

    With units of ``g > 1`` workers, the words of a unit are held by all its ``g`` workers (replicas), so
    ``tile_layout`` is the tile's layout with those ``g`` worker digits made local; the emitter then
    converts to the tile's own layout (each worker keeps its part: a same-shape ``reshape``). Substreams and
    groups reorder a worker's slots, so their ``tile_layout`` differs from the tile's in the local order
    alone, and the same conversion follows.
    """

    loaded_layout: RegisterLayout       # [1, .., 1, S]
    chunked_layout: RegisterLayout      # [C, U, V]
    unit_words_layout: RegisterLayout   # [U, C, V]
    words_layout: RegisterLayout        # [U, Wpw]
    codes_layout: RegisterLayout        # [U, g * Lc]
    split_shape: tuple[int, ...]
    split_layout: RegisterLayout
    perm: tuple[int, ...]
    permuted_layout: RegisterLayout
    tile_layout: RegisterLayout
    #: with substreams: ``words`` -> ``view`` uint16 ``[U, 2 Wpw]`` -> ``reshape [U, Wpw, 2]`` -> ``permute
    #: [U, 2, Wpw]`` -> ``view`` codes ``[U, 2, Lc / 2]`` -> ``reshape [U, Lc]``: the layouts of those steps
    stream_layouts: tuple[RegisterLayout, ...] = ()
    #: with bit planes: ``words`` -> ``view`` uint1 ``[U, 32 Wpw]`` -> ``reshape [U, B, n, 32]`` -> ``permute
    #: [U, B, 32, n]`` -> ``view`` codes ``[U, B, 32, 1]`` -> ``reshape [U, Lc]``: the layouts of those steps
    plane_layouts: tuple[RegisterLayout, ...] = ()


@dataclass(frozen=True)
class PackedFormat:
    """How a low-bit global tensor is stored for one tile layout (see the module docstring).

    ``pack(codes)`` / ``unpack(storage, logical_shape)`` take and give numpy arrays or torch tensors
    (torch storage is uint32 / uint16 / uint8 like numpy's, the dtypes the compiled kernels declare).
    """

    dtype: str
    layout: RegisterLayout
    vector_bytes: int = 4
    logical_dims: tuple[Dim, ...] = field(default=(), compare=False)
    pad_code: int = 0
    substreams: int = 1
    groups: int = 1
    bit_planes: bool = False

    # ------------------------------------------------------------------ derived sizes
    @cached_property
    def nbits(self) -> int:
        from lowbit.ir.types import nbits_of

        return nbits_of(self.dtype)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        return tuple(self.layout.shape)

    @cached_property
    def worker_units(self) -> int:
        """Non-replicated workers of the layout."""
        return prod(self.layout.mode_shape[m] for m in self.layout.spatial_modes if m >= 0)

    @cached_property
    def unit_workers(self) -> int:
        """Workers per unit ``g`` (1 unless one worker's bits are not whole bytes)."""
        bits = self.layout.local_size * self.nbits
        g = 8 // gcd(bits, 8)
        if self.worker_units % g:
            raise CompileError(f"a {list(self.tile_shape)} tile of {self.dtype} with {self.worker_units} distinct "
                               f"workers holding {bits} bits each cannot be stored in whole bytes",
                               hint="use a tile or layout with more elements per worker")
        return g

    @property
    def units(self) -> int:
        return self.worker_units // self.unit_workers

    @property
    def codes_per_unit(self) -> int:
        return self.unit_workers * self.layout.local_size

    @cached_property
    def word_bits(self) -> int:
        bits = self.codes_per_unit * self.nbits
        if self.substreams > 1:
            self._check_substreams()
            return 32
        if self.bit_planes:
            self._check_planes()
            return 32
        return 32 if bits % 32 == 0 else 16 if bits % 16 == 0 else 8

    def _check_groups(self) -> None:
        """Raise unless the tile allows ``groups``: a first local mode that ``groups`` divides, one stream."""
        L = self.layout
        first = L.mode_shape[L.local_modes[0]] if L.local_modes else 1
        if self.groups < 1 or first % self.groups or (self.groups > 1 and self.substreams > 1):
            raise CompileError(f"a {list(self.tile_shape)} tile of {self.dtype} in layout {L!r} cannot be stored "
                               f"in groups of {self.groups} rows",
                               hint="groups need a first local mode they divide, and one stream")

    def _check_planes(self) -> None:
        """Raise unless the tile allows bit planes: one stream, whole blocks of 32 codes per unit."""
        if self.bit_planes and (self.substreams > 1 or self.codes_per_unit % _PLANE_BLOCK):
            raise CompileError(f"a {list(self.tile_shape)} tile of {self.dtype} in layout {self.layout!r} cannot be "
                               f"stored in bit planes ({self.codes_per_unit} codes per storage unit)",
                               hint=f"bit planes need one stream and a multiple of {_PLANE_BLOCK} codes per unit")

    @property
    def plane_blocks(self) -> int:
        """``B``: blocks of 32 codes per unit, with bit planes."""
        return self.codes_per_unit // _PLANE_BLOCK

    def _check_substreams(self) -> None:
        """Raise unless the tile allows substreams: 2 streams of whole uint16 words per worker."""
        L = self.layout
        first = L.mode_shape[L.local_modes[0]] if L.local_modes else 1
        bits = L.local_size * self.nbits
        if self.substreams != 2 or first % 2 or self.unit_workers != 1 or bits % 32:
            raise CompileError(f"a {list(self.tile_shape)} tile of {self.dtype} in layout {L!r} cannot be stored "
                               f"as {self.substreams} substreams ({bits} bits per worker)",
                               hint="substreams need 2 streams of whole 16-bit words per worker, split on an "
                                    "even first local mode")

    @property
    def words_per_unit(self) -> int:
        return self.codes_per_unit * self.nbits // self.word_bits

    @cached_property
    def chunk_words(self) -> int:
        """``V``: the largest power of two dividing ``Wpw`` with at most ``vector_bytes`` per chunk."""
        v = 1
        while v * 2 * self.word_bits <= 8 * max(1, self.vector_bytes) and self.words_per_unit % (v * 2) == 0:
            v *= 2
        return v

    @property
    def chunks(self) -> int:
        return self.words_per_unit // self.chunk_words

    @property
    def words_per_tile(self) -> int:
        return self.units * self.words_per_unit

    @property
    def storage_dtype(self) -> str:
        return _WORD_DTYPES[self.word_bits]

    @cached_property
    def format_id(self) -> FormatId:
        L = self.layout
        key = (L.shape, L.mode_shape, L.spatial_modes, L.local_modes, self.nbits, self.word_bits,
               self.chunk_words, self.unit_workers, self.pad_code) + ((self.substreams,) if self.substreams > 1 else ())
        key += (("groups", self.groups),) if self.groups > 1 else ()
        key += (("planes",),) if self.bit_planes else ()
        key = repr(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        tile = "x".join(str(t) for t in self.tile_shape)
        streams = f"s{self.substreams}" if self.substreams > 1 else ""
        streams += f"g{self.groups}" if self.groups > 1 else ""
        streams += "p" if self.bit_planes else ""
        return FormatId(f"tile-b{self.nbits}-{tile}-u{self.word_bits}v{self.chunk_words}{streams}-{digest}", 1)

    def storage_shape(self, logical_shape: Sequence[int]) -> tuple[int, ...]:
        """``(*cdiv(D_i, T_i), S)`` for a logical shape."""
        shape = self._check_shape(logical_shape)
        return tuple(-(-d // t) for d, t in zip(shape, self.tile_shape)) + (self.words_per_tile,)

    # ------------------------------------------------------------------ the unpack plan (IR side)
    @cached_property
    def plan(self) -> UnpackPlan:
        L = self.layout
        spatial = [m for m in L.spatial_modes if m >= 0]
        # the innermost g worker digits form a unit: carve them out of the innermost spatial modes
        inner: dict[int, int] = {}                       # mode -> the part of it inside a unit
        rest = self.unit_workers
        for m in reversed(spatial):
            if rest == 1:
                break
            size = L.mode_shape[m]
            part = size if rest % size == 0 else rest if size % rest == 0 else 0
            if part == 0:
                raise CompileError(f"cannot group {self.unit_workers} workers of layout {L!r} into storage units",
                                   hint="use a tile or layout with whole bytes per worker")
            inner[m] = part
            rest //= part
        h, gp = self.substreams, self.groups
        if h > 1:
            self._check_substreams()
        self._check_groups()
        self._check_planes()
        # substreams split the first local mode's innermost factor h off as the outermost slot digit, groups
        # its innermost factor gp off as the innermost one
        first = L.local_modes[0] if h > 1 or gp > 1 else None
        axes: list[tuple[int, int]] = []    # (mode, 0: outer part / whole, 1: unit part, 2: stream, 3: group)
        axes += [(m, 0) for m in spatial if inner.get(m, 1) != L.mode_shape[m]]
        axes += [(first, 2)] if h > 1 else []
        axes += [(m, 1) for m in spatial if m in inner]
        axes += [(m, 0) for m in L.local_modes]
        axes += [(first, 3)] if gp > 1 else []
        size_of = {}
        for m, part in axes:
            whole, inside = L.mode_shape[m], inner.get(m) or (max(h, gp) if m == first else None)
            size_of[(m, part)] = inside if part else (whole // inside if inside else whole)
        axis_of = {key: i for i, key in enumerate(axes)}
        split_shape = tuple(size_of[key] for key in axes)
        entries: list[int] = []
        for m in L.spatial_modes:
            if m < 0:
                entries.append(m)
                continue
            if (m, 0) in axis_of:
                entries.append(axis_of[(m, 0)])
            if m in inner:
                entries.append(-inner[m])                # a unit's workers all hold its words
        local_axes = (((axis_of[(first, 2)],) if h > 1 else ()) + tuple(axis_of[(m, 1)] for m in spatial if m in inner)
                      + tuple(axis_of[(m, 0)] for m in L.local_modes) + ((axis_of[(first, 3)],) if gp > 1 else ()))
        split = RegisterLayout(split_shape, split_shape, tuple(entries), local_axes)
        perm = tuple(axis_of[key] for m in range(len(L.mode_shape)) for key in ((m, 0), (m, 1), (m, 2), (m, 3))
                     if key in axis_of)
        from lowbit.layout import transforms as T

        permuted = T.permute(split, list(perm))
        tile = reshape_layout(permuted, self.tile_shape)
        if self.unit_workers == 1 and h == 1 and gp == 1 and tile != L:   # (streams, groups reorder a worker's slots)
            tile = None
        codes = reshape_layout(split, (self.units, self.codes_per_unit))
        streams: tuple[RegisterLayout, ...] = ()
        planes: tuple[RegisterLayout, ...] = ()
        if codes is None:
            words = None
        elif self.bit_planes:
            words, planes = self._plane_layouts(codes)
        elif h == 1:
            words = view_layout(codes, self.nbits, self.word_bits)
        else:
            words, streams = self._stream_layouts(codes)
        u, c, v = self.units, self.chunks, self.chunk_words
        unit_words = reshape_layout(words, (u, c, v)) if words is not None else None
        chunked = T.permute(unit_words, [1, 0, 2]) if unit_words is not None else None
        loaded = (reshape_layout(chunked, (1,) * len(self.tile_shape) + (self.words_per_tile,))
                  if chunked is not None else None)
        if None in (tile, codes, words, unit_words, chunked, loaded) + streams + planes:
            raise CompileError(f"internal error: cannot derive the unpack of {self.dtype} tiles in layout {L!r}",
                               hint="please report this with the kernel")
        return UnpackPlan(loaded, chunked, unit_words, words, codes, split_shape, split, perm, permuted, tile,
                          streams, planes)

    def _plane_layouts(self, codes: RegisterLayout) -> tuple[RegisterLayout | None, tuple]:
        """For bit planes: the words' layout ``[U, Wpw]`` and the layouts of the unpack steps from the words
        to the codes (see :attr:`UnpackPlan.plane_layouts`), derived backwards from the codes so that every
        worker keeps its own bits."""
        from lowbit.layout import transforms as T

        u, b, nb, wpw = self.units, self.plane_blocks, self.nbits, self.words_per_unit
        backward = reshape_layout(codes, (u, b, _PLANE_BLOCK, 1))
        for step in (lambda x: view_layout(x, nb, 1), lambda x: T.permute(x, [0, 1, 3, 2]),
                     lambda x: reshape_layout(x, (u, _PLANE_BLOCK * wpw)), lambda x: view_layout(x, 1, 32)):
            backward = step(backward) if backward is not None else None
        if backward is None:
            return None, (None,)
        bits = view_layout(backward, 32, 1)
        blocks = reshape_layout(bits, (u, b, nb, _PLANE_BLOCK)) if bits is not None else None
        per_code = T.permute(blocks, [0, 1, 3, 2]) if blocks is not None else None
        joined = view_layout(per_code, 1, nb) if per_code is not None else None
        flat = reshape_layout(joined, (u, self.codes_per_unit)) if joined is not None else None
        return backward, (bits, blocks, per_code, joined, flat)

    def _stream_layouts(self, codes: RegisterLayout) -> tuple[RegisterLayout | None, tuple]:
        """For substreams: the words' layout ``[U, Wpw]`` (every worker keeps its codes' bits) and the
        layouts of the unpack steps from the words to the codes (see :attr:`UnpackPlan.stream_layouts`)."""
        from lowbit.layout import transforms as T

        u, h, lc, wpw = self.units, self.substreams, self.codes_per_unit, self.words_per_unit
        backward = reshape_layout(codes, (u, h, lc // h))
        for step in (lambda x: view_layout(x, self.nbits, 16), lambda x: T.permute(x, [0, 2, 1]),
                     lambda x: reshape_layout(x, (u, wpw * h)), lambda x: view_layout(x, 16, 32)):
            backward = step(backward) if backward is not None else None
        if backward is None:
            return None, (None,)
        halves = view_layout(backward, 32, 16)
        pairs = reshape_layout(halves, (u, wpw, h)) if halves is not None else None
        rows = T.permute(pairs, [0, 2, 1]) if pairs is not None else None
        stream_codes = view_layout(rows, 16, self.nbits) if rows is not None else None
        flat = reshape_layout(stream_codes, (u, lc)) if stream_codes is not None else None
        return backward, (halves, pairs, rows, stream_codes, flat)

    @cached_property
    def _unit_index(self) -> np.ndarray:
        """``[U, g * Lc]``: the row-major tile element held at each (unit, stream position)."""
        p = self.plan
        t = np.arange(prod(self.tile_shape), dtype=np.int64)
        inverse = np.argsort(p.perm)
        permuted_shape = tuple(p.split_shape[a] for a in p.perm)
        idx = t.reshape(permuted_shape).transpose(inverse).reshape(self.units, self.codes_per_unit)
        idx.setflags(write=False)
        return idx

    # ------------------------------------------------------------------ host side
    def _check_shape(self, logical_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(d) for d in logical_shape)
        if len(shape) != len(self.tile_shape) or any(d < 0 for d in shape):
            raise FormatError(f"format {self.format_id}: expected a logical shape of rank {len(self.tile_shape)}, "
                              f"got {list(logical_shape)}")
        return shape

    def pack(self, codes: Any) -> Any:
        """Logical codes ``[D0, ..]`` (integers in ``[0, 2**nbits)``) -> storage ``[*tiles, S]``."""
        xp = _Backend.of(codes)
        shape = self._check_shape(xp.shape(codes))
        codes = xp.as_codes(codes, self.nbits, self.format_id)
        tiles = [-(-d // t) for d, t in zip(shape, self.tile_shape)]
        padded = xp.pad(codes, [n * t - d for n, t, d in zip(tiles, self.tile_shape, shape)])
        r = len(shape)
        split = [x for n, t in zip(tiles, self.tile_shape) for x in (n, t)]
        x = xp.reshape(padded, split)
        x = xp.permute(x, list(range(0, 2 * r, 2)) + list(range(1, 2 * r, 2)))
        x = xp.reshape(x, tiles + [prod(self.tile_shape)])
        units = xp.take(x, self._unit_index)                         # [*tiles, U, g*Lc]
        from lowbit.packing import pack

        h = self.substreams
        if self.bit_planes:                                         # [*tiles, U, B, 32] -> bit b of each code
            blocks = xp.reshape(units, tiles + [self.units, self.plane_blocks, _PLANE_BLOCK])
            planes = xp.permute(xp.bits(blocks, self.nbits), list(range(r + 2)) + [r + 3, r + 2])
            stream = pack(xp.reshape(xp.contiguous(planes), tiles + [self.units, self.codes_per_unit * self.nbits]),
                          1, axis=-1)
        elif h == 1:
            stream = pack(units, self.nbits, axis=-1)               # uint8 [*tiles, U, bytes]
        else:                                                       # h streams, their uint16 words interleaved
            streams = pack(xp.reshape(units, tiles + [self.units, h, self.codes_per_unit // h]), self.nbits, axis=-1)
            halves = xp.reshape(streams, tiles + [self.units, h, self.words_per_unit, 2])
            stream = xp.reshape(xp.contiguous(xp.permute(halves, list(range(r + 1)) + [r + 2, r + 1, r + 3])),
                                tiles + [self.units, 4 * self.words_per_unit])
        words = xp.bytes_to_words(stream, self.word_bits)           # [*tiles, U, Wpw]
        words = xp.reshape(words, tiles + [self.units, self.chunks, self.chunk_words])
        words = xp.permute(words, list(range(r)) + [r + 1, r, r + 2])
        return xp.contiguous(xp.reshape(words, tiles + [self.words_per_tile]))

    def unpack(self, storage: Any, logical_shape: Sequence[int]) -> Any:
        """The inverse of :meth:`pack`: storage ``[*tiles, S]`` -> codes ``logical_shape`` (uint8)."""
        xp = _Backend.of(storage)
        shape = self._check_shape(logical_shape)
        want = self.storage_shape(shape)
        if tuple(xp.shape(storage)) != want:
            raise FormatError(f"format {self.format_id}: storage for logical shape {list(shape)} must have shape "
                              f"{list(want)}, got {list(xp.shape(storage))}")
        r = len(shape)
        tiles = list(want[:-1])
        words = xp.reshape(xp.as_words(storage, self.word_bits), tiles + [self.chunks, self.units, self.chunk_words])
        words = xp.permute(words, list(range(r)) + [r + 1, r, r + 2])
        words = xp.reshape(words, tiles + [self.units, self.words_per_unit])
        stream = xp.words_to_bytes(words, self.word_bits)
        from lowbit.packing import unpack

        h = self.substreams
        if self.bit_planes:
            planes = xp.reshape(unpack(stream, 1, self.codes_per_unit * self.nbits, axis=-1),
                                tiles + [self.units, self.plane_blocks, self.nbits, _PLANE_BLOCK])
            codes = xp.join_bits(xp.permute(planes, list(range(r + 2)) + [r + 3, r + 2]))
            units = xp.reshape(codes, tiles + [self.units, self.codes_per_unit])
        elif h == 1:
            units = unpack(stream, self.nbits, self.codes_per_unit, axis=-1)   # [*tiles, U, g*Lc]
        else:
            halves = xp.reshape(stream, tiles + [self.units, self.words_per_unit, h, 2])
            streams = xp.reshape(xp.contiguous(xp.permute(halves, list(range(r + 1)) + [r + 2, r + 1, r + 3])),
                                 tiles + [self.units, h, 2 * self.words_per_unit])
            units = xp.reshape(unpack(streams, self.nbits, self.codes_per_unit // h, axis=-1),
                               tiles + [self.units, self.codes_per_unit])
        flat = xp.scatter(units, self._unit_index, prod(self.tile_shape))  # [*tiles, prod(T)]
        x = xp.reshape(flat, tiles + list(self.tile_shape))
        inv = [0] * (2 * r)
        for k, a in enumerate(list(range(0, 2 * r, 2)) + list(range(1, 2 * r, 2))):
            inv[a] = k
        x = xp.permute(x, inv)
        x = xp.reshape(x, [n * t for n, t in zip(tiles, self.tile_shape)])
        return xp.contiguous(xp.crop(x, shape))

    unpack_storage = unpack


def derive_format(dtype: str, layout: RegisterLayout, vector_bytes: int = 4,
                  logical_dims: Sequence[Dim] = (), substreams: int = 1, groups: int = 1,
                  bit_planes: bool = False) -> PackedFormat:
    """The packed format of ``dtype`` tiles held in ``layout`` (validated: the plan is derived now)."""
    from lowbit.ir.types import canonical_dtype, is_code, nbits_of

    dtype = canonical_dtype(dtype)
    if not is_code(dtype) or nbits_of(dtype) > 8:
        raise CompileError(f"packed formats are for 1..8-bit code types, got {dtype}")
    fmt = PackedFormat(dtype, layout, int(vector_bytes), tuple(logical_dims), substreams=int(substreams),
                       groups=int(groups), bit_planes=bool(bit_planes))
    fmt.plan  # noqa: B018  (derive now: errors surface at compile time)
    fmt.unit_workers  # noqa: B018
    return fmt


# ----------------------------------------------------------------------------------------------------
# numpy / torch array operations used by pack / unpack (whole-array ops only)
# ----------------------------------------------------------------------------------------------------

class _Backend:
    @staticmethod
    def of(x: Any) -> "_Backend":
        return _Torch() if type(x).__module__.startswith("torch") else _Numpy()


class _Numpy(_Backend):
    def shape(self, x):
        return np.shape(x)

    def as_codes(self, x, nbits, fid):
        a = np.asarray(x)
        if a.dtype.kind not in "iu":
            raise FormatError(f"format {fid}: codes must be integers, got {a.dtype}",
                              hint="encode values first: lowbit.dtype(...).encode(values)")
        if a.size and (a.min() < 0 or a.max() >= (1 << nbits)):
            raise FormatError(f"format {fid}: codes must lie in [0, {(1 << nbits) - 1}]")
        return a.astype(np.uint8, copy=False)

    def pad(self, x, amounts):
        if not any(amounts):
            return x
        return np.pad(x, [(0, a) for a in amounts], constant_values=0)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def permute(self, x, perm):
        return x.transpose(perm)

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def take(self, x, idx):
        return x[..., idx]

    def scatter(self, units, idx, size):
        out = np.zeros(units.shape[:-2] + (size,), dtype=units.dtype)
        out[..., idx] = units
        return out

    def crop(self, x, shape):
        return x[tuple(slice(0, d) for d in shape)]

    def bits(self, x, nbits):
        return (x[..., None] >> np.arange(nbits, dtype=np.uint8)) & np.uint8(1)

    def join_bits(self, bits):
        return (bits << np.arange(bits.shape[-1], dtype=np.uint8)).sum(axis=-1, dtype=np.uint8)

    def bytes_to_words(self, stream, bits):
        dt = _NP_WORD[bits]
        return np.ascontiguousarray(stream).view(dt).astype(dt.newbyteorder("="), copy=False)

    def as_words(self, storage, bits):
        a = np.asarray(storage)
        want = np.dtype(_WORD_DTYPES[bits])
        if a.dtype != want:
            raise FormatError(f"storage must be {want}, got {a.dtype}")
        return a

    def words_to_bytes(self, words, bits):
        return np.ascontiguousarray(words.astype(_NP_WORD[bits], copy=False)).view(np.uint8)


class _Torch(_Backend):
    _DT = {32: "uint32", 16: "uint16", 8: "uint8"}
    _SIGNED = {32: "int32", 16: "int16", 8: "int8"}

    def __init__(self):
        import torch

        self.torch = torch

    def shape(self, x):
        return tuple(x.shape)

    def as_codes(self, x, nbits, fid):
        t = self.torch
        if x.dtype.is_floating_point or x.dtype == t.bool:
            raise FormatError(f"format {fid}: codes must be integers, got {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= (1 << nbits)):
            raise FormatError(f"format {fid}: codes must lie in [0, {(1 << nbits) - 1}]")
        return x.to(t.uint8)

    def pad(self, x, amounts):
        if not any(amounts):
            return x
        out = self.torch.zeros([d + a for d, a in zip(x.shape, amounts)], dtype=x.dtype, device=x.device)
        out[tuple(slice(0, d) for d in x.shape)] = x
        return out

    def reshape(self, x, shape):
        return x.reshape(shape)

    def permute(self, x, perm):
        return x.permute(perm)

    def contiguous(self, x):
        return x.contiguous()

    def take(self, x, idx):
        i = self.torch.as_tensor(np.array(idx), device=x.device)
        return x[..., i]

    def scatter(self, units, idx, size):
        t = self.torch
        out = t.zeros(units.shape[:-2] + (size,), dtype=units.dtype, device=units.device)
        out[..., t.as_tensor(np.array(idx), device=units.device)] = units
        return out

    def crop(self, x, shape):
        return x[tuple(slice(0, d) for d in shape)]

    def bits(self, x, nbits):
        shifts = self.torch.arange(nbits, dtype=self.torch.uint8, device=x.device)
        return (x.unsqueeze(-1) >> shifts) & 1

    def join_bits(self, bits):
        shifts = self.torch.arange(bits.shape[-1], dtype=self.torch.uint8, device=bits.device)
        return (bits << shifts).sum(dim=-1, dtype=self.torch.uint8)

    def bytes_to_words(self, stream, bits):
        if bits == 8:
            return stream.contiguous()
        return stream.contiguous().view(getattr(self.torch, self._DT[bits]))

    def as_words(self, storage, bits):
        want = getattr(self.torch, self._DT[bits])
        if storage.dtype == getattr(self.torch, self._SIGNED[bits]):  # the same bits, as older code stored them
            return storage.view(want)
        if storage.dtype != want:
            raise FormatError(f"storage must be torch.{self._DT[bits]}, got {storage.dtype}")
        return storage

    def words_to_bytes(self, words, bits):
        if bits == 8:
            return words.contiguous()
        return words.contiguous().view(self.torch.uint8)


__all__ = ["PackedFormat", "UnpackPlan", "derive_format"]
