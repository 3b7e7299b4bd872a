"""Transposed tiles as register shuffles on the CPU (``lowering/tvm/transpose.py``): the stages against numpy's
transpose, and kernels that transpose loaded tiles (whole blocks, edges, casts, batches, shapes that keep the
index map) built with TVM against numpy."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")

from lowbit.driver import compile_ir  # noqa: E402
from lowbit.dsl import compile_source  # noqa: E402
from lowbit.lowering.tvm.transpose import shuffle_stages, stage_distances, transpose_rows  # noqa: E402


@pytest.mark.parametrize("v", [2, 4, 8, 16, 32])
def test_the_stages_transpose_a_block(v):
    block = np.arange(v * v).reshape(v, v)
    assert np.array_equal(np.array(transpose_rows(block.tolist())), block.T)
    assert len(shuffle_stages(v, [[f"r{s}_{i}" for i in range(v)] for s in range(v.bit_length())],
                              lambda lo, hi, idx: "")) == v * (v.bit_length() - 1)


@pytest.mark.parametrize("v", [0, 1, 3, 12])
def test_a_block_width_must_be_a_power_of_two(v):
    with pytest.raises(ValueError, match="power-of-two"):
        stage_distances(v)


TRANSPOSE = """
def tr(x: X[M, N], out: Out[Y[N, M]], X: dtype = f32, Y: dtype = f32, BM: const = 16, BN: const = 64):
    grid(cdiv(M, BM), cdiv(N, BN))
    r = block(0) * BM
    c = block(1) * BN
    store(out, transpose(cast(load(x, [r, c], [BM, BN]), Y)), [c, r])
"""

BATCHED = """
def trb(x: f32[B, M, N], out: Out[f32[B, N, M]], BM: const = 16, BN: const = 32):
    grid(cdiv(M, BM), cdiv(N, BN))
    r = block(0) * BM
    c = block(1) * BN
    t = load(x, [0, r, c], [B, BM, BN])
    store(out, permute(t * 2.0, [0, 2, 1]), [0, c, r])
"""


def _run(src: str, x: np.ndarray, out_shape: tuple[int, ...], out_dtype: torch.dtype, **constants):
    kernel = compile_source(src, "t.lbk", constants=constants).ir
    compiled = compile_ir(kernel, "tvm")
    out = torch.zeros(out_shape, dtype=out_dtype)
    compiled.launch(dict(x=torch.from_numpy(x), out=out))
    return out, str(compiled.source)


@pytest.mark.parametrize("x_dtype, y_dtype, shape, blocks, shuffled", [
    ("f32", "f32", (32, 128), (16, 64), True),       # whole blocks
    ("i32", "i32", (48, 32), (16, 32), True),
    ("f16", "f32", (16, 64), (16, 64), True),        # the cast of a load (decode attention's keys)
    ("f32", "f32", (21, 70), (16, 64), True),        # edges: a masked load reads through the checked path
    ("f32", "f32", (24, 40), (8, 24), False),        # extents that are not multiples of the lanes
    ("f16", "f16", (32, 64), (32, 64), False),       # 16-bit elements keep the index map
])
def test_transposed_tiles(x_dtype, y_dtype, shape, blocks, shuffled):
    gen = np.random.default_rng(3)
    np_dtype = {"f32": np.float32, "f16": np.float16, "i32": np.int32}
    x = (gen.standard_normal(shape) * 100).astype(np_dtype[x_dtype])
    t_dtype = {"f32": torch.float32, "f16": torch.float16, "i32": torch.int32}[y_dtype]
    out, source = _run(TRANSPOSE, x, shape[::-1], t_dtype, X=x_dtype, Y=y_dtype, BM=blocks[0], BN=blocks[1])
    assert np.array_equal(out.numpy(), x.T.astype(np_dtype[y_dtype]))
    if shuffled:   # the vector width is the host's: 16 lanes of 32 bits with AVX-512, 8 with AVX2
        assert "T.Shuffle" in source
    else:
        assert "T.Shuffle" not in source


def test_a_batched_permute_of_the_last_two_axes():
    x = np.random.default_rng(4).standard_normal((3, 32, 64)).astype(np.float32)
    out, source = _run(BATCHED, x, (3, 64, 32), torch.float32, B=3)
    assert np.array_equal(out.numpy(), np.transpose(x * 2.0, (0, 2, 1)))
    assert "T.Shuffle" in source
