"""What ``lowbit bench`` measures: shapes, batch rows, weight types, backends and run settings.

Selections come from the command line as comma-separated lists; each parser checks its input and raises
:class:`lowbit.LowbitError` saying what was expected. ``--quick`` picks a small subset
(:data:`QUICK`); options given explicitly win over it.

>>> parse_shapes("4096x4096,11008x4096")
((4096, 4096), (11008, 4096))
>>> parse_types("i4,u3,f4e2m1")
('int4', 'uint3', 'float4_e2m1')
>>> parse_ints("1,4,16", "--m")
(1, 4, 16)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lowbit.device import parse_device
from lowbit.errors import LowbitError

__all__ = ["LLAMA_SHAPES", "DEFAULT_M", "DEFAULT_TYPES", "DEFAULT_ACT_DTYPES", "CUDA_ACT_DTYPES", "ACT_DTYPES",
           "KERNEL_BACKENDS", "TARGET_SHAPE", "TARGET_THREADS", "KernelSettings", "DecodeSettings", "QUICK",
           "parse_shapes", "parse_ints", "parse_types", "parse_act_dtypes", "parse_backends", "parse_device",
           "default_backends", "default_act_dtypes"]

#: (N, K) of the linear layers of Llama-family models: attention / MLP of Llama-2-7B, Llama-3-8B's MLP
LLAMA_SHAPES: tuple[tuple[int, int], ...] = ((4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096))
DEFAULT_M: tuple[int, ...] = (1, 4, 16)
DEFAULT_TYPES: tuple[str, ...] = ("int2", "int3", "int4", "int5", "int6", "int7", "int8",
                                  "uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "uint8",
                                  "float4_e2m1", "float6_e3m2", "float8_e4m3fn")
#: activation dtypes lowbit's kernels are timed with: float32, and bfloat16 as LLM serving runs (the dtype of
#: the torch bf16 and int4 baselines' activations)
DEFAULT_ACT_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
ACT_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
#: backends ``lowbit.ops.matmul`` takes by name
KERNEL_BACKENDS: tuple[str, ...] = ("tvm", "triton", "interpret")
#: activation dtypes on a CUDA device, where LLM serving runs in half precision
CUDA_ACT_DTYPES: tuple[str, ...] = ("float16", "bfloat16")
#: the configuration the project's performance targets are stated for
TARGET_SHAPE = (4096, 4096)
TARGET_THREADS = 2


def default_backends(device: str = "cpu") -> tuple[str, ...]:
    """lowbit's performance backend for ``device``: TVM on a CPU (Triton there is only an interpreter), Triton on
    a CUDA GPU.

    >>> default_backends(), default_backends("cuda")
    (('tvm',), ('triton',))
    """
    return ("triton",) if device == "cuda" else ("tvm",)


def default_act_dtypes(device: str = "cpu") -> tuple[str, ...]:
    """Activation dtypes timed by default: float32 and bfloat16 on a CPU, float16 and bfloat16 on a GPU."""
    return CUDA_ACT_DTYPES if device == "cuda" else DEFAULT_ACT_DTYPES


@dataclass(frozen=True)
class KernelSettings:
    """The kernel benchmark's selection (see ``lowbit bench --help``)."""

    shapes: tuple[tuple[int, int], ...] = LLAMA_SHAPES
    ms: tuple[int, ...] = DEFAULT_M
    types: tuple[str, ...] = DEFAULT_TYPES
    backends: tuple[str, ...] = field(default_factory=default_backends)
    act_dtypes: tuple[str, ...] = DEFAULT_ACT_DTYPES  # activations of lowbit's kernels (x and the output)
    group_size: int = 128
    repeats: int = 20
    cold: bool = True             # rotate weight copies so every call reads weights from DRAM
    flush_bytes: int | None = None  # bytes the rotation spans (None: 3x the last-level cache, >= 64 MiB)
    seed: int = 0
    check_rows: int = 256         # output rows checked against the fp64 reference before timing
    device: str = "cpu"           # "cpu" or "cuda[:N]" (weights, activations and kernels all live there)


@dataclass(frozen=True)
class DecodeSettings:
    """The decode benchmark's selection."""

    model: str = "1b"                                   # a preset of lowbit.bench.decode.PRESETS
    types: tuple[str, ...] = ("int8", "int4", "int3", "int2")
    backends: tuple[str, ...] = field(default_factory=default_backends)
    activations: tuple[str, ...] = DEFAULT_ACT_DTYPES  # the runtime's linear inputs (Engine activations=...)
    group_size: int = 128
    new_tokens: int = 32
    prompt_tokens: int = 16
    repeats: int = 3
    kv: str = "float16"
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class QuickSubset:
    """What ``--quick`` changes (options given explicitly override it)."""

    shapes: tuple[tuple[int, int], ...] = ((4096, 4096),)
    ms: tuple[int, ...] = (1,)
    types: tuple[str, ...] = ("int2", "int3", "int4", "float4_e2m1")
    repeats: int = 10
    decode_model: str = "small"
    decode_types: tuple[str, ...] = ("int4",)
    decode_tokens: int = 8
    decode_repeats: int = 2


QUICK = QuickSubset()


def _items(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise LowbitError(f"{flag} needs at least one value; got {text!r}", hint=f"e.g. {flag} " + {
            "--shapes": "4096x4096,11008x4096", "--m": "1,4,16", "--types": "int4,uint4,float4_e2m1",
        }.get(flag, "a,b"))
    return items


def parse_shapes(text: str, flag: str = "--shapes") -> tuple[tuple[int, int], ...]:
    """``"4096x4096,11008x4096"`` (N x K of the weight), or ``"llama"`` / ``"all"`` for :data:`LLAMA_SHAPES`."""
    if str(text).strip().lower() in ("llama", "all"):
        return LLAMA_SHAPES
    shapes = []
    for item in _items(text, flag):
        parts = item.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise LowbitError(f"{flag}: {item!r} is not a weight shape NxK of positive integers",
                              hint="write shapes as N x K of the [N, K] weight, e.g. 4096x4096,11008x4096")
        shapes.append((int(parts[0]), int(parts[1])))
    return tuple(dict.fromkeys(shapes))


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers."""
    values = []
    for item in _items(text, flag):
        if not item.isdigit() or int(item) < 1:
            raise LowbitError(f"{flag}: expected positive integers separated by commas; got {item!r}",
                              hint=f"e.g. {flag} 1,4,16")
        values.append(int(item))
    return tuple(dict.fromkeys(values))


def parse_types(text: str, flag: str = "--types") -> tuple[str, ...]:
    """Weight types (1-8 bits; aliases such as ``i4``, ``f4e2m1`` accepted) as canonical names, or ``"all"``."""
    from lowbit.dtypes import dtype

    if str(text).strip().lower() == "all":
        return DEFAULT_TYPES
    names = []
    for item in _items(text, flag):
        d = dtype(item)  # DTypeError (a LowbitError) with suggestions for unknown names
        if d.nbits > 8:
            raise LowbitError(f"{flag}: {d.name} is not a 1-8 bit weight type",
                              hint="use e.g. int4, uint3, float4_e2m1, float8_e4m3fn")
        if d.nbits == 1 and d.kind == "int":
            raise LowbitError(f"{flag}: {d.name} cannot be quantized symmetrically (two levels, one of them 0)",
                              hint="use uint1 (quantized with zero points)")
        names.append(d.name)
    return tuple(dict.fromkeys(names))


def parse_kv(text: str, flag: str = "--decode-kv") -> str:
    """A KV cache type: ``float16``, ``bfloat16``, ``float32`` or a 1-8 bit type (aliases accepted).

    >>> parse_kv("u8"), parse_kv("f16")
    ('uint8', 'float16')
    """
    from lowbit.dtypes import dtype

    d = dtype(text.strip())  # DTypeError (a LowbitError) with suggestions for unknown names
    if d.nbits > 8 and d.name not in ("float16", "bfloat16", "float32"):
        raise LowbitError(f"{flag}: {d.name} cannot hold a KV cache", hint="e.g. --decode-kv f16, u8 or i4")
    return d.name


def parse_act_dtypes(text: str, flag: str = "--x-dtypes") -> tuple[str, ...]:
    """Activation dtypes (``float32``, ``bfloat16``, ``float16``; ``f32``, ``bf16``, ``f16`` accepted).

    >>> parse_act_dtypes("bf16,f32")
    ('bfloat16', 'float32')
    """
    from lowbit.dtypes import dtype

    names = []
    for item in _items(text, flag):
        name = dtype(item).name  # DTypeError (a LowbitError) with suggestions for unknown names
        if name not in ACT_DTYPES:
            raise LowbitError(f"{flag}: {item!r} is not an activation dtype; expected one of {', '.join(ACT_DTYPES)}",
                              hint="e.g. --x-dtypes float32,bfloat16")
        names.append(name)
    return tuple(dict.fromkeys(names))


def parse_backends(text: str, flag: str = "--backends") -> tuple[str, ...]:
    """lowbit backends to time: a subset of :data:`KERNEL_BACKENDS` (``"all"`` for every one)."""
    if str(text).strip().lower() == "all":
        return KERNEL_BACKENDS
    names = []
    for item in _items(text, flag):
        if item.lower() not in KERNEL_BACKENDS:
            raise LowbitError(f"{flag}: unknown backend {item!r}; expected one of {', '.join(KERNEL_BACKENDS)}",
                              hint="'tvm' is lowbit's CPU backend; 'triton' runs under Triton's interpreter on a "
                                   "CPU; 'interpret' is lowbit's reference interpreter (slow)")
        names.append(item.lower())
    return tuple(dict.fromkeys(names))
