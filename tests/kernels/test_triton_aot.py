"""The library's kernels compile for an NVIDIA GPU (sm_90) without one: lowering for ``triton:sm_90`` and
Triton's ahead-of-time pipeline down to PTX and cubin. With ``ct = float16`` the GEMM path's ``dot`` becomes
Hopper tensor-core instructions (``wgmma``). (Running them needs a GPU: ``@pytest.mark.gpu`` tests would go
through ``lowbit.ops`` with ``backend="triton"`` on CUDA tensors.)"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from lowbit import kvcache  # noqa: E402
from lowbit.kernels.attention import attention_constants  # noqa: E402
from lowbit.kernels.library import kernel_ir  # noqa: E402
from lowbit.kernels.matmul import MatmulConfig, _constants, choose_config  # noqa: E402
from lowbit.quant import quantize  # noqa: E402


def _compile(ir):
    from lowbit.lowering.passes import run_passes
    from lowbit.lowering.target import parse_target
    from lowbit.lowering.triton.artifact import compile_triton

    return compile_triton(run_passes(ir, parse_target("triton:sm_90")), "sm_90")


@pytest.mark.slow
def test_matmul_and_attention_compile_for_sm90():
    w = quantize(torch.randn(64, 256), "int3", group_size=64)
    gemv = choose_config(1, 4096, 4096, 64, "triton", "cuda", 132)
    art = _compile(kernel_ir("matmul.lbk", "lowbit_matmul", **_constants(w, "float16", gemv, True)))
    assert art.aot.cubin and "ld.global" in art.aot.ptx
    gemm = MatmulConfig(64, 64, 64, 1, 1, ct="float16")
    art = _compile(kernel_ir("matmul.lbk", "lowbit_matmul", **_constants(w, "float16", gemm, False)))
    assert art.stats["wgmma.mma_async"] > 0
    fmt = kvcache.KVCacheFormat("uint4", num_kv_heads=8, head_dim=128, page_size=16, group_size=32)
    art = _compile(kernel_ir("attention.lbk", "decode_attention", **attention_constants(fmt, "bfloat16", 32, None, 4)))
    assert art.aot.cubin
