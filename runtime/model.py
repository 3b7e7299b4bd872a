"""The Llama-family transformer, written against the op boundary (:mod:`lowbit.runtime.ops`).

:class:`Transformer` holds the stored weights (dense tensors or ``QuantizedTensor`` s) and runs batched
prefill and decode steps on a :class:`~lowbit.runtime.paged_cache.PagedKVCache`. Every matmul goes
through ``ops.linear``, every cache access through ``ops.kv_append`` / ``ops.*_attention`` and the norms, rotary
embeddings and gated SiLU through ``ops.rms_norm`` / ``ops.rope`` / ``ops.silu_mul``, so swapping the backend never
touches this file. The residual stream, norms, attention and logits are computed in fp32; the inputs of the
decoder layers' linears are ``activations`` (fp32 by default; bf16 as LLM serving stacks run them, which lets
lowbit's CPU kernels multiply bf16 pairs exactly with ``vdpbf16ps``): the norms and attention round their
results once to that type, the linears' outputs are rounded to it too (as a bf16 serving stack's are) and
widened exactly where fp32 reads them.

Prefill packs the new tokens of all sequences into one ``[T_total, hidden]`` batch (no padding) for the
linears; attention then runs per sequence (varlen) over the cache.

>>> # model = load_model("lowbit/models/tiny-llama"); see lowbit.runtime.Engine for the usual entry point
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lowbit.errors import RuntimeModelError

from .config import ModelConfig
from .ops import OpSet
from .paged_cache import PagedKVCache
from .rope import Rotary
from .weights import weight_nbytes

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: projections that read one input, stored as one weight where their weights stack
#: (:func:`lowbit.quant.stack_rows`): one matmul instead of three (two), and RoPE once over q and k
FUSED_LINEARS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
#: dtypes the decoder layers' linears may take their inputs in (``Transformer(activations=...)``)
ACTIVATION_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_activations(activations: str) -> None:
    """Raise :class:`RuntimeModelError` unless ``activations`` names one of :data:`ACTIVATION_DTYPES`."""
    if activations not in ACTIVATION_DTYPES:
        raise RuntimeModelError(f"activations must be one of {', '.join(ACTIVATION_DTYPES)}; got {activations!r}",
                                hint="bfloat16 rounds the linears' inputs (as bf16 serving does); float32 keeps "
                                     "them exact")


def fuse_linears(linears: dict[str, Any], biases: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A layer's ``linears`` and ``biases`` with each group of :data:`FUSED_LINEARS` replaced by one entry,
    where the quantized weights stack and the biases are all present or all None (dense weights, or weights
    stored differently by a per-layer override, stay apart). The decoder takes either form.

    Why: each matmul launch has a fixed cost, and a decode step's k and v read only ~0.3 MB each (1B model,
    int4); stacked, q, k and v take 2.5 instead of 3.3 ms per step over the 22 layers (int4 x bf16, 2
    threads), gate and up 9.5 instead of 9.9."""
    from lowbit.quant import stack_rows

    linears, biases = dict(linears), dict(biases)
    for fused, names in FUSED_LINEARS.items():
        stacked = stack_rows([linears[name] for name in names])
        parts = [biases[name] for name in names]
        if stacked is None or (any(b is None for b in parts) and not all(b is None for b in parts)):
            continue
        for name in names:
            del linears[name], biases[name]
        linears[fused] = stacked
        biases[fused] = None if parts[0] is None else torch.cat(parts)
    return linears, biases


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer. ``linears[name]`` is a stored weight, ``biases[name]`` an fp32 tensor or None; names
    from :data:`LINEAR_NAMES`, or a :data:`FUSED_LINEARS` name in place of its group (:func:`fuse_linears`)."""

    input_norm: torch.Tensor
    post_attention_norm: torch.Tensor
    linears: dict[str, Any]
    biases: dict[str, torch.Tensor | None]


@dataclass(frozen=True)
class ModelWeights:
    embed: torch.Tensor  # [vocab, hidden], fp32 (rows are gathered, never multiplied)
    layers: tuple[LayerWeights, ...]
    norm: torch.Tensor
    lm_head: Any  # stored weight [vocab, hidden]


class Transformer:
    """A loaded model: config + weights, with :meth:`prefill` and :meth:`decode`."""

    def __init__(self, config: ModelConfig, weights: ModelWeights, activations: str = "float32"):
        check_activations(activations)
        self.config = config
        self.weights = weights
        self.activations = activations
        self._act_dtype = ACTIVATION_DTYPES[activations]
        self.rotary = Rotary(config.rope, config.head_dim)
        self.scale = config.head_dim ** -0.5

    # ---- public steps ----------------------------------------------------------------------------
    def prefill(self, ops: OpSet, cache: PagedKVCache, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]],
                *, all_logits: bool = False) -> list[torch.Tensor]:
        """Append ``tokens[b]`` to sequence ``seq_ids[b]`` (a new prompt or a continuation chunk).

        Returns per sequence the logits ``[vocab]`` of its last new token, or ``[len(tokens[b]), vocab]``
        for every new token when ``all_logits``.
        """
        if len(seq_ids) != len(tokens) or not seq_ids:
            raise RuntimeModelError(f"prefill needs one token list per sequence, got {len(seq_ids)} ids "
                                    f"and {len(tokens)} token lists")
        lens = [len(t) for t in tokens]
        if min(lens) == 0:
            raise RuntimeModelError("prefill got an empty token list", hint="every prompt needs >= 1 token")
        starts = [cache.length(s) for s in seq_ids]
        self._check_context(seq_ids, starts, lens)
        slots = cache.reserve(dict(zip(seq_ids, lens)))
        device = cache.device
        flat = torch.tensor([t for seq in tokens for t in seq], dtype=torch.int64, device=device)
        positions = torch.cat([torch.arange(s, s + n, dtype=torch.int64) for s, n in zip(starts, lens)]).to(device)
        slot_vec = torch.cat([slots[s] for s in seq_ids]).to(device=device, dtype=torch.int32)   # (once, not per layer)
        tables = cache.block_tables(seq_ids)
        starts_t = torch.tensor(starts, dtype=torch.int32, device=device)
        lens_t = torch.tensor(lens, dtype=torch.int32, device=device)

        def attend(layer_idx: int, q: torch.Tensor) -> torch.Tensor:
            return ops.prefill_attention(q, cache.layers[layer_idx], tables, starts_t, lens_t, scale=self.scale,
                                         window=self.config.sliding_windows[layer_idx])

        hidden = self._forward(ops, cache, flat, positions, slot_vec, attend)
        if all_logits:
            logits = self._logits(ops, hidden)
            return list(torch.split(logits, lens))
        last = torch.cumsum(torch.tensor(lens), 0) - 1
        return list(self._logits(ops, hidden[last.to(device)]))

    def decode(self, ops: OpSet, cache: PagedKVCache, seq_ids: Sequence[int], tokens: Sequence[int], *,
               cuda_graphs: bool = False, cpu_graphs: bool = False) -> torch.Tensor:
        """Append one token per sequence and return the next-token logits ``[B, vocab]``. ``cuda_graphs`` (a CUDA
        cache): replay the step as a CUDA graph captured per batch size (:mod:`lowbit.runtime.cuda_graphs`);
        ``cpu_graphs`` (a CPU cache, the ``tvm`` backend's ops): replay the step's launches and torch ops recorded
        per batch size (:mod:`lowbit.runtime.cpu_graphs`)."""
        starts = [cache.length(s) for s in seq_ids]
        self._check_context(seq_ids, starts, [1] * len(seq_ids))
        slots = cache.reserve({s: 1 for s in seq_ids})
        device = cache.device
        flat = torch.as_tensor(list(tokens), dtype=torch.int64).to(device)
        positions = torch.tensor(starts, dtype=torch.int64, device=device)
        slot_vec = torch.cat([slots[s] for s in seq_ids]).to(device=device, dtype=torch.int32)   # (once, not per layer)
        tables = cache.block_tables(seq_ids)
        lengths = cache.lengths(seq_ids)

        def step(flat: torch.Tensor, positions: torch.Tensor, slot_vec: torch.Tensor, tables: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
            def attend(layer_idx: int, q: torch.Tensor) -> torch.Tensor:
                return ops.decode_attention(q, cache.layers[layer_idx], tables, lengths, scale=self.scale,
                                            window=self.config.sliding_windows[layer_idx], out_dtype=self._act_dtype)

            return self._logits(ops, self._forward(ops, cache, flat, positions, slot_vec, attend))

        if cuda_graphs and device.type == "cuda":
            from .cuda_graphs import graphed_decode

            return graphed_decode(step, cache.decode_graphs, (id(self), id(ops)), flat, positions, slot_vec, tables,
                                  lengths)
        if cpu_graphs and device.type == "cpu":
            from .cpu_graphs import recorded_decode, replayable

            if replayable(ops):
                return recorded_decode(step, cache.decode_graphs, (id(self), id(ops)), flat, positions, slot_vec,
                                       tables, lengths)
        return step(flat, positions, slot_vec, tables, lengths)

    # ---- accounting ------------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        """Bytes of every stored matmul weight (what one decode step reads), plus norms."""
        total = weight_nbytes(self.weights.lm_head)
        total += self.weights.norm.numel() * 4
        for layer in self.weights.layers:
            total += sum(weight_nbytes(w) for w in layer.linears.values())
            total += sum(b.numel() * 4 for b in layer.biases.values() if b is not None)
            total += (layer.input_norm.numel() + layer.post_attention_norm.numel()) * 4
        return total

    def decode_bytes(self, batch: int, weight_bytes: int | None = None) -> int:
        """Bytes one decode step reads besides the KV cache: all weights once, one embedding row per sequence.
        ``weight_bytes``: :meth:`weight_bytes` when the caller has it (a generation loop asks every step; the sum
        over every stored weight costs ~0.14 ms of Python for a 1B model)."""
        weights = self.weight_bytes() if weight_bytes is None else weight_bytes
        return weights + batch * self.config.hidden_size * self.weights.embed.element_size()

    # ---- internals -------------------------------------------------------------------------------
    def _check_context(self, seq_ids: Sequence[int], starts: Sequence[int], lens: Sequence[int]) -> None:
        limit = self.config.max_position_embeddings
        for seq, start, n in zip(seq_ids, starts, lens):
            if start + n > limit:
                raise RuntimeModelError(
                    f"sequence {seq} would hold {start + n} tokens ({start} cached + {n} new); the model's "
                    f"context is max_position_embeddings={limit}",
                    hint="shorten the prompt or lower max_new_tokens")

    def _forward(self, ops: OpSet, cache: PagedKVCache, tokens: torch.Tensor, positions: torch.Tensor,
                 slots: torch.Tensor, attend) -> torch.Tensor:
        cfg = self.config
        n = tokens.shape[0]
        x = self.weights.embed[tokens].to(torch.float32)
        cos_sin = self.rotary.cos_sin(positions)
        out = None          # the last block's output, added to the residual stream x by the norm that follows
        for idx, layer in enumerate(self.weights.layers):
            lin, bias = layer.linears, layer.biases
            x, h = self._add_norm(ops, x, out, layer.input_norm, self._act_dtype)    # h: once for 3 linears
            if "qkv_proj" in lin:
                qkv = self._linear(ops, h, lin["qkv_proj"], bias["qkv_proj"])
                heads = cfg.num_heads + cfg.num_kv_heads
                qk = ops.rope(qkv[:, :heads * cfg.head_dim].view(n, heads, cfg.head_dim), *cos_sin, torch.float32)
                q, k = qk[:, :cfg.num_heads], qk[:, cfg.num_heads:]
                v = qkv[:, heads * cfg.head_dim:].view(n, cfg.num_kv_heads, cfg.head_dim)
            else:
                q, k, v = (self._linear(ops, h, lin[p], bias[p]) for p in ("q_proj", "k_proj", "v_proj"))
                q = ops.rope(q.view(n, cfg.num_heads, cfg.head_dim), *cos_sin, torch.float32)
                k = ops.rope(k.view(n, cfg.num_kv_heads, cfg.head_dim), *cos_sin, torch.float32)
                v = v.view(n, cfg.num_kv_heads, cfg.head_dim)
            ops.kv_append(cache.layers[idx], k, v, slots)
            attn = attend(idx, q).reshape(n, cfg.num_heads * cfg.head_dim)
            out = self._linear(ops, attn, lin["o_proj"], bias["o_proj"])
            x, h = self._add_norm(ops, x, out, layer.post_attention_norm, self._act_dtype)
            if "gate_up_proj" in lin:
                gate_up = self._linear(ops, h, lin["gate_up_proj"], bias["gate_up_proj"])
            else:
                gate_up = torch.cat([self._linear(ops, h, lin[p], bias[p]) for p in ("gate_proj", "up_proj")], dim=-1)
            act = ops.silu_mul(gate_up, self._act_dtype)
            out = self._linear(ops, act, lin["down_proj"], bias["down_proj"])
        return self._add_norm(ops, x, out, self.weights.norm, torch.float32)[1]

    def _add_norm(self, ops: OpSet, x: torch.Tensor, out: torch.Tensor | None, weight: torch.Tensor,
                  out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual add and the RMSNorm after it, in one op: ``(x + out, rms_norm(x + out))``; ``(x,
        rms_norm(x))`` when there is nothing to add yet (``out`` None: the first layer's input)."""
        eps = self.config.rms_norm_eps
        if out is None:
            return x, ops.rms_norm(x, weight, eps, out_dtype)
        return ops.add_rms_norm(x, out, weight, eps, out_dtype)

    def _linear(self, ops: OpSet, x: torch.Tensor, weight: Any, bias: torch.Tensor | None) -> torch.Tensor:
        """A decoder layer's linear: input and output in the model's activation dtype (the input converted unless
        it is). The output feeds ops that read any float type, or an fp32 add that widens it exactly."""
        return ops.linear(x.to(self._act_dtype), weight, bias)

    def _logits(self, ops: OpSet, hidden: torch.Tensor) -> torch.Tensor:
        return ops.linear(hidden, self.weights.lm_head)

