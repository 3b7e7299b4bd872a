"""Dequantization methods: low-bit codes -> native values with native bit arithmetic, and the rule that
picks one per target.

Every method starts from a **carrier**: a ``uint32`` tile holding each element's raw code bits
(``0 <= c < 2**n``), as :func:`emit_extract` produces from packed words. Methods (all exact; the tests
check every code of every type against :mod:`lowbit.dtypes` through the interpreter):

* ``arith`` (int/uint): sign-extend with ``shl`` by ``32 - n`` and an arithmetic ``shr`` back, ``cast`` to
  the float type (exact: |v| <= 255).
* ``top`` (int of 2-8 bits, into f32 or bf16): the code ``shl`` to the top of an int32 (its sign on the sign bit),
  ``cast`` to f32, then a multiply by ``2**(n - 32)`` (exact: a power of two), which TVM's CPU ``dot`` moves
  onto its activations (once per row and K step, not per product). On a CPU the extraction's right shift merges
  with the left one: ``(w << (32 - n - p)) & (m << (32 - n))``, a shift and a mask (only one of them for the
  word's lowest and highest code), where ``arith`` adds an arithmetic shift on one of the two pipes that shift
  and convert.
* ``magic`` (int/uint): ``or`` the code into the mantissa of 1024.0 (f16, ``0x6400``) or 2^23 (f32,
  ``0x4B000000``), ``view`` as float, subtract the magic (signed codes first flip their sign bit, so the
  subtrahend is ``magic + 2**(n-1)``). No int->float conversion instruction: pays on GPUs, where I2F runs
  at a quarter of the FP32 rate; CPUs convert at full rate, so ``arith`` is their default.
* ``bits`` (floats with E exponent, M mantissa bits, bias b): the code shifted to the top of the destination
  word, an arithmetic shift right by the destination's spare exponent bits (the E+M body lands under the
  exponent field, the sign stays on top and fills the bits between, which an ``and`` clears), ``view``, then
  multiply by ``2**(bias_dst - b)``. Normals are rebiased and **subnormals come out exact** (a destination
  subnormal times a power of two; the same trick as Tilus and Marlin). Straight to f16 when E <= 4 and every
  value is an exact f16, else through f32. float8_e4m3fn's NaN codes become NaN with a ``where`` on a test of
  the carrier (which a CPU ``dot`` moves out of its K loop: ``lowering/tvm/nan_guard.py``). Reads only
  the code's low ``n`` bits (the first shift drops the rest), like ``table``: 3 instructions where masking and
  placing sign and body apart took 5 (float8_e4m3fn x bf16 GEMV, 4096^2, 2 threads: 0.72 -> 0.61 ms).
* ``shift`` (float8_e5m2): the code is the high byte of an f16: ``code << 8``, ``view`` (inf/NaN kept).
* ``table`` (any type): one ``lookup`` instruction over the ``2**n`` exact values (in ``out`` when all are
  exact there, else f32 then a cast). ``lookup`` reads only the low ``n`` bits of its index, so the extraction
  can skip its mask (:func:`emit_extract` with ``keep_high_bits``; so can ``bits``: :data:`LOW_BITS_METHODS`).
  Cheap only where the target looks a table up in a register
  (:func:`lowbit.lowering.target.register_table_entries`: 32 entries on AVX-512 CPUs, one ``vpermps`` of 16 or
  ``vpermi2ps`` of 32; 64 for a decode that only meets bf16 activations on an AVX-512 BF16 CPU, where the
  pair dot looks it up as bf16 by ``vpermi2w``; 8 on AVX2 CPUs, one 8-lane ``vpermps``), so the rule considers
  it only for codes of at most ``log2(entries)`` bits. AVX2 host, 4096^2 g128 GEMV x f32, 2 threads: int2
  0.62 -> 0.37 ms, int3 x bf16 0.68 -> 0.39 (a shift, a ``vpermps`` and a multiply-add per 8 products, where
  ``arith`` took a shift more and a conversion).
* ``lut`` (any type of <= 4 bits): a lookup in a table of the exact values, written with the IR's own
  instructions (it has no gather). **Byte table** when every value's f16 pattern has a zero low byte (all
  <= 4-bit types but uint4): the high bytes, four per ``uint32`` immediate; the code's low two bits pick a
  byte by a variable ``shr``, its higher bits pick the word by a ``where`` tree; ``shl`` 8, truncate to
  ``uint16``, ``view`` f16 (f32: ``cast``). **Select tree** otherwise (1-bit codes, uint4): ``n`` levels of
  ``where(bit_k, hi, lo)`` over constant bit patterns (``2**n - 1`` selects), ``view``.

bf16 results are computed in f32 and cast (RNE, exact here), as the interpreter's own cast rule does.

The default is the cheapest applicable method by :func:`dequant_cost`: the instructions per element of the
emitted IR, an int->float conversion weighing 4 on CUDA (I2F: quarter rate), 2 on CPUs, less what a CPU
folds away (:func:`method_weight`: the extraction in ``arith``'s sign extension, ``top``'s multiply). Ties go to the
defaults (CUDA ``magic``, CPU ``top`` then ``arith``, then ``bits``, ``shift``, ``lut``). ``lut`` wins for
1-bit codes (uint1 to f16 on CUDA, int1 everywhere) and float2_e1m0 to f16; ``table`` (cost 1) for every code that
fits the target's register table (``table_entries``; none by default).

>>> default_method("uint4", "float16", "cuda"), default_method("uint4", "float16", "cpu")
('magic', 'arith')
>>> applicable_methods("float6_e3m2", "float32"), applicable_methods("float4_e2m1", "float32")
(('bits', 'table'), ('bits', 'lut', 'table'))
>>> default_method("int1", "float16", "cpu"), dequant_cost("int1", "float16", "lut").alu
('lut', 2)
>>> default_method("float4_e2m1", "float32", "cpu", table_entries=16), dequant_cost("uint4", "float32", "table").alu
('table', 1)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from typing import Any, Mapping

import numpy as np

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.types import kind_of, lowbit_dtype, nbits_of

from . import layout_rules as R
from .lowbit_emit import Emitter

CARRIER = "uint32"
METHODS = ("arith", "magic", "bits", "shift", "lut", "table", "top")
#: the methods that read only the low ``n`` bits of their carrier (its bits above may be whatever follows the code)
LOW_BITS_METHODS = ("bits", "table")
FLOAT_OUT = ("float16", "float32", "bfloat16")
#: the widest code type ``lut`` decodes (a table of 2**n entries; the select tree costs 2**n - 1 selects)
LUT_MAX_BITS = 4
#: how many ALU instructions one int->float conversion costs on CUDA (I2F issues at a quarter of the FP32 rate)
CUDA_CONVERT_WEIGHT = 4
#: ... and on CPUs, calibrated by measurement (benchmarks/bench_gemv.py, 1 thread, 4096^2 g128 GEMV): for signed
#: codes into f32 `arith` and `magic` both count 3, but `magic` (no vcvtdq2ps) ran ~20% faster (int4 0.89 -> 0.71
#: ms, int3 0.91 -> 0.72, int2 0.95 -> 0.75); unsigned codes (arith 2 vs magic 2 with this weight) ran the same.
CPU_CONVERT_WEIGHT = 2
#: instructions a CPU saves where ``arith`` sign-extends a code whose width divides 32 (whole codes per word):
#: LLVM merges the extraction's shift and mask (``(w >> p) & m``) into the sign extension's shifts, one
#: ``sar(shl(w, 32 - n - p), 32 - n)``, so the decode is ``vpslld``, ``vpsrad``, ``vcvtdq2ps`` per vector where
#: ``magic`` is ``vpsrld``, ``vpand``, ``vpxor``, ``vaddps``. Codes that straddle words are assembled from parts
#: first and save nothing. AVX2 host (Zen 4, 2 threads), 4096 x 4096 g128, old (magic) and new (arith)
#: interleaved: x f32 int4 M=1 0.733 -> 0.636 ms, int2 0.712 -> 0.626, int4 M=16 5.08 -> 4.47, x bf16 int4
#: 0.743 -> 0.652; int8 even; straddling codes even or worse (int5 x bf16 M=4 1.12 -> 1.36). Not 1-bit codes, whose
#: ``lut`` select LLVM also reads in place (a shift to the sign bit and a blend): arith was slower there (int1 x f32
#: GEMV 0.50 -> 0.59 ms).
CPU_FOLDED_EXTRACTION = 2
#: the code widths :data:`CPU_FOLDED_EXTRACTION` applies to
FOLDED_WIDTHS = (2, 4, 8)
#: instructions a CPU saves on ``top``: its multiply moves onto the dot's activations, and the extraction's right
#: shift merges with its left shift (a shift and a mask remain). AVX2 host (Zen 4, 2 threads), 4096 x 4096 g128,
#: old and new interleaved, one row: int4 x f32 0.60 -> 0.48 ms (against arith), x bf16 0.60 -> 0.49; int5 0.76
#: -> 0.62 (against magic), int6 0.74 -> 0.63, int7 x bf16 0.79 -> 0.64; 2 rows int4 0.63 -> 0.59; 4 and 16 rows
#: within this VM's noise (0.87-1.34 over runs: int6 x 4 1.62 -> 1.41, int4 x 4 1.39 -> 1.45, int6 x 16 6.8 -> 6.6).
CPU_TOP_SAVING = 2


# ----------------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------------

def applicable_methods(code_dtype: str, out_dtype: str) -> tuple[str, ...]:
    """The methods that decode ``code_dtype`` exactly into ``out_dtype`` (a float type)."""
    d = lowbit_dtype(code_dtype)
    lut = ("lut",) if d.nbits <= LUT_MAX_BITS else ()
    if d.kind in ("int", "uint"):
        top = ("top",) if d.kind == "int" and d.nbits >= 2 and out_dtype in ("float32", "bfloat16") else ()
        return ("arith", "magic") + lut + ("table",) + top
    if d.name == "float8_e5m2":
        return ("shift", "table")
    return ("bits",) + lut + ("table",)


@dataclass(frozen=True)
class DequantCost:
    """Instructions per element of one decode, counted on the IR :func:`emit_decode` emits.

    ``alu``: instructions that compute (arithmetic, bitwise, compares, selects, value-changing casts);
    ``free``: bit reinterpretations (``view``, casts between integers of one width); ``convert``: the int->float
    casts among ``alu``. Constant tiles (``full``) are immediates and not counted.

    >>> c = dequant_cost("int4", "float16", "arith"); (c.alu, c.free, c.convert, c.weight("cuda"))
    (3, 1, 1, 6)
    """

    alu: int
    free: int
    convert: int

    def weight(self, kind: str) -> int:
        """The cost on a target kind: ``alu``, an int->float conversion weighing 4 on CUDA and 2 on CPUs."""
        per_convert = CUDA_CONVERT_WEIGHT if kind == "cuda" else CPU_CONVERT_WEIGHT
        return self.alu + (per_convert - 1) * self.convert


@lru_cache(maxsize=None)
def dequant_cost(code_dtype: str, out_dtype: str, method: str) -> DequantCost:
    """Count the per-element instructions of ``method`` decoding ``code_dtype`` into ``out_dtype``."""
    em = Emitter(set())
    carrier = em.value("c", CARRIER, (8,))
    emit_decode(em, carrier, code_dtype, out_dtype, method)
    alu = free = convert = 0
    for ins in em.body:
        if isinstance(ins, (n.Constant, n.Full, n.Arange)) or tuple(ins.result.shape) != (8,):
            continue
        if isinstance(ins, n.View) or (isinstance(ins, n.Cast) and kind_of(ins.x.dtype) in ("int", "uint")
                                       and kind_of(ins.result.dtype) in ("int", "uint")
                                       and nbits_of(ins.x.dtype) == nbits_of(ins.result.dtype)):
            free += 1
            continue
        alu += 1
        if isinstance(ins, n.Cast) and kind_of(ins.x.dtype) in ("int", "uint") and kind_of(ins.result.dtype) == "float":
            convert += 1
    return DequantCost(alu, free, convert)


@lru_cache(maxsize=None)
def default_method(code_dtype: str, out_dtype: str, kind: str, table_entries: int = 0) -> str:
    """The documented rule: the applicable method of least :func:`method_weight` on ``kind``; ties go to
    the defaults (CUDA ``magic``, CPU ``top`` then ``arith``, then ``bits``, ``shift``, ``lut``). In effect:
    integers by ``magic`` on CUDA; on CPUs signed integers of 2-8 bits into f32 or bf16 by ``top``, other
    integers and f16 outputs by ``arith``; e5m2 by ``shift``, other floats by ``bits``, except ``lut`` for int1,
    uint1 to f16 on CUDA, and float2_e1m0 to f16. ``table`` competes only when the target looks up
    ``table_entries >= 2**n`` entries in a register (then it wins: one instruction)."""
    out = out_dtype if out_dtype in FLOAT_OUT else "float32"
    order = ("magic", "arith", "top") if kind == "cuda" else ("top", "arith", "magic")
    order += ("bits", "shift", "lut")
    if (1 << nbits_of(code_dtype)) <= table_entries:
        order += ("table",)
    ok = applicable_methods(code_dtype, out)
    ranked = [m for m in order if m in ok]
    return min(ranked, key=lambda m: method_weight(code_dtype, out, m, kind))


def method_weight(code_dtype: str, out_dtype: str, method: str, kind: str) -> int:
    """What the rule minimizes: :meth:`DequantCost.weight`, on CPUs less :data:`CPU_FOLDED_EXTRACTION` where
    ``arith`` sign-extends a 2-, 4- or 8-bit code (whole codes per word: the extraction folds into the sign
    extension) and less :data:`CPU_TOP_SAVING` for ``top``.

    >>> [method_weight("int4", "float32", m, "cpu") for m in ("top", "arith", "magic")]
    [2, 2, 3]
    >>> method_weight("int5", "float32", "arith", "cpu"), method_weight("int4", "float32", "top", "cuda")
    (4, 6)
    """
    weight = dequant_cost(code_dtype, out_dtype, method).weight(kind)
    d = lowbit_dtype(code_dtype)
    if kind != "cuda" and method == "arith" and d.kind == "int" and d.nbits in FOLDED_WIDTHS:
        weight -= CPU_FOLDED_EXTRACTION
    if kind != "cuda" and method == "top":
        weight -= CPU_TOP_SAVING
    return weight


def forced_method(code_dtype: str, options: Mapping[str, Any] | None) -> str | None:
    """The method ``options["dequant"]`` names for ``code_dtype`` (a method name, or ``{code dtype: method}``),
    or None when the rule decides."""
    choice = (options or {}).get("dequant")
    if isinstance(choice, Mapping):
        choice = choice.get(code_dtype)
    return choice


def select_method(code_dtype: str, out_dtype: str, kind: str, options: Mapping[str, Any] | None,
                  table_entries: int = 0) -> str:
    """The method for one cast: :func:`forced_method` overrides :func:`default_method`; a method that does not
    apply raises :class:`CompileError`."""
    choice = forced_method(code_dtype, options)
    if choice is None:
        return default_method(code_dtype, out_dtype, kind, table_entries)
    ok = applicable_methods(code_dtype, out_dtype)
    if choice not in ok:
        why = f" (lookup tables: codes of at most {LUT_MAX_BITS} bits)" if choice == "lut" else ""
        raise CompileError(f"dequant method {choice!r} cannot decode {code_dtype} into {out_dtype}{why}",
                           hint=f"methods for {code_dtype}: {', '.join(ok)} (all methods: {', '.join(METHODS)})")
    return choice


@lru_cache(maxsize=None)
def fits_f16(code_dtype: str) -> bool:
    """True when the ``bits`` method can build f16 directly: E <= 4 and every value is an exact f16."""
    d = lowbit_dtype(code_dtype)
    if d.kind != "float" or d.exponent_bits > 4:
        return False
    v = d.values()
    v = v[np.isfinite(v)]
    with np.errstate(over="ignore"):
        return bool(np.all(v.astype(np.float16).astype(np.float64) == v))


# ----------------------------------------------------------------------------------------------------
# emission
# ----------------------------------------------------------------------------------------------------

class _Ops:
    """Elementwise emission on tiles of one shape and layout."""

    def __init__(self, em: Emitter, like: n.Value, layout: Any):
        self.em, self.shape, self.layout = em, tuple(like.shape), layout
        self.h = like.name.removesuffix(".bits") + ".dq"

    def k(self, value, dtype: str) -> n.Value:
        if not self.shape:
            return self.em.const(value, dtype)
        return self.em.full(self.shape, value, dtype, self.layout, hint="k")

    def b(self, op: str, x: n.Value, y) -> n.Value:
        if not isinstance(y, n.Value):
            y = self.k(y, x.dtype)
        return self.em.binary(op, x, y, self.layout, hint=self.h)

    def cast(self, x: n.Value, dtype: str) -> n.Value:
        return x if x.dtype == dtype else self.em.cast(x, dtype, self.layout, hint=self.h)

    def view(self, x: n.Value, dtype: str) -> n.Value:
        return self.em.view(x, dtype, self.shape, self.layout, hint=self.h)


def emit_int_value(em: Emitter, carrier: n.Value, code_dtype: str, layout: Any = None) -> n.Value:
    """The integer value (int32) of int/uint codes held in a carrier."""
    o = _Ops(em, carrier, layout)
    nb = nbits_of(code_dtype)
    t = o.cast(carrier, "int32")
    if kind_of(code_dtype) == "int" and nb < 32:
        t = o.b("shr", o.b("shl", t, 32 - nb), 32 - nb)
    return t


def emit_decode(em: Emitter, carrier: n.Value, code_dtype: str, out_dtype: str, method: str,
                layout: Any = None) -> n.Value:
    """Values of the codes in ``carrier`` as ``out_dtype`` (float16, float32 or bfloat16)."""
    if out_dtype not in FLOAT_OUT:
        raise CompileError(f"internal error: dequant to {out_dtype}")
    if method not in applicable_methods(code_dtype, out_dtype):
        raise CompileError(f"dequant method {method!r} cannot decode {code_dtype}")
    o = _Ops(em, carrier, layout)
    d = lowbit_dtype(code_dtype)
    nb = d.nbits
    if out_dtype == "bfloat16":
        return o.cast(emit_decode(em, carrier, code_dtype, "float32", method, layout), "bfloat16")
    if method == "arith":
        return o.cast(emit_int_value(em, carrier, code_dtype, layout), out_dtype)
    if method == "top":
        t = o.b("shl", o.cast(carrier, "int32"), 32 - nb)
        return o.b("mul", o.cast(t, "float32"), float(2.0 ** (nb - 32)))
    if method == "magic":
        signed = d.kind == "int"
        off = (1 << (nb - 1)) if signed else 0
        if out_dtype == "float16":
            t = o.cast(carrier, "uint16")
            if signed:
                t = o.b("xor", t, off)
            f = o.view(o.b("or", t, 0x6400), "float16")
            return o.b("sub", f, 1024.0 + off)
        t = carrier
        if signed:
            t = o.b("xor", t, off)
        f = o.view(o.b("or", t, 0x4B000000), "float32")
        return o.b("sub", f, float(1 << 23) + off)
    if method == "shift":
        f = o.view(o.b("shl", o.cast(carrier, "uint16"), 8), "float16")
        return o.cast(f, out_dtype)
    if method == "lut":
        return _emit_lut(em, o, carrier, code_dtype, out_dtype, layout)
    if method == "table":
        fdt = out_dtype if lut_patterns(code_dtype, out_dtype) is not None else "float32"
        values = tuple(float(v) for v in d.values())
        return o.cast(em.lookup(carrier, values, fdt, layout, hint=o.h), out_dtype)
    # bits
    direct16 = out_dtype == "float16" and fits_f16(code_dtype)
    width, exp_bits, mant, bias_dst = (16, 5, 10, 15) if direct16 else (32, 8, 23, 127)
    udt, idt, fdt = ("uint16", "int16", "float16") if direct16 else ("uint32", "int32", "float32")
    top = o.cast(o.b("shl", o.cast(carrier, udt), width - nb), idt)          # the sign at the top, the body below
    # an arithmetic shift: the body lands under the exponent field, the sign fills the spare exponent bits
    spread = o.cast(o.b("shr", top, exp_bits - d.exponent_bits), udt)
    body = ((1 << (nb - 1)) - 1) << (mant - d.mantissa_bits)
    f = o.view(o.b("and", spread, (1 << (width - 1)) | body), fdt)
    f = o.b("mul", f, float(2.0 ** (bias_dst - d.bias)))
    if d.specials == "nan":
        # NaN: the code's bits below the sign all ones, tested on the carrier itself (what a CPU dot can check
        # on the storage words: lowering/tvm/nan_guard.py)
        magnitude = (1 << (nb - 1)) - 1
        is_nan = o.b("eq", o.b("and", carrier, magnitude), magnitude)
        nan = o.view(o.k(0x7E00 if direct16 else 0x7FC00000, udt), fdt)
        f = em.where(is_nan, nan, f, layout, hint=o.h)
    return o.cast(f, out_dtype)


# ----------------------------------------------------------------------------------------------------
# lookup tables
# ----------------------------------------------------------------------------------------------------

_FLOAT_BITS = {"float16": (np.float16, np.uint16, "uint16"), "float32": (np.float32, np.uint32, "uint32")}


@lru_cache(maxsize=None)
def lut_patterns(code_dtype: str, float_dtype: str) -> tuple[int, ...] | None:
    """The bit patterns of every code's value as ``float_dtype`` (float16 / float32), in code order; None
    when some value is not exactly representable (the table would round).

    >>> [hex(p) for p in lut_patterns("float2_e1m0", "float16")]
    ['0x0', '0x4000', '0x8000', '0xc000']
    """
    fdt, udt, _ = _FLOAT_BITS[float_dtype]
    v = lowbit_dtype(code_dtype).values()
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(fdt)
    if not np.array_equal(f.astype(np.float64), v, equal_nan=True):
        return None
    return tuple(int(x) for x in f.view(udt))


def lut_byte_table(code_dtype: str) -> tuple[int, ...] | None:
    """The ``uint32`` words of the byte table (the high bytes of the f16 patterns, code ``4w + j`` in byte
    ``j`` of word ``w``), or None when some f16 pattern has a non-zero low byte or there are < 2 bits.

    >>> [hex(w) for w in lut_byte_table("uint2")]
    ['0x42403c00']
    """
    pats = lut_patterns(code_dtype, "float16")
    if pats is None or len(pats) < 4 or any(p & 0xFF for p in pats):
        return None
    return tuple(sum((pats[4 * w + j] >> 8) << (8 * j) for j in range(4)) for w in range(len(pats) // 4))


def _bit_test(o: _Ops, c: n.Value, bit: int, nb: int) -> n.Value:
    """``bit`` of the codes set? The top bit by one compare, others by ``and`` + ``ne``."""
    if bit == nb - 1:
        return o.b("ge", c, 1 << bit)
    return o.b("ne", o.b("and", c, 1 << bit), 0)


def _select_tree(em: Emitter, o: _Ops, c: n.Value, leaves: tuple[int, ...], dtype: str, first_bit: int, nb: int,
                 layout: Any) -> n.Value:
    """``leaves[c >> first_bit]`` (integer constants of ``dtype``) by a balanced tree of ``where`` on the
    code bits ``first_bit, first_bit + 1, ...``; equal neighbours need no select."""
    consts: dict[int, n.Value] = {}
    for v in leaves:
        if v not in consts:
            consts[v] = o.k(v, dtype)
    level = [consts[v] for v in leaves]
    bit = first_bit
    while len(level) > 1:
        cond = None
        nxt = []
        for lo, hi in zip(level[0::2], level[1::2]):
            if lo is hi:
                nxt.append(lo)
                continue
            if cond is None:
                cond = _bit_test(o, c, bit, nb)
            nxt.append(em.where(cond, hi, lo, layout, hint=o.h))
        level, bit = nxt, bit + 1
    return level[0]


def _emit_lut(em: Emitter, o: _Ops, c: n.Value, code_dtype: str, out_dtype: str, layout: Any) -> n.Value:
    """``lut`` into float16 / float32 (see the module docstring)."""
    nb = nbits_of(code_dtype)
    words = lut_byte_table(code_dtype)
    if words is not None:
        word = _select_tree(em, o, c, words, CARRIER, 2, nb, layout)
        low = c if nb <= 2 else o.b("and", c, 3)
        x = o.b("shr", word, o.b("shl", low, 3))                  # byte (c & 3) of the word at bits [0, 8)
        x = o.cast(o.b("shl", x, 8), "uint16")                     # to [8, 16); the bytes above are cut off
        return o.cast(o.view(x, "float16"), out_dtype)
    fdt = out_dtype if lut_patterns(code_dtype, out_dtype) is not None else "float32"
    pats = lut_patterns(code_dtype, fdt)
    if pats is None:
        raise CompileError(f"internal error: {code_dtype} values are not exact {fdt}")
    udt = _FLOAT_BITS[fdt][2]
    return o.cast(o.view(_select_tree(em, o, c, pats, udt, 0, nb, layout), fdt), out_dtype)


def emit_extract(em: Emitter, words: n.Value, code_dtype: str, codes_shape: tuple[int, ...],
                 codes_layout: Any = None, name: str | None = None, keep_high_bits: bool = False,
                 wide: bool = False) -> n.Value:
    """Carriers (uint32 raw codes) of ``view(words) : code_dtype[codes_shape]``: each row of ``words`` is
    read as a little-endian bitstream of ``n``-bit codes. Codes that straddle words are assembled from both
    words (shift tables over a chunk of ``lcm(B, n)`` bits). ``name`` prefixes the new values' names.
    ``keep_high_bits``: skip the masks (the code is in the low ``n`` bits, the bits above are whatever follows
    it in its last word): for consumers that read only the low bits (``lookup``). ``wide``: words narrower
    than 32 bits are widened to uint32 first and the shifts run on 32 bits (the same values): on SIMD CPUs
    with 32-bit lanes that is one shift per code, where 16-bit arithmetic costs a shift and a widening
    (3-bit codes in 16-bit streams, 4096 x 4096 GEMV x f32: 0.39 -> 0.33 ms)."""
    h = name or words.name
    nb = nbits_of(code_dtype)
    wb = nbits_of(words.dtype)
    udt = {8: "uint8", 16: "uint16", 32: "uint32"}[wb]
    wl = words.type.layout
    if words.dtype != udt:
        words = em.view(words, udt, words.shape, wl, hint=h + ".raw")
    wide = wide and wb < 32
    if not words.shape or nb == wb:      # one code per word (a rank-0 view needs equal widths)
        return em.cast(words, CARRIER, codes_layout, hint=h + ".bits") if words.dtype != CARRIER else words
    lead, width = tuple(words.shape[:-1]), int(words.shape[-1])
    mask = (1 << nb) - 1
    if wb % nb == 0:                     # whole codes per word: (w >> j*n) & mask
        cc = wb // nb
        big = lead + (width, cc)
        l_big = R.reshape_layout(codes_layout, big) if codes_layout is not None else None
        l_x1 = R.broadcast_operand(l_big, big, lead + (width, 1)) if l_big is not None else None
        x = em.reshape(words, lead + (width, 1), l_x1, hint=h + ".w")
        x = em.broadcast(x, big, l_big, hint=h + ".w")
        if wide:     # (after the moves: a cast of the words themselves would be materialized)
            x, udt = em.cast(x, "uint32", l_big, hint=h + ".wide"), "uint32"
        j = em.binary("mul", em.arange(0, cc, hint="j"), em.full((cc,), nb, "int32"), hint="shift")
        x = em.binary("shr", x, spread_table(em, j, big, udt, l_big), l_big, hint=h + ".sh")
        if not keep_high_bits:
            x = em.binary("and", x, em.full(big, mask, udt, l_big, hint="mask"), l_big, hint=h + ".bits")
    else:                                # straddling: chunks of q words holding c codes
        lcm = wb * nb // gcd(wb, nb)
        q, c = lcm // wb, lcm // nb
        big = lead + (width // q, q, c)
        l_x1 = R.reshape_layout(wl, lead + (width // q, q, 1)) if wl is not None else None
        l_big = _add_inner_local(l_x1, c) if l_x1 is not None else None
        x = em.reshape(words, lead + (width // q, q, 1), l_x1, hint=h + ".w")
        x = em.broadcast(x, big, l_big, hint=h + ".w")
        if wide:
            x, udt = em.cast(x, "uint32", l_big, hint=h + ".wide"), "uint32"
        d = _d_table(em, q, c, nb, wb)
        sr = _clip(em, d, 0, wb - 1)                                   # bits of word w below code j
        sl = _clip(em, em.unary("neg", d), 0, wb - 1)                  # code j's bits in earlier words
        qc = (q, c)
        overlap = em.binary("and", em.binary("lt", d, em.full(qc, wb, "int32")),
                            em.binary("gt", d, em.full(qc, -nb, "int32")))
        # a code's part from word w: the word's bits from the code's first bit on, shifted down (nothing above
        # the word's top) or up (the code's high part, above its low part: the parts' bits are disjoint, so
        # their sum is their or). Masked to the code's n bits, unless the consumer reads only the low n bits.
        # (the word's all-ones, in a u32 table: TVM's simplifier refuses -1 or too wide a literal cast to a uint)
        kdt, keep = ("uint32", (1 << wb) - 1) if keep_high_bits else ("int32", mask)
        mk = em.where(overlap, em.full(qc, keep, kdt), em.full(qc, 0, kdt), hint="overlap")
        x = em.binary("shr", x, spread_table(em, sr, big, udt, l_big), l_big, hint=h + ".sh")
        x = em.binary("shl", x, spread_table(em, sl, big, udt, l_big), l_big, hint=h + ".sh")
        x = em.binary("and", x, spread_table(em, mk, big, udt, l_big), l_big, hint=h + ".part")
        l_sum = R.reduce_result(l_big, len(big) - 2, False) if l_big is not None else None
        x = em.reduce("sum", x, len(big) - 2, False, l_sum, hint=h + ".bits")   # disjoint bits: sum == or
    x = em.reshape(x, codes_shape, codes_layout, hint=h + ".bits")
    return em.cast(x, CARRIER, codes_layout, hint=h + ".bits") if x.dtype != CARRIER else x


def _add_inner_local(layout, size: int):
    """``layout`` (last dim of extent 1) with a new last-dim mode of ``size`` placed in the local order
    right after the innermost mode of the second-to-last dim (None if that mode is not local)."""
    from lowbit.layout import RegisterLayout

    groups = layout.grouped_modes
    if len(groups) < 2 or not groups[-2] or groups[-1]:
        return None
    mq = groups[-2][-1]
    if mq not in layout.local_modes:
        return None
    new = len(layout.mode_shape)
    local = list(layout.local_modes)
    local.insert(local.index(mq) + 1, new)
    shape = layout.shape[:-1] + (size,)
    return RegisterLayout(shape, layout.mode_shape + (size,), layout.spatial_modes, tuple(local))


def _d_table(em: Emitter, q: int, c: int, nb: int, wb: int) -> n.Value:
    """``d[w, j] = j * n - w * B`` as an i32 ``[q, c]`` tile: code ``j``'s first bit minus word ``w``'s."""
    jn = em.binary("mul", em.arange(0, c, hint="j"), em.full((c,), nb, "int32"))
    wB = em.binary("mul", em.arange(0, q, hint="w"), em.full((q,), wb, "int32"))
    jn = em.broadcast(em.reshape(jn, (1, c)), (q, c))
    wB = em.broadcast(em.reshape(wB, (q, 1)), (q, c))
    return em.binary("sub", jn, wB, hint="d")


def _clip(em: Emitter, x: n.Value, lo: int, hi: int) -> n.Value:
    shape = tuple(x.shape)
    x = em.binary("maximum", x, em.full(shape, lo, "int32"))
    return em.binary("minimum", x, em.full(shape, hi, "int32"))


def spread_table(em: Emitter, table: n.Value, shape: tuple[int, ...], dtype: str, layout: Any) -> n.Value:
    """An integer table over the trailing dims of ``shape``, cast to ``dtype`` and broadcast to ``shape``."""
    tail = tuple(table.shape)
    padded = (1,) * (len(shape) - len(tail)) + tail
    x = em.reshape(table, padded) if padded != tail else table
    return em.broadcast(em.cast(x, dtype), shape, layout)


__all__ = ["CARRIER", "METHODS", "LOW_BITS_METHODS", "LUT_MAX_BITS", "DequantCost", "applicable_methods",
           "dequant_cost", "default_method", "forced_method", "select_method", "fits_f16", "lut_patterns",
           "lut_byte_table", "emit_int_value", "emit_decode", "emit_extract", "spread_table"]
