"""The generated source is readable and self-describing; the launchers bind arguments by name and explain
mistakes; scalar parameters, unspecialized constants, shape bindings and 64-bit indexing work."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from lowbit.errors import BackendError, CompileError  # noqa: E402
from lowbit.ir import KernelBuilder, walk  # noqa: E402
from lowbit.lowering.target import parse_target  # noqa: E402
from lowbit.lowering.triton import ArgumentError, SUPPORTED_INSTRUCTIONS, build_triton, emit_triton  # noqa: E402
from lowbit.lowering.triton import runner  # noqa: E402


def _load(name: str):
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"_lowbit_triton_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KERNELS = _load("test_kernels.py")


def test_source_is_readable():
    kernel = KERNELS.build_gemm("f16", 32, 32, 16)
    src = emit_triton(kernel, parse_target("triton:sm_90"))
    text = src.text
    assert "@triton.jit\ndef gemm_f16(" in text and "def launch_gemm_f16(a, b, c, *, BM=32, BN=32, BK=16" in text
    assert "a, a_stride0, a_stride1,  # a: f16[M, K] @global in" in text
    assert "BM: tl.constexpr,  # constant i32 = 32" in text and "M, K, N,  # shape symbols" in text
    assert "tl.dot(ta, tb, acc_1)" in text and "for k_it in range(" in text
    # every IR instruction is announced by a comment that prints it
    n_instr = sum(1 for ins in walk(kernel.body) if ins.opcode != "yield")
    assert len(re.findall(r"^\s+# (%\S+ = |store\(|\S+ = for)", text, flags=re.M)) >= n_instr - 1
    assert "# %acc.2 = for %k = " in text
    assert [a.kind for a in src.args] == ["pointer", "stride", "stride"] * 3 + ["symbol"] * 3 + ["constexpr"] * 3
    assert src.grid == ("triton.cdiv(M, BM)", "triton.cdiv(N, BN)")
    compile(text, "generated.py", "exec")                    # valid Python as a whole


def test_every_instruction_class_is_supported():
    from lowbit.ir import INSTRUCTIONS

    assert set(SUPPORTED_INSTRUCTIONS) == set(INSTRUCTIONS)


def test_code_types_ask_for_lowering():
    kb = KernelBuilder("unlowered")
    w = kb.tensor_param("w", "uint4", ["K", "N"])
    out = kb.tensor_param("out", "f16", ["K", "N"])
    kb.set_grid(1)
    kb.store(out, kb.cast(kb.load(w, [0, 0], [16, 16]), "f16"), [0, 0])
    with pytest.raises(CompileError, match="uint4") as err:
        emit_triton(kb.build())
    assert "run the lower-lowbit pass first" in str(err.value)
    with pytest.raises(CompileError, match="lower-lowbit"):
        build_triton(kb.build(), mode="interpret")


def test_generated_launcher_function_runs_standalone(rng, tmp_path):
    kernel = KERNELS.build_vector_add("f32", 128)
    src = emit_triton(kernel)
    module = runner.load(src.text, mode="interpret", name=kernel.name, cache_dir=tmp_path)
    x = torch.from_numpy(rng.standard_normal(300).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal(300).astype(np.float32))
    out = torch.zeros(300)
    getattr(module.module, src.launcher_name)(x, y, out)
    assert torch.equal(out, x * y + x)
    out2 = torch.zeros(0)
    getattr(module.module, src.launcher_name)(x[:0], y[:0], out2)   # empty grid: nothing to launch


def test_argument_errors(rng, cache_dir):
    k = build_triton(KERNELS.build_vector_add("f32", 128), mode="interpret", cache_dir=cache_dir)
    x, y, out = torch.zeros(10), torch.zeros(10), torch.zeros(10)
    with pytest.raises(ArgumentError, match="missing argument"):
        k.launch({"x": x, "y": y})
    with pytest.raises(ArgumentError, match="unknown argument"):
        k.launch({"x": x, "y": y, "out": out, "z": out})
    with pytest.raises(ArgumentError, match=r"must be a torch.float32 tensor, got torch.float16"):
        k.launch({"x": x.half(), "y": y, "out": out})
    with pytest.raises(ArgumentError, match="size N is 10, but argument y has extent 9"):
        k.launch({"x": x, "y": torch.zeros(9), "out": out})
    with pytest.raises(ArgumentError, match="rank 1"):
        k.launch({"x": x[None], "y": y, "out": out})
    with pytest.raises(ArgumentError, match="specialized to 128"):
        k.launch({"x": x, "y": y, "out": out}, constants={"BLOCK": 64})
    assert isinstance(ArgumentError("x"), BackendError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_native_mode_without_gpu_explains(cache_dir):
    k = build_triton(KERNELS.build_vector_add("f32", 128), mode="native", cache_dir=cache_dir)
    with pytest.raises(ArgumentError, match="runs natively on CUDA"):
        k.launch({"x": torch.zeros(4), "y": torch.zeros(4), "out": torch.zeros(4)})


def test_scalars_constants_and_shape_bindings(H, rng, cache_dir):
    """f16 / i8 / bool scalar parameters convert exactly as the interpreter binds them; an unspecialized
    constant and a size symbol only a composite dim mentions come from the launch call."""
    kb = KernelBuilder("scalars")
    x = kb.tensor_param("x", "f16", ["R * G", 4])
    out = kb.tensor_param("out", "f16", ["R * G", 4], intent="out")
    cnt = kb.tensor_param("cnt", "i8", [4], intent="out")
    alpha = kb.scalar_param("alpha", "f16")
    step = kb.scalar_param("step", "i8")
    flag = kb.scalar_param("flag", "bool")
    kb.constant("SCALE")                                   # value given at launch
    kb.constant("BIAS", 0.25, "f32")
    kb.set_grid("R")
    row = kb.mul(kb.program_id(0), kb.symbol("G"), name="row")
    t = kb.load(x, [row, 0], [2, 4], name="t")
    scaled = kb.mul(kb.mul(t, alpha), kb.cast(kb.symbol("SCALE"), "f16"))
    kb.begin_if(flag)
    yes = kb.add(scaled, kb.cast(kb.symbol("BIAS"), "f16"))
    kb.begin_else([yes])
    (r,) = kb.end_if([scaled], names=["r"])
    kb.store(out, r, [row, 0])
    kb.store(cnt, kb.add(kb.full([4], 120, "i8"), step), [0])
    kernel = kb.build()
    args = {"x": rng.standard_normal((6, 4)).astype(np.float16), "out": np.zeros((6, 4), np.float16),
            "cnt": np.zeros(4, np.int8), "alpha": 0.1, "step": 300, "flag": True}
    for flag_value in (True, False):
        args["flag"] = flag_value
        got, ref = H.run_both(kernel, args, cache_dir=cache_dir, constants={"SCALE": 3},
                              shape_bindings={"G": 2, "R": 3})
        H.assert_bits_equal(got["out"], ref["out"], "out")
        H.assert_bits_equal(got["cnt"], ref["cnt"], "cnt")     # 120 + (300 wrapped to i8 = 44) wraps to -92
    assert got["cnt"][0] == -92
    k = build_triton(kernel, mode="interpret", cache_dir=cache_dir)
    targs = {n: H.to_torch(v) for n, v in args.items()}
    with pytest.raises(ArgumentError, match="constant SCALE .* has no value"):
        k.launch(targs, shape_bindings={"G": 2, "R": 3})
    with pytest.raises(ArgumentError, match="size symbol"):
        k.launch(targs, constants={"SCALE": 3})


def test_wide_index_variant_computes_the_same(H, rng, cache_dir):
    """64-bit addressing (chosen automatically for tensors spanning >= 2**31 elements) gives the same results."""
    kernel = KERNELS.build_gemm("f32", 32, 32, 16)
    src = emit_triton(kernel, wide_index=True)
    assert ".to(tl.int64) * a_stride0" in src.text
    k = build_triton(kernel, mode="interpret", cache_dir=cache_dir)
    k._wide = src
    a = torch.from_numpy(rng.standard_normal((40, 24)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((24, 33)).astype(np.float32))
    c_narrow, c_wide = torch.zeros(40, 33), torch.zeros(40, 33)
    k.launch({"a": a, "b": b, "c": c_narrow})
    k._needs_wide = lambda args: True                      # as for a huge tensor
    k.launch({"a": a, "b": b, "c": c_wide})
    assert torch.equal(c_narrow, c_wide)


def test_lowered_results_are_accepted(cache_dir):
    try:
        from lowbit.lowering.passes.manager import Lowered
    except ImportError as exc:  # the passes package is being written by another part of the project
        pytest.skip(f"lowbit.lowering.passes does not import: {exc}")
    kernel = KERNELS.build_vector_add("f32", 64)
    target = parse_target("triton:cpu")
    k = build_triton(Lowered(kernel=kernel, target=target, param_formats={}, facts={}), mode="interpret",
                     cache_dir=cache_dir)
    assert k.kernel is kernel and k.target == target


def test_strided_tensors_use_their_strides(rng, cache_dir):
    """Strides are parameters: transposed / sliced views give the same result as contiguous copies."""
    k = build_triton(KERNELS.build_gemm("f32", 32, 32, 16), mode="interpret", cache_dir=cache_dir)
    a = torch.from_numpy(rng.standard_normal((24, 40)).astype(np.float32)).t()          # [40, 24], strides (1, 40)
    b = torch.from_numpy(rng.standard_normal((24, 66)).astype(np.float32))[:, ::2]      # [24, 33], strides (66, 2)
    c_view = torch.zeros(33, 40).t()                                                     # written through a view
    c = torch.zeros(40, 33)
    k.launch({"a": a, "b": b, "c": c_view})
    k.launch({"a": a.contiguous(), "b": b.contiguous(), "c": c})
    assert not a.is_contiguous() and not b.is_contiguous()
    assert torch.equal(c_view, c)
    assert torch.allclose(c, a.double().matmul(b.double()).float(), rtol=1e-5, atol=1e-5)
