"""How the TVM code generator reads a tile value: a buffer, a scalar variable, or a lazy expression.

Every IR value becomes a :class:`Tile`. A tile can be *read* at an index (a list of TVMScript index
expressions, one per axis) and gives the text of the element. Materialized tiles read a buffer; lazy
tiles (fused elementwise chains, broadcasts, reshapes, inlined loads) compute the element on the spot, so
a chain of elementwise instructions becomes one loop nest.

Lazy loads carry *guards*: scalar conditions under which every element they read is inside the tensor.
A loop nest whose guards hold takes a fast path (plain loads, vectorizable); otherwise a checked path.

>>> t = BufferTile("acc", (4, 8), "float32")
>>> t.read(["i", "j"], fast=True)
'acc[i, j]'
>>> remap(t, (8, 4), lambda idx: [idx[1], idx[0]]).read(["a", "b"], fast=True)      # a transpose
'acc[b, a]'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["Tile", "BufferTile", "ScalarTile", "ExprTile", "SharedView", "remap", "elementwise",
           "flat_index", "unflatten", "reshape_map"]

Index = Sequence[str]


@dataclass(frozen=True)
class Tile:
    """Base: ``shape`` (ints), ``dtype`` (native IR dtype name)."""

    shape: tuple[int, ...]
    dtype: str

    #: scalar conditions (text) under which the fast read is in bounds
    guards: tuple[str, ...] = field(default=(), kw_only=True)
    #: buffers this tile reads (materialized storage), for liveness and hazard checks
    buffers: frozenset[str] = field(default=frozenset(), kw_only=True)
    #: the subset of ``buffers`` read only at this tile's own index (elementwise), e.g. ``acc * alpha``
    identity: frozenset[str] = field(default=frozenset(), kw_only=True)
    #: reads mutable memory (global tensors, shared buffers)
    memory: bool = field(default=False, kw_only=True)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        out = 1
        for s in self.shape:
            out *= s
        return out

    def read(self, idx: Index, fast: bool) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class BufferTile(Tile):
    """A materialized tile in buffer ``name`` (rank 0: a 1-element buffer)."""

    name: str = field(default="", kw_only=True)

    def __init__(self, name: str, shape: Sequence[int], dtype: str, *, memory: bool = False):
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "guards", ())
        object.__setattr__(self, "buffers", frozenset([name]))
        object.__setattr__(self, "identity", frozenset([name]))
        object.__setattr__(self, "memory", memory)
        object.__setattr__(self, "name", name)

    def read(self, idx: Index, fast: bool) -> str:
        return f"{self.name}[{', '.join(idx) if idx else '0'}]"

    def write(self, idx: Index) -> str:
        return f"{self.name}[{', '.join(idx) if idx else '0'}]"


@dataclass(frozen=True)
class ScalarTile(Tile):
    """A rank-0 value held in a TIR variable or written as a literal."""

    expr: str = field(default="", kw_only=True)

    def __init__(self, expr: str, dtype: str):
        object.__setattr__(self, "shape", ())
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "guards", ())
        object.__setattr__(self, "buffers", frozenset())
        object.__setattr__(self, "identity", frozenset())
        object.__setattr__(self, "memory", False)
        object.__setattr__(self, "expr", expr)

    def read(self, idx: Index, fast: bool) -> str:
        return self.expr


@dataclass(frozen=True)
class ExprTile(Tile):
    """A lazy tile: ``fn(idx, fast)`` gives the element's expression."""

    fn: Callable[[Index, bool], str] = field(default=None, kw_only=True)  # type: ignore[assignment]

    def read(self, idx: Index, fast: bool) -> str:
        return self.fn(idx, fast)


@dataclass(frozen=True)
class SharedView(Tile):
    """A shared-memory tile: buffer ``name`` of ``base_shape`` seen at ``offsets`` (``shared_slice``).

    The view's axes are the trailing ``rank`` axes of the base; the leading base axes are fixed at their
    offsets. ``SharedView(name, base, shape)`` without offsets is the whole buffer.
    """

    name: str = field(default="", kw_only=True)
    base_shape: tuple[int, ...] = field(default=(), kw_only=True)
    offsets: tuple[str, ...] = field(default=(), kw_only=True)

    def _index(self, idx: Index) -> list[str]:
        lead = len(self.base_shape) - len(self.shape)
        offs = list(self.offsets) or ["0"] * len(self.base_shape)
        out = list(offs[:lead])
        for o, i in zip(offs[lead:], idx):
            out.append(i if o == "0" else f"{o} + {i}")
        return out

    def read(self, idx: Index, fast: bool) -> str:
        return f"{self.name}[{', '.join(self._index(idx)) or '0'}]"

    def write(self, idx: Index) -> str:
        return self.read(idx, True)


def shared_view(name: str, base_shape: Sequence[int], shape: Sequence[int], dtype: str,
                offsets: Sequence[str] = ()) -> SharedView:
    """A :class:`SharedView` (reads count as memory reads of ``name``)."""
    return SharedView(tuple(shape), dtype, buffers=frozenset([name]), memory=True, name=name,
                      base_shape=tuple(base_shape), offsets=tuple(offsets))


def remap(tile: Tile, shape: Sequence[int], index_map: Callable[[list[str]], list[str]], *,
          identity: bool = False) -> ExprTile:
    """``tile`` read through an index map: result element ``idx`` is ``tile[index_map(idx)]``.

    ``identity``: the map is the identity (same shape, same element), so elementwise facts survive.
    """
    return ExprTile(tuple(shape), tile.dtype, guards=tile.guards, buffers=tile.buffers,
                    identity=tile.identity if identity else frozenset(), memory=tile.memory,
                    fn=lambda idx, fast: tile.read(index_map(list(idx)), fast))


def elementwise(shape: Sequence[int], dtype: str, operands: Sequence[Tile],
                combine: Callable[[list[str]], str]) -> ExprTile:
    """A lazy elementwise tile: ``combine([operand element texts])`` (operands already of ``shape``)."""
    ops = tuple(operands)
    guards: list[str] = []
    for t in ops:
        for g in t.guards:
            if g not in guards:
                guards.append(g)
    buffers = frozenset().union(*(t.buffers for t in ops)) if ops else frozenset()
    # a buffer is read elementwise only if every operand reading it reads it elementwise
    identity = frozenset(b for b in buffers if all(b in t.identity or b not in t.buffers for t in ops))
    return ExprTile(tuple(shape), dtype, guards=tuple(guards), buffers=buffers, identity=identity,
                    memory=any(t.memory for t in ops),
                    fn=lambda idx, fast: combine([t.read(idx, fast) for t in ops]))


# ----------------------------------------------------------------------------------------------------
# index arithmetic helpers (text)
# ----------------------------------------------------------------------------------------------------

def _paren(x: str) -> str:
    return x if x.replace("_", "").isalnum() else f"({x})"


def flat_index(idx: Sequence[str], shape: Sequence[int]) -> str:
    """Row-major linear index of ``idx`` in ``shape`` (text)."""
    terms: list[str] = []
    stride = 1
    for i, s in reversed(list(zip(idx, shape))):
        if s != 1:
            terms.append(_paren(i) if stride == 1 else f"{_paren(i)} * {stride}")
        stride *= s
    return " + ".join(reversed(terms)) if terms else "0"


def unflatten(flat: str, shape: Sequence[int]) -> list[str]:
    """The row-major index of linear position ``flat`` in ``shape`` (text)."""
    out: list[str] = []
    stride = 1
    strides = []
    for s in reversed(shape):
        strides.append(stride)
        stride *= s
    strides.reverse()
    total = stride
    f = _paren(flat)
    for d, (s, st) in enumerate(zip(shape, strides)):
        if s == 1:
            out.append("0")
            continue
        q = f if st == 1 else f"T.floordiv({f}, {st})"
        out.append(q if st * s >= total else f"T.floormod({q}, {s})")
    return out


def _strides(shape: Sequence[int]) -> list[int]:
    out, st = [], 1
    for s in reversed(shape):
        out.append(st)
        st *= s
    return list(reversed(out))


def _digit_map(src: Sequence[int], dst: Sequence[int]) -> Callable[[list[str]], list[str]] | None:
    """``reshape`` as digit moves when both shapes refine one chain of strides (the usual split / merge of
    axes): each destination axis is cut into *atoms* (``(i // a) % b``, no division for whole axes) and each
    source axis is a multiply-add of its atoms. No large linear indices, so TVM's simplifier sees
    ``i // 64`` rather than ``(i0 * 8192 + i1 * 512 + ...) // 512``. None when the strides do not nest."""
    total = 1
    for s in src:
        total *= s
    cuts = sorted(set(_strides(src)) | set(_strides(dst)) | {total})
    if any(b % a for a, b in zip(cuts, cuts[1:])):
        return None
    atoms = list(zip(cuts, cuts[1:]))                    # (stride, next stride): extent = next // stride

    def fn(idx: list[str]) -> list[str]:
        digits: dict[int, str] = {}
        for i, size, st in zip(idx, dst, _strides(dst)):
            for a, b in atoms:
                if st <= a < st * size:
                    q = i if a == st else f"T.floordiv({_paren(i)}, {a // st})"
                    digits[a] = q if b >= st * size else f"T.floormod({q}, {b // a})"
        out = []
        for size, st in zip(src, _strides(src)):
            terms = []
            for a, b in atoms:
                if st <= a < st * size and b - a > 0 and (b // a) > 1:
                    d = digits[a]
                    terms.append(d if a == st else f"{_paren(d)} * {a // st}")
            out.append(" + ".join(reversed(terms)) if terms else "0")
        return out

    return fn


def reshape_map(src_shape: Sequence[int], dst_shape: Sequence[int]) -> Callable[[list[str]], list[str]]:
    """Index map of ``reshape``: a destination index -> the source index of the same element.

    Equal leading and trailing axes map one to one; the middle group moves digits (:func:`_digit_map`)
    when the two shapes nest, else goes through a linear index.

    >>> reshape_map((32, 512), (2, 16, 128, 4))(["a", "b", "c", "d"])
    ['a * 16 + b', 'c * 4 + d']
    >>> reshape_map((4, 8), (32,))(["i"])
    ['T.floordiv(i, 8)', 'T.floormod(i, 8)']
    """
    src, dst = list(src_shape), list(dst_shape)
    lead = 0
    while lead < min(len(src), len(dst)) and src[lead] == dst[lead]:
        lead += 1
    trail = 0
    while (trail < min(len(src), len(dst)) - lead and src[len(src) - 1 - trail] == dst[len(dst) - 1 - trail]):
        trail += 1
    mid_src = src[lead:len(src) - trail]
    mid_dst = dst[lead:len(dst) - trail]
    digit = _digit_map(mid_src, mid_dst) if mid_src and mid_dst else None

    def fn(idx: list[str]) -> list[str]:
        head = idx[:lead]
        tail = idx[len(idx) - trail:] if trail else []
        mid = idx[lead:len(idx) - trail]
        if not mid_src:
            middle: list[str] = []
        elif not mid_dst:
            middle = ["0"] * len(mid_src)
        elif digit is not None:
            middle = digit(mid)
        else:
            middle = unflatten(flat_index(mid, mid_dst), mid_src)
        return head + middle + tail

    return fn
