"""Shared helpers for the Triton code generator tests: run a kernel through generated Triton code (the
interpreter on a CPU, natively with CUDA) and through the IR's reference interpreter, on the same data."""
from __future__ import annotations

import types
from typing import Any, Mapping

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import ml_dtypes  # noqa: E402

from lowbit.ir import interpret  # noqa: E402
from lowbit.lowering.triton import build_triton  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)


def to_torch(a: Any, device: str = "cpu") -> Any:
    if not isinstance(a, np.ndarray):
        return a
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(a.copy()).to(device)


def to_numpy(t: Any) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(BF16)
    return t.numpy()


def run_both(kernel, args: Mapping[str, Any], *, cache_dir, mode: str = "interpret", constants=None,
             shape_bindings=None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(outputs of the generated Triton kernel, outputs of lowbit.ir.interpret) for the same inputs; ``mode``
    "native" runs on the GPU with CUDA tensors."""
    device = "cuda" if mode == "native" else "cpu"
    k = build_triton(kernel, mode=mode, cache_dir=cache_dir)
    targs = {name: to_torch(v, device) for name, v in args.items()}
    k.launch(targs, constants=constants, shape_bindings=shape_bindings)
    ref = interpret(kernel, {name: (v.copy() if isinstance(v, np.ndarray) else v) for name, v in args.items()},
                    constants=constants, shape_bindings=shape_bindings)
    got = {name: to_numpy(v) for name, v in targs.items() if isinstance(args[name], np.ndarray)}
    return got, {name: v for name, v in ref.items() if isinstance(v, np.ndarray)}


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """Bit-exact equality (floats compared by bit pattern, except that every NaN equals every NaN)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape, want.shape)
    if got.dtype.kind == "f" or got.dtype == BF16:
        g, w = got.astype(np.float64), want.astype(np.float64)
        both_nan = np.isnan(g) & np.isnan(w)
        ug = got.view(np.uint16 if got.itemsize == 2 else np.uint32)
        uw = want.view(np.uint16 if want.itemsize == 2 else np.uint32)
        bad = (ug != uw) & ~both_nan
    else:
        bad = got != want
    if bad.any():
        idx = np.argwhere(bad)[:5]
        detail = ", ".join(f"{tuple(i)}: got {got[tuple(i)]!r} want {want[tuple(i)]!r}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements differ ({detail})")


def assert_within(got: np.ndarray, want: np.ndarray, bound: Any, what: str = "") -> None:
    """|got - want| <= bound elementwise (in float64), NaN only where the reference has NaN."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(w)), f"{what}: NaN positions differ"
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity (equal anyway)
        ok = np.isnan(w) | (g == w) | (np.abs(g - w) <= bound)
    if not ok.all():
        idx = np.argwhere(~ok)[:5]
        b = np.broadcast_to(bound, w.shape)
        detail = ", ".join(f"{tuple(i)}: got {g[tuple(i)]} want {w[tuple(i)]} bound {b[tuple(i)]}" for i in idx)
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} elements out of bounds ({detail})")


def f16_ulp(x: np.ndarray) -> np.ndarray:
    """The float16 spacing at |x| (subnormal spacing near 0)."""
    a = np.abs(x.astype(np.float64))
    e = np.floor(np.log2(np.maximum(a, 2.0**-14)))
    return 2.0 ** (e - 10)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lowbit-triton-src")


@pytest.fixture(scope="session")
def H():
    """The helpers above as attributes (H.run_both, H.assert_bits_equal, ...)."""
    return types.SimpleNamespace(run_both=run_both, assert_bits_equal=assert_bits_equal, assert_within=assert_within,
                                 f16_ulp=f16_ulp, to_torch=to_torch, to_numpy=to_numpy, BF16=BF16)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


_NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(params=["interpret", pytest.param("native", marks=[
    pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA, reason="needs a CUDA GPU")])])
def mode(request):
    """Run the generated code under Triton's interpreter (CPU tensors) and, with CUDA, natively."""
    return request.param
