"""Launch plans: what an op works out once for one set of fixed operands and one call shape (the kernel's
configuration, its compiled form, launches bound to the fixed tensors) and reuses on every later call.

A plan cache is a plain dict owned by the object whose tensors the plans bind (a quantized weight, a KV
cache layer), so plans live and die with it. Decode calls the same few ops with the same shapes thousands of
times; binding once turns ~50-200 us of Python checks per call into ~10.

>>> plans = {}
>>> cached_plan(plans, ("m", 1), lambda: "built")
'built'
>>> cached_plan(plans, ("m", 1), lambda: "built again")
'built'
"""
from __future__ import annotations

from typing import Callable, Hashable, TypeVar

__all__ = ["MAX_PLANS", "cached_plan", "known_plan"]

T = TypeVar("T")

#: plans kept per owner
MAX_PLANS = 16


def cached_plan(plans: dict, key: Hashable, build: Callable[[], T]) -> T:
    """``plans[key]``, built by ``build()`` on first use; at most :data:`MAX_PLANS` entries, the least
    recently used dropped first (a decode step's plans outlive the prefills of many prompt lengths)."""
    plan = plans.pop(key, None)
    if plan is None:
        plan = build()
        if len(plans) >= MAX_PLANS:
            plans.pop(next(iter(plans)))
    plans[key] = plan                     # (re)inserted last: dict order is recency order
    return plan


def known_plan(plans: dict, key: Hashable) -> object | None:
    """``plans[key]`` if it was built (marked as just used), else None; builds nothing."""
    plan = plans.pop(key, None)
    if plan is not None:
        plans[key] = plan
    return plan
