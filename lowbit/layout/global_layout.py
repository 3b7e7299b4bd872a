"""Global-memory layouts: strided views ``offset = base_offset + sum(index[d] * strides[d])``.

Extents, strides and the base offset may be integers or sympy expressions (a kernel's ``M``, ``K``), so the
same object gives numeric offsets for concrete tensors and symbolic ones for code generation.

>>> g = global_row_major(4, 6)
>>> g.strides, g.offset((2, 3))
((6, 1), 15)
>>> import sympy
>>> M, K = sympy.symbols("M K", integer=True, positive=True)
>>> global_row_major(M, K).offset_expr()
K*i0 + i1
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._common import LayoutError, is_int, normalize_dims, prod

if TYPE_CHECKING:  # pragma: no cover
    import sympy


def _check_value(what: str, value: Any, *, positive: bool) -> Any:
    if is_int(value):
        value = int(value)
        if positive and value < 1:
            raise LayoutError(f"{what} must be >= 1, got {value}", hint="a tensor cannot have zero or negative extents")
        return value
    try:
        import sympy
    except ImportError:  # pragma: no cover
        sympy = None
    if sympy is not None and isinstance(value, sympy.Basic):
        if value.is_Integer:
            return _check_value(what, int(value), positive=positive)
        if value.is_integer is False:
            raise LayoutError(f"{what} must be an integer expression, got {value}")
        return value
    raise LayoutError(f"{what} must be an integer or a sympy expression, got {value!r} ({type(value).__name__})")


@dataclass(frozen=True, repr=False)
class GlobalLayout:
    """A strided view of global memory (extents, strides and base offset: ints or sympy expressions).

    >>> GlobalLayout((2, 3), (1, 2)).offset((1, 2))
    5
    """

    shape: tuple[Any, ...]
    strides: tuple[Any, ...]
    base_offset: Any = 0

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        strides = tuple(self.strides)
        if len(shape) != len(strides):
            raise LayoutError(f"GlobalLayout: shape {list(shape)} has {len(shape)} dimension(s) but {len(strides)} "
                              f"stride(s) were given")
        object.__setattr__(self, "shape", tuple(_check_value(f"GlobalLayout extent {d}", s, positive=True)
                                                for d, s in enumerate(shape)))
        object.__setattr__(self, "strides", tuple(_check_value(f"GlobalLayout stride {d}", s, positive=False)
                                                  for d, s in enumerate(strides)))
        object.__setattr__(self, "base_offset", _check_value("GlobalLayout base_offset", self.base_offset,
                                                             positive=False))

    def __repr__(self) -> str:
        text = f"GlobalLayout(shape={self.shape}, strides={self.strides}"
        return text + (f", base_offset={self.base_offset})" if self.base_offset != 0 else ")")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> Any:
        """Number of elements (an int, or a sympy expression for symbolic extents)."""
        return prod(self.shape)

    @property
    def is_concrete(self) -> bool:
        """True when extents, strides and base offset are all plain integers."""
        return all(isinstance(v, int) for v in (*self.shape, *self.strides, self.base_offset))

    def offset(self, index: Sequence[Any]) -> Any:
        """Offset of ``index`` (an int when everything is concrete, else a sympy expression)."""
        if is_int(index):
            index = (index,)  # type: ignore[assignment]
        index = tuple(index)
        if len(index) != self.rank:
            raise LayoutError(f"index {list(index)} has {len(index)} coordinate(s), the layout has rank {self.rank}")
        for d, (i, n) in enumerate(zip(index, self.shape)):
            if is_int(i) and (int(i) < 0 or (isinstance(n, int) and int(i) >= n)):
                raise LayoutError(f"index {list(index)} is out of bounds for shape {list(self.shape)} "
                                  f"(coordinate {d})")
        total = self.base_offset
        for i, s in zip(index, self.strides):
            total = total + (int(i) if is_int(i) else i) * s
        return total

    def offset_expr(self, indices: "Sequence[sympy.Expr] | None" = None) -> "sympy.Expr":
        """The offset as a sympy expression of index symbols (``i0, i1, ...`` by default)."""
        import sympy

        from .symbolic import index_symbols
        idx = index_symbols(self.rank) if indices is None else tuple(sympy.sympify(i) for i in indices)
        if len(idx) != self.rank:
            raise LayoutError(f"expected {self.rank} index expression(s), got {len(idx)}")
        return sympy.Add(sympy.sympify(self.base_offset), *[i * s for i, s in zip(idx, self.strides)])

    def offset_table(self) -> np.ndarray:
        """All offsets as an int64 array of ``shape`` (concrete layouts only)."""
        if not self.is_concrete:
            raise LayoutError(f"{self!r} has symbolic extents or strides; substitute them first",
                              hint="use .subs({M: 128, ...})")
        grids = np.indices(self.shape, dtype=np.int64)
        table = np.full(self.shape, self.base_offset, dtype=np.int64)
        for g, s in zip(grids, self.strides):
            table = table + g * s
        return table

    def subs(self, values: dict[Any, Any]) -> "GlobalLayout":
        """Substitute symbols (``{M: 128}``) in extents, strides and base offset."""
        def sub(v: Any) -> Any:
            return v.subs(values) if hasattr(v, "subs") else v
        return GlobalLayout(tuple(sub(s) for s in self.shape), tuple(sub(s) for s in self.strides),
                            sub(self.base_offset))

    def permute(self, dims: Sequence[int]) -> "GlobalLayout":
        """Reorder dimensions: new dimension ``k`` is old dimension ``dims[k]``."""
        dims_t = normalize_dims("GlobalLayout.permute", dims, self.rank)
        if len(dims_t) != self.rank:
            raise LayoutError(f"GlobalLayout.permute: {list(dims)} is not a permutation of {self.rank} dimensions")
        return GlobalLayout(tuple(self.shape[d] for d in dims_t), tuple(self.strides[d] for d in dims_t),
                            self.base_offset)

    def __getitem__(self, key: Any) -> "GlobalLayout":
        """A view: integers drop a dimension, ``start:stop:step`` slices keep it (concrete extents).

        >>> global_row_major(4, 6)[1:3, ::2]
        GlobalLayout(shape=(2, 3), strides=(6, 2), base_offset=6)
        """
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > self.rank:
            raise LayoutError(f"too many indices ({len(key)}) for a global layout of rank {self.rank}")
        key = key + (slice(None),) * (self.rank - len(key))
        base = self.base_offset
        shape, strides = [], []
        for d, (k, n, s) in enumerate(zip(key, self.shape, self.strides)):
            if is_int(k):
                i = int(k)
                if isinstance(n, int):
                    i = i + n if i < 0 else i
                    if not 0 <= i < n:
                        raise LayoutError(f"index {int(k)} is out of bounds for dimension {d} of extent {n}")
                base = base + i * s
            elif isinstance(k, slice):
                if k == slice(None):
                    shape.append(n)
                    strides.append(s)
                    continue
                if not isinstance(n, int):
                    raise LayoutError(f"dimension {d} has symbolic extent {n}; only ':' and integers can index it")
                start, stop, step = k.indices(n)
                count = len(range(start, stop, step))
                if count == 0:
                    raise LayoutError(f"dimension {d}: slice {k} selects no element")
                base = base + start * s
                shape.append(count)
                strides.append(s * step)
            else:
                raise LayoutError(f"global layouts are indexed with integers and slices, got {k!r}")
        return GlobalLayout(tuple(shape), tuple(strides), base)


def global_strided(shape: Sequence[Any], strides: Sequence[Any], base_offset: Any = 0) -> GlobalLayout:
    """A view with arbitrary strides (in elements)."""
    return GlobalLayout(tuple(shape), tuple(strides), base_offset)


def _suffix(shape: Sequence[Any]) -> list[Any]:
    strides: list[Any] = [1] * len(shape)
    acc: Any = 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = acc
        acc = acc * shape[d]
    return strides


def global_row_major(*shape: Any) -> GlobalLayout:
    """Row-major (C-order) view: the last dimension is contiguous."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(_check_value(f"global_row_major extent {d}", s, positive=True) for d, s in enumerate(shape))
    return GlobalLayout(shape, tuple(_suffix(shape)))


def global_column_major(*shape: Any) -> GlobalLayout:
    """Column-major (Fortran-order) view: the first dimension is contiguous."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(_check_value(f"global_column_major extent {d}", s, positive=True) for d, s in enumerate(shape))
    return GlobalLayout(shape, tuple(reversed(_suffix(tuple(reversed(shape))))))


__all__ = ["GlobalLayout", "global_strided", "global_row_major", "global_column_major"]
