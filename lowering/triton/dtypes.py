"""How the tile IR's native dtypes appear in generated Triton code and at its launch boundary.

Every native IR dtype has a *register* dtype (what a tile of it is in the generated code) and a *memory*
dtype (the element type of a pointer to it). They agree except for ``bfloat16``: bf16 tiles are carried as
``tl.float32`` values that hold exactly representable bf16 numbers (re-rounded after every instruction with
an explicit round-to-nearest-even helper). That is what the IR means (bf16 ops compute in f32 and round),
and it keeps the code correct under Triton's interpreter, whose bf16 arithmetic and f32 -> bf16 casts are
wrong. Loads upcast right away; stores narrow a value that is already exact.

>>> register_tl("bfloat16"), memory_tl("bfloat16"), signature_type("float16", pointer=True)
('tl.float32', 'tl.bfloat16', '*fp16')
"""
from __future__ import annotations

from typing import Any

from lowbit.errors import CompileError
from lowbit.ir.types import NATIVE, is_code, kind_of, nbits_of

__all__ = ["TL_NAMES", "SIGNATURE_NAMES", "check_native", "memory_tl", "register_tl", "signature_type",
           "torch_dtype", "uint_tl", "int_range"]

#: IR dtype -> the ``tl`` dtype of memory and of (non-bf16) registers
TL_NAMES: dict[str, str] = {
    "bool": "tl.int1", "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "uint8": "tl.uint8",
    "uint16": "tl.uint16", "uint32": "tl.uint32", "float16": "tl.float16", "bfloat16": "tl.bfloat16",
    "float32": "tl.float32",
}

#: IR dtype -> Triton signature type name (ahead-of-time compilation)
SIGNATURE_NAMES: dict[str, str] = {
    "bool": "i1", "int8": "i8", "int16": "i16", "int32": "i32", "uint8": "u8", "uint16": "u16",
    "uint32": "u32", "float16": "fp16", "bfloat16": "bf16", "float32": "fp32",
}


def check_native(dtype: str, where: str) -> None:
    """Raise :class:`CompileError` for a low-bit code type (the Triton backend only emits native dtypes)."""
    if is_code(dtype):
        raise CompileError(
            f"the Triton backend cannot emit {where} of low-bit code type {dtype}: code types only exist "
            f"before lowering", hint="run the lower-lowbit pass first (and select-dequant for code tiles made "
                                     "with view): lowbit.lowering.passes.run_passes(kernel, target) runs both "
                                     "and turns packed low-bit tensors into uint8/uint16/uint32 storage")
    if dtype not in NATIVE:  # pragma: no cover - canonical names are native or code types
        raise CompileError(f"unknown dtype {dtype!r} in {where}")


def memory_tl(dtype: str) -> str:
    """The ``tl`` element type of a pointer to ``dtype`` (``'tl.bfloat16'`` for bf16)."""
    return TL_NAMES[dtype]


def register_tl(dtype: str) -> str:
    """The ``tl`` dtype a register tile of IR ``dtype`` has in generated code (bf16 -> ``tl.float32``)."""
    return "tl.float32" if dtype == "bfloat16" else TL_NAMES[dtype]


def uint_tl(nbits: int) -> str:
    """The unsigned ``tl`` type of a bit width (8, 16, 32)."""
    return {8: "tl.uint8", 16: "tl.uint16", 32: "tl.uint32"}[nbits]


def int_range(dtype: str) -> tuple[int, int]:
    """The value range of an integer dtype."""
    nb = nbits_of(dtype)
    if kind_of(dtype) == "int":
        return -(1 << (nb - 1)), (1 << (nb - 1)) - 1
    return 0, (1 << nb) - 1


def signature_type(dtype: str, *, pointer: bool) -> str:
    """The Triton signature type of a pointer to / a scalar of ``dtype`` (``'*fp16'``, ``'i32'``).

    Scalars narrower than 32 bits travel as ``i32`` (and ``float16``/``bfloat16`` as ``fp32``, holding an
    exactly representable value); the kernel narrows them on entry.
    """
    if pointer:
        return "*" + SIGNATURE_NAMES[dtype]
    if dtype == "bool":
        return "i1"
    if kind_of(dtype) == "float":
        return "fp32"
    return "u32" if dtype == "uint32" else "i32"


def torch_dtype(dtype: str) -> Any:
    """The torch dtype of tensors holding IR ``dtype`` values (``torch.bfloat16``, ``torch.uint32``...)."""
    import torch

    return {
        "bool": torch.bool, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
        "uint8": torch.uint8, "uint16": torch.uint16, "uint32": torch.uint32, "float16": torch.float16,
        "bfloat16": torch.bfloat16, "float32": torch.float32,
    }[dtype]
