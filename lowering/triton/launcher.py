"""Build generated Triton kernels and launch them with torch tensors, by parameter name.

:func:`build_triton` emits the source (:mod:`.codegen`), loads it with :mod:`.runner` (natively with CUDA,
else under Triton's interpreter, for lowbit's kernels only) and returns a :class:`TritonKernel`. Its
:meth:`TritonKernel.launch` takes the same arguments as :func:`lowbit.ir.interpret` (every parameter by
name; tensors of the parameter's dtype and logical / lowered shape, written in place; scalars as numbers),
binds shape symbols from the tensors' shapes, passes strides, evaluates the grid and launches.

>>> k = build_triton(kernel)                                   # doctest: +SKIP
>>> k.launch({"x": x, "y": y, "out": out})                    # doctest: +SKIP
>>> print(k.source.text)                                       # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import warnings
from typing import Any, Iterator, Mapping

import numpy as np

from lowbit.errors import BackendError, CompileError
from lowbit.ir import nodes as n
from lowbit.ir.symbolic import Sym, dim_eval, dim_str
from lowbit.ir.types import numpy_dtype, short_name

from ..target import Target, parse_target
from . import runner
from .codegen import TritonSource, emit_triton
from .dtypes import torch_dtype

__all__ = ["ArgumentError", "TritonKernel", "TritonBoundCall", "build_triton", "bind_sizes", "scalar_value"]

_INT32_SPAN = 1 << 31


class ArgumentError(BackendError, ValueError):
    """Arguments that do not fit a kernel's parameters (missing, wrong dtype / rank / size / device)."""


def scalar_value(name: str, value: Any, dtype: str) -> bool | int | float:
    """A scalar argument converted exactly as :func:`lowbit.ir.interpret` binds it (ints wrap, floats round
    to the dtype once), as the Python number the generated kernel receives."""
    if hasattr(value, "detach"):  # a torch tensor
        if value.numel() != 1:
            raise ArgumentError(f"argument {name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.detach().cpu().item()
    arr = np.asarray(value)
    if arr.shape != ():
        raise ArgumentError(f"argument {name} must be a scalar, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ArgumentError(f"argument {name} ({short_name(dtype)}) must be a number, got {type(value).__name__}")
    converted = arr.astype(numpy_dtype(dtype))
    if dtype == "bool":
        return bool(converted)
    if dtype in ("float16", "bfloat16", "float32"):
        return float(converted.astype(np.float32))
    return int(converted)


def bind_sizes(kernel: n.Kernel, tensors: Mapping[str, Any], constants: Mapping[str, Any],
               shape_bindings: Mapping[str, int] | None) -> dict[str, int]:
    """Shape symbols bound from tensor shapes (and ``shape_bindings``), checked for consistency, plus the
    constants' values. Raises :class:`ArgumentError` naming the disagreeing argument."""
    sizes: dict[str, Any] = dict(constants)
    for name, value in (shape_bindings or {}).items():
        sizes[name] = int(value)
    for p in kernel.tensor_params:
        shape = tuple(tensors[p.name].shape)
        for d, extent in zip(p.value.type.shape, shape):
            if isinstance(d, Sym):
                if d.name in sizes and sizes[d.name] != extent:
                    raise ArgumentError(f"size {d.name} is {sizes[d.name]}, but argument {p.name} has extent "
                                        f"{extent} there (shape {shape})")
                sizes[d.name] = extent
    for p in kernel.tensor_params:
        shape = tuple(tensors[p.name].shape)
        for d, extent in zip(p.value.type.shape, shape):
            if not isinstance(d, Sym):
                try:
                    want = dim_eval(d, sizes)
                except CompileError as exc:
                    raise ArgumentError(f"argument {p.name}: {exc.message}", hint=exc.hint) from None
                if want != extent:
                    raise ArgumentError(f"argument {p.name} has shape {shape}, but size {dim_str(d)} = {want}")
    missing = [s for s in kernel.shape_symbols() if s not in sizes]
    if missing:
        raise ArgumentError(f"size symbol(s) {', '.join(missing)} of kernel {kernel.name} have no value",
                            hint="pass shape_bindings={...} for symbols no tensor shape determines")
    return sizes


@contextlib.contextmanager
def _quiet_numpy() -> Iterator[None]:
    """The interpreter computes padding / masked-off lanes too: keep numpy from warning about them."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


class TritonKernel:
    """A generated Triton kernel ready to launch (see :func:`build_triton`).

    ``source`` is the :class:`~lowbit.lowering.triton.codegen.TritonSource`; ``kernel`` the IR it came from;
    ``mode`` ``"native"`` or ``"interpret"``; ``param_formats`` the packed formats of a lowered kernel's
    parameters (host repack), empty for a plain kernel.
    """

    def __init__(self, kernel: n.Kernel, target: Target, source: TritonSource, mode: str, *,
                 param_formats: Mapping[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
                 fp_fusion: bool = False):
        self.kernel = kernel
        self.target = target
        self.source = source
        self.mode = mode
        self.param_formats = dict(param_formats or {})
        self.cache_dir = cache_dir
        self.fp_fusion = fp_fusion
        self._wide: TritonSource | None = None
        self.module = runner.load(source.text, mode=mode, name=kernel.name, cache_dir=cache_dir)

    def __repr__(self) -> str:
        return f"TritonKernel({self.kernel.name!r}, mode={self.mode!r}, target={str(self.target)!r})"

    @property
    def interpreted(self) -> bool:
        return self.mode == "interpret"

    def _constants(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        given = dict(given or {})
        out: dict[str, Any] = {}
        for c in self.kernel.constants:
            if c.name in given:
                value = given.pop(c.name)
                if c.value is not None and value != c.value:
                    raise ArgumentError(f"constant {c.name} is specialized to {c.value!r}, got {value!r}")
            elif c.value is not None:
                value = c.value
            else:
                raise ArgumentError(f"constant {c.name} of kernel {self.kernel.name} has no value",
                                    hint="pass constants={...} to launch")
            out[c.name] = scalar_value(c.name, value, c.dtype)
        if given:
            raise ArgumentError(f"unknown constant(s) {', '.join(sorted(given))}",
                                hint=f"constants are {', '.join(c.name for c in self.kernel.constants) or 'none'}")
        return out

    def _check_tensors(self, args: Mapping[str, Any]) -> None:
        import torch

        names = [p.name for p in self.kernel.params]
        missing = [p for p in names if p not in args]
        if missing:
            raise ArgumentError(f"kernel {self.kernel.name}: missing argument(s) {', '.join(missing)}")
        extra = sorted(set(args) - set(names))
        if extra:
            raise ArgumentError(f"kernel {self.kernel.name}: unknown argument(s) {', '.join(extra)}",
                                hint=f"parameters are {', '.join(names)}")
        for p in self.kernel.tensor_params:
            t = args[p.name]
            want = torch_dtype(p.value.dtype)
            if not isinstance(t, torch.Tensor):
                raise ArgumentError(f"argument {p.name} must be a torch tensor, got {type(t).__name__}")
            if t.dtype != want:
                raise ArgumentError(f"argument {p.name} ({short_name(p.value.dtype)}) must be a {want} tensor, "
                                    f"got {t.dtype}", hint="lowered low-bit tensors are passed packed "
                                                           "(uint8/uint32), as the kernel's parameter says")
            if t.dim() != p.value.type.rank:
                raise ArgumentError(f"argument {p.name} must have rank {p.value.type.rank}, got shape "
                                    f"{tuple(t.shape)}")
            if not self.interpreted and t.device.type != "cuda":
                raise ArgumentError(f"argument {p.name} is on {t.device}, but the kernel runs natively on CUDA",
                                    hint="move the tensors to the GPU, or build with mode='interpret'")

    def _needs_wide(self, args: Mapping[str, Any]) -> bool:
        for p in self.kernel.tensor_params:
            t = args[p.name]
            span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) if t.numel() else 0
            if span >= _INT32_SPAN:
                return True
        return False

    def _source_for(self, wide: bool) -> TritonSource:
        if not wide:
            return self.source
        if self._wide is None:
            self._wide = emit_triton(self.kernel, self.target, wide_index=True)
        return self._wide

    def launch(self, args: Mapping[str, Any], *, constants: Mapping[str, Any] | None = None,
               shape_bindings: Mapping[str, int] | None = None) -> None:
        """Run the kernel over its grid. ``args`` maps every parameter name to a torch tensor (outputs are
        written in place) or a number; ``constants`` gives unspecialized constants, ``shape_bindings`` size
        symbols no tensor shape determines (as for :func:`lowbit.ir.interpret`)."""
        call = self._prepare(args, constants, shape_bindings)
        if call is None:
            return
        fn, grid, positional, keywords, _ = call
        with (_quiet_numpy() if self.interpreted else contextlib.nullcontext()):
            runner.launch(fn, grid, *positional, **keywords)

    def bind(self, args: Mapping[str, Any], vary: tuple[str, ...], *,
             shape_bindings: Mapping[str, int] | None = None) -> "TritonBoundCall | None":
        """A launch checked and worked out once for calls that change only the tensors named in ``vary`` (see
        :class:`TritonBoundCall`); ``None`` under the interpreter, whose launches cost far more than the checks."""
        if self.interpreted:
            return None
        return TritonBoundCall(self, args, tuple(vary), shape_bindings)

    def _prepare(self, args: Mapping[str, Any], constants: Mapping[str, Any] | None,
                 shape_bindings: Mapping[str, int] | None) -> tuple | None:
        """Check ``args`` and work out the launch: (kernel object, grid, positional arguments, keyword arguments,
        source), or None for an empty grid."""
        self._check_tensors(args)
        consts = self._constants(constants)
        sizes = bind_sizes(self.kernel, args, consts, shape_bindings)
        grid = tuple(dim_eval(d, sizes) for d in self.kernel.grid)
        if min(grid) <= 0:
            return None
        source = self._source_for(self._needs_wide(args))
        module = self.module if source is self.source else runner.load(
            source.text, mode=self.mode, name=self.kernel.name, cache_dir=self.cache_dir)
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for a in source.args:
            if a.kind == "pointer":
                positional.append(args[a.source])
            elif a.kind == "stride":
                positional.append(int(args[a.source].stride(a.axis)))
            elif a.kind == "symbol":
                positional.append(int(sizes[a.source]))
            elif a.kind == "scalar":
                positional.append(scalar_value(a.source, args[a.source], a.dtype or "float32"))
            elif a.kind == "constexpr":
                keywords[a.name] = consts[a.source]
            else:  # NATIVE_BF16_DOT
                keywords[a.name] = not self.interpreted
        keywords["num_warps"] = self.target.num_warps
        keywords["enable_fp_fusion"] = self.fp_fusion
        return module.kernel(source.kernel_name), grid, positional, keywords, source


class TritonBoundCall:
    """A native Triton launch whose arguments were checked and worked out once (:meth:`TritonKernel.bind`):
    calling it with the tensors named in ``vary`` fills their pointers (and strides) into the bound argument
    list and launches, skipping the per-call checks, constant conversions, size binding and grid evaluation of
    a full :meth:`TritonKernel.launch` (~100-200 us of Python on the H200 host measured: most of a decode step).

    When the varying tensors have the bound strides and 16-byte aligned data (what Triton specialized the
    compiled kernel on), the launch goes straight to the compiled kernel's launcher, as ``JITFunction.run`` does
    after its argument binding and cache lookup; otherwise through ``JITFunction.run`` (which specializes anew).
    A tensor of another dtype, shape or device, or one spanning 2^31 elements or more, takes the full launch
    (its checks, its errors). Only the fixed arguments are kept, not the varying examples. Launch hooks
    (``triton.knobs.runtime.launch_enter_hook``) see only the launches that go through ``JITFunction.run``.

    >>> run = kernel.bind(dict(x=x, w=w, y=y), vary=("x", "y"))      # doctest: +SKIP
    >>> run(x=x2, y=y2); run.trusted(x2, y2)                          # doctest: +SKIP
    """

    __slots__ = ("_kernel", "_fixed", "_vary", "_shape_bindings", "_like", "_slots", "_strides", "_launch",
                 "_direct")

    def __init__(self, kernel: TritonKernel, args: Mapping[str, Any], vary: tuple[str, ...],
                 shape_bindings: Mapping[str, int] | None) -> None:
        unknown = [name for name in vary if name not in {p.name for p in kernel.kernel.tensor_params}]
        if unknown:
            raise BackendError(f"kernel {kernel.kernel.name}: cannot vary {', '.join(unknown)}: not a tensor "
                               "parameter")
        self._kernel = kernel
        self._fixed = {k: v for k, v in args.items() if k not in vary}
        self._vary = vary
        self._shape_bindings = dict(shape_bindings) if shape_bindings else None
        self._like = tuple((args[v].dtype, tuple(args[v].shape), tuple(args[v].stride()), args[v].device)
                           for v in vary)
        self._launch = self._direct = None
        self._slots: tuple[int, ...] = ()
        self._strides: tuple[tuple[tuple[int, int], ...], ...] = ()
        call = kernel._prepare(args, None, shape_bindings)
        if call is None:                         # an empty grid: nothing to launch
            return
        fn, grid, positional, keywords, source = call
        pointer = {a.source: i for i, a in enumerate(source.args) if a.kind == "pointer"}
        self._slots = tuple(pointer[v] for v in vary)
        self._strides = tuple(tuple((i, a.axis) for i, a in enumerate(source.args)
                                    if a.kind == "stride" and a.source == v) for v in vary)
        names = [a.name for a in source.args if a.kind in ("pointer", "stride", "symbol", "scalar")]
        self._direct = _direct_launch(fn, grid, positional, names, keywords,
                                      args[vary[0]].device if vary else None)
        for i in self._slots:
            positional[i] = None                 # hold no reference to the example tensors
        self._launch = (fn, grid, positional, keywords)

    def __call__(self, **tensors: Any) -> None:
        if len(tensors) != len(self._vary):
            return self._full(tensors)
        torch = sys.modules["torch"]
        ordered = []
        for name, (dtype, shape, _, device) in zip(self._vary, self._like):
            t = tensors.get(name)
            if type(t) is not torch.Tensor or t.dtype != dtype or t.shape != shape or t.device != device:
                return self._full(tensors)
            ordered.append(t)
        self.trusted(*ordered)

    def trusted(self, *tensors: Any) -> None:
        """Launch with the tensors of ``vary``, in its order, which the caller guarantees have the bound dtypes,
        shapes and device; only their memory layout is looked at here."""
        if self._launch is None:                 # an empty grid
            return
        fn, grid, positional, keywords = self._launch
        args = positional.copy()
        as_bound = True
        for i, t, like, strides in zip(self._slots, tensors, self._like, self._strides):
            args[i] = t
            stride = t.stride()
            if stride != like[2]:
                if sum((s - 1) * abs(st) for s, st in zip(t.shape, stride)) >= _INT32_SPAN:
                    return self._full(dict(zip(self._vary, tensors)))
                for position, axis in strides:
                    args[position] = stride[axis]
                as_bound = False
            elif t.data_ptr() % 16:
                as_bound = False
        if as_bound and self._direct is not None:
            launcher, function, metadata, tail, grid3, stream_of = self._direct
            launcher(*grid3, stream_of(), function, metadata, None, None, None, *args, *tail)
        else:
            runner.run_checked(fn, grid, args, keywords)

    def _full(self, tensors: Mapping[str, Any]) -> None:
        self._kernel.launch({**self._fixed, **tensors}, shape_bindings=self._shape_bindings)

    def __deepcopy__(self, memo: dict) -> "TritonBoundCall":
        """The same launch bound to deep copies of the fixed tensors (a copied weight's plan runs on the copy);
        the compiled kernel is shared."""
        torch = sys.modules["torch"]
        fixed = copy.deepcopy(self._fixed, memo)
        examples = {name: torch.empty_strided(shape, stride, dtype=dtype, device=device)
                    for name, (dtype, shape, stride, device) in zip(self._vary, self._like)}
        return TritonBoundCall(self._kernel, {**fixed, **examples}, self._vary, self._shape_bindings)


def _direct_launch(fn: Any, grid: tuple[int, ...], positional: list[Any], names: list[str],
                   keywords: Mapping[str, Any], device: Any) -> tuple | None:
    """What ``JITFunction.run`` calls once it has bound and specialized the arguments: the compiled kernel's
    launcher, function handle and metadata, the constexpr values after the positional arguments (in the
    kernel's parameter order; ``names``: the positional ones'), the 3-D grid and a function giving the current
    CUDA stream. Compiles the kernel for the example arguments (``warmup``: nothing runs). None where this
    Triton's internals differ from those of the versions it was written against (3.6-3.9): the bound call then
    launches through ``JITFunction.run``."""
    try:
        import torch

        params = list(fn.arg_names)
        if params[:len(positional)] != names:     # the positional arguments must lead, in this order
            return None
        tail = [keywords[name] for name in params[len(positional):]]
        compiled = fn.run(*positional, grid=grid, warmup=True, **keywords)
        launcher = compiled.run                  # loads the module (a property in Triton 3.x)
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        get_stream = torch._C._cuda_getCurrentRawStream
        grid3 = tuple(grid) + (1,) * (3 - len(grid))
        return launcher, compiled.function, compiled.packed_metadata, tail, grid3, functools.partial(get_stream,
                                                                                                      index)
    except Exception:  # noqa: BLE001 - any mismatch: the bound call keeps the public launch path
        return None


def _default_target(mode: str) -> Target:
    if mode == "interpret":
        return parse_target("triton:cpu")
    import torch

    major, minor = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0)
    return parse_target(f"triton:sm_{major}{minor}")


def _is_lowered(obj: Any) -> bool:
    """A :class:`lowbit.lowering.passes.Lowered` (duck-typed: importing the passes package is not needed)."""
    return not isinstance(obj, n.Kernel) and isinstance(getattr(obj, "kernel", None), n.Kernel) \
        and hasattr(obj, "param_formats") and hasattr(obj, "target")


def build_triton(kernel: Any, target: Target | str | None = None, *, mode: str = "auto",
                 cache_dir: str | os.PathLike | None = None, fp_fusion: bool = False) -> TritonKernel:
    """Generate, load and wrap a kernel (an IR ``Kernel`` of native dtypes, or a ``Lowered`` result).

    ``mode``: ``"auto"`` (native with CUDA, else the interpreter), ``"native"`` or ``"interpret"``.
    ``fp_fusion=False`` (default) keeps ``a * b + c`` as two rounded operations, as the IR specifies.
    """
    param_formats: Mapping[str, Any] = {}
    if _is_lowered(kernel):
        param_formats = kernel.param_formats
        target = target if target is not None else kernel.target
        kernel = kernel.kernel
    if not isinstance(kernel, n.Kernel):
        raise CompileError(f"build_triton expects a lowbit.ir Kernel or a Lowered result, got {type(kernel).__name__}")
    resolved = runner.resolve_mode(mode)
    if target is None:
        target = _default_target(resolved)
    elif isinstance(target, str):
        target = parse_target(target)
    if target.backend != "triton":
        raise CompileError(f"build_triton needs a triton target, got {target}",
                           hint="use a target such as triton:sm_90 or triton:cpu")
    source = emit_triton(kernel, target)
    return TritonKernel(kernel, target, source, resolved, param_formats=param_formats, cache_dir=cache_dir,
                        fp_fusion=fp_fusion)
