"""Small helpers for the layout / low-bit passes that rewrite a kernel: unique names and a typed
instruction emitter.

The IR builder (:class:`lowbit.ir.KernelBuilder`) builds kernels from scratch; these passes instead copy an
existing body and splice new instructions into it. :class:`Emitter` appends instructions to a list,
computing result types (with optional layouts) and checking each one with the verifier's local rules,
so a pass bug surfaces at the instruction that caused it.

>>> names = {"x"}
>>> fresh_name(names, "x"), fresh_name(names, "x")
('x.1', 'x.2')
>>> em = Emitter(set())
>>> c = em.const(3, "int32")
>>> print(em.body[0].opcode, c)
const %c
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.rules import check_instr, describe
from lowbit.ir.types import TileType, kind_of

from .body_rewriter import all_names, fresh_name

def _literal(value: int | float | bool, dtype: str) -> int | float | bool:
    kind = kind_of(dtype)
    return bool(value) if kind == "bool" else float(value) if kind == "float" else int(value)


class Emitter:
    """Appends type-checked instructions to :attr:`body`; every result gets a fresh name.

    ``layout=`` on an emitter sets the result's layout (None: no layout)."""

    def __init__(self, names: set[str], loc: Any = None):
        self.names = names
        self.body: list[n.Instr] = []
        self.loc = loc
        self._consts: dict[tuple, n.Value] = {}

    def value(self, hint: str, dtype: str, shape: Sequence[int], layout: Any = None) -> n.Value:
        return n.Value(fresh_name(self.names, hint), TileType(dtype, tuple(shape), "register", layout))

    def emit(self, ins: n.Instr) -> n.Instr:
        if ins.loc is None and self.loc is not None:
            ins = replace(ins, loc=self.loc)
        problems = check_instr(ins)
        if problems:
            raise CompileError(f"internal error: a pass emitted an invalid instruction {describe(ins)}: "
                               f"{'; '.join(problems)}", location=ins.loc,
                               hint="please report this with the kernel (LOWBIT_DUMP=dir shows the IR)")
        self.body.append(ins)
        return ins

    # ---------------------------------------------------------------- scalars and constant tiles
    def const(self, value: int | float | bool, dtype: str, hint: str = "c") -> n.Value:
        """A scalar constant (emitted once per emitter)."""
        key = (dtype, repr(value))
        if key not in self._consts:
            r = self.value(hint, dtype, ())
            self.emit(n.Constant(r, _literal(value, dtype)))
            self._consts[key] = r
        return self._consts[key]

    def full(self, shape: Sequence[int], value: int | float | bool, dtype: str, layout: Any = None,
             hint: str = "full") -> n.Value:
        r = self.value(hint, dtype, shape, layout)
        self.emit(n.Full(r, _literal(value, dtype)))
        return r

    def arange(self, start: int, stop: int, hint: str = "range", layout: Any = None) -> n.Value:
        r = self.value(hint, "int32", (stop - start,), layout)
        self.emit(n.Arange(r, start, stop))
        return r

    # ---------------------------------------------------------------- elementwise
    def binary(self, op: str, a: n.Value, b: n.Value, layout: Any = None, hint: str | None = None) -> n.Value:
        dtype = "bool" if op in n.COMPARE_OPS else a.dtype
        r = self.value(hint or op, dtype, a.shape, layout)
        self.emit(n.Binary(r, op, a, b))
        return r

    def unary(self, op: str, x: n.Value, layout: Any = None, hint: str | None = None) -> n.Value:
        r = self.value(hint or op, x.dtype, x.shape, layout)
        self.emit(n.Unary(r, op, x))
        return r

    def cast(self, x: n.Value, dtype: str, layout: Any = None, hint: str | None = None) -> n.Value:
        r = self.value(hint or x.name, dtype, x.shape, layout)
        self.emit(n.Cast(r, x))
        return r

    def view(self, x: n.Value, dtype: str, shape: Sequence[int], layout: Any = None, hint: str | None = None
             ) -> n.Value:
        r = self.value(hint or x.name, dtype, shape, layout)
        self.emit(n.View(r, x))
        return r

    def where(self, c: n.Value, x: n.Value, y: n.Value, layout: Any = None, hint: str | None = None) -> n.Value:
        r = self.value(hint or x.name, x.dtype, x.shape, layout)
        self.emit(n.Where(r, c, x, y))
        return r

    def lookup(self, x: n.Value, table: Sequence[int | float], dtype: str, layout: Any = None,
               hint: str | None = None) -> n.Value:
        r = self.value(hint or x.name, dtype, x.shape, layout)
        self.emit(n.Lookup(r, x, tuple(table)))
        return r

    # ---------------------------------------------------------------- shapes
    def reshape(self, x: n.Value, shape: Sequence[int], layout: Any = None, hint: str | None = None) -> n.Value:
        r = self.value(hint or x.name, x.dtype, shape, layout)
        self.emit(n.Reshape(r, x))
        return r

    def permute(self, x: n.Value, perm: Sequence[int], layout: Any = None, hint: str | None = None) -> n.Value:
        perm = tuple(int(p) for p in perm)
        r = self.value(hint or x.name, x.dtype, tuple(x.shape[p] for p in perm), layout)
        self.emit(n.Permute(r, x, perm))
        return r

    def broadcast(self, x: n.Value, shape: Sequence[int], layout: Any = None, hint: str | None = None) -> n.Value:
        r = self.value(hint or x.name, x.dtype, shape, layout)
        self.emit(n.Broadcast(r, x))
        return r

    def expand_dims(self, x: n.Value, axis: int, layout: Any = None, hint: str | None = None) -> n.Value:
        shape = list(x.shape)
        shape.insert(axis, 1)
        r = self.value(hint or x.name, x.dtype, shape, layout)
        self.emit(n.ExpandDims(r, x, axis))
        return r

    def reduce(self, op: str, x: n.Value, axis: int, keepdims: bool = False, layout: Any = None,
               hint: str | None = None) -> n.Value:
        shape = list(x.shape)
        if keepdims:
            shape[axis] = 1
        else:
            del shape[axis]
        r = self.value(hint or op, x.dtype, shape, layout)
        self.emit(n.Reduce(r, op, x, axis, keepdims))
        return r


__all__ = ["all_names", "fresh_name", "Emitter"]
