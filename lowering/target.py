"""Target descriptions: what the passes need to know about the machine a kernel is compiled for.

A target names the backend ("triton" or "tvm"), the device kind ("cpu" or "cuda"), the architecture and the
facts layout inference and vectorization use: vector width, workers per program, the matrix-multiply atoms.

>>> parse_target("tvm:llvm").kind, parse_target("triton:sm_90").arch
('cpu', 'sm_90')
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from typing import Iterator

from ..errors import CompileError

TARGET_FORMS = ("triton:sm_80", "triton:sm_90", "triton:sm_100", "triton:cpu (interpreter)", "tvm:llvm",
                "tvm:cuda:sm_80", "tvm:cuda:sm_90")


@dataclass(frozen=True)
class Target:
    """A compilation target.

    ``workers`` is the number of workers per program (threads of a block on CUDA: warps * 32; on a CPU the
    SIMD lanes of one core's vector unit times the threads used). ``vector_bytes`` is the widest natural
    load per worker (16 on CUDA; the SIMD register width on CPUs).
    """

    backend: str                # "triton" | "tvm"
    kind: str                   # "cpu" | "cuda"
    arch: str | None = None     # "sm_90", or the LLVM cpu name
    vector_bytes: int = 16
    warp_size: int = 32
    num_warps: int = 4
    num_threads: int = 1        # CPU threads (TVM parallel loops)

    @property
    def compute_capability(self) -> int | None:
        if self.arch and self.arch.startswith("sm_"):
            return int(self.arch[3:])
        return None

    @property
    def workers(self) -> int:
        if self.kind == "cuda":
            return self.warp_size * self.num_warps
        return max(1, self.num_threads) * max(1, self.vector_bytes // 4)

    def __str__(self) -> str:
        if self.kind == "cuda":
            return f"{self.backend}:{'cuda:' if self.backend == 'tvm' else ''}{self.arch}"
        return f"{self.backend}:{'llvm' if self.backend == 'tvm' else 'cpu'}"


def cpu_threads() -> int:
    """Threads for CPU kernels: $LOWBIT_NUM_THREADS, else the cores available to this process."""
    explicit = os.environ.get("LOWBIT_NUM_THREADS")
    if explicit:
        return max(1, int(explicit))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: as they are), restored after it."""
    if threads is None:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """The CPU feature flags of an x86-64 host (``/proc/cpuinfo``); empty elsewhere or where it cannot tell."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return frozenset()


#: the :func:`host_cpu_flags` that lowering decisions consult (the ``host_has_*`` predicates below)
LOWERING_CPU_FLAGS = frozenset({"avx", "avx2", "avx512f", "avx512bw", "avx512_bf16"})


def host_vector_bytes() -> int:
    """The widest SIMD register of an x86-64 host by its flags: 64 with AVX-512F, 32 with AVX, else 16; 64
    where the flags cannot tell (another architecture: LLVM splits wider vectors as it must)."""
    flags = host_cpu_flags()
    if not flags:
        return 64
    return 64 if "avx512f" in flags else 32 if "avx" in flags else 16


def host_vector_registers() -> int:
    """The SIMD registers of an x86-64 host: 32 with AVX-512F, else 16 (AVX2, SSE; and where the flags cannot
    tell)."""
    return 32 if "avx512f" in host_cpu_flags() else 16


def host_vector_accumulators() -> int:
    """Vector accumulators a CPU register block may keep (a dot's row block, a matmul program's tile): half the
    host's vector registers, 16 with AVX-512 and 8 with AVX2; the rest hold the operands and the unpack's
    constants."""
    return host_vector_registers() // 2


def host_has_avx2() -> bool:
    """True on an x86-64 host whose CPU has AVX2 (``vpermps`` / ``vpermd`` of 8 lanes by a vector of indices)."""
    return "avx2" in host_cpu_flags()


def host_has_avx512() -> bool:
    """True on an x86-64 host whose CPU has AVX-512F."""
    return "avx512f" in host_cpu_flags()


def host_has_avx512_bf16() -> bool:
    """True on an x86-64 host whose CPU has AVX-512 BF16 (``vdpbf16ps``: 32 bf16 products per instruction)."""
    return {"avx512f", "avx512bw", "avx512_bf16"} <= host_cpu_flags()


def bf16_pair_dots(target: Target) -> bool:
    """Whether ``target``'s code multiplies bf16 activations by weights two K rows per ``vdpbf16ps`` (the bf16
    pair dot, ``lowering/tvm/pair_dot.py``): TVM's CPU target with 512-bit vectors on an AVX-512 BF16 host.
    Elsewhere such products are widened to f32, and the storage choices made for the pair dot (two code
    streams, no groups of rows) would only cost.

    >>> bf16_pair_dots(parse_target("triton:cpu")), bf16_pair_dots(parse_target("tvm:cuda:sm_90"))
    (False, False)
    """
    return target.backend == "tvm" and target.kind == "cpu" and target.vector_bytes >= 64 and host_has_avx512_bf16()


def register_table_entries(target: Target, dtype: str, bf16_products: bool = False) -> int:
    """Entries of a table of ``dtype`` values that ``target`` looks up with one vector instruction (0: none).

    TVM's CPU target on an AVX-512 host: 32 for 32-bit values (``vpermps`` / ``vpermd`` pick each lane's entry
    of one register by the low 4 bits of its index lane, ``vpermi2ps`` / ``vpermi2d`` of two registers by the low
    5). ``bf16_products``: the looked-up values are multiplied by bf16 activations, which TVM's CPU code does
    in bf16 pairs on an AVX-512 BF16 host (``lowering/tvm/pair_dot.py``): there the table is held as bf16,
    and ``vpermi2w`` picks from 64 entries of two registers by the low 6 bits. On an AVX2 host (256-bit
    vectors): 8 (the 8-lane ``vpermps`` / ``vpermd``, by the low 3 bits). Elsewhere 0 (a ``lookup`` still
    works, as a gather or select tree).

    >>> register_table_entries(parse_target("triton:sm_90"), "float32")
    0
    """
    if target.backend != "tvm" or target.kind != "cpu" or dtype not in ("float32", "int32", "uint32"):
        return 0
    if target.vector_bytes >= 64 and host_has_avx512():
        return 64 if bf16_products and dtype == "float32" and bf16_pair_dots(target) else 32
    if target.vector_bytes >= 32 and host_has_avx2():
        return 8
    return 0


def parse_target(text: str) -> Target:
    """Parse a target string such as ``tvm:llvm``, ``triton:sm_90``, ``tvm:cuda:sm_90``, ``triton:cpu``."""
    parts = text.strip().lower().split(":")
    backend = parts[0]
    rest = parts[1:]
    if backend == "triton" and len(rest) == 1:
        if rest[0] == "cpu":
            return Target("triton", "cpu", None, vector_bytes=16, num_threads=1)
        if rest[0].startswith("sm_") and rest[0][3:].isdigit():
            return Target("triton", "cuda", rest[0])
    if backend == "tvm" and rest == ["llvm"]:
        return Target("tvm", "cpu", None, vector_bytes=host_vector_bytes(), num_threads=cpu_threads())
    if backend == "tvm" and len(rest) == 2 and rest[0] == "cuda" and rest[1].startswith("sm_"):
        return Target("tvm", "cuda", rest[1])
    raise CompileError(f"unknown target {text!r}", hint="valid targets: " + ", ".join(TARGET_FORMS))
