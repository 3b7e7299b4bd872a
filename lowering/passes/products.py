"""Which products a kernel's low-bit weights meet: what the storage format (``lower-lowbit``) and the decode
(``select-dequant``) are chosen for.

A weight tile is *followed* from where it starts (the loads of a tensor parameter, or one decode) through
element-wise work (casts, arithmetic, broadcasts, reshapes) to the products (``dot``, ``mul``) it is an
operand of; past a reduction (``dot``, ``sum``) a value no longer counts as the weights, so scaling a dot
product by scales is not such a product.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("k"); w = kb.tensor_param("w", "int3", [4, 8]); x = kb.tensor_param("x", "bf16", [1, 4])
>>> y = kb.tensor_param("y", "f32", [1, 8])
>>> xf = kb.cast(kb.load(x, [0, 0], [1, 4]), "f32")
>>> kb.store(y, kb.dot(xf, kb.cast(kb.load(w, [0, 0], [4, 8]), "f32")), [0, 0])
>>> k = kb.build()
>>> [(ins.opcode, list(other.shape)) for ins, other in code_products(k, "w")], meets_bf16_product(k, "w")
([('dot', [1, 4])], True)
"""
from __future__ import annotations

from typing import Callable

from lowbit.ir import nodes as n


def products_of(kernel: n.Kernel, starts: Callable[[n.Instr], bool]) -> list[tuple[n.Instr, n.Value]]:
    """The products of ``kernel`` with an operand computed element-wise from the results of the instructions
    for which ``starts`` holds, each with its other operand."""
    followed: set[str] = set()
    found: list[tuple[n.Instr, n.Value]] = []
    for ins in kernel.walk():
        operands = ((ins.a, ins.b) if isinstance(ins, n.Dot) else
                    (ins.lhs, ins.rhs) if isinstance(ins, n.Binary) and ins.op == "mul" else None)
        if operands is not None and (operands[0].name in followed) != (operands[1].name in followed):
            found.append((ins, operands[1] if operands[0].name in followed else operands[0]))
        r = getattr(ins, "result", None)
        if r is None:
            continue
        if starts(ins) or (not isinstance(ins, (n.Dot, n.Reduce)) and any(v.name in followed for v in ins.inputs)):
            followed.add(r.name)
    return found


def code_products(kernel: n.Kernel, param: str) -> list[tuple[n.Instr, n.Value]]:
    """The products of ``kernel`` (``dot``, or ``mul``) with an operand computed element-wise from loads of
    tensor ``param``, each with its other operand."""
    return products_of(kernel, lambda ins: isinstance(ins, n.Load) and ins.tensor.name == param)


def bf16_activations(kernel: n.Kernel) -> set[str]:
    """The values of ``kernel`` that are a bf16 tile cast up to f32, through broadcasts, reshapes and
    permutes: the activations of the bf16 pair dot (``lowering/tvm/pair_dot.py``)."""
    found: set[str] = set()
    views = (n.Broadcast, n.ExpandDims, n.Reshape, n.Permute)
    for ins in kernel.walk():
        r = getattr(ins, "result", None)
        if r is not None and ((isinstance(ins, n.Cast) and r.dtype == "float32"
                               and (ins.x.dtype == "bfloat16" or ins.x.name in found))
                              or (isinstance(ins, views) and ins.x.name in found)):
            found.add(r.name)
    return found


def meets_bf16_product(kernel: n.Kernel, param: str) -> bool:
    """Whether some product of ``kernel`` (:func:`code_products`) multiplies the codes of tensor ``param`` by
    bf16 activations (:func:`bf16_activations`)."""
    activations = bf16_activations(kernel)
    return any(other.name in activations for _, other in code_products(kernel, param))


def single_row_products(kernel: n.Kernel, param: str) -> bool:
    """Whether the codes of tensor ``param`` meet products, all of them ``dot(a, codes)`` with one row of
    ``a`` (a GEMV's tile)."""
    products = code_products(kernel, param)
    return bool(products) and all(isinstance(ins, n.Dot) and other is ins.a and tuple(other.shape[:1]) == (1,)
                                  for ins, other in products)


__all__ = ["products_of", "code_products", "bf16_activations", "meets_bf16_product", "single_row_products"]
