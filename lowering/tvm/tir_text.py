"""TVMScript expression text for the tile IR's scalar semantics (``lowbit/ir/README.md``).

Every function here returns the *text* of one TVMScript (``tvm.script.tirx``) expression; the code
generator pastes them into loop nests. They encode the interpreter's rules exactly, so the generated code
matches ``lowbit.ir.interpret`` bit for bit wherever the README asks for it:

* float16 / bfloat16 arithmetic is computed in float32 and rounded back after every instruction (to bfloat16
  on the bits, :func:`from_f32`: TVM's bf16 legalization drops a rounding that stays in registers);
* signed integer ``add sub mul neg abs shl`` wrap (computed on the same-width unsigned type: TVM emits
  LLVM ``nsw`` for signed arithmetic, i.e. assumes no overflow);
* ``minimum`` / ``maximum`` propagate NaN; float -> int rounds to nearest even, saturates, NaN -> 0;
  int32/uint32 -> bfloat16 rounds once (round-to-odd through float32);
* integer ``floordiv`` / ``mod`` never trap (a zero divisor is undefined in the IR; here it gives a value).

Index arithmetic (i32 scalars built from program ids, symbols, constants and loop variables) uses plain
TIR operators instead (``index=True``), so TVM's simplifier can reason about it.

>>> lit(1.5, "float32"), lit(-3, "int8"), lit(True, "bool")
('T.float32(1.5)', 'T.int8(-3)', 'T.bool(True)')
>>> cast("x", "float32", "float16")
'T.Cast("float16", x)'
>>> binary("add", "a", "b", "float16")
'T.Cast("float16", (T.Cast("float32", a) + T.Cast("float32", b)))'
"""
from __future__ import annotations

import math
import re

import numpy as np

from lowbit.errors import CompileError
from lowbit.ir.types import NATIVE, kind_of, nbits_of

__all__ = ["NATIVE_TVM", "lit", "cast", "binary", "unary", "select", "to_f32", "from_f32", "bf16_rounded",
           "reduce_combine", "reduce_identity", "is_small", "UINT_OF", "reinterpret", "EXACT_FLOAT_UNARY",
           "VECTOR_EXP_UNARY"]

#: the TVM dtype string of every native IR dtype (identical names)
NATIVE_TVM = {d: d for d in NATIVE}
#: the unsigned type of the same width (for wrapping arithmetic and bit views)
UINT_OF = {"int8": "uint8", "int16": "uint16", "int32": "uint32", "uint8": "uint8", "uint16": "uint16",
           "uint32": "uint32", "float16": "uint16", "bfloat16": "uint16", "float32": "uint32"}
_HALF = ("float16", "bfloat16")
_WIDE_ONLY = ("int64", "uint64")


def _check_native(dtype: str) -> None:
    if dtype not in NATIVE:
        raise CompileError(f"the TVM backend has no arithmetic on the code type {dtype!r}",
                           hint="run the lower-lowbit pass first: it turns code tiles into packed native words")


def lit(value: object, dtype: str) -> str:
    """A typed literal: ``T.float32(1.5)``, ``T.uint32(15)``, ``T.float32("-inf")``, ``T.bool(False)``.

    Floats are rounded to ``dtype`` first (exactly as numpy does), then printed with ``repr`` (exact).
    """
    if dtype in _WIDE_ONLY:
        return f"T.{dtype}({int(value)})"
    _check_native(dtype)
    kind = kind_of(dtype)
    if kind == "bool":
        return f"T.bool({bool(value)})"
    if kind in ("int", "uint"):
        v = int(value)
        bits = nbits_of(dtype)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "int" else (0, (1 << bits) - 1)
        if not lo <= v <= hi:
            v = int(np.array(v).astype(np.int64).astype(np.dtype(dtype)))  # wrap like the IR's int casts
        return f"T.{dtype}({v})"
    f = float(value)
    if dtype == "bfloat16":
        import ml_dtypes

        f = float(np.float32(np.asarray(f, np.float32).astype(ml_dtypes.bfloat16)))
        return f'T.Cast("bfloat16", {_float_text(f, "float32")})'
    if dtype == "float16":
        f = float(np.float16(f))
    else:
        f = float(np.float32(f))
    return _float_text(f, dtype)


def _float_text(f: float, dtype: str) -> str:
    if math.isnan(f):
        return f'T.{dtype}("nan")'
    if math.isinf(f):
        return f'T.{dtype}("{"-" if f < 0 else ""}inf")'
    return f"T.{dtype}({f!r})"


def to_f32(x: str, dtype: str) -> str:
    """``x`` (a float of ``dtype``) in the float32 compute type."""
    return x if dtype == "float32" else f'T.Cast("float32", {x})'


def from_f32(x: str, dtype: str, exact: bool = False) -> str:
    """A float32 value rounded (RNE) to the float ``dtype``; ``exact``: the value is one of ``dtype`` already.

    To bfloat16 the rounding is done on the bits (:func:`bf16_rounded`) before the cast, because TVM's bf16
    legalization computes bf16 values in float32 and drops a ``Cast`` to bf16 that does not reach memory:
    ``Cast(f32, Cast(bf16, x))`` becomes ``x``, losing the rounding of every bf16 value kept in registers
    (an operand of the next instruction), in a local buffer or in a scalar. ``x`` appears four times in the
    result: callers pass a short expression (the code generator materializes long operands first).

    >>> from_f32("y", "float16"), from_f32("y", "bfloat16", exact=True)
    ('T.Cast("float16", y)', 'T.Cast("bfloat16", y)')
    """
    if dtype == "float32":
        return x
    if dtype == "bfloat16" and not exact:
        x = bf16_rounded(x)
    return f'T.Cast("{dtype}", {x})'


def bf16_rounded(xf: str) -> str:
    """The float32 ``xf`` rounded to the nearest bfloat16 value, ties to even, as a float32: on its bits,
    ``(bits + 0x7FFF + lsb) & 0xFFFF0000`` with ``lsb`` bit 16 (a carry into the exponent is right: the
    largest values round to infinity); a NaN becomes the quiet NaN of its sign, as in ml_dtypes."""
    bits = f'T.reinterpret("uint32", {xf})'
    lsb = f"T.bitwise_and(T.shift_right({bits}, T.uint32(16)), T.uint32(1))"
    nearest = f"T.bitwise_and({bits} + (T.uint32(0x7FFF) + {lsb}), T.uint32(0xFFFF0000))"
    nan = f"T.bitwise_or(T.bitwise_and({bits}, T.uint32(0x80000000)), T.uint32(0x7FC00000))"
    is_nan = f"(T.bitwise_and({bits}, T.uint32(0x7FFFFFFF)) > T.uint32(0x7F800000))"
    return f'T.reinterpret("float32", {select(is_nan, nan, nearest)})'


def select(cond: str, a: str, b: str) -> str:
    return f"T.Select({cond}, {a}, {b})"


def is_small(text: str, limit: int = 160) -> bool:
    """Expressions this short may be repeated inside one formula (NaN checks, saturation)."""
    return len(text) <= limit


# ----------------------------------------------------------------------------------------------------
# casts
# ----------------------------------------------------------------------------------------------------

def cast(x: str, src: str, dst: str) -> str:
    """``x`` converted from ``src`` to ``dst`` with the IR's cast rules (both native dtypes).

    ``x`` may appear several times in the result (float -> int saturation, int -> bf16): callers pass a
    short expression (a buffer read) when it is long.
    """
    if src == dst:
        return x
    v = _literal_value(x, src) if src not in _WIDE_ONLY else None
    if v is not None and dst not in _WIDE_ONLY and dst in NATIVE:
        from lowbit.ir import numerics

        folded = _fold(lambda y: numerics.cast(y, src, dst), v)
        if folded is not None:
            return folded
    if src in _WIDE_ONLY or dst in _WIDE_ONLY:      # internal int64 / uint64 arithmetic: plain conversion
        m = _LIT.match(x.strip())
        if m and m.group(1) == src and src not in _WIDE_ONLY:
            return lit(int(m.group(2)), dst) if dst in _WIDE_ONLY else x
        return f'T.Cast("{dst}", {x})'
    _check_native(src)
    _check_native(dst)
    sk, dk = kind_of(src), kind_of(dst)
    if dk == "bool":
        if sk == "float":      # NaN -> True (an unordered compare; TVM's != is ordered)
            return f"T.Or(T.isnan({to_f32(x, src)}), {to_f32(x, src)} != T.float32(0.0))"
        if sk == "bool":
            return x
        return f"({x} != {lit(0, src)})"
    if sk == "bool":
        if dk == "float":
            return from_f32(f'T.Cast("float32", {x})', dst, exact=True)
        return f'T.Cast("{dst}", {x})'
    if sk == "float" and dk == "float":
        if src in _HALF and dst in _HALF:
            return from_f32(f'T.Cast("float32", {x})', dst)   # exact widening, then one rounding
        if dst == "float32":
            return to_f32(x, src)
        return from_f32(x, dst)
    if sk == "float":  # -> int: RNE, saturate, NaN -> 0
        return _float_to_int(to_f32(x, src), dst)
    if dk == "float":
        if dst == "bfloat16" and nbits_of(src) == 32:
            return _wide_int_to_bf16(x, src)
        if dst == "float32":
            return f'T.Cast("float32", {x})'
        # int -> f16: ints below 2^24 are exact in f32 (one rounding), larger ones overflow f16 anyway;
        # int8/16 -> bf16 likewise exact in f32
        return from_f32(f'T.Cast("float32", {x})', dst)
    m = _LIT.match(x.strip())
    if m and m.group(1) == src:   # fold: TVM refuses Cast of a negative literal to an unsigned type
        return lit(int(np.array(int(m.group(2))).astype(np.int64).astype(np.dtype(dst))), dst)
    return f'T.Cast("{dst}", {x})'  # int -> int wraps (trunc / sext / zext)


def _float_to_int(xf: str, dst: str) -> str:
    bits = nbits_of(dst)
    if kind_of(dst) == "int":
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    r = f"T.nearbyint({xf})"
    limit = float(hi + 1)        # a power of two: exact in float32
    body = select(f"({r} >= {_float_text(limit, 'float32')})", lit(hi, dst),
                  select(f"({r} <= {_float_text(float(lo), 'float32')})", lit(lo, dst), f'T.Cast("{dst}", {r})'))
    return select(f"T.isnan({xf})", lit(0, dst), body)   # (TVM folds x != x to false)


def _wide_int_to_bf16(x: str, src: str) -> str:
    """int32/uint32 -> bfloat16 with one rounding: float32 (RNE) made round-to-odd, then RNE to bf16.

    Round-to-odd at 24 bits followed by rounding to 8 bits equals direct rounding (24 >= 2 * 8 + 2).
    """
    wide = "int64" if src == "int32" else "uint64"
    f = f'T.Cast("float32", {x})'
    back = f'T.Cast("{wide}", {f})'
    exact = f'T.Cast("{wide}", {x})'
    bits = f'T.reinterpret("uint32", {f})'
    # away from zero when |f| > |x|: for equal signs that is (f > x) == (x > 0)
    # (TVM's LLVM backend cannot compare two bools with ==: compare them as int8)
    mag_up = (f'(T.Cast("int8", {back} > {exact}) == T.Cast("int8", {exact} > T.{wide}(0)))' if src == "int32"
              else f"({back} > {exact})")
    odd = select(f"(T.bitwise_and({bits}, T.uint32(1)) == T.uint32(1))", bits,
                 select(mag_up, f"({bits} - T.uint32(1))", f"({bits} + T.uint32(1))"))
    rto = select(f"({back} == {exact})", f, f'T.reinterpret("float32", {odd})')
    return from_f32(rto, "bfloat16")


# ----------------------------------------------------------------------------------------------------
# arithmetic
# ----------------------------------------------------------------------------------------------------

_LIT = re.compile(r'^T\.(u?int(?:8|16|32)|float(?:16|32))\(("?[-+.\w]+"?)\)$')


def reinterpret(x: str, src: str, dst: str) -> str:
    """``x``'s bits as ``dst`` (same width); literals are folded (TVM's CUDA code generator cannot take
    the address of a literal)."""
    if src == dst:
        return x
    m = _LIT.match(x.strip())
    if m and m.group(1) == src and dst in ("int8", "int16", "int32", "uint8", "uint16", "uint32", "float16",
                                           "float32"):
        raw = m.group(2).strip('"')
        value = float(raw) if src.startswith("float") else int(raw)
        bits = np.array(value).astype(np.dtype(src)).view(np.dtype(dst))
        return lit(bits.item(), dst)
    return f'T.reinterpret("{dst}", {x})'


#: the type integer add/sub/mul are computed in before truncating (wide enough that nothing overflows;
#: TVM emits ``nsw`` for signed arithmetic and its simplifier folds ``0 - x`` on unsigned types to 0)
_WIDE = {"int8": "int32", "int16": "int32", "uint8": "int32", "uint16": "int64", "int32": "int64",
         "uint32": "int64"}


def _wrap(op: str, a: str, b: str, dtype: str) -> str:
    """``a op b`` (add, sub, mul) with two's-complement wraparound in ``dtype``."""
    wide = "uint64" if (dtype == "uint32" and op == "*") else _WIDE[dtype]
    return cast(f"({cast(a, dtype, wide)} {op} {cast(b, dtype, wide)})", wide, dtype)


_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}


def _literal_value(x: str, dtype: str):
    """The numpy value of a literal of ``dtype`` (None when ``x`` is not one)."""
    m = _LIT.match(x.strip())
    if not m or m.group(1) != dtype:
        return None
    raw = m.group(2).strip('"')
    return np.asarray(float(raw) if dtype.startswith("float") else int(raw)).astype(np.dtype(dtype))


def _fold(fn, *values) -> str | None:
    """Evaluate an operation on literals with the interpreter's own numerics (exact IR semantics)."""
    from lowbit.errors import LowbitError

    try:
        out = np.asarray(fn(*values))
    except (LowbitError, ArithmeticError, ValueError):
        return None
    name = "bool" if out.dtype == np.bool_ else str(out.dtype)
    if name not in ("bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float16", "float32"):
        return None
    return lit(out.item(), name)


def binary(op: str, a: str, b: str, dtype: str, *, index: bool = False, divisor: object = None,
           fence: bool = False) -> str:
    """``op(a, b)`` on operands of ``dtype`` (comparisons give bool).

    ``index``: plain TIR arithmetic (i32 index math; no wraparound guarantees). ``divisor``: the literal
    value of ``b`` when known (a positive constant divisor needs no zero / overflow guard). ``fence``: wrap a
    float32 product in ``llvm.arithmetic.fence`` so LLVM cannot contract it with a following add into an
    FMA (the IR rounds after every instruction; TVM's LLVM backend contracts by default).
    """
    _check_native(dtype)
    kind = kind_of(dtype)
    va, vb = _literal_value(a, dtype), _literal_value(b, dtype)
    if va is not None and vb is not None:
        from lowbit.ir import numerics

        folded = _fold(lambda x, y: numerics.binary(op, x, y, dtype), va, vb)
        if folded is not None:
            return folded
    if op in _CMP:
        if kind == "float":
            a, b = to_f32(a, dtype), to_f32(b, dtype)
            if op == "ne":     # IEEE: NaN != anything (TVM emits an ordered compare)
                return f"T.Or(T.Or(T.isnan({a}), T.isnan({b})), {a} != {b})"
        elif kind == "bool":        # TVM's LLVM backend cannot compare i1 values: compare as int8
            a, b = f'T.Cast("int8", {a})', f'T.Cast("int8", {b})'
        return f"({a} {_CMP[op]} {b})"
    if kind == "bool":
        if op == "and":
            return f"T.And({a}, {b})"
        if op == "or":
            return f"T.Or({a}, {b})"
        if op == "xor":
            return f'(T.Cast("int8", {a}) != T.Cast("int8", {b}))'
        raise CompileError(f"{op} is not defined on bool")
    if kind == "float":
        fa, fb = to_f32(a, dtype), to_f32(b, dtype)
        if op in _ARITH:
            r = f"({fa} {_ARITH[op]} {fb})"
            if op == "mul" and fence and dtype == "float32":
                r = f'T.call_llvm_pure_intrin("float32", "llvm.arithmetic.fence", {r})'
        elif op == "div":
            r = f"({fa} / {fb})"
        elif op == "floordiv":
            r = f"T.floor({fa} / {fb})"
        elif op == "mod":
            # numpy: r = fmod(a, b); if r != 0 and sign(r) != sign(b): r += b
            q = f"T.fmod({fa}, {fb})"
            r = select(f"T.And({q} != T.float32(0.0), T.Cast(\"int8\", {q} < T.float32(0.0)) != "
                       f"T.Cast(\"int8\", {fb} < T.float32(0.0)))", f"({q} + {fb})", q)
        elif op == "maximum":
            return from_f32(select(f"T.Or(T.isnan({fa}), {fa} > {fb})", fa, fb), dtype, exact=True)
        elif op == "minimum":
            return from_f32(select(f"T.Or(T.isnan({fa}), {fa} < {fb})", fa, fb), dtype, exact=True)
        else:
            raise CompileError(f"{op} is not defined on {dtype}")
        return from_f32(r, dtype)
    # integers
    signed = kind == "int"
    if op in _ARITH:
        if index:
            return f"({a} {_ARITH[op]} {b})"
        return _wrap(_ARITH[op], a, b, dtype)
    if op in ("minimum", "maximum"):
        return f"T.{'min' if op == 'minimum' else 'max'}({a}, {b})"
    if op in ("and", "or", "xor"):
        return f"T.bitwise_{op}({a}, {b})"
    if op == "shl":
        if signed and not index:
            u = UINT_OF[dtype]
            return reinterpret(f"T.shift_left({reinterpret(a, dtype, u)}, {reinterpret(b, dtype, u)})", u, dtype)
        return f"T.shift_left({a}, {b})"
    if op == "shr":
        return f"T.shift_right({a}, {b})"   # arithmetic for signed, logical for unsigned
    if op in ("floordiv", "mod"):
        fn = "T.floordiv" if op == "floordiv" else "T.floormod"
        if isinstance(divisor, int) and not isinstance(divisor, bool) and divisor > 0:
            return f"{fn}({a}, {b})"
        zero, one = lit(0, dtype), lit(1, dtype)
        if not signed:
            return f"{fn}({a}, {select(f'({b} == {zero})', one, b)})"
        # never trap: divisor 0 -> 1 (undefined in the IR), divisor -1 -> 1 then negate (wraps at INT_MIN)
        safe = select(f"T.Or({b} == {zero}, {b} == {lit(-1, dtype)})", one, b)
        plain = f"{fn}({a}, {safe})"
        if op == "floordiv":
            return select(f"({b} == {lit(-1, dtype)})", _wrap("-", zero, a, dtype), plain)
        return select(f"({b} == {lit(-1, dtype)})", zero, plain)
    raise CompileError(f"{op} is not defined on {dtype}")


_FLOAT_UNARY = {"exp": "T.exp({})", "exp2": "T.exp2({})", "log": "T.log({})", "log2": "T.log2({})",
                "sqrt": "T.sqrt({})", "tanh": "T.tanh({})", "floor": "T.floor({})", "ceil": "T.ceil({})",
                "abs": "T.fabs({})", "neg": "({} * T.float32(-1.0))",
                "rsqrt": "(T.float32(1.0) / T.sqrt({}))",
                "sigmoid": "(T.float32(1.0) / (T.float32(1.0) + T.exp({} * T.float32(-1.0))))"}


#: float unary ops whose result is a value of the operand's type (no rounding)
EXACT_FLOAT_UNARY = ("abs", "neg", "floor", "ceil")
#: float unary ops built on :func:`_exp_f32` where ``unary(..., vector_exp=True)``
VECTOR_EXP_UNARY = ("exp", "sigmoid")


def _tanh(xf: str) -> str:
    """float32 tanh within an ulp or two. (TVM's own ``tanh`` loses all precision for small |x|.)

    |x| < 2^-12: tanh(x) rounds to x. Otherwise (1 - e) / (1 + e) with e = exp(-2|x|) in float64, whose
    cancellation costs at most 12 of float64's 53 bits; the sign is restored at the end.
    """
    ax = f"T.Cast(\"float64\", T.fabs({xf}))"
    e = f"T.exp(T.float64(-2.0) * {ax})"
    mag = f'T.Cast("float32", (T.float64(1.0) - {e}) / (T.float64(1.0) + {e}))'
    signed = select(f"({xf} < T.float32(0.0))", f"({mag} * T.float32(-1.0))", mag)
    return select(f"(T.fabs({xf}) < T.float32({2.0 ** -12!r}))", xf, signed)


#: Cephes' expf: ``e^r ~ 1 + r + r^2 P(r)`` on ``|r| <= ln(2) / 2`` (about 1 ulp), P's coefficients from the
#: highest degree; ``ln 2 = LN2_HI - LN2_LO`` with ``LN2_HI`` of 9 bits, so ``n * LN2_HI`` is exact for ``|n| <= 2^15``
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO, _LOG2E = 0.693359375, 2.12194440e-4, 1.44269504088896341


def _exp_f32(xf: str) -> str:
    """float32 ``e^x`` as vector arithmetic (about 1 ulp; TVM's ``exp`` is a scalar ``expf`` call per element on
    CPUs, which costs ~10x this in a 16-lane loop).

    ``x = n ln2 + r`` with ``n = round(x log2 e)``; ``e^x = e^r 2^n``, and ``2^n`` is built from exponent bits
    as two factors ``2^h 2^(n-h)`` (``h = floor(n / 2)``) so that results down in the subnormals round once.
    ``x`` is clamped to ``[-104, 88.8]`` first: beyond it ``e^x`` rounds to 0 or overflows to infinity, as it
    should; a NaN stays NaN. ``xf`` appears three times: callers pass a short expression.
    """
    clamped = f"T.max(T.min({xf}, T.float32(88.8)), T.float32(-104.0))"
    n = f"T.floor({clamped} * T.float32({_LOG2E!r}) + T.float32(0.5))"
    r = f"(({clamped} - {n} * T.float32({_LN2_HI!r})) + {n} * T.float32({_LN2_LO!r}))"
    poly = f"T.float32({_EXP_P[0]!r})"
    for c in _EXP_P[1:]:
        poly = f"({poly} * {r} + T.float32({c!r}))"
    er = f"({poly} * {r} * {r} + {r} + T.float32(1.0))"
    ni = f'T.Cast("int32", {n})'
    half = f"T.shift_right({ni}, 1)"
    first = f'T.reinterpret("float32", T.shift_left({half} + 127, 23))'
    second = f'T.reinterpret("float32", T.shift_left(({ni} - {half}) + 127, 23))'
    is_nan = f'(T.bitwise_and(T.reinterpret("uint32", {xf}), T.uint32(0x7FFFFFFF)) > T.uint32(0x7F800000))'
    return select(is_nan, xf, f"({er} * {first} * {second})")     # (TVM folds x != x to false)


def unary(op: str, x: str, dtype: str, vector_exp: bool = False) -> str:
    """``op(x)`` (README: neg abs on numbers, not on bool/ints, the float functions on floats).

    ``vector_exp``: ``exp`` and ``sigmoid`` of float32 values use :func:`_exp_f32` (CPU targets); ``x`` then
    appears three times in the result."""
    _check_native(dtype)
    kind = kind_of(dtype)
    if kind == "float":
        if op == "tanh":
            return from_f32(_tanh(to_f32(x, dtype)), dtype)
        if vector_exp and op in VECTOR_EXP_UNARY and dtype != "float64":
            e = _exp_f32(to_f32(x, dtype) if op == "exp" else f"({to_f32(x, dtype)} * T.float32(-1.0))")
            return from_f32(e if op == "exp" else f"(T.float32(1.0) / (T.float32(1.0) + {e}))", dtype)
        if op not in _FLOAT_UNARY:
            raise CompileError(f"{op} is not defined on {dtype}")
        return from_f32(_FLOAT_UNARY[op].format(to_f32(x, dtype)), dtype, exact=op in EXACT_FLOAT_UNARY)
    if op == "not":
        return f"T.Not({x})" if kind == "bool" else f"T.bitwise_not({x})"
    if kind == "bool":
        raise CompileError(f"{op} is not defined on bool")
    zero = lit(0, dtype)
    if op == "neg":
        return _wrap("-", zero, x, dtype)
    if op == "abs":
        if kind == "uint":
            return x
        return select(f"({x} < {zero})", _wrap("-", zero, x, dtype), x)
    raise CompileError(f"{op} is not defined on {dtype}")


# ----------------------------------------------------------------------------------------------------
# reductions
# ----------------------------------------------------------------------------------------------------

def reduce_identity(op: str, dtype: str) -> str:
    """The start value of a reduction in its accumulation dtype (see :func:`reduce_acc_dtype`)."""
    acc = reduce_acc_dtype(op, dtype)
    if op == "sum":
        return lit(0, acc)
    if kind_of(dtype) == "float":
        return lit(float("-inf") if op == "max" else float("inf"), acc)
    bits, kind = nbits_of(dtype), kind_of(dtype)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "int" else (0, (1 << bits) - 1)
    return lit(lo if op == "max" else hi, acc)


def reduce_acc_dtype(op: str, dtype: str) -> str:
    """Floats reduce in float32 (f16/bf16 sums round once at the end); ints in their own type (wrapping)."""
    return "float32" if kind_of(dtype) == "float" else dtype


def reduce_combine(op: str, acc: str, x: str, dtype: str) -> str:
    """One step ``acc = op(acc, x)``; ``acc`` is in :func:`reduce_acc_dtype`, ``x`` in ``dtype``.

    Float max/min propagate NaN (as ``np.max``): the accumulator keeps a NaN once it has seen one.
    """
    acc_dtype = reduce_acc_dtype(op, dtype)
    xv = to_f32(x, dtype) if kind_of(dtype) == "float" else x
    if op == "sum":
        return binary("add", acc, xv, acc_dtype)
    return binary("maximum" if op == "max" else "minimum", acc, xv, acc_dtype)
