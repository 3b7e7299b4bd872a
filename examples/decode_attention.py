"""Decode attention over a low-bit KV cache, written in Python with @lowbit.jit.

One new query token per sequence attends to S cached tokens. K and V are stored as codes of any lowbit
dtype KV (int4, float4_e2m1, ...) with one f16 scale per token and group of G channels; queries may share
KV heads (GQA: H query heads over HKV KV heads). Each program handles one (sequence, head) pair and walks
the cache in BS-token tiles with an online softmax (running max m, normaliser l, accumulator acc).

This module does *not* use ``from __future__ import annotations``: Python evaluates the annotations when
the ``def`` runs, so the names they use are declared with ``symbols`` and the dtypes come from lowbit.dsl.
"""
import lowbit.dsl as dsl
from lowbit.dsl import Out, const, dtype, f16, f32, symbols
from lowbit.jit import jit

B, H, HKV, S, D, G, KV = symbols("B H HKV S D G KV")
NEG = -1.0e30


@jit
def decode_attention(q: f16[B, H, D], k: KV[B, HKV, S, D], k_scale: f16[B, HKV, S, D // G],
                     v: KV[B, HKV, S, D], v_scale: f16[B, HKV, S, D // G], o: Out[f16[B, H, D]],
                     sm_scale: f32, KV: dtype = dsl.int4, D: const = 64, G: const = 32, BS: const = 32):
    grid(B, H)
    b = block(0)
    h = block(1)
    kvh = h // (H // HKV)                      # GQA: the KV head serving query head h
    qv = cast(reshape(load(q, [b, h, 0], [1, 1, D]), [1, D]), f32) * sm_scale
    m = full([1], NEG, f32)
    l = zeros([1], f32)
    acc = zeros([1, D], f32)
    for s0 in range(0, S, BS):
        kc = cast(reshape(load(k, [b, kvh, s0, 0], [1, 1, BS, D]), [BS, D // G, G]), f32)
        ks = cast(reshape(load(k_scale, [b, kvh, s0, 0], [1, 1, BS, D // G]), [BS, D // G]), f32)
        kf = reshape(kc * ks[:, :, None], [BS, D])
        scores = sum(kf * qv, axis=1)                          # [BS]
        scores = where(s0 + arange(BS) < S, scores, NEG)        # tokens past the end
        m_new = maximum(m, max(scores, axis=0))
        p = exp(scores - m_new)
        alpha = exp(m - m_new)
        vc = cast(reshape(load(v, [b, kvh, s0, 0], [1, 1, BS, D]), [BS, D // G, G]), f32)
        vs = cast(reshape(load(v_scale, [b, kvh, s0, 0], [1, 1, BS, D // G]), [BS, D // G]), f32)
        vf = reshape(vc * vs[:, :, None], [BS, D])
        l = l * alpha + sum(p, axis=0)
        acc = acc * alpha[:, None] + dot(p[None, :], vf)
        m = m_new
    store(o, reshape(cast(acc / l[:, None], f16), [1, 1, D]), [b, h, 0])


def main() -> None:
    import numpy as np

    import lowbit

    rng = np.random.default_rng(0)
    b, h, hkv, s, d, g = 2, 4, 2, 45, 64, 32
    kv = lowbit.dtype("int4")
    q = rng.standard_normal((b, h, d)).astype(np.float16)
    k = rng.integers(0, 16, (b, hkv, s, d), dtype=np.uint8)
    v = rng.integers(0, 16, (b, hkv, s, d), dtype=np.uint8)
    ks = (rng.random((b, hkv, s, d // g)) * 0.1 + 0.05).astype(np.float16)
    vs = (rng.random((b, hkv, s, d // g)) * 0.1 + 0.05).astype(np.float16)
    o = np.zeros((b, h, d), np.float16)
    decode_attention(q, k, ks, v, vs, o, np.float32(d ** -0.5), KV="int4")
    kf = kv.decode(k).astype(np.float64) * np.repeat(ks.astype(np.float64), g, axis=-1)
    vf = kv.decode(v).astype(np.float64) * np.repeat(vs.astype(np.float64), g, axis=-1)
    rep = h // hkv
    logits = np.einsum("bhd,bhsd->bhs", q.astype(np.float64), np.repeat(kf, rep, axis=1)) * d ** -0.5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bhs,bhsd->bhd", p / p.sum(-1, keepdims=True), np.repeat(vf, rep, axis=1))
    print(f"max |o - ref| = {np.abs(o - ref).max():.2e}")


if __name__ == "__main__":
    main()
