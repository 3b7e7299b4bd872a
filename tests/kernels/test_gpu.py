"""lowbit on a CUDA GPU (skipped without one): the generated Triton kernels natively, their bound launches, CUDA
graph capture, the runtime's decode and the benchmark's GPU mode, each against an independent reference (fp64
torch on the dequantized weight, the torch reference ops on the CPU)."""
from __future__ import annotations

import copy
import pytest
import torch

from lowbit import ops
from lowbit.quant import quantize

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEV = "cuda"
TYPES = ["int2", "int3", "int4", "int5", "int6", "int7", "int8", "uint3", "uint4", "float4_e2m1", "float6_e3m2",
         "float8_e4m3fn"]
ROUNDING = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 0.0}


def _assert_matmul_close(y, x, qt, bias=None):
    """``y`` against fp64 ``x @ W.T (+ bias)``: f32 sums (k * 2^-24 of |x| @ |W|.T, with a margin), the weights'
    rounding to the tensor cores' operand type where the kernel takes that path (``product_rounding``), and one
    rounding of the output to its dtype."""
    from lowbit.kernels.matmul import product_rounding

    w = qt.dequantize().double()
    x64 = x.double().reshape(-1, x.shape[-1])
    ref = x64 @ w.T + (0 if bias is None else bias.double())
    scale = x64.abs() @ w.abs().T
    k = x.shape[-1]
    operands = product_rounding(x64.shape[0], qt, "triton", "cuda", str(x.dtype).removeprefix("torch."))
    allowed = (4 * k * 2.0 ** -24 + operands) * scale + ROUNDING[y.dtype] * ref.abs() + 1e-30
    err = (y.reshape(ref.shape).double() - ref).abs()
    assert torch.isfinite(y).all()
    assert (err <= allowed).all(), f"max excess {(err - allowed).max().item():.3g}"


@pytest.mark.parametrize("wtype", TYPES)
@pytest.mark.parametrize("m,x_dtype", [(1, torch.float16), (3, torch.bfloat16), (16, torch.float16),
                                       (16, torch.bfloat16), (40, torch.float32)])
def test_matmul_natively_matches_fp64(wtype, m, x_dtype):
    gen = torch.Generator().manual_seed(m)
    n, k = 200, 384                              # N not a multiple of the tile; 3 groups of 128
    w = torch.randn(n, k, generator=gen).to(DEV)
    qt = quantize(w, wtype, group_size=128, zero_point=wtype.startswith("uint"))
    x = torch.randn(m, k, generator=gen).to(DEV, x_dtype)
    bias = torch.randn(n, generator=gen).to(DEV)
    y = ops.matmul(x, qt, bias, backend="triton")
    assert y.device.type == "cuda" and y.dtype == x_dtype and y.shape == (m, n)
    _assert_matmul_close(y, x, qt, bias)


@pytest.mark.parametrize("wtype", ["int3", "uint4", "float8_e4m3fn"])
def test_gemv_split_or_not_natively(wtype):
    gen = torch.Generator().manual_seed(4)
    from lowbit.kernels.matmul import MatmulConfig, run_matmul

    qt = quantize(torch.randn(200, 640, generator=gen).to(DEV), wtype, group_size=128,
                  zero_point=wtype.startswith("uint"))
    x = torch.randn(2, 640, generator=gen).to(DEV, torch.float16)
    for split in (1, 3):
        _assert_matmul_close(run_matmul(x, qt, None, "triton", MatmulConfig(2, 64, 128, 1, 0, split=split)), x, qt)


def test_bound_launches_reuse_and_fall_back_to_full_launches():
    gen = torch.Generator().manual_seed(1)
    qt = quantize(torch.randn(256, 512, generator=gen).to(DEV), "int4", group_size=128)
    x = torch.randn(2, 512, generator=gen).to(DEV, torch.float16)
    first = ops.matmul(x, qt, backend="triton")             # builds and binds the plan
    again = ops.matmul(x.clone(), qt, backend="triton")     # the bound launch
    assert torch.equal(first, again)
    wide = torch.randn(2, 1024, generator=gen).to(DEV, torch.float16)
    strided = wide[:, ::2]                                  # another layout: the full launch
    assert torch.equal(ops.matmul(strided, qt, backend="triton"), ops.matmul(strided.contiguous(), qt,
                                                                              backend="triton"))
    _assert_matmul_close(ops.matmul(strided, qt, backend="triton"), strided, qt)
    twin = copy.deepcopy(qt)                                # plans bound to the copy's own storage
    for name, entry in qt.packed_cache.items():
        if isinstance(name, str):
            entry[1].q.zero_()
            entry[1].s.zero_()
    assert float(ops.matmul(x, qt, backend="triton").abs().max()) == 0.0     # the original's storage is wiped
    assert torch.equal(ops.matmul(x, twin, backend="triton"), first)


def _scale_kernel():
    from lowbit.ir import KernelBuilder

    kb = KernelBuilder("scale_gpu")
    x = kb.tensor_param("x", "f32", ["N"], intent="in")
    y = kb.tensor_param("y", "f32", ["N"], intent="out")
    factor = kb.scalar_param("factor", "f32")
    kb.constant("B", 128)
    kb.set_grid("cdiv(N, B)")
    off = kb.mul(kb.program_id(0), 128)
    kb.store(y, kb.mul(kb.load(x, [off], [128]), factor), [off])
    return kb.build()


def test_bound_kernel_launch_equals_the_full_launch():
    from lowbit.driver import compile_ir

    kernel = compile_ir(_scale_kernel(), "triton", device="cuda")
    x, y = torch.randn(1000, device=DEV), torch.empty(1000, device=DEV)
    run = kernel.bind(dict(x=x, y=y, factor=3.0), vary=("x", "y"))
    assert type(run).__name__ == "TritonBoundCall" and run._direct is not None    # the compiled launcher is held
    for _ in range(2):
        x2, y2 = torch.randn(1000, device=DEV), torch.full((1000,), float("nan"), device=DEV)
        run(x=x2, y=y2)
        assert torch.equal(y2, x2 * 3)
    y3 = torch.full((2000,), float("nan"), device=DEV)[::2]      # strided output: the full launch writes it
    run.trusted(x2, y3)
    assert torch.equal(y3, x2 * 3)
    with pytest.raises(Exception, match="argument|size|shape"):
        run(x=torch.randn(999, device=DEV), y=y2)              # another shape: the full launch's checks


def test_matmul_is_captured_by_a_cuda_graph():
    gen = torch.Generator().manual_seed(2)
    qt = quantize(torch.randn(512, 1024, generator=gen).to(DEV), "int3", group_size=128)
    x = torch.randn(1, 1024, generator=gen).to(DEV, torch.float16)
    eager = ops.matmul(x, qt, backend="triton")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.matmul(x, qt, backend="triton")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = ops.matmul(x, qt, backend="triton")
    x.copy_(torch.randn(1, 1024, generator=gen).to(DEV, torch.float16))
    graph.replay()
    torch.cuda.synchronize()
    _assert_matmul_close(y, x, qt)
    assert not torch.equal(y, eager)


@pytest.mark.parametrize("weights,kv,activations", [("u4", "float16", "float32"), ("i3", "u4", "float32"),
                                                    ("i4", "float16", "bfloat16")])
def test_decode_on_the_gpu_matches_the_reference_ops(weights, kv, activations):
    from lowbit.runtime import Engine

    reference = Engine.from_pretrained(weights=weights, group_size=32, kv=kv, backend="torch", activations=activations)
    gpu = Engine.from_pretrained(weights=weights, group_size=32, kv=kv, backend="auto", activations=activations,
                                 device=DEV)
    assert dict(gpu.ops.backends)["linear"] == "triton"
    prompts = ["Beautiful is better than", "Errors should"]
    assert gpu.generate(prompts, max_new_tokens=6).texts == reference.generate(prompts, max_new_tokens=6).texts
    if kv == "float16":
        # the bounds of test_lowbit_kernels_in_model (its comment says why), plus, with bf16 activations, the
        # prefill GEMM tile's bf16 weights on the tensor cores (kernels.matmul.product_rounding: 2^-8 of each
        # product, one more bf16 step of the logits' scale; measured 1.04 steps on an H200)
        seqs = [list(prompts[0].encode()) + [32]]
        got, ref = gpu.token_logits(seqs)[0].cpu(), reference.token_logits(seqs)[0]
        bound = 1e-3 if activations == "float32" else 2 * 2.0 ** -8 * ref.abs().max().item()
        assert (got - ref).abs().max().item() <= bound


def test_cuda_graph_decode_replays_the_eager_step():
    """A decode step replayed from a CUDA graph gives the eager step's logits bit for bit, through recaptures as
    the block tables widen (pages of 4 tokens: widths 2, 3, 4, 5 are padded to 2, 4, 4, 8)."""
    from lowbit.runtime import Engine
    from lowbit.runtime.cuda_graphs import _Captured

    engine = Engine.from_pretrained(weights="i4", group_size=32, kv="float16", page_size=4, device=DEV,
                                    activations="bfloat16")
    model, ops = engine.model, engine.ops
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13]]
    eager, graphed = engine.new_cache(16), engine.new_cache(16)
    tokens = [3, 4]
    with torch.inference_mode():
        for cache in (eager, graphed):
            model.prefill(ops, cache, [0, 1], prompts)
        for _ in range(12):
            want = model.decode(ops, eager, [0, 1], tokens)
            got = model.decode(ops, graphed, [0, 1], tokens, cuda_graphs=True)
            assert torch.equal(got, want)
            tokens = want.argmax(-1).tolist()
    captured = [v for v in graphed.decode_graphs.values() if isinstance(v, _Captured)]
    assert len(captured) >= 3 and not eager.decode_graphs


def test_generation_with_and_without_cuda_graphs():
    from lowbit.runtime import Engine

    prompts = ["Beautiful is better than", "Errors should never pass"]
    runs = [Engine.from_pretrained(weights="u4", group_size=32, device=DEV, cuda_graphs=graphs)
            .generate(prompts, max_new_tokens=20, stop_tokens=()) for graphs in (False, True)]
    assert runs[0].token_ids == runs[1].token_ids


def test_generate_command_on_the_gpu(capsys):
    import argparse

    from lowbit.runtime import generate_command

    parser = argparse.ArgumentParser()
    generate_command.add_arguments(parser)
    argv = ["--prompt", "Beautiful is better than", "--weights", "u8", "--kv", "i8", "--max-new-tokens", "7"]
    assert generate_command.run(parser.parse_args(argv + ["--device", "cuda"])) == 0
    gpu = capsys.readouterr().out
    assert generate_command.run(parser.parse_args(argv + ["--backend", "torch"])) == 0
    assert gpu == capsys.readouterr().out == "Beautiful is better than ugly.\n\n"


def test_benchmark_times_kernels_on_the_gpu():
    from lowbit.bench.config import KernelSettings
    from lowbit.bench.kernels import annotate, run_kernels

    settings = KernelSettings(shapes=((256, 512),), ms=(1,), types=("int4", "int3"), backends=("triton",),
                              act_dtypes=("float16",), repeats=2, device=DEV, flush_bytes=64 << 20)
    rows = annotate(run_kernels(settings), gbps=4000.0)
    by_impl = {(r.impl, r.weight_type): r for r in rows}
    assert {r.status for r in rows} == {"ok", "n/a"}           # torch-int4 is a CPU kernel
    assert by_impl[("torch-int4", "int4")].status == "n/a"
    for key in [("torch-fp16", "float16"), ("lowbit-triton", "int4"), ("lowbit-triton", "int3")]:
        row = by_impl[key]
        assert row.ok and row.median_s > 0 and "CUDA graph" in row.detail, row
    assert "torch-fp16" in by_impl[("lowbit-triton", "int4")].speedup
