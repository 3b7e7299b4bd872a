"""Parser of the IR text form written by :mod:`lowbit.ir.printer` (hand-written recursive descent).

``parse(print_kernel(k)) == k`` for every valid kernel. Errors are :class:`~lowbit.errors.CompileError`
with a ``<ir>:line:col`` location and the offending line.

>>> k = parse('''
... kernel k(%x: f32[N] @global inout) grid(cdiv(N, 4)) {
...   %p = program_id(axis=0) : i32
...   %c = const(4) : i32
...   %o = mul(%p, %c) : i32
...   %t = load(%x, [%o]) : f32[4]
...   store(%x, %t, [%o])
... }''')
>>> k.name, len(k.body)
('k', 5)
"""
from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from ..errors import CompileError, SourceLocation
from . import nodes as n
from .symbolic import parse_dim
from .types import SCOPES, TileType, canonical_dtype

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>->|//|[()\[\]{},:=@.*/+%-])
""", re.VERBOSE)

#: opcode -> (class, fixed fields)
OPCODES: dict[str, tuple[type, dict[str, Any]]] = {}
for _cls in n.INSTRUCTIONS:
    if _cls.OPCODE and _cls not in (n.For, n.If, n.Yield):
        OPCODES[_cls.OPCODE] = (_cls, {})
for _op in n.UNARY_OPS:
    OPCODES[_op] = (n.Unary, {"op": _op})
for _op in n.BINARY_OPS:
    OPCODES[_op] = (n.Binary, {"op": _op})
for _op in n.REDUCE_OPS:
    OPCODES[_op] = (n.Reduce, {"op": _op})


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind, self.text, self.pos = kind, text, pos

    def __repr__(self) -> str:
        return self.text


class _Parser:
    def __init__(self, text: str, filename: str):
        self.src = text
        self.file = filename
        self.toks: list[_Tok] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise self.error_at(pos, f"unexpected character {text[pos]!r}")
            if m.lastgroup != "ws":
                self.toks.append(_Tok(m.lastgroup, m.group(), pos))
            pos = m.end()
        self.toks.append(_Tok("eof", "<end of input>", len(text)))
        self.i = 0
        self.values: dict[str, n.Value] = {}

    # ---------------------------------------------------------------- token helpers
    def loc_at(self, pos: int) -> SourceLocation:
        line = self.src.count("\n", 0, pos) + 1
        start = self.src.rfind("\n", 0, pos) + 1
        end = self.src.find("\n", pos)
        return SourceLocation(self.file, line, pos - start + 1, self.src[start:end if end >= 0 else None])

    def error_at(self, pos: int, msg: str) -> CompileError:
        return CompileError(msg, location=self.loc_at(pos))

    def error(self, msg: str) -> CompileError:
        return self.error_at(self.peek().pos, msg)

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        t = self.peek()
        if (text is not None and t.text != text) or (kind is not None and t.kind != kind):
            want = repr(text) if text is not None else kind
            raise self.error(f"expected {want}, got {t.text!r}")
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind != "string":
            self.i += 1
            return True
        return False

    # ---------------------------------------------------------------- pieces
    def raw_until(self, stops: set[str]) -> str:
        """Source text of a balanced token run up to (not including) a depth-0 stop token."""
        depth, start = 0, self.peek().pos
        end = start
        while True:
            t = self.peek()
            if t.kind == "eof":
                raise self.error("unexpected end of input")
            if depth == 0 and t.text in stops:
                break
            if t.text in "([":
                depth += 1
            elif t.text in ")]":
                depth -= 1
            self.i += 1
            end = t.pos + len(t.text)
        return self.src[start:end]

    def dim(self, stops: set[str]):
        pos = self.peek().pos
        text = self.raw_until(stops)
        try:
            return parse_dim(text)
        except CompileError as e:
            raise self.error_at(pos, e.message) from None

    def dims(self, close: str) -> tuple:
        out = []
        if self.accept(close):
            return ()
        while True:
            out.append(self.dim({",", close}))
            if self.accept(close):
                return tuple(out)
            self.take(",")

    def dtype(self) -> str:
        t = self.take(kind="ident")
        try:
            return canonical_dtype(t.text)
        except Exception as e:  # DTypeError
            raise self.error_at(t.pos, f"unknown dtype {t.text!r} ({getattr(e, 'message', e)})") from None

    def type(self) -> TileType:
        dtype = self.dtype()
        shape: tuple = ()
        if self.accept("["):
            shape = self.dims("]")
        scope = "register"
        if self.accept("@"):
            t = self.take(kind="ident")
            if t.text not in SCOPES:
                raise self.error_at(t.pos, f"unknown scope {t.text!r} (expected one of {SCOPES})")
            scope = t.text
        layout = None
        if self.peek().text == "layout" and self.peek(1).text == "=":
            self.i += 2
            layout = self.layout_expr()
        return TileType(dtype, shape, scope, layout)

    # layouts: calls of lowbit.layout names, method chains, '*' and '/'
    def layout_expr(self) -> Any:
        val = self.layout_term()
        while self.peek().text in ("*", "/"):
            op = self.take().text
            rhs = self.layout_term()
            val = val * rhs if op == "*" else val / rhs
        return val

    def layout_term(self) -> Any:
        import lowbit.layout as L

        t = self.take(kind="ident")
        fn = getattr(L, t.text, None)
        if fn is None or t.text.startswith("_"):
            raise self.error_at(t.pos, f"unknown layout constructor {t.text!r}")
        val = self.call(fn, t)
        while self.peek().text == "." and self.peek(1).kind == "ident":
            self.take(".")
            m = self.take(kind="ident")
            meth = getattr(val, m.text, None)
            if meth is None or m.text.startswith("_"):
                raise self.error_at(m.pos, f"layout has no method {m.text!r}")
            val = self.call(meth, m)
        return val

    def call(self, fn, tok: _Tok) -> Any:
        self.take("(")
        args, kwargs = [], {}
        while not self.accept(")"):
            if self.peek().kind == "ident" and self.peek(1).text == "=":
                key = self.take().text
                self.take("=")
                kwargs[key] = self.layout_arg()
            else:
                args.append(self.layout_arg())
            if self.peek().text != ")":
                self.take(",")
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise self.error_at(tok.pos, f"bad layout {tok.text}(...): {getattr(e, 'message', e)}") from None

    def layout_arg(self) -> Any:
        t = self.peek()
        if t.kind == "ident" and t.text not in ("true", "false", "none"):
            return self.layout_expr()
        return self.literal()

    def literal(self) -> Any:
        t = self.peek()
        if t.text == "[":
            self.take("[")
            items = []
            while not self.accept("]"):
                items.append(self.literal())
                if self.peek().text != "]":
                    self.take(",")
            return tuple(items)
        if t.text == "-":
            self.take("-")
            v = self.literal()
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.error_at(t.pos, "'-' must precede a number")
            return -v
        self.take()
        if t.kind == "value":
            return self.use(t)
        if t.kind == "number":
            return float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
        if t.kind == "string":
            return re.sub(r"\\(.)", r"\1", t.text[1:-1])
        if t.kind == "ident":
            consts = {"true": True, "false": False, "none": None, "inf": float("inf"), "nan": float("nan")}
            if t.text in consts:
                return consts[t.text]
            if self.peek().text == "(" or self.peek().text == ".":
                self.i -= 1
                return self.layout_expr()
        raise self.error_at(t.pos, f"expected a literal, value or list, got {t.text!r}")

    # ---------------------------------------------------------------- values
    def use(self, t: _Tok) -> n.Value:
        name = t.text[1:]
        if name not in self.values:
            raise self.error_at(t.pos, f"use of undefined value {t.text}")
        return self.values[name]

    def define(self, t: _Tok, type: TileType) -> n.Value:
        name = t.text[1:]
        if name in self.values:
            raise self.error_at(t.pos, f"value {t.text} is defined twice")
        v = n.Value(name, type)
        self.values[name] = v
        return v

    # ---------------------------------------------------------------- kernel
    def kernel(self) -> n.Kernel:
        self.take("kernel")
        name = self.take(kind="ident").text
        self.take("(")
        params: list[n.Param] = []
        while not self.accept(")"):
            vt = self.take(kind="value")
            self.take(":")
            ty = self.type()
            v = self.define(vt, ty)
            if ty.scope == "global":
                intent = "inout"
                if self.peek().text in n.INTENTS:
                    intent = self.take().text
                params.append(n.TensorParam(v, intent))
            else:
                params.append(n.ScalarParam(v))
            if self.peek().text != ")":
                self.take(",")
        constants: list[n.ConstParam] = []
        if self.accept("constants"):
            self.take("(")
            while not self.accept(")"):
                cname = self.take(kind="ident").text
                self.take(":")
                cdtype = self.dtype()
                value = None
                if self.accept("="):
                    value = self.literal()
                constants.append(n.ConstParam(cname, value, cdtype))
                if self.peek().text != ")":
                    self.take(",")
        self.take("grid")
        self.take("(")
        grid = self.dims(")")
        body = self.block()
        if self.peek().kind != "eof":
            raise self.error(f"unexpected {self.peek().text!r} after the kernel")
        return n.Kernel(name, tuple(params), tuple(constants), grid, body)

    def block(self) -> tuple[n.Instr, ...]:
        self.take("{")
        out: list[n.Instr] = []
        while not self.accept("}"):
            out.append(self.instr())
        return tuple(out)

    def instr(self) -> n.Instr:
        start = self.peek()
        loc = self.loc_at(start.pos)
        results: list[_Tok] = []
        if start.kind == "value":
            results.append(self.take())
            while self.accept(","):
                results.append(self.take(kind="value"))
            self.take("=")
        head = self.take(kind="ident")
        if head.text == "for":
            return self.for_(results, loc)
        if head.text == "if":
            return self.if_(results, loc)
        if head.text == "yield":
            if results:
                raise self.error_at(start.pos, "yield has no results")
            vals = []
            if self.peek().kind == "value":
                vals.append(self.use(self.take()))
                while self.accept(","):
                    vals.append(self.use(self.take(kind="value")))
            return n.Yield(tuple(vals), loc=loc)
        if head.text not in OPCODES:
            raise self.error_at(head.pos, f"unknown instruction {head.text!r}")
        cls, fixed = OPCODES[head.text]
        self.take("(")
        pos_args, kw = [], {}
        while not self.accept(")"):
            if self.peek().kind == "ident" and self.peek(1).text == "=":
                key = self.take()
                self.take("=")
                kw[key.text] = self.literal()
            else:
                pos_args.append(self.literal())
            if self.peek().text != ")":
                self.take(",")
        if len(pos_args) > len(cls.POSITIONAL):
            raise self.error_at(head.pos, f"{head.text} takes {len(cls.POSITIONAL)} positional operands, "
                                          f"got {len(pos_args)}")
        kw.update(zip(cls.POSITIONAL, pos_args))
        kw.update(fixed)
        names = {f.name for f in fields(cls)}
        for key in kw:
            if key not in names or key in ("result", "loc"):
                raise self.error_at(head.pos, f"{head.text} has no attribute {key!r}")
        has_result = "result" in names
        if has_result:
            if len(results) != 1:
                raise self.error_at(start.pos, f"{head.text} has exactly one result")
            self.take(":")
            kw["result"] = self.define(results[0], self.type())
        elif results:
            raise self.error_at(start.pos, f"{head.text} has no result")
        try:
            return cls(**kw, loc=loc)
        except TypeError as e:
            raise self.error_at(head.pos, f"{head.text}: {e}") from None

    def for_(self, results: list[_Tok], loc: SourceLocation) -> n.For:
        iv_tok = self.take(kind="value")
        self.take("=")
        start = self.use(self.take(kind="value"))
        self.take("to")
        stop = self.use(self.take(kind="value"))
        self.take("step")
        step = self.use(self.take(kind="value"))
        iv = self.define(iv_tok, TileType("int32", ()))
        self.take("iter_args")
        self.take("(")
        args, inits = [], []
        pending: list[tuple[_Tok, TileType]] = []
        while not self.accept(")"):
            at = self.take(kind="value")
            self.take(":")
            ty = self.type()
            self.take("=")
            inits.append(self.use(self.take(kind="value")))
            pending.append((at, ty))
            if self.peek().text != ")":
                self.take(",")
        for at, ty in pending:
            args.append(self.define(at, ty))
        body = self.block()
        if len(results) != len(args):
            raise self.error_at(loc_pos(self, loc), f"for has {len(args)} carried values but {len(results)} results")
        res = tuple(self.define(r, a.type) for r, a in zip(results, args))
        return n.For(res, iv, start, stop, step, tuple(args), tuple(inits), body, loc=loc)

    def if_(self, results: list[_Tok], loc: SourceLocation) -> n.If:
        cond = self.use(self.take(kind="value"))
        self.take("->")
        self.take("(")
        types = []
        while not self.accept(")"):
            types.append(self.type())
            if self.peek().text != ")":
                self.take(",")
        then_body = self.block()
        self.take("else")
        else_body = self.block()
        if len(types) != len(results):
            raise self.error_at(loc_pos(self, loc), f"if has {len(types)} result types but {len(results)} results")
        res = tuple(self.define(r, t) for r, t in zip(results, types))
        return n.If(res, cond, then_body, else_body, loc=loc)


def loc_pos(p: _Parser, loc: SourceLocation) -> int:
    lines = p.src.split("\n")
    return sum(len(line) + 1 for line in lines[:loc.line - 1]) + loc.column - 1


def parse(text: str, filename: str = "<ir>") -> n.Kernel:
    """Parse one kernel from its text form. Source locations of the text are attached to instructions."""
    return _Parser(text, filename).kernel()


def parse_type(text: str) -> TileType:
    """Parse a type such as ``f16[16, 64] @shared``."""
    p = _Parser(text, "<type>")
    t = p.type()
    if p.peek().kind != "eof":
        raise p.error(f"unexpected {p.peek().text!r} after the type")
    return t


__all__ = ["parse", "parse_type", "OPCODES"]
