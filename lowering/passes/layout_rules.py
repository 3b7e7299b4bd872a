"""Layout transfer functions: how a register layout flows through one instruction.

Each function takes the layout on one side of an instruction and returns the layout the other side must
have, or ``None`` when the layout algebra has no answer (the caller then leaves that side to other
anchors, or converts). Used by layout inference and by the low-bit lowering (which annotates the values
it creates with the same rules, so re-running inference agrees with it).

>>> from lowbit.layout import local, spatial
>>> broadcast_operand(spatial(4, 8).local(2, 1), (8, 8), (1, 8)) == spatial(4, 8).reduce([0], keepdims=True)
True
>>> view_layout(spatial(4).local(8), 4, 32)            # 8 nibbles per worker -> 1 word per worker
RegisterLayout(shape=(4,), mode_shape=(4,), spatial_modes=(0,), local_modes=())
"""
from __future__ import annotations

from typing import Sequence

from lowbit.errors import LayoutError
from lowbit.layout import RegisterLayout
from lowbit.layout import transforms as T


def _try(fn, *args, **kw) -> RegisterLayout | None:
    try:
        return fn(*args, **kw)
    except LayoutError:
        return None


def replicate(count: int, rank: int) -> RegisterLayout:
    """A layout of ``rank`` unit dims held by ``count`` replica workers (a factor for products).

    >>> (replicate(2, 1) * RegisterLayout((4,), (4,), (0,), ())).owners((1,))
    [(1, 0), (5, 0)]
    """
    return RegisterLayout((1,) * rank, (), (-count,) if count > 1 else (), ())


def broadcast_operand(result: RegisterLayout, result_shape: Sequence[int],
                      operand_shape: Sequence[int]) -> RegisterLayout | None:
    """The layout of ``x`` in ``broadcast(x) -> result``: the broadcast dims become replication."""
    lead = len(result_shape) - len(operand_shape)
    if lead < 0:
        return None
    padded = (1,) * lead + tuple(operand_shape)
    dims = [d for d, (x, r) in enumerate(zip(padded, result_shape)) if x == 1 and r != 1] + list(range(lead))
    dims = sorted(set(dims))
    out = _try(T.reduce, result, dims, keepdims=True) if dims else result
    if out is None:
        return None
    if lead:
        out = _try(T.squeeze, out, list(range(lead)))
    return out


def reduce_result(operand: RegisterLayout, axis: int, keepdims: bool) -> RegisterLayout | None:
    """The layout of ``reduce(x, axis)``: the reduced dim's workers become replicas."""
    return _try(T.reduce, operand, [axis], keepdims=keepdims)


def expand_result(operand: RegisterLayout, axis: int) -> RegisterLayout | None:
    return _try(T.unsqueeze, operand, [axis])


def expand_operand(result: RegisterLayout, axis: int) -> RegisterLayout | None:
    return _try(T.squeeze, result, [axis])


def permute_result(operand: RegisterLayout, perm: Sequence[int]) -> RegisterLayout | None:
    return _try(T.permute, operand, list(perm))


def permute_operand(result: RegisterLayout, perm: Sequence[int]) -> RegisterLayout | None:
    inverse = [0] * len(perm)
    for k, p in enumerate(perm):
        inverse[p] = k
    return _try(T.permute, result, inverse)


def reshape_layout(layout: RegisterLayout, shape: Sequence[int]) -> RegisterLayout | None:
    """``layout`` seen with another shape (row-major order kept), if whole modes allow it."""
    if tuple(shape) == layout.shape:
        return layout
    if len(shape) == 0:
        return layout if layout.size == 1 else None
    return _try(T.reshape, layout, list(shape))


def view_layout(layout: RegisterLayout, src_bits: int, dst_bits: int) -> RegisterLayout | None:
    """The layout of ``view(x)`` (rows reinterpreted from ``src_bits`` to ``dst_bits`` elements) such
    that every worker keeps exactly its bits, or ``None`` when no such layout exists.

    The innermost mode of the last dim must be local (a worker's elements along the row are
    consecutive); its size scales by ``src_bits / dst_bits``. When it is spatial (or the last dim is 1)
    and the view narrows, each element splits into a new innermost local mode.
    """
    if src_bits == dst_bits:
        return layout
    if layout.rank == 0:
        return None
    groups = layout.grouped_modes
    last = groups[-1]
    shape = list(layout.shape)
    if (shape[-1] * src_bits) % dst_bits:
        return None
    shape[-1] = shape[-1] * src_bits // dst_bits
    mode_shape = list(layout.mode_shape)
    if last and last[-1] in layout.local_modes:
        m = last[-1]
        bits = mode_shape[m] * src_bits
        if bits % dst_bits:
            return None
        mode_shape[m] = bits // dst_bits
        if mode_shape[m] == 0:
            return None
        return _try(RegisterLayout, tuple(shape), tuple(mode_shape), layout.spatial_modes, layout.local_modes)
    if src_bits % dst_bits:
        return None  # widening across workers is impossible
    k = src_bits // dst_bits
    new = len(mode_shape)
    mode_shape.append(k)
    return _try(RegisterLayout, tuple(shape), tuple(mode_shape), layout.spatial_modes,
                layout.local_modes + (new,))


__all__ = ["replicate", "broadcast_operand", "reduce_result", "expand_result", "expand_operand", "permute_result",
           "permute_operand", "reshape_layout", "view_layout"]
