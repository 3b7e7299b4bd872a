"""KernelBuilder: build a verified :class:`~lowbit.ir.nodes.Kernel` with type inference.

The DSL front end (and tests, and passes that synthesize kernels) use it. Every emitter computes its
result type from the operands (numpy broadcasting, the promotion table of :func:`lowbit.ir.types.promote`,
weak Python literals), inserts the explicit ``cast`` / ``broadcast`` instructions the IR requires, checks
the instruction with the verifier's rules and raises :class:`~lowbit.errors.CompileError` (naming the
instruction and its source location) on mistakes.

>>> kb = KernelBuilder("axpy")
>>> x = kb.tensor_param("x", "f32", ["N"]); y = kb.tensor_param("y", "f32", ["N"])
>>> kb.set_grid("cdiv(N, 64)")
>>> off = kb.mul(kb.program_id(0), 64)
>>> kb.store(y, kb.add(kb.mul(kb.load(x, [off], [64]), 2.0), kb.load(y, [off], [64])), [off])
>>> print(kb.build().params[0].intent, kb.build().params[1].intent)
in inout
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

import numpy as np

from ..errors import CompileError, SourceLocation
from . import nodes as n
from .rules import DOT_ACC, check_instr, describe, literal_fits
from .symbolic import Dim, as_dim
from .types import (TileType, broadcast_shapes, canonical_dtype, is_code, is_float, is_int, kind_of,
                    literal_dtype, nbits_of, promote, shape_str, short_name)

Operand = Union[n.Value, int, float, bool]

_NAME_OK = re.compile(r"[^A-Za-z0-9_.]")


@dataclass
class ForScope:
    """An open ``for``: ``iv`` (i32 scalar) and ``args`` (the carried values, inside the body).
    After the loop is closed, ``results`` holds the loop's results."""

    iv: n.Value
    args: tuple[n.Value, ...]
    start: n.Value
    stop: n.Value
    step: n.Value
    inits: tuple[n.Value, ...]
    names: tuple[str, ...]
    loc: SourceLocation | None
    results: tuple[n.Value, ...] | None = None
    pending_yields: tuple[Operand, ...] | None = None
    body: list[n.Instr] = field(default_factory=list)

    def yield_(self, values: Sequence[Operand]) -> None:
        """Set the values the body yields (used with :meth:`KernelBuilder.for_range`)."""
        self.pending_yields = tuple(values)


@dataclass
class IfScope:
    """An open ``if``: the then-body, and after :meth:`KernelBuilder.begin_else` the else-body."""

    cond: n.Value
    loc: SourceLocation | None
    then_body: list[n.Instr] = field(default_factory=list)
    then_yields: tuple[n.Value, ...] | None = None
    else_body: list[n.Instr] | None = None
    results: tuple[n.Value, ...] | None = None


class KernelBuilder:
    """Builds one kernel. See ``lowbit/ir/README.md`` for the full method table."""

    def __init__(self, name: str, *, loc: SourceLocation | None = None):
        self.name = name
        self.kernel_loc = loc
        #: default source location of emitted instructions (the front end sets it per statement)
        self.loc: SourceLocation | None = loc
        self._params: list[n.Param] = []
        self._declared_intent: dict[str, str | None] = {}
        self._constants: list[n.ConstParam] = []
        self._grid: tuple[Dim, ...] | None = None
        self._names: set[str] = set()
        self._top: list[n.Instr] = []
        self._scopes: list[Union[ForScope, IfScope]] = []
        #: one {(value, dtype): Value} per open body, so equal unnamed constants are emitted once per scope
        self._const_cache: list[dict[tuple, n.Value]] = [{}]

    # ------------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def at(self, loc: SourceLocation | None) -> Iterator[None]:
        """``with kb.at(loc):`` emit instructions with this default location."""
        old, self.loc = self.loc, loc
        try:
            yield
        finally:
            self.loc = old

    def _error(self, message: str, loc: SourceLocation | None = None, hint: str | None = None) -> CompileError:
        return CompileError(message, location=loc if loc is not None else self.loc, hint=hint)

    def fresh(self, hint: str, type: TileType) -> n.Value:
        """A new Value with a unique name derived from ``hint``."""
        base = re.sub(r"(\.\d+)+$", "", _NAME_OK.sub("_", hint)) or "v"
        if base[0].isdigit() or base[0] == ".":
            base = "v" + base
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}.{i}"
        self._names.add(name)
        return n.Value(name, type)

    def _claim(self, name: str, what: str) -> None:
        if not name or _NAME_OK.search(name) or name[0].isdigit():
            raise self._error(f"{what} name {name!r} is not a valid identifier")
        if name in self._names:
            raise self._error(f"{what} {name!r} is defined twice")
        self._names.add(name)

    def _body(self) -> list[n.Instr]:
        if not self._scopes:
            return self._top
        s = self._scopes[-1]
        if isinstance(s, ForScope):
            return s.body
        return s.then_body if s.else_body is None else s.else_body

    def emit(self, ins: n.Instr) -> n.Instr:
        """Check ``ins`` with the verifier's rules and append it to the current body."""
        if ins.loc is None and self.loc is not None:
            ins = _with_loc(ins, self.loc)
        problems = check_instr(ins)
        if problems:
            hint = None
            if any("code type" in p for p in problems):
                hint = "low-bit tiles hold codes: cast(x, float16) (or another native dtype) first"
            raise CompileError(f"{describe(ins)}: {problems[0]}", location=ins.loc, hint=hint,
                               notes=[CompileError(f"{describe(ins)}: {p}", location=ins.loc) for p in problems[1:]])
        self._body().append(ins)
        return ins

    def _loc(self, loc: SourceLocation | None) -> SourceLocation | None:
        return loc if loc is not None else self.loc

    def _value(self, x: Operand, dtype: str | None = None, *, loc=None) -> n.Value:
        """A Value for an operand: Values pass through, literals become constants."""
        if isinstance(x, n.Value):
            return x
        if isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)):
            return self.const(x, dtype, loc=loc)
        raise self._error(f"expected an IR value or an int/float/bool literal, got {type(x).__name__} {x!r}", loc)

    # ------------------------------------------------------------------------------------------------
    # kernel signature
    # ------------------------------------------------------------------------------------------------

    def tensor_param(self, name: str, dtype: Any, shape: Sequence[Dim | str], intent: str | None = None,
                     layout: Any = None, *, loc: SourceLocation | None = None) -> n.Value:
        """Declare a global tensor parameter of logical ``shape`` (ints, names or size expressions).
        ``intent`` is ``in``/``out``/``inout``, or None to infer it from use at :meth:`build`."""
        if intent is not None and intent not in n.INTENTS:
            raise self._error(f"intent of {name!r} must be one of {n.INTENTS}, got {intent!r}", loc)
        self._claim(name, "parameter")
        try:
            dims = tuple(as_dim(d) for d in shape)
            t = TileType(canonical_dtype(dtype), dims, "global", layout)
        except CompileError as e:
            raise self._error(f"parameter {name!r}: {e.message}", loc) from None
        except Exception as e:
            raise self._error(f"parameter {name!r}: {e}", loc) from None
        v = n.Value(name, t)
        self._params.append(n.TensorParam(v, intent or "inout"))
        self._declared_intent[name] = intent
        return v

    def scalar_param(self, name: str, dtype: Any, *, loc: SourceLocation | None = None) -> n.Value:
        """Declare a run-time scalar parameter (e.g. ``sm_scale: f32``)."""
        self._claim(name, "parameter")
        v = n.Value(name, TileType(canonical_dtype(dtype), ()))
        if is_code(v.dtype):
            raise self._error(f"scalar parameter {name!r} cannot have low-bit code type {v.dtype}", loc)
        self._params.append(n.ScalarParam(v))
        return v

    def constant(self, name: str, value: int | float | bool | None = None, dtype: Any = None) -> None:
        """Declare a compile-time constant (``value`` None: to be specialized later)."""
        if any(c.name == name for c in self._constants):
            raise self._error(f"constant {name!r} is declared twice")
        if dtype is None:
            dtype = "bool" if isinstance(value, bool) else "float32" if isinstance(value, float) else "int32"
        dtype = canonical_dtype(dtype)
        if value is not None:
            why = literal_fits(value, dtype)
            if why:
                raise self._error(f"constant {name!r}: {why}")
        self._constants.append(n.ConstParam(name, value, dtype))

    def set_grid(self, *sizes: Dim | str) -> None:
        """The launch grid: 1-3 sizes (ints, names or expressions such as ``"cdiv(M, 16)"``)."""
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = tuple(sizes[0])
        if not 1 <= len(sizes) <= 3:
            raise self._error(f"the grid has 1 to 3 dimensions, got {len(sizes)}")
        self._grid = tuple(as_dim(s) for s in sizes)

    # ------------------------------------------------------------------------------------------------
    # scalars and constructors
    # ------------------------------------------------------------------------------------------------

    def const(self, value: int | float | bool, dtype: Any = None, *, name: str | None = None,
              loc: SourceLocation | None = None) -> n.Value:
        """A scalar constant; dtype defaults to i32 / f32 / bool by the literal's Python type."""
        dtype = canonical_dtype(dtype) if dtype is not None else literal_dtype(value)
        value = _coerce_literal(value, dtype)
        key = (type(value), repr(value), dtype)   # repr: keeps -0.0 apart from 0.0
        if name is None:
            for cache in reversed(self._const_cache):
                if key in cache:
                    return cache[key]
        r = self.fresh(name or "c", TileType(dtype, ()))
        self.emit(n.Constant(r, value, loc=self._loc(loc)))
        if name is None:
            self._const_cache[-1][key] = r
        return r

    def program_id(self, axis: int, *, name: str | None = None, loc=None) -> n.Value:
        r = self.fresh(name or f"pid{axis}", TileType("int32", ()))
        self.emit(n.ProgramId(r, axis, loc=self._loc(loc)))
        return r

    def num_programs(self, axis: int, *, name: str | None = None, loc=None) -> n.Value:
        r = self.fresh(name or f"nprog{axis}", TileType("int32", ()))
        self.emit(n.NumPrograms(r, axis, loc=self._loc(loc)))
        return r

    def symbol(self, sym: str, *, name: str | None = None, loc=None) -> n.Value:
        """The run-time value of a shape symbol or constant (the constant's dtype, else i32)."""
        dtype = next((c.dtype for c in self._constants if c.name == sym), "int32")
        r = self.fresh(name or sym, TileType(dtype, ()))
        self.emit(n.SymbolRef(r, sym, loc=self._loc(loc)))
        return r

    def full(self, shape: Sequence[int], value: Operand, dtype: Any = None, *, layout=None,
             name: str | None = None, loc=None) -> n.Value:
        """A register tile filled with ``value`` (a literal, or a scalar Value which is broadcast)."""
        shape = _shape(shape)
        if isinstance(value, n.Value):
            if dtype is not None:
                value = self.cast(value, dtype, loc=loc)
            return self.broadcast_to(value, shape, layout=layout, name=name, loc=loc)
        dtype = canonical_dtype(dtype) if dtype is not None else literal_dtype(value)
        value = _coerce_literal(value, dtype)
        r = self.fresh(name or "full", TileType(dtype, shape, "register", layout))
        self.emit(n.Full(r, value, loc=self._loc(loc)))
        return r

    def zeros(self, shape: Sequence[int], dtype: Any = "float32", **kw) -> n.Value:
        dtype = canonical_dtype(dtype)
        zero = False if dtype == "bool" else 0.0 if is_float(dtype) else 0
        kw.setdefault("name", "zeros")
        return self.full(shape, zero, dtype, **kw)

    def arange(self, start: int, stop: int | None = None, *, name: str | None = None, loc=None) -> n.Value:
        """``arange(stop)`` or ``arange(start, stop)``: an i32 vector."""
        if stop is None:
            start, stop = 0, start
        r = self.fresh(name or "range", TileType("int32", (int(stop) - int(start),) if stop > start else (0,)))
        self.emit(n.Arange(r, int(start), int(stop), loc=self._loc(loc)))
        return r

    # ------------------------------------------------------------------------------------------------
    # memory
    # ------------------------------------------------------------------------------------------------

    def _offsets(self, offsets: Sequence[Operand], loc) -> tuple[n.Value, ...]:
        out = []
        for o in offsets:
            v = self._value(o, "int32", loc=loc)
            if v.type.is_scalar and is_int(v.dtype) and v.dtype != "int32":
                v = self.cast(v, "int32", loc=loc)
            out.append(v)
        return tuple(out)

    def _other(self, other: Operand | None, dtype: str, loc) -> n.Value | None:
        if other is None:
            return None
        v = self._value(other, dtype, loc=loc)
        if v.dtype != dtype and not is_code(v.dtype) and not is_code(dtype):
            v = self.cast(v, dtype, loc=loc)
        return v

    def load(self, tensor: n.Value, offsets: Sequence[Operand], shape: Sequence[int], mask: n.Value | None = None,
             other: Operand | None = None, layout: Any = None, checked: Sequence[bool] | None = None, *,
             name: str | None = None, loc=None) -> n.Value:
        """Load a ``shape`` tile of ``tensor`` at ``offsets`` (masked at the edges; see README)."""
        loc = self._loc(loc)
        offs = self._offsets(offsets, loc)
        shape = _shape(shape)
        if mask is not None:
            mask = self.broadcast_to(mask, shape, loc=loc)
        r = self.fresh(name or tensor.name, TileType(tensor.dtype, shape, "register", layout))
        self.emit(n.Load(r, tensor, offs, mask, self._other(other, tensor.dtype, loc),
                         _bools(checked), loc=loc))
        return r

    def store(self, tensor: n.Value, value: n.Value, offsets: Sequence[Operand], mask: n.Value | None = None,
              checked: Sequence[bool] | None = None, *, loc=None) -> None:
        """Store ``value`` (of the tensor's dtype) at ``offsets``; out-of-bounds / masked elements skip."""
        loc = self._loc(loc)
        offs = self._offsets(offsets, loc)
        if mask is not None and isinstance(value, n.Value):
            mask = self.broadcast_to(mask, value.shape, loc=loc)
        self.emit(n.Store(tensor, value, offs, mask, _bools(checked), loc=loc))

    def alloc_shared(self, dtype: Any, shape: Sequence[int], layout: Any = None, *, name: str | None = None,
                     loc=None) -> n.Value:
        r = self.fresh(name or "smem", TileType(canonical_dtype(dtype), _shape(shape), "shared", layout))
        self.emit(n.AllocShared(r, loc=self._loc(loc)))
        return r

    def shared_slice(self, src: n.Value, offsets: Sequence[Operand], shape: Sequence[int], layout: Any = None, *,
                     name: str | None = None, loc=None) -> n.Value:
        loc = self._loc(loc)
        offs = self._offsets(offsets, loc)
        r = self.fresh(name or src.name, TileType(src.dtype, _shape(shape), "shared", layout))
        self.emit(n.SharedSlice(r, src, offs, loc=loc))
        return r

    def copy_to_shared(self, dst: n.Value, tensor: n.Value, offsets: Sequence[Operand], mask: n.Value | None = None,
                       other: Operand | None = None, checked: Sequence[bool] | None = None, *, loc=None) -> None:
        loc = self._loc(loc)
        offs = self._offsets(offsets, loc)
        if mask is not None:
            mask = self.broadcast_to(mask, dst.shape, loc=loc)
        self.emit(n.CopyToShared(dst, tensor, offs, mask, self._other(other, tensor.dtype, loc),
                                 _bools(checked), loc=loc))

    def load_shared(self, src: n.Value, layout: Any = None, *, name: str | None = None, loc=None) -> n.Value:
        r = self.fresh(name or src.name, TileType(src.dtype, src.shape, "register", layout))
        self.emit(n.LoadShared(r, src, loc=self._loc(loc)))
        return r

    def store_shared(self, dst: n.Value, value: n.Value, *, loc=None) -> None:
        self.emit(n.StoreShared(dst, value, loc=self._loc(loc)))

    def barrier(self, *, loc=None) -> None:
        self.emit(n.Barrier(loc=self._loc(loc)))

    # ------------------------------------------------------------------------------------------------
    # conversions
    # ------------------------------------------------------------------------------------------------

    def view(self, x: n.Value, dtype: Any, shape: Sequence[int] | None = None, layout: Any = None, *,
             name: str | None = None, loc=None) -> n.Value:
        """Reinterpret bits; by default only the last dim changes (``[BK, BN] u4 -> [BK, BN // 8] u32``)."""
        dtype = canonical_dtype(dtype)
        if shape is None:
            if x.type.rank == 0:
                shape = ()
            else:
                bits = x.shape[-1] * nbits_of(x.dtype)
                nb = nbits_of(dtype)
                if bits % nb:
                    raise self._error(
                        f"view: a row of {x} has {x.shape[-1]} x {nbits_of(x.dtype)} = {bits} bits, "
                        f"not a multiple of {short_name(dtype)}'s {nb}", loc,
                        hint="view a tile whose last dim makes whole words, or give shape= explicitly")
                shape = tuple(x.shape[:-1]) + (bits // nb,)
        r = self.fresh(name or x.name, TileType(dtype, _shape(shape), "register", layout))
        self.emit(n.View(r, x, loc=self._loc(loc)))
        return r

    def cast(self, x: Operand, dtype: Any, *, layout: Any = None, name: str | None = None, loc=None) -> n.Value:
        """Convert to ``dtype`` (README "cast rules"); returns ``x`` itself when already of that dtype."""
        dtype = canonical_dtype(dtype)
        x = self._value(x, dtype, loc=loc)
        if x.dtype == dtype and layout is None:
            return x
        keep = layout if layout is not None else x.type.layout
        r = self.fresh(name or x.name, TileType(dtype, x.shape, "register", keep))
        self.emit(n.Cast(r, x, loc=self._loc(loc)))
        return r

    # ------------------------------------------------------------------------------------------------
    # elementwise
    # ------------------------------------------------------------------------------------------------

    def _coerce(self, xs: Sequence[Operand], op: str, loc, *, dtype: str | None = None) -> list[n.Value]:
        """Literals to constants (weak), promote to a common dtype, broadcast to a common shape."""
        partner = next((x.dtype for x in xs if isinstance(x, n.Value)), None)
        for x in xs:
            if isinstance(x, n.Value) and is_code(x.dtype):
                raise self._error(f"{op}: operand {x} has low-bit code type {x.dtype}, which has no arithmetic",
                                  loc, hint=f"cast it first: cast({x}, float16)")
        if dtype is None:
            dtypes = [x.dtype for x in xs if isinstance(x, n.Value)]
            if not dtypes:
                dtypes = [literal_dtype(x) for x in xs]
            dtype = dtypes[0]
            for d in dtypes[1:]:
                dtype = promote(dtype, d, op=op)
            for x in xs:
                if not isinstance(x, n.Value):
                    dtype = promote(dtype, literal_dtype(x, partner), op=op)
        vals = [self._value(x, literal_dtype(x, dtype) if not isinstance(x, n.Value) else None, loc=loc)
                for x in xs]
        vals = [self.cast(v, dtype, loc=loc) for v in vals]
        shape: tuple[int, ...] | None = ()
        for v in vals:
            shape = broadcast_shapes(shape, v.shape)
            if shape is None:
                raise self._error(f"{op}: shapes {', '.join(shape_str(v.shape) for v in vals)} do not broadcast", loc)
        return [self.broadcast_to(v, shape, loc=loc) for v in vals]

    def unary(self, op: str, x: Operand, *, name: str | None = None, loc=None) -> n.Value:
        """``neg abs not exp exp2 log log2 sqrt rsqrt tanh sigmoid floor ceil``; ints are converted to
        f32 for the float-only functions."""
        loc = self._loc(loc)
        x = self._value(x, loc=loc)
        if op not in n.UNARY_OPS:
            raise self._error(f"unknown unary op {op!r}", loc, hint=f"use one of {', '.join(n.UNARY_OPS)}")
        if n.UNARY_OPS[op] == ("float",) and not is_code(x.dtype) and not is_float(x.dtype):
            x = self.cast(x, "float32", loc=loc)
        r = self.fresh(name or op, TileType(x.dtype, x.shape, "register"))
        self.emit(n.Unary(r, op, x, loc=loc))
        return r

    def lookup(self, x: Operand, table: Sequence[int | float], dtype: str, *, name: str | None = None,
               loc=None) -> n.Value:
        """``table[x mod len(table)]`` per element of the integer tile ``x`` (see :class:`~.nodes.Lookup`)."""
        loc = self._loc(loc)
        x = self._value(x, loc=loc)
        r = self.fresh(name or "lookup", TileType(canonical_dtype(dtype), x.shape, "register"))
        self.emit(n.Lookup(r, x, tuple(table), loc=loc))
        return r

    def binary(self, op: str, a: Operand, b: Operand, *, name: str | None = None, loc=None) -> n.Value:
        """Elementwise binary op with promotion and broadcasting. ``div`` of ints divides in f32; shifts
        keep the left operand's dtype."""
        loc = self._loc(loc)
        if op not in n.BINARY_OPS:
            raise self._error(f"unknown binary op {op!r}", loc, hint=f"use one of {', '.join(n.BINARY_OPS)}")
        dtype = None
        if op in ("shl", "shr") and isinstance(a, n.Value):
            dtype = a.dtype
        a, b = self._coerce([a, b], op, loc, dtype=dtype)
        if op == "div" and not is_float(a.dtype):
            a, b = self.cast(a, "float32", loc=loc), self.cast(b, "float32", loc=loc)
        rd = "bool" if op in n.COMPARE_OPS else a.dtype
        r = self.fresh(name or op, TileType(rd, a.shape, "register"))
        self.emit(n.Binary(r, op, a, b, loc=loc))
        return r

    def where(self, cond: n.Value, x: Operand, y: Operand, *, name: str | None = None, loc=None) -> n.Value:
        """``cond ? x : y`` (x, y promoted; all three broadcast)."""
        loc = self._loc(loc)
        if not isinstance(cond, n.Value) or cond.dtype != "bool":
            what = cond.dtype if isinstance(cond, n.Value) else type(cond).__name__
            raise self._error(f"where: the condition must be a bool tile, got {what}", loc,
                              hint="compare first, e.g. x > 0")
        if isinstance(x, n.Value) and isinstance(y, n.Value) and x.dtype == y.dtype and is_code(x.dtype):
            xs = [x, y]  # selecting codes is fine; no promotion
        else:
            xs = self._coerce([x, y], "where", loc)
        shape = broadcast_shapes(cond.shape, broadcast_shapes(xs[0].shape, xs[1].shape) or ())
        if shape is None or broadcast_shapes(xs[0].shape, xs[1].shape) is None:
            raise self._error(f"where: shapes {shape_str(cond.shape)}, {shape_str(xs[0].shape)}, "
                              f"{shape_str(xs[1].shape)} do not broadcast", loc)
        cond = self.broadcast_to(cond, shape, loc=loc)
        x, y = (self.broadcast_to(v, shape, loc=loc) for v in xs)
        r = self.fresh(name or "where", TileType(x.dtype, shape, "register"))
        self.emit(n.Where(r, cond, x, y, loc=loc))
        return r

    # ------------------------------------------------------------------------------------------------
    # dot, reductions, shapes
    # ------------------------------------------------------------------------------------------------

    def dot(self, a: n.Value, b: n.Value, acc: n.Value | None = None, acc_dtype: Any = None, *,
            name: str | None = None, loc=None) -> n.Value:
        """``acc + a @ b``; mixed native input dtypes are promoted; acc defaults to zeros (f32 / i32)."""
        loc = self._loc(loc)
        if a.dtype != b.dtype and not is_code(a.dtype) and not is_code(b.dtype):
            common = promote(a.dtype, b.dtype, op="dot")
            a, b = self.cast(a, common, loc=loc), self.cast(b, common, loc=loc)
        if acc is None:
            if a.type.rank != 2 or b.type.rank != 2:
                raise self._error(f"dot needs 2-D operands, got {shape_str(a.shape)} and {shape_str(b.shape)}", loc)
            want = canonical_dtype(acc_dtype) if acc_dtype is not None else DOT_ACC.get(a.dtype)
            if want is None:
                raise self._error(f"dot inputs must be f16, bf16, f32, i8 or u8, got {short_name(a.dtype)}", loc,
                                  hint="cast low-bit codes first: cast(w, float16)")
            acc = self.zeros((a.shape[0], b.shape[1]), want, loc=loc, name="acc")
        r = self.fresh(name or "dot", TileType(acc.dtype, acc.shape, "register"))
        self.emit(n.Dot(r, a, b, acc, loc=loc))
        return r

    def reduce(self, op: str, x: n.Value, axis: int, keepdims: bool = False, *, name: str | None = None,
               loc=None) -> n.Value:
        """``sum``/``max``/``min`` over ``axis`` (negative axes count from the end)."""
        loc = self._loc(loc)
        rank = x.type.rank
        if not isinstance(axis, int) or not -rank <= axis < rank:
            raise self._error(f"{op}: axis {axis!r} out of range for {x} of shape {shape_str(x.shape)}", loc)
        axis %= rank
        shape = list(x.shape)
        if keepdims:
            shape[axis] = 1
        else:
            del shape[axis]
        r = self.fresh(name or op, TileType(x.dtype, tuple(shape), "register"))
        self.emit(n.Reduce(r, op, x, axis, bool(keepdims), loc=loc))
        return r

    def broadcast_to(self, x: Operand, shape: Sequence[int], *, layout: Any = None, name: str | None = None,
                     loc=None) -> n.Value:
        """``np.broadcast_to`` (returns x itself when the shape already matches)."""
        x = self._value(x, loc=loc)
        shape = _shape(shape)
        if tuple(x.shape) == shape and layout is None:
            return x
        r = self.fresh(name or x.name, TileType(x.dtype, shape, "register", layout))
        self.emit(n.Broadcast(r, x, loc=self._loc(loc)))
        return r

    def reshape(self, x: n.Value, shape: Sequence[int], *, layout: Any = None, name: str | None = None,
                loc=None) -> n.Value:
        r = self.fresh(name or x.name, TileType(x.dtype, _shape(shape), "register", layout))
        self.emit(n.Reshape(r, x, loc=self._loc(loc)))
        return r

    def permute(self, x: n.Value, perm: Sequence[int], *, name: str | None = None, loc=None) -> n.Value:
        perm = tuple(int(p) for p in perm)
        shape = tuple(x.shape[p] for p in perm) if sorted(perm) == list(range(x.type.rank)) else x.shape
        r = self.fresh(name or x.name, TileType(x.dtype, shape, "register"))
        self.emit(n.Permute(r, x, perm, loc=self._loc(loc)))
        return r

    def transpose(self, x: n.Value, *, name: str | None = None, loc=None) -> n.Value:
        """Swap the last two axes."""
        rank = x.type.rank
        if rank < 2:
            raise self._error(f"transpose needs rank >= 2, got {x} of shape {shape_str(x.shape)}", loc)
        perm = list(range(rank))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return self.permute(x, perm, name=name, loc=loc)

    def expand_dims(self, x: n.Value, axis: int, *, name: str | None = None, loc=None) -> n.Value:
        rank = x.type.rank
        if isinstance(axis, int) and -rank - 1 <= axis < 0:
            axis += rank + 1
        shape = list(x.shape)
        shape.insert(axis if isinstance(axis, int) and 0 <= axis <= rank else 0, 1)
        r = self.fresh(name or x.name, TileType(x.dtype, tuple(shape), "register"))
        self.emit(n.ExpandDims(r, x, axis, loc=self._loc(loc)))
        return r

    # ------------------------------------------------------------------------------------------------
    # control flow
    # ------------------------------------------------------------------------------------------------

    def begin_for(self, start: Operand, stop: Operand, step: Operand = 1, inits: Sequence[n.Value] = (),
                  names: Sequence[str] | None = None, *, iv_name: str = "i", loc=None) -> ForScope:
        """Open ``for iv in range(start, stop, step)`` carrying ``inits``; returns the scope whose
        ``iv`` and ``args`` are used in the body. Close with :meth:`end_for`."""
        loc = self._loc(loc)
        bounds = self._offsets([start, stop, step], loc)
        inits = tuple(self._value(v, loc=loc) for v in inits)
        names = tuple(names) if names is not None else tuple(v.name for v in inits)
        if len(names) != len(inits):
            raise self._error(f"for: {len(inits)} carried values but {len(names)} names", loc)
        iv = self.fresh(iv_name, TileType("int32", ()))
        args = tuple(self.fresh(nm, v.type) for nm, v in zip(names, inits))
        scope = ForScope(iv, args, bounds[0], bounds[1], bounds[2], inits, names, loc)
        self._scopes.append(scope)
        self._const_cache.append({})
        return scope

    def end_for(self, yields: Sequence[Operand] = (), *, loc=None) -> tuple[n.Value, ...]:
        """Close the innermost ``for``; ``yields`` are the next iteration's carried values. Returns the
        loop's results (one per carried value)."""
        if not self._scopes or not isinstance(self._scopes[-1], ForScope):
            raise self._error("end_for without an open for", loc)
        scope: ForScope = self._scopes[-1]
        yloc = self._loc(loc)
        ys = tuple(self._value(v, a.dtype, loc=yloc) for v, a in zip(yields, scope.args)) if len(yields) == len(
            scope.args) else tuple(yields)
        if len(ys) != len(scope.args):
            raise self._error(f"for: the body yields {len(ys)} values but {len(scope.args)} are carried "
                              f"({', '.join(scope.names)})", yloc)
        for nm, y, a in zip(scope.names, ys, scope.args):
            if y.type != a.type:
                raise self._error(f"for: loop-carried value {nm!r} enters the loop as {a.type} but the body "
                                  f"yields {y.type}", yloc, hint="cast it so both have the same type")
        scope.body.append(n.Yield(ys, loc=yloc))
        self._scopes.pop()
        self._const_cache.pop()
        results = tuple(self.fresh(nm, a.type) for nm, a in zip(scope.names, scope.args))
        self.emit(n.For(results, scope.iv, scope.start, scope.stop, scope.step, scope.args, scope.inits,
                        tuple(scope.body), loc=scope.loc))
        scope.results = results
        return results

    @contextlib.contextmanager
    def for_range(self, start: Operand, stop: Operand, step: Operand = 1, inits: Sequence[n.Value] = (),
                  names: Sequence[str] | None = None, *, iv_name: str = "i", loc=None) -> Iterator[ForScope]:
        """``with kb.for_range(0, K, 64, [acc]) as loop: ... loop.yield_([acc2])``; then ``loop.results``."""
        scope = self.begin_for(start, stop, step, inits, names, iv_name=iv_name, loc=loc)
        yield scope
        if scope.pending_yields is None and scope.args:
            raise self._error("for_range: the body carries values but never called loop.yield_(...)", scope.loc)
        self.end_for(scope.pending_yields or ())

    def begin_if(self, cond: n.Value, *, loc=None) -> IfScope:
        """Open ``if cond`` (a bool scalar). Then :meth:`begin_else` (optional) and :meth:`end_if`."""
        loc = self._loc(loc)
        if not isinstance(cond, n.Value) or cond.type != TileType("bool", ()):
            what = cond.type if isinstance(cond, n.Value) else repr(cond)
            raise self._error(f"if: the condition must be a bool scalar, got {what}", loc,
                              hint="compare scalars, e.g. k < K")
        scope = IfScope(cond, loc)
        self._scopes.append(scope)
        self._const_cache.append({})
        return scope

    def begin_else(self, yields: Sequence[Operand] = (), *, loc=None) -> None:
        """Close the then-branch (yielding ``yields``) and open the else-branch."""
        if not self._scopes or not isinstance(self._scopes[-1], IfScope) or self._scopes[-1].else_body is not None:
            raise self._error("begin_else without an open if", loc)
        scope: IfScope = self._scopes[-1]
        ys = tuple(self._value(v, loc=self._loc(loc)) for v in yields)
        scope.then_body.append(n.Yield(ys, loc=self._loc(loc)))
        scope.then_yields = ys
        scope.else_body = []
        self._const_cache[-1] = {}

    def end_if(self, yields: Sequence[Operand] = (), *, names: Sequence[str] | None = None,
               loc=None) -> tuple[n.Value, ...]:
        """Close the if; ``yields`` end the else-branch (or the then-branch when there is no else, which
        then cannot yield values). Returns the results, typed like the yields."""
        if not self._scopes or not isinstance(self._scopes[-1], IfScope):
            raise self._error("end_if without an open if", loc)
        scope: IfScope = self._scopes[-1]
        yloc = self._loc(loc)
        if scope.else_body is None:
            if yields:
                raise self._error("if without else cannot yield values", yloc,
                                  hint="add an else branch yielding the values' previous versions")
            scope.then_body.append(n.Yield((), loc=yloc))
            scope.then_yields = ()
            scope.else_body = []
            ys: tuple[n.Value, ...] = ()
        else:
            then_ys = scope.then_yields or ()
            ys = tuple(self._value(v, then_ys[i].dtype if i < len(then_ys) else None, loc=yloc)
                       for i, v in enumerate(yields))
        then_ys = scope.then_yields or ()
        if len(ys) != len(then_ys):
            raise self._error(f"if: the then-branch yields {len(then_ys)} values, the else-branch {len(ys)}", yloc)
        for i, (a, b) in enumerate(zip(then_ys, ys)):
            if a.type != b.type:
                raise self._error(f"if: result {i} is {a.type} in the then-branch but {b.type} in the else-branch",
                                  yloc, hint="cast so both branches yield the same type")
        scope.else_body.append(n.Yield(ys, loc=yloc))
        self._scopes.pop()
        self._const_cache.pop()
        names = list(names) if names is not None else [v.name for v in then_ys]
        results = tuple(self.fresh(nm, v.type) for nm, v in zip(names, then_ys))
        self.emit(n.If(results, scope.cond, tuple(scope.then_body), tuple(scope.else_body), loc=scope.loc))
        scope.results = results
        return results

    # ------------------------------------------------------------------------------------------------
    # finish
    # ------------------------------------------------------------------------------------------------

    def build(self, verify: bool = True) -> n.Kernel:
        """The kernel (verified unless ``verify=False``). Undeclared intents are inferred: stored and
        loaded -> inout, only stored -> out, otherwise in."""
        if self._scopes:
            kind = "for" if isinstance(self._scopes[-1], ForScope) else "if"
            raise self._error(f"build: a {kind} is still open", self._scopes[-1].loc)
        loaded, stored = set(), set()
        for ins in n.walk(tuple(self._top)):
            if isinstance(ins, (n.Load, n.CopyToShared)):
                loaded.add(ins.tensor.name)
            elif isinstance(ins, n.Store):
                stored.add(ins.tensor.name)
        params = []
        for p in self._params:
            if isinstance(p, n.TensorParam) and self._declared_intent.get(p.name) is None:
                intent = ("inout" if p.name in loaded else "out") if p.name in stored else "in"
                p = n.TensorParam(p.value, intent)
            params.append(p)
        k = n.Kernel(self.name, tuple(params), tuple(self._constants), self._grid or (1,), tuple(self._top),
                     loc=self.kernel_loc)
        if verify:
            from .verifier import verify as _verify

            _verify(k)
        return k


def _make_binary(op: str):
    def method(self: KernelBuilder, a: Operand, b: Operand, *, name: str | None = None, loc=None) -> n.Value:
        return self.binary(op, a, b, name=name, loc=loc)

    method.__name__ = op
    method.__doc__ = f"``binary({op!r}, a, b)``: promotion, broadcasting, literals (see :meth:`binary`)."
    return method


def _make_unary(op: str):
    def method(self: KernelBuilder, x: Operand, *, name: str | None = None, loc=None) -> n.Value:
        return self.unary(op, x, name=name, loc=loc)

    method.__name__ = op
    method.__doc__ = f"``unary({op!r}, x)``."
    return method


def _make_reduce(op: str):
    def method(self: KernelBuilder, x: n.Value, axis: int, keepdims: bool = False, *, name: str | None = None,
               loc=None) -> n.Value:
        return self.reduce(op, x, axis, keepdims, name=name, loc=loc)

    method.__name__ = op
    method.__doc__ = f"``reduce({op!r}, x, axis, keepdims)``."
    return method


# kb.add(a, b), kb.lt(a, b), kb.and_(a, b), kb.exp(x), kb.not_(x), kb.sum(x, axis), ...
for _op in n.BINARY_OPS:
    setattr(KernelBuilder, _op + "_" if _op in ("and", "or") else _op, _make_binary(_op))
for _op in n.UNARY_OPS:
    setattr(KernelBuilder, _op + "_" if _op == "not" else _op, _make_unary(_op))
for _op in n.REDUCE_OPS:
    setattr(KernelBuilder, _op, _make_reduce(_op))


def _with_loc(ins: n.Instr, loc: SourceLocation) -> n.Instr:
    from dataclasses import replace

    return replace(ins, loc=loc)


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise CompileError(f"tile sizes must be ints, got {d!r} in {list(shape)!r}",
                               hint="tile shapes are compile-time constants")
        out.append(int(d))
    return tuple(out)


def _bools(checked: Sequence[bool] | None) -> tuple[bool, ...] | None:
    return None if checked is None else tuple(bool(c) for c in checked)


def _coerce_literal(value: Any, dtype: str) -> int | float | bool:
    """The literal as the Python type the dtype's constants hold (bool / int / float)."""
    kind = kind_of(dtype) if not is_code(dtype) else None
    if kind == "bool":
        return bool(value) if isinstance(value, (bool, np.bool_)) else value
    if kind in ("int", "uint"):
        if isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, np.integer):
            return int(value)
        return value
    if kind == "float":
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        return float(value) if isinstance(value, (int, float, np.integer, np.floating)) else value
    return value


__all__ = ["KernelBuilder", "ForScope", "IfScope"]
