"""The IR's text form (parsed back by :mod:`lowbit.ir.parser`; ``parse(print_kernel(k)) == k``).

Instructions print generically as ``%r = opcode(positional..., key=value...) : type``; attributes equal
to their default are left out. ``for`` / ``if`` / ``yield`` have their own block syntax (README).

>>> from lowbit.ir.types import TileType
>>> format_type(TileType("uint4", ("K", "N"), "global"))
'uint4[K, N] @global'
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, fields
from typing import Any

from . import nodes as n
from .symbolic import dim_str
from .types import TileType, short_name

INDENT = "  "


def format_type(t: TileType) -> str:
    """``f16[16, 64]``, ``i32``, ``u4[K, N] @global``, ``f16[64, 64] @shared layout=...``."""
    text = short_name(t.dtype)
    if t.shape:
        text += "[" + ", ".join(dim_str(d) for d in t.shape) + "]"
    if t.scope != "register":
        text += f" @{t.scope}"
    if t.layout is not None:
        text += f" layout={format_layout(t.layout)}"
    return text


def format_layout(layout: Any) -> str:
    """A layout as a constructor call of its class in :mod:`lowbit.layout` with its dataclass fields,
    e.g. ``RegisterLayout(shape=[4, 4], mode_shape=[2, 2, 4], spatial_modes=[0, 2], local_modes=[1])``.
    Exact (layouts are canonical), and parseable without knowing each class's ``repr``."""
    if dataclasses.is_dataclass(layout) and not isinstance(layout, type):
        parts = []
        for f in dataclasses.fields(layout):
            if not f.init:
                continue
            v = getattr(layout, f.name)
            if f.default is not dataclasses.MISSING and v == f.default and type(v) is type(f.default):
                continue
            parts.append(f"{f.name}={format_layout(v)}")
        return f"{type(layout).__name__}({', '.join(parts)})"
    if layout is None:
        return "none"
    if isinstance(layout, (list, tuple)):
        return "[" + ", ".join(format_layout(v) for v in layout) + "]"
    if isinstance(layout, (bool, int, float, str)):
        return format_literal(layout)
    if hasattr(layout, "__index__"):
        return str(int(layout))
    raise TypeError(f"cannot print layout component {layout!r}")


def format_literal(x: Any) -> str:
    """Attribute values: ints, floats (always with a '.', 'e', 'inf' or 'nan'), bools, strings,
    Values, lists (tuples)."""
    if isinstance(x, n.Value):
        return str(x)
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return repr(x)
    if isinstance(x, str):
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(x, tuple):
        return "[" + ", ".join(format_literal(v) for v in x) + "]"
    raise TypeError(f"cannot print attribute {x!r}")


def _args(ins: n.Instr) -> str:
    parts: list[str] = []
    for name in ins.POSITIONAL:
        parts.append(format_literal(getattr(ins, name)))
    for f in fields(ins):
        if f.name in ins.POSITIONAL or f.name in ("result", "results", "loc", "op"):
            continue
        v = getattr(ins, f.name)
        if f.default is not MISSING and v == f.default and type(v) is type(f.default):
            continue
        parts.append(f"{f.name}={format_literal(v)}")
    return ", ".join(parts)


def format_instr(ins: n.Instr, indent: int = 1, locs: bool = False) -> list[str]:
    """The lines of one instruction (several for ``for`` / ``if``)."""
    pad = INDENT * indent
    suffix = f"  # {ins.loc}" if locs and ins.loc is not None else ""
    if isinstance(ins, n.For):
        head = ", ".join(str(r) for r in ins.results)
        head = f"{head} = " if head else ""
        carried = ", ".join(f"{a}: {format_type(a.type)} = {i}" for a, i in zip(ins.iter_args, ins.inits))
        lines = [f"{pad}{head}for {ins.iv} = {ins.start} to {ins.stop} step {ins.step} "
                 f"iter_args({carried}) {{{suffix}"]
        for sub in ins.body:
            lines += format_instr(sub, indent + 1, locs)
        return lines + [f"{pad}}}"]
    if isinstance(ins, n.If):
        head = ", ".join(str(r) for r in ins.results)
        head = f"{head} = " if head else ""
        types = ", ".join(format_type(r.type) for r in ins.results)
        lines = [f"{pad}{head}if {ins.cond} -> ({types}) {{{suffix}"]
        for sub in ins.then_body:
            lines += format_instr(sub, indent + 1, locs)
        lines.append(f"{pad}}} else {{")
        for sub in ins.else_body:
            lines += format_instr(sub, indent + 1, locs)
        return lines + [f"{pad}}}"]
    if isinstance(ins, n.Yield):
        vals = ", ".join(str(v) for v in ins.values)
        return [f"{pad}yield{' ' + vals if vals else ''}{suffix}"]
    text = f"{ins.opcode}({_args(ins)})"
    r = getattr(ins, "result", None)
    if r is not None:
        text = f"{r} = {text} : {format_type(r.type)}"
    return [pad + text + suffix]


def _format_param(p: n.Param) -> str:
    if isinstance(p, n.TensorParam):
        return f"{p.value}: {format_type(p.value.type)} {p.intent}"
    return f"{p.value}: {format_type(p.value.type)}"


def print_kernel(k: n.Kernel, *, locs: bool = False) -> str:
    """The kernel as text. With ``locs=True`` each instruction's source location is appended as a
    ``# file:line:col`` comment (comments are ignored by the parser)."""
    params = ", ".join(_format_param(p) for p in k.params)
    lines = [f"kernel {k.name}({params})"]
    if k.constants:
        consts = []
        for c in k.constants:
            text = f"{c.name}: {short_name(c.dtype)}"
            if c.value is not None:
                text += f" = {format_literal(c.value)}"
            consts.append(text)
        lines.append(f"{INDENT * 2}constants({', '.join(consts)})")
    lines.append(f"{INDENT * 2}grid({', '.join(dim_str(d) for d in k.grid)}) {{")
    for ins in k.body:
        lines += format_instr(ins, 1, locs)
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["format_layout", "format_type", "format_literal", "format_instr", "print_kernel"]
