"""The kernel language's built-in functions: their signatures, and argument binding with clear errors.

Each intrinsic is written once, as the signature users read in the docs; :func:`bind` matches a call's
arguments against it like Python would, and says what is wrong in Python's own words.

>>> SIGNATURES["load"].text
'load(tensor, offsets, shape, mask=None, other=None, layout=None)'
>>> SIGNATURES["dot"].required
('a', 'b')
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from lowbit.errors import CompileError

#: signature -> one-line description (the README's table is this list)
_SPECS: dict[str, str] = {
    # launch
    "grid(*sizes)": "declare the launch grid: 1-3 sizes from shape symbols and constants (once, first)",
    "block(axis)": "this program's index along a grid axis (i32 scalar)",
    "num_blocks(axis)": "the grid's extent along an axis (i32 scalar)",
    "cdiv(a, b)": "ceiling division (sizes, constants or i32 scalars)",
    # memory
    "load(tensor, offsets, shape, mask=None, other=None, layout=None)":
        "a `shape` tile of a global tensor at `offsets`; out-of-bounds elements read `other` (0)",
    "store(tensor, value, offsets, mask=None)":
        "write a tile into an Out tensor at `offsets`; out-of-bounds elements are skipped",
    "alloc_shared(shape, dtype, layout=None)": "a shared-memory tile (contents undefined)",
    "shared_slice(src, offsets, shape, layout=None)": "a sub-tile of a shared tile (an alias)",
    "copy_to_shared(dst, tensor, offsets, mask=None, other=None)":
        "a global tile into a shared tile (load's masking rules)",
    "load_shared(src, layout=None)": "a shared tile into registers",
    "store_shared(dst, value)": "a register tile into a shared tile",
    "barrier()": "synchronize the workers of a program",
    # construction
    "zeros(shape, dtype=float32, layout=None)": "a tile of zeros",
    "full(shape, value, dtype=None, layout=None)": "a tile with every element `value`",
    "arange(start, stop=None)": "[start, ..., stop-1] as an i32 vector (arange(n): 0..n-1)",
    # conversion
    "cast(x, dtype)": "value conversion (exact rounding rules of lowbit.ir)",
    "view(x, dtype, shape=None, layout=None)": "reinterpret the bits of each row as another dtype",
    # elementwise
    "exp(x)": "e**x", "exp2(x)": "2**x", "log(x)": "natural log", "log2(x)": "base-2 log",
    "sqrt(x)": "square root", "rsqrt(x)": "1/sqrt(x)", "tanh(x)": "tanh", "sigmoid(x)": "1/(1+e**-x)",
    "floor(x)": "round down", "ceil(x)": "round up", "abs(x)": "absolute value",
    "maximum(a, b)": "elementwise max (NaN propagates)", "minimum(a, b)": "elementwise min",
    "where(cond, x, y)": "cond ? x : y, elementwise",
    # contraction and reduction
    "dot(a, b, acc=None)": "acc + a @ b (acc: f32 for float inputs, i32 for int8)",
    "sum(x, axis, keepdims=False)": "sum over an axis",
    "max(x, axis=None, keepdims=False)": "max over an axis (or max(a, b) of compile-time numbers)",
    "min(x, axis=None, keepdims=False)": "min over an axis (or min(a, b) of compile-time numbers)",
    # shapes
    "broadcast_to(x, shape)": "numpy broadcasting to a shape",
    "reshape(x, shape)": "row-major reshape",
    "permute(x, perm)": "transpose axes",
    "transpose(x)": "swap the last two axes",
    "expand_dims(x, axis)": "insert a size-1 axis (also x[:, None])",
    # layouts (compile time)
    "local(*dims)": "register layout: one worker holds everything",
    "spatial(*dims)": "register layout: one element per worker",
    "column_local(*dims)": "local, column-major",
    "column_spatial(*dims)": "spatial, column-major",
}

#: layout constructors callable at compile time
LAYOUT_FUNCTIONS = ("local", "spatial", "column_local", "column_spatial")
#: methods callable on a layout value
LAYOUT_METHODS = ("local", "spatial", "column_local", "column_spatial", "reduce", "permute", "reshape")
#: elementwise unary intrinsics -> IR op
UNARY = {"exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "sqrt": "sqrt", "rsqrt": "rsqrt",
         "tanh": "tanh", "sigmoid": "sigmoid", "floor": "floor", "ceil": "ceil", "abs": "abs"}


@dataclass(frozen=True)
class Signature:
    """A parsed signature: positional-or-keyword parameters, how many are required, a ``*rest``."""

    name: str
    params: tuple[str, ...]
    defaults: tuple[str, ...]  # default texts of the optional params (for docs)
    varargs: bool
    doc: str

    @property
    def required(self) -> tuple[str, ...]:
        return self.params[: len(self.params) - len(self.defaults)]

    @property
    def text(self) -> str:
        if self.varargs:
            return f"{self.name}(*{self.params[0]})" if self.params else f"{self.name}(*args)"
        req = list(self.required)
        opt = [f"{p}={d}" for p, d in zip(self.params[len(req):], self.defaults)]
        return f"{self.name}({', '.join(req + opt)})"


def _parse_spec(spec: str, doc: str) -> Signature:
    name, rest = spec.split("(", 1)
    rest = rest.rstrip(")")
    params, defaults, varargs = [], [], False
    for part in [p.strip() for p in rest.split(",") if p.strip()]:
        if part.startswith("*"):
            varargs = True
            params.append(part[1:])
        elif "=" in part:
            key, default = part.split("=", 1)
            params.append(key)
            defaults.append(default)
        else:
            params.append(part)
    return Signature(name, tuple(params), tuple(defaults), varargs, doc)


SIGNATURES: dict[str, Signature] = {}
for _spec, _doc in _SPECS.items():
    _sig = _parse_spec(_spec, _doc)
    SIGNATURES[_sig.name] = _sig

#: every name the language predefines as a function
FUNCTION_NAMES = frozenset(SIGNATURES)


def bind(sig: Signature, args: list, keywords: dict, *, location=None) -> dict:
    """Match positional ``args`` and ``keywords`` (name -> value) against ``sig``; returns name -> value
    (missing optional parameters absent). For a ``*rest`` signature returns ``{rest: list(args)}``.

    Raises :class:`CompileError` ("load() missing required argument 'shape'", ...).
    """
    def fail(message: str, hint: str | None = None) -> CompileError:
        return CompileError(message, location=location, hint=hint or f"usage: {sig.text}")

    if sig.varargs:
        if keywords:
            key = next(iter(keywords))
            raise fail(f"{sig.name}() takes no keyword arguments (got '{key}')")
        return {sig.params[0] if sig.params else "args": list(args)}
    if len(args) > len(sig.params):
        most = len(sig.params)
        raise fail(f"{sig.name}() takes {_count(most)} but {len(args)} were given")
    bound = dict(zip(sig.params, args))
    for key, value in keywords.items():
        if key not in sig.params:
            close = difflib.get_close_matches(key, sig.params, n=1)
            hint = f"did you mean '{close[0]}'? usage: {sig.text}" if close else None
            raise fail(f"{sig.name}() got an unexpected keyword argument '{key}'", hint)
        if key in bound:
            raise fail(f"{sig.name}() got multiple values for argument '{key}'")
        bound[key] = value
    missing = [p for p in sig.required if p not in bound]
    if missing:
        names = " and ".join(f"'{m}'" for m in missing)
        plural = "s" if len(missing) > 1 else ""
        raise fail(f"{sig.name}() missing required argument{plural} {names}")
    return bound


def _count(k: int) -> str:
    return "no arguments" if k == 0 else "1 argument" if k == 1 else f"{k} arguments"


__all__ = ["Signature", "SIGNATURES", "FUNCTION_NAMES", "LAYOUT_FUNCTIONS", "LAYOUT_METHODS", "UNARY",
           "bind"]
