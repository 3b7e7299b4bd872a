"""The bf16 pair dot (``vpermw`` + ``vdpbf16ps``, ``lowering/tvm/pair_dot.py``) in the matmul kernel.

* numerics: bf16 activations x low-bit weights on TVM, every product exact, against fp64 with the f32
  accumulation bound (the same bound as ``test_tvm_matmul_forms.py``, bf16 output rounding), for the GEMV
  (``dot = 0``) and GEMM (``dot = 1``, 1 and 4 rows) forms, edges in N and K, the weight layouts of 1 and 2
  threads (pairs ``(k, k + 1)`` and ``(k, k + 2)``);
* selection: the generated TensorIR calls the pair dot exactly when the host has AVX-512 BF16, the
  activations are bf16 and the weights come from a table lookup of bf16-exact values (``vpermw``, or
  ``vpermi2w`` for the 64 entries of 6-bit codes; not with f32 activations; not with explicit zero points,
  whose subtraction follows the lookup), or, for codes the lookup form does not take, from any decode whose
  values bf16 holds exactly (``DecodedPairDot``); every finite code of the 5-8-bit types checked through
  whichever applies;
* the proof of the word/shift pairing rejects a packing whose halves do not pair, and finds the word,
  offset and funnel of codes unpacked from 16-bit streams (``bit_origins`` of an ``emit_extract``).
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lowbit.dtypes import dtype as lowbit_dtype  # noqa: E402
from lowbit.ir.builder import KernelBuilder  # noqa: E402
from lowbit.kernels.library import compiled  # noqa: E402
from lowbit.kernels.matmul import FILE, MatmulConfig, _constants, run_matmul  # noqa: E402
from lowbit.lowering.target import host_has_avx512_bf16  # noqa: E402
from lowbit.lowering.tvm import pair_dot  # noqa: E402
from lowbit.lowering.tvm.operands import Affine  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

U32 = 2.0 ** -24
#: how the pair dot joins two decoded f32 weights into one bf16 pair (the high halves of k and k + 1)
DECODED_JOIN = 'T.reinterpret("int32", T.bitwise_or(T.shift_right('
U_BF16 = 2.0 ** -8


def _check(y, x, w, what: str) -> None:
    wd = w.dequantize("float64")
    x64 = x.double()
    ref = x64 @ wd.T
    absdot = x64.abs() @ wd.abs().T
    n = x.shape[1] + 5
    tol = U_BF16 * ref.abs() + (1 + U_BF16) * (n * U32 / (1 - n * U32)) * absdot + 2.0 ** -126
    err = (y.double() - ref).abs()
    assert bool((err <= tol).all()), f"{what}: max err {float(err.max()):.3e}, worst {float((err / tol).max()):.3g}"


CASES = [  # dtype, group, n, k, m, config, threads
    ("int4", 128, 72, 256, 1, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1), 2),
    ("int4", 128, 72, 256, 1, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1), 1),
    ("uint4", 64, 50, 320, 4, MatmulConfig(4, 32, 64, 1, 1, wt=1, gdot=1), 2),
    ("int2", 128, 40, 384, 3, MatmulConfig(4, 64, 128, 1, 1, wt=1, gdot=1), 2),
    ("float4_e2m1", 64, 33, 192, 1, MatmulConfig(1, 32, 64, 1, 1, wt=1, gdot=1), 1),
    ("uint3", 64, 48, 128, 2, MatmulConfig(2, 16, 64, 1, 0, wt=1, gdot=1), 2),              # DOT = 0
    ("float3_e1m1", 32, 40, 96, 1, MatmulConfig(1, 32, 32, 1, 1, wt=1, gdot=1), 2),
    # 3-bit codes in two 16-bit substreams: codes crossing a 16-bit word take the funnel shift
    ("int3", 128, 264, 384, 1, MatmulConfig(1, 128, 128, 1, 1, wt=1, gdot=1), 2),
    ("int3", 64, 72, 192, 4, MatmulConfig(4, 64, 64, 1, 1, wt=1, gdot=1), 2),
    ("uint3", 128, 40, 256, 3, MatmulConfig(4, 32, 128, 1, 1, wt=1, gdot=1), 1),
    # many rows per tile: the unpack stays fused into the pair dot (computed once for all rows), edges in M
    ("int4", 128, 40, 256, 13, MatmulConfig(8, 32, 128, 1, 1, wt=1, gdot=1), 2),
    ("int2", 64, 24, 192, 16, MatmulConfig(16, 16, 64, 1, 1, wt=1, gdot=1), 1),
    # the default configuration of more than 4 rows of a cheaply unpacked weight: the streaming tile
    ("uint4", 128, 72, 256, 11, None, 2),
    ("int8", 128, 72, 256, 9, None, 2),
    # 5- and 6-bit codes in 16-bit substreams, looked up by vpermw / vpermi2w (64 entries), edges in N and M
    ("int5", 64, 40, 192, 3, MatmulConfig(4, 32, 64, 1, 1, wt=1, gdot=1), 2),
    ("uint6", 128, 48, 256, 4, None, 1),
    ("float6_e3m2", 64, 33, 128, 6, None, 2),
    ("int6", 128, 72, 256, 1, None, 2),
    ("float6_e2m3", 128, 40, 384, 16, None, 1),
    ("int5", 128, 72, 256, 16, None, 2),
    # decoded weights joined into bf16 pairs (DecodedPairDot): GEMV and 4-row tiles, edges in N and M
    ("int8", 128, 72, 256, 1, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1), 2),
    ("float8_e4m3fn", 128, 72, 256, 1, None, 2),
    ("int7", 64, 40, 192, 3, MatmulConfig(4, 32, 64, 1, 1, wt=1, gdot=1), 2),
    # 8-row tiles of decoded weights (x staged in pair buffers; 7-bit codes 32 wide repeat every 32 K rows)
    ("uint7", 128, 72, 256, 16, None, 2),
    ("float8_e4m3fn", 64, 40, 192, 13, MatmulConfig(8, 32, 64, 1, 1, wt=1, gdot=1), 1),
    ("uint7", 128, 40, 256, 8, MatmulConfig(8, 32, 128, 1, 1, wt=1, gdot=1), 2),
]


@pytest.mark.parametrize("dtype,group,n,k,m,cfg,threads", CASES,
                         ids=[f"{c[0]}-M{c[4]}-dot{c[5].dot if c[5] else 'default'}-t{c[6]}" for c in CASES])
def test_bf16_activations_against_fp64(monkeypatch, dtype, group, n, k, m, cfg, threads, tvm_cpu):
    monkeypatch.setenv("LOWBIT_NUM_THREADS", str(threads))     # the weight layout depends on the threads
    gen = torch.Generator().manual_seed(zlib.crc32(repr((dtype, group, n, k, m, threads)).encode()))
    w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=group)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    y = run_matmul(x, w, None, "tvm", cfg)
    assert y.shape == (m, n) and y.dtype == torch.bfloat16
    _check(y, x, w, f"tvm {dtype} {cfg} threads={threads}")


def _source(x_dtype: str, dtype: str, zero_point: bool, cfg: MatmulConfig) -> str:
    w = quantize(torch.randn(64, 256), dtype, group_size=128, zero_point=zero_point)
    return compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, x_dtype, cfg, False)).source


@pytest.mark.parametrize("x_dtype,dtype,zero_point,expected,rows", [
    ("bfloat16", "int4", False, True, 4),
    ("bfloat16", "uint2", False, True, 4),       # the implicit zero is folded into the table
    ("float32", "int4", False, False, 4),        # f32 activations: products are not exact in bf16
    ("bfloat16", "uint4", True, False, 4),       # explicit zero points: a subtraction after the lookup
    ("bfloat16", "int3", False, True, 4),        # 16-bit substreams
    ("bfloat16", "int5", False, True, 4),        # a 32-entry table, 16-bit substreams
    ("bfloat16", "float6_e3m2", False, True, 1),     # a 64-entry table (vpermi2w), 16-bit substreams
    ("bfloat16", "uint6", False, True, 4),
    ("float32", "float6_e3m2", False, False, 1),     # f32 activations: the bits decode
    # decoded weights joined into bf16 pairs: codes no table holds, whose values bf16 holds
    ("bfloat16", "int8", False, "decoded", 4),   # int8 storage: a cast
    ("bfloat16", "uint7", False, "decoded", 4),  # magic-number arithmetic
    ("bfloat16", "float8_e4m3fn", False, "decoded", 4),    # the bits decode
    ("bfloat16", "int8", False, False, 1),    # one row: the join costs what the multiply-adds save
    ("float32", "int8", False, False, 4),
    ("bfloat16", "uint8", True, False, 4),       # (q - z) is not exact in bf16
])
def test_selected_exactly_where_it_applies(x_dtype, dtype, zero_point, expected, rows, tvm_cpu):
    text = _source(x_dtype, dtype, zero_point, MatmulConfig(rows, 64, 128, 1, 1, wt=1, gdot=1))
    bf16 = host_has_avx512_bf16()
    assert (f'"{pair_dot.DPBF16}", ' in text) == (bool(expected) and bf16)
    # codes take vpermw (6-bit codes vpermi2w); decoded weights are joined by their high halves (a shift and a mask)
    wide = lowbit_dtype(dtype).nbits == 6
    assert (f'"{pair_dot.PERMW}", ' in text) == (expected is True and not wide and bf16)
    assert (f'"{pair_dot.PERMI2W}", ' in text) == (expected is True and wide and bf16)
    assert (DECODED_JOIN in text) == (expected == "decoded" and bf16)
    # 3-, 5- and 6-bit codes cross 16-bit words: those take the funnel shift, the others a 32-bit shift
    crossing = dtype in ("int3", "int5", "uint6", "float6_e3m2")
    assert (f'"{pair_dot.FUNNEL16}", ' in text) == (expected is True and crossing and bf16)


def test_a_host_without_avx512_bf16_stores_codes_for_f32_products(monkeypatch, tmp_path, tvm_cpu):
    """On a host without AVX-512 BF16 (an Ice Lake server) bf16 activations are widened to f32, and the codes
    are stored as for f32 activations: no 16-bit substreams (which only the pair dot needs), 2-bit codes in
    groups for the lookup of activation sums, 3-bit integer codes in bit planes. The host is simulated by
    taking ``avx512_bf16`` out of its flags; the kernels go to private memory and disk caches (no key sees the
    host's flags)."""
    from lowbit import driver
    from lowbit.kernels import library
    from lowbit.kernels.matmul import choose_config
    from lowbit.lowering import target

    flags = target.host_cpu_flags()
    monkeypatch.setattr(target, "host_cpu_flags", lambda: flags - {"avx512_bf16"})
    monkeypatch.setattr(library, "_COMPILED", {})
    monkeypatch.setattr(driver, "_MEMORY_CACHE", {})
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    avx512 = target.host_has_avx512()
    gen = torch.Generator().manual_seed(11)
    for dtype, n, k in (("int2", 72, 256), ("int3", 72, 256), ("int6", 40, 384), ("float6_e3m2", 33, 128)):
        w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=128)
        x = torch.randn(1, k, generator=gen).to(torch.bfloat16)
        cfg = choose_config(1, n, k, 128, "tvm", "cpu", workers=2, wtype=dtype, xtype="bfloat16")
        kernel = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, "bfloat16", cfg, False))
        fmt = kernel.param_formats["q"]
        assert fmt.substreams == 1, dtype
        assert fmt.groups == {"int2": 2 if avx512 else 1, "int3": 4 if avx512 else 1}.get(dtype, 1), dtype
        assert fmt.bit_planes == (dtype == "int3" and avx512), dtype
        assert pair_dot.DPBF16 not in kernel.source and pair_dot.PERMW not in kernel.source, dtype
        _check(run_matmul(x, w, None, "tvm", cfg), x, w, f"{dtype} x bf16 without AVX-512 BF16")


@pytest.mark.parametrize("dtype,rows,staged,period", [
    ("int7", 8, True, 32),       # 7-bit codes 32 outputs wide: the period is 32 K rows, unrolled whole
    ("int7", 4, False, 32),      # 4 rows read x where they are
    ("float8_e4m3fn", 8, True, 2),
    ("int4", 8, False, None),    # vpermw pairs of 4-bit codes are not adjacent K rows: x is read in place
])
def test_pair_nest_of_many_rows_stages_x(dtype, rows, staged, period, tvm_cpu):
    if not host_has_avx512_bf16():
        pytest.skip("no AVX-512 BF16 here")
    text = _source("bfloat16", dtype, False, MatmulConfig(rows, 32, 128, 1, 1, wt=1, gdot=1))
    assert f'"{pair_dot.DPBF16}", ' in text
    assert ("pair_x" in text) == staged
    if period is not None:    # the pairs of the last step of the decoded nest's period are constants
        assert re.search(rf"px\w* \* {period} \+ {period - 1}\b", text), dtype


DECODED_TYPES = ["int8", "uint8", "int7", "float8_e4m3fn", "float8_e5m2"]
LOOKED_UP_TYPES = ["uint6", "int5", "float6_e3m2", "float6_e2m3", "float5_e2m2"]


@pytest.mark.parametrize("dtype", DECODED_TYPES + LOOKED_UP_TYPES)
def test_bf16_pairs_carry_every_code_exactly(dtype, tvm_cpu):
    """Every finite code of the type, in every row of a 4-row tile, through the pair dot: 7-8-bit codes as
    f32 weights joined into bf16 pairs by their high halves, 5-6-bit codes looked up in a bf16 table (32
    entries by ``vpermw``, 64 by ``vpermi2w``); either must lose nothing."""
    from lowbit.packing import pack
    from lowbit.quant import QuantizedTensor

    code = lowbit_dtype(dtype)
    finite = np.flatnonzero(np.isfinite(code.values()))
    k, n, m, group = 2 * 128 * -(-len(finite) // 256), 32, 4, 128
    gen = np.random.default_rng(zlib.crc32(dtype.encode()))
    codes = np.stack([np.resize(np.roll(finite, 7 * row), k) for row in range(n)]).astype(np.uint8)
    like = quantize(torch.randn(n, k), dtype, group_size=group)
    scales = torch.from_numpy(gen.uniform(0.5, 2.0, like.scales.shape)).to(like.scales.dtype)
    w = QuantizedTensor(torch.from_numpy(pack(codes, code.nbits)), scales, like.zeros, code, group, (n, k))
    x = torch.from_numpy(gen.standard_normal((m, k))).to(torch.bfloat16)
    cfg = MatmulConfig(4, 32, 128, 1, 1, wt=1, gdot=1)
    text = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, "bfloat16", cfg, False)).source
    assert (DECODED_JOIN in text) == (dtype in DECODED_TYPES and host_has_avx512_bf16())
    permute = pair_dot.PERMI2W if code.nbits == 6 else pair_dot.PERMW
    assert (f'"{permute}", ' in text) == (dtype in LOOKED_UP_TYPES and host_has_avx512_bf16())
    _check(run_matmul(x, w, None, "tvm", cfg), x, w, f"every {dtype} code")
    if code.has_nan:      # a NaN weight stays NaN through the join (not an infinity): its output column only
        codes[3, 5] = code.nan_code
        w = QuantizedTensor(torch.from_numpy(pack(codes, code.nbits)), scales, like.zeros, code, group, (n, k))
        y = run_matmul(x, w, None, "tvm", cfg)
        assert bool(torch.isnan(y[:, 3]).all()) and not bool(torch.isnan(y[:, 4:]).any())


def test_bf16_exactness_proof():
    kb = KernelBuilder("k")
    i8 = kb.load(kb.tensor_param("q", "i8", [16]), [kb.const(0, "i32")], [16])
    u8 = kb.load(kb.tensor_param("p", "u8", [16]), [kb.const(0, "i32")], [16])
    i16 = kb.load(kb.tensor_param("h", "i16", [16]), [kb.const(0, "i32")], [16])
    u32 = kb.load(kb.tensor_param("u", "u32", [16]), [kb.const(0, "i32")], [16])
    small = kb.cast(i8, "f32")
    wide = kb.cast(i16, "f32")                                   # 16-bit integers need 16 bits of mantissa
    moved = kb.reshape(kb.broadcast_to(kb.expand_dims(small, 0), [2, 16]), [32])
    centred = kb.binary("sub", kb.cast(u8, "f32"), kb.full([16], 128.0, "f32"))    # an implicit zero point
    halves = kb.binary("sub", kb.cast(u8, "f32"), kb.full([16], 0.5, "f32"))       # 254.5: 9 significant bits
    low_bits = kb.cast(kb.binary("and", u32, kb.full([16], 63, "u32")), "f32")     # 6 bits of a word
    exact_table = kb.lookup(u32, [0.0, 1.5, -0.75, 96.0], "f32")
    inexact_table = kb.lookup(u32, [0.0, 1.0 + 2.0 ** -10], "f32")
    tiny_table = kb.lookup(u32, [0.0, 2.0 ** -130], "f32")       # subnormal: vdpbf16ps reads it as zero
    decoded = kb.view(u32, "f32")                                # stands for a decode select-dequant records
    product = kb.binary("mul", small, small)
    defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}

    def exact(v, decoded_types=None):
        return pair_dot.bf16_exact(v, defs, decoded_types or {})

    assert all(exact(v) for v in (small, moved, centred, low_bits, exact_table))
    assert not any(exact(v) for v in (wide, halves, inexact_table, tiny_table, product, decoded))
    assert pair_dot.value_set(low_bits, defs, {}).tolist() == list(range(64))
    # the record of select-dequant: the value set of the code type decides
    assert exact(decoded, {decoded.name: "float8_e4m3fn"}) and exact(decoded, {decoded.name: "uint8"})


@pytest.mark.parametrize("x_dtype,dtype,lookup", [
    ("float32", "int4", "permute"),        # vpermps of a 16-entry table
    ("float32", "uint2", "permute"),       # a 4-entry table repeated to 16 (to 8 on AVX2)
    ("bfloat16", "int2", "pair"),          # vpermw of 32 bf16 entries
    ("bfloat16", "int5", "permute"),       # vpermi2ps of a 32-entry table (two registers)
])
def test_register_tables_are_pinned(x_dtype, dtype, lookup, tvm_cpu):
    # a table passed through lowbit_pin once per program stays in a register: without it LLVM re-loads the
    # constant (a vbroadcasti32x4 from the constant pool) in every iteration of the lookup loop
    from lowbit.lowering.target import host_has_avx2, host_has_avx512
    from lowbit.lowering.tvm import codegen

    text = _source(x_dtype, dtype, False, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1))
    avx2 = not host_has_avx512() and host_has_avx2() and lookup == "permute" and dtype == "uint2"   # 8 entries
    in_register = {"permute": host_has_avx512(), "pair": host_has_avx512_bf16(), None: False}[lookup] or avx2
    pin, _ = codegen.pin_helper(8 if avx2 else 16)
    assert (f'"{pin}"' in text) == in_register
    if in_register:
        assert f"define <{8 if avx2 else 16} x i32> @{pin}" in text


def _product_kernel(shift_step: int, codes: int = 8, table: tuple[float, ...] = tuple(range(-8, 8))):
    """``sum(cast(x, f32)[:, None] * lookup(shr(word, shifts), table), axis=0)`` for x bf16 [codes] and one
    u32 word per output lane (16 lanes), code ``k`` at bit ``shift_step * k``."""
    kb = KernelBuilder("pairs")
    x = kb.tensor_param("x", "bf16", [codes])
    wq = kb.tensor_param("w", "u32", [16])
    out = kb.tensor_param("out", "f32", [16], intent="out")
    xs = kb.cast(kb.load(x, [0], [codes]), "f32")
    word = kb.broadcast_to(kb.expand_dims(kb.load(wq, [0], [16]), 0), [codes, 16])
    steps = kb.mul(kb.arange(0, codes), kb.full([codes], shift_step, "i32"))
    shifts = kb.broadcast_to(kb.expand_dims(kb.cast(steps, "u32"), 1), [codes, 16])
    values = kb.lookup(kb.shr(word, shifts), [float(v) for v in table], "f32")
    prod = kb.mul(kb.broadcast_to(kb.expand_dims(xs, 1), [codes, 16]), values)
    total = kb.reduce("sum", prod, axis=0)
    kb.store(out, total, [0])
    kernel = kb.build()
    defs = {ins.result.name: ins for ins in kernel.body if hasattr(ins, "result")}
    reduce = next(ins for ins in kernel.body if type(ins).__name__ == "Reduce")
    return reduce, defs


def test_pairing_proof():
    # 8 codes of 4 bits in one word, consecutive k: halves pair (k, k + 4) at shifts s and s + 16
    reduce, defs = _product_kernel(4)
    found = pair_dot.match_reduce(reduce, defs)
    assert found is not None and found.period == 8 and found.pairs == ((0, 4), (1, 5), (2, 6), (3, 7))
    # lane n reads word n (the loaded tile), shifted by the low code's offset; no code crosses a half
    assert found.words.type.shape == (16,) and found.words.dtype == "uint32"
    assert [src.offset for (src,) in found.sources] == [0, 4, 8, 12]
    assert all(src.low == Affine(0, 0, 1) and src.high is None for (src,) in found.sources)
    # codes 2 bits apart overlap: no shift is 16 more than another's with the same word -> no pairing
    reduce, defs = _product_kernel(2)
    assert pair_dot.match_reduce(reduce, defs) is None


def test_table_words_hold_bf16_pairs():
    reduce, defs = _product_kernel(4)
    found = pair_dot.match_reduce(reduce, defs)
    words = np.array(found.table_words(), np.int32).view(np.uint16)        # 32 bf16 entries, little-endian
    want = (np.array([float(v) for v in range(-8, 8)] * 2, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    assert np.array_equal(words, want)


def test_codes_in_one_index_window_share_a_shift():
    # 16 codes of 2 bits, code k at bit 2k: the halves pair (k, k + 8)
    table = (-2.0, -1.0, 0.0, 1.0)
    reduce, defs = _product_kernel(2, codes=16, table=table)
    found = pair_dot.match_reduce(reduce, defs)
    assert found is not None and found.pairs == tuple((k, k + 8) for k in range(8))
    # vpermw reads 5 bits per half: codes at bits 0, 2 | 4, 6 | 8, 10 | 12, 14 take one shift per window
    assert [(src.offset, src.shift, src.position) for (src,) in found.sources] == [
        (0, 0, 0), (2, 0, 2), (4, 4, 0), (6, 4, 2), (8, 8, 0), (10, 8, 2), (12, 12, 0), (14, 12, 2)]
    # the table for codes at bit 2 of the index: entry i is table[bits 2-3 of i], whatever the bits around
    for position in (0, 2):
        words = np.array(found.table_words(position), np.int32).view(np.uint16)
        values = np.array([table[(i >> position) & 3] for i in range(32)], np.float32)
        assert np.array_equal(words, (values.view(np.uint32) >> 16).astype(np.uint16)), position
    # 4-bit codes fill a window each: one shift per code, as before
    reduce, defs = _product_kernel(4)
    assert all(src.shift == src.offset for (src,) in pair_dot.match_reduce(reduce, defs).sources)


def test_share_shifts_leaves_codes_crossing_a_half_alone():
    word, other = Affine(0, 1, 1), Affine(1, 1, 1)
    sources = ((pair_dot.WordSource(word, 0),), (pair_dot.WordSource(word, 3),),
               (pair_dot.WordSource(word, 14, high=other),), (pair_dot.WordSource(other, 1),))
    shared = pair_dot.share_shifts(sources, 2)
    # bits 0-1 and 3-4 fit one window; the funnel-shifted code keeps its own; another word starts its own
    assert [(s.shift, s.position) for (s,) in shared] == [(0, 0), (0, 3), (14, 0), (1, 0)]


def test_a_fused_dot_of_zeros_starts_its_sums_in_registers(tvm_cpu):
    # dot(x, w) with no accumulator: the sums start at zero in registers instead of being loaded from a
    # zeroed buffer, and are stored once after the loop (the checked fallback zeroes the buffer itself)
    if not host_has_avx512_bf16():
        pytest.skip("the pair dot needs AVX-512 BF16")
    text = _source("bfloat16", "int4", False, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1))
    starts = [line.strip() for line in text.splitlines() if line.strip().startswith("pair_acc")
              and "[T.ramp(0, 1, 16)] = " in line and "lowbit_dpbf16" not in line]
    assert starts and all(line.endswith("= T.Broadcast(T.float32(0), 16)") for line in starts), starts
    assert "_fused" not in text


def test_bit_origins_of_codes_in_16_bit_streams():
    """``emit_extract`` of 3-bit codes from uint16 words (on 32 bits, as on CPUs): code ``j`` is bits
    ``3j .. 3j + 2`` of the little-endian stream, crossing into the next word for ``j`` = 5 and 10."""
    from lowbit.ir.interpreter import ZERO_BIT, bit_origins
    from lowbit.lowering.passes.dequant import emit_extract
    from lowbit.lowering.passes.lowbit_emit import Emitter

    kb = KernelBuilder("stream")
    w = kb.tensor_param("w", "u16", [2, 6])
    words = kb.load(w, [kb.const(0, "i32"), kb.const(0, "i32")], [2, 6])
    kernel = kb.build()
    em = Emitter({v.name for ins in kernel.body for v in ins.outputs})
    for wide in (False, True):
        carrier = emit_extract(em, words, "uint3", (2, 32), keep_high_bits=True, wide=wide)
        defs = {v.name: ins for ins in list(kernel.body) + em.body for v in ins.outputs}
        root, bits = bit_origins(carrier, defs)
        assert root.name == words.name and bits.shape == (2, 32, 32)
        for row in range(2):
            for j in range(32):
                stream = [row * 6 * 16 + 3 * j + b for b in range(3)]      # (word element) * 16 + bit
                assert bits[row, j, :3].tolist() == stream, (wide, row, j)
    # a carry (two sources of one bit) is not a bit move
    both = em.binary("add", carrier, carrier)
    defs = {v.name: ins for ins in list(kernel.body) + em.body for v in ins.outputs}
    assert bit_origins(both, defs) is None and ZERO_BIT == -1
