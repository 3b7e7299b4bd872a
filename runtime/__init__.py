"""lowbit.runtime: a minimal decode runtime for Llama-family models on lowbit's kernels.

Load a Hugging Face checkpoint (llama, qwen2, mistral; config.json + safetensors), quantize its weights
at load time, keep a paged (optionally low-bit) KV cache, and generate for a static batch of prompts:

>>> from lowbit.runtime import Engine
>>> engine = Engine.from_pretrained(weights="u4", group_size=64)     # the shipped tiny Llama
>>> engine.generate("Beautiful is better than", max_new_tokens=6).texts   # doctest: +SKIP
[' ugly.']

Modules: ``config`` (config.json), ``loader`` (safetensors), ``weights`` (per-layer storage policy),
``model`` (the transformer), ``ops`` (the op boundary and its backend registry), ``reference_ops`` (the
torch reference ops), ``paged_cache`` (page allocator; the page format is :mod:`lowbit.kvcache`),
``sampling``, ``tokenizer``, ``engine``, ``evaluate`` (perplexity, greedy agreement),
``generate_command`` (``lowbit generate``). Importing this package is cheap; torch loads on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, tuple[str, str]] = {
    "Engine": ("lowbit.runtime.engine", "Engine"),
    "GenerationResult": ("lowbit.runtime.engine", "GenerationResult"),
    "GenerationStats": ("lowbit.runtime.engine", "GenerationStats"),
    "SequenceOutput": ("lowbit.runtime.engine", "SequenceOutput"),
    "default_model_dir": ("lowbit.runtime.engine", "default_model_dir"),
    "load_model": ("lowbit.runtime.loader", "load_model"),
    "ModelConfig": ("lowbit.runtime.config", "ModelConfig"),
    "WeightPolicy": ("lowbit.runtime.weights", "WeightPolicy"),
    "WeightSpec": ("lowbit.runtime.weights", "WeightSpec"),
    "PagedKVCache": ("lowbit.runtime.paged_cache", "PagedKVCache"),
    "SamplingParams": ("lowbit.runtime.sampling", "SamplingParams"),
    "perplexity": ("lowbit.runtime.evaluate", "perplexity"),
    "greedy_agreement": ("lowbit.runtime.evaluate", "greedy_agreement"),
    "heldout_text": ("lowbit.runtime.evaluate", "heldout_text"),
    "quality_report": ("lowbit.runtime.evaluate", "quality_report"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lowbit.runtime' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = list(_LAZY)
