"""The ``specialize`` pass: bind compile-time constants into the kernel and fold size expressions.

Constants come from ``ctx.constants`` (``run_passes(..., constants={"G": 64})``) and from constants the
kernel already carries a value for. After the pass:

* every ``ConstParam`` named in ``ctx.constants`` has its value (a clash with a value the kernel already
  has is a :class:`~lowbit.errors.CompileError`, so is a name the kernel does not declare);
* ``symbol("G")`` of a constant with a value is replaced by ``const(value)`` (the constant's dtype);
* tensor shapes and the grid have the integer constants substituted and folded (``K // G`` with
  ``G = 64`` becomes ``K // 64``; ``cdiv(N, BLOCK)`` with ``BLOCK = 128`` becomes ``cdiv(N, 128)``), and
  every use of a retyped parameter is retyped with it.

The constants stay declared (with their values), so the interpreter and the code generators still know
them. Shape symbols (``M``, ``K``) are run-time sizes and are not touched.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); s = kb.tensor_param("s", "f16", ["K // G"]); kb.constant("G")
>>> kb.set_grid(1); kb.store(s, kb.zeros([1], "f16"), [kb.symbol("G")])
>>> from lowbit.lowering.passes.manager import PassContext
>>> from lowbit.lowering.target import parse_target
>>> out = specialize(kb.build(), PassContext(parse_target("triton:cpu"), constants={"G": 64}))
>>> str(out.params[0].value.type), out.constants[0].value
('f16[K // 64] @global', 64)
"""
from __future__ import annotations

import numbers
from dataclasses import replace
from typing import Any

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.rules import literal_fits
from lowbit.ir.symbolic import Dim, dim_subst
from lowbit.ir.types import TileType, kind_of

from .body_rewriter import BodyRewriter, map_kernel_values
from .manager import PassContext, register_pass


def _plain(value: Any, dtype: str) -> Any:
    """A constant's value as a plain Python literal of its dtype's kind (numpy scalars normalized); values
    of the wrong kind are returned unchanged for :func:`literal_fits` to reject."""
    kind = kind_of(dtype)
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if kind == "bool":
        return bool(value) if is_bool else value
    if is_bool:
        return value
    if kind in ("int", "uint"):
        return int(value) if isinstance(value, numbers.Integral) else value
    return float(value) if isinstance(value, numbers.Real) else value


def bind_constants(kernel: n.Kernel, given: dict[str, Any]) -> dict[str, Any]:
    """The value of every constant after binding ``given`` (names without a value are left out).

    Raises CompileError for unknown names, values that do not fit the constant's dtype and values that
    contradict the kernel's own."""
    declared = {c.name: c for c in kernel.constants}
    values = {c.name: c.value for c in kernel.constants if c.value is not None}
    for name, raw in given.items():
        if name not in declared:
            raise CompileError(f"specialize: kernel {kernel.name} has no constant {name!r}",
                               hint="its constants are: " + (", ".join(declared) or "none"))
        c = declared[name]
        value = _plain(raw, c.dtype)
        why = literal_fits(value, c.dtype)
        if why:
            raise CompileError(f"specialize: constant {name} = {raw!r}: {why}",
                               hint=f"{name} is declared with dtype {c.dtype}")
        if c.value is not None and c.value != value:
            raise CompileError(f"specialize: constant {name} is already {c.value} in kernel {kernel.name}, "
                               f"cannot bind it to {value!r}", hint="drop it from the constants given")
        values[name] = value
    return values


def _retype(t: TileType, env: dict[str, Dim]) -> TileType:
    if all(isinstance(d, int) for d in t.shape):
        return t
    return replace(t, shape=tuple(dim_subst(d, env) for d in t.shape))


class _SymbolsToConstants(BodyRewriter):
    def __init__(self, values: dict[str, Any]):
        super().__init__()
        self.values = values

    def visit(self, ins: n.Instr) -> list[n.Instr]:
        if isinstance(ins, n.SymbolRef) and ins.name in self.values:
            return [n.Constant(ins.result, self.values[ins.name], loc=ins.loc)]
        return [self.default(ins)]


@register_pass("specialize", "bind compile-time constants (ctx.constants) into the kernel: constant values, "
                             "symbol() of constants -> const, folded tensor shapes and grid")
def specialize(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    values = bind_constants(kernel, dict(ctx.constants))
    constants = tuple(replace(c, value=values.get(c.name, c.value)) for c in kernel.constants)
    int_env: dict[str, Dim] = {name: int(v) for name, v in values.items()
                               if kind_of(kernel.constant(name).dtype) in ("int", "uint")}
    retyped: dict[str, TileType] = {}
    for p in kernel.tensor_params:
        t = _retype(p.value.type, int_env)
        if t != p.value.type:
            retyped[p.name] = t
    if retyped:
        kernel = map_kernel_values(kernel, lambda v: n.Value(v.name, retyped[v.name]) if v.name in retyped else v)
    grid = tuple(dim_subst(d, int_env) for d in kernel.grid)
    kernel = replace(kernel, constants=constants, grid=grid)
    return _SymbolsToConstants(values).run(kernel)


__all__ = ["specialize", "bind_constants"]
