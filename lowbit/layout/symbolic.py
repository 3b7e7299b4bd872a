"""Layout maps as sympy expressions, for the passes that generate index arithmetic.

Expressions use ``floor`` and ``Mod`` on non-negative integer symbols and are built in simplified form:
no ``floor`` for a stride of 1, no ``Mod`` for the most significant digit (its range already bounds it).
Swizzles need a bitwise XOR, which sympy lacks as arithmetic; :class:`BitwiseXor` is a sympy function that
evaluates on integers and that code generators print as ``^``.

>>> from lowbit.layout import spatial
>>> spatial(2, 4).local(2, 1).map_exprs()
(l + 2*floor(w/4), Mod(w, 4))
>>> spatial(2, 4).local(2, 1).worker_expr()
i1 + 4*floor(i0/2)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import sympy

from ._common import LayoutError, suffix_products

if TYPE_CHECKING:  # pragma: no cover
    from .register import RegisterLayout


def index_symbol(name: str) -> sympy.Symbol:
    """A non-negative integer symbol (what every layout expression is written in)."""
    return sympy.Symbol(name, integer=True, nonnegative=True)


def index_symbols(rank: int, prefix: str = "i") -> tuple[sympy.Symbol, ...]:
    """``(i0, i1, ...)`` as non-negative integer symbols."""
    return tuple(index_symbol(f"{prefix}{d}") for d in range(rank))


class BitwiseXor(sympy.Function):
    """``a ^ b`` on non-negative integers, kept symbolic until both arguments are numbers.

    >>> BitwiseXor(6, 3)
    5
    """

    nargs = 2
    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, a: Any, b: Any) -> Any:
        if isinstance(a, sympy.Integer) and isinstance(b, sympy.Integer):
            return sympy.Integer(int(a) ^ int(b))
        if b == 0:
            return a
        if a == 0:
            return b
        return None


def digit(x: sympy.Expr, stride: int, extent: int, bound: int | None) -> sympy.Expr:
    """``(x // stride) % extent``, simplified when ``x < bound`` makes a part redundant."""
    if extent == 1:
        return sympy.Integer(0)
    q = x if stride == 1 else sympy.floor(x / stride)
    if bound is not None and bound <= stride * extent:
        return q
    return sympy.Mod(q, extent)


def _as_expr(value: Any, name: str) -> sympy.Expr:
    if value is None:
        return index_symbol(name)
    return sympy.sympify(value)


def _index_args(layout: "RegisterLayout", indices: Sequence[Any] | None) -> tuple[sympy.Expr, ...]:
    if indices is None:
        return index_symbols(layout.rank)
    indices = tuple(sympy.sympify(i) for i in indices)
    if len(indices) != layout.rank:
        raise LayoutError(f"expected {layout.rank} index expression(s) for a layout of shape "
                          f"{list(layout.shape)}, got {len(indices)}")
    return indices


def register_map_exprs(layout: "RegisterLayout", worker: Any = None,
                       local: Any = None) -> tuple[sympy.Expr, ...]:
    """The logical index as expressions of ``worker`` and ``local`` (symbols ``w``, ``l`` by default)."""
    w = _as_expr(worker, "w")
    l_ = _as_expr(local, "l")
    values: list[sympy.Expr] = [sympy.Integer(0)] * len(layout.mode_shape)
    for entries, extents, x, bound in ((layout.spatial_modes, layout.spatial_shape, w, layout.spatial_size),
                                       (layout.local_modes, layout.local_shape, l_, layout.local_size)):
        for m, extent, stride in zip(entries, extents, suffix_products(extents)):
            if m >= 0:
                values[m] = digit(x, stride, extent, bound)
    index = []
    for group in layout.grouped_modes:
        strides = suffix_products([layout.mode_shape[m] for m in group])
        index.append(sympy.Add(*[values[m] * s for m, s in zip(group, strides)]))
    return tuple(index)


def _mode_values(layout: "RegisterLayout", idx: tuple[sympy.Expr, ...]) -> list[sympy.Expr]:
    values: list[sympy.Expr] = [sympy.Integer(0)] * len(layout.mode_shape)
    for d, group in enumerate(layout.grouped_modes):
        sizes = [layout.mode_shape[m] for m in group]
        for m, extent, stride in zip(group, sizes, suffix_products(sizes)):
            values[m] = digit(idx[d], stride, extent, layout.shape[d])
    return values


def register_local_expr(layout: "RegisterLayout", indices: Sequence[Any] | None = None) -> sympy.Expr:
    """The local slot holding the element at ``indices`` (symbols ``i0, i1, ...`` by default)."""
    values = _mode_values(layout, _index_args(layout, indices))
    strides = suffix_products(layout.local_shape)
    return sympy.Add(*[values[m] * s for m, s in zip(layout.local_modes, strides)])


def register_worker_expr(layout: "RegisterLayout", indices: Sequence[Any] | None = None,
                         replica: Any = 0) -> sympy.Expr:
    """The worker holding the element at ``indices``; ``replica`` in ``[0, replication)`` picks the replica."""
    values = _mode_values(layout, _index_args(layout, indices))
    r = sympy.sympify(replica)
    rep_extents = [-m for m in layout.spatial_modes if m < 0]
    rep_digits = [digit(r, s, e, layout.replication) for e, s in zip(rep_extents, suffix_products(rep_extents))]
    terms = []
    k = 0
    for m, stride in zip(layout.spatial_modes, suffix_products(layout.spatial_shape)):
        if m >= 0:
            terms.append(values[m] * stride)
        else:
            terms.append(rep_digits[k] * stride)
            k += 1
    return sympy.Add(*terms)


def evaluate(expr: Any, values: dict[Any, Any]) -> Any:
    """Evaluate a layout expression exactly, in integer numpy arithmetic (no floating point).

    ``values`` maps symbols to ints or integer arrays (broadcast together). Supports what layout maps are
    made of: integers, rationals, symbols, ``+``, ``*``, ``floor``, ``Mod`` and :class:`BitwiseXor`.

    >>> import numpy as np
    >>> w = index_symbol("w")
    >>> evaluate(sympy.floor(w / 3) + sympy.Mod(w, 3) * 10, {w: np.arange(6)}).tolist()
    [0, 10, 20, 1, 11, 21]
    """
    import numpy as np

    def ev(e: Any) -> tuple[Any, int]:  # (numerator, positive denominator)
        if e.is_Integer:
            return int(e), 1
        if e.is_Rational:
            return int(e.p), int(e.q)
        if e.is_Symbol:
            if e not in values:
                raise LayoutError(f"no value given for symbol {e} in {expr}")
            return np.asarray(values[e], dtype=np.int64), 1
        if e.is_Add:
            parts = [ev(a) for a in e.args]
            den = 1
            for _, q in parts:
                den = den * q // sympy.igcd(den, q)
            return sum(p * (den // q) for p, q in parts), den
        if e.is_Mul:
            num: Any = 1
            den = 1
            for a in e.args:
                p, q = ev(a)
                num, den = num * p, den * q
            return num, den
        if isinstance(e, sympy.floor):
            p, q = ev(e.args[0])
            return p // q, 1
        if isinstance(e, sympy.Mod):
            (pa, qa), (pb, qb) = ev(e.args[0]), ev(e.args[1])
            if qa != 1 or qb != 1:
                raise LayoutError(f"Mod of a non-integer in {expr}")
            return pa % pb, 1
        if isinstance(e, BitwiseXor):
            (pa, qa), (pb, qb) = ev(e.args[0]), ev(e.args[1])
            if qa != 1 or qb != 1:
                raise LayoutError(f"BitwiseXor of a non-integer in {expr}")
            return np.bitwise_xor(pa, pb), 1
        raise LayoutError(f"cannot evaluate {e} (a {type(e).__name__}) in the layout expression {expr}")

    num, den = ev(sympy.sympify(expr))
    if den != 1:
        if np.any(np.asarray(num) % den):
            raise LayoutError(f"{expr} does not evaluate to integers")
        num = num // den
    return np.asarray(num, dtype=np.int64)


__all__ = ["index_symbol", "index_symbols", "BitwiseXor", "digit", "register_map_exprs", "register_local_expr",
           "register_worker_expr", "evaluate"]
