"""The IR verifier: run on every kernel the builder produces and before/after every pass.

Checks the kernel signature (parameters, constants, grid), SSA (every use sees exactly one visible
definition of the same type; names unique; region scoping), the local typing rules of every instruction
(:mod:`lowbit.ir.rules`: dtypes, shapes, scopes, layouts, "no arithmetic on code types"), intents (no store
to an ``in`` tensor, no load from an ``out`` one), grid axes, symbol names and ``yield`` placement and
types. All problems are reported together in one :class:`~lowbit.errors.CompileError` (``.errors``).

>>> from lowbit.ir.builder import KernelBuilder
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.store(x, kb.zeros([4], "f32"), [0])
>>> verify(kb.build(verify=False)).name
'k'
"""
from __future__ import annotations

import re

from ..errors import CompileError
from . import nodes as n
from .rules import check_instr, check_type, describe, literal_fits, tstr
from .symbolic import Sym, SymOp, dim_str, dim_symbols
from .types import NATIVE, is_code

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class _Checker:
    def __init__(self, k: n.Kernel):
        self.k = k
        self.errors: list[CompileError] = []
        self.all_names: dict[str, n.Value] = {}
        self.scopes: list[dict[str, n.Value]] = [{}]
        self.closed: dict[str, n.Value] = {}  # defined in a region that has ended
        self.intents: dict[str, str] = {}
        self.symbols: set[str] = set()
        self.const_dtypes: dict[str, str] = {}
        self.later: set[str] = set()  # every name the body defines somewhere

    def err(self, msg: str, ins: n.Instr | None = None, hint: str | None = None) -> None:
        loc = ins.loc if ins is not None else self.k.loc
        prefix = f"{describe(ins)}: " if ins is not None else f"kernel {self.k.name}: "
        self.errors.append(CompileError(prefix + msg, location=loc, hint=hint))

    # -------------------------------------------------------------------- signature
    def signature(self) -> None:
        k = self.k
        if not _IDENT.match(k.name or ""):
            self.err(f"kernel name {k.name!r} is not an identifier")
        for p in k.params:
            v = p.value
            if not _IDENT.match(v.name):
                self.err(f"parameter name {v.name!r} is not an identifier")
            if v.name in self.all_names:
                self.err(f"parameter {v} is declared twice")
            self.all_names[v.name] = v
            self.scopes[0][v.name] = v
            if isinstance(p, n.TensorParam):
                if v.type.scope != "global":
                    self.err(f"tensor parameter {v} must be global, got {tstr(v.type)}")
                if v.type.rank == 0:
                    self.err(f"tensor parameter {v} must have rank >= 1 (use a scalar parameter)")
                for d in v.type.shape:
                    if not isinstance(d, (int, Sym, SymOp)) or isinstance(d, bool) or (isinstance(d, int) and d <= 0):
                        self.err(f"tensor parameter {v} has an invalid size {d!r} (expected a positive int or "
                                 f"a size expression)")
                    else:
                        self.symbols |= dim_symbols(d)
                for problem in check_type(v.type, f"tensor parameter {v}"):
                    self.err(problem)
                if p.intent not in n.INTENTS:
                    self.err(f"tensor parameter {v} has intent {p.intent!r}, expected one of {n.INTENTS}")
                self.intents[v.name] = p.intent
            elif isinstance(p, n.ScalarParam):
                if not v.type.is_scalar or is_code(v.dtype):
                    self.err(f"scalar parameter {v} must be a native scalar, got {tstr(v.type)}")
            else:
                self.err(f"unknown parameter kind {type(p).__name__}")
        for c in k.constants:
            if not _IDENT.match(c.name):
                self.err(f"constant name {c.name!r} is not an identifier")
            if c.name in self.const_dtypes or c.name in self.all_names:
                self.err(f"constant {c.name!r} is declared twice (or clashes with a parameter)")
            if c.dtype not in NATIVE:
                self.err(f"constant {c.name!r} must have a native dtype, got {c.dtype}")
            elif c.value is not None:
                why = literal_fits(c.value, c.dtype)
                if why:
                    self.err(f"constant {c.name!r}: {why}")
            self.const_dtypes[c.name] = c.dtype
        self.symbols -= set(self.const_dtypes)
        if not 1 <= len(k.grid) <= 3:
            self.err(f"the grid must have 1 to 3 dimensions, got {len(k.grid)}")
        for d in k.grid:
            if not isinstance(d, (int, Sym, SymOp)) or isinstance(d, bool):
                self.err(f"grid size {d!r} is not an int or size expression")
                continue
            unknown = dim_symbols(d) - self.symbols - set(self.const_dtypes)
            if unknown:
                self.err(f"grid size {dim_str(d)} uses {', '.join(sorted(unknown))}, which is neither a "
                         f"tensor shape symbol nor a constant")

    # -------------------------------------------------------------------- body
    def lookup(self, v: n.Value, ins: n.Instr) -> None:
        for scope in reversed(self.scopes):
            if v.name in scope:
                d = scope[v.name]
                if d.type != v.type:
                    self.err(f"uses {v} as {tstr(v.type)}, but it is defined as {tstr(d.type)}", ins)
                return
        if v.name in self.closed:
            self.err(f"uses {v}, which is defined inside a for/if body that has ended (carry it out with "
                     f"yield)", ins)
        elif v.name in self.all_names or v.name in self.later:
            self.err(f"uses {v} before its definition", ins)
        else:
            self.err(f"uses {v}, which is never defined", ins)

    def define(self, v: n.Value, ins: n.Instr) -> None:
        if not _IDENT.match(v.name):
            self.err(f"value name {v.name!r} is not an identifier", ins)
        if v.name in self.all_names:
            self.err(f"{v} is defined twice (SSA: every value has one definition)", ins)
        self.all_names[v.name] = v
        self.scopes[-1][v.name] = v

    def region(self, body: tuple[n.Instr, ...], owner: n.Instr, defs: tuple[n.Value, ...],
               expect: tuple[n.Value, ...], what: str) -> None:
        self.scopes.append({})
        for v in defs:
            self.define(v, owner)
        if not body or not isinstance(body[-1], n.Yield):
            self.err(f"the {what} must end with a yield", owner)
        self.block(body, top=False)
        if body and isinstance(body[-1], n.Yield):
            ys = body[-1].values
            if len(ys) != len(expect):
                self.err(f"the {what} yields {len(ys)} values, expected {len(expect)}", body[-1])
            else:
                for y, e in zip(ys, expect):
                    if y.type != e.type:
                        self.err(f"the {what} yields {y} of type {tstr(y.type)} for {e} of type {tstr(e.type)}",
                                 body[-1])
        self.closed.update(self.scopes.pop())

    def block(self, body: tuple[n.Instr, ...], top: bool) -> None:
        for i, ins in enumerate(body):
            if not isinstance(ins, n.Instr):
                self.err(f"body element {i} is not an instruction: {ins!r}")
                continue
            for v in dict.fromkeys(ins.inputs):
                self.lookup(v, ins)
            for problem in check_instr(ins):
                self.err(problem, ins)
            self.kernel_rules(ins)
            if isinstance(ins, n.Yield) and (top or i != len(body) - 1):
                where = "at kernel level" if top else "before the end of a body"
                self.err(f"yield {where}: yield only ends a for/if body", ins)
            if isinstance(ins, n.For):
                self.region(ins.body, ins, (ins.iv, *ins.iter_args), ins.iter_args, "loop body")
            elif isinstance(ins, n.If):
                self.region(ins.then_body, ins, (), ins.results, "then-branch")
                self.region(ins.else_body, ins, (), ins.results, "else-branch")
            for v in ins.outputs:
                self.define(v, ins)

    def kernel_rules(self, ins: n.Instr) -> None:
        if isinstance(ins, (n.ProgramId, n.NumPrograms)):
            if isinstance(ins.axis, int) and not 0 <= ins.axis < len(self.k.grid):
                self.err(f"axis {ins.axis} but the grid has {len(self.k.grid)} dimension(s)", ins)
        elif isinstance(ins, n.SymbolRef):
            if ins.name in self.const_dtypes:
                want = self.const_dtypes[ins.name]
            elif ins.name in self.symbols:
                want = "int32"
            else:
                self.err(f"{ins.name!r} is neither a shape symbol nor a constant of the kernel", ins)
                return
            if ins.result.dtype != want:
                self.err(f"{ins.name!r} has dtype {want}, but the result is {tstr(ins.result.type)}", ins)
        elif isinstance(ins, (n.Load, n.CopyToShared)):
            if self.intents.get(ins.tensor.name) == "out":
                self.err(f"loads from {ins.tensor}, which is declared out (write-only)", ins,
                         hint="declare it inout")
        elif isinstance(ins, n.Store):
            if self.intents.get(ins.tensor.name) == "in":
                self.err(f"stores to {ins.tensor}, which is declared in (read-only)", ins,
                         hint="declare it out or inout")


def verify_problems(kernel: n.Kernel) -> list[CompileError]:
    """Every problem of ``kernel`` (empty: valid)."""
    c = _Checker(kernel)
    for ins in n.walk(tuple(kernel.body)):
        c.later.update(v.name for v in ins.outputs)
        if isinstance(ins, n.For):
            c.later.update(v.name for v in (ins.iv, *ins.iter_args))
    c.signature()
    c.block(tuple(kernel.body), top=True)
    return c.errors


def verify(kernel: n.Kernel) -> n.Kernel:
    """Return ``kernel`` if it is valid, else raise one CompileError carrying every problem."""
    errors = verify_problems(kernel)
    if errors:
        first = errors[0]
        raise CompileError(first.message, location=first.location, hint=first.hint, notes=errors[1:])
    return kernel


__all__ = ["verify", "verify_problems"]
