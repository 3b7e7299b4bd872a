"""QuantizedTensor: fields, unpacking, dequantize, devices, equality, format ids and the repack cache."""
from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
import torch

from lowbit import DTypeError, FormatError
from lowbit.dtypes import dtype
from lowbit.packing import pack
from lowbit.quant import DENSE_ROWMAJOR, FormatId, QuantizedTensor, quantize


def weights(shape=(4, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_fields_and_layout():
    w = weights((2, 3, 64))
    qt = quantize(w, "int3", group_size=32, zero_point=True)
    assert qt.shape == (2, 3, 64) and qt.group_size == 32 and qt.dtype is dtype("int3")
    assert qt.format == DENSE_ROWMAJOR == FormatId("dense-rowmajor", 1)
    assert qt.packed.dtype == np.uint8 and qt.packed.shape == (2, 3, 24)  # 64 * 3 / 8
    assert qt.scales.shape == qt.zeros.shape == (2, 3, 2)
    codes = qt.codes()
    assert codes.dtype == np.uint8 and codes.shape == (2, 3, 64) and codes.max() < 8
    assert np.array_equal(pack(codes, 3), qt.packed)  # each row packed separately along K
    assert qt.num_groups == 2 and not qt.is_torch and qt.device == "numpy"


def test_dequantize_formula_independently():
    w = weights((3, 64), seed=1)
    qt = quantize(w, "uint4", group_size=16, zero_point=True)
    codes = qt.codes().astype(np.float64)
    s = np.repeat(qt.scales.astype(np.float64), 16, axis=1)
    z = np.repeat(qt.zeros.astype(np.float64), 16, axis=1)
    want = (codes - z) * s  # exact in float64; and exact in float32 too (small ints times fp16)
    assert np.array_equal(qt.dequantize(), want.astype(np.float32))
    assert np.array_equal(qt.dequantize("float64"), want)
    qf = quantize(w, "float4_e2m1", group_size=32)
    vals = dtype("float4_e2m1").values()[qf.codes()]
    want = vals * np.repeat(qf.scales.astype(np.float64), 32, axis=1)
    assert np.array_equal(qf.dequantize(np.float64), want)


@pytest.mark.parametrize("spec,np_type,torch_type", [
    (None, np.float32, torch.float32), ("float16", np.float16, torch.float16),
    ("bf16", ml_dtypes.bfloat16, torch.bfloat16), (np.float64, np.float64, torch.float64),
    (torch.float16, np.float16, torch.float16),
])
def test_dequantize_dtypes(spec, np_type, torch_type):
    w = weights()
    qn = quantize(w, "int4", group_size=32)
    out = qn.dequantize() if spec is None else qn.dequantize(spec)
    assert out.dtype == np.dtype(np_type)
    assert np.array_equal(out.astype(np.float64), qn.dequantize("float64").astype(np_type).astype(np.float64))
    qt = qn.to("cpu")
    tout = qt.dequantize() if spec is None else qt.dequantize(spec)
    assert tout.dtype == torch_type
    assert np.array_equal(tout.to(torch.float64).numpy(), out.astype(np.float64))


def test_dequantize_rejects_other_dtypes():
    qt = quantize(weights(), "int4", group_size=32)
    with pytest.raises(DTypeError, match="float16, bfloat16, float32 or float64"):
        qt.dequantize("int8")


def test_nbytes():
    qt = quantize(weights((8, 128)), "uint3", group_size=32, zero_point=True)
    assert qt.nbytes == 8 * 48 + 8 * 4 * 2 + 8 * 4 * 2
    assert qt.to("cpu").nbytes == qt.nbytes
    assert quantize(weights((8, 128)), "int4", group_size=128, scale_dtype="float32").nbytes == 8 * 64 + 8 * 4


def test_to_and_numpy_round_trip():
    for kwargs in (dict(scale_dtype="bfloat16"), dict(scale_dtype="float8_e4m3fn"),
                   dict(zero_point=True, scale_dtype="float16")):
        name = "uint4" if kwargs.get("zero_point") else "int4"
        qn = quantize(weights(), name, group_size=32, **kwargs)
        qt = qn.to("cpu")
        assert qt.is_torch and qt.device == torch.device("cpu")
        assert qt.scales.dtype == getattr(torch, kwargs["scale_dtype"])
        assert qt.numpy() == qn
        assert np.array_equal(qt.dequantize().numpy(), qn.dequantize())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_device():
    qt = quantize(torch.randn(4, 64, device="cuda"), "int4", group_size=32)
    assert qt.packed.device.type == "cuda" and qt.dequantize().device.type == "cuda"
    assert qt.to("cpu").numpy() == qt.numpy()


def test_equality_and_hash():
    w = weights()
    a, b = quantize(w, "int4", group_size=32), quantize(w, "int4", group_size=32)
    assert a == b and a is not b
    assert a != quantize(w, "int4", group_size=64)
    assert a != quantize(w * 2, "int4", group_size=32)
    assert a != a.to("cpu")  # numpy vs torch storage
    assert a.to("cpu") == b.to("cpu")
    with pytest.raises(TypeError):
        hash(a)
    a.get_packed(FormatId("x", 1), lambda q: 1)
    assert a == b  # the cache is not compared


def test_frozen_and_repr():
    qt = quantize(weights(), "uint2", group_size=32, zero_point=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        qt.group_size = 64
    text = repr(qt)
    for part in ("shape=[4, 64]", "dtype=uint2", "group_size=32", "scales=float16", "zeros=float16",
                 "format=dense-rowmajor/v1", "storage=numpy"):
        assert part in text


def test_format_ids():
    assert str(FormatId("gemv-tile", 3)) == "gemv-tile/v3"
    for bad in (dict(name="", version=1), dict(name="a b", version=1), dict(name="ok", version=0),
                dict(name="ok", version=True), dict(name="ok", version="1")):
        with pytest.raises(FormatError):
            FormatId(**bad)
    qt = quantize(weights(), "int4", group_size=32)
    qt.check_format(DENSE_ROWMAJOR)
    with pytest.raises(FormatError, match="packed as dense-rowmajor/v1, but dense-rowmajor/v2 was expected"):
        qt.check_format(FormatId("dense-rowmajor", 2))


def test_get_packed_builds_once_and_checks_versions():
    qt = quantize(weights(), "int4", group_size=32)
    calls = []

    def build(q):
        calls.append(q)
        return q.codes().T.copy()

    v1 = FormatId("transposed", 1)
    first = qt.get_packed(v1, build)
    second = qt.get_packed(v1, build)
    assert first is second and len(calls) == 1 and calls[0] is qt
    with pytest.raises(FormatError, match="already packed as transposed/v1; transposed/v2 was requested"):
        qt.get_packed(FormatId("transposed", 2), build)
    with pytest.raises(FormatError, match="needs a FormatId"):
        qt.get_packed(("transposed", 1), build)

    @dataclasses.dataclass
    class Packed:
        format: FormatId

    with pytest.raises(FormatError, match="produced data in format other/v1"):
        qt.get_packed(FormatId("tiles", 1), lambda q: Packed(FormatId("other", 1)))
    ok = qt.get_packed(FormatId("tiles", 2), lambda q: Packed(FormatId("tiles", 2)))
    assert ok.format == FormatId("tiles", 2)
    moved = qt.to("cpu")
    assert moved._repacked == {}  # caches belong to one storage


def test_constructor_validates():
    qt = quantize(weights(), "int4", group_size=32, zero_point=True)
    good = dict(packed=qt.packed, scales=qt.scales, zeros=qt.zeros, dtype="int4", group_size=32, shape=(4, 64))
    rebuilt = QuantizedTensor(**good)
    assert rebuilt == qt and rebuilt.dtype is dtype("int4")
    cases = [
        (dict(packed=qt.packed[:, :-1]), r"packed .* must have shape \[4, 32\]; got \[4, 31\]"),
        (dict(scales=qt.scales[:, :1]), r"scales .* must have shape \[4, 2\]"),
        (dict(zeros=qt.zeros[:1]), r"zeros .* must have shape"),
        (dict(group_size=48), "positive divisor of K = 64"),
        (dict(packed=qt.packed.astype(np.int8)), "must be uint8"),
        (dict(dtype="float16"), "1..8-bit"),
        (dict(dtype="float4_e2m1", packed=qt.packed), "no zero points"),
        (dict(format=("dense-rowmajor", 1)), "must be a FormatId"),
        (dict(shape=(4, 0)), "K >= 1"),
        (dict(scales=torch.from_numpy(qt.scales)), "must both be numpy arrays or both torch tensors"),
    ]
    for change, pattern in cases:
        with pytest.raises(FormatError, match=pattern):
            QuantizedTensor(**{**good, **change})


def test_numpy_use_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from lowbit.quant import quantize; "
            "q = quantize(np.ones((2, 64), np.float32), 'uint4', group_size=32, zero_point=True); "
            "q.dequantize(); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


@pytest.mark.parametrize("zero_point", [False, True])
def test_stack_rows_is_the_quantized_concatenation(zero_point):
    """Quantization is row by row: stacking quantized parts equals quantizing the stacked weight."""
    from lowbit.quant import stack_rows

    w = torch.randn(40, 64)
    parts = [quantize(w[a:b], "uint4" if zero_point else "int4", 32, zero_point=zero_point)
             for a, b in ((0, 24), (24, 32), (32, 40))]
    whole = quantize(w, "uint4" if zero_point else "int4", 32, zero_point=zero_point)
    stacked = stack_rows(parts)
    assert stacked.shape == (40, 64)
    for name in ("packed", "scales", "zeros"):
        a, b = getattr(stacked, name), getattr(whole, name)
        assert (a is None and b is None) or torch.equal(a, b), name


def test_stack_rows_refuses_parts_stored_differently():
    from lowbit.quant import stack_rows

    w = torch.randn(8, 64)
    base = quantize(w, "int4", 32)
    for other in (quantize(w, "int4", 16), quantize(w, "int8", 32), quantize(w, "uint4", 32, zero_point=True),
                  quantize(w, "int4", 32, scale_dtype="float32"), quantize(w[:, :32], "int4", 32),
                  quantize(w.numpy(), "int4", 32), w):
        assert stack_rows([base, other]) is None
    assert stack_rows([]) is None
