"""The ``dce`` and ``cse`` passes: dead-code elimination and common-subexpression elimination.

**DCE** removes every instruction whose results are unused and that has no ``SIDE_EFFECTS`` (stores,
copies, shared allocations and barriers always stay; a dead load goes). Loops and branches are pruned too:
a ``for`` keeps only the carried values that are used after it or feed a kept computation in a later
iteration, and disappears when nothing is left and its body writes no memory; an ``if`` keeps only used
results, and disappears when both branches are then empty of effects.

**CSE** replaces an instruction by an earlier identical one in scope (same opcode, attributes, operands
and result type, layouts included; ``add mul and or xor eq ne`` match with swapped operands). Memory is
respected: a ``load`` only matches an earlier ``load`` with no store to global memory in between (any
store, since two tensor arguments may alias), ``load_shared`` likewise with no shared-memory write or
barrier in between; a loop body that writes memory never reuses a load from before the loop (the
previous iteration wrote in between). ``for`` / ``if`` themselves and instructions with side effects are
never merged.

>>> from lowbit.ir import KernelBuilder, print_kernel
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid(1)
>>> a = kb.load(x, [0], [4]); b = kb.load(x, [0], [4]); kb.store(x, kb.add(a, b), [0])
>>> c = kb.load(x, [0], [4]); kb.store(x, c, [4])
>>> print("\\n".join(print_kernel(common_subexpressions(kb.build())).splitlines()[3:-1]))
  %x.1 = load(%x, [%c]) : f32[4]
  %add = add(%x.1, %x.1) : f32[4]
  store(%x, %add, [%c])
  %x.3 = load(%x, [%c]) : f32[4]
  %c.1 = const(4) : i32
  store(%x, %x.3, [%c.1])
"""
from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any, Callable, Optional

from lowbit.ir import nodes as n

from .body_rewriter import BodyRewriter, has_side_effects, writes
from .manager import PassContext, register_pass

# ----------------------------------------------------------------------------------------------------
# dead-code elimination
# ----------------------------------------------------------------------------------------------------


Removable = Optional[Callable[[n.Instr], bool]]


def _dce_block(body: tuple[n.Instr, ...], live: set[str], removable: Removable = None
               ) -> tuple[tuple[n.Instr, ...], set[str]]:
    """``body`` without dead instructions, given the names used after it (``live``, updated with the
    names the kept instructions use). With ``removable``, only instructions it accepts may go (loops and
    branches then stay whole)."""
    kept: list[n.Instr] = []
    for ins in reversed(body):
        if isinstance(ins, n.Yield):
            kept.append(ins)
            live.update(v.name for v in ins.values)
        elif removable is not None and isinstance(ins, (n.For, n.If)):
            new_regions = []
            for region in ins.regions:
                region_body, used = _dce_block(region, set(), removable)
                new_regions.append(region_body)
                live.update(used)
            live.update(v.name for v in ins.inputs)
            kept.append(replace(ins, body=new_regions[0]) if isinstance(ins, n.For) else
                        replace(ins, then_body=new_regions[0], else_body=new_regions[1]))
        elif removable is not None and not removable(ins):
            kept.append(ins)
            live.update(v.name for v in ins.inputs)
        elif isinstance(ins, n.For):
            new = _dce_for(ins, live)
            if new is not None:
                kept.append(new)
        elif isinstance(ins, n.If):
            new = _dce_if(ins, live)
            if new is not None:
                kept.append(new)
        elif ins.SIDE_EFFECTS or any(v.name in live for v in ins.outputs):
            kept.append(ins)
            live.update(v.name for v in ins.inputs)
    kept.reverse()
    return tuple(kept), live


def _restrict_yield(body: tuple[n.Instr, ...], keep: list[int]) -> tuple[n.Instr, ...]:
    y = body[-1]
    return body[:-1] + (replace(y, values=tuple(y.values[j] for j in keep)),)


def _dce_for(ins: n.For, live: set[str]) -> Optional[n.For]:
    need = {j for j, r in enumerate(ins.results) if r.name in live}
    while True:
        keep = sorted(need)
        body, used = _dce_block(_restrict_yield(ins.body, keep), set())
        more = {j for j, a in enumerate(ins.iter_args) if a.name in used} - need
        if not more:
            break
        need |= more
    if not keep and not has_side_effects(body):
        return None
    new = replace(ins, results=tuple(ins.results[j] for j in keep), iter_args=tuple(ins.iter_args[j] for j in keep),
                  inits=tuple(ins.inits[j] for j in keep), body=body)
    live.update(v.name for v in new.inputs)
    live.update(used)
    return new


def _dce_if(ins: n.If, live: set[str]) -> Optional[n.If]:
    keep = [j for j, r in enumerate(ins.results) if r.name in live]
    then_body, used_then = _dce_block(_restrict_yield(ins.then_body, keep), set())
    else_body, used_else = _dce_block(_restrict_yield(ins.else_body, keep), set())
    if not keep and not has_side_effects(then_body) and not has_side_effects(else_body):
        return None
    live.add(ins.cond.name)
    live.update(used_then | used_else)
    return replace(ins, results=tuple(ins.results[j] for j in keep), then_body=then_body, else_body=else_body)


def dead_code_elimination(kernel: n.Kernel, removable: Removable = None) -> n.Kernel:
    """``kernel`` without dead instructions and dead loop-carried / branch values (``removable``: only
    remove dead instructions it accepts, keep everything else as it is)."""
    body, _ = _dce_block(tuple(kernel.body), set(), removable)
    return replace(kernel, body=body)


@register_pass("dce", "dead-code elimination (respects SIDE_EFFECTS; prunes dead loop-carried and branch values)")
def dce(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    return dead_code_elimination(kernel)


# ----------------------------------------------------------------------------------------------------
# common-subexpression elimination
# ----------------------------------------------------------------------------------------------------

_COMMUTATIVE = ("add", "mul", "and", "or", "xor", "eq", "ne")
_GLOBAL_WRITES = (n.Store,)
_SHARED_WRITES = (n.StoreShared, n.CopyToShared, n.Barrier)


def _attr_key(v: Any) -> Any:
    """A hashable key for an attribute that distinguishes what Python's == conflates (0 / 0.0 / False,
    -0.0 / 0.0) and matches NaN with NaN."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, float):
        return ("float", "nan" if math.isnan(v) else repr(v))
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, tuple):
        return tuple(_attr_key(x) for x in v)
    return v


def cse_key(ins: n.Instr) -> Optional[tuple]:
    """The identity of a pure (or memory-reading) instruction, or None when it must not be merged."""
    if ins.SIDE_EFFECTS or isinstance(ins, (n.For, n.If, n.Yield)):
        return None
    parts: list[Any] = [type(ins).__name__]
    for f in fields(ins):
        if f.name in ("loc", "result", "results"):
            continue
        v = getattr(ins, f.name)
        if isinstance(v, n.Value):
            parts.append((f.name, v.name))
        elif isinstance(v, tuple) and v and all(isinstance(x, n.Value) for x in v):
            parts.append((f.name, tuple(x.name for x in v)))
        else:
            parts.append((f.name, _attr_key(v)))
    if isinstance(ins, n.Binary) and ins.op in _COMMUTATIVE:
        operands = tuple(sorted((ins.lhs.name, ins.rhs.name)))
        parts = [p for p in parts if not (isinstance(p, tuple) and p and p[0] in ("lhs", "rhs"))]
        parts.append(("operands", operands))
    parts.append(("type", tuple(v.type for v in ins.outputs)))
    return tuple(parts)


class _CSE(BodyRewriter):
    def __init__(self) -> None:
        super().__init__()
        self.scopes: list[dict[tuple, n.Instr]] = [{}]
        self.epoch = {"global": 0, "shared": 0}
        self._counter = 0

    def _bump(self, space: str) -> None:
        self._counter += 1
        self.epoch[space] = self._counter

    def _memory_key(self, ins: n.Instr) -> tuple:
        if isinstance(ins, n.Load):
            return ("global", self.epoch["global"])
        if isinstance(ins, n.LoadShared):
            return ("shared", self.epoch["shared"])
        return ()

    def enter_region(self, owner: n.Instr, body):
        if isinstance(owner, n.For):  # a later iteration's reads see this iteration's writes
            if writes(body, _GLOBAL_WRITES):
                self._bump("global")
            if writes(body, _SHARED_WRITES):
                self._bump("shared")
        start = dict(self.epoch)
        self.scopes.append({})
        out = self.block(body)
        self.scopes.pop()
        if isinstance(owner, n.If):
            self.epoch = start  # the other branch starts from the state before the if
        return out

    def visit(self, ins: n.Instr) -> list[n.Instr]:
        ins = self.default(ins)
        if isinstance(ins, (n.For, n.If)):
            inside = sum(ins.regions, ())
            if writes(inside, _GLOBAL_WRITES):
                self._bump("global")
            if writes(inside, _SHARED_WRITES):
                self._bump("shared")
            return [ins]
        if isinstance(ins, _GLOBAL_WRITES):
            self._bump("global")
        if isinstance(ins, _SHARED_WRITES):
            self._bump("shared")
        key = cse_key(ins)
        if key is None:
            return [ins]
        key = key + self._memory_key(ins)
        for scope in reversed(self.scopes):
            prev = scope.get(key)
            if prev is not None:
                for old, new in zip(ins.outputs, prev.outputs):
                    self.replace_value(old, new)
                return []
        self.scopes[-1][key] = ins
        return [ins]


def common_subexpressions(kernel: n.Kernel) -> n.Kernel:
    """``kernel`` with repeated computations replaced by their first occurrence in scope."""
    return _CSE().run(kernel)


@register_pass("cse", "common-subexpression elimination (loads only between stores; layouts must match)")
def cse(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    return common_subexpressions(kernel)


__all__ = ["dce", "cse", "dead_code_elimination", "common_subexpressions", "cse_key"]
