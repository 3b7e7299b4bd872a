"""Code generation for memory instructions: global loads/stores and shared memory as register tiles.

Global accesses become pointer arithmetic ``base + sum_d (offset_d + tl.arange(0, P_d)) * stride_d`` with
a mask per axis: ``0 <= index < extent`` on checked axes (the lower bound is left out when the offset is
known non-negative) and ``tl.arange < size`` on axes padded to a power of two, and-ed with the IR's mask.
Masked-off lanes of a load read ``other`` (default 0, as the IR says; Triton's own default is undefined).

A tile that only rearranges one global load (reshapes and permutes: the unpack of packed low-bit words) is a
:class:`LoadView`. Where a reshape would move elements between the padded power-of-two lanes of Triton's
tiles (a ``tl.gather`` through shared memory: one of 3 words per 32 codes, 6 words per unit, ...), the
rearranged tile is loaded again from global memory instead, each lane computing the address of its element:
the second read hits the cache, and on a GPU that is far cheaper than the gathers (a 4096 x 4096 int3 GEMV on
an H200: 898 us with two gathers per tile).

Shared memory: Triton stages data through shared memory itself, so a shared buffer is a register tile.
A :class:`Region` records which part of a root buffer a shared value denotes. Writing a region and then
reading the same shared value reuses the written tile ("forwarding"); only buffers read some other way
(e.g. a stage written in the previous loop iteration) are kept as a register copy of the whole buffer and
updated with ``tl.where`` / read with ``tl.gather``.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

from lowbit.ir import nodes as n

from .dtypes import register_tl
from .names import index_expr, padded, pow2

__all__ = ["MemoryMixin", "Region", "LoadView"]


@dataclass(frozen=True)
class Region:
    """The part of root shared buffer ``root`` a shared value denotes: per root axis an offset (Python
    text, ``"0"`` when zero) and an extent (1 on axes the slice drops); ``shape`` is the value's own shape."""

    root: str
    root_ident: str
    root_shape: tuple[int, ...]
    dtype: str
    offsets: tuple[str, ...]
    extents: tuple[int, ...]
    shape: tuple[int, ...]

    def covers_axis(self, j: int) -> bool:
        return self.offsets[j] == "0" and self.extents[j] == self.root_shape[j]


def _row_major(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return strides[::-1]


@dataclass(frozen=True)
class LoadView:
    """A tile of logical ``shape`` whose element at index ``i`` is element ``to_load(i)`` of global load
    ``load``'s tile. ``to_load`` maps per-axis index expressions (Python text, each broadcastable over the
    tile; ``"0"`` for unit axes) to the load's, emitting helper lines through ``line``.

    >>> view = LoadView(None, (6,), lambda idx, line: idx)
    >>> view.reshaped((2, 3)).to_load(["a", "b"], lambda text: None)
    ['((a) * 3 + (b))']
    >>> view.reshaped((2, 3)).reshaped((3, 2)).to_load(["a", "b"], lambda text: None)
    ['(((((a) * 2 + (b)) // 3)) * 3 + (((a) * 2 + (b)) % 3))']
    >>> view.reshaped((2, 3)).permuted((1, 0)).shape
    (3, 2)
    """

    load: n.Load
    shape: tuple[int, ...]
    to_load: Callable[[list[str], Callable[[str], None]], list[str]]

    def reshaped(self, shape: tuple[int, ...]) -> "LoadView":
        """The same elements in row-major order as a ``shape`` tile."""
        src, inner = self.shape, self.to_load

        def to_load(idx: list[str], line: Callable[[str], None]) -> list[str]:
            terms = [f"({i}) * {st}" if st != 1 else f"({i})"
                     for i, st, d in zip(idx, _row_major(shape), shape) if d != 1]
            flat = f"({' + '.join(terms)})" if terms else "0"
            total = prod(src)

            def axis(st: int, d: int) -> str:    # flat // st % d, without a division by 1 or a % of the outermost
                if d == 1:
                    return "0"
                digit = flat if st == 1 else f"({flat} // {st})"
                return digit if st * d == total else f"{digit} % {d}"

            return inner([axis(st, d) for st, d in zip(_row_major(src), src)], line)

        return LoadView(self.load, tuple(shape), to_load)

    def permuted(self, perm: tuple[int, ...]) -> "LoadView":
        """Axis ``a`` of the result is axis ``perm[a]`` of this tile."""
        inner = self.to_load

        def to_load(idx: list[str], line: Callable[[str], None]) -> list[str]:
            src = [""] * len(perm)
            for a, p in enumerate(perm):
                src[p] = idx[a]
            return inner(src, line)

        return LoadView(self.load, tuple(self.shape[p] for p in perm), to_load)


class MemoryMixin:
    """``op_*`` methods for Load, Store and the shared-memory instructions (mixed into the emitter)."""

    # ------------------------------------------------------------------------------------------------
    # global memory
    # ------------------------------------------------------------------------------------------------

    def _access(self, prefix: str, tensor: n.Value, offsets: tuple[n.Value, ...], shape: tuple[int, ...],
                checked: tuple[bool, ...] | None, mask: n.Value | None) -> tuple[str, str | None]:
        """Emit index/pointer/mask lines for a ``shape`` tile of ``tensor`` at ``offsets``; return the
        pointer expression and the mask expression (None when nothing needs masking)."""
        rank = len(shape)
        phys = padded(tuple(shape))
        base = self.use(tensor)
        if rank == 0:
            return base, (self.use(mask) if mask is not None else None)
        strides = self.strides[tensor.name]
        terms: list[str] = []
        masks: list[str] = []
        for d in range(rank):
            off = offsets[d]
            off_text = self.use(off)
            idx = self.fresh(f"{prefix}_i{d}")
            self.line(f"{idx} = {off_text} + tl.arange(0, {phys[d]})")
            conds: list[str] = []
            extent = tensor.type.shape[d]
            static = self.const_value.get(off.name)
            inside = (isinstance(static, int) and isinstance(extent, int) and 0 <= static
                      and static + shape[d] <= extent)            # provably in bounds: no check needed
            if (checked is None or checked[d]) and not inside:
                if off.name not in self.nonneg:
                    conds.append(f"({idx} >= 0)")
                conds.append(f"({idx} < {self.dim(extent)})")
            if phys[d] != shape[d]:
                conds.append(f"({idx} < {off_text} + {shape[d]})")
            if conds:
                m = self.fresh(f"{prefix}_m{d}")
                self.line(f"{m} = {' & '.join(conds)}")
                masks.append(index_expr(m, d, rank))
            term = index_expr(idx, d, rank)
            if self.wide_index:
                term += ".to(tl.int64)"
            terms.append(f"{term} * {strides[d]}")
        ptr = self.fresh(f"{prefix}_ptr")
        self.line(f"{ptr} = {base} + {' + '.join(terms)}")
        if mask is not None:
            masks.append(self.use(mask))
        if not masks:
            return ptr, None
        if len(masks) == 1:
            return ptr, masks[0]
        mname = self.fresh(f"{prefix}_mask")
        self.line(f"{mname} = {' & '.join(masks)}")
        return ptr, mname

    def _load_expr(self, prefix: str, ins: n.Load | n.CopyToShared, shape: tuple[int, ...]) -> str:
        ptr, mask = self._access(prefix, ins.tensor, ins.offsets, shape, ins.checked, ins.mask)
        return self._tl_load(ptr, mask, ins)

    def _tl_load(self, ptr: str, mask: str | None, ins: n.Load | n.CopyToShared) -> str:
        """``tl.load`` of ``ptr`` for ``ins``: masked-off lanes read its ``other`` (default 0), bf16 widened to f32."""
        dtype = ins.tensor.dtype
        args = [ptr]
        if mask is not None:
            if ins.other is not None:
                other = self.use(ins.other)
            else:
                other = "False" if dtype == "bool" else ("0.0" if dtype.startswith(("float", "bfloat")) else "0")
            args += [f"mask={mask}", f"other={other}"]
        expr = f"tl.load({', '.join(args)})"
        if dtype == "bfloat16":
            expr += ".to(tl.float32)"
        return expr

    def op_Load(self, ins: n.Load) -> None:
        prefix = ins.result.name
        expr = self._load_expr(prefix, ins, tuple(ins.result.shape))
        self.alias(ins.result, expr)
        if ins.mask is None and ins.result.type.rank and ins.tensor.name not in self.stored:
            self.load_views[ins.result.name] = LoadView(ins, tuple(ins.result.shape), lambda idx, line: idx)

    def _view_load(self, view: LoadView, prefix: str) -> str:
        """The tile ``view`` read again from global memory, each lane loading its own element (padding lanes
        masked off; the load's own bounds checks and ``other`` kept)."""
        ins = view.load
        shape, rank = view.shape, len(view.shape)
        phys = padded(shape)
        idx, masks = [], []
        for a, d in enumerate(shape):
            if d == 1:
                idx.append("0")
                continue
            ar = f"tl.arange(0, {phys[a]})"
            if phys[a] != d:
                masks.append(index_expr(f"({ar} < {d})", a, rank))
                ar = f"tl.minimum({ar}, {d - 1})"
            name = self.fresh(f"{prefix}_j{a}")
            self.line(f"{name} = {index_expr(ar, a, rank)}")
            idx.append(name)
        at = view.to_load(idx, self.line)
        strides = self.strides[ins.tensor.name]
        unit = self.fresh(f"{prefix}_unit")      # positions are tiles (Triton's interpreter masks with tiles only)
        self.line(f"{unit} = tl.zeros({[1] * rank}, tl.int32)")
        offset = self.fresh(f"{prefix}_off")
        terms = [f"tl.zeros({list(phys)}, {'tl.int64' if self.wide_index else 'tl.int32'})"]   # the tile's shape
        for d, j in enumerate(at):
            pos = self.fresh(f"{prefix}_p{d}")
            self.line(f"{pos} = {self.use(ins.offsets[d])} + {j} + {unit}")
            if ins.checked is None or ins.checked[d]:
                if ins.offsets[d].name not in self.nonneg:
                    masks.append(f"({pos} >= 0)")
                masks.append(f"({pos} < {self.dim(ins.tensor.type.shape[d])})")
            terms.append(f"{pos}{'.to(tl.int64)' if self.wide_index else ''} * {strides[d]}")
        self.line(f"{offset} = {' + '.join(terms)}")
        mask = None
        if masks:
            mask = self.fresh(f"{prefix}_mask")
            self.line(f"{mask} = {' & '.join(masks)}")
        return self._tl_load(f"{self.use(ins.tensor)} + {offset}", mask, ins)

    def op_Store(self, ins: n.Store) -> None:
        value = self.use(ins.value)
        if ins.value.dtype == "bfloat16":
            value += ".to(tl.bfloat16)"
        ptr, mask = self._access(f"st_{ins.tensor.name}", ins.tensor, ins.offsets, tuple(ins.value.shape),
                                 ins.checked, ins.mask)
        self.line(f"tl.store({ptr}, {value}" + (f", mask={mask})" if mask is not None else ")"))

    # ------------------------------------------------------------------------------------------------
    # shared memory
    # ------------------------------------------------------------------------------------------------

    def _kept(self, root: str) -> bool:
        return self.materialize is None or root in self.materialize

    def _offset_text(self, v: n.Value) -> str:
        value = self.const_value.get(v.name)
        return "0" if value == 0 and not isinstance(value, bool) else self.use(v)

    def op_AllocShared(self, ins: n.AllocShared) -> None:
        r = ins.result
        name = self.define(r)
        shape = tuple(r.shape)
        self.regions[r.name] = Region(r.name, name, shape, r.dtype, ("0",) * len(shape), shape, shape)
        if self._kept(r.name):
            self.line(f"{name} = tl.zeros({list(padded(shape))}, {register_tl(r.dtype)})")
        else:
            self.line(f"# (every read of {name} reuses the tile just written: no register copy needed)")

    def op_SharedSlice(self, ins: n.SharedSlice) -> None:
        src = self.regions[ins.src.name]
        self.define(ins.result)
        rs, r = len(src.shape), len(ins.result.shape)
        base = len(src.root_shape) - rs
        offsets, extents = list(src.offsets), list(src.extents)
        for a in range(rs):
            j = base + a
            off = self._offset_text(ins.offsets[a])
            if off != "0" and offsets[j] != "0":
                tmp = self.fresh(f"{ins.result.name}_o{a}")
                self.line(f"{tmp} = {offsets[j]} + {off}")
                off = tmp
            elif off == "0":
                off = offsets[j]
            offsets[j] = off
            extents[j] = 1 if a < rs - r else int(ins.result.shape[a - (rs - r)])
        self.regions[ins.result.name] = Region(src.root, src.root_ident, src.root_shape, src.dtype,
                                               tuple(offsets), tuple(extents), tuple(ins.result.shape))

    def _write_region(self, dst: n.Value, data: str) -> None:
        region = self.regions[dst.name]
        for key in [k for k in self.known if self.regions[k].root == region.root]:
            del self.known[key]
        self.known[dst.name] = data
        if not self._kept(region.root):
            return
        rank, r = len(region.root_shape), len(region.shape)
        proot = padded(region.root_shape)
        cur = [1] * (rank - r) + list(padded(region.shape))
        t = data
        if rank > r:
            t = f"{data}[{', '.join(['None'] * (rank - r) + [':'] * r)}]"
        conds: list[str] = []
        for j in range(rank):
            if region.covers_axis(j):
                continue
            off, ext = region.offsets[j], region.extents[j]
            ar = index_expr(f"tl.arange(0, {proot[j]})", j, rank)
            if off != "0":
                conds.append(f"({ar} >= {off})")
            conds.append(f"({ar} < {off} + {ext})" if off != "0" else f"({ar} < {ext})")
            if ext > 1:  # move the data to its place along axis j
                idx_shape = list(cur)
                idx_shape[j] = proot[j]
                if off != "0":
                    idx = f"tl.minimum(tl.maximum(tl.arange(0, {proot[j]}) - {off}, 0), {pow2(ext) - 1})"
                else:
                    idx = f"tl.minimum(tl.arange(0, {proot[j]}), {pow2(ext) - 1})"
                g = self.fresh(f"{region.root_ident}_put{j}")
                self.line(f"{g} = tl.gather({t}, tl.broadcast_to({index_expr(idx, j, rank)}, {idx_shape}), {j})")
                t, cur = g, idx_shape
        if conds:
            self.line(f"{region.root_ident} = tl.where({' & '.join(conds)}, {t}, {region.root_ident})")
        else:
            self.line(f"{region.root_ident} = {t}")

    def op_CopyToShared(self, ins: n.CopyToShared) -> None:
        prefix = f"{ins.dst.name}_in"
        data = self.fresh(prefix)
        self.line(f"{data} = {self._load_expr(prefix, ins, tuple(ins.dst.shape))}")
        self._write_region(ins.dst, data)

    def op_StoreShared(self, ins: n.StoreShared) -> None:
        self._write_region(ins.dst, self.use(ins.value))

    def op_LoadShared(self, ins: n.LoadShared) -> None:
        region = self.regions[ins.src.name]
        if ins.src.name in self.known:
            self.alias(ins.result, self.known[ins.src.name])
            return
        self.buffer_reads.add(region.root)
        rank, r = len(region.root_shape), len(region.shape)
        proot = padded(region.root_shape)
        cur = list(proot)
        t = region.root_ident
        for j in range(rank):
            if region.covers_axis(j):
                continue
            off, ext = region.offsets[j], region.extents[j]
            pe = pow2(ext)
            idx_shape = list(cur)
            idx_shape[j] = pe
            base = f"tl.arange(0, {pe})" if off == "0" else f"{off} + tl.arange(0, {pe})"
            idx = f"tl.minimum({base}, {proot[j] - 1})"
            g = self.fresh(f"{region.root_ident}_get{j}")
            self.line(f"{g} = tl.gather({t}, tl.broadcast_to({index_expr(idx, j, rank)}, {idx_shape}), {j})")
            t, cur = g, idx_shape
        if rank > r:
            t = f"tl.reshape({t}, {list(padded(region.shape))})"
        self.alias(ins.result, t)

    def op_Barrier(self, ins: n.Barrier) -> None:
        self.line("# (Triton synchronizes its own shared-memory staging)")
