"""The kernel language's syntax tree: frozen dataclasses, each with the :class:`Span` it came from.

The tree mirrors Python's own ``ast`` for the subset the language has, so it reads naturally; every node
carries a ``span`` (parsed-text coordinates; :class:`~lowbit.dsl.source.Source` maps them to the real file).

>>> from lowbit.dsl.parser import parse
>>> module = parse("def k(x: f32[N]):\\n    pass\\n")
>>> module.body[0].name, module.body[0].params[0].name
('k', 'x')
>>> print(dump(module.body[0].params[0].annotation))
Subscript(value=Name('f32'), indices=[Name('N')])
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Union

from .source import Span


@dataclass(frozen=True)
class Node:
    span: Span


# ---- expressions ----
@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Constant(Node):
    """A literal: int, float, bool, None or str."""

    value: Union[int, float, bool, None, str]


@dataclass(frozen=True)
class Tuple(Node):
    elts: tuple["Expr", ...]


@dataclass(frozen=True)
class List(Node):
    elts: tuple["Expr", ...]


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # '+', '-', '*', '/', '//', '%', '**', '@', '<<', '>>', '&', '|', '^'
    left: "Expr"
    right: "Expr"
    op_span: Span | None = None


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # '-', '+', '~', 'not'
    operand: "Expr"


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # 'and' | 'or'
    values: tuple["Expr", ...]


@dataclass(frozen=True)
class Compare(Node):
    left: "Expr"
    ops: tuple[str, ...]
    comparators: tuple["Expr", ...]


@dataclass(frozen=True)
class IfExp(Node):
    test: "Expr"
    body: "Expr"
    orelse: "Expr"


@dataclass(frozen=True)
class Keyword(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Call(Node):
    func: "Expr"
    args: tuple["Expr", ...]
    keywords: tuple[Keyword, ...]


@dataclass(frozen=True)
class Attribute(Node):
    value: "Expr"
    attr: str


@dataclass(frozen=True)
class Slice(Node):
    lower: "Expr | None"
    upper: "Expr | None"
    step: "Expr | None"


@dataclass(frozen=True)
class Subscript(Node):
    value: "Expr"
    indices: tuple["Expr", ...]


Expr = Union[Name, Constant, Tuple, List, BinOp, UnaryOp, BoolOp, Compare, IfExp, Call, Attribute, Slice,
             Subscript]


# ---- statements ----
@dataclass(frozen=True)
class Assign(Node):
    targets: tuple[Expr, ...]  # a = b = value: two targets
    value: Expr


@dataclass(frozen=True)
class AugAssign(Node):
    target: Expr
    op: str  # the binary operator: '+', '*', ...
    value: Expr


@dataclass(frozen=True)
class AnnAssign(Node):
    target: Expr
    annotation: Expr
    value: Expr | None


@dataclass(frozen=True)
class ExprStmt(Node):
    value: Expr


@dataclass(frozen=True)
class Pass(Node):
    pass


@dataclass(frozen=True)
class Return(Node):
    value: Expr | None


@dataclass(frozen=True)
class Break(Node):
    pass


@dataclass(frozen=True)
class Continue(Node):
    pass


@dataclass(frozen=True)
class If(Node):
    test: Expr
    body: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]


@dataclass(frozen=True)
class For(Node):
    target: Expr
    iter: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class While(Node):
    test: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Param(Node):
    name: str
    annotation: Expr | None
    default: Expr | None


@dataclass(frozen=True)
class FunctionDef(Node):
    name: str
    params: tuple[Param, ...]
    returns: Expr | None
    body: tuple["Stmt", ...]
    docstring: str | None = None


Stmt = Union[Assign, AugAssign, AnnAssign, ExprStmt, Pass, Return, Break, Continue, If, For, While,
             FunctionDef]


@dataclass(frozen=True)
class Module(Node):
    body: tuple[Stmt, ...]

    def functions(self) -> list[FunctionDef]:
        return [s for s in self.body if isinstance(s, FunctionDef)]


# ---- printing ----
_SKIP = {"span", "op_span"}


def dump(node: object, indent: int | None = None, *, spans: bool = False) -> str:
    """A readable dump of a tree, like :func:`ast.dump`; ``indent`` spreads it over lines.

    >>> from lowbit.dsl.parser import parse_expression
    >>> dump(parse_expression("a + 1"))
    "BinOp(op='+', left=Name('a'), right=Constant(1))"
    """

    def fmt(value: object, level: int) -> str:
        if isinstance(value, Node):
            items = [(f.name, getattr(value, f.name)) for f in fields(value)
                     if f.name not in _SKIP and not (f.name == "docstring" and getattr(value, f.name) is None)]
            name = type(value).__name__
            pos = f"@{value.span.line}:{value.span.column}" if spans else ""
            if isinstance(value, (Name, Constant)):
                return f"{name}{pos}({items[0][1]!r})"
            parts = [f"{key}={fmt(val, level + 1)}" for key, val in items]
            return f"{name}{pos}(" + _join(parts, level + 1) + ")"
        if isinstance(value, tuple):
            return "[" + _join([fmt(v, level + 1) for v in value], level + 1) + "]"
        return repr(value)

    def _join(parts: list[str], level: int) -> str:
        if indent is None or not parts:
            return ", ".join(parts)
        pad = "\n" + " " * (indent * level)
        return pad + ("," + pad).join(parts) + "\n" + " " * (indent * (level - 1))

    return fmt(node, 0)
