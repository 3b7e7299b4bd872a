"""Element types and tile types of the tile IR.

Element types are canonical dtype *names* (strings), so types are cheap, hashable and print as written.
Two families:

* **native** types, which have arithmetic: ``bool``, ``int8``, ``int16``, ``int32``, ``uint8``, ``uint16``,
  ``uint32``, ``float16``, ``bfloat16``, ``float32``;
* **code** types: every other format of :mod:`lowbit.dtypes` (``uint4``, ``int3``, ``float4_e2m1``,
  ``float8_e4m3fn``, ...). A tile of a code type holds *codes*; the only things you can do with it are
  move it (load/store/copy/where/reshape/...), reinterpret its bits (``view``) or ``cast`` it.

>>> canonical_dtype("f16"), canonical_dtype("u32")
('float16', 'uint32')
>>> TileType("float16", (16, 64))
TileType(dtype='float16', shape=(16, 64), scope='register', layout=None)
>>> str(TileType("int32", ()))
'i32'
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import CompileError, DTypeError
from .symbolic import Dim, as_dim, dim_str

#: native dtype name -> (short name, kind, nbits)
NATIVE: dict[str, tuple[str, str, int]] = {
    "bool": ("bool", "bool", 1),
    "int8": ("i8", "int", 8),
    "int16": ("i16", "int", 16),
    "int32": ("i32", "int", 32),
    "uint8": ("u8", "uint", 8),
    "uint16": ("u16", "uint", 16),
    "uint32": ("u32", "uint", 32),
    "float16": ("f16", "float", 16),
    "bfloat16": ("bf16", "float", 16),
    "float32": ("f32", "float", 32),
}
_SHORT = {short: name for name, (short, _, _) in NATIVE.items()}

SCOPES = ("global", "shared", "register")


@lru_cache(maxsize=None)
def canonical_dtype(name: Any) -> str:
    """The canonical name of a dtype given by name, short alias or ``lowbit.dtypes.DType``.

    Native names and aliases are resolved here; everything else goes through ``lowbit.dtypes.dtype``.
    Raises :class:`lowbit.errors.DTypeError` for unknown names.
    """
    if not isinstance(name, str):
        name = getattr(name, "name", None)
        if not isinstance(name, str):
            raise DTypeError(f"expected a dtype name or lowbit DType, got {name!r}")
    if name in NATIVE:
        return name
    if name in _SHORT:
        return _SHORT[name]
    from .. import dtypes as _dtypes  # lazy: lowbit.dtypes imports nothing from the compiler

    canon = _dtypes.dtype(name).name
    return _SHORT.get(canon, canon)


def short_name(dtype: str) -> str:
    """The name the printer uses: a short alias for native types, the canonical name otherwise."""
    return NATIVE[dtype][0] if dtype in NATIVE else dtype


def is_native(dtype: str) -> bool:
    """True for types with arithmetic (bool, 8/16/32-bit ints, f16, bf16, f32)."""
    return dtype in NATIVE


def is_code(dtype: str) -> bool:
    """True for low-bit / fp8 code types (no arithmetic; cast first)."""
    return dtype not in NATIVE


@lru_cache(maxsize=None)
def _lowbit_dtype(dtype: str):
    from .. import dtypes as _dtypes

    return _dtypes.dtype(dtype)


def lowbit_dtype(dtype: str):
    """The :class:`lowbit.dtypes.DType` of a code type."""
    return _lowbit_dtype(dtype)


def kind_of(dtype: str) -> str:
    """``'bool'``, ``'int'``, ``'uint'`` or ``'float'``."""
    if dtype in NATIVE:
        return NATIVE[dtype][1]
    return _lowbit_dtype(dtype).kind


def nbits_of(dtype: str) -> int:
    """Bits per element (1 for bool, which ``view`` refuses anyway)."""
    if dtype in NATIVE:
        return NATIVE[dtype][2]
    return int(_lowbit_dtype(dtype).nbits)


def is_float(dtype: str) -> bool:
    return kind_of(dtype) == "float"


def is_int(dtype: str) -> bool:
    """Signed or unsigned integer (not bool)."""
    return kind_of(dtype) in ("int", "uint")


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype the interpreter stores a tile of ``dtype`` in (codes: uint8)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if dtype in NATIVE:
        return np.dtype(dtype)
    return np.dtype(np.uint8)


@dataclass(frozen=True)
class TileType:
    """The type of every IR value: element dtype, shape, memory scope and an optional layout.

    * ``global`` tiles are the kernel's tensor parameters; their shape entries may be symbolic
      (:mod:`lowbit.ir.symbolic`), e.g. ``("M", "K")`` as ``(Sym("M"), Sym("K"))``.
    * ``shared`` and ``register`` tiles have concrete positive int shapes.
    * A scalar is a rank-0 register tile (``shape == ()``).
    * ``layout`` is a register layout (register scope) or shared layout (shared scope) from
      :mod:`lowbit.layout`, or a global layout; ``None`` means "not chosen yet". When present its
      ``shape`` must equal the tile shape (the verifier checks).
    """

    dtype: str
    shape: tuple[Dim, ...]
    scope: str = "register"
    layout: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(as_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return self.shape == () and self.scope == "register"

    @property
    def numel(self) -> int:
        """Number of elements (concrete shapes only)."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def with_(self, **changes: Any) -> "TileType":
        """A copy with some fields replaced: ``t.with_(dtype="float32", layout=None)``."""
        from dataclasses import replace

        return replace(self, **changes)

    def __str__(self) -> str:
        from .printer import format_type

        return format_type(self)


def scalar(dtype: str) -> TileType:
    """The rank-0 register type of ``dtype``: ``scalar("int32") == TileType("int32", ())``."""
    return TileType(dtype, ())


# ----------------------------------------------------------------------------------------------------
# dtype promotion (used by the builder for binary ops and where)
# ----------------------------------------------------------------------------------------------------

_INT_ORDER = ["int8", "int16", "int32"]
_UINT_ORDER = ["uint8", "uint16", "uint32"]


def promote(a: str, b: str, *, op: str = "binary") -> str:
    """The common dtype of two native dtypes (the builder's promotion table; see README).

    * equal -> that dtype;  bool with anything -> the other;
    * two signed (unsigned) ints -> the wider;  signed with unsigned -> the unsigned one if it is at
      least as wide, else the signed one (C rules, as Triton);
    * int with float -> the float;  float16 with bfloat16 -> float32;  otherwise the wider float.

    >>> promote("int32", "float16"), promote("float16", "bfloat16"), promote("int8", "uint32")
    ('float16', 'float32', 'uint32')
    """
    for d in (a, b):
        if is_code(d):
            raise CompileError(f"{op}: operand dtype {d} is a low-bit code type and has no arithmetic",
                               hint="cast it first, e.g. cast(x, float16)")
    if a == b:
        return a
    if a == "bool":
        return b
    if b == "bool":
        return a
    ka, kb = kind_of(a), kind_of(b)
    if ka == "float" and kb == "float":
        if {a, b} == {"float16", "bfloat16"}:
            return "float32"
        return a if nbits_of(a) >= nbits_of(b) else b
    if ka == "float":
        return a
    if kb == "float":
        return b
    if ka == kb:
        return a if nbits_of(a) >= nbits_of(b) else b
    s, u = (a, b) if ka == "int" else (b, a)
    return u if nbits_of(u) >= nbits_of(s) else s


def literal_dtype(value: Any, other: str | None = None) -> str:
    """The dtype a Python literal takes next to a tile of dtype ``other`` ("weak" literals, as Triton).

    An int literal takes an int/float partner's dtype; a float literal takes a float partner's dtype,
    else float32; a bool literal is bool (or the partner's dtype if that is not bool).
    """
    if isinstance(value, (bool, np.bool_)):
        return other if other is not None and is_native(other) else "bool"
    if isinstance(value, (int, np.integer)):
        if other is not None and is_native(other) and other != "bool":
            return other
        return "int32"
    if isinstance(value, (float, np.floating)):
        if other is not None and is_native(other) and is_float(other):
            return other
        return "float32"
    raise CompileError(f"expected an int, float or bool literal, got {type(value).__name__} {value!r}")


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy broadcasting of two concrete shapes, or None if they do not broadcast."""
    n = max(len(a), len(b))
    pa = (1,) * (n - len(a)) + tuple(a)
    pb = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(pa, pb):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(dim_str(d) for d in shape) + "]"
