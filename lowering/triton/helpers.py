"""``@triton.jit`` helper functions that generated modules include when their kernel needs them.

Each helper implements one IR rule that Triton does not provide with the IR's exact meaning, using only
operations that are correct both natively and under Triton's interpreter (integer ops, bitcasts, f32
adds, comparisons, ``tl.where``): round-to-nearest-even to bfloat16, Python floor division / modulo,
float -> int casts that round half to even and saturate, single-rounding int32 -> bfloat16, ``tanh``.

:func:`helper_source` returns the text of the helpers asked for *and those they call*, in dependency
order, so a generated module is self-contained.

>>> print(helper_source({"rint"}).splitlines()[1])
def _lb_rint(x):
"""
from __future__ import annotations

from .dtypes import int_range

__all__ = ["helper_name", "helper_source", "f2i_helper"]

_PREFIX = "_lb_"

_TEXT: dict[str, str] = {}
_DEPS: dict[str, tuple[str, ...]] = {}


def _define(key: str, text: str, deps: tuple[str, ...] = ()) -> None:
    _TEXT[key] = text.strip("\n") + "\n"
    _DEPS[key] = deps


_define("round_bf16", '''
@triton.jit
def _lb_round_bf16(x):
    """float32 -> the nearest bfloat16 value (ties to even), kept in float32; NaN stays a quiet NaN."""
    u = x.to(tl.uint32, bitcast=True)
    r = (u + (0x7FFF + ((u >> 16) & 1))) & 0xFFFF0000
    r = tl.where(x != x, (u & 0x80000000) | 0x7FC00000, r)
    return r.to(tl.float32, bitcast=True)
''')

_define("floordiv", '''
@triton.jit
def _lb_floordiv(a, b):
    """Signed integer division rounding toward -inf (Python //); Triton's // truncates."""
    q = a // b
    r = a - q * b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), q - 1, q)
''')

_define("mod", '''
@triton.jit
def _lb_mod(a, b):
    """Signed integer modulo with the divisor's sign (Python %); Triton's % takes the dividend's."""
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
''')

_define("fmod_floor", '''
@triton.jit
def _lb_fmod_floor(a, b):
    """float32 a mod b with the divisor's sign (numpy/Python %): fmod, then shift by b (exact)."""
    m = a % b
    m = tl.where((m != 0) & ((m < 0) != (b < 0)), m + b, m)
    return tl.where(m == 0, tl.where(b < 0, -0.0, 0.0), m)
''')

_define("floordiv_f", '''
@triton.jit
def _lb_floordiv_f(a, b):
    """float32 floor division exactly as numpy's npy_divmod: (a - fmod(a, b)) / b, adjusted and snapped."""
    m = a % b
    d = tl.div_rn(a - m, b)
    d = tl.where((m != 0) & ((b < 0) != (m < 0)), d - 1.0, d)
    f = tl.floor(d)
    f = tl.where(d - f > 0.5, f + 1.0, f)
    q = tl.div_rn(a, b)
    zero = tl.where(q.to(tl.int32, bitcast=True) < 0, -0.0, 0.0)  # copysign(0, a / b)
    return tl.where(b == 0, q, tl.where(d != 0, f, zero))
''')

_define("rint", '''
@triton.jit
def _lb_rint(x):
    """Round float32 to an integral value, ties to even (|x| >= 2**23 is integral already)."""
    s = tl.where(x < 0, -8388608.0, 8388608.0)
    return tl.where(tl.abs(x) < 8388608.0, (x + s) - s, x)
''')

_define("int32_to_bf16", '''
@triton.jit
def _lb_int32_to_bf16(v):
    """int32 -> bfloat16 (in float32) rounded once: bits below bf16's rounding bit fold into a sticky bit
    first, so the exact float32 conversion that follows cannot round twice."""
    neg = v < 0
    a = tl.where(neg, 0 - v, v).to(tl.uint32, bitcast=True)
    sticky = ((a & 0xFFFF) != 0).to(tl.uint32) << 15
    a = tl.where(a >= 16777216, (a & 0xFFFF0000) | sticky, a)
    f = a.to(tl.float32)
    return _lb_round_bf16(tl.where(neg, -f, f))
''', ("round_bf16",))

_define("uint32_to_bf16", '''
@triton.jit
def _lb_uint32_to_bf16(a):
    """uint32 -> bfloat16 (in float32) rounded once (see _lb_int32_to_bf16)."""
    sticky = ((a & 0xFFFF) != 0).to(tl.uint32) << 15
    a = tl.where(a >= 16777216, (a & 0xFFFF0000) | sticky, a)
    return _lb_round_bf16(a.to(tl.float32))
''', ("round_bf16",))

_define("tanh", '''
@triton.jit
def _lb_tanh(x):
    """tanh in float32: an odd Taylor polynomial for |x| < 1/16, (1 - e) / (1 + e) with e = exp(-2|x|) above."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    big = tl.div_rn(1.0 - e, 1.0 + e)
    x2 = a * a
    small = a * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * -0.05396825396825397)))
    t = tl.where(a < 0.0625, small, big)
    return tl.where(x < 0, -t, t)
''')

_define("bf16_bits", '''
@triton.jit
def _lb_bf16_bits(x):
    """The bfloat16 bit patterns (uint16) of float32 values holding bfloat16 numbers."""
    return (x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16)
''')

_define("bf16_from_bits", '''
@triton.jit
def _lb_bf16_from_bits(u):
    """bfloat16 bit patterns (uint16) -> their values, in float32 (exact)."""
    return (u.to(tl.uint32) << 16).to(tl.float32, bitcast=True)
''')


def f2i_helper(dtype: str) -> str:
    """Register (once) and return the key of the float32 -> ``dtype`` cast helper: round half to even,
    saturate to the range, NaN -> 0 (the IR's rule; Triton's own cast truncates)."""
    key = f"f32_to_{dtype}"
    if key in _TEXT:
        return key
    lo, hi = int_range(dtype)
    tl_name = f"tl.{dtype}"
    if dtype in ("int32", "uint32"):
        top = float(hi + 1)                        # 2**31 or 2**32: the first value that saturates
        below = float(hi + 1 - (1 << 7 if dtype == "int32" else 1 << 8))  # largest float32 under it
        body = (f"    q = tl.minimum(tl.maximum(r, {float(lo)!r}), {below!r}).to({tl_name})\n"
                f"    return tl.where(r >= {top!r}, tl.full([], {hi}, {tl_name}), q)\n")
    else:
        body = f"    return tl.minimum(tl.maximum(r, {float(lo)!r}), {float(hi)!r}).to({tl_name})\n"
    _define(key, f'''
@triton.jit
def _lb_{key}(x):
    """float32 -> {dtype}: round half to even, saturate to [{lo}, {hi}], NaN -> 0."""
    r = _lb_rint(tl.where(x != x, 0.0, x))
{body}''', ("rint",))
    return key


def helper_name(key: str) -> str:
    """The Python name of helper ``key`` (``'round_bf16'`` -> ``'_lb_round_bf16'``)."""
    return _PREFIX + key


def helper_source(keys: set[str] | frozenset[str]) -> str:
    """The source of the helpers ``keys`` and their dependencies (dependencies first), blank-line separated."""
    order: list[str] = []

    def visit(key: str) -> None:
        if key in order:
            return
        for dep in _DEPS[key]:
            visit(dep)
        order.append(key)

    for key in sorted(keys):
        visit(key)
    return "\n\n".join(_TEXT[k] for k in order)
