"""Model configuration: the subset of a Hugging Face ``config.json`` the runtime needs, validated.

Supported architectures are the Llama family: ``llama``, ``qwen2`` and ``mistral`` (decoder-only,
RMSNorm, SiLU-gated MLP, rotary embeddings, grouped-query attention). Differences handled here:

- qwen2 has biases on the q/k/v projections (never on o); llama has them (and on o) when
  ``attention_bias`` is true, and MLP biases when ``mlp_bias`` is true; mistral has none.
- Sliding-window attention (mistral's ``sliding_window``; qwen2's ``use_sliding_window`` with
  ``layer_types`` / ``max_window_layers``) is honoured per layer by the attention ops.
- RoPE scaling: ``default``, ``linear`` and ``llama3``, read from ``rope_parameters`` (transformers >= 5)
  or ``rope_scaling`` + ``rope_theta`` (older files).

>>> cfg = ModelConfig.from_dict({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
...     "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2})
>>> cfg.head_dim, cfg.num_kv_heads, cfg.rope.kind
(8, 2, 'default')
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lowbit.errors import RuntimeModelError

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "mistral")
_ARCH_BY_CLASS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
SUPPORTED_ROPE = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary-embedding parameters (HF semantics, non-interleaved "rotate half" form)."""

    kind: str = "default"
    theta: float = 10000.0
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Everything the runtime reads from ``config.json``; build with :meth:`from_dict` / :meth:`from_file`."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rope: RopeConfig
    sliding_windows: tuple[int | None, ...]  # one entry per layer; None = full attention
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    checkpoint_dtype: str | None

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read and validate ``config.json`` (a path to the file or to the model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise RuntimeModelError(
                f"no config.json at {path}",
                hint="pass the folder of a Hugging Face checkpoint (config.json + *.safetensors)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RuntimeModelError(f"{path} is not valid JSON: {err}",
                                    hint="restore config.json from the original checkpoint") from None
        if not isinstance(data, dict):
            raise RuntimeModelError(f"{path} holds a {type(data).__name__}, expected a JSON object")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> "ModelConfig":
        """Validate a config dictionary; every problem is a :class:`RuntimeModelError` naming ``source``."""
        arch = _architecture(data, source)

        def need(key: str) -> Any:
            if key not in data or data[key] is None:
                raise RuntimeModelError(f"{source}: missing required key {key!r} for a {arch} model",
                                        hint="compare with the config.json of the original checkpoint")
            return data[key]

        def positive_int(key: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RuntimeModelError(f"{source}: {key} must be a positive integer, got {value!r}")
            return value

        hidden = positive_int("hidden_size", need("hidden_size"))
        heads = positive_int("num_attention_heads", need("num_attention_heads"))
        kv_heads = positive_int("num_key_value_heads", data.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise RuntimeModelError(f"{source}: num_attention_heads ({heads}) is not a multiple of "
                                    f"num_key_value_heads ({kv_heads})")
        head_dim = data.get("head_dim") or (hidden // heads)
        head_dim = positive_int("head_dim", head_dim)
        if head_dim % 2:
            raise RuntimeModelError(f"{source}: head_dim must be even for rotary embeddings, got {head_dim}")
        act = data.get("hidden_act", "silu")
        if act != "silu":
            raise RuntimeModelError(f"{source}: hidden_act {act!r} is not supported (expected 'silu')")
        if data.get("pretraining_tp", 1) not in (1, None):
            raise RuntimeModelError(f"{source}: pretraining_tp={data['pretraining_tp']} is not supported",
                                    hint="re-save the checkpoint with pretraining_tp=1")
        layers = positive_int("num_hidden_layers", need("num_hidden_layers"))
        if arch == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
        elif arch == "llama":
            qkv_bias = o_bias = bool(data.get("attention_bias", False))
            mlp_bias = bool(data.get("mlp_bias", False))
        else:
            qkv_bias = o_bias = mlp_bias = False
        eos = data.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            architecture=arch,
            vocab_size=positive_int("vocab_size", need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=positive_int("intermediate_size", need("intermediate_size")),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=positive_int("max_position_embeddings",
                                                 data.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
            rope=_rope(data, source),
            sliding_windows=_sliding_windows(arch, data, layers, source),
            bos_token_id=data.get("bos_token_id"),
            eos_token_ids=eos_ids,
            checkpoint_dtype=data.get("dtype") or data.get("torch_dtype"),
        )

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Checkpoint tensor name -> shape, as Hugging Face names them (``lm_head`` absent when tied)."""
        h, d, i = self.hidden_size, self.head_dim, self.intermediate_size
        q, kv = self.num_heads * d, self.num_kv_heads * d
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, h),
                                           "model.norm.weight": (h,)}
        if not self.tie_word_embeddings:
            out["lm_head.weight"] = (self.vocab_size, h)
        for n in range(self.num_layers):
            p = f"model.layers.{n}."
            shapes = {
                "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
                "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i),
            }
            if self.qkv_bias:
                shapes.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                               "self_attn.v_proj.bias": (kv,)})
            if self.o_bias:
                shapes["self_attn.o_proj.bias"] = (h,)
            if self.mlp_bias:
                shapes.update({"mlp.gate_proj.bias": (i,), "mlp.up_proj.bias": (i,), "mlp.down_proj.bias": (h,)})
            out.update({p + k: v for k, v in shapes.items()})
        return out


def _architecture(data: Mapping[str, Any], source: str) -> str:
    model_type = data.get("model_type")
    if model_type in SUPPORTED_ARCHITECTURES:
        return str(model_type)
    for cls_name in data.get("architectures") or ():
        if cls_name in _ARCH_BY_CLASS and model_type is None:
            return _ARCH_BY_CLASS[cls_name]
    got = model_type if model_type is not None else (data.get("architectures") or "nothing")
    raise RuntimeModelError(
        f"{source}: unknown architecture {got!r}; expected model_type one of {', '.join(SUPPORTED_ARCHITECTURES)}",
        hint="lowbit's runtime runs Llama-family checkpoints (llama, qwen2, mistral)")


def _rope(data: Mapping[str, Any], source: str) -> RopeConfig:
    params = data.get("rope_parameters")
    if isinstance(params, dict) and "rope_type" not in params and "rope_theta" not in params:
        raise RuntimeModelError(f"{source}: per-layer-type rope_parameters are not supported")
    if params is None:  # transformers < 5: rope_theta at top level, optional rope_scaling
        params = dict(data.get("rope_scaling") or {})
        params.setdefault("rope_theta", data.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in SUPPORTED_ROPE:
        raise RuntimeModelError(f"{source}: rope type {kind!r} is not supported; expected one of "
                                f"{', '.join(SUPPORTED_ROPE)}")
    required = {"linear": ("factor",),
                "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
    missing = [k for k in required.get(kind, ()) if params.get(k) is None]
    if missing:
        raise RuntimeModelError(f"{source}: {kind} rope scaling needs {', '.join(map(repr, missing))}")
    if float(params.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise RuntimeModelError(f"{source}: partial_rotary_factor != 1 is not supported")
    return RopeConfig(
        kind=kind,
        theta=float(params.get("rope_theta", data.get("rope_theta", 10000.0))),
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=params.get("original_max_position_embeddings"),
    )


def _sliding_windows(arch: str, data: Mapping[str, Any], layers: int, source: str) -> tuple[int | None, ...]:
    window = data.get("sliding_window")
    if arch == "llama" or window is None:
        return (None,) * layers
    window = int(window)
    layer_types = data.get("layer_types")
    if layer_types is not None:
        if len(layer_types) != layers:
            raise RuntimeModelError(f"{source}: layer_types has {len(layer_types)} entries, expected "
                                    f"num_hidden_layers={layers}")
        return tuple(window if t == "sliding_attention" else None for t in layer_types)
    if arch == "qwen2":
        if not data.get("use_sliding_window", False):
            return (None,) * layers
        first = int(data.get("max_window_layers", layers))
        return tuple(window if n >= first else None for n in range(layers))
    return (window,) * layers  # mistral: every layer
