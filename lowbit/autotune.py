"""Autotuning: pick the fastest of several compile-time configurations, once per device, and remember it.

The mechanism is independent of kernels: a *space* of candidate configurations (dicts of constants), a
``prepare(config) -> run`` callable that compiles a candidate and returns a zero-argument function that runs it
once, and a persisted choice keyed by (kernel, specialization key, device fingerprint). Timing uses medians of
repeats (CUDA events on a GPU, ``perf_counter`` on a CPU). A candidate that fails to compile or run is logged
and skipped; if all fail, :class:`lowbit.errors.CompileError` lists why.

>>> tuner = Tuner()
>>> best = tuner.choose("gemv", {"N": 4096, "K": 4096},
...                     [{"BN": 64}, {"BN": 128}], prepare=lambda cfg: (lambda: None))
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .cache import default_cache_dir
from .errors import CompileError

log = logging.getLogger("lowbit.autotune")

Config = Mapping[str, Any]


@lru_cache(maxsize=None)
def device_fingerprint(device: str = "cpu") -> str:
    """A short, stable description of the hardware a timing was taken on.

    CPU: model name, logical cores, and the threads torch uses. CUDA: device name and compute capability.
    """
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{props.name}:sm_{props.major}{props.minor}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    return f"cpu:{model}:{os.cpu_count()}cores:{threads}threads"


@dataclass(frozen=True)
class Measurement:
    config: dict[str, Any]
    median_s: float | None
    error: str | None = None


def time_callable(run: Callable[[], Any], *, repeats: int = 7, warmup: int = 2, device: str = "cpu") -> float:
    """Median wall time in seconds of ``run()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    samples = []
    if device.startswith("cuda"):
        import torch

        for _ in range(repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop) / 1e3)
    else:
        for _ in range(repeats):
            begin = time.perf_counter()
            run()
            samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


class Tuner:
    """Chooses among candidate configurations and persists the choice in ``<cache>/autotune/*.json``."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, repeats: int = 7, warmup: int = 2,
                 progress: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir() / "autotune"
        self.repeats, self.warmup, self.progress = repeats, warmup, progress

    def _record_path(self, kernel: str, key: Mapping[str, Any], device: str) -> Path:
        text = json.dumps({"kernel": kernel, "key": key, "device": device_fingerprint(device)},
                          sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        return self.root / f"{kernel}-{digest}.json"

    def lookup(self, kernel: str, key: Mapping[str, Any], candidates: Sequence[Config],
               device: str = "cpu") -> dict[str, Any] | None:
        """The persisted choice, if one exists and is still among the candidates."""
        path = self._record_path(kernel, key, device)
        try:
            record = json.loads(path.read_text())
            choice = dict(record["choice"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        normalized = [json.loads(json.dumps(dict(c), default=str)) for c in candidates]
        return choice if choice in normalized else None

    def measure(self, candidates: Sequence[Config], prepare: Callable[[Config], Callable[[], Any]],
                device: str = "cpu", label: str = "autotune") -> list[Measurement]:
        """Time every candidate; failures are recorded, logged and skipped."""
        from tqdm.auto import tqdm

        results = []
        bar = tqdm(list(candidates), desc=label, unit="cfg", disable=not self.progress, leave=False)
        for config in bar:
            bar.set_postfix_str(", ".join(f"{k}={v}" for k, v in config.items()))
            try:
                run = prepare(config)
                seconds = time_callable(run, repeats=self.repeats, warmup=self.warmup, device=device)
                results.append(Measurement(dict(config), seconds))
            except Exception as problem:  # a single bad candidate must not stop tuning
                log.warning("autotune %s: candidate %s failed: %s", label, dict(config), problem)
                results.append(Measurement(dict(config), None, f"{type(problem).__name__}: {problem}"))
        return results

    def choose(self, kernel: str, key: Mapping[str, Any], candidates: Iterable[Config],
               prepare: Callable[[Config], Callable[[], Any]], device: str = "cpu") -> dict[str, Any]:
        """The best configuration: the persisted one if present, else measured now and persisted."""
        candidates = [dict(c) for c in candidates]
        if not candidates:
            raise CompileError(f"autotune {kernel}: the search space is empty")
        persisted = self.lookup(kernel, key, candidates, device)
        if persisted is not None:
            return persisted
        results = self.measure(candidates, prepare, device, label=f"autotune {kernel}")
        timed = [r for r in results if r.median_s is not None]
        if not timed:
            reasons = "; ".join(f"{r.config}: {r.error}" for r in results)
            raise CompileError(f"autotune {kernel}: every candidate failed ({reasons})",
                               hint="check the kernel compiles with one configuration first")
        best = min(timed, key=lambda r: r.median_s)
        self._persist(kernel, key, device, best, results)
        return best.config

    def _persist(self, kernel: str, key: Mapping[str, Any], device: str, best: Measurement,
                 results: list[Measurement]) -> None:
        path = self._record_path(kernel, key, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"kernel": kernel, "key": dict(key), "device": device_fingerprint(device),
                  "choice": best.config, "median_s": best.median_s,
                  "measurements": [{"config": r.config, "median_s": r.median_s, "error": r.error}
                                   for r in results]}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
