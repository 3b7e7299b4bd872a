"""The pass manager: passes registered by name, default pipelines per target, verify between passes, dumps.

A pass is a function ``(kernel, ctx) -> kernel`` registered with :func:`register_pass`. The context carries
the target, options and what passes learn about parameters (``ctx.param_formats``: how a logical low-bit
tensor is stored after lowering, with the host-side repack). The manager verifies the IR before the first
pass and after every pass, and writes the IR after every pass to ``dump_dir`` (or ``$LOWBIT_DUMP``).

>>> @register_pass("noop", "returns the kernel unchanged")
... def noop(kernel, ctx):
...     return kernel
>>> lowered = run_passes(kernel, parse_target("tvm:llvm"), ["noop"])   # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...errors import CompileError
from ...ir import Kernel, print_kernel, verify
from ..target import Target

PassFn = Callable[[Kernel, "PassContext"], Kernel]


@dataclass(frozen=True)
class PassInfo:
    name: str
    description: str
    run: PassFn


#: name -> pass. Filled by @register_pass in the pass modules (imported by lowbit.lowering.passes).
PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, description: str) -> Callable[[PassFn], PassFn]:
    """Register ``fn`` as the pass ``name``. Names are unique."""

    def decorate(fn: PassFn) -> PassFn:
        if name in PASSES and PASSES[name].run is not fn:
            raise ValueError(f"pass {name!r} registered twice")
        PASSES[name] = PassInfo(name, description, fn)
        return fn

    return decorate


@dataclass
class PassContext:
    """Per-compilation state shared by the passes of one pipeline run."""

    target: Target
    constants: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: parameter name -> its storage format after low-bit lowering (has .format_id, .pack, .unpack)
    param_formats: dict[str, Any] = field(default_factory=dict)
    #: free-form facts passes leave for later passes and emitters (e.g. vector widths per access)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassRecord:
    """The IR after one pass (kept when ``keep_history`` is asked, e.g. for translation validation)."""

    name: str
    kernel: Kernel
    param_formats: Mapping[str, Any]


@dataclass(frozen=True)
class Lowered:
    """The result of a pipeline: the final kernel plus what the host needs to call it."""

    kernel: Kernel
    target: Target
    param_formats: Mapping[str, Any]
    facts: Mapping[str, Any]
    history: tuple[PassRecord, ...] = ()


#: default pipelines per (backend, kind); filled by the pass modules via set_default_pipeline
_DEFAULT_PIPELINES: dict[tuple[str, str], tuple[str, ...]] = {}


def set_default_pipeline(backend: str, kind: str, names: Sequence[str]) -> None:
    _DEFAULT_PIPELINES[(backend, kind)] = tuple(names)


def default_pipeline(target: Target) -> tuple[str, ...]:
    """The pass names run for ``target`` when no explicit list is given."""
    _load_passes()
    return _DEFAULT_PIPELINES.get((target.backend, target.kind), _DEFAULT_PIPELINES.get(("*", "*"), ()))


def _load_passes() -> None:
    import importlib

    importlib.import_module("lowbit.lowering.passes")  # registers every pass module it lists


def dump_dir_from_env() -> Path | None:
    value = os.environ.get("LOWBIT_DUMP")
    return Path(value) if value else None


def run_passes(kernel: Kernel, target: Target, passes: Sequence[str] | None = None, *,
               constants: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
               dump_dir: str | os.PathLike[str] | None = None, keep_history: bool = False) -> Lowered:
    """Run ``passes`` (default: the target's pipeline) on ``kernel``, verifying before and after each."""
    _load_passes()
    names = tuple(passes) if passes is not None else default_pipeline(target)
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise CompileError(f"unknown pass(es) {', '.join(unknown)}",
                           hint="registered passes: " + ", ".join(sorted(PASSES)))
    ctx = PassContext(target=target, constants=dict(constants or {}), options=dict(options or {}))
    folder = Path(dump_dir) if dump_dir is not None else dump_dir_from_env()
    if folder is not None:
        ctx.options.setdefault("dump_dir", str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"00-input.{kernel.name}.ir").write_text(print_kernel(kernel))
    verify(kernel)
    history: list[PassRecord] = []
    if keep_history:
        history.append(PassRecord("input", kernel, {}))
    for index, name in enumerate(names, start=1):
        kernel = PASSES[name].run(kernel, ctx)
        try:
            verify(kernel)
        except CompileError as err:
            raise CompileError(f"internal error: pass {name!r} produced invalid IR: {err.message}",
                               location=err.location, notes=err.notes,
                               hint="please report this with the kernel; LOWBIT_DUMP=dir shows the IR per pass"
                               ) from None
        if folder is not None:
            (folder / f"{index:02d}-{name}.{kernel.name}.ir").write_text(print_kernel(kernel))
        if keep_history:
            history.append(PassRecord(name, kernel, dict(ctx.param_formats)))
    return Lowered(kernel=kernel, target=target, param_formats=dict(ctx.param_formats), facts=dict(ctx.facts),
                   history=tuple(history))
