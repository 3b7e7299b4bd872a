"""The runtime's logits match Hugging Face transformers on tiny random Llama / Qwen2 / Mistral models.

Each case prefills a static batch of two prompts of different lengths (11 and 4 tokens, pages of 4
tokens, so prompts span several pages), then runs 5 batched decode steps; after every step the logits of
each sequence are compared with transformers' full forward pass over that sequence (no cache).

Tolerance: ``|ours - hf| <= 1e-4 * max(1, max|hf|)`` elementwise. Both sides compute in fp32 and differ
only in summation order (~1e-6 relative); a wrong mask, rope, bias or head mapping is off by >1e-2.
Low-precision KV caches (f16 and low-bit) are compared with transformers whose attention sees K and V
passed through the same rounding (f16 cast, or ``lowbit.quant.quantize(...).dequantize()`` per token and
head), so the tolerance stays the same.
"""
from __future__ import annotations

import pytest
import torch

from lowbit.kvcache import KVCacheFormat
from lowbit.runtime import PagedKVCache, WeightPolicy, load_model
from lowbit.runtime.ops import resolve

PROMPTS = [[5, 17, 250, 3, 99, 42, 7, 8, 200, 31, 64], [11, 12, 300, 1]]
STEPS = [[4, 77], [9, 123], [310, 2], [15, 16], [0, 199]]  # the token fed to each sequence at each step


def tolerance(ref: torch.Tensor) -> float:
    return 1e-4 * max(1.0, float(ref.abs().max()))


def run_and_compare(hf, hf_model, folder, *, kv: str = "float32", kv_group: int | None = None,
                    policy: WeightPolicy | None = None, reference=None, activations: str = "float32") -> None:
    model = load_model(folder, policy, activations=activations)
    cfg = model.config
    cache = PagedKVCache(KVCacheFormat(kv, cfg.num_kv_heads, cfg.head_dim, page_size=4, group_size=kv_group),
                         cfg.num_layers, num_pages=16)
    ops = resolve("torch")
    seqs = [list(p) for p in PROMPTS]
    got = model.prefill(ops, cache, [0, 1], seqs, all_logits=True)
    reference = reference or hf_model
    for b in range(2):
        ref = hf.logits(reference, seqs[b])
        torch.testing.assert_close(got[b], ref, rtol=0, atol=tolerance(ref), msg=lambda m: f"prefill seq {b}: {m}")
    for step, toks in enumerate(STEPS):
        out = model.decode(ops, cache, [0, 1], toks)
        for b in range(2):
            seqs[b].append(toks[b])
            ref = hf.logits(reference, seqs[b])[-1]
            torch.testing.assert_close(out[b], ref, rtol=0, atol=tolerance(ref),
                                       msg=lambda m: f"decode step {step} seq {b}: {m}")


CASES = {
    "llama": ("llama", {}),
    "llama-llama3rope-tied-bias-mqa": ("llama", dict(
        tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8})),
    "llama-linear-rope": ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 4.0})),
    "qwen2": ("qwen2", {}),
    "qwen2-sliding-window": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "mistral-sliding-window": ("mistral", dict(sliding_window=5, head_dim=32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_matches_transformers(case, hf, hf_checkpoint):
    arch, overrides = CASES[case]
    hf_model, folder = hf_checkpoint(arch, **overrides)
    run_and_compare(hf, hf_model, folder)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_f16_kv_cache_matches_transformers_with_f16_kv(arch, hf, hf_checkpoint):
    hf_model, folder = hf_checkpoint(arch)
    with hf.kv_fake_quant(hf_model, lambda x: x.to(torch.float16).to(torch.float32)):
        run_and_compare(hf, hf_model, folder, kv="float16")


def test_f16_kv_cache_is_close_to_exact_transformers(hf, hf_checkpoint):
    """Without the rounding hook, an f16 cache stays within f16 precision of the fp32 model (2^-10 rel.)."""
    hf_model, folder = hf_checkpoint("llama")
    model = load_model(folder)
    cfg = model.config
    cache = PagedKVCache(KVCacheFormat("f16", cfg.num_kv_heads, cfg.head_dim, page_size=4), cfg.num_layers, 8)
    got = model.prefill(resolve("torch"), cache, [0], [PROMPTS[0]], all_logits=True)[0]
    ref = hf.logits(hf_model, PROMPTS[0])
    err = float((got - ref).abs().max())
    assert 0 < err <= 2 ** -10 * float(ref.abs().max())


WEIGHT_CASES = {
    "u4-g32-zero-point": ("uint4", 32, {}),
    "i4-g16": ("int4", 16, {}),
    "f4e2m1-g32": ("float4_e2m1", 32, {}),
    "i3-g16-with-overrides": ("int3", 16, {"lm_head": "f16", "*.mlp.down_proj": "int8:g32", "model.layers.1.*": "u2:g16"}),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_quantized_weights_match_transformers_with_fake_quant(case, hf, hf_checkpoint):
    dtype, group, overrides = WEIGHT_CASES[case]
    hf_model, folder = hf_checkpoint("qwen2", seed=1)
    policy = WeightPolicy.parse(dtype, group_size=group, overrides=overrides)

    def spec_for(name: str):
        spec = policy.spec_for(name)
        return None if spec.dtype == "float32" else (spec.dtype, spec.group_size, spec.zero_point)

    reference = hf.fake_quant_weights(hf.build("qwen2", 1), spec_for)
    # the fake-quantized reference really differs from the original model
    assert float((hf.logits(reference, PROMPTS[0]) - hf.logits(hf_model, PROMPTS[0])).abs().max()) > 1e-3
    run_and_compare(hf, hf_model, folder, policy=policy, reference=reference)


KV_CASES = {
    "u4-zero-point": ("uint4", None, None),
    "i8": ("int8", None, None),
    "i3-g8": ("int3", 8, None),
    "f8e4m3fn": ("float8_e4m3fn", None, None),
    "f4e2m1-g8": ("float4_e2m1", 8, None),
}


@pytest.mark.parametrize("case", list(KV_CASES))
def test_low_bit_kv_cache_matches_transformers_with_fake_quant_kv(case, hf, hf_checkpoint):
    from lowbit.quant import quantize

    dtype, group, _ = KV_CASES[case]
    hf_model, folder = hf_checkpoint("mistral", sliding_window=6)
    fmt = KVCacheFormat(dtype, 2, 16, group_size=group)

    def fake(x: torch.Tensor) -> torch.Tensor:  # x [B, Hkv, T, D]: quantize each token/head vector
        flat = x.reshape(-1, x.shape[-1]).to(torch.float32)
        qt = quantize(flat, dtype, group_size=fmt.group_size, zero_point=fmt.zero_point)
        return torch.as_tensor(qt.dequantize()).reshape(x.shape)

    with hf.kv_fake_quant(hf_model, fake):
        run_and_compare(hf, hf_model, folder, kv=dtype, kv_group=group)


DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _round_linears_to_bf16(model) -> list:
    """Hooks making transformers' decoder-layer linears take bf16-rounded inputs and round their outputs to
    bf16 (products and sums stay fp32): the runtime's ``activations="bfloat16"``."""
    bf16 = lambda t: t.to(torch.bfloat16).to(torch.float32)  # noqa: E731
    handles = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in DECODER_LINEARS:
            handles.append(module.register_forward_pre_hook(lambda mod, args: (bf16(args[0]), *args[1:])))
            handles.append(module.register_forward_hook(lambda mod, args, out: bf16(out)))
    return handles


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bf16_activations_match_transformers_with_bf16_rounded_linears(arch, hf, hf_checkpoint):
    """With bf16 activations the runtime equals transformers whose decoder linears round their inputs and
    outputs to bf16 (same tolerance as fp32; the exact fp32 model is more than 10x that away)."""
    hf_model, folder = hf_checkpoint(arch, seed=2)
    exact = hf.logits(hf_model, PROMPTS[0])
    handles = _round_linears_to_bf16(hf_model)
    try:
        rounded = hf.logits(hf_model, PROMPTS[0])
        assert float((rounded - exact).abs().max()) > 10 * tolerance(exact)    # the rounding matters
        run_and_compare(hf, hf_model, folder, activations="bfloat16")
    finally:
        for h in handles:
            h.remove()


def test_unknown_activation_dtype_is_rejected_before_loading(tmp_path):
    from lowbit.errors import RuntimeModelError

    with pytest.raises(RuntimeModelError, match="activations must be one of"):
        load_model(tmp_path / "missing", activations="int8")
