"""``lowbit.runtime.Engine``: load a checkpoint, quantize it, and generate text for a batch of prompts.

>>> from lowbit.runtime import Engine
>>> engine = Engine.from_pretrained(weights="u4", group_size=64, kv="u8")   # the shipped tiny model
>>> result = engine.generate(["Beautiful is better than"], max_new_tokens=8)
>>> result.texts[0]                                                       # doctest: +SKIP
' ugly.\\nExp'
>>> result.stats.decode_tokens_per_s > 0
True

A generate call prefills every prompt (a static batch: prompts of different lengths, packed without
padding), then decodes one token per unfinished sequence per step until each hits a stop token, its
``max_new_tokens`` limit or the model's context. The :class:`GenerationResult` carries the texts, token
ids, why each sequence stopped, and speed: prefill and decode tokens/s and the achieved bandwidth of
decode (bytes a step must read -- every weight once, one embedding row per sequence, the KV cache of
every active sequence -- divided by the step's time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from lowbit.errors import RuntimeModelError
from lowbit.kvcache import KVCacheFormat
from lowbit.lowering.target import torch_threads

from . import ops as ops_registry
from .loader import load_model
from .model import Transformer
from .paged_cache import PagedKVCache
from .sampling import SamplingParams, sample
from .tokenizer import Tokenizer, load_tokenizer
from .weights import WeightPolicy, canonical_dtype


def default_model_dir() -> Path:
    """The shipped tiny Llama (``lowbit/models/tiny-llama``), trained by ``scripts/train_tiny.py``."""
    import lowbit

    return Path(lowbit.__file__).resolve().parent / "models" / "tiny-llama"


@dataclass(frozen=True)
class SequenceOutput:
    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]  # generated tokens (a stop token included when one ended the sequence)
    text: str  # decoded generated text (special tokens dropped)
    finish_reason: str  # "stop", "length" (max_new_tokens) or "context" (model context full)


@dataclass(frozen=True)
class GenerationStats:
    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_steps: int
    decode_seconds: float
    decode_bytes: int  # bytes all decode steps had to read (weights + embeddings rows + KV cache)
    weight_bytes: int
    kv_format: str
    backends: str

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def bytes_per_decode_step(self) -> float:
        return self.decode_bytes / self.decode_steps if self.decode_steps else 0.0

    @property
    def bandwidth_gb_s(self) -> float:
        """Achieved decode bandwidth in GB/s (1e9 bytes): bytes read / decode time."""
        return self.decode_bytes / self.decode_seconds / 1e9 if self.decode_seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"prefill {self.prefill_tokens} tok in {self.prefill_seconds * 1e3:.1f} ms "
                f"({self.prefill_tokens_per_s:.1f} tok/s); decode {self.decode_tokens} tok in "
                f"{self.decode_seconds * 1e3:.1f} ms ({self.decode_tokens_per_s:.1f} tok/s, "
                f"{self.bytes_per_decode_step / 1e6:.3f} MB/step, {self.bandwidth_gb_s:.3f} GB/s); "
                f"weights {self.weight_bytes / 1e6:.3f} MB; KV {self.kv_format}; ops {self.backends}")


@dataclass(frozen=True)
class GenerationResult:
    outputs: tuple[SequenceOutput, ...]
    stats: GenerationStats

    @property
    def texts(self) -> list[str]:
        return [o.text for o in self.outputs]

    @property
    def token_ids(self) -> list[tuple[int, ...]]:
        return [o.token_ids for o in self.outputs]


@dataclass
class Engine:
    """A loaded model, its tokenizer, the op backend and the KV-cache configuration."""

    model: Transformer
    tokenizer: Tokenizer
    kv_format: KVCacheFormat
    backend: str = "auto"
    num_pages: int | None = None  # fixed cache size; None sizes the cache for each generate call
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    policy: WeightPolicy | None = None  # how the weights were stored (for reports)
    cuda_graphs: bool = True  # on a GPU, replay each decode step as a CUDA graph (lowbit.runtime.cuda_graphs)
    cpu_graphs: bool = True  # on a CPU, replay each decode step's recorded launches (lowbit.runtime.cpu_graphs)

    def __post_init__(self) -> None:
        self.ops = ops_registry.resolve(self.backend, str(self.device))
        self._cache: PagedKVCache | None = None

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, *, weights: str = "float32",
                        group_size: int = 128, overrides: Mapping[str, str] | None = None,
                        zero_point: bool | None = None, kv: str = "float16", kv_group_size: int | None = None,
                        kv_key_grouping: str = "token", page_size: int = 16, num_pages: int | None = None,
                        backend: str = "auto", activations: str = "float32",
                        device: str | torch.device = "cpu", progress: bool = False,
                        cuda_graphs: bool = True, cpu_graphs: bool = True) -> "Engine":
        """Load ``model_dir`` (default: the shipped tiny model) with weights stored as ``weights``
        (``"float32"``, ``"f16"``, ``"bf16"`` or a 1-8 bit type like ``"u4"``, ``"i3"``, ``"f4e2m1"``) in
        groups of ``group_size``, per-layer ``overrides`` (glob -> spec, e.g. ``{"lm_head": "f16"}``) and a
        KV cache of type ``kv`` in pages of ``page_size`` tokens; ``kv_key_grouping="channel"`` quantizes
        the keys per channel over each page (KIVI-style, :mod:`lowbit.kvcache` format ``paged-kv/v2``).
        ``activations``: the dtype of the linears' inputs (``"float32"``, ``"bfloat16"``, ``"float16"``).
        ``cuda_graphs``: on a CUDA ``device``, decode steps replay CUDA graphs (the same kernels on the same
        inputs: the same logits, without the launches' Python costs); ``cpu_graphs``: on a CPU, likewise decode
        steps replay their recorded kernel launches and torch ops (:mod:`lowbit.runtime.cpu_graphs`)."""
        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        policy = WeightPolicy.parse(weights, group_size=group_size, overrides=overrides, zero_point=zero_point)
        model = load_model(model_dir, policy, device=device, progress=progress, activations=activations)
        tokenizer = load_tokenizer(model_dir, model.config)
        cfg = model.config
        fmt = KVCacheFormat(canonical_dtype(kv), num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                            page_size=page_size, group_size=kv_group_size, key_grouping=kv_key_grouping)
        return cls(model, tokenizer, fmt, backend=backend, num_pages=num_pages, device=torch.device(device),
                   policy=policy, cuda_graphs=cuda_graphs, cpu_graphs=cpu_graphs)

    def describe_weights(self) -> str:
        """``"uint4 g128 zero-point (lm_head: float16)"``, or ``"custom"`` for an engine built by hand."""
        if self.policy is None:
            return "custom"
        text = self.policy.default.describe()
        if self.policy.overrides:
            text += " (" + ", ".join(f"{p}: {s.describe()}" for p, s in self.policy.overrides) + ")"
        return text

    # ---- caches ----------------------------------------------------------------------------------
    def new_cache(self, num_pages: int) -> PagedKVCache:
        return PagedKVCache(self.kv_format, self.model.config.num_layers, num_pages, self.device)

    def _cache_for(self, token_counts: Sequence[int]) -> PagedKVCache:
        """The cache for a generation: the engine's own, emptied, when it has the pages (a fixed ``num_pages``, or
        the last one sized for a call at least as big: its captured decode graphs stay valid), else a new one."""
        need = self.num_pages
        if need is None:
            need = max(1, sum(-(-n // self.kv_format.page_size) for n in token_counts))
        if self._cache is None or self._cache.num_pages < need:
            self._cache = None                  # (its pages are freed before the new ones are allocated)
            self._cache = self.new_cache(need)
        self._cache.reset()
        return self._cache

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str], *, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_tokens: Sequence[int] | None = None) -> GenerationResult:
        """Generate for one prompt or a batch; ``stop_tokens`` defaults to the model's EOS ids."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.generate_ids([self.tokenizer.encode(p) for p in prompts], max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                 stop_tokens=stop_tokens)

    def generate_ids(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32,
                     temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                     seed: int | None = None, stop_tokens: Sequence[int] | None = None) -> GenerationResult:
        """:meth:`generate` on token ids."""
        params = SamplingParams(temperature, top_k, top_p, seed)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise RuntimeModelError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        prompts = [list(map(int, p)) for p in prompts]
        self._check_prompts(prompts)
        stops = set(self.model.config.eos_token_ids if stop_tokens is None else stop_tokens)
        context = self.model.config.max_position_embeddings
        # n generated tokens need n - 1 of them fed back: positions up to len(p) + n - 2 < context.
        limits = [min(max_new_tokens, context - len(p) + 1) for p in prompts]
        cache = self._cache_for([len(p) + max(n - 1, 0) for p, n in zip(prompts, limits)])
        generator = params.generator(self.device)
        seq_ids = list(range(len(prompts)))
        outputs: list[list[int]] = [[] for _ in prompts]
        reasons: list[str | None] = [None] * len(prompts)

        def take(rows: list[int], logits: torch.Tensor) -> None:
            chosen = sample(logits, params, generator).tolist()
            for row, tok in zip(rows, chosen):
                outputs[row].append(tok)
                if tok in stops:
                    reasons[row] = "stop"
                elif len(outputs[row]) >= max_new_tokens:
                    reasons[row] = "length"
                elif len(outputs[row]) >= limits[row]:
                    reasons[row] = "context"

        start = time.perf_counter()
        with torch.inference_mode(), torch_threads(self.ops.torch_threads(str(self.device))):
            logits = self.model.prefill(self.ops, cache, seq_ids, prompts)
            if max_new_tokens > 0:
                take(seq_ids, torch.stack(logits))
            else:
                reasons = ["length"] * len(prompts)
            self._sync()
            prefill_s = time.perf_counter() - start
            decode_s, decode_tokens, decode_bytes, steps = 0.0, 0, 0, 0
            weight_bytes = self.model.weight_bytes()
            while True:
                active = [s for s in seq_ids if reasons[s] is None]
                if not active:
                    break
                t0 = time.perf_counter()
                logits = self.model.decode(self.ops, cache, active, [outputs[s][-1] for s in active],
                                           cuda_graphs=self.cuda_graphs, cpu_graphs=self.cpu_graphs)
                take(active, logits)
                self._sync()
                decode_s += time.perf_counter() - t0
                decode_tokens += len(active)
                steps += 1
                decode_bytes += self.model.decode_bytes(len(active), weight_bytes) + cache.bytes_read(active)
        for s in seq_ids:
            cache.free(s)
        stats = GenerationStats(
            prefill_tokens=sum(map(len, prompts)), prefill_seconds=prefill_s, decode_tokens=decode_tokens,
            decode_steps=steps, decode_seconds=decode_s, decode_bytes=decode_bytes,
            weight_bytes=weight_bytes, kv_format=self.kv_format.describe(),
            backends=self.ops.describe())
        outs = tuple(SequenceOutput(tuple(p), tuple(o), self.tokenizer.decode(o), r or "length")
                     for p, o, r in zip(prompts, outputs, reasons))
        return GenerationResult(outs, stats)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def token_logits(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Teacher-forced logits ``[len, vocab]`` at every position of each sequence (one batched prefill)."""
        sequences = [list(map(int, s)) for s in sequences]
        self._check_prompts(sequences)
        cache = self._cache_for([len(s) for s in sequences])
        ids = list(range(len(sequences)))
        with torch.inference_mode():
            out = self.model.prefill(self.ops, cache, ids, sequences, all_logits=True)
        for s in ids:
            cache.free(s)
        return out

    def _check_prompts(self, prompts: Sequence[Sequence[int]]) -> None:
        if not prompts:
            raise RuntimeModelError("no prompts given", hint="pass at least one prompt")
        cfg = self.model.config
        for i, p in enumerate(prompts):
            if not p:
                raise RuntimeModelError(f"prompt {i} is empty (0 tokens)", hint="give every prompt some text")
            if len(p) > cfg.max_position_embeddings:
                raise RuntimeModelError(
                    f"prompt {i} has {len(p)} tokens, longer than the model's context "
                    f"(max_position_embeddings={cfg.max_position_embeddings})",
                    hint="shorten the prompt")
            bad = [t for t in p if not 0 <= t < cfg.vocab_size]
            if bad:
                raise RuntimeModelError(f"prompt {i} has token id {bad[0]} outside the vocabulary "
                                        f"[0, {cfg.vocab_size})")
