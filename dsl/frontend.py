"""The front end's entry points: kernel files (``.lbk``) and kernel source texts -> checked IR.

A kernel file holds top-level constants (``NAME = value``) and one or more kernels (``def``); a
``--const NAME=VALUE`` (or ``constants={...}``) overrides a file constant or sets a kernel's constant
parameter. ``@lowbit.jit`` functions go through :func:`compile_function` with their Python scope.

>>> text = '''
... BLOCK = 4
... def double(x: f32[N], y: Out[f32[N]]):
...     grid(cdiv(N, BLOCK))
...     o = block(0) * BLOCK
...     store(y, load(x, [o], [BLOCK]) * 2.0, [o])
... '''
>>> k = compile_source(text, "double.lbk")
>>> k.ir.name, [p.intent for p in k.ir.params], k.ir.grid
('double', ['in', 'out'], (SymOp(op='cdiv', lhs=Sym(name='N'), rhs=4),))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lowbit.errors import CompileError

from . import nodes as n
from .parser import parse, parse_expression
from .scope import ConstantScope, OuterScope, from_python
from .sema import Analyzer, KernelSignature
from .source import Source


@dataclass(frozen=True)
class CompiledKernel:
    """A type-checked kernel: its verified IR, syntax tree, signature and source."""

    ir: Any  # lowbit.ir.nodes.Kernel
    ast: n.FunctionDef
    signature: KernelSignature
    source: Source = field(repr=False)

    @property
    def name(self) -> str:
        return self.ast.name


@dataclass
class KernelFile:
    """A parsed kernel file: its syntax tree, top-level constants (syntax) and kernels."""

    source: Source
    module: n.Module
    kernels: dict[str, n.FunctionDef]
    constant_defs: dict[str, n.Assign]

    def kernel_names(self) -> list[str]:
        return list(self.kernels)

    def select(self, name: str | None = None) -> n.FunctionDef:
        """The kernel called ``name`` (or the only one)."""
        if name is None:
            if len(self.kernels) == 1:
                return next(iter(self.kernels.values()))
            if not self.kernels:
                raise CompileError(f"{self.source.filename} defines no kernel",
                                   hint="a kernel is a 'def name(params):' with a body")
            raise CompileError(f"{self.source.filename} defines {len(self.kernels)} kernels "
                               f"({', '.join(self.kernels)})", hint="choose one with -k NAME")
        if name not in self.kernels:
            import difflib

            close = difflib.get_close_matches(name, list(self.kernels), n=1)
            known = ", ".join(self.kernels) or "none"
            raise CompileError(f"{self.source.filename} has no kernel '{name}'",
                               hint=(f"did you mean '{close[0]}'? " if close else "") + f"kernels: {known}")
        return self.kernels[name]

    def constants(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The file's constants evaluated in order (``overrides`` replace definitions and add names)."""
        overrides = dict(overrides or {})
        values: dict[str, Any] = {}
        errors: list[CompileError] = []
        for name, stmt in self.constant_defs.items():
            if name in overrides:
                values[name] = overrides[name]
                continue
            analyzer = Analyzer(self.source, ConstantScope({**values, **overrides}))
            try:
                values[name] = _check_constant_value(analyzer, stmt, analyzer.eval(stmt.value))
            except CompileError as e:
                errors.extend(e.errors)
        for name, value in overrides.items():
            values.setdefault(name, value)
        _raise_all(errors)
        return values

    def compile(self, name: str | None = None, constants: Mapping[str, Any] | None = None) -> CompiledKernel:
        """Type-check one kernel and build its verified IR."""
        fn = self.select(name)
        values = self.constants(constants)
        return compile_function(fn, self.source, ConstantScope(values), constants,
                                file_constants=self.constant_defs.keys())


def _check_constant_value(analyzer: Analyzer, stmt: n.Assign, value: Any) -> Any:
    from .values import DTypeValue, LayoutValue

    ok = isinstance(value, (bool, int, float, str, DTypeValue, LayoutValue, tuple)) or value is None
    if not ok and not _is_dim(value):
        raise analyzer.err(stmt.value, f"a file constant must be a number, dtype or layout, got "
                           f"{analyzer_describe(value)}")
    return value


def _is_dim(v: Any) -> bool:
    from lowbit.ir.symbolic import Sym, SymOp

    return isinstance(v, (Sym, SymOp))


def analyzer_describe(v: Any) -> str:
    from .sema import describe

    return describe(v)


def _raise_all(errors: list[CompileError]) -> None:
    if errors:
        first = errors[0]
        raise CompileError(first.message, location=first.location, hint=first.hint, notes=errors[1:20])


def parse_file_text(text: str, filename: str = "<string>") -> KernelFile:
    """Parse a kernel file's text and sort its top level into constants and kernels."""
    source = Source(text, filename)
    module = parse(source)
    kernels: dict[str, n.FunctionDef] = {}
    constant_defs: dict[str, n.Assign] = {}
    errors: list[CompileError] = []
    for i, stmt in enumerate(module.body):
        loc = source.span_location(stmt.span)
        if isinstance(stmt, n.FunctionDef):
            if stmt.name in kernels:
                errors.append(CompileError(f"kernel '{stmt.name}' is defined twice", location=loc))
            kernels[stmt.name] = stmt
        elif isinstance(stmt, n.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], n.Name):
            name = stmt.targets[0].id
            if name in constant_defs:
                errors.append(CompileError(f"constant '{name}' is defined twice", location=loc,
                                           hint="a file constant is defined once; override it with --const"))
            constant_defs[name] = stmt
        elif isinstance(stmt, n.ExprStmt) and isinstance(stmt.value, n.Constant) and \
                isinstance(stmt.value.value, str):
            continue  # docstring / comment string
        elif isinstance(stmt, n.Pass):
            continue
        else:
            errors.append(CompileError(
                "only constants (NAME = value) and kernels (def ...) may appear at the top level of a kernel "
                "file", location=loc, hint="move statements into a kernel body"))
    _raise_all(errors)
    return KernelFile(source, module, kernels, constant_defs)


def load_file(path: str | Path) -> KernelFile:
    """Read and parse a ``.lbk`` kernel file. A missing or unreadable file is a CompileError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompileError(f"no such kernel file: {path}") from None
    except IsADirectoryError:
        raise CompileError(f"{path} is a directory, not a kernel file") from None
    except UnicodeDecodeError as e:
        raise CompileError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CompileError(f"cannot read {path}: {e.strerror or e}") from None
    return parse_file_text(text, str(path))


def compile_source(text: str, filename: str = "<string>", kernel: str | None = None,
                   constants: Mapping[str, Any] | None = None) -> CompiledKernel:
    """Parse a kernel file's text and compile one kernel (``kernel`` may be omitted if there is one)."""
    return parse_file_text(text, filename).compile(kernel, constants)


def compile_function(fn: n.FunctionDef, source: Source, outer: OuterScope | None,
                     constants: Mapping[str, Any] | None = None, file_constants=()) -> CompiledKernel:
    """Analyze one parsed kernel with the names visible to it; returns the verified IR."""
    analyzer = Analyzer(source, outer, constants, file_constants)
    kernel = analyzer.analyze(fn)
    assert analyzer.signature is not None
    return CompiledKernel(kernel, fn, analyzer.signature, source)


def parse_constant(name: str, text: str) -> Any:
    """The compile-time value of a ``--const NAME=VALUE`` text: an int, float, bool, dtype or layout
    expression (``128``, ``u4``, ``spatial(2, 4).local(2, 1)``).

    >>> parse_constant("G", "64"), parse_constant("W", "u4")
    (64, DTypeValue(name='uint4'))
    """
    if not name.isidentifier():
        raise CompileError(f"--const: '{name}' is not a valid name", hint="use --const NAME=VALUE")
    source_name = f"<--const {name}>"
    expr = parse_expression(text, source_name)
    analyzer = Analyzer(Source(text.strip(), source_name), None)
    value = analyzer.eval(expr)
    from .values import DTypeValue, LayoutValue

    if not isinstance(value, (bool, int, float, DTypeValue, LayoutValue)):
        from .sema import describe

        raise CompileError(f"--const {name}={text}: expected a number, a dtype or a layout, got {describe(value)}")
    return value


def python_constant(value: Any) -> Any:
    """A constant given from Python (``kernel.ir(W="u4")``) as a compile-time value (strings stay for
    dtype parameters to interpret)."""
    return value if isinstance(value, str) else from_python(value)


__all__ = ["CompiledKernel", "KernelFile", "load_file", "parse_file_text", "compile_source",
           "compile_function", "parse_constant", "python_constant"]
