"""Low-bit lowering (pass ``lower-lowbit``) and the full low-bit pipeline on the GEMM of every weight type:
translation validation through the interpreter after every pass, the lowered IR's shape, the packed
format attached to the parameter, and the errors users can cause."""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import re

import numpy as np
import pytest

from lowbit.errors import CompileError
from lowbit.ir import KernelBuilder, print_kernel
from lowbit.ir import nodes as n
from lowbit.ir.types import is_code
from lowbit.lowering.passes import run_passes
from lowbit.lowering.target import parse_target

_spec = importlib.util.spec_from_file_location("lowbit_validate", pathlib.Path(__file__).with_name("lowbit_validate.py"))
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)

SIZES = {"M": 5, "K": 70, "N": 45}          # odd K and N: partial tiles on both weight axes
PIPELINE = ("infer-layouts", "lower-lowbit", "select-dequant")
DEFER = {"lowbit.defer_dequant": True}


def code_types(kernel: n.Kernel) -> list[str]:
    found = [p.value.dtype for p in kernel.params if is_code(p.value.dtype)]
    for ins in kernel.walk():
        found += [v.dtype for v in (*ins.outputs, *ins.inputs) if is_code(v.dtype)]
    return found


# ---------------------------------------------------------------------------------------------------- every type
@pytest.mark.parametrize("target", ["triton:cpu", "triton:sm_90", "tvm:llvm"])
@pytest.mark.parametrize("wtype", V.WEIGHT_TYPES)
def test_gemm_every_weight_type(wtype, target):
    """infer-layouts -> lower-lowbit (view form) -> select-dequant: each stage equals the input kernel."""
    low = V.validate_pass(V.build_lowbit_gemm(wtype), None, target, before=PIPELINE, sizes=SIZES, options=DEFER)
    assert code_types(low.kernel) == []
    if not is_code(wtype):                       # int8 / uint8 are native IR types: stored as they are
        assert low.param_formats == {}
        return
    deferred = low.history[2].kernel
    assert any(isinstance(i, n.View) and is_code(i.result.dtype) for i in deferred.walk())
    fmt = low.param_formats["b"]
    assert fmt.dtype == wtype and fmt.nbits == int(re.search(r"(\d+)", wtype).group(1))


@pytest.mark.parametrize("target", ["triton:sm_90", "tvm:llvm"])
@pytest.mark.parametrize("wtype", ["int1", "uint2", "int3", "uint4", "int5", "uint6", "int7", "uint7",
                                   "float3_e1m1", "float4_e2m1", "float5_e3m1", "float6_e3m2", "float6_e2m3",
                                   "float7_e5m1", "float8_e4m3fn", "float8_e5m2", "float8_e7m0"])
@pytest.mark.parametrize("variant", ["zero_point", "groups", "explicit_mask", "f16_big_tiles", "f16_dot"])
def test_gemm_variants(wtype, target, variant):
    kw = {"zero_point": dict(zero_point=True), "groups": dict(group=8),
          "explicit_mask": dict(explicit_mask=True),
          "f16_big_tiles": dict(adtype="f16", bm=16, bn=64, bk=64, group=32),
          "f16_dot": dict(adtype="f16", compute="f16", zero_point=True)}[variant]
    sizes = dict(SIZES, K=150, N=77) if variant == "f16_big_tiles" else SIZES
    codes = V.sample_bounded(256.0) if variant == "f16_dot" else V.sample_finite   # no f16 overflow to inf
    low = V.validate_pass(V.build_lowbit_gemm(wtype, **kw), "lower-lowbit", target, before=("infer-layouts",),
                          sizes=sizes, seed=3, codes=codes)
    assert code_types(low.kernel) == []


@pytest.mark.parametrize("method", ["arith", "magic"])
def test_dequant_option_reaches_the_lowering(method):
    low = V.validate_pass(V.build_lowbit_gemm("int4"), "lower-lowbit", "tvm:llvm", before=("infer-layouts",),
                          sizes=SIZES, options={"dequant": method})
    text = print_kernel(low.kernel)
    assert ("or(" in text and "view(" in text) if method == "magic" else "shr(" in text
    assert (" xor(" in text) == (method == "magic")


def test_without_layouts_the_target_default_is_used():
    low = V.validate_pass(V.build_lowbit_gemm("int3"), "lower-lowbit", "triton:cpu", sizes=SIZES)
    assert low.param_formats["b"].layout.spatial_size == parse_target("triton:cpu").workers
    assert all(v.type.layout is None for i in low.kernel.walk() for v in i.outputs)


# ---------------------------------------------------------------------------------------------------- the IR
def test_lowered_packed_load_text():
    low = run_passes(V.build_lowbit_gemm("uint4", adtype="f16", bm=16, bn=64, bk=64, group=64),
                     parse_target("triton:sm_90"), ["infer-layouts", "lower-lowbit"], options=DEFER)
    fmt = low.param_formats["b"]
    assert (fmt.units, fmt.words_per_unit, fmt.chunk_words, fmt.storage_dtype) == (128, 4, 4, "uint32")
    text = print_kernel(low.kernel)
    assert "%b: u32[cdiv(K, 64), cdiv(N, 64), 512] @global in" in text
    lines = [re.sub(r" layout=RegisterLayout\(.*?\)(?=$| =)", "", l.strip()) for l in text.splitlines()]
    i = lines.index("%b.t0 = floordiv(%k, %c.5) : i32") if "%b.t0 = floordiv(%k, %c.5) : i32" in lines else \
        next(j for j, l in enumerate(lines) if l.startswith("%b.t0 = floordiv(%k,"))
    got = lines[i:i + 8]
    assert got[1].startswith("%b.t1 = floordiv(%n0, ")
    assert re.fullmatch(r"%b\.words = load\(%b, \[%b\.t0, %b\.t1, %c\.\d+\]\) : u32\[1, 1, 512\]", got[3])
    assert got[4] == "%b.units = reshape(%b.words) : u32[128, 4]"
    assert got[5] == "%b.codes = view(%b.units) : uint4[128, 32]"
    assert got[6] == "%b.modes = reshape(%b.codes) : uint4[4, 8, 4, 8, 2, 2]"
    assert got[7] == "%b.modes.1 = permute(%b.modes, perm=[3, 5, 2, 0, 4, 1]) : uint4[8, 2, 4, 4, 2, 8]"
    assert "%tb = reshape(%b.modes.1) : uint4[64, 64]" in lines
    # each worker loads its 16 bytes: the words tile's layout gives worker w the words [4w, 4w + 4)
    words = next(i for i in low.kernel.walk() if isinstance(i, n.Load) and i.tensor.name == "b").result
    table = words.type.layout.index_table()
    assert (table[:, :, 2] == 4 * np.arange(128)[:, None] + np.arange(4)).all()


def test_every_intermediate_keeps_workers_data():
    """The reshape/permute chain of the unpack never moves an element to another worker."""
    low = run_passes(V.build_lowbit_gemm("int3", bm=16, bn=64, bk=32, group=32), parse_target("triton:sm_90"),
                     ["infer-layouts", "lower-lowbit"])
    assert low.facts["infer-layouts"]["conversions"] == 0
    assert not any(isinstance(i, n.Reshape) and i.x.shape == i.result.shape for i in low.kernel.walk())


# ---------------------------------------------------------------------------------------------------- formats
def test_format_object():
    low = run_passes(V.build_lowbit_gemm("float6_e3m2"), parse_target("triton:sm_90"), ["infer-layouts", "lower-lowbit"])
    fmt = low.param_formats["b"]
    assert re.fullmatch(r"tile-b6-32x32-u(8|16|32)v\d+-[0-9a-f]{10}", fmt.format_id.name) and fmt.format_id.version == 1
    assert fmt.storage_shape((70, 45)) == (3, 2, fmt.words_per_tile)
    assert fmt.words_per_tile * {"uint32": 32, "uint16": 16, "uint8": 8}[fmt.storage_dtype] == 32 * 32 * 6
    with pytest.raises(AttributeError):
        fmt.pad_code = 1                                            # frozen
    other = run_passes(V.build_lowbit_gemm("float6_e3m2"), parse_target("triton:cpu"),
                       ["infer-layouts", "lower-lowbit"]).param_formats["b"]
    assert other.format_id != fmt.format_id                         # another layout: another format
    again = run_passes(V.build_lowbit_gemm("float6_e2m3"), parse_target("triton:sm_90"),
                       ["infer-layouts", "lower-lowbit"]).param_formats["b"]
    assert again.format_id == fmt.format_id                         # the same bits in the same order


def test_pack_is_padded_with_code_zero():
    low = run_passes(V.build_lowbit_gemm("uint4"), parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"])
    fmt = low.param_formats["b"]
    ones = np.full((33, 31), 15, np.uint8)
    storage = fmt.pack(ones)
    assert fmt.tile_shape == (32, 32) and storage.shape == (2, 1, fmt.words_per_tile)
    padded = fmt.unpack(storage, (64, 32))                         # read the whole padded grid back
    assert (padded[:33, :31] == 15).all() and (padded[33:, :] == 0).all() and (padded[:, 31:] == 0).all()


# ---------------------------------------------------------------------------------------------------- errors
def _kernel(offset_plus: int = 0, second_layout=None, store_codes=False, unused=False):
    from lowbit.layout import spatial

    kb = KernelBuilder("k")
    b = kb.tensor_param("b", "uint4", ["K", "N"])
    o = kb.tensor_param("o", "f32", ["K", "N"], intent="out")
    extra = kb.tensor_param("q", "int3", ["K"]) if unused else None
    del extra
    kb.set_grid("cdiv(K, 16)")
    k0 = kb.add(kb.mul(kb.program_id(0), 16), offset_plus)
    t = kb.load(b, [k0, 0], [16, 32], name="t")
    kb.store(o, kb.cast(t, "f32"), [k0, 0])
    if second_layout is not None:
        t2 = kb.load(b, [k0, 0], [16, 32], layout=second_layout, name="t2")
        kb.store(o, kb.cast(t2, "f32"), [k0, 0])
    if store_codes:
        kb.store(b, t, [k0, 0])
    return kb.build()


def test_error_unaligned_offset():
    with pytest.raises(CompileError, match=r"offset %add on axis 0 of packed tensor %b must be a multiple of the tile "
                                           r"extent 16") as err:
        run_passes(_kernel(offset_plus=3), parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"])
    assert "tile-aligned" in str(err.value)


def test_error_two_layouts_for_one_tensor():
    from lowbit.layout import spatial

    with pytest.raises(CompileError, match="one packed storage order needs one tile layout"):
        run_passes(_kernel(second_layout=spatial(16, 8).local(1, 4)), parse_target("triton:sm_90"),
                   ["infer-layouts", "lower-lowbit"])


def test_error_storing_codes():
    with pytest.raises(CompileError, match="can only be loaded"):
        run_passes(_kernel(store_codes=True), parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"])


def test_error_unused_packed_parameter():
    with pytest.raises(CompileError, match="never loaded"):
        run_passes(_kernel(unused=True), parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"])


def test_select_dequant_alone_refuses_packed_globals():
    with pytest.raises(CompileError, match="run the lower-lowbit pass first"):
        run_passes(_kernel(), parse_target("triton:cpu"), ["select-dequant"])


def _product_kernel(x_dtype: str, scales_dtype: str = "f16", w_dtype: str = "int3"):
    """``y = (x @ cast(w)) * s``: a dot of codes and activations, its result scaled (the GEMV's shape)."""
    kb = KernelBuilder("k")
    w = kb.tensor_param("w", w_dtype, [32, 16])       # 32 codes of K per lane: whole 16-bit streams
    x = kb.tensor_param("x", x_dtype, [1, 32])
    s = kb.tensor_param("s", scales_dtype, [1, 16])
    y = kb.tensor_param("y", "f32", [1, 16], intent="out")
    acc = kb.full([1, 16], 0.0, "f32")
    xs = kb.cast(kb.load(x, [0, 0], [1, 32]), "f32")
    t = kb.dot(xs, kb.cast(kb.load(w, [0, 0], [32, 16]), "f32"), acc)
    kb.store(y, kb.mul(t, kb.cast(kb.load(s, [0, 0], [1, 16]), "f32")), [0, 0])
    return kb.build()


@pytest.mark.parametrize("x_dtype,scales_dtype,expected", [
    ("bf16", "f16", True),       # the bf16 pair dot's operands
    ("f32", "f16", False),       # f32 activations: the f32 path
    ("f16", "f16", False),
    ("f32", "bf16", False),      # bf16 scales multiply the dot's result, not the codes
])
def test_substreams_only_where_codes_meet_bf16_activations(x_dtype, scales_dtype, expected, avx512_bf16_host):
    from lowbit.lowering.passes.products import meets_bf16_product

    kernel = _product_kernel(x_dtype, scales_dtype)
    assert meets_bf16_product(kernel, "w") is expected
    assert meets_bf16_product(kernel, "x") is False                 # x is not multiplied by a bf16 tile
    low = run_passes(kernel, parse_target("tvm:llvm"), ["infer-layouts", "lower-lowbit"], options=DEFER)
    assert low.param_formats["w"].substreams == (2 if expected else 1)
    # other targets keep one stream: only TVM's CPU code has the pair dot
    low = run_passes(kernel, parse_target("triton:cpu"), ["infer-layouts", "lower-lowbit"], options=DEFER)
    assert low.param_formats["w"].substreams == 1


@pytest.mark.parametrize("w_dtype,streams,groups", [("int1", 1, 4), ("uint2", 2, 1), ("int3", 2, 1), ("int4", 1, 1),
                                                    ("uint5", 2, 1), ("float6_e3m2", 2, 1), ("int7", 1, 1),
                                                    ("float4_e2m1", 1, 1)])
def test_substreams_for_pairable_code_widths(w_dtype, streams, groups, avx512_bf16_host):
    # 2-3- and 5-6-bit codes meeting bf16 activations: two streams (the pair dot's K pairs adjacent, a code
    # crossing a 16-bit word joined by a funnel shift); 4 bits pair adjacent K rows from one stream already;
    # 7-8 bits are not looked up (over 64 entries), so no pair dot of codes applies; 1-bit codes are stored in
    # groups of 4 K rows for the lookup of activation sums, which beats the pair dot
    low = run_passes(_product_kernel("bf16", "f16", w_dtype), parse_target("tvm:llvm"),
                     ["infer-layouts", "lower-lowbit"], options=DEFER)
    assert (low.param_formats["w"].substreams, low.param_formats["w"].groups) == (streams, groups)
    low = run_passes(_product_kernel("f32", "f16", w_dtype), parse_target("tvm:llvm"),
                     ["infer-layouts", "lower-lowbit"], options=DEFER)
    assert low.param_formats["w"].substreams == 1
