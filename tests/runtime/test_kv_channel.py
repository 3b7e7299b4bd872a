"""The runtime with keys quantized per channel over each page (``kv_key_grouping="channel"``, ``paged-kv/v2``).

Reference: transformers itself, decoding incrementally with its own (exact) KV cache, whose attention sees
the keys fake-quantized as the format defines them -- every *complete* page of ``page_size`` positions
quantized per channel by ``lowbit.quant.quantize`` of the transposed page, the trailing partial page exact --
and the values fake-quantized per token. Because the reference decodes step by step, the hidden states
behind each cached K/V were computed when that token was new (its own page still open), exactly as in the
runtime. Tolerance as in ``test_hf_parity.py``: ``1e-4 * max(1, max|hf|)``.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from lowbit.kvcache import KVCacheFormat
from lowbit.quant import quantize
from lowbit.runtime import Engine, PagedKVCache, default_model_dir, load_model
from lowbit.runtime.ops import resolve

PROMPTS = [[5, 17, 250, 3, 99, 42, 7, 8, 200, 31, 64], [11, 12, 300, 1]]   # 11 tokens (open page), 4 (sealed)
STEPS = [[4, 77], [9, 123], [310, 2], [15, 16], [0, 199]]
PAGE = 4
_HOOK: dict[str, object] = {}


def fake_keys(dtype: str, zero_point: bool):
    def fake(x: torch.Tensor) -> torch.Tensor:  # [B, Hkv, T, D]
        b, h, t, d = x.shape
        full = t // PAGE
        out = x.clone()
        if full:
            rows = x[:, :, : full * PAGE].reshape(b, h, full, PAGE, d).transpose(-1, -2).reshape(-1, PAGE)
            qt = quantize(rows.to(torch.float32), dtype, group_size=None, zero_point=zero_point)
            deq = torch.as_tensor(qt.dequantize()).reshape(b, h, full, d, PAGE).transpose(-1, -2)
            out[:, :, : full * PAGE] = deq.reshape(b, h, full * PAGE, d)
        return out
    return fake


def fake_values(dtype: str, group: int, zero_point: bool):
    def fake(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.float32)
        qt = quantize(flat, dtype, group_size=group, zero_point=zero_point)
        return torch.as_tensor(qt.dequantize()).reshape(x.shape)
    return fake


@contextlib.contextmanager
def kv_hook(model, keys, values):
    """transformers' sdpa attention with K and V (the whole cache, after RoPE) passed through the fakes."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def attention(module, q, k, v, mask, **kw):
        return sdpa_attention_forward(module, q, _HOOK["k"](k), _HOOK["v"](v), mask, **kw)

    AttentionInterface.register("lowbit_test_kv_channel", attention)
    AttentionMaskInterface.register("lowbit_test_kv_channel", sdpa_mask)
    _HOOK.update(k=keys, v=values)
    before = model.config._attn_implementation
    model.set_attn_implementation("lowbit_test_kv_channel")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def hf_incremental(model, prompt, steps):
    """Prefill logits ``[len(prompt), vocab]``, then the last logits of each one-token step (HF cache)."""
    from transformers import DynamicCache

    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        out = model(torch.tensor([prompt]), past_key_values=cache, use_cache=True)
        logits = [out.logits[0].float()]
        for tok in steps:
            out = model(torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)
            logits.append(out.logits[0, -1].float())
    return logits


@pytest.mark.parametrize("dtype,group", [("uint4", 8), ("int8", None), ("int3", 8)])
def test_matches_transformers_with_per_channel_keys(dtype, group, hf_checkpoint):
    hf_model, folder = hf_checkpoint("llama")
    fmt = KVCacheFormat(dtype, 2, 16, page_size=PAGE, group_size=group, key_grouping="channel")
    with kv_hook(hf_model, fake_keys(dtype, fmt.zero_point), fake_values(dtype, fmt.group_size, fmt.zero_point)):
        refs = [hf_incremental(hf_model, PROMPTS[b], [s[b] for s in STEPS]) for b in range(2)]
    model = load_model(folder)
    cfg = model.config
    assert (cfg.num_kv_heads, cfg.head_dim) == (2, 16)
    for ops in [resolve("torch")] + ([resolve("auto")] if dtype == "uint4" else []):   # auto: lowbit's kernels
        backend = ops.describe()
        cache = PagedKVCache(fmt, cfg.num_layers, num_pages=16)
        got = model.prefill(ops, cache, [0, 1], [list(p) for p in PROMPTS], all_logits=True)
        for b in range(2):
            ref = refs[b][0]
            torch.testing.assert_close(got[b], ref, rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())),
                                       msg=lambda m: f"{backend} prefill seq {b}: {m}")
        for step, toks in enumerate(STEPS):
            out = model.decode(ops, cache, [0, 1], toks)
            for b in range(2):
                ref = refs[b][step + 1]
                torch.testing.assert_close(out[b], ref, rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())),
                                           msg=lambda m: f"{backend} decode step {step} seq {b}: {m}")


def test_reference_really_differs_from_per_token_keys(hf_checkpoint):
    """The per-channel fake is not a no-op in disguise: per-token keys give other logits."""
    hf_model, _ = hf_checkpoint("llama")
    values = fake_values("uint4", 8, True)
    with kv_hook(hf_model, fake_keys("uint4", True), values):
        channel = hf_incremental(hf_model, PROMPTS[0], [4, 9])
    with kv_hook(hf_model, values, values):
        token = hf_incremental(hf_model, PROMPTS[0], [4, 9])
    assert float((channel[-1] - token[-1]).abs().max()) > 1e-3


TINY_PROMPTS = ["Beautiful is better than", "Errors should never", "In the face of ambiguity,", "The Zen of Python"]


@pytest.fixture(scope="module")
def tiny_reference():
    return Engine.from_pretrained(default_model_dir(), kv="f32").generate(TINY_PROMPTS, max_new_tokens=48,
                                                                         stop_tokens=())


@pytest.mark.parametrize("kv", ["u8", "u4"])
def test_tiny_model_greedy_output_unchanged_by_per_channel_keys(kv, tiny_reference):
    engine = Engine.from_pretrained(default_model_dir(), kv=kv, kv_key_grouping="channel")
    assert engine.kv_format.format_id == "paged-kv/v2"
    out = engine.generate(TINY_PROMPTS, max_new_tokens=48, stop_tokens=())
    assert "K per channel" in out.stats.kv_format
    for prompt, ref, got in zip(TINY_PROMPTS, tiny_reference.outputs, out.outputs):
        assert got.token_ids == ref.token_ids, f"{kv} {prompt!r}: {got.text!r} != {ref.text!r}"


def test_allocator_gives_each_live_sequence_one_staging_row():
    fmt = KVCacheFormat("int4", num_kv_heads=1, head_dim=8, page_size=4, key_grouping="channel")
    cache = PagedKVCache(fmt, num_layers=2, num_pages=16)
    assert cache.layers[0].staging_slots == 4
    cache.reserve({s: 3 for s in range(6)})                    # 6 sequences: the staging grows to 8 rows
    assert all(layer.staging_slots == 8 for layer in cache.layers)
    assert cache.layers[0].stage_map is cache.layers[1].stage_map
    smap = cache.layers[0].stage_map
    rows = [int(smap[cache.block_table(s)[0]]) for s in range(6)]
    assert sorted(set(rows)) == sorted(rows) and all(0 <= r < 8 for r in rows)
    cache.reserve({2: 6})                                      # sequence 2 opens two more pages: same row
    assert [int(smap[p]) for p in cache.block_table(2)] == [rows[2]] * 3
    cache.free(2)
    cache.reserve({9: 1})                                      # a new sequence reuses the freed row
    assert int(smap[cache.block_table(9)[0]]) == rows[2]
    # bytes read: sealed pages (codes + per-channel scales), open tokens (V codes + f32 staged keys)
    assert cache.bytes_read([0]) == 2 * 3 * (1 * (4 + 2) + 1 * 8 * 4)
    assert fmt.bytes_per_page() == 4 * (4 + 4 + 2) + 8 * 2


def test_generate_command_option(capsys):
    import argparse

    from lowbit.runtime import generate_command

    parser = argparse.ArgumentParser()
    generate_command.add_arguments(parser)
    assert parser.parse_args(["--prompt", "x"]).kv_key_grouping == "token"
    args = parser.parse_args(["--prompt", "Beautiful is better than", "--weights", "u8", "--kv", "u8",
                              "--kv-key-grouping", "channel", "--max-new-tokens", "7", "--page-size", "4"])
    assert generate_command.run(args) == 0
    out, err = capsys.readouterr()
    assert out == "Beautiful is better than ugly.\n\n" and "K per channel" in err
