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


def tile_kernel(dtype: str, layout: RegisterLayout):
    """y = cast(load(x)) over a grid of tiles in the given layout."""
    t0, t1 = layout.shape
    out = "f32" if dtype.startswith("float") else "i32"
    kb = KernelBuilder("tiles")
    x = kb.tensor_param("x", dtype, ["R", "C"])
    y = kb.tensor_param("y", out, ["R", "C"], intent="out")
    kb.set_grid(f"cdiv(R, {t0})", f"cdiv(C, {t1})")
    r0, c0 = kb.mul(kb.program_id(0), t0), kb.mul(kb.program_id(1), t1)
    tile = kb.load(x, [r0, c0], [t0, t1], layout=layout)
    kb.store(y, kb.cast(tile, out), [r0, c0])
    return kb.build()


def every_code(dtype, shape, rng):
    return rng.integers(0, 1 << lowbit.dtype(dtype).nbits, size=shape).astype(np.uint8)


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
