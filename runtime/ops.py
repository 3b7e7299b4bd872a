"""The runtime's op boundary: the operations the model calls, chosen per backend by a registry.

The model code (``lowbit.runtime.model``) never computes a matmul, an attention or a norm itself: it calls the
ops of an :class:`OpSet`. Today every op has the torch reference implementation (backend ``"torch"``,
in ``lowbit.runtime.reference_ops``: dequantize, then fp32 matmul; attention over the dequantized
cache). lowbit's generated kernels plug in later by registering under their backend name, without any
change to the model::

    from lowbit.runtime import ops

    @ops.register("linear", "tvm")
    def tvm_linear(x, weight, bias=None):
        return lowbit.ops.matmul(x, weight, bias, backend="tvm")

When an OpSet is resolved for a backend other than ``torch``, ``lowbit.runtime.lowbit_ops`` (lowbit's kernels
as ops, backends ``tvm`` and ``triton``) is imported first. ``"auto"`` prefers TVM on a CPU and Triton on a GPU
(Triton on a CPU is its interpreter: correct, far too slow to serve), then the torch reference.

The contract of each op (all tensors on one device; the residual stream is fp32, a linear's input and output
are in the model's activation dtype):

``linear(x, weight, bias=None) -> y``
    ``x`` ``[..., K]`` (fp32, or the model's activation dtype); ``weight`` a dense ``[N, K]`` tensor (any float
    dtype) or a ``lowbit.quant.QuantizedTensor`` of logical shape ``[N, K]``; ``bias`` ``[N]`` or None.
    Returns ``x @ W.T + bias`` ``[..., N]``: fp32 products and sums, rounded once to ``x``'s dtype (the model
    adds a bf16 result to its fp32 residual exactly: torch promotes in the add, no conversion op).

``kv_append(layer, k, v, slots) -> None``
    Writes ``k``, ``v`` ``[T, Hkv, D]`` (fp32, bf16 or fp16; ``k`` after RoPE) into a
    :class:`lowbit.kvcache.KVLayer` at the flat slots ``[T]`` (int32 or int64; slot = page * page_size +
    offset), quantizing to the cache's format.

``decode_attention(q, layer, block_tables, lengths, *, scale, window, out_dtype) -> out``
    One query per sequence: ``q`` ``[B, Hq, D]``; ``block_tables`` ``[B, P]`` int32 page ids (entries past
    a sequence's pages are 0 and must be ignored); ``lengths`` ``[B]`` int32 tokens in the cache including
    the query's own (already appended). The query of sequence b sits at position ``lengths[b] - 1`` and
    attends to keys ``j`` with ``j < lengths[b]`` and, when ``window`` is an int, ``j > pos - window``.
    Grouped-query: query head h reads kv head ``h // (Hq // Hkv)``. Returns ``[B, Hq, D]``: fp32 softmax and
    sums, rounded once to ``out_dtype`` (the input type of the matmul that reads it).

``rms_norm(x, weight, eps, out_dtype) -> y``
    ``x`` fp32 ``[T, H]``, ``weight`` ``[H]``: ``weight * (x * rsqrt(mean(x^2, -1) + eps))`` (Llama's RMSNorm) in
    fp32, rounded once to ``out_dtype`` (the dtype of the matmul that reads it).

``add_rms_norm(x, delta, weight, eps, out_dtype) -> (s, y)``
    The residual add and the norm after it: ``s = x + delta`` (``x`` the fp32 residual ``[T, H]``, ``delta`` a
    block's output in any float dtype; an fp32 add, as torch promotes it) and ``y = rms_norm(s, weight, eps,
    out_dtype)``.

``rope(x, cos, sin, out_dtype) -> y``
    ``x`` ``[T, H, D]`` (float; a strided view of a fused projection's output), ``cos``, ``sin`` fp32 ``[T, D]``
    (:meth:`lowbit.runtime.rope.Rotary.cos_sin`): ``x * cos + rotate_half(x) * sin`` per head (Hugging Face's
    "rotate half" convention) in fp32, rounded once to ``out_dtype``.

``silu_mul(gate_up, out_dtype) -> y``
    ``gate_up`` float ``[T, 2 I]``, gate then up: ``silu(gate) * up`` ``[T, I]`` in fp32, rounded once to
    ``out_dtype``.

``prefill_attention(q, layer, block_tables, starts, query_lens, *, scale, window) -> out``
    Varlen causal attention for a batch of prompts (or prompt chunks): ``q`` ``[sum(query_lens), Hq, D]``
    holds the queries of sequence 0, then 1, ...; sequence b's queries are at positions
    ``starts[b] .. starts[b] + query_lens[b] - 1`` and their keys/values (positions ``0 ..`` the query's
    own) are already in the cache. Same masking and GQA rules as decode. Returns fp32, shaped like ``q``.

Both attentions read keys and values *from the cache* (dequantized), also during prefill. With per-token groups
(``paged-kv/v1``) results therefore do not depend on how a prompt is split into chunks; with keys grouped per
channel (``paged-kv/v2``) a page's keys stay exact until the page is sealed (full), so a query sees the exact keys
of its sequence's open page and results can depend on where chunks end relative to page ends (see
:mod:`lowbit.kvcache`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from lowbit.errors import BackendError

OP_NAMES = ("linear", "kv_append", "decode_attention", "prefill_attention", "rms_norm", "add_rms_norm", "rope",
            "silu_mul")
REFERENCE = "torch"
#: "auto" takes, per op, the first backend in this order that has it
AUTO_PREFERENCE = {"cpu": ("tvm", REFERENCE), "cuda": ("triton", "tvm", REFERENCE)}
#: backends whose CPU kernels run on a thread pool of their own (TVM's), next to torch's OpenMP threads
OWN_CPU_THREADS = ("tvm",)

_IMPLS: dict[tuple[str, str], Callable] = {}


def register(op: str, backend: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as ``op`` for ``backend`` (a later registration replaces an earlier)."""
    if op not in OP_NAMES:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OP_NAMES)}")

    def deco(fn: Callable) -> Callable:
        _IMPLS[(op, backend)] = fn
        return fn

    return deco


def registered(op: str | None = None) -> dict[tuple[str, str], Callable]:
    """A copy of the registry, optionally only the entries of one op."""
    _load_builtin()
    return {k: v for k, v in _IMPLS.items() if op is None or k[0] == op}


@dataclass(frozen=True)
class OpSet:
    """One implementation per op, plus which backend each came from (for reports)."""

    linear: Callable
    kv_append: Callable
    decode_attention: Callable
    prefill_attention: Callable
    rms_norm: Callable
    add_rms_norm: Callable
    rope: Callable
    silu_mul: Callable
    backends: tuple[tuple[str, str], ...]  # (op, backend) pairs

    def describe(self) -> str:
        """``"linear=torch, kv_append=torch, ..."``."""
        return ", ".join(f"{op}={backend}" for op, backend in self.backends)

    def torch_threads(self, device: str = "cpu") -> int | None:
        """The intra-op threads torch should run with next to these ops on ``device``: 1 when some op runs on
        a CPU thread pool of its own (:data:`OWN_CPU_THREADS`), else None (leave torch as it is).

        Why: torch's OpenMP workers spin for a while after each parallel op, on the cores the kernels' own
        pool then needs; a kernel launched meanwhile waits for the scheduler. The torch ops left between the
        kernels (norms, RoPE, prefill attention) are small. Measured on the 1B model, int4 x bf16, 2 cores:
        prefill of 16 / 128 / 512 tokens 238 / 1819 / 5311 ms -> 140 / 893 / 5075 ms, decode 34 -> 36 tok/s.

        >>> resolve("torch").torch_threads() is None
        True
        """
        if str(device).startswith("cuda"):
            return None
        return 1 if any(backend in OWN_CPU_THREADS for _, backend in self.backends) else None


def resolve(backend: str | None = "auto", device: str = "cpu") -> OpSet:
    """The OpSet for ``backend``: ``"auto"``/None (best registered per op on ``device``'s kind), ``"torch"``,
    ``"tvm"``, ``"triton"``.

    An explicitly named backend must implement every op; otherwise :class:`BackendError` lists what is
    missing (it never falls back silently).

    >>> resolve("torch").describe()       # doctest: +NORMALIZE_WHITESPACE
    'linear=torch, kv_append=torch, decode_attention=torch, prefill_attention=torch, rms_norm=torch,
     add_rms_norm=torch, rope=torch, silu_mul=torch'
    """
    _load_builtin()
    name = "auto" if backend is None else backend
    if name != REFERENCE:
        _load_kernels()
    chosen: dict[str, tuple[str, Callable]] = {}
    for op in OP_NAMES:
        kind = "cuda" if str(device).startswith("cuda") else "cpu"
        candidates = AUTO_PREFERENCE[kind] if name == "auto" else (name,)
        for cand in candidates:
            if (op, cand) in _IMPLS:
                chosen[op] = (cand, _IMPLS[(op, cand)])
                break
    missing = [op for op in OP_NAMES if op not in chosen]
    if missing:
        known = sorted({b for _, b in _IMPLS})
        raise BackendError(
            f"backend {name!r} has no implementation of {', '.join(missing)} (backends with ops: "
            f"{', '.join(known)})",
            hint="use backend 'auto' (lowbit's kernels where they exist, the torch reference elsewhere) "
                 "or 'torch'")
    return OpSet(**{op: fn for op, (_, fn) in chosen.items()},
                 backends=tuple((op, chosen[op][0]) for op in OP_NAMES))


_builtin_loaded = False
_kernels_loaded = False


def _load_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        importlib.import_module("lowbit.runtime.reference_ops")


def _load_kernels() -> None:
    global _kernels_loaded
    if _kernels_loaded:
        return
    _kernels_loaded = True
    importlib.import_module("lowbit.runtime.lowbit_ops")
