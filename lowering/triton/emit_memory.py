"""Code generation for memory instructions: global loads/stores and shared memory as register tiles.

Global accesses become pointer arithmetic ``base + sum_d (offset_d + tl.arange(0, P_d)) * stride_d`` with
a mask per axis: ``0 <= index < extent`` on checked axes (the lower bound is left out when the offset is
known non-negative) and ``tl.arange < size`` on axes padded to a power of two, and-ed with the IR's mask.
Masked-off lanes of a load read ``other`` (default 0, as the IR says; Triton's own default is undefined).

Shared memory: Triton stages data through shared memory itself, so a shared buffer is a register tile.
A :class:`Region` records which part of a root buffer a shared value denotes. Writing a region and then
reading the same shared value reuses the written tile ("forwarding"); only buffers read some other way
(e.g. a stage written in the previous loop iteration) are kept as a register copy of the whole buffer and
updated with ``tl.where`` / read with ``tl.gather``.
"""
from __future__ import annotations

from dataclasses import dataclass

from lowbit.ir import nodes as n

from .dtypes import register_tl
from .names import index_expr, padded, pow2

__all__ = ["MemoryMixin", "Region"]


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
