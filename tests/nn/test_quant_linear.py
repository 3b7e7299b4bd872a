"""QuantLinear: forward against an fp64 reference decoded from its buffers without lowbit (conftest.py), backward,
state dicts and their checks, dtype moves, the repack cache of the custom op, and argument errors.

Forward runs on the default backend (TVM on this CPU, Triton on CUDA); the error bound is conftest.py's.
"""
from __future__ import annotations

import gc
import io

import pytest

torch = pytest.importorskip("torch")

import lowbit  # noqa: E402
from lowbit import DTypeError, FormatError, KernelArgumentError, LowbitError, QuantizationError  # noqa: E402
from lowbit import torch_ops  # noqa: E402
from lowbit.nn import QuantLinear  # noqa: E402
from lowbit.quant import QuantizedTensor, quantize  # noqa: E402

from .conftest import U32, assert_within, gamma, linear_reference, linear_tolerance, reference_weight  # noqa: E402

# (weight type, group, zero_point, N, K, x shape, x dtype, bias): odd N everywhere, odd K (99, per-channel),
# a group that is not a power of two (20), 2-D and 3-D inputs, GEMV (M <= 4) and GEMM (M > 4) paths.
CASES = {
    "u4-zeros": ("uint4", 20, True, 37, 100, (2, 3, 100), torch.float32, True),
    "int3": ("int3", None, False, 31, 99, (5, 99), torch.float16, False),
    "f4e2m1": ("float4_e2m1", 16, False, 33, 80, (1, 4, 80), torch.bfloat16, True),
    "int8": ("int8", 32, False, 21, 96, (3, 96), torch.float32, True),
}
#: the largest |w - dequant(q)| in units of the group's scale: half a step for ints; for float4_e2m1 half the
#: widest gap between neighbouring values (4 -> 6)
HALF_STEP = {"uint4": 0.5, "int3": 0.5, "int8": 0.5, "float4_e2m1": 1.0}


def make_case(name: str, seed: int = 0):
    dtype, group, zp, n, k, xshape, xdtype, bias = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.2)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=gen))
    layer = QuantLinear.from_linear(lin, dtype, group_size=group, zero_point=zp)
    x = torch.randn(*xshape, generator=gen).to(xdtype)
    return lin, layer, x


@pytest.fixture(scope="module")
def cases():
    return {name: make_case(name) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_fp64_reference(cases, name):
    lin, layer, x = cases[name]
    y = layer(x)
    n, k = layer.out_features, layer.in_features
    assert y.shape == (*x.shape[:-1], n) and y.dtype == x.dtype
    ref, absdot = linear_reference(x, reference_weight(layer), layer.bias)
    assert_within(y, ref, linear_tolerance(absdot, ref, k, x.dtype), f"QuantLinear {name}")


@pytest.mark.parametrize("name", list(CASES))
def test_holds_the_linear_weights_quantized(cases, name):
    """The buffers decode to the float weights within the quantizer's rounding bound, with the asked config."""
    lin, layer, _ = cases[name]
    dtype, group, zp, n, k, *_ = CASES[name]
    assert (layer.weight_dtype.name, layer.group_size, layer.zero_point) == (dtype, group or k, zp)
    w64 = reference_weight(layer)
    scales = layer.weight_scales.view(torch.float16).double().repeat_interleave(layer.group_size, dim=1)
    err = (w64 - lin.weight.detach().double()).abs()
    assert bool((err <= HALF_STEP[dtype] * scales * (1 + 1e-9)).all())
    if lin.bias is not None:
        assert torch.equal(layer.bias, lin.bias) and layer.bias.data_ptr() != lin.bias.data_ptr()


def test_extra_repr_shows_type_group_and_bits(cases):
    text = repr(cases["u4-zeros"][1])
    # 4 code bits + a float16 scale and a float16 zero per 20 weights = 4 + 32 / 20
    assert text == ("QuantLinear(in_features=100, out_features=37, bias=True, dtype=uint4, group_size=20, "
                    "zero_point=True, bits/weight=5.60)")
    assert "dtype=int3, group_size=99, zero_point=False" in repr(cases["int3"][1])


def test_backward_gives_input_and_bias_gradients(cases):
    """dx = dy @ W (f32 products of the exact dequantized weight), dbias = sum of dy over leading dims."""
    lin, layer, x = cases["u4-zeros"]
    x = x.clone().requires_grad_(True)
    y = layer(x)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    y.backward(gy)
    w64 = reference_weight(layer)
    g64 = gy.double()
    ref_x = g64 @ w64
    tol_x = gamma(layer.out_features + 2) * (g64.abs() @ w64.abs()) + U32 * ref_x.abs()
    assert_within(x.grad, ref_x, tol_x, "dx")
    ref_b = g64.reshape(-1, layer.out_features).sum(0)
    tol_b = gamma(g64.shape[0] * g64.shape[1] + 2) * g64.abs().reshape(-1, layer.out_features).sum(0)
    assert_within(layer.bias.grad, ref_b, tol_b, "dbias")
    assert not layer.weight_scales.requires_grad and layer.weight_scales.grad is None


def test_gradient_for_quantized_weights_is_refused():
    qt = quantize(torch.randn(8, 32), "int4", group_size=16)
    scales = qt.scales.clone().requires_grad_(True)
    qt2 = QuantizedTensor(qt.packed, scales, None, qt.dtype, qt.group_size, qt.shape)
    with pytest.raises(KernelArgumentError, match="scales require grad"):
        torch_ops.quant_matmul(torch.randn(2, 32), qt2, backend="interpret")


def test_state_dict_round_trip(cases):
    _, layer, x = cases["u4-zeros"]
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"weight_packed", "weight_scales", "weight_zeros", "bias", "_extra_state"}
    assert state["_extra_state"] == {"format": "dense-rowmajor", "format_version": 1, "dtype": "uint4",
                                     "group_size": 20, "shape": [37, 100], "scale_dtype": "float16",
                                     "zero_dtype": "float16"}
    fresh = QuantLinear(100, 37, dtype="u4", group_size=20, zero_point=True)
    assert not torch.equal(fresh(x), layer(x))
    fresh.load_state_dict(state)
    assert fresh.qweight == layer.qweight
    assert torch.equal(fresh(x), layer(x))


def test_load_mismatches_raise_format_error():
    src = QuantLinear(64, 8, dtype="u4", group_size=32, backend="interpret")
    state = src.state_dict()
    with pytest.raises(FormatError, match="dtype 'uint4' \\(module: 'uint3'\\)"):
        QuantLinear(64, 8, dtype="u3", group_size=32).load_state_dict(state)
    with pytest.raises(FormatError, match="group_size 32 \\(module: 16\\)"):
        QuantLinear(64, 8, dtype="u4", group_size=16).load_state_dict(state)
    dst = QuantLinear(64, 8, dtype="u4", group_size=32)
    before = dst.weight_packed.clone()
    newer = dict(state, _extra_state=dict(state["_extra_state"], format_version=2))
    with pytest.raises(FormatError, match="packed as dense-rowmajor/v2"):
        dst.load_state_dict(newer)
    assert torch.equal(dst.weight_packed, before)  # checked before anything was copied
    with pytest.raises(FormatError, match="must be torch.int16"):
        dst.load_state_dict(dict(state, weight_scales=state["weight_scales"].view(torch.float16).float()))
    with pytest.raises(FormatError, match="float weight"):
        dst.load_state_dict(torch.nn.Linear(64, 8).state_dict())
    with pytest.raises(FormatError, match="not lowbit's"):
        dst.load_state_dict(dict(state, _extra_state={"format": "x"}))


def test_dtype_casts_do_not_touch_scales(cases):
    """model.half() casts the bias (as for nn.Linear) but never re-rounds the scales or zeros."""
    _, layer, x = make_case("u4-zeros", seed=3)
    before = {name: getattr(layer, name).clone() for name in ("weight_packed", "weight_scales", "weight_zeros")}
    layer.half()
    assert layer.bias.dtype == torch.float16
    for name, value in before.items():
        assert torch.equal(getattr(layer, name), value)
    xh = x.half()
    ref, absdot = linear_reference(xh, reference_weight(layer), layer.bias)
    assert_within(layer(xh), ref, linear_tolerance(absdot, ref, layer.in_features, torch.float16), "after .half()")


def test_repack_cache_reuses_and_notices_changes(cases, monkeypatch):
    """The op repacks once per weight storage; an in-place update (or load_state_dict) forces a repack, so the
    output follows the new weights; freed weights leave the cache."""
    calls = []
    original = QuantizedTensor.codes
    monkeypatch.setattr(QuantizedTensor, "codes", lambda self: calls.append(1) or original(self))
    _, layer, x = make_case("int8", seed=1)
    _, other, _ = make_case("int8", seed=2)
    first = layer(x)
    assert len(calls) == 1
    size = torch_ops.cache_size()
    assert torch.equal(layer(x), first) and len(calls) == 1 and torch_ops.cache_size() == size
    with torch.no_grad():
        layer.weight_packed.copy_(other.weight_packed)
        layer.weight_scales.copy_(other.weight_scales)
        layer.bias.copy_(other.bias)
    assert torch.equal(layer(x), other(x))
    assert len(calls) == 3  # one repack for each layer's new state
    layer.load_state_dict(make_case("int8", seed=5)[1].state_dict())
    ref, absdot = linear_reference(x, reference_weight(layer), layer.bias)
    assert_within(layer(x), ref, linear_tolerance(absdot, ref, layer.in_features, x.dtype), "after load")
    before = torch_ops.cache_size()
    del layer, other
    gc.collect()
    assert torch_ops.cache_size() < before


def test_to_device_moves_every_buffer():
    layer = QuantLinear(32, 8, dtype="int4", group_size=16, backend="interpret")
    moved = layer.to("meta")
    assert {t.device.type for t in (*moved.buffers(), *moved.parameters())} == {"meta"}


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(dtype="uint4x"), DTypeError, "unknown dtype"),
    (dict(dtype="float16"), QuantizationError, "1..8-bit"),
    (dict(dtype="u4", group_size=48), QuantizationError, "does not divide K = 64"),
    (dict(dtype="u4", group_size=0), QuantizationError, "positive int"),
    (dict(dtype="float4_e2m1", zero_point=True), QuantizationError, "no zero point"),
    (dict(dtype="int1", zero_point=False), QuantizationError, "no positive level"),
    (dict(dtype="u4", backend="cuda"), KernelArgumentError, "backend must be one of"),
])
def test_constructor_errors(kwargs, error, text):
    with pytest.raises(error, match=text) as info:
        QuantLinear(64, 8, **kwargs)
    assert isinstance(info.value, LowbitError)


def test_forward_argument_errors():
    layer = QuantLinear(64, 8, dtype="int4", group_size=32, backend="interpret")
    with pytest.raises(KernelArgumentError, match=r"shape \[\.\.\., 64\]"):
        layer(torch.randn(2, 63))
    with pytest.raises(KernelArgumentError, match="float16, bfloat16 or float32"):
        layer(torch.randn(2, 64, dtype=torch.float64))
    with pytest.raises(QuantizationError, match="torch.nn.Linear"):
        QuantLinear.from_linear(torch.nn.Conv1d(4, 4, 1), "u4")


def test_public_name():
    assert lowbit.nn.QuantLinear is QuantLinear
