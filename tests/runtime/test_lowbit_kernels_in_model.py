"""The runtime on lowbit's generated kernels (TVM on the CPU) equals the runtime on the torch reference ops."""
from __future__ import annotations

import pytest
import torch

from lowbit.runtime import Engine


@pytest.mark.parametrize("weights,kv,activations", [("u4", "float16", "float32"), ("i3", "u4", "float32"),
                                                    ("f4e2m1", "int8", "float32"), ("i4", "float16", "bfloat16")])
def test_tvm_kernels_match_the_reference_ops(weights, kv, activations):
    torch.manual_seed(0)
    reference = Engine.from_pretrained(weights=weights, group_size=32, kv=kv, backend="torch", activations=activations)
    kernels = Engine.from_pretrained(weights=weights, group_size=32, kv=kv, backend="auto", activations=activations)
    assert dict(kernels.ops.backends)["linear"] == "tvm"
    prompts = ["Beautiful is better than", "Errors should"]
    ref = reference.generate(prompts, max_new_tokens=6)
    got = kernels.generate(prompts, max_new_tokens=6)
    assert got.texts == ref.texts
    # Logits of the same tokens differ by f32 accumulation order in the matmuls (~1e-6 relative per op). With a
    # quantized cache such noise can flip a K/V code at a rounding boundary, a jump of one quantization step,
    # so the closeness bound is asserted only for the f16 cache (where a flip is one f16 ulp). Likewise bf16
    # activations: every op rounds its output to bf16, so the order noise can flip one rounding of a hidden
    # state (2^-8 relative) and the logits then move by up to about one bf16 step of their scale (measured:
    # 0.025-0.031 at |logit| <= 16.8 in two of four weight types, on the kernels' and on the GEMM tile's order
    # alike; the others within 2e-5).
    if kv == "float16":
        seqs = [list(prompts[0].encode()) + [32]]
        got_logits, ref_logits = kernels.token_logits(seqs)[0], reference.token_logits(seqs)[0]
        diff = (got_logits - ref_logits).abs().max().item()
        bound = 1e-3 if activations == "float32" else 2.0 ** -8 * ref_logits.abs().max().item()
        assert diff <= bound, (diff, bound)
