"""Shared helpers for the kernel-library tests: fp64 references, error bounds, backend availability.

References are computed in float64 by torch from the *dequantized* data (``QuantizedTensor.dequantize``
and ``lowbit.kvcache.read_pages`` in float64/fp32-exact arithmetic), never with lowbit's kernels.

Error bounds (u = 2^-24, the f32 unit roundoff; every kernel computes products and sums in f32):

* **matmul**: ``y = round_out(sum_k x_k w_k)``. Dequantized weights ``(q - z) * s`` are exact in f32 for
  16-bit scales (a <= 8-bit code times an 11-bit significand); f32 scales add one rounding. Any summation
  order of K products in f32 stays within ``gamma_n * sum_k |x_k w_k|`` with ``gamma_n = n u / (1 - n u)``,
  ``n = K + splits + 4`` (products, split partial sums, scale, bias). The final rounding to the output
  dtype adds ``u_out |y|`` (f16 2^-11, bf16 2^-8, f32 2^-24) plus half its smallest subnormal.
  Where the kernel takes the zero point out of each group's sum (``zsum``: ``s (sum x q - z sum x)``), every
  term is ``x_k q_k`` or ``x_k z``, so ``|x_k w_k|`` becomes ``|x_k| (|q_k| + |z|) |s|`` in the bound
  (``matmul_reference(..., zero_out=True)``); it is much looser where ``q`` and ``z`` nearly cancel.
* **attention**: scores ``s_t = scale * q . k_t`` carry at most ``ds = gamma_(D+2) * scale * sum_d |q_d k_td|``;
  ``exp`` is trusted to 4 ulp. A relative perturbation ``e`` of every softmax weight moves the weighted
  mean of the rows of V by at most ``2 e max|v|``; with ``e = 2 max_t ds + (T + 16) u`` (the running max
  rescales, the sums over T tokens) the output error is at most ``2 e max|v| + u_out |o|``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")

U32 = 2.0 ** -24
U_OUT = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}
TINY_OUT = {torch.float16: 2.0 ** -25, torch.bfloat16: 2.0 ** -134, torch.float32: 2.0 ** -150}


def gamma(n: int) -> float:
    return n * U32 / (1 - n * U32)


def backend_available(name: str, kind: str = "cpu") -> bool:
    """Whether lowbit's driver has a usable ``name`` backend for ``kind`` tensors here."""
    from lowbit.kernels.library import _registered

    return name == "interpret" or _registered(name, kind)


def require_backend(name: str) -> None:
    if not backend_available(name):
        pytest.skip(f"the driver has no {name} backend for CPU tensors here")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Small fp64 products run ~100x faster on one thread than on two busy ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matmul_reference(x: Any, qweight: Any, bias: Any = None, zero_out: bool = False) -> tuple[Any, Any]:
    """``(x @ W.T + bias, |x| @ |W|.T)`` in float64 from the dequantized weight; with ``zero_out`` (a weight
    with zero points, on a kernel path that takes them out of the sums) ``|W|`` is ``(|q| + |z|) |s|``."""
    with one_thread():
        return _matmul_reference(x, qweight, bias, zero_out)


def _matmul_reference(x: Any, qweight: Any, bias: Any, zero_out: bool) -> tuple[Any, Any]:
    w = qweight.dequantize("float64")
    w = w if isinstance(w, torch.Tensor) else torch.from_numpy(w)
    x64 = x.double().reshape(-1, x.shape[-1])
    ref = x64 @ w.T
    if bias is not None:
        ref = ref + bias.double()
    if zero_out:
        n, k = w.shape
        g = qweight.group_size
        q = qweight.dtype.decode(qweight.codes()).double().reshape(n, k // g, g)
        s = qweight.scales.double().abs().unsqueeze(-1)
        w_abs = ((q.abs() + qweight.zeros.double().abs().unsqueeze(-1)) * s).reshape(n, k)
    else:
        w_abs = w.abs()
    return ref, x64.abs() @ w_abs.T + (0 if bias is None else bias.double().abs())




def matmul_tolerance(absdot: Any, ref: Any, k: int, out_dtype: Any, splits: int = 1) -> Any:
    """The elementwise error bound of the module docstring."""
    u_out = U_OUT[out_dtype]
    return u_out * ref.abs() + (1 + u_out) * gamma(k + splits + 4) * absdot + TINY_OUT[out_dtype]


def assert_within(got: Any, ref: Any, tol: Any, what: str) -> None:
    err = (got.double() - ref).abs()
    bad = ~(err <= tol)
    if bool(bad.any()):
        i = int(torch.nonzero(bad.reshape(-1))[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.numel()} elements exceed the bound; first at flat "
                             f"index {i}: got {float(got.reshape(-1)[i])}, want {float(ref.reshape(-1)[i])}, "
                             f"|err| {float(err.reshape(-1)[i]):.3e} > tol {float(tol.reshape(-1)[i]):.3e}; "
                             f"max |err| {float(err.max()):.3e}")


def attention_reference(q: Any, layer: Any, block_tables: Any, seq_lens: Any, scale: float,
                        window: int | None = None) -> tuple[Any, Any]:
    """``(o, tol)``: fp64 softmax attention over the dequantized cache, and the docstring's error bound."""
    with one_thread():
        return _attention_reference(q, layer, block_tables, seq_lens, scale, window)


def _attention_reference(q: Any, layer: Any, block_tables: Any, seq_lens: Any, scale: float,
                         window: int | None) -> tuple[Any, Any]:
    from lowbit import kvcache

    k_all, v_all = kvcache.read_pages(layer, block_tables.long())   # fp32, exact dequantization
    b, hq, d = q.shape
    hkv = layer.format.num_kv_heads
    outs, tols = [], []
    u_out = U_OUT[q.dtype]
    for i in range(b):
        n = int(seq_lens[i])
        lo = max(0, n - window) if window else 0
        kk = k_all[i, :, lo:n].double().repeat_interleave(hq // hkv, 0)     # [Hq, T, D]
        vv = v_all[i, :, lo:n].double().repeat_interleave(hq // hkv, 0)
        qq = q[i].double()
        s = torch.einsum("hd,htd->ht", qq, kk) * scale
        o = torch.einsum("ht,htd->hd", torch.softmax(s, dim=-1), vv)
        ds = gamma(d + 2) * scale * torch.einsum("hd,htd->ht", qq.abs(), kk.abs()).amax(dim=-1)   # [Hq]
        e = 2 * ds + (n - lo + 16) * U32 + 8 * U32
        vmax = vv.abs().amax(dim=(1, 2))                                   # [Hq]
        outs.append(o)
        tols.append((2 * e * vmax)[:, None] + u_out * o.abs() + TINY_OUT[q.dtype])
    return torch.stack(outs), torch.stack(tols)


def paged_layout(lengths: list[int], page_size: int, num_pages: int, seed: int = 0,
                 extra_columns: int = 2) -> tuple[Any, Any]:
    """``(block_tables int32 [B, MP], slots int64 [sum(lengths)])``: every sequence's pages drawn from a
    random permutation of the page pool (so pages are shuffled and interleaved across sequences); unused
    table entries are 0, as the runtime leaves them."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_pages, generator=g)
    need = [math.ceil(n / page_size) for n in lengths]
    if sum(need) > num_pages:
        raise ValueError("not enough pages")
    table = torch.zeros(len(lengths), max(need) + extra_columns, dtype=torch.int32)
    slots, at = [], 0
    for b, (n, p) in enumerate(zip(lengths, need)):
        table[b, :p] = perm[at:at + p].to(torch.int32)
        at += p
        t = torch.arange(n)
        slots.append(table[b, t // page_size].long() * page_size + t % page_size)
    return table, torch.cat(slots)
