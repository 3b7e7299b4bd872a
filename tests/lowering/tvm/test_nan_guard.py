"""NaN codes out of the CPU dot's inner loop (``lowering/tvm/nan_guard.py``): the word check against a per-field
reference, the match on the library matmul, and NaN columns end to end against float64 torch."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lowbit.dtypes import dtype as lowbit_dtype  # noqa: E402
from lowbit.kernels.library import compiled  # noqa: E402
from lowbit.kernels.matmul import FILE, _constants, choose_config, run_matmul  # noqa: E402
from lowbit.lowering.tvm.nan_guard import fields_and_carries  # noqa: E402
from lowbit.packing import pack  # noqa: E402
from lowbit.quant import QuantizedTensor, quantize  # noqa: E402


def _word_flags(words: np.ndarray, fields: list[tuple[int, int]]) -> np.ndarray:
    mask, carries = fields_and_carries(fields)
    w = words.astype(np.uint64)
    z = (w & mask) ^ mask
    return (((z + mask) ^ carries) & carries) & 0xFFFFFFFF


@pytest.mark.parametrize("fields", [[(0, 7), (8, 7), (16, 7), (24, 7)],       # float8_e4m3fn, 4 per word
                                    [(0, 5), (6, 5), (12, 5), (20, 3)],       # uneven fields and gaps
                                    [(3, 1), (30, 1)]])
def test_word_check_finds_exactly_the_all_ones_fields(fields):
    gen = np.random.default_rng(7)
    words = gen.integers(0, 1 << 32, 4096, dtype=np.uint64)
    for i, (start, length) in enumerate(fields):          # plant all-ones fields in some words
        words[i::7] |= ((1 << length) - 1) << start
    flags = _word_flags(words, fields)
    for start, length in fields:
        full = (1 << length) - 1
        expect = ((words >> start) & full) == full
        assert np.array_equal((flags >> (start + length)) & 1 == 1, expect)
    assert np.array_equal(flags != 0, np.any([((words >> s) & ((1 << n) - 1)) == (1 << n) - 1 for s, n in fields],
                                             axis=0))


def test_fields_must_be_disjoint_with_a_free_carry_bit():
    assert fields_and_carries([(0, 7), (8, 7)]) == (0x7F7F, 0x8080)
    assert fields_and_carries([(0, 4), (3, 4)]) is None          # overlap
    assert fields_and_carries([(0, 4), (4, 4)]) is None          # the first field's carry bit is in the second


def _weight(codes: np.ndarray, like: QuantizedTensor) -> QuantizedTensor:
    code = lowbit_dtype("float8_e4m3fn")
    n, k = codes.shape
    return QuantizedTensor(torch.from_numpy(pack(codes, code.nbits)), like.scales, like.zeros, code,
                           like.group_size, (n, k))


def _reference(x: torch.Tensor, codes: np.ndarray, like: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x @ W.T`` in float64 from ml_dtypes' values of the codes, and the error bound of f32 sums."""
    import ml_dtypes

    values = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    scales = np.repeat(like.scales.double().numpy(), codes.shape[1] // like.scales.shape[1], axis=1)
    dense = torch.from_numpy(values * scales)
    xd = x.double()
    bound = (xd.abs() @ torch.nan_to_num(dense, nan=0.0).abs().T) * (x.shape[1] + 8) * 2.0 ** -24
    return xd @ dense.T, bound


@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("xtype", ["float32", "bfloat16"])
def test_nan_codes_make_their_columns_nan(m, xtype, tvm_cpu):
    """NaN codes at K rows of several groups (the first and last row among them) in a few columns, x with zeros
    and an infinity at those rows: NaN, infinities and finite values where float64 has them (within the bound)."""
    n, k, group = 96, 512, 128
    gen = np.random.default_rng(m)
    like = quantize(torch.randn(n, k), "float8_e4m3fn", group_size=group)
    finite = np.array([c for c in range(256) if c & 0x7F != 0x7F], np.uint8)
    codes = gen.choice(finite, size=(n, k))
    codes[5, 0] = 0x7F
    codes[17, k - 1] = 0xFF
    codes[40, 130] = 0x7F
    codes[40, 300] = 0xFF
    codes[95, 200] = 0x7F
    codes[60, :] = 0x7E                     # the largest finite codes, all over one column: not NaN
    w = _weight(codes, like)
    x = torch.from_numpy(gen.standard_normal((m, k))).to(getattr(torch, xtype))
    x[:, 0] = 0.0                           # 0 * NaN is NaN
    x[0, 300] = float("inf")                # inf * NaN is NaN
    cfg = choose_config(m, n, k, group, "tvm", "cpu", workers=2, wtype="float8_e4m3fn", xtype=xtype)
    source = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, xtype, cfg, False)).source
    # the word check's carry bits 0x80808080: the guard is on where the dot reads the decoded codes themselves
    # (the GEMM tile of f32 x, gdot = 0, scales them first: NaN by the where in the loop)
    assert ("T.uint32(2155905152)" in source) == bool(cfg.gdot), cfg
    y = run_matmul(x, w, None, "tvm", cfg).double()
    ref, bound = _reference(x, codes, like)
    assert torch.isnan(ref[:, [5, 17, 40, 95]]).all()          # the columns with NaN codes
    assert torch.equal(torch.isnan(y), torch.isnan(ref))     # those, and x's infinity times a zero weight
    assert torch.equal(torch.isinf(y), torch.isinf(ref)) and torch.equal(y[torch.isinf(y)], ref[torch.isinf(ref)])
    finite = torch.isfinite(ref)
    err = (y[finite] - ref[finite]).abs()
    rounding = 2.0 ** -8 if xtype == "bfloat16" else 0.0     # the result is rounded once to x's dtype
    assert bool((err <= bound[finite] * (1 + rounding) + ref[finite].abs() * rounding).all()), float(err.max())


def test_weights_without_nan_codes_take_no_slow_path(tvm_cpu):
    """The word check fires only for NaN codes: with none, every output finite and within the bound."""
    n, k, group = 64, 256, 128
    like = quantize(torch.randn(n, k), "float8_e4m3fn", group_size=group)
    gen = np.random.default_rng(3)
    codes = gen.choice(np.array([c for c in range(256) if c & 0x7F != 0x7F], np.uint8), size=(n, k))
    w = _weight(codes, like)
    x = torch.from_numpy(gen.standard_normal((1, k))).float()
    y = run_matmul(x, w, None, "tvm").double()
    ref, bound = _reference(x, codes, like)
    assert torch.isfinite(y).all()
    assert bool(((y - ref).abs() <= bound).all())
