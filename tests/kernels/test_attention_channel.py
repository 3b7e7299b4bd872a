"""Decode attention and kv_append over a ``paged-kv/v2`` cache: keys quantized per channel over each page.

The reference never uses :mod:`lowbit.kvcache`: a sequence's keys are rebuilt from the raw inputs, each
sealed (full) page by ``lowbit.quant.quantize`` of its transposed keys ``[D, S]`` (one group per channel)
and the open last page as the raw keys rounded to the staging dtype; values by ``quantize`` of each token.
Attention over them is computed in float64 with the error bound of ``conftest.py``.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lowbit import kvcache, ops  # noqa: E402
from lowbit.errors import LowbitError  # noqa: E402
from lowbit.quant import quantize  # noqa: E402

from .conftest import (TINY_OUT, U32, U_OUT, assert_within, gamma, one_thread, paged_layout,  # noqa: E402
                       require_backend)

LENGTHS = [1, 17, 300]   # open page only; one sealed page + 1 open token; 18 sealed pages + 12 open tokens
#: (dtype, V group size, zero points)
KV_TYPES = [("int8", None, None), ("uint4", 16, True), ("float4_e2m1", 32, None), ("int3", None, None)]
IDS = [t[0] for t in KV_TYPES]
HKV, HQ, D, PAGE, PAGES = 2, 8, 64, 16, 48


def make_format(dtype, group, zp, page=PAGE, staging="float32", hkv=HKV):
    return kvcache.KVCacheFormat(dtype, num_kv_heads=hkv, head_dim=D, page_size=page, group_size=group,
                                 zero_point=zp, key_grouping="channel", staging_dtype=staging)


def fill_garbage(layer, seed=0):
    """NaN in every float tensor, random bytes in the codes: only what the writers put there may be read."""
    gen = torch.Generator().manual_seed(seed + 100)
    for t in (layer.k, layer.v, layer.k_scales, layer.v_scales, layer.k_zeros, layer.v_zeros, layer.k_stage):
        if t is None:
            continue
        if t.dtype == torch.uint8:
            t.copy_(torch.randint(0, 256, t.shape, generator=gen, dtype=torch.uint8))
        else:
            t.fill_(float("nan"))


def random_kv(lengths, seed=0, hkv=HKV):
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    k = torch.randn(n, hkv, D, generator=gen)
    k[:, :, 5] *= 20.0                           # an outlier channel, as in real keys
    return k, torch.randn(n, hkv, D, generator=gen)


# ---------------------------------------------------------------------------------------------------------
# the independent reference
# ---------------------------------------------------------------------------------------------------------
def reference_keys(fmt, keys):
    """float64 ``[n, H, D]``: full pages per channel by ``quantize`` of the transposed page, the tail raw."""
    n, h, d = keys.shape
    s = fmt.page_size
    staged = keys.to(getattr(torch, fmt.staging_dtype)).to(torch.float32)
    out = staged.double().clone()
    full = n // s
    if full:
        pages = staged[: full * s].reshape(full, s, h, d).permute(0, 2, 3, 1).reshape(-1, s)   # [full*H*D, S]
        qt = quantize(pages, fmt.dtype, group_size=None, zero_point=fmt.zero_point, scale_dtype=fmt.scale_dtype)
        deq = torch.as_tensor(qt.dequantize("float64")).reshape(full, h, d, s).permute(0, 3, 1, 2)
        out[: full * s] = deq.reshape(full * s, h, d)
    return out


def reference_values(fmt, values):
    n, h, d = values.shape
    qt = quantize(values.reshape(-1, d), fmt.dtype, group_size=fmt.group_size, zero_point=fmt.zero_point,
                  scale_dtype=fmt.scale_dtype)
    return torch.as_tensor(qt.dequantize("float64")).reshape(n, h, d)


def reference_attention(q, fmt, k, v, lengths, scale, window=None):
    """``(o, tol)`` in float64; ``k``, ``v`` hold the sequences' tokens back to back."""
    with one_thread():
        b, hq, d = q.shape
        group = hq // fmt.num_kv_heads
        outs, tols, at = [], [], 0
        for i, n in enumerate(lengths):
            kk = reference_keys(fmt, k[at:at + n]).transpose(0, 1).repeat_interleave(group, 0)   # [Hq, n, D]
            vv = reference_values(fmt, v[at:at + n]).transpose(0, 1).repeat_interleave(group, 0)
            at += n
            lo = max(0, n - window) if window else 0
            kk, vv = kk[:, lo:], vv[:, lo:]
            qq = q[i].double()
            sc = torch.einsum("hd,htd->ht", qq, kk) * scale
            o = torch.einsum("ht,htd->hd", torch.softmax(sc, dim=-1), vv)
            ds = gamma(d + 2) * scale * torch.einsum("hd,htd->ht", qq.abs(), kk.abs()).amax(dim=-1)
            e = 2 * ds + (n - lo + 16) * U32 + 8 * U32
            outs.append(o)
            tols.append((2 * e * vv.abs().amax(dim=(1, 2)))[:, None] + U_OUT[q.dtype] * o.abs() + TINY_OUT[q.dtype])
        return torch.stack(outs), torch.stack(tols)


def build(dtype, group, zp, lengths=LENGTHS, seed=0, page=PAGE, staging="float32", garbage=True):
    """A v2 cache written by the reference writer (``kvcache.append``, one call), shuffled pages."""
    fmt = make_format(dtype, group, zp, page=page, staging=staging)
    layer = kvcache.allocate(fmt, PAGES)
    if garbage:
        fill_garbage(layer, seed)
    table, slots = paged_layout(lengths, page, PAGES, seed=seed)
    k, v = random_kv(lengths, seed)
    kvcache.append(layer, k, v, slots)
    return layer, table, torch.tensor(lengths, dtype=torch.int32), (k, v, slots)


def check(backend, dtype, group, zp, splits=None, window=None, lengths=LENGTHS, page=PAGE, staging="float32",
          q_dtype=torch.float32, seed=0):
    layer, table, lens, (k, v, _) = build(dtype, group, zp, lengths, seed, page, staging)
    q = torch.randn(len(lengths), HQ, D, generator=torch.Generator().manual_seed(seed + 1)).to(q_dtype)
    out = ops.decode_attention(q, layer, table, lens, scale=D ** -0.5, window=window, num_splits=splits,
                               backend=backend)
    assert out.dtype == q.dtype and out.shape == q.shape
    ref, tol = reference_attention(q, layer.format, k, v, lengths, D ** -0.5, window)
    assert_within(out, ref, tol, f"{backend} {dtype} splits={splits} window={window} lengths={lengths}")
    return out


# ---------------------------------------------------------------------------------------------------------
# the format's reference writer and reader against the independent reference
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,group,zp", KV_TYPES, ids=IDS)
def test_reference_writer_and_reader_follow_the_definition(dtype, group, zp):
    layer, table, lens, (k, v, _) = build(dtype, group, zp)
    keys, values = kvcache.read_pages(layer, table, seq_lens=lens)
    at = 0
    for i, n in enumerate(LENGTHS):
        want_k = reference_keys(layer.format, k[at:at + n]).transpose(0, 1)
        want_v = reference_values(layer.format, v[at:at + n]).transpose(0, 1)
        assert torch.equal(keys[i, :, :n].double(), want_k), f"{dtype}: keys of sequence {i}"
        assert torch.equal(values[i, :, :n].double(), want_v), f"{dtype}: values of sequence {i}"
        at += n
    # the per-channel format is really per channel: one scale row [D] per sealed page and head
    assert layer.k_scales.shape == (PAGES, HKV, D) and layer.v_scales.shape[:3] == (PAGES, HKV, PAGE)
    assert layer.format.format_id == "paged-kv/v2"


def test_outlier_channel_keys_are_more_accurate_per_channel():
    """The reason for the format: with one outlier channel, per-channel keys lose far less than per-token."""
    fmt = make_format("int4", None, None)
    k, _ = random_kv([64])
    per_token = torch.as_tensor(quantize(k.reshape(-1, D), "int4", group_size=None).dequantize()).reshape(k.shape)
    err_token = float((per_token - k).pow(2).mean())
    err_channel = float((reference_keys(fmt, k) - k.double()).pow(2).mean())
    assert err_channel < err_token / 4


# ---------------------------------------------------------------------------------------------------------
# decode attention
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,group,zp", KV_TYPES, ids=IDS)
def test_decode_interpreter(dtype, group, zp):
    check("interpret", dtype, group, zp)


@pytest.mark.parametrize("dtype,group,zp", KV_TYPES, ids=IDS)
def test_decode_tvm(dtype, group, zp):
    require_backend("tvm")
    check("tvm", dtype, group, zp, splits=2)


def test_decode_triton_interpreter():
    require_backend("triton")
    check("triton", "uint4", 16, True)


@pytest.mark.parametrize("dtype,group,zp", [KV_TYPES[1], KV_TYPES[3]], ids=["uint4", "int3"])
def test_split_kv_merge_equals_unsplit(dtype, group, zp):
    """Split-KV (3 and 5 parts; 5 leaves short sequences with empty parts) equals the single pass."""
    single = check("interpret", dtype, group, zp, splits=1)
    layer, _, _, (k, v, _) = build(dtype, group, zp)
    q = torch.randn(len(LENGTHS), HQ, D, generator=torch.Generator().manual_seed(1))
    _, tol = reference_attention(q, layer.format, k, v, LENGTHS, D ** -0.5)
    for splits in (3, 5):
        assert_within(check("interpret", dtype, group, zp, splits=splits), single.double(), 2 * tol,
                      f"split {splits} vs single pass")


def test_pages_sealed_exactly_at_page_size():
    """Lengths that are multiples of the page size have no open page (the last page is read from codes);
    a sequence of exactly one page, and one of page_size + 1 (one token staged)."""
    check("interpret", "int8", None, None, lengths=[16, 32, 160, 17])
    check("interpret", "uint4", 16, True, lengths=[8, 1, 24, 9], page=8, splits=2)


def test_window_half_query_and_f16_staging():
    check("interpret", "int8", None, None, window=40, splits=3)
    check("interpret", "uint4", 16, True, q_dtype=torch.float16, staging="float16")


# ---------------------------------------------------------------------------------------------------------
# kv_append
# ---------------------------------------------------------------------------------------------------------
def chunked_appends(lengths, seed=3):
    """Per call, the next chunk of every sequence (chunk sizes 1..23, crossing page ends): ``[(token idx)]``."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.tensor([0, *lengths]).cumsum(0)[:-1].tolist()
    done = [0] * len(lengths)
    calls = []
    while any(d < n for d, n in zip(done, lengths)):
        idx = []
        for b, n in enumerate(lengths):
            step = int(torch.randint(1, 24, (1,), generator=gen))
            take = min(step, n - done[b])
            idx += range(starts[b] + done[b], starts[b] + done[b] + take)
            done[b] += take
        calls.append(torch.tensor(idx, dtype=torch.long))
    return calls


def per_sequence_staging(fmt, table, lengths):
    """A layer with one staging row per sequence (all of a sequence's pages map to it, as in the runtime)."""
    stage_map = torch.full((PAGES,), -1, dtype=torch.int32)
    for b, n in enumerate(lengths):
        stage_map[table[b, :-(-n // fmt.page_size)].long()] = b
    return kvcache.allocate(fmt, PAGES, staging_slots=len(lengths), stage_map=stage_map)


@pytest.mark.parametrize("dtype,group,zp", [KV_TYPES[1], KV_TYPES[3]], ids=["uint4", "int3"])
def test_kv_append_in_chunks_with_shared_staging_rows_then_decode(dtype, group, zp):
    """Appends in chunks that seal one page and open the next in the same call, with one staging row per
    sequence: the reference writer and the kv_append kernels write identical bytes, the sealed pages equal
    a single-call write with a row per page, and decode attention over it meets the fp64 bound."""
    one_call, table, lens, (k, v, slots) = build(dtype, group, zp, garbage=False)
    fmt = one_call.format
    mine = per_sequence_staging(fmt, table, LENGTHS)
    ref = per_sequence_staging(fmt, table, LENGTHS)
    fill_garbage(mine)
    fill_garbage(ref)
    for idx in chunked_appends(LENGTHS):
        ops.kv_append(mine, k[idx], v[idx], slots[idx], backend="interpret")
        kvcache.append(ref, k[idx], v[idx], slots[idx])
    for name in ("k", "v", "k_scales", "v_scales", "k_zeros", "v_zeros", "k_stage"):
        a, b = getattr(mine, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), f"{dtype}: {name} differs"
    sealed = torch.cat([table[b, : n // PAGE].long() for b, n in enumerate(LENGTHS)])
    for name in ("k", "k_scales", "k_zeros"):
        a, b = getattr(mine, name), getattr(one_call, name)
        if a is not None:
            assert torch.equal(a[sealed].view(torch.uint8), b[sealed].view(torch.uint8)), f"{dtype}: sealed {name}"
    q = torch.randn(len(LENGTHS), HQ, D, generator=torch.Generator().manual_seed(9))
    out = ops.decode_attention(q, mine, table, lens, backend="interpret")
    want, tol = reference_attention(q, fmt, k, v, LENGTHS, D ** -0.5)
    assert_within(out, want, tol, f"decode after chunked kv_append, {dtype}")


def test_kv_append_tvm():
    require_backend("tvm")
    _, table, lens, (k, v, slots) = build("uint4", 16, True, garbage=False)
    fmt = make_format("uint4", 16, True)
    mine, ref = per_sequence_staging(fmt, table, LENGTHS), per_sequence_staging(fmt, table, LENGTHS)
    for idx in chunked_appends(LENGTHS, seed=5):
        ops.kv_append(mine, k[idx], v[idx], slots[idx], backend="tvm")
        kvcache.append(ref, k[idx], v[idx], slots[idx])
    for name in ("k", "v", "k_scales", "v_scales", "k_zeros", "v_zeros", "k_stage"):
        assert torch.equal(getattr(mine, name), getattr(ref, name)), name


def test_page_is_sealed_by_its_last_token():
    """Token by token: offsets 0..S-2 only fill staging (codes and scales untouched); offset S-1 quantizes the
    page per channel, exactly as quantize of the transposed page; the next token opens the next page."""
    fmt = make_format("int8", None, None, page=4, hkv=1)
    layer = kvcache.allocate(fmt, 2, staging_slots=1, stage_map=torch.zeros(2, dtype=torch.int32))
    k, v = random_kv([5], hkv=1)
    for t in range(5):
        ops.kv_append(layer, k[t:t + 1], v[t:t + 1], torch.tensor([t]), backend="interpret")
        if t < 3:
            assert int(layer.k[0].abs().sum()) == 0 and float(layer.k_scales[0].abs().sum()) == 0
            assert torch.equal(layer.k_stage[0, :, : t + 1], k[: t + 1].transpose(0, 1))
    qt = quantize(k[:4, 0].T.contiguous(), "int8", group_size=None)
    assert torch.equal(layer.k_scales[0, 0], qt.scales[:, 0])
    assert torch.equal(layer.k[0, 0], qt.codes().T.contiguous())      # int8: one byte per code
    assert float(layer.k_scales[1].abs().sum()) == 0                    # page 1 is open: token 4 staged
    assert torch.equal(layer.k_stage[0, :, 0], k[4])
    keys, _ = kvcache.read_pages(layer, torch.tensor([[0, 1]]), seq_lens=torch.tensor([5]))
    assert torch.equal(keys[0, 0, :4].double(), reference_keys(fmt, k[:4])[:, 0])
    assert torch.equal(keys[0, :, 4], k[4])


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
def test_bad_settings_and_arguments_raise_lowbit_errors():
    with pytest.raises(LowbitError, match="no key grouping"):
        kvcache.KVCacheFormat("float16", 2, D, key_grouping="channel")
    with pytest.raises(LowbitError, match="'token' or 'channel'"):
        kvcache.KVCacheFormat("int8", 2, D, key_grouping="page")
    with pytest.raises(LowbitError, match="staging_dtype"):
        make_format("int8", None, None, staging="int8")
    layer, table, lens, (k, v, slots) = build("int8", None, None, lengths=[5, 20], garbage=False)
    with pytest.raises(LowbitError, match="needs seq_lens"):
        kvcache.read_pages(layer, table)
    layer.stage_map[table[1, 1]] = -1                                    # sequence 1's open page loses its row
    q = torch.randn(2, HQ, D)
    with pytest.raises(LowbitError, match="open page .* staging row -1"):
        ops.decode_attention(q, layer, table, lens, backend="interpret")
    with pytest.raises(LowbitError, match="written page .* staging row -1"):
        ops.kv_append(layer, k[:1], v[:1], table[1, 1:2].long() * PAGE, backend="interpret")
    with pytest.raises(LowbitError, match="gets staged keys, but stage_map gives it row -1"):
        kvcache.append(layer, k[:1], v[:1], table[1, 1:2].long() * PAGE)
    broken = kvcache.KVLayer(layer.format, layer.k, layer.v, layer.k_scales, layer.v_scales)
    with pytest.raises(LowbitError, match="needs layer.k_stage"):
        ops.decode_attention(q, broken, table, lens, backend="interpret")


@pytest.mark.slow
def test_compiles_for_sm90():
    """The run-time branch between codes and staging goes through Triton's real compiler (PTX and cubin)."""
    pytest.importorskip("triton")
    from lowbit.kernels.attention import attention_constants
    from lowbit.kernels.library import kernel_ir
    from lowbit.lowering.passes import run_passes
    from lowbit.lowering.target import parse_target
    from lowbit.lowering.triton.artifact import compile_triton

    fmt = kvcache.KVCacheFormat("uint4", num_kv_heads=8, head_dim=128, page_size=16, group_size=32,
                                key_grouping="channel")
    ir = kernel_ir("attention.lbk", "decode_attention", **attention_constants(fmt, "bfloat16", 32, None, 4))
    art = compile_triton(run_passes(ir, parse_target("triton:sm_90")), "sm_90")
    assert art.aot.cubin and "ld.global" in art.aot.ptx
