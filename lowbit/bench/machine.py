"""A description of the machine a benchmark ran on, for the JSON results and the README section.

Everything is read without importing the heavy toolchains: CPU facts from ``/proc`` and ``/sys``, versions
from the installed packages' metadata (torch is imported by every benchmark anyway).

>>> info = describe_machine()
>>> sorted(info)[:3]
['cores', 'cpu', 'cpu_flags']
>>> info["cores"] >= 1
True
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["describe_machine", "describe_gpu", "last_level_cache_bytes", "machine_summary"]

_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
_PACKAGES = ("torch", "numpy", "triton", "apache-tvm", "transformers", "ml_dtypes")


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def _size_bytes(text: str) -> int | None:
    text = text.strip().upper()
    for suffix, mult in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if text.endswith(suffix) and text[:-1].isdigit():
            return int(text[:-1]) * mult
    return int(text) if text.isdigit() else None


def last_level_cache_bytes() -> int | None:
    """Size of the largest CPU cache (L3 on most machines) from sysfs, or None where unknown."""
    best = None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            size = _size_bytes((index / "size").read_text())
        except OSError:
            continue
        if size is not None and (best is None or size > best):
            best = size
    return best


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_gpu(device: str = "cuda") -> dict[str, Any]:
    """The CUDA device a benchmark ran on: name, compute capability, multiprocessors, memory, L2, CUDA version."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "capability": f"sm_{props.major}{props.minor}",
            "multiprocessors": props.multi_processor_count, "memory_bytes": props.total_memory,
            "l2_bytes": int(getattr(props, "L2_cache_size", 0) or 0) or None, "cuda": torch.version.cuda}


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model, usable cores, cache, memory, OS, Python and package versions, as a JSON-ready dict; with a
    CUDA ``device`` also the GPU (:func:`describe_gpu`) under ``"gpu"``."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    out = {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in _FLAGS_OF_INTEREST if f in flags],
        "cores": max(1, cores),
        "llc_bytes": last_level_cache_bytes(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "lowbit": _version("lowbit"),
    }
    if device.startswith("cuda"):
        out["gpu"] = describe_gpu(device)
    return out


def machine_summary(machine: dict[str, Any]) -> str:
    """One line: ``"AMD EPYC, 2 cores, avx512f/amx_tile, 32 MiB LLC, 24 GiB RAM; torch 2.13.0+cpu, ..."``."""
    parts = [str(machine.get("cpu") or "unknown CPU"), f"{machine.get('cores', '?')} cores"]
    gpu = machine.get("gpu")
    if gpu:
        parts.insert(0, f"{gpu['name']} ({gpu['capability']}, {gpu['multiprocessors']} SMs, "
                        f"{gpu['memory_bytes'] / 2**30:.0f} GiB, CUDA {gpu['cuda']})")
    if machine.get("cpu_flags"):
        parts.append("/".join(machine["cpu_flags"]))
    if machine.get("llc_bytes"):
        parts.append(f"{machine['llc_bytes'] / 2**20:.0f} MiB last-level cache")
    if machine.get("memory_bytes"):
        parts.append(f"{machine['memory_bytes'] / 2**30:.0f} GiB RAM")
    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("packages") or {}).items() if v)
    return ", ".join(parts) + (f"; {versions}" if versions else "")
