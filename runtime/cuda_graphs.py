"""Decode steps replayed as CUDA graphs: one graph per batch size and block-table width, kept with the KV cache.

A decode step of a 1B Llama launches ~290 kernels; on a GPU their Python launch costs (~10-30 us each) are most
of the step, while the GPU's own work is a few milliseconds. A CUDA graph records the step's launches once and
replays them in one call, so a step costs its GPU time plus the copy of its few inputs.

How (:func:`graphed_decode`): the first step of a shape runs eagerly (it is the real step, and it builds every
op's launch plan) on static input tensors, then the same step is captured from them (capture records and runs
nothing: the KV cache is not written twice). Later steps of that shape copy their inputs into the static
tensors and replay. Block tables are padded with page 0 to a power-of-two width (the lengths mask the padding),
so a growing context is captured again only at widths 1, 2, 4, 8, ... pages. A step that cannot be captured
(an op that synchronizes with the host, such as the host quantizer of some KV formats) decodes eagerly from then
on. The graphs bind the cache's pages and the weights' storage: they live in the cache's ``decode_graphs`` and
go with it.

>>> [padded_tables(torch.zeros(1, w, dtype=torch.int32)).shape[1] for w in (3, 4, 1)]
[4, 4, 1]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["graphed_decode", "padded_tables"]

#: a shape whose step could not be captured (it decodes eagerly)
_EAGER = "eager"


@dataclass
class _Captured:
    graph: Any                         # torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]   # the static tensors the graph reads (tokens, positions, slots, tables, lens)
    logits: torch.Tensor               # the static tensor it writes


def padded_tables(tables: torch.Tensor) -> torch.Tensor:
    """Block tables ``[B, W]`` padded with page 0 to the width a step is captured at, the next power of two (the
    lengths mask the padding); also for :mod:`.cpu_graphs`."""
    width = 1 << max(0, int(tables.shape[1]) - 1).bit_length()
    if width == tables.shape[1]:
        return tables
    return torch.nn.functional.pad(tables, (0, width - int(tables.shape[1])))


def graphed_decode(step: Callable[..., torch.Tensor], graphs: dict, key: Any, tokens: torch.Tensor,
                   positions: torch.Tensor, slots: torch.Tensor, tables: torch.Tensor,
                   lengths: torch.Tensor) -> torch.Tensor:
    """``step(tokens, positions, slots, tables, lengths)`` (the model's decode step on CUDA tensors: the logits
    ``[B, vocab]``), run as a replay of the graph in ``graphs`` for ``key`` and this batch size and table width,
    captured on first use (see the module docstring). Returns a fresh logits tensor."""
    tables = padded_tables(tables)
    inputs = (tokens, positions, slots, tables, lengths)
    shape_key = (key, int(tokens.shape[0]), int(tables.shape[1]))
    entry = graphs.get(shape_key)
    if entry is None:
        static = tuple(t.clone() for t in inputs)
        logits = step(*static)                  # the real step, eagerly: builds every launch plan of this shape
        graphs[shape_key] = _capture(step, static)
        return logits
    if entry == _EAGER:
        return step(*inputs)
    for dst, src in zip(entry.inputs, inputs):
        dst.copy_(src)
    entry.graph.replay()
    return entry.logits.clone()


def _capture(step: Callable[..., torch.Tensor], static: tuple[torch.Tensor, ...]) -> _Captured | str:
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):           # records the launches; nothing runs
            logits = step(*static)
    except Exception:  # noqa: BLE001 - an op that cannot be captured: this shape stays eager
        torch.cuda.synchronize()
        return _EAGER
    return _Captured(graph, static, logits)
