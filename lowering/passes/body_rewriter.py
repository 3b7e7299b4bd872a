"""Helpers the generic passes (specialize, fold, simplify-indices, dce, cse) share: unique names, value
substitution through nested bodies, use counts, and a walker that rebuilds a body instruction by instruction.

Passes never mutate IR (it is frozen): they build new bodies. :class:`BodyRewriter` walks a body in program
order with a substitution map (``old value -> new value``) applied to every operand it meets, and lets a
subclass replace each instruction by any number of instructions.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid(1)
>>> kb.store(x, kb.zeros([4], "f32"), [0])
>>> sorted(all_names(kb.build()))
['c', 'x', 'zeros']
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Callable, Iterable, Mapping, Sequence

from lowbit.ir import nodes as n
from lowbit.ir.types import TileType


def all_names(kernel: n.Kernel) -> set[str]:
    """Every value name of ``kernel``: parameters, results, loop variables and carried arguments."""
    names = {p.name for p in kernel.params}
    for ins in kernel.walk():
        names.update(v.name for v in ins.outputs)
        if isinstance(ins, n.For):
            names.add(ins.iv.name)
            names.update(v.name for v in ins.iter_args)
    return names


def fresh_name(names: set[str], hint: str) -> str:
    """A name not in ``names`` derived from ``hint`` like the builder does (``off`` -> ``off``, ``off.1``, ...);
    it is added to ``names``."""
    base = re.sub(r"(\.\d+)+$", "", re.sub(r"[^A-Za-z0-9_.]", "_", hint)) or "v"
    if base[0].isdigit() or base[0] == ".":
        base = "v" + base
    name, i = base, 0
    while name in names:
        i += 1
        name = f"{base}.{i}"
    names.add(name)
    return name


class Namer:
    """Hands out values with names unique in one kernel (see :func:`fresh_name`)."""

    def __init__(self, kernel: n.Kernel):
        self.taken = all_names(kernel)

    def fresh(self, hint: str, type: TileType) -> n.Value:
        return n.Value(fresh_name(self.taken, hint), type)


def use_counts(body: Sequence[n.Instr]) -> Counter:
    """How often each value name is used as an operand anywhere in ``body`` (nested bodies included)."""
    counts: Counter = Counter()
    for ins in n.walk(tuple(body)):
        counts.update(v.name for v in ins.inputs)
    return counts


def substitute(body: Sequence[n.Instr], mapping: Mapping[n.Value, n.Value]) -> tuple[n.Instr, ...]:
    """``body`` with operands replaced according to ``mapping``, nested bodies included."""
    if not mapping:
        return tuple(body)
    out = []
    for ins in body:
        ins = ins.replace_inputs(mapping)
        if isinstance(ins, n.For):
            ins = replace(ins, body=substitute(ins.body, mapping))
        elif isinstance(ins, n.If):
            ins = replace(ins, then_body=substitute(ins.then_body, mapping),
                          else_body=substitute(ins.else_body, mapping))
        out.append(ins)
    return tuple(out)


def map_kernel_values(kernel: n.Kernel, fn: Callable[[n.Value], n.Value]) -> n.Kernel:
    """``kernel`` with ``fn`` applied to every Value (parameters, operands, results, loop variables), e.g.
    to retype a parameter everywhere it is used."""

    def body(instrs: Sequence[n.Instr]) -> tuple[n.Instr, ...]:
        out = []
        for ins in instrs:
            ins = ins.map_values(fn)
            if isinstance(ins, n.For):
                ins = replace(ins, body=body(ins.body))
            elif isinstance(ins, n.If):
                ins = replace(ins, then_body=body(ins.then_body), else_body=body(ins.else_body))
            out.append(ins)
        return tuple(out)

    params = tuple(replace(p, value=fn(p.value)) for p in kernel.params)
    return replace(kernel, params=params, body=body(kernel.body))


def has_side_effects(body: Iterable[n.Instr]) -> bool:
    """True when any instruction of ``body`` (nested bodies included) writes memory."""
    return any(ins.SIDE_EFFECTS for ins in n.walk(tuple(body)))


def writes(body: Iterable[n.Instr], kinds: tuple[type, ...]) -> bool:
    """True when ``body`` (nested included) contains an instruction of one of ``kinds``."""
    return any(isinstance(ins, kinds) for ins in n.walk(tuple(body)))


class BodyRewriter:
    """Rebuild a kernel body in program order.

    ``visit(ins)`` gets each instruction with its operands already substituted (``self.mapping``) but its
    nested bodies untouched, and returns the instructions to put in its place; the default keeps it and
    rewrites nested bodies with :meth:`default`. ``replace_value(old, new)`` redirects later uses.
    """

    def __init__(self) -> None:
        self.mapping: dict[n.Value, n.Value] = {}

    def replace_value(self, old: n.Value, new: n.Value) -> None:
        if old.type != new.type:  # pragma: no cover - a pass bug, caught here rather than by the verifier
            raise ValueError(f"cannot replace {old} ({old.type}) by {new} ({new.type})")
        self.mapping[old] = self.mapping.get(new, new)

    def block(self, body: Sequence[n.Instr]) -> tuple[n.Instr, ...]:
        out: list[n.Instr] = []
        for ins in body:
            out.extend(self.visit(ins.replace_inputs(self.mapping)))
        return tuple(out)

    def enter_region(self, owner: n.Instr, body: Sequence[n.Instr]) -> tuple[n.Instr, ...]:
        """Rewrite one nested body (subclasses may push scopes around it)."""
        return self.block(body)

    def default(self, ins: n.Instr) -> n.Instr:
        """``ins`` with nested bodies rewritten."""
        if isinstance(ins, n.For):
            return replace(ins, body=self.enter_region(ins, ins.body))
        if isinstance(ins, n.If):
            return replace(ins, then_body=self.enter_region(ins, ins.then_body),
                           else_body=self.enter_region(ins, ins.else_body))
        return ins

    def visit(self, ins: n.Instr) -> list[n.Instr]:
        return [self.default(ins)]

    def run(self, kernel: n.Kernel) -> n.Kernel:
        return replace(kernel, body=self.block(kernel.body))


__all__ = ["all_names", "fresh_name", "Namer", "use_counts", "substitute", "map_kernel_values", "has_side_effects", "writes",
           "BodyRewriter"]
