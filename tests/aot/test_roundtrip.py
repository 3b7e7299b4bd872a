"""`lowbit compile` -> `lowbit.load` round trips on the CPU: TVM shared libraries natively, Triton artifacts'
source under Triton's interpreter. Results are checked against independent references: exact float32 sums
from torch, the reference IR interpreter on the kernel compiled afresh from the .lbk file, and an fp64
dequantize-then-matmul whose weight values come from ml_dtypes / two's complement arithmetic."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import torch

import lowbit
from lowbit.cli import main as cli_main
from lowbit.dsl import load_file, parse_constant
from lowbit.errors import BackendError
from lowbit.ir import interpret

from .conftest import EXAMPLES


def _gemm_ir(wdtype: str, **tiles: int):
    consts = {"W": parse_constant("W", wdtype), **tiles}
    return load_file(EXAMPLES / "lowbit_gemm.lbk").compile("lowbit_gemm", consts).ir


def _weight_values(wdtype: str, codes: np.ndarray) -> np.ndarray:
    """Independent decode of the codes: integers by definition, f4e2m1 through ml_dtypes."""
    if wdtype == "u4":
        return codes.astype(np.float64)
    if wdtype == "int3":
        return np.where(codes >= 4, codes.astype(np.int64) - 8, codes).astype(np.float64)
    if wdtype == "f4e2m1":
        return codes.view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    raise AssertionError(wdtype)


def _check_gemm(loaded, wdtype: str, tiles: dict, rng, *, m: int = 5, k: int = 128, n: int = 70, group: int = 32):
    """Run the loaded GEMM on random data (odd M, N: masked edges) and compare with the references."""
    nbits = {"u4": 4, "int3": 3, "f4e2m1": 4}[wdtype]
    codes = rng.integers(0, 2 ** nbits, (k, n)).astype(np.uint8)
    a = rng.standard_normal((m, k)).astype(np.float16)
    s = (rng.random((k // group, n)) * 0.1 + 0.01).astype(np.float16)
    ref = interpret(_gemm_ir(wdtype, **tiles), {"a": a.copy(), "b": codes.copy(), "s": s.copy(),
                                                  "c": np.zeros((m, n), np.float16)})["c"].astype(np.float64)
    assert set(loaded.param_formats) == {"b"}
    packed = loaded.param_formats["b"].pack(torch.from_numpy(codes))          # the artifact's own repack
    c = torch.zeros((m, n), dtype=torch.float16)
    loaded(torch.from_numpy(a), packed, torch.from_numpy(s), c)
    got = c.numpy().astype(np.float64)
    # vs the reference interpreter: the same operations; only the order of the f32 sums may differ
    w = _weight_values(wdtype, codes) * np.repeat(s.astype(np.float64), group, axis=0)
    mag = np.abs(a.astype(np.float64)) @ np.abs(w)
    ulp = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(ref), 2.0 ** -14))) - 10)
    assert np.all(np.abs(got - ref) <= 2 * k * 2.0 ** -24 * mag + ulp)
    # vs fp64 dequantize-then-matmul: one f16 rounding of each w*s, f32 sums, one final f16 rounding
    exact = a.astype(np.float64) @ w
    assert np.all(np.abs(got - exact) <= mag * (2.0 ** -11 + 2 * k * 2.0 ** -24) + 2 * ulp + 2.0 ** -24)
    assert np.abs(got).max() > 0.1                                              # not trivially zero


def test_vector_add_tvm_llvm_runs_natively_by_position_and_by_name(artifact):
    k = lowbit.load(artifact("vadd_llvm"))
    assert (k.mode, k.device, k.target, k.param_names) == ("native", "cpu", "tvm:llvm", ("x", "y", "out"))
    for n in (1000, 257, 1):                              # partial last blocks
        x, y, out = torch.randn(n), torch.randn(n), torch.full((n,), float("nan"))
        k(x, y, out)
        assert torch.equal(out, x + y)                    # one correctly rounded f32 add per element
    xn, yn = np.linspace(-3, 3, 300, dtype=np.float32), np.float32(0.1) * np.arange(300, dtype=np.float32)
    outn = np.zeros(300, np.float32)
    k(x=xn, y=yn, out=outn)                               # numpy arrays, by name
    np.testing.assert_array_equal(outn, xn + yn)


def test_vector_add_triton_artifact_needs_a_gpu_or_interpret_mode(artifact):
    path = artifact("vadd_sm80")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match=r"(?s)compiled for triton:sm_80.*no CUDA device.*mode='interpret'"):
            lowbit.load(path)
    k = lowbit.load(path, mode="interpret")
    assert k.mode == "interpret" and "@triton.jit" in k.source
    x, y, out = torch.randn(300), torch.randn(300), torch.zeros(300)
    k(x, y, out)
    assert torch.equal(out, x + y)


def test_lowbit_gemm_u4_tvm_llvm(artifact, rng):
    k = lowbit.load(artifact("gemm_u4_llvm"))
    assert k.manifest["param_formats"]["b"]["id"] == str(k.param_formats["b"].format_id)
    _check_gemm(k, "u4", {}, rng)


def test_loading_where_the_cpu_thread_count_differs_keeps_the_compiled_layout(artifact, rng, monkeypatch):
    """The passes plan CPU layouts for the thread count; the artifact records the one it was lowered for."""
    path = artifact("gemm_u4_llvm")                     # compiled (once per session) with the default count
    monkeypatch.setenv("LOWBIT_NUM_THREADS", "7")
    k = lowbit.load(path)
    assert k.lowered.target.num_threads == k.manifest["lowering_target"]["num_threads"] != 7
    _check_gemm(k, "u4", {}, rng, m=3, n=33)


def test_lowbit_gemm_f4_sm90_source_under_the_interpreter(artifact, rng):
    k = lowbit.load(artifact("gemm_f4_sm90"), mode="interpret")
    _check_gemm(k, "f4e2m1", {"BM": 64, "BN": 64, "BK": 64}, rng)


def test_lowbit_gemm_int3_sm80_divisible_under_the_interpreter(artifact, rng):
    """3-bit codes straddle 32-bit words; the packed weights were promised 16-divisible strides."""
    k = lowbit.load(artifact("gemm_i3_sm80_div"), mode="interpret")
    _check_gemm(k, "int3", {"BM": 32, "BN": 64, "BK": 64}, rng)


def test_sm90_gemm_artifact_uses_wgmma_and_inspect_shows_it(artifact, capsys):
    path = artifact("gemm_f4_sm90")
    manifest = json.loads((path / "manifest.json").read_text())
    ptx = (path / "lowbit_gemm.sm_90.ptx").read_text()
    assert "wgmma.mma_async" in ptx and ".target sm_90" in ptx
    assert (path / "lowbit_gemm.sm_90.cubin").read_bytes()[:4] == b"\x7fELF"
    assert manifest["target"] == "triton:sm_90" and manifest["kernel"] == "lowbit_gemm"
    assert manifest["grid"] == ["cdiv(M, 64)", "cdiv(N, 64)"]
    assert manifest["launch"]["num_warps"] == 4 and manifest["launch"]["shared_bytes"] > 0
    assert manifest["constants"] == {"G": 32, "BM": 64, "BN": 64, "BK": 64}
    assert manifest["given_constants"]["W"] == "f4e2m1"
    logical = {p["name"]: p for p in manifest["signature"]["logical"]}
    lowered = {p["name"]: p for p in manifest["signature"]["lowered"]}
    assert logical["b"]["dtype"] == "float4_e2m1" and logical["b"]["shape"] == ["K", "N"]
    assert lowered["b"]["dtype"] == "uint32" and lowered["b"]["format"].startswith("tile-b4-64x64")
    assert logical["c"]["intent"] == "out"
    assert set(manifest["toolchain"]) >= {"lowbit", "triton", "apache-tvm"}

    assert cli_main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    for needle in ("kernel     lowbit_gemm", "target     triton:sm_90", "float4_e2m1[K, N]", "-> packed u32",
                   "grid       (cdiv(M, 64), cdiv(N, 64))", "lowbit_gemm.sm_90.cubin", "KiB", "verified"):
        assert needle in text, needle
    wgmma = int(text.split("wgmma.mma_async ")[1].split(",")[0])
    assert wgmma == manifest_ptx_count(ptx, "wgmma.mma_async") and wgmma > 0
    assert cli_main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ptx_stats"]["wgmma.mma_async"] == wgmma and data["ptx_stats"]["mma.sync"] == 0


def manifest_ptx_count(ptx: str, opcode: str) -> int:
    """Instructions starting with ``opcode`` (an independent line scan of the PTX text)."""
    return sum(1 for line in ptx.splitlines() if line.strip().split(" ")[0].startswith(opcode))


def test_divisible_promise_gives_16_byte_async_copies(artifact, capsys):
    assert cli_main(["inspect", str(artifact("gemm_i3_sm80_div"))]) == 0
    text = capsys.readouterr().out
    assert "divisible: b_stride0, b_stride1" in text
    assert "16 B x" in text.split("cp.async ")[1].split("\n")[0]
    assert "mma.sync " in text and "mma.sync 0," not in text


def test_tvm_cuda_artifact_holds_cuda_source_and_is_not_loadable(tmp_path):
    from lowbit.lowering.tvm.build import find_nvcc

    out = tmp_path / "vadd_cuda"
    assert cli_main(["compile", str(EXAMPLES / "vector_add.lbk"), "--target", "tvm:cuda:sm_90", "-o", str(out),
                     "-q"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    cuda = (out / "vector_add.cu").read_text()
    assert "__global__" in cuda and manifest["launch"]["cuda_kernels"]
    assert all(name in cuda for name in manifest["launch"]["cuda_kernels"])
    assert manifest["launch"]["threads_per_block"] == 128
    if find_nvcc() is not None:
        assert (out / manifest["launch"]["cubin"]).read_bytes()[:4] == b"\x7fELF"
    with pytest.raises(BackendError, match="cannot launch TVM CUDA kernels"):
        lowbit.load(out)


def test_recompiling_into_an_artifact_directory_replaces_it(tmp_path):
    out = tmp_path / "vadd"
    args = [str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_80", "-o", str(out), "-q"]
    assert cli_main(["compile", *args, "--const", "BLOCK=64"]) == 0
    assert cli_main(["compile", *args, "--const", "BLOCK=32"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["given_constants"] == {"BLOCK": "32"} and manifest["grid"] == ["cdiv(N, 32)"]
    assert "--const BLOCK=32" in manifest["command"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vadd"]      # no staging debris left behind
