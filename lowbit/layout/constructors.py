"""Primitive register layouts: ``local``, ``spatial`` and their column-major variants.

* ``local(*dims)``: one worker holds the whole tile, local slot = row-major position.
* ``spatial(*dims)``: one element per worker, worker = row-major position.
* ``column_local`` / ``column_spatial``: the same in column-major order.
* ``ranks``: a general order; ``ranks[d]`` is the significance of dimension ``d`` (0 = most significant).

>>> spatial(2, 3).map(4, 0)
(1, 1)
>>> column_spatial(2, 3).map(4, 0)       # worker = j * 2 + i
(0, 2)
>>> local(2, 3, ranks=[1, 0]) == column_local(2, 3)
True
"""
from __future__ import annotations

from math import gcd
from typing import Sequence

from ._common import LayoutError, check_dims, check_ranks, is_int, prod
from .register import RegisterLayout


def _ordered_modes(what: str, dims: tuple[int, ...], ranks: Sequence[int] | None) -> tuple[int, ...]:
    order = check_ranks(what, len(dims), ranks)
    if order is None:
        return tuple(range(len(dims)))
    return tuple(order.index(r) for r in range(len(dims)))


def _flatten_dims(dims: tuple) -> tuple:
    if len(dims) == 1 and not is_int(dims[0]) and hasattr(dims[0], "__iter__"):
        return tuple(dims[0])
    return dims


def local(*dims: int, ranks: Sequence[int] | None = None) -> RegisterLayout:
    """A layout where a single worker holds all ``prod(dims)`` elements (row-major slots by default).

    >>> local(2, 3).map(0, 4)
    (1, 1)
    """
    dims = check_dims("local", _flatten_dims(dims))
    modes = _ordered_modes(f"local{dims}", dims, ranks)
    return RegisterLayout(dims, dims, (), modes)


def spatial(*dims: int, ranks: Sequence[int] | None = None) -> RegisterLayout:
    """A layout where each of ``prod(dims)`` workers holds one element (row-major workers by default).

    >>> spatial(2, 3).map(5, 0)
    (1, 2)
    """
    dims = check_dims("spatial", _flatten_dims(dims))
    modes = _ordered_modes(f"spatial{dims}", dims, ranks)
    return RegisterLayout(dims, dims, modes, ())


def column_local(*dims: int) -> RegisterLayout:
    """``local`` with column-major slots: for rank 2, ``local(i, j) = j * dims[0] + i``."""
    dims = check_dims("column_local", _flatten_dims(dims))
    return local(*dims, ranks=tuple(reversed(range(len(dims)))))


def column_spatial(*dims: int) -> RegisterLayout:
    """``spatial`` with column-major workers: for rank 2, ``worker(i, j) = j * dims[0] + i``."""
    dims = check_dims("column_spatial", _flatten_dims(dims))
    return spatial(*dims, ranks=tuple(reversed(range(len(dims)))))


def auto_local_spatial(num_workers: int, shape: Sequence[int]) -> RegisterLayout:
    """A ``local(...).spatial(...)`` layout of ``shape`` over ``num_workers`` workers (as Tilus builds it).

    Workers are given to the last dimension first (greatest common divisors); workers left over once the
    tile is covered hold replicas.

    >>> auto_local_spatial(8, [4, 4]) == local(2, 1).spatial(2, 4)
    True
    >>> auto_local_spatial(8, [2]).replication
    4
    """
    shape = check_dims("auto_local_spatial", shape)
    if not is_int(num_workers) or int(num_workers) < 1:
        raise LayoutError(f"auto_local_spatial: num_workers must be a positive integer, got {num_workers!r}")
    num_workers = int(num_workers)
    size = prod(shape)
    if size % num_workers != 0 and num_workers % size != 0:
        raise LayoutError(f"auto_local_spatial: {num_workers} workers cannot share a tile of shape {list(shape)} "
                          f"({size} elements) evenly",
                          hint="one of the worker count and the element count must divide the other")
    remaining = list(shape)
    spatial_dims = [1] * len(shape)
    left = num_workers
    for d in reversed(range(len(shape))):
        spatial_dims[d] = gcd(left, remaining[d])
        left //= spatial_dims[d]
        remaining[d] //= spatial_dims[d]
    layout = local(*remaining).spatial(*spatial_dims)
    if left > 1:
        layout = RegisterLayout(layout.shape, layout.mode_shape, (-left,) + layout.spatial_modes, layout.local_modes)
    return layout


__all__ = ["local", "spatial", "column_local", "column_spatial", "auto_local_spatial"]
