"""Register layouts: which worker holds which element of a tile, in which local slot (Tilus semantics).

A :class:`RegisterLayout` relates pairs ``(worker, local)`` -- ``worker`` in ``[0, spatial_size)``, ``local`` in
``[0, local_size)`` -- to logical indices of a tensor of ``shape``. The map ``(worker, local) -> index`` is a
function (every slot of every worker holds exactly one element) and onto (every element has an owner);
several workers hold the same element when the layout has *replication* (after :func:`reduce`).

Layouts are built with :func:`~lowbit.layout.local`, :func:`~lowbit.layout.spatial` and the product ``a * b``;
instances are frozen, hashable and always in canonical form, so ``a == b`` exactly when both have the same
mapping.

>>> from lowbit.layout import spatial
>>> layout = spatial(2, 4).local(2, 1)
>>> layout.shape, layout.spatial_size, layout.local_size
((4, 4), 8, 2)
>>> layout.map(5, 1)          # worker 5, local slot 1
(3, 1)
>>> layout.owners((3, 1))
[(5, 1)]
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ._common import LayoutError, is_int, prod, suffix_products
from .canonical import canonicalize, describe, group_modes

if TYPE_CHECKING:  # pragma: no cover
    import sympy


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class RegisterLayout:
    """A register layout in canonical form (see :mod:`lowbit.layout.canonical` for the fields).

    Construct it with the helpers (``local``, ``spatial``, products) or directly from the raw fields, which
    are validated and canonicalised:

    >>> RegisterLayout(shape=(6,), mode_shape=(2, 3), spatial_modes=(0, 1), local_modes=())
    RegisterLayout(shape=(6,), mode_shape=(6,), spatial_modes=(0,), local_modes=())
    """

    shape: tuple[int, ...]
    mode_shape: tuple[int, ...]
    spatial_modes: tuple[int, ...]
    local_modes: tuple[int, ...]

    def __post_init__(self) -> None:
        canon = canonicalize(self.shape, self.mode_shape, self.spatial_modes, self.local_modes)
        for name, value in zip(("shape", "mode_shape", "spatial_modes", "local_modes"), canon):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ structure
    @property
    def rank(self) -> int:
        """Number of logical dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of logical elements (``prod(shape)``)."""
        return prod(self.shape)

    @cached_property
    def grouped_modes(self) -> tuple[tuple[int, ...], ...]:
        """For each dimension, the modes that split it (most significant first)."""
        return group_modes(self.shape, self.mode_shape)

    @cached_property
    def spatial_shape(self) -> tuple[int, ...]:
        """Extent of each spatial entry (a mode's size, or a replication's size)."""
        return tuple(self.mode_shape[m] if m >= 0 else -m for m in self.spatial_modes)

    @cached_property
    def local_shape(self) -> tuple[int, ...]:
        """Extent of each local entry."""
        return tuple(self.mode_shape[m] for m in self.local_modes)

    @property
    def spatial_size(self) -> int:
        """Number of workers the layout spreads over."""
        return prod(self.spatial_shape)

    @property
    def local_size(self) -> int:
        """Number of local slots per worker."""
        return prod(self.local_shape)

    @property
    def replication(self) -> int:
        """How many workers hold each element (1 when nothing is replicated)."""
        return prod(-m for m in self.spatial_modes if m < 0)

    @cached_property
    def _mode_dim_stride(self) -> tuple[tuple[int, int], ...]:
        """For each mode: (its dimension, its stride inside that dimension)."""
        out: list[tuple[int, int]] = [(0, 0)] * len(self.mode_shape)
        for d, group in enumerate(self.grouped_modes):
            strides = suffix_products([self.mode_shape[m] for m in group])
            for m, s in zip(group, strides):
                out[m] = (d, s)
        return tuple(out)

    # ------------------------------------------------------------------ scalar maps
    def map(self, worker: int, local: int) -> tuple[int, ...]:
        """The logical index held by ``worker`` in local slot ``local``.

        >>> from lowbit.layout import local, spatial
        >>> local(3, 4).spatial(2, 3).map(4, 5)
        (3, 4)
        """
        worker = self._check_scalar("worker", worker, self.spatial_size)
        local = self._check_scalar("local", local, self.local_size)
        values = [0] * len(self.mode_shape)
        for entries, extents, x in ((self.spatial_modes, self.spatial_shape, worker),
                                    (self.local_modes, self.local_shape, local)):
            for m, extent in zip(reversed(entries), reversed(extents)):
                x, digit = divmod(x, extent)
                if m >= 0:
                    values[m] = digit
        index = [0] * self.rank
        for m, v in enumerate(values):
            d, stride = self._mode_dim_stride[m]
            index[d] += v * stride
        return tuple(index)

    def owners(self, index: Sequence[int]) -> list[tuple[int, int]]:
        """Every ``(worker, local)`` pair holding the element at ``index``, sorted by worker.

        >>> from lowbit.layout import reduce, spatial
        >>> reduce(spatial(3, 4), dims=[0]).owners((1,))
        [(1, 0), (5, 0), (9, 0)]
        """
        index = self._check_index(index)
        values = [0] * len(self.mode_shape)
        for d, group in enumerate(self.grouped_modes):
            x = index[d]
            for m in reversed(group):
                x, values[m] = divmod(x, self.mode_shape[m])
        local = 0
        for m in self.local_modes:
            local = local * self.mode_shape[m] + values[m]
        choices = [range(-m) if m < 0 else (values[m],) for m in self.spatial_modes]
        result = []
        for digits in itertools.product(*choices):
            worker = 0
            for digit, extent in zip(digits, self.spatial_shape):
                worker = worker * extent + digit
            result.append((worker, local))
        return sorted(result)

    # ------------------------------------------------------------------ numpy tables
    def _digit_values(self, worker: np.ndarray, local: np.ndarray) -> list[np.ndarray]:
        values: list[Any] = [0] * len(self.mode_shape)
        for entries, extents, x in ((self.spatial_modes, self.spatial_shape, worker),
                                    (self.local_modes, self.local_shape, local)):
            strides = suffix_products(extents)
            for m, extent, stride in zip(entries, extents, strides):
                if m >= 0:
                    values[m] = (x // stride) % extent
        return values

    @cached_property
    def _index_table(self) -> np.ndarray:
        worker = np.arange(self.spatial_size, dtype=np.int64)[:, None]
        local = np.arange(self.local_size, dtype=np.int64)[None, :]
        values = self._digit_values(worker, local)
        table = np.zeros((self.spatial_size, self.local_size, self.rank), dtype=np.int64)
        for m, v in enumerate(values):
            d, stride = self._mode_dim_stride[m]
            table[:, :, d] += v * stride
        return _readonly(table)

    def index_table(self) -> np.ndarray:
        """``table[w, l]`` is the logical index (length ``rank``) that worker ``w`` holds in slot ``l``.

        Shape ``[spatial_size, local_size, rank]``, int64, read-only (computed once and cached).

        >>> from lowbit.layout import spatial
        >>> spatial(2, 4).local(2, 1).index_table()[5].tolist()     # what worker 5 holds, in local order
        [[2, 1], [3, 1]]
        """
        return self._index_table

    def worker_indices(self, worker: int) -> np.ndarray:
        """The logical indices worker ``worker`` holds, in local-slot order: ``[local_size, rank]``."""
        worker = self._check_scalar("worker", worker, self.spatial_size)
        return self._index_table[worker]

    @cached_property
    def _flat_index_table(self) -> np.ndarray:
        strides = np.asarray(suffix_products(self.shape), dtype=np.int64)
        return _readonly(self._index_table @ strides if self.rank else
                         np.zeros((self.spatial_size, self.local_size), dtype=np.int64))

    def flat_index_table(self) -> np.ndarray:
        """``[spatial_size, local_size]`` table of row-major flat element numbers (read-only)."""
        return self._flat_index_table

    @cached_property
    def _inverse_tables(self) -> tuple[np.ndarray, np.ndarray]:
        grids = np.indices(self.shape, dtype=np.int64) if self.rank else np.zeros((0,), dtype=np.int64)
        values: list[Any] = [0] * len(self.mode_shape)
        for d, group in enumerate(self.grouped_modes):
            for m in group:
                _, stride = self._mode_dim_stride[m]
                values[m] = (grids[d] // stride) % self.mode_shape[m]
        local = np.zeros(self.shape, dtype=np.int64)
        for m in self.local_modes:
            local = local * self.mode_shape[m] + values[m]
        workers = np.zeros(self.shape + (1,), dtype=np.int64)
        for m, extent in zip(self.spatial_modes, self.spatial_shape):
            if m >= 0:
                workers = workers * extent + np.asarray(values[m])[..., None]
            else:
                workers = (workers[..., :, None] * extent + np.arange(extent, dtype=np.int64))
                workers = workers.reshape(self.shape + (-1,))
        return _readonly(local), _readonly(workers)

    def local_table(self) -> np.ndarray:
        """An array of ``shape``: the local slot holding each element (the same for all its replicas)."""
        return self._inverse_tables[0]

    def worker_table(self) -> np.ndarray:
        """An array ``[*shape, replication]``: the workers holding each element, ascending."""
        return self._inverse_tables[1]

    # ------------------------------------------------------------------ symbolic maps
    def map_exprs(self, worker: "sympy.Expr | None" = None,
                  local: "sympy.Expr | None" = None) -> tuple["sympy.Expr", ...]:
        """The logical index as sympy expressions of the worker and local symbols (``w``, ``l`` by default).

        >>> from lowbit.layout import spatial
        >>> spatial(2, 4).local(2, 1).map_exprs()
        (l + 2*floor(w/4), Mod(w, 4))
        """
        from .symbolic import register_map_exprs
        return register_map_exprs(self, worker, local)

    def local_expr(self, indices: "Sequence[sympy.Expr] | None" = None) -> "sympy.Expr":
        """The local slot as a sympy expression of the index symbols (``i0``, ``i1``, ... by default)."""
        from .symbolic import register_local_expr
        return register_local_expr(self, indices)

    def worker_expr(self, indices: "Sequence[sympy.Expr] | None" = None,
                    replica: "sympy.Expr | int" = 0) -> "sympy.Expr":
        """The worker holding an element, as a sympy expression of the index symbols.

        With replication, ``replica`` in ``[0, replication)`` chooses among the owners (0 = the lowest worker).
        """
        from .symbolic import register_worker_expr
        return register_worker_expr(self, indices, replica)

    # ------------------------------------------------------------------ algebra (see algebra.py, transforms.py)
    def __mul__(self, other: object) -> "RegisterLayout":
        if not isinstance(other, RegisterLayout):
            return NotImplemented
        from .algebra import product
        return product(self, other)

    def __truediv__(self, other: object) -> "RegisterLayout":
        if not isinstance(other, RegisterLayout):
            return NotImplemented
        from .algebra import divide
        return divide(self, other)

    def local(self, *dims: int, ranks: Sequence[int] | None = None) -> "RegisterLayout":
        """``self * local(*dims)``: every element of ``self`` becomes a block of ``dims`` in the same worker."""
        from .constructors import local
        return self * local(*dims, ranks=ranks)

    def spatial(self, *dims: int, ranks: Sequence[int] | None = None) -> "RegisterLayout":
        """``self * spatial(*dims)``: every worker of ``self`` becomes a group of ``prod(dims)`` workers."""
        from .constructors import spatial
        return self * spatial(*dims, ranks=ranks)

    def column_local(self, *dims: int) -> "RegisterLayout":
        """``self * column_local(*dims)``."""
        from .constructors import column_local
        return self * column_local(*dims)

    def column_spatial(self, *dims: int) -> "RegisterLayout":
        """``self * column_spatial(*dims)``."""
        from .constructors import column_spatial
        return self * column_spatial(*dims)

    def reduce(self, dims: Sequence[int] | int, keepdims: bool = False) -> "RegisterLayout":
        """See :func:`lowbit.layout.reduce`."""
        from .transforms import reduce
        return reduce(self, dims, keepdims=keepdims)

    def permute(self, dims: Sequence[int]) -> "RegisterLayout":
        """See :func:`lowbit.layout.permute`."""
        from .transforms import permute
        return permute(self, dims)

    def reshape(self, *shape: int | Sequence[int]) -> "RegisterLayout":
        """See :func:`lowbit.layout.reshape`; accepts ``reshape(2, 8)`` or ``reshape((2, 8))``."""
        from .transforms import reshape
        if len(shape) == 1 and not is_int(shape[0]):
            return reshape(self, shape[0])  # type: ignore[arg-type]
        return reshape(self, shape)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ pictures
    def visualize(self) -> str:
        """The ``worker:local`` grid as text (see :func:`lowbit.layout.visualize.register_text`)."""
        from .visualize import register_text
        return register_text(self)

    def save_png(self, path: str) -> None:
        """Draw the grid with matplotlib (Agg): one colour per worker, ``worker:local`` labels."""
        from .visualize import register_png
        register_png(self, path)

    # ------------------------------------------------------------------ helpers
    def describe(self) -> str:
        """A short human description: shape, workers, locals, replication."""
        text = f"RegisterLayout{list(self.shape)}: {self.spatial_size} worker(s) x {self.local_size} local(s)"
        if self.replication > 1:
            text += f", each element held by {self.replication} workers"
        return text

    def _check_scalar(self, name: str, value: int, bound: int) -> int:
        if not is_int(value):
            raise LayoutError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        if not 0 <= int(value) < bound:
            raise LayoutError(f"{name} {int(value)} is out of range [0, {bound}) for layout "
                              f"{describe(self.shape, self.mode_shape, self.spatial_modes, self.local_modes)}")
        return int(value)

    def _check_index(self, index: Sequence[int]) -> tuple[int, ...]:
        if is_int(index):
            index = (index,)  # type: ignore[assignment]
        index = tuple(index)
        if len(index) != self.rank:
            raise LayoutError(f"index {list(index)} has {len(index)} coordinate(s) but the layout has rank "
                              f"{self.rank} (shape {list(self.shape)})")
        for i, (x, extent) in enumerate(zip(index, self.shape)):
            if not is_int(x) or not 0 <= int(x) < extent:
                raise LayoutError(f"index {list(index)} is out of bounds for shape {list(self.shape)} "
                                  f"(coordinate {i} must be in [0, {extent}))")
        return tuple(int(x) for x in index)


def register_layout(shape: Sequence[int], mode_shape: Sequence[int], spatial_modes: Sequence[int],
                    local_modes: Sequence[int]) -> RegisterLayout:
    """Build a layout from the raw Tilus-style description (validated, canonicalised).

    >>> register_layout([4], [2, 2], spatial_modes=[-2, 0], local_modes=[1]).owners((1,))
    [(0, 1), (2, 1)]
    """
    return RegisterLayout(shape, mode_shape, spatial_modes, local_modes)  # type: ignore[arg-type]


__all__ = ["RegisterLayout", "register_layout"]
