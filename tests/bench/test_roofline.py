"""Bytes accounting of the roofline, checked against hand-counted sizes of real quantized weights."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.bench.roofline import (MatmulBytes, achieved_gbps, int4pack_weight_bytes, quantized_weight_bytes,
                                   roofline_fraction)
from lowbit.quant import quantize


@pytest.mark.parametrize("wtype, zero_point, bits", [("int4", False, 4), ("int3", False, 3), ("uint3", True, 3),
                                                     ("float6_e3m2", False, 6), ("uint8", True, 8)])
def test_quantized_weight_bytes_counts_codes_scales_zeros(wtype: str, zero_point: bool, bits: int) -> None:
    n, k, g = 16, 512, 128
    qt = quantize(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), wtype, group_size=g,
                  zero_point=zero_point)
    codes = n * math.ceil(k * bits / 8)
    scales = n * (k // g) * 2                 # float16 scales
    zeros = scales if zero_point else 0       # zeros in the scale dtype by default
    assert quantized_weight_bytes(qt) == codes + scales + zeros


def test_matmul_bytes_and_fraction() -> None:
    b = MatmulBytes(m=4, n=4096, k=4096, weight=4096 * 2048 + 4096 * 32 * 2, act_itemsize=4, out_itemsize=2)
    assert b.activations == 4 * 4096 * 4 and b.outputs == 4 * 4096 * 2
    assert b.total == 4096 * 2048 + 4096 * 32 * 2 + 4 * 4096 * 6
    assert b.bits_per_weight == pytest.approx(4 + 16 / 128)
    assert achieved_gbps(2_000_000_000, 0.5) == pytest.approx(4.0)
    assert roofline_fraction(2_000_000_000, 0.5, gbps=8.0) == pytest.approx(0.5)
    assert math.isnan(roofline_fraction(1, 0.0, 8.0))
    # torch's int4: half a byte per weight plus a bf16 scale and zero per group
    assert int4pack_weight_bytes(4096, 4096, 128) == 4096 * 2048 + 4096 * 32 * 4
