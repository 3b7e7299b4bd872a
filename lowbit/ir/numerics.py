"""The interpreter's arithmetic: casts, bit views and elementwise math on numpy arrays, exactly as the
README specifies. Kept separate from the interpreter's control logic so each rule reads on its own.

Tiles are numpy arrays: native dtypes in their numpy dtype (bfloat16 as ``ml_dtypes.bfloat16``), code
types as uint8 codes. float16/bfloat16 ops compute in float32 and round once per instruction.

>>> import numpy as np
>>> cast(np.array([2.5, -3.5, 1e10], np.float32), "float32", "int8")
array([  2,  -4, 127], dtype=int8)
>>> view(np.array([[1, 2, 3, 4, 5, 6, 7, 8]], np.uint8), "uint4", "uint32")
array([[2271560481]], dtype=uint32)
"""
from __future__ import annotations

import numpy as np

from ..errors import LowbitError
from .types import is_code, kind_of, lowbit_dtype, nbits_of, numpy_dtype


class InterpreterError(LowbitError, RuntimeError):
    """A kernel did something undefined at run time (integer division by zero, a shift out of range,
    an unchecked out-of-bounds access, a bad argument)."""


_F32 = np.float32
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32}


def _arr(x, dtype: str) -> np.ndarray:
    """``x`` as an array of the tile dtype (rank 0 stays a 0-d array)."""
    return np.asarray(x).astype(numpy_dtype(dtype), copy=False)


def _int_range(dtype: str) -> tuple[int, int]:
    nb = nbits_of(dtype)
    if kind_of(dtype) == "int":
        return -(1 << (nb - 1)), (1 << (nb - 1)) - 1
    return 0, (1 << nb) - 1


def _round_to_bf16_from_f64(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even of float64 values to bfloat16's 8 significant bits, exact in bfloat16's normal
    range (used for ints and literals; ml_dtypes' float64 -> bfloat16 may round twice through float32)."""
    m, e = np.frexp(x)                      # x = m * 2**e, 0.5 <= |m| < 1
    r = np.ldexp(np.rint(np.ldexp(m, 8)), e - 8)
    return r.astype(np.float32).astype(numpy_dtype("bfloat16"))


def literal(value, dtype: str, shape: tuple = ()) -> np.ndarray:
    """A constant tile: the Python literal rounded once (RNE) to ``dtype`` and broadcast to ``shape``."""
    if dtype == "bfloat16" and not isinstance(value, bool):
        one = _round_to_bf16_from_f64(np.asarray(float(value), np.float64))
    else:
        one = np.asarray(value).astype(numpy_dtype(dtype))
    return np.full(shape, one, dtype=numpy_dtype(dtype))


# ----------------------------------------------------------------------------------------------------
# cast
# ----------------------------------------------------------------------------------------------------

def cast(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert values of tile dtype ``src`` to ``dst`` (README "cast rules")."""
    with np.errstate(all="ignore"):  # overflow to inf is the IEEE result, not a problem
        return _cast(np.asarray(x), src, dst)


def _cast(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    if src == dst:
        return x.copy()
    if is_code(src):  # decode to exact values: float32 or int32
        vals = np.asarray(lowbit_dtype(src).decode(x))
        src = "float32" if kind_of(src) == "float" else "int32"
        x = vals.astype(numpy_dtype(src))
        if src == dst:
            return x
    sk = kind_of(src)
    if is_code(dst):
        d = lowbit_dtype(dst)
        if kind_of(dst) == "float":
            return np.asarray(d.encode(x.astype(np.float64))).astype(np.uint8)
        lo, hi = _int_range(dst)
        if sk == "float":
            v = x.astype(np.float64)
            v = np.clip(np.rint(np.where(np.isnan(v), 0.0, v)), lo, hi)
        else:
            v = np.clip(x.astype(np.int64), lo, hi)
        return np.asarray(d.encode(v.astype(np.int64))).astype(np.uint8)
    dk = kind_of(dst)
    if dk == "bool":
        return x.astype(np.float32) != 0 if sk == "float" else x != 0
    if dk == "float":
        if sk == "float":
            return x.astype(_F32).astype(numpy_dtype(dst))
        wide = x.astype(np.float64)  # exact for every int / bool source
        if dst == "bfloat16":
            return _round_to_bf16_from_f64(wide)
        return wide.astype(numpy_dtype(dst))
    # dst is a native int
    if sk == "float":
        lo, hi = _int_range(dst)
        v = x.astype(np.float64)
        v = np.clip(np.rint(np.where(np.isnan(v), 0.0, v)), lo, hi)
        return v.astype(np.int64).astype(numpy_dtype(dst))
    return x.astype(np.int64).astype(numpy_dtype(dst))  # int/bool -> int: wrap (keep the low bits)


# ----------------------------------------------------------------------------------------------------
# view
# ----------------------------------------------------------------------------------------------------

def _pattern(x: np.ndarray, dtype: str) -> np.ndarray:
    """The unsigned bit pattern of every element, as uint64."""
    if is_code(dtype):
        return (x.astype(np.uint64) & np.uint64((1 << nbits_of(dtype)) - 1))
    return np.ascontiguousarray(x).view(_UINT[nbits_of(dtype)]).astype(np.uint64)


def _from_pattern(u: np.ndarray, dtype: str) -> np.ndarray:
    if is_code(dtype):
        return u.astype(np.uint8)
    return np.ascontiguousarray(u.astype(_UINT[nbits_of(dtype)])).view(numpy_dtype(dtype))


def view(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Reinterpret each row (last axis) as a little-endian bitstream of ``dst`` elements."""
    x = np.asarray(x)
    ns, nd = nbits_of(src), nbits_of(dst)
    u = _pattern(x, src)
    if x.ndim == 0:
        return _from_pattern(u, dst).reshape(())
    lead, width = x.shape[:-1], x.shape[-1]
    bits = (u[..., None] >> np.arange(ns, dtype=np.uint64)) & np.uint64(1)     # [..., width, ns]
    bits = bits.reshape(lead + (width * ns // nd, nd))
    vals = (bits << np.arange(nd, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)
    return _from_pattern(vals, dst)


# ----------------------------------------------------------------------------------------------------
# elementwise
# ----------------------------------------------------------------------------------------------------

def _compute(x: np.ndarray, dtype: str) -> np.ndarray:
    """Float16/bfloat16 are computed in float32."""
    return x.astype(_F32) if dtype in ("float16", "bfloat16") else x


_UNARY_FLOAT = {
    "exp": np.exp, "exp2": np.exp2, "log": np.log, "log2": np.log2, "sqrt": np.sqrt,
    "rsqrt": lambda v: np.float32(1.0) / np.sqrt(v), "tanh": np.tanh,
    "sigmoid": lambda v: np.float32(1.0) / (np.float32(1.0) + np.exp(-v)),
    "floor": np.floor, "ceil": np.ceil, "neg": np.negative, "abs": np.abs,
}


def unary(op: str, x: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        if kind_of(dtype) == "float":
            return _arr(_UNARY_FLOAT[op](_compute(x, dtype)), dtype)
        if op == "not":
            return _arr(np.logical_not(x) if dtype == "bool" else np.invert(x), dtype)
        if op == "neg":
            return _arr(np.negative(x), dtype)
        if op == "abs":
            return _arr(np.abs(x), dtype)
    raise InterpreterError(f"unary {op} is not defined on {dtype}")


_CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
        "ge": np.greater_equal}
_ARITH = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
          "floordiv": np.floor_divide, "mod": np.mod, "minimum": np.minimum, "maximum": np.maximum}
_BIT = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}


def binary(op: str, a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """``op`` on two arrays of tile dtype ``dtype`` (comparisons give bool)."""
    kind = kind_of(dtype)
    with np.errstate(all="ignore"):
        if op in _CMP:
            return np.asarray(_CMP[op](_compute(a, dtype), _compute(b, dtype)))
        if kind == "float":
            return _arr(_ARITH[op](_compute(a, dtype), _compute(b, dtype)), dtype)
        if op in _BIT:
            return _arr(_BIT[op](a, b), dtype)
        if op in ("shl", "shr"):
            nb = nbits_of(dtype)
            amount = np.asarray(b).astype(np.int64)
            if np.any((amount < 0) | (amount >= nb)):
                bad = amount[(amount < 0) | (amount >= nb)].ravel()[0]
                raise InterpreterError(f"{op} by {bad} on {dtype}: shift amounts must be in [0, {nb})")
            fn = np.left_shift if op == "shl" else np.right_shift
            return _arr(fn(a, np.asarray(b).astype(a.dtype)), dtype)
        if op in ("floordiv", "mod") and np.any(np.asarray(b) == 0):
            raise InterpreterError(f"integer {op} by zero")
        return _arr(_ARITH[op](a, b), dtype)


def where(c: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.array(y, copy=True)
    out[c] = x[c]
    return out


def lookup(x: np.ndarray, index_dtype: str, table: tuple, dtype: str) -> np.ndarray:
    """``table[x mod len(table)]``: the index's low ``log2(len(table))`` bits (two's complement for signed
    indices) select an entry; entries are rounded to ``dtype`` as literals (the verifier keeps them exact)."""
    values = np.stack([literal(v, dtype) for v in table])
    low = np.asarray(x).astype(np.int64) & (len(table) - 1)
    return values[low]


# ----------------------------------------------------------------------------------------------------
# dot and reductions
# ----------------------------------------------------------------------------------------------------

def dot(a: np.ndarray, b: np.ndarray, acc: np.ndarray, acc_dtype: str) -> np.ndarray:
    """``acc + a @ b`` in the accumulator dtype: floats as a float64 matmul rounded once to float32 (at least as
    accurate as any float32 accumulation order a backend may use), ints in int64 then wrapped to int32.

    Operands are made C-contiguous first, so the result never depends on how a tile sits in memory (BLAS
    picks different kernels, with different rounding, for transposed views)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if acc_dtype == "float32":
        return (acc.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)).astype(_F32)
    prod = a.astype(np.int64) @ b.astype(np.int64)
    return (acc.astype(np.int64) + prod).astype(np.int32)


def reduce(op: str, x: np.ndarray, dtype: str, axis: int, keepdims: bool) -> np.ndarray:
    """sum / max / min over ``axis``: float sums in float32, integer sums wrap."""
    if op == "sum":
        if kind_of(dtype) == "float":
            r = np.sum(x.astype(_F32), axis=axis, keepdims=keepdims, dtype=_F32)
        else:
            r = np.sum(x.astype(np.int64), axis=axis, keepdims=keepdims)
            return np.asarray(r).astype(np.int64).astype(numpy_dtype(dtype))
    else:
        fn = np.max if op == "max" else np.min
        r = fn(_compute(x, dtype), axis=axis, keepdims=keepdims)
    return _arr(r, dtype)


__all__ = ["InterpreterError", "literal", "cast", "view", "unary", "binary", "where", "lookup", "dot", "reduce"]
