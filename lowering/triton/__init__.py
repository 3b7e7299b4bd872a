"""lowbit.lowering.triton: the Triton backend (generated @triton.jit source, interpreter on CPU, AOT PTX/cubin).

Modules (import them directly; nothing here imports Triton):
- ``source``: generated source text -> a content-addressed file in the cache -> an imported module.
- ``runner``: ``load(text, mode="auto"|"native"|"interpret")`` -> ``TritonModule`` with ``.kernel(name)`` and
  ``.launch(name, grid, *args)``. Interpretation is per generated module (never ``TRITON_INTERPRET``), so a
  user's own Triton kernels keep compiling natively.
- ``aot``: ``compile_aot(text, kernel, signature, constexprs, target="sm_90")`` -> ``AotArtifact`` (PTX, cubin,
  launch metadata) for sm_80 / sm_90 / sm_100 ... without a GPU.
- ``ptx``: ``ptx_stats(ptx)`` counts vector loads, cp.async, mma/wgmma/tcgen05, barriers, unpack work.
- ``codegen`` (+ ``emit_memory``, ``emit_compute``, ``helpers``, ``names``, ``dtypes``): tile IR -> readable
  ``@triton.jit`` source plus a launcher (``emit_triton``).
- ``launcher``: ``build_triton(kernel or Lowered)`` -> ``TritonKernel`` with ``.launch({name: tensor})``.
- ``artifact``: ``compile_triton(kernel, "sm_90")`` -> ``TritonArtifact`` (source, PTX, cubin, launch rule).

The public names below load lazily (importing this package does not import Triton).
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "emit_triton": ".codegen", "TritonSource": ".codegen", "KernelArg": ".codegen",
    "SUPPORTED_INSTRUCTIONS": ".codegen",
    "build_triton": ".launcher", "TritonKernel": ".launcher", "ArgumentError": ".launcher",
    "compile_triton": ".artifact", "TritonArtifact": ".artifact",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lowbit.lowering.triton' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
