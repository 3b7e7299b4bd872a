"""Loading the library's kernel files and compiling them for a backend.

The kernels live next to this module as ``.lbk`` files written in lowbit's DSL (``matmul.lbk``,
``attention.lbk``). :func:`kernel_ir` specializes one of them on constants (cached);
:func:`compiled` hands the IR to :func:`lowbit.driver.compile_ir` for a backend (cached too: launching the
same specialization again costs one dictionary lookup).

>>> ir = kernel_ir("matmul.lbk", "lowbit_matmul", W="int3", G=32, BK=64)
>>> ir.name, [p.name for p in ir.params][:3]
('lowbit_matmul', ['x', 'q', 's'])
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from ..errors import BackendError, KernelArgumentError

__all__ = ["KERNEL_DIR", "BACKEND_NAMES", "kernel_ir", "compiled", "resolve_backend", "device_of",
           "pow2_at_least"]

#: the folder holding the library's kernel files
KERNEL_DIR = Path(__file__).resolve().parent

#: what ``backend=`` accepts (``None`` = the best available for the tensors' device)
BACKEND_NAMES = (None, "tvm", "triton", "interpret")

_LOCK = threading.Lock()
_COMPILED: dict[tuple, Any] = {}


@functools.lru_cache(maxsize=None)
def _kernel_file(name: str) -> Any:
    from ..dsl import load_file

    return load_file(KERNEL_DIR / name)


@functools.lru_cache(maxsize=512)
def _kernel_ir_cached(file: str, kernel: str, constants: tuple[tuple[str, Any], ...]) -> Any:
    return _kernel_file(file).compile(kernel, dict(constants)).ir


def kernel_ir(file: str, kernel: str, **constants: Any) -> Any:
    """The verified IR of ``kernel`` in the library file ``file``, specialized on ``constants``."""
    return _kernel_ir_cached(file, kernel, tuple(sorted(constants.items())))


def pow2_at_least(v: int) -> int:
    """The smallest power of two >= ``v`` (1 for ``v <= 1``): a tile extent covering ``v``.

    >>> pow2_at_least(5632), pow2_at_least(8), pow2_at_least(0)
    (8192, 8, 1)
    """
    return 1 << max(0, int(v) - 1).bit_length()


def device_of(tensor: Any) -> str:
    """``"cuda"`` for CUDA tensors, else ``"cpu"``."""
    dev = getattr(tensor, "device", None)
    return "cuda" if dev is not None and dev.type == "cuda" else "cpu"


def _registered(backend: str, kind: str) -> bool:
    from .. import driver

    spec = driver.BACKENDS.get((backend, kind))
    if spec is None:
        return False
    try:
        return bool(spec.available())
    except Exception:  # noqa: BLE001 - a broken toolchain is "not available"
        return False


def resolve_backend(backend: str | None, device: str) -> str:
    """The backend to use: ``backend`` checked against ``device``, or the best available one for ``None``.

    ``None`` prefers Triton on CUDA devices and TVM on CPUs; on a CPU without TVM it falls back to
    Triton's interpreter and then to lowbit's reference interpreter (slow, but always there).
    """
    if backend not in BACKEND_NAMES:
        raise KernelArgumentError(f"backend must be one of None, 'tvm', 'triton', 'interpret'; got {backend!r}")
    if backend is None:
        order = ("triton", "tvm") if device == "cuda" else ("tvm", "triton", "interpret")
        for name in order:
            if _registered(name, device if name != "interpret" else "cpu"):
                return name
        raise BackendError(f"no lowbit backend can run kernels on {device} here",
                           hint="install triton (CUDA) or apache-tvm")
    if backend == "interpret":
        if device != "cpu":
            raise KernelArgumentError("backend='interpret' runs on the CPU, but the tensors are on a CUDA device",
                                      hint="move them with .cpu(), or use backend='triton' / 'tvm'")
        return backend
    if not _registered(backend, device):
        raise BackendError(f"the {backend} backend is not available for {device} tensors here",
                           hint="use backend=None to pick an available one, or backend='interpret' on a CPU")
    return backend


def compiled(file: str, kernel: str, backend: str, device: str, **constants: Any) -> Any:
    """``kernel`` of ``file`` specialized on ``constants`` and compiled for ``backend`` on ``device``
    (a :class:`lowbit.driver.CompiledKernel`; launch it with every parameter by name)."""
    key = (file, kernel, backend, device, tuple(sorted(constants.items())))
    with _LOCK:
        hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    from ..driver import compile_ir

    ir = kernel_ir(file, kernel, **constants)
    result = compile_ir(ir, backend, device=device)
    with _LOCK:
        _COMPILED[key] = result
    return result
