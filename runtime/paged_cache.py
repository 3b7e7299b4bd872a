"""The paged KV cache: page allocator, per-sequence block tables, and the per-layer page storage.

Memory is ``num_pages`` pages of ``page_size`` tokens per layer (the storage format of a page is
specified in :mod:`lowbit.kvcache`). A sequence owns a list of pages, its *block table*; token ``t`` of
the sequence lives in page ``block_table[t // page_size]`` at offset ``t % page_size``, i.e. at flat slot
``page * page_size + offset``. Pages come from a free list and return to it when a sequence is freed.
Running out of pages is a :class:`RuntimeModelError`, raised before anything is allocated.

With keys quantized per channel (``key_grouping="channel"``, format ``paged-kv/v2``) the open (not yet full)
page of each sequence keeps its keys in a staging row: every live sequence holds one row of ``k_stage``
(shared by all layers' ``stage_map``, which points each of the sequence's pages at it) from its first
token until it is freed. The staging grows on demand (doubling), so it costs one page of f32 keys per
live sequence, not per page.

>>> from lowbit.kvcache import KVCacheFormat
>>> cache = PagedKVCache(KVCacheFormat("float16", num_kv_heads=1, head_dim=8, page_size=4),
...                      num_layers=1, num_pages=3)
>>> cache.reserve({7: 5})[7].tolist()          # sequence 7 gets 5 slots: pages 0 and 1
[0, 1, 2, 3, 4]
>>> cache.block_table(7), cache.free_pages
([0, 1], 1)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from lowbit import kvcache
from lowbit.errors import RuntimeModelError


class PagedKVCache:
    """Pages for every layer plus the allocator state (block tables, lengths, free list)."""

    def __init__(self, fmt: "kvcache.KVCacheFormat", num_layers: int, num_pages: int,
                 device: str | torch.device = "cpu"):
        if num_pages <= 0:
            raise RuntimeModelError(f"a KV cache needs at least one page, got num_pages={num_pages}")
        self.format = fmt
        self.num_pages = num_pages
        self.device = torch.device(device)
        self._stage_rows: dict[int, int] = {}  # sequence -> its staging row (keys per channel only)
        self._free_rows: list[int] = []
        if fmt.channel_keys:
            rows = min(num_pages, 4)
            self._stage_map = torch.full((num_pages,), -1, dtype=torch.int32, device=self.device)
            self._free_rows = list(range(rows - 1, -1, -1))
            self.layers = [kvcache.allocate(fmt, num_pages, self.device, staging_slots=rows, stage_map=self._stage_map)
                           for _ in range(num_layers)]
        else:
            self.layers = [kvcache.allocate(fmt, num_pages, self.device) for _ in range(num_layers)]
        self._free: list[int] = list(range(num_pages - 1, -1, -1))  # pop() hands out page 0 first
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}
        #: decode steps captured over these pages: CUDA graphs (:mod:`lowbit.runtime.cuda_graphs`), CPU recordings
        #: (:mod:`lowbit.runtime.cpu_graphs`)
        self.decode_graphs: dict = {}

    # ---- allocator -------------------------------------------------------------------------------
    @property
    def page_size(self) -> int:
        return self.format.page_size

    @property
    def free_pages(self) -> int:
        return len(self._free)

    def length(self, seq_id: int) -> int:
        """Tokens stored for ``seq_id`` (0 for an unknown sequence)."""
        return self._lengths.get(seq_id, 0)

    def block_table(self, seq_id: int) -> list[int]:
        return list(self._tables.get(seq_id, ()))

    def sequences(self) -> list[int]:
        return list(self._tables)

    def pages_needed(self, seq_id: int, new_tokens: int) -> int:
        have = len(self._tables.get(seq_id, ()))
        need = -(-(self.length(seq_id) + new_tokens) // self.page_size)
        return max(0, need - have)

    def reserve(self, new_tokens: Mapping[int, int]) -> dict[int, torch.Tensor]:
        """Grow each sequence by ``new_tokens[seq]`` tokens; returns their flat slots (int64) per sequence.

        All or nothing: if the free list cannot cover every request, nothing changes and a
        :class:`RuntimeModelError` says how many pages were needed and free.
        """
        needed = sum(self.pages_needed(s, n) for s, n in new_tokens.items())
        if needed > len(self._free):
            total_tokens = sum(self.length(s) + n for s, n in new_tokens.items())
            raise RuntimeModelError(
                f"KV cache full: {needed} more page(s) of {self.page_size} tokens needed, "
                f"{len(self._free)} of {self.num_pages} free (sequences {sorted(new_tokens)} would hold "
                f"{total_tokens} tokens)",
                hint="allocate more pages (num_pages / --kv-pages), use fewer or shorter prompts, "
                     "or lower max_new_tokens")
        slots: dict[int, torch.Tensor] = {}
        opened: list[tuple[int, int]] = []  # (new page, its sequence)
        for seq, n in new_tokens.items():
            table = self._tables.setdefault(seq, [])
            for _ in range(self.pages_needed(seq, n)):
                table.append(self._free.pop())
                opened.append((table[-1], seq))
            start = self._lengths.get(seq, 0)
            positions = torch.arange(start, start + n, dtype=torch.int64)
            pages = torch.tensor(table, dtype=torch.int64)[positions // self.page_size]
            slots[seq] = pages * self.page_size + positions % self.page_size
            self._lengths[seq] = start + n
        if self.format.channel_keys and opened:
            self._assign_staging(opened)
        return slots

    def _assign_staging(self, opened: list[tuple[int, int]]) -> None:
        """Point each new page at its sequence's staging row (a sequence gets a row with its first page)."""
        new = [seq for seq in dict.fromkeys(seq for _, seq in opened) if seq not in self._stage_rows]
        if len(new) > len(self._free_rows):
            self._grow_staging(len(self._stage_rows) + len(new))
        for seq in new:
            self._stage_rows[seq] = self._free_rows.pop()
        pages = torch.tensor([p for p, _ in opened], dtype=torch.int64)
        rows = torch.tensor([self._stage_rows[seq] for _, seq in opened], dtype=torch.int32)
        self._stage_map[pages.to(self.device)] = rows.to(self.device)

    def _grow_staging(self, need: int) -> None:
        old = self.layers[0].staging_slots
        size = max(need, 2 * old)
        self.layers = [kvcache.resize_staging(layer, size) for layer in self.layers]
        self._free_rows = list(range(size - 1, old - 1, -1)) + self._free_rows

    def free(self, seq_id: int) -> None:
        """Return a sequence's pages to the free list (its data is left in place, unreachable)."""
        self._free.extend(reversed(self._tables.pop(seq_id, [])))
        self._lengths.pop(seq_id, None)
        row = self._stage_rows.pop(seq_id, None)
        if row is not None:
            self._free_rows.append(row)

    def reset(self) -> None:
        for seq in list(self._tables):
            self.free(seq)

    # ---- views for the attention ops -------------------------------------------------------------
    def block_tables(self, seq_ids: Sequence[int]) -> torch.Tensor:
        """``[B, P]`` int32 block tables, padded with page 0 (masked by the lengths)."""
        width = max(1, max(len(self._tables.get(s, ())) for s in seq_ids))
        out = torch.zeros(len(seq_ids), width, dtype=torch.int32)
        for row, seq in enumerate(seq_ids):
            table = self._tables.get(seq, [])
            out[row, :len(table)] = torch.tensor(table, dtype=torch.int32)
        return out.to(self.device)

    def lengths(self, seq_ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([self.length(s) for s in seq_ids], dtype=torch.int32, device=self.device)

    # ---- accounting ------------------------------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes of page storage, all layers."""
        return sum(kvcache.layer_nbytes(layer) for layer in self.layers)

    def bytes_read(self, seq_ids: Sequence[int]) -> int:
        """Bytes an attention kernel must read for one decode step of ``seq_ids`` (all layers): K and V
        codes plus scales/zeros of the tokens each sequence holds (and, with keys per channel, the page
        scales of sealed pages and the staged keys of open ones: :meth:`KVCacheFormat.sequence_bytes`)."""
        return sum(self.format.sequence_bytes(self.length(s)) for s in seq_ids) * len(self.layers)
