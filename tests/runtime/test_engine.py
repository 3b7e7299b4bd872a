"""Engine behaviour: static batches, sampling, stop tokens, limits, statistics, the op registry, tokenizers.

Token-exact checks run on the shipped tiny model (trained: large logit margins), never on random weights.
Sampling filters are compared with transformers' own logits processors.
"""
from __future__ import annotations

import math

import pytest
import torch

from lowbit.errors import BackendError, RuntimeModelError
from lowbit.runtime import Engine, SamplingParams, default_model_dir
from lowbit.runtime import ops as ops_registry
from lowbit.runtime.sampling import filter_logits, sample

PROMPTS = ["Beautiful is better than", "Errors should never pass", "Return a"]


@pytest.fixture(scope="module")
def tiny():
    return Engine.from_pretrained(default_model_dir(), kv="f16", page_size=8)


def test_batch_of_prompts_of_different_lengths_equals_each_alone(tiny):
    batch = tiny.generate(PROMPTS, max_new_tokens=24, stop_tokens=())
    for prompt, out in zip(PROMPTS, batch.outputs):
        alone = tiny.generate(prompt, max_new_tokens=24, stop_tokens=()).outputs[0]
        assert out.token_ids == alone.token_ids and out.text == alone.text
        assert out.prompt_ids == tuple(prompt.encode()) and len(out.token_ids) == 24
        assert out.finish_reason == "length"


def test_sampling_is_reproducible_with_a_seed(tiny):
    kw = dict(max_new_tokens=24, temperature=1.5, top_k=50, stop_tokens=())
    a = tiny.generate(PROMPTS, seed=1, **kw)
    b = tiny.generate(PROMPTS, seed=1, **kw)
    c = tiny.generate(PROMPTS, seed=2, **kw)
    greedy = tiny.generate(PROMPTS, max_new_tokens=24, stop_tokens=())
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids and a.token_ids != greedy.token_ids


def test_top_k_1_and_tiny_top_p_are_greedy(tiny):
    greedy = tiny.generate(PROMPTS, max_new_tokens=16).token_ids
    assert tiny.generate(PROMPTS, max_new_tokens=16, temperature=0.7, top_k=1, seed=0).token_ids == greedy
    assert tiny.generate(PROMPTS, max_new_tokens=16, temperature=0.7, top_p=1e-6, seed=0).token_ids == greedy


def test_stop_tokens_and_token_limit(tiny):
    free = tiny.generate(PROMPTS[0], max_new_tokens=20, stop_tokens=()).outputs[0].token_ids
    stop = free[6]
    first = free.index(stop)
    out = tiny.generate(PROMPTS[0], max_new_tokens=20, stop_tokens=[stop]).outputs[0]
    assert out.token_ids == free[:first + 1] and out.finish_reason == "stop"
    out = tiny.generate(PROMPTS[0], max_new_tokens=5, stop_tokens=()).outputs[0]
    assert out.token_ids == free[:5] and out.finish_reason == "length"
    assert tiny.generate(PROMPTS[0], max_new_tokens=0).outputs[0].token_ids == ()


def test_eos_stops_by_default(tiny):
    eos = tiny.model.config.eos_token_ids
    assert eos == (256,)
    # the model ends the Zen of Python with end-of-text; without stop tokens it keeps going
    prompt = "Namespaces are one honking great idea -- let's do more of those!"
    out = tiny.generate(prompt, max_new_tokens=40).outputs[0]
    assert out.finish_reason == "stop" and out.token_ids[-1] == 256 and "256" not in out.text


def test_statistics_count_bytes_independently(tiny):
    from safetensors import safe_open

    result = tiny.generate(PROMPTS, max_new_tokens=6, stop_tokens=())
    s = result.stats
    lens = [len(p.encode()) for p in PROMPTS]
    assert s.prefill_tokens == sum(lens) and s.decode_tokens == 3 * 5 and s.decode_steps == 5
    # fp32 weights: every matrix and norm of the checkpoint once (the tied lm_head = the embedding matrix)
    with safe_open(str(default_model_dir() / "model.safetensors"), "pt") as f:
        params = sum(f.get_slice(n).get_shape()[0] * (f.get_slice(n).get_shape() + [1])[1] for n in f.keys())
    assert s.weight_bytes == 4 * params
    cfg = tiny.model.config
    per_token_kv = 2 * cfg.num_kv_heads * cfg.head_dim * 2 * cfg.num_layers  # f16 K and V, all layers
    embed_row = cfg.hidden_size * 2  # the fp16 checkpoint's embedding row
    kv = sum((sum(lens) + 3 * (step + 1)) * per_token_kv for step in range(5))  # tokens cached at each step
    assert s.decode_bytes == 5 * (4 * params + 3 * embed_row) + kv
    assert math.isclose(s.bandwidth_gb_s, s.decode_bytes / s.decode_seconds / 1e9)
    assert s.prefill_tokens_per_s > 0 and s.decode_tokens_per_s > 0
    assert "tok/s" in s.summary() and "GB/s" in s.summary()


def test_quantized_weights_read_fewer_bytes():
    q = Engine.from_pretrained(default_model_dir(), weights="u4", group_size=64, kv="u4")
    stats = q.generate("Flat is", max_new_tokens=3).stats
    dense = Engine.from_pretrained(default_model_dir()).model.weight_bytes()
    assert stats.weight_bytes < dense / 5
    assert "uint4" in stats.kv_format


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=1.0, top_k=-2), "top_k"),
    (dict(temperature=1.0, top_p=0.0), "top_p"), (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_bad_generation_arguments(tiny, kwargs, match):
    with pytest.raises(RuntimeModelError, match=match):
        tiny.generate("x", **kwargs)


def test_empty_prompt_and_out_of_vocabulary_ids(tiny):
    with pytest.raises(RuntimeModelError, match="prompt 1 is empty"):
        tiny.generate(["a", ""])
    with pytest.raises(RuntimeModelError, match="token id 999 outside the vocabulary"):
        tiny.generate_ids([[1, 999]])


# ---- sampling filters against transformers' processors -----------------------------------------

@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 5, None), (1.3, None, 0.8), (1.0, 20, 0.5), (0.5, None, 0.95)])
def test_filters_match_transformers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(3)) * 3
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p:
        ref = TopPLogitsWarper(top_p)(None, ref)
    got = filter_logits(logits, SamplingParams(temperature, top_k, top_p))
    assert torch.equal(torch.isinf(got), torch.isinf(ref))
    torch.testing.assert_close(got[~torch.isinf(got)], ref[~torch.isinf(ref)], rtol=1e-6, atol=0)


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=0)
    drawn = sample(logits, params, params.generator())
    probs = torch.softmax(filter_logits(logits[:1], params), -1)[0].double()
    counts = torch.bincount(drawn, minlength=6).double()
    assert counts[probs == 0].sum() == 0  # filtered tokens never drawn
    sigma = (20000 * probs * (1 - probs)).sqrt()
    assert bool(((counts - 20000 * probs).abs() <= 5 * sigma + 1e-9).all()), (counts, 20000 * probs)


# ---- the op registry ---------------------------------------------------------------------------

def test_registered_backend_replaces_ops_without_touching_the_model(tiny):
    from lowbit.runtime import reference_ops

    calls = {"linear": 0}

    def counting_linear(x, weight, bias=None):
        calls["linear"] += 1
        return reference_ops.linear(x, weight, bias)

    saved = dict(ops_registry._IMPLS)
    try:
        ops_registry.register("linear", "lbtest")(counting_linear)
        with pytest.raises(BackendError, match="backend 'lbtest' has no implementation of kv_append, "
                                               "decode_attention, prefill_attention, rms_norm, add_rms_norm, rope, "
                                               "silu_mul"):
            ops_registry.resolve("lbtest")
        for op in (op for op in ops_registry.OP_NAMES if op != "linear"):
            ops_registry.register(op, "lbtest")(getattr(reference_ops, op))
        opset = ops_registry.resolve("lbtest")
        assert opset.describe().startswith("linear=lbtest")
        engine = Engine(tiny.model, tiny.tokenizer, tiny.kv_format, backend="lbtest")
        out = engine.generate(PROMPTS[0], max_new_tokens=4, stop_tokens=())
        assert out.token_ids == tiny.generate(PROMPTS[0], max_new_tokens=4, stop_tokens=()).token_ids
        assert calls["linear"] == 4 * (7 * tiny.model.config.num_layers + 1)  # 4 forward passes
        assert "linear=lbtest" in out.stats.backends
    finally:
        ops_registry._IMPLS.clear()
        ops_registry._IMPLS.update(saved)


@pytest.mark.parametrize("backend,own_pool", [("tvm", True), ("lbtest", False)])
def test_torch_runs_single_threaded_next_to_a_kernel_thread_pool(tiny, backend, own_pool):
    """Ops on a backend with its own CPU thread pool (TVM) make generation run torch's ops on one thread
    (its OpenMP workers would spin on the cores the pool needs); torch's setting is restored afterwards.
    Other backends leave torch's threads alone."""
    from lowbit.runtime import reference_ops

    seen = set()

    def watching_linear(x, weight, bias=None):
        seen.add(torch.get_num_threads())
        return reference_ops.linear(x, weight, bias)

    saved, saved_threads = dict(ops_registry._IMPLS), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for op in ops_registry.OP_NAMES:
            ops_registry.register(op, backend)(watching_linear if op == "linear" else getattr(reference_ops, op))
        engine = Engine(tiny.model, tiny.tokenizer, tiny.kv_format, backend=backend)
        assert engine.ops.torch_threads() == (1 if own_pool else None)
        assert engine.ops.torch_threads("cuda") is None
        engine.generate(PROMPTS[0], max_new_tokens=2, stop_tokens=())
        assert seen == ({1} if own_pool else {2})
        assert torch.get_num_threads() == 2
    finally:
        ops_registry._IMPLS.clear()
        ops_registry._IMPLS.update(saved)
        torch.set_num_threads(saved_threads)


def test_auto_uses_lowbit_kernels_on_cpu_and_the_reference_for_the_rest():
    opset = ops_registry.resolve("auto")
    assert dict(opset.backends) == {"linear": "tvm", "kv_append": "tvm", "decode_attention": "tvm",
                                    "prefill_attention": "torch", "rms_norm": "tvm", "add_rms_norm": "tvm",
                                    "rope": "tvm", "silu_mul": "tvm"}
    assert ops_registry.resolve(None).backends == opset.backends
    assert dict(ops_registry.resolve("auto", "cuda").backends)["linear"] == "triton"


# ---- tokenizers --------------------------------------------------------------------------------

def test_tokenizer_json_is_used_when_present(hf_checkpoint):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lowbit.runtime.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

    _, folder = hf_checkpoint("llama")
    engine = Engine.from_pretrained(folder)
    assert isinstance(engine.tokenizer, ByteTokenizer)
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, hello lowbit"] * 20,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    tok.save(str(folder / "tokenizer.json"))
    loaded = load_tokenizer(folder, engine.model.config)
    assert isinstance(loaded, HFTokenizer)
    ids = loaded.encode("hello lowbit")
    assert ids == tok.encode("hello lowbit").ids and len(ids) < len("hello lowbit")
    assert loaded.decode(ids) == "hello lowbit"
    engine = Engine.from_pretrained(folder)
    assert engine.generate("hello", max_new_tokens=2).outputs[0].prompt_ids == tuple(tok.encode("hello").ids)
