"""Node helpers passes rely on: inputs/outputs/regions, walk, replace_inputs, map_values, types."""
from __future__ import annotations

import dataclasses

import pytest

from lowbit.errors import CompileError, DTypeError, SourceLocation
from lowbit.ir import (Binary, Constant, For, KernelBuilder, Load, Store, TileType, Value, print_kernel, verify,
                       walk)
from lowbit.ir.symbolic import Sym, cdiv, dim_subst, dim_symbols, to_sympy
from lowbit.ir.types import canonical_dtype, is_code, promote


def test_inputs_outputs_regions_and_walk(K):
    k = K.build_gemm_f16()
    loop = next(i for i in k.body if isinstance(i, For))
    assert loop.outputs == loop.results and len(loop.results) == 1
    assert loop.inputs == (loop.start, loop.stop, loop.step, *loop.inits)
    assert loop.regions == (loop.body,)
    order = [type(i).__name__ for i in walk(k.body)]
    assert order.index("For") < order.index("Dot") < order.index("Yield") < order.index("Store")
    assert Store.SIDE_EFFECTS and Load.READS_MEMORY and not Binary.SIDE_EFFECTS
    assert k.shape_symbols() == ("M", "K", "N")


def test_replace_inputs_and_map_values_keep_kernel_valid():
    kb = KernelBuilder("r")
    x = kb.tensor_param("x", "i32", ["N"])
    a = kb.const(1, name="a")
    b = kb.const(2, name="b")
    s = kb.add(a, b, name="s")
    kb.store(x, kb.broadcast_to(s, [4]), [0])
    k = kb.build()
    add = next(i for i in k.body if isinstance(i, Binary))
    swapped = add.replace_inputs({a: b})
    assert swapped.inputs == (b, b) and swapped.result == add.result
    renamed = add.map_values(lambda v: dataclasses.replace(v, name=v.name + "_r"))
    assert [v.name for v in renamed.inputs] == ["a_r", "b_r"] and renamed.result.name == "s_r"
    body = tuple(swapped if i is add else i for i in k.body)
    verify(dataclasses.replace(k, body=body))


def test_loc_is_not_part_of_equality():
    v = Value("c", TileType("int32", ()))
    assert Constant(v, 1, loc=SourceLocation("a", 1, 1)) == Constant(v, 1)
    assert hash(Constant(v, 1, loc=SourceLocation("a", 1, 1))) == hash(Constant(v, 1))


def test_dtype_names():
    assert canonical_dtype("u4") == "uint4" and canonical_dtype("f6e3m2") == "float6_e3m2"
    assert canonical_dtype("bf16") == "bfloat16" and canonical_dtype("u32") == "uint32"
    assert is_code("float8_e4m3fn") and is_code("int3") and not is_code("int8")
    with pytest.raises(DTypeError):
        canonical_dtype("q7")
    with pytest.raises(CompileError, match="cast it first"):
        promote("uint4", "float16")
    assert TileType("u4", ("K", 8), "global").shape == (Sym("K"), 8)


def test_symbolic_helpers():
    d = cdiv(Sym("M"), Sym("BM")) * 2
    assert dim_symbols(d) == {"M", "BM"}
    assert dim_subst(d, {"BM": 16, "M": 40}) == 6
    import sympy

    assert to_sympy(dim_subst(d, {"BM": 16})) == 2 * sympy.ceiling(sympy.Symbol("M", integer=True, positive=True) / 16)


def test_kernel_str_is_its_text(K):
    k = K.build_row_softmax()
    assert str(k) == print_kernel(k)
