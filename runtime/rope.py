"""Rotary position embeddings (Hugging Face "rotate half" convention), with default/linear/llama3 scaling.

Dimension pair (i, i + D/2) of a head is rotated by the angle ``position * inv_freq[i]``.

>>> import torch
>>> from lowbit.runtime.config import RopeConfig
>>> cos, sin = Rotary(RopeConfig(), head_dim=4).cos_sin(torch.tensor([0]))
>>> x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])        # [tokens, heads, head_dim]
>>> apply_rotary(x, cos, sin)                         # position 0: unchanged
tensor([[[1., 2., 3., 4.]]])
"""
from __future__ import annotations

import math

import torch

from .config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """fp32 ``inv_freq`` of length ``head_dim // 2``, computed as transformers does."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = 1.0 / (rope.theta ** exponents)
    if rope.kind == "linear":
        return inv_freq / rope.factor
    if rope.kind == "llama3":
        old_context = rope.original_max_position_embeddings
        low_freq_wavelen = old_context / rope.low_freq_factor
        high_freq_wavelen = old_context / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


class Rotary:
    """A model's rotary angles: :meth:`cos_sin` for the positions of a step (the runtime's ``rope`` op applies
    them, once per layer)."""

    def __init__(self, rope: RopeConfig, head_dim: int):
        self.inv_freq = inverse_frequencies(rope, head_dim)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``sin`` ``[tokens, head_dim]`` (fp32) of each position's angles, pair ``(i, i + D/2)``'s in
        both columns (as transformers builds them)."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for ``x [tokens, heads, D]`` and ``cos``, ``sin`` ``[tokens, D]``, as
    ``x * cos + roll(x, D/2) * signed_sin`` (``sin`` with its first half negated: rotate-half's ``-x2``): the same
    products and sum, bit for bit, in fewer torch ops."""
    half = x.shape[-1] // 2
    signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    return x * cos[:, None, :] + x.roll(half, -1) * signed_sin[:, None, :]
