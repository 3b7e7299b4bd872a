"""Property tests of the derived packed formats: for every bit width 1..8 and many register layouts, the
host repack followed by the kernel's unpack (through the interpreter) reproduces the logical tile exactly;
``pack`` / ``unpack_storage`` round-trip on numpy and torch."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lowbit
from lowbit.errors import FormatError
from lowbit.ir import KernelBuilder
from lowbit.layout import RegisterLayout, column_local, column_spatial, local, spatial
from lowbit.lowering.passes.layout_rules import replicate
from lowbit.lowering.passes.packed_format import derive_format

_spec = importlib.util.spec_from_file_location("lowbit_validate", pathlib.Path(__file__).with_name("lowbit_validate.py"))
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)

#: a code type per bit width whose codes map one-to-one onto values (so the output identifies the code)
BY_BITS = {1: "uint1", 2: "uint2", 3: "uint3", 4: "uint4", 5: "uint5", 6: "uint6", 7: "uint7", 8: "float8_e4m3"}
PRIMITIVES = (local, spatial, column_local, column_spatial)


@st.composite
def layouts(draw) -> RegisterLayout:
    """Products of 1-3 rank-2 primitives (local / spatial, row or column order) and maybe a replication,
    with at most 256 elements."""
    out = None
    for _ in range(draw(st.integers(1, 3))):
        prim = draw(st.sampled_from(PRIMITIVES))
        dims = (draw(st.sampled_from((1, 2, 4))), draw(st.sampled_from((1, 2, 4, 8))))
        out = prim(*dims) if out is None else out * prim(*dims)
    if draw(st.booleans()):
        rep = replicate(draw(st.sampled_from((2, 4))), 2)
        out = rep * out if draw(st.booleans()) else out * rep
    if out.size > 256:
        out = local(2, 4) * spatial(4, 8)
    return out


def tile_kernel(dtype: str, layout: RegisterLayout, bf16_product: bool = False):
    """y = cast(load(x)) over a grid of tiles in the given layout; with ``bf16_product``, times a bf16 tile
    (the codes then meet bf16 activations, as in the GEMV that stores 3-bit codes as substreams)."""
    t0, t1 = layout.shape
    out = "f32" if dtype.startswith("float") or bf16_product else "i32"
    kb = KernelBuilder("tiles")
    x = kb.tensor_param("x", dtype, ["R", "C"])
    a = kb.tensor_param("a", "bf16", ["R", "C"]) if bf16_product else None
    y = kb.tensor_param("y", out, ["R", "C"], intent="out")
    kb.set_grid(f"cdiv(R, {t0})", f"cdiv(C, {t1})")
    r0, c0 = kb.mul(kb.program_id(0), t0), kb.mul(kb.program_id(1), t1)
    tile = kb.cast(kb.load(x, [r0, c0], [t0, t1], layout=layout), out)
    if bf16_product:
        tile = kb.mul(tile, kb.cast(kb.load(a, [r0, c0], [t0, t1]), "f32"))
    kb.store(y, tile, [r0, c0])
    return kb.build()


def every_code(dtype, shape, rng):
    return rng.integers(0, 1 << lowbit.dtype(dtype).nbits, size=shape).astype(np.uint8)


def packed_both_ways(fmt, codes: np.ndarray) -> np.ndarray:
    """``fmt.pack(codes)``, checked to unpack to the codes and to equal what packing a torch tensor gives."""
    storage = fmt.pack(codes)
    assert (fmt.unpack(storage, codes.shape) == codes).all()
    tstorage = fmt.pack(torch.from_numpy(codes))
    assert (tstorage.numpy() == storage).all() and (fmt.unpack(tstorage, codes.shape).numpy() == codes).all()
    return storage


def first_tile_words(fmt, storage: np.ndarray) -> np.ndarray:
    """The words of the first tile, ``[units, words per unit]`` (undoing the chunk-major order)."""
    return storage[0, 0].reshape(fmt.chunks, fmt.units, fmt.chunk_words).transpose(1, 0, 2).reshape(fmt.units, -1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), bits=st.integers(1, 8), extra=st.tuples(st.integers(0, 7), st.integers(0, 7)),
       target=st.sampled_from(["triton:cpu", "triton:sm_90"]), seed=st.integers(0, 2**16))
def test_repack_then_kernel_unpack_is_the_identity(layout, bits, extra, target, seed):
    dtype = BY_BITS[bits]
    try:
        fmt = derive_format(dtype, layout, vector_bytes=16 if target == "triton:sm_90" else 4)
    except lowbit.CompileError:
        assume(False)                                                   # bits not whole bytes: next test
    sizes = {"R": layout.shape[0] + extra[0], "C": layout.shape[1] * 2 + extra[1]}
    low = V.validate_pass(tile_kernel(dtype, layout), None, target, sizes=sizes, seed=seed, codes=every_code,
                          before=("infer-layouts", "lower-lowbit", "select-dequant"),
                          options={"lowbit.defer_dequant": True})
    assert low.param_formats["x"] == fmt and low.param_formats["x"].format_id == fmt.format_id


FIXED_LAYOUTS = {
    "mma_b": local(2, 1).column_spatial(4, 8).local(2, 1) * local(1, 2),        # 32 workers x 8 codes
    "cpu_lanes": spatial(1, 2) * local(8, 2) * spatial(1, 4),                  # threads over N, 4 lanes
    "replicated": replicate(2, 2) * column_spatial(4, 4).local(2, 2),          # replicas share storage
    "grouped": spatial(8, 4).local(1, 2),                                      # 2 codes per worker: g > 1
}


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("name", sorted(FIXED_LAYOUTS))
def test_every_bit_width_on_fixed_layouts(bits, name):
    layout = FIXED_LAYOUTS[name]
    sizes = {"R": 2 * layout.shape[0] - 1, "C": 3 * layout.shape[1] - 2}
    low = V.validate_pass(tile_kernel(BY_BITS[bits], layout), None, "triton:sm_90", sizes=sizes, codes=every_code,
                          before=("infer-layouts", "lower-lowbit", "select-dequant"), options={"lowbit.defer_dequant": True})
    fmt = low.param_formats["x"]
    assert fmt.layout == layout and fmt.units * fmt.unit_workers == layout.spatial_size // layout.replication


def test_bits_that_are_not_whole_bytes_are_refused():
    with pytest.raises(lowbit.CompileError, match="whole bytes"):
        derive_format("uint3", spatial(1, 1).local(1, 1))


@settings(max_examples=60, deadline=None)
@given(layout=layouts(), bits=st.integers(1, 8), vector=st.sampled_from((4, 16)),
       shape=st.tuples(st.integers(1, 40), st.integers(1, 40)), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip_numpy_and_torch(layout, bits, vector, shape, seed):
    try:
        fmt = derive_format(BY_BITS[bits], layout, vector)
    except lowbit.CompileError:
        return
    codes = np.random.default_rng(seed).integers(0, 1 << bits, size=shape).astype(np.uint8)
    storage = fmt.pack(codes)
    assert storage.shape == fmt.storage_shape(shape) and storage.dtype == np.dtype(fmt.storage_dtype)
    assert (fmt.unpack_storage(storage, shape) == codes).all()
    # every tile holds exactly tile-size * bits bits, with the padding as code 0
    assert storage.nbytes * 8 == np.prod(storage.shape[:-1]) * np.prod(fmt.tile_shape) * bits
    tstorage = fmt.pack(torch.from_numpy(codes))
    assert tstorage.dtype == getattr(torch, fmt.storage_dtype)  # the dtype the compiled kernel declares
    assert (tstorage.numpy().view(storage.dtype) == storage).all()
    assert (fmt.unpack(tstorage, shape).numpy() == codes).all()


def test_pack_rejects_bad_codes():
    fmt = derive_format("uint3", spatial(4, 2).local(2, 4))
    with pytest.raises(FormatError, match=r"codes must lie in \[0, 7\]"):
        fmt.pack(np.full((8, 8), 8, np.uint8))
    with pytest.raises(FormatError, match="rank 2"):
        fmt.pack(np.zeros(8, np.uint8))
    with pytest.raises(FormatError, match="must have shape"):
        fmt.unpack(np.zeros((1, 1, 3), np.uint32), (8, 8))


def test_worked_example():
    """uint4 in spatial(4, 2).local(2, 4): 8 workers, each 8 codes = one 32-bit word."""
    lay = spatial(4, 2).local(2, 4)
    fmt = derive_format("uint4", lay, 4)
    assert (fmt.units, fmt.codes_per_unit, fmt.words_per_unit, fmt.chunk_words) == (8, 8, 1, 1)
    codes = np.arange(64, dtype=np.uint8).reshape(8, 8) % 16
    words = fmt.pack(codes)[0, 0]
    # worker 3 = row pair 1, column half 1: rows 2-3, columns 4-7, in local order (row-major)
    want = [codes[2, 4], codes[2, 5], codes[2, 6], codes[2, 7], codes[3, 4], codes[3, 5], codes[3, 6], codes[3, 7]]
    assert [(int(words[3]) >> (4 * i)) & 15 for i in range(8)] == [int(c) for c in want]
    assert [tuple(x) for x in lay.worker_indices(3)] == [(2, 4), (2, 5), (2, 6), (2, 7), (3, 4), (3, 5), (3, 6), (3, 7)]


# ----------------------------------------------------------------------------------------------------
# substreams: two uint16 streams per 32-bit word (3-bit codes on TVM's CPU target)
# ----------------------------------------------------------------------------------------------------
SUBSTREAM_LAYOUTS = {
    "gemv_b": spatial(1, 2) * local(128, 4) * spatial(1, 16),               # the CPU GEMV's weight tile
    "small": spatial(1, 2) * local(16, 2) * spatial(1, 4),
    "column": column_local(8, 4) * spatial(1, 8),
}


@pytest.mark.parametrize("name", sorted(SUBSTREAM_LAYOUTS))
@pytest.mark.parametrize("bits", [3, 5])
def test_substreams_halves_hold_the_two_streams(name, bits):
    """Each 32-bit word is ``stream0[j] | stream1[j] << 16``, stream ``s`` the unit's codes whose first local
    mode is ``s`` mod 2, each packed as a dense little-endian bitstream (lowbit.packing, independently)."""
    from lowbit.packing import pack

    layout = SUBSTREAM_LAYOUTS[name]
    fmt = derive_format(BY_BITS[bits], layout, 4, substreams=2)
    assert fmt.storage_dtype == "uint32" and fmt.format_id != derive_format(BY_BITS[bits], layout, 4).format_id
    shape = (layout.shape[0] * 2 - 3, layout.shape[1] + 5)
    codes = np.random.default_rng(bits).integers(0, 1 << bits, size=shape).astype(np.uint8)
    storage = packed_both_ways(fmt, codes)
    tile = np.zeros(layout.shape, np.uint8)
    tile[: min(shape[0], layout.shape[0]), : min(shape[1], layout.shape[1])] = codes[: layout.shape[0], : layout.shape[1]]
    words = first_tile_words(fmt, storage)
    for unit in range(fmt.units):
        elements = fmt._unit_index[unit]                       # row-major tile elements, in stream order
        for s, part in enumerate(np.array_split(elements, 2)):
            if name != "column":                               # the first local mode is the rows: their parity
                assert set((part // layout.shape[1] % 2).tolist()) == {s}
            want = pack(tile.reshape(-1)[part], bits).view("<u2")
            assert np.array_equal((words[unit] >> (16 * s)) & 0xFFFF, want)


@pytest.mark.parametrize("name", sorted(SUBSTREAM_LAYOUTS))
def test_substreams_unpack_in_the_kernel(name, avx512_bf16_host):
    """TVM's CPU target stores 3-, 5- and 6-bit codes that meet bf16 activations as substreams; the kernel's
    unpack (through the interpreter) reproduces every code."""
    layout = SUBSTREAM_LAYOUTS[name]
    for dtype in ("uint3", "uint5", "float6_e3m2"):
        assert lower_on_cpu(dtype, layout, True).param_formats["x"].substreams == 2
    assert lower_on_cpu("uint7", layout, True).param_formats["x"].substreams == 1     # 7-bit codes: no table
    assert lower_on_cpu("uint3", layout, False).param_formats["x"].substreams == 1    # no bf16 product


def lower_on_cpu(dtype: str, layout: RegisterLayout, bf16_product: bool):
    """:func:`tile_kernel` through the passes on TVM's CPU target; the validator runs the unpack in the
    interpreter and checks that it reproduces every code."""
    sizes = {"R": 2 * layout.shape[0] - 1, "C": 3 * layout.shape[1] - 2}
    return V.validate_pass(tile_kernel(dtype, layout, bf16_product), None, "tvm:llvm", sizes=sizes,
                           codes=every_code, before=("infer-layouts", "lower-lowbit", "select-dequant"),
                           options={"lowbit.defer_dequant": True})


def test_substreams_need_whole_16_bit_streams():
    with pytest.raises(lowbit.CompileError, match="substreams"):
        derive_format("uint3", spatial(1, 4) * local(3, 2), 4, substreams=2)          # odd first local mode
    with pytest.raises(lowbit.CompileError, match="substreams"):
        derive_format("uint3", spatial(1, 4) * local(2, 4), 4, substreams=2)          # 12 bits per stream


GROUP_LAYOUTS = {
    "gemv_b": spatial(1, 2) * local(8, 4) * spatial(1, 16),                     # TVM's CPU dot operand b
    "one_vector": local(16, 1) * spatial(1, 16),
    "replicated": replicate(2, 2) * local(4, 2) * spatial(1, 8),
}


@pytest.mark.parametrize("name", sorted(GROUP_LAYOUTS))
@pytest.mark.parametrize("bits,groups", [(2, 2), (1, 4), (1, 2)])
def test_groups_put_rows_of_the_first_local_mode_side_by_side(name, bits, groups):
    """With ``groups = p`` a unit's bitstream holds, for each (outer row, other local slots), ``p``
    consecutive rows of the first local mode as consecutive codes: the fields a lookup of activation sums
    indexes with. Checked on the packed bits (lowbit.packing's little-endian order, independently)."""
    from lowbit.packing import unpack

    layout = GROUP_LAYOUTS[name]
    fmt = derive_format(BY_BITS[bits], layout, 4, groups=groups)
    assert fmt.format_id != derive_format(BY_BITS[bits], layout, 4).format_id
    shape = (layout.shape[0] * 2 - 1, layout.shape[1] + 3)
    codes = np.random.default_rng(bits * groups).integers(0, 1 << bits, size=shape).astype(np.uint8)
    storage = packed_both_ways(fmt, codes)
    tile = np.zeros(layout.shape, np.uint8)
    tile[: layout.shape[0], : layout.shape[1]] = codes[: layout.shape[0], : layout.shape[1]]
    words = first_tile_words(fmt, storage)
    cols = layout.shape[1]
    for unit in range(fmt.units):
        stream = unpack(np.ascontiguousarray(words[unit]).view(np.uint8), bits, fmt.codes_per_unit)
        elements = fmt._unit_index[unit]                       # row-major tile elements, in stream order
        assert np.array_equal(stream, tile.reshape(-1)[elements])
        rows, columns = elements // cols, elements % cols
        for start in range(0, len(elements), groups):          # p consecutive codes: p consecutive rows
            run = slice(start, start + groups)
            assert np.array_equal(rows[run], rows[start] + np.arange(groups)) and rows[start] % groups == 0
            assert len(set(columns[run].tolist())) == 1


def test_groups_are_chosen_for_1_bit_codes_and_2_bit_codes_without_bf16_activations(avx512_bf16_host):
    from lowbit.lowering.passes.lowbit_lowering import groups_for
    from lowbit.lowering.target import parse_target

    layout, tvm, triton = GROUP_LAYOUTS["gemv_b"], parse_target("tvm:llvm"), parse_target("triton:cpu")
    assert groups_for(tvm, "uint2", layout, meets_bf16=False) == 2
    assert groups_for(tvm, "int1", layout, meets_bf16=False) == 4
    assert groups_for(tvm, "uint2", layout, meets_bf16=True) == 1        # bf16 activations: the pair dot
    assert groups_for(tvm, "uint1", layout, meets_bf16=True) == 4        # 4 products per lookup beat it
    assert groups_for(tvm, "uint3", layout, meets_bf16=False) == 1       # 6-bit fields: no 16-entry table
    assert groups_for(triton, "uint2", layout, meets_bf16=False) == 1
    assert groups_for(tvm, "uint1", local(2, 4) * spatial(1, 16), meets_bf16=False) == 1   # 2 rows, not 4


def test_groups_need_a_first_local_mode_they_divide():
    with pytest.raises(lowbit.CompileError, match="groups"):
        derive_format("uint2", spatial(1, 4) * local(3, 8), 4, groups=2)
    with pytest.raises(lowbit.CompileError, match="groups"):
        derive_format("uint2", spatial(1, 4) * local(4, 8), 4, groups=2, substreams=2)


@pytest.mark.parametrize("name", sorted(GROUP_LAYOUTS))
def test_groups_unpack_in_the_kernel(name, avx512_bf16_host):
    """TVM's CPU target stores 1-2-bit codes that meet no bf16 activations in groups; the kernel's unpack
    (through the interpreter) reproduces every code."""
    layout = GROUP_LAYOUTS[name]
    assert lower_on_cpu("uint2", layout, False).param_formats["x"].groups == 2
    assert lower_on_cpu("uint2", layout, True).param_formats["x"].groups == 1
    # a 1-bit tile that cannot hold groups of 4 rows meeting bf16: the pair dot's substreams instead
    narrow = lower_on_cpu("uint1", local(2, 16) * spatial(1, 16), True).param_formats["x"]
    assert (narrow.groups, narrow.substreams) == (1, 2)
    if layout.mode_shape[layout.local_modes[0]] % 4 == 0:
        assert lower_on_cpu("uint1", layout, False).param_formats["x"].groups == 4
        assert lower_on_cpu("uint1", layout, True).param_formats["x"].groups == 4


# ----------------------------------------------------------------------------------------------------
# bit planes
# ----------------------------------------------------------------------------------------------------

PLANE_LAYOUTS = {
    "gemv_b": spatial(1, 2) * local(128, 4) * spatial(1, 16),                   # the GEMV's weight tile
    "one_vector": local(32, 1) * spatial(1, 16),
    "replicated": replicate(2, 2) * local(16, 2) * spatial(1, 8),
}


@pytest.mark.parametrize("name", sorted(PLANE_LAYOUTS))
@pytest.mark.parametrize("dtype,groups", [("int3", 4), ("uint3", 1), ("uint5", 1), ("int2", 2)])
def test_bit_planes_hold_bit_b_of_32_codes_in_word_b(name, dtype, groups):
    """With bit planes a unit's codes (in stream order) form blocks of 32, stored as ``n`` words: word ``b``
    holds bit ``b`` of the block's codes, code ``i`` at bit ``i``. Checked on the words, from the codes."""
    layout = PLANE_LAYOUTS[name]
    nbits = lowbit.dtype(dtype).nbits
    fmt = derive_format(dtype, layout, 4, groups=groups, bit_planes=True)
    assert fmt.storage_dtype == "uint32" and "p-" in fmt.format_id.name
    assert fmt.format_id != derive_format(dtype, layout, 4, groups=groups).format_id
    shape = (layout.shape[0] * 2 - 3, layout.shape[1] + 5)
    codes = np.random.default_rng(nbits).integers(0, 1 << nbits, size=shape).astype(np.uint8)
    storage = packed_both_ways(fmt, codes)
    tile = codes[: layout.shape[0], : layout.shape[1]].reshape(-1).astype(np.int64)
    words = first_tile_words(fmt, storage)
    for unit in range(fmt.units):
        stream = tile[fmt._unit_index[unit]].reshape(-1, 32)          # [blocks, 32] codes in stream order
        for block, block_codes in enumerate(stream):
            for b in range(nbits):
                want = sum(int(c >> b & 1) << i for i, c in enumerate(block_codes))
                assert int(words[unit, block * nbits + b]) == want


def test_bit_planes_need_blocks_of_32_codes_and_one_stream():
    with pytest.raises(lowbit.CompileError, match="bit planes"):
        derive_format("int3", local(16, 1) * spatial(1, 16), 4, bit_planes=True)          # 16 codes per unit
    with pytest.raises(lowbit.CompileError, match="bit planes|substreams"):
        derive_format("int3", local(32, 2) * spatial(1, 16), 4, substreams=2, bit_planes=True)


def gemv_kernel(dtype: str, layout: RegisterLayout, rows: int = 1):
    """y[m, n] = dot(a, cast(w)) over K = one tile: the codes meet a dot with ``rows`` rows of f32
    activations and nothing else (what :func:`planes_for` asks)."""
    t0, t1 = layout.shape
    kb = KernelBuilder("gemv")
    a = kb.tensor_param("a", "f32", [rows, t0])
    w = kb.tensor_param("w", dtype, [t0, "C"])
    y = kb.tensor_param("y", "f32", [rows, "C"], intent="out")
    kb.set_grid(f"cdiv(C, {t1})")
    c0 = kb.mul(kb.program_id(0), t1)
    codes = kb.cast(kb.load(w, [0, c0], [t0, t1], layout=layout), "f32")
    kb.store(y, kb.dot(kb.load(a, [0, 0], [rows, t0]), codes), [0, c0])
    return kb.build()


@pytest.mark.parametrize("dtype", ["int3", "uint3"])
def test_bit_planes_are_chosen_for_3_bit_integers_in_a_gemv_and_unpack_in_the_kernel(dtype, monkeypatch):
    """TVM's CPU target stores 3-bit integer codes that meet only a one-row dot in bit planes (in groups of 4
    rows) on a host with AVX-512; the kernel's unpack, and after it the dequant's joining of the planes
    (through the interpreter), reproduce the product exactly."""
    from lowbit.lowering.passes import lowbit_lowering

    layout = PLANE_LAYOUTS["gemv_b"]
    monkeypatch.setattr(lowbit_lowering, "host_has_avx512", lambda: True)

    def lowered(dtype: str, rows: int = 1, dequant: bool = False):
        options = {} if dequant else {"lowbit.defer_dequant": True}
        return V.validate_pass(gemv_kernel(dtype, layout, rows), None, "tvm:llvm", sizes={"C": 2 * layout.shape[1] - 5},
                               codes=every_code, before=("infer-layouts", "lower-lowbit"), options=options
                               ).param_formats["w"]

    fmt = lowered(dtype)
    assert fmt.bit_planes and fmt.groups == 4
    assert lowered(dtype, dequant=True).bit_planes
    assert not lowered(dtype, rows=2).bit_planes                     # every row would repeat the lookups
    assert not lowered("uint5").bit_planes                           # 5 lookups per 4 K rows: dense
    assert not lowered("float3_e1m1").bit_planes                     # a float code is not affine in its bits
    monkeypatch.setattr(lowbit_lowering, "host_has_avx512", lambda: False)
    assert not lowered(dtype).bit_planes                             # no lookup: the dense unpack is cheaper
