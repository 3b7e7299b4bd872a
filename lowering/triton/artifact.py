"""Ahead-of-time artifacts of generated Triton kernels: source + PTX + cubin + the launch rule, no GPU needed.

:func:`compile_triton` emits a kernel's source (or takes one), specializes it the way Triton's JIT would
for well-behaved torch tensors, and compiles it with :func:`lowbit.lowering.triton.aot.compile_aot` for
an NVIDIA architecture (sm_80 / sm_90 / sm_100 ...). The :class:`TritonArtifact` holds everything a loader
needs: the kernel name, the runtime signature (the cubin's parameters, in order), the constexpr values,
the grid rule (host expressions over shape symbols and constants), warps, shared memory, and the
*assumptions* the specialization made, which a loader must check before launching:

* ``contiguous``: tensors whose innermost stride is the constant 1 (that is what allows vector loads);
* ``aligned``: pointers 16-byte aligned;
* ``divisible``: integer parameters (strides, sizes) that are multiples of 16.

>>> art = compile_triton(kernel, "sm_90", divisible=["w"])     # doctest: +SKIP
>>> art.stats["ld.global.max_bytes"], art.save("out/")         # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from lowbit.errors import BackendError, CompileError
from lowbit.ir import nodes as n
from lowbit.ir.symbolic import dim_str

from .aot import AotArtifact, compile_aot, parse_target as parse_cuda_target
from .codegen import KernelArg, TritonSource, emit_triton
from .dtypes import signature_type

__all__ = ["TritonArtifact", "compile_triton", "aot_signature"]

_FORMAT_VERSION = 1


def aot_signature(source: TritonSource, constants: Mapping[str, Any], *, contiguous: bool = True,
                  aligned: bool = True, divisible: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, Any],
                                                                               dict[str, list[str]]]:
    """Triton signature, constexpr values and assumptions for compiling ``source`` ahead of time.

    ``divisible`` names integer parameters promised to be multiples of 16: Triton parameter names,
    tensor names (all of that tensor's runtime strides), shape-symbol names, or ``"*"`` for all of them.
    """
    wanted = set(divisible)
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    assumed: dict[str, list[str]] = {"contiguous": [], "aligned": [], "divisible": []}
    ranks: dict[str, int] = {}
    for a in source.args:
        if a.kind == "stride":
            ranks[a.source] = max(ranks.get(a.source, 0), (a.axis or 0) + 1)
    known = {a.name for a in source.args} | {a.source for a in source.args if a.kind in ("stride", "symbol")}
    unknown = sorted(wanted - known - {"*"})
    if unknown:
        raise CompileError(f"divisible names {', '.join(unknown)}, which are not integer parameters, tensors or "
                           f"size symbols of kernel {source.ir_name}")
    for a in source.args:
        if a.kind == "pointer":
            signature[a.name] = signature_type(a.dtype or "float32", pointer=True) + (":16" if aligned else "")
            if aligned:
                assumed["aligned"].append(a.name)
        elif a.kind == "stride" and contiguous and a.axis == ranks[a.source] - 1:
            constexprs[a.name] = 1
            assumed["contiguous"].append(a.source)
        elif a.kind in ("stride", "symbol"):
            div = "*" in wanted or a.name in wanted or a.source in wanted
            signature[a.name] = "i32" + (":16" if div else "")
            if div:
                assumed["divisible"].append(a.name)
        elif a.kind == "scalar":
            signature[a.name] = signature_type(a.dtype or "float32", pointer=False)
        elif a.kind == "constexpr":
            if a.source not in constants or constants[a.source] is None:
                raise CompileError(f"constant {a.source} of kernel {source.ir_name} has no value",
                                   hint="pass constants={...} to compile_triton")
            from .launcher import scalar_value

            constexprs[a.name] = scalar_value(a.source, constants[a.source], a.dtype or "int32")
        else:  # NATIVE_BF16_DOT
            constexprs[a.name] = True
    return signature, constexprs, assumed


@dataclass(frozen=True)
class TritonArtifact:
    """A generated kernel compiled for one NVIDIA architecture (see the module docstring)."""

    source: TritonSource
    aot: AotArtifact
    assumptions: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def kernel_name(self) -> str:
        return self.aot.kernel_name

    @property
    def target(self) -> str:
        return self.aot.target

    @property
    def stats(self) -> dict[str, Any]:
        """PTX instruction statistics (:func:`lowbit.lowering.triton.ptx.ptx_stats`)."""
        return self.aot.stats

    def launch_rule(self) -> dict[str, Any]:
        """What a loader needs besides the cubin: runtime parameters in order (with what each is bound
        from), the grid rule, constexprs, warps, shared memory and assumptions (JSON-compatible)."""
        runtime = set(self.aot.signature)
        params = [{"name": a.name, "kind": a.kind, "source": a.source, "axis": a.axis, "dtype": a.dtype,
                   "type": self.aot.signature[a.name]} for a in self.source.args if a.name in runtime]
        return {
            "format_version": _FORMAT_VERSION, "kernel": self.kernel_name, "ir_kernel": self.source.ir_name,
            "target": self.target, "params": params, "grid": list(self.source.grid),
            "grid_dims": [dim_str(d) for d in self.source.grid_dims], "constants": dict(self.aot.constants),
            "num_warps": self.aot.num_warps, "num_stages": self.aot.num_stages, "shared": self.aot.shared,
            "assumptions": {k: list(v) for k, v in self.assumptions.items()},
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<kernel>.<target>.{py,ptx,cubin,json,launch.json}``; return the ``.launch.json`` path."""
        folder = Path(directory)
        self.aot.save(folder)
        stem = f"{self.kernel_name}.{self.target}"
        (folder / f"{stem}.py").write_text(self.source.text)
        path = folder / f"{stem}.launch.json"
        rule = self.launch_rule()
        rule["source_args"] = [{"name": a.name, "kind": a.kind, "source": a.source, "axis": a.axis,
                                "dtype": a.dtype} for a in self.source.args]
        rule["launcher"] = self.source.launcher_name
        rule["wide_index"] = self.source.wide_index
        rule["source_num_warps"] = self.source.num_warps
        path.write_text(json.dumps(rule, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TritonArtifact":
        """Read an artifact written by :meth:`save` (pass the ``.launch.json`` path)."""
        path = Path(path)
        try:
            rule = json.loads(path.read_text())
            if rule.get("format_version") != _FORMAT_VERSION:
                raise BackendError(f"{path} holds artifact format {rule.get('format_version')!r}, expected "
                                   f"{_FORMAT_VERSION}", hint="recompile the kernel with this lowbit version")
            base = str(path)[:-len(".launch.json")]
            aot = AotArtifact.load(base + ".json")
            args = tuple(KernelArg(a["name"], a["kind"], a["source"], a["axis"], a["dtype"])
                         for a in rule["source_args"])
            from lowbit.ir.symbolic import parse_dim

            source = TritonSource(text=Path(base + ".py").read_text(), kernel_name=rule["kernel"],
                                  launcher_name=rule["launcher"], ir_name=rule["ir_kernel"], args=args,
                                  grid=tuple(rule["grid"]), grid_dims=tuple(parse_dim(d) for d in rule["grid_dims"]),
                                  num_warps=rule["source_num_warps"], wide_index=rule["wide_index"])
            return cls(source=source, aot=aot, assumptions=rule["assumptions"])
        except BackendError:
            raise
        except (OSError, ValueError, KeyError, TypeError, CompileError) as exc:
            raise BackendError(f"cannot read Triton artifact {path}: {type(exc).__name__}: {exc}",
                               hint="recompile the kernel") from exc


def compile_triton(kernel: Any, target: str | int = "sm_90", *, constants: Mapping[str, Any] | None = None,
                   num_warps: int = 4, num_stages: int = 3, contiguous: bool = True, aligned: bool = True,
                   divisible: Iterable[str] = (), fp_fusion: bool = False,
                   cache_dir: str | os.PathLike | None = None) -> TritonArtifact:
    """Compile a kernel (IR ``Kernel``, ``Lowered`` or :class:`TritonSource`) for NVIDIA ``target`` without
    a GPU. ``constants`` supplies unspecialized constants; see :func:`aot_signature` for the rest."""
    from .launcher import _is_lowered

    ir_constants: dict[str, Any] = {}
    if _is_lowered(kernel):
        kernel = kernel.kernel
    if isinstance(kernel, n.Kernel):
        ir_constants = {c.name: c.value for c in kernel.constants}
        source = emit_triton(kernel)
    elif isinstance(kernel, TritonSource):
        source = kernel
    else:
        raise CompileError(f"compile_triton expects a Kernel, Lowered or TritonSource, got {type(kernel).__name__}")
    given = dict(constants or {})
    for name, value in given.items():
        if ir_constants.get(name) is not None and ir_constants[name] != value:
            raise CompileError(f"constant {name} is specialized to {ir_constants[name]!r}, got {value!r}")
    merged = {**ir_constants, **given}
    parse_cuda_target(target)
    signature, constexprs, assumed = aot_signature(source, merged, contiguous=contiguous, aligned=aligned,
                                                   divisible=divisible)
    art = compile_aot(source.text, source.kernel_name, signature, constexprs, target=target, num_warps=num_warps,
                      num_stages=num_stages, fp_fusion=fp_fusion, cache_dir=cache_dir)
    return TritonArtifact(source=source, aot=art, assumptions=assumed)
