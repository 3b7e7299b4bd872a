"""Symbolic sizes: the shapes of global tensors and the launch grid.

A :data:`Dim` is an ``int``, a :class:`Sym` (a shape symbol such as ``M`` or a kernel constant such as
``G``) or a :class:`SymOp` combining two dims with ``+ - * // % cdiv min max``. Division and modulo
follow Python (floor) semantics. ``int`` op ``int`` folds immediately.

>>> M, BM = Sym("M"), 16
>>> d = cdiv(M, BM)
>>> dim_str(d), dim_eval(d, {"M": 33})
('cdiv(M, 16)', 3)
>>> dim_str(parse_dim("K // G + 1"))
'K // G + 1'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Union

from ..errors import CompileError

_BINOPS = ("+", "-", "*", "//", "%")
_FUNCS = ("cdiv", "min", "max")
_PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}


class _DimOps:
    """Python operators on symbolic dims."""

    def __add__(self, o): return sym_op("+", self, o)
    def __radd__(self, o): return sym_op("+", o, self)
    def __sub__(self, o): return sym_op("-", self, o)
    def __rsub__(self, o): return sym_op("-", o, self)
    def __mul__(self, o): return sym_op("*", self, o)
    def __rmul__(self, o): return sym_op("*", o, self)
    def __floordiv__(self, o): return sym_op("//", self, o)
    def __rfloordiv__(self, o): return sym_op("//", o, self)
    def __mod__(self, o): return sym_op("%", self, o)
    def __rmod__(self, o): return sym_op("%", o, self)


@dataclass(frozen=True)
class Sym(_DimOps):
    """A named size: a shape symbol bound from a tensor argument, or a kernel constant."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class SymOp(_DimOps):
    """``op(lhs, rhs)`` with op in ``+ - * // % cdiv min max``."""

    op: str
    lhs: "Dim"
    rhs: "Dim"

    def __str__(self) -> str:
        return dim_str(self)


Dim = Union[int, Sym, SymOp]


def _apply(op: str, a: int, b: int) -> int:
    if op in ("//", "%", "cdiv") and b == 0:
        raise CompileError(f"division by zero in size expression ({a} {op} {b})")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "//":
        return a // b
    if op == "%":
        return a % b
    if op == "cdiv":
        return -(-a // b)
    if op == "min":
        return min(a, b)
    if op == "max":
        return max(a, b)
    raise CompileError(f"unknown size operator {op!r}")


def as_dim(x: "Dim | str") -> Dim:
    """Normalize an int, a :class:`Sym`/:class:`SymOp` or a string (a name or an expression) to a Dim."""
    if isinstance(x, bool):
        raise CompileError(f"expected a size (int, symbol name or expression), got {x!r}")
    if isinstance(x, int):
        return int(x)
    if isinstance(x, (Sym, SymOp)):
        return x
    if isinstance(x, str):
        return parse_dim(x)
    try:
        import numbers

        if isinstance(x, numbers.Integral):
            return int(x)
    except Exception:  # pragma: no cover
        pass
    raise CompileError(f"expected a size (int, symbol name or expression), got {type(x).__name__} {x!r}")


def sym_op(op: str, a: "Dim | str", b: "Dim | str") -> Dim:
    """Build ``op(a, b)``, folding ints."""
    a, b = as_dim(a), as_dim(b)
    if op not in _BINOPS and op not in _FUNCS:
        raise CompileError(f"unknown size operator {op!r}", hint=f"use one of {_BINOPS + _FUNCS}")
    if isinstance(a, int) and isinstance(b, int):
        return _apply(op, a, b)
    return SymOp(op, a, b)


def cdiv(a: "Dim | str", b: "Dim | str") -> Dim:
    """Ceiling division ``(a + b - 1) // b`` for positive b."""
    return sym_op("cdiv", a, b)


def dim_symbols(d: Dim) -> frozenset[str]:
    """Names a dim depends on."""
    if isinstance(d, int):
        return frozenset()
    if isinstance(d, Sym):
        return frozenset([d.name])
    return dim_symbols(d.lhs) | dim_symbols(d.rhs)


def dim_eval(d: Dim, env: Mapping[str, int]) -> int:
    """Evaluate with every symbol bound in ``env``; raises CompileError naming a missing symbol."""
    if isinstance(d, int):
        return d
    if isinstance(d, Sym):
        if d.name not in env:
            raise CompileError(f"size symbol {d.name!r} has no value",
                               hint="bind it through a tensor argument's shape or shape_bindings")
        return int(env[d.name])
    return _apply(d.op, dim_eval(d.lhs, env), dim_eval(d.rhs, env))


def dim_subst(d: Dim, env: Mapping[str, "Dim"]) -> Dim:
    """Replace symbols found in ``env`` (folding ints)."""
    if isinstance(d, int):
        return d
    if isinstance(d, Sym):
        return as_dim(env[d.name]) if d.name in env else d
    return sym_op(d.op, dim_subst(d.lhs, env), dim_subst(d.rhs, env))


def dim_str(d: Dim, _parent: int = 0) -> str:
    """Text form, parseable by :func:`parse_dim`, with minimal parentheses."""
    if isinstance(d, int):
        return str(d) if d >= 0 or _parent == 0 else f"({d})"
    if isinstance(d, Sym):
        return d.name
    if d.op in _FUNCS:
        return f"{d.op}({dim_str(d.lhs)}, {dim_str(d.rhs)})"
    p = _PREC[d.op]
    # left-associative: the right operand needs parentheses at equal precedence
    text = f"{dim_str(d.lhs, p)} {d.op} {dim_str(d.rhs, p + 1)}"
    return f"({text})" if p < _parent else text


def to_sympy(d: Dim, symbols: Mapping[str, object] | None = None):
    """The dim as a sympy expression (symbols are positive integers unless given in ``symbols``)."""
    import sympy

    if isinstance(d, int):
        return sympy.Integer(d)
    if isinstance(d, Sym):
        if symbols is not None and d.name in symbols:
            return symbols[d.name]
        return sympy.Symbol(d.name, integer=True, positive=True)
    a, b = to_sympy(d.lhs, symbols), to_sympy(d.rhs, symbols)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: sympy.floor(a / b),
            "%": lambda: sympy.Mod(a, b), "cdiv": lambda: sympy.ceiling(a / b),
            "min": lambda: sympy.Min(a, b), "max": lambda: sympy.Max(a, b)}[d.op]()


# ----------------------------------------------------------------------------------------------------
# parsing "K // G + 1", "cdiv(M, BM)"
# ----------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z_0-9]*)|(//|[-+*%(),]))")


def _tokenize(text: str) -> list[str]:
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise CompileError(f"bad size expression {text!r}: unexpected {text[pos:].strip()[:10]!r}")
        out.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    return out


class _DimParser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise CompileError(f"bad size expression {self.text!r}: expected {expected or 'more'}, got {tok!r}")
        self.i += 1
        return tok

    def expr(self, min_prec: int = 1) -> Dim:
        lhs = self.atom()
        while True:
            op = self.peek()
            if op not in _PREC or _PREC[op] < min_prec:
                return lhs
            self.take()
            rhs = self.expr(_PREC[op] + 1)
            lhs = sym_op(op, lhs, rhs)

    def atom(self) -> Dim:
        tok = self.take()
        if tok == "(":
            e = self.expr()
            self.take(")")
            return e
        if tok == "-":
            return sym_op("-", 0, self.atom())
        if tok.isdigit():
            return int(tok)
        if tok in _FUNCS and self.peek() == "(":
            self.take("(")
            a = self.expr()
            self.take(",")
            b = self.expr()
            self.take(")")
            return sym_op(tok, a, b)
        if tok[0].isalpha() or tok[0] == "_":
            return Sym(tok)
        raise CompileError(f"bad size expression {self.text!r}: unexpected {tok!r}")


def parse_dim(text: str) -> Dim:
    """Parse a size expression: ints, names, ``+ - * // %``, parentheses, ``cdiv/min/max(a, b)``."""
    p = _DimParser(text)
    d = p.expr()
    if p.peek() is not None:
        raise CompileError(f"bad size expression {text!r}: unexpected {p.peek()!r}")
    return d


__all__ = ["Sym", "SymOp", "Dim", "as_dim", "sym_op", "cdiv", "dim_symbols", "dim_eval", "dim_subst",
           "dim_str", "to_sympy", "parse_dim"]
