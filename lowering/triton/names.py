"""Small text utilities of the Triton code generator: identifiers, literals, size expressions, shapes.

>>> names = Names(); names.fresh("acc.1"), names.fresh("acc.1"), names.fresh("range")
('acc_1', 'acc_1_1', 'range_')
>>> from lowbit.ir.symbolic import parse_dim
>>> dim_expr(parse_dim("cdiv(M, BM)"), {"M": "M", "BM": "BM"}, host=True)
'triton.cdiv(M, BM)'
>>> padded((3, 16, 1))
(4, 16, 1)
"""
from __future__ import annotations

import keyword
import math
import re
from typing import Mapping

import numpy as np

from lowbit.ir.symbolic import Dim, Sym

__all__ = ["Names", "dim_expr", "padded", "pow2", "index_expr", "py_literal", "HELPER_PREFIX"]

HELPER_PREFIX = "_lb_"

#: names generated code must not shadow: keywords, the module's imports, Python builtins Triton resolves
_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | {
    "tl", "triton", "range", "float", "int", "bool", "min", "max", "len", "print", "abs", "sum", "pow",
    "isinstance", "getattr", "tuple", "list", "dict", "type", "object", "self", "grid", "InterpretedFunction",
    "NATIVE_BF16_DOT", "num_warps", "native_bf16_dot", "_INF", "_NAN",
}


class Names:
    """Allocates unique Python identifiers from IR names (``acc.1`` -> ``acc_1``)."""

    def __init__(self) -> None:
        self.used: set[str] = set(_RESERVED)

    def fresh(self, hint: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", hint) or "v"
        if base[0].isdigit():
            base = "v" + base
        if base.startswith(HELPER_PREFIX) or base.startswith("__"):
            base = "v" + base
        name = base if base not in _RESERVED else base + "_"
        i = 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name


def pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (int(n) - 1).bit_length()


def padded(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The physical (power-of-two) shape a logical tile shape takes in Triton code."""
    return tuple(pow2(d) for d in shape)


def index_expr(expr: str, axis: int, rank: int) -> str:
    """``expr`` (1-D) indexed to broadcast along ``axis`` of a rank-``rank`` tile: ``x[:, None]``."""
    if rank <= 1:
        return expr
    parts = [":" if a == axis else "None" for a in range(rank)]
    return f"{expr}[{', '.join(parts)}]"


def py_literal(value: object, *, inf_name: str = "_INF", nan_name: str = "_NAN") -> tuple[str, bool]:
    """Python text of a literal for generated code, and whether it needs the module's inf/nan constants
    (``float('inf')`` is not allowed inside a ``@triton.jit`` function; module-level constexprs are)."""
    if isinstance(value, (bool, np.bool_)):
        return ("True" if value else "False"), False
    if isinstance(value, (int, np.integer)):
        return str(int(value)), False
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v):
        return nan_name, True
    if math.isinf(v):
        return (inf_name if v > 0 else f"-{inf_name}"), True
    return repr(v), False


def dim_expr(d: Dim, names: Mapping[str, str], *, host: bool) -> str:
    """A size expression as Python text: in the kernel (``host=False``; sizes are non-negative, so Triton's
    truncating ``//`` is floor division) or in the host launcher (``host=True``)."""
    if isinstance(d, int):
        return str(d)
    if isinstance(d, Sym):
        return names[d.name]
    a, b = dim_expr(d.lhs, names, host=host), dim_expr(d.rhs, names, host=host)
    if d.op in ("+", "-", "*", "//", "%"):
        return f"({a} {d.op} {b})"
    if d.op == "cdiv":
        return f"triton.cdiv({a}, {b})" if host else f"(({a} + {b} - 1) // {b})"
    if d.op in ("min", "max"):
        return f"{d.op}({a}, {b})" if host else f"tl.{'minimum' if d.op == 'min' else 'maximum'}({a}, {b})"
    raise ValueError(f"unknown size operator {d.op!r}")  # pragma: no cover - SymOp validates ops
