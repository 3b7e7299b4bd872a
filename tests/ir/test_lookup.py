"""The ``lookup`` instruction: typing, semantics (against Python's own modular indexing), printing, folding,
and the TVM / Triton code for it (both TVM forms: the AVX-512 permute in vectorized nests, the table read
elsewhere), bit for bit against the reference interpreter."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, interpret, nodes as n, parse, print_kernel, verify_problems
from lowbit.ir.types import TileType

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
NP = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "u32": np.uint32, "u8": np.uint8, "i8": np.int8}


def table_of(size: int, dtype: str) -> tuple:
    if dtype in ("f32", "f16"):
        return tuple((E2M1 * 16)[:size]) if size <= 16 else tuple(float(v) * 0.25 - 7.0 for v in range(size))
    if dtype == "i32":
        return tuple(-(v * 7919 % 100003) for v in range(size))
    if dtype == "u32":
        return tuple((v * 2654435761) % (1 << 32) for v in range(size))       # entries above 2**31 too
    return tuple(v % 256 if dtype == "u8" else v % 256 - 128 for v in range(size))


def lookup_kernel(size: int, dtype: str, index: str = "u32", width: int = 64, shift: int = 3) -> n.Kernel:
    kb = KernelBuilder("lk")
    x = kb.tensor_param("x", index, ["B"])
    y = kb.tensor_param("y", dtype, ["B"], intent="out")
    kb.set_grid(1)
    w = kb.load(x, [0], [width])
    kb.store(y, kb.lookup(kb.binary("shr", w, shift), table_of(size, dtype), dtype), [0])
    return kb.build()


def expected(xs: np.ndarray, size: int, dtype: str, shift: int = 3) -> np.ndarray:
    """Python's ``%`` on the integer values: the index's low bits (two's complement for signed indices)."""
    table = table_of(size, dtype)
    vals = [table[(int(v) >> shift) % size] for v in xs]
    return np.array(vals, dtype=NP[dtype])


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def random_index(index: str, width: int, seed: int = 0) -> np.ndarray:
    info = np.iinfo(NP[index])
    return np.random.default_rng(seed).integers(info.min, info.max, size=width, dtype=NP[index], endpoint=True)


# ---------------------------------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("size", [2, 4, 16, 256])
@pytest.mark.parametrize("dtype", ["f32", "f16", "i32", "u8"])
@pytest.mark.parametrize("index", ["u32", "i32", "u8", "i8"])
def test_interpreter_takes_the_low_bits(size, dtype, index):
    k = lookup_kernel(size, dtype, index)
    xs = random_index(index, 64)
    got = interpret(k, {"x": xs, "y": np.zeros(64, NP[dtype])})["y"]
    assert bits(got) == bits(expected(xs, size, dtype)), (size, dtype, index)


def test_negative_zero_and_nan_entries_survive_print_and_parse():
    kb = KernelBuilder("k")
    x = kb.tensor_param("x", "u8", ["B"])
    y = kb.tensor_param("y", "f32", ["B"], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.lookup(kb.load(x, [0], [4]), (-0.0, math.nan, math.inf, 1.5), "f32"), [0])
    k = kb.build()
    text = print_kernel(k)
    assert "table=[-0.0, nan, inf, 1.5]" in text
    again = parse(text)
    assert print_kernel(again) == text
    got = interpret(again, {"x": np.arange(4, dtype=np.uint8), "y": np.zeros(4, np.float32)})["y"]
    assert np.signbit(got[0]) and got[0] == 0 and np.isnan(got[1]) and got[2] == np.inf and got[3] == 1.5


@pytest.mark.parametrize("table,dtype,index,why", [
    ((1.0, 2.0, 3.0), "float32", "uint32", "power-of-two number of entries"),
    ((1.0,), "float32", "uint32", "power-of-two number of entries"),
    (tuple(range(512)), "int32", "uint32", "power-of-two number of entries from 2 to 256"),
    ((0.1, 0.2), "float16", "uint32", "not exactly a f16"),
    ((300, 1), "uint8", "uint32", "out of range"),
    ((1.0, 2.0), "float32", "float32", "integer index"),
    ((1.0, 2.0), "bool", "uint32", "native numbers"),
])
def test_verifier_rejects_bad_lookups(table, dtype, index, why):
    x = n.Value("x", TileType(index, (4,), "register"))
    r = n.Value("r", TileType(dtype, (4,), "register"))
    problems = verify_problems_of(n.Lookup(r, x, table))
    assert any(why in p for p in problems), problems


def verify_problems_of(ins: n.Instr) -> list[str]:
    from lowbit.ir.rules import check_instr

    return check_instr(ins)


def test_builder_reports_a_bad_table_with_its_location():
    kb = KernelBuilder("k")
    x = kb.tensor_param("x", "u32", ["B"])
    kb.set_grid(1)
    with pytest.raises(CompileError, match="power-of-two"):
        kb.lookup(kb.load(x, [0], [4]), (1.0, 2.0, 3.0), "f32")


# ---------------------------------------------------------------------------------------------------- folding
def _fold(k: n.Kernel) -> n.Kernel:
    from lowbit.lowering.passes.fold import fold
    from lowbit.lowering.passes.manager import PassContext
    from lowbit.lowering.target import parse_target

    return fold(k, PassContext(parse_target("tvm:llvm")))


@pytest.mark.parametrize("op,const,table_first", [("sub", 8.0, True), ("add", -0.0, False), ("mul", 0.1, True),
                                                   ("sub", 3.0, False)])
def test_arithmetic_with_a_constant_folds_into_the_table(op, const, table_first):
    """``lookup(i, T) op c`` becomes one lookup whose entries are exactly what the two instructions computed."""
    kb = KernelBuilder("k")
    x = kb.tensor_param("x", "u32", ["B"])
    y = kb.tensor_param("y", "f32", ["B"], intent="out")
    kb.set_grid(1)
    t = kb.lookup(kb.load(x, [0], [64]), E2M1, "f32")
    c = kb.full([64], const, "f32")
    kb.store(y, kb.binary(op, t, c) if table_first else kb.binary(op, c, t), [0])
    k = kb.build()
    folded = _fold(k)
    assert not verify_problems(folded)
    assert sum(isinstance(i, n.Lookup) for i in folded.walk()) == 2                 # the old one awaits dce
    assert not any(isinstance(i, n.Binary) and i.op == op for i in folded.walk())
    xs = random_index("u32", 64)
    want = interpret(k, {"x": xs, "y": np.zeros(64, np.float32)})["y"]
    got = interpret(folded, {"x": xs, "y": np.zeros(64, np.float32)})["y"]
    assert bits(got) == bits(want)


def test_a_constant_index_folds_to_the_entry():
    kb = KernelBuilder("k")
    y = kb.tensor_param("y", "f32", ["B"], intent="out")
    kb.set_grid(1)
    kb.store(y, kb.lookup(kb.full([4], 0xFFFFFFF9, "u32"), E2M1, "f32"), [0])   # low 4 bits: 9 -> -0.5
    folded = _fold(kb.build())
    assert not any(isinstance(i, n.Lookup) for i in folded.walk())
    got = interpret(folded, {"y": np.zeros(4, np.float32)})["y"]
    assert list(got) == [-0.5] * 4


# ---------------------------------------------------------------------------------------------------- backends
def _run(k: n.Kernel, backend: str, xs: np.ndarray, dtype: str, width: int) -> tuple[np.ndarray, str]:
    import torch

    from lowbit.driver import compile_ir

    compiled = compile_ir(k, backend)
    y = torch.zeros(width, dtype=getattr(torch, {"f32": "float32", "f16": "float16", "i32": "int32",
                                                 "u32": "uint32", "u8": "uint8"}[dtype]))
    compiled.launch(dict(x=torch.from_numpy(xs.copy()), y=y))
    return y.numpy(), str(getattr(compiled, "source", ""))


@pytest.mark.parametrize("size", [2, 8, 16, 32, 64, 128])
@pytest.mark.parametrize("dtype", ["f32", "i32", "u32", "f16"])
@pytest.mark.parametrize("width", [64, 5])
def test_tvm_lookup_matches_the_interpreter(size, dtype, width):
    """64 elements: a vectorized nest (on AVX-512, for 32-bit entries, a one-register permute of at most 16
    entries, a two-register one of 32, two of those picked by bit 5 for 64; on AVX2 the 8-lane permute of at
    most 8 entries; more: the table read); 5: the scalar table read."""
    from lowbit.lowering.target import host_has_avx2, host_has_avx512

    k = lookup_kernel(size, dtype, "u32", width)
    xs = random_index("u32", width)
    want = interpret(k, {"x": xs, "y": np.zeros(width, NP[dtype])})["y"]
    got, source = _run(k, "tvm", xs, dtype, width)
    assert bits(got) == bits(want)
    permute = width == 64 and dtype != "f16" and host_has_avx512()
    assert ("permvar" in source) == (permute and size <= 16), source
    assert ("vpermi2var" in source) == (permute and size in (32, 64)), source
    assert (f"T.bitwise_and(" in source and ", 32) != 0" in source) == (permute and size == 64), source
    avx2 = width == 64 and dtype != "f16" and not host_has_avx512() and host_has_avx2()
    assert ("llvm.x86.avx2.perm" in source) == (avx2 and size <= 8), source


@pytest.mark.parametrize("index", ["u8", "i32"])
def test_tvm_lookup_of_narrow_and_signed_indices(index):
    k = lookup_kernel(16, "f32", index, 64, shift=1)
    xs = random_index(index, 64, seed=3)
    want = interpret(k, {"x": xs, "y": np.zeros(64, np.float32)})["y"]
    assert bits(want) == bits(expected(xs, 16, "f32", shift=1))
    got, _ = _run(k, "tvm", xs, "f32", 64)
    assert bits(got) == bits(want)


@pytest.mark.parametrize("size", [2, 16, 256])
@pytest.mark.parametrize("dtype", ["f32", "f16", "i32"])
def test_triton_lookup_matches_the_interpreter(size, dtype):
    k = lookup_kernel(size, dtype, "u32", 64)
    xs = random_index("u32", 64, seed=1)
    want = interpret(k, {"x": xs, "y": np.zeros(64, NP[dtype])})["y"]
    got, _ = _run(k, "triton", xs, dtype, 64)
    assert bits(got) == bits(want)
