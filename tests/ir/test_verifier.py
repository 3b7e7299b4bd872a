"""The verifier rejects malformed kernels with precise messages; the builder reports misuse early."""
from __future__ import annotations

import pytest

from lowbit.errors import CompileError, SourceLocation
from lowbit.ir import (Binary, Cast, Constant, Dot, For, Full, If, Kernel, KernelBuilder, Load, ProgramId, Reduce,
                       ScalarParam, Store, SymbolRef, TensorParam, TileType, Value, View, Yield, verify)
from lowbit.ir.symbolic import Sym, cdiv

I32 = TileType("int32", ())
X = Value("x", TileType("float32", ("N",), "global"))
Y = Value("y", TileType("float32", ("N",), "global"))


def V(name, dtype="float32", shape=(), scope="register", layout=None):
    return Value(name, TileType(dtype, shape, scope, layout))


def kernel(*body, grid=(cdiv(Sym("N"), 4),), params=None):
    params = params if params is not None else (TensorParam(X, "in"), TensorParam(Y, "out"))
    return Kernel("bad", tuple(params), (), tuple(grid), tuple(body))


def zero():
    return Constant(V("z", "int32"), 0)


def expect_error(k, *fragments):
    with pytest.raises(CompileError) as info:
        verify(k)
    text = str(info.value)
    for frag in fragments:
        assert frag in text, f"{frag!r} not in:\n{text}"
    return info.value


def test_valid_kernel_passes():
    t = V("t", shape=(4,))
    verify(kernel(zero(), Load(t, X, (V("z", "int32"),)), Store(Y, t, (V("z", "int32"),))))


def test_use_before_definition():
    a = V("a", "int32")
    expect_error(kernel(Binary(V("s", "int32"), "add", a, a), Constant(a, 1)),
                 "%s = add: uses %a before its definition")


def test_never_defined():
    a = V("a", "int32")
    expect_error(kernel(Binary(V("s", "int32"), "add", a, a)), "%s = add: uses %a, which is never defined")


def test_defined_twice():
    a = V("a", "int32")
    expect_error(kernel(Constant(a, 1), Constant(a, 2)), "%a = const: %a is defined twice")


def test_use_with_a_different_type():
    a = V("a", "int32")
    expect_error(kernel(Constant(a, 1), Cast(V("b"), V("a", "float32"))),
                 "%b = cast: uses %a as f32, but it is defined as i32")


def test_store_to_read_only_tensor():
    t = V("t", shape=(4,))
    z = V("z", "int32")
    err = expect_error(kernel(zero(), Load(t, X, (z,)), Store(X, t, (z,))),
                       "store: stores to %x, which is declared in (read-only)")
    assert err.hint == "declare it out or inout"


def test_load_from_write_only_tensor():
    z = V("z", "int32")
    expect_error(kernel(zero(), Load(V("t", shape=(4,)), Y, (z,))), "loads from %y, which is declared out")


def test_arithmetic_on_low_bit_codes():
    w = Value("w", TileType("uint4", ("N",), "global"))
    z = V("z", "int32")
    q = V("q", "uint4", (8,))
    expect_error(kernel(zero(), Load(q, w, (z,)), Binary(V("r", "uint4", (8,)), "add", q, q),
                        params=(TensorParam(w, "in"),)),
                 "%r = add: operand dtype uint4 is a low-bit code type without arithmetic")


def test_dtype_and_shape_mismatch():
    a, b, c = V("a", "float16", (4,)), V("b", "float32", (4,)), V("c", "float32", (8,))
    expect_error(kernel(Full(a, 1.0), Full(b, 2.0), Binary(V("r", "float16", (4,)), "mul", a, b)),
                 "%r = mul: operand dtypes differ: f16 vs f32")
    expect_error(kernel(Full(b, 1.0), Full(c, 2.0), Binary(V("r", "float32", (4,)), "mul", b, c)),
                 "operand shapes differ: [4] vs [8] (broadcast first)")


def test_result_type_must_follow_the_rule():
    a = V("a", "float32", (4,))
    expect_error(kernel(Full(a, 1.0), Binary(V("r", "float32", (4,)), "lt", a, a)),
                 "%r = lt: result dtype must be bool, got f32")


def test_layout_shape_must_equal_tile_shape():
    from lowbit.layout import spatial

    lay = spatial(2, 4).local(2, 1)                         # shape [4, 4]
    expect_error(kernel(Full(V("t", "float32", (8, 8), layout=lay), 0.0)),
                 "%t = full: result %t layout", "has shape [4, 4], but the tile shape is [8, 8]")


def test_dot_rules():
    a, b = V("a", "float16", (16, 8)), V("b", "float16", (4, 32))
    acc = V("acc", "float16", (16, 32))
    expect_error(kernel(Full(a, 0.0), Full(b, 0.0), Full(acc, 0.0), Dot(V("d", "float16", (16, 32)), a, b, acc)),
                 "%d = dot: inner dims differ: a [16, 8] @ b [4, 32]",
                 "accumulator %acc dtype must be f32, got f16")


def test_loop_carried_types_must_agree():
    z, one = V("z", "int32"), V("one", "int32")
    acc0 = V("acc0", "float32", (4,))
    arg, res, h = V("acc", "float32", (4,)), V("res", "float32", (4,)), V("h", "float16", (4,))
    loop = For((res,), V("i", "int32"), z, one, one, (arg,), (acc0,),
               (Cast(h, arg), Yield((h,))))
    expect_error(kernel(zero(), Constant(one, 1), Full(acc0, 0.0), loop),
                 "yield: the loop body yields %h of type f16[4] for %acc of type f32[4]")


def test_loop_body_value_used_after_the_loop():
    z, one = V("z", "int32"), V("one", "int32")
    inner = V("inner", "float32", (4,))
    loop = For((), V("i", "int32"), z, one, one, (), (), (Full(inner, 1.0), Yield(())))
    expect_error(kernel(zero(), Constant(one, 1), loop, Cast(V("o", "float16", (4,)), inner)),
                 "%o = cast: uses %inner, which is defined inside a for/if body that has ended")


def test_body_must_end_with_yield_and_yield_only_ends_bodies():
    z, one = V("z", "int32"), V("one", "int32")
    loop = For((), V("i", "int32"), z, one, one, (), (), (Full(V("t", "float32", (4,)), 1.0),))
    expect_error(kernel(zero(), Constant(one, 1), loop), "the loop body must end with a yield")
    expect_error(kernel(zero(), Yield(())), "yield: yield at kernel level")


def test_program_id_axis_beyond_grid():
    expect_error(kernel(ProgramId(V("p", "int32"), 1)), "%p = program_id: axis 1 but the grid has 1 dimension(s)")


def test_offset_count_and_type():
    t = V("t", shape=(4,))
    f = V("f", "float32")
    expect_error(kernel(Full(f, 0.0) if False else Constant(f, 0.0), Load(t, X, (f, f))),
                 "%t = load: expected 1 offsets (one per axis of %x), got 2", "offset 0 %f must be an i32 scalar")


def test_load_needs_a_global_tensor():
    t, u = V("t", shape=(4,)), V("u", shape=(4,))
    expect_error(kernel(zero(), Full(t, 0.0), Load(u, t, (V("z", "int32"),))), "%t must be a global tensor")


def test_mask_must_be_bool_of_tile_shape():
    t, m = V("t", shape=(4,)), V("m", "int32", (4,))
    expect_error(kernel(zero(), Full(m, 1), Load(t, X, (V("z", "int32"),), mask=m)),
                 "%t = load: mask %m dtype must be bool, got i32")


def test_view_bit_counts():
    a = V("a", "uint8", (4, 6))
    expect_error(kernel(Full(a, 0), View(V("w", "uint32", (4, 2)), a)),
                 "%w = view: bits per row differ: 6 x 8 = 48 vs 2 x 32 = 64")


def test_unknown_symbol_and_grid_symbol():
    expect_error(kernel(SymbolRef(V("q", "int32"), "Q")), "'Q' is neither a shape symbol nor a constant")
    expect_error(kernel(grid=(cdiv(Sym("Z"), 4),)), "grid size cdiv(Z, 4) uses Z")


def test_reduce_axis_and_bool():
    a = V("a", "float32", (4, 4))
    expect_error(kernel(Full(a, 0.0), Reduce(V("r", "float32", (4,)), "sum", a, 2)),
                 "%r = sum: axis 2 out of range for rank 2")


def test_if_condition_must_be_bool_scalar():
    c = V("c", "int32")
    expect_error(kernel(Constant(c, 1), If((), c, (Yield(()),), (Yield(()),))),
                 "if: condition %c must be a bool scalar, got i32")


def test_literal_out_of_range_and_constant_dtype():
    expect_error(kernel(Constant(V("b", "uint8"), 300)), "%b = const: literal 300 is out of range [0, 255] of u8")


def test_scalar_param_and_intent_checks():
    p = ScalarParam(V("s", "uint4"))
    expect_error(kernel(params=(TensorParam(X, "in"), p)), "scalar parameter %s must be a native scalar")
    expect_error(kernel(params=(TensorParam(X, "rw"),)), "has intent 'rw'")


def test_all_problems_reported_together_with_locations():
    loc = SourceLocation("k.lbk", 7, 3, "    y = a + b\n", 12)
    a = V("a", "int32")
    k = kernel(Binary(V("s", "int32"), "add", a, a, loc=loc), ProgramId(V("p", "int32"), 2))
    err = expect_error(k, "k.lbk:7:3: error: %s = add: uses %a, which is never defined", "\n      ^" + "~" * 8 + "\n",
                       "axis 2 but the grid has 1", "2 errors")
    assert len(err.errors) == 2      # %a reported once per instruction, although used twice
    assert err.location == loc


# ------------------------------------------------------------------------------------------------
# builder-side errors
# ------------------------------------------------------------------------------------------------

def test_builder_rejects_arithmetic_on_codes_with_hint():
    kb = KernelBuilder("b")
    w = kb.tensor_param("w", "u4", ["K", "N"])
    loc = SourceLocation("k.py", 4, 9)
    q = kb.load(w, [0, 0], [8, 8])
    with pytest.raises(CompileError) as info:
        kb.add(q, 1, loc=loc)
    assert "low-bit code type" in info.value.message and "cast" in info.value.hint
    assert info.value.location == loc


def test_builder_loop_carried_mismatch_and_unclosed_scope():
    kb = KernelBuilder("b")
    kb.tensor_param("x", "f32", ["N"])
    acc = kb.zeros([4], "f32", name="acc")
    loop = kb.begin_for(0, 8, 1, [acc])
    with pytest.raises(CompileError, match="loop-carried value 'acc' enters the loop as f32\\[4\\] but the body "
                                           "yields f16\\[4\\]"):
        kb.end_for([kb.cast(loop.args[0], "f16")])
    with pytest.raises(CompileError, match="a for is still open"):
        kb.build()


def test_builder_if_rules():
    kb = KernelBuilder("b")
    x = kb.const(1.0)
    with pytest.raises(CompileError, match="condition must be a bool scalar"):
        kb.begin_if(x)
    kb.begin_if(kb.gt(x, 0.0))
    with pytest.raises(CompileError, match="if without else cannot yield"):
        kb.end_if([x])
    kb.begin_else([kb.const(2.0)])
    with pytest.raises(CompileError, match="result 0 is f32 in the then-branch but i32 in the else-branch"):
        kb.end_if([kb.const(3)])


def test_builder_shape_errors_name_the_instruction():
    kb = KernelBuilder("b")
    x = kb.tensor_param("x", "f32", ["M", "N"])
    with pytest.raises(CompileError, match="load: expected 2 offsets"):
        kb.load(x, [0], [4, 4])
    a, b = kb.zeros([4, 3]), kb.zeros([5, 3])
    with pytest.raises(CompileError, match=r"add: shapes \[4, 3\], \[5, 3\] do not broadcast"):
        kb.add(a, b)
    with pytest.raises(CompileError, match=r"view: a row of %zeros.2 has 3 x 8 = 24 bits, not a multiple of u32's 32"):
        kb.view(kb.cast(a, "u8"), "u32")
    with pytest.raises(CompileError, match="where: the condition must be a bool tile"):
        kb.where(a, a, b)
    with pytest.raises(CompileError, match="literal 300 is out of range"):
        kb.add(kb.cast(a, "u8"), 300)


def test_builder_promotion_and_broadcast():
    kb = KernelBuilder("b")
    h = kb.zeros([4, 1], "f16")
    i = kb.arange(0, 3)
    r = kb.add(h, i)                       # f16 [4,1] + i32 [3] -> f16 [4, 3]
    assert r.type == TileType("float16", (4, 3))
    assert kb.mul(h, 2.5).dtype == "float16"           # weak float literal
    assert kb.mul(i, 2.5).dtype == "float32"           # int tile * float literal -> f32
    assert kb.add(kb.cast(i, "u8"), kb.cast(i, "i32")).dtype == "int32"
    assert kb.add(kb.cast(i, "u32"), i).dtype == "uint32"
    assert kb.add(h, kb.cast(i, "bf16")).dtype == "float32"
    assert kb.div(i, 2).dtype == "float32"
    assert kb.shr(kb.cast(i, "u8"), i).dtype == "uint8"
    assert kb.lt(i, 2).dtype == "bool"
