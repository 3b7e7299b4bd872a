"""Shape transformations of register layouts: reduce, concat, permute, reshape, flatten, (un)squeeze.

>>> from lowbit.layout import spatial, local
>>> reduce(spatial(3, 4), dims=[0]).owners((2,))      # dimension 0 removed: its workers become replicas
[(2, 0), (6, 0), (10, 0)]
>>> permute(spatial(2, 3), [1, 0]) == spatial(3, 2, ranks=[1, 0])
True
>>> reshape(spatial(2, 3), [6]) == spatial(6)
True
"""
from __future__ import annotations

from typing import Sequence

from ._common import LayoutError, check_dims, normalize_dims, prod
from .canonical import describe
from .register import RegisterLayout


def _text(layout: RegisterLayout) -> str:
    return describe(layout.shape, layout.mode_shape, layout.spatial_modes, layout.local_modes)


def _check(layout: object, what: str) -> RegisterLayout:
    if not isinstance(layout, RegisterLayout):
        raise LayoutError(f"{what}: expected a RegisterLayout, got {type(layout).__name__}")
    return layout


def reduce(layout: RegisterLayout, dims: Sequence[int] | int, keepdims: bool = False) -> RegisterLayout:
    """Reduce over ``dims``: those dimensions disappear (or become 1 with ``keepdims``).

    The workers that told the reduced elements apart become *replicas* (they hold the same result) and the
    local slots that did so are removed.

    >>> from lowbit.layout import local, spatial
    >>> r = reduce(local(2, 1).spatial(2, 4), dims=[0], keepdims=True)
    >>> r.shape, r.spatial_size, r.local_size, r.replication
    ((1, 4), 8, 1, 2)
    """
    layout = _check(layout, "reduce")
    dims = normalize_dims("reduce", dims, layout.rank)
    removed = {m for d in dims for m in layout.grouped_modes[d]}
    keep = [m for m in range(len(layout.mode_shape)) if m not in removed]
    new_id = {m: k for k, m in enumerate(keep)}
    spatial = tuple(m if m < 0 else (-layout.mode_shape[m] if m in removed else new_id[m])
                    for m in layout.spatial_modes)
    local = tuple(new_id[m] for m in layout.local_modes if m not in removed)
    if keepdims:
        shape = tuple(1 if d in dims else s for d, s in enumerate(layout.shape))
    else:
        shape = tuple(s for d, s in enumerate(layout.shape) if d not in dims)
    return RegisterLayout(shape, tuple(layout.mode_shape[m] for m in keep), spatial, local)


def concat(lhs: RegisterLayout, rhs: RegisterLayout) -> RegisterLayout:
    """Concatenate the *dimensions* of two layouts (Tilus ``concat``): shape ``lhs.shape + rhs.shape``.

    Worker ``t`` is ``(t // T_rhs, t % T_rhs)`` in the two operands, local slot likewise.

    >>> from lowbit.layout import local, spatial
    >>> concat(spatial(2), local(3)) == spatial(2, 1) * local(1, 3)
    True
    """
    lhs = _check(lhs, "concat")
    rhs = _check(rhs, "concat")
    n = len(lhs.mode_shape)
    return RegisterLayout(lhs.shape + rhs.shape, lhs.mode_shape + rhs.mode_shape,
                          lhs.spatial_modes + tuple(m + n if m >= 0 else m for m in rhs.spatial_modes),
                          lhs.local_modes + tuple(m + n for m in rhs.local_modes))


def permute(layout: RegisterLayout, dims: Sequence[int]) -> RegisterLayout:
    """Reorder the dimensions: the new dimension ``k`` is the old dimension ``dims[k]``.

    >>> from lowbit.layout import spatial
    >>> permute(spatial(2, 3), [1, 0]).map(1, 0)
    (1, 0)
    """
    layout = _check(layout, "permute")
    dims_t = normalize_dims("permute", dims, layout.rank)
    if len(dims_t) != layout.rank:
        raise LayoutError(f"permute: {list(dims)} is not a permutation of the {layout.rank} dimensions of "
                          f"{_text(layout)}")
    order = [m for d in dims_t for m in layout.grouped_modes[d]]
    new_id = {m: k for k, m in enumerate(order)}
    return RegisterLayout(tuple(layout.shape[d] for d in dims_t), tuple(layout.mode_shape[m] for m in order),
                          tuple(new_id[m] if m >= 0 else m for m in layout.spatial_modes),
                          tuple(new_id[m] for m in layout.local_modes))


def _flat(layout: RegisterLayout) -> RegisterLayout:
    """The same layout seen as 1-D over the row-major flattening (canonical, so modes merge across dims)."""
    return RegisterLayout((layout.size,), layout.mode_shape, layout.spatial_modes, layout.local_modes)


def reshape(layout: RegisterLayout, shape: Sequence[int]) -> RegisterLayout:
    """View the layout with a new ``shape`` of the same size (row-major element order is kept).

    Possible exactly when every new dimension is made of whole (possibly split) modes; otherwise a
    :class:`LayoutError` explains which boundary cuts through a mode.

    >>> from lowbit.layout import local, spatial
    >>> reshape(spatial(4).local(4), [4, 4]) == spatial(4, 1).local(1, 4)
    True
    """
    layout = _check(layout, "reshape")
    shape = check_dims("reshape", shape)
    if prod(shape) != layout.size:
        raise LayoutError(f"reshape: cannot view a layout of shape {list(layout.shape)} ({layout.size} elements) "
                          f"as shape {list(shape)} ({prod(shape)} elements)")
    flat = _flat(layout)
    sizes = flat.mode_shape
    # boundaries between digits, as suffix products (strides), for the modes and for the new dimensions
    mode_bounds = [prod(sizes[k:]) for k in range(len(sizes) + 1)]
    dim_bounds = [prod(shape[k:]) for k in range(len(shape) + 1)]
    bounds = sorted(set(mode_bounds) | set(dim_bounds))
    for lo, hi in zip(bounds, bounds[1:]):
        if hi % lo:
            raise LayoutError(f"reshape: cannot view {_text(layout)} as shape {list(shape)}: a new dimension "
                              f"boundary at stride {lo if lo in dim_bounds else hi} cuts through a mode "
                              f"(strides {lo} and {hi} do not nest)",
                              hint="a reshape may only split or merge whole modes of the layout")
    pieces = [hi // lo for lo, hi in zip(bounds, bounds[1:])][::-1]  # most significant first
    piece_bound = [prod(pieces[k:]) for k in range(len(pieces) + 1)]
    expand: dict[int, list[int]] = {}
    for m in range(len(sizes)):
        hi, lo = mode_bounds[m], mode_bounds[m + 1]
        expand[m] = [k for k in range(len(pieces)) if piece_bound[k] <= hi and piece_bound[k + 1] >= lo]
    spatial = tuple(x for m in flat.spatial_modes for x in (expand[m] if m >= 0 else [m]))
    local = tuple(x for m in flat.local_modes for x in expand[m])
    return RegisterLayout(shape, tuple(pieces), spatial, local)


def flatten(layout: RegisterLayout, start_dim: int = 0, end_dim: int = -1) -> RegisterLayout:
    """Merge dimensions ``start_dim..end_dim`` (inclusive) into one.

    >>> from lowbit.layout import spatial
    >>> flatten(spatial(2, 3, 4), 1).shape
    (2, 12)
    """
    layout = _check(layout, "flatten")
    if layout.rank == 0:
        return reshape(layout, [1])
    start, end = normalize_dims("flatten", [start_dim, end_dim], layout.rank, unique=False)
    if start > end:
        raise LayoutError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = layout.shape[:start] + (prod(layout.shape[start:end + 1]),) + layout.shape[end + 1:]
    return reshape(layout, shape)


def unsqueeze(layout: RegisterLayout, dims: Sequence[int] | int) -> RegisterLayout:
    """Insert unit dimensions at positions ``dims`` of the result."""
    layout = _check(layout, "unsqueeze")
    dims = normalize_dims("unsqueeze", dims, layout.rank + (1 if isinstance(dims, int) else len(dims)))
    shape = list(layout.shape)
    for d in sorted(dims):
        shape.insert(d, 1)
    return RegisterLayout(tuple(shape), layout.mode_shape, layout.spatial_modes, layout.local_modes)


def squeeze(layout: RegisterLayout, dims: Sequence[int] | int) -> RegisterLayout:
    """Remove unit dimensions ``dims``."""
    layout = _check(layout, "squeeze")
    dims = normalize_dims("squeeze", dims, layout.rank)
    for d in dims:
        if layout.shape[d] != 1:
            raise LayoutError(f"squeeze: dimension {d} of shape {list(layout.shape)} has extent "
                              f"{layout.shape[d]}, not 1")
    shape = tuple(s for d, s in enumerate(layout.shape) if d not in dims)
    return RegisterLayout(shape, layout.mode_shape, layout.spatial_modes, layout.local_modes)


__all__ = ["reduce", "concat", "permute", "reshape", "flatten", "squeeze", "unsqueeze"]
