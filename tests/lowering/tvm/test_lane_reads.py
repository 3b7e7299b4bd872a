"""Vector reads of repeated elements (``lowering/tvm/lane_reads.py``): which index patterns are proved, and
kernels that read low-bit codes out of byte rows (as decode attention reads its KV cache) built with TVM against
a bitstream decode in Python integers."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.lowering.tvm.lane_reads import repeated_read


@pytest.mark.parametrize("last, lanes", [
    ("T.floordiv(c * 16 + tv, 2)", [i // 2 for i in range(16)]),                 # 4-bit codes in bytes
    ("T.floordiv((c * 16 + tv) * 3, 8)", [3 * i // 8 for i in range(16)]),      # 3-bit codes cross bytes
    ("w0 + T.floordiv(T.Cast(\"int64\", c * 16 + tv), 4)", [i // 4 for i in range(16)]),
    ("T.floormod(c, 3) * 8 + T.floordiv(tv, 8)", [i // 8 for i in range(16)]),
    ("(T.floordiv((c * 16 + tv), 8)) * 3 + 2", [i // 8 * 3 for i in range(16)]),  # 3-bit codes: 3-byte groups
])
def test_repeated_reads_are_proved(last, lanes):
    r = repeated_read(["p", last], "tv", 16)
    assert r is not None and list(r.lanes) == lanes and r.count == max(lanes) + 1
    assert r.base == ("p", last.replace("tv", "0"))


@pytest.mark.parametrize("index", [
    ["p", "T.floordiv(x + tv, 2)"],          # x's parity decides where the bytes change
    ["p + tv", "T.floordiv(c * 16 + tv, 2)"],  # another axis moves with the lane
    ["p", "c * 16 + tv"],                    # contiguous: a plain vector load already
    ["p", "T.floordiv(c * 16 + tv, 32)"],    # one element in every lane: a broadcast already
    ["p", "T.floordiv(c * 16 + tv * 3, 2)"],  # a span of 23 elements for 16 lanes
    ["p", "T.floordiv(c * 16 + tv, 2) + T.shift_right(c, 1)"],   # a function the proof does not know
])
def test_other_reads_are_left_alone(index):
    assert repeated_read(index, "tv", 16) is None


UNPACK = """
def unpack(x: u8[R, W], a: f32[8, D], out: Out[f32[8, R]], C: dtype = int4, W: const = 32, D: const = 64):
    grid(cdiv(R, 16))
    r = block(0) * 16
    codes = cast(view(load(x, [r, 0], [16, W]), C, [16, D]), f32)
    store(out, dot(load(a, [0, 0], [8, D]), transpose(codes)), [0, r])     # as attention reads its keys
"""


def _bitstream_codes(rows: np.ndarray, bits: int, signed: bool, count: int) -> np.ndarray:
    """Codes ``i`` = bits ``[i * bits, (i + 1) * bits)`` of each row read as a little-endian integer."""
    out = np.zeros((rows.shape[0], count), np.float64)
    for r, row in enumerate(rows):
        stream = int.from_bytes(row.tobytes(), "little")
        for i in range(count):
            code = (stream >> (i * bits)) & ((1 << bits) - 1)
            out[r, i] = code - (1 << bits) if signed and code >> (bits - 1) else code
    return out


@pytest.mark.parametrize("code, bits, signed", [("int4", 4, True), ("uint4", 4, False), ("int2", 2, True),
                                                ("uint1", 1, False), ("int3", 3, True)])
def test_codes_read_from_byte_rows(code, bits, signed):
    torch = pytest.importorskip("torch")
    pytest.importorskip("tvm")
    from lowbit.driver import compile_ir
    from lowbit.dsl import compile_source

    d = 64
    w = d * bits // 8
    gen = np.random.default_rng(bits)
    x = gen.integers(0, 256, (40, w), dtype=np.uint8)      # 2 blocks of 16 rows and 8
    pick = gen.integers(0, d, 8)
    a = np.eye(d, dtype=np.float32)[pick]                  # one-hot rows: out = codes[:, pick].T exactly
    compiled = compile_ir(compile_source(UNPACK, "t.lbk", constants=dict(C=code, W=w, D=d)).ir, "tvm")
    out = torch.zeros(8, 40)
    compiled.launch(dict(x=torch.from_numpy(x), a=torch.from_numpy(a), out=out))
    assert np.array_equal(out.numpy(), _bitstream_codes(x, bits, signed, d)[:, pick].T)
    from lowbit.lowering.tvm.target import host_cpu

    if host_cpu().lanes(32) == 16:      # (8 lanes read otherwise: a vector's 1-bit codes are one byte, a broadcast)
        assert "T.Shuffle([x[" in str(compiled.source)      # the bytes loaded once and repeated
