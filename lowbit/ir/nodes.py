"""The tile IR's node definitions: values, instructions, parameters and kernels (frozen dataclasses).

SSA form: every :class:`Value` is defined exactly once (by an instruction result, a loop's induction
variable or carried argument, or a kernel parameter) and its name is unique in the kernel. Structured
control flow (:class:`For`, :class:`If`) carries values across iterations / out of branches with explicit
``yield``. Shared memory is the one mutable thing: a shared tile value names a buffer that
``copy_to_shared`` / ``store_shared`` write and ``load_shared`` reads, in program order.

Each instruction class names its operand fields in ``OPERANDS`` (Values, optional Values or tuples of
Values), its result in ``result`` (or ``results`` for For/If), and everything else is an attribute.
``loc`` (a :class:`lowbit.errors.SourceLocation`) is optional and excluded from equality.

>>> i32 = TileType("int32", ())
>>> a, b = Value("a", i32), Value("b", i32)
>>> ins = Binary(Value("c", i32), "add", a, b)
>>> [str(v) for v in ins.inputs], [str(v) for v in ins.outputs]
(['%a', '%b'], ['%c'])
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Union

from ..errors import SourceLocation
from .symbolic import Dim
from .types import TileType


@dataclass(frozen=True)
class Value:
    """An SSA value: a unique name and a :class:`TileType`. Printed ``%name``."""

    name: str
    type: TileType

    def __str__(self) -> str:
        return f"%{self.name}"

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape


def _loc() -> Any:
    return field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Instr:
    """Base of all instructions."""

    OPCODE: ClassVar[str] = ""
    #: fields holding operand Values (a Value, an Optional[Value] or a tuple of Values), in print order
    OPERANDS: ClassVar[tuple[str, ...]] = ()
    #: fields printed positionally (a prefix of the dataclass fields after the result)
    POSITIONAL: ClassVar[tuple[str, ...]] = ()
    #: the instruction writes memory (store, copy, barrier) and must not be removed or reordered freely
    SIDE_EFFECTS: ClassVar[bool] = False
    #: the instruction reads mutable (shared) memory
    READS_MEMORY: ClassVar[bool] = False

    loc: Optional[SourceLocation] = _loc()

    @property
    def opcode(self) -> str:
        return self.OPCODE

    @property
    def outputs(self) -> tuple[Value, ...]:
        """Values this instruction defines in the enclosing block."""
        r = getattr(self, "result", None)
        if r is not None:
            return (r,)
        return tuple(getattr(self, "results", ()))

    @property
    def inputs(self) -> tuple[Value, ...]:
        """Operand Values used directly (not those used inside nested bodies)."""
        out: list[Value] = []
        for name in self.OPERANDS:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, tuple):
                out.extend(v)
            else:
                out.append(v)
        return tuple(out)

    @property
    def regions(self) -> tuple[tuple["Instr", ...], ...]:
        """Nested instruction lists (For body; If then/else)."""
        return ()

    def map_values(self, fn: Callable[[Value], Value]) -> "Instr":
        """A copy with ``fn`` applied to every Value field (operands, results, block arguments), not
        descending into nested bodies. Useful for renaming and retyping in passes."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Value):
                changes[f.name] = fn(v)
            elif isinstance(v, tuple) and v and all(isinstance(x, Value) for x in v):
                changes[f.name] = tuple(fn(x) for x in v)
        return replace(self, **changes)

    def replace_inputs(self, mapping: Mapping[Value, Value]) -> "Instr":
        """A copy with operand Values replaced according to ``mapping`` (not in nested bodies)."""
        changes: dict[str, Any] = {}
        for name in self.OPERANDS:
            v = getattr(self, name)
            if isinstance(v, Value):
                changes[name] = mapping.get(v, v)
            elif isinstance(v, tuple):
                changes[name] = tuple(mapping.get(x, x) for x in v)
        return replace(self, **changes)


# ----------------------------------------------------------------------------------------------------
# scalars and tile constructors
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Constant(Instr):
    """``%r = const(value) : dtype`` — a scalar literal (int, float or bool) of the result's dtype."""

    OPCODE: ClassVar[str] = "const"
    POSITIONAL: ClassVar[tuple[str, ...]] = ("value",)
    result: Value
    value: Union[int, float, bool]


@dataclass(frozen=True)
class ProgramId(Instr):
    """``%r = program_id(axis=a) : i32`` — this program's index along grid axis ``a``."""

    OPCODE: ClassVar[str] = "program_id"
    result: Value
    axis: int


@dataclass(frozen=True)
class NumPrograms(Instr):
    """``%r = num_programs(axis=a) : i32`` — the grid's extent along axis ``a``."""

    OPCODE: ClassVar[str] = "num_programs"
    result: Value
    axis: int


@dataclass(frozen=True)
class SymbolRef(Instr):
    """``%r = symbol("K") : i32`` — the run-time value of a shape symbol or kernel constant."""

    OPCODE: ClassVar[str] = "symbol"
    POSITIONAL: ClassVar[tuple[str, ...]] = ("name",)
    result: Value
    name: str


@dataclass(frozen=True)
class Full(Instr):
    """``%r = full(value) : f32[16, 64]`` — a register tile with every element ``value`` (a literal)."""

    OPCODE: ClassVar[str] = "full"
    POSITIONAL: ClassVar[tuple[str, ...]] = ("value",)
    result: Value
    value: Union[int, float, bool]


@dataclass(frozen=True)
class Arange(Instr):
    """``%r = arange(start=s, stop=e) : i32[e - s]`` — ``[s, s+1, ..., e-1]``."""

    OPCODE: ClassVar[str] = "arange"
    result: Value
    start: int
    stop: int


# ----------------------------------------------------------------------------------------------------
# global memory
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load(Instr):
    """``%r = load(%t, [%o0, %o1], mask=%m, other=%z) : f16[16, 64]``.

    ``r[i] = t[o + i]`` where ``o + i`` is inside the tensor (on every axis whose ``checked`` entry is
    true; default all) and ``mask[i]`` (a bool tile of the result shape) holds; else ``other`` (a scalar
    of the result dtype; default 0 / code 0). An unchecked out-of-bounds access is undefined (the
    interpreter raises).
    """

    OPCODE: ClassVar[str] = "load"
    OPERANDS: ClassVar[tuple[str, ...]] = ("tensor", "offsets", "mask", "other")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("tensor", "offsets")
    READS_MEMORY: ClassVar[bool] = True
    result: Value
    tensor: Value
    offsets: tuple[Value, ...]
    mask: Optional[Value] = None
    other: Optional[Value] = None
    checked: Optional[tuple[bool, ...]] = None


@dataclass(frozen=True)
class Store(Instr):
    """``store(%t, %v, [%o0, %o1], mask=%m)`` — ``t[o + i] = v[i]`` for in-bounds, unmasked ``i``."""

    OPCODE: ClassVar[str] = "store"
    OPERANDS: ClassVar[tuple[str, ...]] = ("tensor", "value", "offsets", "mask")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("tensor", "value", "offsets")
    SIDE_EFFECTS: ClassVar[bool] = True
    tensor: Value
    value: Value
    offsets: tuple[Value, ...]
    mask: Optional[Value] = None
    checked: Optional[tuple[bool, ...]] = None


# ----------------------------------------------------------------------------------------------------
# shared memory
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AllocShared(Instr):
    """``%s = alloc_shared() : f16[2, 64, 64] @shared`` — a new shared buffer (contents undefined)."""

    OPCODE: ClassVar[str] = "alloc_shared"
    SIDE_EFFECTS: ClassVar[bool] = True
    result: Value


@dataclass(frozen=True)
class SharedSlice(Instr):
    """``%v = shared_slice(%s, [%o0, %o1, %o2]) : f16[64, 64] @shared`` — an alias of a sub-block.

    One scalar offset per source axis; the result's rank ``r`` may be smaller than the source's ``R``:
    the leading ``R - r`` axes are indexed (extent 1) and dropped. Must be in bounds.
    """

    OPCODE: ClassVar[str] = "shared_slice"
    OPERANDS: ClassVar[tuple[str, ...]] = ("src", "offsets")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("src", "offsets")
    result: Value
    src: Value
    offsets: tuple[Value, ...]


@dataclass(frozen=True)
class CopyToShared(Instr):
    """``copy_to_shared(%dst, %t, [%o0, %o1], mask=%m, other=%z)`` — a global tile of ``dst``'s shape
    into shared memory, with exactly :class:`Load`'s masking rules."""

    OPCODE: ClassVar[str] = "copy_to_shared"
    OPERANDS: ClassVar[tuple[str, ...]] = ("dst", "tensor", "offsets", "mask", "other")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("dst", "tensor", "offsets")
    SIDE_EFFECTS: ClassVar[bool] = True
    dst: Value
    tensor: Value
    offsets: tuple[Value, ...]
    mask: Optional[Value] = None
    other: Optional[Value] = None
    checked: Optional[tuple[bool, ...]] = None


@dataclass(frozen=True)
class LoadShared(Instr):
    """``%r = load_shared(%s) : f16[64, 64]`` — the whole shared tile into registers."""

    OPCODE: ClassVar[str] = "load_shared"
    OPERANDS: ClassVar[tuple[str, ...]] = ("src",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("src",)
    READS_MEMORY: ClassVar[bool] = True
    result: Value
    src: Value


@dataclass(frozen=True)
class StoreShared(Instr):
    """``store_shared(%s, %v)`` — a register tile into the whole shared tile (same dtype and shape)."""

    OPCODE: ClassVar[str] = "store_shared"
    OPERANDS: ClassVar[tuple[str, ...]] = ("dst", "value")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("dst", "value")
    SIDE_EFFECTS: ClassVar[bool] = True
    dst: Value
    value: Value


@dataclass(frozen=True)
class Barrier(Instr):
    """``barrier()`` — all workers of the program synchronize (shared memory writes become visible)."""

    OPCODE: ClassVar[str] = "barrier"
    SIDE_EFFECTS: ClassVar[bool] = True


# ----------------------------------------------------------------------------------------------------
# conversions
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View(Instr):
    """``%r = view(%x) : u32[64, 8]`` — reinterpret bits, row by row (little-endian bitstream).

    Same scope; same leading dims; ``last * nbits`` equal. Element ``j`` of a result row holds bits
    ``[j*nb, (j+1)*nb)`` of the row's bitstream, where source element ``i`` holds ``[i*ns, (i+1)*ns)``.
    """

    OPCODE: ClassVar[str] = "view"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value


@dataclass(frozen=True)
class Cast(Instr):
    """``%r = cast(%x) : f16[64, 64]`` — convert values to the result dtype (rules in the README)."""

    OPCODE: ClassVar[str] = "cast"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value


# ----------------------------------------------------------------------------------------------------
# elementwise
# ----------------------------------------------------------------------------------------------------

#: unary op -> the dtype kinds it accepts
UNARY_OPS: dict[str, tuple[str, ...]] = {
    "neg": ("int", "float"), "abs": ("int", "float"), "not": ("bool", "int", "uint"),
    "exp": ("float",), "exp2": ("float",), "log": ("float",), "log2": ("float",), "sqrt": ("float",),
    "rsqrt": ("float",), "tanh": ("float",), "sigmoid": ("float",), "floor": ("float",),
    "ceil": ("float",),
}
ARITH_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "minimum", "maximum")
BITWISE_OPS = ("and", "or", "xor", "shl", "shr")
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
BINARY_OPS: tuple[str, ...] = ARITH_OPS + BITWISE_OPS + COMPARE_OPS
REDUCE_OPS = ("sum", "max", "min")


@dataclass(frozen=True)
class Unary(Instr):
    """``%r = exp(%x) : f32[16]`` — elementwise; result type = operand type (see ``UNARY_OPS``)."""

    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    op: str
    x: Value

    @property
    def opcode(self) -> str:
        return self.op


@dataclass(frozen=True)
class Binary(Instr):
    """``%r = add(%a, %b) : f32[16]`` — elementwise on equal types; comparisons give bool."""

    OPERANDS: ClassVar[tuple[str, ...]] = ("lhs", "rhs")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("lhs", "rhs")
    result: Value
    op: str
    lhs: Value
    rhs: Value

    @property
    def opcode(self) -> str:
        return self.op


@dataclass(frozen=True)
class Where(Instr):
    """``%r = where(%c, %x, %y) : f16[16]`` — ``c ? x : y``; c bool; x, y and result the same type."""

    OPCODE: ClassVar[str] = "where"
    OPERANDS: ClassVar[tuple[str, ...]] = ("cond", "x", "y")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("cond", "x", "y")
    result: Value
    cond: Value
    x: Value
    y: Value


@dataclass(frozen=True)
class Lookup(Instr):
    """``%r = lookup(%x, table=[0.0, 0.5, 1.0, 1.5]) : f32[16]`` — ``table[x mod len(table)]`` per element.

    ``x`` is an int/uint tile read as unsigned bits; only its low ``log2(len(table))`` bits select
    (``len(table)`` is a power of two, 2..256), so a packed word shifted down needs no mask. The result
    has ``x``'s shape and any numeric dtype holding every table entry exactly. What it is for: decoding
    small codes (a table of up to 32 entries is one register permute on AVX-512 CPUs: ``vpermps`` of 16,
    ``vpermi2ps`` of 32).

    >>> # codes 0..3 of a 2-bit type whose values are -2, -1, 0, 1; a code in bits 0-1 of a larger word:
    >>> # lookup(word >> 2 * j, table=[-2.0, -1.0, 0.0, 1.0]) decodes code j of the word.
    """

    OPCODE: ClassVar[str] = "lookup"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value
    table: tuple[Union[int, float], ...] = ()


# ----------------------------------------------------------------------------------------------------
# contraction and reduction
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dot(Instr):
    """``%r = dot(%a, %b, %acc) : f32[M, N]`` — ``acc + a @ b`` accumulated in acc's dtype."""

    OPCODE: ClassVar[str] = "dot"
    OPERANDS: ClassVar[tuple[str, ...]] = ("a", "b", "acc")
    POSITIONAL: ClassVar[tuple[str, ...]] = ("a", "b", "acc")
    result: Value
    a: Value
    b: Value
    acc: Value


@dataclass(frozen=True)
class Reduce(Instr):
    """``%r = sum(%x, axis=1, keepdims=false) : f32[16]`` — op in sum/max/min over one axis."""

    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    op: str
    x: Value
    axis: int
    keepdims: bool = False

    @property
    def opcode(self) -> str:
        return self.op


# ----------------------------------------------------------------------------------------------------
# shape manipulation
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Broadcast(Instr):
    """``%r = broadcast(%x) : f32[16, 64]`` — ``np.broadcast_to(x, result.shape)``."""

    OPCODE: ClassVar[str] = "broadcast"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value


@dataclass(frozen=True)
class Reshape(Instr):
    """``%r = reshape(%x) : f32[4, 256]`` — same element count, row-major order."""

    OPCODE: ClassVar[str] = "reshape"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value


@dataclass(frozen=True)
class Permute(Instr):
    """``%r = permute(%x, perm=[1, 0]) : f32[64, 16]`` — ``np.transpose(x, perm)``."""

    OPCODE: ClassVar[str] = "permute"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value
    perm: tuple[int, ...]


@dataclass(frozen=True)
class ExpandDims(Instr):
    """``%r = expand_dims(%x, axis=0) : f32[1, 64]`` — ``np.expand_dims(x, axis)``."""

    OPCODE: ClassVar[str] = "expand_dims"
    OPERANDS: ClassVar[tuple[str, ...]] = ("x",)
    POSITIONAL: ClassVar[tuple[str, ...]] = ("x",)
    result: Value
    x: Value
    axis: int


# ----------------------------------------------------------------------------------------------------
# structured control flow
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Yield(Instr):
    """``yield %a, %b`` — the terminator of every For / If body: the values carried out."""

    OPCODE: ClassVar[str] = "yield"
    OPERANDS: ClassVar[tuple[str, ...]] = ("values",)
    values: tuple[Value, ...] = ()


@dataclass(frozen=True)
class For(Instr):
    """A counted loop with loop-carried values (``for i in range(start, stop, step)``, step > 0)::

        %acc2, %m2 = for %k = %c0 to %K step %c64 iter_args(%acc = %acc0, %m = %m0) {
          ...
          yield %acc1, %m1
        }

    ``iter_args`` hold ``inits`` on the first iteration and the body's yields afterwards; ``results``
    are the final carried values (``inits`` when the loop runs zero times). ``iv`` is an i32 scalar.
    """

    OPCODE: ClassVar[str] = "for"
    OPERANDS: ClassVar[tuple[str, ...]] = ("start", "stop", "step", "inits")
    results: tuple[Value, ...]
    iv: Value
    start: Value
    stop: Value
    step: Value
    iter_args: tuple[Value, ...]
    inits: tuple[Value, ...]
    body: tuple[Instr, ...]

    @property
    def regions(self) -> tuple[tuple[Instr, ...], ...]:
        return (self.body,)


@dataclass(frozen=True)
class If(Instr):
    """A two-way branch on a bool scalar; each branch ends with ``yield`` of values typed as ``results``::

        %r = if %c {
          yield %a
        } else {
          yield %b
        }
    """

    OPCODE: ClassVar[str] = "if"
    OPERANDS: ClassVar[tuple[str, ...]] = ("cond",)
    results: tuple[Value, ...]
    cond: Value
    then_body: tuple[Instr, ...]
    else_body: tuple[Instr, ...]

    @property
    def regions(self) -> tuple[tuple[Instr, ...], ...]:
        return (self.then_body, self.else_body)


# ----------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------

INTENTS = ("in", "out", "inout")


@dataclass(frozen=True)
class TensorParam:
    """A global tensor argument. ``value.type`` is a global TileType with symbolic shape; ``intent`` is
    ``in`` (only loaded), ``out`` (only stored) or ``inout``."""

    value: Value
    intent: str = "inout"

    @property
    def name(self) -> str:
        return self.value.name


@dataclass(frozen=True)
class ScalarParam:
    """A run-time scalar argument (rank-0 register value), e.g. a softmax scale or a sequence length."""

    value: Value

    @property
    def name(self) -> str:
        return self.value.name


Param = Union[TensorParam, ScalarParam]


@dataclass(frozen=True)
class ConstParam:
    """A compile-time constant: an int, float or bool ``value`` (``None`` until specialized).

    Constants appear in sizes (``Sym("G")`` in a shape or the grid) and in the body via
    ``symbol("G")``. (Tile shapes are always concrete, so constants shaping tiles are known when the
    IR is built; dtype/layout constants are resolved by the front end.)
    """

    name: str
    value: Union[int, float, bool, None] = None
    dtype: str = "int32"


@dataclass(frozen=True)
class Kernel:
    """A tile-level kernel: run ``body`` once per program of ``grid`` (1-3 sizes)."""

    name: str
    params: tuple[Param, ...]
    constants: tuple[ConstParam, ...]
    grid: tuple[Dim, ...]
    body: tuple[Instr, ...]
    loc: Optional[SourceLocation] = _loc()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def tensor_params(self) -> tuple[TensorParam, ...]:
        return tuple(p for p in self.params if isinstance(p, TensorParam))

    @property
    def scalar_params(self) -> tuple[ScalarParam, ...]:
        return tuple(p for p in self.params if isinstance(p, ScalarParam))

    def constant(self, name: str) -> ConstParam:
        for c in self.constants:
            if c.name == name:
                return c
        raise KeyError(name)

    def shape_symbols(self) -> tuple[str, ...]:
        """Names in tensor shapes and the grid that are not constants, in first-appearance order."""
        from .symbolic import dim_symbols

        consts = {c.name for c in self.constants}
        seen: dict[str, None] = {}
        dims = [d for p in self.tensor_params for d in p.value.type.shape] + list(self.grid)
        for d in dims:
            for s in sorted(dim_symbols(d)):
                if s not in consts:
                    seen.setdefault(s, None)
        return tuple(seen)

    def walk(self) -> Iterator[Instr]:
        """Every instruction, depth first in program order (a For before its body)."""
        return walk(self.body)

    def __str__(self) -> str:
        from .printer import print_kernel

        return print_kernel(self)


def walk(body: tuple[Instr, ...]) -> Iterator[Instr]:
    """Depth-first iteration over ``body`` and nested regions."""
    for ins in body:
        yield ins
        for region in ins.regions:
            yield from walk(region)


#: every instruction class
INSTRUCTIONS: tuple[type[Instr], ...] = (
    Constant, ProgramId, NumPrograms, SymbolRef, Full, Arange, Load, Store, AllocShared, SharedSlice,
    CopyToShared, LoadShared, StoreShared, Barrier, View, Cast, Unary, Binary, Where, Lookup, Dot,
    Reduce, Broadcast, Reshape, Permute, ExpandDims, Yield, For, If,
)

__all__ = [
    "Value", "Instr", "Constant", "ProgramId", "NumPrograms", "SymbolRef", "Full", "Arange", "Load",
    "Store", "AllocShared", "SharedSlice", "CopyToShared", "LoadShared", "StoreShared", "Barrier", "View",
    "Cast", "Unary", "Binary", "Where", "Lookup", "Dot", "Reduce", "Broadcast", "Reshape", "Permute", "ExpandDims",
    "Yield", "For", "If", "TensorParam", "ScalarParam", "ConstParam", "Param", "Kernel", "walk",
    "INSTRUCTIONS", "UNARY_OPS", "ARITH_OPS", "BITWISE_OPS", "COMPARE_OPS", "BINARY_OPS", "REDUCE_OPS",
    "INTENTS",
]
