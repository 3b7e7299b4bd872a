"""Shared pieces of the bench tests: tiny settings (shapes and repeats far too small to mean anything about
speed: these tests check the structure of results, never timing)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lowbit.bench.config import KernelSettings  # noqa: E402

TINY_SHAPE = (32, 256)


def tiny_settings(**overrides) -> KernelSettings:
    base = dict(shapes=(TINY_SHAPE,), ms=(1, 2), types=("int4", "uint3"), backends=("interpret",), group_size=128,
                repeats=1, cold=True, flush_bytes=1 << 16, check_rows=32)
    base.update(overrides)
    return KernelSettings(**base)
