"""lowbit.ir: the tile IR — values, instructions, kernels, builder, verifier, printer/parser and the
reference interpreter. See ``lowbit/ir/README.md`` for every instruction and the builder API.

>>> from lowbit.ir import KernelBuilder, interpret
>>> import numpy as np
>>> kb = KernelBuilder("double")
>>> x = kb.tensor_param("x", "f32", ["N"])
>>> kb.set_grid("cdiv(N, 4)")
>>> off = kb.mul(kb.program_id(0), 4)
>>> kb.store(x, kb.mul(kb.load(x, [off], [4]), 2.0), [off])
>>> interpret(kb.build(), {"x": np.arange(6, dtype=np.float32)})["x"]
array([ 0.,  2.,  4.,  6.,  8., 10.], dtype=float32)
"""
from __future__ import annotations

from .builder import ForScope, IfScope, KernelBuilder
from .interpreter import InterpreterError, interpret
from .nodes import (INSTRUCTIONS, Arange, AllocShared, Barrier, Binary, Broadcast, Cast, ConstParam, Constant,
                    CopyToShared, Dot, ExpandDims, For, Full, If, Instr, Kernel, Load, LoadShared,
                    NumPrograms, Param, Permute, ProgramId, Reduce, Reshape, ScalarParam, SharedSlice, Store,
                    StoreShared, SymbolRef, TensorParam, Unary, Value, View, Where, Lookup, Yield, walk)
from .parser import parse, parse_type
from .printer import format_type, print_kernel
from .symbolic import Dim, Sym, SymOp, cdiv, parse_dim
from .types import TileType, canonical_dtype, promote, scalar
from .verifier import verify, verify_problems

__all__ = [
    "KernelBuilder", "ForScope", "IfScope", "interpret", "InterpreterError", "parse", "parse_type",
    "print_kernel", "format_type", "verify", "verify_problems", "TileType", "canonical_dtype", "promote",
    "scalar", "Dim", "Sym", "SymOp", "cdiv", "parse_dim", "walk", "INSTRUCTIONS",
    "Value", "Instr", "Constant", "ProgramId", "NumPrograms", "SymbolRef", "Full", "Arange", "Load", "Store",
    "AllocShared", "SharedSlice", "CopyToShared", "LoadShared", "StoreShared", "Barrier", "View", "Cast",
    "Unary", "Binary", "Where", "Lookup", "Dot", "Reduce", "Broadcast", "Reshape", "Permute", "ExpandDims", "Yield",
    "For", "If", "TensorParam", "ScalarParam", "ConstParam", "Param", "Kernel",
]
