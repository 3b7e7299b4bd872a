"""Compile-time objects of the kernel language, and the Python objects that stand for them.

Two audiences:

* **Python users of** ``@lowbit.jit``. Python 3.11 evaluates a ``def``'s annotations when the ``def`` runs,
  so ``a: f16[M, K]`` needs ``f16`` to be subscriptable and ``M``/``K`` to exist. This module provides
  such objects: every dtype name (``f16``, ``u4``, ``float6_e3m2`` ...; see :func:`dtype_handle`), the
  parameter markers :data:`const`, :data:`dtype`, :data:`layout` and :data:`Out`, and :func:`symbols`
  for shape names. (With ``from __future__ import annotations`` none of this is needed: annotations stay
  strings and the front end reads the source anyway.) These objects *mean* nothing at run time; the
  front end always reads the function's source.
* **The front end**, which resolves names to the compile-time values defined here (:class:`DTypeValue`,
  :class:`Marker`, ...) or to IR values.

>>> M, K = symbols("M K")
>>> spec = dtype_handle("f16")[M, K // 2]      # evaluates fine; the front end reads the source text
>>> M.name, repr(spec)
('M', 'f16[M, K // 2]')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowbit.errors import CompileError


# ---------------------------------------------------------------------------------------------------
# objects a Python module can hold (for @jit annotations)
class _Deferred:
    """A stand-in for an annotation expression at Python run time: every operator works, nothing is
    computed. Only its text (for repr) is kept."""

    __slots__ = ("_text",)

    def __init__(self, text: str):
        self._text = text

    def __repr__(self) -> str:
        return self._text

    def _bin(self, op: str, other: Any, reverse: bool = False) -> "_Deferred":
        a, b = (other, self) if reverse else (self, other)
        return _Deferred(f"{a!r} {op} {b!r}")

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __floordiv__(self, o): return self._bin("//", o)
    def __rfloordiv__(self, o): return self._bin("//", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __mod__(self, o): return self._bin("%", o)
    def __rmod__(self, o): return self._bin("%", o, True)
    def __pow__(self, o): return self._bin("**", o)
    def __neg__(self): return _Deferred(f"-{self!r}")

    def __getitem__(self, item: Any) -> "_Deferred":
        items = item if isinstance(item, tuple) else (item,)
        return _Deferred(f"{self!r}[{', '.join(map(repr, items))}]")

    def __call__(self, *args: Any, **kwargs: Any) -> "_Deferred":
        return _Deferred(f"{self!r}(...)")


class Symbol(_Deferred):
    """A shape symbol declared for Python (``M, K = symbols("M K")``); the front end reads it as ``M``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def symbols(names: str) -> "Symbol | tuple[Symbol, ...]":
    """Declare shape symbols for ``@lowbit.jit`` annotations: ``M, N, K = symbols("M N K")``.

    Needed only when the module does not use ``from __future__ import annotations``. Names are separated
    by spaces or commas; one name gives one Symbol, several give a tuple.

    >>> symbols("M")
    M
    >>> symbols("M, N")
    (M, N)
    """
    parts = [p for p in names.replace(",", " ").split() if p]
    if not parts or not all(p.isidentifier() for p in parts):
        raise CompileError(f"symbols() expects names separated by spaces, got {names!r}",
                           hint='e.g. M, N, K = symbols("M N K")')
    out = tuple(Symbol(p) for p in parts)
    return out[0] if len(out) == 1 else out


class DTypeHandle(_Deferred):
    """A dtype usable in Python annotations: ``f16[M, K]`` works at run time (the result is inert).

    The front end treats it exactly like the dtype name it stands for.
    """

    __slots__ = ("dtype_name",)

    def __init__(self, name: str):
        super().__init__(name)
        self.dtype_name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DTypeHandle) and other.dtype_name == self.dtype_name

    def __hash__(self) -> int:
        return hash(("DTypeHandle", self.dtype_name))


def dtype_handle(name: str) -> DTypeHandle:
    """The annotation-friendly handle of a dtype name or alias (checked against :mod:`lowbit.dtypes`)."""
    from lowbit.ir.types import canonical_dtype

    canonical_dtype(name)  # raises DTypeError for unknown names
    return DTypeHandle(name)


class Marker(_Deferred):
    """A parameter kind: ``const`` (compile-time int/float/bool), ``dtype`` (compile-time dtype),
    ``layout`` (compile-time layout) or ``Out`` (a tensor the kernel may write: ``Out[f16[M, N]]``)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


const = Marker("const")
dtype = Marker("dtype")
layout = Marker("layout")
Out = Marker("Out")


class Intrinsic:
    """A kernel-language function (``load``, ``dot``, ...) exported so linters see the name.

    Calling it from Python is a mistake: it only means something inside a kernel.
    """

    def __init__(self, name: str, doc: str = ""):
        self.name = name
        self.__doc__ = doc
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<lowbit.dsl intrinsic {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise CompileError(f"{self.name}() can only be used inside a kernel",
                           hint="decorate the function with @lowbit.jit, or call the kernel instead")


# ---------------------------------------------------------------------------------------------------
# compile-time values the front end works with
@dataclass(frozen=True)
class DTypeValue:
    """A dtype as a compile-time value (canonical name, as in :mod:`lowbit.ir.types`)."""

    name: str

    def __str__(self) -> str:
        from lowbit.ir.types import short_name

        return short_name(self.name)


@dataclass(frozen=True)
class LayoutValue:
    """A layout (from :mod:`lowbit.layout`) as a compile-time value."""

    layout: Any

    def __str__(self) -> str:
        return str(self.layout)


@dataclass(frozen=True)
class TensorTypeValue:
    """The meaning of an annotation like ``f16[M, K]`` (or ``Out[...]``): dtype, symbolic shape, writable."""

    dtype: str
    shape: tuple
    writable: bool = False

    def __str__(self) -> str:
        from lowbit.ir.types import shape_str, short_name

        text = f"{short_name(self.dtype)}{shape_str(self.shape)}"
        return f"Out[{text}]" if self.writable else text


@dataclass(frozen=True)
class BuiltinFunction:
    """A name of the language bound to a function: an intrinsic (``load``) or a layout constructor."""

    name: str


@dataclass(frozen=True)
class BoundMethod:
    """``obj.method`` waiting for its call (layout methods)."""

    obj: Any
    name: str


@dataclass(frozen=True)
class Namespace:
    """A Python module usable with attribute access in a kernel (``lowbit.dsl.f16``, ``lowbit.layout``)."""

    module: Any
    name: str


__all__ = ["Symbol", "symbols", "DTypeHandle", "dtype_handle", "Marker", "const", "dtype", "layout", "Out",
           "Intrinsic", "DTypeValue", "LayoutValue", "TensorTypeValue", "BuiltinFunction", "BoundMethod",
           "Namespace"]
