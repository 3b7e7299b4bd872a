"""Ahead-of-time artifacts: one self-contained directory per compiled kernel, and :func:`load` to run it.

``lowbit compile`` (:mod:`lowbit.commands.compile`) calls :func:`compile_file` / :func:`write_artifact`;
:func:`load` returns a :class:`LoadedKernel` to call with tensors. An artifact directory holds::

    manifest.json          kernel, target, signatures (logical and as lowered), constants, grid, packed
                           weight formats, launch facts, toolchain versions, every file's size and SHA-256
    kernel.ir              the specialized kernel IR (logical parameters)
    kernel.lowered.ir      the IR after the target's passes: what the generated code implements
    triton:sm_XX           <k>.sm_XX.py (source), .ptx, .cubin, .json (Triton launch metadata), .launch.json
    tvm:llvm               <k>.so (+ <k>.so.lowbit.json, its argument ABI), <k>.tvm.py (TensorIR)
    tvm:cuda:sm_XX         <k>.cu (CUDA source), <k>.tvm.py, <k>.sm_XX.cubin (when nvcc is installed)

Host-side objects (the packed weight formats and their repack) are not serialized: :func:`load` re-runs the
target's passes on ``kernel.ir`` (they are cheap) and checks that they reproduce ``kernel.lowered.ir`` and
the recorded format ids, so weights packed with ``loaded.param_formats[name].pack(codes)`` always match the
binary. The manifest's content hash and every file's checksum are verified on load; a corrupt or edited
artifact is a :class:`~lowbit.errors.FormatError`.

>>> art = compile_file("examples/vector_add.lbk", "tvm:llvm", "build/vadd")        # doctest: +SKIP
>>> k = load("build/vadd")                                                          # doctest: +SKIP
>>> k(x, y, out)           # positional, in parameter order; or k(x=x, y=y, out=out) # doctest: +SKIP
>>> load("build/gemm_sm90", mode="interpret")  # a triton:sm_XX artifact's source on the CPU  # doctest: +SKIP
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

from .errors import BackendError, CompileError, FormatError, KernelArgumentError, LowbitError

__all__ = ["MANIFEST", "FORMAT", "FORMAT_VERSION", "AOT_TARGETS", "Artifact", "LoadedKernel", "aot_target",
           "compile_file", "write_artifact", "open_artifact", "load"]

MANIFEST = "manifest.json"
FORMAT = "lowbit-artifact"
FORMAT_VERSION = 1
IR_FILE = "kernel.ir"
LOWERED_IR_FILE = "kernel.lowered.ir"

#: Targets ``lowbit compile`` writes artifacts for.
AOT_TARGETS = ("triton:sm_80", "triton:sm_86", "triton:sm_89", "triton:sm_90", "triton:sm_100", "triton:sm_120",
               "tvm:llvm", "tvm:cuda:sm_80", "tvm:cuda:sm_86", "tvm:cuda:sm_89", "tvm:cuda:sm_90")
_MODES = ("auto", "native", "interpret")

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------
def aot_target(text: str, *, num_warps: int | None = None) -> Any:
    """The :class:`~lowbit.lowering.target.Target` for an AOT target string (CompileError if it has no
    ahead-of-time form). ``num_warps`` (CUDA targets) sets the threads per block the passes plan for.

    >>> str(aot_target("triton:sm_90")), aot_target("tvm:cuda:sm_90", num_warps=8).num_warps
    ('triton:sm_90', 8)
    """
    from .lowering.target import parse_target

    if not isinstance(text, str):
        raise CompileError(f"a target must be a string such as 'triton:sm_90', got {type(text).__name__}")
    target = parse_target(text)
    if str(target) == "triton:cpu":
        raise CompileError(f"target {text!r} (Triton's interpreter) has no ahead-of-time form",
                           hint="compile for a GPU target such as triton:sm_90 (no GPU needed) and run its source on "
                                "the CPU with lowbit.load(DIR, mode='interpret'), or compile for tvm:llvm")
    if str(target) not in AOT_TARGETS:
        raise CompileError(f"unknown target {text!r} for ahead-of-time compilation",
                           hint="valid targets: " + ", ".join(AOT_TARGETS))
    if num_warps is not None:
        if target.kind != "cuda":
            raise CompileError(f"num_warps applies to CUDA targets, not {target}")
        if not (isinstance(num_warps, int) and 1 <= num_warps <= 32 and num_warps & (num_warps - 1) == 0):
            raise CompileError(f"num_warps must be a power of two from 1 to 32, got {num_warps!r}")
        target = replace(target, num_warps=num_warps)
    return target


def _target_from_manifest(manifest: Mapping[str, Any]) -> Any:
    """The exact Target the artifact was lowered for (thread counts and vector widths shape the layouts, so
    loading on a machine with other defaults must not change them)."""
    from .lowering.target import Target

    fields = manifest.get("lowering_target")
    try:
        target = Target(**fields)
    except TypeError as exc:
        raise FormatError(f"the manifest's lowering_target {fields!r} is not a target of this lowbit ({exc})",
                          hint="recompile the kernel with this lowbit version") from None
    if str(target) != manifest["target"]:
        raise FormatError(f"the manifest's lowering_target is {target}, but its target is {manifest['target']}",
                          hint="recompile the kernel")
    return target


# ---------------------------------------------------------------------------------------------------------
# hashing and the manifest
# ---------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_hash(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest without its own hash (which covers every file through their checksums)."""
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _param_entry(param: Any, formats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from .ir.nodes import TensorParam
    from .ir.symbolic import dim_str
    from .ir.types import short_name

    ttype = param.value.type
    dims = [dim_str(d) for d in ttype.shape]
    entry: dict[str, Any] = {"name": param.name, "kind": "tensor" if isinstance(param, TensorParam) else "scalar",
                             "dtype": ttype.dtype, "shape": dims,
                             "type": short_name(ttype.dtype) + (f"[{', '.join(dims)}]" if dims else "")}
    if isinstance(param, TensorParam):
        entry["intent"] = param.intent
    if formats and param.name in formats:
        entry["format"] = str(formats[param.name].format_id)
    return entry


def _format_entry(fmt: Any, logical: Any, lowered: Any) -> dict[str, Any]:
    from .ir.symbolic import dim_str

    fid = fmt.format_id
    return {"id": str(fid), "name": fid.name, "version": fid.version, "dtype": fmt.dtype,
            "storage_dtype": fmt.storage_dtype, "tile_shape": list(fmt.tile_shape),
            "words_per_tile": fmt.words_per_tile, "vector_bytes": fmt.vector_bytes,
            "logical_shape": [dim_str(d) for d in logical.value.type.shape],
            "storage_shape": [dim_str(d) for d in lowered.value.type.shape]}


@dataclass(frozen=True)
class Artifact:
    """An artifact directory and its manifest (treat ``manifest`` as read-only). See the module docstring."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def kernel_name(self) -> str:
        return self.manifest["kernel"]

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def files(self) -> dict[str, int]:
        """File name -> size in bytes (every file the manifest lists)."""
        return {name: int(record["size"]) for name, record in sorted(self.manifest["files"].items())}

    def file(self, name: str) -> Path:
        return self.path / name

    def read_text(self, name: str) -> str:
        return (self.path / name).read_text()

    def files_with_suffix(self, suffix: str) -> list[str]:
        return [name for name in self.files if name.endswith(suffix)]

    def ptx_stats(self) -> dict[str, Any] | None:
        """:func:`~lowbit.lowering.triton.ptx.ptx_stats` of the artifact's PTX (None without PTX)."""
        from .lowering.triton.ptx import ptx_stats

        names = self.files_with_suffix(".ptx")
        return ptx_stats(self.read_text(names[0])) if names else None

    def recompile_hint(self) -> str:
        command = self.manifest.get("command")
        return f"recompile it: {command}" if command else "recompile it with 'lowbit compile'"


# ---------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------
def compile_file(path: str | os.PathLike, target: str, out_dir: str | os.PathLike, *, kernel: str | None = None,
                 constants: Mapping[str, Any] | None = None, num_warps: int | None = None, num_stages: int = 3,
                 divisible: Sequence[str] = (), dump_dir: str | None = None, command: str | None = None,
                 progress: Progress | None = None) -> Artifact:
    """Compile kernel ``kernel`` (default: the only one) of a ``.lbk`` file into an artifact at ``out_dir``.

    ``constants`` maps names to values or to their text (``"u4"``, ``"128"``, ``"spatial(4, 8)"``), as
    ``lowbit compile --const NAME=VALUE`` gives them. See :func:`write_artifact` for the rest.
    """
    from .dsl.frontend import load_file, parse_constant

    say = progress or (lambda message: None)
    values = {name: parse_constant(name, value) if isinstance(value, str) else value
              for name, value in (constants or {}).items()}
    say(f"parsing {path}")
    kfile = load_file(path)
    front = kfile.compile(kernel, values)
    return write_artifact(front.ir, target, out_dir, given_constants=constants, num_warps=num_warps,
                          num_stages=num_stages, divisible=divisible, source_file=str(path), dump_dir=dump_dir,
                          command=command, progress=progress)


def write_artifact(kernel: Any, target: str, out_dir: str | os.PathLike, *,
                   given_constants: Mapping[str, Any] | None = None, num_warps: int | None = None,
                   num_stages: int = 3, divisible: Sequence[str] = (), source_file: str | None = None,
                   dump_dir: str | None = None, command: str | None = None,
                   progress: Progress | None = None) -> Artifact:
    """Lower ``kernel`` (a specialized :class:`lowbit.ir.Kernel`) for ``target``, compile it and write the
    artifact directory ``out_dir`` (which must be absent, empty, or an earlier artifact: it is replaced).

    ``divisible`` (Triton targets) names tensors / integer parameters promised to be multiples of 16 (wider
    loads; :func:`load` checks the promise on every launch). ``num_warps`` / ``num_stages``: CUDA targets.
    """
    from .cache import toolchain_versions
    from .ir import Kernel, print_kernel
    from .lowering.passes import run_passes

    say = progress or (lambda message: None)
    if not isinstance(kernel, Kernel):
        raise CompileError(f"write_artifact expects a lowbit.ir Kernel, got {type(kernel).__name__}")
    tgt = aot_target(target, num_warps=num_warps)
    if divisible and tgt.backend != "triton":
        raise CompileError(f"divisibility promises apply to Triton targets, not {tgt}")
    out = Path(out_dir)
    _check_output_dir(out)
    missing = [c.name for c in kernel.constants if c.value is None]
    if missing:
        raise CompileError(f"kernel {kernel.name}: constant(s) {', '.join(missing)} have no value",
                           hint="give them with --const NAME=VALUE")
    say(f"lowering {kernel.name} for {tgt}")
    lowered = run_passes(kernel, tgt, dump_dir=dump_dir)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        (staging / IR_FILE).write_text(print_kernel(kernel))
        (staging / LOWERED_IR_FILE).write_text(print_kernel(lowered.kernel))
        if tgt.backend == "triton":
            launch = _write_triton(lowered, tgt, staging, num_stages=num_stages, divisible=divisible, say=say)
        elif tgt.kind == "cpu":
            launch = _write_tvm_llvm(lowered, staging, say=say)
        else:
            launch = _write_tvm_cuda(lowered, tgt, staging, say=say)
        manifest = _manifest(kernel, lowered, tgt, launch, staging, given_constants=given_constants,
                             source_file=source_file, command=command, versions=toolchain_versions())
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    artifact = Artifact(out, manifest)
    total = sum(artifact.files.values())
    say(f"wrote {out} ({len(artifact.files) + 1} files, {total / 1024:.1f} KiB)")
    return artifact


def _check_output_dir(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise LowbitError(f"output {out} exists and is not a directory", hint="choose another -o path")
    entries = list(out.iterdir())
    if not entries:
        return
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("format") == FORMAT:
            return
    except (OSError, ValueError, AttributeError):
        pass
    raise LowbitError(f"output directory {out} is not empty and holds no lowbit artifact",
                      hint="choose a new directory; an existing artifact directory is replaced")


def _install(staging: Path, out: Path) -> None:
    """Move the finished staging directory to ``out``, replacing an earlier artifact there."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _manifest(kernel: Any, lowered: Any, target: Any, launch: Mapping[str, Any], folder: Path, *,
              given_constants: Mapping[str, Any] | None, source_file: str | None, command: str | None,
              versions: Mapping[str, str]) -> dict[str, Any]:
    from .ir.symbolic import dim_str

    formats = lowered.param_formats
    logical = {p.name: p for p in kernel.params}
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST:
            files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "kernel": kernel.name, "target": str(target), "backend": target.backend, "device": target.kind,
        "arch": target.arch, "num_warps": target.num_warps if target.kind == "cuda" else None,
        "lowering_target": asdict(target),
        "source_file": source_file, "command": command,
        "given_constants": {k: _jsonable(v) for k, v in (given_constants or {}).items()},
        "constants": {c.name: _jsonable(c.value) for c in kernel.constants},
        "signature": {"logical": [_param_entry(p) for p in kernel.params],
                      "lowered": [_param_entry(p, formats) for p in lowered.kernel.params]},
        "shape_symbols": list(lowered.kernel.shape_symbols()),
        "param_formats": {name: _format_entry(fmt, logical[name], _param(lowered.kernel, name))
                          for name, fmt in sorted(formats.items())},
        "grid": [dim_str(d) for d in lowered.kernel.grid],
        "launch": _jsonable(dict(launch)),
        "ir": IR_FILE, "lowered_ir": LOWERED_IR_FILE,
        "files": files,
        "toolchain": dict(versions),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["content_hash"] = _content_hash(manifest)
    return manifest


def _param(kernel: Any, name: str) -> Any:
    return next(p for p in kernel.params if p.name == name)


def _write_triton(lowered: Any, target: Any, folder: Path, *, num_stages: int, divisible: Sequence[str],
                  say: Progress) -> dict[str, Any]:
    from .lowering.triton.artifact import compile_triton

    say(f"compiling with Triton for {target.arch} (PTX + cubin; no GPU needed)")
    art = compile_triton(lowered, target.arch, num_warps=target.num_warps, num_stages=num_stages,
                         divisible=list(divisible))
    rule_path = art.save(folder)
    stats = art.stats
    tensor_core = {k: stats[k] for k in ("mma.sync", "wgmma.mma_async", "tcgen05.mma") if stats[k]}
    say(f"PTX: {stats['instructions']} instructions, widest global load {stats['ld.global.max_bytes']} B"
        + (", " + ", ".join(f"{k} x{v}" for k, v in tensor_core.items()) if tensor_core else ""))
    rule = art.launch_rule()
    return {"kind": "triton", "launch_file": rule_path.name, "triton_kernel": art.kernel_name,
            "num_warps": rule["num_warps"], "num_stages": rule["num_stages"], "shared_bytes": rule["shared"],
            "grid": rule["grid"], "params": rule["params"], "constexprs": rule["constants"],
            "assumptions": rule["assumptions"]}


def _write_tvm_llvm(lowered: Any, folder: Path, *, say: Progress) -> dict[str, Any]:
    from .lowering.tvm.launcher import build_tvm
    from .lowering.tvm.target import host_cpu

    say("compiling with TVM for this CPU (LLVM, native mcpu)")
    cpu = host_cpu()
    built = build_tvm(lowered)
    name = lowered.kernel.name
    library = built.export(folder / f"{name}.so")
    (folder / f"{name}.tvm.py").write_text(built.text)
    say(f"built {library.name} for mcpu={cpu.mcpu} ({cpu.vector_bits}-bit vectors)")
    return {"kind": "tvm-llvm", "library": library.name, "func_name": built.source.func_name,
            "source_file": f"{name}.tvm.py", "mcpu": cpu.mcpu, "triple": cpu.triple,
            "cpu_features": sorted(cpu.features), "abi": _tvm_abi(built.source)}


def _write_tvm_cuda(lowered: Any, target: Any, folder: Path, *, say: Progress) -> dict[str, Any]:
    from .lowering.tvm.build import find_nvcc, nvcc_cubin
    from .lowering.tvm.launcher import build_tvm

    say(f"generating CUDA source with TVM for {target.arch}")
    built = build_tvm(lowered)
    name = lowered.kernel.name
    cuda = built.cuda_source
    (folder / f"{name}.cu").write_text(cuda)
    (folder / f"{name}.tvm.py").write_text(built.text)
    cubin = None
    if find_nvcc() is not None:
        say(f"compiling the CUDA source with nvcc for {target.arch}")
        cubin = f"{name}.{target.arch}.cubin"
        (folder / cubin).write_bytes(nvcc_cubin(cuda, target.arch))
    else:
        say("nvcc not found: the artifact holds the CUDA source only (no cubin)")
    entries = re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\s*\d+\s*\)\s+)?(\w+)\s*\(", cuda)
    return {"kind": "tvm-cuda", "cuda_source": f"{name}.cu", "cubin": cubin, "cuda_kernels": entries,
            "func_name": built.source.func_name, "threads_per_block": built.source.threads,
            "source_file": f"{name}.tvm.py", "abi": _tvm_abi(built.source)}


def _tvm_abi(source: Any) -> list[dict[str, Any]]:
    return [{"name": a.name, "role": a.role, "dtype": a.dtype, "dims": list(a.dims), "intent": a.intent}
            for a in source.abi]


# ---------------------------------------------------------------------------------------------------------
# reading and verifying
# ---------------------------------------------------------------------------------------------------------
def open_artifact(path: str | os.PathLike, *, verify: bool = True) -> Artifact:
    """Read an artifact's manifest; with ``verify`` check its content hash and every file's size and SHA-256.

    Raises :class:`FormatError` (with a hint to recompile) for anything missing, corrupt or edited.
    """
    folder = Path(path)
    if not folder.exists():
        raise FormatError(f"no artifact at {folder}", hint="create one with: lowbit compile FILE.lbk --target "
                                                          f"TARGET -o {folder}")
    if not folder.is_dir():
        raise FormatError(f"{folder} is a file; an artifact is a directory written by 'lowbit compile'")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise FormatError(f"{folder} has no {MANIFEST}: it is not a lowbit artifact",
                          hint="artifacts are written by 'lowbit compile ... -o DIR'") from None
    except (OSError, ValueError) as exc:
        raise FormatError(f"the {MANIFEST} of artifact {folder} is unreadable or corrupt ({exc})",
                          hint="recompile the kernel with 'lowbit compile'") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FormatError(f"{folder / MANIFEST} does not describe a lowbit artifact",
                          hint="artifacts are written by 'lowbit compile ... -o DIR'")
    artifact = Artifact(folder, manifest)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"artifact {folder} has format version {manifest.get('format_version')!r}; this lowbit "
                          f"reads version {FORMAT_VERSION}", hint=artifact.recompile_hint())
    if verify:
        _verify(artifact)
    return artifact


_REQUIRED = ("kernel", "target", "lowering_target", "ir", "lowered_ir", "signature", "param_formats", "grid",
             "launch", "files", "content_hash")


def _verify(artifact: Artifact) -> None:
    folder, manifest = artifact.path, artifact.manifest
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing or not isinstance(manifest["files"], dict):
        raise FormatError(f"the manifest of artifact {folder} is incomplete (missing {', '.join(missing) or 'files'})",
                          hint=artifact.recompile_hint())
    files, recorded = manifest["files"], manifest["content_hash"]
    if _content_hash(manifest) != recorded:
        raise FormatError(f"artifact {folder} is corrupt: {MANIFEST} does not match its content hash "
                          "(it was edited or damaged after compilation)", hint=artifact.recompile_hint())
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise FormatError(f"artifact {folder} is incomplete: {name} is missing", hint=artifact.recompile_hint())
        size = path.stat().st_size
        if size != record["size"]:
            raise FormatError(f"artifact {folder} is corrupt: {name} has {size} bytes, the manifest says "
                              f"{record['size']} (truncated or replaced?)", hint=artifact.recompile_hint())
        if _sha256(path) != record["sha256"]:
            raise FormatError(f"artifact {folder} is corrupt: {name} does not match its SHA-256 checksum",
                              hint=artifact.recompile_hint())


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def load(artifact_dir: str | os.PathLike, *, mode: str = "auto", verify: bool = True) -> "LoadedKernel":
    """Load an artifact written by ``lowbit compile`` and return a callable :class:`LoadedKernel`.

    ``mode``: ``"native"`` runs the artifact's binary (tvm:llvm: the shared library, on this CPU;
    triton:sm_XX: the cubin, on a GPU of that architecture); ``"interpret"`` runs a Triton artifact's
    generated source under Triton's interpreter on the CPU (slow; for testing); ``"auto"`` is ``"native"``.
    """
    if mode not in _MODES:
        raise BackendError(f"unknown load mode {mode!r}; expected one of {', '.join(_MODES)}")
    artifact = open_artifact(artifact_dir, verify=verify)
    manifest = artifact.manifest
    target = _target_from_manifest(manifest)
    if target.backend == "tvm" and target.kind == "cuda":
        raise BackendError(f"artifact {artifact.path} ({artifact.target}) holds CUDA source"
                           f"{' and a cubin' if manifest['launch'].get('cubin') else ''} for a CUDA runtime; "
                           "lowbit.load cannot launch TVM CUDA kernels",
                           hint="compile for triton:sm_XX to launch on a GPU, or tvm:llvm for this CPU")
    if mode == "interpret" and target.backend != "triton":
        raise BackendError(f"mode 'interpret' runs a Triton artifact's source under Triton's interpreter; "
                           f"artifact {artifact.path} is {artifact.target}", hint="load it with mode='native'")
    if target.backend == "triton" and mode != "interpret":
        _require_gpu(artifact, target)
    kernel, lowered = _relower(artifact, target)
    if target.backend == "triton":
        built, device, resolved = _load_triton(artifact, lowered, target, mode)
    else:
        built, device, resolved = _load_tvm_llvm(artifact), "cpu", "native"
    return LoadedKernel(artifact, kernel, lowered, target, built, resolved, device)


def _require_gpu(artifact: Artifact, target: Any) -> None:
    from .lowering.triton.runner import cuda_available

    if not cuda_available():
        raise BackendError(f"artifact {artifact.path} was compiled for {artifact.target}, which runs on an NVIDIA "
                           "GPU; no CUDA device is available here",
                           hint="lowbit.load(path, mode='interpret') runs its Triton source on the CPU (slowly)")
    import torch

    major, minor = torch.cuda.get_device_capability()
    here = f"sm_{major}{minor}"
    if here != target.arch:
        raise BackendError(f"artifact {artifact.path} holds a cubin for {target.arch}; this GPU is {here}",
                           hint=f"recompile with --target triton:{here}, or load with mode='interpret'")


def _relower(artifact: Artifact, target: Any) -> tuple[Any, Any]:
    """Re-run the target's passes on the artifact's IR; check they reproduce its lowered IR and formats."""
    from .ir import print_kernel
    from .ir.parser import parse
    from .lowering.passes import run_passes

    try:
        kernel = parse(artifact.read_text(artifact.manifest["ir"]), filename=str(artifact.file(IR_FILE)))
    except CompileError as exc:
        raise FormatError(f"the kernel IR of artifact {artifact.path} does not parse with this lowbit: "
                          f"{exc.message}", hint=artifact.recompile_hint()) from None
    lowered = run_passes(kernel, target)
    want = {name: entry["id"] for name, entry in artifact.manifest["param_formats"].items()}
    have = {name: str(fmt.format_id) for name, fmt in lowered.param_formats.items()}
    built_with = artifact.manifest.get("toolchain", {}).get("lowbit", "?")
    if have != want:
        raise FormatError(f"artifact {artifact.path} packs weights as {want or 'nothing'}, but this lowbit's "
                          f"passes derive {have or 'nothing'} (artifact built by lowbit {built_with})",
                          hint=artifact.recompile_hint())
    if print_kernel(lowered.kernel) != artifact.read_text(artifact.manifest["lowered_ir"]):
        raise FormatError(f"this lowbit lowers the kernel of artifact {artifact.path} differently from the lowbit "
                          f"that built it ({built_with})", hint=artifact.recompile_hint())
    return kernel, lowered


def _load_triton(artifact: Artifact, lowered: Any, target: Any, mode: str) -> tuple[Any, str, str]:
    from .lowering.triton.artifact import TritonArtifact

    try:
        tart = TritonArtifact.load(artifact.file(artifact.manifest["launch"]["launch_file"]))
    except BackendError as exc:
        raise FormatError(f"artifact {artifact.path}: {exc.message}", hint=artifact.recompile_hint()) from None
    if mode == "interpret":
        from .lowering.triton.launcher import TritonKernel

        return (TritonKernel(lowered.kernel, target, tart.source, "interpret", param_formats=lowered.param_formats),
                "cpu", "interpret")
    return _TritonCubinKernel(tart, lowered.kernel), "cuda", "native"


def _load_tvm_llvm(artifact: Artifact) -> Any:
    from .lowering.tvm.launcher import load_tvm_kernel
    from .lowering.tvm.target import host_cpu

    launch = artifact.manifest["launch"]
    cpu = host_cpu()
    lacking = sorted(set(launch.get("cpu_features", ())) - set(cpu.features))
    if lacking:
        shown = ", ".join(lacking[:8]) + (", ..." if len(lacking) > 8 else "")
        raise BackendError(f"artifact {artifact.path} was compiled for CPU {launch.get('mcpu')!r}, whose features "
                           f"this CPU ({cpu.mcpu}) lacks: {shown}", hint=artifact.recompile_hint() + " (on this machine)")
    return load_tvm_kernel(artifact.file(launch["library"]))


_SAME_BITS = {"uint32": "int32", "uint16": "int16"}


class LoadedKernel:
    """A kernel loaded from an artifact: call it with tensors (outputs are written in place).

    ``k(x, y, out)`` binds arguments in parameter order (:attr:`param_names`), ``k(x=x, y=y, out=out)`` by
    name. Packed low-bit parameters take the storage from ``k.param_formats[name].pack(codes)`` (int32 /
    int16 torch storage is accepted for uint32 / uint16 words: the same bits). Arguments are checked
    (names, dtypes, ranks, sizes, device) before every launch.
    """

    def __init__(self, artifact: Artifact, kernel: Any, lowered: Any, target: Any, built: Any, mode: str,
                 device: str):
        from .driver import CompiledKernel

        self.artifact = artifact
        self.kernel = kernel
        self.lowered = lowered
        self.mode = mode
        self.device = device
        self._built = built
        # a triton:sm_XX artifact interpreted on the CPU takes CPU tensors
        self._compiled = CompiledKernel(kernel=kernel, lowered=lowered, target=target, built=built, device=device)
        self._names = tuple(p.name for p in lowered.kernel.params)
        self._widen = {p.name: _SAME_BITS[p.value.type.dtype] for p in lowered.kernel.tensor_params
                       if p.value.type.dtype in _SAME_BITS}
        self._torch_only = mode == "interpret"

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def target(self) -> str:
        return self.artifact.target

    @property
    def manifest(self) -> Mapping[str, Any]:
        return self.artifact.manifest

    @property
    def param_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def param_formats(self) -> Mapping[str, Any]:
        """Packed formats of low-bit parameters: name -> :class:`~lowbit.lowering.passes.packed_format.PackedFormat`
        (``.pack(codes)`` gives the storage the kernel takes)."""
        return self.lowered.param_formats

    @property
    def source(self) -> str:
        """The generated code the artifact holds (Triton Python or TensorIR text)."""
        return self._compiled.source

    def __repr__(self) -> str:
        return (f"<lowbit.LoadedKernel {self.name} {self.target} ({self.mode}) "
                f"({', '.join(self._names)}) from {self.artifact.path}>")

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._names):
            raise KernelArgumentError(f"kernel {self.name} takes {len(self._names)} arguments "
                                      f"({', '.join(self._names)}), got {len(args)} positional ones")
        bound = dict(zip(self._names, args))
        twice = sorted(set(bound) & set(kwargs))
        if twice:
            raise KernelArgumentError(f"kernel {self.name}: argument(s) {', '.join(twice)} given by position and "
                                      "by name")
        self.launch({**bound, **kwargs})

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None) -> None:
        """Run the kernel on ``args`` (every parameter by name). ``shape_bindings`` gives size symbols that
        no argument's shape determines."""
        args = self._normalize(args)
        self._compiled.check_args(args)
        if shape_bindings:
            self._built.launch(args, shape_bindings=shape_bindings)
        else:
            self._built.launch(args)

    def _normalize(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """numpy -> torch for Triton's interpreter; signed int32/int16 word tensors viewed as uint32/uint16."""
        out = dict(args)
        for name, value in args.items():
            is_numpy = type(value).__module__.startswith("numpy")
            if self._torch_only and is_numpy:
                import torch

                value, is_numpy = torch.from_numpy(value), False
            signed = self._widen.get(name)
            if signed is not None and str(value.dtype).rsplit(".", 1)[-1] == signed:
                unsigned = "u" + signed
                if is_numpy:
                    value = value.view(unsigned)
                else:
                    import torch

                    value = value.view(getattr(torch, unsigned))
            out[name] = value
        return out


# ---------------------------------------------------------------------------------------------------------
# Triton cubins on a GPU (no recompilation: Triton's CUDA driver loads the cubin and launches it)
# ---------------------------------------------------------------------------------------------------------
class CubinLaunchPlan:
    """How to call an AOT Triton kernel: the cubin's arguments in order, the grid, and the checks of the
    assumptions it was compiled under (contiguous last dimensions, 16-byte aligned pointers, integers
    divisible by 16, 32-bit indexing). Pure host logic (no GPU needed), used by the GPU launcher."""

    def __init__(self, artifact: Any, kernel: Any):
        self.artifact = artifact
        self.kernel = kernel
        self.aot = artifact.aot
        self.source = artifact.source
        self.args_by_name = {a.name: a for a in artifact.source.args}
        self.constants = {c.name: c.value for c in kernel.constants}

    def grid(self, sizes: Mapping[str, int]) -> tuple[int, int, int]:
        from .ir.symbolic import dim_eval

        dims = [int(dim_eval(d, sizes)) for d in self.kernel.grid]
        return tuple(dims + [1] * (3 - len(dims)))[:3]  # type: ignore[return-value]

    def sizes(self, args: Mapping[str, Any], shape_bindings: Mapping[str, int] | None) -> dict[str, int]:
        from .lowering.triton.launcher import bind_sizes

        try:
            return bind_sizes(self.kernel, args, self.constants, shape_bindings)
        except BackendError as exc:
            raise KernelArgumentError(f"kernel {self.kernel.name}: {exc.message}", hint=exc.hint) from None

    def values(self, args: Mapping[str, Any], sizes: Mapping[str, int]) -> list[Any]:
        """Every parameter of the compiled Triton function, in order (constexprs included, as Triton's own
        launcher expects: it skips them)."""
        from .lowering.triton.launcher import scalar_value

        out: list[Any] = []
        for name in self.aot.arg_names:
            if name in self.aot.constants:
                out.append(self.aot.constants[name])
                continue
            a = self.args_by_name[name]
            if a.kind == "pointer":
                out.append(args[a.source])
            elif a.kind == "stride":
                out.append(int(args[a.source].stride(a.axis)))
            elif a.kind == "symbol":
                out.append(int(sizes[a.source]))
            elif a.kind == "scalar":
                out.append(scalar_value(a.source, args[a.source], a.dtype or "float32"))
            else:
                raise BackendError(f"AOT kernel {self.aot.kernel_name}: parameter {name} ({a.kind}) has no value",
                                   hint="recompile the artifact")
        return out

    def check(self, args: Mapping[str, Any], values: Sequence[Any]) -> None:
        """KernelArgumentError when an argument breaks an assumption the cubin was compiled under."""
        assumed = self.artifact.assumptions
        name = self.kernel.name
        for tensor in assumed.get("contiguous", ()):
            t = args[tensor]
            if t.dim() and t.shape[-1] > 1 and t.stride(-1) != 1:
                raise KernelArgumentError(f"kernel {name}: argument {tensor} must have a contiguous last dimension "
                                          f"(stride 1), got strides {tuple(t.stride())}",
                                          hint="pass tensor.contiguous(); the artifact was compiled for that")
        by_name = dict(zip(self.aot.arg_names, values))
        for pointer in assumed.get("aligned", ()):
            t = args[self.args_by_name[pointer].source]
            if t.data_ptr() % 16:
                raise KernelArgumentError(f"kernel {name}: argument {self.args_by_name[pointer].source} must start "
                                          "at a 16-byte aligned address", hint="pass a fresh (or cloned) tensor")
        for integer in assumed.get("divisible", ()):
            value = by_name.get(integer)
            if isinstance(value, int) and value % 16:
                a = self.args_by_name[integer]
                what = f"stride {a.axis} of {a.source}" if a.kind == "stride" else f"size {a.source}"
                raise KernelArgumentError(f"kernel {name}: {what} is {value}, but the artifact was compiled assuming "
                                          "a multiple of 16", hint="recompile without --divisible for this tensor")
        for p in self.kernel.tensor_params:
            t = args[p.name]
            span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) if t.numel() else 0
            if span >= 1 << 31:
                raise KernelArgumentError(f"kernel {name}: argument {p.name} spans {span} elements; the artifact "
                                          "uses 32-bit indexing (at most 2^31 - 1)",
                                          hint="split the call, or run the kernel through lowbit.jit")


class _TritonCubinKernel:
    """Launch an artifact's cubin on the current CUDA device with Triton's own CUDA launcher."""

    def __init__(self, artifact: Any, kernel: Any):
        import torch
        from triton.runtime import driver

        self.plan = CubinLaunchPlan(artifact, kernel)
        self.source = artifact.source
        aot = artifact.aot
        active = driver.active
        self.device = torch.cuda.current_device()
        max_shared = active.utils.get_device_properties(self.device)["max_shared_mem"]
        if aot.shared > max_shared:
            raise BackendError(f"AOT kernel {aot.kernel_name} needs {aot.shared} bytes of shared memory; this GPU "
                               f"offers {max_shared}", hint="recompile with smaller tiles or fewer stages")
        self.module, self.function, _, _, max_threads = active.utils.load_binary(
            aot.kernel_name, aot.cubin, aot.shared, self.device)
        if aot.num_warps * 32 > max_threads:
            raise BackendError(f"AOT kernel {aot.kernel_name} needs {aot.num_warps * 32} threads per block; the "
                               f"loaded cubin allows {max_threads}", hint="recompile with fewer warps")
        names = list(aot.arg_names)
        signature = {name: aot.signature.get(name, "constexpr") for name in names}
        src = SimpleNamespace(fn=SimpleNamespace(arg_names=names), signature=signature, constants=dict(aot.constants))
        meta = {"num_ctas": 1, "global_scratch_size": 0, "global_scratch_align": 1, "profile_scratch_size": 0,
                "profile_scratch_align": 1, "launch_cooperative_grid": False, "launch_pdl": False,
                "tensordesc_meta": None, "instrumentation_mode": ""}
        meta.update({k: v for k, v in aot.metadata.items() if v is not None})
        self.launcher = active.launcher_cls(src, SimpleNamespace(**meta))
        self.packed_metadata = (aot.num_warps, meta["num_ctas"], aot.shared)

    def launch(self, args: Mapping[str, Any], *, shape_bindings: Mapping[str, int] | None = None) -> None:
        from triton.runtime import driver

        plan = self.plan
        for p in plan.kernel.tensor_params:
            if args[p.name].get_device() != self.device:
                raise KernelArgumentError(f"kernel {plan.kernel.name}: argument {p.name} is on "
                                          f"{args[p.name].device}; the kernel was loaded on cuda:{self.device}")
        sizes = plan.sizes(args, shape_bindings)
        grid = plan.grid(sizes)
        if min(grid) <= 0:
            return
        values = plan.values(args, sizes)
        plan.check(args, values)
        stream = driver.active.get_current_stream(self.device)
        # no launch hooks: they expect the launch metadata of Triton's JIT, which an AOT kernel does not have
        self.launcher(grid[0], grid[1], grid[2], stream, self.function, self.packed_metadata, None, None, None,
                      *values)

