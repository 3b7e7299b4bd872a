"""Parsing kernel source into the :mod:`~lowbit.dsl.nodes` tree.

One lark grammar (``grammar.lark``, package data) and lark's LALR parser with a Python-style indenter.
Every lark exception is translated into a :class:`~lowbit.errors.CompileError` that reads like Python's
own syntax errors ("expected ':'", "unexpected indent", "'(' was never closed", ...), located in the
user's real file.

>>> module = parse("N = 4\\ndef k(x: f32[N]):\\n    pass\\n", "k.lbk")
>>> [type(s).__name__ for s in module.body]
['Assign', 'FunctionDef']
>>> parse("def k(x)\\n    pass\\n", "k.lbk")
Traceback (most recent call last):
...
lowbit.errors.CompileError: k.lbk:1:9: error: expected ':'
    def k(x)
            ^
hint: a 'def' header ends with ':'
"""
from __future__ import annotations

import threading
from functools import lru_cache
from importlib import resources
from typing import Iterator

from lowbit.errors import CompileError

from . import nodes as n
from .source import Source, Span

_BRACKETS = {"LPAR": "RPAR", "LSQB": "RSQB"}
_CLOSE_TEXT = {"RPAR": ")", "RSQB": "]"}
_OPEN_TEXT = {"LPAR": "(", "LSQB": "["}
_HEADER_KEYWORDS = {"DEF": "def", "FOR": "for", "IF": "if", "ELIF": "elif", "ELSE": "else", "WHILE": "while"}
# Python keywords that are not part of the kernel language (they lex as names).
_PYTHON_ONLY = {"import", "from", "class", "lambda", "with", "try", "except", "finally", "raise", "global",
                "nonlocal", "del", "assert", "yield", "async", "await", "is", "as", "match", "case"}
_EXPR_START = {"NAME", "DEC_NUMBER", "HEX_NUMBER", "OCT_NUMBER", "BIN_NUMBER", "FLOAT_NUMBER", "STRING",
               "LONG_STRING", "LPAR", "LSQB", "NONE", "TRUE", "FALSE", "NOT", "TILDE", "ADDOP"}
_EXPR_END = {"NAME", "DEC_NUMBER", "HEX_NUMBER", "OCT_NUMBER", "BIN_NUMBER", "FLOAT_NUMBER", "STRING",
             "LONG_STRING", "RPAR", "RSQB", "NONE", "TRUE", "FALSE"}
_TERMINAL_TEXT = {
    "COLON": "':'", "COMMA": "','", "EQUAL": "'='", "SEMICOLON": "';'", "DOT": "'.'", "ARROW": "'->'",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "NAME": "a name", "IN": "'in'",
    "ELSE": "'else'", "AUGOP": "an augmented assignment", "COMPOP": "a comparison",
    "_NEWLINE": "the end of the line", "_INDENT": "an indented block", "_DEDENT": "the end of the block",
    "$END": "the end of the file",
}


class _ParseIssue(Exception):
    """Raised inside the indenter; translated to a CompileError by :func:`parse`."""

    def __init__(self, message: str, line: int, column: int, hint: str | None = None):
        super().__init__(message)
        self.message, self.line, self.column, self.hint = message, line, column, hint


def _make_indenter():
    from lark.indenter import Indenter
    from lark.lexer import Token

    class KernelIndenter(Indenter):
        """Python's indentation rules, plus the state error messages need (open brackets, statement start)."""

        NL_type = "_NEWLINE"
        OPEN_PAREN_types = ["LPAR", "LSQB"]
        CLOSE_PAREN_types = ["RPAR", "RSQB"]
        INDENT_type = "_INDENT"
        DEDENT_type = "_DEDENT"
        tab_len = 8

        def reset(self) -> None:
            self.paren_level = 0
            self.indent_level = [0]
            self.open_brackets: list = []
            self.stmt_start = None        # first token of the current logical line
            self.prev_stmt_start = None   # first token of the previous logical line
            self.prev = None              # the token before the last one yielded
            self.last = None              # the last token yielded

        def handle_NL(self, token):  # noqa: N802 (lark's name)
            if self.paren_level > 0:
                return
            yield token
            indent_str = token.rsplit("\n", 1)[1] if "\n" in token else ""
            indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
            if indent > self.indent_level[-1]:
                self.indent_level.append(indent)
                yield Token.new_borrow_pos(self.INDENT_type, indent_str, token)
            else:
                while indent < self.indent_level[-1]:
                    self.indent_level.pop()
                    yield Token.new_borrow_pos(self.DEDENT_type, indent_str, token)
                if indent != self.indent_level[-1]:
                    levels = " or ".join(str(level) for level in self.indent_level)
                    raise _ParseIssue("unindent does not match any outer indentation level",
                                      token.end_line, len(indent_str) + 1,
                                      f"line it up with an enclosing block (indent by {levels} spaces)")

        def _track(self, token) -> None:
            self.prev, self.last = self.last, token
            if token.type in ("_NEWLINE", "_INDENT", "_DEDENT"):
                if self.stmt_start is not None:
                    self.prev_stmt_start = self.stmt_start
                self.stmt_start = None
            elif self.stmt_start is None:
                self.stmt_start = token

        def _process(self, stream):
            token = None
            for token in stream:
                if token.type == self.NL_type:
                    for out in self.handle_NL(token):
                        self._track(out)
                        yield out
                    continue
                if token.type in self.CLOSE_PAREN_types:
                    if not self.open_brackets:
                        raise _ParseIssue(f"unmatched '{token}'", token.line, token.column)
                    opener = self.open_brackets[-1]
                    if _BRACKETS[opener.type] != token.type:
                        raise _ParseIssue(
                            f"closing '{token}' does not match '{opener}' opened on line {opener.line}",
                            token.line, token.column)
                self._track(token)
                yield token
                if token.type in self.OPEN_PAREN_types:
                    self.paren_level += 1
                    self.open_brackets.append(token)
                elif token.type in self.CLOSE_PAREN_types:
                    self.paren_level -= 1
                    self.open_brackets.pop()
            if self.open_brackets:
                opener = self.open_brackets[-1]
                raise _ParseIssue(f"'{opener}' was never closed", opener.line, opener.column,
                                  f"close it with '{_CLOSE_TEXT[_BRACKETS[opener.type]]}'")
            while len(self.indent_level) > 1:
                self.indent_level.pop()
                out = Token.new_borrow_pos(self.DEDENT_type, "", token) if token else Token(
                    self.DEDENT_type, "", 0, 1, 1, 1, 1, 0)
                self._track(out)
                yield out

        def process(self, stream):
            self.reset()
            return self._process(stream)

    return KernelIndenter()


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _lark():
    """The lark parser (built once per process, ~0.2 s)."""
    import lark

    grammar = resources.files("lowbit.dsl").joinpath("grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(grammar, parser="lalr", lexer="basic", postlex=_make_indenter(),
                     propagate_positions=True, maybe_placeholders=True, start=["start", "testlist"])


# ---------------------------------------------------------------------------------------------------
# public entry points
def parse(text: str | Source, filename: str = "<string>") -> n.Module:
    """Parse a kernel file's text (or a :class:`Source`) into a :class:`~lowbit.dsl.nodes.Module`.

    Raises :class:`~lowbit.errors.CompileError` (located) on any syntax error.
    """
    source = text if isinstance(text, Source) else Source(text, filename)
    try:
        tree = _parse_tree(source, "start")
        return _Builder(source).module(tree)
    except RecursionError:
        raise CompileError("the source is nested too deeply to parse", location=source.location(1, 1),
                           hint="split deeply nested expressions into several assignments") from None


def parse_expression(text: str, filename: str = "<expression>") -> n.Expr:
    """Parse one expression (e.g. a ``--const`` value).

    >>> dump(parse_expression("spatial(2, 4).local(2, 1)"))[:30]
    'Call(func=Attribute(value=Call'
    """
    source = Source(text.strip(), filename)
    try:
        tree = _parse_tree(source, "testlist")
        return _Builder(source).expr(tree)
    except RecursionError:
        raise CompileError("the expression is nested too deeply", location=source.location(1, 1)) from None


def dump(node: object, indent: int | None = None) -> str:
    return n.dump(node, indent)


# ---------------------------------------------------------------------------------------------------
def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return text


def _parse_tree(source: Source, start: str):
    import lark

    text = _normalize(source.text)
    if start == "testlist":
        text = text.rstrip("\n")
    parser = _lark()
    with _LOCK:
        indenter = parser.options.postlex
        try:
            return parser.parse(text, start=start)
        except _ParseIssue as issue:
            raise CompileError(issue.message, location=source.location(issue.line, issue.column),
                               hint=issue.hint) from None
        except lark.exceptions.UnexpectedCharacters as err:
            raise _unexpected_character(source, text, err) from None
        except lark.exceptions.UnexpectedToken as err:
            raise _unexpected_token(source, err.token, set(err.expected), indenter) from None
        except lark.exceptions.UnexpectedEOF as err:
            raise _unexpected_token(source, None, set(err.expected), indenter) from None
        except lark.exceptions.LarkError as err:  # any other lark failure: still a located syntax error
            last = getattr(indenter, "last", None)
            line, col = (last.line, last.column) if last is not None else (1, 1)
            raise CompileError(f"invalid syntax ({type(err).__name__})",
                               location=source.location(line, col)) from None


def _describe(token) -> str:
    if token is None or token.type == "$END":
        return "the end of the file"
    kind = token.type
    if kind == "_NEWLINE":
        return "the end of the line"
    if kind == "_INDENT":
        return "indent"
    if kind == "_DEDENT":
        return "the end of the block"
    if kind == "NAME":
        return f"name '{token}'"
    if kind.endswith("_NUMBER"):
        return f"number {token}"
    if kind in ("STRING", "LONG_STRING"):
        return "string literal"
    return f"'{token}'"


def _describe_expected(expected: set[str]) -> str | None:
    names = set(expected)
    parts = []
    if names & _EXPR_START and len(names & _EXPR_START) >= 3:
        parts.append("an expression")
        names -= _EXPR_START
    for name in sorted(names):
        text = _TERMINAL_TEXT.get(name)
        if text is None:
            if name.isupper() and name.isalpha():
                text = f"'{name.lower()}'"
            else:
                continue
        parts.append(text)
    if not parts or len(parts) > 4:
        return None
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _token_position(token, indenter) -> tuple[int, int]:
    if token is None or token.type == "$END":
        last = getattr(indenter, "last", None)
        if last is None:
            return 1, 1
        if last.type in ("_NEWLINE", "_INDENT", "_DEDENT"):
            return last.line, last.column
        return last.end_line or last.line, last.end_column or last.column
    if token.type in ("_NEWLINE", "_INDENT", "_DEDENT"):
        if token.type == "_NEWLINE":  # point just past the end of the line's last token
            return token.line, token.column
        return (token.end_line or token.line), len(str(token)) + 1
    return token.line, token.column


def _unexpected_token(source: Source, token, expected: set[str], indenter) -> CompileError:
    line, col = _token_position(token, indenter)
    kind = "$END" if token is None else token.type
    prev = getattr(indenter, "prev", None)
    stmt = getattr(indenter, "stmt_start", None)
    prev_stmt = getattr(indenter, "prev_stmt_start", None)
    if kind in ("_NEWLINE", "_INDENT", "_DEDENT", "$END") and stmt is None:
        stmt = prev_stmt  # the statement that just ended
    loc = source.location(line, col)

    def err(message: str, hint: str | None = None, location=loc) -> CompileError:
        return CompileError(message, location=location, hint=hint)

    if kind == "_INDENT":
        return err("unexpected indent", "this line is indented more than the block it belongs to",
                   source.location(token.end_line or line, len(str(token)) + 1))
    if expected == {"_INDENT"} or (expected and expected <= {"_INDENT"}):
        header = prev_stmt if prev_stmt is not None else stmt
        what = f"'{header}' statement on line {source.real_line(header.line)}" if header is not None else \
            "the ':'"
        return err(f"expected an indented block after {what}", "indent the body (4 spaces)")
    opened = getattr(indenter, "open_brackets", None)
    if opened and opened[-1].line < line:
        opener = opened[-1]
        return err(f"'{opener}' was never closed", f"close it with '{_CLOSE_TEXT[_BRACKETS[opener.type]]}'",
                   source.location(opener.line, opener.column))
    # a Python keyword that the kernel language does not have (it lexes as a name)
    for candidate in (prev, token):
        if candidate is not None and candidate.type == "NAME" and str(candidate) in _PYTHON_ONLY:
            return err(f"'{candidate}' is not part of the kernel language",
                       "kernels use a subset of Python: assignments, for/range, if/else, calls and "
                       "expressions", source.location(candidate.line, candidate.column))
    header_kw = _HEADER_KEYWORDS.get(stmt.type) if stmt is not None else None
    if "COLON" in expected and header_kw and kind in ("_NEWLINE", "$END"):
        return err("expected ':'", f"a '{header_kw}' header ends with ':'")
    if kind == "EQUAL" and header_kw in ("if", "elif", "while"):
        return err("invalid syntax; maybe you meant '==' instead of '='?",
                   "'=' assigns; '==' compares")
    if kind == "MULOP" and str(token) == "@" and stmt is token:
        return err("decorators are not part of the kernel language",
                   "in a kernel file write plain 'def'; @lowbit.jit belongs in Python modules")
    if kind in ("ELSE", "ELIF") and stmt is token:
        return err(f"'{token}' without a matching 'if'", "line it up with its 'if'")
    if kind in _EXPR_START and prev is not None and prev.type in _EXPR_END and "COMMA" in expected:
        return err("invalid syntax; perhaps you forgot a comma?",
                   "two expressions in a row need a ',' or an operator between them")
    message = f"invalid syntax: unexpected {_describe(token)}"
    wanted = _describe_expected(expected)
    if kind in ("_NEWLINE", "$END") and wanted:
        message = f"expected {wanted}"
    elif wanted:
        message += f"; expected {wanted}"
    return err(message)


def _unexpected_character(source: Source, text: str, err) -> CompileError:
    char = err.char
    line, col = err.line, err.column
    loc = source.location(line, col)
    if char in "\"'":
        return CompileError("unterminated string literal", location=loc, hint="close the string with "
                            f"{char} on the same line (or use triple quotes)")
    if char == "\\":
        return CompileError("unexpected character after line continuation character", location=loc,
                            hint="a '\\' continues a line only when it is the line's last character")
    if char in "{}":
        return CompileError(f"'{char}': dicts and sets are not part of the kernel language", location=loc,
                            hint="use a list [...] or a tuple (...)")
    if char == "!":
        return CompileError("invalid character '!'", location=loc, hint="use 'not x' or 'x != y'")
    if char in "\t\f ":
        char_text = repr(char)
    elif char.isprintable() and char.isascii():
        char_text = f"'{char}'"
    else:
        char_text = f"'{char}' (U+{ord(char):04X})"
    return CompileError(f"invalid character {char_text}", location=loc)


# ---------------------------------------------------------------------------------------------------
class _Builder:
    """lark tree -> :mod:`nodes` tree, keeping spans."""

    def __init__(self, source: Source):
        self.source = source

    # -- helpers --
    @staticmethod
    def span(tree) -> Span:
        from lark import Token

        if isinstance(tree, Token):
            return Span(tree.line, tree.column, tree.end_line or tree.line,
                        tree.end_column or tree.column + len(tree))
        m = tree.meta
        if getattr(m, "empty", True):
            return Span(1, 1, 1, 2)
        return Span(m.line, m.column, m.end_line, m.end_column)

    def error(self, message: str, tree, hint: str | None = None) -> CompileError:
        return CompileError(message, location=self.source.span_location(self.span(tree)), hint=hint)

    # -- module / statements --
    def module(self, tree) -> n.Module:
        body = []
        for child in tree.children:
            if child is not None:
                body.extend(self.stmts(child))
        return n.Module(self.span(tree), tuple(body))

    def stmts(self, tree) -> list:
        if tree.data == "simple_stmt":
            return [self.small(c) for c in tree.children if c is not None]
        return [self.compound(tree)]

    def suite(self, tree) -> tuple:
        out = []
        for child in tree.children:
            if child is not None:
                out.extend(self.stmts(child))
        return tuple(out)

    def small(self, tree):
        kind, ch, sp = tree.data, tree.children, self.span(tree)
        if kind == "expr_stmt":
            return n.ExprStmt(sp, self.expr(ch[0]))
        if kind == "assign":
            exprs = [self.expr(c) for c in ch]
            return n.Assign(sp, tuple(exprs[:-1]), exprs[-1])
        if kind == "augassign":
            return n.AugAssign(sp, self.expr(ch[0]), str(ch[1])[:-1], self.expr(ch[2]))
        if kind == "annassign":
            value = self.expr(ch[2]) if ch[2] is not None else None
            return n.AnnAssign(sp, self.expr(ch[0]), self.expr(ch[1]), value)
        if kind == "pass_stmt":
            return n.Pass(sp)
        if kind == "break_stmt":
            return n.Break(sp)
        if kind == "continue_stmt":
            return n.Continue(sp)
        if kind == "return_stmt":
            return n.Return(sp, self.expr(ch[0]) if ch and ch[0] is not None else None)
        raise self.error(f"unsupported statement '{kind}'", tree)  # pragma: no cover (grammar-bound)

    def compound(self, tree):
        kind, ch, sp = tree.data, tree.children, self.span(tree)
        if kind == "funcdef":
            name, params, _arrow, returns, suite = ch
            plist = tuple(self.param(p) for p in (params.children if params is not None else []) if p is not None)
            body = self.suite(suite)
            doc = None
            if body and isinstance(body[0], n.ExprStmt) and isinstance(body[0].value, n.Constant) \
                    and isinstance(body[0].value.value, str):
                doc = body[0].value.value
            return n.FunctionDef(sp, str(name), plist, self.expr(returns) if returns is not None else None,
                                 body, doc)
        if kind == "if_stmt":
            test, body = self.expr(ch[0]), self.suite(ch[1])
            elifs = [c for c in ch[2:-1] if c is not None]
            orelse = self.suite(ch[-1]) if ch[-1] is not None else ()
            for clause in reversed(elifs):
                orelse = (n.If(self.span(clause), self.expr(clause.children[0]),
                               self.suite(clause.children[1]), orelse),)
            return n.If(sp, test, body, orelse)
        if kind == "for_stmt":
            return n.For(sp, self.expr(ch[0]), self.expr(ch[1]), self.suite(ch[2]))
        if kind == "while_stmt":
            return n.While(sp, self.expr(ch[0]), self.suite(ch[1]))
        raise self.error(f"unsupported statement '{kind}'", tree)  # pragma: no cover

    def param(self, tree) -> n.Param:
        name, ann, default = tree.children
        return n.Param(self.span(tree), str(name), self.expr(ann) if ann is not None else None,
                       self.expr(default) if default is not None else None)

    # -- expressions --
    def expr(self, tree) -> n.Expr:
        from lark import Token

        if isinstance(tree, Token):  # a bare token can only be a NAME in a few inlined spots
            return n.Name(self.span(tree), str(tree))
        kind, ch, sp = tree.data, tree.children, self.span(tree)
        if kind == "name":
            return n.Name(sp, str(ch[0]))
        if kind == "int_lit":
            return n.Constant(sp, int(str(ch[0]).replace("_", ""), 0))
        if kind == "float_lit":
            return n.Constant(sp, float(str(ch[0]).replace("_", "")))
        if kind == "string":
            return n.Constant(sp, "".join(_string_value(str(t)) for t in ch))
        if kind == "none_lit":
            return n.Constant(sp, None)
        if kind == "true_lit":
            return n.Constant(sp, True)
        if kind == "false_lit":
            return n.Constant(sp, False)
        if kind == "paren":  # keep the parentheses in the span (messages quote the source)
            from dataclasses import replace

            return replace(self.expr(ch[0]), span=sp)
        if kind == "tuple":
            return n.Tuple(sp, tuple(self.expr(c) for c in ch if c is not None))
        if kind == "list":
            return n.List(sp, tuple(self.expr(c) for c in ch if c is not None))
        if kind == "opseq":
            return _OperatorParser(self, ch).parse()
        if kind == "ifexp":
            return n.IfExp(sp, self.expr(ch[1]), self.expr(ch[0]), self.expr(ch[2]))
        if kind == "call":
            args, keywords = [], []
            for arg in (ch[1].children if ch[1] is not None else []):
                if arg is None:
                    continue
                if getattr(arg, "data", None) == "keyword":
                    key = self.expr(arg.children[0])
                    if not isinstance(key, n.Name):
                        raise self.error("expression cannot be a keyword argument name", arg.children[0],
                                         "write name=value, or '==' to compare")
                    if any(k.name == key.id for k in keywords):
                        raise self.error(f"keyword argument '{key.id}' repeated", arg.children[0])
                    keywords.append(n.Keyword(self.span(arg), key.id, self.expr(arg.children[1])))
                else:
                    if keywords:
                        raise self.error("positional argument follows keyword argument", arg)
                    args.append(self.expr(arg))
            return n.Call(sp, self.expr(ch[0]), tuple(args), tuple(keywords))
        if kind == "subscript":
            return n.Subscript(sp, self.expr(ch[0]), tuple(self.expr(c) for c in ch[1].children
                                                            if c is not None))
        if kind == "slice":
            lower, upper, step = (self.expr(c) if c is not None else None for c in (list(ch) + [None] * 3)[:3])
            return n.Slice(sp, lower, upper, step)
        if kind == "attribute":
            return n.Attribute(sp, self.expr(ch[0]), str(ch[1]))
        if kind == "keyword":
            raise self.error("keyword argument outside a call", tree)
        raise self.error(f"unsupported expression '{kind}'", tree)  # pragma: no cover


# Python's operator precedence (higher binds tighter); 'not' (3) and unary + - ~ (11) are prefixes
_BINARY_PREC = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4, "|": 5, "^": 6, "&": 7,
                "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "//": 10, "%": 10, "@": 10, "**": 12}
_NOT_PREC, _UNARY_PREC, _COMPARE_PREC = 3, 11, 4


class _OperatorParser:
    """Precedence climbing over the flat operand/operator sequence of an ``opseq`` node."""

    def __init__(self, builder: "_Builder", items: list):
        self.b = builder
        self.items = items
        self.i = 0

    def peek_op(self) -> str | None:
        from lark import Token

        if self.i < len(self.items) and isinstance(self.items[self.i], Token):
            return str(self.items[self.i])
        return None

    def parse(self) -> n.Expr:
        expr = self.expr(1)
        if self.i != len(self.items):  # pragma: no cover - the grammar alternates operands and operators
            raise self.b.error("invalid operator sequence", self.items[self.i])
        return expr

    def unary(self, min_prec: int, allow_not: bool = False) -> n.Expr:
        from lark import Token

        item = self.items[self.i]
        if isinstance(item, Token):
            self.i += 1
            op = str(item)
            if op == "not":
                if min_prec > _NOT_PREC and not allow_not:
                    raise self.b.error("invalid syntax: 'not' here needs parentheses", item,
                                       "write e.g. a == (not b)")
                operand = self.expr(_COMPARE_PREC, allow_not=True)
                return n.UnaryOp(self._span(item, operand), "not", operand)
            operand = self.expr(_UNARY_PREC)
            return n.UnaryOp(self._span(item, operand), op, operand)
        self.i += 1
        return self.b.expr(item)

    def expr(self, min_prec: int, allow_not: bool = False) -> n.Expr:
        left = self.unary(min_prec, allow_not)
        while True:
            op = self.peek_op()
            if op is None or _BINARY_PREC[op] < min_prec:
                return left
            prec = _BINARY_PREC[op]
            tok = self.items[self.i]
            self.i += 1
            if op in ("and", "or"):
                values = [left, self.expr(prec + 1)]
                while self.peek_op() == op:
                    self.i += 1
                    values.append(self.expr(prec + 1))
                left = n.BoolOp(self._span(values[0], values[-1]), op, tuple(values))
            elif prec == _COMPARE_PREC:
                ops, rights = [op], [self.expr(prec + 1)]
                while self.peek_op() is not None and _BINARY_PREC[self.peek_op()] == _COMPARE_PREC:
                    ops.append(self.peek_op())
                    self.i += 1
                    rights.append(self.expr(prec + 1))
                left = n.Compare(self._span(left, rights[-1]), left, tuple(ops), tuple(rights))
            elif op == "**":  # right-associative; its right operand may carry a unary sign
                right = self.expr(_UNARY_PREC)
                left = n.BinOp(self._span(left, right), op, left, right, self.b.span(tok))
            else:
                right = self.expr(prec + 1)
                left = n.BinOp(self._span(left, right), op, left, right, self.b.span(tok))

    def _span(self, first, last) -> Span:
        a = first.span if isinstance(first, n.Node) else self.b.span(first)
        z = last.span if isinstance(last, n.Node) else self.b.span(last)
        return Span(a.line, a.column, z.end_line, z.end_column)


def _string_value(token: str) -> str:
    """The value of a string literal token (escapes interpreted; no bytes or f-strings)."""
    import ast as _pyast

    try:
        value = _pyast.literal_eval(token)
    except (ValueError, SyntaxError):
        return token.strip("'\"")
    return value if isinstance(value, str) else str(value)


__all__ = ["parse", "parse_expression", "dump"]


def iter_names(expr: n.Expr) -> Iterator[n.Name]:
    """Every :class:`~lowbit.dsl.nodes.Name` inside an expression, left to right."""
    if isinstance(expr, n.Name):
        yield expr
        return
    for value in vars(expr).values():
        if isinstance(value, n.Node):
            yield from iter_names(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, n.Node):
                    yield from iter_names(item)
