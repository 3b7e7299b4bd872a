"""Typing rules of every instruction, shared by the builder (at emission) and the verifier.

``check_instr(ins)`` returns a list of problems (plain sentences, most specific first) with the
instruction's *local* rules: operand and result types, shapes, scopes, dtype kinds, layouts. Rules that
need the whole kernel (definitions, grid rank, intents, yields) live in :mod:`lowbit.ir.verifier`.

>>> from lowbit.ir.nodes import Value, Binary
>>> from lowbit.ir.types import TileType
>>> a = Value("a", TileType("uint4", (4,)))
>>> check_instr(Binary(Value("r", TileType("uint4", (4,))), "add", a, a))[0]
'operand dtype uint4 is a low-bit code type without arithmetic'
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import nodes as n
from .types import TileType, is_code, kind_of, nbits_of, short_name, shape_str

Problems = list[str]


def tstr(t: TileType) -> str:
    from .printer import format_type

    return format_type(t)


def describe(ins: n.Instr) -> str:
    """How messages name an instruction: ``'%acc.1 = dot'``, ``'store'``."""
    outs = ins.outputs
    if outs:
        return ", ".join(str(v) for v in outs) + f" = {ins.opcode}"
    return ins.opcode


# ----------------------------------------------------------------------------------------------------
# common checks
# ----------------------------------------------------------------------------------------------------

def check_type(t: TileType, what: str) -> Problems:
    """Well-formedness of a register/shared type: concrete positive shape, layout shape matches."""
    p: Problems = []
    if t.scope not in ("global", "shared", "register"):
        p.append(f"{what} has unknown scope {t.scope!r} (expected global, shared or register)")
        return p
    if t.scope != "global":
        bad = [d for d in t.shape if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d <= 0]
        if bad:
            p.append(f"{what} shape {shape_str(t.shape)} must have concrete positive sizes "
                     f"(symbolic sizes only on global tensors)")
    if t.layout is not None and not (t.scope == "global" and not all(isinstance(d, int) for d in t.shape)):
        lshape = getattr(t.layout, "shape", None)
        try:
            lshape = tuple(int(x) for x in lshape)
        except TypeError:
            lshape = None
        if lshape != tuple(t.shape):
            p.append(f"{what} layout {t.layout} has shape {list(lshape) if lshape else lshape}, "
                     f"but the tile shape is {shape_str(t.shape)}")
    return p


def _scalar_int(v: n.Value, what: str) -> Problems:
    t = v.type
    if t.shape != () or t.scope != "register" or t.dtype != "int32":
        return [f"{what} {v} must be an i32 scalar, got {tstr(t)}"]
    return []


def _register(v: n.Value, what: str) -> Problems:
    if v.type.scope != "register":
        return [f"{what} {v} must be a register tile, got {tstr(v.type)}"]
    return []


def _native(v: n.Value, what: str = "operand") -> Problems:
    if is_code(v.dtype):
        return [f"{what} dtype {v.dtype} is a low-bit code type without arithmetic"]
    return []


def _result_register(ins: n.Instr) -> Problems:
    r = ins.result  # type: ignore[attr-defined]
    if r.type.scope != "register":
        return [f"result must be a register tile, got {tstr(r.type)}"]
    return []


def _same(t: TileType, expect_dtype: str, expect_shape: tuple, what: str) -> Problems:
    p: Problems = []
    if t.dtype != expect_dtype:
        p.append(f"{what} dtype must be {short_name(expect_dtype)}, got {short_name(t.dtype)}")
    if tuple(t.shape) != tuple(expect_shape):
        p.append(f"{what} shape must be {shape_str(tuple(expect_shape))}, got {shape_str(t.shape)}")
    return p


def literal_fits(value, dtype: str) -> str | None:
    """Why a literal cannot be a value of ``dtype`` (or None if it can)."""
    if is_code(dtype):
        return f"literals of low-bit code type {dtype} are not allowed (make a native tile and cast)"
    kind = kind_of(dtype)
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return None
        return f"a {short_name(dtype)} literal must be true/false, got {value!r}"
    if isinstance(value, (bool, np.bool_)):
        return f"a {short_name(dtype)} literal cannot be the bool {value!r}"
    if kind in ("int", "uint"):
        if not isinstance(value, (int, np.integer)):
            return f"an integer {short_name(dtype)} literal must be an int, got {value!r}"
        nb = nbits_of(dtype)
        lo, hi = (-(1 << (nb - 1)), (1 << (nb - 1)) - 1) if kind == "int" else (0, (1 << nb) - 1)
        if not lo <= int(value) <= hi:
            return f"literal {value} is out of range [{lo}, {hi}] of {short_name(dtype)}"
        return None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return f"a float literal must be a number, got {value!r}"
    return None


def _mask_other(mask: n.Value | None, other: n.Value | None, shape: tuple, dtype: str) -> Problems:
    p: Problems = []
    if mask is not None:
        p += _same(mask.type, "bool", shape, f"mask {mask}")
        p += _register(mask, "mask")
    if other is not None:
        p += _same(other.type, dtype, (), f"other {other}")
        p += _register(other, "other")
    return p


def _offsets(offsets: tuple, rank: int, what: str) -> Problems:
    p: Problems = []
    if len(offsets) != rank:
        p.append(f"expected {rank} offsets (one per axis of {what}), got {len(offsets)}")
    for i, o in enumerate(offsets):
        p += _scalar_int(o, f"offset {i}")
    return p


def _checked(checked, rank: int) -> Problems:
    if checked is not None and len(checked) != rank:
        return [f"checked has {len(checked)} entries, expected {rank} (one per axis)"]
    return []


# ----------------------------------------------------------------------------------------------------
# per-instruction rules
# ----------------------------------------------------------------------------------------------------

def _constant(ins: n.Constant) -> Problems:
    t = ins.result.type
    p = [] if t.is_scalar else [f"result must be a scalar, got {tstr(t)}"]
    why = literal_fits(ins.value, t.dtype)
    return p + ([why] if why else [])


def _program_id(ins) -> Problems:
    p = _same(ins.result.type, "int32", (), "result") + _result_register(ins)
    if not isinstance(ins.axis, int) or not 0 <= ins.axis < 3:
        p.append(f"axis must be 0, 1 or 2, got {ins.axis!r}")
    return p


def _symbol(ins: n.SymbolRef) -> Problems:
    t = ins.result.type
    return [] if t.is_scalar else [f"result must be a scalar, got {tstr(t)}"]


def _full(ins: n.Full) -> Problems:
    p = _result_register(ins)
    why = literal_fits(ins.value, ins.result.dtype)
    return p + ([why] if why else [])


def _arange(ins: n.Arange) -> Problems:
    if not (isinstance(ins.start, int) and isinstance(ins.stop, int)) or ins.stop <= ins.start:
        return [f"arange needs int start < stop, got start={ins.start!r}, stop={ins.stop!r}"]
    return _same(ins.result.type, "int32", (ins.stop - ins.start,), "result") + _result_register(ins)


def _global_tensor(t: n.Value) -> Problems:
    if t.type.scope != "global":
        return [f"{t} must be a global tensor (a kernel parameter), got {tstr(t.type)}"]
    return []


def _load(ins: n.Load) -> Problems:
    p = _global_tensor(ins.tensor)
    r = ins.result.type
    p += _result_register(ins)
    if r.dtype != ins.tensor.dtype:
        p.append(f"result dtype must be {short_name(ins.tensor.dtype)} (the tensor's), got {short_name(r.dtype)}")
    if r.rank != ins.tensor.type.rank:
        p.append(f"tile rank {r.rank} differs from tensor {ins.tensor} rank {ins.tensor.type.rank}")
    p += _offsets(ins.offsets, ins.tensor.type.rank, str(ins.tensor))
    p += _mask_other(ins.mask, ins.other, r.shape, ins.tensor.dtype)
    return p + _checked(ins.checked, ins.tensor.type.rank)


def _store(ins: n.Store) -> Problems:
    p = _global_tensor(ins.tensor) + _register(ins.value, "value")
    v = ins.value.type
    if v.dtype != ins.tensor.dtype:
        p.append(f"value dtype {short_name(v.dtype)} differs from tensor {ins.tensor} dtype "
                 f"{short_name(ins.tensor.dtype)}")
    if v.rank != ins.tensor.type.rank:
        p.append(f"value rank {v.rank} differs from tensor {ins.tensor} rank {ins.tensor.type.rank}")
    p += _offsets(ins.offsets, ins.tensor.type.rank, str(ins.tensor))
    p += _mask_other(ins.mask, None, v.shape, v.dtype)
    return p + _checked(ins.checked, ins.tensor.type.rank)


def _alloc_shared(ins: n.AllocShared) -> Problems:
    t = ins.result.type
    return [] if t.scope == "shared" and t.rank > 0 else [f"result must be a shared tile, got {tstr(t)}"]


def _shared(v: n.Value, what: str) -> Problems:
    return [] if v.type.scope == "shared" else [f"{what} {v} must be a shared tile, got {tstr(v.type)}"]


def _shared_slice(ins: n.SharedSlice) -> Problems:
    p = _shared(ins.src, "source")
    s, r = ins.src.type, ins.result.type
    if r.scope != "shared":
        p.append(f"result must be a shared tile, got {tstr(r)}")
    if r.dtype != s.dtype:
        p.append(f"result dtype {short_name(r.dtype)} differs from source dtype {short_name(s.dtype)}")
    p += _offsets(ins.offsets, s.rank, str(ins.src))
    if r.rank > s.rank or r.rank == 0:
        p.append(f"result rank {r.rank} must be between 1 and the source rank {s.rank}")
    else:
        tail = s.shape[s.rank - r.rank:]
        if any(a > b for a, b in zip(r.shape, tail)):
            p.append(f"slice shape {shape_str(r.shape)} does not fit in the source's trailing dims "
                     f"{shape_str(tail)}")
    return p


def _copy_to_shared(ins: n.CopyToShared) -> Problems:
    p = _shared(ins.dst, "destination") + _global_tensor(ins.tensor)
    d = ins.dst.type
    if d.dtype != ins.tensor.dtype:
        p.append(f"destination dtype {short_name(d.dtype)} differs from tensor dtype {short_name(ins.tensor.dtype)}")
    if d.rank != ins.tensor.type.rank:
        p.append(f"destination rank {d.rank} differs from tensor {ins.tensor} rank {ins.tensor.type.rank}")
    p += _offsets(ins.offsets, ins.tensor.type.rank, str(ins.tensor))
    p += _mask_other(ins.mask, ins.other, d.shape, d.dtype)
    return p + _checked(ins.checked, ins.tensor.type.rank)


def _load_shared(ins: n.LoadShared) -> Problems:
    return (_shared(ins.src, "source") + _result_register(ins)
            + _same(ins.result.type, ins.src.dtype, ins.src.shape, "result"))


def _store_shared(ins: n.StoreShared) -> Problems:
    return (_shared(ins.dst, "destination") + _register(ins.value, "value")
            + _same(ins.value.type, ins.dst.dtype, ins.dst.shape, f"value {ins.value}"))


def _view(ins: n.View) -> Problems:
    x, r = ins.x.type, ins.result.type
    p: Problems = []
    if "bool" in (x.dtype, r.dtype):
        return ["bool tiles have no defined bit pattern and cannot be viewed"]
    if x.scope != "register" or r.scope != "register":
        p.append(f"view works on register tiles (load shared/global data first), got {x.scope} -> {r.scope}")
    nx, nr = nbits_of(x.dtype), nbits_of(r.dtype)
    if x.rank != r.rank:
        p.append(f"view keeps the rank: {shape_str(x.shape)} -> {shape_str(r.shape)}")
    elif x.rank == 0:
        if nx != nr:
            p.append(f"scalar view needs equal bit widths, got {nx} and {nr}")
    else:
        if x.shape[:-1] != r.shape[:-1]:
            p.append(f"view keeps the leading dims: {shape_str(x.shape)} -> {shape_str(r.shape)}")
        if x.shape[-1] * nx != r.shape[-1] * nr:
            p.append(f"bits per row differ: {x.shape[-1]} x {nx} = {x.shape[-1] * nx} vs "
                     f"{r.shape[-1]} x {nr} = {r.shape[-1] * nr} ({short_name(x.dtype)}{shape_str(x.shape)}"
                     f" -> {short_name(r.dtype)}{shape_str(r.shape)})")
    if x.layout is not None and r.layout is not None and x.scope == "register":
        try:
            xs, rs = int(x.layout.spatial_size), int(r.layout.spatial_size)
            xl, rl = int(x.layout.local_size) * nx, int(r.layout.local_size) * nr
        except AttributeError:
            xs = rs = xl = rl = 0
        if xs != rs or xl != rl:
            p.append(f"layouts are not bit-compatible: {xs} workers x {xl} bits vs {rs} workers x {rl} bits")
    return p


def _cast(ins: n.Cast) -> Problems:
    x, r = ins.x.type, ins.result.type
    p = _register(ins.x, "operand") + _result_register(ins)
    if tuple(x.shape) != tuple(r.shape):
        p.append(f"cast keeps the shape: {shape_str(x.shape)} -> {shape_str(r.shape)}")
    return p


_KIND_WORDS = {"bool": "bool", "int": "signed int", "uint": "unsigned int", "float": "float"}


def _unary(ins: n.Unary) -> Problems:
    if ins.op not in n.UNARY_OPS:
        return [f"unknown unary op {ins.op!r}"]
    p = _register(ins.x, "operand") + _native(ins.x)
    if not p:
        kind = kind_of(ins.x.dtype)
        if kind not in n.UNARY_OPS[ins.op]:
            ok = ", ".join(_KIND_WORDS[k] for k in n.UNARY_OPS[ins.op])
            p.append(f"{ins.op} needs {ok} operands, got {short_name(ins.x.dtype)}")
    return p + _same(ins.result.type, ins.x.dtype, ins.x.shape, "result") + _result_register(ins)


#: the longest ``lookup`` table (entries): a byte of index
LOOKUP_MAX_ENTRIES = 256


def _lookup(ins: n.Lookup) -> Problems:
    p = _register(ins.x, "index") + _native(ins.x, "index")
    if not p and kind_of(ins.x.dtype) not in ("int", "uint"):
        p.append(f"lookup needs an integer index, got {short_name(ins.x.dtype)}")
    size = len(ins.table)
    if not 2 <= size <= LOOKUP_MAX_ENTRIES or size & (size - 1):
        p.append(f"a lookup table has a power-of-two number of entries from 2 to {LOOKUP_MAX_ENTRIES}, got {size}")
    rd = ins.result.dtype
    if is_code(rd) or kind_of(rd) == "bool":
        p.append(f"lookup results are native numbers, got {short_name(rd)}")
    else:
        from .numerics import literal

        for i, v in enumerate(ins.table):
            why = literal_fits(v, rd)
            if why is None and kind_of(rd) == "float":
                held = float(literal(v, rd))
                exact = held == v or (held != held and v != v)
                why = None if exact else f"{v!r} is not exactly a {short_name(rd)}"
            if why is not None:
                p.append(f"table entry {i}: {why}")
                break
    return p + _same(ins.result.type, rd, ins.x.shape, "result") + _result_register(ins)


def _binary_kinds(op: str) -> tuple[str, ...]:
    if op == "div":
        return ("float",)
    if op in ("and", "or", "xor"):
        return ("bool", "int", "uint")
    if op in ("shl", "shr"):
        return ("int", "uint")
    if op in n.COMPARE_OPS:
        return ("bool", "int", "uint", "float")
    return ("int", "uint", "float")


def _binary(ins: n.Binary) -> Problems:
    if ins.op not in n.BINARY_OPS:
        return [f"unknown binary op {ins.op!r}"]
    a, b = ins.lhs.type, ins.rhs.type
    p = _register(ins.lhs, "lhs") + _register(ins.rhs, "rhs") + _native(ins.lhs) + _native(ins.rhs)
    if p:
        return p
    if a.dtype != b.dtype:
        p.append(f"operand dtypes differ: {short_name(a.dtype)} vs {short_name(b.dtype)} (cast one)")
    if tuple(a.shape) != tuple(b.shape):
        p.append(f"operand shapes differ: {shape_str(a.shape)} vs {shape_str(b.shape)} (broadcast first)")
    kind = kind_of(a.dtype)
    if kind not in _binary_kinds(ins.op):
        ok = ", ".join(_KIND_WORDS[k] for k in _binary_kinds(ins.op))
        p.append(f"{ins.op} needs {ok} operands, got {short_name(a.dtype)}")
    rd = "bool" if ins.op in n.COMPARE_OPS else a.dtype
    return p + _same(ins.result.type, rd, a.shape, "result") + _result_register(ins)


def _where(ins: n.Where) -> Problems:
    p = _register(ins.cond, "cond") + _register(ins.x, "x") + _register(ins.y, "y")
    c, x, y = ins.cond.type, ins.x.type, ins.y.type
    if c.dtype != "bool":
        p.append(f"condition {ins.cond} must be bool, got {short_name(c.dtype)}")
    if x.dtype != y.dtype:
        p.append(f"branch dtypes differ: {short_name(x.dtype)} vs {short_name(y.dtype)}")
    if not (tuple(c.shape) == tuple(x.shape) == tuple(y.shape)):
        p.append(f"shapes differ: cond {shape_str(c.shape)}, x {shape_str(x.shape)}, y {shape_str(y.shape)} "
                 f"(broadcast first)")
    return p + _same(ins.result.type, x.dtype, x.shape, "result") + _result_register(ins)


DOT_ACC = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "int8": "int32",
           "uint8": "int32"}


def _dot(ins: n.Dot) -> Problems:
    a, b, c = ins.a.type, ins.b.type, ins.acc.type
    p = _register(ins.a, "a") + _register(ins.b, "b") + _register(ins.acc, "acc")
    if a.rank != 2 or b.rank != 2:
        p.append(f"dot needs 2-D operands, got a {shape_str(a.shape)} and b {shape_str(b.shape)}")
        return p
    if a.shape[1] != b.shape[0]:
        p.append(f"inner dims differ: a {shape_str(a.shape)} @ b {shape_str(b.shape)}")
    if a.dtype != b.dtype:
        p.append(f"operand dtypes differ: {short_name(a.dtype)} vs {short_name(b.dtype)} (cast one)")
    if a.dtype not in DOT_ACC:
        p.append(f"dot inputs must be f16, bf16, f32, i8 or u8, got {short_name(a.dtype)}"
                 + (" (a low-bit code type: cast it first)" if is_code(a.dtype) else ""))
    else:
        p += _same(c, DOT_ACC[a.dtype], (a.shape[0], b.shape[1]), f"accumulator {ins.acc}")
    return p + _same(ins.result.type, c.dtype, c.shape, "result") + _result_register(ins)


def _reduce(ins: n.Reduce) -> Problems:
    if ins.op not in n.REDUCE_OPS:
        return [f"unknown reduction {ins.op!r}"]
    x = ins.x.type
    p = _register(ins.x, "operand") + _native(ins.x)
    if x.dtype == "bool":
        p.append(f"{ins.op} of bool is not defined (cast to i32 first)")
    if not isinstance(ins.axis, int) or not 0 <= ins.axis < x.rank:
        p.append(f"axis {ins.axis!r} out of range for rank {x.rank}")
        return p
    shape = list(x.shape)
    if ins.keepdims:
        shape[ins.axis] = 1
    else:
        del shape[ins.axis]
    return p + _same(ins.result.type, x.dtype, tuple(shape), "result") + _result_register(ins)


def _broadcast(ins: n.Broadcast) -> Problems:
    x, r = ins.x.type, ins.result.type
    p = _register(ins.x, "operand") + _result_register(ins)
    if r.dtype != x.dtype:
        p.append(f"broadcast keeps the dtype: {short_name(x.dtype)} -> {short_name(r.dtype)}")
    ok = r.rank >= x.rank and all(a == b or a == 1 for a, b in zip(x.shape[::-1], r.shape[::-1]))
    if not ok:
        p.append(f"cannot broadcast {shape_str(x.shape)} to {shape_str(r.shape)}")
    return p


def _reshape(ins: n.Reshape) -> Problems:
    x, r = ins.x.type, ins.result.type
    p = _register(ins.x, "operand") + _result_register(ins)
    if r.dtype != x.dtype:
        p.append(f"reshape keeps the dtype: {short_name(x.dtype)} -> {short_name(r.dtype)}")
    if not check_type(r, "result") and x.numel != r.numel:
        p.append(f"reshape keeps the element count: {shape_str(x.shape)} ({x.numel}) -> "
                 f"{shape_str(r.shape)} ({r.numel})")
    return p


def _permute(ins: n.Permute) -> Problems:
    x = ins.x.type
    p = _register(ins.x, "operand")
    if sorted(ins.perm) != list(range(x.rank)):
        return p + [f"perm {list(ins.perm)} is not a permutation of the {x.rank} axes"]
    return p + _same(ins.result.type, x.dtype, tuple(x.shape[i] for i in ins.perm), "result") + _result_register(ins)


def _expand_dims(ins: n.ExpandDims) -> Problems:
    x = ins.x.type
    p = _register(ins.x, "operand")
    if not isinstance(ins.axis, int) or not 0 <= ins.axis <= x.rank:
        return p + [f"axis {ins.axis!r} out of range [0, {x.rank}]"]
    shape = list(x.shape)
    shape.insert(ins.axis, 1)
    return p + _same(ins.result.type, x.dtype, tuple(shape), "result") + _result_register(ins)


def _for(ins: n.For) -> Problems:
    p = _same(ins.iv.type, "int32", (), f"induction variable {ins.iv}")
    for what in ("start", "stop", "step"):
        p += _scalar_int(getattr(ins, what), what)
    if not (len(ins.iter_args) == len(ins.inits) == len(ins.results)):
        p.append(f"{len(ins.inits)} initial values, {len(ins.iter_args)} iter_args and {len(ins.results)} "
                 f"results must match in number")
        return p
    for init, arg, res in zip(ins.inits, ins.iter_args, ins.results):
        if not (init.type == arg.type == res.type):
            p.append(f"loop-carried value {arg} has type {tstr(arg.type)}, but its initial value {init} is "
                     f"{tstr(init.type)} and the result {res} is {tstr(res.type)}")
    return p


def _if(ins: n.If) -> Problems:
    if not ins.cond.type.is_scalar or ins.cond.dtype != "bool":
        return [f"condition {ins.cond} must be a bool scalar, got {tstr(ins.cond.type)}"]
    return []


def _nothing(ins) -> Problems:
    return []


RULES: dict[type, Callable[[n.Instr], Problems]] = {
    n.Constant: _constant, n.ProgramId: _program_id, n.NumPrograms: _program_id, n.SymbolRef: _symbol,
    n.Full: _full, n.Arange: _arange, n.Load: _load, n.Store: _store, n.AllocShared: _alloc_shared,
    n.SharedSlice: _shared_slice, n.CopyToShared: _copy_to_shared, n.LoadShared: _load_shared,
    n.StoreShared: _store_shared, n.Barrier: _nothing, n.View: _view, n.Cast: _cast, n.Unary: _unary,
    n.Binary: _binary, n.Where: _where, n.Lookup: _lookup, n.Dot: _dot, n.Reduce: _reduce, n.Broadcast: _broadcast,
    n.Reshape: _reshape, n.Permute: _permute, n.ExpandDims: _expand_dims, n.Yield: _nothing,
    n.For: _for, n.If: _if,
}


def check_instr(ins: n.Instr) -> Problems:
    """Local typing problems of one instruction (empty list: well typed)."""
    p: Problems = []
    for v in ins.outputs:
        p += check_type(v.type, f"result {v}")
        if v.type.scope == "global":
            p.append(f"result {v} cannot be global (global tensors are kernel parameters)")
    rule = RULES.get(type(ins))
    if rule is None:
        return p + [f"unknown instruction class {type(ins).__name__}"]
    return p + rule(ins)


__all__ = ["check_instr", "check_type", "describe", "literal_fits", "DOT_ACC", "LOOKUP_MAX_ENTRIES"]
