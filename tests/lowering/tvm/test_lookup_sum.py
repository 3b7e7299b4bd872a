"""The lookup of activation sums (``vpermps`` over ``x[k] w0 + x[k+1] w1``, ``lowering/tvm/lookup_sum.py``);
its numerics are in ``tests/kernels/test_matmul_lookup_sum.py``.

* selection: the generated TensorIR calls ``vpermps`` on a sum table exactly on an AVX-512 host, for 1-bit
  codes, 2-bit codes met by activations that are not bf16 (those take the bf16 pair dot) and 3-bit integer
  codes in a GEMV (stored in bit planes), with no zero point subtracted after the lookup;
* the proof: fields of consecutive codes found at their word and offset; codes of a group that are not
  side by side are refused; codes whose bits lie in planes are split into planes only where their table is
  affine in the bits.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lowbit.ir.builder import KernelBuilder  # noqa: E402
from lowbit.kernels.library import compiled  # noqa: E402
from lowbit.kernels.matmul import FILE, MatmulConfig, _constants  # noqa: E402
from lowbit.lowering.target import host_has_avx512  # noqa: E402
from lowbit.lowering.tvm import lookup_sum, pair_dot  # noqa: E402
from lowbit.lowering.tvm.operands import Affine  # noqa: E402
from lowbit.quant import quantize  # noqa: E402


def _source(x_dtype: str, dtype: str, zero_point: bool, cfg: MatmulConfig) -> str:
    w = quantize(torch.randn(64, 256), dtype, group_size=128, zero_point=zero_point)
    return compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, x_dtype, cfg, False)).source


@pytest.mark.parametrize("x_dtype,dtype,zero_point,zsum,expected", [
    ("float32", "int2", False, 0, True),
    ("float16", "uint2", False, 0, True),      # the implicit zero is folded into the table
    ("float32", "uint1", True, 1, True),       # zero points out of the sums: the codes meet x as they are
    ("float32", "uint2", True, 0, False),      # a zero subtracted after the lookup
    ("float32", "int3", False, 0, True),       # bit planes: 4 codes' bit b per field
    ("float32", "uint3", True, 0, False),      # a zero subtracted after the lookup
    ("float32", "float3_e1m1", False, 0, False),   # not affine in its bits: dense, 6-bit fields
    ("float32", "int4", False, 0, False),
    ("bfloat16", "int2", False, 0, False),     # stored as substreams: the bf16 pair dot (where the host has it)
    ("bfloat16", "uint1", True, 1, True),      # 4 products per lookup: fewer instructions than the pair dot
])
def test_selected_exactly_where_it_applies(x_dtype, dtype, zero_point, zsum, expected, tvm_cpu):
    text = _source(x_dtype, dtype, zero_point, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1, zsum=zsum))
    assert ("lut_sums" in text and f'"{lookup_sum.PERMPS}"' in text) == (expected and host_has_avx512())
    if expected and host_has_avx512():
        assert f'"{pair_dot.DPBF16}"' not in text


def _dot_kernel(shifts: list[int], table: list[float] = (-2.0, -1.0, 0.0, 1.0), mask: int = 3):
    """``dot(x, lookup(shr(word, shifts[k]) & mask, table))`` for x f32 [1, 4] and one u32 word per output lane
    (16 lanes): code ``k`` at bit ``shifts[k]`` of the lane's word."""
    kb = KernelBuilder("fields")
    x = kb.tensor_param("x", "f32", [1, 4])
    wq = kb.tensor_param("w", "u32", [16])
    out = kb.tensor_param("out", "f32", [1, 16], intent="out")
    xs = kb.load(x, [0, 0], [1, 4])
    word = kb.broadcast_to(kb.expand_dims(kb.load(wq, [0], [16]), 0), [4, 16])
    k_index = kb.broadcast_to(kb.expand_dims(kb.cast(kb.arange(0, 4), "u32"), 1), [4, 16])
    amount = kb.full([4, 16], 0, "u32")
    for k, s in enumerate(shifts):          # shift amount k -> s: where(arange == k, s, ...)
        amount = kb.where(kb.binary("eq", k_index, kb.full([4, 16], k, "u32")), kb.full([4, 16], s, "u32"), amount)
    codes = kb.lookup(kb.binary("and", kb.shr(word, amount), kb.full([4, 16], mask, "u32")), list(table), "f32")
    kb.store(out, kb.dot(xs, codes, kb.full([1, 16], 0.0, "f32")), [0, 0])
    kernel = kb.build()
    defs = {ins.result.name: ins for ins in kernel.body if hasattr(ins, "result")}
    dot = next(ins for ins in kernel.body if type(ins).__name__ == "Dot")
    return dot, defs


def test_field_proof():
    # K rows (0, 1) at bits 4, 6 and (2, 3) at bits 20, 22 of the lane's word: two fields, offsets 4 and 20
    dot, defs = _dot_kernel([4, 6, 20, 22])
    found = lookup_sum.match_dot(dot, defs)
    assert found is not None and found.bits == 2 and found.period == 4 and found.fields == ((0, 1), (2, 3))
    (plane,) = found.planes
    assert [src.offset for (src,) in plane.sources] == [4, 20]
    assert all(src.word == Affine(0, 0, 1) for (src,) in plane.sources)
    assert found.words.dtype == "uint32" and found.words.type.shape == (16,)
    # K rows 0 and 1 not side by side (a gap of 2 bits): no field holds both
    dot, defs = _dot_kernel([4, 8, 20, 22])
    assert lookup_sum.match_dot(dot, defs) is None
    # K row 1 below K row 0: the field's index bits would be in the wrong order
    dot, defs = _dot_kernel([6, 4, 20, 22])
    assert lookup_sum.match_dot(dot, defs) is None


def test_field_proof_for_1_bit_codes():
    # 1-bit codes of K rows 0..3 at bits 8..11: one field of four codes, table [0, 1] -> bits = 1
    dot, defs = _dot_kernel([8, 9, 10, 11], table=[0.0, 1.0], mask=1)
    found = lookup_sum.match_dot(dot, defs)
    assert found is not None and found.bits == 1 and found.fields == ((0, 1, 2, 3),)
    (plane,) = found.planes
    assert [src.offset for (src,) in plane.sources] == [8]
    tables = np.array(plane.field_tables(found.bits))
    assert np.array_equal(tables, (np.arange(16)[None, :] >> np.arange(4)[:, None]) & 1)


def test_field_tables_enumerate_the_codes_of_a_field():
    dot, defs = _dot_kernel([0, 2, 4, 6])
    found = lookup_sum.match_dot(dot, defs)
    low, high = (np.array(t) for t in found.planes[0].field_tables(found.bits))
    values = np.array([-2.0, -1.0, 0.0, 1.0])
    assert np.array_equal(low, values[np.arange(16) & 3]) and np.array_equal(high, values[np.arange(16) >> 2])


def _plane_kernel(table: list[float], offset: int = 0, lanes_words: int = 3):
    """``dot(x, lookup(code, table))`` for x f32 [1, 4] and 3-bit codes in bit planes: bit ``b`` of K row ``k``'s
    code in lane ``n`` is bit ``offset + k`` of word ``[n, b]`` of a u32 [16, 3] tile."""
    kb = KernelBuilder("planes")
    x = kb.tensor_param("x", "f32", [1, 4])
    wq = kb.tensor_param("w", "u32", [16, lanes_words])
    out = kb.tensor_param("out", "f32", [1, 16], intent="out")
    words = kb.broadcast_to(kb.expand_dims(kb.load(wq, [0, 0], [16, 3]), 0), [4, 16, 3])
    k_at = kb.broadcast_to(kb.reshape(kb.cast(kb.arange(offset, offset + 4), "u32"), [4, 1, 1]), [4, 16, 3])
    plane = kb.broadcast_to(kb.reshape(kb.cast(kb.arange(0, 3), "u32"), [1, 1, 3]), [4, 16, 3])
    bits = kb.binary("and", kb.shr(words, k_at), kb.full([4, 16, 3], 1, "u32"))
    codes = kb.sum(kb.binary("shl", bits, plane), axis=2)
    product = kb.dot(kb.load(x, [0, 0], [1, 4]), kb.lookup(codes, list(table), "f32"), kb.full([1, 16], 0.0, "f32"))
    kb.store(out, product, [0, 0])
    kernel = kb.build()
    defs = {ins.result.name: ins for ins in kernel.body if hasattr(ins, "result")}
    return next(ins for ins in kernel.body if type(ins).__name__ == "Dot"), defs


def test_plane_proof():
    """int3 codes in bit planes: three planes of 1-bit fields (one per word of the lane, at the same offset),
    their tables the code's value split by bits exactly (table[0] in bit 0's)."""
    int3 = [0.0, 1.0, 2.0, 3.0, -4.0, -3.0, -2.0, -1.0]
    found = lookup_sum.match_dot(*_plane_kernel(int3, offset=8))
    assert found is not None and found.bits == 1 and found.fields == ((0, 1, 2, 3),) and len(found.planes) == 3
    assert [p.table for p in found.planes] == [(0.0, 1.0), (0.0, 2.0), (0.0, -4.0)]
    assert [[(src.word, src.offset) for src in p.sources[0]] for p in found.planes] == [
        [(Affine(b, 0, 3), 8)] for b in range(3)]
    shifted = [v - 3 for v in range(8)]                               # uint3 less an implicit zero of 3
    assert [p.table for p in lookup_sum.match_dot(*_plane_kernel(shifted)).planes] == [(-3.0, -2.0), (0.0, 2.0),
                                                                                      (0.0, 4.0)]
    # every code's value is still the sum of its planes' values
    for code in range(8):
        assert sum(p.table[code >> b & 1] for b, p in enumerate(found.planes)) == int3[code]
    # a table not affine in the bits (float3_e1m1's values: a sign bit) cannot be split: refused
    assert lookup_sum.match_dot(*_plane_kernel([0.0, 1.0, 2.0, 3.0, -0.0, -1.0, -2.0, -3.0])) is None
