"""Layout inference (pass ``infer-layouts``): a register layout on every register tile of rank >= 1.

Rules, per instruction (``=`` is an identity edge, ``->`` a derived edge in the direction given):

=====================================  ========================================================
instruction                            constraint
=====================================  ========================================================
unary, binary, compare, where, cast    every tile operand = result
load                                   mask = result (the result itself is free: an anchor)
store                                  mask = value
dot                                    acc = result; target: A, B, C fragments (anchors)
broadcast                              operand = reduce(result, broadcast dims) (replication)
reduce                                 result = reduce(operand, axis)
expand_dims / permute / reshape / view both ways (layout algebra; view keeps every worker's bits)
for                                    init = (iter_arg, result) = yield
if                                     then-yield = result = else-yield
=====================================  ========================================================

Anchors in priority order: layouts already in the input (pinned: never changed), the target's ``dot``
layouts (:mod:`.target_layouts`), then the default layout of the first unset loaded tile, then of the
first unset tile, in program order (data tiles anchor index and mask tiles, not the other way round).
Propagation is a FIFO worklist over the constraint graph (every node is set once, every edge used at
most twice), so the pass is linear and deterministic: the nearest anchor wins.

``ctx.facts["infer-layouts"]`` records the graph size, the number of transfer-function evaluations (at
most four per edge: the linear-time bound the tests check) and the conversions inserted.

Conflicts: two *pinned* layouts that disagree across one instruction raise :class:`CompileError`
naming the instruction and both layouts. Any other disagreement (including a pinned ``dot`` operand on
CUDA that is not the MMA fragment) inserts a **layout conversion**: ``reshape`` to the same shape with
the layout the consumer needs (identity on values). Same-shape reshapes are therefore never edges.

>>> from lowbit.ir import KernelBuilder
>>> from lowbit.lowering.target import parse_target
>>> from lowbit.lowering.passes.manager import PassContext
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid(1)
>>> kb.store(x, kb.exp(kb.load(x, [0], [64])), [0])
>>> k = infer_layouts(kb.build(), PassContext(parse_target("triton:cpu")))
>>> [ins.result.type.layout.local_size for ins in k.body if hasattr(ins, "result") and ins.result.type.rank]
[16, 16]
"""
from __future__ import annotations

from collections import deque
from math import gcd, lcm
from dataclasses import dataclass, replace
from typing import Callable, Optional

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.printer import format_layout
from lowbit.ir.rules import describe
from lowbit.ir.types import nbits_of
from lowbit.layout import RegisterLayout, local

from . import layout_rules as R
from .manager import PassContext, register_pass
from .lowbit_emit import all_names, fresh_name
from .target_layouts import default_layout, dot_layouts

Fn = Optional[Callable[[RegisterLayout], Optional[RegisterLayout]]]

PINNED, REQUIRED, DERIVED, DEFAULT = 0, 1, 2, 3
_PRIORITY_WORDS = {PINNED: "annotated", REQUIRED: "required by the target", DERIVED: "derived",
                   DEFAULT: "default"}


@dataclass
class _Edge:
    """``operand`` (an input of ``ins``) and ``other`` (the result, or the value ``operand`` must match).

    ``fwd`` maps the operand's layout to ``other``'s, ``back`` the other way (None: not derivable)."""

    ins: n.Instr
    operand: int
    other: int
    fwd: Fn
    back: Fn
    operand_name: str          # the operand Value's name inside ``ins`` (for the conversion)
    result_side: bool = False  # ``other`` is a result of ``ins`` (a result conversion is possible)


@dataclass
class _Fixed:
    """A dot operand that the target needs in ``layout`` (converted if the node ends up elsewhere)."""

    ins: n.Instr
    node: int
    operand_name: str
    layout: RegisterLayout


def _is_tile(v: n.Value) -> bool:
    return v.type.scope == "register" and v.type.rank >= 1


class _Graph:
    def __init__(self, kernel: n.Kernel, target):
        self.target = target
        self.node_of: dict[str, int] = {}
        self.values: list[n.Value] = []          # node -> first value (program order)
        self.edges: list[_Edge] = []
        self.adj: list[list[int]] = []
        self.fixed: list[_Fixed] = []
        self.seeds: list[tuple[int, RegisterLayout, int, n.Instr | None]] = []
        self.layout: list[RegisterLayout | None] = []
        self.priority: list[int] = []
        self.origin: list[n.Instr | None] = []
        #: transfer-function evaluations (propagation + conflict check): at most 4 per edge
        self.evaluations = 0
        #: nodes defined by memory reads: default anchors go to them first (data tiles over index tiles)
        self.loaded: list[int] = []
        #: node -> elements a worker must hold contiguously along the last axis for the views it takes part in
        self.view_units: dict[int, int] = {}
        self._build(kernel.body)

    # ------------------------------------------------------------------ graph construction
    def node(self, v: n.Value, alias_of: n.Value | None = None) -> int | None:
        if not _is_tile(v):
            return None
        if v.name in self.node_of:
            return self.node_of[v.name]
        if alias_of is not None and alias_of.name in self.node_of:
            k = self.node_of[alias_of.name]
        else:
            k = len(self.values)
            self.values.append(v)
            self.adj.append([])
            self.layout.append(None)
            self.priority.append(DEFAULT + 1)
            self.origin.append(None)
        self.node_of[v.name] = k
        if v.type.layout is not None:
            self.seeds.append((k, v.type.layout, PINNED, None))
        return k

    def edge(self, ins: n.Instr, operand: n.Value, other: n.Value, fwd: Fn, back: Fn, result_side: bool) -> None:
        a, b = self.node_of.get(operand.name), self.node_of.get(other.name)
        if a is None or b is None:
            return
        e = _Edge(ins, a, b, fwd, back, operand.name, result_side)
        self.adj[a].append(len(self.edges))
        self.adj[b].append(len(self.edges))
        self.edges.append(e)

    def same(self, ins: n.Instr, operand: n.Value, other: n.Value, result_side: bool = True) -> None:
        ident = lambda layout: layout  # noqa: E731
        self.edge(ins, operand, other, ident, ident, result_side)

    def _build(self, body: tuple[n.Instr, ...]) -> None:
        for ins in body:
            if isinstance(ins, n.For):
                for arg, res in zip(ins.iter_args, ins.results):
                    self.node(arg)
                    self.node(res, alias_of=arg)
                self._build(ins.body)
                for init, arg in zip(ins.inits, ins.iter_args):
                    self.same(ins, init, arg, result_side=False)
                ys = ins.body[-1].values if ins.body and isinstance(ins.body[-1], n.Yield) else ()
                for y, arg in zip(ys, ins.iter_args):
                    self.same(ins.body[-1], y, arg, result_side=False)
                continue
            if isinstance(ins, n.If):
                for res in ins.results:
                    self.node(res)
                self._build(ins.then_body)
                self._build(ins.else_body)
                for region in (ins.then_body, ins.else_body):
                    if region and isinstance(region[-1], n.Yield):
                        for y, res in zip(region[-1].values, ins.results):
                            self.same(region[-1], y, res, result_side=False)
                continue
            for v in ins.outputs:
                k = self.node(v)
                if k is not None and isinstance(ins, (n.Load, n.LoadShared)):
                    self.loaded.append(k)
            self._rules(ins)

    def _rules(self, ins: n.Instr) -> None:
        if isinstance(ins, (n.Unary, n.Cast, n.Lookup)):
            self.same(ins, ins.x, ins.result)
        elif isinstance(ins, n.Binary):
            self.same(ins, ins.lhs, ins.result)
            self.same(ins, ins.rhs, ins.result)
        elif isinstance(ins, n.Where):
            for v in (ins.cond, ins.x, ins.y):
                self.same(ins, v, ins.result)
        elif isinstance(ins, n.Load):
            if ins.mask is not None:
                self.same(ins, ins.mask, ins.result)
        elif isinstance(ins, n.Store):
            if ins.mask is not None:
                self.same(ins, ins.mask, ins.value, result_side=False)
        elif isinstance(ins, n.Dot):
            self.same(ins, ins.acc, ins.result)
            want = dot_layouts(self.target, ins.a.dtype, int(ins.a.shape[0]), int(ins.b.shape[1]),
                               int(ins.a.shape[1]))
            if want is not None:
                la, lb, lc = want
                for v, lay in ((ins.a, la), (ins.b, lb)):
                    k = self.node_of.get(v.name)
                    if k is not None:
                        self.fixed.append(_Fixed(ins, k, v.name, lay))
                        self.seeds.append((k, lay, REQUIRED, ins))
                self.seeds.append((self.node_of[ins.result.name], lc, REQUIRED, ins))
        elif isinstance(ins, n.Broadcast):
            rs, xs = tuple(ins.result.shape), tuple(ins.x.shape)
            self.edge(ins, ins.x, ins.result, None, lambda L: R.broadcast_operand(L, rs, xs), True)
        elif isinstance(ins, n.Reduce):
            ax, kd = ins.axis, ins.keepdims
            self.edge(ins, ins.x, ins.result, lambda L: R.reduce_result(L, ax, kd), None, True)
        elif isinstance(ins, n.ExpandDims):
            ax = ins.axis
            self.edge(ins, ins.x, ins.result, lambda L: R.expand_result(L, ax), lambda L: R.expand_operand(L, ax), True)
        elif isinstance(ins, n.Permute):
            p = ins.perm
            self.edge(ins, ins.x, ins.result, lambda L: R.permute_result(L, p), lambda L: R.permute_operand(L, p), True)
        elif isinstance(ins, n.Reshape):
            if tuple(ins.x.shape) == tuple(ins.result.shape):
                return  # a layout conversion: no constraint
            rs, xs = tuple(ins.result.shape), tuple(ins.x.shape)
            self.edge(ins, ins.x, ins.result, lambda L: R.reshape_layout(L, rs), lambda L: R.reshape_layout(L, xs),
                      True)
        elif isinstance(ins, n.View):
            sb, db = nbits_of(ins.x.dtype), nbits_of(ins.result.dtype)
            self.edge(ins, ins.x, ins.result, lambda L: R.view_layout(L, sb, db), lambda L: R.view_layout(L, db, sb),
                      True)
            both = sb * db // gcd(sb, db)
            for v, bits in ((ins.x, sb), (ins.result, db)):
                k = self.node_of.get(v.name)
                if k is not None:
                    self.view_units[k] = lcm(self.view_units.get(k, 1), both // bits)

    # ------------------------------------------------------------------ propagation
    def set(self, k: int, layout: RegisterLayout, priority: int, origin: n.Instr | None, queue: deque) -> None:
        self.layout[k] = layout
        self.priority[k] = priority
        self.origin[k] = origin
        queue.append(k)

    def solve(self) -> None:
        queue: deque[int] = deque()
        for k, layout, prio, origin in sorted(self.seeds, key=lambda s: (s[2], s[0])):
            if self.layout[k] is None:
                self.set(k, layout, prio, origin, queue)
            elif prio == PINNED and self.layout[k] != layout:
                raise self._pinned_conflict_same_node(k, layout)
        order = self.loaded + list(range(len(self.values)))
        next_unset = 0
        while True:
            while queue:
                k = queue.popleft()
                for ei in self.adj[k]:
                    e = self.edges[ei]
                    if e.operand == k and e.fwd is not None:
                        self._offer(e.other, e.fwd, self.layout[k], e.ins, queue)
                    if e.other == k and e.back is not None:
                        self._offer(e.operand, e.back, self.layout[k], e.ins, queue)
            while next_unset < len(order) and self.layout[order[next_unset]] is not None:
                next_unset += 1
            if next_unset == len(order):
                return
            k = order[next_unset]
            self.set(k, self.default(k), DEFAULT, None, queue)

    def default(self, k: int) -> RegisterLayout:
        """The target's default layout for node ``k``; a ``view`` operand or result gets whole bit chunks
        (``lcm`` of both widths) per worker along the last axis, so the view needs no conversion."""
        v = self.values[k]
        return view_friendly_default(self.target, tuple(v.type.shape), _bits(v.dtype), self.view_units.get(k, 1))

    def _offer(self, k: int, fn, layout: RegisterLayout, ins: n.Instr, queue: deque) -> None:
        if self.layout[k] is not None:
            return
        self.evaluations += 1
        derived = fn(layout)
        if derived is not None and tuple(derived.shape) == tuple(int(d) for d in self.values[k].type.shape):
            self.set(k, derived, DERIVED, ins, queue)

    def _pinned_conflict_same_node(self, k: int, layout: RegisterLayout) -> CompileError:
        v = self.values[k]
        return CompileError(f"{v} is annotated with two different layouts: {format_layout(self.layout[k])} and "
                            f"{format_layout(layout)}", hint="keep one annotation")


def _bits(dtype: str) -> int:
    return 8 if dtype == "bool" else nbits_of(dtype)


def view_friendly_default(target, shape: tuple[int, ...], bits: int, unit: int) -> RegisterLayout:
    """The default layout of ``shape``, with ``unit`` consecutive elements of the last axis kept in one
    worker's consecutive local slots (innermost) when ``unit > 1`` divides the last extent."""
    if unit <= 1 or not shape or shape[-1] % unit:
        return default_layout(target, shape, bits)
    outer = default_layout(target, shape[:-1] + (shape[-1] // unit,), bits * unit)
    return outer * local(*([1] * (len(shape) - 1) + [unit]))


@dataclass
class _Plan:
    """What the rewrite must do: the layout per node and conversions per instruction."""

    layout_of: dict[str, RegisterLayout]
    stats: dict[str, int]
    operand_cvt: dict[int, dict[str, RegisterLayout]]      # id(ins) -> operand name -> needed layout
    result_cvt: dict[int, dict[str, RegisterLayout]]       # id(ins) -> result name -> layout ins produces


def _plan(kernel: n.Kernel, target) -> _Plan:
    g = _Graph(kernel, target)
    g.solve()
    operand_cvt: dict[int, dict[str, RegisterLayout]] = {}
    result_cvt: dict[int, dict[str, RegisterLayout]] = {}
    for e in g.edges:
        la, lb = g.layout[e.operand], g.layout[e.other]
        want_b = e.fwd(la) if e.fwd is not None else None
        want_a = e.back(lb) if e.back is not None else None
        g.evaluations += (e.fwd is not None) + (e.back is not None)
        if want_a == la or want_b == lb:
            continue
        if g.priority[e.operand] == PINNED and g.priority[e.other] == PINNED:
            raise _conflict(e, g)
        if want_a is not None:
            operand_cvt.setdefault(id(e.ins), {})[e.operand_name] = want_a
        elif want_b is not None and e.result_side:
            name = next(v.name for v in e.ins.outputs if g.node_of.get(v.name) == e.other)
            result_cvt.setdefault(id(e.ins), {})[name] = want_b
        elif isinstance(e.ins, n.View) and (fixed := _view_fallback(e.ins, target)) is not None:
            operand_cvt.setdefault(id(e.ins), {})[e.ins.x.name] = fixed[0]
            result_cvt.setdefault(id(e.ins), {})[e.ins.result.name] = fixed[1]
        else:
            raise _conflict(e, g, why="the layout algebra cannot relate the two sides")
    for f in g.fixed:
        if g.layout[f.node] != f.layout and target.kind == "cuda":
            operand_cvt.setdefault(id(f.ins), {})[f.operand_name] = f.layout
    layout_of = {name: g.layout[k] for name, k in g.node_of.items()}
    conversions = sum(len(v) for v in operand_cvt.values()) + sum(len(v) for v in result_cvt.values())
    stats = {"nodes": len(g.values), "edges": len(g.edges), "evaluations": g.evaluations, "conversions": conversions}
    return _Plan(layout_of, stats, operand_cvt, result_cvt)


def _view_fallback(ins: n.View, target) -> tuple[RegisterLayout, RegisterLayout] | None:
    """Layouts for both sides of a view whose operand and result layouts cannot be related: the operand is
    converted into whole bit chunks per worker, the view applied, the result converted back."""
    sb, db = nbits_of(ins.x.dtype), nbits_of(ins.result.dtype)
    unit = sb * db // gcd(sb, db) // sb
    src = view_friendly_default(target, tuple(ins.x.shape), sb, unit)
    dst = R.view_layout(src, sb, db)
    return None if dst is None else (src, dst)


def _conflict(e: _Edge, g: _Graph, why: str | None = None) -> CompileError:
    a, b = g.values[e.operand], g.values[e.other]

    def side(k: int, v: n.Value) -> str:
        src = g.origin[k]
        how = _PRIORITY_WORDS.get(g.priority[k], "")
        at = f" (from {describe(src)})" if src is not None else ""
        return f"{v} is {how}{at} {format_layout(g.layout[k])}"

    msg = (f"layout conflict at {describe(e.ins)}: {side(e.operand, a)}, but {side(e.other, b)}"
           + (f"; {why}" if why else ""))
    return CompileError(msg, location=e.ins.loc,
                        hint="remove one of the layout annotations, or make them agree (e.g. derive one from "
                             "the other with lowbit.layout.reduce / permute / reshape)")


# ----------------------------------------------------------------------------------------------------
# rewrite
# ----------------------------------------------------------------------------------------------------

class _Rewriter:
    def __init__(self, kernel: n.Kernel, plan: _Plan):
        self.plan = plan
        self.names = all_names(kernel)

    def retype(self, v: n.Value) -> n.Value:
        layout = self.plan.layout_of.get(v.name)
        if layout is None or v.type.layout == layout:
            return v
        return n.Value(v.name, v.type.with_(layout=layout))

    def block(self, body: tuple[n.Instr, ...]) -> tuple[n.Instr, ...]:
        out: list[n.Instr] = []
        for ins in body:
            self.instr(ins, out)
        return tuple(out)

    def instr(self, ins: n.Instr, out: list[n.Instr]) -> None:
        new = ins.map_values(self.retype)
        cvts = self.plan.operand_cvt.get(id(ins), {})
        if cvts:
            mapping = {}
            for v in new.inputs:
                if v.name in cvts and v not in mapping:
                    c = n.Value(fresh_name(self.names, v.name + ".cvt"), v.type.with_(layout=cvts[v.name]))
                    out.append(n.Reshape(c, v, loc=ins.loc))
                    mapping[v] = c
            new = new.replace_inputs(mapping)
        if isinstance(new, n.For):
            new = replace(new, body=self.block(ins.body))
        elif isinstance(new, n.If):
            new = replace(new, then_body=self.block(ins.then_body), else_body=self.block(ins.else_body))
        rcvts = self.plan.result_cvt.get(id(ins), {})
        if rcvts:
            after = []

            def pre(v: n.Value) -> n.Value:
                if v.name not in rcvts:
                    return v
                p = n.Value(fresh_name(self.names, v.name + ".pre"), v.type.with_(layout=rcvts[v.name]))
                after.append(n.Reshape(v, p, loc=ins.loc))
                return p

            new = replace(new, result=pre(new.result))  # only single-result instructions have derived edges
            out.append(new)
            out.extend(after)
            return
        out.append(new)


def infer_layouts(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    """Assign a register layout to every register tile (see the module docstring)."""
    plan = _plan(kernel, ctx.target)
    ctx.facts["infer-layouts"] = dict(plan.stats)
    body = _Rewriter(kernel, plan).block(kernel.body)
    return replace(kernel, body=body)


register_pass("infer-layouts", "assign a register layout to every register tile (target fragments, "
                               "propagation, conversions)")(infer_layouts)

__all__ = ["infer_layouts"]
