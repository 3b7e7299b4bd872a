"""The layouts a target prefers: MMA fragments for ``dot`` on CUDA, SIMD-lane layouts on CPUs, and a
default layout for any other tile.

Every layout spans exactly ``target.workers`` workers (``spatial_size``); when a tile has fewer elements
than workers, the extra workers are replicas.

* CUDA: ``mma.m16n8k16`` (f16/bf16), ``mma.m16n8k8`` (tf32 for f32), ``mma.m16n8k32`` (int8) fragments,
  scaled to the tile by a warp grid ``wm x wn`` (warps along N first) and repeats;
  ``C = spatial(wm, wn) * local(rm, rn) * C_atom``. Defaults: 16-byte vectors along the last axis,
  consecutive threads along the last axis (coalesced), extra threads replicate.
* CPU: a worker is a (thread, SIMD lane) pair, worker = thread * V + lane with V = ``vector_bytes // 4``.
  Lanes run along the contiguous axis, local slots step by V, threads split the leading axis (for a
  ``dot``: N when it divides, so weights are not read twice).

>>> from lowbit.lowering.target import parse_target
>>> t = parse_target("triton:sm_90")
>>> a, b, c = dot_layouts(t, "float16", 16, 32, 16)
>>> c.shape, c.spatial_size, c.local_size
((16, 32), 128, 4)
>>> default_layout(parse_target("triton:cpu"), (8, 16), 32).spatial_size
4
"""
from __future__ import annotations

from math import gcd
from typing import Sequence

from lowbit.layout import RegisterLayout, column_local, local, spatial

from ..target import Target
from .layout_rules import replicate

#: dot input dtype -> (atom m, n, k, A fragment, B fragment, C fragment)
_MMA_ATOMS = {
    "f16": (16, 8, 16, column_local(2, 2).spatial(8, 4).local(1, 2), local(2, 1).column_spatial(4, 8).local(2, 1)),
    "tf32": (16, 8, 8, column_local(2, 2).spatial(8, 4), local(2, 1).column_spatial(4, 8)),
    "i8": (16, 8, 32, column_local(2, 2).spatial(8, 4).local(1, 4), local(2, 1).column_spatial(4, 8).local(4, 1)),
}
MMA_C_ATOM = local(2, 1).spatial(8, 4).local(1, 2)
_ATOM_OF_DTYPE = {"float16": "f16", "bfloat16": "f16", "float32": "tf32", "int8": "i8", "uint8": "i8"}


def mma_atoms(dtype: str) -> tuple[int, int, int, RegisterLayout, RegisterLayout, RegisterLayout] | None:
    """``(m, n, k, A, B, C)`` of the MMA instruction for ``dot`` inputs of ``dtype`` (None: no MMA)."""
    key = _ATOM_OF_DTYPE.get(dtype)
    if key is None:
        return None
    m, n, k, a, b = _MMA_ATOMS[key]
    return m, n, k, a, b, MMA_C_ATOM


def _with_workers(layout: RegisterLayout, workers: int) -> RegisterLayout:
    """Prepend replication so ``layout`` spans ``workers`` (when it spans a divisor of them)."""
    have = layout.spatial_size
    if have >= workers or workers % have:
        return layout
    return replicate(workers // have, layout.rank) * layout


def _warp_grid(tiles_m: int, tiles_n: int, warps: int) -> tuple[int, int]:
    """``(wm, wn)`` with ``wm * wn`` as large as possible (dividing ``warps``), warps along N first."""
    best = (1, 1)
    for used in sorted({d for d in range(1, warps + 1) if warps % d == 0}, reverse=True):
        for wn in sorted({d for d in range(1, used + 1) if used % d == 0}, reverse=True):
            wm = used // wn
            if tiles_n % wn == 0 and tiles_m % wm == 0:
                return wm, wn
    return best


def dot_layouts(target: Target, dtype: str, bm: int, bn: int, bk: int
                ) -> tuple[RegisterLayout, RegisterLayout, RegisterLayout] | None:
    """The ``(A [bm, bk], B [bk, bn], C [bm, bn])`` layouts the target wants for ``dot``, or None."""
    if target.kind == "cuda":
        return _cuda_dot(target, dtype, bm, bn, bk)
    return _cpu_dot(target, bm, bn, bk)


def _cuda_dot(target: Target, dtype: str, bm: int, bn: int, bk: int):
    atoms = mma_atoms(dtype)
    if atoms is None:
        return None
    am, an, ak, fa, fb, fc = atoms
    if bm % am or bn % an or bk % ak:
        return None
    wm, wn = _warp_grid(bm // am, bn // an, target.num_warps)
    rm, rn, rk = bm // am // wm, bn // an // wn, bk // ak
    c = spatial(wm, wn) * local(rm, rn) * fc
    a = spatial(wm, 1) * replicate(wn, 2) * local(rm, rk) * fa
    b = replicate(wm, 2) * spatial(1, wn) * local(rk, rn) * fb
    w = target.workers
    return _with_workers(a, w), _with_workers(b, w), _with_workers(c, w)


def _lanes(target: Target) -> int:
    return max(1, target.vector_bytes // 4)


def _cpu_dot(target: Target, bm: int, bn: int, bk: int):
    v, threads = _lanes(target), max(1, target.num_threads)
    lanes = gcd(v, bn)
    lane_rep = replicate(v // lanes, 2)
    inner = spatial(1, lanes) * lane_rep
    if (bn // lanes) % threads == 0:
        cols = bn // lanes // threads
        c = spatial(1, threads) * local(bm, cols) * inner
        b = spatial(1, threads) * local(bk, cols) * inner
        a = replicate(threads * v, 2) * local(bm, bk)
    else:
        th = gcd(threads, bm)
        outer = spatial(th, 1) * replicate(threads // th, 2)
        c = outer * local(bm // th, bn // lanes) * inner
        b = replicate(threads, 2) * local(bk, bn // lanes) * inner
        a = outer * replicate(v, 2) * local(bm // th, bk)
    w = target.workers
    return _with_workers(a, w), _with_workers(b, w), _with_workers(c, w)


def default_layout(target: Target, shape: Sequence[int], nbits: int) -> RegisterLayout | None:
    """The layout of a tile nothing else constrains (None for scalars)."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        return None
    if target.kind == "cuda":
        return _cuda_default(target, shape, nbits)
    return _cpu_default(target, shape)


def _pow2_divisor(n: int, cap: int) -> int:
    v = 1
    while v * 2 <= cap and n % (v * 2) == 0:
        v *= 2
    return v


def _cuda_default(target: Target, shape: tuple[int, ...], nbits: int) -> RegisterLayout:
    rank = len(shape)
    vec = _pow2_divisor(shape[-1], max(1, (8 * target.vector_bytes) // max(nbits, 8 if nbits == 1 else nbits)))
    rest = list(shape[:-1]) + [shape[-1] // vec]
    left = target.workers
    sp = [1] * rank
    for d in reversed(range(rank)):
        sp[d] = gcd(left, rest[d])
        left //= sp[d]
    outer = local(*[r // s for r, s in zip(rest, sp)]) * spatial(*sp) * local(*([1] * (rank - 1) + [vec]))
    return _with_workers(outer, target.workers)


def _cpu_default(target: Target, shape: tuple[int, ...]) -> RegisterLayout:
    rank = len(shape)
    v, threads = _lanes(target), max(1, target.num_threads)
    lanes = gcd(v, shape[-1])
    rest = list(shape[:-1]) + [shape[-1] // lanes]
    th = [1] * rank
    left = threads
    for d in range(rank):
        th[d] = gcd(left, rest[d])
        left //= th[d]
    inner = spatial(*([1] * (rank - 1) + [lanes])) * replicate(v // lanes, rank)
    outer = spatial(*th) * replicate(left, rank)
    return _with_workers(outer * local(*[r // t for r, t in zip(rest, th)]) * inner, target.workers)


__all__ = ["dot_layouts", "default_layout", "mma_atoms", "MMA_C_ATOM"]
