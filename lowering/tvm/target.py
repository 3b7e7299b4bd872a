"""TVM targets for lowbit: the host CPU (LLVM with the native ``mcpu``) and NVIDIA GPUs (CUDA source).

TVM is imported lazily (``import tvm`` costs ~3-5 s): call :func:`import_tvm` inside functions.

Facts this module encodes (TVM 0.27):
- A plain ``"llvm"`` target is generic x86-64 and several times slower; the host target must name the CPU
  (``{"kind": "llvm", "mcpu": "znver4"}``), which enables its vector ISA (AVX-512 here: 512-bit vectors).
- LLVM names the host CPU by its family and model, and ``mcpu`` alone enables every feature of that model. A
  virtual machine may hide some of them: a Zen 4 VM whose hypervisor masks AVX-512 is still ``znver4``, and its
  code then dies on the first AVX-512 instruction (SIGILL). The host target therefore also turns off, by
  ``mattr``, each feature of the model the running CPU does not report (LLVM's host feature query,
  :func:`host_cpu`).
- TVM's CPU thread pool sizes itself from ``TVM_NUM_THREADS`` (else ``OMP_NUM_THREADS``), else from *half*
  the hardware threads on x86 ("ignore hyper-threading"): on a 2-core machine without SMT that is **1
  thread**. :func:`import_tvm` therefore sets ``TVM_NUM_THREADS`` to the usable core count unless the user
  set either variable. The pool is per calling Python thread and created on first parallel launch.
- After each parallel launch TVM's pool workers spin in ``sched_yield`` for ``TVM_THREAD_POOL_SPIN_COUNT``
  iterations (default 300000: ~150 ms at ~0.5 us a yield here) before they sleep. A worker yielding on a core
  starves the OpenMP workers of torch's next parallel op: torch's bf16 and int4 GEMV took 8 ms instead of
  0.44 ms while lowbit's kernels ran every few ms. :func:`import_tvm` sets :data:`SPIN_COUNT` (~1 ms, longer
  than the gaps between the kernels of a decode step, so those launches still find the workers awake)
  unless the user set the variable.

>>> cpu_target_dict()                                   # doctest: +SKIP
{'kind': 'llvm', 'mcpu': 'znver4', 'num-cores': 2}
>>> cuda_target_dict("sm_90")
{'kind': 'cuda', 'arch': 'sm_90'}
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

from lowbit.errors import BackendError

__all__ = ["import_tvm", "usable_cores", "HostCPU", "host_cpu", "cpu_target_dict", "cpu_target",
           "cuda_target_dict", "cuda_target", "as_target", "is_cuda_target", "num_threads", "set_num_threads"]

_ARCH_RE = re.compile(r"^sm_(\d{2,3})([af]?)$")
#: ``TVM_THREAD_POOL_SPIN_COUNT`` unless the user set it (see the module doc)
SPIN_COUNT = 2000


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def import_tvm() -> ModuleType:
    """``import tvm`` once, after making TVM's thread pool use every usable core and spin only briefly after a
    launch (see the module doc); BackendError if missing."""
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(usable_cores())
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(SPIN_COUNT))
    try:
        import tvm
        import tvm.s_tir  # noqa: F401  (schedules)
        import tvm.tirx  # noqa: F401  (IR)
    except ImportError as exc:
        raise BackendError(f"the TVM backend needs apache-tvm >= 0.27 ({exc})",
                           hint="pip install 'apache-tvm>=0.27'") from exc
    return tvm


@dataclass(frozen=True)
class HostCPU:
    """What LLVM (through TVM) knows about the machine we run on.

    ``mcpu`` is LLVM's CPU name (``znver4``, ``sapphirerapids``...), ``vector_bits`` the widest vector
    register the code may use, ``cores`` the cores this process may use, ``features`` LLVM's names of the
    features the code may use (``avx512f``, ``avx512bf16``, ``amx-tile``...): the model's, less ``disabled``,
    those of the model this CPU does not report (a virtual machine's masked AVX-512, say).
    """

    mcpu: str
    triple: str
    vector_bits: int
    cores: int
    features: frozenset[str] = field(repr=False)
    disabled: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def mattr(self) -> list[str]:
        """The LLVM ``mattr`` list that turns :attr:`disabled` off (``["-avx512f", ...]``)."""
        return ["-" + name for name in sorted(self.disabled)]

    @property
    def vector_bytes(self) -> int:
        return self.vector_bits // 8

    def lanes(self, dtype_bits: int) -> int:
        """Vector lanes of a ``dtype_bits``-wide element (e.g. 16 f32 lanes with 512-bit vectors)."""
        return max(1, self.vector_bits // dtype_bits)

    def has(self, *features: str) -> bool:
        """True when every named LLVM feature is present."""
        return all(f in self.features for f in features)


def _reported_absent(tvm: ModuleType) -> frozenset[str] | None:
    """The LLVM features the running CPU reports absent (LLVM's host query: CPUID on x86), or None where LLVM
    cannot tell."""
    try:
        found = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")()
    except Exception:  # noqa: BLE001  (a TVM without the query: trust the model name)
        return None
    return frozenset(str(name) for name, present in dict(found).items() if not bool(present)) if found else None


def _vector_bits(features: frozenset[str], triple: str, llvm_width: int) -> int:
    """The widest vector the features allow on x86 (LLVM reports the model's width whatever ``mattr`` says).

    >>> _vector_bits(frozenset({"avx", "avx2"}), "x86_64-pc-linux-gnu", 512)
    256
    """
    if not triple.startswith(("x86_64", "i386", "i686")):
        return llvm_width
    allowed = 512 if "avx512f" in features else 256 if "avx" in features else 128
    return min(llvm_width, allowed)


@functools.cache
def host_cpu() -> HostCPU:
    """The host CPU as LLVM sees it, less the features the CPU does not report (cached; see the module doc)."""
    tvm = import_tvm()
    codegen = tvm.target.codegen
    mcpu = str(codegen.llvm_get_system_cpu())
    triple = str(codegen.llvm_get_system_triple())
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    model = frozenset(str(f) for f in codegen.llvm_get_cpu_features(target))
    disabled = model & (_reported_absent(tvm) or frozenset())
    features = model - disabled
    return HostCPU(mcpu=mcpu, triple=triple, cores=usable_cores(), features=features, disabled=disabled,
                   vector_bits=_vector_bits(features, triple, int(codegen.llvm_get_vector_width(target))))


def cpu_target_dict(mcpu: str | None = None, cores: int | None = None) -> dict[str, Any]:
    """The LLVM target dict for this CPU (or ``mcpu``, all of its features), with ``num-cores`` (defaults: the
    host's); for this CPU, ``mattr`` turns off the model's features it does not report."""
    extra: dict[str, Any] = {}
    if mcpu is None:
        host = host_cpu()
        mcpu = host.mcpu
        if host.disabled:
            extra["mattr"] = host.mattr
    else:
        tvm = import_tvm()
        if not tvm.target.codegen.llvm_is_valid_cpu(mcpu, host_cpu().triple):
            raise BackendError(f"LLVM does not know the CPU {mcpu!r}",
                               hint=f"this machine is {host_cpu().mcpu!r}; omit mcpu to use it")
    n = usable_cores() if cores is None else int(cores)
    if n < 1:
        raise BackendError(f"cores must be >= 1, got {cores!r}")
    return {"kind": "llvm", "mcpu": mcpu, "num-cores": n, **extra}


def cpu_target(mcpu: str | None = None, cores: int | None = None) -> Any:
    """:func:`cpu_target_dict` as a ``tvm.target.Target``."""
    return import_tvm().target.Target(cpu_target_dict(mcpu, cores))


def _check_arch(arch: str) -> str:
    text = str(arch).strip().lower()
    if text.isdigit():
        text = f"sm_{text}"
    match = _ARCH_RE.match(text)
    if not match or int(match.group(1)) < 70:
        raise BackendError(f"unknown CUDA architecture {arch!r}; expected e.g. 'sm_80', 'sm_90', 'sm_90a', 'sm_100'")
    return text


def cuda_target_dict(arch: str = "sm_90") -> dict[str, Any]:
    """The CUDA target dict for ``arch`` (``sm_80``, ``sm_90``, ``sm_90a``, ``sm_100``...)."""
    return {"kind": "cuda", "arch": _check_arch(arch)}


def cuda_target(arch: str = "sm_90") -> Any:
    """:func:`cuda_target_dict` as a ``tvm.target.Target`` (its host is the default LLVM target)."""
    return import_tvm().target.Target(cuda_target_dict(arch))


def as_target(target: Any) -> Any:
    """A ``tvm.target.Target`` from a Target, a target dict, ``"cpu"``/``"host"``, ``"cuda"`` or ``"sm_XX"``."""
    tvm = import_tvm()
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, Mapping):
        try:
            return tvm.target.Target(dict(target))
        except Exception as exc:
            raise BackendError(f"invalid TVM target {dict(target)!r}: {exc}") from exc
    if isinstance(target, str):
        text = target.strip().lower()
        if text in ("cpu", "host", "llvm"):
            return cpu_target()
        if text == "cuda":
            return cuda_target()
        if text.startswith("sm_") or text.startswith("cuda:"):
            return cuda_target(text.split(":", 1)[-1])
    raise BackendError(f"cannot make a TVM target from {target!r}",
                       hint="use 'cpu', 'cuda', 'sm_90', a target dict or a tvm.target.Target")


def is_cuda_target(target: Any) -> bool:
    """True when the target (anything :func:`as_target` takes) generates CUDA code."""
    return str(as_target(target).kind.name) == "cuda"


def num_threads() -> int:
    """Threads TVM's CPU pool uses for parallel loops launched from the calling Python thread."""
    tvm = import_tvm()
    return int(tvm.get_global_func("runtime.NumThreads")())


def set_num_threads(n: int) -> int:
    """Use ``n`` threads for TVM parallel loops launched from this Python thread; returns the count in effect.

    The count cannot exceed the pool size fixed at TVM start-up (``TVM_NUM_THREADS``, see the module doc).
    Reconfiguring the pool makes TVM pin the calling thread to cores (with ``n = 1``, to a single core, which
    torch's threads then inherit); the caller's CPU affinity is restored afterwards, so only TVM's own parallel
    loops change.
    """
    if not isinstance(n, int) or n < 1:
        raise BackendError(f"thread count must be an int >= 1, got {n!r}")
    tvm = import_tvm()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        tvm.get_global_func("runtime.config_threadpool")(1, n)  # 1 = kBig: the default affinity mode
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    return num_threads()
