"""The torch reference implementation of the runtime's ops (backend ``"torch"``).

Plain, readable and exact to fp32: weights are dequantized and multiplied in fp32; attention reads the
whole cache of each sequence back through :func:`lowbit.kvcache.read_pages` (the format's reference
dequantization) and applies a masked softmax. lowbit's kernels are checked against this. The contract
of each op is in :mod:`lowbit.runtime.ops`.

>>> import torch
>>> linear(torch.ones(1, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
tensor([[3., 7.]])
"""
from __future__ import annotations

import torch

from lowbit import kvcache

from .ops import register
from .rope import apply_rotary
from .weights import dense_weight


@register("linear", "torch")
def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` in fp32 (``W`` dequantized first when it is a QuantizedTensor), rounded once to
    ``x``'s dtype: the semantics of :func:`lowbit.ops.matmul`."""
    w = dense_weight(weight)
    y = torch.matmul(x.to(torch.float32), w.to(torch.float32).t())
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


@register("kv_append", "torch")
def kv_append(layer: "kvcache.KVLayer", k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
    kvcache.append(layer, k, v, slots)


@register("decode_attention", "torch")
def decode_attention(q: torch.Tensor, layer: "kvcache.KVLayer", block_tables: torch.Tensor,
                     lengths: torch.Tensor, *, scale: float, window: int | None = None,
                     out_dtype: torch.dtype) -> torch.Tensor:
    positions = (lengths.to(torch.int64) - 1)[:, None]  # [B, 1]: each sequence's single query
    out = _attend(q[:, None], layer, block_tables, lengths, positions, scale=scale, window=window)
    return out[:, 0].to(out_dtype)


@register("prefill_attention", "torch")
def prefill_attention(q: torch.Tensor, layer: "kvcache.KVLayer", block_tables: torch.Tensor,
                      starts: torch.Tensor, query_lens: torch.Tensor, *, scale: float,
                      window: int | None = None) -> torch.Tensor:
    lens = query_lens.to(torch.int64)
    batch, t_max = lens.numel(), int(lens.max())
    # Scatter the packed queries [sum(lens), H, D] into a padded [B, Tmax, H, D] batch.
    seq_of = torch.repeat_interleave(torch.arange(batch, device=q.device), lens)
    first = torch.cumsum(lens, 0) - lens
    offset = torch.arange(q.shape[0], device=q.device) - first[seq_of]
    padded = q.new_zeros(batch, t_max, *q.shape[1:])
    padded[seq_of, offset] = q
    positions = starts.to(torch.int64)[:, None] + torch.arange(t_max, device=q.device)[None, :]
    cached = starts.to(torch.int64) + lens  # tokens in the cache per sequence (this chunk included)
    out = _attend(padded, layer, block_tables, cached, positions, scale=scale, window=window)
    return out[seq_of, offset]


@register("rms_norm", "torch")
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    x = x.to(torch.float32)
    return (weight.to(torch.float32) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))).to(out_dtype)


@register("add_rms_norm", "torch")
def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                 out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    total = x + delta
    return total, rms_norm(total, weight, eps, out_dtype)


@register("rope", "torch")
def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    return apply_rotary(x.to(torch.float32), cos, sin).to(out_dtype)


@register("silu_mul", "torch")
def silu_mul(gate_up: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    gate, up = gate_up.to(torch.float32).chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(out_dtype)


def _attend(q: torch.Tensor, layer: "kvcache.KVLayer", block_tables: torch.Tensor, lengths: torch.Tensor,
            positions: torch.Tensor, *, scale: float, window: int | None) -> torch.Tensor:
    """Causal attention of queries ``q`` [B, T, Hq, D] at ``positions`` [B, T] over each sequence's pages
    (``lengths`` [B] tokens cached: which page is open matters to keys quantized per channel)."""
    # [B, Hkv, L, D] fp32 (L = pages * page_size)
    keys, values = kvcache.read_pages(layer, block_tables, seq_lens=lengths)
    batch, t, hq, d = q.shape
    hkv = keys.shape[1]
    group = hq // hkv
    qg = q.to(torch.float32).reshape(batch, t, hkv, group, d).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, T, D]
    scores = torch.matmul(qg, keys[:, :, None].transpose(-1, -2)) * scale  # [B, Hkv, G, T, L]
    key_pos = torch.arange(keys.shape[2], device=q.device)[None, None, :]
    allowed = key_pos <= positions[:, :, None]  # [B, T, L]
    if window is not None:
        allowed &= key_pos > positions[:, :, None] - window
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, values[:, :, None])  # [B, Hkv, G, T, D]
    return out.permute(0, 3, 1, 2, 4).reshape(batch, t, hq, d)
