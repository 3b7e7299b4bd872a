"""The text form: parse(print(k)) == k for every test kernel, layouts, hand-written text, parse errors."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, TileType, interpret, parse, parse_type, print_kernel, verify
from lowbit.ir.symbolic import Sym, cdiv, dim_eval, dim_str, parse_dim


def test_round_trip_every_kernel(builders):
    for name, build in builders.items():
        k = build()
        text = print_kernel(k)
        k2 = parse(text)
        assert k2 == k, name
        assert print_kernel(k2) == text, name
        verify(k2)


def test_parsed_kernel_runs_identically(K, rng):
    k = parse(print_kernel(K.build_gemm_f16()))
    a = rng.standard_normal((9, 20)).astype(np.float16)
    b = rng.standard_normal((20, 7)).astype(np.float16)
    c1, c2 = np.zeros((9, 7), np.float16), np.zeros((9, 7), np.float16)
    interpret(k, {"a": a, "b": b, "c": c1})
    interpret(K.build_gemm_f16(), {"a": a, "b": b, "c": c2})
    np.testing.assert_array_equal(c1, c2)


def test_text_shape():
    kb = KernelBuilder("t")
    x = kb.tensor_param("x", "u4", ["K", "N"])
    y = kb.tensor_param("y", "f16", ["K", "N"])
    t = kb.load(x, [0, 0], [8, 16])
    w = kb.view(t, "u32")
    kb.store(y, kb.cast(kb.view(w, "u4"), "f16"), [0, 0])
    text = print_kernel(kb.build())
    assert "%x: uint4[K, N] @global in" in text
    assert "%y: f16[K, N] @global out" in text
    assert "= view(%x.1) : u32[8, 2]" in text
    assert "= cast(%" in text and ": f16[8, 16]" in text
    assert "grid(1)" in text


def test_layouts_round_trip():
    from lowbit.layout import local, shared_row_major, spatial, swizzled_row_major

    reg = spatial(2, 4).local(2, 1)
    kb = KernelBuilder("lay")
    x = kb.tensor_param("x", "f16", ["M", "N"])
    t = kb.load(x, [0, 0], [4, 4], layout=reg)
    s = kb.alloc_shared("f16", [4, 4], layout=shared_row_major(4, 4))
    kb.store_shared(s, t)
    t2 = kb.load_shared(s, layout=local(2, 1) * spatial(2, 4))
    swz = swizzled_row_major(8, 64, 16)
    kb.alloc_shared("f16", [8, 64], layout=swz)
    kb.store(x, t2, [0, 0])
    k = kb.build()
    text = print_kernel(k)
    assert "layout=RegisterLayout(" in text
    k2 = parse(text)
    assert k2 == k
    from lowbit.ir import Load

    assert next(i for i in k2.body if isinstance(i, Load)).result.type.layout == reg
    assert "swizzle=Swizzle(" in text
    shared = [i.result.type for i in k2.body if hasattr(i, "result") and i.result.type.scope == "shared"]
    assert shared[-1].layout == swz


def test_hand_written_text_with_layout_expression():
    from lowbit.layout import spatial

    text = """
    # a comment
    kernel copy(%x: f32[N] @global in, %y: f32[N] @global out) grid(cdiv(N, 8)) {
      %p = program_id(axis=0) : i32
      %c8 = const(8) : i32
      %o = mul(%p, %c8) : i32
      %t = load(%x, [%o]) : f32[8] layout=spatial(2).local(4)
      %u = neg(%t) : f32[8]
      store(%y, %u, [%o])
    }
    """
    k = parse(text)
    assert k.body[3].result.type.layout == spatial(2).local(4)
    assert k.body[3].loc.line == 7
    x = np.arange(10, dtype=np.float32)
    y = np.zeros(10, np.float32)
    interpret(k, {"x": x, "y": y})
    np.testing.assert_array_equal(y, -x)


def test_locs_are_printed_as_comments_and_ignored():
    from lowbit.errors import SourceLocation

    kb = KernelBuilder("l")
    x = kb.tensor_param("x", "f32", ["N"])
    with kb.at(SourceLocation("k.lbk", 3, 5)):
        t = kb.load(x, [0], [4])
    kb.store(x, t, [0])
    k = kb.build()
    text = print_kernel(k, locs=True)
    assert "# k.lbk:3:5" in text
    assert parse(text) == k


@pytest.mark.parametrize("text,message", [
    ("kernel k() grid(1) { %a = add(%b, %b) : i32 }", "use of undefined value %b"),
    ("kernel k() grid(1) { %a = const(1) : i32\n %a = const(2) : i32 }", "defined twice"),
    ("kernel k() grid(1) { %a = frobnicate() : i32 }", "unknown instruction 'frobnicate'"),
    ("kernel k() grid(1) { %a = const(1) : q7 }", "unknown dtype 'q7'"),
    ("kernel k() grid(1) { %a = const(1) : i32 @texture }", "unknown scope 'texture'"),
    ("kernel k() grid(1) { %a = const(1, 2) : i32 }", "takes 1 positional"),
    ("kernel k() grid(1) { %a = program_id(axes=0) : i32 }", "no attribute 'axes'"),
    ("kernel k() grid(1) { store(%a) ", "undefined value %a"),
    ("kernel k() grid(1) { %a = const(1) : i32 ", "expected"),
    ("kernel k() grid(cdiv(M,)) { }", "bad size expression"),
])
def test_parse_errors(text, message):
    with pytest.raises(CompileError, match=message) as info:
        parse(text)
    assert info.value.location is not None and info.value.location.file == "<ir>"


def test_parse_error_location_points_at_token():
    with pytest.raises(CompileError) as info:
        parse("kernel k() grid(1) {\n  %a = const(1) : i32\n  %b = add(%a, %zz) : i32\n}")
    loc = info.value.location
    assert (loc.line, loc.column) == (3, 16)
    assert "^" in str(info.value)


def test_types_and_dims():
    assert parse_type("f16[16, 64] @shared") == TileType("float16", (16, 64), "shared")
    assert parse_type("i32") == TileType("int32", ())
    assert parse_type("float4_e2m1[K // G + 1, N] @global") == TileType(
        "f4e2m1", (Sym("K") // Sym("G") + 1, "N"), "global")
    d = parse_dim("cdiv(M, 16) * (K - 1) % 7")
    assert dim_eval(d, {"M": 33, "K": 4}) == ((33 + 15) // 16 * 3) % 7
    assert parse_dim(dim_str(d)) == d
    assert dim_str(Sym("A") - (Sym("B") - Sym("C"))) == "A - (B - C)"
    assert dim_eval(parse_dim(dim_str(Sym("A") - (Sym("B") - Sym("C")))), {"A": 10, "B": 5, "C": 2}) == 7
    assert cdiv(10, 4) == 3
    with pytest.raises(CompileError, match="has no value"):
        dim_eval(Sym("Q"), {})
