"""A content-hashed, crash-safe, multi-process-safe disk cache for compiled kernels.

Layout under the root (``$LOWBIT_CACHE_DIR``, else ``~/.cache/lowbit``)::

    entries/ab/abcdef.../        one finished entry: artifact files + entry.json
    tmp/                         entries being built (renamed into place when complete)
    locks/abcdef....lock         per-key build locks (fcntl), so concurrent processes build once

``entry.json`` records every file's size and SHA-256. A reader verifies them; an entry that is corrupt or
truncated is reported with a :class:`CacheWarning`, removed and rebuilt, never used and never fatal. Entries
become visible atomically (``os.rename`` of a complete directory), so a crash mid-write leaves only debris in
``tmp/``.

The key is a SHA-256 over a canonical JSON of everything that determines the artifact; :func:`make_key` adds the
versions of lowbit, Triton and TVM, so a compiler upgrade never serves a stale kernel.

>>> cache = CompileCache("/tmp/demo-cache")
>>> key = make_key({"kernel": "<ir text>", "target": "tvm:llvm", "consts": {"BM": 16}})
>>> def build(folder):
...     (folder / "kernel.txt").write_text("compiled")
...     return {"kernel_name": "demo"}
>>> entry = cache.get_or_build(key, build)
>>> entry.read_text("kernel.txt")
'compiled'
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import CacheError

ENTRY_MANIFEST = "entry.json"
CACHE_FORMAT_VERSION = 1


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, truncated, unreadable) and will be rebuilt."""


def default_cache_dir() -> Path:
    """``$LOWBIT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lowbit`` or ``~/.cache/lowbit``."""
    explicit = os.environ.get("LOWBIT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit"


#: the packages whose source is the compiler: a change to any file in them changes every cache key
COMPILER_PACKAGES = ("lowbit", "lowbit.dsl", "lowbit.lowering")
_SOURCE_SUFFIXES = (".py", ".lark", ".lbk")


@lru_cache(maxsize=None)
def compiler_fingerprint() -> str:
    """A SHA-256 over the compiler's own source files (lowbit, lowbit.dsl, lowbit.lowering), so that editing the
    compiler (a pass, a code generator, a kernel) never serves a kernel built by the old code, with no version
    number to remember to bump. Computed once per process (tens of milliseconds); located without importing."""
    return source_fingerprint(COMPILER_PACKAGES)


def source_fingerprint(packages: tuple[str, ...]) -> str:
    """SHA-256 (16 hex digits) over the names and contents of the source files of ``packages``."""
    import importlib.util

    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            base = Path(root)
            for path in sorted(base.rglob("*")):
                if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                    digest.update(f"{package}/{path.relative_to(base).as_posix()}\0".encode())
                    digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def toolchain_versions() -> dict[str, str]:
    """What invalidates compiled kernels: the versions of lowbit, Triton, TVM and torch (read without importing
    them) and :func:`compiler_fingerprint`."""
    from importlib import metadata

    from . import __version__

    versions = {"lowbit": __version__, "lowbit-source": compiler_fingerprint(),
                "cache-format": str(CACHE_FORMAT_VERSION)}
    for dist in ("triton", "apache-tvm", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def make_key(parts: Mapping[str, Any], versions: Mapping[str, str] | None = None) -> str:
    """SHA-256 hex key over ``parts`` (JSON-serializable) and the toolchain ``versions``."""
    payload = {"parts": parts, "versions": dict(versions if versions is not None else toolchain_versions())}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry: its folder, its key and the metadata its builder returned."""

    key: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    created: float = 0.0

    def file(self, name: str) -> Path:
        return self.path / name

    def read_text(self, name: str) -> str:
        return (self.path / name).read_text()

    def read_bytes(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    @property
    def size(self) -> int:
        return sum((self.path / name).stat().st_size for name in self.files)


class CompileCache:
    """The on-disk cache. Cheap to construct; folders are created on first write."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    # -- paths ------------------------------------------------------------------------------------------
    def _entry_dir(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise CacheError(f"malformed cache key {key!r}", hint="keys come from lowbit.cache.make_key()")
        return self.root / "entries" / key[:2] / key

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{key}.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None. A corrupt entry is warned about and removed."""
        folder = self._entry_dir(key)
        if not folder.is_dir():
            return None
        try:
            return self._verify(key, folder)
        except (OSError, ValueError, KeyError, TypeError) as problem:
            warnings.warn(f"lowbit cache: entry {key[:16]} in {folder} is unusable ({problem}); rebuilding it",
                          CacheWarning, stacklevel=2)
            self._discard(folder)
            return None

    def _verify(self, key: str, folder: Path) -> CacheEntry:
        manifest = json.loads((folder / ENTRY_MANIFEST).read_text())
        if manifest.get("key") != key:
            raise ValueError("its manifest names another key")
        files = manifest["files"]
        for name, record in files.items():
            path = folder / name
            size = path.stat().st_size
            if size != record["size"]:
                raise ValueError(f"{name} has {size} bytes, expected {record['size']} (truncated?)")
            if _sha256_file(path) != record["sha256"]:
                raise ValueError(f"{name} does not match its checksum")
        return CacheEntry(key=key, path=folder, meta=dict(manifest.get("meta", {})), files=tuple(sorted(files)),
                          created=float(manifest.get("created", 0.0)))

    # -- writing ----------------------------------------------------------------------------------------
    def get_or_build(self, key: str, build: Callable[[Path], Mapping[str, Any] | None]) -> CacheEntry:
        """Return the entry for ``key``, building it with ``build(folder) -> meta`` if absent or corrupt.

        ``build`` writes its files into ``folder`` (a fresh temporary directory) and returns JSON-serializable
        metadata. Concurrent callers in other processes wait on a per-key lock, then find the finished entry.
        """
        entry = self.get(key)
        if entry is not None:
            return entry
        with self._lock(key):
            entry = self.get(key)  # another process may have finished it while we waited
            if entry is not None:
                return entry
            return self._build(key, build)

    def _build(self, key: str, build: Callable[[Path], Mapping[str, Any] | None]) -> CacheEntry:
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=tmp_root))
        try:
            meta = dict(build(staging) or {})
            files = {}
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    name = path.relative_to(staging).as_posix()
                    if name == ENTRY_MANIFEST:
                        raise CacheError(f"a cache builder may not write {ENTRY_MANIFEST}")
                    files[name] = {"size": path.stat().st_size, "sha256": _sha256_file(path)}
            manifest = {"key": key, "created": time.time(), "meta": meta, "files": files,
                        "format": CACHE_FORMAT_VERSION}
            with open(staging / ENTRY_MANIFEST, "w") as handle:
                json.dump(manifest, handle, indent=1, sort_keys=True, default=str)
                handle.flush()
                os.fsync(handle.fileno())
            final = self._entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a corrupt leftover that get() could not remove, or a racing writer
                self._discard(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self._verify(key, final)

    def _discard(self, folder: Path) -> None:
        """Move a folder out of the way atomically, then delete it."""
        trash = self.root / "tmp" / f"trash-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # -- management -------------------------------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every readable entry (unverified files are skipped silently here; `get` reports them)."""
        result = []
        base = self.root / "entries"
        if not base.is_dir():
            return result
        for folder in sorted(base.glob("*/*")):
            try:
                manifest = json.loads((folder / ENTRY_MANIFEST).read_text())
                result.append(CacheEntry(key=folder.name, path=folder, meta=dict(manifest.get("meta", {})),
                                         files=tuple(sorted(manifest.get("files", {}))),
                                         created=float(manifest.get("created", 0.0))))
            except (OSError, ValueError):
                continue
        return result

    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""
        count = len(self.entries())
        for sub in ("entries", "tmp", "locks"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        return count

    def info(self) -> dict[str, Any]:
        entries = self.entries()
        return {"root": str(self.root), "entries": len(entries),
                "bytes": sum(entry.size for entry in entries if entry.path.exists()),
                "versions": toolchain_versions()}
