"""The ``vectorize`` analysis: per-worker contiguity from register layouts (hand-derived facts), offset and
stride divisibility, alignment, the vector width per target, keys, and the dump file."""
from __future__ import annotations

import pytest

from lowbit.ir import KernelBuilder
from lowbit.layout import column_local, global_strided, local, spatial
from lowbit.lowering.passes import run_passes
from lowbit.lowering.passes.vectorize import ANY, contiguous_run, iter_accesses, vector_access
from lowbit.lowering.target import parse_target


@pytest.mark.parametrize("layout,run", [
    (spatial(4, 8).local(1, 4), 4),        # each worker: 4 consecutive columns starting at 4*j
    (local(1, 4).spatial(4, 8), 1),        # each worker: columns j, j+8, j+16, j+24
    (spatial(2, 4).local(2, 2), 2),        # 2x2 blocks: pairs of consecutive columns
    (column_local(2, 4), 1),               # local slots walk down a column first
    (spatial(8).local(8), 8),
    (spatial(2).local(3), 1),              # runs of 3 are not a power of two
    (spatial(2).local(6), 2),              # 6 = 2 * 3: aligned pairs
])
def test_contiguous_run_of_layouts(layout, run):
    assert contiguous_run(layout) == run


def facts_of(kernel, target="triton:sm_90", **options):
    lowered = run_passes(kernel, parse_target(target), ["vectorize"], options=options)
    assert lowered.kernel == kernel          # an analysis: the IR is unchanged
    return lowered.facts["vector"]


def build_rows(k="K", layout=None, dtype="f16", col_offset=0, step=64):
    kb = KernelBuilder("rows")
    a = kb.tensor_param("a", dtype, ["M", k])
    c = kb.tensor_param("c", dtype, ["M", k], intent="out")
    kb.set_grid("cdiv(M, 4)")
    m0 = kb.mul(kb.program_id(0), 4, name="m0")
    with kb.for_range(0, kb.symbol("K") if isinstance(k, str) else k, step) as loop:
        col = kb.add(loop.iv, col_offset) if col_offset else loop.iv
        t = kb.load(a, [m0, col], [4, 64], layout=layout, name="t")
        kb.store(c, t, [m0, col])
        loop.yield_([])
    return kb.build()


def test_symbolic_row_stride_limits_the_width_until_divisibility_is_promised():
    kernel = build_rows()
    f = facts_of(kernel)["t"]
    assert (f.offset_divisor, f.stride_divisor, f.elements) == (64, 1, 1)     # row stride K: unknown
    f = facts_of(kernel, divisibility={"K": 16})["t"]
    assert (f.offset_divisor, f.stride_divisor, f.alignment, f.elements, f.bytes) == (64, 16, 8, 8, 16)
    assert f.stride_one and not f.per_worker and f.contiguous == 64
    assert f.masked and f.uniform_mask                                          # K % 16 == 0: whole vectors


def test_width_follows_target_alignment_and_layout(avx512_bf16_host):
    kernel = build_rows(k=256)
    assert facts_of(kernel, "triton:sm_90")["t"].elements == 8                  # 16 bytes of f16
    assert facts_of(kernel, "tvm:llvm")["t"].elements == 8                      # pointers: 16-byte aligned
    assert facts_of(kernel, "tvm:llvm", base_alignment=64)["t"].elements == 32  # 64-byte vectors on the CPU
    assert facts_of(kernel, "tvm:llvm", base_alignment=4)["t"].elements == 2    # only 4-byte aligned pointers
    laid_out = build_rows(k=256, layout=spatial(4, 16).local(1, 4))
    f = facts_of(laid_out, "tvm:llvm", base_alignment=64)["t"]
    assert (f.per_worker, f.contiguous, f.elements) == (True, 4, 4)
    strided = build_rows(k=256, layout=local(1, 4).spatial(4, 16))
    assert facts_of(strided, "tvm:llvm")["t"].elements == 1


def test_misaligned_offsets_and_sub_byte_types():
    assert facts_of(build_rows(k=256, col_offset=2))["t"].elements == 2        # k + 2: 4-byte aligned
    assert facts_of(build_rows(k=256, col_offset=2))["t"].offset_divisor == 2
    u4 = facts_of(build_rows(k=256, dtype="u4"))["t"]                           # 4-bit codes: 32 per 16 bytes
    assert (u4.nbits, u4.elements, u4.bytes) == (4, 32, 16)
    i3 = facts_of(build_rows(k=256, dtype="int3"))["t"]                         # 3-bit codes: not addressable
    assert i3.elements == 1 and i3.bytes is None


def test_non_unit_last_stride_is_not_contiguous():
    kb = KernelBuilder("colmajor")
    a = kb.tensor_param("a", "f32", [64, 64], layout=global_strided((64, 64), (1, 64)))
    o = kb.tensor_param("o", "f32", [64, 64], intent="out")
    kb.set_grid(1)
    kb.store(o, kb.load(a, [0, 0], [64, 64], name="t"), [0, 0])
    facts = facts_of(kb.build(), "tvm:llvm")
    assert not facts["t"].stride_one and facts["t"].elements == 1
    assert facts["store#0"].stride_one and facts["store#0"].elements == 4   # 16-byte aligned base pointer
    assert facts["store#0"].offset_divisor == ANY


def test_keys_and_lookup():
    kb = KernelBuilder("keys")
    x = kb.tensor_param("x", "f32", [64])
    kb.set_grid(1)
    buf = kb.alloc_shared("f32", [32])
    kb.copy_to_shared(buf, x, [0])
    t = kb.load(x, [32], [32], name="t")
    kb.store(x, t, [0])
    kb.store(x, kb.load_shared(buf), [32])
    kernel = kb.build()
    facts = run_passes(kernel, parse_target("tvm:llvm"), ["vectorize"]).facts
    assert [key for key, _ in iter_accesses(kernel)] == ["copy_to_shared#0", "t", "store#0", "store#1"]
    assert set(facts["vector"]) == {"copy_to_shared#0", "t", "store#0", "store#1"}
    second_store = [ins for ins in kernel.walk() if ins.opcode == "store"][1]
    assert vector_access(kernel, facts, second_store) is facts["vector"]["store#1"]
    assert facts["vector"]["t"].masked                # the axis is still checked
    lowered = run_passes(kernel, parse_target("tvm:llvm"), ["simplify-indices", "vectorize"])
    assert not lowered.facts["vector"]["t"].masked    # 32 + 32 <= 64: proven in bounds


def test_dump_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_DUMP", str(tmp_path))
    run_passes(build_rows(k=256), parse_target("triton:sm_90"), ["simplify-indices", "vectorize"])
    text = (tmp_path / "vector-facts.rows.txt").read_text()
    assert text.splitlines()[0].startswith("%t = load(%a): f16 x 8 = 16 bytes; contiguous run 64 (tile)")
    assert text.splitlines()[1].startswith("store#0(%c): f16 x 8 = 16 bytes")
