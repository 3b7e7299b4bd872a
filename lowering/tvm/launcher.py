"""Build generated TensorIR and call it by parameter name, like ``lowbit.ir.interpret``.

>>> kernel = build_tvm(ir_kernel, "cpu")                                  # doctest: +SKIP
>>> kernel.launch({"x": x, "y": y, "out": out})   # doctest: +SKIP
>>> kernel.export("/tmp/vadd.so"); again = load_tvm_kernel("/tmp/vadd.so")  # doctest: +SKIP

Arguments: every kernel parameter by name; outputs are written in place. Tensors are torch tensors or
numpy arrays of the (lowered) parameter dtype and shape (bfloat16: torch bfloat16 or ``ml_dtypes.bfloat16``;
a uint16/uint32 parameter also takes int16/int32 tensors holding the same bits). Scalars are Python /
numpy numbers. Shape symbols are bound from the tensor shapes; symbols that no shape determines (e.g. the logical ``K`` of a packed
weight whose storage shape is ``cdiv(K, 64)``) come from ``shape_bindings``.

Tensors are passed to TVM without copies when they are contiguous and 64-byte aligned; others are copied
in, and copied back after the call when the kernel may write them.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from lowbit.errors import BackendError, CompileError, DTypeError
from lowbit.ir.symbolic import Sym, dim_eval
from lowbit.ir.symbolic import parse_dim as _parse_dim

from .codegen import AbiParam, TVMSource, emit_tvm, resolve_target
from .tensors import ALIGNMENT, aligned

__all__ = ["CompiledKernel", "ArgPlan", "BoundCall", "build_tvm", "load_tvm_kernel", "compile_source",
           "recording_launches", "host_work", "host_decision"]

_SIDE_CAR = ".lowbit.json"
_FORMAT = 1

#: what records this thread's launches (:func:`recording_launches`), None when nothing does
_RECORDER: contextvars.ContextVar[Any] = contextvars.ContextVar("lowbit_tvm_launch_recorder", default=None)


@contextlib.contextmanager
def recording_launches(recorder: Any) -> Iterator[None]:
    """Within the block, every kernel launch on this thread is reported to ``recorder``: ``recorder.launch(function,
    call)`` once the compiled ``function`` ran on the argument list ``call`` (calling ``function(*call)`` again
    repeats it), ``recorder.host_work(reason, transient)`` for work of a launch that such a repeat would miss (see
    :func:`host_work`) and ``recorder.host_decision(values, decide)`` for a decision it can check again (see
    :func:`host_decision`). What replays a CPU decode step records this way (:mod:`lowbit.runtime.cpu_graphs`)."""
    token = _RECORDER.set(recorder)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def host_decision(values: Sequence[Any], decide: Callable[[list[float]], bool]) -> bool:
    """``decide`` on the host of the 0-dim tensors ``values`` (computed by torch ops from a step's tensors), in a
    way a launch recorder can keep: a replay of the recorded launches computes the values again, decides again, and
    stops (to run the step anew) where the decision differs from the recorded one; without a recorder, simply
    ``decide([float(v) for v in values])``."""
    recorder = _RECORDER.get()
    if recorder is None:
        return decide([float(v) for v in values])
    return recorder.host_decision(tuple(values), decide)


def host_work(reason: str, *, transient: bool = False) -> None:
    """Tell the launch recorder, if one listens, that the caller computes on the host from tensor values
    (a host quantizer, a copy back into a numpy array): a repeat of the recorded launches alone would not do
    that work, so what was recorded must not be replayed. ``transient``: only this call needs the work (the
    values chose it, as an append that seals a page), so a later call with the same shapes may be recorded."""
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.host_work(reason, transient)


@functools.lru_cache(maxsize=4096)
def parse_dim(text: str):
    """Cached :func:`lowbit.ir.symbolic.parse_dim` (launches parse the same few dims every call)."""
    return _parse_dim(text)


def _torch_dtype(dtype: str):
    import torch

    return {"bool": torch.bool, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
            "uint8": torch.uint8, "uint16": torch.uint16, "uint32": torch.uint32, "float16": torch.float16,
            "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


_SAME_BITS = {"uint16": "int16", "uint32": "int32"}


def _numpy_dtype(dtype: str) -> np.dtype:
    from lowbit.ir.types import numpy_dtype

    return numpy_dtype(dtype)


def compile_source(source: TVMSource) -> Any:
    """Parse ``source.text`` and compile it with TVM; returns a :class:`lowbit.lowering.tvm.build.TVMKernel`."""
    from .build import build
    from .target import import_tvm

    tvm = import_tvm()
    try:
        func = tvm.script.from_source(source.text)
    except Exception as exc:  # a generator bug: show where
        raise BackendError(f"TVM could not parse the TensorIR generated for {source.kernel_name!r}: "
                           f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}",
                           hint="this is a code generator bug; the generated text is in TVMSource.text") from exc
    mod = tvm.IRModule({source.func_name: func.with_attr("global_symbol", source.func_name)})
    return build(mod, dict(source.target), entry=source.func_name)


@dataclass
class CompiledKernel:
    """A generated kernel built by TVM: ``launch(args)`` runs it; ``source`` is its TensorIR text.

    For CUDA targets the module holds the CUDA source (``cuda_source``) and there is nothing to launch on a
    machine without a GPU.
    """

    source: TVMSource
    built: Any                      # lowbit.lowering.tvm.build.TVMKernel
    _plan: Any = field(default=None, init=False, repr=False, compare=False)
    _function: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.source.text

    @property
    def name(self) -> str:
        return self.source.kernel_name

    @property
    def cuda_source(self) -> str:
        """The CUDA C++ TVM generated (CUDA targets only)."""
        from .build import cuda_source

        return cuda_source(self.built)

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None) -> Mapping[str, Any]:
        """Run the kernel on ``args`` (every parameter by name); returns ``args``. Outputs are written in place."""
        call, writeback = self._arg_plan().bind(args, shape_bindings)
        self._run(call)
        for dst, src in writeback:
            if not type(dst).__module__.startswith("torch"):
                host_work(f"kernel {self.name!r} writes an output back into a numpy array")
            _write_back(dst, src)
        return args

    __call__ = launch

    def bind(self, args: Mapping[str, Any], vary: tuple[str, ...], *,
             shape_bindings: Mapping[str, int] | None = None) -> "BoundCall":
        """Check and bind ``args`` once for repeated launches that change only the tensors named in ``vary``
        (see :class:`BoundCall`). The tensors of ``vary`` in ``args`` are examples: their dtype and shape
        are kept, not the tensors themselves."""
        call, _ = self._arg_plan().bind(args, shape_bindings)
        return BoundCall(self, {k: v for k, v in args.items() if k not in vary}, tuple(vary), shape_bindings, call)

    def _arg_plan(self) -> "ArgPlan":
        """The argument plan (built on first use); raises for kernels built for CUDA, which cannot run here."""
        if self.source.kind != "cpu":
            raise BackendError(f"kernel {self.name!r} was built for CUDA; launching it needs a GPU runtime",
                               hint="build it for 'cpu' to run here, or use its cuda_source / a cubin")
        if self._plan is None:
            self._plan = ArgPlan.of(self.source)
            self._function = getattr(self.built, "function", self.built)
        return self._plan

    def _run(self, call: list[Any]) -> None:
        try:
            self._function(*call)
        except Exception as exc:
            raise BackendError(f"running the TVM kernel {self.name!r} failed: {exc}") from exc
        recorder = _RECORDER.get()
        if recorder is not None:
            recorder.launch(self._function, list(call))

    def export(self, path: str | os.PathLike) -> Path:
        """Write a shared library, and next to it ``<path>.lowbit.json`` (the argument signature and the
        TensorIR text), which :func:`load_tvm_kernel` reads back."""
        path = Path(self.built.export(path))
        meta = {"format": _FORMAT, "kernel_name": self.source.kernel_name, "func_name": self.source.func_name,
                "kind": self.source.kind, "target": dict(self.source.target), "threads": self.source.threads,
                "constants": {k: v for k, v in self.source.constants.items()},
                "abi": [{"name": a.name, "role": a.role, "dtype": a.dtype, "abi_dtype": a.abi_dtype,
                         "dims": list(a.dims), "intent": a.intent} for a in self.source.abi],
                "text": self.source.text}
        Path(str(path) + _SIDE_CAR).write_text(json.dumps(meta, indent=1))
        return path


def build_tvm(kernel: Any, target: Any = None, *, constants: Mapping[str, Any] | None = None,
              facts: Mapping[str, Any] | None = None) -> CompiledKernel:
    """Generate TensorIR for ``kernel`` (a ``Kernel`` or ``Lowered``) and build it for ``target``
    (default: the Lowered's target, else the host CPU)."""
    from lowbit.lowering.passes.manager import Lowered

    if target is None:
        target = kernel.target if isinstance(kernel, Lowered) else "cpu"
    source = emit_tvm(kernel, resolve_target(target), constants=constants, facts=facts)
    return CompiledKernel(source, compile_source(source))


def load_tvm_kernel(path: str | os.PathLike) -> CompiledKernel:
    """Load a kernel written by :meth:`CompiledKernel.export`."""
    from .build import load_library

    path = Path(path)
    meta_path = Path(str(path) + _SIDE_CAR)
    if not meta_path.is_file():
        raise BackendError(f"{meta_path} is missing: it holds the kernel's signature",
                           hint="export kernels with CompiledKernel.export, which writes both files")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {_FORMAT}")
        abi = tuple(AbiParam(a["name"], a["role"], a["dtype"], a["abi_dtype"], tuple(a["dims"]), a["intent"])
                    for a in meta["abi"])
        source = TVMSource(kernel_name=meta["kernel_name"], func_name=meta["func_name"], text=meta["text"],
                           kind=meta["kind"], target=meta["target"], abi=abi, constants=meta["constants"],
                           threads=int(meta.get("threads", 1)))
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"{meta_path} is not a lowbit TVM kernel description: {exc}") from exc
    return CompiledKernel(source, load_library(path, entry=source.func_name))


# ----------------------------------------------------------------------------------------------------
# argument binding
# ----------------------------------------------------------------------------------------------------

def _as_torch(name: str, x: Any, dtype: str, writable: bool):
    """(tensor for TVM, (numpy destination, torch source) to copy back or None)."""
    import torch

    want = _torch_dtype(dtype)
    back = None
    if isinstance(x, np.ndarray):
        arr = x
        if dtype == "bfloat16":
            if arr.dtype != _numpy_dtype("bfloat16"):
                raise DTypeError(f"argument {name} (bf16) must hold bfloat16 values (ml_dtypes.bfloat16), got {arr.dtype}")
            t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16) \
                if arr.flags.c_contiguous and arr.flags.writeable else None
        else:
            np_want = _numpy_dtype(dtype)
            ok = arr.dtype == np_want or (dtype in _SAME_BITS and arr.dtype == np.dtype(_SAME_BITS[dtype]))
            if not ok:
                raise DTypeError(f"argument {name} must be a {np_want} array, got {arr.dtype}")
            t = torch.from_numpy(arr.view(np_want)) if arr.flags.c_contiguous and arr.flags.writeable else None
        if t is None or t.data_ptr() % ALIGNMENT:
            src = np.ascontiguousarray(arr)
            t = torch.empty(arr.shape, dtype=want)
            t.view(_same_size_int(t)).numpy()[...] = src.view(_byte_view_np(src))
            if writable:
                back = (arr, t)
        return t, back
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype != want:
            if dtype in _SAME_BITS and t.dtype == _torch_dtype(_SAME_BITS[dtype]):
                t = t.view(want)
            else:
                raise DTypeError(f"argument {name} must be a torch {want} tensor, got {t.dtype}")
        if t.device.type != "cpu":
            raise BackendError(f"argument {name} is on {t.device}; the TVM CPU kernel needs CPU tensors")
        copy = aligned(t)
        if copy is not t and writable:
            back = (x, copy)
        return copy, back
    raise BackendError(f"argument {name} must be a numpy array or torch tensor, got {type(x).__name__}")


@dataclass(frozen=True)
class _TensorArg:
    name: str
    dtype: str
    writable: bool
    dims: tuple[Any, ...]                   # parsed size expressions, one per axis
    symbols: tuple[tuple[int, str], ...]    # (axis, symbol) for the axes that are a bare symbol
    derived: tuple[tuple[int, Any], ...]    # (axis, expression) for the other axes


@dataclass(frozen=True)
class ArgPlan:
    """How a kernel's arguments become the generated function's call, worked out once per kernel (the
    ABI's size expressions parsed, the dtypes resolved), so that a launch only checks and binds.

    ``bind(args, shape_bindings)`` returns ``(call arguments, writebacks)``; it checks every argument as
    thoroughly as before (names, dtypes, ranks, every extent against every size expression) and takes
    contiguous, 64-byte aligned torch tensors of the right dtype as they are (no copy, no conversion).
    """

    kernel_name: str
    names: tuple[str, ...]
    tensors: tuple[_TensorArg, ...]
    order: tuple[tuple[str, str, str, str], ...]      # (role, name, dtype, abi_dtype) in call order
    constants: tuple[tuple[str, int], ...]

    @staticmethod
    def of(source: TVMSource) -> "ArgPlan":
        tensors = []
        for a in source.abi:
            if a.role != "tensor":
                continue
            dims = tuple(parse_dim(d) for d in a.dims)
            symbols = tuple((ax, d.name) for ax, d in enumerate(dims) if isinstance(d, Sym))
            derived = tuple((ax, d) for ax, d in enumerate(dims) if not isinstance(d, Sym))
            tensors.append(_TensorArg(a.name, a.dtype, a.intent != "in", dims, symbols, derived))
        constants = tuple((k, int(v)) for k, v in source.constants.items()
                          if isinstance(v, (int, np.integer)) and not isinstance(v, bool))
        return ArgPlan(kernel_name=source.kernel_name, names=tuple(a.name for a in source.abi if a.role != "symbol"),
                       tensors=tuple(tensors),
                       order=tuple((a.role, a.name, a.dtype, a.abi_dtype) for a in source.abi), constants=constants)

    def _check_names(self, args: Mapping[str, Any]) -> None:
        missing = [nm for nm in self.names if nm not in args]
        if missing:
            raise BackendError(f"kernel {self.kernel_name}: missing argument(s) {', '.join(missing)}",
                               hint=f"parameters are {', '.join(self.names)}")
        extra = sorted(set(args) - set(self.names))
        if extra:
            raise BackendError(f"kernel {self.kernel_name}: unknown argument(s) {', '.join(extra)}",
                               hint=f"parameters are {', '.join(self.names)}")

    def bind(self, args: Mapping[str, Any], shape_bindings: Mapping[str, int] | None = None):
        if len(args) != len(self.names) or any(nm not in args for nm in self.names):
            self._check_names(args)
        sizes: dict[str, int] = dict(self.constants)
        if shape_bindings:
            for k, v in shape_bindings.items():
                sizes[k] = int(v)
        consts = {k for k, _ in self.constants}
        bound: dict[str, Any] = {}
        writeback: list[tuple[Any, Any]] = []
        for a in self.tensors:
            t, back = _fast_torch(args[a.name], a.dtype)
            if t is None:
                t, back = _as_torch(a.name, args[a.name], a.dtype, a.writable)
            shape = t.shape
            if len(shape) != len(a.dims):
                raise BackendError(f"argument {a.name} must have rank {len(a.dims)}, got shape {tuple(shape)}")
            for ax, sym in a.symbols:
                extent = int(shape[ax])
                have = sizes.get(sym)
                if have is None:
                    sizes[sym] = extent
                elif have != extent and sym not in consts:
                    raise BackendError(f"size {sym} is {have}, but argument {a.name} has extent {extent} "
                                       f"there (shape {tuple(shape)})")
            bound[a.name] = t
            if back is not None:
                writeback.append(back)
        for a in self.tensors:
            shape = bound[a.name].shape
            for ax, dim in a.derived:
                try:
                    want = dim_eval(dim, sizes)
                except CompileError as exc:
                    raise BackendError(f"argument {a.name}: {exc.message}",
                                       hint="pass shape_bindings={...} for symbols no argument shape determines"
                                       ) from None
                if want != shape[ax]:
                    raise BackendError(f"argument {a.name} has shape {tuple(shape)}, but size "
                                       f"{a.dims[ax]} = {want}")
        call: list[Any] = []
        for role, name, dtype, abi_dtype in self.order:
            if role == "tensor":
                call.append(bound[name])
            elif role == "scalar":
                v = np.asarray(args[name]).astype(_numpy_dtype(dtype))
                if v.shape != ():
                    raise BackendError(f"argument {name} must be a scalar, got shape {v.shape}")
                call.append(bool(v) if abi_dtype == "bool" else float(v) if abi_dtype == "float64" else int(v))
            else:
                if name not in sizes:
                    raise BackendError(f"size symbol {name} is not bound by any argument shape",
                                       hint=f"pass shape_bindings={{'{name}': ...}}")
                call.append(int(sizes[name]))
        return call, writeback


class BoundCall:
    """A kernel launch whose arguments were checked and bound once (:meth:`CompiledKernel.bind`): calling it
    with the tensors named in ``vary`` runs the generated function directly when each is a contiguous, 64-byte
    aligned CPU torch tensor of the bound dtype and shape, about 1 us of Python instead of the ~15 us a full
    launch spends checking every argument and size expression. Any other argument takes the full
    :meth:`CompiledKernel.launch` (its conversions, its checks and its errors).

    Only the fixed arguments are kept (the weights of a matmul); the varying ones are not, so a plan cached
    with a weight holds no activation memory.

    >>> run = kernel.bind(dict(x=x, w=w, y=y), vary=("x", "y"))      # doctest: +SKIP
    >>> run(x=x2, y=y2)                                               # doctest: +SKIP
    """

    __slots__ = ("_kernel", "_fixed", "_vary", "_shape_bindings", "_template", "_slots", "_like", "_fallback",
                 "_inputs")

    def __init__(self, kernel: CompiledKernel, fixed: Mapping[str, Any], vary: tuple[str, ...],
                 shape_bindings: Mapping[str, int] | None, call: list[Any]) -> None:
        self._kernel = kernel
        self._fixed = dict(fixed)
        self._vary = vary
        self._shape_bindings = dict(shape_bindings) if shape_bindings else None
        position = {name: i for i, (role, name, _, _) in enumerate(kernel._plan.order) if role == "tensor"}
        unknown = [name for name in vary if name not in position]
        if unknown:
            raise BackendError(f"kernel {kernel.name}: cannot vary {', '.join(unknown)}: not a tensor parameter",
                               hint=f"tensor parameters are {', '.join(position)}")
        self._slots = tuple(position[name] for name in vary)
        writable = {a.name: a.writable for a in kernel._plan.tensors}
        self._inputs = tuple(not writable[name] for name in vary)      # read only: may be passed as a copy
        self._like = tuple((call[i].dtype, tuple(call[i].shape)) for i in self._slots)
        for i in self._slots:
            call[i] = None                       # hold no reference to the example tensors
        # a fixed tensor that was bound as a copy (unaligned, strided, or converted) would go stale when its
        # owner writes the original (a KV cache): such a binding always takes the full launch
        self._fallback = any(_data_pointer(fixed[name]) != call[i].data_ptr()
                             for name, i in position.items() if name in fixed)
        # the fixed tensors as TVM tensors sharing their memory: converted once here, not on every call
        self._template = [_tvm_view(a) for a in call]

    def __call__(self, **tensors: Any) -> None:
        if len(tensors) != len(self._vary):
            return self._full(tensors)
        torch = sys.modules["torch"]
        ordered = []
        for name, (dtype, shape) in zip(self._vary, self._like):
            t = tensors.get(name)
            if type(t) is not torch.Tensor or t.dtype != dtype or t.shape != shape or t.device.type != "cpu":
                return self._full(tensors)
            ordered.append(t)
        self.trusted(*ordered)

    def trusted(self, *tensors: Any) -> None:
        """Launch with the tensors of ``vary``, in its order, which the caller guarantees are CPU torch tensors
        of the bound dtypes and shapes (a plan's own outputs, an input whose signature was checked before).
        Only their layout is checked here: a strided or unaligned input is passed as an aligned copy (small
        tensors made from numpy arrays are often 16-byte aligned), a strided or unaligned output or a
        grad-requiring tensor takes the full launch."""
        if self._fallback:
            return self._full(dict(zip(self._vary, tensors)))
        call = self._template.copy()
        for i, t, read_only in zip(self._slots, tensors, self._inputs):
            if t.requires_grad:
                return self._full(dict(zip(self._vary, tensors)))
            if not t.is_contiguous() or t.data_ptr() % ALIGNMENT:     # aligned()'s test, inline: every launch
                if not read_only:
                    return self._full(dict(zip(self._vary, tensors)))
                t = aligned(t)
            call[i] = t
        self._kernel._run(call)

    def _full(self, tensors: Mapping[str, Any]) -> None:
        self._kernel.launch({**self._fixed, **tensors}, shape_bindings=self._shape_bindings)

    def __deepcopy__(self, memo: dict) -> "BoundCall":
        """The same launch bound to deep copies of the fixed tensors (those of the object being copied, through
        ``memo``: a copied weight's plan runs on the copy); the compiled kernel is shared."""
        torch = sys.modules["torch"]
        fixed = copy.deepcopy(self._fixed, memo)
        examples = {name: torch.empty(shape, dtype=dtype) for name, (dtype, shape) in zip(self._vary, self._like)}
        return self._kernel.bind({**fixed, **examples}, self._vary, shape_bindings=self._shape_bindings)


def _tvm_view(x: Any) -> Any:
    """A torch tensor as a ``tvm.runtime.Tensor`` over the same memory (DLPack); anything else as it is."""
    torch = sys.modules.get("torch")
    if torch is not None and type(x) is torch.Tensor:
        import tvm

        return tvm.runtime.from_dlpack(x)
    return x


def _data_pointer(x: Any) -> int | None:
    """The address of a torch tensor's or numpy array's first element (None for anything else)."""
    if isinstance(x, np.ndarray):
        return x.ctypes.data
    pointer = getattr(x, "data_ptr", None)
    return pointer() if callable(pointer) else None


def _fast_torch(x: Any, dtype: str):
    """``(x, None)`` when ``x`` is a contiguous, 64-byte aligned CPU torch tensor of ``dtype`` (or of the
    signed type with the same bits) that TVM takes as it is; ``(None, None)`` otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or type(x) is not torch.Tensor:
        return None, None
    want = _TORCH_DTYPES.get(dtype)
    if want is None:
        want = _TORCH_DTYPES.setdefault(dtype, _torch_dtype(dtype))
    if x.dtype != want:
        same = _SAME_BITS.get(dtype)
        if same is None or x.dtype != _torch_dtype(same):
            return None, None
        x = x.view(want)
    if x.device.type != "cpu" or not x.is_contiguous() or x.data_ptr() % ALIGNMENT:
        return None, None
    return (x.detach() if x.requires_grad else x), None


_TORCH_DTYPES: dict[str, Any] = {}


def _prepare(source: TVMSource, args: Mapping[str, Any], shape_bindings: Mapping[str, int] | None):
    """``(call arguments, writebacks)`` for ``args`` (see :class:`ArgPlan`; builds the plan each time)."""
    return ArgPlan.of(source).bind(args, shape_bindings)


def _same_size_int(t):
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]


def _write_back(dst: Any, src: Any) -> None:
    """Copy the kernel's view ``src`` (torch) back into the caller's array ``dst`` (numpy or torch)."""
    import torch

    if isinstance(dst, torch.Tensor):
        dst.view(_same_size_int(dst)).copy_(src.view(_same_size_int(src)))
    else:
        dst.view(_byte_view_np(dst))[...] = src.view(_same_size_int(src)).numpy().view(_byte_view_np(dst))


def _byte_view_np(a: np.ndarray) -> np.dtype:
    return np.dtype({1: np.uint8, 2: np.int16, 4: np.int32}[a.dtype.itemsize])
