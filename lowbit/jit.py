"""``@lowbit.jit``: write a kernel as a Python function, get checked IR, run it.

The decorated function is never executed by Python: its source (``inspect.getsource``, dedented,
decorators skipped) goes through the same front end as ``.lbk`` files, and names it does not bind come
from its Python scope (ints, floats, dtypes, layouts, ``lowbit.dsl.symbols``). Reported locations are
those of the real ``.py`` file.

    from __future__ import annotations        # or declare shape names: M, K = lowbit.dsl.symbols("M K")
    from lowbit.dsl import Out
    import lowbit

    @lowbit.jit
    def scale(x: f32[N], y: Out[f32[N]], BLOCK: const = 256):
        grid(cdiv(N, BLOCK))
        o = block(0) * BLOCK
        store(y, load(x, [o], [BLOCK]) * 2.0, [o])

    scale.ir()                      # verified, specialized IR (constants: defaults or keywords)
    scale(x, y)                     # runs on numpy arrays / CPU torch tensors, writing y in place
    scale(x, y, BLOCK=128)          # constants are keywords

Backends: ``backend="interpret"`` (the IR's reference interpreter) for now; the Triton and TVM backends
slot into :data:`BACKENDS` later. Specializations are cached per constant values.
"""
from __future__ import annotations

import functools
import inspect
import linecache
import textwrap
import threading
from typing import Any, Callable, Mapping

from .errors import CompileError

_FUTURE_ANNOTATIONS = 0x1000000  # __future__.annotations.compiler_flag


def function_source(fn: Callable) -> Any:
    """The :class:`lowbit.dsl.source.Source` of a function's ``def`` (decorators skipped), positioned in its
    real file."""
    from lowbit.dsl.source import Source

    name = getattr(fn, "__name__", repr(fn))
    if not inspect.isfunction(fn) or name == "<lambda>":
        raise CompileError(f"@lowbit.jit expects a function defined with 'def', got {type(fn).__name__} {name}")
    try:
        lines, start = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or inspect.getfile(fn)
    except (OSError, TypeError):
        raise CompileError(f"cannot read the source of '{name}'",
                           hint="define the kernel in a file (not an interactive session), or put it in a .lbk "
                                "file and use lowbit.dsl.compile_source") from None
    text = "".join(lines)
    dedented = textwrap.dedent(text)
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    indent = len(lines[first]) - len(dedented.splitlines(True)[first]) if lines else 0
    dlines = dedented.splitlines(True)
    def_index = _def_line(dedented, dlines)
    file_lines = linecache.getlines(filename) or None
    return Source("".join(dlines[def_index:]), filename, line_offset=start - 1 + def_index, col_offset=indent,
                  file_lines=file_lines)


def _def_line(text: str, lines: list[str]) -> int:
    """Index of the ``def`` line (after decorators, which may span several lines)."""
    import ast

    try:
        tree = ast.parse(text)
        node = tree.body[0]
        if isinstance(node, ast.AsyncFunctionDef):
            raise CompileError("@lowbit.jit cannot compile an 'async def'")
        return node.lineno - 1
    except SyntaxError:
        for i, line in enumerate(lines):
            if line.lstrip().startswith("def "):
                return i
        return 0


class JitFunction:
    """A kernel written as a Python function (see the module docstring)."""

    def __init__(self, fn: Callable, *, backend: str | None = "interpret"):
        self.fn = fn
        self.backend = backend
        functools.update_wrapper(self, fn)
        self._source = None
        self._ast = None
        self._compiled: dict[tuple, Any] = {}  # constants -> front-end result
        self._dispatch: dict[tuple, Any] = {}  # (constants, backend, device) -> driver CompiledKernel
        self._lock = threading.Lock()

    # -- front end --
    @property
    def kernel_source(self) -> Any:
        """The kernel's :class:`~lowbit.dsl.source.Source` (real file positions)."""
        if self._source is None:
            self._source = function_source(self.fn)
        return self._source

    @property
    def source_ast(self) -> Any:
        """The kernel's syntax tree (:class:`lowbit.dsl.nodes.FunctionDef`)."""
        if self._ast is None:
            from lowbit.dsl.nodes import FunctionDef
            from lowbit.dsl.parser import parse

            module = parse(self.kernel_source)
            fns = [s for s in module.body if isinstance(s, FunctionDef)]
            if len(fns) != 1 or len(module.body) != 1:  # pragma: no cover - getsource gives one def
                raise CompileError(f"expected exactly one function in the source of '{self.__name__}'")
            self._ast = fns[0]
        return self._ast

    def compile(self, **constants: Any) -> Any:
        """The checked kernel for these constants (:class:`lowbit.dsl.frontend.CompiledKernel`), cached."""
        key = _key(constants)
        with self._lock:
            hit = self._compiled.get(key)
        if hit is not None:
            return hit
        from lowbit.dsl.frontend import compile_function, python_constant
        from lowbit.dsl.scope import PythonScope

        values = {k: python_constant(v) for k, v in constants.items()}
        compiled = compile_function(self.source_ast, self.kernel_source, PythonScope.of_function(self.fn), values)
        with self._lock:
            self._compiled[key] = compiled
        return compiled

    def ir(self, **constants: Any) -> Any:
        """The specialized, verified IR (:class:`lowbit.ir.Kernel`) for these constants.

        Constants not given take their defaults; one without a default must be given."""
        return self.compile(**constants).ir

    @property
    def uses_future_annotations(self) -> bool:
        code = getattr(self.fn, "__code__", None)
        return bool(code is not None and code.co_flags & _FUTURE_ANNOTATIONS)

    # -- compiling and running --
    def compiled(self, *, backend: str | None = None, device: str = "cpu", **constants: Any) -> Any:
        """The :class:`lowbit.driver.CompiledKernel` for these constants and backend (compiled once, cached)."""
        target = backend if backend is not None else self.backend
        key = (_key(constants), target, device)
        hit = self._dispatch.get(key)  # the per-call fast path: no IR printing or hashing
        if hit is None:
            from .driver import compile_ir

            hit = compile_ir(self.ir(**constants), target, device=device)
            with self._lock:
                self._dispatch[key] = hit
        return hit

    def source(self, *, backend: str | None = None, **constants: Any) -> str:
        """The generated code (Triton Python, TensorIR text, or IR text for ``interpret``) for these constants."""
        return self.compiled(backend=backend, **constants).source

    def __call__(self, *args: Any, **constants: Any) -> None:
        """Run the kernel on tensors (torch tensors or numpy arrays; outputs written in place) and scalars, in
        parameter order; constants as keywords."""
        return self.run(*args, backend=self.backend, **constants)

    def run(self, *args: Any, backend: str | None = None, **constants: Any) -> None:
        """Like calling the kernel, with an explicit ``backend`` (None: the default for this function)."""
        front = self.compile(**constants)
        names = [name for name, _ in front.signature.runtime]
        if len(args) != len(names):
            raise CompileError(f"{self.__name__}() takes {len(names)} tensor/scalar argument"
                               f"{'s' if len(names) != 1 else ''} ({', '.join(names)}), got {len(args)}",
                               hint="compile-time constants are passed by keyword")
        device = next((str(a.device) for a in args if type(a).__module__.startswith("torch")
                       and hasattr(a, "device")), "cpu")
        kernel = self.compiled(backend=backend, device=device, **constants)
        kernel.launch(dict(zip(names, args)))

    def __repr__(self) -> str:
        return f"<lowbit.jit kernel {self.__name__}>"


def _key(constants: Mapping[str, Any]) -> tuple:
    items = []
    for k, v in sorted(constants.items()):
        try:
            hash(v)
            items.append((k, type(v).__name__, v))
        except TypeError:
            items.append((k, type(v).__name__, repr(v)))
    return tuple(items)


def jit(fn: Callable | None = None, *, backend: str | None = "interpret") -> Any:
    """Decorator: ``@lowbit.jit`` or ``@lowbit.jit(backend="interpret")`` -> :class:`JitFunction`."""
    if fn is None:
        return lambda f: JitFunction(f, backend=backend)
    return JitFunction(fn, backend=backend)


__all__ = ["jit", "JitFunction", "function_source"]
