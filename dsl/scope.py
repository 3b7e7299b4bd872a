"""Where names that a kernel does not bind itself come from: the Python scope (for ``@lowbit.jit``), the
file's constants and ``--const`` values (for ``.lbk`` files), and the language's built-ins.

Outer values are converted to compile-time values by :func:`from_python`: ints, floats and bools stay
Python numbers; dtypes (names of :mod:`lowbit.dtypes`, ``DType`` objects, :mod:`lowbit.dsl` handles,
torch/numpy dtypes) become :class:`~lowbit.dsl.values.DTypeValue`; layouts become
:class:`~lowbit.dsl.values.LayoutValue`; :func:`~lowbit.dsl.values.symbols` become size symbols.
Anything else cannot be used in a kernel, and the front end says so.

>>> from_python(128), from_python(2.5)
(128, 2.5)
>>> from_python(dtype_handle("u4"))
DTypeValue(name='uint4')
"""
from __future__ import annotations

import builtins as _py_builtins
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from lowbit.errors import DTypeError, LowbitError

from . import builtins as bi
from .values import (BuiltinFunction, DTypeHandle, DTypeValue, Intrinsic, LayoutValue, Marker, Namespace,
                     Symbol, dtype_handle)


@dataclass(frozen=True)
class Unusable:
    """An outer Python object a kernel cannot use (kept to explain why)."""

    obj: Any

    def describe(self) -> str:
        obj = self.obj
        kind = type(obj).__name__
        mod = getattr(type(obj), "__module__", "")
        if callable(obj) and hasattr(obj, "__name__"):
            where = getattr(obj, "__module__", None)
            return f"the Python {kind} {where + '.' if where else ''}{obj.__name__}"
        if mod and mod != "builtins":
            kind = f"{mod.split('.')[0]}.{kind}"
        return f"a Python {kind}"


MARKER_NAMES = {"const": "const", "dtype": "dtype", "layout": "layout", "Out": "Out", "int": "int",
                "float": "float", "bool": "bool"}


def dtype_value(spec: Any) -> DTypeValue | None:
    """A :class:`DTypeValue` for anything naming a dtype (name, alias, DType, handle, torch/numpy dtype),
    or None."""
    from lowbit.ir.types import canonical_dtype

    if isinstance(spec, DTypeValue):
        return spec
    if isinstance(spec, DTypeHandle):
        spec = spec.dtype_name
    elif not isinstance(spec, str):
        mod = getattr(type(spec), "__module__", "") or ""
        if type(spec).__name__ == "DType" and mod.startswith("lowbit"):
            spec = spec.name
        elif mod.startswith("torch") and type(spec).__name__ == "dtype":
            spec = str(spec).replace("torch.", "")
        else:
            try:
                import numpy as np

                if isinstance(spec, np.dtype) or (isinstance(spec, type) and issubclass(spec, np.generic)):
                    spec = np.dtype(spec).name
                else:
                    return None
            except TypeError:
                return None
    try:
        return DTypeValue(canonical_dtype(spec))
    except (DTypeError, LowbitError, ValueError, TypeError, KeyError):
        return None


def _is_layout(obj: Any) -> bool:
    mod = getattr(type(obj), "__module__", "") or ""
    return mod.startswith("lowbit.layout") and hasattr(obj, "shape")


def from_python(obj: Any) -> Any:
    """The compile-time value of an outer Python object (see the module docstring), or :class:`Unusable`."""
    import numbers

    from lowbit.ir.symbolic import Sym, SymOp

    if isinstance(obj, bool) or type(obj).__name__ == "bool_":
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        return float(obj)
    if isinstance(obj, Symbol):
        return Sym(obj.name)
    if isinstance(obj, (Sym, SymOp)):
        return obj
    if isinstance(obj, Marker):
        return obj
    if isinstance(obj, Intrinsic):
        return BuiltinFunction(obj.name)
    if isinstance(obj, type) and obj in (int, float, bool):
        return Marker(obj.__name__)
    if _is_layout(obj):
        return LayoutValue(obj)
    if isinstance(obj, (list, tuple)):
        items = tuple(from_python(x) for x in obj)
        return items if not any(isinstance(x, Unusable) for x in items) else Unusable(obj)
    if obj is None:
        return None
    mod = getattr(obj, "__module__", None) or ""
    if callable(obj) and mod.startswith("lowbit.layout") and getattr(obj, "__name__", "") in bi.LAYOUT_FUNCTIONS:
        return BuiltinFunction(obj.__name__)
    if callable(obj) and mod == "lowbit.dtypes" and getattr(obj, "__name__", "") == "dtype":
        return Marker("dtype")
    if type(obj).__name__ == "module" and (obj.__name__ == "lowbit" or obj.__name__.startswith("lowbit.")):
        return Namespace(obj, obj.__name__)
    if not isinstance(obj, str):
        dv = dtype_value(obj)
        if dv is not None:
            return dv
    return Unusable(obj)


@lru_cache(maxsize=4096)
def builtin(name: str) -> Any:
    """The language's own meaning of ``name``: an intrinsic, a marker, a dtype; else ``None``."""
    if name in bi.FUNCTION_NAMES:
        return BuiltinFunction(name)
    if name in MARKER_NAMES:
        return Marker(MARKER_NAMES[name])
    if name.startswith("_") or not name.isidentifier():
        return None
    return dtype_value(name)


def builtin_names() -> list[str]:
    """Names for did-you-mean suggestions (functions, markers and common dtype names)."""
    common = ["float16", "bfloat16", "float32", "int8", "int32", "uint8", "f16", "bf16", "f32", "i8", "i32",
              "u8", "u4", "u2", "i4", "f4e2m1", "f8e4m3fn", "f8e5m2", "bool"]
    return sorted(set(bi.FUNCTION_NAMES) | set(MARKER_NAMES) | set(common))


class OuterScope:
    """Names visible to a kernel from outside it. ``lookup`` returns ``(found, value)``."""

    def lookup(self, name: str) -> tuple[bool, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def names(self) -> list[str]:
        return []


class ConstantScope(OuterScope):
    """Compile-time values by name (a kernel file's constants plus ``--const`` values)."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        self.values = dict(values or {})

    def lookup(self, name: str) -> tuple[bool, Any]:
        if name in self.values:
            return True, self.values[name]
        return False, None

    def names(self) -> list[str]:
        return list(self.values)


class PythonScope(OuterScope):
    """A Python function's closure and module globals (not Python's builtins: ``sum`` means the
    kernel language's ``sum``)."""

    def __init__(self, globals_: Mapping[str, Any], closure: Mapping[str, Any] | None = None):
        self.globals = globals_
        self.closure = dict(closure or {})

    @staticmethod
    def of_function(fn: Any) -> "PythonScope":
        closure = {}
        code = getattr(fn, "__code__", None)
        cells = getattr(fn, "__closure__", None) or ()
        if code is not None:
            for name, cell in zip(code.co_freevars, cells):
                try:
                    closure[name] = cell.cell_contents
                except ValueError:  # empty cell (not yet assigned)
                    continue
        return PythonScope(getattr(fn, "__globals__", {}), closure)

    def lookup(self, name: str) -> tuple[bool, Any]:
        if name in self.closure:
            return True, from_python(self.closure[name])
        if name in self.globals:
            value = self.globals[name]
            if value is _py_builtins:
                return False, None
            return True, from_python(value)
        return False, None

    def names(self) -> list[str]:
        return [n for n in list(self.closure) + list(self.globals) if not n.startswith("__")]


__all__ = ["Unusable", "from_python", "dtype_value", "builtin", "builtin_names", "OuterScope",
           "ConstantScope", "PythonScope", "dtype_handle"]
