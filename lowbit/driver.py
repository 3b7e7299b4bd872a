"""The compile driver: tile IR -> passes -> a backend's kernel, cached, with checked launches.

``compile_ir(kernel, target)`` runs the target's pass pipeline, builds the result with the target's backend
and returns a :class:`CompiledKernel`. Builds are cached in memory (per process) and, for backends that can
save what they build, on disk (:mod:`lowbit.cache`, keyed by the lowered IR's text, the target, the options,
the host CPU where native code depends on it, and the toolchain versions). Lowering passes are cheap and always
re-run, so host-side objects such as the packed weight formats (``param_formats``) never need to be serialized.

Backends register themselves in :data:`BACKENDS` (see :func:`register_backend`); ``interpret`` (the reference
interpreter, :func:`lowbit.ir.interpret`) is always there.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("double"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid("cdiv(N, 4)")
>>> off = kb.mul(kb.program_id(0), 4); kb.store(x, kb.mul(kb.load(x, [off], [4]), 2.0), [off])
>>> import torch; t = torch.arange(6.0)
>>> compile_ir(kb.build(), "interpret").launch({"x": t}); t.tolist()
[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
"""
from __future__ import annotations

import copy
import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from .errors import BackendError, CompileError, KernelArgumentError
from .ir import Kernel, print_kernel
from .ir.nodes import ScalarParam, TensorParam
from .ir.symbolic import Sym, dim_eval, dim_str, dim_symbols
from .ir.types import numpy_dtype, short_name


class Built(Protocol):
    """What a backend returns: generated source text and a launcher taking every parameter by name."""

    source: str

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None) -> Any: ...


@dataclass(frozen=True)
class BackendSpec:
    """A backend: how to build a lowered kernel, and optionally how to save/load the build for the disk cache.

    ``build(lowered) -> Built``; ``save(built, folder) -> meta`` writes files into ``folder``;
    ``load(folder, meta, lowered) -> Built`` rebuilds the launcher from them. ``host() -> JSON-able`` (optional):
    what of this machine a build depends on beyond the target, e.g. the CPU whose instructions native code
    uses; it joins the disk-cache key, so that a cache folder shared by machines of different CPUs never hands
    one of them code for the other (an illegal instruction, not an error).
    """

    name: str
    build: Callable[[Any], Built]
    save: Callable[[Built, Path], Mapping[str, Any]] | None = None
    load: Callable[[Path, Mapping[str, Any], Any], Built] | None = None
    available: Callable[[], bool] = lambda: True
    host: Callable[[], Any] | None = None


#: (backend name, device kind) -> spec; the target's backend and kind select one. The built-in backends are
#: registered at the end of this module (their toolchains are imported only when a kernel is built).
BACKENDS: dict[tuple[str, str], BackendSpec] = {}


def register_backend(backend: str, kind: str, spec: BackendSpec) -> None:
    """Register ``spec`` for targets of ``backend`` ("tvm", "triton", "interpret") on ``kind`` ("cpu"/"cuda")."""
    BACKENDS[(backend, kind)] = spec


# ---------------------------------------------------------------------------------------------------------
# the reference interpreter as a backend
# ---------------------------------------------------------------------------------------------------------
def to_numpy(value: Any) -> Any:
    """A numpy view of a CPU torch tensor (bf16 as ml_dtypes.bfloat16), sharing memory; others unchanged."""
    module = type(value).__module__
    if module.startswith("torch"):
        import torch

        if value.device.type != "cpu":
            raise KernelArgumentError(f"the reference interpreter runs on the CPU; got a tensor on {value.device}",
                                      hint="use backend='triton' on a GPU, or move the tensors with .cpu()")
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            return value.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return value.detach().numpy()
    return value


@dataclass
class InterpretedKernel:
    """Runs a kernel with :func:`lowbit.ir.interpret`; outputs are written into the caller's tensors."""

    kernel: Kernel
    source: str = ""

    def __post_init__(self) -> None:
        self.source = print_kernel(self.kernel)

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None) -> None:
        from .ir import interpret

        interpret(self.kernel, {name: to_numpy(value) for name, value in args.items()},
                  shape_bindings=shape_bindings)


register_backend("interpret", "cpu", BackendSpec("interpret", lambda lowered: InterpretedKernel(lowered.kernel)))


# ---------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------
def resolve_target(target: Any = None, *, device: str = "cpu") -> Any:
    """A :class:`~lowbit.lowering.target.Target` from a string, a Target, a backend name or None.

    ``None`` picks the best available for ``device``: Triton for CUDA tensors, TVM on the CPU.
    Backend names alone: ``"tvm"`` (CPU: ``tvm:llvm``; CUDA: ``tvm:cuda:sm_XX``), ``"triton"`` (CUDA: the
    device's ``sm_XX``; CPU: Triton's interpreter), ``"interpret"`` (lowbit's reference interpreter).
    """
    from .lowering.target import Target, parse_target

    if isinstance(target, Target):
        return target
    if target == "interpret":
        return Target("interpret", "cpu")
    if target is None:
        target = "triton" if device.startswith("cuda") else "tvm"
    if target in ("tvm", "triton"):
        if device.startswith("cuda"):
            import torch

            major, minor = torch.cuda.get_device_capability(device)
            arch = f"sm_{major}{minor}"
            return parse_target(f"tvm:cuda:{arch}" if target == "tvm" else f"triton:{arch}")
        return parse_target("tvm:llvm" if target == "tvm" else "triton:cpu")
    if isinstance(target, str):
        return parse_target(target)
    raise CompileError(f"a target must be a string or a Target; got {type(target).__name__}")


# ---------------------------------------------------------------------------------------------------------
# compiled kernels
# ---------------------------------------------------------------------------------------------------------
_TORCH_DTYPES = {"bool": "bool", "int8": "int8", "int16": "int16", "int32": "int32", "uint8": "uint8",
                 "uint16": "uint16", "uint32": "uint32", "float16": "float16", "bfloat16": "bfloat16",
                 "float32": "float32"}


def torch_dtype(ir_dtype: str) -> Any:
    """The torch dtype holding an IR dtype's values (code types: their codes, as uint8)."""
    import torch

    return getattr(torch, _TORCH_DTYPES.get(ir_dtype, "uint8"))


@dataclass
class CompiledKernel:
    """A kernel ready to launch: the specialized IR, its lowering and the backend's build."""

    kernel: Kernel
    lowered: Any
    target: Any
    built: Built
    from_disk_cache: bool = False
    #: where argument tensors must live: "cuda" for CUDA targets, else "cpu" (set it to run a GPU target's
    #: source through an interpreter on CPU tensors)
    device: str = ""

    def __post_init__(self) -> None:
        if not self.device:
            self.device = "cuda" if self.target.kind == "cuda" else "cpu"

    @property
    def source(self) -> str:
        """The generated code (Triton Python, TensorIR text, or IR text for the interpreter)."""
        source = self.built.source
        return source if isinstance(source, str) else source.text

    @property
    def param_formats(self) -> Mapping[str, Any]:
        """Storage formats of parameters the passes re-laid out (packed low-bit weights): name -> format."""
        return self.lowered.param_formats

    @property
    def params(self) -> tuple[Any, ...]:
        """The parameters the launcher takes, as lowered (packed parameters have their storage dtype/shape)."""
        return self.lowered.kernel.params

    def check_args(self, args: Mapping[str, Any], shape_bindings: Mapping[str, int] | None = None) -> None:
        """Raise :class:`KernelArgumentError` for a missing/extra argument or a wrong dtype, rank, device or
        shape. ``shape_bindings`` are size symbols given explicitly (see :meth:`launch`)."""
        kernel = self.lowered.kernel
        names = [p.name for p in kernel.params]
        missing = [name for name in names if name not in args]
        extra = sorted(set(args) - set(names))
        if missing or extra:
            problem = "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                              extra and f"unknown {', '.join(extra)}"]))
            raise KernelArgumentError(f"kernel {kernel.name}: {problem}",
                                      hint=f"it takes {', '.join(names)}")
        sizes: dict[str, int] = {name: int(value) for name, value in (shape_bindings or {}).items()}
        for param in kernel.params:
            value = args[param.name]
            ttype = param.value.type
            if isinstance(param, ScalarParam):
                if not isinstance(value, (int, float, bool)) and getattr(value, "shape", None) not in ((), None):
                    raise KernelArgumentError(f"kernel {kernel.name}: argument {param.name} must be a scalar "
                                              f"({short_name(ttype.dtype)}); got {type(value).__name__}")
                continue
            self._check_tensor(kernel.name, param, value, sizes)
        for param in kernel.tensor_params:
            shape = tuple(args[param.name].shape)
            for extent, dim in zip(shape, param.value.type.shape):
                if not isinstance(dim, Sym):
                    env = {**self._constants(), **sizes}
                    if not dim_symbols(dim) <= set(env):
                        continue  # a symbol only the launcher's own binding rules determine
                    expected = dim_eval(dim, env)
                    if expected != extent:
                        raise KernelArgumentError(
                            f"kernel {kernel.name}: argument {param.name} has shape {list(shape)}, but its "
                            f"size {dim_str(dim)} is {expected} here")

    def _constants(self) -> dict[str, Any]:
        return {c.name: c.value for c in self.lowered.kernel.constants if c.value is not None}

    def _check_tensor(self, kernel_name: str, param: TensorParam, value: Any, sizes: dict[str, int]) -> None:
        ttype = param.value.type
        module = type(value).__module__
        where = f"kernel {kernel_name}: argument {param.name}"
        if module.startswith("torch"):
            want = torch_dtype(ttype.dtype)
            if value.dtype != want:
                raise KernelArgumentError(f"{where} must be a {want} tensor ({short_name(ttype.dtype)}); "
                                          f"got {value.dtype}",
                                          hint="packed low-bit parameters take the storage from "
                                               "param_formats[name].pack(codes)" if param.name in
                                          self.param_formats else None)
            device = value.device.type
            if device != self.device:
                raise KernelArgumentError(f"{where} is on {value.device}, but the kernel was compiled for "
                                          f"{self.target} ({self.device})",
                                          hint=f"move it with .to('{self.device}') or pick another backend")
        elif module.startswith("numpy"):
            if self.device != "cpu":
                raise KernelArgumentError(f"{where} is a numpy array; {self.target} needs CUDA torch tensors")
            want = numpy_dtype(ttype.dtype)
            if value.dtype != want:
                raise KernelArgumentError(f"{where} must be a {want} array ({short_name(ttype.dtype)}); "
                                          f"got {value.dtype}")
        else:
            raise KernelArgumentError(f"{where} must be a torch tensor or numpy array; got {type(value).__name__}")
        if len(value.shape) != ttype.rank:
            raise KernelArgumentError(f"{where} must have rank {ttype.rank} "
                                      f"({'x'.join(dim_str(d) for d in ttype.shape)}); got shape {list(value.shape)}")
        for extent, dim in zip(value.shape, ttype.shape):
            if isinstance(dim, Sym) and dim.name not in self._constants():
                if dim.name in sizes and sizes[dim.name] != extent:
                    raise KernelArgumentError(f"{where} has {dim.name} = {extent}, but an earlier argument "
                                              f"has {dim.name} = {sizes[dim.name]}")
                sizes[dim.name] = int(extent)

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None,
               check: bool = True) -> None:
        """Run the kernel; outputs are written into the given tensors.

        ``shape_bindings`` gives size symbols that no argument's shape determines by itself (e.g. ``K`` of a
        packed weight stored as ``[cdiv(K, 64), ...]`` when no other argument has a ``K`` axis)."""
        if check:
            self.check_args(args, shape_bindings)
        if shape_bindings:
            self.built.launch(args, shape_bindings=shape_bindings)
        else:
            self.built.launch(args)

    def __call__(self, **args: Any) -> None:
        self.launch(args)

    def bind(self, args: Mapping[str, Any], vary: tuple[str, ...], *,
             shape_bindings: Mapping[str, int] | None = None, check: bool = True) -> Callable[..., None]:
        """A launcher for repeated calls that change only the tensors named in ``vary``: ``args`` are checked
        (with ``check``) and bound once; ``run(**{name: tensor for name in vary})`` launches. Tensors passed
        later must match the examples in ``args`` (dtype, shape, device); backends with a fast path (TVM on
        the CPU, native Triton on CUDA) then skip all per-call checks, and take the full way for anything else.
        ``run.trusted(*tensors)`` (in ``vary``'s order) is for callers that guarantee dtype, shape and device
        themselves: the fast path then checks only the memory layout.

        >>> run = kernel.bind(dict(x=x, w=w, y=y), vary=("x", "y"))   # doctest: +SKIP
        >>> run(x=x2, y=y2)                                           # doctest: +SKIP
        """
        if check:
            self.check_args(args, shape_bindings)
        fast = getattr(self.built, "bind", None)
        bound = fast(args, tuple(vary), shape_bindings=shape_bindings) if fast is not None else None
        if bound is not None:
            return bound
        return _BoundLaunch(self.built, {k: v for k, v in args.items() if k not in vary}, tuple(vary),
                            dict(shape_bindings) if shape_bindings else None)


@dataclass(frozen=True)
class _BoundLaunch:
    """:meth:`CompiledKernel.bind` for backends without a fast path: the fixed arguments merged with each
    call's tensors into the backend's own launch. A deep copy binds deep copies of the fixed tensors (the
    compiled kernel is shared)."""

    built: Any
    fixed: Mapping[str, Any]
    vary: tuple[str, ...]
    shape_bindings: Mapping[str, int] | None

    def __call__(self, **tensors: Any) -> None:
        if self.shape_bindings:
            self.built.launch({**self.fixed, **tensors}, shape_bindings=self.shape_bindings)
        else:
            self.built.launch({**self.fixed, **tensors})

    def trusted(self, *tensors: Any) -> None:
        """The launch with the tensors of ``vary`` given in its order (the fast-path backends check less)."""
        self(**dict(zip(self.vary, tensors)))

    def __deepcopy__(self, memo: dict) -> "_BoundLaunch":
        return _BoundLaunch(self.built, copy.deepcopy(dict(self.fixed), memo), self.vary, self.shape_bindings)


# ---------------------------------------------------------------------------------------------------------
# compiling
# ---------------------------------------------------------------------------------------------------------
_MEMORY_CACHE: dict[tuple, CompiledKernel] = {}
_LOCK = threading.Lock()


def _specialize(kernel: Kernel, constants: Mapping[str, Any] | None) -> Kernel:
    """Bind constant values in the kernel's ConstParams (unknown names are an error)."""
    if not constants:
        return kernel
    from dataclasses import replace

    known = {c.name for c in kernel.constants}
    unknown = sorted(set(constants) - known)
    if unknown:
        raise CompileError(f"kernel {kernel.name} has no constant(s) {', '.join(unknown)}",
                           hint=f"its constants are {', '.join(sorted(known)) or '(none)'}")
    new = tuple(replace(c, value=constants[c.name]) if c.name in constants else c for c in kernel.constants)
    return replace(kernel, constants=new)


def compile_ir(kernel: Kernel, target: Any = None, *, constants: Mapping[str, Any] | None = None,
               options: Mapping[str, Any] | None = None, passes: Sequence[str] | None = None,
               device: str = "cpu", disk_cache: bool = True, dump_dir: str | None = None) -> CompiledKernel:
    """Compile ``kernel`` for ``target`` (see :func:`resolve_target`); cached in memory and on disk."""
    target = resolve_target(target, device=device)
    kernel = _specialize(kernel, constants)
    options = dict(options or {})
    ir_text = print_kernel(kernel)
    memo_key = (hashlib.sha256(ir_text.encode()).hexdigest(), str(target), repr(target),
                tuple(sorted((k, repr(v)) for k, v in options.items())), tuple(passes) if passes else None)
    with _LOCK:
        hit = _MEMORY_CACHE.get(memo_key)
    if hit is not None:
        return hit
    spec = BACKENDS.get((target.backend, target.kind))
    if spec is None:
        raise BackendError(f"no backend for {target}",
                           hint="available: " + ", ".join(f"{b}:{k}" for b, k in sorted(BACKENDS)))
    if not spec.available():
        raise BackendError(f"the {target.backend} backend is not usable here for {target}",
                           hint="install its toolchain, or pick another backend")
    lowered = _lower(kernel, target, options, passes, dump_dir)
    built, from_disk = _build(spec, lowered, target, options, disk_cache)
    compiled = CompiledKernel(kernel=kernel, lowered=lowered, target=target, built=built, from_disk_cache=from_disk)
    with _LOCK:
        _MEMORY_CACHE[memo_key] = compiled
    return compiled


def _lower(kernel: Kernel, target: Any, options: Mapping[str, Any], passes: Sequence[str] | None,
           dump_dir: str | None) -> Any:
    from .lowering.passes import Lowered, run_passes

    if target.backend == "interpret" and passes is None:
        return Lowered(kernel=kernel, target=target, param_formats={}, facts={})
    return run_passes(kernel, target, passes, options=options, dump_dir=dump_dir)


def _build(spec: BackendSpec, lowered: Any, target: Any, options: Mapping[str, Any],
           disk_cache: bool) -> tuple[Built, bool]:
    if not disk_cache or spec.save is None or spec.load is None:
        return spec.build(lowered), False
    from .cache import CompileCache, make_key

    parts = {"ir": print_kernel(lowered.kernel), "target": repr(target), "options": options}
    if spec.host is not None:
        parts["host"] = spec.host()
    key = make_key(parts)
    holder: dict[str, Built] = {}

    def build(folder: Path) -> Mapping[str, Any]:
        built = spec.build(lowered)
        holder["built"] = built
        meta = dict(spec.save(built, folder) or {})
        meta.setdefault("kernel_name", lowered.kernel.name)
        meta.setdefault("target", str(target))
        return meta

    entry = CompileCache().get_or_build(key, build)
    if "built" in holder:
        return holder["built"], False
    return spec.load(entry.path, entry.meta, lowered), True


def clear_memory_cache() -> None:
    """Forget every in-process compiled kernel (the disk cache is untouched)."""
    with _LOCK:
        _MEMORY_CACHE.clear()


# ---------------------------------------------------------------------------------------------------------
# built-in backends (their toolchains load when a kernel is first built)
# ---------------------------------------------------------------------------------------------------------
def _build_triton(lowered: Any) -> Built:
    from .lowering.triton import build_triton

    mode = "native" if lowered.target.kind == "cuda" else "interpret"
    return build_triton(lowered, lowered.target, mode=mode)


@functools.cache          # an installed toolchain does not come or go while a process runs
def _triton_usable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


register_backend("triton", "cpu", BackendSpec("triton", _build_triton, available=_triton_usable))
register_backend("triton", "cuda", BackendSpec("triton", _build_triton, available=_triton_usable))


def _build_tvm(lowered: Any) -> Built:
    from .lowering.tvm import build_tvm

    return build_tvm(lowered, lowered.target)


def _save_tvm(built: Any, folder: Path) -> Mapping[str, Any]:
    built.export(folder / "kernel.so")
    return {"library": "kernel.so"}


def _load_tvm(folder: Path, meta: Mapping[str, Any], lowered: Any) -> Built:
    from .lowering.tvm import load_tvm_kernel

    return load_tvm_kernel(folder / meta.get("library", "kernel.so"))


def _tvm_cpu_host() -> dict[str, Any]:
    """The CPU a TVM CPU build is for: LLVM's name and features (what the code may use) and the host flags the
    lowering consults (what it chose; :func:`lowbit.lowering.target.host_cpu_flags`)."""
    from .lowering.target import LOWERING_CPU_FLAGS, host_cpu_flags
    from .lowering.tvm.target import host_cpu

    cpu = host_cpu()
    return {"mcpu": cpu.mcpu, "triple": cpu.triple, "llvm-features": sorted(cpu.features),
            "flags": sorted(host_cpu_flags() & LOWERING_CPU_FLAGS)}


@functools.cache
def _tvm_usable() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("tvm") is not None
    except ImportError:  # pragma: no cover
        return False


register_backend("tvm", "cpu", BackendSpec("tvm", _build_tvm, _save_tvm, _load_tvm, available=_tvm_usable,
                                            host=_tvm_cpu_host))
register_backend("tvm", "cuda", BackendSpec("tvm", _build_tvm, available=_tvm_usable))
