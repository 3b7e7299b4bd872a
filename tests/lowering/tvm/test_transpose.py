"""Transposed tiles as register shuffles on the CPU (``lowering/tvm/transpose.py``): the stages against numpy's
transpose, and kernels whose dot reads a transposed loaded tile (whole blocks, an edge, a cast, shapes and uses
that keep the index map) built with TVM against numpy."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")

from lowbit.driver import compile_ir  # noqa: E402
from lowbit.dsl import compile_source  # noqa: E402
from lowbit.lowering.tvm.transpose import shuffle_stages, stage_distances, transpose_rows  # noqa: E402
from lowbit.lowering.tvm.target import host_cpu  # noqa: E402


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
def tr(x: X[M, N], a: Y[R, N], out: Out[f32[R, M]], X: dtype = f32, Y: dtype = f32, BM: const = 16,
       BN: const = 64):
    grid(cdiv(M, BM))
    r = block(0) * BM
    xt = transpose(cast(load(x, [r, 0], [BM, BN]), Y))             # [BN, BM]
    store(out, dot(load(a, [0, 0], [R, BN]), xt), [0, r])
"""

STORED = """
def st(x: f32[M, N], out: Out[f32[N, M]], BM: const = 16, BN: const = 64):
    grid(cdiv(M, BM))
    r = block(0) * BM
    store(out, transpose(load(x, [r, 0], [BM, BN])), [0, r])
"""


def _compile(src: str, **constants):
    return compile_ir(compile_source(src, "t.lbk", constants=constants).ir, "tvm")


@pytest.mark.parametrize("x_dtype, y_dtype, m, blocks", [
    ("f32", "f32", 32, (16, 64)),       # whole blocks
    ("f16", "f32", 16, (16, 32)),       # the cast of a load (decode attention's keys)
    ("f32", "f32", 21, (16, 64)),       # an edge: the masked load reads through the checked path
    ("f32", "f32", 24, (8, 24)),        # extents that are not multiples of 16 lanes (but of 8)
    ("f16", "f16", 32, (32, 64)),       # 16-bit elements keep the index map
])
def test_transposed_dot_operands(x_dtype, y_dtype, m, blocks):
    """``a @ x.T`` with ``a`` one-hot rows: every output is one element of ``x``, exactly."""
    gen = np.random.default_rng(3)
    np_dtype = {"f32": np.float32, "f16": np.float16}
    bm, bn = blocks
    x = (gen.standard_normal((m, bn)) * 100).astype(np_dtype[x_dtype])
    pick = gen.integers(0, bn, 8)
    a = np.eye(bn, dtype=np_dtype[y_dtype])[pick]                   # [8, BN]
    compiled = _compile(TRANSPOSE, X=x_dtype, Y=y_dtype, BM=bm, BN=bn, R=8)
    out = torch.zeros(8, m)
    compiled.launch(dict(x=torch.from_numpy(x), a=torch.from_numpy(a), out=out))
    want = x.astype(np_dtype[y_dtype]).astype(np.float32)[:, pick].T
    assert np.array_equal(out.numpy(), want)
    # shuffled where 32-bit elements fill whole vectors; the width is the host's: 16 lanes with AVX-512, 8 with AVX2
    lanes = host_cpu().lanes(32)
    shuffled = y_dtype == "f32" and bm % lanes == 0 and bn % lanes == 0
    assert ("T.Shuffle" in str(compiled.source)) == shuffled


def test_a_stored_transpose_keeps_its_index_map():
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32)
    compiled = _compile(STORED)
    out = torch.zeros(64, 32)
    compiled.launch(dict(x=torch.from_numpy(x), out=out))
    assert np.array_equal(out.numpy(), x.T)
    assert "T.Shuffle" not in str(compiled.source)
