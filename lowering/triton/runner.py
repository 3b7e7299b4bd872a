"""Load generated Triton source and run its kernels natively (CUDA) or under Triton's interpreter.

Triton decides between compiling and interpreting when ``@triton.jit`` runs: with ``TRITON_INTERPRET=1``
the decorator returns a :class:`triton.runtime.interpreter.InterpretedFunction` instead of a
:class:`triton.runtime.jit.JITFunction`. Setting that variable would switch *every* Triton kernel in the
process, the user's own included. lowbit therefore never sets it: it imports its generated module normally
and then, in ``interpret`` mode, replaces each of *that module's* ``JITFunction`` objects (also those
wrapped by ``triton.heuristics``) by an ``InterpretedFunction`` around the same Python function. Kernels
and the ``@triton.jit`` helpers they call resolve each other through the module's globals, so the whole
generated module is interpreted and nothing else is.

Two more things make per-kernel interpretation sound (Triton only supports the process-wide switch):
- ``triton.language``'s own library functions (``tl.zeros``, ``tl.sum``, ``tl.cdiv``...) are
  ``JITFunction`` objects, which refuse to be called outside a compiler. While one of lowbit's interpreted
  kernels runs, ``JITFunction.__call__`` interprets the callee (a call to it is an error in every other
  context, so nothing else can observe the change).
- Triton's interpreter patches ``triton.language`` builtins while it runs, and device-function calls leave
  some patches behind (harmless when everything is interpreted, fatal to later native compiles). lowbit
  snapshots the attributes of the ``triton.language`` modules and classes and restores them afterwards.
Interpreted runs hold a process-wide lock, so two of them never interleave. *During* a run the patches are
visible process-wide (as with Triton's own interpreter): a native compile in another thread should not
overlap an interpreted run; before and after, everything is as Triton left it.

>>> src = '''
... import triton
... import triton.language as tl
...
... @triton.jit
... def add(x, y, out, n, BLOCK: tl.constexpr):
...     offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
...     tl.store(out + offs, tl.load(x + offs, mask=offs < n) + tl.load(y + offs, mask=offs < n), mask=offs < n)
... '''
>>> mod = load(src, name="add")                       # interpreter on a CPU, native with CUDA
>>> x = torch.arange(5.0); out = torch.empty(5)       # doctest: +SKIP
>>> mod.launch("add", (1,), x, x, out, 5, BLOCK=8)    # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

from lowbit.errors import BackendError

from .source import import_source, source_hash

__all__ = ["Mode", "cuda_available", "resolve_mode", "interpreted", "is_interpreted", "TritonModule", "load",
           "launch", "run_checked", "clear_loaded"]

Mode = Literal["auto", "native", "interpret"]
_MODES = ("auto", "native", "interpret")

# Serializes lowbit's interpreted kernel runs: Triton's interpreter patches triton.language while it runs.
_INTERPRETER_LOCK = threading.RLock()
_LOADED: dict[tuple[str, str, str], "TritonModule"] = {}
_LOADED_LOCK = threading.Lock()


def cuda_available() -> bool:
    """True when torch sees a CUDA device (Triton can then compile and launch natively)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_mode(mode: str = "auto") -> str:
    """``"auto"`` -> ``"native"`` with CUDA, else ``"interpret"``; ``"native"``/``"interpret"`` unchanged."""
    if mode not in _MODES:
        raise BackendError(f"unknown Triton run mode {mode!r}; expected one of {', '.join(_MODES)}")
    if mode == "auto":
        return "native" if cuda_available() else "interpret"
    return mode


def _language_objects() -> tuple[list[Any], list[type]]:
    """The ``triton.language`` modules and the classes they define (what the interpreter patches)."""
    modules = [m for name, m in list(sys.modules.items())
               if m is not None and (name == "triton.language" or name.startswith("triton.language."))]
    classes: dict[int, type] = {}
    for module in modules:
        for value in list(vars(module).values()):
            if isinstance(value, type) and str(getattr(value, "__module__", "")).startswith("triton.language"):
                classes[id(value)] = value
    return modules, list(classes.values())


@contextlib.contextmanager
def _interpreter_scope() -> Iterator[None]:
    """Interpret ``JITFunction`` calls and undo every ``triton.language`` patch when the run ends."""
    import triton.runtime.interpreter as interpreter_module
    from triton.runtime.jit import JITFunction

    modules, classes = _language_objects()
    saved_modules = [(m, dict(vars(m))) for m in modules]
    saved_classes = [(c, dict(vars(c))) for c in classes]
    original_call = JITFunction.__call__
    cache: dict[int, Any] = {}

    def call_interpreted(self: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped = cache.get(id(self))
        if wrapped is None:
            wrapped = cache[id(self)] = interpreter_module.InterpretedFunction(self.fn)
        return wrapped(*args, **kwargs)

    JITFunction.__call__ = call_interpreted
    try:
        yield
    finally:
        JITFunction.__call__ = original_call
        injected = vars(interpreter_module)
        for module, before in saved_modules:
            namespace = vars(module)
            for key in [k for k in namespace if k not in before]:
                # Keep submodules imported meanwhile and the names the interpreter injects into the globals
                # of functions it rewrote (they need them); drop anything else a patch added.
                value = namespace[key]
                if not isinstance(value, ModuleType) and value is not injected.get(key, _MISSING):
                    del namespace[key]
            for key, value in before.items():
                if namespace.get(key, _MISSING) is not value:
                    namespace[key] = value
        for cls, before in saved_classes:
            for key in [k for k in vars(cls) if k not in before]:
                delattr(cls, key)
            for key, value in before.items():
                if vars(cls).get(key, _MISSING) is not value:
                    setattr(cls, key, value)


_MISSING = object()


@functools.cache
def _interpreted_class() -> type:
    """The InterpretedFunction subclass lowbit uses (created on first use: importing Triton is lazy)."""
    from triton.runtime.errors import InterpreterError
    from triton.runtime.interpreter import InterpretedFunction

    class LowbitInterpretedFunction(InterpretedFunction):
        """An ``InterpretedFunction`` whose launches hold lowbit's interpreter lock and raise BackendError."""

        def run(self, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            with _INTERPRETER_LOCK, _interpreter_scope():
                try:
                    return super().run(*args, grid=grid, warmup=warmup, **kwargs)
                except InterpreterError as exc:
                    raise BackendError(f"Triton interpreter failed running kernel {self.__name__!r}: {exc}",
                                       hint="set LOWBIT_DUMP to keep the generated source; the cause is chained "
                                            "below") from exc

    LowbitInterpretedFunction.__qualname__ = "LowbitInterpretedFunction"
    return LowbitInterpretedFunction


def interpreted(fn: Any) -> Any:
    """An interpreter-backed kernel object for a ``@triton.jit`` function (``JITFunction`` or plain function).

    The result is launched exactly like the original (``kernel[grid](*args)``) and accepts CPU tensors.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    cls = _interpreted_class()
    if isinstance(fn, cls):
        return fn
    if isinstance(fn, (JITFunction, InterpretedFunction)):
        fn = fn.fn
    if not callable(fn):
        raise BackendError(f"expected a @triton.jit function, got {type(fn).__name__}")
    return cls(fn)


def is_interpreted(kernel: Any) -> bool:
    """True when ``kernel`` (or the function a ``triton.heuristics``/``autotune`` wrapper holds) is interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    while not isinstance(kernel, InterpretedFunction) and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return isinstance(kernel, InterpretedFunction)


def _kernel_objects(module: ModuleType) -> dict[str, Any]:
    """Module attributes that are Triton kernels (jit functions, possibly wrapped), in definition order."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import KernelInterface

    found: dict[str, Any] = {}
    for attr, value in vars(module).items():
        if attr.startswith("__"):
            continue
        if isinstance(value, (KernelInterface, InterpretedFunction)):
            found[attr] = value
    return found


def _convert(module: ModuleType, mode: str) -> None:
    """Rebind the module's kernels for ``mode``: interpreted functions, or plain ``JITFunction`` objects."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    done: dict[int, Any] = {}

    def convert_leaf(obj: Any) -> Any:
        if id(obj) not in done:
            if mode == "interpret":
                done[id(obj)] = interpreted(obj)
            else:
                done[id(obj)] = JITFunction(obj.fn) if isinstance(obj, InterpretedFunction) else obj
        return done[id(obj)]

    leaf_types = (JITFunction, InterpretedFunction)
    for attr, value in _kernel_objects(module).items():
        if isinstance(value, leaf_types):
            setattr(module, attr, convert_leaf(value))
            continue
        # triton.heuristics / triton.autotune wrappers: replace the innermost function they hold.
        parent = value
        while hasattr(parent, "fn") and not isinstance(parent.fn, leaf_types):
            parent = parent.fn
        if hasattr(parent, "fn"):
            parent.fn = convert_leaf(parent.fn)


@dataclass(frozen=True)
class TritonModule:
    """A generated Triton module loaded for one run mode.

    ``kernels`` names its ``@triton.jit`` functions; ``module`` is the imported Python module (its launcher
    functions, if the generator wrote any, are ordinary attributes of it).
    """

    module: ModuleType
    path: Path
    mode: str
    digest: str
    kernels: tuple[str, ...]

    def kernel(self, name: str) -> Any:
        """The kernel object called ``name`` (launch it with ``kernel[grid](*args)`` or :meth:`launch`)."""
        if name not in self.kernels:
            raise BackendError(f"generated Triton module has no kernel {name!r}; it defines "
                               f"{', '.join(self.kernels) or 'no kernels'}", hint=f"see {self.path}")
        return getattr(self.module, name)

    def launch(self, name: str, grid: Sequence[int] | Callable[..., Sequence[int]], *args: Any,
               **kwargs: Any) -> None:
        """Run kernel ``name`` over ``grid`` with the given arguments (``kernel[grid](*args, **kwargs)``)."""
        launch(self.kernel(name), grid, *args, **kwargs)


def load(source_text: str, *, mode: str = "auto", name: str | None = None,
         cache_dir: str | os.PathLike | None = None) -> TritonModule:
    """Import generated Triton source for ``mode`` (``auto``, ``native`` or ``interpret``).

    The text is written to a content-addressed file under ``cache_dir`` (default: lowbit's cache folder) and
    imported once per (text, mode, cache folder) in this process; later calls return the same module, so
    Triton's own compile caches stay warm. ``native`` loads without needing a GPU (ahead-of-time compilation
    uses that); launching natively needs CUDA.
    """
    resolved = resolve_mode(mode)
    digest = source_hash(source_text) if isinstance(source_text, str) else ""
    key = (digest, resolved, str(cache_dir) if cache_dir is not None else "")
    with _LOADED_LOCK:
        hit = _LOADED.get(key)
        if hit is not None:
            return hit
        module = import_source(source_text, name=name, cache_dir=cache_dir, module_suffix=resolved)
        _convert(module, resolved)
        loaded = TritonModule(module=module, path=Path(module.__file__ or ""), mode=resolved, digest=digest,
                              kernels=tuple(_kernel_objects(module)))
        _LOADED[key] = loaded
        return loaded


def launch(kernel: Any, grid: Sequence[int] | Callable[..., Sequence[int]], *args: Any, **kwargs: Any) -> None:
    """``kernel[grid](*args, **kwargs)`` with Triton's failures reported as :class:`BackendError`."""
    if not is_interpreted(kernel) and not cuda_available():
        raise BackendError(f"cannot launch Triton kernel {getattr(kernel, '__name__', kernel)!r} natively: "
                           "no CUDA device is available",
                           hint="load the source with mode='interpret' (or 'auto') to run it on the CPU")
    run_checked(kernel, tuple(grid) if not callable(grid) else grid, args, kwargs)


def run_checked(kernel: Any, grid: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """``kernel.run(*args, grid=grid, **kwargs)`` (what ``kernel[grid](*args, **kwargs)`` does, without building
    a launcher per call) with Triton's compile failures reported as :class:`BackendError`. No checks: callers
    that launch the same kernel many times (:class:`~lowbit.lowering.triton.launcher.TritonBoundCall`) made
    them once."""
    try:
        kernel.run(*args, grid=grid, warmup=False, **kwargs)
    except BackendError:
        raise
    except Exception as exc:
        from triton.compiler.errors import CompilationError

        if isinstance(exc, CompilationError):
            raise BackendError(f"Triton failed to compile kernel {getattr(kernel, '__name__', '?')!r}: {exc}",
                               hint="this is a bug in the code generator") from exc
        raise


def clear_loaded() -> None:
    """Forget the in-process table of loaded modules (files on disk stay)."""
    with _LOADED_LOCK:
        _LOADED.clear()
