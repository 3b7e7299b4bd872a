"""Loop schedules for the TVM code generator's loop nests, derived from targets and register layouts.

A *nest* runs over every element of a tile. How its loops are laid out depends on the target:

* **CPU** (:func:`cpu_loops`): one serial loop per axis; the innermost non-unit axis is split by the vector
  width ``v`` and its inner part is ``T.vectorized``. ``v`` comes from the tile's register layout when it
  has one (the elements a worker's SIMD lanes / local slots hold contiguously along the last axis: the
  innermost mode of the last dimension), else from ``Lowered.facts["vector_width"][value]``, else from the
  host's SIMD width for the element type. The programs of the grid are one ``T.parallel`` loop. An axis
  may be unrolled (``T.unroll``): a ``dot``'s K axis and the rows of an unpacked tile, where unrolling
  turns periodic word offsets and shift amounts into constants. A ``dot`` computes
  :func:`dot_row_block` rows of its output at once (a register-blocked micro-kernel).
* **CUDA** (:func:`cuda_loops`): the nest's elements are spread over the block's threads. With a register
  layout (no replication, at most one worker per thread), thread ``t`` takes the elements of worker ``t``
  in local-slot order (``layout.map_exprs``): the layout decides who computes what, so a layout chosen for
  coalescing gives coalesced loads and stores. Without one: element ``e * threads + t``.

>>> from lowbit.layout import spatial
>>> loops, idx = cpu_loops((4, 64), vector=16)
>>> loops
['for ax0 in range(4):', 'for axo1 in range(4):', 'for axv1 in T.vectorized(16):']
>>> idx
['ax0', 'axo1 * 16 + axv1']
>>> layout_vector_width(spatial(4, 16), 64)
16
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lowbit.lowering.target import host_vector_accumulators

from .tiles import unflatten

__all__ = ["Loops", "cpu_loops", "cuda_loops", "choose_vector", "dot_row_block", "layout_vector_width", "sympy_to_tir"]


@dataclass(frozen=True)
class Loops:
    """Loop headers (outermost first), the element index (text per axis) and a guard (text or None)."""

    headers: tuple[str, ...]
    index: tuple[str, ...]
    guard: str | None = None


def choose_vector(extent: int, limit: int) -> int:
    """The largest power of two dividing ``extent`` and at most ``limit`` (1: no vectorization)."""
    v = 1
    while v * 2 <= limit and extent % (v * 2) == 0:
        v *= 2
    return v


def _split_axis(headers: list[str], index: list[str], inner: str, outer: str, extent: int, factor: int,
                kind: str, outer_kind: str = "range") -> None:
    """Loops for one axis of ``extent`` whose inner ``factor`` iterations are a ``kind`` loop (``T.unroll`` /
    ``T.vectorized``), preceded by an ``outer_kind`` loop over ``extent // factor`` (a serial ``range``, or
    ``T.unroll``) unless the factor is the whole axis."""
    if factor == extent:
        headers.append(f"for {inner} in {kind}({extent}):")
        index.append(inner)
    else:
        headers += [f"for {outer} in {outer_kind}({extent // factor}):", f"for {inner} in {kind}({factor}):"]
        index.append(f"{outer} * {factor} + {inner}")


def cpu_loops(shape: Sequence[int], vector: int = 1, prefix: str = "ax",
              unroll: Mapping[int, int] | None = None) -> tuple[list[str], list[str]]:
    """Serial loops over ``shape``; the innermost axis (size > 1) split by ``vector`` and vectorized.

    ``unroll``: ``{axis: u}`` splits a (non-vector) axis into ``range(s // u)`` and ``T.unroll(u)`` (``u``
    must divide the extent; other values are ignored), so that index arithmetic periodic in ``u`` along
    that axis (shift amounts of packed codes, word offsets) becomes constants after unrolling. On the
    vectorized axis, ``u`` at least its number of vectors unrolls the loop over them.

    >>> cpu_loops((128, 64), vector=16, unroll={0: 8})[0]
    ['for axo0 in range(16):', 'for axu0 in T.unroll(8):', 'for axo1 in range(4):', 'for axv1 in T.vectorized(16):']
    >>> cpu_loops((128, 64), vector=16, unroll={1: 4})[0]
    ['for ax0 in range(128):', 'for axo1 in T.unroll(4):', 'for axv1 in T.vectorized(16):']
    """
    headers: list[str] = []
    index: list[str] = []
    dims = [d for d, s in enumerate(shape) if s != 1]
    inner = dims[-1] if dims else None
    for d, s in enumerate(shape):
        if s == 1:
            index.append("0")
            continue
        v = choose_vector(s, vector) if d == inner else 1
        u = (unroll or {}).get(d, 1) if v == 1 else 1
        if u > 1 and s % u == 0:
            _split_axis(headers, index, f"{prefix}u{d}", f"{prefix}o{d}", s, u, "T.unroll")
        elif v > 1:
            vectors = "T.unroll" if s <= v * (unroll or {}).get(d, 1) else "range"
            _split_axis(headers, index, f"{prefix}v{d}", f"{prefix}o{d}", s, v, "T.vectorized", vectors)
        else:
            headers.append(f"for {prefix}{d} in range({s}):")
            index.append(f"{prefix}{d}")
    return headers, index


def dot_row_block(M: int, N: int, vec: int, accumulators: int | None = None) -> int:
    """Rows of a CPU ``dot``'s ``[M, N]`` output computed together inside its K loop (a register-blocked
    micro-kernel): the largest divisor of ``M`` up to 4 whose accumulators (``rows * N / vec`` vectors)
    fit ``accumulators`` (default: :func:`lowbit.lowering.target.host_vector_accumulators`). Each element
    of the ``b`` operand then feeds ``rows`` accumulators. AVX2 host (16 registers; 16 accumulators before), old
    and new interleaved in one process: 16 x 1024 x 4096 through the GEMM tile (16 x 64: 2 rows of 8 vectors ->
    1), float8_e4m3fn x f32 2.12 -> 1.22 ms, int5 x f32 2.16 -> 1.30; the 1B model's 22 decode attention calls
    at 500 tokens (8 query rows of 64 lanes per kv head) 2.90 -> 2.41 ms.

    >>> dot_row_block(16, 64, 16, 16), dot_row_block(1, 64, 16, 16), dot_row_block(6, 64, 16, 16)
    (4, 1, 3)
    >>> dot_row_block(8, 256, 16, 16), dot_row_block(16, 64, 8, 8)
    (1, 1)
    """
    if accumulators is None:
        accumulators = host_vector_accumulators()
    per_row = max(1, -(-N // max(1, vec)))
    for r in (4, 3, 2):
        if M % r == 0 and r * per_row <= accumulators:
            return r
    return 1


def _cuda_flat(shape: Sequence[int], threads: int, thread_var: str, prefix: str) -> Loops:
    numel = 1
    for s in shape:
        numel *= s
    if numel <= threads:
        guard = None if numel == threads else f"{thread_var} < {numel}"
        return Loops((), tuple(unflatten(thread_var, shape)), guard)
    reps = -(-numel // threads)
    flat = f"{prefix}e * {threads} + {thread_var}"
    guard = None if numel % threads == 0 else f"{flat} < {numel}"
    return Loops((f"for {prefix}e in range({reps}):",), tuple(unflatten(flat, shape)), guard)


def cuda_loops(shape: Sequence[int], threads: int, layout: Any = None, thread_var: str = "tx",
               prefix: str = "ax") -> Loops:
    """Spread the elements of a tile of ``shape`` over ``threads`` threads (by ``layout`` when usable)."""
    if not shape:
        return Loops((), (), f"{thread_var} == 0")
    if _usable_layout(layout, shape, threads):
        import sympy

        w, l_ = sympy.Symbol(thread_var, integer=True, nonnegative=True), sympy.Symbol(
            f"{prefix}l", integer=True, nonnegative=True)
        exprs = layout.map_exprs(w, l_)
        headers = []
        if layout.local_size > 1:
            headers.append(f"for {prefix}l in range({layout.local_size}):")
        index = tuple(sympy_to_tir(e.subs(l_, 0) if layout.local_size == 1 else e) for e in exprs)
        guard = None if layout.spatial_size == threads else f"{thread_var} < {layout.spatial_size}"
        return Loops(tuple(headers), index, guard)
    return _cuda_flat(shape, threads, thread_var, prefix)


def _usable_layout(layout: Any, shape: Sequence[int], threads: int) -> bool:
    from lowbit.layout import RegisterLayout

    return (isinstance(layout, RegisterLayout) and tuple(layout.shape) == tuple(shape)
            and layout.replication == 1 and layout.spatial_size <= threads)


def layout_vector_width(layout: Any, extent: int) -> int | None:
    """Contiguous elements along the last axis that one vector op can cover, from a register layout.

    That is the extent of the innermost mode of the last dimension: consecutive elements there belong
    either to consecutive workers (SIMD lanes) or to consecutive local slots of one worker. None when the
    layout gives no information (no layout, rank 0).
    """
    from lowbit.layout import RegisterLayout

    if not isinstance(layout, RegisterLayout) or not layout.shape:
        return None
    group = layout.grouped_modes[-1]
    if not group:
        return None
    run = layout.mode_shape[group[-1]]
    return run if run > 1 and extent % run == 0 else None


def sympy_to_tir(expr: Any) -> str:
    """TVMScript text of an integer sympy expression (``floor(x/d)`` -> floordiv, ``Mod`` -> floormod)."""
    import sympy

    from lowbit.layout.symbolic import BitwiseXor

    def go(e: Any) -> str:
        if isinstance(e, sympy.Integer):
            return str(int(e))
        if isinstance(e, sympy.Symbol):
            return e.name
        if isinstance(e, sympy.Add):
            return "(" + " + ".join(go(a) for a in e.args) + ")"
        if isinstance(e, sympy.Mul):
            return "(" + " * ".join(go(a) for a in e.args) + ")"
        if isinstance(e, sympy.floor):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            return go(num) if den == 1 else f"T.floordiv({go(sympy.expand(num))}, {go(den)})"
        if isinstance(e, sympy.Mod):
            return f"T.floormod({go(e.args[0])}, {go(e.args[1])})"
        if isinstance(e, BitwiseXor):
            return f"T.bitwise_xor({go(e.args[0])}, {go(e.args[1])})"
        raise ValueError(f"cannot print layout expression {e!r} as TensorIR")

    return go(sympy.sympify(expr))
