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
    # so the closeness bound is asserted only for the f16 cache (where a flip is one f16 ulp).
    if kv == "float16":
        seqs = [list(prompts[0].encode()) + [32]]
        diff = (kernels.token_logits(seqs)[0] - reference.token_logits(seqs)[0]).abs().max().item()
        assert diff <= 1e-3, diff
