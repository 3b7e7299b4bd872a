"""Pass ``select-dequant``: replace every code-typed register value by native bit arithmetic.

Code tiles may only come from ``view(native -> code)`` (what ``lower-lowbit`` emits for packed loads, or
what a kernel writes itself), from ``cast(literal -> code)`` (folded at compile time with the
interpreter's own encode), and from moves of those (``reshape``, ``permute``, ``broadcast``,
``expand_dims``, ``where``). Each such value gets a **carrier**: a ``uint32`` tile of the same shape and
layout holding the raw code bits (:func:`.dequant.emit_extract` unpacks the bitstream, including codes
that straddle words). Each ``cast(code -> native)`` becomes :func:`.dequant.emit_decode` with the method of
:func:`.dequant.select_method`: bit arithmetic (``arith``, ``magic``, ``top``, ``bits``, ``shift``) or a
lookup (``lut`` for codes of at most 4 bits, ``table`` in a register), whichever emits the fewest instructions on the
target
(``ctx.options["dequant"]`` overrides the rule; a decode whose every product is with bf16 activations may take a
larger table, :func:`.products.products_of`); integer results
go through the exact integer value. Afterwards no code type is left; if the kernel carries layouts, the
new helper tiles get theirs from :func:`.layout_inference.infer_layouts` (everything else stays pinned).
Each float decode is recorded in ``ctx.facts["decoded"]`` (value name -> code type): what the values can
be, for a backend that needs more than their dtype (TVM's CPU pair dot takes weights that bf16 holds exactly).

A ``view`` of codes as codes ``g`` times as wide (what ``lower-lowbit`` emits for bit planes) joins ``g``
carriers into one. Anything else touching codes (stores of codes, loop-carried codes, other ``view`` of
codes, encoding a run-time value) raises :class:`CompileError`.

>>> from lowbit.ir import KernelBuilder
>>> from lowbit.lowering.target import parse_target
>>> kb = KernelBuilder("k"); x = kb.tensor_param("x", "u8", ["B"]); y = kb.tensor_param("y", "f16", ["C"])
>>> kb.set_grid(1); codes = kb.view(kb.load(x, [0], [4]), "uint4")       # 4 bytes -> 8 nibbles
>>> kb.store(y, kb.cast(codes, "f16"), [0])
>>> out = lower_code_values(kb.build(), PassContext(parse_target("triton:sm_90")))
>>> sorted({ins.opcode for ins in out.walk()} - {"const", "full", "arange", "load", "store"})
['and', 'broadcast', 'cast', 'mul', 'or', 'reshape', 'shr', 'sub', 'view']
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir import numerics as num
from lowbit.ir.rules import describe
from lowbit.ir.types import is_code, kind_of, nbits_of, numpy_dtype

from ..target import register_table_entries
from .dequant import (CARRIER, LOW_BITS_METHODS, emit_decode, emit_extract, emit_int_value, forced_method,
                      select_method, spread_table)
from .manager import PassContext, register_pass
from .products import bf16_activations, products_of
from .lowbit_emit import Emitter, all_names

_MOVES = (n.Reshape, n.Permute, n.Broadcast, n.ExpandDims)

#: ``ctx.facts[DECODED]``: float value name -> the code type whose values its elements hold (a backend may
#: rely on the type's value set, e.g. that bf16 holds every value exactly; a later pass that merges or drops
#: the value only loses the fact)
DECODED = "decoded"


def _has_code(values) -> bool:
    return any(is_code(v.dtype) for v in values)


def has_layouts(kernel: n.Kernel) -> bool:
    """True when some register value of ``kernel`` carries a layout."""
    for ins in kernel.walk():
        for v in ins.outputs:
            if v.type.scope == "register" and v.type.layout is not None:
                return True
    return False


class CodeRewriter:
    """Rewrites a kernel's code-typed register values into carriers + native arithmetic."""

    def __init__(self, kernel: n.Kernel, ctx: PassContext):
        self.kernel = kernel
        self.ctx = ctx
        self.names = all_names(kernel)
        self.carrier: dict[str, n.Value] = {}
        #: code value -> a carrier whose low n bits are the code and whose higher bits are arbitrary (the
        #: extraction without its mask), for the methods that read only the low bits (``LOW_BITS_METHODS``)
        self.loose: dict[str, n.Value] = {}
        self.defs: dict[str, n.Instr] = {}
        self.mapping: dict[n.Value, n.Value] = {}
        self._activations: set[str] | None = None

    # ------------------------------------------------------------------ driver
    def run(self) -> n.Kernel:
        for p in self.kernel.tensor_params:
            if is_code(p.value.dtype):
                uses = [ins for ins in self.kernel.walk() if p.value in ins.inputs]
                if uses:
                    raise CompileError(f"{describe(uses[0])}: global tensor {p.value} still holds {p.value.dtype} "
                                       f"codes; select-dequant needs packed storage", location=uses[0].loc,
                                       hint="run the lower-lowbit pass first")
        body = self.block(self.kernel.body)
        return replace(self.kernel, body=body)

    def block(self, body: tuple[n.Instr, ...]) -> tuple[n.Instr, ...]:
        out: list[n.Instr] = []
        for ins in body:
            self.instr(ins, out)
        return tuple(out)

    def instr(self, ins: n.Instr, out: list[n.Instr]) -> None:
        ins = ins.replace_inputs(self.mapping) if self.mapping else ins
        for v in ins.outputs:
            self.defs[v.name] = ins
        touches = _has_code(ins.inputs) or _has_code(ins.outputs)
        if isinstance(ins, n.For):
            if _has_code(ins.iter_args) or touches:
                raise self._unsupported(ins, "carries low-bit codes through a loop")
            out.append(replace(ins, body=self.block(ins.body)))
            return
        if isinstance(ins, n.If):
            if touches:
                raise self._unsupported(ins, "yields low-bit codes from a branch")
            out.append(replace(ins, then_body=self.block(ins.then_body), else_body=self.block(ins.else_body)))
            return
        if not touches:
            out.append(ins)
            return
        em = Emitter(self.names, loc=ins.loc)
        self.rewrite(ins, em)
        out.extend(em.body)

    def _unsupported(self, ins: n.Instr, what: str) -> CompileError:
        return CompileError(f"{describe(ins)} {what}, which the low-bit lowering does not support", location=ins.loc,
                            hint="cast codes to a native dtype (e.g. cast(w, float16)) before this instruction")

    # ------------------------------------------------------------------ per instruction
    def rewrite(self, ins: n.Instr, em: Emitter) -> None:
        if isinstance(ins, n.View) and is_code(ins.result.dtype) and not is_code(ins.x.dtype):
            r = ins.result
            args = (em, ins.x, r.dtype, tuple(r.shape), r.type.layout)
            wide = self.ctx.target.kind == "cpu"
            self.carrier[r.name] = emit_extract(*args, name=r.name, wide=wide)
            if self._reads_low_bits(r.dtype):   # the unmasked twin (shared instructions merge in cse, unused go in dce)
                self.loose[r.name] = emit_extract(*args, name=r.name, keep_high_bits=True, wide=wide)
            return
        if isinstance(ins, n.View) and is_code(ins.result.dtype) and is_code(ins.x.dtype):
            self.carrier[ins.result.name] = self.join(ins, em)
            return
        if isinstance(ins, n.Cast) and is_code(ins.result.dtype) and not is_code(ins.x.dtype):
            self.carrier[ins.result.name] = self.fold(ins, em)
            return
        if isinstance(ins, _MOVES) and is_code(ins.result.dtype):
            c = self.carrier_of(ins.x, ins)
            self.carrier[ins.result.name] = em.emit(replace(ins.replace_inputs({ins.x: c}),
                                                            result=self._carrier_value(ins.result, em))).result
            if ins.x.name in self.loose:
                lc = self.loose[ins.x.name]
                self.loose[ins.result.name] = em.emit(replace(ins.replace_inputs({ins.x: lc}),
                                                              result=self._carrier_value(ins.result, em))).result
            return
        if isinstance(ins, n.Where) and is_code(ins.result.dtype):
            cx, cy = self.carrier_of(ins.x, ins), self.carrier_of(ins.y, ins)
            r = em.where(ins.cond, cx, cy, ins.result.type.layout, hint=ins.result.name + ".bits")
            self.carrier[ins.result.name] = r
            return
        if isinstance(ins, n.Cast) and is_code(ins.x.dtype) and not is_code(ins.result.dtype):
            self.mapping[ins.result] = self.decode(ins, em)
            return
        raise self._unsupported(ins, "uses low-bit codes")

    def _carrier_value(self, like: n.Value, em: Emitter) -> n.Value:
        return em.value(like.name + ".bits", CARRIER, like.shape, like.type.layout)

    def carrier_of(self, v: n.Value, ins: n.Instr) -> n.Value:
        if v.name not in self.carrier:
            raise self._unsupported(ins, f"uses codes {v} that come from neither a view nor a literal")
        return self.carrier[v.name]

    def join(self, ins: n.View, em: Emitter) -> n.Value:
        """``view(codes -> wider codes)``, ``g`` source codes per result code (bit planes, see
        :mod:`.packed_format`): each result carrier is the sum of its ``g`` source carriers shifted to their
        places (disjoint bits: the sum is their or)."""
        r, c = ins.result, self.carrier_of(ins.x, ins)
        ns, nd = nbits_of(ins.x.dtype), nbits_of(r.dtype)
        if nd % ns or not r.shape:
            raise self._unsupported(ins, f"views {ins.x.dtype} codes as {r.dtype} codes (not whole groups of codes)")
        g, lead, k = nd // ns, tuple(r.shape[:-1]), r.shape[-1]
        parts = em.reshape(c, lead + (k, g), hint=r.name + ".parts")
        at = em.binary("mul", em.arange(0, g, hint="part"), em.full((g,), ns, "int32"), hint="part_shift")
        parts = em.binary("shl", parts, spread_table(em, at, lead + (k, g), CARRIER, None), hint=r.name + ".parts")
        return em.reduce("sum", parts, len(lead) + 1, layout=r.type.layout, hint=r.name + ".bits")

    def fold(self, ins: n.Cast, em: Emitter) -> n.Value:
        """``cast(literal -> code)``: the code, computed now with the interpreter's own encode."""
        src = self.defs.get(ins.x.name)
        if not isinstance(src, (n.Constant, n.Full)):
            raise self._unsupported(ins, "encodes a run-time value into low-bit codes")
        literal = np.asarray(src.value).astype(numpy_dtype(ins.x.dtype))   # as the interpreter holds it
        code = int(num.cast(literal, ins.x.dtype, ins.result.dtype))
        r = ins.result
        if not r.shape:
            return em.const(code, CARRIER, hint=r.name + ".bits")
        return em.full(tuple(r.shape), code, CARRIER, r.type.layout, hint=r.name + ".bits")

    def _reads_low_bits(self, code_dtype: str) -> bool:
        """Whether a cast of ``code_dtype`` may take a method that reads only the code's low bits
        (:data:`.dequant.LOW_BITS_METHODS`: ``bits`` for floats, ``table`` by the rule or by an option)."""
        forced = forced_method(code_dtype, self.ctx.options)
        if forced is not None:
            return forced in LOW_BITS_METHODS
        return kind_of(code_dtype) == "float" or register_table_entries(self.ctx.target, "float32") > 0

    def method(self, code: str, dst: str, cast: n.Cast) -> str:
        """The decode method of ``code`` into ``dst``; a table may be larger where the decode ``cast`` meets
        only bf16 activations in its products (:func:`.target.register_table_entries`)."""
        entries = register_table_entries(self.ctx.target, dst, bf16_products=self._meets_bf16(cast))
        return select_method(code, dst, self.ctx.target.kind, self.ctx.options, entries)

    def _meets_bf16(self, cast: n.Cast) -> bool:
        if self._activations is None:
            self._activations = bf16_activations(self.kernel)
        if not self._activations:
            return False
        name = cast.result.name
        found = products_of(self.kernel, lambda ins: isinstance(ins, n.Cast) and ins.result.name == name)
        return bool(found) and all(other.name in self._activations for _, other in found)

    def decode(self, ins: n.Cast, em: Emitter) -> n.Value:
        code, dst = ins.x.dtype, ins.result.dtype
        c = self.carrier_of(ins.x, ins)
        layout = ins.result.type.layout
        kind = kind_of(dst)
        if kind == "float" or kind_of(code) not in ("int", "uint"):
            out = dst if kind == "float" else "float32"
            method = self.method(code, out, ins)
            if method in LOW_BITS_METHODS:
                c = self.loose.get(ins.x.name, c)
            v = emit_decode(em, c, code, out, method, layout)
            self.ctx.facts.setdefault(DECODED, {})[v.name] = code
        else:
            v = emit_int_value(em, c, code, layout)
        if v.dtype != dst:
            v = em.cast(v, dst, layout)
        if v.type != ins.result.type:
            raise CompileError(f"internal error: dequant of {ins.x} gave {v.type}, expected {ins.result.type}")
        return v


def lower_code_values(kernel: n.Kernel, ctx: PassContext) -> n.Kernel:
    """The rewrite behind ``select-dequant`` (also run at the end of ``lower-lowbit``)."""
    if not any(_has_code(ins.inputs) or _has_code(ins.outputs) for ins in kernel.walk()):
        return kernel
    out = CodeRewriter(kernel, ctx).run()
    if has_layouts(kernel):
        from .layout_inference import infer_layouts

        out = infer_layouts(out, ctx)
    return out


register_pass("select-dequant", "replace casts of low-bit codes (from views of native bits) by native bit "
                                "arithmetic chosen per target")(lower_code_values)

__all__ = ["lower_code_values", "CodeRewriter", "has_layouts", "DECODED"]
