"""lowbit.lowering.tvm: the TVM backend (TensorIR; LLVM for CPUs, CUDA source for GPUs). Imports TVM lazily.

Modules (import them directly; nothing here imports TVM):
- ``target``: ``import_tvm()`` (sizes TVM's thread pool to every usable core), ``host_cpu()`` (mcpu, vector
  width, cores, features), ``cpu_target[_dict]()``, ``cuda_target[_dict](arch)``, ``as_target``,
  ``num_threads`` / ``set_num_threads``.
- ``build``: ``build(mod, target) -> TVMKernel`` (callable with torch tensors; ``.export(path)``),
  ``load_library(path)``, ``cuda_source(mod_or_kernel, arch)``, ``nvcc_cubin(source, arch)``.
- ``tensors``: ``to_tvm`` / ``to_torch`` / ``to_numpy`` through DLPack (shared memory; TVM needs 64-byte
  aligned, contiguous data).

TensorIR facts for generators are collected in ``benchmarks/bench_tvm_gemv_prototype.py``'s docstring.
"""

# The code generator (lowbit IR -> TensorIR) and its launcher, loaded on first use:
# - ``codegen``: ``emit_tvm(kernel_or_lowered, target) -> TVMSource`` (TVMScript text + argument ABI).
# - ``launcher``: ``build_tvm(kernel_or_lowered, target) -> CompiledKernel`` (``.launch(args)``,
#   ``.export(path)``, ``.cuda_source``), ``load_tvm_kernel(path)``.
_LAZY = {"emit_tvm": "codegen", "TVMSource": "codegen", "build_tvm": "launcher", "CompiledKernel": "launcher",
         "load_tvm_kernel": "launcher"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
