"""Small helpers shared by the layout modules: products, argument checks, error construction.

Everything here is private to :mod:`lowbit.layout`; errors are always :class:`lowbit.errors.LayoutError`.

>>> prod((2, 3, 4))
24
>>> check_dims("local", (2, 3))
(2, 3)
"""
from __future__ import annotations

from typing import Iterable, Sequence

from lowbit.errors import LayoutError


def prod(values: Iterable[int]) -> int:
    """The product of ``values`` (1 for an empty sequence)."""
    result = 1
    for v in values:
        result *= v
    return result


def is_int(value: object) -> bool:
    """True for Python / numpy integers, False for bools and everything else."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        return False
    return isinstance(value, np.integer)


def check_dims(what: str, dims: Sequence[object], *, allow_empty: bool = True) -> tuple[int, ...]:
    """Validate a list of tensor extents: every entry a positive integer.

    ``what`` names the operation in the error message, e.g. ``"spatial"``.
    """
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise LayoutError(f"{what}: expected a sequence of positive integers, got {dims!r}")
    dims = tuple(dims)
    if not allow_empty and len(dims) == 0:
        raise LayoutError(f"{what}: expected at least one dimension, got none")
    for d in dims:
        if not is_int(d):
            raise LayoutError(f"{what}{dims}: every dimension must be an integer, got {d!r} ({type(d).__name__})")
        if int(d) < 1:
            raise LayoutError(f"{what}{dims}: every dimension must be >= 1, got {int(d)}",
                              hint="a layout cannot have zero or negative extents")
    return tuple(int(d) for d in dims)


def check_ranks(what: str, n: int, ranks: Sequence[int] | None) -> tuple[int, ...] | None:
    """Validate an optional rank order: a permutation of ``range(n)``."""
    if ranks is None:
        return None
    ranks = tuple(ranks)
    if len(ranks) != n or sorted(ranks) != list(range(n)) or not all(is_int(r) for r in ranks):
        raise LayoutError(f"{what}: ranks must be a permutation of {list(range(n))}, got {list(ranks)}",
                          hint="ranks[d] is the significance of dimension d (0 = most significant)")
    return tuple(int(r) for r in ranks)


def normalize_dims(what: str, dims: Sequence[int] | int, rank: int, *, unique: bool = True) -> tuple[int, ...]:
    """Turn dimension numbers (negative ones count from the end) into a tuple of non-negative ints."""
    if is_int(dims):
        dims = (int(dims),)  # type: ignore[arg-type]
    dims = tuple(dims)  # type: ignore[arg-type]
    out = []
    for d in dims:
        if not is_int(d):
            raise LayoutError(f"{what}: dimension numbers must be integers, got {d!r}")
        dd = int(d) + rank if int(d) < 0 else int(d)
        if not 0 <= dd < rank:
            raise LayoutError(f"{what}: dimension {int(d)} is out of range for a rank-{rank} layout",
                              hint=f"valid dimensions are {-rank}..{rank - 1}")
        out.append(dd)
    if unique and len(set(out)) != len(out):
        raise LayoutError(f"{what}: dimensions must be distinct, got {list(dims)}")
    return tuple(out)


def suffix_products(sizes: Sequence[int]) -> list[int]:
    """Row-major strides: ``suffix_products([2, 3, 4]) == [12, 4, 1]``."""
    strides = [1] * len(sizes)
    acc = 1
    for k in range(len(sizes) - 1, -1, -1):
        strides[k] = acc
        acc *= sizes[k]
    return strides


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


__all__ = ["prod", "is_int", "check_dims", "check_ranks", "normalize_dims", "suffix_products", "is_power_of_two",
           "LayoutError"]
