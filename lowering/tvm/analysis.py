"""What the TVM code generator needs to know about a kernel before emitting it.

* **uses**: every use of every value, with the block it sits in and the path from the value's block;
* **fusion** (:func:`plan_inlining`): which tile values stay *lazy* (computed inside their consumer's loop
  nest) and which are *materialized* in a buffer. A value is inlined when that does not repeat work: it
  is used once, in the same block (or in an ``if`` nested in it, never in a loop), and the consumer reads
  each of its elements once (a ``dot`` reads ``a`` N times: only cheap values are inlined there; on a CPU
  a fused chain read several times may cost :data:`REPEAT_BUDGET` per element *in total*, so an unpack +
  dequant feeding a many-row ``dot`` is computed once into a buffer, unless the code generator computes
  the ``dot``'s ``b`` once for all rows itself: ``b_once``, the bf16 pair dot and the lookup of activation
  sums), or it is *trivial* (constants, ``arange``, index arithmetic on those). Values reading memory
  (``load``, ``load_shared``) are inlined only when no side effect sits between definition and use. Two more
  shapes fuse:

  - a ``sum`` over an axis of at most :data:`SMALL_REDUCE` elements (the low-bit lowering assembles codes
    that straddle words that way) becomes its unrolled sum, so unpacked codes stay in registers inside
    the consumer instead of a buffer the consumer would gather from;
  - a value used several times by elementwise instructions that are all fused into the same consumers
    (a dequant's NaN test and its value) is written out at each use: the element is read at the same
    index in one statement, and LLVM merges the repeats;
* **index values**: i32 scalars computed only from program ids, symbols, constants and loop variables,
  which get plain TIR arithmetic (TVM's simplifier understands it) instead of wrapping arithmetic;
* **last uses** inside a loop body, for writing a ``dot`` straight into its loop-carried accumulator.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"])
>>> t = kb.load(x, [0], [8]); kb.store(x, kb.exp(kb.mul(t, 2.0)), [0])
>>> plan = plan_inlining(kb.build())
>>> sorted(v for v in plan.lazy if not v.startswith("c"))         # mul and exp fuse into the store
['exp', 'mul']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from lowbit.ir import nodes as n

__all__ = ["Use", "KernelInfo", "plan_inlining", "OP_COST", "SMALL_REDUCE", "REPEAT_BUDGET", "is_small_reduce"]

#: cost of one element of an instruction's own work (inlining a value of cost <= 1 into a consumer that
#: reads it several times is fine; anything dearer is materialized then)
OP_COST = {"exp": 4, "exp2": 4, "log": 4, "log2": 4, "sqrt": 2, "rsqrt": 3, "tanh": 6, "sigmoid": 6,
           "div": 2, "floordiv": 3, "mod": 3}
_REMAPS = (n.Broadcast, n.ExpandDims, n.Reshape, n.Permute)
_PURE = (n.Constant, n.ProgramId, n.NumPrograms, n.SymbolRef, n.Full, n.Arange, n.View, n.Cast, n.Unary,
         n.Binary, n.Where, n.Lookup) + _REMAPS
_TRIVIAL_SOURCES = (n.Constant, n.ProgramId, n.NumPrograms, n.SymbolRef, n.Full, n.Arange)
_ELEMENTWISE = (n.Unary, n.Binary, n.Cast, n.Where, n.Lookup)
_INDEX_OPS = ("add", "sub", "mul", "floordiv", "mod", "minimum", "maximum")

#: a ``sum`` over at most this many elements may be fused into its consumer (written out as additions)
SMALL_REDUCE = 8
#: CPU: a fused chain read several times per element of its consumer (a ``dot`` operand: once per row
#: block or column of the other operand) may cost at most this much per element (``OP_COST`` units, loads
#: 1); dearer chains (an unpack + dequant of packed weights) are computed once into a buffer. (CUDA keeps
#: recomputing: its buffers are shared memory, with a barrier per nest.)
REPEAT_BUDGET = 2


def is_small_reduce(ins: n.Instr) -> bool:
    """A ``sum`` over a short axis (at most :data:`SMALL_REDUCE` elements) of a tile of rank >= 2."""
    return (isinstance(ins, n.Reduce) and ins.op == "sum" and len(ins.x.type.shape) >= 2
            and int(ins.x.type.shape[ins.axis]) <= SMALL_REDUCE)


@dataclass(frozen=True)
class Use:
    """One use of a value: the using instruction, the operand field, the block the user sits in."""

    user: n.Instr
    operand: str
    block: int          # id of the block holding ``user``


@dataclass
class KernelInfo:
    """Facts about a kernel's values (see the module doc)."""

    #: value name -> defining instruction (None for parameters, loop variables, iter_args)
    defs: dict[str, n.Instr | None] = field(default_factory=dict)
    #: value name -> block id where it is defined
    def_block: dict[str, int] = field(default_factory=dict)
    #: value name -> its uses
    uses: dict[str, list[Use]] = field(default_factory=dict)
    #: block id -> (parent block id or None, the instruction owning the block or None, the instructions)
    blocks: dict[int, tuple[int | None, n.Instr | None, tuple[n.Instr, ...]]] = field(default_factory=dict)
    #: id(instr) -> (block id, position)
    where: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: values computed lazily inside their consumers
    lazy: set[str] = field(default_factory=set)
    #: i32 scalar values that are pure index arithmetic
    index_values: set[str] = field(default_factory=set)
    #: values that are trivial to recompute anywhere
    trivial: set[str] = field(default_factory=set)
    #: effective number of evaluations of each element of a lazy value per materialization
    multiplicity: dict[str, int] = field(default_factory=dict)

    def ancestor_in(self, block: int, ins: n.Instr) -> tuple[int, list[n.Instr]] | None:
        """Position of the instruction of ``block`` that contains ``ins`` (itself or an enclosing For/If),
        and the chain of enclosing instructions between them; None when ``ins`` is not inside ``block``."""
        chain: list[n.Instr] = []
        b, pos = self.where[id(ins)]
        while b != block:
            parent, owner, _ = self.blocks[b]
            if parent is None or owner is None:
                return None
            chain.append(owner)
            b, pos = self.where[id(owner)]
        return pos, chain


def _collect(kernel: n.Kernel) -> KernelInfo:
    info = KernelInfo()
    for p in kernel.params:
        info.defs[p.name] = None
        info.def_block[p.name] = 0
    counter = [0]

    def visit(body: tuple[n.Instr, ...], parent: int | None, owner: n.Instr | None) -> None:
        bid = counter[0]
        counter[0] += 1
        info.blocks[bid] = (parent, owner, body)
        for pos, ins in enumerate(body):
            info.where[id(ins)] = (bid, pos)
            for fname in ins.OPERANDS:
                v = getattr(ins, fname)
                vals = v if isinstance(v, tuple) else (v,) if v is not None else ()
                for val in vals:
                    info.uses.setdefault(val.name, []).append(Use(ins, fname, bid))
            for out in ins.outputs:
                info.defs[out.name] = ins
                info.def_block[out.name] = bid
            if isinstance(ins, n.For):
                body_id = counter[0]
                info.defs[ins.iv.name] = None
                info.def_block[ins.iv.name] = body_id
                for a in ins.iter_args:
                    info.defs[a.name] = None
                    info.def_block[a.name] = body_id
            for region in ins.regions:
                visit(region, bid, ins)

    visit(kernel.body, None, None)
    return info


def _index_values(kernel: n.Kernel, info: KernelInfo) -> set[str]:
    out: set[str] = set()
    for ins in kernel.walk():
        if isinstance(ins, n.For):
            out.add(ins.iv.name)
        r = getattr(ins, "result", None)
        if r is None or r.type.shape != () or r.dtype != "int32":
            continue
        if isinstance(ins, (n.Constant, n.ProgramId, n.NumPrograms, n.SymbolRef)):
            out.add(r.name)
        elif isinstance(ins, n.Binary) and ins.op in _INDEX_OPS and ins.lhs.name in out and ins.rhs.name in out:
            out.add(r.name)
    return out


def _cost(ins: n.Instr) -> int:
    if isinstance(ins, _REMAPS) or isinstance(ins, _TRIVIAL_SOURCES):
        return 0
    if isinstance(ins, (n.Unary, n.Binary)):
        return OP_COST.get(ins.op, 1)
    if isinstance(ins, n.Cast):
        src, dst = ins.x.dtype, ins.result.dtype
        return 3 if (src.startswith(("float", "bfloat")) and not dst.startswith(("float", "bfloat"))) else 1
    if isinstance(ins, n.Reduce):
        return int(ins.x.type.shape[ins.axis])
    return 1


def _operand_multiplicity(use: Use, lanes: int | None = None,
                           b_once: Callable[[n.Dot], bool] | None = None) -> int:
    """How many times the consumer reads each element of the operand (per consumer materialization).

    ``lanes``: the CPU's f32 vector lanes; a CPU ``dot`` computes each element of ``b`` once per block of
    :func:`.schedule.dot_row_block` rows (CUDA: once per row), or once for all rows where ``b_once`` says
    so (the bf16 pair dot and the lookup of activation sums, which read each code once for every row of the
    tile).
    """
    u = use.user
    if isinstance(u, n.Dot):
        if use.operand == "a":
            return int(u.b.type.shape[1])
        if use.operand == "b":
            if b_once is not None and b_once(u):
                return 1
            m = int(u.a.type.shape[0])
            if lanes:
                from .schedule import dot_row_block

                return m // dot_row_block(m, int(u.b.type.shape[1]), lanes)
            return m
        return 1
    if isinstance(u, n.Broadcast):
        return max(1, u.result.type.numel // max(1, u.x.type.numel))
    return 1


def _side_effects(ins: n.Instr) -> bool:
    return ins.SIDE_EFFECTS or any(_side_effects(i) for r in ins.regions for i in r)


def _memory_root(kernel_info: KernelInfo, v: n.Value) -> str:
    """The parameter or shared allocation a global/shared value refers to."""
    d = kernel_info.defs.get(v.name)
    while isinstance(d, n.SharedSlice):
        v = d.src
        d = kernel_info.defs.get(v.name)
    return v.name


def _writes(ins: n.Instr, info: KernelInfo) -> set[str]:
    if isinstance(ins, n.Store):
        return {ins.tensor.name}
    if isinstance(ins, n.CopyToShared):
        return {_memory_root(info, ins.dst)}
    if isinstance(ins, n.StoreShared):
        return {_memory_root(info, ins.dst)}
    return set()


def plan_inlining(kernel: n.Kernel, lanes: int | None = None,
                  b_once: Callable[[n.Dot, Mapping[str, n.Instr | None]], bool] | None = None) -> KernelInfo:
    """Analyse ``kernel``: uses, index values, and the lazy (fused) values. See the module doc.

    ``lanes``: the f32 SIMD lanes of a CPU target (None for CUDA), for the ``dot`` schedule's reuse.
    ``b_once(dot, defs)``: whether the code generator computes each element of that ``dot``'s ``b`` once for
    all rows (then its unpack chain fuses into the ``dot`` however many rows the tile has).
    """
    info = _collect(kernel)
    dot_b_once = None if b_once is None else (lambda dot: b_once(dot, info.defs))
    info.index_values = _index_values(kernel, info)

    # trivial values: constant sources and cheap pure ops on trivial operands (forward pass)
    for ins in kernel.walk():
        r = getattr(ins, "result", None)
        if r is None or not isinstance(ins, _PURE):
            continue
        if isinstance(ins, _TRIVIAL_SOURCES) or (
                all(v.name in info.trivial for v in ins.inputs) and _cost(ins) <= 1 and not isinstance(ins, n.View)):
            info.trivial.add(r.name)

    # cost of each element of a value if everything fusable below it were fused (forward pass): a value
    # read several times per element of its consumer is recomputed that often when fused. Values that
    # will be materialized anyway (several uses, not a remap) cost their readers one buffer read.
    expr_cost: dict[str, int] = {}
    for ins in kernel.walk():
        r = getattr(ins, "result", None)
        if r is None or r.type.scope != "register":
            continue
        if r.name in info.trivial or r.type.shape == ():     # scalars are computed once, outside nests
            expr_cost[r.name] = 0
        elif not (isinstance(ins, _PURE + (n.Load, n.LoadShared)) or is_small_reduce(ins)):
            expr_cost[r.name] = 1
        elif len(info.uses.get(r.name, [])) > 1 and not isinstance(ins, _REMAPS):
            expr_cost[r.name] = 1
        else:
            own = _cost(ins)
            expr_cost[r.name] = min(own + sum(expr_cost.get(v.name, 0) for v in ins.inputs), 1 << 20)

    sinks: dict[str, list[n.Instr]] = {}

    def _eff(use: Use) -> int:
        m = _operand_multiplicity(use, lanes, dot_b_once)
        res = getattr(use.user, "result", None)
        if res is not None and res.name in info.lazy:
            m *= max(1, info.multiplicity.get(res.name, 1))
        return m

    def _sinks(use: Use) -> list[n.Instr]:
        res = getattr(use.user, "result", None)
        if res is not None and res.name in info.lazy:
            return sinks.get(res.name, [])
        return [use.user]

    def _same_element_uses(r: n.Value, uses: list[Use]) -> bool:
        """Several uses, all by elementwise instructions of ``r``'s shape that are fused into the same
        consumers: each element of ``r`` is then read at the same index inside one statement (e.g. a
        dequant's NaN test and its value), where the repeats are common subexpressions LLVM merges."""
        if len(uses) < 2 or isinstance(info.defs.get(r.name), (n.Load, n.LoadShared)):
            return False
        first = None
        for u in uses:
            res = getattr(u.user, "result", None)
            if (not isinstance(u.user, _ELEMENTWISE) or res is None or res.name not in info.lazy
                    or tuple(res.type.shape) != tuple(r.type.shape)):
                return False
            key = frozenset(id(s) for s in sinks.get(res.name, []))
            if not key or (first is not None and key != first):
                return False
            first = key
        return True

    def decide(ins: n.Instr) -> None:
        r = getattr(ins, "result", None)
        if r is None or r.type.scope != "register" or r.type.shape == ():
            return
        uses = info.uses.get(r.name, [])
        if r.name in info.trivial or (not uses and isinstance(ins, _PURE + (n.Load, n.LoadShared))):
            info.lazy.add(r.name)        # trivial: recompute anywhere; unused: emit nothing
            info.multiplicity[r.name] = 1
            sinks[r.name] = [s for u in uses for s in _sinks(u)]
            return
        if not isinstance(ins, _PURE + (n.Load, n.LoadShared)) and not is_small_reduce(ins):
            return
        shared = _same_element_uses(r, uses)
        if len(uses) != 1 and not isinstance(ins, _REMAPS) and not shared:
            return                       # computed once, read several times
        mult = max(_eff(u) for u in uses) if shared else sum(_eff(u) for u in uses)
        if mult > 1 and (_cost(ins) > 1 or (lanes and expr_cost.get(r.name, 0) > REPEAT_BUDGET)):
            return                       # CPU: materialize once rather than recompute the chain per read
        where: list[n.Instr] = [s for u in uses for s in _sinks(u)]
        block = info.def_block[r.name]
        memory = isinstance(ins, (n.Load, n.LoadShared))
        if memory:
            _, pos_def = info.where[id(ins)]
            _, _, body = info.blocks[block]
            root = _memory_root(info, ins.tensor if isinstance(ins, n.Load) else ins.src)
        for s in where:
            found = info.ancestor_in(block, s)
            if found is None:
                return
            pos_use, chain = found
            if any(isinstance(c, n.For) for c in chain):
                return                   # would recompute in every iteration
            if memory:
                if chain or any(_side_effects(body[p]) for p in range(pos_def + 1, pos_use)):
                    return               # the memory may change before the read
                if root in _writes(s, info):
                    return               # read and write of one buffer in one loop nest
        info.lazy.add(r.name)
        info.multiplicity[r.name] = mult
        sinks[r.name] = where

    def visit(body: tuple[n.Instr, ...]) -> None:
        for ins in reversed(body):
            decide(ins)
            for region in ins.regions:
                visit(region)

    visit(kernel.body)
    return info
