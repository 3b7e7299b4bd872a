"""Next-token selection: greedy, or temperature sampling with optional top-k and top-p, seeded.

Order of operations (as in Hugging Face ``generate``): divide the logits by the temperature, keep the
``top_k`` largest, keep the smallest set of most-probable tokens whose probability reaches ``top_p``
(the most probable token always stays), renormalise, draw with a ``torch.Generator``.
``temperature == 0`` is greedy (argmax; ties go to the lowest id) and ignores top-k/top-p.

>>> import torch
>>> logits = torch.tensor([[0.0, 3.0, 1.0]])
>>> sample(logits, SamplingParams()).tolist()                       # greedy
[1]
>>> g = torch.Generator().manual_seed(0)
>>> sample(logits, SamplingParams(temperature=1.0, top_k=1), g).tolist()
[1]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowbit.errors import RuntimeModelError


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 = greedy; ``top_k`` None/0 = off; ``top_p`` None/1.0 = off; ``seed`` for the generator."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise RuntimeModelError(f"temperature must be a finite number >= 0, got {self.temperature!r}",
                                    hint="0 means greedy decoding")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 0):
            raise RuntimeModelError(f"top_k must be a non-negative integer, got {self.top_k!r}",
                                    hint="0 or None turns top-k off")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise RuntimeModelError(f"top_p must be in (0, 1], got {self.top_p!r}", hint="1.0 or None turns top-p off")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        if self.seed is not None:
            g.manual_seed(self.seed)
        else:
            g.seed()
        return g


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits with the tokens outside top-k / top-p set to ``-inf`` (``[B, V]``)."""
    scores = logits.to(torch.float32) / params.temperature
    vocab = scores.shape[-1]
    if params.top_k and params.top_k < vocab:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # probability mass strictly above each token
        drop_sorted = before >= params.top_p  # keeps the first token always (before == 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of ``logits`` ``[B, V]`` -> int64 ``[B]``."""
    if params.greedy:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(filter_logits(logits, params), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
