"""Translation validation for passes, and the kernels the low-bit pass tests share.

``validate_pass(kernel, "lower-lowbit", before=("infer-layouts",), sizes={...})`` runs the passes, then the
reference interpreter on the input kernel with random logical arguments and on the IR after *every* pass
with the same arguments (packed through ``param_formats`` where a pass changed a parameter's storage),
and asserts every output is bit-identical (NaNs compared as NaN).

Loaded by the test modules with ``importlib`` (pytest runs with ``--import-mode=importlib``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import ml_dtypes
import numpy as np

import lowbit
from lowbit.ir import KernelBuilder, Kernel, interpret
from lowbit.ir import nodes as n
from lowbit.ir.symbolic import dim_eval
from lowbit.ir.types import is_code, kind_of, nbits_of, numpy_dtype
from lowbit.lowering.passes import run_passes
from lowbit.lowering.target import parse_target

CodeSampler = Callable[[str, tuple[int, ...], np.random.Generator], np.ndarray]


def finite_codes(dtype: str) -> np.ndarray:
    """The codes of ``dtype`` whose value is finite."""
    d = lowbit.dtype(dtype)
    return np.flatnonzero(np.isfinite(d.values())).astype(np.uint8)


def sample_finite(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.choice(finite_codes(dtype), size=shape).astype(np.uint8)


def sample_bounded(limit: float) -> CodeSampler:
    """A sampler of the codes whose value is finite and at most ``limit`` in magnitude (for f16 compute)."""
    def sample(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        values = lowbit.dtype(dtype).values()
        ok = np.flatnonzero(np.isfinite(values) & (np.abs(values) <= limit)).astype(np.uint8)
        return rng.choice(ok, size=shape).astype(np.uint8)

    return sample


def random_args(kernel: Kernel, sizes: Mapping[str, int], rng: np.random.Generator,
                codes: CodeSampler = sample_finite) -> dict[str, Any]:
    """Random logical arguments: codes for code types, small normals for floats, small ints."""
    args: dict[str, Any] = {}
    for p in kernel.params:
        t = p.value.type
        if isinstance(p, n.ScalarParam):
            args[p.name] = numpy_dtype(t.dtype).type(rng.integers(1, 5))
            continue
        shape = tuple(dim_eval(d, sizes) for d in t.shape)
        if is_code(t.dtype):
            args[p.name] = codes(t.dtype, shape, rng)
        elif kind_of(t.dtype) == "float":
            vals = rng.standard_normal(shape).astype(np.float32)
            args[p.name] = vals.astype(ml_dtypes.bfloat16) if t.dtype == "bfloat16" else vals.astype(numpy_dtype(t.dtype))
        elif kind_of(t.dtype) == "bool":
            args[p.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            hi = min(1 << (nbits_of(t.dtype) - 1), 16)
            args[p.name] = rng.integers(0, hi, shape).astype(numpy_dtype(t.dtype))
    return args


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f" or a.dtype.kind == "V":
        with np.errstate(invalid="ignore"):
            fa, fb = a.astype(np.float64), b.astype(np.float64)
        nan = np.isnan(fa)
        if not np.array_equal(nan, np.isnan(fb)):
            return False
        raw = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        return bool(np.array_equal(a.view(raw)[~nan], b.view(raw)[~nan]))
    return bool(np.array_equal(a, b))


def run_kernel(kernel: Kernel, logical: Mapping[str, Any], formats: Mapping[str, Any],
               sizes: Mapping[str, int]) -> dict[str, Any]:
    """Interpret ``kernel`` on copies of ``logical`` args, packing those ``formats`` names."""
    args = {}
    for name, value in logical.items():
        if name in formats:
            args[name] = formats[name].pack(value)
        else:
            args[name] = np.array(value, copy=True) if isinstance(value, np.ndarray) else value
    bindings = {k: v for k, v in sizes.items() if k in kernel.shape_symbols()}
    return interpret(kernel, args, shape_bindings=bindings)


def validate_pass(kernel: Kernel, pass_name: str | None, target: str = "triton:cpu", *,
                  before: Sequence[str] = (), sizes: Mapping[str, int], options: Mapping[str, Any] | None = None,
                  seed: int = 0, codes: CodeSampler = sample_finite, args: Mapping[str, Any] | None = None):
    """Run ``before + [pass_name]`` and check every stage against the input kernel (see module docstring).
    Returns the ``Lowered`` result of the pipeline."""
    names = tuple(before) + ((pass_name,) if pass_name else ())
    lowered = run_passes(kernel, parse_target(target), names, options=options, keep_history=True)
    rng = np.random.default_rng(seed)
    logical = dict(args) if args is not None else random_args(kernel, sizes, rng, codes)
    outs = [p.name for p in kernel.tensor_params if p.intent in ("out", "inout")]
    want = run_kernel(kernel, logical, {}, sizes)
    results = [(r.name, run_kernel(r.kernel, logical, r.param_formats, sizes)) for r in lowered.history[1:]]
    for stage, got in results:
        for name in outs:
            assert _bits_equal(want[name], got[name]), (
                f"after pass {stage!r}, output {name!r} differs from the input kernel's:\n"
                f"want {want[name]!r}\n got {got[name]!r}")
    return lowered


def build_lowbit_gemm(wdtype: str, adtype: str = "f32", bm: int = 16, bn: int = 32, bk: int = 32, group: int = 32,
                      zero_point: bool = False, explicit_mask: bool = False, compute: str = "f32") -> Kernel:
    """c[M, N] = a[M, K] @ (dequant(b[K, N]) * s[K // G, N]) with a K loop, f32 accumulator.

    ``group`` divides ``bk`` (several scale rows per K tile go through a reshape); ``zero_point`` subtracts
    z (f32, per group) before scaling; ``explicit_mask`` loads the weights with a bounds mask and a
    non-zero ``other`` code (edges are also clipped implicitly in every variant); ``compute="f16"`` dequantizes
    to f16 and multiplies f16 tiles (an f16 x f16 dot with an f32 accumulator)."""
    kb = KernelBuilder("lowbit_gemm")
    a = kb.tensor_param("a", adtype, ["M", "K"])
    b = kb.tensor_param("b", wdtype, ["K", "N"])
    s = kb.tensor_param("s", "f32", [f"cdiv(K, {group})", "N"])
    z = kb.tensor_param("z", "f32", [f"cdiv(K, {group})", "N"]) if zero_point else None
    c = kb.tensor_param("c", "f32", ["M", "N"], intent="out")
    kb.set_grid(f"cdiv(M, {bm})", f"cdiv(N, {bn})")
    m0 = kb.mul(kb.program_id(0), bm, name="m0")
    n0 = kb.mul(kb.program_id(1), bn, name="n0")
    acc = kb.zeros([bm, bn], "f32", name="acc")
    gpt = bk // group
    with kb.for_range(0, kb.symbol("K"), bk, [acc], iv_name="k") as loop:
        k = loop.iv
        ta = kb.load(a, [m0, k], [bm, bk], name="ta")
        if adtype != compute:
            ta = kb.cast(ta, compute)
        mask = other = None
        if explicit_mask:
            kk = kb.add(kb.arange(0, bk), k)
            nn = kb.add(kb.arange(0, bn), n0)
            mk = kb.lt(kb.expand_dims(kk, 1), kb.symbol("K"))
            mn = kb.lt(kb.expand_dims(nn, 0), kb.symbol("N"))
            mask = kb.and_(kb.broadcast_to(mk, [bk, bn]), kb.broadcast_to(mn, [bk, bn]))
            other = kb.cast(kb.const(1), wdtype)
        tb = kb.load(b, [k, n0], [bk, bn], mask=mask, other=other, name="tb")
        w = kb.cast(tb, compute, name="w")
        g0 = kb.floordiv(k, group)
        ts = kb.cast(kb.load(s, [g0, n0], [gpt, bn], name="ts"), compute)
        w3 = kb.reshape(w, [gpt, group, bn]) if gpt > 1 else w
        ts3 = kb.expand_dims(ts, 1) if gpt > 1 else ts
        if z is not None:
            tz = kb.cast(kb.load(z, [g0, n0], [gpt, bn], name="tz"), compute)
            w3 = kb.sub(w3, kb.expand_dims(tz, 1) if gpt > 1 else tz)
        w3 = kb.mul(w3, ts3)
        w = kb.reshape(w3, [bk, bn]) if gpt > 1 else w3
        loop.yield_([kb.dot(ta, w, loop.args[0])])
    kb.store(c, loop.results[0], [m0, n0])
    return kb.build()


#: every weight type the GEMM must support
WEIGHT_TYPES = tuple(
    [f"int{b}" for b in range(1, 9)] + [f"uint{b}" for b in range(1, 9)]
    + sorted({d.name for d in lowbit.dtypes.all_dtypes() if d.kind == "float" and d.nbits <= 8})
)
