"""The matmul kernel on TVM's CPU target where it adds a lookup of activation sums (1-bit codes, 2-bit codes
with activations that are not bf16, and 3-bit integer codes in bit planes in a GEMV;
``lowering/tvm/lookup_sum.py``), against torch fp64 with the bound of ``conftest.py`` (``|q| + |z|`` in place of
``|q - z|`` where zero points leave the sums).

Signed codes, unsigned codes with implicit zeros and with zero points, 1, 2 and 3 bits (4 and 2 codes per
4-bit field; 3 planes of one bit of 4 codes), f32, f16 and bf16 activations, 1, 3, 4 and 13 rows (the
streaming tile, an edge in M), edges in N (K is a multiple of the K tile wherever the group scale follows the
dot), the weight layouts of 1 and 2 threads, default and forced configurations; each case checks that the
generated code takes the lookup where the host has AVX-512.
"""
from __future__ import annotations

import zlib

import pytest

torch = pytest.importorskip("torch")

from lowbit.kernels.library import compiled  # noqa: E402
from lowbit.kernels.matmul import (FILE, MatmulConfig, _constants, choose_config, run_matmul,  # noqa: E402
                                   takes_zeros_out)
from lowbit.lowering.target import cpu_threads, host_has_avx512  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

from .conftest import assert_within, matmul_reference, matmul_tolerance, require_backend  # noqa: E402

CASES = [  # dtype, zero_point, group, n, k, m, x dtype, config (None: the default), threads
    ("int2", False, 128, 264, 384, 1, torch.float32, None, 2),
    ("int2", False, 128, 72, 256, 1, torch.float32, MatmulConfig(1, 64, 128, 1, 1, wt=1, gdot=1), 1),
    ("uint2", True, 64, 50, 320, 3, torch.float16, None, 2),                 # zero points out of the sums
    ("uint2", False, 128, 40, 384, 4, torch.float32, MatmulConfig(4, 64, 128, 1, 1, wt=1, gdot=1), 1),
    ("uint1", True, 128, 72, 256, 1, torch.float32, None, 2),                # 4 codes per field
    ("int1", True, 64, 33, 192, 3, torch.float32, MatmulConfig(4, 32, 64, 1, 1, wt=1, gdot=1, zsum=1), 2),
    ("int2", False, 128, 40, 256, 13, torch.float32, None, 2),               # the streaming tile, edge in M
    ("uint1", True, 128, 40, 256, 3, torch.bfloat16, None, 2),              # 1-bit codes take it with bf16 too
    ("int1", True, 64, 72, 192, 1, torch.bfloat16, None, 1),
    ("int3", False, 128, 264, 384, 1, torch.float32, None, 2),               # bit planes: 3 lookups per field
    ("uint3", True, 128, 72, 256, 1, torch.float32, None, 1),                # zero points out of the sums
    ("uint3", False, 128, 50, 256, 1, torch.float16, None, 2),               # implicit zero: table[0] = -4
]
#: weight types stored in bit planes where the product has one row (``planes_for``)
PLANES = ("int3", "uint3")


@pytest.mark.parametrize("dtype,zero_point,group,n,k,m,x_dtype,cfg,threads", CASES,
                         ids=[f"{c[0]}-{'z' if c[1] else 'sym'}-M{c[5]}-{str(c[6])[6:]}-t{c[8]}" for c in CASES])
def test_against_fp64(monkeypatch, dtype, zero_point, group, n, k, m, x_dtype, cfg, threads):
    require_backend("tvm")
    monkeypatch.setenv("LOWBIT_NUM_THREADS", str(threads))     # the weight layout depends on the threads
    gen = torch.Generator().manual_seed(zlib.crc32(repr((dtype, zero_point, group, n, k, m, threads)).encode()))
    w = quantize(torch.randn(n, k, generator=gen), dtype, group_size=group, zero_point=zero_point)
    x = torch.randn(m, k, generator=gen).to(x_dtype)
    y = run_matmul(x, w, None, "tvm", cfg)
    assert y.shape == (m, n) and y.dtype == x_dtype
    used = cfg or choose_config(m, n, k, group, "tvm", "cpu", cpu_threads(), zeros=zero_point, wtype=dtype,
                                xtype=str(x_dtype)[6:])
    source = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, str(x_dtype)[6:], used, False)).source
    assert ("lut_sums" in source) == host_has_avx512()
    assert ("lut_one" in source) == host_has_avx512()   # the multiply-adds by 1.0 are checked below too
    assert ("lut_bit_sums" in source) == (host_has_avx512() and dtype in PLANES and used.bm == 1)
    # an implicit zero makes table[0] non-zero: its product with the sum of the activations joins after the loop
    assert ("lut_x_sums" in source) == ("lut_bit_sums" in source and dtype.startswith("u") and not zero_point)
    zero_out = bool(cfg.zsum) if cfg is not None else takes_zeros_out(m, w, "tvm", xtype=str(x_dtype)[6:])
    ref, absdot = matmul_reference(x, w, zero_out=zero_out)
    assert_within(y, ref, matmul_tolerance(absdot, ref, k, x_dtype),
                  f"tvm {dtype} zeros={zero_point} M={m} {cfg} threads={threads}")


def test_grouped_storage_without_the_lookup(monkeypatch, tmp_path):
    """Where the fused form does not apply (the code generator told the host has no AVX-512: no 16-entry
    ``vpermps``), codes stored in groups (and in bit planes, as the lowering stores them for an AVX-512 host,
    whatever this one is) are unpacked by the generic path, which must read them in their stored order.
    The kernels built here go to a private disk cache, in a configuration (``bn = 32``) no other test builds."""
    require_backend("tvm")
    from lowbit.kernels.library import compiled
    from lowbit.kernels.matmul import FILE, _constants
    from lowbit.lowering import target
    from lowbit.lowering.tvm import codegen

    flags = target.host_cpu_flags()
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(target, "host_cpu_flags", lambda: flags | {"avx512f", "avx512bw"})
    monkeypatch.setattr(codegen, "host_has_avx512", lambda: False)
    gen = torch.Generator().manual_seed(7)
    for dtype, zero_point, rows in (("int2", False, 2), ("uint1", True, 2), ("int3", False, 1)):
        w = quantize(torch.randn(72, 256, generator=gen), dtype, group_size=128, zero_point=zero_point)
        x = torch.randn(rows, 256, generator=gen)
        cfg = MatmulConfig(rows, 32, 128, 1, 1, wt=1, gdot=1, zsum=int(zero_point))
        kernel = compiled(FILE, "lowbit_matmul", "tvm", "cpu", **_constants(w, "float32", cfg, False))
        fmt = kernel.param_formats["q"]
        if dtype == "int3":     # bit planes, in groups of 4 rows
            assert fmt.bit_planes and fmt.groups == 4
        else:
            assert fmt.groups == 4 // w.dtype.nbits
        assert "lut_sums" not in kernel.source
        y = run_matmul(x, w, None, "tvm", cfg)
        ref, absdot = matmul_reference(x, w, zero_out=zero_point)
        assert_within(y, ref, matmul_tolerance(absdot, ref, 256, x.dtype), f"tvm {dtype} without the lookup")
