"""RowQuantizer: the same bits as quantize_arrays (the general quantizer, itself checked against exact rationals in
test_quantizer.py) for every code type, mode and scale type, and the same errors."""
import numpy as np
import pytest
import torch

from lowbit.dtypes import dtype
from lowbit.errors import QuantizationError
from lowbit.quant.quantizer import quantize_arrays
from lowbit.quant.rows import RowQuantizer

INT_TYPES = [f"{k}{n}" for k in ("int", "uint") for n in range(1, 9)]
FLOAT_TYPES = ["float3_e1m1", "float4_e2m1", "float5_e2m2", "float6_e3m2", "float6_e2m3", "float8_e4m3fn",
               "float8_e5m2"]


def _bits(a):
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        raw = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[a.element_size()]
        return a.dtype, tuple(a.shape), a.view(raw).numpy().tobytes()
    return a.dtype, a.shape, np.ascontiguousarray(a).view(np.uint8).tobytes()


def _inputs(rng, shape):
    base = rng.standard_normal(shape).astype(np.float32)
    yield base
    yield base * 1e-6                                   # tiny scales: the scale type's smallest normal
    yield np.round(base * 4) / 4                        # ties in w / s
    zeroed = base.copy()
    zeroed[..., :8] = 0                                 # an all-zero group
    yield zeroed
    yield np.abs(base)                                  # one-signed groups (zero points at the range's end)


def _configs():
    for t in INT_TYPES + FLOAT_TYPES:
        modes = (False,) if dtype(t).is_float else (False, True)
        for zp in modes:
            if not zp and dtype(t).nbits == 1:      # two codes: no symmetric level (refused)
                continue
            yield t, zp


@pytest.mark.parametrize("t,zp", list(_configs()))
@pytest.mark.parametrize("scale_dtype", ["float16", "bfloat16", "float32"])
def test_bit_for_bit_with_quantize_arrays(t, zp, scale_dtype):
    rng = np.random.default_rng(hash((t, zp, scale_dtype)) % 2**32)
    for g in (8, 64, None):
        rq = RowQuantizer(t, g, zp, scale_dtype)
        for x in _inputs(rng, (3, 2, 64)):
            expected = [_bits(a) for a in quantize_arrays(x, t, g, zp, scale_dtype)[:3]]
            assert [_bits(a) for a in rq(x)] == expected, (g, x.flat[:4])
            xt = torch.from_numpy(x)
            expected = [_bits(a) for a in quantize_arrays(xt, t, g, zp, scale_dtype)[:3]]
            assert [_bits(a) for a in rq(xt)] == expected


@pytest.mark.parametrize("src", [torch.bfloat16, torch.float16, torch.float64])
def test_torch_input_dtypes(src):
    x = torch.randn(4, 32, dtype=torch.float64).to(src)
    rq = RowQuantizer("int4", 16, True)
    assert [_bits(a) for a in rq(x)] == [_bits(a) for a in quantize_arrays(x, "int4", 16, True)[:3]]


def test_bfloat16_scales_round_up_past_a_double_rounding():
    """ml_dtypes casts float64 to bfloat16 through float32: just above a midpoint it can land on the value
    below; the scale must still be the smallest bfloat16 >= absmax / max."""
    import ml_dtypes

    lo = np.arange(0x3F80, 0x3FC0, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)
    step = 2.0 ** (np.floor(np.log2(lo)) - 7)             # bfloat16 keeps 8 significant bits
    mid = lo + step / 2
    absmax = mid * (1 + 1e-12) * 7                       # int4: scale = absmax / 7, just above each midpoint
    x = np.zeros((len(mid), 8))
    x[:, 0] = absmax
    _, scales, _ = RowQuantizer("int4", 8, scale_dtype="bfloat16")(x)
    s = scales.astype(np.float64)[:, 0]
    assert np.all(s >= absmax / 7)
    below = (scales[:, 0].view(np.uint16) - 1).view(ml_dtypes.bfloat16).astype(np.float64)  # one step down
    assert np.all(below < absmax / 7)


def test_fallbacks_raise_the_general_errors():
    rq = RowQuantizer("int4", 8)
    x = np.ones((2, 16))
    x[1, 3] = np.nan
    with pytest.raises(QuantizationError, match=r"finite.*\(1, 3\)"):
        rq(x)
    with pytest.raises(QuantizationError, match="above the largest float16"):
        rq(np.full((1, 8), 1e6))
    with pytest.raises(QuantizationError, match="group_size 8 does not divide"):
        rq(np.ones((1, 12)))


def test_bad_configuration_raises_at_construction():
    with pytest.raises(QuantizationError, match="no positive level"):
        RowQuantizer("int1", 8)
    with pytest.raises(QuantizationError, match="float type"):
        RowQuantizer("float4_e2m1", 8, zero_point=True)
