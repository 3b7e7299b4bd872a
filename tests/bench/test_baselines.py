"""torch's int4 CPU kernel as a baseline: lowbit's int4/uint4 weights converted to its packed format give
the dequantized weight (checked by multiplying the identity, and a random x against float64)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lowbit.bench.baselines import int4_unsupported_reason, int4pack_linear, to_int4pack  # noqa: E402
from lowbit.bench.reference import BF16_TOLERANCE, check_matmul, check_rows  # noqa: E402
from lowbit.errors import BackendError  # noqa: E402
from lowbit.quant import quantize  # noqa: E402


@pytest.mark.parametrize("wtype, zero_point", [("uint4", False), ("uint4", True), ("int4", False), ("int4", True)])
@pytest.mark.parametrize("group", [32, 128])
def test_int4pack_reproduces_the_dequantized_weight(wtype: str, zero_point: bool, group: int) -> None:
    n, k = 48, 256
    gen = torch.Generator().manual_seed(3)
    qt = quantize(torch.randn(n, k, generator=gen) + 0.3, wtype, group_size=group, zero_point=zero_point)
    packed, sz = to_int4pack(qt)
    assert packed.dtype == torch.uint8 and tuple(packed.shape) == (n, k // 2)
    assert tuple(sz.shape) == (k // group, n, 2) and sz.dtype == torch.bfloat16
    reference = qt.dequantize().double()                          # [N, K], lowbit's own reference
    eye = torch.eye(k, dtype=torch.bfloat16)
    seen = int4pack_linear(eye, packed, sz, group).double().T     # the weight as torch's kernel sees it
    # only the bf16 roundings of scale, zero and output separate them: a few 2^-9 of the group's range
    span = reference.abs().reshape(n, k // group, group).amax(-1).repeat_interleave(group, dim=1)
    assert float(((seen - reference).abs() / span).max()) < 2.0 ** -6
    x = torch.randn(5, k, generator=gen).bfloat16()
    rows = check_rows(n, n)
    assert check_matmul(int4pack_linear(x, packed, sz, group), x, reference.float(), rows, BF16_TOLERANCE).ok


def test_wrong_nibble_order_is_caught() -> None:
    """The check that guards the baseline notices a weight whose int4 codes were not converted."""
    n, k, g = 32, 128, 32
    qt = quantize(torch.randn(n, k, generator=torch.Generator().manual_seed(0)), "int4", group_size=g)
    packed, sz = to_int4pack(qt)
    raw = torch.ops.aten._convert_weight_to_int4pack_for_cpu(qt.codes().to(torch.int32).contiguous(), 1)
    x = torch.randn(2, k).bfloat16()
    rows = check_rows(n, n)
    assert check_matmul(int4pack_linear(x, packed, sz, g), x, qt.dequantize(), rows, BF16_TOLERANCE).ok
    assert not check_matmul(int4pack_linear(x, raw, sz, g), x, qt.dequantize(), rows, BF16_TOLERANCE).ok


def test_unsupported_weights_are_refused() -> None:
    with pytest.raises(BackendError, match="int4/uint4"):
        to_int4pack(quantize(torch.randn(16, 64), "float4_e2m1", group_size=32))
    with pytest.raises(BackendError, match="multiple of 16"):
        to_int4pack(quantize(torch.randn(8, 64), "int4", group_size=32))
    assert "group size 16" in int4_unsupported_reason(32, 64, 16)
    assert int4_unsupported_reason(4096, 4096, 128) is None
