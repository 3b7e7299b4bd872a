"""The ``vectorize`` pass (an analysis): the widest safe vector access for every load and store.

For each ``load`` / ``store`` / ``copy_to_shared`` of a global tensor it works out

* whether the tensor's last axis is contiguous in memory (stride 1: row-major, or a ``GlobalLayout``
  whose last stride is 1);
* how many elements each worker holds contiguously along the last axis (from the tile's register layout:
  consecutive local slots holding consecutive, run-aligned columns; without a layout, the tile's last
  extent, and ``per_worker`` is false);
* the largest power of two dividing the last-axis offset for every execution (from the sympy form of the
  offset: ``pid*64 + k`` with ``k`` stepping by 32 -> 32) and dividing the strides of the other axes
  (``K`` -> 1 unless ``ctx.options["divisibility"]`` promises more);
* the alignment of each accessed row's first element, assuming tensor base pointers aligned to
  ``ctx.options.get("base_alignment", 16)`` bytes (what Triton and TVM assume for tensor arguments);

and from these the vector width: the largest power of two dividing the contiguous run and the alignment,
at most ``target.vector_bytes``. The result is a :class:`VectorAccess` per access in
``ctx.facts["vector"]``, keyed by :func:`access_key`: the result name for a load (``"ta"``), and
``"store#0"``, ``"copy_to_shared#1"`` (the access's position among its kind, in program order) otherwise.
Divisors are powers of two, :data:`ANY` (2**30) standing for "any" (an offset that is always 0).
Code generators read it with :func:`vector_access`. The IR is not changed. With ``LOWBIT_DUMP`` (or
``ctx.options["dump_dir"]``) the facts are also written to ``vector-facts.<kernel>.txt``.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "f16", ["M", 256]); kb.set_grid("cdiv(M, 4)")
>>> t = kb.load(x, [kb.mul(kb.program_id(0), 4), 0], [4, 256], name="t")
>>> kb.store(x, t, [0, 0])
>>> from lowbit.lowering.passes.manager import PassContext
>>> from lowbit.lowering.target import parse_target
>>> ctx = PassContext(parse_target("triton:sm_90"))
>>> _ = vectorize(kb.build(), ctx)
>>> print(ctx.facts["vector"]["t"].describe())  # doctest: +NORMALIZE_WHITESPACE
%t = load(%x): f16 x 8 = 16 bytes; contiguous run 256 (tile), offset | any, strides | 256, base 16 bytes;
masked, uniform per vector
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import sympy

from lowbit.ir import nodes as n
from lowbit.ir.types import nbits_of, short_name

from .indexing import IndexAnalysis, pow2_part
from .manager import PassContext, dump_dir_from_env, register_pass

_ACCESSES = (n.Load, n.Store, n.CopyToShared)
#: the divisor recorded for an offset that is always 0 (or strides that never matter): anything divides it
ANY = 1 << 30


@dataclass(frozen=True)
class VectorAccess:
    """What a code generator needs to emit one global access with vector instructions.

    ``elements`` consecutive elements along the last axis (``bits`` bits, ``bytes`` bytes when a whole
    number of bytes) can be moved by one vector instruction per worker, starting at addresses aligned to
    ``elements * nbits`` bits. ``masked``: the access needs a predicate along the last axis (the axis may
    leave the tensor, or an explicit mask is given); ``uniform_mask``: that predicate is the same for all
    elements of each vector (so a masked vector access is exact).
    """

    key: str
    opcode: str
    tensor: str
    dtype: str
    nbits: int
    stride_one: bool
    contiguous: int
    per_worker: bool
    offset_divisor: int
    stride_divisor: int
    base_alignment: int
    alignment: int
    elements: int
    masked: bool
    uniform_mask: bool

    @property
    def bits(self) -> int:
        return self.elements * self.nbits

    @property
    def bytes(self) -> Optional[int]:
        return self.bits // 8 if self.bits % 8 == 0 else None

    def describe(self) -> str:
        """One line, e.g. ``%t = load(%x): f16 x 8 = 16 bytes; contiguous run 256 (tile), ...``."""
        head = f"%{self.key} = {self.opcode}" if self.opcode == "load" else self.key
        size = f"{self.bytes} bytes" if self.bytes is not None else f"{self.bits} bits"
        run = f"contiguous run {self.contiguous} ({'per worker' if self.per_worker else 'tile'})"
        if not self.stride_one:
            run = "last axis not contiguous (stride != 1)"
        mask = "unmasked" if not self.masked else ("masked, uniform per vector" if self.uniform_mask else "masked")
        def div(x: int) -> str:
            return str(x) if x < ANY else "any"

        return (f"{head}(%{self.tensor}): {short_name(self.dtype)} x {self.elements} = {size}; {run}, "
                f"offset | {div(self.offset_divisor)}, strides | {div(self.stride_divisor)}, "
                f"base {self.base_alignment} bytes; {mask}")


def iter_accesses(kernel: n.Kernel) -> Iterator[tuple[str, n.Instr]]:
    """``(key, instruction)`` for every global access, in program order (keys as in the module docstring)."""
    counts: dict[str, int] = {}
    for ins in kernel.walk():
        if isinstance(ins, _ACCESSES):
            yield access_key(ins, counts), ins


def access_key(ins: n.Instr, counts: dict[str, int]) -> str:
    """The fact key of ``ins``; ``counts`` numbers the accesses without a result per opcode (pass the same
    dict for one program-order walk)."""
    if isinstance(ins, n.Load):
        return ins.result.name
    i = counts.get(ins.opcode, 0)
    counts[ins.opcode] = i + 1
    return f"{ins.opcode}#{i}"


def vector_access(kernel: n.Kernel, facts: Mapping[str, Any], ins: n.Instr) -> Optional[VectorAccess]:
    """The :class:`VectorAccess` recorded for ``ins`` (an instruction of ``kernel``), if any."""
    table = facts.get("vector", {})
    for key, other in iter_accesses(kernel):
        if other is ins:
            return table.get(key)
    return None


def contiguous_run(layout: Any) -> int:
    """How many consecutive local slots of every worker hold consecutive last-axis elements, starting at a
    multiple of the run (a power of two; 1 when nothing better holds).

    >>> from lowbit.layout import local, spatial
    >>> contiguous_run(spatial(4, 8).local(1, 4)), contiguous_run(local(1, 4).spatial(4, 8))
    (4, 1)
    """
    table = np.asarray(layout.index_table())          # [workers, locals, rank]
    workers, locals_, rank = table.shape
    if rank == 0:
        return 1
    r = 1
    while r * 2 <= locals_:
        r *= 2
    while r > 1:
        if locals_ % r == 0:
            g = table.reshape(workers, locals_ // r, r, rank)
            first = g[:, :, :1, :]
            same_rows = np.all(g[..., :-1] == first[..., :-1])
            consecutive = np.all(g[..., -1] == first[..., -1] + np.arange(r))
            aligned = np.all(first[..., -1] % r == 0)
            if same_rows and consecutive and aligned:
                return r
        r //= 2
    return 1


def _strides(a: IndexAnalysis, tensor: n.Value) -> list[sympy.Expr]:
    layout = tensor.type.layout
    strides = getattr(layout, "strides", None)
    if strides is not None and len(strides) == tensor.type.rank:
        return [sympy.sympify(s) for s in strides]
    dims = [a.dim(d) for d in tensor.type.shape]
    out, acc = [], sympy.Integer(1)
    for d in reversed(dims):
        out.append(acc)
        acc = sympy.expand(acc * d)
    return out[::-1]


def analyze_access(a: IndexAnalysis, ins: n.Instr, key: str, vector_bytes: int, base_alignment: int
                   ) -> VectorAccess:
    """The :class:`VectorAccess` of one load / store / copy_to_shared."""
    if isinstance(ins, n.Load):
        tile = ins.result
    elif isinstance(ins, n.Store):
        tile = ins.value
    else:
        tile = ins.dst
    tensor = ins.tensor
    rank = tensor.type.rank
    nbits = nbits_of(tensor.dtype)
    strides = _strides(a, tensor)
    stride_one = sympy.simplify(strides[-1] - 1) == 0
    layout = tile.type.layout
    per_worker = layout is not None and hasattr(layout, "index_table") and tile.type.scope == "register"
    contiguous = contiguous_run(layout) if per_worker else int(tile.type.shape[-1])
    offset_div = pow2_part(a.divisor(a.expr_of(ins.offsets[-1])))
    stride_div = ANY
    for ax in range(rank - 1):
        if int(tile.type.shape[ax]) == 1 and a.expr_of(ins.offsets[ax]) == 0:
            continue  # this axis adds nothing to the address
        stride_div = min(stride_div, pow2_part(a.divisor(strides[ax])))
    base_elems = (base_alignment * 8) // nbits if nbits <= base_alignment * 8 else 1
    alignment = max(1, min(offset_div, stride_div, pow2_part(base_elems) if base_elems else 1))
    max_elems = max(1, (vector_bytes * 8) // nbits)
    elements = 1
    if stride_one and nbits & (nbits - 1) == 0:
        elements = max(1, min(pow2_part(contiguous), alignment, 1 << (max_elems.bit_length() - 1)))
        if elements * nbits < 8 and elements > 1:
            elements = 1  # sub-byte vectors are not addressable
    checked_last = ins.checked is None or ins.checked[-1]
    masked = ins.mask is not None or checked_last
    extent_div = pow2_part(a.divisor(a.dim(tensor.type.shape[-1])))
    uniform = ins.mask is None and (not checked_last or extent_div % elements == 0)
    return VectorAccess(key=key, opcode=ins.opcode, tensor=tensor.name, dtype=tensor.dtype, nbits=nbits,
                        stride_one=stride_one, contiguous=contiguous, per_worker=per_worker,
                        offset_divisor=offset_div, stride_divisor=stride_div, base_alignment=base_alignment,
                        alignment=alignment, elements=elements, masked=masked, uniform_mask=uniform)


def vector_facts(kernel: n.Kernel, vector_bytes: int, base_alignment: int = 16,
                 divisibility: Mapping[str, int] | None = None) -> dict[str, VectorAccess]:
    """``{key: VectorAccess}`` for every global access of ``kernel``."""
    a = IndexAnalysis(kernel, divisibility)
    return {key: analyze_access(a, ins, key, vector_bytes, base_alignment) for key, ins in iter_accesses(kernel)}


def format_vector_facts(facts: Mapping[str, VectorAccess]) -> str:
    """The facts as text, one access per line (what the dump file holds)."""
    return "\n".join(f.describe() for f in facts.values())


@register_pass("vectorize", "analysis: vector width (elements, bytes), contiguity and alignment of every global "
                            "access -> ctx.facts['vector']")
def vectorize(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    facts = vector_facts(kernel, ctx.target.vector_bytes, int(ctx.options.get("base_alignment", 16)),
                         ctx.options.get("divisibility"))
    ctx.facts["vector"] = facts
    folder = ctx.options.get("dump_dir") or dump_dir_from_env()
    if folder is not None:
        path = Path(os.fspath(folder))
        path.mkdir(parents=True, exist_ok=True)
        (path / f"vector-facts.{kernel.name}.txt").write_text(format_vector_facts(facts) + "\n")
    return kernel


__all__ = ["vectorize", "VectorAccess", "vector_facts", "vector_access", "iter_accesses", "access_key",
           "contiguous_run", "format_vector_facts", "analyze_access", "ANY"]
