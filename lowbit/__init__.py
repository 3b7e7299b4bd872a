"""lowbit: a compiler and small runtime for low-precision (1-8 bit) LLM-serving kernels.

Importing ``lowbit`` is cheap: heavy parts (torch, Triton, TVM, the compiler) load on first use.

>>> import lowbit
>>> lowbit.dtype("f4e2m1").decode(lowbit.dtype("f4e2m1").encode([1.0, 2.9, -7.0]))
array([ 1.,  3., -6.], dtype=float32)
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (BackendError, CacheError, CompileError, DTypeError, FormatError, KernelArgumentError,
                     LayoutError, LowbitError, PackingError, QuantizationError, RuntimeModelError, SourceLocation)

__version__ = "0.1.0"

# ``lowbit.jit`` and ``lowbit.autotune`` are the decorators. Importing them eagerly (the modules are light: no torch,
# lark or backends) binds the functions to the package attributes, which a later ``import lowbit.jit`` does not
# rebind.
from .autotune import autotune  # noqa: E402
from .jit import JitFunction, jit  # noqa: E402

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "dtype": ("lowbit.dtypes", "dtype"),
    "DType": ("lowbit.dtypes", "DType"),
    "pack": ("lowbit.packing", "pack"),
    "unpack": ("lowbit.packing", "unpack"),
    "dtypes": ("lowbit.dtypes", None),
    "packing": ("lowbit.packing", None),
    "quant": ("lowbit.quant", None),
    "ops": ("lowbit.ops", None),
    "nn": ("lowbit.nn", None),
    "driver": ("lowbit.driver", None),
    "layout": ("lowbit.layout", None),
    "ir": ("lowbit.ir", None),
    "dsl": ("lowbit.dsl", None),
    "lowering": ("lowbit.lowering", None),
    "runtime": ("lowbit.runtime", None),
    "load": ("lowbit.aot", "load"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lowbit' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "jit", "JitFunction", "autotune", "SourceLocation", "LowbitError", "DTypeError", "PackingError", "QuantizationError",
    "FormatError", "KernelArgumentError", "LayoutError", "CompileError", "BackendError", "CacheError", "RuntimeModelError",
    *_LAZY,
]
