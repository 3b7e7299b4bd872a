"""Fixtures for runtime tests: tiny random Hugging Face models saved as checkpoints, and HF references.

The reference is always ``transformers`` itself: its forward pass on the same weights (optionally with
the weights replaced by their dequantized values, "fake quant"), and, for low-bit KV caches, its own
attention with K and V fake-quantized through an attention hook (so the test never reuses the
runtime's cache code).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.1, rms_norm_eps=1e-5)


def build_hf(arch: str, seed: int = 0, **overrides):
    """A random-weight HF causal LM of ``arch`` (llama / qwen2 / mistral), eval mode, fp32."""
    cls_cfg, cls_model = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[arch]
    kwargs = dict(SMALL)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = cls_model(cls_cfg(**kwargs)).eval()
    if arch == "qwen2":  # HF initialises biases to 0: make them matter
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.1)
    return model


@pytest.fixture
def hf_checkpoint(tmp_path: Path) -> Callable:
    """``hf_checkpoint(arch, **config) -> (hf_model, folder)``: build, save as safetensors, return both."""
    counter = iter(range(1000))

    def make(arch: str = "llama", *, seed: int = 0, dtype=None, max_shard_size=None, **overrides):
        model = build_hf(arch, seed, **overrides)
        folder = tmp_path / f"{arch}-{next(counter)}"
        if dtype is not None:
            model = model.to(dtype)
        kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
        model.save_pretrained(folder, **kwargs)
        return model, folder

    return make


def hf_logits(model, ids: list[int]):
    """fp32 logits ``[len(ids), vocab]`` of a full forward pass (no cache)."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].to(torch.float32)


_HOOK_FN: dict[str, Callable] = {}


@contextlib.contextmanager
def kv_fake_quant(model, fake: Callable):
    """Run ``model`` with its K and V (after RoPE, ``[B, Hkv, T, D]``) replaced by ``fake(x)`` in attention."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, q, k, v, mask, **kw):
        return sdpa_attention_forward(module, q, _HOOK_FN["fn"](k), _HOOK_FN["fn"](v), mask, **kw)

    AttentionInterface.register("lowbit_test_kv", attention)
    AttentionMaskInterface.register("lowbit_test_kv", sdpa_mask)
    _HOOK_FN["fn"] = fake
    before = model.config._attn_implementation
    model.set_attn_implementation("lowbit_test_kv")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def fake_quant_weights(model, spec_for: Callable[[str], tuple | None]):
    """Replace each linear weight of ``model`` by ``quantize(...).dequantize()``; ``spec_for(name)`` gives
    ``(dtype, group_size, zero_point)`` or None (keep), ``name`` without ``.weight``."""
    from lowbit.quant import quantize

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                spec = spec_for(name)
                if spec is None:
                    continue
                dtype, group, zp = spec
                if dtype in ("float16", "bfloat16"):
                    module.weight.copy_(module.weight.to(getattr(torch, dtype)).to(torch.float32))
                else:
                    qt = quantize(module.weight.detach().clone(), dtype, group_size=group, zero_point=zp)
                    module.weight.copy_(torch.as_tensor(qt.dequantize()))
    return model


@pytest.fixture
def hf():
    """The reference helpers above, for test modules (conftest is not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(build=build_hf, logits=hf_logits, kv_fake_quant=kv_fake_quant,
                                 fake_quant_weights=fake_quant_weights)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and most predictably on the shared 2-core machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
