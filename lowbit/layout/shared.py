"""Shared-memory layouts: modes with shape:stride, an optional XOR swizzle (CuTe convention).

Each logical dimension is split into modes (most significant first, as for register layouts); mode ``k``
has a size and a stride, and the linear offset of an index is ``base_offset + sum(mode_value * stride)``.
A :class:`Swizzle` is then applied to the linear offset.

>>> layout = shared_row_major(4, 8)
>>> layout.offset((2, 3))
19
>>> sw = swizzled_row_major(8, 64, element_bits=16)      # 128-byte rows of f16, 16-byte chunks
>>> sw.swizzle
Swizzle(base=3, bits=3, shift=3)
>>> [sw.offset((1, 8 * c)) // 8 % 8 for c in range(8)]  # chunk c of row 1 lands in chunk c ^ 1
[1, 0, 3, 2, 5, 4, 7, 6]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._common import LayoutError, check_dims, is_int, is_power_of_two, normalize_dims, prod, suffix_products
from .canonical import group_modes

if TYPE_CHECKING:  # pragma: no cover
    import sympy


@dataclass(frozen=True)
class Swizzle:
    """CuTe's ``Swizzle<B, M, S>`` written ``Swizzle(base=M, bits=B, shift=S)``.

    ``offset -> offset ^ ((offset & yyy) >> shift)`` where ``yyy`` has ``bits`` ones starting at bit
    ``base + max(0, shift)`` (a negative shift moves the bits up instead). The ``base`` lowest bits never
    change, so ``2**base`` consecutive elements stay together (e.g. a 16-byte chunk).

    >>> Swizzle(base=0, bits=2, shift=2)(0b1101)
    14
    """

    base: int
    bits: int
    shift: int

    def __post_init__(self) -> None:
        for name in ("base", "bits", "shift"):
            if not is_int(getattr(self, name)):
                raise LayoutError(f"Swizzle: {name} must be an integer, got {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.base < 0 or self.bits < 0:
            raise LayoutError(f"Swizzle(base={self.base}, bits={self.bits}, shift={self.shift}): base and bits "
                              f"must be >= 0")
        if abs(self.shift) < self.bits:
            raise LayoutError(f"Swizzle(base={self.base}, bits={self.bits}, shift={self.shift}): |shift| must be "
                              f">= bits, or the bits read and the bits written overlap",
                              hint="CuTe requires abs(S) >= B")

    @property
    def y_low(self) -> int:
        """Lowest bit of the field that is read."""
        return self.base + max(0, self.shift)

    @property
    def z_low(self) -> int:
        """Lowest bit of the field that is flipped."""
        return self.base - min(0, self.shift)

    @property
    def period(self) -> int:
        """The swizzle only permutes offsets inside aligned blocks of this many elements."""
        return 1 << (self.base + self.bits + abs(self.shift))

    def __call__(self, offset: Any) -> Any:
        """Apply to an int or an integer numpy array."""
        mask = (1 << self.bits) - 1
        return offset ^ (((offset >> self.y_low) & mask) << self.z_low)

    def expr(self, offset: "sympy.Expr") -> "sympy.Expr":
        """The swizzle of a sympy expression (uses :class:`lowbit.layout.symbolic.BitwiseXor`)."""
        from .symbolic import BitwiseXor, digit
        if self.bits == 0:
            return offset
        return BitwiseXor(offset, digit(offset, 1 << self.y_low, 1 << self.bits, None) * (1 << self.z_low))


def _as_strides(what: str, strides: Sequence[object], n: int) -> tuple[int, ...]:
    strides = tuple(strides)
    if len(strides) != n:
        raise LayoutError(f"{what}: {n} mode(s) but {len(strides)} stride(s)")
    for s in strides:
        if not is_int(s) or int(s) < 0:
            raise LayoutError(f"{what}: strides must be non-negative integers, got {s!r}")
    return tuple(int(s) for s in strides)


@dataclass(frozen=True, repr=False)
class SharedLayout:
    """A shared-memory layout: ``shape``, modes (``mode_shape`` with ``mode_strides``), swizzle, base offset.

    Size-1 modes are dropped and a mode is merged with the next mode of its dimension when the strides
    nest, so equal descriptions compare equal.

    >>> SharedLayout((4, 8), (2, 2, 8), (16, 8, 1))
    SharedLayout(shape=(4, 8), modes=(4,8):(8,1))
    """

    shape: tuple[int, ...]
    mode_shape: tuple[int, ...]
    mode_strides: tuple[int, ...]
    swizzle: Swizzle | None = None
    base_offset: int = 0

    def __post_init__(self) -> None:
        shape = check_dims("SharedLayout shape", self.shape)
        sizes = check_dims("SharedLayout mode_shape", self.mode_shape)
        strides = _as_strides("SharedLayout", self.mode_strides, len(sizes))
        if prod(sizes) != prod(shape):
            raise LayoutError(f"SharedLayout: modes {list(sizes)} hold {prod(sizes)} elements, shape {list(shape)} "
                              f"holds {prod(shape)}")
        keep = [k for k, s in enumerate(sizes) if s > 1]
        sizes, strides = tuple(sizes[k] for k in keep), tuple(strides[k] for k in keep)
        groups = group_modes(shape, sizes)
        new_sizes: list[int] = []
        new_strides: list[int] = []
        for group in groups:
            start = len(new_sizes)
            for m in group:
                if len(new_sizes) > start and new_strides[-1] == strides[m] * sizes[m]:
                    new_sizes[-1] *= sizes[m]
                    new_strides[-1] = strides[m]
                else:
                    new_sizes.append(sizes[m])
                    new_strides.append(strides[m])
        swizzle = self.swizzle
        if swizzle is not None and not isinstance(swizzle, Swizzle):
            raise LayoutError(f"SharedLayout: swizzle must be a Swizzle or None, got {swizzle!r}")
        if swizzle is not None and swizzle.bits == 0:
            swizzle = None
        if not is_int(self.base_offset) or int(self.base_offset) < 0:
            raise LayoutError(f"SharedLayout: base_offset must be a non-negative integer, got {self.base_offset!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "mode_shape", tuple(new_sizes))
        object.__setattr__(self, "mode_strides", tuple(new_strides))
        object.__setattr__(self, "swizzle", swizzle)
        object.__setattr__(self, "base_offset", int(self.base_offset))

    def __repr__(self) -> str:
        modes = "(" + ",".join(map(str, self.mode_shape)) + "):(" + ",".join(map(str, self.mode_strides)) + ")"
        text = f"SharedLayout(shape={self.shape}, modes={modes}"
        if self.swizzle is not None:
            text += f", swizzle={self.swizzle!r}"
        if self.base_offset:
            text += f", base_offset={self.base_offset}"
        return text + ")"

    # ------------------------------------------------------------------ queries
    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of logical elements."""
        return prod(self.shape)

    @cached_property
    def grouped_modes(self) -> tuple[tuple[int, ...], ...]:
        return group_modes(self.shape, self.mode_shape)

    def _mode_values(self, index: Sequence[Any]) -> list[Any]:
        values: list[Any] = [0] * len(self.mode_shape)
        for d, group in enumerate(self.grouped_modes):
            x = index[d]
            for m in reversed(group):
                values[m] = x % self.mode_shape[m]
                x = x // self.mode_shape[m]
        return values

    def offset(self, index: Sequence[int]) -> int:
        """Memory offset (in elements) of the element at ``index``.

        >>> shared_column_major(4, 8).offset((1, 2))
        9
        """
        if is_int(index):
            index = (index,)  # type: ignore[assignment]
        index = tuple(index)
        if len(index) != self.rank or not all(is_int(i) and 0 <= int(i) < n for i, n in zip(index, self.shape)):
            raise LayoutError(f"index {list(index)} is out of bounds for a shared layout of shape {list(self.shape)}")
        linear = self.base_offset + sum(v * s for v, s in zip(self._mode_values([int(i) for i in index]),
                                                               self.mode_strides))
        return int(self.swizzle(linear)) if self.swizzle is not None else int(linear)

    @cached_property
    def _offset_table(self) -> np.ndarray:
        grids = np.indices(self.shape, dtype=np.int64) if self.rank else []
        values = self._mode_values(grids)
        table = np.full(self.shape, self.base_offset, dtype=np.int64)
        for v, s in zip(values, self.mode_strides):
            table = table + v * s
        if self.swizzle is not None:
            table = self.swizzle(table)
        table.setflags(write=False)
        return table

    def offset_table(self) -> np.ndarray:
        """Offsets of every element, an int64 array of ``shape`` (read-only, cached)."""
        return self._offset_table

    @property
    def cosize(self) -> int:
        """Number of memory slots spanned: the largest offset + 1."""
        return int(self._offset_table.max()) + 1 if self.size else 0

    def is_injective(self) -> bool:
        """True when no two elements share a memory slot."""
        return int(np.unique(self._offset_table).size) == self.size

    def offset_expr(self, indices: "Sequence[sympy.Expr] | None" = None) -> "sympy.Expr":
        """The offset as a sympy expression of the index symbols (``i0, i1, ...`` by default)."""
        import sympy

        from .symbolic import digit, index_symbols
        idx = index_symbols(self.rank) if indices is None else tuple(sympy.sympify(i) for i in indices)
        if len(idx) != self.rank:
            raise LayoutError(f"expected {self.rank} index expression(s), got {len(idx)}")
        terms = [sympy.Integer(self.base_offset)]
        for d, group in enumerate(self.grouped_modes):
            sizes = [self.mode_shape[m] for m in group]
            for m, stride in zip(group, suffix_products(sizes)):
                terms.append(digit(idx[d], stride, self.mode_shape[m], self.shape[d]) * self.mode_strides[m])
        linear = sympy.Add(*terms)
        return self.swizzle.expr(linear) if self.swizzle is not None else linear

    # ------------------------------------------------------------------ operations
    def swizzled(self, swizzle: Swizzle) -> "SharedLayout":
        """The same layout with ``swizzle`` applied to its offsets."""
        if self.swizzle is not None:
            raise LayoutError(f"{self!r} is already swizzled; chained swizzles are not supported")
        return SharedLayout(self.shape, self.mode_shape, self.mode_strides, swizzle, self.base_offset)

    def permute(self, dims: Sequence[int]) -> "SharedLayout":
        """Reorder dimensions: new dimension ``k`` is old dimension ``dims[k]``."""
        dims_t = normalize_dims("SharedLayout.permute", dims, self.rank)
        if len(dims_t) != self.rank:
            raise LayoutError(f"SharedLayout.permute: {list(dims)} is not a permutation of {self.rank} dimensions")
        order = [m for d in dims_t for m in self.grouped_modes[d]]
        return SharedLayout(tuple(self.shape[d] for d in dims_t), tuple(self.mode_shape[m] for m in order),
                            tuple(self.mode_strides[m] for m in order), self.swizzle, self.base_offset)

    def __getitem__(self, key: Any) -> "SharedLayout":
        """A sub-tile: integers fix (and drop) a dimension, ``start:stop`` slices keep it.

        >>> shared_row_major(4, 8)[1:3, 4:]
        SharedLayout(shape=(2, 4), modes=(2,4):(8,1), base_offset=12)
        """
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > self.rank:
            raise LayoutError(f"too many indices ({len(key)}) for a shared layout of rank {self.rank}")
        key = key + (slice(None),) * (self.rank - len(key))
        base = self.base_offset
        shape: list[int] = []
        sizes: list[int] = []
        strides: list[int] = []
        for d, (k, group) in enumerate(zip(key, self.grouped_modes)):
            extent = self.shape[d]
            msizes = [self.mode_shape[m] for m in group]
            mstrides = [self.mode_strides[m] for m in group]
            if is_int(k):
                i = int(k) + extent if int(k) < 0 else int(k)
                if not 0 <= i < extent:
                    raise LayoutError(f"index {int(k)} is out of bounds for dimension {d} of extent {extent}")
                base += _linear(i, msizes, mstrides)
                continue
            if not isinstance(k, slice):
                raise LayoutError(f"shared layouts are sliced with integers and start:stop slices, got {k!r}")
            start, stop, step = k.indices(extent)
            if step != 1 or stop <= start:
                raise LayoutError(f"dimension {d}: slice {k} must be a non-empty slice with step 1")
            n = stop - start
            base += _linear(start, msizes, mstrides)
            sub_sizes, sub_strides = _slice_modes(d, start, n, msizes, mstrides)
            shape.append(n)
            sizes += sub_sizes
            strides += sub_strides
        return SharedLayout(tuple(shape), tuple(sizes), tuple(strides), self.swizzle, base)

    def __mul__(self, other: object) -> "SharedLayout":
        """Tile product: ``C(i) = A(i // shape_B) * B.cosize + B(i % shape_B)`` per dimension.

        >>> (shared_row_major(2, 1) * shared_column_major(2, 2)).offset((3, 1))
        7
        """
        if not isinstance(other, SharedLayout):
            return NotImplemented
        return shared_product(self, other)

    def visualize(self) -> str:
        """The grid of offsets as text."""
        from .visualize import shared_text
        return shared_text(self)


def _linear(i: int, sizes: Sequence[int], strides: Sequence[int]) -> int:
    total = 0
    for size, stride in zip(reversed(sizes), reversed(strides)):
        i, digit = divmod(i, size)
        total += digit * stride
    return total


def _slice_modes(d: int, start: int, n: int, sizes: list[int], strides: list[int]) -> tuple[list[int], list[int]]:
    """Modes describing indices ``start .. start+n-1`` of one dimension, relative to ``start``'s offset."""
    lower = 1
    j = len(sizes)  # modes j.. are ranged completely
    while j > 0 and n % (lower * sizes[j - 1]) == 0:
        lower *= sizes[j - 1]
        j -= 1
    if start % lower:
        raise LayoutError(f"dimension {d}: a slice of {n} starting at {start} is not aligned to the layout's "
                          f"modes {sizes}", hint=f"start at a multiple of {lower}")
    count = n // lower
    if count == 1:
        return sizes[j:], strides[j:]
    digit = (start // lower) % sizes[j - 1]
    if digit + count > sizes[j - 1]:
        raise LayoutError(f"dimension {d}: a slice of {n} starting at {start} crosses a mode boundary of the "
                          f"layout's modes {sizes}")
    return [count] + sizes[j:], [strides[j - 1]] + strides[j:]


def shared_product(a: SharedLayout, b: SharedLayout) -> SharedLayout:
    """``a * b``: ``b`` is the tile, ``a`` arranges copies of it (see :meth:`SharedLayout.__mul__`)."""
    rank = max(a.rank, b.rank)
    a_shape = (1,) * (rank - a.rank) + a.shape
    b_shape = (1,) * (rank - b.rank) + b.shape
    a_groups = ((),) * (rank - a.rank) + a.grouped_modes
    b_groups = ((),) * (rank - b.rank) + b.grouped_modes
    span = b.cosize
    sizes: list[int] = []
    strides: list[int] = []
    for ag, bg in zip(a_groups, b_groups):
        sizes += [a.mode_shape[m] for m in ag] + [b.mode_shape[m] for m in bg]
        strides += [a.mode_strides[m] * span for m in ag] + [b.mode_strides[m] for m in bg]
    shape = tuple(x * y for x, y in zip(a_shape, b_shape))
    base = a.base_offset * span + b.base_offset
    swizzle = None
    if a.swizzle is not None and b.swizzle is not None:
        raise LayoutError(f"cannot multiply two swizzled shared layouts {a!r} and {b!r}")
    if b.swizzle is not None:
        if span % b.swizzle.period:
            raise LayoutError(f"shared product {a!r} * {b!r}: the tile spans {span} slots, not a multiple of its "
                              f"swizzle period {b.swizzle.period}")
        swizzle = b.swizzle
    if a.swizzle is not None:
        if not is_power_of_two(span):
            raise LayoutError(f"shared product {a!r} * {b!r}: the outer layout is swizzled, so the tile must span "
                              f"a power-of-two number of slots, not {span}")
        k = span.bit_length() - 1
        swizzle = Swizzle(a.swizzle.base + k, a.swizzle.bits, a.swizzle.shift)
    return SharedLayout(shape, tuple(sizes), tuple(strides), swizzle, base)


# ------------------------------------------------------------------------------------------- constructors
def shared_layout(shape: Sequence[int], mode_shape: Sequence[int] | None = None,
                  mode_strides: Sequence[int] | None = None, swizzle: Swizzle | None = None) -> SharedLayout:
    """A shared layout from modes and strides (``mode_shape`` defaults to ``shape``: one mode per dimension)."""
    shape = tuple(shape)
    mode_shape = shape if mode_shape is None else tuple(mode_shape)
    if mode_strides is None:
        mode_strides = suffix_products(mode_shape)
    return SharedLayout(shape, mode_shape, tuple(mode_strides), swizzle)


def shared_strided(shape: Sequence[int], strides: Sequence[int]) -> SharedLayout:
    """One mode per dimension with the given strides."""
    shape = check_dims("shared_strided", shape)
    return SharedLayout(shape, shape, _as_strides("shared_strided", strides, len(shape)))


def shared_row_major(*shape: int) -> SharedLayout:
    """Row-major (C-order) shared layout."""
    shape = check_dims("shared_row_major", shape)
    return SharedLayout(shape, shape, tuple(suffix_products(shape)))


def shared_column_major(*shape: int) -> SharedLayout:
    """Column-major (Fortran-order) shared layout."""
    shape = check_dims("shared_column_major", shape)
    return SharedLayout(shape, shape, tuple(reversed(suffix_products(tuple(reversed(shape))))))


def swizzled_row_major(rows: int, row_length: int, element_bits: int) -> SharedLayout:
    """A ``rows x row_length`` row-major tile whose 16-byte chunks are XOR-swizzled against bank conflicts.

    Eight consecutive rows read at the same chunk column hit eight different 16-byte bank groups (what
    ``ldmatrix`` and ``cp.async`` of 16 bytes need). Chunk bits are XORed with row bits: with ``C`` chunks per
    row the swizzle is ``Swizzle(base=log2(128 / element_bits), bits=min(3, log2 C), shift=max(3, log2 C))``.

    >>> swizzled_row_major(8, 32, element_bits=16).swizzle      # 64-byte rows: two rows per 128 bytes
    Swizzle(base=3, bits=2, shift=3)
    """
    rows, row_length = check_dims("swizzled_row_major", (rows, row_length))
    if not is_int(element_bits) or int(element_bits) < 1 or 128 % int(element_bits):
        raise LayoutError(f"swizzled_row_major: element_bits must divide 128 (a 16-byte chunk), got {element_bits!r}",
                          hint="store 3/5/6/7-bit data packed in bytes or 32-bit words and swizzle those")
    per_chunk = 128 // int(element_bits)
    if row_length % per_chunk or not is_power_of_two(row_length // per_chunk):
        raise LayoutError(f"swizzled_row_major: a row of {row_length} x {element_bits}-bit elements must be a "
                          f"power-of-two number of 16-byte chunks ({per_chunk} elements each)")
    chunks = row_length // per_chunk
    log_c = chunks.bit_length() - 1
    swizzle = Swizzle(base=per_chunk.bit_length() - 1, bits=min(3, log_c), shift=max(3, log_c))
    return SharedLayout((rows, row_length), (rows, row_length), (row_length, 1), swizzle)


__all__ = ["Swizzle", "SharedLayout", "shared_layout", "shared_strided", "shared_row_major", "shared_column_major",
           "swizzled_row_major", "shared_product"]
