"""Build TensorIR for a target, export/reload shared libraries, get CUDA source and cubins::

    fn = build(mod, "cpu")                  # mod: an IRModule or a PrimFunc
    fn(a, b, c)                             # torch tensors go in directly (DLPack)
    fn.export("/tmp/add.so"); again = load_library("/tmp/add.so")
    src = cuda_source(mod_for_gpu); cubin = nvcc_cubin(src, "sm_90")
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lowbit.errors import BackendError

from .target import as_target, cuda_target, import_tvm

__all__ = ["TVMKernel", "as_ir_module", "build", "load_library", "cuda_source", "find_nvcc", "nvcc_cubin"]


def as_ir_module(mod: Any) -> Any:
    """An ``IRModule`` from an IRModule, a ``PrimFunc`` (named ``main``) or an ``s_tir.Schedule``."""
    tvm = import_tvm()
    if isinstance(mod, tvm.IRModule):
        return mod
    if isinstance(mod, tvm.tirx.PrimFunc):
        return tvm.IRModule({"main": mod})
    if isinstance(mod, tvm.s_tir.Schedule):
        return mod.mod
    raise BackendError(f"expected a TVM IRModule, PrimFunc or Schedule, got {type(mod).__name__}")


def _entry_name(mod: Any, entry: str | None) -> str:
    names = [gv.name_hint for gv in mod.get_global_vars()]
    if entry is not None:
        if entry not in names:
            raise BackendError(f"the TVM module has no function {entry!r}; it has {', '.join(sorted(names))}")
        return entry
    if "main" in names or len(names) != 1:
        return "main"
    return names[0]


@dataclass(frozen=True)
class TVMKernel:
    """A built TVM kernel: call it like a function with torch tensors / TVM tensors / scalars.

    ``executable`` is TVM's ``runtime.Executable`` (or a loaded ``runtime.Module``), ``entry`` the called
    function's name, ``target`` the target it was built for (a string).
    """

    executable: Any
    entry: str
    target: str

    @property
    def function(self) -> Any:
        return self.executable[self.entry]

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def export(self, path: str | os.PathLike) -> Path:
        """Write a shared library (host code, device code embedded) that :func:`load_library` reads back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.executable.export_library(str(path))
        except Exception as exc:
            raise BackendError(f"exporting the TVM kernel {self.entry!r} to {path} failed: {exc}",
                               hint="a C compiler (gcc/clang) must be on PATH to link the library") from exc
        return path


def build(mod: Any, target: Any = "cpu", *, entry: str | None = None) -> TVMKernel:
    """Compile TensorIR for ``target`` (anything :func:`~lowbit.lowering.tvm.target.as_target` takes)."""
    tvm = import_tvm()
    ir_mod = as_ir_module(mod)
    name = _entry_name(ir_mod, entry)
    tgt = as_target(target)
    try:
        executable = tvm.compile(ir_mod, tgt)
    except Exception as exc:  # TVM raises TVMError / InternalError / ValueError subclasses
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise BackendError(f"TVM could not build {name!r} for {tgt}: {type(exc).__name__}: "
                           f"{lines[-1] if lines else '(no message)'}",
                           hint="the full TVM message is chained below; it is a code generator bug") from exc
    if str(tgt.kind.name) == "cuda" and _cuda_module(executable) is None:
        # TVM silently compiles a function without GPU thread bindings into host code.
        raise BackendError(f"{name!r} was built for CUDA but contains no GPU kernel",
                           hint="bind loops to blockIdx.* / threadIdx.* (sch.bind) before building for CUDA")
    return TVMKernel(executable=executable, entry=name, target=str(tgt))


def load_library(path: str | os.PathLike, entry: str = "main") -> TVMKernel:
    """Load a library written by :meth:`TVMKernel.export`."""
    tvm = import_tvm()
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"no TVM library at {path}")
    try:
        module = tvm.runtime.load_module(str(path))
        module[entry]  # resolve now: a wrong entry name fails here, not at the first call
    except Exception as exc:
        raise BackendError(f"cannot load TVM library {path} (entry {entry!r}): {exc}") from exc
    return TVMKernel(executable=module, entry=entry, target=f"library:{path.name}")


def _cuda_module(executable: Any) -> Any:
    module = getattr(executable, "mod", executable)
    stack = [module]
    while stack:
        current = stack.pop()
        if str(current.kind) == "cuda":
            return current
        stack.extend(current.imports)
    return None


def cuda_source(mod_or_executable: Any, arch: str = "sm_90") -> str:
    """The CUDA C++ source TVM generates: from a built kernel/executable, or by building ``mod`` for ``arch``."""
    tvm = import_tvm()
    if isinstance(mod_or_executable, TVMKernel):
        executable = mod_or_executable.executable
    elif isinstance(mod_or_executable, (tvm.runtime.Executable, tvm.runtime.Module)):
        executable = mod_or_executable
    else:
        executable = build(mod_or_executable, cuda_target(arch)).executable
    device = _cuda_module(executable)
    if device is None:
        raise BackendError("the TVM module holds no CUDA code",
                           hint="build it for a CUDA target (e.g. 'sm_90') with thread-bound loops")
    return str(device.inspect_source("cuda"))


def find_nvcc() -> str | None:
    """Path of ``nvcc`` (PATH, then ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``), or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


def nvcc_cubin(cuda_source_text: str, arch: str = "sm_90", *, options: Sequence[str] = ("-O3",),
               timeout: float = 300.0) -> bytes:
    """Compile CUDA source to a cubin for ``arch`` with nvcc; BackendError (with nvcc's output) on failure."""
    from .target import cuda_target_dict

    arch = cuda_target_dict(arch)["arch"]
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendError("nvcc was not found, so CUDA source cannot be compiled to a cubin",
                           hint="install the CUDA toolkit or set CUDA_HOME")
    with tempfile.TemporaryDirectory(prefix="lowbit-nvcc-") as tmp:
        src = Path(tmp) / "kernel.cu"
        out = Path(tmp) / "kernel.cubin"
        src.write_text(cuda_source_text)
        cmd = [nvcc, "-cubin", f"-arch={arch}", *options, "-o", str(out), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"nvcc did not finish within {timeout:.0f} s") from exc
        if proc.returncode != 0 or not out.is_file():
            raise BackendError(f"nvcc failed ({' '.join(cmd[1:4])}):\n{(proc.stderr or proc.stdout).strip()}")
        return out.read_bytes()
