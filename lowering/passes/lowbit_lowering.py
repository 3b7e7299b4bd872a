"""Pass ``lower-lowbit``: low-bit global tensors -> packed native storage, loads -> storage load + unpack.

For every global tensor parameter of a code dtype, the register layout ``L`` of the tiles the kernel
loads from it determines one :class:`~.packed_format.PackedFormat` (storage order, unpack plan, host
repack; registered in ``ctx.param_formats[name]``). The parameter keeps its name and becomes
``storage_dtype[cdiv(D0, T0), ..., S]``; every load of it becomes

    tile indices (offset // T) -> load one tile of words -> reshape/permute to ``[U, Wpw]`` (a row per
    unit) -> ``view`` as codes ``[U, g*Lc]`` -> reshape/permute to the logical tile (layout ``L``)

with every intermediate annotated so that each worker keeps its own data. Masks: storage is padded with
code 0, which is what an out-of-bounds load reads, so only an explicit ``mask`` (-> ``where``) or a
non-zero ``other`` (-> ``where`` with the logical bounds, from the shape symbols) needs code.

Then the dequant rewrite of :mod:`.select_dequant` runs, so no code type is left (set
``ctx.options["lowbit.defer_dequant"] = True`` to stop at the ``view`` form, for inspection and tests).

Requirements (``CompileError`` otherwise): every load of one parameter has the same tile shape and
layout; every offset is provably a multiple of the tile extent (constants, ``program_id * T``, loop
variables stepping by multiples of T, sums of those); packed parameters are only loaded (no stores or
shared-memory copies of packed codes yet).

>>> from lowbit.ir import KernelBuilder
>>> from lowbit.lowering.passes import run_passes
>>> from lowbit.lowering.target import parse_target
>>> kb = KernelBuilder("k"); w = kb.tensor_param("w", "int3", ["K"]); y = kb.tensor_param("y", "f32", ["K"])
>>> kb.set_grid("cdiv(K, 64)"); off = kb.mul(kb.program_id(0), 64)
>>> kb.store(y, kb.cast(kb.load(w, [off], [64]), "f32"), [off])
>>> low = run_passes(kb.build(), parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"])
>>> print(low.kernel.params[0].value.type, low.param_formats["w"].storage_dtype)   # 4 lanes x 48 bits
u16[cdiv(K, 64), 12] @global uint16
"""
from __future__ import annotations

from dataclasses import replace
from math import gcd
from typing import Any

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.printer import format_layout
from lowbit.ir.rules import describe
from lowbit.ir.symbolic import Dim, Sym, SymOp, cdiv
from lowbit.ir.types import TileType, is_code, kind_of, nbits_of

from ..target import bf16_pair_dots, host_has_avx512
from .manager import PassContext, register_pass
from .packed_format import PackedFormat, derive_format
from .lowbit_emit import Emitter, all_names
from .products import meets_bf16_product, single_row_products
from .select_dequant import lower_code_values
from .target_layouts import default_layout


def worker_vector_bytes(target) -> int:
    """Bytes one worker loads at once: 16 on CUDA (``LDG.128``); a 32-bit SIMD lane on CPUs."""
    return target.vector_bytes if target.kind == "cuda" else 4


def substreams_for(target, dtype: str, layout: Any, meets_bf16: bool = True) -> int:
    """2 (two uint16 streams per 32-bit word, see :mod:`.packed_format`) for 1-3-, 5- and 6-bit codes on TVM's
    CPU target when the tile allows it and the codes meet bf16 activations in a product that takes the bf16 pair
    dot (``meets_bf16``: :func:`.products.meets_bf16_product` on a target where :func:`..target.bf16_pair_dots`
    holds), else 1. Groups (:func:`groups_for`) take precedence: 1-bit codes are stored in streams only where
    the tile cannot hold groups.

    Why: the bf16 pair dot (``lowering/tvm/pair_dot.py``) looks codes of up to 6 bits up in a bf16 table and
    needs the two 16-bit halves of a lane to hold codes at the same bit offset. One dense stream does that
    only for widths dividing 16; with two streams 3-, 5- and 6-bit codes do too (a code crossing a 16-bit word
    is joined by a 16-bit funnel shift): int5 x bf16, 1 x 1024 x 4096, one thread, weights in cache, 84.5 ->
    55.6 us; int6 (a 64-entry table, :func:`.select_dequant` choosing it for codes that meet bf16 products)
    113 -> 64 us, float6_e3m2 139 -> 58 us. With 1- and 2-bit
    codes one dense stream pairs K rows that are not adjacent (k and k + 2 with 2-bit codes in a 4-column
    tile), so each activation pair is put together from two scalar loads; two streams pair k with k + 1, one
    32-bit load (int2 x bf16, 4096 x 4096: 64 -> 56 instructions per 16 products in the loop; the kernel's time
    moved within this machine's noise, 0.14-0.16 ms either way). Without bf16 activations no pair dot
    applies, and one dense stream unpacks faster: half as many codes cross a word (int3 x f32, 4096 x 4096,
    weights in cache: 0.29 ms dense, 0.31 ms from two streams). Widths 7-8 take more than 64 entries, so no
    table; their decode by arithmetic unpacks from two streams more slowly than from one.
    """
    nbits = nbits_of(dtype)
    if target.backend != "tvm" or target.kind != "cpu" or nbits not in (1, 2, 3, 5, 6) or not meets_bf16:
        return 1
    try:
        PackedFormat(dtype, layout, worker_vector_bytes(target), substreams=2).plan  # noqa: B018 (checks the tile)
    except CompileError:
        return 1
    return 2


def groups_for(target, dtype: str, layout: Any, meets_bf16: bool = True) -> int:
    """How many rows of a tile's first local mode to store side by side (``PackedFormat.groups``): ``4 // b``
    for ``b``-bit codes on TVM's CPU target, when the tile allows it: 1-bit codes, and 2-bit codes that meet no
    bf16 activations (those take the bf16 pair dot, stored as substreams); else 1.

    Why: a GEMV then adds, per 16 outputs, one lookup of a 16-entry table of activation sums
    ``x[k] w0 + x[k+1] w1`` (``lowering/tvm/lookup_sum.py``) indexed by the 4-bit field of a K pair (or quad)
    instead of unpacking, permuting and multiplying each code: one shift, one ``vpermps`` and one add per 32
    (2-bit) or 64 (1-bit) products. Against f32 multiply-adds (a shift, a ``vpermd`` and an FMA per 16) that
    is 0.62 (0.47 with half its adds as multiply-adds, as emitted) against 1.0 ns per 32 products in an
    L1-resident loop; against the bf16 pair dot (a shift, a
    ``vpermw`` and a ``vdpbf16ps`` per 32, 0.44 ns) only the quads of 1-bit codes win (uint1 x bf16,
    4096 x 4096, weights in cache: 0.195 -> 0.11 ms). The lookup takes a 16-entry table in one register, which
    needs AVX-512 (as :func:`planes_for`); elsewhere groups would only make the unpack longer.
    """
    nbits = nbits_of(dtype)
    if (target.backend != "tvm" or target.kind != "cpu" or not (nbits == 1 or (nbits == 2 and not meets_bf16))
            or not host_has_avx512()):
        return 1
    try:
        PackedFormat(dtype, layout, worker_vector_bytes(target), groups=4 // nbits).plan  # noqa: B018 (checks the tile)
    except CompileError:
        return 1
    return 4 // nbits


#: K rows side by side in bit planes: a 4-bit field holds one bit of this many codes
PLANE_GROUPS = 4


def planes_for(target, dtype: str, layout: Any, meets_bf16: bool = True, single_row: bool = False) -> bool:
    """Whether to store ``dtype`` codes in bit planes (``PackedFormat.bit_planes``, with :data:`PLANE_GROUPS`
    rows side by side): 3-bit integer codes on TVM's CPU target on a host with AVX-512, that meet no bf16
    activations and only products with one row of activations (``single_row``, see :func:`single_row_products`),
    in a tile that allows it (groups of 4 rows, blocks of 32 codes per worker).

    Why: a 3-bit code stored densely costs what a 4-bit one does, a shift, a ``vpermd`` and a multiply-add
    per 16 products. In bit planes the lookup of activation sums (``lowering/tvm/lookup_sum.py``) adds 4 K
    rows of one bit per lookup: 3 lookups (a shift, a ``vpermps``, an add) per 64 products. An integer code's
    value is affine in its bits, so the sums of bit ``b`` are those of bit 0 times ``2**b`` (``-4`` for int3's
    sign bit). int3 x f32 GEMV, 1024 x 4096, weights in cache: 67.5 -> 54 us. With more rows the dense
    unpack is shared by every row and the lookups are not: 4 rows, 170 -> 205 us; 16 rows, 668 -> 800 us.
    Wider codes would take more lookups than multiply-adds (5 per 64 products against 4) and are left dense;
    float codes are not affine in their bits; with bf16 activations the pair dot is faster (two streams, see
    :func:`substreams_for`). Without AVX-512 the lookup does not apply, and a dense stream unpacks in fewer
    instructions.
    """
    if (target.backend != "tvm" or target.kind != "cpu" or nbits_of(dtype) != 3 or kind_of(dtype) not in ("int", "uint")
            or meets_bf16 or not single_row or not host_has_avx512()):
        return False
    try:
        fmt = PackedFormat(dtype, layout, worker_vector_bytes(target), groups=PLANE_GROUPS, bit_planes=True)
        fmt.plan  # noqa: B018 (checks the tile)
    except CompileError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------
# offsets: which scalars are provably multiples of what
# ----------------------------------------------------------------------------------------------------

def _multiples(kernel: n.Kernel) -> dict[str, int]:
    """For i32 scalars: an integer m such that the value is always a multiple of m (0: always zero)."""
    known: dict[str, int] = {}
    consts = {c.name: c.value for c in kernel.constants if isinstance(c.value, int) and not isinstance(c.value, bool)}

    def m(v: n.Value) -> int:
        return known.get(v.name, 1)

    for ins in kernel.walk():
        if isinstance(ins, n.Constant) and isinstance(ins.value, int) and not isinstance(ins.value, bool):
            known[ins.result.name] = abs(int(ins.value))
        elif isinstance(ins, n.SymbolRef) and ins.name in consts:
            known[ins.result.name] = abs(int(consts[ins.name]))
        elif isinstance(ins, n.Binary) and ins.result.type.is_scalar:
            if ins.op in ("add", "sub"):
                known[ins.result.name] = gcd(m(ins.lhs), m(ins.rhs))
            elif ins.op == "mul":
                known[ins.result.name] = m(ins.lhs) * m(ins.rhs)
        elif isinstance(ins, n.For):
            known[ins.iv.name] = gcd(m(ins.start), m(ins.step))
    return known


# ----------------------------------------------------------------------------------------------------
# the pass
# ----------------------------------------------------------------------------------------------------

class _Lowering:
    def __init__(self, kernel: n.Kernel, ctx: PassContext):
        self.kernel, self.ctx = kernel, ctx
        self.names = all_names(kernel)
        self.formats: dict[str, PackedFormat] = {}
        self.storage: dict[str, n.Value] = {}
        self.multiples = _multiples(kernel)
        self.defs = {v.name: ins for ins in kernel.walk() for v in ins.outputs}

    # ------------------------------------------------------------------ formats
    def derive(self) -> None:
        packed = {p.name: p for p in self.kernel.tensor_params if is_code(p.value.dtype)}
        loads: dict[str, list[n.Load]] = {name: [] for name in packed}
        for ins in self.kernel.walk():
            for v in ins.inputs:
                if v.name in packed and v.type.scope == "global":
                    if not isinstance(ins, n.Load) or ins.tensor.name != v.name:
                        raise CompileError(f"{describe(ins)}: packed low-bit tensor {v} can only be loaded as "
                                           f"register tiles here", location=ins.loc,
                                           hint="load it with load(...) and cast the tile; stores and shared-"
                                                "memory copies of packed codes are not supported yet")
                    loads[v.name].append(ins)
        for name, p in packed.items():
            sites = loads[name]
            if not sites:
                raise CompileError(f"low-bit parameter {p.value} of kernel {self.kernel.name} is never loaded, so "
                                   f"no packed storage can be derived for it", location=self.kernel.loc,
                                   hint="remove the parameter or load it")
            layouts = []
            for ins in sites:
                r = ins.result
                lay = r.type.layout or default_layout(self.ctx.target, r.type.shape, nbits_of(r.dtype))
                layouts.append(lay)
            first = sites[0]
            for ins, lay in zip(sites[1:], layouts[1:]):
                if tuple(ins.result.shape) != tuple(first.result.shape) or lay != layouts[0]:
                    raise CompileError(
                        f"{describe(ins)}: {p.value} is loaded as {list(ins.result.shape)} tiles in layout "
                        f"{format_layout(lay)}, but {describe(first)} loads {list(first.result.shape)} tiles in "
                        f"{format_layout(layouts[0])}; one packed storage order needs one tile layout",
                        location=ins.loc, hint="load the tensor with one tile shape and layout everywhere")
            bf16 = meets_bf16_product(self.kernel, name) and bf16_pair_dots(self.ctx.target)
            groups = groups_for(self.ctx.target, p.value.dtype, layouts[0], bf16)
            planes = planes_for(self.ctx.target, p.value.dtype, layouts[0], bf16,
                                single_row_products(self.kernel, name))
            groups = PLANE_GROUPS if planes else groups
            streams = substreams_for(self.ctx.target, p.value.dtype, layouts[0], bf16) if groups == 1 else 1
            fmt = derive_format(p.value.dtype, layouts[0], worker_vector_bytes(self.ctx.target),
                                logical_dims=tuple(p.value.type.shape), substreams=streams, groups=groups,
                                bit_planes=planes)
            self.formats[name] = fmt
            dims = tuple(cdiv(d, t) for d, t in zip(p.value.type.shape, fmt.tile_shape)) + (fmt.words_per_tile,)
            self.storage[name] = n.Value(name, TileType(fmt.storage_dtype, dims, "global"))

    # ------------------------------------------------------------------ rewrite
    def run(self) -> n.Kernel:
        self.derive()
        params = tuple(n.TensorParam(self.storage[p.name], p.intent)
                       if isinstance(p, n.TensorParam) and p.name in self.storage else p
                       for p in self.kernel.params)
        body = self.block(self.kernel.body)
        return replace(self.kernel, params=params, body=body)

    def block(self, body: tuple[n.Instr, ...]) -> tuple[n.Instr, ...]:
        out: list[n.Instr] = []
        for ins in body:
            if isinstance(ins, n.Load) and ins.tensor.name in self.storage:
                em = Emitter(self.names, loc=ins.loc)
                self.load(ins, em)
                out.extend(em.body)
            elif isinstance(ins, n.For):
                out.append(replace(ins, body=self.block(ins.body)))
            elif isinstance(ins, n.If):
                out.append(replace(ins, then_body=self.block(ins.then_body), else_body=self.block(ins.else_body)))
            else:
                out.append(ins)
        return tuple(out)

    def tile_index(self, ins: n.Load, axis: int, off: n.Value, extent: int, em: Emitter) -> n.Value:
        if extent == 1:
            return off
        m = self.multiples.get(off.name, 1)
        if m % extent:
            what = f"a multiple of {m}" if m > 1 else "not known to be a multiple of anything"
            raise CompileError(f"{describe(ins)}: the offset {off} on axis {axis} of packed tensor {ins.tensor} must be a "
                               f"multiple of the tile extent {extent}, but it is {what}", location=ins.loc,
                               hint="load packed low-bit tiles at tile-aligned offsets (e.g. program_id * T or a "
                                    "loop stepping by T)")
        if m == 0:
            return em.const(0, "int32")
        return em.binary("floordiv", off, em.const(extent, "int32"), hint=f"{ins.tensor.name}.t{axis}")

    def load(self, ins: n.Load, em: Emitter) -> None:
        r = ins.result
        fmt = self.formats[ins.tensor.name]
        plan = fmt.plan
        keep = r.type.layout is not None

        def lay(layout: Any) -> Any:
            return layout if keep else None

        storage = self.storage[ins.tensor.name]
        rank = len(fmt.tile_shape)
        idx = [self.tile_index(ins, a, o, t, em) for a, (o, t) in enumerate(zip(ins.offsets, fmt.tile_shape))]
        idx.append(em.const(0, "int32"))
        base = ins.tensor.name
        words = em.value(base + ".words", fmt.storage_dtype, (1,) * rank + (fmt.words_per_tile,),
                         lay(plan.loaded_layout))
        em.emit(n.Load(words, storage, tuple(idx)))
        u, c, v, wpw = fmt.units, fmt.chunks, fmt.chunk_words, fmt.words_per_unit
        if c == 1:
            x = em.reshape(words, (u, wpw), lay(plan.words_layout), hint=base + ".units")
        elif v == 1:
            from lowbit.layout import transforms as T

            x = em.reshape(words, (c, u), lay(T.permute(plan.words_layout, [1, 0])), hint=base + ".chunks")
            x = em.permute(x, (1, 0), lay(plan.words_layout), hint=base + ".units")
        else:
            x = em.reshape(words, (c, u, v), lay(plan.chunked_layout), hint=base + ".chunks")
            x = em.permute(x, (1, 0, 2), lay(plan.unit_words_layout), hint=base + ".units")
            x = em.reshape(x, (u, wpw), lay(plan.words_layout), hint=base + ".units")
        if fmt.bit_planes:
            bits, blocks, per_code, joined, flat = (lay(layout) for layout in plan.plane_layouts)
            b, nb, block = fmt.plane_blocks, fmt.nbits, fmt.codes_per_unit // fmt.plane_blocks
            x = em.view(x, "uint1", (u, block * wpw), bits, hint=base + ".planes")
            x = em.reshape(x, (u, b, nb, block), blocks, hint=base + ".planes")
            x = em.permute(x, (0, 1, 3, 2), per_code, hint=base + ".planes")
            x = em.view(x, r.dtype, (u, b, block, 1), joined, hint=base + ".codes")
            x = em.reshape(x, (u, fmt.codes_per_unit), flat, hint=base + ".codes")
            if flat != lay(plan.codes_layout):
                x = em.reshape(x, (u, fmt.codes_per_unit), lay(plan.codes_layout), hint=base + ".codes")
        elif fmt.substreams == 1:
            x = em.view(x, r.dtype, (u, fmt.codes_per_unit), lay(plan.codes_layout), hint=base + ".codes")
        else:
            h = fmt.substreams
            halves, pairs, rows, stream_codes, flat = (lay(layout) for layout in plan.stream_layouts)
            x = em.view(x, "uint16", (u, h * wpw), halves, hint=base + ".halves")
            x = em.reshape(x, (u, wpw, h), pairs, hint=base + ".halves")
            x = em.permute(x, (0, 2, 1), rows, hint=base + ".streams")
            x = em.view(x, r.dtype, (u, h, fmt.codes_per_unit // h), stream_codes, hint=base + ".codes")
            x = em.reshape(x, (u, fmt.codes_per_unit), flat, hint=base + ".codes")
            if flat != lay(plan.codes_layout):   # the same codes per worker, in the order of the split
                x = em.reshape(x, (u, fmt.codes_per_unit), lay(plan.codes_layout), hint=base + ".codes")
        if tuple(x.shape) != plan.split_shape:
            x = em.reshape(x, plan.split_shape, lay(plan.split_layout), hint=base + ".modes")
        if plan.perm != tuple(range(len(plan.perm))):
            x = em.permute(x, plan.perm, lay(plan.permuted_layout), hint=base + ".modes")
        if tuple(x.shape) != tuple(fmt.tile_shape):
            x = em.reshape(x, fmt.tile_shape, lay(plan.tile_layout), hint=base + ".tile")
        if x.type.layout != r.type.layout:      # units of several workers (each keeps its own codes), or a
            # worker's slots reordered by streams or groups: the same codes per worker
            x = em.reshape(x, fmt.tile_shape, r.type.layout, hint=base + ".tile")
        cond = self.condition(ins, em)
        if cond is not None:
            other = ins.other
            if other is None:
                zero = em.full(fmt.tile_shape, 0, "int32", hint="zero")
                other_tile = em.cast(zero, r.dtype, hint=base + ".zero")
            else:
                other_tile = em.broadcast(other, fmt.tile_shape, hint=base + ".other")
            x = em.where(cond, x, other_tile, r.type.layout, hint=r.name)
        # the last instruction defines the original result (same name and type): uses stay valid
        last = em.body[-1]
        if last.result.type != r.type:
            raise CompileError(f"internal error: unpack of {r} produced {last.result.type}, expected {r.type}")
        em.body[-1] = replace(last, result=r)

    def condition(self, ins: n.Load, em: Emitter) -> n.Value | None:
        """The bool tile selecting loaded codes over ``other``: the mask, and the logical bounds when
        ``other`` is not the padding code 0."""
        shape = tuple(ins.result.shape)
        cond = ins.mask
        if ins.other is None:
            return cond
        dims = self.formats[ins.tensor.name].logical_dims
        for axis, (off, t, d) in enumerate(zip(ins.offsets, shape, dims)):
            if ins.checked is not None and not ins.checked[axis]:
                continue
            pos = em.binary("add", em.broadcast(off, (t,)), em.arange(0, t), hint=f"pos{axis}")
            ok = em.binary("and", em.binary("ge", pos, em.full((t,), 0, "int32")),
                           em.binary("lt", pos, em.broadcast(self.dim_value(d, em), (t,))), hint=f"inb{axis}")
            ok = em.reshape(ok, tuple(t if a == axis else 1 for a in range(len(shape))))
            ok = em.broadcast(ok, shape) if tuple(ok.shape) != shape else ok
            cond = ok if cond is None else em.binary("and", cond, ok, hint="inb")
        return cond

    def dim_value(self, d: Dim, em: Emitter) -> n.Value:
        """An i32 scalar with the run-time value of a size expression."""
        if isinstance(d, int):
            return em.const(d, "int32")
        if isinstance(d, Sym):
            r = em.value(d.name, "int32", ())
            em.emit(n.SymbolRef(r, d.name))
            return r
        assert isinstance(d, SymOp)
        a, b = self.dim_value(d.lhs, em), self.dim_value(d.rhs, em)
        if d.op == "cdiv":
            a = em.binary("add", a, em.binary("sub", b, em.const(1, "int32")))
            return em.binary("floordiv", a, b)
        op = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "%": "mod", "min": "minimum",
              "max": "maximum"}[d.op]
        return em.binary(op, a, b)


def lower_lowbit(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    """The ``lower-lowbit`` pass (see the module docstring)."""
    out = kernel
    if any(is_code(p.value.dtype) for p in kernel.tensor_params):
        low = _Lowering(kernel, ctx)
        out = low.run()
        ctx.param_formats.update(low.formats)
    if ctx.options.get("lowbit.defer_dequant"):
        return out
    return lower_code_values(out, ctx)


register_pass("lower-lowbit", "packed storage for low-bit tensors derived from their tile layouts; loads become "
                              "storage loads + unpack + dequant; host repack in ctx.param_formats")(lower_lowbit)

__all__ = ["lower_lowbit", "worker_vector_bytes", "substreams_for", "groups_for", "planes_for"]
