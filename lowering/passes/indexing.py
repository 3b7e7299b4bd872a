"""Scalar index arithmetic as sympy expressions, with bounds: the analysis behind ``simplify-indices`` and
``vectorize``.

Every ``i32`` scalar of a kernel gets an expression over *atoms*:

==============  =================================================  =====================================
atom            stands for                                          known bounds
==============  =================================================  =====================================
``@pid0``       ``program_id(axis=0)``                              ``0 <= . <= grid[0] - 1``
``@nprog0``     ``num_programs(axis=0)``                            ``= grid[0]``
``K``           the shape symbol ``K`` (``d*K@q`` when the caller   ``>= 0``
                promises ``K % d == 0``, see ``divisibility``)
``@t:k``        the trip number of the loop with variable ``%k``:   ``0 <= . <= cdiv(stop - start, s) - 1``
                ``%k = start + s * @t:k`` for a constant step ``s``
``@iv:k``       a loop variable with a non-constant step            ``start <= . <= stop - 1``
``%v``          anything else (a scalar parameter, a value loaded   none
                or carried by a loop, ...)
==============  =================================================  =====================================

``add sub mul`` become sympy arithmetic; ``floordiv``, ``mod``, ``minimum``, ``maximum`` become the inert
functions :class:`FloorDiv`, :class:`IMod`, :class:`IMin`, :class:`IMax` (floor semantics, like the IR; sympy's
own ``floor``/``Mod``/``Min``/``Max`` are avoided: their automatic simplification is wrong for nested Min/Max).
:meth:`IndexAnalysis.simplify` uses the bounds: ``(64*p + r) // 64 = p`` when ``0 <= r < 64``,
``x % q = x`` when ``0 <= x < q``, ``min(a, b) = a`` when ``a <= b``, ``(x // a) // b = x // (a*b)``.
Index arithmetic is treated as mathematical integers: like Triton and TVM, the analysis assumes i32 index
computations do not wrap (tensors of fewer than 2**31 elements per axis).

Bounds are sympy expressions over the shape symbols (all >= 0); :meth:`IndexAnalysis.is_nonneg` proves
``e >= 0`` by bounding ``e`` from below and checking that the bound is a polynomial with nonnegative
coefficients (``//``, ``%``, ``min``, ``max`` of shape symbols are bounded or split first).

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid("cdiv(N, 64)")
>>> pid = kb.program_id(0)
>>> with kb.for_range(0, 4, 1) as loop:
...     off = kb.floordiv(kb.add(kb.mul(pid, 64), kb.mul(loop.iv, 64)), 64, name="off")
...     kb.store(x, kb.zeros([1], "f32"), [off])
...     loop.yield_([])
>>> a = IndexAnalysis(kb.build())
>>> a.exprs["off"]
@pid0 + @t:i
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import sympy

from lowbit.ir import nodes as n
from lowbit.ir.symbolic import Dim, Sym

INDEX_OPS = ("add", "sub", "mul", "floordiv", "mod", "minimum", "maximum")


# sympy's own floor / Mod / Min / Max simplify using assumptions that are wrong for nested Min / Max
# (sympy 1.14: Mod(Min(2, 2*t), 6) -> 0, floor(Min(2, 2*t)/6) -> Min(2, 2*t)/6). The analysis therefore
# uses these inert integer functions and does every simplification itself, under proven bounds.
class FloorDiv(sympy.Function):
    """``x // d`` (floor division, as the IR's ``floordiv``); ``d`` a positive integer for simplification."""

    nargs = 2
    is_integer = True

    @classmethod
    def eval(cls, x, d):
        if x.is_Integer and d.is_Integer and int(d) != 0:
            return sympy.Integer(int(x) // int(d))
        if d == 1:
            return x
        return None

    def _sympystr(self, printer):
        return f"(({printer.doprint(self.args[0])}) // {printer.doprint(self.args[1])})"


class IMod(sympy.Function):
    """``x % d`` with the sign of ``d`` (as the IR's ``mod``)."""

    nargs = 2
    is_integer = True

    @classmethod
    def eval(cls, x, d):
        if x.is_Integer and d.is_Integer and int(d) != 0:
            return sympy.Integer(int(x) % int(d))
        if d == 1 or d == -1:
            return sympy.Integer(0)
        return None

    def _sympystr(self, printer):
        return f"(({printer.doprint(self.args[0])}) % {printer.doprint(self.args[1])})"


class IMin(sympy.Function):
    """``min(a, b)`` of integers."""

    nargs = 2
    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return min(a, b)
        if a == b:
            return a
        return None


class IMax(sympy.Function):
    """``max(a, b)`` of integers."""

    nargs = 2
    is_integer = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return max(a, b)
        if a == b:
            return a
        return None


_GENERATORS = (FloorDiv, IMod, IMin, IMax)


def dim_expr(d: Dim, env: Mapping[str, sympy.Expr]) -> sympy.Expr:
    """A size expression with the analysis' functions (``cdiv(a, b)`` is ``(a + b - 1) // b``)."""
    if isinstance(d, int):
        return sympy.Integer(d)
    if isinstance(d, Sym):
        return env[d.name] if d.name in env else sympy.Symbol(d.name, integer=True, nonnegative=True)
    a, b = dim_expr(d.lhs, env), dim_expr(d.rhs, env)
    if d.op == "+":
        return sympy.expand(a + b)
    if d.op == "-":
        return sympy.expand(a - b)
    if d.op == "*":
        return sympy.expand(a * b)
    if d.op == "//":
        return FloorDiv(a, b)
    if d.op == "%":
        return IMod(a, b)
    if d.op == "cdiv":
        return FloorDiv(sympy.expand(a + b - 1), b)
    return IMin(a, b) if d.op == "min" else IMax(a, b)
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def is_index(v: n.Value) -> bool:
    """An i32 scalar in registers: the values index arithmetic is made of."""
    return v.type.dtype == "int32" and v.type.shape == () and v.type.scope == "register"


@dataclass
class Atom:
    """What an atom symbol stands for and how to compute it again (see the module docstring)."""

    symbol: sympy.Symbol
    kind: str                          # pid | nprog | shape | quotient | trip | iv | opaque
    lo: Optional[sympy.Expr] = None    # bounds, as expressions over other atoms (None: unbounded)
    hi: Optional[sympy.Expr] = None
    value: Optional[n.Value] = None    # iv (trip, iv) or the value itself (opaque)
    axis: int = 0                      # pid, nprog
    name: str = ""                     # shape, quotient: the symbol's name
    offset: sympy.Expr = sympy.Integer(0)  # trip: the loop start
    divisor: int = 1                   # trip: the step; quotient: the promised divisor


class IndexAnalysis:
    """Expressions and bounds of every i32 scalar of ``kernel`` (see the module docstring).

    ``divisibility`` maps shape symbols to divisors the caller guarantees (``{"K": 64}``: K is a multiple of
    64), which lets loops and accesses be proven in bounds; it must then hold for every call.
    """

    def __init__(self, kernel: n.Kernel, divisibility: Mapping[str, int] | None = None):
        self.kernel = kernel
        self.exprs: dict[str, sympy.Expr] = {}
        self.translated: set[str] = set()        # values defined by index arithmetic (INDEX_OPS)
        self.atoms: dict[sympy.Symbol, Atom] = {}
        self.shape_level: set[sympy.Symbol] = set()
        self.shape_env: dict[str, sympy.Expr] = {}
        self._bounds: dict[tuple[sympy.Expr, bool], Optional[sympy.Expr]] = {}
        self._simplified: dict[sympy.Expr, sympy.Expr] = {}
        divisibility = dict(divisibility or {})
        const_names = {c.name for c in kernel.constants}
        for c in kernel.constants:
            if c.value is not None and c.dtype == "int32":
                self.shape_env[c.name] = sympy.Integer(int(c.value))
            elif c.value is None:
                s = sympy.Symbol(c.name, integer=True, nonnegative=True)
                self.shape_env[c.name] = s
                self.shape_level.add(s)
        for name in kernel.shape_symbols():
            d = int(divisibility.get(name, 1))
            if d > 1:
                q = sympy.Symbol(name + "@q", integer=True, nonnegative=True)
                self.atoms[q] = Atom(q, "quotient", q, q, name=name, divisor=d)
                self.shape_level.add(q)
                self.shape_env[name] = d * q
            else:
                s = sympy.Symbol(name, integer=True, nonnegative=True)
                self.atoms[s] = Atom(s, "shape", s, s, name=name)
                self.shape_level.add(s)
                self.shape_env[name] = s
        unknown = set(divisibility) - set(self.shape_env) - const_names
        if unknown:
            from lowbit.errors import CompileError

            raise CompileError(f"divisibility names unknown shape symbol(s) {', '.join(sorted(unknown))}",
                               hint="shape symbols of " + kernel.name + ": " + ", ".join(kernel.shape_symbols()))
        self.grid = tuple(self.dim(d) for d in kernel.grid)
        self._walk(kernel.body)

    # ------------------------------------------------------------------ building
    def dim(self, d: Dim) -> sympy.Expr:
        """A size expression (tensor extent, grid size) over the shape symbols."""
        return self.simplify(dim_expr(d, self.shape_env))

    def _atom(self, name: str, kind: str, **kw: Any) -> sympy.Symbol:
        nonneg = kind in ("pid", "nprog", "trip")
        s = sympy.Symbol(name, integer=True, nonnegative=True) if nonneg else sympy.Symbol(name, integer=True)
        if s not in self.atoms:
            self.atoms[s] = Atom(s, kind, **kw)
        return s

    def expr_of(self, v: n.Value) -> sympy.Expr:
        """The expression of an i32 scalar (an unbounded atom for values the analysis cannot see into)."""
        e = self.exprs.get(v.name)
        if e is None:
            e = self._atom("%" + v.name, "opaque", value=v)
            self.exprs[v.name] = e
        return e

    def _walk(self, body: tuple[n.Instr, ...]) -> None:
        for ins in body:
            if isinstance(ins, n.For):
                self._loop(ins)
                self._walk(ins.body)
            elif isinstance(ins, n.If):
                self._walk(ins.then_body)
                self._walk(ins.else_body)
            else:
                self._instr(ins)

    def _loop(self, ins: n.For) -> None:
        start, stop, step = (self.expr_of(v) for v in (ins.start, ins.stop, ins.step))
        if step.is_Integer and int(step) > 0:
            s = int(step)
            t = self._atom("@t:" + ins.iv.name, "trip", lo=sympy.Integer(0),
                           hi=self.simplify(FloorDiv(sympy.expand(stop - start + s - 1), s) - 1), value=ins.iv,
                           offset=start, divisor=s)
            self.exprs[ins.iv.name] = sympy.expand(start + s * t)
        else:
            self.exprs[ins.iv.name] = self._atom("@iv:" + ins.iv.name, "iv", lo=start, hi=stop - 1, value=ins.iv)

    def _instr(self, ins: n.Instr) -> None:
        if isinstance(ins, n.Constant) and is_index(ins.result):
            self.exprs[ins.result.name] = sympy.Integer(int(ins.value))
        elif isinstance(ins, n.ProgramId):
            g = self.grid[ins.axis]
            self.exprs[ins.result.name] = self._atom(f"@pid{ins.axis}", "pid", lo=sympy.Integer(0), hi=g - 1,
                                                     axis=ins.axis)
        elif isinstance(ins, n.NumPrograms):
            g = self.grid[ins.axis]
            self.exprs[ins.result.name] = self._atom(f"@nprog{ins.axis}", "nprog", lo=g, hi=g, axis=ins.axis)
        elif isinstance(ins, n.SymbolRef) and is_index(ins.result) and ins.name in self.shape_env:
            self.exprs[ins.result.name] = self.shape_env[ins.name]
        elif isinstance(ins, n.Binary) and ins.op in INDEX_OPS and is_index(ins.result):
            e = self.combine(ins.op, self.expr_of(ins.lhs), self.expr_of(ins.rhs))
            if e is not None:
                self.exprs[ins.result.name] = e
                self.translated.add(ins.result.name)

    def combine(self, op: str, a: sympy.Expr, b: sympy.Expr) -> Optional[sympy.Expr]:
        """``op(a, b)`` simplified, or None when the IR op has no faithful sympy form here (division by
        something that is not a positive constant)."""
        if op == "add":
            e = a + b
        elif op == "sub":
            e = a - b
        elif op == "mul":
            e = a * b
        elif op in ("floordiv", "mod"):
            if not (b.is_Integer and int(b) > 0):
                return None
            e = FloorDiv(a, b) if op == "floordiv" else IMod(a, b)
        elif op == "minimum":
            e = IMin(a, b)
        else:
            e = IMax(a, b)
        return self.simplify(e)

    # ------------------------------------------------------------------ simplification
    def simplify(self, e: sympy.Expr) -> sympy.Expr:
        """``e`` expanded, with floor / Mod / Min / Max removed or reduced where the bounds allow."""
        e = sympy.expand(e)
        hit = self._simplified.get(e)
        if hit is None:
            hit = sympy.expand(self._simp(e))
            self._simplified[e] = hit
        return hit

    def _simp(self, e: sympy.Expr) -> sympy.Expr:
        if e.is_Atom:
            return e
        args = [self._simp(a) for a in e.args]
        if isinstance(e, FloorDiv):
            return self._simp_floordiv(sympy.expand(args[0]), args[1])
        if isinstance(e, IMod):
            return self._simp_mod(sympy.expand(args[0]), args[1])
        if isinstance(e, (IMin, IMax)):
            return self._simp_minmax(e.func, sympy.expand(args[0]), sympy.expand(args[1]))
        return e.func(*args)

    @staticmethod
    def _split(p: sympy.Expr, d: int) -> Optional[tuple[sympy.Expr, sympy.Expr]]:
        """``p = q + r`` with ``q`` a multiple of ``d`` (every term's coefficient divisible by d) and ``r``
        the rest (constant reduced mod d); None unless ``p`` has integer coefficients."""
        q, r = sympy.Integer(0), sympy.Integer(0)
        for term, c in p.as_coefficients_dict().items():
            if not c.is_Integer:
                return None
            c = int(c)
            if term == 1:
                q += d * (c // d)
                r += c % d
            elif c % d == 0:
                q += c * term
            else:
                r += c * term
        return q, r

    def _simp_floordiv(self, x: sympy.Expr, d: sympy.Expr) -> sympy.Expr:
        if not (d.is_Integer and int(d) > 0):
            return FloorDiv(x, d)
        q = int(d)
        if isinstance(x, FloorDiv) and x.args[1].is_Integer and int(x.args[1]) > 0:  # (y // a) // q = y // (a q)
            return self._simp_floordiv(x.args[0], sympy.Integer(int(x.args[1]) * q))
        split = self._split(x, q)
        if split is None:
            return FloorDiv(x, d)
        whole, r = split
        whole = sympy.expand(whole / q)
        if r == 0:
            return whole
        k = self._quotient_of_bounded(r, q)
        if k is not None:
            return sympy.expand(whole + k)
        return sympy.expand(whole + FloorDiv(r, d))

    def _simp_mod(self, x: sympy.Expr, d: sympy.Expr) -> sympy.Expr:
        if not (d.is_Integer and int(d) > 0):
            return IMod(x, d)
        q = int(d)
        split = self._split(x, q)
        if split is None:
            return IMod(x, d)
        _, r = split
        k = self._quotient_of_bounded(r, q)
        if k is not None:
            return sympy.expand(r - k * q)
        return IMod(r, d)

    def _quotient_of_bounded(self, r: sympy.Expr, d: int) -> Optional[int]:
        """``r // d`` when the bounds of ``r`` pin it to one value."""
        lo, hi = self.lower(r), self.upper(r)
        if lo is None or hi is None:
            return None
        k = int(lo) // d if lo.is_Integer else 0  # symbolic bounds: try the common case 0 <= r < d
        if self.shape_nonneg(lo - k * d) and self.shape_nonneg(k * d + d - 1 - hi):
            return k
        return None

    def _simp_minmax(self, func, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
        small, large = (a, b) if self.is_nonneg(b - a) else (b, a) if self.is_nonneg(a - b) else (None, None)
        if small is None:
            return func(a, b)
        return small if func is IMin else large

    # ------------------------------------------------------------------ bounds and proofs
    def lower(self, e: sympy.Expr) -> Optional[sympy.Expr]:
        """A lower bound of ``e`` over the shape symbols (None: unbounded)."""
        return self.bound(sympy.sympify(e), upper=False)

    def upper(self, e: sympy.Expr) -> Optional[sympy.Expr]:
        """An upper bound of ``e`` over the shape symbols (None: unbounded)."""
        return self.bound(sympy.sympify(e), upper=True)

    def bound(self, e: sympy.Expr, upper: bool) -> Optional[sympy.Expr]:
        key = (e, upper)
        if key in self._bounds:
            return self._bounds[key]
        self._bounds[key] = None  # cycle guard
        b = self._bound(e, upper)
        self._bounds[key] = b
        return b

    def _bound(self, e: sympy.Expr, upper: bool) -> Optional[sympy.Expr]:
        if e.is_Number:
            return e
        if e.is_Symbol:
            if e in self.shape_level:
                return e
            atom = self.atoms.get(e)
            b = None if atom is None else (atom.hi if upper else atom.lo)
            return None if b is None else self.bound(b, upper)
        if e.is_Add:
            parts = [self.bound(a, upper) for a in e.args]
            return None if any(p is None for p in parts) else sympy.Add(*parts)
        if e.is_Mul:
            c, rest = e.as_coeff_Mul()
            if c != 1:
                b = self.bound(rest, upper if c > 0 else not upper)
                return None if b is None else c * b
            factors = rest.args
            lows = [self.bound(f, False) for f in factors]
            if any(lo is None or not self.shape_nonneg(lo) for lo in lows):
                return None
            if not upper:
                return sympy.Mul(*lows)
            highs = [self.bound(f, True) for f in factors]
            return None if any(h is None for h in highs) else sympy.Mul(*highs)
        if e.is_Pow and e.exp.is_Integer and int(e.exp) > 0:
            lo = self.bound(e.base, False)
            if lo is None or not self.shape_nonneg(lo):
                return None
            b = lo if not upper else self.bound(e.base, True)
            return None if b is None else b ** e.exp
        if isinstance(e, FloorDiv):
            x, d = e.args
            if not (d.is_Integer and int(d) > 0):
                return None
            b = self.bound(x, upper)
            return None if b is None else self.simplify(FloorDiv(b, d))
        if isinstance(e, IMod):
            x, q = e.args
            if q.is_Integer and int(q) > 0:
                lo, hi = self.lower(x), self.upper(x)
                if lo is not None and hi is not None and self.shape_nonneg(lo) and self.shape_nonneg(q - 1 - hi):
                    return hi if upper else lo
                return q - 1 if upper else sympy.Integer(0)
            return None
        if isinstance(e, (IMin, IMax)):
            parts = [self.bound(a, upper) for a in e.args]
            known = [p for p in parts if p is not None]
            tight = isinstance(e, IMin) == upper  # upper of a min / lower of a max: any one argument bounds it
            if tight:
                return (known[0] if len(known) == 1 else e.func(*known)) if known else None
            return None if len(known) < len(parts) else e.func(*parts)
        return None

    def is_nonneg(self, e: sympy.Expr) -> bool:
        """Proven ``e >= 0`` wherever the values involved are defined (False: not proven)."""
        e = sympy.expand(sympy.sympify(e))
        if e.is_Number:
            return bool(e >= 0)
        lo = self.lower(e)
        return lo is not None and self.shape_nonneg(lo)

    def proves_le(self, a: sympy.Expr, b: sympy.Expr) -> bool:
        """Proven ``a <= b``."""
        return self.is_nonneg(b - a)

    def shape_nonneg(self, e: sympy.Expr, depth: int = 0) -> bool:
        """Proven ``e >= 0`` for an expression over shape symbols (each >= 0)."""
        e = sympy.expand(sympy.sympify(e))
        if e.is_Number:
            return bool(e >= 0)
        if depth > 8:
            return False
        gens = list(e.atoms(*_GENERATORS))
        outer = [g for g in gens if not any(h != g and h.has(g) for h in gens)]
        if outer:
            g = sorted(outer, key=sympy.default_sort_key)[0]
            if isinstance(g, (IMin, IMax)):  # the value is one of the arguments
                coeff = e.coeff(g)
                alternatives = [self.shape_nonneg(e.xreplace({g: a}), depth + 1) for a in g.args]
                # c*min(a, b) with c < 0 (c*max with c > 0) is at least its value at either argument
                either = coeff.is_Number and not sympy.expand(e - coeff * g).has(g) and \
                    (coeff < 0) == isinstance(g, IMin)
                return any(alternatives) if either else all(alternatives)
            x, d = g.args
            if not (d.is_Integer and int(d) > 0):
                return False
            if isinstance(g, IMod):
                return self.shape_nonneg(e.xreplace({g: x - d * FloorDiv(x, d)}), depth + 1)
            coeff = e.coeff(g)
            rest = sympy.expand(e - coeff * g)
            if not coeff.is_Number or rest.has(g):
                return False
            q = int(d)
            lo, hi = (x - (q - 1)) / q, x / q          # x // q for an integer x
            return self.shape_nonneg(rest + coeff * (lo if coeff > 0 else hi), depth + 1)
        syms = sorted(e.free_symbols, key=lambda s: s.name)
        if any(s not in self.shape_level for s in syms):
            return False
        try:
            poly = sympy.Poly(e, *syms)
        except sympy.PolynomialError:  # pragma: no cover - e is a polynomial here
            return False
        return all(c >= 0 for c in poly.coeffs())

    # ------------------------------------------------------------------ divisibility
    @staticmethod
    def divisor(e: sympy.Expr) -> int:
        """The largest integer known to divide ``e`` for every value of its atoms (0 when ``e == 0``)."""
        e = sympy.expand(e)
        g = 0
        for term, c in e.as_coefficients_dict().items():
            if not c.is_Integer:
                return 1
            g = math.gcd(g, int(c))
        return g


def pow2_part(x: int, cap: int = 1 << 30) -> int:
    """The largest power of two dividing ``x`` (``cap`` for 0)."""
    if x == 0:
        return cap
    return min(cap, x & -x)


def fits_i32(value: int) -> bool:
    return _INT_MIN <= value <= _INT_MAX


__all__ = ["IndexAnalysis", "Atom", "INDEX_OPS", "is_index", "pow2_part", "fits_i32", "FloorDiv", "IMod", "IMin",
           "IMax", "dim_expr"]
