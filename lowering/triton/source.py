"""Turn generated Triton source *text* into an imported Python module.

``@triton.jit`` reads a kernel's source with :mod:`inspect` (to hash and parse it), so a kernel must live
in a real file. :func:`import_source` writes the text to a content-addressed file in a cache directory
(atomically: write a temporary file, then rename) and imports it under a unique module name. The same
text always maps to the same file, so repeated loads and concurrent processes agree.

>>> mod = import_source("import triton\\n@triton.jit\\ndef k(x): pass\\n", name="demo")  # doctest: +SKIP
>>> mod.__file__                                                                        # doctest: +SKIP
'~/.cache/lowbit/triton-src/demo_3f1a....py'
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from lowbit.errors import BackendError, SourceLocation

__all__ = ["default_cache_dir", "source_hash", "source_path", "import_source"]


def default_cache_dir() -> Path:
    """lowbit's cache root (one definition: :func:`lowbit.cache.default_cache_dir`)."""
    from ...cache import default_cache_dir as cache_root

    return cache_root()


def source_hash(source_text: str) -> str:
    """The sha256 hex digest of the source text (its UTF-8 bytes)."""
    return hashlib.sha256(source_text.encode("utf-8")).hexdigest()


def _safe_stem(name: str | None) -> str:
    stem = re.sub(r"[^0-9A-Za-z_]", "_", name or "kernel")[:40].strip("_") or "kernel"
    return stem if not stem[0].isdigit() else "k_" + stem


def source_path(source_text: str, *, name: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``source_text`` to its content-addressed file (if not already there) and return the path.

    The file is ``<cache_dir>/triton-src/<name>_<sha256[:20]>.py``. An existing file whose content differs
    (a torn or corrupted write) is replaced.
    """
    if not isinstance(source_text, str):
        raise BackendError(f"Triton source must be a str, got {type(source_text).__name__}",
                           hint="pass the generated Python source text")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "triton-src"
    path = folder / f"{_safe_stem(name)}_{source_hash(source_text)[:20]}.py"
    data = source_text.encode("utf-8")
    try:
        if path.is_file() and path.read_bytes() == data:
            return path
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise BackendError(f"cannot write generated Triton source to {folder}: {exc}",
                           hint="set LOWBIT_CACHE_DIR to a writable folder") from exc
    return path


def import_source(source_text: str, *, name: str | None = None, cache_dir: str | os.PathLike | None = None,
                  module_suffix: str = "") -> ModuleType:
    """Write ``source_text`` to the cache and import it as a fresh module; return the module.

    The module is registered in :data:`sys.modules` as ``lowbit_gen_<name>_<hash>[_<suffix>]`` (Triton and
    :mod:`inspect` look modules up there). Importing the same text twice gives two independent module
    objects; callers that want reuse keep their own table (see :mod:`lowbit.lowering.triton.runner`).
    A syntax error in the text raises :class:`~lowbit.errors.BackendError` pointing at the line.
    """
    path = source_path(source_text, name=name, cache_dir=cache_dir)
    try:
        compile(source_text, str(path), "exec")
    except SyntaxError as exc:
        line = exc.lineno or 1
        lines = source_text.splitlines()
        text = lines[line - 1] if 0 < line <= len(lines) else None
        raise BackendError(f"generated Triton source does not parse: {exc.msg}",
                           location=SourceLocation(str(path), line, exc.offset or 1, text),
                           hint="this is a bug in the code generator; the source is kept at the path above") from None
    module_name = "lowbit_gen_" + path.stem + (f"_{module_suffix}" if module_suffix else "")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise BackendError(f"importing generated Triton source {path} failed: {type(exc).__name__}: {exc}",
                           hint="this is a bug in the code generator; the source is kept at the path above") from exc
    return module
