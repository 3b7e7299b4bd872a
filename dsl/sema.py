"""Semantic analysis: a kernel's syntax tree -> checked, typed tile IR (through ``lowbit.ir``'s builder).

It resolves names (kernel variables, then parameters, then the outer scope, then built-ins), folds
compile-time arithmetic, checks dtypes and shapes with user-level messages, and emits IR. Rules:

* **Compile-time values**: ints, floats, bools, dtypes, layouts and size expressions over shape symbols
  (``K // G``) are computed while analyzing, never emitted. Tile shapes must be compile-time ints.
* **Run-time values**: tiles and scalars (``block(0) * BM``, loaded tiles, loop variables) are IR values.
  Mixing the two materializes the compile-time side (a literal, or ``symbol("K")`` arithmetic).
* **Promotion and broadcasting**: the IR's (``lowbit/ir/README.md``): weak Python literals, int with
  float -> the float, f16 with bf16 -> f32, numpy broadcasting. Low-bit code tiles have no arithmetic.
* **Control flow**: ``if`` on a compile-time condition keeps only the taken branch (a "static if");
  on a run-time scalar it becomes an IR ``if`` whose results are the variables either branch assigns.
  ``for ... in range(...)`` becomes an IR ``for``; variables reassigned in the body are loop-carried
  and must keep their type.
* **Errors** are collected per statement (an error poisons only the names its statement assigns), so
  several independent mistakes are reported together.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from lowbit.errors import CompileError, LowbitError, SourceLocation

from . import builtins as bi
from . import nodes as n
from .scope import OuterScope, Unusable, builtin, builtin_names, dtype_value, from_python
from .source import Source, Span
from .values import (BoundMethod, BuiltinFunction, DTypeValue, LayoutValue, Marker, Namespace,
                     TensorTypeValue)

_MAX_ERRORS = 20
_BIG = 1 << 62
_BINOP_IR = {"+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod", "&": "and",
             "|": "or", "^": "xor", "<<": "shl", ">>": "shr"}
_CMP_IR = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
_SIZE_OPS = ("+", "-", "*", "//", "%")


# ---------------------------------------------------------------------------------------------------
# run-time-only kinds of values the analyzer passes around
@dataclass(frozen=True)
class TensorRef:
    """A global tensor parameter: its IR value and whether the kernel may write it."""

    value: Any  # lowbit.ir.nodes.Value
    writable: bool

    @property
    def name(self) -> str:
        return self.value.name


@dataclass(frozen=True)
class Undefined:
    """A name that is not defined on every path to here (the message says why)."""

    why: str


class _Poisoned(Exception):
    """A use of a value whose definition already failed: abort the statement quietly."""


POISON = object()


@dataclass
class KernelSignature:
    """What a kernel takes: run-time parameters in order (tensors and scalars) and compile-time ones."""

    name: str
    runtime: list[tuple[str, str]] = field(default_factory=list)      # (name, "tensor" | "scalar")
    constants: dict[str, str] = field(default_factory=dict)            # name -> const | dtype | layout ...
    values: dict[str, Any] = field(default_factory=dict)               # constant name -> value used
    tensor_types: dict[str, TensorTypeValue] = field(default_factory=dict)
    scalar_types: dict[str, str] = field(default_factory=dict)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, bool))


def _is_dim(v: Any) -> bool:
    from lowbit.ir.symbolic import Sym, SymOp

    return isinstance(v, (Sym, SymOp))


def _is_value(v: Any) -> bool:
    from lowbit.ir.nodes import Value

    return isinstance(v, Value)


def describe(v: Any) -> str:
    """How messages name a value: 'an f16[16, 64] tile', 'the int 64', 'the shape symbol K', ..."""
    from lowbit.ir.symbolic import dim_str
    from lowbit.ir.types import shape_str, short_name

    if _is_value(v):
        t = v.type
        dt = short_name(t.dtype)
        if t.scope == "shared":
            return f"a shared {dt}{shape_str(t.shape)} tile"
        if t.shape == ():
            return f"{_article(dt)} {dt} scalar"
        return f"{_article(dt)} {dt}{shape_str(t.shape)} tile"
    if isinstance(v, TensorRef):
        t = v.value.type
        return f"the global tensor '{v.name}' ({short_name(t.dtype)}{shape_str(t.shape)})"
    if isinstance(v, bool):
        return f"the bool {v}"
    if isinstance(v, int):
        return f"the int {v}"
    if isinstance(v, float):
        return f"the float {v}"
    if _is_dim(v):
        return f"the size '{dim_str(v)}'"
    if isinstance(v, DTypeValue):
        return f"the dtype {v}"
    if isinstance(v, LayoutValue):
        return f"the layout {v}"
    if isinstance(v, TensorTypeValue):
        return f"the tensor type {v}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)}"
    if isinstance(v, BuiltinFunction):
        return f"the function {v.name}()"
    if isinstance(v, BoundMethod):
        return f"the method .{v.name}()"
    if isinstance(v, Marker):
        return f"the parameter kind '{v.kind}'"
    if isinstance(v, Namespace):
        return f"the module {v.name}"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "None"
    return type(v).__name__


class Analyzer:
    """Analyzes one kernel (``FunctionDef``) into IR; also evaluates constant expressions (``kb=None``).

    >>> from lowbit.dsl.parser import parse
    >>> fn = parse("def k(x: f32[N], y: Out[f32[N]]):\\n    grid(cdiv(N, 4))\\n"
    ...            "    o = block(0) * 4\\n    store(y, load(x, [o], [4]) * 2.0, [o])\\n").body[0]
    >>> kernel = Analyzer(Source("")).analyze(fn)
    >>> [p.intent for p in kernel.params]
    ['in', 'out']
    """

    def __init__(self, source: Source, outer: OuterScope | None = None,
                 constants: Mapping[str, Any] | None = None, file_constants: Iterable[str] = ()):
        self.source = source
        self.outer = outer
        self.provided = dict(constants or {})
        self.file_constants = set(file_constants)
        self.used_outer: set[str] = set()
        self.kb = None
        self.vars: dict[str, Any] = {}
        self.errors: list[CompileError] = []
        self.grid_set = False
        self.grid_rank = 0
        self.grid_attempted = 0
        self.depth = 0              # nesting of for/if (grid() only at depth 0)
        self.annotation_mode = False  # unbound names in shapes become size symbols
        self.signature: KernelSignature | None = None
        self.last_assign: dict[str, Span] = {}

    # -----------------------------------------------------------------------------------------------
    # errors and locations
    def loc(self, node: n.Node | Span | None) -> SourceLocation | None:
        if node is None:
            return None
        span = node if isinstance(node, Span) else node.span
        return self.source.span_location(span)

    def err(self, node: n.Node | Span | None, message: str, hint: str | None = None) -> CompileError:
        return CompileError(message, location=self.loc(node), hint=hint)

    def text(self, node: n.Node) -> str:
        """The source text of a node (its first line), for messages."""
        sp = node.span
        lines = self.source.lines()
        if not 1 <= sp.line <= len(lines):
            return "?"
        line = lines[sp.line - 1]
        end = sp.end_column if sp.end_line == sp.line else len(line) + 1
        text = line[sp.column - 1:end - 1].strip()
        return text if len(text) <= 40 else text[:37] + "..."

    def record(self, error: CompileError) -> None:
        for e in error.errors:
            if len(self.errors) < _MAX_ERRORS and not any(_same_error(e, old) for old in self.errors):
                self.errors.append(CompileError(e.message, location=e.location, hint=e.hint))

    def raise_errors(self) -> None:
        if self.errors:
            ordered = sorted(self.errors, key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0))
            first, rest = ordered[0], ordered[1:]
            raise CompileError(first.message, location=first.location, hint=first.hint, notes=rest)

    def guard(self, node: n.Node, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` converting lowbit errors from below (builder, layouts, dtypes) into located
        CompileErrors."""
        try:
            if self.kb is not None:
                with self.kb.at(self.loc(node)):
                    return fn()
            return fn()
        except CompileError as e:
            if e.location is None:
                raise CompileError(e.message, location=self.loc(node), hint=e.hint, notes=e.notes) from None
            raise
        except LowbitError as e:
            raise CompileError(e.message, location=self.loc(node), hint=e.hint) from None
        except ZeroDivisionError:
            raise self.err(node, "division by zero in a compile-time expression") from None
        except OverflowError:
            raise self.err(node, "a compile-time number is too large") from None

    # -----------------------------------------------------------------------------------------------
    # names
    def lookup(self, node: n.Name) -> Any:
        name = node.id
        if name in self.vars:
            value = self.vars[name]
            if value is POISON:
                raise _Poisoned()
            if isinstance(value, Undefined):
                raise self.err(node, f"'{name}' may be undefined here: {value.why}",
                               f"assign '{name}' before the loop / if so it is defined on every path")
            return value
        if self.outer is not None:
            found, value = self.outer.lookup(name)
            if found:
                self.used_outer.add(name)
                if isinstance(value, Unusable):
                    b = builtin(name)
                    if b is not None:  # e.g. numpy's `zeros` imported into the module: the language's wins
                        return b
                    if self.annotation_mode:
                        raise self.err(node, f"'{name}' in a shape is {value.describe()}, not a size",
                                       f"a shape entry is an int, a constant or a size symbol: declare it with "
                                       f"{name} = lowbit.dsl.symbols('{name}'), or add 'from __future__ import "
                                       f"annotations' to the module (then undeclared names are size symbols)")
                    raise self.err(node, f"'{name}' is {value.describe()}, which a kernel cannot use",
                                   "from Python a kernel can use ints, floats, bools, dtypes, layouts and "
                                   "lowbit.dsl.symbols(); pass tensors as arguments")
                return value
        b = builtin(name)
        if b is not None:
            return b
        if self.annotation_mode:
            from lowbit.ir.symbolic import Sym

            return Sym(name)
        raise self.unknown_name(node)

    def unknown_name(self, node: n.Name) -> CompileError:
        name = node.id
        pool = list(self.vars) + builtin_names() + (self.outer.names() if self.outer else [])
        close = difflib.get_close_matches(name, pool, n=1, cutoff=0.7)
        hint = f"did you mean '{close[0]}'?" if close else None
        import re

        if re.match(r"^(u|i|f|int|uint|float)\d", name):
            hint = ("lowbit dtypes: int1..int8 and uint1..uint8 (i3, u4), float{n}_e{E}m{M} (f4e2m1, f6e3m2), "
                    "float8_e4m3fn, float8_e5m2, f16, bf16, f32, i32")
        if name in ("range",):
            hint = "range(...) is only used as 'for i in range(...)'"
        elif name in ("len", "print", "int", "float", "list", "tuple", "enumerate", "zip"):
            hint = f"Python's {name}() is not part of the kernel language"
        return self.err(node, f"unknown name '{name}'", hint)

    # -----------------------------------------------------------------------------------------------
    # the kernel
    def analyze(self, fn: n.FunctionDef) -> Any:
        """Build and verify the IR of ``fn``; raises CompileError (with all errors found) on mistakes."""
        try:
            return self._analyze(fn)
        except RecursionError:
            raise self.err(_name_span(fn), f"kernel '{fn.name}' is nested too deeply to analyze",
                           "split deeply nested expressions into several assignments") from None

    def _analyze(self, fn: n.FunctionDef) -> Any:
        from lowbit.ir.builder import KernelBuilder

        self.kb = KernelBuilder(fn.name, loc=self.loc(Span(fn.span.line, fn.span.column, fn.span.line,
                                                           fn.span.column + 3)))
        self.signature = KernelSignature(fn.name)
        self.parameters(fn)
        body = list(fn.body)
        if fn.docstring is not None:
            body = body[1:]
        self.block(body)
        if not self.grid_set and not self.grid_attempted:
            self.record(self.err(_name_span(fn), f"kernel '{fn.name}' never calls grid(...)",
                                 "declare the launch grid first, e.g. grid(cdiv(N, BLOCK)) (grid(1) for one "
                                 "program)"))
        self.check_unused_constants(fn)
        self.raise_errors()
        try:
            return self.kb.build(verify=True)
        except CompileError as e:
            if e.location is None:
                raise CompileError(e.message, location=self.loc(fn), hint=e.hint, notes=e.notes) from None
            raise

    def check_unused_constants(self, fn: n.FunctionDef) -> None:
        assert self.signature is not None
        from .scope import ConstantScope

        known = set(self.signature.constants) | self.file_constants
        if isinstance(self.outer, ConstantScope):  # a kernel file: --const may also set a free name
            known |= self.used_outer
        for name in self.provided:
            if name not in known:
                pool = sorted(self.signature.constants)
                close = difflib.get_close_matches(name, pool, n=1)
                hint = (f"did you mean '{close[0]}'? " if close else "") + \
                    (f"its constants are: {', '.join(pool)}" if pool else "it has no constant parameters")
                self.record(self.err(_name_span(fn), f"kernel '{fn.name}' has no constant '{name}'", hint))

    # -----------------------------------------------------------------------------------------------
    # parameters
    def parameters(self, fn: n.FunctionDef) -> None:
        """Declare every parameter; a mistake in one is recorded and poisons only that name."""
        sig = self.signature
        seen: set[str] = set()
        kinds: dict[str, Any] = {}
        for p in fn.params:
            if p.name in seen:
                self.record(self.err(p, f"duplicate parameter '{p.name}'"))
                continue
            seen.add(p.name)
            try:
                kinds[p.name] = self.parameter_kind(p)
            except CompileError as e:
                self.record(e)
                self.vars[p.name] = POISON
        # compile-time parameters first: tensor shapes may use them
        for p in fn.params:
            kind = kinds.pop(p.name, None) if p.name in kinds and isinstance(kinds[p.name], str) \
                and kinds[p.name] != "tensor" else None
            if kind is None:
                continue
            try:
                value = self.constant_param(p, kind)
                sig.constants[p.name] = kind
                sig.values[p.name] = value
                self.vars[p.name] = value
                if isinstance(value, (bool, int, float)):
                    self.guard(p, lambda: self.kb.constant(p.name, value))
            except CompileError as e:
                self.record(e)
                sig.constants[p.name] = kind
                self.vars[p.name] = POISON
        for p in fn.params:
            if p.name not in kinds:
                continue
            try:
                self.runtime_param(p, kinds.pop(p.name))
            except _Poisoned:
                self.vars[p.name] = POISON
            except CompileError as e:
                self.record(e)
                self.vars[p.name] = POISON

    def parameter_kind(self, p: n.Param) -> Any:
        """'tensor', a constant kind ('const', 'dtype', ...) or ('scalar', dtype), from the annotation."""
        if p.annotation is None:
            raise self.err(p, f"parameter '{p.name}' needs an annotation",
                           f"e.g. {p.name}: f16[M, K] (tensor), {p.name}: Out[f16[M, K]] (written tensor), "
                           f"{p.name}: f32 (scalar), {p.name}: const = 64 or {p.name}: dtype = u4")
        if isinstance(p.annotation, n.Subscript):
            return "tensor"
        kind = self.eval_outer(p.annotation)
        if isinstance(kind, Marker) and kind.kind == "Out":
            raise self.err(p.annotation, f"'Out' needs a tensor type: {p.name}: Out[f16[M, N]]")
        if isinstance(kind, Marker):
            return kind.kind
        if isinstance(kind, DTypeValue):
            return ("scalar", kind)
        raise self.err(p.annotation, f"annotation of '{p.name}' is {describe(kind)}; expected a tensor "
                       "type (f16[M, K]), a dtype (scalar), or const / dtype / layout",
                       "e.g. x: f16[M, K], scale: f32, BLOCK: const = 128")

    def runtime_param(self, p: n.Param, kind: Any) -> None:
        sig = self.signature
        if kind == "tensor":
            if p.default is not None:
                raise self.err(p.default, f"tensor parameter '{p.name}' cannot have a default")
            ttype = self.tensor_annotation(p)
            intent = None if ttype.writable else "in"
            value = self.guard(p, lambda: self.kb.tensor_param(p.name, ttype.dtype, ttype.shape, intent,
                                                               loc=self.loc(p)))
            self.vars[p.name] = TensorRef(value, ttype.writable)
            self.bind_shape_symbols(ttype)
            sig.runtime.append((p.name, "tensor"))
            sig.tensor_types[p.name] = ttype
        else:
            if p.default is not None:
                raise self.err(p.default, f"scalar parameter '{p.name}' cannot have a default",
                               f"make it a constant ({p.name}: const = ...) or pass it at every call")
            dt = kind[1]
            self.vars[p.name] = self.guard(p, lambda: self.kb.scalar_param(p.name, dt.name, loc=self.loc(p)))
            sig.runtime.append((p.name, "scalar"))
            sig.scalar_types[p.name] = dt.name

    def bind_shape_symbols(self, ttype: TensorTypeValue) -> None:
        """Names in a tensor's shape (``M`` in ``f16[M, K]``) become size values in the body."""
        from lowbit.ir.symbolic import Sym, dim_symbols

        for d in ttype.shape:
            if _is_dim(d):
                for name in sorted(dim_symbols(d)):
                    if name not in self.vars:
                        self.vars[name] = Sym(name)

    def constant_param(self, p: n.Param, kind: str) -> Any:
        if p.name in self.provided:
            raw, node = self.provided[p.name], p
        elif p.default is not None:
            raw, node = self.eval_outer(p.default), p.default
        else:
            example = {"dtype": "u4", "layout": "spatial(4, 8)"}.get(kind, "64")
            raise self.err(p, f"constant '{p.name}' has no value",
                           f"give it a default ({p.name}: {kind} = {example}) or pass {p.name}={example} "
                           f"(lowbit check: --const {p.name}={example})")
        return self.coerce_constant(p.name, kind, raw, node)

    def coerce_constant(self, name: str, kind: str, raw: Any, node: n.Node) -> Any:
        value = raw if not isinstance(raw, Unusable) else raw.obj
        if kind == "dtype":
            dv = dtype_value(value) if not isinstance(value, DTypeValue) else value
            if dv is None:
                raise self.err(node, f"constant '{name}' must be a dtype, got {describe(value)}",
                               "e.g. u4, int3, float4_e2m1, f16")
            return dv
        if kind == "layout":
            if isinstance(value, LayoutValue):
                return value
            if hasattr(value, "shape") and (getattr(type(value), "__module__", "") or "").startswith("lowbit.layout"):
                return LayoutValue(value)
            raise self.err(node, f"constant '{name}' must be a layout, got {describe(value)}",
                           "e.g. spatial(4, 8).local(2, 2)")
        # const / int / float / bool
        v = from_python(value) if not isinstance(value, (bool, int, float)) else value
        if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            raise self.err(node, f"constant '{name}' must be an int, got {describe(v)}")
        if kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise self.err(node, f"constant '{name}' must be a float, got {describe(v)}")
        if kind == "float":
            v = float(v)
        if kind == "bool" and not isinstance(v, bool):
            raise self.err(node, f"constant '{name}' must be True or False, got {describe(v)}")
        if not isinstance(v, (bool, int, float)):
            raise self.err(node, f"constant '{name}' must be an int, float or bool, got {describe(v)}",
                           f"annotate it '{name}: dtype' for a dtype or '{name}: layout' for a layout")
        if isinstance(v, int) and not isinstance(v, bool) and not -(1 << 31) <= v < (1 << 31):
            raise self.err(node, f"constant '{name}' = {v} does not fit in int32")
        return v

    def tensor_annotation(self, p: n.Param) -> TensorTypeValue:
        ann = p.annotation
        writable = False
        value = self.eval_outer(ann.value)  # type: ignore[union-attr]
        if isinstance(value, Marker) and value.kind == "Out":
            if len(ann.indices) != 1 or not isinstance(ann.indices[0], n.Subscript):  # type: ignore[union-attr]
                raise self.err(ann, f"'Out' takes one tensor type: {p.name}: Out[f16[M, N]]")
            ann = ann.indices[0]  # type: ignore[union-attr]
            writable = True
            value = self.eval_outer(ann.value)
        if not isinstance(value, DTypeValue):
            raise self.err(ann.value, f"'{self.text(ann.value)}' in the annotation of '{p.name}' is "
                           f"{describe(value)}, not a dtype",
                           "a tensor annotation is dtype[shape], e.g. f16[M, K] or u4[K, N]")
        dims = []
        for index in ann.indices:
            d = self.eval_shape_dim(index, p.name)
            dims.append(d)
        return TensorTypeValue(value.name, tuple(dims), writable)

    def eval_shape_dim(self, node: n.Expr, pname: str) -> Any:
        old = self.annotation_mode
        self.annotation_mode = True
        try:
            d = self.eval(node)
        finally:
            self.annotation_mode = old
        if isinstance(d, bool) or not (isinstance(d, int) or _is_dim(d)):
            raise self.err(node, f"shape entry '{self.text(node)}' of '{pname}' is {describe(d)}; expected an "
                           "int, a constant or a size symbol",
                           "without 'from __future__ import annotations', declare names used in shapes with "
                           "lowbit.dsl.symbols, e.g. M, K = symbols('M K')")
        if isinstance(d, int) and d <= 0:
            raise self.err(node, f"shape entry of '{pname}' must be positive, got {d}")
        return d

    def eval_outer(self, node: n.Expr) -> Any:
        """Evaluate an expression that may only use compile-time values (annotations, defaults)."""
        kb, self.kb = self.kb, None
        try:
            return self.eval(node)
        finally:
            self.kb = kb

    # -----------------------------------------------------------------------------------------------
    # statements
    def block(self, stmts: Iterable[n.Stmt]) -> None:
        for stmt in stmts:
            try:
                self.statement(stmt)
            except _Poisoned:
                self.poison_targets(stmt)
            except CompileError as e:
                self.record(e)
                self.poison_targets(stmt)

    def poison_targets(self, stmt: n.Stmt) -> None:
        for name in assigned_names([stmt]):
            self.vars[name] = POISON

    def statement(self, s: n.Stmt) -> None:
        if isinstance(s, n.ExprStmt):
            if isinstance(s.value, n.Constant) and isinstance(s.value.value, str):
                return  # a string used as a comment
            self.eval(s.value)
        elif isinstance(s, n.Assign):
            value = self.eval(s.value, name=_target_hint(s.targets[-1]))
            for target in s.targets:
                self.assign(target, value, s)
        elif isinstance(s, n.AugAssign):
            if not isinstance(s.target, n.Name):
                raise self.err(s.target, "augmented assignment needs a plain name on the left")
            current = self.lookup(s.target)
            rhs = self.eval(s.value)
            self.assign(s.target, self.binop(s.op, current, rhs, s, name=s.target.id), s)
        elif isinstance(s, n.AnnAssign):
            self.ann_assign(s)
        elif isinstance(s, n.Pass):
            return
        elif isinstance(s, n.If):
            self.if_stmt(s)
        elif isinstance(s, n.For):
            self.for_stmt(s)
        elif isinstance(s, n.While):
            raise self.err(_kw_span(s, 5), "'while' loops are not supported in kernels",
                           "use 'for i in range(start, stop, step)'")
        elif isinstance(s, n.Return):
            raise self.err(_kw_span(s, 6), "kernels do not return values",
                           "write results into an Out tensor with store(out, value, offsets)")
        elif isinstance(s, (n.Break, n.Continue)):
            word = "break" if isinstance(s, n.Break) else "continue"
            raise self.err(s, f"'{word}' is not supported in kernel loops",
                           "loops always run their full range; use if/where to skip work")
        elif isinstance(s, n.FunctionDef):
            raise self.err(_name_span(s), f"nested function '{s.name}' is not supported",
                           "define helper computations inline")
        else:  # pragma: no cover - all statement kinds are handled above
            raise self.err(s, f"unsupported statement {type(s).__name__}")

    def assign(self, target: n.Expr, value: Any, stmt: n.Node) -> None:
        if isinstance(target, n.Name):
            if value is None:
                raise self.err(stmt, f"the right-hand side has no value to assign to '{target.id}'",
                               "store(...) and grid(...) return nothing")
            self.vars[target.id] = value
            self.last_assign[target.id] = stmt.span
        elif isinstance(target, (n.Tuple, n.List)):
            if not isinstance(value, tuple):
                raise self.err(stmt, f"cannot unpack {describe(value)} into {len(target.elts)} names")
            if len(value) != len(target.elts):
                raise self.err(target, f"cannot unpack {len(value)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self.assign(t, v, stmt)
        elif isinstance(target, n.Subscript):
            raise self.err(target, f"cannot assign to '{self.text(target)}': tiles and tensors are not "
                           "modified element by element",
                           "compute a new tile (where(...)), or write a tensor with store(tensor, tile, offsets)")
        else:
            raise self.err(target, f"cannot assign to '{self.text(target)}'", "assign to a name")

    def ann_assign(self, s: n.AnnAssign) -> None:
        if not isinstance(s.target, n.Name):
            raise self.err(s.target, "an annotated assignment needs a plain name on the left")
        if s.value is None:
            raise self.err(s, f"'{s.target.id}' is annotated but not assigned",
                           f"write {s.target.id}: type = value")
        value = self.eval(s.value, name=s.target.id)
        ann = s.annotation
        if isinstance(ann, n.Subscript):
            dt = self.eval_outer(ann.value)
            shape = tuple(self.eval_outer(i) for i in ann.indices)
        else:
            dt, shape = self.eval_outer(ann), None
        if not isinstance(dt, DTypeValue):
            raise self.err(ann, f"annotation '{self.text(ann)}' is not a tile type", "e.g. acc: f32[BM, BN]")
        if not _is_value(value):
            raise self.err(s.value, f"'{s.target.id}' is annotated as a tile but the value is {describe(value)}")
        from lowbit.ir.types import shape_str, short_name

        if value.dtype != dt.name or (shape is not None and tuple(value.shape) != shape):
            want = short_name(dt.name) + (shape_str(shape) if shape is not None else "")
            raise self.err(s.value, f"'{s.target.id}' is annotated {want} but the value is {describe(value)}",
                           "cast(x, dtype) changes the dtype; reshape / broadcast_to the shape")
        self.assign(s.target, value, s)

    # ---- if ----
    def if_stmt(self, s: n.If) -> None:
        cond = self.eval(s.test)
        static = self.static_truth(cond)
        if static is not None:
            self.block(s.body if static else s.orelse)
            return
        cond = self.runtime_condition(cond, s.test, "if")
        before = dict(self.vars)
        then_names = assigned_names(s.body)
        else_names = assigned_names(s.orelse)
        self.depth += 1
        mark = self.scope_mark()
        try:
            self.guard(s.test, lambda: self.kb.begin_if(cond))
            self.block(s.body)
            then_vars = self.vars
            results = []
            for nm in sorted(then_names | else_names):
                tv = then_vars.get(nm)
                if nm in before and not isinstance(before[nm], Undefined):
                    if before[nm] is POISON or not _carriable(before[nm]):
                        continue  # poisoned stays poisoned; dtypes etc. are checked below
                    if tv is POISON or _carriable(tv):
                        results.append(nm)
                elif nm in then_names and nm in else_names and _carriable(tv):
                    results.append(nm)
            then_yields = [self.to_runtime(before[nm] if then_vars[nm] is POISON else then_vars[nm], s)
                           for nm in results]
            self.vars = dict(before)
            if results or s.orelse:
                self.guard(s, lambda: self.kb.begin_else(then_yields))
                self.block(s.orelse)
            else_vars = self.vars
            else_yields = []
            for nm, ty in zip(results, then_yields):
                v = else_vars.get(nm)
                if v is None or isinstance(v, Undefined):
                    self.record(self.err(_kw_span(s, 2), f"'{nm}' is assigned in the 'if' branch but not in "
                                         "the 'else' branch", f"assign '{nm}' before the 'if' or in both branches"))
                    v = ty
                elif v is POISON or then_vars.get(nm) is POISON:
                    v = ty
                else:
                    v = self.to_runtime(v, s, like=ty)
                    if v.type != ty.type:
                        self.record(self.err(self.last_assign.get(nm, s.span),
                                             f"'{nm}' is {describe(ty)} after the 'if' branch but "
                                             f"{describe(v)} after the 'else' branch",
                                             "both branches must give it the same dtype and shape (use cast)"))
                        v = ty
                else_yields.append(v)
            if results or s.orelse:
                outs = self.guard(s, lambda: self.kb.end_if(else_yields, names=results))
            else:
                outs = self.guard(s, lambda: self.kb.end_if())
        except BaseException:
            self.unwind(mark)
            self.vars = before
            raise
        finally:
            self.depth -= 1
        self.vars = dict(before)
        for nm, v in zip(results, outs):
            self.vars[nm] = v
        for nm in (then_names | else_names) - set(results):
            if nm in before and before[nm] is POISON:
                continue
            if nm in before and not isinstance(before[nm], Undefined) and not _carriable(before[nm]):
                changed = (nm in then_vars and then_vars[nm] is not before[nm]) or \
                          (nm in else_vars and else_vars[nm] is not before[nm])
                if changed:
                    self.record(self.err(self.last_assign.get(nm, s.span),
                                         f"'{nm}' is {describe(before[nm])} and cannot be reassigned inside a "
                                         "run-time 'if'", "only tiles and numbers can differ between branches; "
                                         "use a new name"))
            elif nm not in before or isinstance(before[nm], Undefined):
                self.vars[nm] = Undefined(f"it is assigned only in one branch of the 'if' on line "
                                          f"{self.source.real_line(s.span.line)}")

    def scope_mark(self) -> int:
        """How many for/if scopes the builder has open (see :meth:`unwind`)."""
        return len(getattr(self.kb, "_scopes", ()))

    def unwind(self, mark: int) -> None:
        """After an error inside a for/if, drop the builder scopes it left open, so later statements are
        analyzed (and their errors reported) at the right nesting. The IR is discarded anyway."""
        scopes = getattr(self.kb, "_scopes", None)
        if isinstance(scopes, list):
            del scopes[mark:]

    def static_truth(self, cond: Any) -> bool | None:
        if isinstance(cond, (bool, int, float)) or cond is None:
            return bool(cond)
        if isinstance(cond, (DTypeValue, LayoutValue, str)):
            return True
        if isinstance(cond, tuple):
            return len(cond) > 0
        return None

    def runtime_condition(self, cond: Any, node: n.Node, what: str) -> Any:
        if _is_dim(cond):
            cond = self.materialize(cond, node)
        if not _is_value(cond):
            raise self.err(node, f"the condition of '{what}' is {describe(cond)}; expected a bool scalar")
        if cond.type.scope != "register" or cond.shape != ():
            raise self.err(node, f"the condition of '{what}' is {describe(cond)}, not a scalar",
                           "for an elementwise choice use where(cond, a, b)")
        if cond.dtype != "bool":
            from lowbit.ir.types import is_code

            if is_code(cond.dtype):
                raise self.err(node, f"the condition of '{what}' is {describe(cond)}", "compare it first")
            cond = self.guard(node, lambda: self.kb.binary("ne", cond, 0))
        return cond

    def to_runtime(self, v: Any, node: n.Node, like: Any = None) -> Any:
        """A carried value as an IR value (numbers become scalars of ``like``'s dtype or their own)."""
        if _is_value(v):
            return v
        if isinstance(v, (bool, int, float)):
            dtype = like.dtype if like is not None and like.shape == () else None
            return self.guard(node, lambda: self.kb.const(v, dtype))
        if _is_dim(v):
            return self.materialize(v, node)
        raise self.err(node, f"{describe(v)} cannot change at run time")

    # ---- for ----
    def for_stmt(self, s: n.For) -> None:
        if not isinstance(s.target, n.Name):
            raise self.err(s.target, "the loop variable must be a single name", "for i in range(...)")
        it = s.iter
        if not (isinstance(it, n.Call) and isinstance(it.func, n.Name) and it.func.id in ("range", "static_range")):
            raise self.err(it, f"kernels loop over range(...) only, not '{self.text(it)}'",
                           "for k in range(start, stop, step)")
        if it.keywords:
            raise self.err(it.keywords[0], "range() takes no keyword arguments")
        if not 1 <= len(it.args) <= 3:
            raise self.err(it, f"range expected 1 to 3 arguments, got {len(it.args)}")
        bounds = []
        for a in it.args:
            v = self.eval(a)
            if isinstance(v, bool) or isinstance(v, float) or not (isinstance(v, int) or _is_dim(v) or (
                    _is_value(v) and v.shape == () and v.type.scope == "register"
                    and v.dtype in ("int8", "int16", "int32", "uint8", "uint16", "uint32"))):
                raise self.err(a, f"range() bounds must be integers, got {describe(v)}")
            bounds.append((v, a))
        if len(bounds) == 1:
            bounds.insert(0, (0, s.iter))
        if len(bounds) == 2:
            bounds.append((1, s.iter))
        (start, _), (stop, _), (step, step_node) = bounds
        if isinstance(step, int) and step <= 0:
            raise self.err(step_node, f"range() step must be positive, got {step}",
                           "count down by computing the index: i = last - j")
        start, stop, step = (self.to_runtime(b, s) if not isinstance(b, int) else b for b in (start, stop, step))
        names = assigned_names(s.body)
        target = s.target.id
        carried = [nm for nm in sorted(names) if nm != target and nm in self.vars
                   and self.vars[nm] is not POISON and _carriable(self.vars[nm])]
        before = dict(self.vars)
        inits = [self.to_runtime(self.vars[nm], s) for nm in carried]
        self.depth += 1
        mark = self.scope_mark()
        try:
            loop = self.guard(s, lambda: self.kb.begin_for(start, stop, step, inits, names=carried, iv_name=target))
            for nm, arg in zip(carried, loop.args):
                self.vars[nm] = arg
            self.vars[target] = loop.iv
            self.block(s.body)
            yields = []
            for nm, arg in zip(carried, loop.args):
                v = self.vars.get(nm)
                if v is POISON or v is None or isinstance(v, Undefined):
                    yields.append(arg)
                    continue
                try:
                    v = self.to_runtime(v, s, like=arg)
                except CompileError as e:
                    self.record(e)
                    v = arg
                if v.type != arg.type:
                    self.record(self.err(self.last_assign.get(nm, s.span),
                                         f"'{nm}' is carried around the loop as {describe(arg)} but the body "
                                         f"makes it {describe(v)}",
                                         f"keep its type, e.g. {nm} = cast(..., {_short(arg.dtype)})"
                                         if v.shape == arg.shape else
                                         "a loop-carried value keeps its shape in every iteration"))
                    v = arg
                yields.append(v)
            results = self.guard(s, lambda: self.kb.end_for(yields))
        except BaseException:
            self.unwind(mark)
            self.vars = before
            raise
        finally:
            self.depth -= 1
        after = self.vars
        self.vars = dict(before)
        for nm, r in zip(carried, results):
            self.vars[nm] = r
        line = self.source.real_line(s.span.line)
        for nm in names | {target}:
            if nm in carried:
                continue
            if nm in before and before[nm] is POISON:
                continue
            if nm in before and not isinstance(before[nm], Undefined):
                if after.get(nm) is not before[nm] and nm != target:
                    self.record(self.err(self.last_assign.get(nm, s.span),
                                         f"'{nm}' is {describe(before[nm])} and cannot be reassigned inside a "
                                         "loop", "only tiles and numbers can be loop-carried; use a new name"))
                if nm == target:
                    self.vars[nm] = Undefined(f"it was the variable of the loop on line {line}")
            else:
                self.vars[nm] = Undefined(f"it is assigned only inside the loop on line {line}")

    # -----------------------------------------------------------------------------------------------
    # expressions
    def eval(self, node: n.Expr, name: str | None = None) -> Any:
        """The value of an expression: a compile-time value or an IR value."""
        if isinstance(node, n.Constant):
            if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) >= _BIG:
                raise self.err(node, f"integer literal {node.value} is too large")
            return node.value
        if isinstance(node, n.Name):
            return self.lookup(node)
        if isinstance(node, (n.Tuple, n.List)):
            return tuple(self.eval(e) for e in node.elts)
        if isinstance(node, n.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            return self.binop(node.op, left, right, node, name=name)
        if isinstance(node, n.UnaryOp):
            return self.unary(node, self.eval(node.operand), name)
        if isinstance(node, n.BoolOp):
            return self.boolop(node)
        if isinstance(node, n.Compare):
            return self.compare(node)
        if isinstance(node, n.IfExp):
            cond = self.eval(node.test)
            static = self.static_truth(cond)
            if static is not None:
                return self.eval(node.body if static else node.orelse, name)
            cond = self.runtime_condition(cond, node.test, "if-expression")
            a, b = self.eval(node.body), self.eval(node.orelse)
            a, b = self.operand(a, node.body), self.operand(b, node.orelse)
            return self.guard(node, lambda: self.kb.where(cond, a, b, name=name))
        if isinstance(node, n.Call):
            return self.call(node, name)
        if isinstance(node, n.Attribute):
            return self.attribute(node)
        if isinstance(node, n.Subscript):
            return self.subscript(node, name)
        if isinstance(node, n.Slice):
            raise self.err(node, "a slice ':' is only allowed inside [...] next to None, as in x[:, None]")
        raise self.err(node, f"unsupported expression {type(node).__name__}")  # pragma: no cover

    # ---- operands ----
    def operand(self, v: Any, node: n.Node, what: str = "operand") -> Any:
        """``v`` as an IR operand: an IR register value, or a Python number (a weak literal)."""
        if isinstance(v, (bool, int, float)):
            return v
        if _is_dim(v):
            return self.materialize(v, node)
        if _is_value(v):
            if v.type.scope == "shared":
                raise self.err(node, f"'{self.text(node)}' is {describe(v)}; arithmetic needs registers",
                               f"read it first: load_shared({self.text(node)})")
            return v
        if isinstance(v, TensorRef):
            raise self.err(node, f"'{self.text(node)}' is {describe(v)}, not a tile",
                           f"load a tile of it first: load({v.name}, offsets, shape)")
        raise self.err(node, f"{what} '{self.text(node)}' is {describe(v)}; expected a number or a tile")

    def require_kb(self, node: n.Node, what: str) -> Any:
        if self.kb is None:
            raise self.err(node, f"{what} is not a compile-time constant",
                           "annotations, defaults and constants may only use numbers, dtypes, layouts and "
                           "size symbols")
        return self.kb

    def materialize(self, d: Any, node: n.Node) -> Any:
        """A size expression as an i32 scalar computed at run time."""
        from lowbit.ir.symbolic import Sym

        kb = self.require_kb(node, f"the size '{d}'")
        if isinstance(d, int):
            return d
        if isinstance(d, Sym):
            return self.guard(node, lambda: kb.symbol(d.name))
        a, b = self.materialize(d.lhs, node), self.materialize(d.rhs, node)
        if d.op == "cdiv":
            return self.guard(node, lambda: kb.binary("floordiv", kb.binary("sub", kb.binary("add", a, b), 1), b))
        op = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "%": "mod", "min": "minimum",
              "max": "maximum"}[d.op]
        return self.guard(node, lambda: kb.binary(op, a, b))

    # ---- arithmetic ----
    def binop(self, op: str, a: Any, b: Any, node: n.Node, name: str | None = None) -> Any:
        if op == "@":
            return self.dot_values(a, b, None, node, name)
        if _is_num(a) and _is_num(b):
            return self.fold(op, a, b, node)
        if op in _SIZE_OPS and (_is_dim(a) or _is_dim(b)) and all(
                _is_dim(x) or (isinstance(x, int) and not isinstance(x, bool)) for x in (a, b)):
            from lowbit.ir.symbolic import sym_op

            if op in ("//", "%") and isinstance(b, int) and b == 0:
                raise self.err(node, f"division by zero in '{self.text(node)}'")
            return self.guard(node, lambda: sym_op(op, a, b))
        if isinstance(a, LayoutValue) and isinstance(b, LayoutValue) and op in ("*", "/"):
            return self.guard(node, lambda: LayoutValue(a.layout * b.layout if op == "*" else a.layout / b.layout))
        if isinstance(a, tuple) and isinstance(b, tuple) and op == "+":
            return a + b
        if op == "**":
            raise self.err(node, "'**' works on compile-time numbers only",
                           "for tiles write x * x, or exp2(y * log2(x))")
        left_node = getattr(node, "left", node)
        right_node = getattr(node, "right", node)
        x = self.operand(a, left_node, f"left operand of '{op}'")
        y = self.operand(b, right_node, f"right operand of '{op}'")
        self.check_elementwise(op, [(x, left_node), (y, right_node)], node)
        kb = self.require_kb(node, f"'{self.text(node)}'")
        return self.guard(node, lambda: kb.binary(_BINOP_IR[op], x, y, name=name))

    def check_elementwise(self, op: str, operands: list, node: n.Node) -> None:
        """User-level messages for the two commonest mistakes: code-type arithmetic and bad shapes."""
        from lowbit.ir.types import broadcast_shapes, is_code, is_float, shape_str

        values = [(v, nd) for v, nd in operands if _is_value(v)]
        for v, nd in values:
            if is_code(v.dtype):
                raise self.err(nd, f"'{self.text(nd)}' is {describe(v)}: low-bit tiles hold codes and have no "
                               f"arithmetic ('{op}')", f"convert first: cast({self.text(nd)}, f16)")
        if op in ("<<", ">>", "&", "|", "^"):
            for v, nd in values:
                if is_float(v.dtype):
                    raise self.err(nd, f"'{op}' needs integer or bool operands, but '{self.text(nd)}' is "
                                   f"{describe(v)}", "view(x, u32) reinterprets float bits as integers")
        shape: tuple | None = ()
        for v, _ in values:
            shape = broadcast_shapes(shape, tuple(v.shape)) if shape is not None else None
        if shape is None:
            shapes = " and ".join(shape_str(v.shape) for v, _ in values)
            raise self.err(node, f"shapes {shapes} do not broadcast ('{op}' in '{self.text(node)}')",
                           "numpy rules: trailing dimensions must be equal or 1; use x[:, None] or "
                           "broadcast_to(x, shape)")

    def fold(self, op: str, a: Any, b: Any, node: n.Node) -> Any:
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                r = a / b
            elif op == "//":
                r = a // b
            elif op == "%":
                r = a % b
            elif op == "**":
                if isinstance(b, int) and not isinstance(b, bool) and b > 64 and abs(a) > 1:
                    raise self.err(node, "compile-time power too large")
                r = a ** b
            elif op in ("&", "|", "^", "<<", ">>"):
                if isinstance(a, float) or isinstance(b, float):
                    raise self.err(node, f"'{op}' needs integers, got {describe(a)} and {describe(b)}")
                if op in ("<<", ">>") and not 0 <= b <= 62:
                    raise self.err(node, f"shift amount {b} out of range")
                r = {"&": a & b, "|": a | b, "^": a ^ b}.get(op) if op in "&|^" else (a << b if op == "<<"
                                                                                      else a >> b)
            else:  # pragma: no cover - grammar limits the operators
                raise self.err(node, f"unsupported operator '{op}'")
        except ZeroDivisionError:
            raise self.err(node, f"division by zero in '{self.text(node)}'") from None
        except OverflowError:
            raise self.err(node, f"'{self.text(node)}' overflows") from None
        if isinstance(r, complex):
            raise self.err(node, f"'{self.text(node)}' is not a real number")
        if isinstance(r, int) and abs(r) >= _BIG:
            raise self.err(node, f"'{self.text(node)}' = {r} is too large")
        if isinstance(r, float) and not math.isfinite(r):
            raise self.err(node, f"'{self.text(node)}' is not finite")
        return r

    def unary(self, node: n.UnaryOp, v: Any, name: str | None) -> Any:
        op = node.op
        if op == "not":
            static = self.static_truth(v)
            if static is not None:
                return not static
            cond = self.runtime_condition(v, node.operand, "not")
            return self.guard(node, lambda: self.kb.unary("not", cond, name=name))
        if _is_num(v):
            if op == "-":
                return -v
            if op == "+":
                return +v
            if isinstance(v, float):
                raise self.err(node, "'~' needs an integer")
            return ~v
        if _is_dim(v) and op in ("-", "+"):
            from lowbit.ir.symbolic import sym_op

            return v if op == "+" else sym_op("-", 0, v)
        x = self.operand(v, node.operand)
        self.check_elementwise(op, [(x, node.operand)], node)
        kb = self.require_kb(node, f"'{self.text(node)}'")
        if op == "+":
            return x
        if op == "-":
            return self.guard(node, lambda: kb.unary("neg", x, name=name))
        from lowbit.ir.types import is_float

        if is_float(x.dtype):
            raise self.err(node, f"'~' needs an integer or bool tile, got {describe(x)}")
        return self.guard(node, lambda: kb.unary("not", x, name=name))

    def boolop(self, node: n.BoolOp) -> Any:
        result: Any = None
        runtime: list[Any] = []
        for i, sub in enumerate(node.values):
            v = self.eval(sub)
            static = self.static_truth(v)
            if static is not None and not runtime:
                if node.op == "and" and not static:
                    return v
                if node.op == "or" and static:
                    return v
                result = v
                continue
            if static is not None:  # a compile-time operand after run-time ones
                if (node.op == "and" and not static) or (node.op == "or" and static):
                    return bool(static) if not runtime else self.combine_bool(node, runtime, bool(static))
                continue
            runtime.append(self.runtime_condition(v, sub, node.op))
        if not runtime:
            return result
        return self.combine_bool(node, runtime, None)

    def combine_bool(self, node: n.BoolOp, values: list, constant: bool | None) -> Any:
        if constant is not None:
            return constant
        op = "and" if node.op == "and" else "or"
        acc = values[0]
        for v in values[1:]:
            acc = self.guard(node, lambda: self.kb.binary(op, acc, v))
        return acc

    def compare(self, node: n.Compare) -> Any:
        left = self.eval(node.left)
        left_node: n.Node = node.left
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node)
            if _is_num(left) and _is_num(right):
                r: Any = {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right,
                          "==": left == right, "!=": left != right}[op]
            elif op in ("==", "!=") and not any(_is_value(x) or _is_dim(x) or isinstance(x, TensorRef)
                                                for x in (left, right)):
                r = (left == right) == (op == "==")  # dtypes, layouts, None
            else:
                x = self.operand(left, left_node)
                y = self.operand(right, right_node)
                self.check_elementwise(op, [(x, left_node), (y, right_node)], node)
                kb = self.require_kb(node, f"'{self.text(node)}'")
                r = self.guard(node, lambda: kb.binary(_CMP_IR[op], x, y))
            if result is True:
                result = r
            elif _is_num(result) and _is_num(r):
                result = result and r
            else:
                a = result if _is_value(result) else self.guard(node, lambda: self.kb.const(bool(result)))
                b = r if _is_value(r) else self.guard(node, lambda: self.kb.const(bool(r)))
                result = self.guard(node, lambda: self.kb.binary("and", a, b))
            left, left_node = right, right_node
        return result

    # ---- attributes and subscripts ----
    def attribute(self, node: n.Attribute) -> Any:
        obj = self.eval(node.value)
        attr = node.attr
        from lowbit.ir.types import nbits_of

        if _is_value(obj) or isinstance(obj, TensorRef):
            t = obj.type if _is_value(obj) else obj.value.type
            if attr == "shape":
                return tuple(t.shape)
            if attr == "dtype":
                return DTypeValue(t.dtype)
            if attr == "ndim":
                return len(t.shape)
            raise self.err(node, f"{describe(obj)} has no attribute '{attr}'", "available: shape, dtype, ndim")
        if isinstance(obj, DTypeValue):
            if attr == "nbits":
                return nbits_of(obj.name)
            if attr == "name":
                return obj.name
            raise self.err(node, f"dtype has no attribute '{attr}'", "available: nbits, name")
        if isinstance(obj, LayoutValue):
            if attr in bi.LAYOUT_METHODS:
                return BoundMethod(obj, attr)
            if attr in ("shape", "spatial_size", "local_size"):
                value = getattr(obj.layout, attr)
                return tuple(int(x) for x in value) if attr == "shape" else int(value)
            raise self.err(node, f"layout has no attribute '{attr}'",
                           f"available: {', '.join(bi.LAYOUT_METHODS)}, shape, spatial_size, local_size")
        if isinstance(obj, Namespace):
            if not hasattr(obj.module, attr):
                raise self.err(node, f"module {obj.name} has no attribute '{attr}'")
            value = from_python(getattr(obj.module, attr))
            if isinstance(value, Unusable):
                raise self.err(node, f"{obj.name}.{attr} is {value.describe()}, which a kernel cannot use")
            return value
        raise self.err(node, f"{describe(obj)} has no attribute '{attr}'")

    def subscript(self, node: n.Subscript, name: str | None) -> Any:
        obj = self.eval(node.value)
        if isinstance(obj, DTypeValue):
            dims = tuple(self.eval_shape_dim(i, self.text(node)) for i in node.indices)
            return TensorTypeValue(obj.name, dims)
        if isinstance(obj, Marker) and obj.kind == "Out":
            if len(node.indices) != 1:
                raise self.err(node, "Out takes one tensor type: Out[f16[M, N]]")
            inner = self.eval(node.indices[0])
            if not isinstance(inner, TensorTypeValue):
                raise self.err(node.indices[0], f"Out[...] needs a tensor type, got {describe(inner)}")
            return TensorTypeValue(inner.dtype, inner.shape, True)
        if isinstance(obj, tuple):
            if len(node.indices) != 1 or isinstance(node.indices[0], n.Slice):
                raise self.err(node, "index a tuple with one integer")
            i = self.eval(node.indices[0])
            if isinstance(i, bool) or not isinstance(i, int):
                raise self.err(node.indices[0], f"tuple index must be a compile-time int, got {describe(i)}")
            if not -len(obj) <= i < len(obj):
                raise self.err(node.indices[0], f"index {i} out of range for a tuple of {len(obj)}")
            return obj[i]
        if isinstance(obj, TensorRef):
            raise self.err(node, f"'{obj.name}' is a global tensor and cannot be indexed",
                           f"load a tile: load({obj.name}, offsets, shape)")
        if _is_value(obj) and obj.type.scope == "register":
            return self.expand_index(node, obj, name)
        raise self.err(node, f"{describe(obj)} cannot be subscripted")

    def expand_index(self, node: n.Subscript, x: Any, name: str | None) -> Any:
        """``x[:, None]``-style indexing: ':' keeps an axis, None inserts one."""
        kept = 0
        plan = []
        for idx in node.indices:
            if isinstance(idx, n.Slice) and idx.lower is None and idx.upper is None and idx.step is None:
                plan.append("keep")
                kept += 1
            elif isinstance(idx, n.Constant) and idx.value is None:
                plan.append("new")
            else:
                raise self.err(idx, "tiles are indexed only with ':' and None (to add axes), e.g. x[:, None]",
                               "tiles are values, not arrays: load a different tile, or use where/sum")
        if kept > x.type.rank:
            raise self.err(node, f"too many ':' for {describe(x)} (rank {x.type.rank})")
        out = x
        axis = 0
        for step in plan:
            if step == "new":
                out = self.guard(node, lambda: self.kb.expand_dims(out, axis, name=name))
            axis += 1
        return out

    # ---- calls ----
    def call(self, node: n.Call, name: str | None) -> Any:
        func = self.eval(node.func)
        if isinstance(func, DTypeValue):
            if len(node.args) != 1 or node.keywords:
                raise self.err(node, f"{func}(x) converts one value")
            return self.cast_value(self.eval(node.args[0]), func, node.args[0], node, name)
        if isinstance(func, BoundMethod):
            return self.layout_method(node, func)
        if not isinstance(func, BuiltinFunction):
            hint = None
            if isinstance(node.func, n.Name) and builtin(node.func.id) is not None:
                hint = f"'{node.func.id}' shadows the built-in {node.func.id}(); rename your variable"
            raise self.err(node.func, f"'{self.text(node.func)}' is {describe(func)} and cannot be called", hint)
        sig = bi.SIGNATURES[func.name]
        if func.name in bi.LAYOUT_FUNCTIONS:
            return self.layout_call(node, func.name)
        bound_nodes = bi.bind(sig, list(node.args), {k.name: k.value for k in node.keywords},
                              location=self.loc(node))
        handler = getattr(self, "i_" + func.name)
        return handler(node, bound_nodes, name)

    # helpers for intrinsics
    def arg(self, bound: dict, key: str, default: Any = None) -> Any:
        node = bound.get(key)
        return default if node is None else self.eval(node)

    def int_arg(self, bound: dict, key: str, call: n.Call, default: Any = None) -> Any:
        node = bound.get(key)
        if node is None:
            return default
        v = self.eval(node)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(node, f"'{key}' must be a compile-time int, got {describe(v)}")
        return v

    def dtype_arg(self, bound: dict, key: str, call: n.Call, default: str | None = None) -> str:
        node = bound.get(key)
        if node is None:
            if default is None:
                raise self.err(call, f"missing dtype '{key}'")
            return default
        v = self.eval(node)
        if not isinstance(v, DTypeValue):
            raise self.err(node, f"'{key}' must be a dtype, got {describe(v)}", "e.g. f16, f32, u4, float4_e2m1")
        return v.name

    def shape_arg(self, bound: dict, key: str, call: n.Call) -> tuple[int, ...]:
        node = bound[key]
        v = self.eval(node)
        if isinstance(v, int) and not isinstance(v, bool):
            v = (v,)
        if not isinstance(v, tuple):
            raise self.err(node, f"'{key}' must be a list of sizes like [BM, BN], got {describe(v)}")
        out = []
        elts = node.elts if isinstance(node, (n.List, n.Tuple)) and len(node.elts) == len(v) else [node] * len(v)
        for d, nd in zip(v, elts):
            if _is_dim(d):
                raise self.err(nd, f"tile sizes must be compile-time constants, but '{self.text(nd)}' is "
                               "known only at run time", "use a constant block size (e.g. BK: const = 64) and "
                               "let load/store mask the edges")
            if isinstance(d, bool) or not isinstance(d, int):
                raise self.err(nd, f"a tile size must be a positive int, got {describe(d)}")
            if d <= 0:
                raise self.err(nd, f"a tile size must be positive, got {d}")
            out.append(d)
        total = 1
        for d in out:
            total *= d
        if total > (1 << 24):
            raise self.err(node, f"tile {out} has {total} elements; tiles are limited to 2**24")
        return tuple(out)

    def offsets_arg(self, bound: dict, key: str, call: n.Call, rank: int, what: str) -> list:
        node = bound[key]
        v = self.eval(node)
        if not isinstance(v, tuple):
            v = (v,)
        if len(v) != rank:
            raise self.err(node, f"{what} has rank {rank} but {len(v)} offset{'s' if len(v) != 1 else ''} "
                           f"{'were' if len(v) != 1 else 'was'} given", f"give one offset per axis ({rank})")
        elts = node.elts if isinstance(node, (n.List, n.Tuple)) and len(node.elts) == len(v) else [node] * len(v)
        out = []
        for o, nd in zip(v, elts):
            if isinstance(o, bool) or isinstance(o, float):
                raise self.err(nd, f"an offset must be an integer, got {describe(o)}")
            if isinstance(o, int) or _is_dim(o):
                out.append(self.operand(o, nd))
                continue
            o = self.operand(o, nd, "offset")
            if o.shape != () or o.dtype not in ("int8", "int16", "int32", "uint8", "uint16", "uint32"):
                raise self.err(nd, f"an offset must be an integer scalar, got {describe(o)}",
                               "offsets give the tile's first element, e.g. [block(0) * BM, k]")
            out.append(o)
        return out

    def tile_arg(self, bound: dict, key: str, call: n.Call) -> Any:
        node = bound[key]
        v = self.eval(node)
        return self.operand(v, node)

    def register_tile(self, bound: dict, key: str, call: n.Call, what: str | None = None) -> Any:
        node = bound[key]
        v = self.operand(self.eval(node), node)
        if not _is_value(v):
            raise self.err(node, f"{what or key} must be a tile, got {describe(v)}")
        return v

    def layout_arg(self, bound: dict, key: str, shape: tuple, scope: str) -> Any:
        node = bound.get(key)
        if node is None:
            return None
        v = self.eval(node)
        if v is None:
            return None
        if not isinstance(v, LayoutValue):
            raise self.err(node, f"layout= expects a layout, got {describe(v)}", "e.g. spatial(4, 8).local(4, 8)")
        layout = v.layout
        kind = type(layout).__name__
        if scope == "register" and kind != "RegisterLayout":
            raise self.err(node, f"a register tile needs a register layout, got a {kind}",
                           "build one with local(...) / spatial(...)")
        if scope == "shared" and kind not in ("SharedLayout",):
            raise self.err(node, f"a shared tile needs a shared layout, got a {kind}")
        lshape = tuple(int(x) for x in layout.shape)
        if lshape != tuple(shape):
            raise self.err(node, f"layout {self.text(node)} covers a {list(lshape)} tile, but this tile is "
                           f"{list(shape)}",
                           "the layout's shape must equal the tile shape (e.g. spatial(4, 8).local(4, 8) is "
                           "16 x 64)")
        return layout

    def tensor_arg(self, bound: dict, key: str) -> TensorRef:
        node = bound[key]
        v = self.eval(node)
        if not isinstance(v, TensorRef):
            raise self.err(node, f"'{self.text(node)}' is {describe(v)}, not a global tensor parameter")
        return v

    def shared_arg(self, bound: dict, key: str) -> Any:
        node = bound[key]
        v = self.eval(node)
        if not (_is_value(v) and v.type.scope == "shared"):
            raise self.err(node, f"'{self.text(node)}' is {describe(v)}, not a shared tile",
                           "allocate one with alloc_shared(shape, dtype)")
        return v

    def mask_arg(self, bound: dict, shape: tuple) -> Any:
        node = bound.get("mask")
        if node is None:
            return None
        v = self.eval(node)
        if v is None:
            return None
        v = self.operand(v, node, "mask")
        if not _is_value(v) or v.dtype != "bool":
            raise self.err(node, f"mask must be a bool tile, got {describe(v)}", "compare, e.g. offs < N")
        from lowbit.ir.types import broadcast_shapes

        if broadcast_shapes(tuple(v.shape), tuple(shape)) != tuple(shape):
            raise self.err(node, f"mask {describe(v)} does not broadcast to the tile shape {list(shape)}")
        return v

    # ---- intrinsics ----
    def i_grid(self, node: n.Call, bound: dict, name: str | None) -> None:
        sizes_nodes = bound["sizes"]
        if self.kb is None:
            raise self.err(node, "grid(...) belongs in a kernel body")
        if not self.grid_set:
            self.grid_attempted = max(1, min(len(sizes_nodes), 3))
        if self.grid_set:
            raise self.err(node, "grid(...) is called twice", "a kernel declares its launch grid once")
        if self.depth:
            raise self.err(node, "grid(...) must be called at the top level of the kernel, not inside a loop or "
                           "an if")
        if not 1 <= len(sizes_nodes) <= 3:
            raise self.err(node, f"grid takes 1 to 3 sizes, got {len(sizes_nodes)}")
        sizes = []
        for nd in sizes_nodes:
            v = self.eval(nd)
            if isinstance(v, bool) or not (isinstance(v, int) or _is_dim(v)):
                raise self.err(nd, f"a grid size must be computed from shape symbols and constants, got "
                               f"{describe(v)}", "e.g. grid(cdiv(M, BM), cdiv(N, BN))")
            if isinstance(v, int) and v <= 0:
                raise self.err(nd, f"a grid size must be positive, got {v}")
            sizes.append(v)
        self.guard(node, lambda: self.kb.set_grid(*sizes))
        self.grid_set = True
        self.grid_rank = len(sizes)

    def _axis(self, node: n.Call, bound: dict, fname: str) -> int:
        axis = self.int_arg(bound, "axis", node)
        if not self.grid_set:
            if self.grid_attempted:
                raise _Poisoned()  # grid(...) itself failed and was reported
            raise self.err(node, f"{fname}() is used before grid(...)", "call grid(...) first in the kernel")
        if not 0 <= axis < self.grid_rank:
            raise self.err(bound["axis"], f"{fname}({axis}): the grid has {self.grid_rank} "
                           f"dimension{'s' if self.grid_rank > 1 else ''} (axes 0..{self.grid_rank - 1})")
        return axis

    def i_block(self, node: n.Call, bound: dict, name: str | None) -> Any:
        axis = self._axis(node, bound, "block")
        kb = self.require_kb(node, "block()")
        return self.guard(node, lambda: kb.program_id(axis, name=name))

    def i_num_blocks(self, node: n.Call, bound: dict, name: str | None) -> Any:
        axis = self._axis(node, bound, "num_blocks")
        kb = self.require_kb(node, "num_blocks()")
        return self.guard(node, lambda: kb.num_programs(axis, name=name))

    def i_cdiv(self, node: n.Call, bound: dict, name: str | None) -> Any:
        a, b = self.arg(bound, "a"), self.arg(bound, "b")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
            if b <= 0:
                raise self.err(bound["b"], f"cdiv by {b}: the divisor must be positive")
            return -(-a // b)
        if all((isinstance(x, int) and not isinstance(x, bool)) or _is_dim(x) for x in (a, b)):
            from lowbit.ir.symbolic import cdiv

            if isinstance(b, int) and b <= 0:
                raise self.err(bound["b"], f"cdiv by {b}: the divisor must be positive")
            return self.guard(node, lambda: cdiv(a, b))
        x, y = self.operand(a, bound["a"]), self.operand(b, bound["b"])
        kb = self.require_kb(node, "cdiv of run-time values")
        return self.guard(node, lambda: kb.binary("floordiv", kb.binary("sub", kb.binary("add", x, y), 1), y,
                                                  name=name))

    def i_load(self, node: n.Call, bound: dict, name: str | None) -> Any:
        t = self.tensor_arg(bound, "tensor")
        rank = len(t.value.type.shape)
        offs = self.offsets_arg(bound, "offsets", node, rank, f"tensor '{t.name}'")
        shape = self.shape_arg(bound, "shape", node)
        if len(shape) != rank:
            raise self.err(bound["shape"], f"load of tensor '{t.name}' (rank {rank}) needs a rank-{rank} tile "
                           f"shape, got {list(shape)}")
        mask = self.mask_arg(bound, shape)
        other = self.arg(bound, "other")
        if other is not None:
            other = self.operand(other, bound["other"], "other")
            if _is_value(other) and other.shape != ():
                raise self.err(bound["other"], f"other must be a scalar, got {describe(other)}")
        layout = self.layout_arg(bound, "layout", shape, "register")
        kb = self.require_kb(node, "load()")
        return self.guard(node, lambda: kb.load(t.value, offs, shape, mask, other, layout, name=name))

    def i_store(self, node: n.Call, bound: dict, name: str | None) -> None:
        from lowbit.ir.types import shape_str, short_name

        t = self.tensor_arg(bound, "tensor")
        if not t.writable:
            tt = t.value.type
            raise self.err(bound["tensor"], f"store into '{t.name}', which is a read-only input",
                           f"declare it as an output: {t.name}: Out[{short_name(tt.dtype)}{shape_str(tt.shape)}]")
        rank = len(t.value.type.shape)
        value = self.register_tile(bound, "value", node, "the stored value")
        if value.dtype != t.value.dtype:
            raise self.err(bound["value"], f"store: '{self.text(bound['value'])}' is {describe(value)} but "
                           f"'{t.name}' holds {_short(t.value.dtype)}",
                           f"convert explicitly: cast({self.text(bound['value'])}, {_short(t.value.dtype)})")
        if len(value.shape) != rank:
            raise self.err(bound["value"], f"store: the value has rank {len(value.shape)} but '{t.name}' has "
                           f"rank {rank}", "reshape or expand_dims the tile to the tensor's rank")
        offs = self.offsets_arg(bound, "offsets", node, rank, f"tensor '{t.name}'")
        mask = self.mask_arg(bound, tuple(value.shape))
        kb = self.require_kb(node, "store()")
        self.guard(node, lambda: kb.store(t.value, value, offs, mask))
        return None

    def i_alloc_shared(self, node: n.Call, bound: dict, name: str | None) -> Any:
        shape = self.shape_arg(bound, "shape", node)
        dtype = self.dtype_arg(bound, "dtype", node)
        layout = self.layout_arg(bound, "layout", shape, "shared")
        kb = self.require_kb(node, "alloc_shared()")
        return self.guard(node, lambda: kb.alloc_shared(dtype, shape, layout, name=name))

    def i_shared_slice(self, node: n.Call, bound: dict, name: str | None) -> Any:
        src = self.shared_arg(bound, "src")
        offs = self.offsets_arg(bound, "offsets", node, len(src.shape), "the shared tile")
        shape = self.shape_arg(bound, "shape", node)
        layout = self.layout_arg(bound, "layout", shape, "shared")
        return self.guard(node, lambda: self.kb.shared_slice(src, offs, shape, layout, name=name))

    def i_copy_to_shared(self, node: n.Call, bound: dict, name: str | None) -> None:
        dst = self.shared_arg(bound, "dst")
        t = self.tensor_arg(bound, "tensor")
        if t.value.dtype != dst.dtype:
            raise self.err(bound["tensor"], f"copy_to_shared: '{t.name}' holds {_short(t.value.dtype)} but the "
                           f"shared tile is {_short(dst.dtype)}")
        offs = self.offsets_arg(bound, "offsets", node, len(t.value.type.shape), f"tensor '{t.name}'")
        mask = self.mask_arg(bound, tuple(dst.shape))
        other = self.arg(bound, "other")
        self.guard(node, lambda: self.kb.copy_to_shared(dst, t.value, offs, mask, other))

    def i_load_shared(self, node: n.Call, bound: dict, name: str | None) -> Any:
        src = self.shared_arg(bound, "src")
        layout = self.layout_arg(bound, "layout", tuple(src.shape), "register")
        return self.guard(node, lambda: self.kb.load_shared(src, layout, name=name))

    def i_store_shared(self, node: n.Call, bound: dict, name: str | None) -> None:
        dst = self.shared_arg(bound, "dst")
        value = self.register_tile(bound, "value", node, "the stored value")
        if value.dtype != dst.dtype or tuple(value.shape) != tuple(dst.shape):
            raise self.err(bound["value"], f"store_shared: the value is {describe(value)} but the shared tile is "
                           f"{describe(dst)}", "they must have the same dtype and shape")
        self.guard(node, lambda: self.kb.store_shared(dst, value))

    def i_barrier(self, node: n.Call, bound: dict, name: str | None) -> None:
        kb = self.require_kb(node, "barrier()")
        self.guard(node, lambda: kb.barrier())

    def i_zeros(self, node: n.Call, bound: dict, name: str | None) -> Any:
        shape = self.shape_arg(bound, "shape", node)
        dtype = self.dtype_arg(bound, "dtype", node, "float32")
        layout = self.layout_arg(bound, "layout", shape, "register")
        kb = self.require_kb(node, "zeros()")
        return self.guard(node, lambda: kb.zeros(shape, dtype, layout=layout, name=name or "zeros"))

    def i_full(self, node: n.Call, bound: dict, name: str | None) -> Any:
        shape = self.shape_arg(bound, "shape", node)
        value = self.operand(self.eval(bound["value"]), bound["value"], "value")
        if _is_value(value) and value.shape != ():
            raise self.err(bound["value"], f"full() needs a scalar value, got {describe(value)}")
        dtype = self.dtype_arg(bound, "dtype", node, "") or None
        layout = self.layout_arg(bound, "layout", shape, "register")
        kb = self.require_kb(node, "full()")
        return self.guard(node, lambda: kb.full(shape, value, dtype, layout=layout, name=name))

    def i_arange(self, node: n.Call, bound: dict, name: str | None) -> Any:
        start = self.int_arg(bound, "start", node)
        stop = self.int_arg(bound, "stop", node)
        if stop is None:
            start, stop = 0, start
        if stop <= start:
            raise self.err(node, f"arange({start}, {stop}) is empty", "arange(start, stop) needs stop > start")
        if stop - start > (1 << 24):
            raise self.err(node, f"arange of {stop - start} elements is too large")
        kb = self.require_kb(node, "arange()")
        return self.guard(node, lambda: kb.arange(start, stop, name=name))

    def cast_value(self, v: Any, dt: DTypeValue, vnode: n.Node, node: n.Node, name: str | None) -> Any:
        if _is_num(v) and self.kb is None:
            raise self.err(node, "cast() is a run-time operation")
        x = self.operand(v, vnode, "value")
        kb = self.require_kb(node, "cast()")
        return self.guard(node, lambda: kb.cast(x, dt.name, name=name))

    def i_cast(self, node: n.Call, bound: dict, name: str | None) -> Any:
        dt = DTypeValue(self.dtype_arg(bound, "dtype", node))
        return self.cast_value(self.eval(bound["x"]), dt, bound["x"], node, name)

    def i_view(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.operand(self.eval(bound["x"]), bound["x"])
        if not _is_value(x):
            raise self.err(bound["x"], f"view() needs a tile, got {describe(x)}")
        dtype = self.dtype_arg(bound, "dtype", node)
        shape = self.shape_arg(bound, "shape", node) if bound.get("shape") is not None else None
        from lowbit.ir.types import nbits_of

        if x.dtype == "bool" or dtype == "bool":
            raise self.err(node, "view() cannot reinterpret bool tiles", "cast(x, u8) first")
        if shape is None and x.shape:
            bits = x.shape[-1] * nbits_of(x.dtype)
            if bits % nbits_of(dtype):
                raise self.err(node, f"view: a row of '{self.text(bound['x'])}' has {x.shape[-1]} x "
                               f"{nbits_of(x.dtype)} = {bits} bits, not a multiple of {_short(dtype)}'s "
                               f"{nbits_of(dtype)}", "view a tile whose rows make whole elements of the new dtype")
            shape = tuple(x.shape[:-1]) + (bits // nbits_of(dtype),)
        layout = self.layout_arg(bound, "layout", shape or (), x.type.scope)
        return self.guard(node, lambda: self.kb.view(x, dtype, shape, layout, name=name))

    def _unary_intrinsic(self, op: str, node: n.Call, bound: dict, name: str | None) -> Any:
        v = self.eval(bound["x"])
        if _is_num(v) and op == "abs":
            return abs(v)
        if _is_num(v) and op in ("floor", "ceil"):
            return math.floor(v) if op == "floor" else math.ceil(v)
        x = self.operand(v, bound["x"], "argument")
        if _is_value(x):
            self.check_elementwise(op, [(x, bound["x"])], node)
            if op == "abs" and x.dtype in ("uint8", "uint16", "uint32"):
                return x
            if x.dtype == "bool":
                raise self.err(bound["x"], f"{op}() needs a number tile, got {describe(x)}")
        kb = self.require_kb(node, f"{op}()")
        return self.guard(node, lambda: kb.unary(bi.UNARY[op], x, name=name))

    def _binary_intrinsic(self, op: str, node: n.Call, bound: dict, name: str | None) -> Any:
        a, b = self.eval(bound["a"]), self.eval(bound["b"])
        if _is_num(a) and _is_num(b):
            return max(a, b) if op == "maximum" else min(a, b)
        x, y = self.operand(a, bound["a"]), self.operand(b, bound["b"])
        self.check_elementwise(op, [(x, bound["a"]), (y, bound["b"])], node)
        kb = self.require_kb(node, f"{op}()")
        return self.guard(node, lambda: kb.binary(op, x, y, name=name))

    def i_maximum(self, node, bound, name):
        return self._binary_intrinsic("maximum", node, bound, name)

    def i_minimum(self, node, bound, name):
        return self._binary_intrinsic("minimum", node, bound, name)

    def i_where(self, node: n.Call, bound: dict, name: str | None) -> Any:
        c = self.operand(self.eval(bound["cond"]), bound["cond"], "condition")
        if not _is_value(c) or c.dtype != "bool":
            raise self.err(bound["cond"], f"where() needs a bool condition, got {describe(c)}",
                           "compare first, e.g. where(x > 0, x, 0.0)")
        x = self.operand(self.eval(bound["x"]), bound["x"])
        y = self.operand(self.eval(bound["y"]), bound["y"])
        from lowbit.ir.types import broadcast_shapes, is_code

        vals = [v for v in (x, y) if _is_value(v)]
        codes = [v for v in vals if is_code(v.dtype)]
        if codes and not (len(vals) == 2 and x.dtype == y.dtype):
            raise self.err(node, "where() between a low-bit code tile and another dtype",
                           "cast the codes first, or select between two tiles of the same code type")
        shape: tuple | None = tuple(c.shape)
        for v in vals:
            shape = broadcast_shapes(shape, tuple(v.shape)) if shape is not None else None
        if shape is None:
            from lowbit.ir.types import shape_str

            raise self.err(node, "where(): shapes " + ", ".join(shape_str(v.shape) for v in [c] + vals) +
                           " do not broadcast")
        return self.guard(node, lambda: self.kb.where(c, x, y, name=name))

    def dot_values(self, a: Any, b: Any, acc: Any, node: n.Node, name: str | None,
                   nodes: tuple | None = None) -> Any:
        from lowbit.ir.types import is_code, shape_str

        na, nb, nacc = nodes if nodes is not None else (getattr(node, "left", node), getattr(node, "right", node),
                                                         node)
        a, b = self.operand(a, na), self.operand(b, nb)
        for v, nd in ((a, na), (b, nb)):
            if not _is_value(v) or len(v.shape) != 2:
                raise self.err(nd, f"dot needs 2-D tiles, but '{self.text(nd)}' is {describe(v)}")
            if is_code(v.dtype):
                raise self.err(nd, f"dot of '{self.text(nd)}', which is {describe(v)}: low-bit codes must be "
                               "converted first", f"cast({self.text(nd)}, f16) (times the scales)")
        if a.shape[1] != b.shape[0]:
            raise self.err(node, f"dot: inner dimensions differ: '{self.text(na)}' is {shape_str(a.shape)} and "
                           f"'{self.text(nb)}' is {shape_str(b.shape)}", "a is [M, K] and b is [K, N]")
        if a.dtype != b.dtype:
            raise self.err(node, f"dot: operands have different dtypes ({_short(a.dtype)} and {_short(b.dtype)})",
                           f"cast one of them, e.g. cast({self.text(nb)}, {_short(a.dtype)})")
        if acc is not None:
            acc = self.operand(acc, nacc)
            want = (a.shape[0], b.shape[1])
            if not _is_value(acc) or tuple(acc.shape) != want:
                raise self.err(nacc, f"dot: the accumulator must be a {list(want)} tile, got {describe(acc)}")
            expected = "int32" if a.dtype in ("int8", "uint8") else "float32"
            if acc.dtype != expected:
                raise self.err(nacc, f"dot: the accumulator of {_short(a.dtype)} inputs must be "
                               f"{_short(expected)}, got {describe(acc)}",
                               f"accumulate in {_short(expected)} (zeros([M, N], {_short(expected)})) and cast "
                               "the result at the end")
        kb = self.require_kb(node, "dot()")
        return self.guard(node, lambda: kb.dot(a, b, acc, name=name))

    def i_dot(self, node: n.Call, bound: dict, name: str | None) -> Any:
        acc = self.arg(bound, "acc")
        return self.dot_values(self.eval(bound["a"]), self.eval(bound["b"]), acc, node, name,
                               (bound["a"], bound["b"], bound.get("acc", node)))

    def _reduce(self, op: str, node: n.Call, bound: dict, name: str | None, x: Any = None,
                axis: Any = None) -> Any:
        if bound.get("axis") is None:
            raise self.err(node, f"{op}() of a tile needs an axis", f"e.g. {op}(x, axis=1)")
        x = self.eval(bound["x"]) if x is None else x
        x = self.operand(x, bound["x"])
        if not _is_value(x) or x.shape == ():
            raise self.err(bound["x"], f"{op}() reduces a tile, got {describe(x)}")
        self.check_elementwise(op, [(x, bound["x"])], node)
        if x.dtype == "bool":
            raise self.err(bound["x"], f"{op}() of a bool tile", "cast(x, i32) first")
        axis = self.eval(bound["axis"]) if axis is None else axis
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise self.err(bound["axis"], f"'axis' must be a compile-time int, got {describe(axis)}")
        rank = len(x.shape)
        if not -rank <= axis < rank:
            raise self.err(bound["axis"], f"{op}(): axis {axis} is out of range for {describe(x)} (rank {rank})")
        keep = self.arg(bound, "keepdims", False)
        if not isinstance(keep, bool):
            raise self.err(bound["keepdims"], "keepdims must be True or False")
        kb = self.require_kb(node, f"{op}()")
        return self.guard(node, lambda: kb.reduce(op, x, axis, keep, name=name))

    def i_sum(self, node, bound, name):
        return self._reduce("sum", node, bound, name)

    def _minmax(self, op: str, node: n.Call, bound: dict, name: str | None) -> Any:
        """``max(x, axis)`` reduces a tile; ``max(a, b)`` of compile-time numbers is Python's."""
        if bound.get("axis") is None:
            return self._reduce(op, node, bound, name)
        x, axis = self.eval(bound["x"]), self.eval(bound["axis"])
        if _is_num(x) and _is_num(axis) and "keepdims" not in bound:
            return max(x, axis) if op == "max" else min(x, axis)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise self.err(node, f"{op}(x, axis) reduces a tile over an axis, but the second argument is "
                           f"{describe(axis)}", f"for an elementwise {op} of two values use {op}imum(a, b)")
        return self._reduce(op, node, bound, name, x, axis)

    def i_max(self, node, bound, name):
        return self._minmax("max", node, bound, name)

    def i_min(self, node, bound, name):
        return self._minmax("min", node, bound, name)

    def i_broadcast_to(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.operand(self.eval(bound["x"]), bound["x"])
        shape = self.shape_arg(bound, "shape", node)
        from lowbit.ir.types import broadcast_shapes

        xs = tuple(x.shape) if _is_value(x) else ()
        if broadcast_shapes(xs, shape) != shape:
            raise self.err(node, f"cannot broadcast {describe(x)} to {list(shape)}",
                           "numpy rules: each dimension must be equal or 1")
        return self.guard(node, lambda: self.kb.broadcast_to(x, shape, name=name))

    def i_reshape(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.register_tile(bound, "x", node)
        shape = self.shape_arg(bound, "shape", node)
        import math as _m

        if _m.prod(x.shape) != _m.prod(shape):
            raise self.err(node, f"cannot reshape {describe(x)} ({_m.prod(x.shape)} elements) to {list(shape)} "
                           f"({_m.prod(shape)} elements)")
        return self.guard(node, lambda: self.kb.reshape(x, shape, name=name))

    def i_permute(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.register_tile(bound, "x", node)
        perm = self.eval(bound["perm"])
        if not isinstance(perm, tuple) or sorted(p for p in perm if isinstance(p, int)) != list(range(len(x.shape))) \
                or any(isinstance(p, bool) for p in perm):
            raise self.err(bound["perm"], f"perm must be a permutation of 0..{len(x.shape) - 1} for "
                           f"{describe(x)}, got {self.text(bound['perm'])}")
        return self.guard(node, lambda: self.kb.permute(x, perm, name=name))

    def i_transpose(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.register_tile(bound, "x", node)
        if len(x.shape) < 2:
            raise self.err(bound["x"], f"transpose() needs a tile of rank >= 2, got {describe(x)}")
        return self.guard(node, lambda: self.kb.transpose(x, name=name))

    def i_expand_dims(self, node: n.Call, bound: dict, name: str | None) -> Any:
        x = self.register_tile(bound, "x", node)
        axis = self.int_arg(bound, "axis", node)
        rank = len(x.shape)
        if not -rank - 1 <= axis <= rank:
            raise self.err(bound["axis"], f"expand_dims: axis {axis} is out of range for rank {rank}")
        return self.guard(node, lambda: self.kb.expand_dims(x, axis, name=name))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("i_") and attr[2:] in bi.UNARY:
            op = attr[2:]
            return lambda node, bound, name: self._unary_intrinsic(op, node, bound, name)
        raise AttributeError(attr)

    # ---- layouts (compile time) ----
    def layout_call(self, node: n.Call, fname: str) -> LayoutValue:
        import lowbit.layout as L

        if node.keywords:
            raise self.err(node.keywords[0], f"{fname}() takes sizes only")
        dims = [self.eval(a) for a in node.args]
        for d, a in zip(dims, node.args):
            if isinstance(d, bool) or not isinstance(d, int):
                raise self.err(a, f"{fname}() takes compile-time int sizes, got {describe(d)}")
        if not dims:
            raise self.err(node, f"{fname}() needs at least one size")
        return self.guard(node, lambda: LayoutValue(getattr(L, fname)(*dims)))

    def layout_method(self, node: n.Call, m: BoundMethod) -> LayoutValue:
        args = [self.eval(a) for a in node.args]
        kwargs = {k.name: self.eval(k.value) for k in node.keywords}
        for v, a in zip(list(args) + list(kwargs.values()), list(node.args) + [k.value for k in node.keywords]):
            ok = (isinstance(v, int) and not isinstance(v, bool)) or (
                isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)) or \
                isinstance(v, bool)
            if not ok:
                raise self.err(a, f".{m.name}() takes compile-time ints, got {describe(v)}")
        method = getattr(m.obj.layout, m.name)

        def run() -> LayoutValue:
            try:
                return LayoutValue(method(*args, **kwargs))
            except TypeError as e:
                raise CompileError(f"bad arguments to .{m.name}(): {e}") from None

        return self.guard(node, run)


# ---------------------------------------------------------------------------------------------------
# helpers
def _article(word: str) -> str:
    """'a' or 'an' as the word is read aloud: 'an f16', 'an i32', 'a u4', 'a bf16', 'an int3', 'a uint4'."""
    import re

    if re.match(r"^[a-z]{1,2}\d", word):  # spelled letter by letter: f16, i32, bf16, u4
        return "an" if word[0] in "aefhilmnorsx" else "a"
    return "an" if word[0] in "aeio" else "a"


def _carriable(v: Any) -> bool:
    """Values that may change across loop iterations / branches: tiles, scalars, numbers, sizes."""
    if _is_value(v):
        return v.type.scope == "register"
    return isinstance(v, (bool, int, float)) or _is_dim(v)


def _short(dtype: str) -> str:
    from lowbit.ir.types import short_name

    return short_name(dtype)


def _same_error(a: CompileError, b: CompileError) -> bool:
    return a.message == b.message and a.location == b.location


def _name_span(fn: n.FunctionDef) -> Span:
    """The span of a def's name (``def <name>``), found after the keyword."""
    return Span(fn.span.line, fn.span.column + 4, fn.span.line, fn.span.column + 4 + len(fn.name))


def _kw_span(s: n.Node, length: int) -> Span:
    return Span(s.span.line, s.span.column, s.span.line, s.span.column + length)


def _target_hint(target: n.Expr) -> str | None:
    return target.id if isinstance(target, n.Name) else None


def assigned_names(stmts: Iterable[n.Stmt]) -> set[str]:
    """Names assigned anywhere in ``stmts`` (including nested blocks and loop variables)."""
    out: set[str] = set()

    def targets(t: n.Expr) -> None:
        if isinstance(t, n.Name):
            out.add(t.id)
        elif isinstance(t, (n.Tuple, n.List)):
            for e in t.elts:
                targets(e)

    for s in stmts:
        if isinstance(s, n.Assign):
            for t in s.targets:
                targets(t)
        elif isinstance(s, (n.AugAssign, n.AnnAssign)):
            targets(s.target)
        elif isinstance(s, n.If):
            out |= assigned_names(s.body) | assigned_names(s.orelse)
        elif isinstance(s, n.For):
            targets(s.target)
            out |= assigned_names(s.body)
        elif isinstance(s, n.While):
            out |= assigned_names(s.body)
    return out


__all__ = ["Analyzer", "KernelSignature", "TensorRef", "assigned_names", "describe"]
