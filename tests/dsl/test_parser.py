"""The grammar and syntax tree: Python's precedence (checked against Python's own ``ast``), spans, real-file
positions for @jit sources, and the tree dump."""
from __future__ import annotations

import ast as pyast
import random

import pytest

from lowbit.dsl import nodes as n
from lowbit.dsl.parser import parse, parse_expression
from lowbit.dsl.source import Source
from lowbit.errors import CompileError

_PY_BINOP = {pyast.Add: "+", pyast.Sub: "-", pyast.Mult: "*", pyast.Div: "/", pyast.FloorDiv: "//",
             pyast.Mod: "%", pyast.Pow: "**", pyast.LShift: "<<", pyast.RShift: ">>", pyast.BitOr: "|",
             pyast.BitAnd: "&", pyast.BitXor: "^", pyast.MatMult: "@"}
_PY_UNARY = {pyast.USub: "-", pyast.UAdd: "+", pyast.Invert: "~", pyast.Not: "not"}
_PY_CMP = {pyast.Lt: "<", pyast.LtE: "<=", pyast.Gt: ">", pyast.GtE: ">=", pyast.Eq: "==", pyast.NotEq: "!="}


def ours(e) -> str:
    """A fully parenthesized rendering of our tree."""
    if isinstance(e, n.Name):
        return e.id
    if isinstance(e, n.Constant):
        return repr(e.value)
    if isinstance(e, n.BinOp):
        return f"({ours(e.left)} {e.op} {ours(e.right)})"
    if isinstance(e, n.UnaryOp):
        return f"({e.op} {ours(e.operand)})"
    if isinstance(e, n.BoolOp):
        return "(" + f" {e.op} ".join(map(ours, e.values)) + ")"
    if isinstance(e, n.Compare):
        return "(" + ours(e.left) + "".join(f" {o} {ours(c)}" for o, c in zip(e.ops, e.comparators)) + ")"
    if isinstance(e, n.IfExp):
        return f"({ours(e.body)} if {ours(e.test)} else {ours(e.orelse)})"
    raise TypeError(e)


def pythons(e) -> str:
    """The same rendering of Python's own tree (the independent reference)."""
    if isinstance(e, pyast.Name):
        return e.id
    if isinstance(e, pyast.Constant):
        return repr(e.value)
    if isinstance(e, pyast.BinOp):
        return f"({pythons(e.left)} {_PY_BINOP[type(e.op)]} {pythons(e.right)})"
    if isinstance(e, pyast.UnaryOp):
        return f"({_PY_UNARY[type(e.op)]} {pythons(e.operand)})"
    if isinstance(e, pyast.BoolOp):
        op = "and" if isinstance(e.op, pyast.And) else "or"
        return "(" + f" {op} ".join(map(pythons, e.values)) + ")"
    if isinstance(e, pyast.Compare):
        return "(" + pythons(e.left) + "".join(f" {_PY_CMP[type(o)]} {pythons(c)}"
                                              for o, c in zip(e.ops, e.comparators)) + ")"
    if isinstance(e, pyast.IfExp):
        return f"({pythons(e.body)} if {pythons(e.test)} else {pythons(e.orelse)})"
    raise TypeError(e)


def test_operator_precedence_matches_python():
    rng = random.Random(5)
    binops = ["or", "and", "<", "<=", "==", "!=", ">", "|", "^", "&", "<<", ">>", "+", "-", "*", "/", "//", "%",
              "@", "**"]
    prefixes = ["-", "+", "~", "not "]
    checked = 0
    for _ in range(3000):
        parts = []
        k = rng.randint(1, 6)
        for j in range(k):
            parts.append("".join(rng.choice(prefixes) for _ in range(rng.choice([0, 0, 0, 1, 2])))
                         + rng.choice(["a", "b", "c", "1", "2.5"]))
            if j < k - 1:
                parts.append(rng.choice(binops))
        text = " ".join(parts)
        if rng.random() < 0.1:
            text = f"{text} if a else b"
        try:
            want = pythons(pyast.parse(text, mode="eval").body)
        except SyntaxError:
            with pytest.raises(CompileError):
                parse_expression(text)
            continue
        assert ours(parse_expression(text)) == want, text
        checked += 1
    assert checked > 2000


def test_spans_cover_the_source_text():
    src = "def k(x: f32[N]):\n    acc = dot(a, (b + c) * d, acc)\n"
    fn = parse(src).body[0]
    stmt = fn.body[0]
    assert isinstance(stmt, n.Assign)
    call = stmt.value
    line = src.splitlines()[1]
    assert line[call.span.column - 1:call.span.end_column - 1] == "dot(a, (b + c) * d, acc)"
    mul = call.args[1]
    assert line[mul.span.column - 1:mul.span.end_column - 1] == "(b + c) * d"
    assert line[mul.left.span.column - 1:mul.left.span.end_column - 1] == "(b + c)"
    assert (fn.span.line, fn.span.column) == (1, 1)


def test_statement_forms():
    src = ('"""doc"""\nG = 4\n'
           "def k(x: f32[N], G: const = 2) -> None:\n"
           '    """kernel doc"""\n'
           "    a, b = 1, 2; c = d = 3\n"
           "    a += 1\n"
           "    t: f32[4] = zeros([4])\n"
           "    for i in range(3):\n        pass\n"
           "    if a:\n        pass\n    elif b:\n        pass\n    else:\n        pass\n"
           "    while a:\n        break\n"
           "    return\n")
    mod = parse(src)
    fn = mod.functions()[0]
    assert fn.docstring == "kernel doc"
    kinds = [type(s).__name__ for s in fn.body]
    assert kinds == ["ExprStmt", "Assign", "Assign", "AugAssign", "AnnAssign", "For", "If", "While", "Return"]
    assert len(fn.body[2].targets) == 2
    elif_ = fn.body[6].orelse[0]
    assert isinstance(elif_, n.If) and len(elif_.orelse) == 1
    assert [p.name for p in fn.params] == ["x", "G"] and isinstance(fn.params[1].default, n.Constant)


def test_literals():
    e = parse_expression("[0x1F, 0b101, 0o17, 1_000, 2.5e-3, 'a' 'b', None, True, False, ()]")
    assert [c.value if isinstance(c, n.Constant) else c.elts for c in e.elts] == \
        [31, 5, 15, 1000, 0.0025, "ab", None, True, False, ()]


def test_source_offsets_map_to_the_real_file():
    file_lines = ["# header\n", "class A:\n", "    @deco\n", "    def k(x):\n", "        y = lod(x)\n"]
    src = Source("def k(x):\n    y = lod(x)\n", "m.py", line_offset=3, col_offset=4, file_lines=file_lines)
    fn = parse(src).body[0]
    loc = src.span_location(fn.body[0].value.func.span)
    assert (loc.file, loc.line, loc.column, loc.end_column) == ("m.py", 5, 13, 16)
    assert loc.source_line == "        y = lod(x)"


def test_dump_is_readable():
    e = parse_expression("load(x, [0], [4], layout=spatial(4))")
    text = n.dump(e)
    assert text.startswith("Call(func=Name('load'), args=[Name('x'), List(elts=[Constant(0)])")
    assert "keywords=[Keyword(name='layout'" in text
    assert n.dump(e, indent=2).count("\n") > 10


def test_crlf_and_missing_final_newline():
    mod = parse("N = 1\r\ndef k(x: f32[N]):\r\n    pass")
    assert [type(s).__name__ for s in mod.body] == ["Assign", "FunctionDef"]
