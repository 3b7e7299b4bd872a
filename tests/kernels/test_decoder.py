"""``rms_norm``, ``add_rms_norm``, ``rope`` and ``silu_mul`` (``decoder.lbk``) through :mod:`lowbit.ops`.

Reference: float64 torch on the inputs' exact values. Error bounds (u = 2^-24; both kernels compute in f32):

* **rms_norm**: the sum of ``H`` squares (positive terms) is within ``gamma_H`` relative; the division by
  ``H``, the ``+ eps``, ``sqrt`` (which halves a relative error), the reciprocal and the two products add one
  rounding each: ``|y - y*| <= (gamma_H / 2 + 8 u) |y*|`` before the output's rounding (``u_out |y*|`` plus
  half its smallest subnormal).
* **add_rms_norm**: the sum ``x + delta`` is exact: the float64 sum of the two (exact for these magnitudes)
  rounded to float32, then to ``x``'s dtype, as a torch add in that dtype rounds; the norm is rms_norm's, of
  that sum.
* **rope**: ``x cos -+ x' sin``: two products and a sum (or a fused multiply-add), each within one rounding:
  ``3 u (|x cos| + |x' sin|)`` before the output's rounding.
* **silu_mul**: ``gate / (1 + e^-gate) * up`` with ``exp`` trusted to 4 ulp: ``1 + e^-gate`` is within ``5 u``,
  the reciprocal and two products add one each: ``12 u |y*|`` before the output's rounding. Gates stay above
  -80, where ``e^-gate`` is a float32 (below about -88 it overflows and the result is 0, as in torch's silu).
"""
from __future__ import annotations

import pytest

from lowbit import KernelArgumentError, ops

from .conftest import TINY_OUT, U32, U_OUT, assert_within, gamma, require_backend

torch = pytest.importorskip("torch")

BACKENDS = ["interpret", "tvm", "triton"]
FLOATS = [torch.float32, torch.bfloat16, torch.float16]


def _rows(m: int, h: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """``[m, h]`` rows over many binades: row r scaled by 2^(±8 r) (a float16 row stays in range), the last one
    zero when ``m`` > 2 (the norm is then 0: only ``eps`` keeps it finite)."""
    g = torch.Generator().manual_seed(seed)
    top = 6 if dtype == torch.float16 else 30
    scale = torch.tensor([2.0 ** (top * ((r % 3) - 1)) for r in range(m)])[:, None]
    x = (torch.randn(m, h, generator=g) * scale).to(dtype)
    if m > 2:
        x[-1] = 0
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype, w_dtype, out_dtype", [
    (torch.float32, torch.float32, torch.float32), (torch.float32, torch.float32, torch.bfloat16),
    (torch.float32, torch.bfloat16, torch.float16), (torch.bfloat16, torch.float32, torch.bfloat16),
    (torch.float16, torch.float16, torch.float32)])
@pytest.mark.parametrize("m, h", [(1, 64), (4, 96)])
def test_rms_norm_matches_float64(backend, x_dtype, w_dtype, out_dtype, m, h):
    require_backend(backend)
    x = _rows(m, h, x_dtype, seed=m + h)
    w = (torch.rand(h, generator=torch.Generator().manual_seed(h)) * 4 - 2).to(w_dtype)
    eps = 1e-5
    got = ops.rms_norm(x, w, eps=eps, out_dtype=out_dtype, backend=backend)
    assert got.dtype == out_dtype and got.shape == x.shape
    x64, w64 = x.double(), w.double()
    ref = w64 * x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    u_out = U_OUT[out_dtype]
    tol = (gamma(h) / 2 + 8 * U32) * (1 + u_out) * ref.abs() + u_out * ref.abs() + TINY_OUT[out_dtype]
    assert_within(got, ref, tol, f"rms_norm {backend} x {x_dtype} w {w_dtype} -> {out_dtype}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_eps_dominates_tiny_rows(backend):
    """A row far below sqrt(eps) is scaled by ~1/sqrt(eps), not normalized to unit rms: dropping eps fails."""
    require_backend(backend)
    x = torch.full((1, 64), 2.0 ** -30)
    got = ops.rms_norm(x, torch.ones(64), eps=1e-6, backend=backend)
    ref = x.double() / (2.0 ** -60 + 1e-6) ** 0.5
    assert_within(got, ref, (gamma(64) / 2 + 8 * U32) * ref.abs(), f"rms_norm {backend} tiny row")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype, d_dtype, out_dtype", [
    (torch.float32, torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32, torch.float32),
    (torch.float32, torch.float16, torch.float32), (torch.bfloat16, torch.float32, torch.float16)])
@pytest.mark.parametrize("shape", [(1, 64), (4, 96), (2, 3, 64)])
def test_add_rms_norm_matches_float64(backend, x_dtype, d_dtype, out_dtype, shape):
    """The stored sum is the correctly rounded sum; the norm is within rms_norm's bound of that sum and has the
    bits of ``rms_norm`` on it (what a model gets from the two ops apart)."""
    require_backend(backend)
    h = shape[-1]
    # rows over many binades (float16's range when either is float16), delta within a few binades of x: the float64
    # sum is exact
    ranged = torch.float16 if torch.float16 in (x_dtype, d_dtype) else x_dtype
    x = _rows(shape[0] * (shape[1] if len(shape) == 3 else 1), h, ranged, seed=h).reshape(shape).to(x_dtype)
    delta = (x.float() * (torch.rand(shape, generator=torch.Generator().manual_seed(7)) * 6 - 3)).to(d_dtype)
    w = (torch.rand(h, generator=torch.Generator().manual_seed(h)) * 4 - 2)
    eps = 1e-5
    total, got = ops.add_rms_norm(x, delta, w, eps=eps, out_dtype=out_dtype, backend=backend)
    assert total.dtype == x_dtype and total.shape == x.shape and got.dtype == out_dtype and got.shape == x.shape
    assert torch.equal(total, (x.double() + delta.double()).float().to(x_dtype)), "the sum is correctly rounded"
    s64, w64 = total.double(), w.double()
    ref = w64 * s64 / torch.sqrt(s64.pow(2).mean(-1, keepdim=True) + eps)
    u_out = U_OUT[out_dtype]
    tol = (gamma(h) / 2 + 8 * U32) * (1 + u_out) * ref.abs() + u_out * ref.abs() + TINY_OUT[out_dtype]
    assert_within(got, ref, tol, f"add_rms_norm {backend} x {x_dtype} + {d_dtype} -> {out_dtype}")
    assert torch.equal(got, ops.rms_norm(total, w, eps=eps, out_dtype=out_dtype, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("in_dtype, out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                                 (torch.bfloat16, torch.float16), (torch.float16, torch.float32)])
@pytest.mark.parametrize("shape", [(1, 2 * 64), (3, 2 * 300), (2, 2, 2 * 40)])
def test_silu_mul_matches_float64(backend, in_dtype, out_dtype, shape):
    require_backend(backend)
    g = torch.Generator().manual_seed(sum(shape))
    gate_up = torch.randn(*shape, generator=g) * 6
    gate_up[..., 0] = -79.0                         # deep in the tail: e^79 is still a float32
    gate_up[..., 1] = 0.0
    gate_up = gate_up.to(in_dtype)
    got = ops.silu_mul(gate_up, out_dtype=out_dtype, backend=backend)
    half = shape[-1] // 2
    assert got.dtype == out_dtype and got.shape == (*shape[:-1], half)
    gate, up = gate_up.double()[..., :half], gate_up.double()[..., half:]
    ref = gate / (1 + torch.exp(-gate)) * up
    u_out = U_OUT[out_dtype]
    tol = 12 * U32 * (1 + u_out) * ref.abs() + u_out * ref.abs() + TINY_OUT[out_dtype]
    assert_within(got, ref, tol, f"silu_mul {backend} {in_dtype} -> {out_dtype} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype, out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                               (torch.bfloat16, torch.float32), (torch.float16, torch.float16)])
@pytest.mark.parametrize("t, h, d", [(1, 36, 64), (3, 5, 16)])
def test_rope_matches_float64(backend, x_dtype, out_dtype, t, h, d):
    """Against transformers' formula in float64: x * cos + rotate_half(x) * sin, every head of every token."""
    require_backend(backend)
    g = torch.Generator().manual_seed(t * h + d)
    x = (torch.randn(t, h, d, generator=g) * 10).to(x_dtype)
    angles = torch.rand(t, d // 2, generator=g, dtype=torch.float64) * 1000
    cos, sin = torch.cat([angles, angles], -1).cos().float(), torch.cat([angles, angles], -1).sin().float()
    got = ops.rope(x, cos, sin, out_dtype=out_dtype, backend=backend)
    assert got.dtype == out_dtype and got.shape == x.shape
    x64, c64, s64 = x.double(), cos.double()[:, None], sin.double()[:, None]
    rotated = torch.cat([-x64[..., d // 2:], x64[..., :d // 2]], -1)
    ref = x64 * c64 + rotated * s64
    u_out = U_OUT[out_dtype]
    tol = 3 * U32 * (1 + u_out) * ((x64 * c64).abs() + (rotated * s64).abs()) + u_out * ref.abs() + TINY_OUT[out_dtype]
    assert_within(got, ref, tol, f"rope {backend} {x_dtype} -> {out_dtype} [{t}, {h}, {d}]")


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batches_give_empty_results(backend):
    require_backend(backend)
    assert ops.rms_norm(torch.empty(0, 64), torch.ones(64), backend=backend).shape == (0, 64)
    assert ops.silu_mul(torch.empty(0, 3, 8), out_dtype=torch.bfloat16, backend=backend).shape == (0, 3, 4)


def test_the_checked_signature_fast_path_gives_the_same_results():
    """The second call of a signature skips the checks (a cached backend): same values as the first."""
    x, w = torch.randn(2, 64), torch.randn(64)
    first = ops.rms_norm(x, w, eps=1e-6, backend="interpret")
    assert torch.equal(ops.rms_norm(x, w, eps=1e-6, backend="interpret"), first)
    x2 = torch.randn(2, 64)
    ref = w.double() * x2.double() / torch.sqrt(x2.double().pow(2).mean(-1, keepdim=True) + 1e-6)
    assert_within(ops.rms_norm(x2, w, eps=1e-6, backend="interpret"), ref, (gamma(64) / 2 + 8 * U32) * ref.abs(),
                  "rms_norm, checked signature, new values")


@pytest.mark.parametrize("call, match", [
    (lambda: ops.rms_norm(torch.ones(2, 4, dtype=torch.int32), torch.ones(4)), "x must be float16"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(5)), r"weight must have shape \[4\]"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(4), eps=-1.0), "eps must be a finite real number"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(4), eps=float("nan")), "eps must be a finite real number"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(4), out_dtype=torch.int8), "out_dtype must be"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(4), backend="cuda"), "backend must be one of"),
    (lambda: ops.rope(torch.ones(2, 3, 5), torch.ones(2, 5), torch.ones(2, 5)), r"x must be \[T, H, D\] with D even"),
    (lambda: ops.rope(torch.ones(2, 3, 4), torch.ones(2, 4).double(), torch.ones(2, 4)), "cos must be float32"),
    (lambda: ops.rope(torch.ones(2, 3, 4), torch.ones(2, 4), torch.ones(1, 4)), r"sin must have shape \[2, 4\]"),
    (lambda: ops.silu_mul(torch.ones(2, 5)), r"gate_up must have shape \[\.\.\., 2 \* I\]"),
    (lambda: ops.silu_mul(torch.ones(2, 4), out_dtype="float32"), "out_dtype must be"),
    (lambda: ops.rms_norm(torch.ones(2, 4), torch.ones(4), out_dtype=[torch.float32]), "out_dtype must be"),
    (lambda: ops.rope(torch.ones(2, 3, 4), torch.ones(2, 4), torch.ones(2, 4), out_dtype=[torch.float32]),
     "out_dtype must be"),
    (lambda: ops.silu_mul([1.0, 2.0]), "gate_up must be a torch tensor"),
    (lambda: ops.add_rms_norm(torch.ones(2, 4), torch.ones(2, 5), torch.ones(4)), r"delta must have shape \[2, 4\]"),
    (lambda: ops.add_rms_norm(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.int8), torch.ones(4)),
     "delta must be float16"),
    (lambda: ops.add_rms_norm(torch.ones(2, 4), torch.ones(2, 4), torch.ones(3)), r"weight must have shape \[4\]"),
    (lambda: ops.add_rms_norm(torch.ones(2, 4), torch.ones(2, 4), torch.ones(4), eps=-1.0),
     "eps must be a finite real number"),
    (lambda: ops.add_rms_norm(torch.ones(2, 4), "x", torch.ones(4)), "delta must be a torch tensor"),
])
def test_bad_arguments_are_clear_errors(call, match):
    with pytest.raises(KernelArgumentError, match=match):
        call()
