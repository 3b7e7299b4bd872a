"""Ahead-of-time compilation of generated kernels (no GPU): tensor-core instructions per architecture,
vector loads of packed weights, every construct the generator emits accepted by the real compiler, and
artifacts that round-trip through disk."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")

from lowbit.errors import CompileError  # noqa: E402
from lowbit.ir import KernelBuilder  # noqa: E402
from lowbit.lowering.triton import TritonArtifact, compile_triton, emit_triton  # noqa: E402


def _load(name: str):
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"_lowbit_triton_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KERNELS = _load("test_kernels.py")
NUMERICS = _load("test_numerics.py")


@pytest.fixture(scope="module")
def gemm_artifacts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("aot")
    kernel = KERNELS.build_gemm("f16", 128, 128, 32)
    source = emit_triton(kernel)
    return {t: compile_triton(source, t, constants={"BM": 128, "BN": 128, "BK": 32}, divisible=["*"],
                              cache_dir=cache) for t in ("sm_80", "sm_90", "sm_100")}


def test_fp16_gemm_uses_mma_sync_on_sm80_wgmma_on_sm90_tcgen05_on_sm100(gemm_artifacts):
    s80, s90, s100 = (gemm_artifacts[t].stats for t in ("sm_80", "sm_90", "sm_100"))
    assert s80["mma.sync"] > 0 and s80["wgmma.mma_async"] == 0
    assert s90["wgmma.mma_async"] > 0 and s90["mma.sync"] == 0
    assert s100["tcgen05.mma"] > 0
    assert s80["cp.async"] > 0                     # K tiles staged through shared memory asynchronously


def test_artifact_metadata_and_round_trip(gemm_artifacts, tmp_path):
    art = gemm_artifacts["sm_90"]
    rule = art.launch_rule()
    assert rule["kernel"] == "gemm_f16" and rule["target"] == "sm_90"
    assert rule["grid"] == ["triton.cdiv(M, BM)", "triton.cdiv(N, BN)"]
    assert rule["constants"]["BM"] == 128 and rule["num_warps"] == 4 and rule["shared"] > 0
    names = [p["name"] for p in rule["params"]]
    assert names == ["a", "a_stride0", "b", "b_stride0", "c", "c_stride0", "M", "K", "N"]
    assert rule["params"][0]["type"] == "*fp16" and "a" in art.aot.divisibility   # aligned pointer
    assert set(rule["assumptions"]["contiguous"]) == {"a", "b", "c"}      # innermost strides are the constant 1
    assert "a_stride1" in rule["constants"] and rule["constants"]["a_stride1"] == 1
    path = art.save(tmp_path)
    loaded = TritonArtifact.load(path)
    assert loaded.aot.cubin == art.aot.cubin and loaded.aot.ptx == art.aot.ptx
    assert loaded.source.text == art.source.text and loaded.launch_rule() == rule
    assert json.loads(path.read_text())["launcher"] == "launch_gemm_f16"
    assert (tmp_path / "gemm_f16.sm_90.cubin").read_bytes()[:4] == b"\x7fELF"


def test_packed_gemv_weight_loads_are_vector_loads(tmp_path):
    """The activation (K mask not provably uniform) and scale loads cannot be vectorized; with the word tensor's
    row stride and width promised to be multiples of 16, the u32 weight rows load 8+ bytes per thread."""
    kernel = KERNELS.build_packed_gemv(256, 64, 32)
    wide = compile_triton(kernel, "sm_80", divisible=["wp", "NW"], cache_dir=tmp_path)
    stats = wide.stats
    assert stats["ld.global.max_bytes"] >= 8 and stats["ld.global.vector"] > 0
    assert sorted(wide.assumptions["divisible"]) == ["NW", "wp_stride0"]
    narrow = compile_triton(kernel, "sm_80", cache_dir=tmp_path)          # no promises: no wide weight loads
    assert narrow.stats["ld.global.max_bytes"] < 8


def _numeric_kernels():
    n = NUMERICS
    return {
        "intops": lambda: n._elementwise_kernel("intops_i8", {"a": "i8", "b": "i8"}, 64, lambda kb, t: {
            f"r_{op}": getattr(kb, op)(t["a"], t["b"]) for op in n.INT_OPS}),
        "casts": lambda: n._elementwise_kernel("casts", {"x": "f32", "i": "i32"}, 64, lambda kb, t: {
            "o_i8": kb.cast(t["x"], "i8"), "o_u32": kb.cast(t["x"], "u32"), "o_bf": kb.cast(t["i"], "bf16"),
            "o_ubf": kb.cast(kb.cast(t["i"], "u32"), "bf16"), "o_fbf": kb.cast(t["x"], "bf16"),
            "o_h": kb.cast(t["i"], "f16")}),
        "math_bf16": lambda: n._elementwise_kernel("math_bf16", {"x": "bf16", "y": "bf16"}, 64, lambda kb, t: {
            **{f"u_{op}": kb.unary(op, t["x"]) for op in n.EXACT_F + n.APPROX_F},
            **{f"b_{op}": kb.binary(op, t["x"], t["y"]) for op in ("div", "floordiv", "mod", "maximum")}}),
        "views": n.build_views, "padded_shapes": n.build_padded_shapes, "smem_pipeline": n.build_smem_pipeline,
        "masks": n.build_masks, "branches": lambda: KERNELS.build_branches(16),
        "attention": lambda: KERNELS.build_decode_attention(16, 32),
        **{f"dot_{case}": (lambda case=case: n.build_dot(case)) for case in n.DOT_CASES},
    }


@pytest.mark.parametrize("name", list(_numeric_kernels()))
def test_generated_constructs_compile_natively(name, tmp_path):
    """Helpers, casts, views, padding gathers, shared-memory buffers, control flow, every dot form and the
    bf16 tensor-core switch pass Triton's real compiler (the interpreter accepts more than it does)."""
    art = compile_triton(_numeric_kernels()[name](), "sm_80", cache_dir=tmp_path)
    assert art.aot.cubin[:4] == b"\x7fELF" and art.stats["st.global"] > 0
    if name in ("dot_int8", "dot_bf16_mma"):
        assert art.stats["mma.sync"] > 0        # tensor cores (bf16: NATIVE_BF16_DOT=True when compiled)
    if name in ("dot_small_f16", "dot_uint8"):
        assert art.stats["mma.sync"] == 0       # the broadcast-multiply-sum fallback


def test_aot_needs_constant_values(tmp_path):
    kb = KernelBuilder("needs_block")
    x = kb.tensor_param("x", "f32", ["N"])
    kb.constant("BLOCK")
    kb.set_grid("cdiv(N, BLOCK)")
    kb.store(x, kb.full([64], 1.0), [kb.mul(kb.program_id(0), kb.symbol("BLOCK"))])
    with pytest.raises(CompileError, match="constant BLOCK .* has no value"):
        compile_triton(kb.build(), "sm_80", cache_dir=tmp_path)
    with pytest.raises(CompileError, match="divisible names Q"):
        compile_triton(kb.build(), "sm_80", constants={"BLOCK": 64}, divisible=["Q"], cache_dir=tmp_path)
    art = compile_triton(kb.build(), "sm_80", constants={"BLOCK": 64}, cache_dir=tmp_path)
    assert art.aot.constants["BLOCK"] == 64
