"""Validation and canonical form of the raw register-layout description.

A register layout is described (as in Tilus) by four tuples:

* ``shape``: the logical tensor extents;
* ``mode_shape``: every dimension split into *modes* (sub-dimensions), listed dimension by dimension, the most
  significant mode of a dimension first, so that dimension ``d``'s index is the row-major serialisation of its
  modes' values;
* ``spatial_modes``: the modes that are spread over workers, most significant first. A negative entry ``-r``
  is a *replication* of size ``r``: ``r`` groups of workers that hold the same elements;
* ``local_modes``: the modes that are spread over each worker's local slots, most significant first.

Every mode is used exactly once, either spatially or locally, so every element has at least one owner.

The canonical form drops size-1 modes and replications, merges adjacent replications, and merges a mode
with the next mode of the same dimension when both sit next to each other (in that order) in the same
list. Two layouts have the same mapping exactly when their canonical forms are equal.

>>> canonicalize((4, 4), (2, 2, 4), (0, 2), (1,))
((4, 4), (2, 2, 4), (0, 2), (1,))
>>> canonicalize((6,), (2, 3), (0, 1), ())       # spatial(2) * spatial(3) == spatial(6)
((6,), (6,), (0,), ())
"""
from __future__ import annotations

from typing import Sequence

from ._common import LayoutError, is_int, prod

Raw = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def describe(shape: Sequence[int], mode_shape: Sequence[int], spatial_modes: Sequence[int],
             local_modes: Sequence[int]) -> str:
    """A one-line description used in error messages."""
    return (f"(shape={list(shape)}, mode_shape={list(mode_shape)}, spatial_modes={list(spatial_modes)}, "
            f"local_modes={list(local_modes)})")


def group_modes(shape: Sequence[int], mode_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Assign the modes (all of size > 1) to the dimensions they split.

    >>> group_modes((4, 6), (2, 2, 6))
    ((0, 1), (2,))
    """
    groups: list[tuple[int, ...]] = []
    m = 0
    for extent in shape:
        members = []
        remaining = extent
        while remaining > 1:
            if m >= len(mode_shape) or remaining % mode_shape[m] != 0:
                raise LayoutError(f"modes {list(mode_shape)} do not split the shape {list(shape)}",
                                  hint="each dimension must be the product of consecutive modes")
            remaining //= mode_shape[m]
            members.append(m)
            m += 1
        groups.append(tuple(members))
    if m != len(mode_shape):
        raise LayoutError(f"modes {list(mode_shape)} do not split the shape {list(shape)}: "
                          f"{len(mode_shape) - m} mode(s) left over")
    return tuple(groups)


def _as_int_tuple(name: str, values: Sequence[object]) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise LayoutError(f"register layout: {name} must be a sequence of integers, got {values!r}")
    values = tuple(values)
    for v in values:
        if not is_int(v):
            raise LayoutError(f"register layout: {name} must contain integers, got {v!r}")
    return tuple(int(v) for v in values)


def validate(shape: Sequence[int], mode_shape: Sequence[int], spatial_modes: Sequence[int],
             local_modes: Sequence[int]) -> Raw:
    """Check a raw description and return it as int tuples (size-1 modes still present).

    Raises :class:`LayoutError` naming the offending part.
    """
    shape = _as_int_tuple("shape", shape)
    mode_shape = _as_int_tuple("mode_shape", mode_shape)
    spatial_modes = _as_int_tuple("spatial_modes", spatial_modes)
    local_modes = _as_int_tuple("local_modes", local_modes)
    text = describe(shape, mode_shape, spatial_modes, local_modes)
    if any(s < 1 for s in shape):
        raise LayoutError(f"register layout {text}: every extent must be >= 1")
    if any(s < 1 for s in mode_shape):
        raise LayoutError(f"register layout {text}: every mode must have size >= 1")
    if prod(mode_shape) != prod(shape):
        raise LayoutError(f"register layout {text}: the modes hold {prod(mode_shape)} elements but the shape "
                          f"holds {prod(shape)}")
    used: list[int] = []
    for m in spatial_modes:
        if m >= len(mode_shape):
            raise LayoutError(f"register layout {text}: spatial mode {m} does not exist")
        if m >= 0:
            used.append(m)
    for m in local_modes:
        if not 0 <= m < len(mode_shape):
            raise LayoutError(f"register layout {text}: local mode {m} does not exist")
        used.append(m)
    if len(set(used)) != len(used):
        raise LayoutError(f"register layout {text}: a mode is used more than once")
    if sorted(used) != list(range(len(mode_shape))):
        missing = sorted(set(range(len(mode_shape))) - set(used))
        raise LayoutError(f"register layout {text}: mode(s) {missing} are neither spatial nor local",
                          hint="every mode must be distributed, or some elements would have no owner")
    return shape, mode_shape, spatial_modes, local_modes


def _drop_unit_modes(raw: Raw) -> Raw:
    shape, mode_shape, spatial_modes, local_modes = raw
    keep = [m for m, size in enumerate(mode_shape) if size > 1]
    new_id = {m: k for k, m in enumerate(keep)}
    spatial = tuple(new_id[m] if m >= 0 else m for m in spatial_modes if (m < -1) or (m >= 0 and m in new_id))
    local = tuple(new_id[m] for m in local_modes if m in new_id)
    return shape, tuple(mode_shape[m] for m in keep), spatial, local


def _merge_replications(spatial_modes: tuple[int, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for m in spatial_modes:
        if m < 0 and out and out[-1] < 0:
            out[-1] = -((-out[-1]) * (-m))
        else:
            out.append(m)
    return tuple(out)


def _merge_modes(raw: Raw) -> Raw:
    shape, mode_shape, spatial_modes, local_modes = raw
    groups = group_modes(shape, mode_shape)
    kind: dict[int, tuple[str, int]] = {}
    for pos, m in enumerate(spatial_modes):
        if m >= 0:
            kind[m] = ("s", pos)
    for pos, m in enumerate(local_modes):
        kind[m] = ("l", pos)

    runs: list[list[int]] = []
    for group in groups:
        for k, m in enumerate(group):
            if k > 0:
                prev = group[k - 1]
                if kind[prev][0] == kind[m][0] and kind[prev][1] + 1 == kind[m][1]:
                    runs[-1].append(m)
                    continue
            runs.append([m])
    if len(runs) == len(mode_shape):
        return raw
    head_id: dict[int, int] = {}
    for k, run in enumerate(runs):
        head_id[run[0]] = k
    new_shape = tuple(prod(mode_shape[m] for m in run) for run in runs)
    spatial = tuple(m if m < 0 else head_id[m] for m in spatial_modes if m < 0 or m in head_id)
    local = tuple(head_id[m] for m in local_modes if m in head_id)
    return shape, new_shape, spatial, local


def canonicalize(shape: Sequence[int], mode_shape: Sequence[int], spatial_modes: Sequence[int],
                 local_modes: Sequence[int]) -> Raw:
    """Validate a raw description and return its canonical form (idempotent)."""
    raw = validate(shape, mode_shape, spatial_modes, local_modes)
    raw = _drop_unit_modes(raw)
    raw = (raw[0], raw[1], _merge_replications(raw[2]), raw[3])
    return _merge_modes(raw)


__all__ = ["Raw", "canonicalize", "validate", "group_modes", "describe"]
