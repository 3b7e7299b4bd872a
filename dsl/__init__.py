"""lowbit.dsl: the tile-level kernel language (one lark grammar for kernel files and @lowbit.jit functions).

For Python authors this module also exports what ``@lowbit.jit`` annotations need when the module does not
use ``from __future__ import annotations``: dtype handles that can be subscripted at run time (``f16``,
``u4``, any dtype name or alias as an attribute: ``lowbit.dsl.float6_e3m2``), the parameter markers
``const``, ``dtype``, ``layout``, ``Out``, and ``symbols("M N K")`` for shape names. The intrinsics
(``load``, ``store``, ``dot``, ...) are exported too, so ``from lowbit.dsl import *`` keeps linters quiet.

>>> from lowbit.dsl import f16, symbols, Out
>>> M, N = symbols("M N")
>>> Out[f16[M, N]]
Out[f16[M, N]]

Front-end entry points: :func:`compile_source`, :func:`load_file`, :func:`parse` (see ``dsl/README.md``).
"""
from __future__ import annotations

from typing import Any

from .builtins import SIGNATURES as _SIGNATURES
from .values import DTypeHandle, Intrinsic, Marker, Out, Symbol, const, dtype, layout, symbols

_COMMON_DTYPES = ("f16", "bf16", "f32", "i8", "i16", "i32", "u8", "u16", "u32", "u1", "u2", "u3", "u4", "u5",
                  "u6", "u7", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "f4e2m1", "f6e3m2", "f6e2m3",
                  "f8e4m3fn", "f8e5m2", "float16", "bfloat16", "float32", "int8", "int32", "uint8")
_LAZY_API = {
    "compile_source": "frontend", "load_file": "frontend", "parse_file_text": "frontend",
    "compile_function": "frontend", "parse_constant": "frontend", "CompiledKernel": "frontend",
    "KernelFile": "frontend", "parse": "parser", "parse_expression": "parser",
}

_intrinsics = {name: Intrinsic(name, sig.doc) for name, sig in _SIGNATURES.items()
               if name not in ("local", "spatial", "column_local", "column_spatial")}
globals().update(_intrinsics)


def __getattr__(name: str) -> Any:
    if name in _LAZY_API:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY_API[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        from .values import dtype_handle

        try:
            handle = dtype_handle(name)
        except Exception:
            raise AttributeError(f"module 'lowbit.dsl' has no attribute {name!r}") from None
        globals()[name] = handle
        return handle
    raise AttributeError(f"module 'lowbit.dsl' has no attribute {name!r}")


# `import *` must not shadow Python's own sum/max/min/abs in the importing module
__all__ = ["symbols", "Symbol", "const", "dtype", "layout", "Out", "Marker", "DTypeHandle", *_COMMON_DTYPES,
           *(name for name in _intrinsics if name not in ("sum", "max", "min", "abs")), *_LAZY_API]
