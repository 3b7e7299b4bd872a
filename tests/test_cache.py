"""The compile cache: hits, corruption recovery, version sensitivity, concurrent builders."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from lowbit.cache import CacheWarning, CompileCache, make_key
from lowbit.cli import main


def _builder(calls: list, payload: str = "artifact"):
    def build(folder: Path):
        calls.append(folder)
        (folder / "kernel.src").write_text(payload)
        (folder / "sub").mkdir()
        (folder / "sub" / "blob.bin").write_bytes(bytes(range(256)))
        return {"kernel_name": "k", "target": "tvm:llvm"}
    return build


def test_build_once_then_hit(tmp_path):
    cache = CompileCache(tmp_path)
    key = make_key({"ir": "x"})
    calls: list = []
    first = cache.get_or_build(key, _builder(calls))
    second = cache.get_or_build(key, _builder(calls))
    assert len(calls) == 1
    assert first.read_text("kernel.src") == second.read_text("kernel.src") == "artifact"
    assert second.meta["kernel_name"] == "k"
    assert set(second.files) == {"kernel.src", "sub/blob.bin"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupt_entry_is_reported_and_rebuilt(tmp_path, damage):
    cache = CompileCache(tmp_path)
    key = make_key({"ir": "y"})
    calls: list = []
    entry = cache.get_or_build(key, _builder(calls))
    blob = entry.file("sub/blob.bin")
    if damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:100])
    elif damage == "flip":
        data = bytearray(blob.read_bytes())
        data[7] ^= 0xFF
        blob.write_bytes(bytes(data))
    elif damage == "delete":
        blob.unlink()
    else:
        entry.file("entry.json").write_text("{not json")
    with pytest.warns(CacheWarning, match="rebuilding"):
        rebuilt = cache.get_or_build(key, _builder(calls))
    assert len(calls) == 2
    assert rebuilt.read_bytes("sub/blob.bin") == bytes(range(256))


def test_changed_compiler_version_misses():
    parts = {"ir": "same kernel", "target": "tvm:llvm"}
    old = make_key(parts, versions={"lowbit": "0.1.0", "triton": "3.9.0", "apache-tvm": "0.27.0"})
    new = make_key(parts, versions={"lowbit": "0.1.0", "triton": "3.9.1", "apache-tvm": "0.27.0"})
    assert old != new
    assert make_key(parts) == make_key(dict(reversed(list(parts.items()))))  # order-insensitive


def test_failed_build_leaves_nothing(tmp_path):
    cache = CompileCache(tmp_path)
    key = make_key({"ir": "fails"})

    def broken(folder: Path):
        (folder / "half.src").write_text("partial")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build(key, broken)
    assert cache.get(key) is None
    assert not list((tmp_path / "tmp").iterdir())


def _concurrent_worker(root: str, key: str, start_at: float, out: str) -> None:
    cache = CompileCache(root)
    while time.time() < start_at:
        time.sleep(0.001)

    def build(folder: Path):
        time.sleep(0.3)  # a slow compile widens the race window
        (folder / "kernel.src").write_text(f"built by {os.getpid()}")
        with open(out, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return {}

    entry = cache.get_or_build(key, build)
    assert entry.read_text("kernel.src").startswith("built by")


def test_four_processes_build_once(tmp_path):
    key = make_key({"ir": "race"})
    builds = tmp_path / "builds.txt"
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5
    procs = [ctx.Process(target=_concurrent_worker, args=(str(tmp_path / "c"), key, start_at, str(builds)))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert len(builds.read_text().split()) == 1
    cache = CompileCache(tmp_path / "c")
    assert [entry.key for entry in cache.entries()] == [key]


def test_cache_cli(tmp_path, capsys):
    cache = CompileCache(tmp_path)
    cache.get_or_build(make_key({"ir": "cli"}), _builder([]))
    assert main(["cache", "info", "--dir", str(tmp_path)]) == 0
    assert "entries      : 1" in capsys.readouterr().out
    assert main(["cache", "list", "--dir", str(tmp_path)]) == 0
    assert "tvm:llvm" in capsys.readouterr().out
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 0
    assert CompileCache(tmp_path).entries() == []


def test_editing_the_compiler_source_changes_the_key(tmp_path, monkeypatch):
    from lowbit.cache import compiler_fingerprint, source_fingerprint

    pkg = tmp_path / "fakecompiler"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "codegen.py").write_text("EMIT = 'v1'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = source_fingerprint(("fakecompiler",))
    assert source_fingerprint(("fakecompiler",)) == before
    (pkg / "codegen.py").write_text("EMIT = 'v2'\n")
    after = source_fingerprint(("fakecompiler",))
    assert after != before
    parts = {"ir": "same kernel"}
    versions = {"lowbit": "0.1.0"}
    assert make_key(parts, {**versions, "lowbit-source": before}) != make_key(parts, {**versions, "lowbit-source": after})
    assert len(compiler_fingerprint()) == 16
