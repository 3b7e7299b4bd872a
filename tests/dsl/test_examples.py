"""The examples parse, type-check, give verified IR, and the reference interpreter running that IR matches an
independent fp64 numpy/torch computation."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.dsl import load_file
from lowbit.ir import For, interpret, verify, walk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_module(name: str):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    key = f"lowbit_example_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["vector_add", "softmax", "lowbit_gemm"])
def test_kernel_files_give_verified_ir(name):
    compiled = load_file(EXAMPLES / f"{name}.lbk").compile()
    verify(compiled.ir)
    assert compiled.ir.name == name
    # the IR text round-trips through the IR parser (a printer/parser agreement check on real kernels)
    assert lowbit.ir.parse(str(compiled.ir)) == compiled.ir


def test_vector_add_matches_numpy():
    k = load_file(EXAMPLES / "vector_add.lbk").compile().ir
    rng = np.random.default_rng(1)
    n = 1000  # not a multiple of BLOCK = 256: the last tile is masked
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    interpret(k, {"x": x, "y": y, "out": out})
    # an f32 add is the exact sum rounded once: identical to the fp64 sum rounded to f32
    np.testing.assert_array_equal(out, (x.astype(np.float64) + y.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("m,n", [(7, 150), (4, 64), (1, 3)])
def test_softmax_matches_fp64(m, n):
    k = load_file(EXAMPLES / "softmax.lbk").compile().ir
    rng = np.random.default_rng(m * 1000 + n)
    x = (rng.standard_normal((m, n)) * 4).astype(np.float16)
    y = np.full((m, n), np.nan, np.float16)
    interpret(k, {"x": x, "y": y})
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    ref = e / e.sum(axis=1, keepdims=True)
    # f16 output: relative error <= 2**-11 from the final rounding, plus f32 arithmetic (~1e-6)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2 ** -11 + 1e-5, atol=1e-7)


def lowbit_gemm_reference(a, codes, scales, wdtype, g):
    w = lowbit.dtype(wdtype).decode(codes).astype(np.float64) * np.repeat(scales.astype(np.float64), g, axis=0)
    return a.astype(np.float64) @ w, np.abs(a.astype(np.float64)) @ np.abs(w)


@pytest.mark.parametrize("wdtype,g,bk", [("u4", 32, 32), ("int3", 64, 32), ("float4_e2m1", 16, 32),
                                         ("float6_e3m2", 32, 64), ("uint2", 128, 32)])
def test_lowbit_gemm_matches_fp64(wdtype, g, bk):
    compiled = load_file(EXAMPLES / "lowbit_gemm.lbk").compile(constants={"W": wdtype, "G": g, "BK": bk})
    k = compiled.ir
    assert k.param("b").value.type.dtype == lowbit.dtype(wdtype).name
    rng = np.random.default_rng(g + bk)
    m, kk, n = 20, 256, 40  # partial M and N tiles
    nbits = lowbit.dtype(wdtype).nbits
    a = rng.standard_normal((m, kk)).astype(np.float16)
    codes = rng.integers(0, 1 << nbits, (kk, n), dtype=np.uint8)
    scales = (rng.random((kk // g, n)) * 0.2 + 0.01).astype(np.float16)
    c = np.full((m, n), np.nan, np.float16)
    interpret(k, {"a": a, "b": codes, "s": scales, "c": c})
    ref, mag = lowbit_gemm_reference(a, codes, scales, wdtype, g)
    # error sources: the dequantized weight rounded to f16 (<= 2**-11 relative, summed as |a| @ |w|),
    # f32 accumulation (<= K * 2**-24 relative to |a| @ |w|), the final f16 rounding (<= 2**-11 |c|)
    bound = 2 ** -11 * mag + kk * 2 ** -24 * mag + 2 ** -11 * np.abs(ref) + 1e-6
    err = np.abs(c.astype(np.float64) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"


def test_gemm_fp16_jit_on_torch_tensors_in_place():
    torch = pytest.importorskip("torch")
    mod = load_module("gemm_fp16")
    kernel = mod.gemm_fp16
    ir = kernel.ir()
    verify(ir)
    loops = [i for i in walk(ir.body) if isinstance(i, For)]
    assert len(loops) == 1 and [a.name for a in loops[0].iter_args] == ["acc.1"], "acc must be loop-carried"
    torch.manual_seed(0)
    a = torch.randn(40, 72, dtype=torch.float16)
    b = torch.randn(72, 48, dtype=torch.float16)
    c = torch.full((40, 48), float("nan"), dtype=torch.float16)
    kernel(a, b, c, BM=16)
    ref = a.double() @ b.double()
    mag = a.double().abs() @ b.double().abs()
    bound = 2 ** -11 * ref.abs() + 72 * 2 ** -24 * mag + 1e-6
    assert bool(((c.double() - ref).abs() <= bound).all())


@pytest.mark.parametrize("kv", ["int4", "float4_e2m1"])
def test_decode_attention_jit_matches_fp64(kv):
    mod = load_module("decode_attention")
    kernel = mod.decode_attention
    verify(kernel.ir(KV=kv))
    rng = np.random.default_rng(3)
    b, h, hkv, s, d, g = 2, 4, 2, 45, 64, 32  # S not a multiple of BS = 32; GQA 2 queries per KV head
    q = rng.standard_normal((b, h, d)).astype(np.float16)
    nbits = lowbit.dtype(kv).nbits
    k = rng.integers(0, 1 << nbits, (b, hkv, s, d), dtype=np.uint8)
    v = rng.integers(0, 1 << nbits, (b, hkv, s, d), dtype=np.uint8)
    ks = (rng.random((b, hkv, s, d // g)) * 0.3 + 0.05).astype(np.float16)
    vs = (rng.random((b, hkv, s, d // g)) * 0.3 + 0.05).astype(np.float16)
    o = np.full((b, h, d), np.nan, np.float16)
    kernel(q, k, ks, v, vs, o, np.float32(d ** -0.5), KV=kv)
    dec = lowbit.dtype(kv)
    kf = dec.decode(k).astype(np.float64) * np.repeat(ks.astype(np.float64), g, axis=-1)
    vf = dec.decode(v).astype(np.float64) * np.repeat(vs.astype(np.float64), g, axis=-1)
    rep = h // hkv
    logits = np.einsum("bhd,bhsd->bhs", q.astype(np.float64), np.repeat(kf, rep, axis=1)) * d ** -0.5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    ref = np.einsum("bhs,bhsd->bhd", p / p.sum(-1, keepdims=True), np.repeat(vf, rep, axis=1))
    # f16 output rounding (2**-11 relative) dominates; f32 softmax arithmetic adds ~1e-6
    np.testing.assert_allclose(o.astype(np.float64), ref, rtol=2 ** -11 + 1e-5, atol=1e-5)


def test_jit_source_ast_has_real_file_positions():
    mod = load_module("gemm_fp16")
    text = (EXAMPLES / "gemm_fp16.py").read_text().splitlines()
    def_line = next(i for i, line in enumerate(text, 1) if line.startswith("def gemm_fp16"))
    fn = mod.gemm_fp16.source_ast
    assert mod.gemm_fp16.kernel_source.real_line(fn.span.line) == def_line
    assert mod.gemm_fp16.uses_future_annotations
    assert not load_module("decode_attention").decode_attention.uses_future_annotations
