"""Tile IR -> readable ``@triton.jit`` Python source plus a host launcher function.

:func:`emit_triton` turns a kernel whose tiles all have native dtypes into one Python module:

* the kernel, with pointer / stride / shape-symbol / scalar parameters and ``tl.constexpr`` constants,
  named after the IR's parameters; every IR value becomes a Python variable named after it, and each
  instruction's code sits under a comment that prints the instruction;
* the ``@triton.jit`` helpers it needs (exact casts, floor division, bf16 rounding; see :mod:`.helpers`);
* ``launch_<kernel>(...)``: binds shape symbols from torch tensors' shapes, computes the grid from the
  kernel's grid expressions and launches.

The code is correct both natively and under Triton's interpreter (see :mod:`.dtypes` for bf16). Tiles
whose sizes are not powers of two are padded to the next power of two; padding lanes are masked at
loads/stores, neutral in reductions and dot products, and remapped in reshapes. Shared memory becomes
register tiles (Triton manages shared memory itself): a load of a shared slice right after it was written
reuses the written tile; other accesses select from a register copy of the whole buffer.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("double")
>>> x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid("cdiv(N, 64)")
>>> off = kb.mul(kb.program_id(0), 64, name="off")
>>> kb.store(x, kb.mul(kb.load(x, [off], [64]), 2.0), [off])
>>> src = emit_triton(kb.build())
>>> "def double(" in src.text and "def launch_double(" in src.text
True
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.printer import format_instr, format_type
from lowbit.ir.symbolic import Dim, Sym, dim_str
from lowbit.ir.types import short_name

from ..target import Target
from .dtypes import check_native, register_tl
from .emit_compute import ComputeMixin
from .emit_memory import LoadView, MemoryMixin, Region
from .helpers import helper_name, helper_source
from .names import Names, dim_expr, padded, py_literal

__all__ = ["KernelArg", "TritonSource", "emit_triton", "SUPPORTED_INSTRUCTIONS"]

#: instruction classes the generator handles (every IR instruction)
SUPPORTED_INSTRUCTIONS: tuple[type[n.Instr], ...] = n.INSTRUCTIONS

_ARG_KINDS = ("pointer", "stride", "symbol", "scalar", "constexpr", "flag")


@dataclass(frozen=True)
class KernelArg:
    """One parameter of the generated ``@triton.jit`` function.

    ``kind``: ``pointer`` (tensor ``source``), ``stride`` (of tensor ``source`` along ``axis``), ``symbol``
    (shape symbol ``source``), ``scalar`` (scalar parameter ``source``), ``constexpr`` (kernel constant
    ``source``) or ``flag`` (a generator switch such as ``NATIVE_BF16_DOT``). ``dtype`` is the IR dtype of
    pointers, scalars and constants.
    """

    name: str
    kind: str
    source: str
    axis: int | None = None
    dtype: str | None = None

    @property
    def is_constexpr(self) -> bool:
        return self.kind in ("constexpr", "flag")


@dataclass(frozen=True)
class TritonSource:
    """Generated Triton source and what a launcher needs to call it.

    ``args`` lists the kernel's parameters in order; ``grid`` holds one host Python expression per grid
    axis (over symbol and constant names, e.g. ``triton.cdiv(M, BM)``) and ``grid_dims`` the IR's sizes.
    """

    text: str
    kernel_name: str
    launcher_name: str
    ir_name: str
    args: tuple[KernelArg, ...]
    grid: tuple[str, ...]
    grid_dims: tuple[Dim, ...] = field(compare=False)
    num_warps: int = 4
    wide_index: bool = False

    def arg(self, name: str) -> KernelArg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    @property
    def runtime_args(self) -> tuple[KernelArg, ...]:
        return tuple(a for a in self.args if not a.is_constexpr)

    @property
    def constexpr_args(self) -> tuple[KernelArg, ...]:
        return tuple(a for a in self.args if a.is_constexpr)

    def __str__(self) -> str:
        return self.text


def emit_triton(kernel: n.Kernel, target: Target | None = None, *, wide_index: bool = False) -> TritonSource:
    """Generate Triton source for ``kernel`` (all tiles of native dtypes; see the module docstring).

    ``target`` supplies ``num_warps`` for the launcher (the source itself is the same for every target).
    ``wide_index=True`` computes addresses in int64 (tensors with more than 2**31 elements).
    Raises :class:`~lowbit.errors.CompileError` for low-bit code types ("run the lower-lowbit pass first").
    """
    from lowbit.ir import verify

    if not isinstance(kernel, n.Kernel):
        raise CompileError(f"emit_triton expects a lowbit.ir Kernel, got {type(kernel).__name__}",
                           hint="pass lowered.kernel for a Lowered result, or use build_triton")
    verify(kernel)
    num_warps = target.num_warps if target is not None else 4
    # Pass 1 finds which shared buffers are read other than right after being written; pass 2 keeps only
    # those as register copies (the others' writes are dead once every read is forwarded).
    first = _Emitter(kernel, wide_index=wide_index, materialize=None)
    first.run()
    final = _Emitter(kernel, wide_index=wide_index, materialize=frozenset(first.buffer_reads))
    text = final.run(num_warps=num_warps)
    return TritonSource(text=text, kernel_name=final.kernel_ident, launcher_name=final.launcher_ident,
                        ir_name=kernel.name, args=tuple(final.args), grid=final.grid_exprs,
                        grid_dims=tuple(kernel.grid), num_warps=num_warps, wide_index=wide_index)


_LAYOUT = re.compile(r" layout=")


def _strip_layouts(text: str) -> str:
    """Drop ``layout=Ctor(...)`` annotations (balanced parentheses) from a printed instruction."""
    out = []
    i = 0
    while True:
        m = _LAYOUT.search(text, i)
        if not m:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:m.start()])
        j = m.end()
        depth = 0
        while j < len(text):
            ch = text[j]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif ch in ",} " and depth == 0:
                break
            j += 1
        i = j


class _Emitter(MemoryMixin, ComputeMixin):
    """Generates the module text of one kernel (one instance per generation pass)."""

    def __init__(self, kernel: n.Kernel, *, wide_index: bool, materialize: frozenset[str] | None):
        self.kernel = kernel
        self.wide_index = wide_index
        #: shared roots kept as register copies (None: all of them, in the analysis pass)
        self.materialize = materialize
        #: shared roots read other than through a just-written slice
        self.buffer_reads: set[str] = set()
        self.names = Names()
        self.lines: list[str] = []
        self.depth = 1
        self.ident: dict[str, str] = {}          # IR value name -> Python name
        self.sym_ident: dict[str, str] = {}      # shape symbol / constant name -> kernel parameter
        self.strides: dict[str, list[str]] = {}  # tensor parameter -> stride parameters
        self.nonneg: set[str] = set()            # int values known to be >= 0
        self.const_value: dict[str, Any] = {}    # IR constant values by value name
        self.helpers: set[str] = set()
        self.uses_inf = False
        self.uses_flag = False
        self.regions: dict[str, Region] = {}
        #: tiles that rearrange one global load (see emit_memory.LoadView), and the tensors the kernel stores to
        #: (a load of those cannot be repeated later)
        self.load_views: dict[str, LoadView] = {}
        self.stored = {ins.tensor.name for ins in kernel.walk() if isinstance(ins, n.Store)}
        self.known: dict[str, str] = {}          # shared value name -> Python name of its current contents
        self.args: list[KernelArg] = []
        self.kernel_ident = ""
        self.launcher_ident = ""
        self.grid_exprs: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------------------
    # text helpers
    # ------------------------------------------------------------------------------------------------

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def fresh(self, hint: str) -> str:
        return self.names.fresh(hint)

    def define(self, v: n.Value) -> str:
        name = self.fresh(v.name)
        self.ident[v.name] = name
        return name

    def alias(self, v: n.Value, expr: str) -> str:
        """Define ``v`` as ``expr`` (one assignment line)."""
        name = self.define(v)
        self.line(f"{name} = {expr}")
        return name

    def use(self, v: n.Value) -> str:
        try:
            return self.ident[v.name]
        except KeyError:  # pragma: no cover - the verifier guarantees definitions
            raise CompileError(f"internal error: {v} used before its definition in generated code") from None

    def call(self, key: str, *args: str) -> str:
        self.helpers.add(key)
        return f"{helper_name(key)}({', '.join(args)})"

    def literal(self, value: Any) -> str:
        text, special = py_literal(value)
        self.uses_inf |= special
        return text

    def typed_literal(self, value: Any, dtype: str) -> str:
        """A scalar literal of register dtype ``dtype`` (plain for f32 / i32 / bool, else ``tl.full``)."""
        text = self.literal(value)
        if register_tl(dtype) in ("tl.float32", "tl.int32", "tl.int1"):
            return text
        return f"tl.full([], {text}, {register_tl(dtype)})"

    def comment(self, ins: n.Instr) -> None:
        first = format_instr(ins, 0)[0].rstrip(" {")
        text = _strip_layouts(first)
        if ins.loc is not None:
            text += f"  [{ins.loc}]"
        self.line(f"# {text}")

    # ------------------------------------------------------------------------------------------------
    # signature
    # ------------------------------------------------------------------------------------------------

    def _signature(self) -> None:
        k = self.kernel
        self.kernel_ident = self.fresh(k.name)
        self.launcher_ident = self.fresh(f"launch_{k.name}")
        for p in k.params:
            dtype = p.value.dtype
            check_native(dtype, f"parameter {p.name!r}")
            name = self.define(p.value)
            if isinstance(p, n.TensorParam):
                self.args.append(KernelArg(name, "pointer", p.name, None, dtype))
                strides = [self.fresh(f"{p.name}_stride{d}") for d in range(p.value.type.rank)]
                self.strides[p.name] = strides
                self.args += [KernelArg(s, "stride", p.name, d) for d, s in enumerate(strides)]
            else:
                self.args.append(KernelArg(name, "scalar", p.name, None, dtype))
        for s in k.shape_symbols():
            name = self.fresh(s)
            self.sym_ident[s] = name
            self.args.append(KernelArg(name, "symbol", s, None, "int32"))
        for c in k.constants:
            check_native(c.dtype, f"constant {c.name!r}")
            name = self.fresh(c.name)
            self.sym_ident[c.name] = name
            self.args.append(KernelArg(name, "constexpr", c.name, None, c.dtype))
        self.grid_exprs = tuple(dim_expr(d, self.sym_ident, host=True) for d in k.grid)

    def dim(self, d: Dim) -> str:
        """A tensor extent as kernel code."""
        return dim_expr(d, self.sym_ident, host=False)

    # ------------------------------------------------------------------------------------------------
    # bodies and control flow
    # ------------------------------------------------------------------------------------------------

    def block(self, body: tuple[n.Instr, ...], targets: list[str]) -> None:
        """Emit ``body``; its final ``yield`` assigns ``targets`` (loop-carried names or if results)."""
        start = len(self.lines)
        for ins in body:
            if isinstance(ins, n.Yield):
                self._assign_parallel(targets, [self.use(v) for v in ins.values])
                continue
            self.instruction(ins)
        if len(self.lines) == start or all(t.strip().startswith("#") for t in self.lines[start:]):
            self.line("pass")

    def _assign_parallel(self, targets: list[str], values: list[str]) -> None:
        """``targets = values`` as simultaneous assignment (a yield may permute carried values)."""
        pairs = [(t, v) for t, v in zip(targets, values) if t != v]
        if any(v in targets for _, v in pairs):
            temps = []
            for t, v in pairs:
                tmp = self.fresh(f"{t}_next")
                self.line(f"{tmp} = {v}")
                temps.append((t, tmp))
            pairs = temps
        for t, v in pairs:
            self.line(f"{t} = {v}")

    def instruction(self, ins: n.Instr) -> None:
        for v in ins.outputs:
            if v.type.scope != "shared":
                check_native(v.dtype, f"value {v}")
        if not isinstance(ins, (n.For, n.If)):
            for v in ins.inputs:
                check_native(v.dtype, f"operand {v} of {ins.opcode}")
        self.comment(ins)
        getattr(self, "op_" + type(ins).__name__)(ins)

    def op_For(self, ins: n.For) -> None:
        lo, hi, step = (self.use(v) for v in (ins.start, ins.stop, ins.step))
        carried = []
        for a, init in zip(ins.iter_args, ins.inits):
            check_native(a.dtype, f"loop-carried value {a}")
            carried.append(self.alias(a, self.use(init)))
        iv = self.define(ins.iv)
        counter = self.fresh(f"{iv}_it")
        if ins.start.name in self.nonneg:
            self.nonneg.add(ins.iv.name)
        self.line(f"for {counter} in range({lo}, {hi}, {step}):")
        self.depth += 1
        # the interpreter counts with Python ints; make the induction variable an i32 tensor everywhere
        self.line(f"{iv} = tl.cast({counter}, tl.int32)")
        self.known = {}
        self.block(ins.body, carried)
        self.depth -= 1
        self.known = {}
        for r, a in zip(ins.results, carried):
            self.alias(r, a)

    def op_If(self, ins: n.If) -> None:
        results = [self.define(r) for r in ins.results]
        before = dict(self.known)
        self.line(f"if {self.use(ins.cond)}:")
        self.depth += 1
        self.block(ins.then_body, results)
        self.depth -= 1
        self.line("else:")
        self.depth += 1
        self.known = dict(before)
        self.block(ins.else_body, results)
        self.depth -= 1
        self.known = {}

    # ------------------------------------------------------------------------------------------------
    # scalars and constructors
    # ------------------------------------------------------------------------------------------------

    def op_Constant(self, ins: n.Constant) -> None:
        value = self.round_literal(ins.value, ins.result.dtype)
        self.const_value[ins.result.name] = value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            self.nonneg.add(ins.result.name)
        self.alias(ins.result, f"tl.full([], {self.literal(value)}, {register_tl(ins.result.dtype)})")

    def op_ProgramId(self, ins: n.ProgramId) -> None:
        self.nonneg.add(ins.result.name)
        self.alias(ins.result, f"tl.program_id({ins.axis})")

    def op_NumPrograms(self, ins: n.NumPrograms) -> None:
        self.nonneg.add(ins.result.name)
        self.alias(ins.result, f"tl.num_programs({ins.axis})")

    def op_SymbolRef(self, ins: n.SymbolRef) -> None:
        name = self.sym_ident.get(ins.name)
        if name is None:
            raise CompileError(f"symbol({ins.name!r}) names neither a shape symbol nor a constant of kernel "
                               f"{self.kernel.name}", location=ins.loc)
        const = next((c for c in self.kernel.constants if c.name == ins.name), None)
        if const is None or (isinstance(const.value, int) and const.value >= 0):
            self.nonneg.add(ins.result.name)
        self.alias(ins.result, f"tl.cast({name}, {register_tl(ins.result.dtype)})")

    def op_Full(self, ins: n.Full) -> None:
        value = self.round_literal(ins.value, ins.result.dtype)
        shape = list(padded(tuple(ins.result.shape)))
        self.alias(ins.result, f"tl.full({shape}, {self.literal(value)}, {register_tl(ins.result.dtype)})")

    def op_Arange(self, ins: n.Arange) -> None:
        size = padded((ins.stop - ins.start,))[0]
        expr = f"tl.arange(0, {size})" + (f" + {ins.start}" if ins.start else "")
        if ins.start >= 0:
            self.nonneg.add(ins.result.name)
        self.alias(ins.result, expr)

    @staticmethod
    def round_literal(value: Any, dtype: str) -> Any:
        """A literal as the Python value the generated code writes: bf16 literals pre-rounded (carried in
        f32), floats as float, ints as int, bools as bool."""
        if dtype == "bool":
            return bool(value)
        if dtype == "bfloat16":
            import numpy as np

            from lowbit.ir.numerics import literal

            return float(np.asarray(literal(value, "bfloat16")).astype(np.float32))
        if dtype in ("float16", "float32"):
            return float(value)
        return int(value)

    # ------------------------------------------------------------------------------------------------
    # assembling the module
    # ------------------------------------------------------------------------------------------------

    def run(self, num_warps: int = 4) -> str:
        self._signature()
        for p in self.kernel.scalar_params:
            name = self.ident[p.name]
            self.line(f"{name} = tl.cast({name}, {register_tl(p.value.dtype)})  # scalar parameter {p.name}")
        self.block(self.kernel.body, [])
        if self.uses_flag:
            flag = KernelArg("NATIVE_BF16_DOT", "flag", "")
            self.args.append(flag)
        return self._module(num_warps)

    def _param_lines(self) -> list[str]:
        k = self.kernel
        out: list[str] = []
        for p in k.params:
            if isinstance(p, n.TensorParam):
                group = [a.name for a in self.args if a.kind in ("pointer", "stride") and a.source == p.name]
                out.append(f"{', '.join(group)},  # {p.name}: {_strip_layouts(format_type(p.value.type))} {p.intent}")
            else:
                out.append(f"{self.ident[p.name]},  # {p.name}: {short_name(p.value.dtype)} scalar")
        symbols = [a.name for a in self.args if a.kind == "symbol"]
        if symbols:
            out.append(f"{', '.join(symbols)},  # shape symbols")
        for c in k.constants:
            value = "specialized at launch" if c.value is None else f"= {c.value!r}"
            out.append(f"{self.sym_ident[c.name]}: tl.constexpr,  # constant {short_name(c.dtype)} {value}")
        if self.uses_flag:
            out.append("NATIVE_BF16_DOT: tl.constexpr,  # bf16 dot on tensor cores (False under the interpreter)")
        return out

    def _module(self, num_warps: int) -> str:
        k = self.kernel
        grid_text = ", ".join(dim_str(d) for d in k.grid)
        head = [
            f'"""Triton kernel `{k.name}`, generated by lowbit from its tile IR (do not edit: regenerate).',
            "",
            f"Grid: ({grid_text}). Launch with {self.launcher_ident}(...) on torch tensors, or through",
            "lowbit.lowering.triton.build_triton(kernel).launch({...}).",
            '"""',
            "import triton",
            "import triton.language as tl",
        ]
        if self.uses_flag:
            head.append("from triton.runtime.interpreter import InterpretedFunction")
        if self.uses_inf:
            head += ["", '_INF = tl.constexpr(float("inf"))', '_NAN = tl.constexpr(float("nan"))']
        parts = ["\n".join(head)]
        if self.helpers:
            parts.append(helper_source(frozenset(self.helpers)).rstrip("\n"))
        sig = "\n".join("        " + line for line in self._param_lines())
        kernel_text = (f"@triton.jit\ndef {self.kernel_ident}(\n{sig}\n):\n"
                       f'    """IR kernel `{k.name}`, grid ({grid_text})."""\n' + "\n".join(self.lines))
        parts.append(kernel_text)
        parts.append(self._launcher(num_warps))
        return "\n\n\n".join(parts) + "\n"

    def _launcher(self, num_warps: int) -> str:
        k = self.kernel
        params = [self.ident[p.name] for p in k.params]
        bound: dict[str, str] = {}
        for p in k.tensor_params:
            for axis, d in enumerate(p.value.type.shape):
                if isinstance(d, Sym) and d.name in self.sym_ident and d.name not in bound:
                    bound[d.name] = f"{self.ident[p.name]}.shape[{axis}]"
        unbound = [s for s in k.shape_symbols() if s not in bound]
        kw = [f"{self.sym_ident[s]}" for s in unbound]
        for c in k.constants:
            kw.append(f"{self.sym_ident[c.name]}={c.value!r}" if c.value is not None else self.sym_ident[c.name])
        kw.append(f"num_warps={num_warps}")
        if self.uses_flag:
            kw.append("native_bf16_dot=None")
        lines = [f"def {self.launcher_ident}({', '.join(params)}, *, {', '.join(kw)}):",
                 f'    """Launch `{self.kernel_ident}` on torch tensors (written in place); shape symbols come from',
                 '    the tensors\' shapes, strides from the tensors."""']
        for s in k.shape_symbols():
            if s in bound:
                lines.append(f"    {self.sym_ident[s]} = {bound[s]}")
        lines.append(f"    grid = ({', '.join(self.grid_exprs)},)")
        lines.append("    if min(grid) <= 0:")
        lines.append("        return")
        if self.uses_flag:
            lines.append("    if native_bf16_dot is None:")
            lines.append(f"        native_bf16_dot = not isinstance({self.kernel_ident}, InterpretedFunction)")
        call: list[str] = []
        for a in self.args:
            if a.kind == "pointer" or a.kind == "scalar":
                call.append(a.name)
            elif a.kind == "stride":
                call.append(f"{self.ident[a.source]}.stride({a.axis})")
            elif a.kind == "symbol":
                call.append(a.name)
            elif a.kind == "constexpr":
                call.append(f"{a.name}={a.name}")
            else:
                call.append("NATIVE_BF16_DOT=native_bf16_dot")
        call.append("num_warps=num_warps")
        lines.append(f"    {self.kernel_ident}[grid](")
        for i in range(0, len(call), 4):
            lines.append("        " + ", ".join(call[i:i + 4]) + ",")
        lines.append("    )")
        return "\n".join(lines)
