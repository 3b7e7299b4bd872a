"""The reference interpreter: THE oracle for every pass and backend.

``interpret(kernel, args)`` runs every program of the grid, one after another in row-major order, and
every instruction as one vectorized numpy operation on whole tiles (numerics in :mod:`.numerics`).
Layouts are ignored: they never change a program's meaning.

>>> from lowbit.ir.builder import KernelBuilder
>>> import numpy as np
>>> kb = KernelBuilder("fill")
>>> out = kb.tensor_param("out", "i32", ["N"])
>>> kb.set_grid("cdiv(N, 4)")
>>> base = kb.mul(kb.program_id(0), 4)
>>> kb.store(out, kb.add(kb.arange(0, 4), base), [base])
>>> interpret(kb.build(), {"out": np.zeros(7, np.int32)})["out"]
array([0, 1, 2, 3, 4, 5, 6], dtype=int32)
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import numpy as np

from . import nodes as n
from . import numerics as num
from .numerics import InterpreterError
from .symbolic import Sym, dim_eval, dim_str
from .types import is_code, nbits_of, numpy_dtype, short_name
from .verifier import verify


class _Program:
    """Runs the body once for one program id; ``env`` maps value names to numpy arrays."""

    def __init__(self, kernel: n.Kernel | None, args: Mapping[str, Any], sizes: Mapping[str, Any],
                 grid: tuple[int, ...], pid: tuple[int, ...]):
        self.args, self.sizes, self.grid, self.pid = args, sizes, grid, pid
        self.env: dict[str, np.ndarray] = {}
        for p in kernel.params if kernel is not None else ():
            self.env[p.name] = args[p.name]

    def get(self, v: n.Value) -> np.ndarray:
        return self.env[v.name]

    def run(self, body: tuple[n.Instr, ...]) -> tuple[np.ndarray, ...]:
        """Execute ``body``; return the yielded arrays (if it ends with a yield)."""
        for ins in body:
            if isinstance(ins, n.Yield):
                return tuple(self.get(v) for v in ins.values)
            try:
                out = getattr(self, "op_" + type(ins).__name__)(ins)
            except InterpreterError as e:
                if e.location is None and ins.loc is not None:
                    e.location = ins.loc
                raise
            if out is not None:
                results = ins.outputs
                if not isinstance(out, tuple):
                    out = (out,)
                for v, a in zip(results, out):
                    self.env[v.name] = a
        return ()

    # ---------------------------------------------------------------- scalars, constructors
    def op_Constant(self, ins: n.Constant):
        return num.literal(ins.value, ins.result.dtype)

    def op_ProgramId(self, ins: n.ProgramId):
        return np.asarray(self.pid[ins.axis], np.int32)

    def op_NumPrograms(self, ins: n.NumPrograms):
        return np.asarray(self.grid[ins.axis], np.int32)

    def op_SymbolRef(self, ins: n.SymbolRef):
        return np.asarray(self.sizes[ins.name]).astype(numpy_dtype(ins.result.dtype))

    def op_Full(self, ins: n.Full):
        return num.literal(ins.value, ins.result.dtype, ins.result.shape)

    def op_Arange(self, ins: n.Arange):
        return np.arange(ins.start, ins.stop, dtype=np.int32)

    # ---------------------------------------------------------------- global memory
    def _window(self, tensor: np.ndarray, offsets, shape, checked, mask, what: str):
        """Index vectors per axis, the in-bounds-and-unmasked selector, raising on unchecked OOB."""
        offs = [int(self.get(o)) for o in offsets]
        idx = [o + np.arange(s, dtype=np.int64) for o, s in zip(offs, shape)]
        inb = [(i >= 0) & (i < d) for i, d in zip(idx, tensor.shape)]
        rank = len(shape)
        grids = np.meshgrid(*idx, indexing="ij")
        valid = np.ones(shape, dtype=bool)
        for ax, ok in enumerate(inb):
            valid &= ok.reshape([-1 if a == ax else 1 for a in range(rank)])
        active = np.ones(shape, dtype=bool) if mask is None else self.get(mask).astype(bool)
        for ax in range(rank):
            if checked is not None and not checked[ax]:
                bad = ~inb[ax].reshape([-1 if a == ax else 1 for a in range(rank)]) & active
                if bad.any():
                    raise InterpreterError(
                        f"{what}: axis {ax} is marked unchecked but the tile at offset {offs[ax]} of extent "
                        f"{shape[ax]} leaves [0, {tensor.shape[ax]})",
                        hint="a pass proved this access in bounds wrongly")
        return grids, valid & active

    def _gather(self, ins, shape) -> np.ndarray:
        tensor = self.get(ins.tensor)
        grids, sel = self._window(tensor, ins.offsets, shape, ins.checked, ins.mask, ins.opcode)
        dtype = numpy_dtype(ins.tensor.dtype)
        fill = self.get(ins.other) if ins.other is not None else np.zeros((), dtype)
        out = np.full(shape, fill, dtype=dtype)
        out[sel] = tensor[tuple(g[sel] for g in grids)]
        return out

    def op_Load(self, ins: n.Load):
        return self._gather(ins, ins.result.shape)

    def op_Store(self, ins: n.Store):
        tensor = self.get(ins.tensor)
        value = self.get(ins.value)
        grids, sel = self._window(tensor, ins.offsets, value.shape, ins.checked, ins.mask, "store")
        tensor[tuple(g[sel] for g in grids)] = value[sel]

    # ---------------------------------------------------------------- shared memory
    def op_AllocShared(self, ins: n.AllocShared):
        return np.zeros(ins.result.shape, dtype=numpy_dtype(ins.result.dtype))

    def op_SharedSlice(self, ins: n.SharedSlice):
        src = self.get(ins.src)
        offs = [int(self.get(o)) for o in ins.offsets]
        r, R = ins.result.type.rank, ins.src.type.rank
        extents = [1] * (R - r) + list(ins.result.shape)
        for ax, (o, e, d) in enumerate(zip(offs, extents, src.shape)):
            if o < 0 or o + e > d:
                raise InterpreterError(f"shared_slice: axis {ax} range [{o}, {o + e}) leaves [0, {d})")
        index = tuple(offs[:R - r]) + tuple(slice(o, o + e) for o, e in zip(offs[R - r:], extents[R - r:]))
        return src[index]  # a numpy view: writes through it reach the parent buffer

    def op_CopyToShared(self, ins: n.CopyToShared):
        dst = self.get(ins.dst)
        dst[...] = self._gather(ins, dst.shape)

    def op_LoadShared(self, ins: n.LoadShared):
        return np.array(self.get(ins.src), copy=True)

    def op_StoreShared(self, ins: n.StoreShared):
        self.get(ins.dst)[...] = self.get(ins.value)

    def op_Barrier(self, ins: n.Barrier):
        return None

    # ---------------------------------------------------------------- conversions, math
    def op_View(self, ins: n.View):
        return num.view(self.get(ins.x), ins.x.dtype, ins.result.dtype)

    def op_Cast(self, ins: n.Cast):
        return num.cast(self.get(ins.x), ins.x.dtype, ins.result.dtype)

    def op_Unary(self, ins: n.Unary):
        return num.unary(ins.op, self.get(ins.x), ins.x.dtype)

    def op_Binary(self, ins: n.Binary):
        return num.binary(ins.op, self.get(ins.lhs), self.get(ins.rhs), ins.lhs.dtype)

    def op_Where(self, ins: n.Where):
        return num.where(self.get(ins.cond), self.get(ins.x), self.get(ins.y))

    def op_Lookup(self, ins: n.Lookup):
        return num.lookup(self.get(ins.x), ins.x.dtype, ins.table, ins.result.dtype)

    def op_Dot(self, ins: n.Dot):
        return num.dot(self.get(ins.a), self.get(ins.b), self.get(ins.acc), ins.acc.dtype)

    def op_Reduce(self, ins: n.Reduce):
        return num.reduce(ins.op, self.get(ins.x), ins.x.dtype, ins.axis, ins.keepdims)

    def op_Broadcast(self, ins: n.Broadcast):
        return np.array(np.broadcast_to(self.get(ins.x), ins.result.shape))

    def op_Reshape(self, ins: n.Reshape):
        return self.get(ins.x).reshape(ins.result.shape)

    def op_Permute(self, ins: n.Permute):
        return np.transpose(self.get(ins.x), ins.perm)

    def op_ExpandDims(self, ins: n.ExpandDims):
        return np.expand_dims(self.get(ins.x), ins.axis)

    # ---------------------------------------------------------------- control flow
    def op_For(self, ins: n.For):
        start, stop, step = (int(self.get(v)) for v in (ins.start, ins.stop, ins.step))
        if step <= 0:
            raise InterpreterError(f"for: step must be positive, got {step}")
        carried = tuple(self.get(v) for v in ins.inits)
        for i in range(start, stop, step):
            self.env[ins.iv.name] = np.asarray(i, np.int32)
            for a, val in zip(ins.iter_args, carried):
                self.env[a.name] = val
            carried = self.run(ins.body)
        return carried

    def op_If(self, ins: n.If):
        body = ins.then_body if bool(self.get(ins.cond)) else ins.else_body
        return self.run(body)


# ----------------------------------------------------------------------------------------------------
# argument binding
# ----------------------------------------------------------------------------------------------------

def _bind(kernel: n.Kernel, args: Mapping[str, Any], constants: Mapping[str, Any] | None,
          shape_bindings: Mapping[str, int] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the arguments; return (arrays by parameter name, sizes by symbol/constant name)."""
    missing = [p.name for p in kernel.params if p.name not in args]
    if missing:
        raise InterpreterError(f"kernel {kernel.name}: missing argument(s) {', '.join(missing)}")
    extra = sorted(set(args) - {p.name for p in kernel.params})
    if extra:
        raise InterpreterError(f"kernel {kernel.name}: unknown argument(s) {', '.join(extra)}",
                               hint=f"parameters are {', '.join(p.name for p in kernel.params)}")
    sizes: dict[str, Any] = {}
    constants = dict(constants or {})
    for c in kernel.constants:
        if c.name in constants:
            if c.value is not None and constants[c.name] != c.value:
                raise InterpreterError(f"constant {c.name} is specialized to {c.value}, got {constants[c.name]}")
            sizes[c.name] = constants.pop(c.name)
        elif c.value is not None:
            sizes[c.name] = c.value
        else:
            raise InterpreterError(f"constant {c.name} has no value", hint="pass constants={...}")
    if constants:
        raise InterpreterError(f"unknown constant(s) {', '.join(sorted(constants))}")
    for name, value in (shape_bindings or {}).items():
        sizes[name] = int(value)
    bound: dict[str, Any] = {}
    for p in kernel.params:
        a = args[p.name]
        t = p.value.type
        if isinstance(p, n.ScalarParam):
            bound[p.name] = np.asarray(a).astype(numpy_dtype(t.dtype))
            if bound[p.name].shape != ():
                raise InterpreterError(f"argument {p.name} must be a scalar, got shape {np.shape(a)}")
            continue
        want = numpy_dtype(t.dtype)
        if not isinstance(a, np.ndarray):
            raise InterpreterError(f"argument {p.name} must be a numpy array, got {type(a).__name__}")
        if a.dtype != want:
            kind = "codes" if is_code(t.dtype) else "values"
            raise InterpreterError(f"argument {p.name} ({short_name(t.dtype)}) must hold {kind} as {want}, "
                                   f"got {a.dtype}")
        if a.ndim != t.rank:
            raise InterpreterError(f"argument {p.name} must have rank {t.rank}, got shape {a.shape}")
        if is_code(t.dtype) and nbits_of(t.dtype) < 8 and a.size and int(a.max()) >= 1 << nbits_of(t.dtype):
            raise InterpreterError(f"argument {p.name} holds a code >= 2**{nbits_of(t.dtype)}, "
                                   f"which is not a {t.dtype} code")
        for d, extent in zip(t.shape, a.shape):
            if isinstance(d, Sym):
                if d.name in sizes and sizes[d.name] != extent:
                    raise InterpreterError(f"size {d.name} is {sizes[d.name]}, but argument {p.name} has "
                                           f"extent {extent} there (shape {a.shape})")
                sizes[d.name] = extent
        bound[p.name] = a
    for p in kernel.tensor_params:
        for d, extent in zip(p.value.type.shape, bound[p.name].shape):
            if not isinstance(d, Sym):
                want_extent = dim_eval(d, sizes)
                if want_extent != extent:
                    raise InterpreterError(f"argument {p.name} has shape {bound[p.name].shape}, but size "
                                           f"{dim_str(d)} = {want_extent}")
    return bound, sizes


def interpret(kernel: n.Kernel, args: Mapping[str, Any], constants: Mapping[str, Any] | None = None,
              shape_bindings: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Run ``kernel`` on numpy arguments (tensors of the logical shape, written in place; code types as
    uint8 codes; scalars as Python/numpy numbers). Returns ``args`` as a dict.

    ``constants`` gives values of unspecialized constants; ``shape_bindings`` binds size symbols that no
    argument shape determines (e.g. ``G`` when only ``K // G`` appears)."""
    verify(kernel)
    bound, sizes = _bind(kernel, args, constants, shape_bindings)
    grid = tuple(dim_eval(d, sizes) for d in kernel.grid)
    for pid in itertools.product(*(range(g) for g in grid)):
        _Program(kernel, bound, sizes, grid, pid).run(kernel.body)
    return dict(args)


#: instructions whose result depends on their operands alone (no memory, program id, symbol or loop)
_PURE_OPS = (n.Constant, n.Full, n.Arange, n.Unary, n.Binary, n.Cast, n.View, n.Where, n.Lookup,
             n.Broadcast, n.Reshape, n.Permute, n.ExpandDims)


def evaluate_constant(value: n.Value, defs: Mapping[str, n.Instr | None]) -> np.ndarray | None:
    """The array of ``value`` when it is computed from literals alone (``defs``: value name -> defining
    instruction), with the interpreter's numerics; None when it depends on anything else.

    What it is for: a backend proving a fact about a computed tile, e.g. the shift amounts of an unpack.

    >>> from lowbit.ir.builder import KernelBuilder
    >>> kb = KernelBuilder("k")
    >>> shifts = kb.mul(kb.arange(0, 4), kb.full([4], 8, "i32"))
    >>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    >>> evaluate_constant(shifts, defs).tolist()
    [0, 8, 16, 24]
    """
    order: list[n.Instr] = []
    seen: set[str] = set()

    def visit(v: n.Value) -> bool:
        if v.name in seen:
            return True
        ins = defs.get(v.name)
        if not isinstance(ins, _PURE_OPS):
            return False
        if not all(visit(o) for o in ins.inputs):
            return False
        seen.add(v.name)
        order.append(ins)
        return True

    if not visit(value):
        return None
    program = _Program(None, {}, {}, (), ())
    try:
        program.run(tuple(order))
    except InterpreterError:
        return None
    return program.get(value)


#: instructions that only move elements (each result element is one element of the operand)
_VIEW_OPS = (n.Broadcast, n.Reshape, n.Permute, n.ExpandDims)


def element_origins(value: n.Value, defs: Mapping[str, n.Instr | None]) -> tuple[n.Value, np.ndarray] | None:
    """``(root, flat)``: element ``i`` of ``value`` is element ``flat[i]`` (row-major) of ``root``, the first
    value up the chain of broadcast / reshape / permute / expand_dims instructions that is not one of them
    (the chain run by the interpreter on the root's element numbers). None for a root of symbolic shape.

    >>> from lowbit.ir.builder import KernelBuilder
    >>> kb = KernelBuilder("k")
    >>> a = kb.arange(0, 3)
    >>> b = kb.broadcast_to(kb.expand_dims(a, 0), [2, 3])
    >>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    >>> root, flat = element_origins(b, defs)
    >>> root.name == a.name, flat.tolist()
    (True, [[0, 1, 2], [0, 1, 2]])
    """
    chain: list[n.Instr] = []
    root = value
    while isinstance(defs.get(root.name), _VIEW_OPS):
        chain.append(defs[root.name])
        root = chain[-1].x
    shape = root.type.shape
    if not all(isinstance(d, int) for d in shape):
        return None
    program = _Program(None, {}, {}, (), ())
    program.env[root.name] = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    program.run(tuple(reversed(chain)))
    return root, program.get(value)


#: known-zero bit in :func:`bit_origins`
ZERO_BIT = -1


def bit_origins(value: n.Value, defs: Mapping[str, n.Instr | None]) -> tuple[n.Value, np.ndarray] | None:
    """``(root, bits)``: bit ``b`` of element ``i`` of the unsigned integer tile ``value`` is bit
    ``bits[i, b] % W`` of element ``bits[i, b] // W`` (row-major) of ``root`` (``W``: the root's bits), or
    known to be 0 (:data:`ZERO_BIT`); ``bits`` has shape ``value.shape + (nbits,)``. None when ``value`` is
    not built from one root by bit moves alone: element moves, ``view``, unsigned ``cast``, shifts by
    constants, ``and`` with constants, and ``or`` / ``add`` / ``sum`` of parts with no bit in common.

    What it is for: a backend proving which bits of which storage words an unpacked code is made of (the
    pair dot reads the words itself, with instructions the IR does not have).

    >>> from lowbit.ir.builder import KernelBuilder
    >>> kb = KernelBuilder("k")
    >>> w = kb.tensor_param("w", "u16", [4])
    >>> words = kb.load(w, [kb.const(0, "i32")], [4])
    >>> code = kb.binary("and", kb.binary("shr", words, kb.full([4], 2, "u16")), kb.full([4], 7, "u16"))
    >>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
    >>> root, bits = bit_origins(code, defs)
    >>> root.name == words.name, bits[1, :4].tolist()   # element 1: bits 2, 3, 4 of word 1, then zeros
    (True, [18, 19, 20, -1])
    """
    memo: dict[str, tuple[n.Value, np.ndarray] | None] = {}

    def unsigned(v: n.Value) -> bool:
        return v.dtype.startswith("uint") and not is_code(v.dtype)

    def shape_of(v: n.Value) -> tuple[int, ...] | None:
        shape = v.type.shape
        return tuple(int(d) for d in shape) if all(isinstance(d, int) for d in shape) else None

    def combine(parts: list[np.ndarray]) -> np.ndarray | None:
        out = parts[0].copy()
        for p in parts[1:]:
            if np.any((out != ZERO_BIT) & (p != ZERO_BIT)):
                return None                  # overlapping bits: a carry or an OR of two sources
            out = np.where(out == ZERO_BIT, p, out)
        return out

    def shifted(x: np.ndarray, amounts: np.ndarray, left: bool) -> np.ndarray:
        nb = x.shape[-1]
        pos = np.arange(nb)
        src = pos - amounts[..., None] if left else pos + amounts[..., None]
        ok = (src >= 0) & (src < nb)
        return np.where(ok, np.take_along_axis(x, np.clip(src, 0, nb - 1), axis=-1), ZERO_BIT)

    def constant_mask(v: n.Value, shape: tuple[int, ...], nb: int) -> np.ndarray | None:
        c = evaluate_constant(v, defs)
        if c is None:
            return None
        c = np.broadcast_to(np.asarray(c).astype(np.uint64), shape)
        return ((c[..., None] >> np.arange(nb, dtype=np.uint64)) & np.uint64(1)).astype(bool)

    def origins(v: n.Value) -> tuple[n.Value, np.ndarray] | None:
        if v.name not in memo:
            memo[v.name] = compute(v)
        return memo[v.name]

    def compute(v: n.Value) -> tuple[n.Value, np.ndarray] | None:
        shape = shape_of(v)
        if shape is None or not unsigned(v):
            return None
        nb = nbits_of(v.dtype)
        ins = defs.get(v.name)
        if isinstance(ins, _VIEW_OPS):
            found = element_origins(v, defs)
            if found is None:
                return None
            src = origins(found[0])
            return None if src is None else (src[0], src[1].reshape(-1, nb)[found[1]])
        if isinstance(ins, n.View) and unsigned(ins.x):
            src = origins(ins.x)
            return None if src is None else (src[0], src[1].reshape(shape + (nb,)))
        if isinstance(ins, n.Cast) and unsigned(ins.x):
            src = origins(ins.x)
            if src is None:
                return None
            bits = src[1][..., :nb]
            pad = nb - bits.shape[-1]
            return src[0], np.concatenate([bits, np.full(shape + (pad,), ZERO_BIT, np.int64)], -1) if pad else bits
        if isinstance(ins, n.Binary) and ins.op in ("shr", "shl"):
            src, amounts = origins(ins.lhs), evaluate_constant(ins.rhs, defs)
            if src is None or amounts is None:
                return None
            amounts = np.broadcast_to(np.asarray(amounts).astype(np.int64), shape)
            return src[0], shifted(src[1], amounts, ins.op == "shl")
        if isinstance(ins, n.Binary) and ins.op == "and":
            for word, mask in ((ins.lhs, ins.rhs), (ins.rhs, ins.lhs)):
                keep = constant_mask(mask, shape, nb)
                if keep is not None:
                    src = origins(word)
                    return None if src is None else (src[0], np.where(keep, src[1], ZERO_BIT))
            return None
        if isinstance(ins, n.Binary) and ins.op in ("or", "add"):
            a, b = origins(ins.lhs), origins(ins.rhs)
            if a is None or b is None or a[0].name != b[0].name:
                return None
            bits = combine([a[1], b[1]])
            return None if bits is None else (a[0], bits)
        if isinstance(ins, n.Reduce) and ins.op == "sum":
            src = origins(ins.x)
            if src is None:
                return None
            bits = combine(list(np.moveaxis(src[1], ins.axis, 0)))
            return None if bits is None else (src[0], bits.reshape(shape + (nb,)))
        if evaluate_constant(v, defs) is not None:
            return None                          # constants are masks or shift amounts, not roots
        size = int(np.prod(shape, dtype=np.int64))
        return v, (np.arange(size, dtype=np.int64)[:, None] * nb + np.arange(nb)).reshape(shape + (nb,))

    return origins(value)


__all__ = ["interpret", "evaluate_constant", "element_origins", "bit_origins", "ZERO_BIT", "InterpreterError"]
