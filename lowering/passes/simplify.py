"""The ``simplify-indices`` pass: scalar index arithmetic through sympy, re-emitted minimal; bounds checks
proven away.

1. :class:`~.indexing.IndexAnalysis` turns every i32 scalar built from ``program_id``, ``num_programs``, loop
   variables, shape symbols, constants and ``add sub mul floordiv mod minimum maximum`` into a simplified
   sympy expression, using the bounds it knows (``0 <= program_id < grid``, ``start <= iv < stop`` with the
   step's divisibility, shape symbols >= 0, divisibility promised through ``ctx.options["divisibility"]``).
2. Every index value that something other than index arithmetic uses (a load offset, a loop bound, a
   comparison, a broadcast, ...) is re-emitted from its expression where it was defined, sharing
   sub-expressions already computed in scope; the original name is kept for the final instruction. Index
   arithmetic that only fed other index arithmetic becomes dead and is removed (only scalar index
   instructions are removed; other dead code is left to ``dce``).
   ``(pid*64 + i*64) // 64`` becomes ``pid + i``; ``(k + 16) % 32`` with ``k`` stepping by 32 from 0
   becomes ``16``.
3. Scalar comparisons of index values that the bounds decide become ``const(true/false)``.
4. Each axis of ``load`` / ``store`` / ``copy_to_shared`` that is proven in bounds (``0 <= offset`` and
   ``offset + extent <= size``) gets ``checked=false``. The interpreter raises on an out-of-bounds access
   of an unchecked axis, so a wrong proof cannot go unnoticed in tests.

Like Triton and TVM, the pass treats i32 index arithmetic as exact integers (no wrap-around): kernels
index tensors of fewer than 2**31 elements per axis.

>>> from lowbit.ir import KernelBuilder, print_kernel
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid("cdiv(N, 64)")
>>> pid = kb.program_id(0)
>>> off = kb.floordiv(kb.add(kb.mul(pid, 64), 128), 64, name="off")
>>> kb.store(x, kb.zeros([1], "f32"), [off])
>>> from lowbit.lowering.passes.manager import PassContext
>>> from lowbit.lowering.target import parse_target
>>> out = simplify_indices(kb.build(), PassContext(parse_target("tvm:llvm")))
>>> print("\\n".join(print_kernel(out).splitlines()[2:-1]))
  %pid0 = program_id(axis=0) : i32
  %c.2 = const(2) : i32
  %off = add(%pid0, %c.2) : i32
  %zeros = full(0.0) : f32[1]
  store(%x, %zeros, [%off])
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import sympy

from lowbit.ir import nodes as n
from lowbit.ir.types import TileType

from .body_rewriter import BodyRewriter, Namer
from .cleanup import dead_code_elimination
from .indexing import FloorDiv, IMax, IMin, IMod, IndexAnalysis, fits_i32, is_index
from .manager import PassContext, register_pass

_I32 = TileType("int32", ())


class _CannotEmit(Exception):
    """The expression has no IR form here (a rational coefficient, an i32 overflow, an atom out of scope)."""


def materialized(kernel: n.Kernel, analysis: IndexAnalysis) -> set[str]:
    """Index values that something other than index arithmetic uses."""
    need: set[str] = set()
    for ins in kernel.walk():
        if isinstance(ins, n.Binary) and ins.result.name in analysis.translated:
            continue
        need.update(v.name for v in ins.inputs if v.name in analysis.translated)
    return need


class _Emitter:
    """Emits index expressions as IR, reusing values already computed in scope (a stack of expr -> Value)."""

    def __init__(self, analysis: IndexAnalysis, namer: Namer):
        self.a = analysis
        self.namer = namer
        self.scopes: list[dict[Any, n.Value]] = [{}]
        self.out: list[n.Instr] = []

    # -------------------------------------------------------------- scopes
    def lookup(self, key: Any) -> Optional[n.Value]:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def remember(self, key: Any, value: n.Value) -> None:
        if self.lookup(key) is None:
            self.scopes[-1][key] = value

    def transaction(self, e: sympy.Expr, result: Optional[n.Value], hint: str) -> tuple[n.Value, list[n.Instr]]:
        """Emit ``e`` (the last instruction defining ``result`` if given); all or nothing."""
        self.scopes.append({})
        saved = self.out
        self.out = []
        try:
            v = self.emit(e, result, hint)
        except _CannotEmit:
            self.scopes.pop()
            self.out = saved
            raise
        frame, instrs = self.scopes.pop(), self.out
        self.out = saved
        for key, value in frame.items():
            self.remember(key, value)
        return v, instrs

    # -------------------------------------------------------------- instructions
    def _new(self, hint: str, result: Optional[n.Value]) -> n.Value:
        return result if result is not None else self.namer.fresh(hint, _I32)

    def _binary(self, op: str, a: n.Value, b: n.Value, e: sympy.Expr, result: Optional[n.Value], hint: str
                ) -> n.Value:
        v = self._new(hint, result)
        self.out.append(n.Binary(v, op, a, b))
        self.a.exprs[v.name] = e
        self.remember(e, v)
        return v

    def constant(self, value: int) -> n.Value:
        key = sympy.Integer(value)
        hit = self.lookup(key)
        if hit is not None:
            return hit
        if not fits_i32(value):
            raise _CannotEmit(f"constant {value} does not fit i32")
        v = self.namer.fresh("c", _I32)
        self.out.append(n.Constant(v, int(value)))
        self.a.exprs[v.name] = key
        self.remember(key, v)
        return v

    # -------------------------------------------------------------- expressions
    def emit(self, e: sympy.Expr, result: Optional[n.Value] = None, hint: str = "idx") -> n.Value:
        hit = self.lookup(e)
        if hit is not None:
            return hit
        if e.is_Integer:
            return self.constant(int(e))
        if e.is_Symbol:
            return self._atom(e, result)
        if e.is_Add:
            return self._add(e, result, hint)
        if e.is_Mul or e.is_Pow:
            return self._mul(e, result, hint)
        if isinstance(e, (FloorDiv, IMod)):
            x, d = e.args
            if not (d.is_Integer and int(d) > 0):
                raise _CannotEmit(f"cannot emit {e}")
            op = "floordiv" if isinstance(e, FloorDiv) else "mod"
            return self._binary(op, self.emit(x), self.constant(int(d)), e, result, hint)
        if isinstance(e, (IMin, IMax)):
            a, b = e.args
            op = "minimum" if isinstance(e, IMin) else "maximum"
            return self._binary(op, self.emit(a), self.emit(b), e, result, hint)
        raise _CannotEmit(f"cannot emit {e}")

    def _atom(self, s: sympy.Symbol, result: Optional[n.Value] = None) -> n.Value:
        atom = self.a.atoms.get(s)
        if atom is None:
            raise _CannotEmit(f"unknown atom {s}")
        if atom.kind in ("pid", "nprog"):
            v = self.namer.fresh("pid" if atom.kind == "pid" else "nprog", _I32)
            self.out.append(n.ProgramId(v, atom.axis) if atom.kind == "pid" else n.NumPrograms(v, atom.axis))
        elif atom.kind == "shape":
            v = self.namer.fresh(atom.name, _I32)
            self.out.append(n.SymbolRef(v, atom.name))
        elif atom.kind == "quotient":
            raw = self.lookup(("raw", atom.name))
            if raw is None:
                raw = self.namer.fresh(atom.name, _I32)
                self.out.append(n.SymbolRef(raw, atom.name))
                self.remember(("raw", atom.name), raw)
            return self._binary("floordiv", raw, self.constant(atom.divisor), s, result, atom.name + "_q")
        elif atom.kind == "trip":
            iv = atom.value
            if self.lookup(("value", iv.name)) is None:
                raise _CannotEmit(f"loop variable {iv} is not in scope")
            base = iv
            if atom.offset != 0:
                base = self._binary("sub", iv, self.emit(atom.offset), sympy.expand(atom.divisor * s), None, "rel")
            return self._binary("floordiv", base, self.constant(atom.divisor), s, result, "trip")
        else:  # iv with a non-constant step, opaque values: must be in scope already
            raise _CannotEmit(f"{s} is not in scope")
        self.a.exprs[v.name] = s
        self.remember(s, v)
        return v

    def _cost(self, e: sympy.Expr) -> int:
        """Instructions needed to emit ``e`` now (a rough model of :meth:`emit`)."""
        if self.lookup(e) is not None or e.is_Number:
            return 0
        if e.is_Symbol:
            atom = self.a.atoms.get(e)
            return 2 if atom is not None and atom.kind in ("trip", "quotient") else 0
        if e.is_Add:
            terms = sympy.Add.make_args(e)
            return sum(self._cost(t) for t in terms) + len(terms) - 1
        if e.is_Mul:
            c, rest = e.as_coeff_Mul()
            factors = sympy.Mul.make_args(rest)
            return sum(self._cost(f) for f in factors) + len(factors) - 1 + (c not in (1, -1))
        return sum(self._cost(a) for a in e.args) + 1

    def _add(self, e: sympy.Expr, result: Optional[n.Value], hint: str) -> n.Value:
        c0, rest = e.as_coeff_Add()
        terms = list(sympy.Add.make_args(rest))
        if c0 != 0 and self.lookup(rest) is not None:
            return self._plus_const(self.lookup(rest), int(c0), e, result, hint)
        if c0 == 0 and len(terms) > 2:  # a partial sum already computed
            for t in terms:
                base = self.lookup(sympy.expand(e - t))
                if base is not None:
                    return self._plus_term(base, t, e, result, hint)
        coeffs = [t.as_coeff_Mul()[0] for t in terms]
        g = 0
        for c in coeffs:
            g = sympy.gcd(g, c)
        g = abs(int(g)) if g.is_Integer else 1
        if len(terms) > 1 and g > 1:
            inner = sympy.expand(rest / g)
            factored = self._cost(inner) + 1
            if factored < sum(self._cost(t) for t in terms) + len(terms) - 1:
                inner_e = sympy.expand(g * inner)
                acc = self.lookup(inner_e)
                if acc is None:
                    acc = self._binary("mul", self.emit(inner), self.constant(g), inner_e,
                                       result if c0 == 0 else None, hint)
                return acc if c0 == 0 else self._plus_const(acc, int(c0), e, result, hint)
        pos = [t for t in terms if t.as_coeff_Mul()[0] > 0]
        neg = [t for t in terms if t.as_coeff_Mul()[0] < 0]
        if pos:
            acc, done = self.emit(pos[0]), pos[0]
            rest_terms = pos[1:] + neg
        else:
            acc, done = self.constant(int(c0)), c0
            rest_terms, c0 = neg, 0
        for i, t in enumerate(rest_terms):
            done = sympy.expand(done + t)
            last = i == len(rest_terms) - 1 and c0 == 0
            acc = self._plus_term(acc, t, done, result if last else None, hint)
        if c0 != 0:
            acc = self._plus_const(acc, int(c0), e, result, hint)
        return acc

    def _plus_term(self, acc: n.Value, t: sympy.Expr, e: sympy.Expr, result: Optional[n.Value], hint: str
                   ) -> n.Value:
        if t.as_coeff_Mul()[0] < 0:
            return self._binary("sub", acc, self.emit(sympy.expand(-t)), e, result, hint)
        return self._binary("add", acc, self.emit(t), e, result, hint)

    def _plus_const(self, acc: n.Value, c: int, e: sympy.Expr, result: Optional[n.Value], hint: str) -> n.Value:
        if c < 0:
            return self._binary("sub", acc, self.constant(-c), e, result, hint)
        return self._binary("add", acc, self.constant(c), e, result, hint)

    def _mul(self, e: sympy.Expr, result: Optional[n.Value], hint: str) -> n.Value:
        c, rest = e.as_coeff_Mul()
        if not c.is_Integer:
            raise _CannotEmit(f"rational coefficient in {e}")
        if c != 1:
            base = self.emit(rest)
            if c == -1:
                v = self._new(hint, result)
                self.out.append(n.Unary(v, "neg", base))
                self.a.exprs[v.name] = e
                self.remember(e, v)
                return v
            return self._binary("mul", base, self.constant(int(c)), e, result, hint)
        factors: list[sympy.Expr] = []
        for f in sympy.Mul.make_args(rest):
            if f.is_Pow and f.exp.is_Integer and int(f.exp) > 0:
                factors.extend([f.base] * int(f.exp))
            elif f.is_Pow:
                raise _CannotEmit(f"cannot emit {f}")
            else:
                factors.append(f)
        acc, done = self.emit(factors[0]), factors[0]
        for i, f in enumerate(factors[1:], start=1):
            done = done * f
            acc = self._binary("mul", acc, self.emit(f), done, result if i == len(factors) - 1 else None, hint)
        return acc


class _Simplifier(BodyRewriter):
    def __init__(self, kernel: n.Kernel, analysis: IndexAnalysis):
        super().__init__()
        self.a = analysis
        self.need = materialized(kernel, analysis)
        self.em = _Emitter(analysis, Namer(kernel))
        self.proofs = 0

    def enter_region(self, owner: n.Instr, body):
        self.em.scopes.append({})
        if isinstance(owner, n.For) and body is owner.body:
            self.em.remember(("value", owner.iv.name), owner.iv)
            self.em.remember(self.a.expr_of(owner.iv), owner.iv)
            for v in owner.iter_args:
                if v.name in self.a.exprs:
                    self.em.remember(self.a.exprs[v.name], v)
        out = self.block(body)
        self.em.scopes.pop()
        return out

    def visit(self, ins: n.Instr) -> list[n.Instr]:
        if isinstance(ins, n.Binary) and ins.result.name in self.a.translated:
            return self.index_op(ins)
        if isinstance(ins, n.Binary) and ins.op in n.COMPARE_OPS and is_index(ins.lhs):
            decided = self.compare(ins)
            if decided is not None:
                return [n.Constant(ins.result, decided, loc=ins.loc)]
        if isinstance(ins, (n.Load, n.Store, n.CopyToShared)):
            ins = self.prove_in_bounds(ins)
        ins = self.default(ins)
        for v in ins.outputs:
            e = self.a.exprs.get(v.name)
            if e is not None:
                self.em.remember(e, v)
                if isinstance(ins, n.SymbolRef):
                    self.em.remember(("raw", ins.name), v)
        return [ins]

    def index_op(self, ins: n.Binary) -> list[n.Instr]:
        r = ins.result
        if r.name not in self.need:
            return [ins]  # feeds only index arithmetic that is re-emitted: dead afterwards
        e = self.a.exprs[r.name]
        try:
            v, instrs = self.em.transaction(e, r, r.name)
        except _CannotEmit:
            self.em.remember(e, r)
            return [ins]
        if v != r:
            self.replace_value(r, v)
        if ins.loc is not None:
            instrs = [replace(i, loc=ins.loc) if i.loc is None else i for i in instrs]
        return instrs

    def compare(self, ins: n.Binary) -> Optional[bool]:
        a, b = self.a.expr_of(ins.lhs), self.a.expr_of(ins.rhs)
        nonneg = self.a.is_nonneg
        lt, gt = nonneg(b - a - 1), nonneg(a - b - 1)   # a < b, a > b
        le, ge = nonneg(b - a), nonneg(a - b)           # a <= b, a >= b
        table = {"lt": (lt, ge), "le": (le, gt), "gt": (gt, le), "ge": (ge, lt),
                 "eq": (le and ge, lt or gt), "ne": (lt or gt, le and ge)}
        yes, no = table[ins.op]
        return True if yes else False if no else None

    def prove_in_bounds(self, ins):
        tensor = ins.tensor
        if isinstance(ins, n.Load):
            extents = ins.result.type.shape
        elif isinstance(ins, n.Store):
            extents = ins.value.type.shape
        else:
            extents = ins.dst.type.shape
        rank = len(ins.offsets)
        checked = list(ins.checked) if ins.checked is not None else [True] * rank
        changed = False
        for ax, (off, extent, size) in enumerate(zip(ins.offsets, extents, tensor.type.shape)):
            if not checked[ax]:
                continue
            o = self.a.expr_of(off)
            if self.a.is_nonneg(o) and self.a.is_nonneg(self.a.dim(size) - int(extent) - o):
                checked[ax] = False
                changed = True
                self.proofs += 1
        return replace(ins, checked=tuple(checked)) if changed else ins


_SCALAR_INDEX = (n.Binary, n.Constant, n.SymbolRef, n.ProgramId, n.NumPrograms)


def _scalar_index(ins: n.Instr) -> bool:
    """Instructions of scalar index arithmetic (what this pass leaves dead and removes)."""
    return isinstance(ins, _SCALAR_INDEX) and is_index(ins.outputs[0])


def simplify_kernel(kernel: n.Kernel, divisibility: dict[str, int] | None = None) -> n.Kernel:
    """The pass without a context (``divisibility`` as in ``ctx.options["divisibility"]``)."""
    analysis = IndexAnalysis(kernel, divisibility)
    out = _Simplifier(kernel, analysis).run(kernel)
    return dead_code_elimination(out, removable=_scalar_index)


@register_pass("simplify-indices", "scalar index arithmetic simplified with sympy and bounds (program ids, loop "
                                   "ranges, divisibility), re-emitted minimal; accesses proven in bounds unchecked")
def simplify_indices(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    return simplify_kernel(kernel, ctx.options.get("divisibility"))


__all__ = ["simplify_indices", "simplify_kernel", "materialized"]
