"""Tile IR -> TensorIR (TVMScript text) for the CPU (LLVM) and for NVIDIA GPUs (CUDA source).

:func:`emit_tvm` turns a kernel (or a :class:`~lowbit.lowering.passes.Lowered` result) into the text of a
``@T.prim_func``; :func:`lowbit.lowering.tvm.launcher.build_tvm` parses, compiles and wraps it.

How the IR maps to TensorIR:

* **the grid** -> one outer loop over all programs: ``T.parallel`` on a CPU, ``blockIdx.x`` on CUDA (with
  ``threadIdx.x`` inside: every tile instruction is spread over the block's threads);
* **a tile value** -> either a buffer (register tiles: ``local`` on the CPU; on CUDA every materialized
  tile lives in ``shared`` memory, since threads exchange elements) or a *lazy expression* fused into its
  consumer's loop nest (see :mod:`.analysis`), so a chain of elementwise instructions, broadcasts,
  reshapes and loads becomes one loop nest;
* **an instruction** -> a loop nest over the result tile; ``dot`` -> ``i, k, j`` nest accumulating in the
  accumulator's dtype (written in place into a loop-carried accumulator when the old value is dead);
  reductions -> a loop over the reduced axis;
* **the CPU ``dot``** is a small micro-kernel: ``j`` vectorized; ``k`` unrolled (up to 16 steps) when an
  operand is computed on the fly, so a fused unpack's word offsets and shift amounts become constants;
  rows blocked by up to 4 (:func:`.schedule.dot_row_block`) through a register block, each element of
  ``b`` computed once per block and reused by its rows (the order of every sum is unchanged);
* **scalars** (rank 0) -> TIR variables (``name: T.int32 = ...``); index arithmetic stays plain so TVM
  simplifies it; data arithmetic wraps / rounds exactly as the interpreter (:mod:`.tir_text`);
* **for** -> a serial loop; loop-carried values live in buffers (``iter_args`` read them, ``yield`` writes
  them, through temporaries when one yield reads another carried value); **if** -> ``if``/``else``
  writing result buffers;
* **masks and edges** -> conditions: a loop nest whose loads/stores may leave the tensor is emitted twice,
  a fast path (all accesses in bounds: plain, vectorized) and a checked path (``T.if_then_else`` loads,
  guarded stores), chosen by one scalar test per nest.

Schedules come from :mod:`.schedule` (layouts -> vector widths on the CPU, thread mapping on CUDA) and
from ``Lowered.facts``: the ``vector`` pass's per-access widths (``facts["vector"]``) and an optional
``facts["vector_width"] = {value name: lanes}`` override.

Numerics follow ``lowbit.ir.interpret`` exactly for integers and elementwise floats (see
:mod:`.tir_text`: float32 products are fenced against FMA contraction on the CPU; compile CUDA sources
with ``nvcc --fmad=false`` for the same guarantee). ``dot`` and float reductions may reassociate.

Not supported: code-typed (sub-byte / fp8) tiles -- run the ``lower-lowbit`` pass first.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("scale")
>>> x = kb.tensor_param("x", "f32", ["N"])
>>> kb.set_grid("cdiv(N, 64)")
>>> off = kb.mul(kb.program_id(0), 64, name="off")
>>> kb.store(x, kb.mul(kb.load(x, [off], [64]), 2.0), [off])
>>> src = emit_tvm(kb.build(), "cpu")                      # doctest: +SKIP
>>> print(src.text)                                         # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import itertools
import keyword
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence, Union

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.symbolic import Sym
from lowbit.ir.types import is_code, kind_of, nbits_of, short_name
from lowbit.ir.verifier import verify
from lowbit.lowering.target import host_has_avx2, host_has_avx512, host_has_avx512_bf16

from . import tir_text as tt
from . import lane_reads, lookup_sum, nan_guard, pair_dot, row_fold, transpose
from .operands import LANES, Affine, view_index
from .analysis import KernelInfo, plan_inlining
from .schedule import choose_vector, cpu_loops, cuda_loops, dot_row_block, layout_vector_width
from .tiles import BufferTile, ExprTile, ScalarTile, SharedView, Tile, elementwise, remap, reshape_map, unflatten
from .unpack_period import unpack_period
from ..passes.select_dequant import DECODED

#: the fused forms of a CPU ``dot`` (see ``_Emitter._fused_dot_of``)
FusedDot = Union[pair_dot.PairDot, pair_dot.DecodedPairDot, lookup_sum.LookupSum]

__all__ = ["AbiParam", "TVMSource", "CodegenTarget", "resolve_target", "emit_tvm"]

#: an LLVM function returning its 512-bit argument through an empty inline ``asm``: LLVM cannot see
#: through it, so a constant passed through it is a value to keep, not one to re-load (see
#: :meth:`_Emitter.table_buffer`)
PIN = "lowbit_pin"


def pin_helper(lanes: int) -> tuple[str, str]:
    """The name and LLVM IR of the identity function over ``lanes`` x i32 that hides a value from LLVM (an empty
    inline asm): ``lowbit_pin`` for 16 lanes, ``lowbit_pin8`` for 8."""
    name = PIN if lanes == LANES else f"{PIN}{lanes}"
    return name, f"""
define <{lanes} x i32> @{name}(<{lanes} x i32> %v) #0 {{
  %r = call <{lanes} x i32> asm "", "=v,0"(<{lanes} x i32> %v)
  ret <{lanes} x i32> %r
}}
attributes #0 = {{ alwaysinline nounwind readnone }}
"""


# ----------------------------------------------------------------------------------------------------
# public data
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AbiParam:
    """One argument of the generated function, in call order.

    ``role``: ``tensor`` (a kernel tensor parameter; ``dims`` its shape as size expressions),
    ``scalar`` (a kernel scalar parameter passed as ``abi_dtype``: int64 / float64 / bool) or ``symbol``
    (a shape symbol, int32, bound by the launcher from the argument shapes).
    """

    name: str
    role: str
    dtype: str
    abi_dtype: str
    dims: tuple[str, ...] = ()
    intent: str = "in"


@dataclass(frozen=True)
class TVMSource:
    """Generated TensorIR: ``text`` is a TVMScript ``@T.prim_func`` named ``func_name``.

    ``abi`` lists the function's arguments (kernel parameters, then shape symbols); ``constants`` the
    compile-time constants it was specialized with; ``kind`` is ``cpu`` or ``cuda``; ``target`` the TVM
    target dict it is meant for.
    """

    kernel_name: str
    func_name: str
    text: str
    kind: str
    target: Mapping[str, Any]
    abi: tuple[AbiParam, ...]
    constants: Mapping[str, Any]
    threads: int = 1

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class CodegenTarget:
    """What the generator needs from a target: CPU (vector bits) or CUDA (arch, threads per block)."""

    kind: str                       # "cpu" | "cuda"
    tvm: Mapping[str, Any]          # the TVM target dict
    vector_bits: int = 128
    threads: int = 128

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    def lanes(self, dtype: str) -> int:
        bits = 8 if dtype == "bool" else nbits_of(dtype)
        return max(1, self.vector_bits // bits)


def resolve_target(target: Any) -> CodegenTarget:
    """A :class:`CodegenTarget` from a lowbit ``Target``, ``"cpu"``/``"llvm"``/``"tvm:llvm"``, ``"cuda"``,
    ``"sm_90"``/``"tvm:cuda:sm_90"``, a TVM target dict or a CodegenTarget."""
    from lowbit.lowering.target import Target

    from .target import cpu_target_dict, cuda_target_dict, host_cpu

    if isinstance(target, CodegenTarget):
        return target
    if isinstance(target, Target):
        if target.backend != "tvm":
            raise CompileError(f"target {target} is not a TVM target", hint="use tvm:llvm or tvm:cuda:sm_90")
        if target.kind == "cuda":
            return CodegenTarget("cuda", cuda_target_dict(target.arch or "sm_90"),
                                 threads=target.warp_size * target.num_warps)
        return CodegenTarget("cpu", cpu_target_dict(), vector_bits=host_cpu().vector_bits)
    if isinstance(target, Mapping):
        kind = str(target.get("kind"))
        if kind == "cuda":   # "threads" (per block) is ours, not TVM's
            return CodegenTarget("cuda", {k: v for k, v in target.items() if k != "threads"},
                                 threads=int(target.get("threads", 128)))
        if kind == "llvm":
            return CodegenTarget("cpu", dict(target), vector_bits=host_cpu().vector_bits)
        raise CompileError(f"unsupported TVM target kind {kind!r}", hint="use 'llvm' or 'cuda'")
    if isinstance(target, str):
        text = target.strip().lower()
        if text.startswith("tvm:"):
            text = text[4:]
        if text in ("cpu", "llvm", "host"):
            return CodegenTarget("cpu", cpu_target_dict(), vector_bits=host_cpu().vector_bits)
        if text == "cuda":
            text = "sm_90"
        if text.startswith("cuda:"):
            text = text[5:]
        if text.startswith("sm_"):
            return CodegenTarget("cuda", cuda_target_dict(text))
    raise CompileError(f"cannot compile for TVM target {target!r}",
                       hint="use 'cpu', 'sm_80', 'sm_90', a lowbit Target (tvm:llvm, tvm:cuda:sm_90) or a dict")


# ----------------------------------------------------------------------------------------------------
# statement tree
# ----------------------------------------------------------------------------------------------------

class _Block(list):
    """A list of statements: text lines, nested :class:`_Scope` s and placeholder blocks."""


@dataclass
class _Scope:
    header: str
    body: _Block = field(default_factory=_Block)


Item = Union[str, _Scope, _Block]


def _render(block: _Block, indent: int, out: list[str]) -> None:
    pad = "    " * indent
    for item in block:
        if isinstance(item, _Scope):
            out.append(pad + item.header)
            if _empty(item.body):
                out.append(pad + "    T.evaluate(0)")
            else:
                _render(item.body, indent + 1, out)
        elif isinstance(item, _Block):
            _render(item, indent, out)
        else:
            out.append(pad + item)


def _empty(block: _Block) -> bool:
    return all(isinstance(i, _Block) and _empty(i) for i in block)


def _nest_items(headers: Sequence[str], inner: list[Item]) -> list[Item]:
    """Wrap ``inner`` in the loop headers (outermost first)."""
    items: list[Item] = list(inner)
    for h in reversed(headers):
        scope = _Scope(h)
        scope.body.extend(items)
        items = [scope]
    return items


_VECTORIZED = re.compile(r"for (\w+) in T\.vectorized\((\d+)\):")


def _vector_nest(headers: Sequence[str], hoisted: Mapping[str, str], inner: list[Item]) -> list[Item]:
    """Wrap ``inner`` in the loop headers, each ``hoisted`` whole-vector expression computed into its buffer
    (``{expression: buffer}``) just outside the vectorized loop (without one there are none)."""
    at = [(i, m) for i, m in enumerate(map(_VECTORIZED.match, headers)) if m]
    if not at:
        return _nest_items(headers, inner)
    split, width = at[-1][0], at[-1][1].group(2)
    computed = [f"{buf}[T.ramp(0, 1, {width})] = {expr}" for expr, buf in hoisted.items()]
    return _nest_items(headers[:split], [*computed, *_nest_items(headers[split:], inner)])


# ----------------------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------------------

_RESERVED = set(keyword.kwlist) | {"T", "range", "True", "False", "None", "tx", "pid", "pid0", "pid1", "pid2",
                                   "main"}
_LOOPISH = re.compile(r"^(ax|axo|axv|axu|axe|axl|k|it|e)\d*$|^[a-f]x[ovelu]?\d+$")


class _Names:
    def __init__(self) -> None:
        self.used: set[str] = set(_RESERVED)

    def fresh(self, hint: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", hint) or "v"
        if base[0].isdigit() or base.startswith("_"):
            base = "v" + base
        if _LOOPISH.match(base):
            base = base + "_"
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name


# ----------------------------------------------------------------------------------------------------
# the emitter
# ----------------------------------------------------------------------------------------------------

def _dims_text(d: Any, sym: Callable[[str], str]) -> str:
    if isinstance(d, int):
        return str(d)
    if isinstance(d, Sym):
        return sym(d.name)
    a, b = _dims_text(d.lhs, sym), _dims_text(d.rhs, sym)
    if d.op == "+":
        return f"({a} + {b})"
    if d.op == "-":
        return f"({a} - {b})"
    if d.op == "*":
        return f"({a} * {b})"
    if d.op == "//":
        return f"T.floordiv({a}, {b})"
    if d.op == "%":
        return f"T.floormod({a}, {b})"
    if d.op == "cdiv":
        return f"T.floordiv({a} + {b} - 1, {b})"
    if d.op in ("min", "max"):
        return f"T.{d.op}({a}, {b})"
    raise CompileError(f"unknown size operator {d.op!r}")


class _Emitter:
    def __init__(self, kernel: n.Kernel, target: CodegenTarget, constants: Mapping[str, Any],
                 facts: Mapping[str, Any]):
        self.k = kernel
        self.t = target
        self.constants = dict(constants)
        self.facts = facts
        self._fused_dots: dict[str, FusedDot | None] = {}
        self._nan_guards: dict[str, nan_guard.NanGuard | None] = {}
        self.info: KernelInfo = plan_inlining(kernel, None if target.cuda else target.lanes("float32"),
                                              lambda dot, defs: self._fused_dot_of(dot, defs) is not None)
        self.names = _Names()
        self.tiles: dict[str, Tile] = {}
        self.slots: dict[str, tuple[_Block, n.Instr]] = {}
        self.allocs: list[str] = []            # allocation lines at the top of a program
        self.shared_allocs: list[str] = []     # CUDA: shared allocations (block level)
        self.shared_names: set[str] = set()
        self.tensors: dict[str, tuple[str, list[str], str]] = {}
        self.symbols: dict[str, str] = {}
        self.inplace: dict[str, str] = {}      # value name -> buffer to write it into
        self.cur: _Block = _Block()
        self.vector_facts = dict(facts.get("vector_width", {}) or {}) if isinstance(facts, Mapping) else {}
        self.expanded: dict[str, str] = {}     # bound scalar variable -> its expression (expanded)
        self.access_widths = _access_widths(kernel, facts)
        #: the vectorized loop variable and its width while a vectorized nest's body is generated (else None)
        self.lane: tuple[str, int] | None = None
        #: where a vectorized nest being generated takes statements to run before its vectorized loop
        self.hoisted: dict[str, str] | None = None
        self.tables: dict[tuple[str, tuple], str] = {}     # (dtype, entries) -> the buffer holding them
        self.register_lanes: dict[str, int] = {}           # a table register (table_buffer) -> its lanes
        self.llvm_imports: list[str] = []      # LLVM IR modules the kernel calls into (always inlined)

    # ------------------------------------------------------------------ small helpers
    def emit(self, item: Item) -> None:
        self.cur.append(item)

    def sym(self, name: str) -> str:
        if name in self.constants:
            v = self.constants[name]
            return str(int(v)) if isinstance(v, (int, bool)) else repr(v)
        if name not in self.symbols:
            raise CompileError(f"size symbol {name!r} is neither a shape symbol nor a constant")
        return self.symbols[name]

    def fence(self) -> bool:
        return not self.t.cuda

    def alloc(self, hint: str, shape: Sequence[int], dtype: str, *, shared: bool = False) -> str:
        """A buffer for an ``alloc_shared`` (``shared`` scope on CUDA, a plain local buffer on the CPU)."""
        name = self.names.fresh(hint)
        scope = "shared" if self.t.cuda and shared else self._private_scope()
        line = self._alloc_line(name, shape, dtype, scope)
        if scope == "shared":
            self.shared_allocs.append(line)
            self.shared_names.add(name)
        else:
            self.allocs.append(line)
        return name

    def tile_buffer(self, hint: str, shape: Sequence[int], dtype: str) -> BufferTile:
        """A new register-tile buffer (shared on CUDA for tiles; rank 0 -> one element)."""
        name = self.names.fresh(hint)
        line = self._alloc_line(name, shape, dtype, "shared" if self.t.cuda else self._private_scope())
        if self.t.cuda:
            self.shared_allocs.append(line)
            self.shared_names.add(name)
        else:
            self.allocs.append(line)
        return BufferTile(name, tuple(shape), dtype, memory=self.t.cuda)

    def local_scalar(self, hint: str, dtype: str) -> str:
        name = self.names.fresh(hint)
        self.allocs.append(self._alloc_line(name, (), dtype, self._private_scope()))
        return name

    def _private_scope(self) -> str:
        """The storage scope of a program's private buffers. CUDA: ``local`` (registers). CPU: ``global``,
        because TVM 0.27's ``LowerTVMBuiltin`` keeps only ``global`` allocations under 1 KiB on the stack
        (an LLVM ``alloca``, which SROA turns into registers); a ``local`` one becomes a
        ``TVMBackendAllocWorkspace`` call per program, whose memory LLVM must load and store on every step."""
        return "local" if self.t.cuda else "global"

    @staticmethod
    def _alloc_line(name: str, shape: Sequence[int], dtype: str, scope: str) -> str:
        shp = tuple(shape) if shape else (1,)
        return f'{name} = T.alloc_buffer({shp!r}, "{tt.NATIVE_TVM[dtype]}", scope="{scope}")'

    def get(self, v: n.Value) -> Tile:
        try:
            return self.tiles[v.name]
        except KeyError:
            raise CompileError(f"internal error: value %{v.name} used before its definition") from None

    def short(self, v: n.Value) -> Tile:
        """``v``'s tile, materialized first if it is a long lazy expression (the caller repeats it)."""
        tile = self.get(v)
        if isinstance(tile, ExprTile) and v.name in self.slots:
            sample = tile.read([f"ax{d}" for d in range(tile.rank)], True)
            if not tt.is_small(sample):
                self.force(v.name)
                tile = self.get(v)
        return tile

    def scalar(self, v: n.Value) -> str:
        return self.get(v).read([], True)

    _IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")

    def expand(self, text: str) -> str:
        """``text`` with every bound scalar variable replaced by its defining expression.

        TVM 0.27 cannot index a *local buffer* with a ``Bind`` variable (FlattenBuffer fails), so indices
        into allocated buffers (shared slices) use the expanded form.
        """
        return self._IDENT.sub(lambda m: f"({self.expanded[m.group(0)]})" if m.group(0) in self.expanded
                               else m.group(0), text)

    def bind(self, hint: str, dtype: str, expr: str) -> ScalarTile:
        """Emit ``name: T.dtype = expr`` and return the scalar (its expansion is remembered)."""
        name = self.names.fresh(hint)
        self.emit(f"{name}: T.{tt.NATIVE_TVM[dtype]} = {expr}")
        self.expanded[name] = self.expand(expr)
        return ScalarTile(name, dtype)

    def layout_of(self, v: n.Value) -> Any:
        return v.type.layout

    def vector_for(self, v: n.Value | None, shape: Sequence[int], dtype: str, ins: n.Instr | None = None) -> int:
        """CPU vector width of a nest writing ``v``: the ``vector`` pass's width for the access ``ins``,
        a ``vector_width`` fact, the contiguous run of ``v``'s register layout, else the SIMD lanes."""
        lanes = self.t.lanes(dtype)
        if ins is not None and id(ins) in self.access_widths:
            return self.access_widths[id(ins)]
        if v is not None:
            fact = self.vector_facts.get(v.name)
            if isinstance(fact, int) and fact > 0:
                return fact
            if shape:
                run = layout_vector_width(self.layout_of(v), int(shape[-1]))
                if run is not None:
                    return min(run, 4 * lanes)
        return lanes

    # ------------------------------------------------------------------ loop nests
    @contextlib.contextmanager
    def vector_lane(self, headers: Sequence[str], hoisted: dict[str, str] | None = None):
        """While the body of the nest ``headers`` is generated, ``self.lane`` names its vectorized loop
        variable and width (None when it has none): a ``lookup`` reads its table at the lane there.
        ``hoisted``: where whole-vector expressions go (``{expression: buffer}``, :meth:`vector_value`) that the
        caller computes before the vectorized loop (:func:`_vector_nest`); without it, none are made."""
        found = [m for m in map(_VECTORIZED.match, headers) if m]
        saved = self.lane, self.hoisted
        self.lane = (found[-1].group(1), int(found[-1].group(2))) if found else None
        self.hoisted = hoisted if self.lane is not None else None
        try:
            yield
        finally:
            self.lane, self.hoisted = saved

    def vector_value(self, hint: str, dtype: str, vector: str) -> str | None:
        """A whole-vector expression (one value per lane of the current vectorized loop) computed before the
        loop into a small buffer, LLVM keeps in a register; its read at the lane. None outside a loop that
        places such statements. The same expression is computed once per loop."""
        if self.hoisted is None or self.lane is None:
            return None
        lane, width = self.lane
        if vector not in self.hoisted:
            self.hoisted[vector] = self.tile_buffer(hint, (width,), dtype).name
        return f"{self.hoisted[vector]}[{lane}]"

    def emit_nest(self, shape: Sequence[int], body: Callable[[list[str], bool], list[Item]], *,
                  tiles: Sequence[Tile] = (), guards: Sequence[str] = (),
                  cond: Callable[[list[str], bool], str | None] | None = None,
                  vector: int = 1, layout: Any = None, unroll: Mapping[int, int] | None = None) -> None:
        """Loop nest over ``shape``: ``body(idx, fast)`` statements, guarded by ``cond(idx, fast)``.

        With guards (from lazy loads and bounds checks) the nest is versioned: ``if guards`` -> fast
        path (unchecked reads, vectorized, ``unroll`` applied: see :func:`.schedule.cpu_loops`), else the
        checked path.
        """
        all_guards: list[str] = []
        for g in list(guards) + [g for t in tiles for g in t.guards]:
            if g not in all_guards:
                all_guards.append(g)
        vector = self.lookup_lanes(tiles, vector)
        self.emit_versioned(all_guards, self._loops(shape, body, cond, True, vector, layout, unroll),
                            lambda: self._loops(shape, body, cond, False, vector, layout))
        if self.t.cuda:
            # every tile lives in shared memory on CUDA: the next nest may read what another thread wrote
            self.emit('T.tvm_storage_sync("shared")')

    def lookup_lanes(self, tiles: Sequence[Tile], vector: int) -> int:
        """``vector``, at most the lanes of the in-register lookups that ``tiles`` read (a table register,
        :meth:`table_buffer`): a permute looks up one register's lanes at a time, and a nest vectorized wider
        would read the table from memory instead, element by element."""
        found = [self.register_lanes[b] for t in tiles for b in t.buffers if b in self.register_lanes]
        return min([vector] + found)

    def emit_versioned(self, guards: Sequence[str], fast: list[Item], checked: Callable[[], list[Item]]) -> None:
        """``if guards: fast else: checked()`` (just ``fast`` without guards; duplicates dropped)."""
        if not guards:
            for item in fast:
                self.emit(item)
            return
        yes = _Scope("if " + " and ".join(f"({g})" for g in dict.fromkeys(guards)) + ":")
        yes.body.extend(fast)
        no = _Scope("else:")
        no.body.extend(checked())
        self.emit(yes)
        self.emit(no)

    def _loops(self, shape: Sequence[int], body, cond, fast: bool, vector: int, layout: Any,
               unroll: Mapping[int, int] | None = None) -> list[Item]:
        if self.t.cuda:
            loops = cuda_loops(shape, self.t.threads, layout)
            idx = list(loops.index)
            c = cond(idx, fast) if cond else None
            guard = " and ".join(f"({g})" for g in (loops.guard, c) if g)
            inner = body(idx, fast)
            if guard:
                s = _Scope(f"if {guard}:")
                s.body.extend(inner)
                inner = [s]
            return _nest_items(loops.headers, inner)
        # CPU: vectorize the fast path unless stores are conditional
        probe = cond(["ax0"] * len(shape), fast) if cond else None
        v = vector if (fast and probe is None) else 1
        headers, idx = cpu_loops(shape, v, unroll=unroll if fast else None)
        c = cond(idx, fast) if cond else None
        hoisted: dict[str, str] = {}
        with self.vector_lane(headers, hoisted):
            inner = body(idx, fast)
        if c:
            s = _Scope(f"if {c}:")
            s.body.extend(inner)
            inner = [s]
        return _vector_nest(headers, hoisted, inner)

    def materialize(self, v: n.Value, tile: Tile, *, into: BufferTile | None = None,
                    hint: str | None = None) -> BufferTile:
        """Compute ``tile`` into a buffer (``into`` or a new one) with a loop nest."""
        if into is None:
            if not v.type.shape:
                buf = self.tile_buffer(hint or v.name, (), v.dtype) if self.t.cuda else None
                if buf is None:
                    name = self.local_scalar(hint or v.name, v.dtype)
                    buf = BufferTile(name, (), v.dtype)
            else:
                buf = self.tile_buffer(hint or v.name, tile.shape, tile.dtype)
        else:
            buf = into
        if isinstance(tile, BufferTile) and tile.name == buf.name:
            return buf
        vec = self.vector_for(v, tile.shape, tile.dtype, self.info.defs.get(v.name))
        unroll = None
        if not self.t.cuda and tile.rank >= 2 and _periodic(tile):
            # an unpacked tile (e.g. the dequantized weights of a many-row dot): unroll the rows so that
            # its shift amounts and word offsets are constants, as in the dot itself
            u = _unroll_factor(int(tile.shape[-2]), max(1, int(tile.shape[-1]) // max(1, vec)))
            unroll = {tile.rank - 2: u} if u > 1 else None
        self.emit_nest(tile.shape, lambda idx, fast: [f"{buf.write(idx)} = {tile.read(idx, fast)}"],
                       tiles=[tile], vector=vec, layout=self.layout_of(v), unroll=unroll)
        return buf

    def define(self, ins: n.Instr, v: n.Value, tile: Tile) -> None:
        """Bind ``v`` to ``tile``: scalars become variables, lazy values stay expressions (with a slot to
        materialize them later if a consumer needs), the rest is materialized now."""
        if v.type.shape == () and not isinstance(tile, ScalarTile):
            expr = tile.read([], True) if not tile.guards else None
            if expr is None:
                buf = self.materialize(v, tile)
                expr = buf.read([], True)
            self.tiles[v.name] = self.bind(v.name, v.dtype, expr)
            return
        if v.name in self.info.lazy or isinstance(tile, ScalarTile):
            slot = _Block()
            self.emit(slot)
            self.slots[v.name] = (slot, ins)
            self.tiles[v.name] = tile
            return
        self.tiles[v.name] = self.materialize(v, tile, into=self._inplace_buffer(v))

    def force(self, name: str) -> None:
        """Materialize a lazy value at its definition point."""
        slot, ins = self.slots.pop(name)
        v = next(o for o in ins.outputs if o.name == name)
        saved, self.cur = self.cur, slot
        try:
            self.tiles[name] = self.materialize(v, self.tiles[name])
        finally:
            self.cur = saved

    def _inplace_buffer(self, v: n.Value) -> BufferTile | None:
        name = self.inplace.get(v.name)
        return BufferTile(name, v.type.shape, v.dtype, memory=self.t.cuda) if name else None

    # ------------------------------------------------------------------ program structure
    def run(self) -> tuple[str, tuple[AbiParam, ...]]:
        k = self.k
        abi: list[AbiParam] = []
        sig: list[str] = []
        header: list[str] = []
        consts = {c.name for c in k.constants}
        for c in k.constants:
            if c.name not in self.constants:
                if c.value is None:
                    raise CompileError(f"kernel {k.name}: constant {c.name} has no value",
                                       hint="specialize it (the specialize-constants pass) or pass constants={...}")
                self.constants[c.name] = c.value
        symbols = [s for s in k.shape_symbols() if s not in consts]
        for s in symbols:
            self.symbols[s] = self.names.fresh(s)
        for p in k.params:
            if isinstance(p, n.TensorParam):
                if is_code(p.value.dtype):
                    raise CompileError(
                        f"kernel {k.name}: parameter {p.name} has the low-bit code type {p.value.dtype}; the TVM "
                        "backend needs packed native storage",
                        hint="run the lower-lowbit pass first (lowbit.lowering.passes.run_passes)")
                handle = self.names.fresh(p.name + "_h")
                buf = self.names.fresh(p.name)
                dims = [_dims_text(d, self.sym) for d in p.value.type.shape]
                sig.append(f"{handle}: T.handle")
                shape = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
                header.append(f'{buf} = T.match_buffer({handle}, {shape}, "{tt.NATIVE_TVM[p.value.dtype]}")')
                self.tensors[p.name] = (buf, dims, p.value.dtype)
                abi.append(AbiParam(p.name, "tensor", p.value.dtype, p.value.dtype,
                                    tuple(str(d) for d in p.value.type.shape), p.intent))
            else:
                dtype = p.value.dtype
                kind = kind_of(dtype)
                abi_dtype = "bool" if kind == "bool" else "float64" if kind == "float" else "int64"
                arg = self.names.fresh(p.name + "_arg")
                sig.append(f"{arg}: T.{abi_dtype}")
                var = self.names.fresh(p.name)
                conv = arg if abi_dtype == dtype else f'T.Cast("{dtype}", {arg})'
                header.append(f"{var}: T.{dtype} = {conv}")
                self.expanded[var] = conv
                self.tiles[p.name] = ScalarTile(var, dtype)
                abi.append(AbiParam(p.name, "scalar", dtype, abi_dtype))
        for s in symbols:
            sig.append(f"{self.symbols[s]}: T.int32")
            abi.append(AbiParam(s, "symbol", "int32", "int32"))

        grid = [_dims_text(d, self.sym) for d in k.grid]
        self.grid = grid
        total = " * ".join(f"({g})" for g in grid) if grid else "1"
        pids = [f"pid{a}" for a in range(len(grid))]      # reserved names
        pid_lines = []
        for a in range(len(grid)):
            inner = " * ".join(f"({g})" for g in grid[a + 1:])
            expr = "pid" if not inner else f"T.floordiv(pid, {inner})"
            if a > 0:
                expr = f"T.floormod({expr}, {grid[a]})"
            pid_lines.append(f"{pids[a]}: T.int32 = {expr}")
            self.expanded[pids[a]] = expr
        self.pids = pids

        body = _Block()
        self.cur = body
        self.emit_body(k.body)

        func_name = self.names.fresh(k.name)
        lines = ["@T.prim_func", f"def {func_name}({', '.join(sig)}):",
                 f'    T.func_attr({{"global_symbol": "{func_name}", "tirx.noalias": True}})']
        lines += ["    " + h for h in header]
        if self.t.cuda:
            lines.append(f'    for pid in T.thread_binding({total}, thread="blockIdx.x"):')
            lines += ["        " + a for a in self.shared_allocs]
            lines.append(f'        for tx in T.thread_binding({self.t.threads}, thread="threadIdx.x"):')
            ind = 3
        else:
            ind = 2
            for code in self.llvm_imports:      # LLVM functions the body calls: linked in, always inlined
                lines.append("    " * (ind - 1) + f'with T.attr(0, "pragma_import_llvm", {code!r}):')
                ind += 1
            lines.append("    " * (ind - 1) + f"for pid in T.parallel({total}):")
        pad = "    " * ind
        lines += [pad + a for a in self.allocs]
        lines += [pad + p for p in pid_lines]
        out: list[str] = []
        _render(body, ind, out)
        if not out:
            out.append(pad + "T.evaluate(0)")
        lines += out
        self.func_name = func_name
        return "\n".join(lines) + "\n", tuple(abi)

    def emit_body(self, body: Sequence[n.Instr]) -> list[n.Value] | None:
        """Emit a block; return the yielded values (if it ends with a yield)."""
        for ins in body:
            if isinstance(ins, n.Yield):
                return list(ins.values)
            handler = getattr(self, "op_" + type(ins).__name__, None)
            if handler is None:
                raise CompileError(f"the TVM backend does not support the instruction {ins.opcode}",
                                   location=ins.loc)
            try:
                handler(ins)
            except CompileError as err:
                if err.location is None and ins.loc is not None:
                    err.location = ins.loc
                raise
        return None

    # ------------------------------------------------------------------ scalars and constructors
    def op_Constant(self, ins: n.Constant) -> None:
        self.tiles[ins.result.name] = ScalarTile(tt.lit(ins.value, ins.result.dtype), ins.result.dtype)

    def op_ProgramId(self, ins: n.ProgramId) -> None:
        self.tiles[ins.result.name] = ScalarTile(self.pids[ins.axis], "int32")

    def op_NumPrograms(self, ins: n.NumPrograms) -> None:
        self.tiles[ins.result.name] = ScalarTile(f"({self.grid[ins.axis]})", "int32")

    def op_SymbolRef(self, ins: n.SymbolRef) -> None:
        dtype = ins.result.dtype
        if ins.name in self.constants:
            text = tt.lit(self.constants[ins.name], dtype)
        else:
            text = self.sym(ins.name)
            if dtype != "int32":
                text = f'T.Cast("{dtype}", {text})'
        self.tiles[ins.result.name] = ScalarTile(text, dtype)

    def op_Full(self, ins: n.Full) -> None:
        r = ins.result
        value = tt.lit(ins.value, r.dtype)
        self.define(ins, r, ExprTile(tuple(r.type.shape), r.dtype, fn=lambda idx, fast: value))

    def op_Arange(self, ins: n.Arange) -> None:
        r = ins.result
        start = ins.start
        self.define(ins, r, ExprTile(tuple(r.type.shape), "int32",
                                     fn=lambda idx, fast: idx[0] if start == 0 else f"({idx[0]} + {start})"))

    # ------------------------------------------------------------------ global memory
    def _window(self, tensor: n.Value, offsets: Sequence[n.Value], shape: Sequence[int],
                checked: Sequence[bool] | None):
        buf, dims, dtype = self.tensors[tensor.name]
        offs = [self.scalar(o) for o in offsets]
        guards: list[str] = []
        axes = []
        for ax, (o, s, d) in enumerate(zip(offs, shape, dims)):
            if checked is not None and not checked[ax]:
                continue
            axes.append(ax)
            if not _literal_nonneg(o):
                guards.append(f"{o} >= 0")
            guards.append(f"{o} + {s} <= {d}")

        def index(idx: Sequence[str]) -> list[str]:
            return [i if o in ("0", "T.int32(0)") else f"{o} + {i}" for o, i in zip(offs, idx)]

        def inb(idx: Sequence[str]) -> str | None:
            conds = []
            for ax in axes:
                pos = index(idx)[ax]
                conds.append(f"T.And({pos} >= 0, {pos} < {dims[ax]})")
            if not conds:
                return None
            out = conds[0]
            for c in conds[1:]:
                out = f"T.And({out}, {c})"
            return out

        return buf, dtype, index, inb, guards

    def _load_tile(self, tensor: n.Value, offsets, shape, mask: n.Value | None, other: n.Value | None,
                   checked) -> ExprTile:
        buf, dtype, index, inb, guards = self._window(tensor, offsets, shape, checked)
        mtile = self.get(mask) if mask is not None else None
        fill = self.scalar(other) if other is not None else tt.lit(0, dtype)
        unchecked = checked is not None and not all(checked)

        def fn(idx: Sequence[str], fast: bool) -> str:
            at = index(idx)
            val = f"{buf}[{', '.join(at)}]"
            if fast and mtile is None and self.lane is not None and self.hoisted is not None:
                repeated = lane_reads.repeated_read(at, *self.lane)
                if repeated is not None:
                    val = self.vector_value(f"{buf}_lanes", dtype, repeated.shuffle(buf)) or val
            conds = []
            if not fast:
                c = inb(idx)
                if c:
                    conds.append(c)
            if mtile is not None:
                conds.append(mtile.read(idx, fast))
            if not conds:
                return val
            cond = conds[0] if len(conds) == 1 else f"T.And({conds[0]}, {conds[1]})"
            if fast and not unchecked:
                return f"T.Select({cond}, {val}, {fill})"      # in bounds: both sides are safe to read
            return f"T.if_then_else({cond}, {val}, {fill})"

        extra = tuple(mtile.guards) if mtile is not None else ()
        buffers = mtile.buffers if mtile is not None else frozenset()
        return ExprTile(tuple(shape), dtype, guards=tuple(guards) + extra, buffers=buffers, memory=True, fn=fn)

    def op_Load(self, ins: n.Load) -> None:
        r = ins.result
        self.define(ins, r, self._load_tile(ins.tensor, ins.offsets, r.type.shape, ins.mask, ins.other,
                                            ins.checked))

    def op_Store(self, ins: n.Store) -> None:
        value = self.get(ins.value)
        shape = ins.value.type.shape
        buf, dtype, index, inb, guards = self._window(ins.tensor, ins.offsets, shape, ins.checked)
        mtile = self.get(ins.mask) if ins.mask is not None else None

        def cond(idx: Sequence[str], fast: bool) -> str | None:
            conds = []
            if not fast:
                c = inb(idx)
                if c:
                    conds.append(c)
            if mtile is not None:
                conds.append(mtile.read(idx, fast))
            if not conds:
                return None
            return conds[0] if len(conds) == 1 else f"T.And({conds[0]}, {conds[1]})"

        tiles = [value] + ([mtile] if mtile is not None else [])
        self.emit_nest(shape, lambda idx, fast: [f"{buf}[{', '.join(index(idx))}] = {value.read(idx, fast)}"],
                       tiles=tiles, guards=guards, cond=cond,
                       vector=self.vector_for(ins.value, shape, dtype, ins), layout=self.layout_of(ins.value))

    # ------------------------------------------------------------------ shared memory
    def op_AllocShared(self, ins: n.AllocShared) -> None:
        r = ins.result
        name = self.alloc(r.name, r.type.shape, r.dtype)
        self.tiles[r.name] = SharedView(tuple(r.type.shape), r.dtype, buffers=frozenset([name]), memory=True,
                                        name=name, base_shape=tuple(r.type.shape), offsets=())

    def op_SharedSlice(self, ins: n.SharedSlice) -> None:
        src = self.get(ins.src)
        assert isinstance(src, SharedView)
        r = ins.result
        offs = [self.expand(self.scalar(o)) for o in ins.offsets]
        # the slice origin in base coordinates; the slice's axes are the base's trailing axes
        base_offsets = tuple(src._index(offs[:ins.src.type.rank - r.type.rank] + offs[ins.src.type.rank - r.type.rank:]))
        self.tiles[r.name] = SharedView(tuple(r.type.shape), r.dtype, buffers=src.buffers, memory=True,
                                        name=src.name, base_shape=src.base_shape, offsets=base_offsets)

    def op_CopyToShared(self, ins: n.CopyToShared) -> None:
        dst = self.get(ins.dst)
        assert isinstance(dst, SharedView)
        src = self._load_tile(ins.tensor, ins.offsets, ins.dst.type.shape, ins.mask, ins.other, ins.checked)
        self.emit_nest(dst.shape, lambda idx, fast: [f"{dst.write(idx)} = {src.read(idx, fast)}"],
                       tiles=[src], vector=self.vector_for(None, dst.shape, dst.dtype, ins))

    def op_LoadShared(self, ins: n.LoadShared) -> None:
        self.define(ins, ins.result, self.get(ins.src))

    def op_StoreShared(self, ins: n.StoreShared) -> None:
        dst = self.get(ins.dst)
        assert isinstance(dst, SharedView)
        value = self.get(ins.value)
        self.emit_nest(dst.shape, lambda idx, fast: [f"{dst.write(idx)} = {value.read(idx, fast)}"],
                       tiles=[value], vector=self.vector_for(ins.value, dst.shape, dst.dtype),
                       layout=self.layout_of(ins.value))

    def op_Barrier(self, ins: n.Barrier) -> None:
        if self.t.cuda:
            self.emit('T.tvm_storage_sync("shared")')

    # ------------------------------------------------------------------ conversions and elementwise
    def op_Cast(self, ins: n.Cast) -> None:
        src, dst = ins.x.dtype, ins.result.dtype
        for d in (src, dst):
            if is_code(d):
                raise CompileError(f"cast between {short_name(src)} and {short_name(dst)}: the TVM backend only "
                                   "converts between native dtypes",
                                   hint="run the lower-lowbit pass first: it turns code casts into bit arithmetic")
        repeats = (kind_of(src) == "float" and kind_of(dst) in ("int", "uint")) or (
            dst == "bfloat16" and src != "bool")           # rounded on the bits (tir_text.bf16_rounded)
        x = self.short(ins.x) if repeats else self.get(ins.x)
        self.define(ins, ins.result, elementwise(ins.result.type.shape, dst, [x],
                                                 lambda e: tt.cast(e[0], src, dst)))

    def op_Unary(self, ins: n.Unary) -> None:
        dtype = ins.x.dtype
        vector_exp = not self.t.cuda and ins.op in tt.VECTOR_EXP_UNARY
        repeats = (ins.op == "abs" and kind_of(dtype) == "int") or vector_exp or (
            dtype == "bfloat16" and ins.op not in tt.EXACT_FLOAT_UNARY)
        x = self.short(ins.x) if repeats else self.get(ins.x)
        self.define(ins, ins.result, elementwise(ins.result.type.shape, dtype, [x],
                                                 lambda e: tt.unary(ins.op, e[0], dtype, vector_exp)))

    def op_Binary(self, ins: n.Binary) -> None:
        dtype = ins.lhs.dtype
        kind = kind_of(dtype)
        index = ins.result.type.shape == () and ins.result.name in self.info.index_values
        divisor = None
        rdef = self.info.defs.get(ins.rhs.name)
        if isinstance(rdef, n.Constant):
            divisor = rdef.value
        elif isinstance(rdef, n.SymbolRef) and rdef.name in self.constants:
            divisor = self.constants[rdef.name]
        rounded = ins.result.dtype == "bfloat16" and ins.op not in ("maximum", "minimum")   # tir_text.bf16_rounded
        repeats_a = (kind == "float" and ins.op in ("maximum", "minimum", "mod")) or rounded
        repeats_b = (kind == "float" and ins.op in ("maximum", "minimum", "mod")) or rounded or (
            kind in ("int", "uint") and ins.op in ("floordiv", "mod") and not (isinstance(divisor, int) and divisor > 0))
        a = self.short(ins.lhs) if repeats_a else self.get(ins.lhs)
        b = self.short(ins.rhs) if repeats_b else self.get(ins.rhs)
        fence = self.fence()
        self.define(ins, ins.result, elementwise(
            ins.result.type.shape, ins.result.dtype, [a, b],
            lambda e: tt.binary(ins.op, e[0], e[1], dtype, index=index, divisor=divisor, fence=fence)))

    def op_Where(self, ins: n.Where) -> None:
        c, x, y = self.get(ins.cond), self.get(ins.x), self.get(ins.y)
        self.define(ins, ins.result, elementwise(ins.result.type.shape, ins.result.dtype, [c, x, y],
                                                 lambda e: tt.select(e[0], e[1], e[2])))

    #: in-register lookups on AVX-512 by result dtype: (one-register permute, two-register permute, lanes, the
    #: permutes' dtype). ``vpermps``/``vpermd`` pick each lane's entry of one table register by the low 4 bits
    #: of its index lane; ``vpermi2ps``/``vpermi2d`` of two registers (32 entries) by the low 5
    _PERMUTES = {"float32": ("llvm.x86.avx512.permvar.sf.512", "llvm.x86.avx512.vpermi2var.ps.512", 16, "float32"),
                 "int32": ("llvm.x86.avx512.permvar.si.512", "llvm.x86.avx512.vpermi2var.d.512", 16, "int32"),
                 "uint32": ("llvm.x86.avx512.permvar.si.512", "llvm.x86.avx512.vpermi2var.d.512", 16, "int32")}
    #: ... and on AVX2: the 8-lane ``vpermps``/``vpermd`` by the low 3 bits (tables of at most 8 entries)
    _PERMUTES_AVX2 = {"float32": ("llvm.x86.avx2.permps", None, 8, "float32"),
                      "int32": ("llvm.x86.avx2.permd", None, 8, "int32"),
                      "uint32": ("llvm.x86.avx2.permd", None, 8, "int32")}

    def table_buffer(self, table: Sequence[Any], dtype: str, *, register: bool = False) -> str:
        """A local buffer holding ``table`` (as ``dtype`` literals), filled once at the top of each program.

        ``register``: the table is one vector operand of an in-register lookup (16 32-bit entries, or 8 on
        AVX2), and its value is passed through :data:`PIN` once there. LLVM then sees a value it cannot rebuild,
        and keeps it in a register (or one spill slot) for the whole program. A constant would be
        rematerialized inside every loop that uses it: the lookup loops re-load it each iteration with a
        ``vbroadcasti32x4`` from the constant pool, because a repeating table compresses to a broadcast.
        Measured on Zen 4, the 2-bit ``vpermw`` loop takes 0.52 ns per ``vdpbf16ps`` with the re-loads and
        0.44 without."""
        key = (dtype, tuple(table), register)
        if key not in self.tables:
            name = self.names.fresh("table")
            self.allocs.append(self._alloc_line(name, (len(table),), dtype, self._private_scope()))
            self.allocs.extend(f"{name}[{i}] = {tt.lit(v, dtype)}" for i, v in enumerate(table))
            if register:
                lanes = len(table)
                assert lanes in (8, 16) and nbits_of(dtype) == 32, (dtype, lanes)
                pin, helper = pin_helper(lanes)
                pinned, vec = self.names.fresh("table_reg"), f"T.ramp(0, 1, {lanes})"
                self.allocs.append(self._alloc_line(pinned, (lanes,), dtype, self._private_scope()))
                bits = tt.reinterpret(f"{name}[{vec}]", f"{dtype}x{lanes}", f"int32x{lanes}")
                value = tt.reinterpret(f'T.call_pure_extern("int32x{lanes}", "{pin}", {bits})', f"int32x{lanes}",
                                       f"{dtype}x{lanes}")
                self.allocs.append(f"{pinned}[{vec}] = {value}")
                if helper not in self.llvm_imports:
                    self.llvm_imports.append(helper)
                name = pinned
                self.register_lanes[name] = lanes
            self.tables[key] = name
        return self.tables[key]

    def table_registers(self, entries: Sequence[Any], dtype: str, lanes: int = LANES) -> tuple[str, ...]:
        """``entries`` (a multiple of ``lanes`` 32-bit values) as pinned registers of ``lanes`` each
        (:meth:`table_buffer`)."""
        return tuple(self.table_buffer(tuple(entries[h:h + lanes]), dtype, register=True)
                     for h in range(0, len(entries), lanes))

    def op_Lookup(self, ins: n.Lookup) -> None:
        """``table[x mod size]``: in a 16-lane vectorized nest on an AVX-512 CPU, one ``vpermps`` / ``vpermd``
        of the table (repeated to 16 entries) by the index lanes, whose low 4 bits select, or for 17 to 32
        entries one ``vpermi2ps`` / ``vpermi2d`` of its two halves (the low 5 bits), for 33 to 64 one of each
        half picked by bit 5; in an 8-lane nest on an AVX2 CPU, up to 8 entries, one 8-lane ``vpermps`` /
        ``vpermd`` (the low 3 bits); elsewhere a read of the table buffer at ``x & (size - 1)``."""
        x = self.get(ins.x)
        src, dst = ins.x.dtype, ins.result.dtype
        size = len(ins.table)
        permute = None
        if not self.t.cuda and size <= 4 * LANES and dst in self._PERMUTES and host_has_avx512():
            permute = self._PERMUTES[dst]
        elif not self.t.cuda and size <= 8 and dst in self._PERMUTES_AVX2 and host_has_avx2():
            permute = self._PERMUTES_AVX2[dst]
        table = self.table_buffer(ins.table, dst)
        halves: tuple[str, ...] = ()
        if permute is not None:   # the table repeated to a register's lanes (or 32), as the permutes' dtype
            lanes = permute[2]
            entries = [v - (1 << 32) if dst == "uint32" and v >= 1 << 31 else v for v in ins.table]
            entries *= max(1, lanes // size)
            halves = self.table_registers(entries, permute[3], lanes)

        def index32(e: str) -> str:
            if nbits_of(src) == 32:
                return tt.reinterpret(e, src, "int32")
            return f'T.Cast("int32", {e})'

        def fn(idx: Sequence[str], fast: bool) -> str:
            i = index32(x.read(idx, fast))
            if permute is not None and fast and self.lane is not None and self.lane[1] == permute[2]:
                one, two, _, tdt = permute
                lane = self.lane[0]
                if len(halves) == 1:
                    e = f'T.call_llvm_pure_intrin("{tdt}", "{one}", {halves[0]}[{lane}], {i})'
                else:
                    low, *high = (f'T.call_llvm_pure_intrin("{tdt}", "{two}", {halves[h]}[{lane}], {i}, '
                                  f'{halves[h + 1]}[{lane}])' for h in range(0, len(halves), 2))
                    e = f"T.Select(T.bitwise_and({i}, {2 * LANES}) != 0, {high[0]}, {low})" if high else low
                return tt.reinterpret(e, tdt, dst)
            return f"{table}[{self.expand(f'T.bitwise_and({i}, {size - 1})')}]"

        bufs = {table} | set(halves)
        tile = ExprTile(tuple(ins.result.type.shape), dst, guards=x.guards, buffers=x.buffers | frozenset(bufs),
                        identity=x.identity, memory=x.memory, fn=fn)
        self.define(ins, ins.result, tile)

    def op_View(self, ins: n.View) -> None:
        src, dst = ins.x.dtype, ins.result.dtype
        for d in (src, dst):
            if is_code(d):
                raise CompileError(f"view between {short_name(src)} and {short_name(dst)}: the TVM backend views only "
                                   "native dtypes", hint="run the lower-lowbit pass first")
        ns, nd = nbits_of(src), nbits_of(dst)
        x = self.get(ins.x)
        shape = tuple(ins.result.type.shape)
        us, ud = tt.UINT_OF[src], tt.UINT_OF[dst]

        def bits_of(e: str) -> str:          # element -> its unsigned bit pattern
            return tt.reinterpret(e, src, us)

        def from_bits(e: str) -> str:        # unsigned pattern -> dst element
            return tt.reinterpret(e, ud, dst)

        if ns == nd:
            tile = elementwise(shape, dst, [x], lambda e: from_bits(bits_of(e[0])) if src != dst else e[0])
        elif ns > nd:                        # split: element j = bits [j*nd, (j+1)*nd) of the row
            r = ns // nd

            def fn(idx: Sequence[str], fast: bool) -> str:
                j = idx[-1]
                word = bits_of(x.read(list(idx[:-1]) + [f"T.floordiv({j}, {r})"], fast))
                shift = f'T.Cast("{us}", T.floormod({j}, {r}) * {nd})'
                part = f"T.bitwise_and(T.shift_right({word}, {shift}), {tt.lit((1 << nd) - 1, us)})"
                return from_bits(f'T.Cast("{ud}", {part})')

            tile = ExprTile(shape, dst, guards=x.guards, buffers=x.buffers, memory=x.memory, fn=fn)
        else:                                # join r source elements into one
            r = nd // ns

            def fn(idx: Sequence[str], fast: bool) -> str:
                j = idx[-1]
                parts = []
                for t in range(r):
                    e = bits_of(x.read(list(idx[:-1]) + [f"({j}) * {r} + {t}"], fast))
                    e = f'T.Cast("{ud}", {e})'
                    parts.append(e if t == 0 else f"T.shift_left({e}, {tt.lit(t * ns, ud)})")
                acc = parts[0]
                for p in parts[1:]:
                    acc = f"T.bitwise_or({acc}, {p})"
                return from_bits(acc)

            tile = ExprTile(shape, dst, guards=x.guards, buffers=x.buffers, memory=x.memory, fn=fn)
        self.define(ins, ins.result, tile)

    # ------------------------------------------------------------------ shapes
    def op_Broadcast(self, ins: n.Broadcast) -> None:
        x = self.get(ins.x)
        rshape = tuple(ins.result.type.shape)
        xshape = tuple(ins.x.type.shape)
        lead = len(rshape) - len(xshape)

        def fn(idx: list[str]) -> list[str]:
            return ["0" if s == 1 else i for s, i in zip(xshape, idx[lead:])]

        same = rshape == xshape
        self.define(ins, ins.result, remap(x, rshape, fn, identity=same))

    def op_ExpandDims(self, ins: n.ExpandDims) -> None:
        x = self.get(ins.x)
        a = ins.axis
        self.define(ins, ins.result, remap(x, ins.result.type.shape, lambda idx: idx[:a] + idx[a + 1:]))

    def op_Reshape(self, ins: n.Reshape) -> None:
        x = self.get(ins.x)
        same = tuple(ins.x.type.shape) == tuple(ins.result.type.shape)
        fn = (lambda idx: idx) if same else reshape_map(ins.x.type.shape, ins.result.type.shape)
        self.define(ins, ins.result, remap(x, ins.result.type.shape, fn, identity=same))

    def op_Permute(self, ins: n.Permute) -> None:
        x = self.get(ins.x)
        perm = ins.perm

        def fn(idx: list[str]) -> list[str]:
            out = [""] * len(perm)
            for d, p in enumerate(perm):
                out[p] = idx[d]
            return out

        tile = remap(x, ins.result.type.shape, fn, identity=list(perm) == sorted(perm))
        lanes = self._transpose_lanes(ins)
        if lanes:
            buf = self._inplace_buffer(ins.result) or self.tile_buffer(ins.result.name, tile.shape, tile.dtype)
            self._transpose_into(buf, x, tile, lanes)
            self.tiles[ins.result.name] = buf
            return
        self.define(ins, ins.result, tile)

    def _transpose_lanes(self, ins: n.Permute) -> int:
        """The block width of a register transpose for ``ins`` on the CPU (0: read it through its index map).

        A transpose of a 2-D tile of 32-bit elements, both extents multiples of the SIMD lanes, whose every use
        is the ``b`` operand of a dot that is not one of the fused patterns (those read a permuted tile of
        packed words through its index map, by design): through the index map, the dot's rows of ``b`` (a
        vector per K step) would be gathers down the source's columns."""
        if self.t.cuda or tuple(ins.perm) != (1, 0) or nbits_of(ins.x.dtype) != 32:
            return 0
        uses = self.info.uses.get(ins.result.name, [])
        if not uses or any(not isinstance(u.user, n.Dot) or u.operand != "b"
                           or self._fused_dot_of(u.user, self.info.defs) is not None for u in uses):
            return 0
        v = self.t.lanes(ins.x.dtype)
        rows, cols = (int(s) for s in ins.x.type.shape)
        return v if v >= 2 and rows % v == 0 and cols % v == 0 else 0

    def _transpose_into(self, buf: BufferTile, x: Tile, lazy: Tile, v: int) -> None:
        """``buf = x`` transposed, by ``v x v`` blocks: ``v`` rows of ``x`` as vectors into small buffers,
        :func:`.transpose.shuffle_stages` between them (LLVM keeps them in registers), the block's ``v`` rows
        of the result stored as vectors. Versioned on ``x``'s guards; the checked path reads ``lazy`` (the index
        map) element by element."""
        rows, cols = (int(s) for s in x.shape)
        names = [[self.tile_buffer(f"{buf.name}_t{s}", (v,), x.dtype).name for _ in range(v)]
                 for s in range(len(transpose.stage_distances(v)) + 1)]
        full = f"T.ramp(0, 1, {v})"
        br, bc, lane = self.names.fresh("tr"), self.names.fresh("tc"), self.names.fresh("tv")
        header = f"for {lane} in T.vectorized({v}):"
        items: list[Item] = []
        for r in range(v):
            hoisted: dict[str, str] = {}
            with self.vector_lane([header], hoisted):
                src = x.read([f"{br} * {v} + {r}", f"{bc} * {v} + {lane}"], True)
            items += _vector_nest([header], hoisted, [f"{names[0][r]}[{lane}] = {src}"])

        def shuffle(lo: str, hi: str, idx: tuple[int, ...]) -> str:
            return f"T.Shuffle([{lo}[{full}], {hi}[{full}]], [{', '.join(map(str, idx))}])"

        items += [f"{dst}[{full}] = {expr}" for dst, expr in transpose.shuffle_stages(v, names, shuffle)]
        items += [f"{buf.write([f'{bc} * {v} + {r}', f'T.ramp({br} * {v}, 1, {v})'])} = {names[-1][r]}[{full}]"
                  for r in range(v)]
        fast = _nest_items([f"for {br} in range({rows // v}):", f"for {bc} in range({cols // v}):"], items)
        self.emit_versioned(list(x.guards), fast,
                            lambda: self._loops(lazy.shape, lambda idx, f: [f"{buf.write(idx)} = {lazy.read(idx, f)}"],
                                                None, False, 1, None))

    # ------------------------------------------------------------------ reductions and dot
    def op_Reduce(self, ins: n.Reduce) -> None:
        r, x = ins.result, self.get(ins.x)
        dtype = ins.x.dtype
        acc_dtype = tt.reduce_acc_dtype(ins.op, dtype)
        axis, keep = ins.axis, ins.keepdims
        xshape = tuple(ins.x.type.shape)
        rshape = tuple(r.type.shape)
        K = xshape[axis]
        if r.name in self.info.lazy and r.type.shape:
            self.define(ins, r, self._unrolled_sum(ins, x))
            return
        out = self._inplace_buffer(r) or self.tile_buffer(r.name, rshape, r.dtype)

        def xidx(idx: Sequence[str], k: str) -> list[str]:
            idx = list(idx)
            return idx[:axis] + [k] + (idx[axis + 1:] if keep else idx[axis:])

        def finish(e: str) -> str:
            return tt.from_f32(e, r.dtype) if acc_dtype != r.dtype else e

        lanes = choose_vector(K, self.t.lanes(acc_dtype))
        if not self.t.cuda and axis == len(xshape) - 1 and lanes > 1 and K >= lanes:
            self._reduce_last_axis_vectorized(ins, x, out, lanes)
        elif self.t.cuda or axis == len(xshape) - 1:
            acc = self.local_scalar(r.name + "_acc", acc_dtype)
            kv = self.names.fresh("k")

            def body(idx: list[str], fast: bool) -> list[Item]:
                loop = _Scope(f"for {kv} in range({K}):")
                loop.body.append(f"{acc}[0] = {tt.reduce_combine(ins.op, f'{acc}[0]', x.read(xidx(idx, kv), fast), dtype)}")
                return [f"{acc}[0] = {tt.reduce_identity(ins.op, dtype)}", loop, f"{out.write(idx)} = {finish(f'{acc}[0]')}"]

            self.emit_nest(rshape, body, tiles=[x], layout=self.layout_of(r))
        else:
            accbuf = out if acc_dtype == r.dtype else self.tile_buffer(r.name + "_acc", rshape, acc_dtype)
            vec = self.vector_for(ins.x, xshape, acc_dtype)

            def body(idx: list[str], fast: bool) -> list[Item]:
                ridx = idx[:axis] + (["0"] if keep else []) + idx[axis + 1:]
                cur = accbuf.read(ridx, fast)
                return [f"{accbuf.write(ridx)} = {tt.reduce_combine(ins.op, cur, x.read(idx, fast), dtype)}"]

            pair = pair_dot.match_reduce(ins, self.info.defs) if self._pair_dot_target() else None
            if pair is not None:      # the fused nest starts its sums at zero (the identity of a sum)
                def acc_index(rows: list[str]) -> list[str]:
                    return rows[:axis] + ["0"] + rows[axis:] if keep else rows

                self._pair_dot_nest(pair, xshape, axis, accbuf, acc_index, list, x.guards,
                                    lambda: self._loops(xshape, body, None, False, vec, None), zero_start=True)
            else:
                ident = tt.reduce_identity(ins.op, dtype)
                self.emit_nest(rshape, lambda idx, fast: [f"{accbuf.write(idx)} = {ident}"], vector=vec)
                self.emit_nest(xshape, body, tiles=[x], vector=vec)
            if accbuf is not out:
                self.emit_nest(rshape, lambda idx, fast: [f"{out.write(idx)} = {finish(accbuf.read(idx, fast))}"],
                               vector=vec)
        self._bind_result(r, out)

    def _pair_dot_nest(self, pair: pair_dot.PairDot | pair_dot.DecodedPairDot, space: Sequence[int], axis: int,
                       acc: BufferTile, acc_index: Callable[[list[str]], list[str]],
                       a_index: Callable[[list[str]], list[str]], guards: Sequence[str],
                       checked: Callable[[], list[Item]], zero_start: bool) -> None:
        """``acc += sum(a * b, axis)`` over the iteration ``space`` (the vector axis last) for a product proved
        fit for ``vdpbf16ps`` (:mod:`.pair_dot`). A loop over K steps of ``pair.period`` rows; in its body,
        per K pair and vector of 16 outputs (unrolled), 32 bf16 weights in one register (:meth:`_pair_weights`)
        shared by every row's ``vdpbf16ps``. ``*_index`` map an iteration index to the index of ``acc``
        (without its last axis) and ``a``; when ``guards`` fail the ``checked`` nest runs.

        The loop accumulates in one 16-lane buffer per (row, vector), loaded from ``acc`` before it (or zero:
        ``zero_start``, for ``acc = sum(...)``; the fallback then zeroes ``acc`` before ``checked``) and stored
        after: each is a small stack array read and written whole at constant offsets, which LLVM turns into a
        register. Starting at zero saves a round trip through memory per K group: a zeroed buffer copied into
        the accumulation buffer, then loaded. ``acc`` itself is also indexed at run time (by ``checked``), so LLVM
        could only keep its parts in registers by promoting them out of the loop, and gives that up in long
        bodies: with 4 rows of 3-bit codes it stored every accumulator after every ``vdpbf16ps``.

        Tiles of many rows read x from buffers filled before the loop (:meth:`_staged_x_pairs`)."""
        lanes = LANES
        outer = [d for i, d in enumerate(space[:-1]) if i != axis]
        headers, (q,) = cpu_loops((space[axis] // pair.period,), 1, prefix="px")
        rows = [[str(i) for i in row] for row in itertools.product(*(range(d) for d in outer))]
        vectors = space[-1] // lanes
        xt = self.get(pair.x)
        weights = self.tile_buffer("pair_weights", (lanes,), "int32")
        sums = [[self.tile_buffer("pair_acc", (lanes,), "float32") for _ in range(vectors)] for _ in rows]
        if pair_dot.LLVM_HELPERS not in self.llvm_imports:
            self.llvm_imports.append(pair_dot.LLVM_HELPERS)
        make_weights = self._pair_weights(pair, weights, q)

        def at(k: str, last: str, outer_idx: Sequence[str]) -> list[str]:
            idx = list(outer_idx)
            idx.insert(axis, k)
            return idx + [last]

        def x_bits(k: str, row: Sequence[str]) -> str:
            e = xt.read(view_index(pair.x_chain, a_index(at(k, "0", row))), True)
            return f'T.Cast("uint32", {tt.reinterpret(e, "bfloat16", "uint16")})'

        vec = f"T.ramp(0, 1, {lanes})"

        def acc_part(row: Sequence[str], v: int) -> str:
            return acc.write(acc_index(list(row)) + [f"T.ramp({v * lanes}, 1, {lanes})"])

        def x_pair(k_lo: str, k_hi: str, row: Sequence[str]) -> str:
            return (f'T.reinterpret("int32", T.bitwise_or({x_bits(k_lo, row)}, '
                    f'T.shift_left({x_bits(k_hi, row)}, T.uint32(16))))')

        staged, staged_items = self._staged_x_pairs(pair, space[axis], rows, x_pair)
        body: list[Item] = []
        for p, (lo, hi) in enumerate(pair.pairs):
            k_lo, k_hi = f"{q} * {pair.period} + {lo}", f"{q} * {pair.period} + {hi}"
            if staged:
                xpairs = [buf.read([f"{q} * {len(pair.pairs)} + {p}"], True) for buf in staged]
            else:
                xpairs = [x_pair(k_lo, k_hi, row) for row in rows]
            for v in range(vectors):
                body += make_weights(p, v, k_lo, k_hi)
                for r, xpair in enumerate(xpairs):
                    target = sums[r][v].write([vec])
                    body.append(f'{target} = T.call_pure_extern("float32x{lanes}", "{pair_dot.DPBF16}", {target}, '
                                f"{weights.read([vec], True)}, T.Broadcast({xpair}, {lanes}))")
        zero = f"T.Broadcast(T.float32(0), {lanes})"
        load = [f"{sums[r][v].write([vec])} = {zero if zero_start else acc_part(row, v)}" for r, row in enumerate(rows)
                for v in range(vectors)]
        store = [f"{acc_part(row, v)} = {sums[r][v].read([vec], True)}" for r, row in enumerate(rows)
                 for v in range(vectors)]
        self._emit_fused(guards, staged_items + load + _nest_items(headers, body) + store, checked, acc, zero_start)

    def _staged_x_pairs(self, pair: pair_dot.PairDot | pair_dot.DecodedPairDot, extent: int,
                        rows: Sequence[Sequence[str]], x_pair: Callable[[str, str, Sequence[str]], str]
                        ) -> tuple[list[BufferTile], list[Item]]:
        """``(buffers, fill)``: where a pair nest of ``rows`` over ``extent`` K rows stages x
        (:data:`_STAGED_X_MIN_ROWS`), one buffer per row holding its bf16 pairs in the nest's order (pair ``p``
        of step ``q`` at ``q * len(pair.pairs) + p``) and the loop that fills them; else ``([], [])``.
        ``x_pair(k_lo, k_hi, row)``: the expression of one pair."""
        count = extent // 2
        if (len(rows) < _STAGED_X_MIN_ROWS or any(hi != lo + 1 for lo, hi in pair.pairs)
                or count * 4 >= _STACK_BUFFER_BYTES):
            return [], []
        per_step = len(pair.pairs)
        buffers = [self.tile_buffer("pair_x", (count,), "int32") for _ in rows]
        step = self.names.fresh("xs")
        fill = _Scope(f"for {step} in range({extent // pair.period}):")
        for buf, row in zip(buffers, rows):
            for p, (lo, hi) in enumerate(pair.pairs):
                fill.body.append(f"{buf.write([f'{step} * {per_step} + {p}'])} = "
                                 + x_pair(f"{step} * {pair.period} + {lo}", f"{step} * {pair.period} + {hi}", row))
        return buffers, [fill]

    def _pair_weights(self, pair: pair_dot.PairDot | pair_dot.DecodedPairDot, weights: BufferTile, q: str
                      ) -> Callable[[int, int, str, str], list[Item]]:
        """``make(p, v, k_lo, k_hi)``: the statements that put the 32 bf16 weights of K pair ``p`` (rows
        ``k_lo``, ``k_hi`` of the K step ``q``) and vector ``v`` into ``weights`` (one ``int32`` per output,
        row ``k_lo``'s weight in the low half).

        Codes (:class:`.pair_dot.PairDot`): the 16 storage words are shifted (once per 5- or 6-bit window of
        codes, see :func:`.pair_dot.share_shifts`; or two words funnel-shifted per 16-bit half, for codes
        crossing a half) and ``vpermw`` (``vpermi2w`` for 64 entries) picks the weights from the table spread
        for the codes' place in the window.
        Decoded weights (:class:`.pair_dot.DecodedPairDot`): the two rows' f32 weights, decoded here, joined
        by their high halves (exact: bf16 holds every value)."""
        lanes = LANES
        vec = f"T.ramp(0, 1, {lanes})"
        lane = self.names.fresh("pv")
        header = f"for {lane} in T.vectorized({lanes}):"
        if isinstance(pair, pair_dot.DecodedPairDot):
            b = self.get(pair.weights)

            def decoded(p: int, v: int, k_lo: str, k_hi: str) -> list[Item]:
                fill = _Scope(header)
                with self.vector_lane([header]):
                    lo, hi = (tt.reinterpret(b.read([k, f"{v * lanes} + {lane}"], True), "float32", "uint32")
                              for k in (k_lo, k_hi))
                fill.body.append(f'{weights.write([lane])} = T.reinterpret("int32", T.bitwise_or('
                                 f'T.shift_right({lo}, T.uint32(16)), T.bitwise_and({hi}, T.uint32(0xFFFF0000))))')
                return [fill]

            return decoded
        words = self.get(pair.words)
        tables = {src.position: self.table_registers(pair.table_words(src.position), "int32")   # 1 or 2 each
                  for row in pair.sources for src in row}
        if any(src.high is not None for row in pair.sources for src in row):      # codes crossing a half
            low_words = self.tile_buffer("pair_low", (lanes,), "int32")
            high_words = self.tile_buffer("pair_high", (lanes,), "int32")
        shifted = self.tile_buffer("pair_index", (lanes,), "int32")

        def coded(p: int, v: int, k_lo: str, k_hi: str) -> list[Item]:
            src = pair.sources[p][v]
            fill = _Scope(header)
            with self.vector_lane([header]):
                low = _word_at(words, src.low, q, lane)
                high = _word_at(words, src.high, q, lane) if src.high is not None else None
            items: list[Item] = []
            if high is None:
                fill.body.append(f'{shifted.write([lane])} = T.reinterpret("int32", T.shift_right({low}, '
                                 f'T.uint32({src.shift})))')
                items.append(fill)
            else:
                fill.body += [f'{low_words.write([lane])} = T.reinterpret("int32", {low})',
                              f'{high_words.write([lane])} = T.reinterpret("int32", {high})']
                amount = f"T.Broadcast(T.int32({src.offset * 0x10001}), {lanes})"
                items += [fill, f'{shifted.write([vec])} = T.call_pure_extern("int32x{lanes}", "{pair_dot.FUNNEL16}", '
                                f"{low_words.read([vec], True)}, {high_words.read([vec], True)}, {amount})"]
            regs = ", ".join(f"{reg}[{vec}]" for reg in tables[src.position])
            permute = pair_dot.PERMW if len(tables[src.position]) == 1 else pair_dot.PERMI2W
            items.append(f'{weights.write([vec])} = T.call_pure_extern("int32x{lanes}", "{permute}", '
                         f"{shifted.read([vec], True)}, {regs})")
            return items

        return coded

    def _fused_dot_of(self, ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> FusedDot | None:
        """The fused form the CPU ``dot`` ``ins`` is emitted in: a :class:`.pair_dot.PairDot` (bf16
        activations), a :class:`.lookup_sum.LookupSum` (1-2-bit codes, integer codes in bit planes), a
        :class:`.pair_dot.DecodedPairDot` (bf16 activations, weights decoded exactly into bf16), or None
        (matched once: the inlining plan needs the answer too, since both unpack ``b`` once for all rows)."""
        name = ins.result.name
        if name not in self._fused_dots:
            ins = self._without_nan(ins, defs)
            shape = ins.result.type.shape
            fits = (not self.t.cuda and self.t.lanes("float32") == LANES and host_has_avx512()
                    and all(isinstance(d, int) for d in shape)
                    and shape[0] * (shape[1] // LANES) <= _FUSED_DOT_ACCUMULATORS)
            rows, vectors = (int(shape[0]), int(shape[1]) // LANES) if fits else (0, 0)
            found = lookup_sum.match_dot(ins, defs) if fits else None
            # the lookup also keeps a table of sums per row (three with bit planes: the bits' sums, a plane's and
            # the activations' sum), its field tables (FIELD_BITS for 1-bit codes), a word, an index and the
            # multiply-adds' 1.0 in registers
            tables = 3 if found is not None and len(found.planes) > 1 else 1
            if found is not None and rows * (vectors + tables) + lookup_sum.FIELD_BITS + 3 > _VECTOR_REGISTERS:
                found = None
            # a lookup adds 4 products of 1-bit codes: fewer instructions than the pair dot; of 2-bit codes, 2
            if (found is None or len(found.fields[0]) < 4) and fits and self._pair_dot_target():
                found = pair_dot.match_dot(ins, defs) or found
            if found is None and fits and rows >= _DECODED_PAIR_MIN_ROWS and self._pair_dot_target():
                found = pair_dot.match_decoded_dot(ins, defs, self._decoded())
            self._fused_dots[name] = found
        return self._fused_dots[name]

    def _decoded(self) -> Mapping[str, str]:
        """``select-dequant``'s record of decoded values (value name -> code type), and the values a NaN guard
        took out of a decode (:meth:`_without_nan`: the same code's values, NaN codes as finite ones)."""
        found = self.facts.get(DECODED) if isinstance(self.facts, Mapping) else None
        decoded = dict(found) if isinstance(found, Mapping) else {}
        for guard in self._nan_guards.values():
            if guard is not None and guard.operand.name in decoded:
                decoded[guard.values.name] = decoded[guard.operand.name]
        return decoded

    def _nan_guard_of(self, ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> nan_guard.NanGuard | None:
        """The :mod:`.nan_guard` form of a CPU ``dot``'s weights (matched once per dot)."""
        name = ins.result.name
        if name not in self._nan_guards:
            self._nan_guards[name] = None if self.t.cuda else nan_guard.match(ins.b, defs)
        return self._nan_guards[name]

    def _without_nan(self, ins: n.Dot, defs: Mapping[str, n.Instr | None]) -> n.Dot:
        """``ins`` on the weights without their NaN ``where`` when a NaN guard applies (the emitter then sets the
        NaN columns after the dot: :meth:`_nan_columns`), else ``ins``."""
        guard = self._nan_guard_of(ins, defs)
        return ins if guard is None else replace(ins, b=guard.values)

    def _pair_dot_target(self) -> bool:
        """Whether products may use ``vdpbf16ps`` (:mod:`.pair_dot`): a CPU with 512-bit vectors and AVX-512 BF16."""
        return not self.t.cuda and self.t.lanes("float32") == LANES and host_has_avx512_bf16()

    def _unrolled_sum(self, ins: n.Reduce, x: Tile) -> ExprTile:
        """A short ``sum`` (see :func:`.analysis.is_small_reduce`) as a lazy tile: element ``idx`` is
        ``((x_0 + x_1) + x_2) ...`` in the accumulation dtype, in index order (as a sequential loop adds)."""
        r, dtype = ins.result, ins.x.dtype
        acc_dtype = tt.reduce_acc_dtype(ins.op, dtype)
        axis, keep = ins.axis, ins.keepdims
        extent = int(ins.x.type.shape[axis])

        def fn(idx: Sequence[str], fast: bool) -> str:
            idx = list(idx)
            rest = idx[:axis] + (idx[axis + 1:] if keep else idx[axis:])
            terms = [x.read(rest[:axis] + [str(j)] + rest[axis:], fast) for j in range(extent)]
            total = tt.to_f32(terms[0], dtype) if kind_of(dtype) == "float" else terms[0]
            for t in terms[1:]:
                total = tt.reduce_combine("sum", total, t, dtype)
            return tt.from_f32(total, r.dtype) if acc_dtype != r.dtype else total

        return ExprTile(tuple(r.type.shape), r.dtype, guards=x.guards, buffers=x.buffers, memory=x.memory, fn=fn)

    def _reduce_last_axis_vectorized(self, ins: n.Reduce, x: Tile, out: BufferTile, v: int) -> None:
        """Reduce the contiguous last axis with ``v`` partial accumulators per output (one SIMD vector; the row
        itself when it is one vector long), then combine the lanes pairwise, halving a vector at a time
        (``log2 v`` vector steps, where a lane-by-lane loop was a chain of ``v`` dependent scalar steps: the
        score rows of decode attention spent most of their time there). Float sums are reassociated, which the
        tolerance of a float sum allows; max, min and wrapping integer sums are exact in any order."""
        r, dtype = ins.result, ins.x.dtype
        acc_dtype = tt.reduce_acc_dtype(ins.op, dtype)
        xshape = tuple(ins.x.type.shape)
        pre, K = xshape[:-1], xshape[-1]
        if K == v:
            def lane(idx: list[str], j: str, fast: bool) -> str:
                value = x.read(list(idx) + [j], fast)
                return value if acc_dtype == dtype else tt.to_f32(value, dtype)
        else:
            part = self.tile_buffer(r.name + "_lanes", pre + (v,), acc_dtype)
            ident = tt.reduce_identity(ins.op, dtype)
            self.emit_nest(pre + (v,), lambda idx, fast: [f"{part.write(idx)} = {ident}"], vector=v)

            def body(idx: list[str], fast: bool) -> list[Item]:
                pidx = idx[:-2] + [idx[-1]]
                xv = x.read(idx[:-2] + [f"({idx[-2]}) * {v} + {idx[-1]}"], fast)
                return [f"{part.write(pidx)} = {tt.reduce_combine(ins.op, part.read(pidx, fast), xv, dtype)}"]

            self.emit_nest(pre + (K // v, v), body, tiles=[x], vector=v)

            def lane(idx: list[str], j: str, fast: bool) -> str:
                return part.read(list(idx) + [j], fast)

        halves = []
        width = v
        while width > 2:
            width //= 2
            halves.append(self.tile_buffer(r.name + f"_half{width}", (width,), acc_dtype))
        keep = ins.keepdims

        def finish(idx: list[str], fast: bool) -> list[Item]:
            items: list[Item] = []
            read = lambda j: lane(idx, j, fast)  # noqa: E731
            for half in halves:
                w = self.names.fresh("w")
                loop = _Scope(f"for {w} in {'T.vectorized' if fast else 'range'}({half.shape[0]}):")
                pair = tt.reduce_combine(ins.op, read(w), read(f"{w} + {half.shape[0]}"), acc_dtype)
                loop.body.append(f"{half.write([w])} = {pair}")
                items.append(loop)
                read = lambda j, half=half: half.read([j], True)  # noqa: E731
            total = tt.reduce_combine(ins.op, read("0"), read("1"), acc_dtype)
            ridx = list(idx) + (["0"] if keep else [])
            res = tt.from_f32(total, r.dtype) if acc_dtype != r.dtype else total
            return items + [f"{out.write(ridx)} = {res}"]

        guards = list(x.guards) if K == v else []                 # (a row read straight from x: its guards)
        # (an integer sum's combine wraps through scalar int64 casts: it stays row by row)
        vector_combine = ins.op != "sum" or kind_of(acc_dtype) == "float"
        checked = lambda: self._loops(pre, finish, None, False, 1, None)  # noqa: E731
        if pre and 2 <= pre[-1] <= v and not pre[-1] & (pre[-1] - 1) and vector_combine:
            self.emit_versioned(guards, self._fold_rows(ins, lane, out, pre, v, acc_dtype), checked)
            return
        # rows that do not fold unrolled (up to UNROLL_K at a time): left as a loop of vector steps, LLVM's loop
        # vectorizer ran it across rows, each halving step a gather of one lane per row
        rows = {len(pre) - 1: choose_vector(pre[-1], UNROLL_K)} if pre else None
        self.emit_versioned(guards, self._loops(pre, finish, None, True, 1, None, rows), checked)

    def _fold_rows(self, ins: n.Reduce, lane: Callable[[list[str], str, bool], str], out: BufferTile,
                   pre: tuple[int, ...], v: int, acc_dtype: str) -> list[Item]:
        """The reduction over lanes of :meth:`_reduce_last_axis_vectorized` for the last axis of ``pre`` (``R``
        rows, a power of two up to ``v``) at once: each row's ``v`` lanes (``lane(idx, j, fast)``) into a vector,
        then merged and folded by two-source shuffles (:mod:`.row_fold`) into one vector of the ``R`` results,
        stored with one vector write. The same pairs of lanes as the row-by-row halving: the same sums."""
        r = ins.result
        rows = pre[-1]
        headers, outer = cpu_loops(pre[:-1], 1, prefix="fo")
        full = lambda lanes: f"T.ramp(0, 1, {lanes})"  # noqa: E731
        body: list[Item] = []
        vectors: list[BufferTile] = []
        for i in range(rows):
            buf = self.tile_buffer(r.name + "_fold", (v,), acc_dtype)
            j = self.names.fresh("w")
            load = _Scope(f"for {j} in T.vectorized({v}):")
            with self.vector_lane([load.header]):
                load.body.append(f"{buf.write([j])} = {lane(list(outer) + [str(i)], j, True)}")
            body.append(load)
            vectors.append(buf)
        width = v
        for count, groups, group_width in row_fold.fold_steps(rows, v):
            if count > 1:
                first, second = row_fold.merge_indices(v, groups, group_width)
                sources = list(zip(vectors[0::2], vectors[1::2]))
            else:
                first, second = row_fold.fold_indices(groups, group_width)
                sources = [(vectors[0],)]
            size, merged = len(first), []
            for pair in sources:
                srcs = ", ".join(t.read([full(width)], True) for t in pair)
                lo, hi, c = (self.tile_buffer(r.name + "_fold", (size,), acc_dtype) for _ in range(3))
                body.append(f"{lo.write([full(size)])} = T.Shuffle([{srcs}], [{', '.join(map(str, first))}])")
                body.append(f"{hi.write([full(size)])} = T.Shuffle([{srcs}], [{', '.join(map(str, second))}])")
                both = tt.reduce_combine(ins.op, lo.read([full(size)], True), hi.read([full(size)], True), acc_dtype)
                body.append(f"{c.write([full(size)])} = {both}")
                merged.append(c)
            vectors, width = merged, size
        j = self.names.fresh("w")
        store = _Scope(f"for {j} in T.vectorized({rows}):")
        value = vectors[0].read([j], True)
        value = tt.from_f32(value, r.dtype) if acc_dtype != r.dtype else value
        store.body.append(f"{out.write(list(outer) + [j] + (['0'] if ins.keepdims else []))} = {value}")
        body.append(store)
        return _nest_items(headers, body)

    def _bind_result(self, r: n.Value, buf: BufferTile) -> None:
        if r.type.shape == ():
            self.tiles[r.name] = self.bind(r.name, r.dtype, buf.read([], True))
        else:
            self.tiles[r.name] = buf

    def op_Dot(self, ins: n.Dot) -> None:
        guard = self._nan_guard_of(ins, self.info.defs)
        ins = self._without_nan(ins, self.info.defs)
        r = ins.result
        a, b, acc = self.get(ins.a), self.get(ins.b), self.get(ins.acc)
        M, K = ins.a.type.shape
        N = ins.b.type.shape[1]
        acc_dtype = r.dtype
        out = self._inplace_buffer(r)
        if out is not None and out.name in acc.buffers and out.name not in acc.identity:
            out = None
        if out is None:
            out = self.tile_buffer(r.name, (M, N), acc_dtype)
        in_dtype = ins.a.dtype

        def prod(x: str, y: str) -> str:
            if kind_of(in_dtype) == "float":
                return f"{tt.to_f32(x, in_dtype)} * {tt.to_f32(y, in_dtype)}"
            return f'T.Cast("int32", {x}) * T.Cast("int32", {y})'

        def add(s: str, p: str) -> str:
            return tt.binary("add", s, p, acc_dtype)

        if self.t.cuda:
            accl = self.local_scalar(r.name + "_acc", acc_dtype)
            kv = self.names.fresh("k")

            def body(idx: list[str], fast: bool) -> list[Item]:
                i, j = idx
                loop = _Scope(f"for {kv} in range({K}):")
                loop.body.append(f"{accl}[0] = {add(f'{accl}[0]', prod(a.read([i, kv], fast), b.read([kv, j], fast)))}")
                return [f"{accl}[0] = {acc.read(idx, fast)}", loop, f"{out.write(idx)} = {accl}[0]"]

            self.emit_nest((M, N), body, tiles=[a, b, acc], layout=self.layout_of(r))
        else:
            vec = self.vector_for(r, (M, N), acc_dtype)
            rows = dot_row_block(M, N, vec)
            fused = self._fused_dot_of(ins, self.info.defs)
            zero_start = fused is not None and _is_zero(ins.acc, self.info.defs)
            if not zero_start and not (isinstance(acc, BufferTile) and acc.name == out.name):
                self.emit_nest((M, N), lambda idx, fast: [f"{out.write(idx)} = {acc.read(idx, fast)}"],
                               tiles=[acc], vector=vec)
            factor = _power_of_two_factor(ins.b, self.info.defs) if fused is None and in_dtype == "float32" else None
            if factor is not None:       # b = c * 2^-e: a * b = (a * 2^-e) * c, the multiply once per element of a
                b = self.get(factor[0])
            if fused is None:
                a = self._staged_activations(ins, a, factor[1] if factor is not None else None)
            if fused is not None:
                self._register_gemm(fused, out, a, b, (M, K, N), vec, prod, add, zero_start)
            elif rows == 1:
                def body(idx: list[str], fast: bool) -> list[Item]:
                    i, k, j = idx
                    cur = out.read([i, j], fast)
                    return [f"{out.write([i, j])} = {add(cur, prod(a.read([i, k], fast), b.read([k, j], fast)))}"]

                self.emit_nest((M, K, N), body, tiles=[a, b], vector=vec,
                               unroll=_k_unroll(K, N, vec, (a, b), unpack_period(ins.b, self.info.defs, 0)))
            else:
                period = unpack_period(ins.b, self.info.defs, 0, limit=_PAIR_PERIOD_LIMIT)
                self._blocked_dot(out, a, b, (M, K, N), rows, vec, prod, add, period)
            if guard is not None:
                self._nan_columns(guard, out, (M, K, N))
        self.tiles[r.name] = out

    def _staged_activations(self, ins: n.Dot, a: Tile, factor: float | None = None) -> Tile:
        """A CPU dot's ``a`` staged once in an f32 buffer, where it is a cast of 16-bit floats computed where it
        is read (bf16 or f16 activations), or where it takes ``factor`` (:func:`_power_of_two_factor`, times
        each element). The K loop reads each element once per row and broadcasts it to a vector, which from a
        16-bit value took a scalar load, a shift and two vector instructions (a move and a broadcast), where an
        f32 element is one broadcast load; the conversion by vectors costs two instructions per vector of
        elements. AVX2 host, 2 threads, 1024 x 4096 weights in cache, x bf16, old and new kernels interleaved:
        int4 M = 4 564 -> 385 us, int8 M = 4 494 -> 363; M = 1 (8 vectors per element) int4 210 -> 202,
        float8_e4m3fn 244 -> 239. (A factor multiplied where the rows are read instead measured 30-50% slower
        in the 4-row block in one run: int4-int7 x f32, 4 x 4096 x 4096.)"""
        cast = self.info.defs.get(ins.a.name)
        converts = (not isinstance(a, BufferTile) and isinstance(cast, n.Cast) and ins.a.dtype == "float32"
                    and cast.x.dtype in ("bfloat16", "float16"))
        if not converts and factor is None:
            return a
        shape = tuple(int(d) for d in ins.a.type.shape)
        staged = self.tile_buffer(ins.a.name + "_f32", shape, "float32")
        scale = "" if factor is None else f" * {tt.lit(factor, 'float32')}"
        self.emit_nest(shape, lambda idx, fast: [f"{staged.write(idx)} = {a.read(idx, fast)}{scale}"], tiles=[a],
                       vector=self.vector_for(ins.a, shape, "float32"))
        return staged

    def _nan_columns(self, guard: nan_guard.NanGuard, out: BufferTile, mkn: tuple[int, int, int]) -> None:
        """Column ``j`` of ``out`` (the dot's result) NaN where the weights' NaN test holds in column ``j``
        (:mod:`.nan_guard`): 3 vector instructions per storage word say whether any word holds a NaN code; only
        then an exact loop over the test itself sets the columns."""
        M, K, N = mkn
        words = self.get(guard.words)
        wdt = guard.words.dtype
        shape = tuple(int(d) for d in guard.words.type.shape)
        size = math.prod(shape)
        v = choose_vector(size, self.t.lanes(wdt))
        seen = self.tile_buffer(out.name + "_nanw", (v,), wdt)
        fields, carries = tt.lit(guard.fields, wdt), tt.lit(guard.carries, wdt)
        self.emit_nest((v,), lambda idx, fast: [f"{seen.write(idx)} = {tt.lit(0, wdt)}"], vector=v)

        def scan(fast: bool) -> list[Item]:
            h, (wo, lane) = cpu_loops((size // v, v), v if fast else 1, prefix="nw")
            w = words.read(unflatten(f"{wo} * {v} + {lane}", shape), fast)
            # ~((~w & M) + M) & C, with ~w & M as (w & M) ^ M and ~t & C as (t ^ C) & C
            field_zero = f"(({w} & {fields}) ^ {fields})"
            flags = f"((({field_zero} + {fields}) ^ {carries}) & {carries})"
            return _nest_items(h, [f"{seen.write([lane])} = {seen.read([lane], True)} | {flags}"])

        self.emit_versioned(list(words.guards), scan(True), lambda: scan(False))
        found = self.local_scalar(out.name + "_nan", wdt)
        self.emit(f"{found}[0] = {tt.lit(0, wdt)}")
        h, (lane,) = cpu_loops((v,), 1, prefix="nl")
        for item in _nest_items(h, [f"{found}[0] = {found}[0] | {seen.read([lane], True)}"]):
            self.emit(item)
        cond = self.get(guard.cond)
        (hj, (j,)), (hk, (k,)), (hi, (i,)) = (cpu_loops((d,), 1, prefix=p)
                                              for d, p in ((N, "nj"), (K, "nk"), (M, "ni")))
        hit = _Scope(f"if {cond.read([k, j], False)}:")
        hit.body.extend(_nest_items(hi, [f"{out.write([i, j])} = {tt.lit(float('nan'), out.dtype)}"]))
        rare = _Scope(f"if {found}[0] != {tt.lit(0, wdt)}:")
        rare.body.extend(_nest_items(hj + hk, [hit]))
        self.emit(rare)

    def _register_gemm(self, fused: FusedDot, out: BufferTile, a: Tile, b: Tile,
                       mkn: tuple[int, int, int], vec: int, prod: Callable[[str, str], str],
                       add: Callable[[str, str], str], zero_start: bool) -> None:
        """``out += a @ b`` (``out = a @ b`` when ``zero_start``) with the instructions ``fused`` was proved fit
        for (``vdpbf16ps``: :meth:`_pair_dot_nest`; a lookup of activation sums: :meth:`_lookup_sum_nest`)."""
        M, K, N = mkn

        def checked(idx: list[str], fast: bool) -> list[Item]:
            i, k, j = idx
            cur = out.read([i, j], fast)
            return [f"{out.write([i, j])} = {add(cur, prod(a.read([i, k], fast), b.read([k, j], fast)))}"]

        fallback = lambda: self._loops((M, K, N), checked, None, False, vec, None)  # noqa: E731
        guards = list(a.guards) + list(b.guards)
        if isinstance(fused, pair_dot.DecodedPairDot):
            # K steps as the multiply-add nest unrolls them (word offsets and shift amounts of a fused unpack
            # become constants), in pairs. The pair nest's body is light (one decode per vector and pair, shared
            # by the rows), so it may unroll a period longer than UNROLL_K: 7-bit codes 32 outputs wide repeat
            # every 32 K rows
            period = unpack_period(fused.weights, self.info.defs, 0, limit=_PAIR_PERIOD_LIMIT)
            steps = (_k_unroll(K, N, vec, (b,), period) or {}).get(1, 1)
            if period is not None and period > steps and period * max(1, N // vec) <= UNROLL_STATEMENTS:
                steps = period
            steps += steps % 2
            if K % steps == 0:
                fused = replace(fused, period=steps, pairs=tuple((k, k + 1) for k in range(0, steps, 2)))
        if isinstance(fused, (pair_dot.PairDot, pair_dot.DecodedPairDot)):
            self._pair_dot_nest(fused, (M, K, N), 1, out, lambda rows: rows, lambda idx: [idx[0], idx[1]], guards,
                                fallback, zero_start)
        else:
            self._lookup_sum_nest(fused, (M, K, N), out, a, guards, fallback, zero_start)

    def _lookup_sum_nest(self, ls: lookup_sum.LookupSum, mkn: tuple[int, int, int], acc: BufferTile, a: Tile,
                         guards: Sequence[str], checked: Callable[[], list[Item]], zero_start: bool) -> None:
        """``acc += a @ b`` for a product proved fit for a lookup of activation sums (:mod:`.lookup_sum`). A
        loop over K steps of ``ls.period`` rows; in its body, per K group: each row's 16 sums (one vector,
        built from the group's activations and the constant field tables), then per vector of 16 outputs
        (unrolled) the storage words shifted to the group's field, and per row one ``vpermps`` of the sums
        by it, added to the row's accumulator. Accumulators as in :meth:`_pair_dot_nest`. With bit planes the
        group's sums are built per plane (a multiple of the sums of the bits, see :mod:`.lookup_sum`), each
        plane has its own words and shifts, and ``table[0]`` times the sum of the activations joins the
        accumulators after the loop.

        Half of those adds are multiply-adds by a 1.0 the compiler cannot fold (``llvm.arithmetic.fence``),
        exactly the same sum (``fma(p, 1, s)`` rounds ``p + s`` once, as the add does) on other execution
        pipes: on Zen 4 the adds' pipes are the ones the permutes and shifts need, the multiply-adds' are
        not. Every :data:`_LOOKUP_PLAIN_ADD_EVERY`-th stays an add: the multiply-add pipes also build the sums.
        An int2 x f32 GEMV (1024 x 4096, weights in cache) ran 21% faster. Where adds and multiply-adds share
        pipes (Intel's AVX-512) it changes nothing."""
        M, K, N = mkn
        lanes = LANES
        headers, (q,) = cpu_loops((K // ls.period,), 1, prefix="lq")
        vectors = N // lanes
        lane = self.names.fresh("lv")
        words = self.get(ls.words)
        # in bit planes, plane b's table is (t_b, t_b + d_b): it takes d_b times the sums of the bits, built once
        # per field and row, and t_b times the activations, added once per row after the loop (their sum is
        # lane 15 of the sums of the bits, accumulated); a code's own plane builds its sums from its field tables
        planar = len(ls.planes) > 1
        steps = [p.table[1] - p.table[0] for p in ls.planes] if planar else []
        offset = sum(p.table[0] for p in ls.planes) if planar else 0.0
        bit_tables = ([self.table_buffer(t, "float32", register=True)
                       for t in lookup_sum.LookupPlane((0.0, 1.0), ()).field_tables(1)] if planar else [])
        field_tables = [] if planar else [self.table_buffer(t, "float32", register=True)
                                          for t in ls.planes[0].field_tables(ls.bits)]
        index = self.tile_buffer("lut_index", (lanes,), "int32")
        one = self.tile_buffer("lut_one", (lanes,), "float32")
        table = [self.tile_buffer("lut_sums", (lanes,), "float32") for _ in range(M)]
        bit_sums = [self.tile_buffer("lut_bit_sums", (lanes,), "float32") for _ in range(M)] if planar else []
        x_sums = [self.tile_buffer("lut_x_sums", (lanes,), "float32") for _ in range(M)] if offset else []
        sums = [[self.tile_buffer("lut_acc", (lanes,), "float32") for _ in range(vectors)] for _ in range(M)]
        vec = f"T.ramp(0, 1, {lanes})"
        header = f"for {lane} in T.vectorized({lanes}):"

        def acc_part(row: int, v: int) -> str:
            return acc.write([str(row), f"T.ramp({v * lanes}, 1, {lanes})"])

        accumulations = itertools.count()

        def accumulate(total: str, pick: str) -> str:
            if next(accumulations) % _LOOKUP_PLAIN_ADD_EVERY == 0:
                return f"{total} + {pick}"
            return f'T.call_llvm_pure_intrin("float32x{lanes}", "llvm.fma", {pick}, {one.read([vec], True)}, {total})'

        def weighted(values: Sequence[str], row: int, field_rows: Sequence[int]) -> str:
            """The sums ``sum_j values_j * a[row, k_j]`` over the K rows of a field."""
            return " + ".join(f"{t}[{vec}] * T.Broadcast({a.read([str(row), f'{q} * {ls.period} + {k}'], True)}, "
                              f"{lanes})" for t, k in zip(values, field_rows))

        body: list[Item] = []
        for f, field_rows in enumerate(ls.fields):
            if planar:
                body += [f"{bit_sums[r].write([vec])} = {weighted(bit_tables, r, field_rows)}" for r in range(M)]
                body += [f"{x_sums[r].write([vec])} = {x_sums[r].read([vec], True)} + {bit_sums[r].read([vec], True)}"
                         for r in range(M) if x_sums]
            for p, plane in enumerate(ls.planes):
                for r in range(M):
                    if not planar:
                        body.append(f"{table[r].write([vec])} = {weighted(field_tables, r, field_rows)}")
                    elif steps[p] != 1:
                        body.append(f"{table[r].write([vec])} = {bit_sums[r].read([vec], True)} * "
                                    f"T.Broadcast(T.float32({steps[p]!r}), {lanes})")
                sums_of = bit_sums if planar and steps[p] == 1 else table
                for v, src in enumerate(plane.sources[f]):
                    fill = _Scope(header)
                    with self.vector_lane([header]):
                        word = _word_at(words, src.word, q, lane)
                    shifted = f"T.shift_right({word}, T.uint32({src.offset}))" if src.offset else word
                    fill.body.append(f'{index.write([lane])} = T.reinterpret("int32", {shifted})')
                    body.append(fill)
                    for r in range(M):
                        pick = (f'T.call_llvm_pure_intrin("float32x{lanes}", "{lookup_sum.PERMPS}", '
                                f"{sums_of[r].read([vec], True)}, {index.read([vec], True)})")
                        body.append(f"{sums[r][v].write([vec])} = {accumulate(sums[r][v].read([vec], True), pick)}")
        load = [f'{one.write([vec])} = T.call_llvm_pure_intrin("float32x{lanes}", "llvm.arithmetic.fence", '
                f"T.Broadcast(T.float32(1), {lanes}))"]
        zero = f"T.Broadcast(T.float32(0), {lanes})"
        load += [f"{sums[r][v].write([vec])} = {zero if zero_start else acc_part(r, v)}" for r in range(M)
                 for v in range(vectors)]
        load += [f"{x_sums[r].write([vec])} = {zero}" for r in range(M) if x_sums]
        store = [f"{acc_part(r, v)} = {sums[r][v].read([vec], True)}" + (
                     f" + T.Broadcast(T.float32({offset!r}) * {x_sums[r].read([str(lanes - 1)], True)}, {lanes})"
                     if x_sums else "") for r in range(M) for v in range(vectors)]
        self._emit_fused(guards, load + _nest_items(headers, body) + store, checked, acc, zero_start)

    def _emit_fused(self, guards: Sequence[str], fused: list[Item], checked: Callable[[], list[Item]],
                    acc: BufferTile, zero_start: bool) -> None:
        """A fused nest and its checked fallback (``if guards: fused else: checked()``); when the fused nest
        starts its sums at zero (``zero_start``) instead of loading them from ``acc``, the fallback zeroes
        ``acc`` first."""
        def from_zero() -> list[Item]:
            zeros = self._loops(acc.shape, lambda idx, fast: [f"{acc.write(idx)} = {tt.lit(0.0, acc.dtype)}"], None,
                                False, 1, None)
            return zeros + checked()

        self.emit_versioned(guards, fused, from_zero if zero_start else checked)

    def _blocked_dot(self, out: BufferTile, a: Tile, b: Tile, mkn: tuple[int, int, int], rows: int, vec: int,
                     prod: Callable[[str, str], str], add: Callable[[str, str], str],
                     period: int | None = None) -> None:
        """``out += a @ b`` on the CPU, ``rows`` rows of ``out`` at a time (a register-blocked micro-kernel).

        Per block: copy the block's accumulators into small stack arrays, one per (row, vector) when the
        vector loop runs unchecked (else one ``[rows, N]``), which LLVM keeps in registers: ``out`` itself
        may be a heap workspace that LLVM cannot tell apart from the operands' buffers, so it would load and
        store it on every step. Run the K loop with the block's rows unrolled inside it (each element of
        ``b`` read or unpacked once feeds ``rows`` accumulators), copy back. The order of every element's
        sum is unchanged (k ascending). ``period``: ``b``'s proven period along K
        (:func:`.unpack_period.unpack_period`), the least K unroll that folds its unpack to constants.
        """
        M, K, N = mkn
        blk = self.tile_buffer(out.name + "_blk", (rows, N), out.dtype)
        aval = self.tile_buffer(out.name + "_a", (rows,), a.dtype)
        # b is computed once per (k, j). Not bounded by the unpack's period as in the GEMV nest: with
        # rows of FMAs per unpacked element, 16 steps measured faster (int2 / int4 x f32, M = 4, weights
        # from DRAM: 0.78-0.82 ms at 16 steps, 0.83-0.88 at the period); float8 alone gained (1.51 -> 1.36)
        periodic = _k_unroll(K, N, vec, (b,))
        # A short K loop over a plain ``b`` (decode attention's probabilities times a page of values: 16 steps)
        # runs unrolled: as a loop, LLVM kept its 16 sums in memory and stored and reloaded every one on every
        # step inside the page loop's body (fp16 KV cache, one thread, 63 pages: 763 -> 713 ns per page and
        # kv head, the same sums)
        k_unroll = periodic.get(1, 1) if periodic is not None else K if K <= UNROLL_K else 1
        if periodic is not None and period is not None and period > k_unroll and K % period == 0 \
                and period * max(1, N // vec) <= UNROLL_STATEMENTS:
            # but at least the period, when it is longer: 3/5/7-bit codes packed along K repeat every 32
            # steps, and half a period leaves the shift amounts and the straddling words' selection to run
            # time (AVX2 host, 4 x 4096 x 4096 x f32, 4 x 16 tile, old and new interleaved: int3 4.65 ->
            # 1.53 ms, int5 4.66 -> 1.58, int7 5.84 -> 1.79; x bf16 int3 4.50 -> 1.58)
            k_unroll = period

        # The nest is versioned on b's guards only. With b's reads unchecked (or b a plain buffer), a is
        # read per (row, k), the same in every lane of the N vector: the K loop stays vectorized and is
        # versioned once more on a's guards, so a partial row block at the edge of M runs vectorized too.
        plain_b = isinstance(b, BufferTile) and not b.guards
        a_guards = [g for g in a.guards if g not in b.guards]

        def block(idx: list[str], fast_b: bool) -> list[Item]:
            io = idx[0]

            def row(r_: str) -> str:
                return f"{io} * {rows} + {r_}"

            wide = fast_b or plain_b
            v = choose_vector(N, self.lookup_lanes([b], vec)) if wide else 1
            h_in, i_in = cpu_loops((rows, N), v, prefix="bx", unroll={0: rows} if wide else None)
            h_out, i_out = cpu_loops((rows, N), v, prefix="dx", unroll={0: rows} if wide else None)
            # wide: one v-lane accumulator per (row, vector), written out in Python (constant offsets): LLVM
            # keeps each in a register. In one [rows, N] array, indexed by a loop over the vectors, LLVM
            # could only promote its parts out of the K loop, and gave that up in long bodies (bf16
            # activations at 4 rows: every accumulator stored on every step)
            sums = [[self.tile_buffer(out.name + "_sum", (v,), out.dtype) for _ in range(N // v)]
                    for _ in range(rows)] if wide else None
            lane = self.names.fresh("fv")
            full = f"T.ramp(0, 1, {v})"

            def products(k: str) -> list[Item]:
                """``sums += aval[row] * b[k, :]`` per vector and row: the rows of one vector of b are
                adjacent statements, so b's element (an unpack fused here) is computed once and shared (LLVM
                merges the identical loads and arithmetic)."""
                if sums is None:
                    h_b, (jo, ii, jv) = cpu_loops((N // v, rows, v), v, prefix="fx")
                    j = jv if N // v == 1 else (jo if v == 1 else f"{jo} * {v} + {jv}")
                    with self.vector_lane(h_b):
                        ab = prod(aval.read([ii], True), b.read([k, j], fast_b))
                    return _nest_items(h_b, [f"{blk.write([ii, j])} = {add(blk.read([ii, j], True), ab)}"])
                header = f"for {lane} in T.vectorized({v}):"
                items: list[Item] = []
                for jo in range(N // v):
                    for ii in range(rows):
                        with self.vector_lane([header]):
                            ab = prod(aval.read([str(ii)], True), b.read([k, f"{jo * v} + {lane}"], fast_b))
                        acc_ = sums[ii][jo]
                        items += _nest_items([header], [f"{acc_.write([lane])} = {add(acc_.read([lane], True), ab)}"])
                return items

            def k_nest(fast_a: bool) -> list[Item]:
                # per k: the block's elements of a into a small array (a scalar per row, read once, outside
                # the vector loop: a checked read inside would make TVM scalarize it), then the products
                h_k, (k,) = cpu_loops((K,), 1, prefix="cx", unroll={0: k_unroll} if wide else None)
                h_a, (ia,) = cpu_loops((rows,), 1, prefix="ex", unroll={0: rows})
                inner = _nest_items(h_a, [f"{aval.write([ia])} = {a.read([row(ia), k], fast_a)}"]) + products(k)
                return _nest_items(h_k, inner)

            if wide and a_guards:
                yes, no = _Scope("if " + " and ".join(f"({g})" for g in a_guards) + ":"), _Scope("else:")
                yes.body.extend(k_nest(True))
                no.body.extend(k_nest(False))
                body: list[Item] = [yes, no]
            else:
                body = k_nest(fast_b)
            if sums is not None:
                parts = [(ii, jo, [row(str(ii)), f"T.ramp({jo * v}, 1, {v})"]) for ii in range(rows)
                         for jo in range(N // v)]
                return ([f"{sums[ii][jo].write([full])} = {out.read(at, True)}" for ii, jo, at in parts] + body
                        + [f"{out.write(at)} = {sums[ii][jo].read([full], True)}" for ii, jo, at in parts])
            return (_nest_items(h_in, [f"{blk.write(i_in)} = {out.read([row(i_in[0]), i_in[1]], True)}"])
                    + body
                    + _nest_items(h_out, [f"{out.write([row(i_out[0]), i_out[1]])} = {blk.read(i_out, True)}"]))

        self.emit_nest((M // rows,), block, tiles=[b])

    # ------------------------------------------------------------------ control flow
    def _carried_buffer(self, v: n.Value, hint: str) -> BufferTile:
        if v.type.shape == ():
            return BufferTile(self.local_scalar(hint, v.dtype), (), v.dtype)
        return self.tile_buffer(hint, v.type.shape, v.dtype)

    def _write_values(self, targets: Sequence[BufferTile], values: Sequence[n.Value]) -> None:
        """``targets[k] = values[k]`` for all k, as if simultaneously (temporaries break read-after-write)."""
        tiles = [self.get(v) for v in values]
        pending = []
        for t, tile, v in zip(targets, tiles, values):
            if isinstance(tile, BufferTile) and tile.name == t.name:
                continue
            pending.append((t, tile, v))
        written = {t.name for t, _, _ in pending}
        staged = []
        for t, tile, v in pending:
            others = (tile.buffers & written) - {t.name}
            own_bad = t.name in tile.buffers and (self.t.cuda or t.name not in tile.identity)
            if others or own_bad:
                tmp = self._carried_buffer(v, t.name + "_tmp")
                self._copy(tmp, tile, v)
                staged.append((t, tmp, v))
            else:
                staged.append((t, tile, v))
        for t, tile, v in staged:
            if t.shape == ():
                self.emit(f"{t.write([])} = {tile.read([], True)}")
            else:
                self._copy(t, tile, v)

    def _copy(self, dst: BufferTile, tile: Tile, v: n.Value) -> None:
        if dst.shape == ():
            self.emit(f"{dst.write([])} = {tile.read([], True)}")
            return
        self.emit_nest(dst.shape, lambda idx, fast: [f"{dst.write(idx)} = {tile.read(idx, fast)}"],
                       tiles=[tile], vector=self.vector_for(v, dst.shape, dst.dtype), layout=self.layout_of(v))

    def op_For(self, ins: n.For) -> None:
        carried: list[BufferTile] = []
        for a, init in zip(ins.iter_args, ins.inits):
            reuse = self._reusable_init(init)
            carried.append(reuse if reuse is not None else self._carried_buffer(a, a.name))
        self._write_values(carried, list(ins.inits))
        self._plan_inplace(ins, carried)
        start, stop, step = (self.scalar(v) for v in (ins.start, ins.stop, ins.step))
        iv = self.names.fresh(ins.iv.name)
        if step in ("1", "T.int32(1)"):
            if start in ("0", "T.int32(0)"):
                header = f"for {iv} in range(T.max({stop}, 0)):"
            else:
                header = f"for {iv} in range({start}, T.max({stop}, {start})):"
            first: list[str] = []
        else:
            it = self.names.fresh("it")
            header = f"for {it} in range(T.max(T.floordiv({stop} - {start} + {step} - 1, {step}), 0)):"
            first = [f"{iv}: T.int32 = {start} + {it} * {step}"]
            self.expanded[iv] = self.expand(f"{start} + {it} * {step}")
        loop = _Scope(header)
        self.emit(loop)
        saved, self.cur = self.cur, loop.body
        try:
            for line in first:
                self.emit(line)
            self.tiles[ins.iv.name] = ScalarTile(iv, "int32")
            for a, c in zip(ins.iter_args, carried):
                if a.type.shape == ():
                    self.tiles[a.name] = self.bind(a.name, a.dtype, c.read([], True))
                else:
                    self.tiles[a.name] = c
            yields = self.emit_body(ins.body) or []
            self._write_values(carried, yields)
        finally:
            self.cur = saved
        for res, c in zip(ins.results, carried):
            self._bind_result(res, c)

    def _reusable_init(self, init: n.Value) -> BufferTile | None:
        """The init's own buffer, when the loop is its only use (then no copy is needed)."""
        tile = self.tiles.get(init.name)
        if not isinstance(tile, BufferTile) or not init.type.shape or len(self.info.uses.get(init.name, [])) != 1:
            return None
        d = self.info.defs.get(init.name)
        if d is None or isinstance(d, (n.For, n.If, n.LoadShared)) or init.name in self.info.lazy:
            return None
        return tile

    def _plan_inplace(self, ins: n.For, carried: Sequence[BufferTile]) -> None:
        """Let a ``dot`` in the loop body write its result straight into the loop-carried accumulator it
        yields, when the accumulator's old value is not read after the dot."""
        body = ins.body
        if self.t.cuda or not body or not isinstance(body[-1], n.Yield):
            return      # CUDA: TVM's sync planner rejects a nest reading and writing one shared buffer
        yields = body[-1].values
        pos = {id(x): p for p, x in enumerate(body)}
        for p, x in enumerate(body):
            if not isinstance(x, n.Dot):
                continue
            y = x.result
            ks = [k for k, v in enumerate(yields) if v.name == y.name]
            if len(ks) != 1:
                continue
            k = ks[0]
            a_k = ins.iter_args[k]
            if not a_k.type.shape or a_k.type.shape != y.type.shape or a_k.dtype != y.dtype:
                continue
            if a_k.name in self._roots(x.a) | self._roots(x.b):
                continue
            if any(v.name == a_k.name for v in yields):
                continue
            last = self._last_read(a_k.name, body, pos)
            if last is None or last <= p:
                self.inplace[y.name] = carried[k].name

    def _roots(self, v: n.Value) -> set[str]:
        """Non-lazy values whose storage ``v`` reads (itself unless lazy)."""
        out: set[str] = set()
        stack = [v]
        while stack:
            cur = stack.pop()
            if cur.name in self.info.lazy:
                d = self.info.defs.get(cur.name)
                if d is not None:
                    stack.extend(d.inputs)
            else:
                out.add(cur.name)
        return out

    def _last_read(self, name: str, body: Sequence[n.Instr], pos: Mapping[int, int]) -> int | None:
        """Largest position in ``body`` of an instruction reading value ``name`` (through lazy values)."""
        last = None
        frontier = [name]
        seen = set()
        while frontier:
            cur = frontier.pop()
            if cur in seen:
                continue
            seen.add(cur)
            for u in self.info.uses.get(cur, []):
                res = getattr(u.user, "result", None)
                if res is not None and res.name in self.info.lazy:
                    frontier.append(res.name)
                    continue
                found = None
                user = u.user
                while True:
                    if id(user) in pos:
                        found = pos[id(user)]
                        break
                    b, _ = self.info.where[id(user)]
                    owner = self.info.blocks[b][1]
                    if owner is None:
                        break
                    user = owner
                if found is None:
                    return len(body)        # used outside the loop body: never dead here
                last = found if last is None else max(last, found)
        return last

    def op_If(self, ins: n.If) -> None:
        results = [self._carried_buffer(v, v.name + "_res") for v in ins.results]
        cond = self.scalar(ins.cond)
        for header, body in ((f"if {cond}:", ins.then_body), ("else:", ins.else_body)):
            if not body and header == "else:":
                continue
            scope = _Scope(header)
            self.emit(scope)
            saved, self.cur = self.cur, scope.body
            try:
                yields = self.emit_body(body) or []
                if results:
                    self._write_values(results, yields)
            finally:
                self.cur = saved
        for res, buf in zip(ins.results, results):
            self._bind_result(res, buf)


def _access_widths(kernel: n.Kernel, facts: Mapping[str, Any]) -> dict[int, int]:
    """id(load/store/copy instruction) -> vector elements, from the ``vector`` pass's facts (if it ran)."""
    if not isinstance(facts, Mapping) or not facts.get("vector"):
        return {}
    try:
        from lowbit.lowering.passes.vectorize import iter_accesses
    except ImportError:  # pragma: no cover - the pass module is optional here
        return {}
    out: dict[int, int] = {}
    for key, ins in iter_accesses(kernel):
        access = facts["vector"].get(key)
        elements = getattr(access, "elements", None)
        if isinstance(elements, int) and elements > 1:
            out[id(ins)] = elements
    return out


#: most vector statements one unrolled step of a ``dot``'s K loop may expand to (code size)
UNROLL_STATEMENTS = 128
#: most K steps (or rows of an unpacked tile) unrolled at once
UNROLL_K = 16


def _word_at(words: Tile, where: Affine, q: str, lane: str) -> str:
    """The storage word (TIR text, uint32) that ``where`` names for K step ``q`` and vector lane ``lane``."""
    flat = f"{where.base} + {q} * {where.per_q} + {lane} * {where.per_lane}"
    return words.read(unflatten(flat, list(words.shape)), True)


#: the most f32 vectors of accumulators a fused GEMM (``vdpbf16ps``, lookup sums) keeps
_FUSED_DOT_ACCUMULATORS = 16
#: fewest rows of a dot that join decoded weights into bf16 pairs (``pair_dot.DecodedPairDot``): the join
#: costs two instructions per 32 weights and saves one multiply-add per row. x bf16, 4096 x 4096, 2 threads,
#: weights in cache, A/B against multiply-adds: 1 row int6 0.35 -> 0.37 ms, int7 0.35 -> 0.38, uint8 0.32 ->
#: 0.34, float8_e4m3fn and float6_e3m2 even; 2 rows int6 0.50 -> 0.43, float8_e4m3fn 0.86 -> 0.68, int8
#: 0.43 -> 0.38; 4 rows int5 0.78 -> 0.55, int6 0.80 -> 0.58, uint7 0.76 -> 0.60, float6_e3m2 0.96 -> 0.84,
#: float8_e4m3fn 1.30 -> 0.84, int8 0.67 -> 0.51 (16 rows of int8, four 4-row tiles: 2.72 -> 2.05)
_DECODED_PAIR_MIN_ROWS = 2
#: a pair nest of this many rows copies its rows' bf16 pairs of x into small buffers before the K loop
#: (:meth:`_Emitter._pair_dot_nest`), where pairs are adjacent K rows (the copy is a plain vector copy). From
#: 8 rows LLVM's SLP vectorizer computed the rows' x addresses in vector registers every step (``vpextrd``,
#: ~20 instructions per 16 ``vdpbf16ps``); staged, a step reads each pair at a constant offset. 16 x 1024 x
#: 4096 int8 x bf16, 8-row tile, one thread, weights in cache: 1.17 -> 0.95 ms. With 4 rows LLVM keeps the
#: addresses scalar and the copy costs more than it saves (int8 1.01 -> 1.04 ms).
_STAGED_X_MIN_ROWS = 8
#: private CPU buffers smaller than this stay on the stack (see :meth:`_Emitter._private_scope`)
_STACK_BUFFER_BYTES = 1024
#: the longest K period of a decoded pair dot's weights unrolled into constants (:meth:`_Emitter._register_gemm`)
_PAIR_PERIOD_LIMIT = 32
#: one accumulation in this many of a lookup of activation sums is an add, the rest multiply-adds by 1.0
#: (:meth:`_Emitter._lookup_sum_nest`). Measured on Zen 4 with weights in cache, as the fraction of
#: multiply-adds 0 / 0.25 / 0.5 / 0.75: int2 x f32 GEMV 44.1 / 38.0 / 34.8 / 34.4 us (1024 x 4096),
#: M = 4 137 / 128 / 129 / 142 us, M = 16 545 / 505 / 513 us, uint1 x bf16 GEMV 26.6 / 23.4 / 22.8 / 23.3
#: us: a half is within 2% of the best everywhere (the multiply-adds share their pipes with the building of
#: the sums, one per row of x and K group, so the best fraction falls as rows are added).
_LOOKUP_PLAIN_ADD_EVERY = 2
#: AVX-512's vector registers
_VECTOR_REGISTERS = 32


def _power_of_two_factor(value: n.Value, defs: Mapping[str, n.Instr | None]) -> tuple[n.Value, float] | None:
    """``(c, f)`` where ``value = c * f`` with ``f`` a constant power of two below 1 (the ``top`` dequant's
    ``2^(n - 32)``: ``c`` holds large integers), else None. A dot may then multiply its other operand by ``f``
    instead: the same products (bit for bit) unless an element of that operand falls below ``2^-126 / f``,
    where it rounds to a subnormal (f32 activations below 2^-98 for 4-bit codes: each product off by at most
    2^-149 |c|). Not for a factor above 1 (the ``bits`` decode's rebias), whose ``c`` may be subnormal itself."""
    ins = defs.get(value.name)
    if not isinstance(ins, n.Binary) or ins.op != "mul" or kind_of(value.dtype) != "float":
        return None
    for c, k in ((ins.lhs, ins.rhs), (ins.rhs, ins.lhs)):
        const = defs.get(k.name)
        if isinstance(const, (n.Full, n.Constant)) and isinstance(const.value, float) and 0 < const.value < 1:
            mantissa, _ = math.frexp(const.value)
            if mantissa == 0.5:
                return c, const.value
    return None


def _is_zero(value: n.Value, defs: Mapping[str, n.Instr | None]) -> bool:
    """Whether ``value`` is a tile of zeros (``full(shape, 0)``)."""
    ins = defs.get(value.name)
    return isinstance(ins, n.Full) and ins.value == 0


def _periodic(tile: Tile) -> bool:
    """Whether ``tile`` is computed on the fly with modular index or bit arithmetic (an unpack of packed
    codes: word offsets ``floormod``/``floordiv`` of the position, shift amounts), which repeats along its
    axes with a short period and folds to constants once the loops are unrolled."""
    if not isinstance(tile, ExprTile) or tile.fn is None:
        return False
    text = tile.read([f"ax{d}" for d in range(tile.rank)], True)
    return "T.floormod(" in text or "T.shift_right(" in text


def _unroll_factor(extent: int, per_step: int) -> int:
    """The largest power of two dividing ``extent``, at most :data:`UNROLL_K`, with ``u * per_step`` vector
    statements at most :data:`UNROLL_STATEMENTS`."""
    u = 1
    while u * 2 <= UNROLL_K and extent % (u * 2) == 0 and u * 2 * per_step <= UNROLL_STATEMENTS:
        u *= 2
    return u


def _k_unroll(K: int, N: int, vec: int, operands: Sequence[Tile], period: int | None = None) -> dict[int, int] | None:
    """``{1: u, 2: N / vec}``: unroll a CPU ``dot`` nest ``(M, K, N)`` by ``u`` along K, and over its vectors
    along N, when an operand is an unpack fused into the dot (:func:`_periodic`): its word offsets and shift
    amounts are periodic along K (16 steps cover a 32-code word chunk split over two vector halves) and
    differ between the vectors of a tile, so after unrolling they are constants (immediate shifts,
    constant-folded masks and code selection for codes that straddle words) instead of per-step arithmetic
    (left to LLVM, the vector loop stayed a loop for 5-7-bit codes: a sum over every word of a 5-word
    chunk per code). ``u``: :func:`_unroll_factor` with ``N / vec`` statements per step, at most ``period``
    (the unpack's proven period along K, :func:`.unpack_period.unpack_period`): steps past it fold
    nothing more, and a heavy dequant unrolled 16 x 8 times spills registers.

    >>> _k_unroll(128, 64, 16, (ExprTile((128, 64), "float32", fn=lambda i, f: f"T.floormod({i[0]}, 8)"),))
    {1: 16, 2: 4}
    """
    if not any(_periodic(t) for t in operands):
        return None
    vectors = max(1, N // max(1, vec))
    u = _unroll_factor(K, vectors)
    if period is not None:
        u = min(u, period)
    if u == 1 and period is None:
        return None
    return ({1: u} if u > 1 else {}) | {2: vectors}


def _literal_nonneg(text: str) -> bool:
    m = re.fullmatch(r"(?:T\.int32\()?(-?\d+)\)?", text)
    return bool(m) and int(m.group(1)) >= 0


# ----------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------

def emit_tvm(kernel: Any, target: Any = "cpu", *, constants: Mapping[str, Any] | None = None,
             facts: Mapping[str, Any] | None = None) -> TVMSource:
    """Generate TensorIR (TVMScript text) for ``kernel`` (a ``Kernel`` or a ``Lowered``) and ``target``.

    ``constants`` give values of unspecialized kernel constants; ``facts`` (default: the Lowered's) may
    hold ``{"vector_width": {value name: lanes}}`` to override CPU vector widths.
    """
    from lowbit.lowering.passes.manager import Lowered

    if isinstance(kernel, Lowered):
        facts = dict(kernel.facts) if facts is None else facts
        if target is None:
            target = kernel.target
        kernel = kernel.kernel
    if not isinstance(kernel, n.Kernel):
        raise CompileError(f"emit_tvm expects a lowbit.ir Kernel or a Lowered result, got {type(kernel).__name__}")
    verify(kernel)
    tgt = resolve_target(target)
    em = _Emitter(kernel, tgt, dict(constants or {}), dict(facts or {}))
    text, abi = em.run()
    used = {c.name: em.constants[c.name] for c in kernel.constants}
    return TVMSource(kernel_name=kernel.name, func_name=em.func_name, text=text, kind=tgt.kind,
                     target=dict(tgt.tvm), abi=abi, constants=used, threads=tgt.threads if tgt.cuda else 1)
