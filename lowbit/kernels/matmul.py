"""Host side of the low-bit matmul (``matmul.lbk``): tile configuration, weight preparation, launch.

:func:`run_matmul` computes ``x2d @ dequant(qweight).T (+ bias)`` for a 2-D activation ``x2d [M, K]`` and a
``QuantizedTensor [N, K]``; it trusts its inputs (``lowbit.ops.matmul`` checks them).

* **Configuration** (:func:`choose_config`): the GEMV path (``DOT = 0``: multiply and reduce along K)
  for ``M <= 4`` (on TVM's CPU target a small ``dot`` is faster, so it takes ``dot`` with a small tile),
  the GEMM path (``dot``) above; tile sizes per backend; how the group size meets the K tile (``MODE``, see
  ``matmul.lbk``); split-K where the grid alone would leave the device idle (many K tiles, few output tiles).
  TVM's CPU GEMV also takes the two forms of ``matmul.lbk`` made for streaming a weight from memory:
  ``wt`` (the codes cut into tiles in program order, so each program reads one contiguous range) and
  ``gdot`` (``K`` tiles of one group, each group's dot scaled once); so do more rows of x with weights that
  unpack cheaply (:func:`cheap_unpack`) or any weight with bf16 activations (:func:`bf16_pairs`), 4 rows per
  program, or 8 where the weights are decoded into bf16 pairs (:func:`decoded_pairs`) and M is a multiple of 8.
* **Weights** are repacked once per kernel storage format and cached on the ``QuantizedTensor``
  (:meth:`~lowbit.quant.QuantizedTensor.get_packed`, keyed by the format id the low-bit lowering pass
  derived): codes transposed to ``[K, N]`` (or cut into ``[BK, BN]`` tiles for ``wt``) then packed,
  scales and zeros transposed to ``[K // G, N]``.

>>> import torch
>>> from lowbit.quant import quantize
>>> w = quantize(torch.randn(48, 96), "int4", group_size=32)
>>> x = torch.randn(2, 96)
>>> y = run_matmul(x, w, None, "interpret")
>>> bool(torch.allclose(y, x @ w.dequantize().T, atol=1e-4))
True
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from ..dtypes import dtype
from ..quant import FormatId
from .library import compiled, pow2_at_least

__all__ = ["MatmulConfig", "MatmulPlan", "PreparedWeight", "cheap_unpack", "choose_config", "prepare_weight",
           "matmul_plan", "run_matmul", "takes_zeros_out", "product_rounding", "bf16_pairs", "decoded_pairs", "tile_codes",
           "tile_groups", "GEMV_MAX_M", "DECODED_PAIR_ROWS"]

FILE = "matmul.lbk"

#: the GEMV path serves up to this many rows of x
GEMV_MAX_M = 4
#: rows of the streaming tile for decoded bf16 pairs (:func:`decoded_pairs`), where M is a multiple of it
DECODED_PAIR_ROWS = 8
#: vectors of outputs a one-row GEMV program on TVM's CPU target accumulates (its tile is this many vectors wide)
GEMV_ACCUMULATORS = 8

#: storage id of plain ``[K, N]`` codes (what the reference interpreter reads: it needs no packing)
CODES_KN = FormatId("lowbit-matmul-codes-kn", 1)

_NATIVE_SIDE = ("float16", "bfloat16", "float32")          # scale dtypes passed as they are
_NATIVE_ZERO = ("float16", "bfloat16", "float32", "int8", "uint8", "int32")


@dataclass(frozen=True)
class MatmulConfig:
    """Tile sizes and code path of one matmul launch (the constants of ``lowbit_matmul``).

    ``mode``: 0 per-channel scales applied after the K loop, 1 ``bk`` a multiple of the group size,
    2 the group size a multiple of ``bk``. ``dot``: 1 GEMM path, 0 GEMV path. ``split``: K splits.
    ``ct``: the dtype of the ``dot`` operands: ``float32`` (default: exact products, the accuracy the
    tests state) or ``float16`` / ``bfloat16`` (dequantized weights rounded to it, products on tensor
    cores on GPUs; accumulation stays f32). ``wt``: 1 reads the codes cut into ``[bk, bn]`` tiles in the
    order the programs read them (each program streams one contiguous range), 0 as ``[K, N]``.
    ``gdot``: 1 scales each tile's dot product once by its group's scales (needs one scale row per K
    tile: ``mode`` 2, or ``mode`` 1 with ``bk`` = the group size); see ``matmul.lbk`` for both.
    ``zsum``: 1 (with ``gdot``, for weights with zero points) takes the zero point out of each group's sum,
    ``sum x q - z sum x``, so the codes meet x as they are (see ``matmul.lbk``; it loosens the error bound).
    """

    bm: int
    bn: int
    bk: int
    mode: int
    dot: int
    split: int = 1
    ct: str = "float32"
    wt: int = 0
    gdot: int = 0
    zsum: int = 0

    def __post_init__(self) -> None:
        if (min(self.bm, self.bn, self.bk, self.split) < 1 or self.mode not in (0, 1, 2) or self.dot not in (0, 1)
                or self.ct not in ("float32", "float16", "bfloat16") or self.wt not in (0, 1)
                or self.gdot not in (0, 1) or (self.gdot and self.mode == 0) or self.zsum not in (0, 1)
                or (self.zsum and not self.gdot)):
            raise ValueError(f"invalid matmul configuration {self}")

    def fits(self, group_size: int, k: int) -> bool:
        """Whether the K tiling meets group size ``group_size`` and ``K = k`` as ``mode`` (and ``gdot``) say."""
        ok = ((self.mode == 0 and group_size == k) or (self.mode == 1 and self.bk % group_size == 0)
              or (self.mode == 2 and group_size % self.bk == 0))
        return ok and not (self.gdot and self.mode == 1 and self.bk != group_size)


@dataclass(frozen=True)
class PreparedWeight:
    """A weight in one kernel's storage: ``q`` (packed codes, or ``[K, N]`` codes for the interpreter),
    ``s`` scales ``[K // G, N]``, ``z`` zero points ``[K // G, N]`` (a ``[1, 1]`` placeholder without); the
    three cut into the kernel's tiles with ``WT = 1`` (:func:`tile_codes`, :func:`tile_groups`)."""

    format: FormatId
    q: Any
    s: Any
    z: Any


def _k_tiling(k: int, g: int, target: int) -> tuple[int, int]:
    """``(mode, bk)`` for K = ``k``, group size ``g`` and a preferred K tile ``target`` (a power of two)."""
    if g == k:
        return 0, min(target, pow2_at_least(k))
    if g <= target:                            # several groups per tile
        if target % g == 0:
            return 1, target
        return 1, g * (target // g)            # g not a power of two: a tile of whole groups
    p = target                                 # several tiles per group: the largest power of two dividing g
    while p > 1 and g % p:
        p //= 2
    if p >= 16:
        return 2, p
    divisor = max(d for d in range(1, target + 1) if g % d == 0)
    if divisor >= 16:
        return 2, divisor
    return 1, g                                # no good divisor: one (large) group per tile


def cheap_unpack(wtype: str | None) -> bool:
    """Whether codes of lowbit type ``wtype`` unpack for a few instructions per 16 weights: codes of at most 4
    bits (one table lookup, ``select_dequant``) and 8-bit integers (a widening convert). Wider floats and 6-7-bit
    codes are decoded by arithmetic, dear enough that a tile of many rows should share each decode. 5-bit codes
    are one lookup too (two table registers), but with f32 activations streaming them measured 2x faster at
    M = 8 and ~10% slower at M = 16-32 than the GEMM tile (int5, 1024 x 4096, one thread), so they stay out.

    >>> cheap_unpack("uint3"), cheap_unpack("int8"), cheap_unpack("float8_e4m3fn"), cheap_unpack(None)
    (True, True, False, False)
    """
    if wtype is None:
        return False
    d = dtype(wtype)
    return d.nbits <= 4 or (d.nbits == 8 and not d.is_float)


def bf16_pairs(wtype: str | None, xtype: str | None) -> bool:
    """Whether TVM's CPU code can multiply ``wtype`` codes by ``xtype`` activations two K rows per ``vdpbf16ps``
    whatever their decode: bf16 activations, a host with AVX-512 BF16, and codes of at most 8 bits (bf16 holds
    every such value exactly; ``lowering/tvm/pair_dot.py``, ``DecodedPairDot``)."""
    from ..lowering.target import host_has_avx512_bf16

    return xtype == "bfloat16" and wtype is not None and dtype(wtype).nbits <= 8 and host_has_avx512_bf16()


def decoded_pairs(wtype: str | None, xtype: str | None) -> bool:
    """Whether TVM's CPU code multiplies ``wtype`` weights by ``xtype`` activations in bf16 pairs of *decoded*
    weights (:func:`bf16_pairs` for codes wider than 6 bits; narrower ones index a ``vpermw`` / ``vpermi2w``
    table of bf16 values directly), where a decode is dear enough that more rows should share it.

    >>> decoded_pairs("int6", "bfloat16"), decoded_pairs("float8_e4m3fn", "float32")
    (False, False)
    """
    return bf16_pairs(wtype, xtype) and dtype(wtype).nbits > 6


def choose_config(m: int, n: int, k: int, group_size: int, backend: str, device: str,
                  workers: int | None = None, zeros: bool = False, wtype: str | None = None,
                  xtype: str | None = None) -> MatmulConfig:
    """The tile configuration for an ``[m, k] x [k, n]`` product (see the module docstring).

    ``workers``: programs the device runs at once (CUDA multiprocessors, CPU threads); split-K is used when
    the output tiles alone are fewer than that and K is long enough to share. ``zeros``: the weight has
    zero points (TVM's CPU GEMV then takes them out of the group sums: ``zsum``). ``wtype``: the weight's
    lowbit type name; on TVM's CPU target, weights that unpack cheaply (:func:`cheap_unpack`) take the GEMV's
    streaming tile for any number of rows, and so does any weight with bf16 activations (``xtype``, the
    activations' dtype name) where :func:`bf16_pairs` holds; where :func:`decoded_pairs` holds and M is a
    multiple of :data:`DECODED_PAIR_ROWS`, that tile is 8 rows by 32 outputs.

    >>> choose_config(1, 4096, 4096, 128, "triton", "cuda", workers=132)
    MatmulConfig(bm=1, bn=64, bk=128, mode=1, dot=0, split=6, ct='float32', wt=0, gdot=0, zsum=0)
    >>> choose_config(16, 4096, 4096, 128, "triton", "cuda", workers=132, xtype="float16")
    MatmulConfig(bm=16, bn=64, bk=128, mode=1, dot=1, split=4, ct='float16', wt=0, gdot=0, zsum=0)

    On TVM's CPU target the tile's width follows the host's vectors (:data:`GEMV_ACCUMULATORS` vectors for one
    row; 4 rows x 64 outputs with AVX-512, 4 x 16 with AVX2):

    >>> gemv = choose_config(1, 4096, 4096, 128, "tvm", "cpu", workers=2)
    >>> gemv.bm, gemv.bk, gemv.mode, gemv.wt, gemv.gdot, gemv.split
    (1, 128, 1, 1, 1, 1)
    >>> choose_config(64, 72, 200, 40, "tvm", "cpu", workers=2).mode
    1
    >>> streamed = choose_config(16, 4096, 4096, 128, "tvm", "cpu", workers=2, wtype="int4")
    >>> streamed.bm, streamed.wt, streamed.gdot
    (4, 1, 1)
    """
    # TVM's CPU code streams a weight of cheap codes with the GEMV's tile, 4 rows per program, however many
    # rows x has (4096 x 4096, g = 128, 2 threads, weights in cache): each pair of codes is unpacked once
    # per 4 rows, which against the GEMM tile (16-32 rows, a dequantized tile in memory, f32 FMAs) lets bf16
    # activations take vdpbf16ps. x bf16, M = 16 -> 64: int4 2.9 -> 1.5 ms, 10.5 -> 6.0; int2 2.7 -> 1.5,
    # 10.4 -> 5.9; uint8 5.7 -> 3.5 (M = 16); M = 8 (which took a 16-row tile): int4 2.8 -> 0.76 ms. x f32:
    # M = 8 int4 2.8 -> 1.35 ms; M = 16-64 within a few percent either way, uint8 4.1 -> 3.5 (M = 16).
    # Codes decoded by arithmetic lose with 4 rows (float8_e4m3fn x f32, M = 16: 4.0 -> 9.2 ms), unless the
    # activations are bf16 and the decoded weights go to vdpbf16ps in pairs (x bf16, M = 16: int6 3.30 ->
    # 2.44 ms, float8_e4m3fn 3.60 -> 3.28).
    streaming = backend == "tvm" and device == "cpu" and (m <= GEMV_MAX_M or cheap_unpack(wtype)
                                                          or bf16_pairs(wtype, xtype))
    gemv = m <= GEMV_MAX_M or streaming
    big_tiles = backend == "interpret" or (backend == "triton" and device == "cpu")
    if big_tiles:  # the interpreters pay per program and loop step, hardly per element
        bn = min(pow2_at_least(n), 128)
        target_k = 128 if gemv else 64
        bm = pow2_at_least(m) if gemv else min(pow2_at_least(m), 64)
    elif gemv:
        bm, bn, target_k = min(pow2_at_least(m), GEMV_MAX_M), 64, 128
    else:
        bm = 16 if m <= 16 else 32 if device == "cpu" or m <= 64 else 64
        # K tiles of 128 on a GPU: 16 x 4096 x 4096 int4 x f16 (f16 tensor-core dots, split 4, H200, weights from
        # HBM) 15.5 -> 14.5 us, 14336 x 4096 30.9 -> 30.2 us
        bn, target_k = 64, 128 if device == "cuda" else 64
    cpu_gemv = gemv and backend == "tvm" and device == "cpu"
    if cpu_gemv and m >= DECODED_PAIR_ROWS and m % DECODED_PAIR_ROWS == 0 and decoded_pairs(wtype, xtype):
        # each decode (a join of two K rows of f32 weights) feeds 8 rows instead of 4, in 2 vectors instead of 4:
        # 16 x 1024 x 4096 x bf16, one thread, weights in cache, 4 x 64 -> 8 x 32: float8_e4m3fn 1.61 -> 1.27 ms,
        # float6_e3m2 1.68 -> 1.33, int6 1.19 -> 1.03, int5 1.11 -> 1.01, uint7 1.18 -> 1.10, int8 1.02 -> 0.98.
        # Codes of at most 4 bits (a vpermw per vector) lose: int4 0.71 -> 0.83, float4_e2m1 0.69 -> 0.85
        bm, bn = DECODED_PAIR_ROWS, 32
    from ..lowering.target import host_vector_accumulators, host_vector_bytes

    lanes = host_vector_bytes() // 4
    if cpu_gemv and bm > 1:
        # a program's accumulators (bm rows of bn / lanes vectors) take at most half the vector registers, the
        # rest holding x, the words and the decode's constants: 4 x 64 with AVX-512 (16 of 32), 4 x 16 with AVX2
        # (8 of 16; 4 x 64 had 32 accumulators there). AVX2 host, 4 x 1024 x 4096, 2 threads, weights in cache,
        # x f32, separate runs: int4 674 -> 286 us, int2 704 -> 612, int8 542 -> 331; x bf16 int4 745 -> 599
        fit = host_vector_accumulators() * lanes // bm
        bn = max(lanes, min(bn, 1 << (fit.bit_length() - 1)))
    wide = GEMV_ACCUMULATORS * lanes
    if cpu_gemv and m == 1 and n >= wide:
        # one x row: 8 accumulators of the host's vectors still fit its registers, and each x value (or bf16
        # pair) is built once per 8 vectors of outputs: 128 with AVX-512's 16 lanes. 4096 x 4096, 2 threads,
        # weights from DRAM, interleaved A/B against 64: int4 0.250 -> 0.218 ms (x bf16), 0.445 -> 0.347 (x f32);
        # int2 0.228 -> 0.219, 0.344 -> 0.315. AVX2's 16 registers hold 8 accumulators of 8 lanes (64 outputs)
        # beside the decode's constants; 128 outputs spilled 7 of 16 accumulators to the stack on every K step
        bn = wide
    if cpu_gemv and group_size < k and 32 <= group_size <= 256:
        mode, bk = 1, group_size               # one group per K tile: its dot is scaled once (gdot)
    else:
        mode, bk = _k_tiling(k, group_size, target_k)
    split = 1
    if workers and not big_tiles:
        tiles = -(-m // bm) * -(-n // bn)
        k_tiles = -(-k // bk)
        if device == "cuda" and m <= 16:
            # a GPU wants several programs per multiprocessor in flight to cover HBM latency: split K until the
            # grid has ~4 per multiprocessor, each split keeping 5 (GEMV) or 8 (GEMM) K tiles. H200 (132 SMs),
            # g = 128, x f16, weights from HBM, CUDA graphs; against 3 / 1 splits before: 4096 x 4096 int4 GEMV
            # 18.2 -> 14.0 us (split 6), int3 18.8 -> 14.0; 14336 x 4096 int4 50.1 -> 28.8, int3 47.2 -> 33.7;
            # 16-row GEMM (split 4) 4096 x 4096 int4 15.5 (split 1: 32.6 for int3) -> 14.5, 14336 x 4096 35.0 -> 30.2.
            # (More rows: the partial sums' traffic grows with M; those keep the rule below.)
            if tiles < 4 * workers:
                split = max(1, min(k_tiles // (5 if gemv else 8), 16))
        elif tiles < workers and k_tiles >= 8:
            split = max(1, min(k_tiles // 4, -(-workers // tiles), 16))
    # TVM's CPU code for a small dot (an i, k, j loop nest) beats the broadcast-and-reduce form (measured
    # 7.8 vs 8.9 ms at M = 1, 9.4 vs 14.5 ms at M = 4 for a 4096 x 4096 uint4 weight, 2 threads)
    dot = 0 if gemv and not (backend == "tvm" and device == "cpu") else 1
    # TVM's CPU GEMV streams the weight: each program's tiles contiguous (wt), one scale multiply per
    # group (gdot). Measured with benchmarks/bench_gemv.py (4096 x 4096, g = 128, one thread, weights
    # from DRAM: uint4 1.5 -> 0.95 ms, int8 3.8 -> 0.95 ms).
    wt = int(cpu_gemv)
    gdot = int(cpu_gemv and (mode == 2 or (mode == 1 and bk == group_size)))
    # with the zero point out of the sums the codes reach the product as they are, so the unpack is one
    # table lookup (and bf16 pairs of it, vdpbf16ps) as for weights without zeros. 4096 x 4096, g = 128,
    # 2 threads, weights from DRAM, x bf16: uint4 0.445 -> 0.266 ms, uint2 0.419 -> 0.210; M = 4 ~1.8 -> 0.55
    zsum = int(gdot and zeros)
    # a GPU's GEMM tile multiplies half-precision activations on the tensor cores, the dequantized weights rounded
    # to the activations' type (what `ct` says: the error bound gains that rounding, see product_rounding); f32
    # dots run on the CUDA cores at a fraction of the speed: 16 x 4096 x 4096 int4 x f16 133 -> 14.5 us on an H200
    ct = xtype if device == "cuda" and dot and xtype in ("float16", "bfloat16") else "float32"
    return MatmulConfig(bm=bm, bn=bn, bk=bk, mode=mode, dot=dot, split=split, ct=ct, wt=wt, gdot=gdot, zsum=zsum)


#: unit roundoff of the ``dot`` operand types (``MatmulConfig.ct``)
_CT_ROUNDING = {"float32": 0.0, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def product_rounding(m: int, qweight: Any, backend: str, device: str = "cpu", xtype: str | None = None) -> float:
    """The unit roundoff of the weights as :func:`run_matmul` (its default configuration) multiplies them with
    ``m`` rows of ``xtype`` activations: 0 where they meet x as exact f32 values, 2^-11 / 2^-8 where a GPU's
    GEMM tile rounds them to f16 / bf16 for the tensor cores (each product then errs by up to that much of
    ``|x w|``, on top of the f32 sums).

    >>> from lowbit.quant import quantize
    >>> import torch
    >>> w = quantize(torch.randn(256, 512), "int4", group_size=128)
    >>> product_rounding(1, w, "triton", "cuda", "float16"), product_rounding(16, w, "triton", "cuda", "float16")
    (0.0, 0.00048828125)
    """
    n, k = (int(v) for v in qweight.shape)
    cfg = choose_config(m, n, k, qweight.group_size, backend, device, zeros=qweight.zeros is not None,
                        wtype=qweight.dtype.name, xtype=xtype)   # (the operand type does not depend on workers)
    return _CT_ROUNDING[cfg.ct]


def takes_zeros_out(m: int, qweight: Any, backend: str, device: str = "cpu", xtype: str | None = None) -> bool:
    """Whether :func:`run_matmul` (its default configuration) computes ``s (sum x q - z sum x)`` for ``m`` rows
    of x (of dtype name ``xtype``) and ``qweight`` (``zsum``): its error then scales with ``|x| (|q| + |z|)
    |s|``, not ``|x w|``."""
    n, k = (int(v) for v in qweight.shape)
    return bool(choose_config(m, n, k, qweight.group_size, backend, device, zeros=qweight.zeros is not None,
                              wtype=qweight.dtype.name, xtype=xtype).zsum)


def _side_dtype(name: str, native: tuple[str, ...]) -> str:
    return name if name in native else "float32"


def _constants(qweight: Any, x_dtype: str, cfg: MatmulConfig, has_bias: bool,
               out_dtype: str | None = None) -> dict[str, Any]:
    zeros = qweight.zeros is not None
    sdt = _side_dtype(str(qweight.scales.dtype).removeprefix("torch."), _NATIVE_SIDE)
    zdt = _side_dtype(str(qweight.zeros.dtype).removeprefix("torch."), _NATIVE_ZERO) if zeros else "float16"
    return dict(W=qweight.dtype.name, XT=x_dtype, OT=out_dtype or x_dtype, ST=sdt, ZT=zdt, G=qweight.group_size,
                MODE=cfg.mode, ZERO=int(zeros), IZ=qweight.implicit_zero, BIAS=int(has_bias), DOT=cfg.dot,
                SPLIT=cfg.split, BM=cfg.bm, BN=cfg.bn, BK=cfg.bk, CT=cfg.ct, WT=cfg.wt, GDOT=cfg.gdot, ZSUM=cfg.zsum)


def _as_torch(a: Any, device: Any) -> Any:
    import torch

    from ..quant import storage

    return a.to(device) if isinstance(a, torch.Tensor) else storage.to_torch(a, device)


def tile_codes(codes: Any, bn: int, bk: int) -> Any:
    """Codes ``[N, K]`` (torch) cut into the ``WT = 1`` arrangement of ``matmul.lbk``: the ``[bk, bn]``
    (K by N) tile of column block ``j`` and K tile ``t`` at rows ``(j * cdiv(K, bk) + t) * bk``, edges padded
    with code 0. Shape ``[cdiv(N, bn) * cdiv(K, bk) * bk, bn]``.

    >>> import torch
    >>> tile_codes(torch.arange(12).reshape(3, 4), bn=2, bk=2)[:, 0].tolist()   # column 0, then 1 of block 0
    [0, 1, 2, 3, 8, 9, 10, 11]
    """
    import torch

    n, k = (int(v) for v in codes.shape)
    nt, kt = -(-n // bn), -(-k // bk)
    padded = torch.zeros(nt * bn, kt * bk, dtype=codes.dtype, device=codes.device)
    padded[:n, :k] = codes
    return padded.reshape(nt, bn, kt, bk).permute(0, 2, 3, 1).reshape(nt * kt * bk, bn).contiguous()


def tile_groups(groups: Any, bn: int) -> Any:
    """Per-group values ``[NG, N]`` (torch: scales or zero points) cut into the ``WT = 1`` arrangement of
    ``matmul.lbk``: column block ``j``'s ``[NG, bn]`` at rows ``j * NG ..``, edges padded with 0. Shape
    ``[cdiv(N, bn) * NG, bn]``.

    It is :func:`tile_codes` of the transposed values with one K tile of all ``NG`` groups.

    >>> import torch
    >>> tile_groups(torch.arange(6).reshape(2, 3), bn=2).tolist()      # blocks: columns 0-1, then 2 (padded)
    [[0, 1], [3, 4], [2, 0], [5, 0]]
    """
    return tile_codes(groups.t(), bn, int(groups.shape[0]))


def prepare_weight(qweight: Any, fmt: Any, device: Any, scale_dtype: str, zero_dtype: str,
                   storage_dtype: Any = None, cfg: MatmulConfig | None = None) -> PreparedWeight:
    """The weight in the storage ``fmt`` (a packed format from the lowering, or ``None`` for plain codes),
    built once and cached on ``qweight`` under the format's id. ``storage_dtype``: the torch dtype the
    compiled kernel takes for ``q`` (packed words are reinterpreted to it, bit for bit). ``cfg``: the
    kernel's configuration; with ``cfg.wt`` the codes are cut into its tiles (:func:`tile_codes`) first."""
    import torch

    from ..lowering.tvm.tensors import aligned

    tiled = cfg is not None and cfg.wt == 1
    if fmt is None:
        format_id = FormatId(f"lowbit-matmul-codes-tiled-{cfg.bk}x{cfg.bn}", 1) if tiled else CODES_KN
    elif tiled:   # the tile format packs a different arrangement here: never share a cache entry
        format_id = FormatId(f"{fmt.format_id.name}-tiled", fmt.format_id.version)
    else:
        format_id = fmt.format_id

    def build(qt: Any) -> PreparedWeight:
        codes = _as_torch(qt.codes(), device)
        codes = tile_codes(codes, cfg.bn, cfg.bk) if tiled else codes.t().contiguous()
        if fmt is not None:
            q = fmt.pack(codes)
        elif qt.dtype.name == "int8":  # a native IR type: the kernel takes the codes' bits as int8
            q = codes.view(torch.int8)
        else:
            q = codes
        if storage_dtype is not None and q.dtype != storage_dtype:
            q = q.view(storage_dtype)
        s = _as_torch(qt.scales, device).to(getattr(torch, scale_dtype)).t()
        if qt.zeros is None:
            z = torch.zeros(1, 1, dtype=getattr(torch, zero_dtype), device=device)
        else:
            z = _as_torch(qt.zeros, device).to(getattr(torch, zero_dtype)).t()
            z = tile_groups(z, cfg.bn) if tiled else z
        s = tile_groups(s, cfg.bn) if tiled else s
        # contiguous and aligned for TVM: views can be neither (the transposed scales of a single group view
        # the quantizer's numpy array, 16-byte aligned), and a launch bound to one would copy it every call
        return PreparedWeight(format_id, aligned(q), aligned(s), aligned(z))

    return qweight.get_packed(format_id, build)


def _param_torch_dtype(kernel: Any, name: str) -> Any:
    from ..driver import torch_dtype

    for param in kernel.params:
        if param.name == name:
            return torch_dtype(param.value.type.dtype)
    return None


def _workers(device: Any, backend: str) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    if backend == "tvm":
        from ..lowering.target import cpu_threads

        return cpu_threads()
    return 1


def run_matmul(x2d: Any, qweight: Any, bias: Any, backend: str, config: MatmulConfig | None = None,
               out_dtype: Any = None) -> Any:
    """``x2d [M, K] @ dequant(qweight [N, K]).T + bias``, shape ``[M, N]`` in ``out_dtype`` (a torch float dtype;
    None: ``x2d``'s dtype).

    ``x2d`` must be contiguous; ``bias`` is ``None`` or an f32 tensor ``[N]`` on ``x2d``'s device.
    ``config`` overrides :func:`choose_config` (tests use it to force split-K or a path).

    The configuration, the compiled kernels, the weight's storage and the launches bound to it are
    worked out on the first call for each row count (:class:`MatmulPlan`) and kept with the weight
    (:meth:`~lowbit.quant.QuantizedTensor.launch_plan`); later calls allocate the output and launch.
    """
    return matmul_plan(x2d, qweight, bias, backend, config, out_dtype).run(x2d, bias)


def matmul_plan(x2d: Any, qweight: Any, bias: Any, backend: str, config: MatmulConfig | None = None,
                out_dtype: Any = None) -> "MatmulPlan":
    """The :class:`MatmulPlan` of ``qweight`` for ``x2d``'s row count, dtype and device and the output dtype
    (``None``: ``x2d``'s), built on first use."""
    out_dtype = x2d.dtype if out_dtype is None else out_dtype
    key = ("lowbit_matmul", int(x2d.shape[0]), x2d.dtype, out_dtype, x2d.device, bias is not None, backend, config)
    return qweight.launch_plan(key, lambda: MatmulPlan.build(x2d, qweight, bias, backend, config, out_dtype))


@dataclass(frozen=True)
class MatmulPlan:
    """A weight's matmul for one row count, activation and output dtype and bias presence (``dtype``: the
    output's): the configuration and the launches, bound once (:meth:`lowbit.driver.CompiledKernel.bind`) to
    the weight's storage and sizes.
    ``main`` takes ``x``, ``c`` (and ``bias``, and ``part`` with split-K); ``reduce`` (split-K only)
    takes ``part``, ``c`` (and ``bias``). :meth:`run` allocates the output and launches both."""

    cfg: MatmulConfig
    out_shape: tuple[int, int]
    dtype: Any
    device: Any
    main: Any
    reduce: Any = None

    def run(self, x2d: Any, bias: Any) -> Any:
        """``x2d @ W.T + bias`` into a new ``[M, N]`` tensor. ``x2d`` (and ``bias``) must have the dtypes, shapes
        and device this plan was built for (the caller checks them; only the memory layout is checked here)."""
        torch = sys.modules["torch"]
        out = torch.empty(*self.out_shape, dtype=self.dtype, device=self.device)   # (args are parsed faster)
        if self.main is None:                                  # M = 0
            return out
        with_bias = () if bias is None else (bias,)
        if self.reduce is None:
            self.main.trusted(x2d, out, *with_bias)
            return out
        part = torch.empty(self.cfg.split, *self.out_shape, dtype=torch.float32, device=self.device)
        self.main.trusted(x2d, out, *with_bias, part)
        self.reduce.trusted(out, *with_bias, part)
        return out

    @staticmethod
    def build(x2d: Any, qweight: Any, bias: Any, backend: str, config: MatmulConfig | None,
              out_dtype: Any) -> "MatmulPlan":
        import torch

        m, k = (int(v) for v in x2d.shape)
        n = int(qweight.shape[0])
        device = x2d.device
        kind = "cuda" if device.type == "cuda" else "cpu"
        x_dtype = str(x2d.dtype).removeprefix("torch.")
        o_dtype = str(out_dtype).removeprefix("torch.")
        g = qweight.group_size
        cfg = config or choose_config(m, n, k, g, backend, kind, _workers(device, backend),
                                      zeros=qweight.zeros is not None, wtype=qweight.dtype.name, xtype=x_dtype)
        if not cfg.fits(g, k):
            raise ValueError(f"{cfg} does not fit group size {g} and K = {k}")
        consts = _constants(qweight, x_dtype, cfg, bias is not None, o_dtype)
        kernel = compiled(FILE, "lowbit_matmul", backend, kind, **consts)
        fmt = kernel.param_formats.get("q")
        w = prepare_weight(qweight, fmt, device, consts["ST"], consts["ZT"], _param_torch_dtype(kernel, "q"), cfg)
        if m == 0:
            return MatmulPlan(cfg, (m, n), out_dtype, device, None)
        # examples of the varying arguments (the bound launches keep their dtypes and shapes, not them)
        out = torch.empty(m, n, dtype=out_dtype, device=device)
        bias_arg = bias if bias is not None else torch.zeros(1, dtype=torch.float32, device=device)
        part = torch.empty(cfg.split, m, n, dtype=torch.float32, device=device) if cfg.split > 1 else \
            torch.empty(1, 1, 1, dtype=torch.float32, device=device)
        vary = ("x", "c") + (("bias",) if bias is not None else ()) + (("part",) if cfg.split > 1 else ())
        # q's logical extents (its packed storage alone does not determine them). Every argument is built
        # here to the kernel's signature, so the driver's argument check is skipped.
        rows = -(-n // cfg.bn) * -(-k // cfg.bk) * cfg.bk if cfg.wt else k
        main = kernel.bind(dict(x=x2d, q=w.q, s=w.s, z=w.z, bias=bias_arg, c=out, part=part), vary,
                           shape_bindings={"QR": rows, "QC": cfg.bn if cfg.wt else n}, check=False)
        reduce = None
        if cfg.split > 1:
            kred = compiled(FILE, "splitk_reduce", backend, kind, OT=o_dtype, BIAS=int(bias is not None),
                            BM=min(pow2_at_least(m), 16), BN=64)
            reduce = kred.bind(dict(part=part, bias=bias_arg, c=out), tuple(v for v in vary if v != "x"),
                               check=False)
        return MatmulPlan(cfg, (m, n), out_dtype, device, main, reduce)
