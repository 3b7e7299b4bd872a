"""The shipped tiny Llama: small, writes recognisable text, survives 8/4/3-bit weights; perplexity is right.

Greedy outputs are compared token for token with the fp32 weights (the checkpoint's fp16 values computed
in fp32), 48 new tokens per prompt, f32 KV cache so only the weights differ.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from lowbit.runtime import Engine, default_model_dir, greedy_agreement, heldout_text, perplexity, quality_report

# Lines of the Zen of Python, which the model knows by heart (free docstring prose has small margins and
# is not expected to survive 4-bit weights token for token).
PROMPTS = ["Beautiful is better than", "Errors should never", "In the face of ambiguity,", "The Zen of Python"]
N_NEW = 48


@pytest.fixture(scope="module")
def reference():
    return Engine.from_pretrained(default_model_dir(), kv="f32")


@pytest.fixture(scope="module")
def reference_outputs(reference):
    return reference.generate(PROMPTS, max_new_tokens=N_NEW, stop_tokens=())


def test_checkpoint_is_small_and_byte_level():
    folder = default_model_dir()
    assert (folder / "model.safetensors").stat().st_size < 4 * 2 ** 20
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == 257 and cfg["eos_token_id"] == 256
    assert not (folder / "tokenizer.json").exists()
    assert len(heldout_text()) > 10_000


def test_writes_recognisable_text(reference_outputs):
    texts = reference_outputs.texts
    assert texts[0].startswith(" ugly.\nExplicit is better than implicit.\nSimple ")
    assert texts[1].startswith(" pass silently.\nUnless explicitly silenced.")
    assert texts[2].startswith(" refuse the temptation to guess.")
    assert texts[3].startswith(", by Tim Peters\n\nBeautiful is better than ugly.")


@pytest.mark.parametrize("weights,group", [("u8", 128), ("i8", 128), ("u4", 128), ("u4", 32), ("i4", 128),
                                           ("i4", 32), ("u3", 64), ("u3", 32)])
def test_greedy_output_unchanged_by_weight_quantization(weights, group, reference_outputs):
    engine = Engine.from_pretrained(default_model_dir(), weights=weights, group_size=group, kv="f32")
    out = engine.generate(PROMPTS, max_new_tokens=N_NEW, stop_tokens=())
    for prompt, ref, got in zip(PROMPTS, reference_outputs.outputs, out.outputs):
        assert got.token_ids == ref.token_ids, f"{weights} g{group} {prompt!r}: {got.text!r} != {ref.text!r}"


def test_perplexity_matches_transformers():
    """Our windows, our logits vs transformers' loss on the same windows."""
    from transformers import LlamaForCausalLM

    engine = Engine.from_pretrained(default_model_dir(), kv="f32")
    ours = perplexity(engine, heldout_text(), context=128, max_tokens=1024)
    assert ours.tokens == 8 * 127 and ours.windows == 8
    hf_model = LlamaForCausalLM.from_pretrained(default_model_dir(), dtype=torch.float32).eval()
    ids = torch.tensor(list(heldout_text().encode())[:1024]).view(8, 128)
    with torch.no_grad():
        loss = hf_model(input_ids=ids, labels=ids).loss.item()
    assert math.isclose(ours.mean_nll, loss, rel_tol=1e-5)
    assert math.isclose(ours.perplexity, math.exp(loss), rel_tol=1e-5)


def test_quality_report_sees_two_bit_damage(reference):
    two_bit = Engine.from_pretrained(default_model_dir(), weights="u2", group_size=128, kv="f32")
    row = quality_report(two_bit, reference, prompts=PROMPTS[:2], max_new_tokens=16, context=128, max_tokens=1024)
    assert row.weights == "uint2 g128 zero-point" and row.kv_cache.startswith("float32")
    assert row.reference_perplexity == perplexity(reference, heldout_text(), context=128, max_tokens=1024).perplexity
    assert row.perplexity > row.reference_perplexity * 1.05
    assert row.teacher_forced_agreement < 1.0 and row.prompts == 2
    assert row.weight_bytes < reference.model.weight_bytes() / 8
    same = greedy_agreement(reference, reference, PROMPTS[:2], max_new_tokens=16)
    assert same.teacher_forced == 1.0 and same.all_identical
