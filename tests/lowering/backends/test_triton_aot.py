"""lowbit.lowering.triton.aot: PTX + cubin for sm_80 / sm_90 / sm_100 without a GPU."""
from __future__ import annotations

import warnings

import pytest

pytest.importorskip("triton")

from lowbit.errors import BackendError  # noqa: E402
from lowbit.lowering.triton.aot import AotArtifact, compile_aot, parse_target  # noqa: E402

MATMUL = '''
import triton
import triton.language as tl


@triton.jit
def matmul(a, b, c, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        ta = tl.load(a + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        tb = tl.load(b + kk[:, None] * N + rn[None, :], mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(ta, tb, acc)
    tl.store(c + rm[:, None] * N + rn[None, :], acc.to(tl.float16), mask=(rm[:, None] < M) & (rn[None, :] < N))
'''
MATMUL_SIG = {"a": "*fp16:16", "b": "*fp16:16", "c": "*fp16:16", "M": "i32", "N": "i32:16", "K": "i32:16"}
MATMUL_CONST = {"BM": 128, "BN": 128, "BK": 64}

WORDS = '''
import triton
import triton.language as tl


@triton.jit
def low_nibble_rowsum(w, out, stride, BR: tl.constexpr, BC: tl.constexpr):
    r = tl.arange(0, BR)
    c = tl.arange(0, BC)
    words = tl.load(w + r[:, None] * stride + c[None, :])
    tl.store(out + r, tl.sum((words & 0xF).to(tl.int32), axis=1))
'''


@pytest.fixture(scope="module")
def matmuls(tmp_path_factory):
    cache = tmp_path_factory.mktemp("src")
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for target in ("sm_80", "sm_90", "sm_100"):
            out[target] = compile_aot(MATMUL, "matmul", MATMUL_SIG, MATMUL_CONST, target=target, cache_dir=cache)
    out["warnings"] = [str(w.message) for w in caught]
    return out


def test_tensor_core_instruction_per_architecture(matmuls):
    s80, s90, s100 = (matmuls[t].stats for t in ("sm_80", "sm_90", "sm_100"))
    assert s80["mma.sync"] > 0 and s80["wgmma.mma_async"] == 0 and s80["tcgen05.mma"] == 0
    assert s90["wgmma.mma_async"] > 0 and s90["mma.sync"] == 0
    assert s100["tcgen05.mma"] > 0 and s100["wgmma.mma_async"] == 0
    assert s80["cp.async"] > 0 and set(s80["cp.async.bytes"]) == {16}  # 16-byte async copies (aligned)


def test_artifact_metadata(matmuls):
    art = matmuls["sm_90"]
    assert art.kernel_name == "matmul" and art.target == "sm_90" and art.capability == 90
    assert art.arg_names == ("a", "b", "c", "M", "N", "K", "BM", "BN", "BK")
    assert dict(art.signature) == {"a": "*fp16", "b": "*fp16", "c": "*fp16", "M": "i32", "N": "i32", "K": "i32"}
    assert art.divisibility == ("a", "b", "c", "N", "K")
    assert dict(art.constants) == MATMUL_CONST
    assert (art.num_warps, art.num_stages) == (4, 3)
    assert art.shared > 0 and art.metadata["enable_fp_fusion"] is True
    assert art.cubin[:4] == b"\x7fELF"
    assert ".target sm_90a" in art.ptx and ".entry matmul" in art.ptx


def test_no_fp_fusion_warning(matmuls):
    assert not [w for w in matmuls["warnings"] if "TRITON_DEFAULT_FP_FUSION" in w]


def test_save_and_load_round_trip(matmuls, tmp_path):
    art = matmuls["sm_80"]
    path = art.save(tmp_path)
    again = AotArtifact.load(path)
    assert again == art


def test_aligned_uint32_block_loads_are_vectorized(tmp_path):
    consts = {"BR": 32, "BC": 64}
    aligned = compile_aot(WORDS, "low_nibble_rowsum", {"w": "*u32:16", "out": "*i32:16", "stride": "i32:16"},
                          consts, target="sm_90", cache_dir=tmp_path).stats
    assert aligned["ld.global.max_bytes"] >= 8 and aligned["ld.global.vector"] == aligned["ld.global"]
    # Without the alignment facts Triton must assume 4-byte alignment: scalar 4-byte loads only.
    plain = compile_aot(WORDS, "low_nibble_rowsum", {"w": "*u32", "out": "*i32", "stride": "i32"},
                        consts, target="sm_90", cache_dir=tmp_path).stats
    assert plain["ld.global.bytes"] == {4: plain["ld.global"]}
    assert plain["ld.global"] > aligned["ld.global"]


def test_signature_errors(tmp_path):
    with pytest.raises(BackendError, match="no type in the signature"):
        compile_aot(MATMUL, "matmul", {k: v for k, v in MATMUL_SIG.items() if k != "K"}, MATMUL_CONST,
                    cache_dir=tmp_path)
    with pytest.raises(BackendError, match="has no parameter"):
        compile_aot(MATMUL, "matmul", {**MATMUL_SIG, "bogus": "i32"}, MATMUL_CONST, cache_dir=tmp_path)
    with pytest.raises(BackendError, match="constexpr parameter 'BK'"):
        compile_aot(MATMUL, "matmul", MATMUL_SIG, {"BM": 128, "BN": 128}, cache_dir=tmp_path)
    with pytest.raises(BackendError, match="both a type and a constant"):
        compile_aot(MATMUL, "matmul", MATMUL_SIG, {**MATMUL_CONST, "M": 4}, cache_dir=tmp_path)
    with pytest.raises(BackendError, match="no kernel 'nope'"):
        compile_aot(MATMUL, "nope", MATMUL_SIG, MATMUL_CONST, cache_dir=tmp_path)
    with pytest.raises(BackendError, match="power of two"):
        compile_aot(MATMUL, "matmul", MATMUL_SIG, MATMUL_CONST, num_warps=3, cache_dir=tmp_path)


def test_parse_target():
    assert [parse_target(t) for t in ("sm_80", "sm_90a", "100", 120, "SM_86")] == [80, 90, 100, 120, 86]
    with pytest.raises(BackendError, match="unknown CUDA target"):
        parse_target("hopper")


def test_compile_failure_is_backend_error(tmp_path):
    src = MATMUL.replace("acc = tl.dot(ta, tb, acc)", "acc = tl.dot(ta, tb, acc, not_an_argument=1)")
    with pytest.raises(BackendError, match="could not compile kernel 'matmul' for sm_80"):
        compile_aot(src, "matmul", MATMUL_SIG, MATMUL_CONST, target="sm_80", cache_dir=tmp_path)
