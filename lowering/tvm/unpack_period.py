"""How far along an axis an unpacked operand repeats: the K unroll a CPU ``dot`` needs.

A ``dot`` whose weight operand is unpacked on the fly (shifts and masks of storage words) is unrolled along
K so that the shift amounts and word offsets become constants. Unrolling further than their period only
adds code: with a heavy dequant (float8's ``bits`` decode with its NaN test) 16 steps x 8 vectors of
statements spill registers, and 4096 x 4096 float8_e4m3fn GEMV takes 1.29 ms instead of 0.71 at 4 steps.

:func:`unpack_period` proves the period from the IR: it follows the operand back through element moves
and same-shape elementwise instructions to an unsigned tile made of storage bits, whose bit provenance
(:func:`lowbit.ir.interpreter.bit_origins`) says where every element's bits come from; the period is the
smallest step ``p`` after which every element's bits come from the same bit offsets of words a constant
distance further on.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k")
>>> w = kb.tensor_param("w", "u32", [16])
>>> words = kb.broadcast_to(kb.expand_dims(kb.load(w, [0], [16]), 0), [16, 16])     # column j: word j
>>> bit = kb.binary("and", kb.mul(kb.arange(0, 16), kb.full([16], 8, "i32")), kb.full([16], 31, "i32"))
>>> shift = kb.broadcast_to(kb.expand_dims(kb.cast(bit, "u32"), 1), [16, 16])      # row k: byte k % 4
>>> value = kb.cast(kb.binary("and", kb.binary("shr", words, shift), kb.full([16, 16], 255, "u32")), "f32")
>>> defs = {ins.result.name: ins for ins in kb.build().body if hasattr(ins, "result")}
>>> unpack_period(value, defs, axis=0), unpack_period(value, defs, axis=1)
(4, 1)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from lowbit.ir import nodes as n
from lowbit.ir.interpreter import ZERO_BIT, bit_origins, element_origins
from lowbit.ir.types import nbits_of

__all__ = ["unpack_period"]

#: most instructions followed back from the operand to its storage bits
_MAX_STEPS = 16


def _constant(v: n.Value, defs: Mapping[str, n.Instr | None]) -> bool:
    """Whether ``v`` is a constant, or views / casts / moves of one."""
    ins = defs.get(v.name)
    while isinstance(ins, (n.View, n.Cast, n.Broadcast, n.Reshape, n.ExpandDims, n.Permute)):
        ins = defs.get(ins.x.name)
    return isinstance(ins, (n.Full, n.Constant))


def _invariant(v: n.Value, flat: np.ndarray, defs: Mapping[str, n.Instr | None], axis: int) -> bool:
    """Whether operand ``v`` takes one element for all positions along ``axis`` of the traced value (``flat``:
    the value's elements -> ``v``'s): e.g. a zero point broadcast over K, which repeats with any period."""
    found = element_origins(v, defs)
    if found is None:
        return False
    at = found[1].reshape(-1)[flat]
    return bool(np.all(at == np.take(at, [0], axis=axis)))


def _bits_of(value: n.Value, defs: Mapping[str, n.Instr | None], axis: int) -> tuple[np.ndarray, int] | None:
    """For each element of ``value``: the storage bits its value is computed from (``[*shape, bits]``, see
    :func:`bit_origins`), following element moves and same-shape elementwise instructions (taking the
    operand that is neither a constant, nor a bool tile, nor the same along ``axis``) back to an unsigned
    tile of storage bits; and the bits of one storage word."""
    found = element_origins(value, defs)
    if found is None:
        return None
    root, flat = found
    cur = root
    for _ in range(_MAX_STEPS):
        if cur.dtype.startswith("uint"):
            bits = bit_origins(cur, defs)
            if bits is not None and isinstance(defs.get(bits[0].name), n.Load):     # storage, not a leaf
                table = bits[1].reshape(-1, bits[1].shape[-1])
                return table[flat.reshape(-1)].reshape(*flat.shape, -1), nbits_of(bits[0].dtype)
        ins = defs.get(cur.name)
        if ins is None or isinstance(ins, (n.Load, n.Reduce, n.Dot, n.For)):
            return None
        shape = tuple(cur.type.shape)
        operands = [v for v in ins.inputs if tuple(v.type.shape) == shape and v.dtype != "bool"
                    and not _constant(v, defs) and not _invariant(v, flat, defs, axis)]
        if len(operands) != 1:
            return None
        cur = operands[0]
    return None


def unpack_period(value: n.Value, defs: Mapping[str, n.Instr | None], axis: int, limit: int = 16) -> int | None:
    """The smallest power of two ``p <= limit`` dividing ``value``'s extent along ``axis`` such that element
    ``i + p`` (along ``axis``) takes its bits from the same offsets of words a constant distance after
    element ``i``'s, for every ``i``; None when ``value`` is not traced to storage bits or no such ``p``
    exists."""
    found = _bits_of(value, defs, axis)
    if found is None:
        return None
    bits, word_bits = found
    bits = np.moveaxis(bits, axis, 0)
    extent = bits.shape[0]
    p = 1
    while p <= min(limit, extent):
        if extent % p == 0:
            if p == extent:
                return p
            here, there = bits[:-p], bits[p:]
            zero = here == ZERO_BIT
            if np.array_equal(zero, there == ZERO_BIT):
                diff = np.where(zero, 0, there - here)
                live = diff[~zero]
                if live.size == 0 or (np.all(live == live[0]) and live[0] % word_bits == 0):
                    return p
        p *= 2
    return None
