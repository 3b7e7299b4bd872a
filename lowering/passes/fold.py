"""The ``fold`` pass: constant folding and algebraic identities, with the IR's exact semantics.

Folding evaluates instructions whose operands are constants (``const`` scalars and ``full`` tiles, which
are uniform) with the interpreter's own numerics (:mod:`lowbit.ir.numerics`): integer ops wrap, ``floordiv``
and ``mod`` are floor operations, casts round to nearest even and saturate exactly as the interpreter does.
Nothing that can fault is folded (integer division by zero, out-of-range shifts stay in the program and fault
at run time), nor anything whose numpy result might differ between a scalar and a vector evaluation
(``exp log log2 exp2 tanh sigmoid`` and float sums), nor a NaN result.

Identities (``x`` any value, types must match exactly, layouts included):

* ints: ``x + 0``, ``x - 0``, ``x * 1``, ``x // 1``, ``x | 0``, ``x ^ 0``, ``x & -1``, ``x << 0``,
  ``x >> 0`` -> ``x``; ``x * 0``, ``x & 0``, ``x % 1``, ``x - x``, ``x ^ x`` -> ``0``;
* floats: ``x * 1``, ``x / 1``, ``x - 0.0``, ``x + (-0.0)`` -> ``x`` (``x + 0.0`` is *not* ``x``: -0.0);
* bool: ``x & true``, ``x | false`` -> ``x``; ``x & false`` -> false, ``x | true`` -> true;
* ``minimum(x, x)``, ``maximum(x, x)``, ``x & x``, ``x | x``, ``where(c, x, x)``, ``cast`` / ``broadcast`` /
  ``reshape`` / ``permute`` to the operand's own type -> ``x``; ``x == x`` (ints) -> true;
* ``broadcast``, ``reshape``, ``expand_dims``, ``permute``, ``cast`` of a uniform tile -> ``full``;
* ``lookup`` of a constant index -> the entry; ``add`` / ``sub`` / ``mul`` of a ``lookup`` and a uniform constant
  -> one ``lookup`` of the table with the operation applied to every entry (with the interpreter's numerics,
  so each entry is exactly what the two instructions computed), e.g. the implicit zero of a decoded code;
* ``if`` on a constant condition -> the chosen branch, inlined; ``for`` with a constant trip count of 0
  -> its inits, of 1 -> its body, inlined.

Results keep their names and types: a folded instruction becomes ``const`` / ``full`` defining the same
value. Values that become unused are left for ``dce``.

>>> from lowbit.ir import KernelBuilder, print_kernel
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "i32", ["N"]); kb.set_grid(1)
>>> t = kb.load(x, [0], [4]); kb.store(x, kb.add(kb.mul(t, kb.add(kb.const(0), 1)), 0), [0])
>>> from lowbit.lowering.passes.manager import PassContext
>>> from lowbit.lowering.target import parse_target
>>> print(print_kernel(fold(kb.build(), PassContext(parse_target("tvm:llvm")))).splitlines()[-2])
  store(%x, %x.1, [%c])
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from lowbit.ir import nodes as n
from lowbit.ir import numerics as num
from lowbit.ir.numerics import InterpreterError
from lowbit.ir.types import is_native, kind_of, nbits_of, numpy_dtype

from .body_rewriter import BodyRewriter
from .manager import PassContext, register_pass

#: unary ops whose numpy result does not depend on how it is evaluated (correctly rounded or exact)
_EXACT_UNARY = ("neg", "abs", "not", "floor", "ceil", "sqrt")


def python_literal(value: np.ndarray, dtype: str):
    """A 0-d array of ``dtype`` as the Python literal that ``const``/``full`` takes (None when the value
    cannot be written back exactly, e.g. NaN)."""
    kind = kind_of(dtype)
    if kind == "bool":
        return bool(value)
    if kind in ("int", "uint"):
        return int(value)
    f = float(value)
    if np.isnan(f):
        return None
    back = num.literal(f, dtype)
    if back.tobytes() != np.asarray(value, dtype=numpy_dtype(dtype)).tobytes():  # pragma: no cover - safety
        return None
    return f


def _equals(value: Optional[np.ndarray], x, *, negative_zero: Optional[bool] = None) -> bool:
    if value is None:
        return False
    v = np.asarray(value)
    if v.dtype == np.bool_:
        return isinstance(x, bool) and bool(v) == x
    if kind_of_array(v) == "float":
        f = float(v)
        if np.isnan(f) or f != x:
            return False
        return negative_zero is None or bool(np.signbit(f)) == negative_zero
    return int(v) == x


def kind_of_array(v: np.ndarray) -> str:
    return "float" if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else "int"


def _all_ones(dtype: str) -> int:
    return -1 if kind_of(dtype) == "int" else (1 << nbits_of(dtype)) - 1


class _Folder(BodyRewriter):
    def __init__(self) -> None:
        super().__init__()
        self.known: dict[str, np.ndarray] = {}  # value name -> its (uniform) value as a 0-d array
        self.literal: dict[str, object] = {}    # value name -> the literal it was written with (const / full)
        self.lookups: dict[str, n.Lookup] = {}  # value name -> the lookup defining it

    # ------------------------------------------------------------------ helpers
    def value_of(self, v: n.Value) -> Optional[np.ndarray]:
        return self.known.get(v.name)

    def constant(self, result: n.Value, value: np.ndarray, ins: n.Instr, written: object = None
                 ) -> Optional[list[n.Instr]]:
        """``result`` defined as the constant ``value`` (const for scalars, full for tiles); ``written`` is
        a literal to prefer when it denotes the same value (``-1e+30`` rather than its f32 rounding)."""
        if not is_native(result.dtype) or result.type.scope != "register":
            return None
        lit = python_literal(value, result.dtype)
        if lit is None:
            return None
        if written is not None and type(written) is type(lit) and \
                num.literal(written, result.dtype).tobytes() == num.literal(lit, result.dtype).tobytes():
            lit = written
        self.known[result.name] = num.literal(lit, result.dtype)
        self.literal[result.name] = lit
        if result.type.shape == ():
            return [n.Constant(result, lit, loc=ins.loc)]
        return [n.Full(result, lit, loc=ins.loc)]

    def same(self, result: n.Value, x: n.Value) -> Optional[list[n.Instr]]:
        """``result`` replaced by ``x`` when the types agree exactly."""
        if result.type != x.type:
            return None
        self.replace_value(result, x)
        return []

    def zero(self, result: n.Value, ins: n.Instr) -> Optional[list[n.Instr]]:
        return self.constant(result, num.literal(False if result.dtype == "bool" else 0, result.dtype), ins)

    # ------------------------------------------------------------------ visiting
    def visit(self, ins: n.Instr) -> list[n.Instr]:
        method = getattr(self, "fold_" + type(ins).__name__, None)
        out = method(ins) if method is not None else None
        if out is not None:
            return out
        ins = self.default(ins)
        if isinstance(ins, (n.Constant, n.Full)) and is_native(ins.result.dtype):
            self.known[ins.result.name] = num.literal(ins.value, ins.result.dtype)
            self.literal[ins.result.name] = ins.value
        if isinstance(ins, n.Lookup):
            self.lookups[ins.result.name] = ins
        return [ins]

    def fold_Lookup(self, ins: n.Lookup) -> Optional[list[n.Instr]]:
        k = self.value_of(ins.x)
        if k is None:
            return None
        return self.constant(ins.result, num.lookup(k, ins.x.dtype, ins.table, ins.result.dtype), ins)

    def _fold_into_table(self, ins: n.Binary) -> Optional[list[n.Instr]]:
        """``lookup(i, T) op c`` / ``c op lookup(i, T)`` -> ``lookup(i, T op c)`` (add, sub, mul; c uniform)."""
        if ins.op not in ("add", "sub", "mul"):
            return None
        for tab, other, table_first in ((ins.lhs, ins.rhs, True), (ins.rhs, ins.lhs, False)):
            look, k = self.lookups.get(tab.name), self.value_of(other)
            if look is None or k is None or look.result.type != ins.result.type:
                continue
            values = num.lookup(np.arange(len(look.table)), "int32", look.table, tab.dtype)
            try:
                with np.errstate(all="ignore"):
                    new = num.binary(ins.op, values, np.broadcast_to(k, values.shape), tab.dtype) if table_first \
                        else num.binary(ins.op, np.broadcast_to(k, values.shape), values, tab.dtype)
            except InterpreterError:
                return None
            table = tuple(python_literal(np.asarray(v), tab.dtype) for v in new)
            if any(t is None for t in table) or any(
                    num.literal(t, tab.dtype).tobytes() != np.asarray(v).tobytes() for t, v in zip(table, new)):
                return None       # an entry the table cannot hold exactly (NaN payloads, say)
            out = n.Lookup(ins.result, look.x, table, loc=ins.loc)
            self.lookups[ins.result.name] = out
            return [out]
        return None

    def fold_Binary(self, ins: n.Binary) -> Optional[list[n.Instr]]:
        a, b, r, op = ins.lhs, ins.rhs, ins.result, ins.op
        ka, kb = self.value_of(a), self.value_of(b)
        dtype = a.dtype
        if ka is not None and kb is not None:
            try:
                value = num.binary(op, ka, kb, dtype)
            except InterpreterError:
                return None  # faults at run time: keep it
            return self.constant(r, np.asarray(value), ins)
        folded = self._fold_into_table(ins)
        if folded is not None:
            return folded
        kind = kind_of(dtype)
        same = a == b
        if kind in ("int", "uint"):
            ones = _all_ones(dtype)
            if op in ("add", "sub", "or", "xor", "shl", "shr") and _equals(kb, 0):
                return self.same(r, a)
            if op in ("add", "or", "xor") and _equals(ka, 0):
                return self.same(r, b)
            if op in ("mul", "floordiv") and _equals(kb, 1) or op == "and" and _equals(kb, ones):
                return self.same(r, a)
            if op == "mul" and _equals(ka, 1) or op == "and" and _equals(ka, ones):
                return self.same(r, b)
            if op in ("mul", "and") and (_equals(ka, 0) or _equals(kb, 0)) or op == "mod" and _equals(kb, 1):
                return self.zero(r, ins)
            if same and op in ("sub", "xor"):
                return self.zero(r, ins)
            if same and op in ("eq", "le", "ge", "ne", "lt", "gt"):
                return self.constant(r, np.asarray(op in ("eq", "le", "ge")), ins)
        elif kind == "float":
            if op == "mul" and _equals(kb, 1.0) or op == "div" and _equals(kb, 1.0):
                return self.same(r, a)
            if op == "mul" and _equals(ka, 1.0):
                return self.same(r, b)
            if op == "sub" and _equals(kb, 0.0, negative_zero=False) or \
                    op == "add" and _equals(kb, 0.0, negative_zero=True):
                return self.same(r, a)
            if op == "add" and _equals(ka, 0.0, negative_zero=True):
                return self.same(r, b)
        elif kind == "bool":
            if op == "and" and _equals(kb, True) or op == "or" and _equals(kb, False) or \
                    op == "xor" and _equals(kb, False):
                return self.same(r, a)
            if op == "and" and _equals(ka, True) or op == "or" and _equals(ka, False) or \
                    op == "xor" and _equals(ka, False):
                return self.same(r, b)
            if op == "and" and (_equals(ka, False) or _equals(kb, False)):
                return self.constant(r, np.asarray(False), ins)
            if op == "or" and (_equals(ka, True) or _equals(kb, True)):
                return self.constant(r, np.asarray(True), ins)
            if same and op in ("eq", "ne"):
                return self.constant(r, np.asarray(op == "eq"), ins)
        if same and op in ("minimum", "maximum", "and", "or"):
            return self.same(r, a)
        return None

    def fold_Unary(self, ins: n.Unary) -> Optional[list[n.Instr]]:
        k = self.value_of(ins.x)
        if k is None or ins.op not in _EXACT_UNARY:
            return None
        try:
            return self.constant(ins.result, np.asarray(num.unary(ins.op, k, ins.x.dtype)), ins)
        except InterpreterError:  # pragma: no cover - unary ops do not fault
            return None

    def fold_Cast(self, ins: n.Cast) -> Optional[list[n.Instr]]:
        if ins.x.type == ins.result.type:
            return self.same(ins.result, ins.x)
        k = self.value_of(ins.x)
        if k is None or not is_native(ins.result.dtype):
            return None
        return self.constant(ins.result, np.asarray(num.cast(k, ins.x.dtype, ins.result.dtype)), ins)

    def fold_Where(self, ins: n.Where) -> Optional[list[n.Instr]]:
        if ins.x == ins.y:
            return self.same(ins.result, ins.x)
        c = self.value_of(ins.cond)
        if c is None:
            return None
        return self.same(ins.result, ins.x if bool(c) else ins.y)

    def _shape_op(self, ins) -> Optional[list[n.Instr]]:
        # Same type means same values for broadcast/reshape/expand_dims, but not for a permute: the transpose of
        # a square tile has the tile's type and other values. Only the identity permutation is a no-op.
        identity = not isinstance(ins, n.Permute) or tuple(ins.perm) == tuple(range(len(ins.perm)))
        if identity and ins.x.type == ins.result.type:
            return self.same(ins.result, ins.x)
        k = self.value_of(ins.x)
        if k is None:
            return None
        written = self.literal.get(ins.x.name) if ins.x.dtype == ins.result.dtype else None
        return self.constant(ins.result, k, ins, written)

    fold_Broadcast = _shape_op
    fold_Reshape = _shape_op
    fold_ExpandDims = _shape_op
    fold_Permute = _shape_op

    def fold_Reduce(self, ins: n.Reduce) -> Optional[list[n.Instr]]:
        k = self.value_of(ins.x)
        if k is None:
            return None
        if ins.op in ("max", "min"):
            return self.constant(ins.result, k, ins)
        if kind_of(ins.x.dtype) in ("int", "uint"):  # integer sums are exact (wrapping) in any order
            full = np.full(ins.x.type.shape, k, dtype=numpy_dtype(ins.x.dtype))
            value = num.reduce("sum", full, ins.x.dtype, ins.axis, ins.keepdims)
            return self.constant(ins.result, np.asarray(value).reshape(-1)[0], ins)
        return None

    def fold_If(self, ins: n.If) -> Optional[list[n.Instr]]:
        c = self.value_of(ins.cond)
        if c is None:
            return None
        body = self.block(ins.then_body if bool(c) else ins.else_body)
        for r, y in zip(ins.results, body[-1].values):
            self.replace_value(r, y)
        return list(body[:-1])

    def fold_For(self, ins: n.For) -> Optional[list[n.Instr]]:
        bounds = [self.value_of(v) for v in (ins.start, ins.stop, ins.step)]
        if any(b is None for b in bounds):
            return None
        start, stop, step = (int(b) for b in bounds)
        if step <= 0:
            return None  # faults at run time
        trips = len(range(start, stop, step))
        if trips == 0:
            for r, init in zip(ins.results, ins.inits):
                self.replace_value(r, init)
            return []
        if trips == 1:
            self.replace_value(ins.iv, ins.start)
            for a, init in zip(ins.iter_args, ins.inits):
                self.replace_value(a, init)
            body = self.block(ins.body)
            for r, y in zip(ins.results, body[-1].values):
                self.replace_value(r, y)
            return list(body[:-1])
        return None


@register_pass("fold", "constant folding and algebraic identities with the interpreter's exact numerics; "
                       "constant if/for inlined")
def fold(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    return _Folder().run(kernel)


__all__ = ["fold", "python_literal"]
