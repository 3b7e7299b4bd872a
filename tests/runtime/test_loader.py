"""Loading checkpoints: dtypes, sharding, progress, and a clear RuntimeModelError for every broken input."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowbit.errors import RuntimeModelError
from lowbit.quant import QuantizedTensor
from lowbit.runtime import Engine, ModelConfig, WeightPolicy, load_model
from lowbit.runtime.model import FUSED_LINEARS, Transformer
from lowbit.runtime.tokenizer import load_tokenizer
from lowbit.runtime.ops import resolve
from lowbit.runtime.paged_cache import PagedKVCache
from lowbit.kvcache import KVCacheFormat

IDS = [3, 14, 15, 92, 65, 35, 89, 79]


def prefill_logits(model, ids=IDS):
    cfg = model.config
    cache = PagedKVCache(KVCacheFormat("f32", cfg.num_kv_heads, cfg.head_dim, page_size=8), cfg.num_layers, 4)
    return model.prefill(resolve("torch"), cache, [0], [ids], all_logits=True)[0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints(dtype, hf, hf_checkpoint, tmp_path):
    hf_model, folder = hf_checkpoint("llama", dtype=dtype)
    assert json.loads((folder / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    stored = load_file(str(folder / "model.safetensors"))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == dtype
    # transformers reads the same rounded weights back and computes in fp32 (a model cast with .to() would
    # also have rounded its rotary inv_freq buffer, which no checkpoint stores)
    reference = type(hf_model).from_pretrained(folder, dtype=torch.float32).eval()
    ref = hf.logits(reference, IDS)
    torch.testing.assert_close(prefill_logits(load_model(folder)), ref, rtol=0, atol=1e-4 * max(1, float(ref.abs().max())))


def test_sharded_checkpoint_equals_single_file(hf_checkpoint):
    _, single = hf_checkpoint("qwen2", seed=3)
    _, sharded = hf_checkpoint("qwen2", seed=3, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    torch.testing.assert_close(prefill_logits(load_model(sharded)), prefill_logits(load_model(single)), rtol=0, atol=0)


def test_progress_bar_while_loading(hf_checkpoint, capsys):
    _, folder = hf_checkpoint("llama")
    load_model(folder, WeightPolicy.parse("u4", group_size=32), progress=True)
    assert "loading model" in capsys.readouterr().err


def test_quantized_weights_are_stored_packed(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    model = load_model(folder, WeightPolicy.parse("i4", group_size=32, overrides={"lm_head": "f16"}))
    qkv = model.weights.layers[0].linears["qkv_proj"]          # q, k, v stacked (fuse_linears)
    rows = (model.config.num_heads + 2 * model.config.num_kv_heads) * model.config.head_dim
    assert qkv.dtype.name == "int4" and qkv.group_size == 32 and qkv.packed.shape == (rows, 32)
    assert model.weights.lm_head.dtype == torch.float16
    dense = load_model(folder).weight_bytes()
    assert model.weight_bytes() < dense / 4


def _rows(w, start, stop):
    return QuantizedTensor(w.packed[start:stop], w.scales[start:stop], None if w.zeros is None else
                           w.zeros[start:stop], w.dtype, w.group_size, (stop - start, w.shape[1]), w.format)


def _unstacked(model):
    """The model with each stacked weight given back to its parts (rows of the stack)."""
    cfg = model.config
    widths = {"qkv_proj": (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim,
                           cfg.num_kv_heads * cfg.head_dim),
              "gate_up_proj": (cfg.intermediate_size, cfg.intermediate_size)}
    layers = []
    for layer in model.weights.layers:
        linears, biases = dict(layer.linears), dict(layer.biases)
        for fused, names in FUSED_LINEARS.items():
            w, b = linears.pop(fused), biases.pop(fused)
            start = 0
            for name, width in zip(names, widths[fused]):
                linears[name] = _rows(w, start, start + width)
                biases[name] = None if b is None else b[start:start + width]
                start += width
        layers.append(dataclasses.replace(layer, linears=linears, biases=biases))
    weights = dataclasses.replace(model.weights, layers=tuple(layers))
    return Transformer(model.config, weights, activations=model.activations)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_stacked_projections_give_the_logits_of_separate_ones(hf_checkpoint, arch):
    """q/k/v and gate/up load stacked (one matmul each); the same weights held apart give the same logits (up
    to the summation order a matmul of other width may take) and tokens. A per-layer override that stores
    one part differently keeps its group apart."""
    _, folder = hf_checkpoint(arch)
    model = load_model(folder, WeightPolicy.parse("u4", group_size=32), activations="bfloat16")
    assert {"qkv_proj", "gate_up_proj"} <= set(model.weights.layers[0].linears)
    apart = _unstacked(model)
    assert "qkv_proj" not in apart.weights.layers[0].linears
    torch.testing.assert_close(prefill_logits(model), prefill_logits(apart), rtol=1e-5, atol=1e-5)
    tokenizer = load_tokenizer(folder, model.config)
    fmt = KVCacheFormat("int8", num_kv_heads=model.config.num_kv_heads, head_dim=model.config.head_dim)
    runs = [Engine(m, tokenizer, fmt).generate_ids([IDS], max_new_tokens=6, stop_tokens=[]) for m in (model, apart)]
    assert runs[0].token_ids == runs[1].token_ids
    mixed = load_model(folder, WeightPolicy.parse("u4", group_size=32, overrides={"*.k_proj": "u8"}))
    assert {"q_proj", "k_proj", "v_proj", "gate_up_proj"} <= set(mixed.weights.layers[0].linears)


# ---- broken inputs ---------------------------------------------------------------------------------

def expect_error(folder, *fragments, hint=None):
    with pytest.raises(RuntimeModelError) as info:
        load_model(folder)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    if hint is not None:
        assert info.value.hint and hint in info.value.hint, info.value.hint
    return info.value


def test_missing_folder_and_missing_config(tmp_path, hf_checkpoint):
    expect_error(tmp_path / "nope", "does not exist")
    _, folder = hf_checkpoint("llama")
    (folder / "config.json").unlink()
    expect_error(folder, "no config.json", str(folder), hint="config.json")


def test_unknown_architecture(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "gpt2", ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    expect_error(folder, "unknown architecture 'gpt2'", "llama, qwen2, mistral", hint="Llama-family")


def test_config_missing_key_and_bad_json(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["hidden_size"]
    (folder / "config.json").write_text(json.dumps(cfg))
    expect_error(folder, "missing required key 'hidden_size'")
    (folder / "config.json").write_text("{not json")
    expect_error(folder, "not valid JSON")


def test_unsupported_rope_type():
    with pytest.raises(RuntimeModelError, match="rope type 'yarn' is not supported"):
        ModelConfig.from_dict({"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
                               "num_hidden_layers": 1, "num_attention_heads": 2,
                               "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}})


def rewrite(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_missing_tensor(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    rewrite(folder, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    expect_error(folder, "tensor 'model.layers.1.mlp.down_proj.weight' is missing from model.safetensors",
                 hint="does not match config.json")


def test_misnamed_tensor_suggests_the_close_name(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    rewrite(folder, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.weights",
                                            t.pop("model.layers.0.self_attn.q_proj.weight")))
    expect_error(folder, "'model.layers.0.self_attn.q_proj.weight' is missing",
                 hint="'model.layers.0.self_attn.q_proj.weights': a misnamed tensor?")


def test_shape_mismatch(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    rewrite(folder, lambda t: t.__setitem__("model.layers.0.mlp.gate_proj.weight", torch.zeros(95, 64)))
    expect_error(folder, "'model.layers.0.mlp.gate_proj.weight' in model.safetensors has shape [95, 64], "
                         "expected [96, 64]")


def test_integer_tensor_is_refused(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    rewrite(folder, lambda t: t.__setitem__("model.norm.weight", torch.ones(64, dtype=torch.int8)))
    expect_error(folder, "'model.norm.weight' in model.safetensors has dtype I8; expected F32, F16 or BF16")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(damage, hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    expect_error(folder, f"{path} is not a readable safetensors file", hint="corrupt or truncated")


def test_sharded_checkpoint_with_a_missing_shard(hf_checkpoint):
    _, folder = hf_checkpoint("llama", max_shard_size="40KB")
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    expect_error(folder, f"names shard {shard.name}, which does not exist")


def test_no_weights_at_all(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    (folder / "model.safetensors").unlink()
    expect_error(folder, "no safetensors weights")


def test_group_size_that_does_not_divide(hf_checkpoint):
    _, folder = hf_checkpoint("llama")
    with pytest.raises(RuntimeModelError, match=r"cannot quantize lm_head \(shape \(320, 64\)\) as uint4 g48 "
                                                r"zero-point: group_size 48 does not divide K = 64") as info:
        load_model(folder, WeightPolicy.parse("u4", group_size=48))
    assert "{'lm_head': 'f16'}" in info.value.hint


def test_prompt_longer_than_context_and_full_cache(hf_checkpoint):
    _, folder = hf_checkpoint("llama", max_position_embeddings=16)
    engine = Engine.from_pretrained(folder, kv="f16", page_size=4)
    with pytest.raises(RuntimeModelError, match="prompt 0 has 17 tokens, longer than the model's context"):
        engine.generate_ids([list(range(17))], max_new_tokens=1)
    small = Engine.from_pretrained(folder, kv="f16", page_size=4, num_pages=3)
    with pytest.raises(RuntimeModelError, match="KV cache full"):
        small.generate_ids([list(range(8)), list(range(5))], max_new_tokens=2)
    # at exactly the context, generation stops early with reason "context"
    out = engine.generate_ids([list(range(14))], max_new_tokens=10, stop_tokens=()).outputs[0]
    assert out.finish_reason == "context" and len(out.token_ids) == 3


def test_unknown_weight_type_is_a_lowbit_error(hf_checkpoint):
    from lowbit.errors import LowbitError

    _, folder = hf_checkpoint("llama")
    with pytest.raises(LowbitError, match="unknown dtype 'u44'"):
        Engine.from_pretrained(folder, weights="u44")
