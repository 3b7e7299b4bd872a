"""lowbit.packing: the DESIGN vectors, a bit-by-bit reference in Python integers, and property tests."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit.packing
from lowbit import PackingError, pack, unpack
from lowbit.dtypes import dtype
from lowbit.packing import packed_length

PROPS = settings(max_examples=60, deadline=None)


@contextlib.contextmanager
def torch_impl(on: bool):
    """CPU tensors normally pack through numpy; ``on`` runs lowbit's torch implementation instead."""
    saved = lowbit.packing._CPU_VIA_NUMPY
    lowbit.packing._CPU_VIA_NUMPY = not on
    try:
        yield
    finally:
        lowbit.packing._CPU_VIA_NUMPY = saved


def ref_pack_line(codes: list[int], nbits: int) -> bytes:
    """Element i at bits [i*n, (i+1)*n) of one little-endian integer; bit k is bit k%8 of byte k//8."""
    stream = 0
    for i, c in enumerate(codes):
        stream |= int(c) << (i * nbits)
    return stream.to_bytes((len(codes) * nbits + 7) // 8, "little")


def ref_pack(codes: np.ndarray, nbits: int, axis: int) -> np.ndarray:
    moved = np.moveaxis(codes, axis, -1)
    out = np.zeros((*moved.shape[:-1], (moved.shape[-1] * nbits + 7) // 8), np.uint8)
    for index in np.ndindex(*moved.shape[:-1]):
        out[index] = list(ref_pack_line(list(moved[index]), nbits))
    return np.moveaxis(out, -1, axis)


def test_design_vectors():
    codes = dtype("int3").encode([1, -1, 2, -4, 3, 0, -2, 1])
    assert list(codes) == [1, 7, 2, 4, 3, 0, 6, 1]
    assert pack(codes, 3).tobytes().hex() == "b93838"
    codes = dtype("float4_e2m1").encode([1, -0.5, 6, 0])
    assert pack(codes, 4).tobytes().hex() == "9207"
    assert ref_pack_line([1, 7, 2, 4, 3, 0, 6, 1], 3).hex() == "b93838"  # the reference agrees too
    assert list(unpack(np.frombuffer(bytes.fromhex("b93838"), np.uint8), 3, 8)) == [1, 7, 2, 4, 3, 0, 6, 1]


@pytest.mark.parametrize("nbits", range(1, 9))
def test_reference_on_small_cases(nbits):
    rng = np.random.default_rng(nbits)
    for length in range(0, 20):
        codes = rng.integers(0, 2 ** nbits, (3, length))
        got = pack(codes, nbits)
        assert got.dtype == np.uint8 and got.shape == (3, packed_length(length, nbits))
        assert np.array_equal(got, ref_pack(codes, nbits, -1))
        assert np.array_equal(unpack(got, nbits, length), codes)


def test_one_bit_matches_numpy_packbits():
    bits = np.random.default_rng(0).integers(0, 2, (5, 37)).astype(np.uint8)
    assert np.array_equal(pack(bits, 1), np.packbits(bits, axis=-1, bitorder="little"))


def test_eight_bit_is_identity_and_four_bit_is_nibbles():
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(pack(codes, 8), codes)
    nib = np.array([0x1, 0x2, 0x3, 0xF, 0x5], np.uint8)
    assert list(pack(nib, 4)) == [0x21, 0xF3, 0x05]


shapes = st.lists(st.integers(0, 9), min_size=1, max_size=3).map(tuple)


@st.composite
def packing_case(draw):
    nbits = draw(st.integers(1, 8))
    shape = draw(shapes)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    dtype_ = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.int64, np.uint16]))
    codes = np.random.default_rng(seed).integers(0, 2 ** nbits, shape).astype(dtype_)
    return codes, nbits, axis


@PROPS
@given(packing_case())
def test_numpy_round_trip_and_reference(case):
    codes, nbits, axis = case
    packed = pack(codes, nbits, axis=axis)
    assert packed.dtype == np.uint8
    want_shape = list(codes.shape)
    want_shape[axis] = packed_length(codes.shape[axis], nbits)
    assert list(packed.shape) == want_shape
    assert np.array_equal(packed, ref_pack(codes.astype(np.int64), nbits, axis))
    back = unpack(packed, nbits, codes.shape[axis], axis=axis)
    assert back.dtype == np.uint8 and np.array_equal(back, codes)


@PROPS
@given(packing_case(), st.booleans(), st.booleans())
def test_torch_round_trip_matches_numpy(case, transpose, use_torch_ops):
    codes, nbits, axis = case
    t = torch.from_numpy(codes.astype(np.int64))
    if transpose and t.dim() >= 2:  # non-contiguous input
        t = t.transpose(0, 1)
        codes = np.swapaxes(codes, 0, 1)
    with torch_impl(use_torch_ops):
        packed = pack(t, nbits, axis=axis)
        back = unpack(packed, nbits, codes.shape[axis], axis=axis)
    assert isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8
    assert np.array_equal(packed.numpy(), pack(codes, nbits, axis=axis))
    assert back.dtype == torch.uint8 and np.array_equal(back.numpy(), codes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_torch_cuda_stays_on_device():
    codes = torch.randint(0, 8, (4, 33), device="cuda")
    packed = pack(codes, 3)
    assert packed.device.type == "cuda"
    assert torch.equal(unpack(packed, 3, 33), codes.to(torch.uint8))


def test_every_axis_of_a_3d_array():
    codes = np.random.default_rng(1).integers(0, 32, (3, 5, 7))
    for axis in (0, 1, 2, -1, -2, -3):
        packed = pack(codes, 5, axis=axis)
        assert np.array_equal(packed, ref_pack(codes, 5, axis))
        assert np.array_equal(unpack(packed, 5, codes.shape[axis], axis=axis), codes)


def test_empty_inputs():
    assert pack(np.zeros((0, 5), np.uint8), 3).shape == (0, 2)
    assert pack(np.zeros((3, 0), np.uint8), 3).shape == (3, 0)
    assert unpack(np.zeros((3, 0), np.uint8), 3, 0).shape == (3, 0)
    assert pack([], 4).shape == (0,)
    for use_torch_ops in (False, True):
        with torch_impl(use_torch_ops):
            assert pack(torch.zeros(0, 5, dtype=torch.uint8), 3).shape == (0, 2)
            assert unpack(torch.zeros(2, 0, dtype=torch.uint8), 7, 0).shape == (2, 0)
            assert pack(torch.zeros(3, 0, dtype=torch.int32), 5).shape == (3, 0)


@pytest.mark.parametrize("codes,nbits,pattern", [
    ([0, 8], 3, r"\[0, 7\] for nbits=3; got 8 at index \(1,\)"),
    ([[0, 1], [-1, 0]], 2, r"got -1 at index \(1, 0\)"),
    ([0.0, 1.0], 2, "must be integers"),
    ([1, 2], 0, "from 1 to 8"),
    ([1, 2], 9, "from 1 to 8"),
    ([1, 2], True, "from 1 to 8"),
    ([1, 2], 2.0, "from 1 to 8"),
])
def test_pack_errors(codes, nbits, pattern):
    with pytest.raises(PackingError, match=pattern):
        pack(np.array(codes), nbits)
    if isinstance(nbits, int) and not isinstance(nbits, bool) and 1 <= nbits <= 8:
        for use_torch_ops in (False, True):
            with torch_impl(use_torch_ops), pytest.raises(PackingError, match=pattern):
                pack(torch.tensor(codes), nbits)


def test_axis_and_shape_errors():
    with pytest.raises(PackingError, match="axis 2 is out of range"):
        pack(np.zeros((2, 2), np.uint8), 2, axis=2)
    with pytest.raises(PackingError, match="0-d"):
        pack(np.uint8(3), 2)
    with pytest.raises(PackingError, match="5 codes of 3 bits take 2 bytes; the packed axis has 3"):
        unpack(np.zeros(3, np.uint8), 3, 5)
    with pytest.raises(PackingError, match="must be uint8"):
        unpack(np.zeros(2, np.int16), 3, 5)
    for use_torch_ops in (False, True):
        with torch_impl(use_torch_ops), pytest.raises(PackingError, match="must be uint8"):
            unpack(torch.zeros(2, dtype=torch.int32), 3, 5)
        with torch_impl(use_torch_ops), pytest.raises(PackingError, match="take 2 bytes"):
            unpack(torch.zeros(3, dtype=torch.uint8), 3, 5)
    with pytest.raises(PackingError, match="non-negative"):
        unpack(np.zeros(2, np.uint8), 3, -1)
    with pytest.raises(PackingError, match=r"\[0, 255\]"):
        unpack([256], 3, 2)
    with pytest.raises(PackingError, match="out of range"):
        unpack(torch.zeros(2, 2, dtype=torch.uint8), 8, 2, axis=-3)
