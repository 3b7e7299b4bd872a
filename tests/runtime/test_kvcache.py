"""The paged KV format (lowbit.kvcache) and the page allocator (lowbit.runtime.paged_cache).

References: the bytes of a page are checked against a little-endian bitstream built here with Python
integers from ``QuantizedTensor.codes()``; values against ``QuantizedTensor.dequantize()`` (the quant
module's own dequantizer, not kvcache's).
"""
from __future__ import annotations

import pytest
import torch

from lowbit import kvcache
from lowbit.errors import QuantizationError, RuntimeModelError
from lowbit.kvcache import KVCacheFormat
from lowbit.quant import quantize
from lowbit.runtime import PagedKVCache


def bitstream(codes: list[int], nbits: int) -> list[int]:
    """Little-endian bitstream of ``codes`` (element i at bits [i*n, (i+1)*n)), as bytes."""
    acc = sum(int(c) << (i * nbits) for i, c in enumerate(codes))
    return list(acc.to_bytes((len(codes) * nbits + 7) // 8, "little"))


@pytest.mark.parametrize("dtype,group,zp", [("uint4", None, True), ("int3", 8, False), ("float4_e2m1", 4, False),
                                            ("int5", 16, True), ("float8_e4m3fn", None, False)])
def test_append_stores_the_documented_bytes_and_reads_back(dtype, group, zp):
    fmt = KVCacheFormat(dtype, num_kv_heads=2, head_dim=16, page_size=4, group_size=group, zero_point=zp)
    layer = kvcache.allocate(fmt, num_pages=3)
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(5, 2, 16, generator=gen)
    v = torch.randn(5, 2, 16, generator=gen) * 3
    slots = torch.tensor([9, 2, 3, 4, 11])  # pages 2, 0, 0, 1, 2
    kvcache.append(layer, k, v, slots)
    g = fmt.group_size
    for x, codes, scales, zeros in ((k, layer.k, layer.k_scales, layer.k_zeros), (v, layer.v, layer.v_scales, layer.v_zeros)):
        for t, slot in enumerate(slots.tolist()):
            page, off = divmod(slot, 4)
            for h in range(2):
                qt = quantize(x[t, h][None], dtype, group_size=g, zero_point=zp)
                assert codes[page, h, off].tolist() == bitstream(qt.codes()[0].tolist(), fmt.nbits)
                assert torch.equal(scales[page, h, off], qt.scales[0])
                if zp:
                    assert torch.equal(zeros[page, h, off], qt.zeros[0])
                else:
                    assert zeros is None
    # untouched slots stay zero
    assert int(layer.k[0, :, 0].abs().sum()) == 0 and int(layer.k[1, :, 1:].abs().sum()) == 0
    # read_pages: block table [2, 0] -> tokens at slots 8..11, 0..3
    keys, values = kvcache.read_pages(layer, torch.tensor([[2, 0], [1, 1]]))
    assert keys.shape == (2, 2, 8, 16)
    for x, got in ((k, keys), (v, values)):
        want = torch.as_tensor(quantize(x.reshape(-1, 16), dtype, group_size=g, zero_point=zp).dequantize()).reshape(5, 2, 16)
        torch.testing.assert_close(got[0, :, 1], want[0], rtol=0, atol=0)  # slot 9 = page 2 offset 1
        torch.testing.assert_close(got[0, :, 3], want[4], rtol=0, atol=0)  # slot 11
        torch.testing.assert_close(got[0, :, 6], want[1], rtol=0, atol=0)  # slot 2 = page 0 offset 2
        torch.testing.assert_close(got[0, :, 7], want[2], rtol=0, atol=0)  # slot 3
        torch.testing.assert_close(got[1, :, 0], want[3], rtol=0, atol=0)  # slot 4 = page 1 offset 0


def test_dense_cache_stores_values():
    fmt = KVCacheFormat("f16", num_kv_heads=1, head_dim=8, page_size=2)
    layer = kvcache.allocate(fmt, 2)
    assert layer.k.dtype == torch.float16 and layer.k_scales is None
    x = torch.randn(3, 1, 8)
    kvcache.append(layer, x, -x, torch.tensor([1, 2, 3]))
    keys, values = kvcache.read_pages(layer, torch.tensor([[0, 1]]))
    torch.testing.assert_close(keys[0, :, 1:4], x.half().float().transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(values[0, :, 1:4], -x.half().float().transpose(0, 1), rtol=0, atol=0)


def test_bytes_per_token():
    # 2 (K,V) * 4 heads * (64 dims * 3 bits = 24 bytes + 2 groups * 2 bytes scale) = 224
    assert KVCacheFormat("int3", 4, 64, group_size=32).bytes_per_token() == 224
    # uint4 adds zeros: 2 * 4 * (32 + 2 + 2) = 288
    assert KVCacheFormat("u4", 4, 64).bytes_per_token() == 288
    assert KVCacheFormat("bf16", 4, 64).bytes_per_token() == 2 * 4 * 64 * 2
    layer = kvcache.allocate(KVCacheFormat("u4", 4, 64, page_size=8), 3)
    assert kvcache.layer_nbytes(layer) == 3 * 8 * 288


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype="uint4", zero_point=False), "zero points"),
    (dict(dtype="float4_e2m1", zero_point=True), "float type"),
    (dict(dtype="int4", group_size=5), "divide head_dim"),
    (dict(dtype="int32"), "1-8 bit"),
    (dict(dtype="int4", page_size=0), "page_size"),
])
def test_format_rejects_bad_settings(kwargs, match):
    args = dict(num_kv_heads=2, head_dim=16)
    args.update(kwargs)
    with pytest.raises(QuantizationError, match=match):
        KVCacheFormat(**args)


def fmt16():
    return KVCacheFormat("float16", num_kv_heads=1, head_dim=8, page_size=4)


def test_allocator_block_tables_slots_and_reuse():
    cache = PagedKVCache(fmt16(), num_layers=2, num_pages=5)
    slots = cache.reserve({0: 6, 1: 3})
    assert slots[0].tolist() == [0, 1, 2, 3, 4, 5] and cache.block_table(0) == [0, 1]
    assert slots[1].tolist() == [8, 9, 10] and cache.block_table(1) == [2]
    assert cache.reserve({1: 2})[1].tolist() == [11, 12]  # fills page 2, opens page 3
    assert cache.block_table(1) == [2, 3] and cache.length(1) == 5 and cache.free_pages == 1
    tables = cache.block_tables([1, 0])
    assert tables.dtype == torch.int32 and tables.tolist() == [[2, 3], [0, 1]]
    assert cache.lengths([0, 1]).tolist() == [6, 5]
    cache.free(0)
    assert cache.free_pages == 3 and cache.length(0) == 0
    assert cache.reserve({2: 9})[2].tolist()[:4] == [0, 1, 2, 3]  # freed pages are reused
    assert sorted(cache.block_table(2)) == [0, 1, 4]


def test_full_cache_is_an_error_and_allocates_nothing():
    cache = PagedKVCache(fmt16(), num_layers=1, num_pages=3)
    cache.reserve({0: 7})
    with pytest.raises(RuntimeModelError, match=r"KV cache full: 2 more page\(s\) of 4 tokens needed, 1 of 3 free") as info:
        cache.reserve({0: 1, 1: 5})
    assert "more pages" in info.value.hint
    assert cache.length(0) == 7 and cache.length(1) == 0 and cache.free_pages == 1
    cache.reserve({0: 1})  # still usable: exactly fills page 1
    assert cache.free_pages == 1


def test_bytes_read_counts_cached_tokens():
    fmt = KVCacheFormat("int4", num_kv_heads=2, head_dim=16, page_size=4)
    cache = PagedKVCache(fmt, num_layers=3, num_pages=8)
    cache.reserve({0: 5, 1: 2})
    assert cache.bytes_read([0, 1]) == 7 * fmt.bytes_per_token() * 3
    assert cache.nbytes() == 3 * 8 * 4 * fmt.bytes_per_token()
