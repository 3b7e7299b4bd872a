"""Ahead-of-time compilation of generated Triton source to PTX and cubin, without a GPU.

``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))`` runs the
whole Triton pipeline (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin with the bundled ptxas) for any supported
NVIDIA architecture; no driver or device is involved. :func:`compile_aot` wraps that for source *text*
and returns an :class:`AotArtifact` holding the PTX, the cubin and what a launcher needs.

Signature values are Triton type strings (``"*fp16"``, ``"*u32"``, ``"i32"``, ``"fp32"``...). A ``":16"``
suffix (as in Triton's own AOT tool) declares the pointer 16-byte aligned / the integer a multiple of 16;
that is what lets Triton emit 16-byte vector loads, as its JIT does for aligned torch tensors.

>>> art = compile_aot(src, "matmul", {"a": "*fp16:16", "b": "*fp16:16", "c": "*fp16:16", "M": "i32"},
...                   {"BM": 128, "BN": 128, "BK": 64}, target="sm_90")          # doctest: +SKIP
>>> art.stats["wgmma.mma_async"] > 0, len(art.cubin) > 0                       # doctest: +SKIP
(True, True)
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from lowbit.errors import BackendError

from .ptx import ptx_stats

__all__ = ["AotArtifact", "compile_aot", "parse_target", "TARGETS"]

#: Architectures lowbit compiles for and checks (Triton 3.9 accepts these compute capabilities).
TARGETS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")
_TARGET_RE = re.compile(r"^(?:sm_?)?(\d{2,3})a?$")
_ENV_LOCK = threading.Lock()
_ARTIFACT_VERSION = 1
# Metadata fields of Triton's compiled kernel that a launcher needs (beyond grid and arguments).
_LAUNCH_FIELDS = ("name", "shared", "num_warps", "num_ctas", "num_stages", "global_scratch_size",
                  "global_scratch_align", "profile_scratch_size", "profile_scratch_align", "tmem_size",
                  "ptx_version", "enable_fp_fusion", "launch_cooperative_grid", "launch_pdl", "hash",
                  "triton_version")


def parse_target(target: str | int) -> int:
    """Compute capability of an NVIDIA target: ``"sm_90"``, ``"sm_90a"``, ``"90"`` or ``90`` -> ``90``."""
    text = str(target).strip().lower()
    match = _TARGET_RE.match(text)
    if not match:
        raise BackendError(f"unknown CUDA target {target!r}; expected 'sm_<capability>' such as "
                           f"{', '.join(TARGETS)}")
    return int(match.group(1))


@dataclass(frozen=True)
class AotArtifact:
    """One kernel compiled ahead of time for one architecture.

    ``arg_names`` lists every parameter of the Python kernel in order; ``signature`` the runtime ones (those
    the cubin takes, in that order, followed by Triton's scratch pointers) with their Triton types;
    ``constants`` the compile-time ones. ``shared`` is the dynamic shared memory in bytes and ``metadata``
    Triton's launch facts (scratch sizes, PTX version, hash, ...).
    """

    kernel_name: str
    target: str
    capability: int
    arg_names: tuple[str, ...]
    signature: Mapping[str, str]
    divisibility: tuple[str, ...]
    constants: Mapping[str, Any]
    num_warps: int
    num_stages: int
    shared: int
    ptx: str = field(repr=False)
    cubin: bytes = field(repr=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def stats(self) -> dict[str, Any]:
        """:func:`~lowbit.lowering.triton.ptx.ptx_stats` of the PTX."""
        return ptx_stats(self.ptx)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<kernel>.<target>.{ptx,cubin,json}`` into ``directory``; return the JSON file's path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.kernel_name}.{self.target}"
        info = {k: v for k, v in asdict(self).items() if k not in ("ptx", "cubin")}
        info["format_version"] = _ARTIFACT_VERSION
        try:
            text = json.dumps(info, indent=2, sort_keys=True)
        except TypeError as exc:
            raise BackendError(f"AOT artifact of {self.kernel_name!r} has constants that are not JSON values: {exc}",
                               hint="use ints, floats, bools or strings as constexpr values") from exc
        (folder / f"{stem}.ptx").write_text(self.ptx)
        (folder / f"{stem}.cubin").write_bytes(self.cubin)
        path = folder / f"{stem}.json"
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AotArtifact":
        """Read an artifact written by :meth:`save` (pass the ``.json`` path)."""
        path = Path(path)
        try:
            info = json.loads(path.read_text())
            version = info.pop("format_version", None)
            if version != _ARTIFACT_VERSION:
                raise BackendError(f"{path} holds AOT artifact format {version!r}, expected {_ARTIFACT_VERSION}",
                                   hint="recompile the kernel with this lowbit version")
            base = str(path)[:-len(".json")] if path.name.endswith(".json") else str(path)
            return cls(ptx=Path(base + ".ptx").read_text(), cubin=Path(base + ".cubin").read_bytes(),
                       **{**info, "arg_names": tuple(info["arg_names"]),
                          "divisibility": tuple(info["divisibility"])})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"cannot read AOT artifact {path}: {type(exc).__name__}: {exc}",
                               hint="recompile the kernel") from exc


@contextlib.contextmanager
def _fp_fusion_env(enabled: bool) -> Iterator[None]:
    """Set ``TRITON_DEFAULT_FP_FUSION`` for the duration of a compile unless the user already set it."""
    with _ENV_LOCK:
        had = "TRITON_DEFAULT_FP_FUSION" in os.environ
        if not had:
            os.environ["TRITON_DEFAULT_FP_FUSION"] = "1" if enabled else "0"
        try:
            yield
        finally:
            if not had:
                os.environ.pop("TRITON_DEFAULT_FP_FUSION", None)


def _split_signature(kernel_name: str, params: list[Any], signature: Mapping[str, str],
                     constexprs: Mapping[str, Any]) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    names = [p.name for p in params]
    unknown = sorted((set(signature) | set(constexprs)) - set(names))
    if unknown:
        raise BackendError(f"kernel {kernel_name!r} has no parameter(s) {', '.join(unknown)}; its parameters are "
                           f"{', '.join(names)}")
    both = sorted(set(signature) & set(constexprs))
    if both:
        raise BackendError(f"parameter(s) {', '.join(both)} of {kernel_name!r} given both a type and a constant value",
                           hint="a parameter is either a runtime argument (signature) or a constexpr")
    full: dict[str, str] = {}
    divisible: list[str] = []
    for p in params:
        if p.name in constexprs:
            full[p.name] = "constexpr"
            continue
        if p.is_constexpr:
            raise BackendError(f"constexpr parameter {p.name!r} of kernel {kernel_name!r} has no value",
                               hint="add it to constexprs")
        if p.name not in signature:
            raise BackendError(f"parameter {p.name!r} of kernel {kernel_name!r} has no type in the signature",
                               hint="give it a Triton type such as '*fp16', 'i32' or 'fp32'")
        ty = str(signature[p.name]).strip()
        if ty.endswith(":16"):
            ty = ty[:-3]
            divisible.append(p.name)
        elif ":" in ty:
            raise BackendError(f"bad type {signature[p.name]!r} for {p.name!r}: the only attribute is ':16'")
        full[p.name] = ty
    return full, divisible, dict(constexprs)


def compile_aot(source_text: str, kernel_name: str, signature: Mapping[str, str], constexprs: Mapping[str, Any],
                target: str | int = "sm_90", num_warps: int = 4, num_stages: int = 3, *,
                fp_fusion: bool = True, cache_dir: str | os.PathLike | None = None) -> AotArtifact:
    """Compile kernel ``kernel_name`` of Triton source text for NVIDIA ``target``; no GPU needed.

    ``signature`` maps each runtime parameter to its Triton type (``":16"`` suffix: 16-divisible);
    ``constexprs`` maps compile-time parameters (``tl.constexpr`` ones, and any other to specialize) to values.
    ``fp_fusion`` chooses whether a*b+c may fuse into fma (Triton's default today).
    """
    capability = parse_target(target)
    if not (isinstance(num_warps, int) and num_warps > 0 and num_warps & (num_warps - 1) == 0):
        raise BackendError(f"num_warps must be a power of two, got {num_warps!r}")
    if not (isinstance(num_stages, int) and num_stages >= 1):
        raise BackendError(f"num_stages must be a positive int, got {num_stages!r}")

    from .runner import load

    module = load(source_text, mode="native", name=kernel_name, cache_dir=cache_dir)
    fn = module.kernel(kernel_name)
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction) and hasattr(fn, "fn"):
        fn = fn.fn  # heuristics / autotune wrappers: compile the function inside
    full, divisible, constants = _split_signature(kernel_name, list(fn.params), signature, constexprs)

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    src = ASTSource(fn, signature=full, constexprs=constants, attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": bool(fp_fusion)}
    try:
        with _fp_fusion_env(bool(fp_fusion)):
            compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)
    except Exception as exc:  # Triton raises CompilationError, RuntimeError (ptxas), ValueError, ...
        message = str(exc).strip() or type(exc).__name__
        raise BackendError(f"Triton could not compile kernel {kernel_name!r} for sm_{capability}: {message}",
                           hint="check the signature / constexprs; otherwise it is a code generator bug") from exc
    meta = compiled.metadata._asdict()
    launch = {key: _jsonable(meta[key]) for key in _LAUNCH_FIELDS if key in meta}
    return AotArtifact(
        kernel_name=str(meta.get("name", kernel_name)), target=f"sm_{capability}", capability=capability,
        arg_names=tuple(fn.arg_names), signature={k: v for k, v in full.items() if v != "constexpr"},
        divisibility=tuple(divisible), constants=constants, num_warps=int(meta["num_warps"]),
        num_stages=int(meta["num_stages"]), shared=int(meta["shared"]), ptx=compiled.asm["ptx"],
        cubin=bytes(compiled.asm["cubin"]), metadata=launch)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
