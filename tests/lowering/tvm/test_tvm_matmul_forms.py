"""The two forms of ``lowbit/kernels/matmul.lbk`` made for TVM's CPU GEMV, against fp64 references.

* ``wt`` (tiled weights): the host cuts the codes into ``[BK, BN]`` tiles in program order
  (``lowbit.kernels.matmul.tile_codes``), the lowering packs each tile; edges padded with code 0; scales
  and zero points cut into ``[NG, BN]`` blocks the same way (``tile_groups``), padded with 0;
* ``gdot`` (scale after the group's dot): ``acc += s * sum_k x (q - z)``.

Both run through ``run_matmul`` with forced configurations, on TVM and on lowbit's reference interpreter
(which checks the DSL form itself), for packed types (straddling words, NaN codes, zero points), native
int8, edges in N and K, group sizes that are not powers of two, per-channel-like ``mode 2`` and split-K.
The bound is the one ``tests/kernels/conftest.py`` states: ``u_out |y| + (1 + u_out) gamma_(K + splits + 4)
sum_k |x_k w_k|`` (every product and sum in f32, the result rounded once).
"""
from __future__ import annotations

import re
import zlib

import pytest

torch = pytest.importorskip("torch")

from lowbit.kernels.matmul import MatmulConfig, choose_config, run_matmul, tile_codes, tile_groups  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

U32 = 2.0 ** -24
U_OUT = {torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24}


def _check(y, x, w, bias, splits: int, what: str) -> None:
    with torch.no_grad():
        wd = w.dequantize("float64")
        x64 = x.double()
        ref = x64 @ wd.T + (0 if bias is None else bias.double())
        absdot = x64.abs() @ wd.abs().T + (0 if bias is None else bias.double().abs())
    n = x.shape[1] + splits + 4
    u_out = U_OUT[x.dtype]
    tol = u_out * ref.abs() + (1 + u_out) * (n * U32 / (1 - n * U32)) * absdot + 2.0 ** -24
    err = (y.double() - ref).abs()
    worst = float((err / tol).max())
    assert bool((err <= tol).all()), f"{what}: max err {float(err.max()):.3e}, worst ratio {worst:.3g}"


def test_tile_codes_arrangement():
    codes = torch.arange(5 * 6, dtype=torch.uint8).reshape(5, 6)            # N = 5, K = 6
    t = tile_codes(codes, bn=2, bk=4)                                        # 3 column blocks x 2 K tiles
    assert t.shape == (3 * 2 * 4, 2)
    for j in range(3):
        for kt in range(2):
            tile = t[(j * 2 + kt) * 4:(j * 2 + kt + 1) * 4]                  # [bk, bn] = codes[n, k].T
            for kk in range(4):
                for nn in range(2):
                    n, k = j * 2 + nn, kt * 4 + kk
                    want = int(codes[n, k]) if n < 5 and k < 6 else 0        # padded with code 0
                    assert int(tile[kk, nn]) == want


def test_tile_groups_arrangement():
    groups = torch.arange(3 * 5, dtype=torch.float16).reshape(3, 5)         # NG = 3 groups, N = 5
    t = tile_groups(groups, bn=2)                                            # 3 column blocks of 2
    assert t.shape == (3 * 3, 2) and t.dtype == torch.float16
    for j in range(3):
        for g in range(3):
            for nn in range(2):
                n = j * 2 + nn
                want = float(groups[g, n]) if n < 5 else 0.0                 # padded with 0
                assert float(t[j * 3 + g, nn]) == want


CASES = [  # dtype, group, zero_point, n, k, m, config
    ("uint4", 128, False, 72, 256, 1, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1)),
    ("int3", 64, False, 100, 192, 3, MatmulConfig(4, 64, 64, 1, 1, wt=1, gdot=1)),
    ("float8_e4m3fn", 32, False, 40, 96, 2, MatmulConfig(2, 32, 32, 1, 1, wt=1, gdot=1)),
    ("int8", 40, False, 72, 200, 1, MatmulConfig(1, 64, 40, 1, 1, wt=1, gdot=1)),
    ("uint2", 32, True, 33, 160, 4, MatmulConfig(4, 32, 32, 1, 1, wt=1, gdot=1)),
    ("float4_e2m1", 256, False, 64, 512, 1, MatmulConfig(1, 64, 128, 2, 1, wt=1, gdot=1)),   # mode 2
    ("int5", 64, True, 45, 320, 1, MatmulConfig(1, 32, 64, 1, 1, split=2, wt=1, gdot=1)),   # split-K
    ("uint6", 32, False, 50, 128, 3, MatmulConfig(4, 32, 64, 1, 1, wt=1)),                  # tiled only
    ("int4", 32, True, 50, 128, 1, MatmulConfig(1, 32, 32, 1, 1, gdot=1)),                  # gdot only
    ("uint4", 64, True, 24, 128, 2, MatmulConfig(2, 16, 64, 1, 0, wt=1, gdot=1)),           # DOT = 0
]


@pytest.mark.parametrize("backend", ["interpret", "tvm"])
@pytest.mark.parametrize("dtype,group,zp,n,k,m,cfg", CASES, ids=[f"{c[0]}-g{c[1]}-M{c[5]}" for c in CASES])
def test_forms_against_fp64(backend, dtype, group, zp, n, k, m, cfg):
    if backend == "tvm":
        from lowbit.kernels.library import _registered

        if not _registered("tvm", "cpu"):
            pytest.skip("no TVM CPU backend here")
    gen = torch.Generator().manual_seed(zlib.crc32(repr((dtype, group, n, k, m)).encode()))
    w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=group, zero_point=zp)
    x = torch.randn(m, k, generator=gen)
    bias = torch.randn(n, generator=gen) if m > 1 else None
    y = run_matmul(x, w, bias, backend, cfg)
    assert y.shape == (m, n) and y.dtype == x.dtype
    _check(y, x, w, bias, cfg.split, f"{backend} {dtype} {cfg}")


def test_one_weight_in_several_forms_keeps_them_apart():
    """The same QuantizedTensor runs in the [K, N] and the tiled arrangement (two cache entries)."""
    gen = torch.Generator().manual_seed(3)
    w = quantize(torch.randn(64, 128, generator=gen), "uint4", group_size=64)
    x = torch.randn(1, 128, generator=gen)
    for cfg in (MatmulConfig(1, 64, 64, 1, 1), MatmulConfig(1, 64, 64, 1, 1, wt=1, gdot=1),
                MatmulConfig(1, 64, 64, 1, 1)):
        _check(run_matmul(x, w, None, "interpret", cfg), x, w, None, 1, str(cfg))


@pytest.mark.parametrize("flags, tiles", [
    ({"avx", "avx2", "fma"}, {1: (1, 64), 2: (2, 32), 4: (4, 16), 16: (4, 16)}),
    ({"avx", "avx2", "fma", "avx512f", "avx512bw"}, {1: (1, 128), 2: (2, 64), 4: (4, 64), 16: (4, 64)}),
])
def test_streaming_tiles_fit_the_host_registers(monkeypatch, flags, tiles):
    """A streaming program's accumulators (rows x vectors of outputs) take at most half the vector registers: 8
    of AVX2's 16 registers of 8 lanes, 16 of AVX-512's 32 of 16 lanes; one row takes 8 vectors either way."""
    from lowbit.lowering import target

    monkeypatch.setattr(target, "host_cpu_flags", lambda: frozenset(flags))
    lanes = target.host_vector_bytes() // 4
    for m, (bm, bn) in tiles.items():
        cfg = choose_config(m, 4096, 4096, 128, "tvm", "cpu", 2, wtype="int4", xtype="float32")
        assert (cfg.bm, cfg.bn, cfg.wt) == (bm, bn, 1), m
        assert cfg.bm * cfg.bn // lanes <= target.host_vector_registers() // 2 or m == 1
    assert choose_config(1, 64, 4096, 128, "tvm", "cpu", 2).bn == 64         # narrower than 8 vectors: as before


@pytest.mark.parametrize("dtype", ["int3", "uint5", "int7"])
def test_row_blocks_unroll_a_whole_period_of_straddling_codes(dtype):
    """A 4-row tile over 3/5/7-bit codes packed along K (32 codes in 3/5/7 words, straddling words) unrolls its
    K loop over the whole 32-step period, where every shift amount and word folds to a constant (half a period
    left them to run time: 3x slower); results within the fp64 bound, edges in M and N included."""
    from lowbit.kernels.library import _registered, compiled
    from lowbit.kernels.matmul import FILE, _constants

    if not _registered("tvm", "cpu"):
        pytest.skip("no TVM CPU backend here")
    cfg = MatmulConfig(4, 16, 128, 1, 1, wt=1, gdot=1)
    gen = torch.Generator().manual_seed(zlib.crc32(dtype.encode()))
    w = quantize(torch.randn(40, 256, generator=gen), dtype, group_size=128, zero_point=dtype.startswith("u"))
    source = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, "float32", cfg, False)).source
    assert re.search(r"for cx\w+ in T\.unroll\(32\):", source), "the row block's K loop is not unrolled 32 steps"
    for m in (4, 7):
        x = torch.randn(m, 256, generator=gen)
        _check(run_matmul(x, w, None, "tvm", cfg), x, w, None, 1, f"{dtype} M={m}")


@pytest.mark.parametrize("dtype,zero_point", [("int2", False), ("uint3", True), ("float3_e2m0", False),
                                               ("int1", True)])
def test_avx2_looks_narrow_codes_up_in_a_register(monkeypatch, tmp_path, dtype, zero_point):
    """On an AVX2 host (the flags of one, on any host that runs AVX2) codes of at most 3 bits decode by one 8-lane
    ``vpermps`` of their values (``register_table_entries``: 8), in the one-row GEMV and in the row blocks (whose
    vectors are cut to the permute's 8 lanes); results within the fp64 bound."""
    from lowbit.kernels.library import _registered, compiled
    from lowbit.kernels.matmul import FILE, _constants
    from lowbit.lowering import target

    if not _registered("tvm", "cpu") or not target.host_has_avx2():
        pytest.skip("no TVM CPU backend on an AVX2 host here")
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(target, "host_cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    gen = torch.Generator().manual_seed(zlib.crc32(dtype.encode()))
    w = quantize(torch.randn(40, 256, generator=gen), dtype, group_size=128, zero_point=zero_point)
    for m, cfg in ((1, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1)), (5, MatmulConfig(4, 16, 128, 1, 1, wt=1, gdot=1))):
        source = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, "float32", cfg, False)).source
        assert "llvm.x86.avx2.permps" in source, (dtype, m)
        x = torch.randn(m, 256, generator=gen)
        _check(run_matmul(x, w, None, "tvm", cfg), x, w, None, 1, f"{dtype} M={m}")


def test_config_checks_and_choice(avx512_bf16_host):
    with pytest.raises(ValueError):
        MatmulConfig(1, 64, 128, 0, 1, gdot=1)            # per-channel: nothing to scale per tile
    assert not MatmulConfig(1, 64, 128, 1, 1, gdot=1).fits(64, 4096)      # two groups per tile
    assert MatmulConfig(1, 64, 128, 1, 1, gdot=1).fits(128, 4096)
    gemv = choose_config(1, 4096, 4096, 128, "tvm", "cpu", 2)
    assert (gemv.wt, gemv.gdot, gemv.bk) == (1, 1, 128)
    assert choose_config(1, 4096, 4096, 32, "tvm", "cpu", 2).bk == 32              # one group per tile
    assert choose_config(1, 4096, 4096, 128, "interpret", "cpu").wt == 0            # other backends: unchanged
    assert choose_config(1, 4096, 4096, 128, "triton", "cuda", 132).gdot == 0
    assert choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2).wt == 0             # GEMM: unchanged
    # more rows: weights that unpack cheaply stream with the GEMV's 4-row tile, others take the GEMM tile
    for wtype in ("int4", "uint2", "float4_e2m1", "int8"):
        many = choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype)
        assert (many.bm, many.bn, many.wt, many.gdot, many.dot) == (4, 64, 1, 1, 1), wtype
    for wtype in ("float8_e4m3fn", "int5", "float6_e3m2"):
        assert choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype).wt == 0, wtype
        assert choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype, xtype="float32").wt == 0, wtype
        # bf16 activations: decoded weights go to vdpbf16ps in pairs, each decode shared by 4 rows
        bf16 = choose_config(33, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype, xtype="bfloat16")
        assert (bf16.wt, bf16.bm) == (1, 4), wtype
    # ... by 8 rows, 32 outputs wide, where M is a multiple of 8 (not codes of at most 6 bits: bf16 tables)
    for wtype, m in (("float8_e4m3fn", 16), ("int7", 8), ("int8", 32), ("int4", 16), ("float4_e2m1", 8),
                     ("int5", 8), ("float6_e3m2", 16)):
        bf16 = choose_config(m, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype, xtype="bfloat16")
        eight = wtype in ("float8_e4m3fn", "int7", "int8")
        assert (bf16.bm, bf16.bn) == ((8, 32) if eight else (4, 64)), (wtype, m)
        assert choose_config(m, 4096, 4096, 128, "tvm", "cpu", 2, wtype=wtype, xtype="float32").bm != 8
    assert choose_config(33, 4096, 4096, 128, "triton", "cuda", 132, wtype="int4").wt == 0
    with pytest.raises(ValueError, match="does not fit"):
        w = quantize(torch.randn(8, 256), "uint4", group_size=64)
        run_matmul(torch.randn(1, 256), w, None, "interpret", MatmulConfig(1, 8, 128, 1, 1, gdot=1))
