"""Every user mistake is a located CompileError (line, column, message, hint) — never a traceback.

Each case is a small kernel file with one mistake; ``at`` is the text the error must point at (its first
occurrence, or the n-th with ``nth``), from which the expected line and column are derived.
"""
from __future__ import annotations

import textwrap

import pytest

from lowbit.dsl import compile_source, parse
from lowbit.errors import CompileError

HEAD = "def k(x: f32[N], y: Out[f32[N]], w: u4[N], h: f16[N], m: f32[M, N], o16: Out[f16[N]],\n" \
       "      BLOCK: const = 16):\n"


def position(src: str, at: str, nth: int = 1) -> tuple[int, int]:
    start = -1
    for _ in range(nth):
        start = src.index(at, start + 1)
    line = src.count("\n", 0, start) + 1
    col = start - (src.rfind("\n", 0, start) + 1) + 1
    return line, col


def compile_error(src: str, **constants) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_source(src, "t.lbk", constants=constants or None)
    return info.value


def body(text: str) -> str:
    """A kernel with the standard parameters, a grid, an offset `o`, and ``text`` as the rest of its body."""
    prologue = "    grid(cdiv(N, BLOCK))\n    o = block(0) * BLOCK\n"
    return HEAD + prologue + textwrap.indent(textwrap.dedent(text), "    ")


CASES = [
    # (id, source, at, nth, message fragment, hint fragment or None)
    ("unknown-name", body("a = lod(x, [o], [BLOCK])\n"), "lod", 1, "unknown name 'lod'", "did you mean 'load'"),
    ("code-arithmetic", body("t = load(w, [o], [BLOCK])\nu = t * 2.0\n"), "t * 2.0", 1,
     "low-bit tiles hold codes", "cast(t, f16)"),
    ("dot-dtypes", body("a = load(m, [0, 0], [16, 16])\nb = cast(a, f16)\nc = dot(a, b)\n"), "dot(a, b)", 1,
     "different dtypes (f32 and f16)", "cast(b, f32)"),
    ("broadcast", body("a = load(x, [o], [16])\nb = load(x, [o], [8])\nc = a + b\n"), "a + b", 1,
     "shapes [16] and [8] do not broadcast", "x[:, None]"),
    ("dot-inner-dims", body("a = load(m, [0, 0], [16, 32])\nc = dot(a, a)\n"), "dot(a, a)", 1,
     "inner dimensions differ", None),
    ("bad-layout", body("a = load(m, [0, 0], [16, 64], layout=spatial(4, 8))\n"), "spatial(4, 8)", 1,
     "covers a [4, 8] tile, but this tile is [16, 64]", "layout's shape must equal"),
    ("layout-not-a-layout", body("a = load(m, [0, 0], [16, 64], layout=16)\n"), "16)", 2,
     "layout= expects a layout, got the int 16", None),
    ("store-read-only", body("store(x, load(x, [o], [BLOCK]), [o])\n"), "x, load", 1,
     "store into 'x', which is a read-only input", "x: Out[f32[N]]"),
    ("wrong-arity-missing", body("a = load(x, [o])\n"), "load(x, [o])", 1,
     "load() missing required argument 'shape'", "load(tensor, offsets, shape"),
    ("wrong-arity-extra", body("a = block(0, 1)\n"), "block(0, 1)", 1,
     "block() takes 1 argument but 2 were given", None),
    ("unknown-keyword", body("a = load(x, [o], [BLOCK], mask2=None)\n"), "load(x, [o], [BLOCK], mask2", 1,
     "unexpected keyword argument 'mask2'", "did you mean 'mask'"),
    ("grid-twice", body("grid(4)\n"), "grid(4)", 1, "grid(...) is called twice", None),
    ("store-dtype", body("store(o16, load(x, [o], [BLOCK]), [o])\n"), "load(x, [o], [BLOCK]), [o])", 1,
     "holds f16", "cast(load(x, [o], [BLOCK]), f16)"),
    ("offset-rank", body("a = load(m, [o], [4, 4])\n"), "[o], [4, 4]", 1, "has rank 2 but 1 offset was given",
     None),
    ("symbolic-tile-shape", body("a = load(x, [0], [N])\n"), "N])", 1, "tile sizes must be compile-time constants",
     "constant block size"),
    ("loop-carried-type", body("acc = zeros([BLOCK], f32)\nfor i in range(0, N, BLOCK):\n"
                               "    acc = cast(acc, f16)\n"), "acc = cast", 1,
     "'acc' is carried around the loop as an f32[16] tile but the body makes it an f16[16] tile",
     "acc = cast(..., f32)"),
    ("maybe-undefined", body("if block(0) == 0:\n    t = load(x, [o], [BLOCK])\nstore(y, t, [o])\n"),
     "t, [o]", 1, "'t' may be undefined here", None),
    ("range-step-zero", body("for i in range(0, N, 0):\n    pass\n"), "0):", 1, "step must be positive", None),
    ("unknown-dtype", HEAD.replace("w: u4[N]", "w: u17[N]") + "    grid(1)\n", "u17", 1,
     "unknown name 'u17'", "uint1..uint8"),
    ("return", body("return 1\n"), "return", 1, "kernels do not return values", "store(out, value"),
    ("while", body("while o < N:\n    pass\n"), "while", 1, "'while' loops are not supported", "range"),
    ("break", body("for i in range(4):\n    break\n"), "break", 1, "'break' is not supported", None),
    ("assign-subscript", body("a = load(x, [o], [BLOCK])\na[0] = 1.0\n"), "a[0]", 1, "cannot assign to 'a[0]'",
     "store(tensor"),
    ("missing-annotation", "def k(x, y: Out[f32[N]]):\n    grid(1)\n", "x,", 1,
     "parameter 'x' needs an annotation", "x: f16[M, K]"),
    ("duplicate-param", "def k(x: f32[N], x: f32[N]):\n    grid(1)\n", "x: f32[N])", 1,
     "duplicate parameter 'x'", None),
    ("constant-without-value", "def k(x: W[N], W: dtype):\n    grid(1)\n", "W: dtype", 1,
     "constant 'W' has no value", "--const W=u4"),
    ("tensor-in-arithmetic", body("a = x + 1.0\n"), "x + 1.0", 1,
     "'x' is the global tensor 'x' (f32[N]), not a tile", "load(x, offsets, shape)"),
    ("call-a-number", body("a = BLOCK(2)\n"), "BLOCK(2)", 1, "'BLOCK' is the int 16 and cannot be called", None),
    ("tile-condition", body("a = load(x, [o], [BLOCK])\nif a > 0.0:\n    pass\n"), "a > 0.0", 1,
     "the condition of 'if' is a bool[16] tile, not a scalar", "where(cond, a, b)"),
    ("reduce-axis", body("a = load(m, [0, 0], [4, 4])\ns = sum(a, axis=2)\n"), "2)", 1,
     "axis 2 is out of range", None),
    ("block-axis", body("a = block(1)\n"), "1)", 1, "block(1): the grid has 1 dimension", None),
    ("view-bits", body("a = load(w, [o], [3])\nb = view(a, u8)\n"), "view(a, u8)", 1,
     "3 x 4 = 12 bits, not a multiple of u8's 8", None),
    ("shift-float", body("a = load(x, [o], [BLOCK])\nb = a << 1\n"), "a << 1", 1,
     "'<<' needs integer or bool operands", "view(x, u32)"),
    ("where-cond", body("a = load(x, [o], [BLOCK])\nb = where(a, a, 0.0)\n"), "a, a, 0.0", 1,
     "where() needs a bool condition", None),
    ("grid-in-loop", HEAD + "    for i in range(2):\n        grid(4)\n", "grid(4)", 1,
     "grid(...) must be called at the top level", None),
    ("missing-grid", HEAD + "    o = 1\n", "k(", 1, "kernel 'k' never calls grid(...)", "grid(cdiv(N, BLOCK))"),
    ("block-before-grid", HEAD + "    o = block(0)\n    grid(4)\n", "block(0)", 1,
     "block() is used before grid(...)", None),
    ("unpack-count", body("a, b = 1, 2, 3\n"), "a, b", 1, "cannot unpack 3 values into 2 names", None),
    ("nested-def", body("def f(z):\n    pass\n"), "f(z)", 1, "nested function 'f' is not supported", None),
    ("float-offset", body("a = load(x, [0.5], [BLOCK])\n"), "0.5", 1, "an offset must be an integer", None),
    ("zero-division", body("a = BLOCK // 0\n"), "BLOCK // 0", 1, "division by zero", None),
    ("unusable-file-constant-type", "X = 'text'\n" + body("a = X + 1\n"), "X + 1", 1,
     "left operand of '+' 'X' is a string", None),
    ("reshape-count", body("a = load(x, [o], [BLOCK])\nb = reshape(a, [5, 3])\n"), "reshape(a, [5, 3])", 1,
     "cannot reshape an f32[16] tile (16 elements) to [5, 3] (15 elements)", None),
    ("dot-code-type", body("a = load(w, [o], [BLOCK])\nb = dot(a[None, :], a[:, None])\n"), "a[None, :]", 1,
     "low-bit codes must be converted first", None),
    ("tuple-index", body("a = load(m, [0, 0], [4, 4])\nb = a.shape[2]\n"), "2]", 1, "index 2 out of range", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_semantic_mistakes(case):
    _, src, at, nth, message, hint = case
    err = compile_error(src)
    assert message in err.message, str(err)
    assert err.location is not None, str(err)
    assert (err.location.line, err.location.column) == position(src, at, nth), str(err)
    assert err.location.file == "t.lbk"
    if hint is not None:
        assert err.hint is not None and hint in err.hint, str(err)
    # the rendered message shows the source line and a caret under the column
    text = str(err)
    line = src.splitlines()[err.location.line - 1]
    assert f"    {line}" in text and "^" in text


SYNTAX = [
    ("unexpected-indent", "def k(x: f32[N]):\n    a = 1\n        b = 2\n", "b = 2", "unexpected indent"),
    ("bad-dedent", "def k(x: f32[N]):\n    if x:\n        a = 1\n      b = 2\n", "b = 2",
     "unindent does not match any outer indentation level"),
    ("missing-colon", "def k(x: f32[N])\n    pass\n", "def k(x: f32[N])$", "expected ':'"),
    ("missing-colon-for", "def k(x: f32[N]):\n    for i in range(3)\n        pass\n", "in range(3)$",
     "expected ':'"),
    ("no-block", "def k(x: f32[N]):\n    for i in range(3):\n    a = 1\n", "a = 1",
     "expected an indented block after 'for' statement on line 2"),
    ("never-closed", "def k(x: f32[N]):\n    a = load(x, [1, 2]\n    b = 3\n", "(x, [1", "'(' was never closed"),
    ("unmatched", "def k(x: f32[N]):\n    a = 1)\n", ")\n", "unmatched ')'"),
    ("mismatched", "def k(x: f32[N]):\n    a = f(1]\n", "]\n", "closing ']' does not match '('"),
    ("assign-in-if", "def k(x: f32[N]):\n    if x = 1:\n        pass\n", "= 1", "maybe you meant '=='"),
    ("python-only-keyword", "def k(x: f32[N]):\n    import numpy\n", "import", "'import' is not part of the kernel"),
    ("lambda", "def k(x: f32[N]):\n    f = lambda z: z\n", "lambda", "'lambda' is not part of the kernel"),
    ("missing-comma", "def k(x: f32[N]):\n    f(a b)\n", "b)", "perhaps you forgot a comma"),
    ("stray-else", "def k(x: f32[N]):\n    else:\n        pass\n", "else", "'else' without a matching 'if'"),
    ("bad-character", "def k(x: f32[N]):\n    a = 1 ? 2\n", "?", "invalid character '?'"),
    ("unterminated-string", "def k(x: f32[N]):\n    a = 'abc\n", "'abc", "unterminated string literal"),
    ("dict", "def k(x: f32[N]):\n    a = {1: 2}\n", "{", "dicts and sets are not part of the kernel language"),
    ("positional-after-keyword", "def k(x: f32[N]):\n    f(a=1, 2)\n", "2)", "positional argument follows keyword"),
    ("dangling-operator", "def k(x: f32[N]):\n    a = 1 +\n", "a = 1 +$", "expected an expression"),
    ("top-level-statement", "x = 1\nfor i in range(3):\n    pass\n", "for",
     "only constants (NAME = value) and kernels"),
]


@pytest.mark.parametrize("case", SYNTAX, ids=[c[0] for c in SYNTAX])
def test_syntax_mistakes(case):
    _, src, at, message = case
    err = compile_error(src)
    assert message in err.message, str(err)
    if at.endswith("$"):  # just past the anchor (the end of the line)
        line, col = position(src, at[:-1])
        col += len(at) - 1
    else:
        line, col = position(src, at)
    assert (err.location.line, err.location.column) == (line, col), str(err)


def test_several_independent_errors_are_reported_together():
    src = body("a = lod(x, [o], [BLOCK])\nb = a + 1\nc = load(x, [o], [N])\nstore(x, c, [o])\n")
    err = compile_error(src)
    messages = [e.message for e in err.errors]
    # `b = a + 1` uses the failed `a`: no cascade error for it
    assert len(messages) == 3, str(err)
    assert "unknown name 'lod'" in messages[0]
    assert "compile-time constants" in messages[1]
    assert "read-only input" in messages[2]
    assert [e.location.line for e in err.errors] == [position(src, "lod")[0], position(src, "[N])\n")[0],
                                                     position(src, "store")[0]]
    assert str(err).endswith("3 errors")


def test_errors_inside_loops_and_branches_are_all_reported():
    src = body("for i in range(0, N, BLOCK):\n    a = lod(x, [i], [BLOCK])\n"
               "    if i == 0:\n        b = 1 + undefined_name\n")
    err = compile_error(src)
    assert [e.message for e in err.errors] == ["unknown name 'lod'", "unknown name 'undefined_name'"]


def test_unknown_const_is_reported():
    src = "def k(x: f32[N], BLOCK: const = 4):\n    grid(1)\n"
    err = compile_error(src, BLCK=8)
    assert "kernel 'k' has no constant 'BLCK'" in err.message
    assert "did you mean 'BLOCK'" in err.hint
    assert (err.location.line, err.location.column) == (1, 5)


def test_constant_of_the_wrong_kind():
    src = "def k(x: W[N], W: dtype = 3):\n    grid(1)\n"
    err = compile_error(src)
    assert "constant 'W' must be a dtype, got the int 3" in err.message
    assert (err.location.line, err.location.column) == position(src, "3)")


def test_parse_error_never_leaks_lark():
    for text in ["def", "def k(:", "))", "@decorator\ndef k(): pass\n",
                 "x = [1, 2", "def k(x: f32[N]):\n    x = 1 if 2\n", "def k(x):\n  return\n x = 1\n", "'''"]:
        with pytest.raises(CompileError) as info:
            parse(text, "t.lbk")
        assert info.value.location is not None and info.value.location.file == "t.lbk", text
