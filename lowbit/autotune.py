"""Autotuning: pick the fastest of several compile-time configurations, once per device, and remember it.

The mechanism is independent of kernels: a *space* of candidate configurations (dicts of constants), a
``prepare(config) -> run`` callable that compiles a candidate and returns a zero-argument function that runs it
once, and a persisted choice keyed by (kernel, specialization key, device fingerprint). Timing uses medians of
repeats (CUDA events on a GPU, ``perf_counter`` on a CPU). A candidate that fails to compile or run is logged
and skipped; if all fail, :class:`lowbit.errors.CompileError` lists why.

>>> tuner = Tuner()
>>> best = tuner.choose("gemv", {"N": 4096, "K": 4096},
...                     [{"BN": 64}, {"BN": 128}], prepare=lambda cfg: (lambda: None))

On kernels, :func:`autotune` stacks over ``@lowbit.jit``: the first call for each value of ``key`` (shape
symbols, scalar arguments, tensor arguments' shapes) times every configuration on scratch copies of the
outputs, and later calls (in this process or, through the persisted choice, in any other) reuse the winner::

    @lowbit.autotune(configs=[{"BLOCK": 64}, {"BLOCK": 256}, {"BLOCK": 1024}], key=["N"])
    @lowbit.jit
    def scale(x: f32[N], y: Out[f32[N]], BLOCK: const = 256): ...

    scale(x, y)                     # tunes BLOCK for this N (progress bar), then runs with the winner
    scale.choices                   # {key: Choice(config={"BLOCK": 1024}, source="measured")}
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import statistics
import tempfile
import threading
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
                log.warning("%s: candidate %s failed (skipped): %s", label, dict(config), problem)
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


# ---------------------------------------------------------------------------------------------------------
# @lowbit.autotune
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """The configuration chosen for one key, and whether it was ``"measured"`` now or ``"persisted"`` earlier."""

    config: dict[str, Any]
    source: str


class Autotuned:
    """A ``@lowbit.jit`` kernel whose compile-time constants in ``configs`` are chosen by timing (see
    :func:`autotune`). Call it like the kernel (without the tuned constants)."""

    def __init__(self, fn: Any, configs: Sequence[Config], key: Sequence[str], tuner: Tuner):
        import functools

        self.fn = fn
        self.configs = [dict(c) for c in configs]
        self.key = tuple(key)
        self.tuner = tuner
        self.tuned_names = sorted({name for config in self.configs for name in config})
        self._choices: dict[tuple, Choice] = {}
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn.fn, updated=())

    @property
    def choices(self) -> dict[tuple, Choice]:
        """Choices made so far in this process: (key values, backend, device, constants) -> :class:`Choice`."""
        return dict(self._choices)

    @property
    def kernel_id(self) -> str:
        """The name choices are persisted under: the kernel's qualified name and a hash of its source (an edited
        kernel is tuned afresh)."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.fn.fn.__module__}.{self.fn.fn.__qualname__}")
        digest = hashlib.sha256(self.fn.kernel_source.text.encode()).hexdigest()[:12]
        return f"{name}-{digest}"

    def __call__(self, *args: Any, **constants: Any) -> None:
        return self.run(*args, **constants)

    def run(self, *args: Any, backend: str | None = None, **constants: Any) -> None:
        """Run the kernel with the tuned configuration (tuning first if this key is new)."""
        config = self.best_config(*args, backend=backend, **constants)
        return self.fn.run(*args, backend=backend, **constants, **config)

    def best_config(self, *args: Any, backend: str | None = None, **constants: Any) -> dict[str, Any]:
        """The configuration for these arguments: remembered, persisted, or measured now (on scratch outputs)."""
        tuned = sorted(set(constants) & set(self.tuned_names))
        if tuned:
            raise CompileError(f"autotune {self.fn.__name__}: {', '.join(tuned)} are tuned; do not pass them",
                               hint="call the undecorated kernel (.fn) to choose them yourself")
        front = self._front(constants)
        unknown = sorted(set(self.tuned_names) - set(front.signature.constants))
        if unknown:
            raise CompileError(f"autotune {self.fn.__name__}: {', '.join(unknown)} are not constants of the kernel",
                               hint=f"its constants: {', '.join(front.signature.constants) or '(none)'}")
        names = [name for name, _ in front.signature.runtime]
        if len(args) != len(names):
            raise CompileError(f"{self.fn.__name__}() takes {len(names)} tensor/scalar argument"
                               f"{'s' if len(names) != 1 else ''} ({', '.join(names)}), got {len(args)}",
                               hint="compile-time constants are passed by keyword")
        bound = dict(zip(names, args))
        backend_name = backend if backend is not None else self.fn.backend
        device = next((str(a.device) for a in args if type(a).__module__.startswith("torch")
                       and hasattr(a, "device")), "cpu")
        values = _key_values(self.fn.__name__, self.key, front, bound, constants)
        fixed = {k: repr(v) for k, v in sorted(constants.items())}
        memo = (tuple(values.items()), str(backend_name), device, tuple(fixed.items()))
        with self._lock:
            hit = self._choices.get(memo)
            if hit is not None:
                return hit.config
            record_key = {"key": values, "backend": str(backend_name), "constants": fixed}
            persisted = self.tuner.lookup(self.kernel_id, record_key, self.configs, device)
            if persisted is not None:
                choice = Choice(persisted, "persisted")
            else:
                writable = {name for name, t in front.signature.tensor_types.items() if t.writable}

                def prepare(config: Config) -> Callable[[], Any]:
                    compiled = self.fn.compiled(backend=backend_name, device=device, **constants, **config)
                    scratch = {name: _scratch_copy(value) if name in writable else value
                               for name, value in bound.items()}
                    compiled.check_args(scratch)
                    return lambda: compiled.launch(scratch, check=False)

                config = self.tuner.choose(self.kernel_id, record_key, self.configs, prepare, device=device)
                choice = Choice(config, "measured")
            self._choices[memo] = choice
        return choice.config

    def _front(self, constants: Mapping[str, Any]) -> Any:
        """The checked kernel for the first configuration that compiles (for its signature)."""
        errors = []
        for config in self.configs:
            try:
                return self.fn.compile(**constants, **config)
            except CompileError as problem:
                errors.append(f"{config}: {problem.message}")
        raise CompileError(f"autotune {self.fn.__name__}: every candidate failed ({'; '.join(errors)})",
                           hint="check the kernel compiles with one configuration first")

    def __repr__(self) -> str:
        return f"<lowbit.autotune {self.fn.__name__}: {len(self.configs)} configs, key={list(self.key)}>"


def _scratch_copy(value: Any) -> Any:
    """A copy of an output tensor, so that timing runs never touch the caller's data."""
    if hasattr(value, "clone"):
        return value.clone()
    if hasattr(value, "copy"):
        return value.copy()
    return value


def _key_values(kernel: str, key: Sequence[str], front: Any, bound: Mapping[str, Any],
                constants: Mapping[str, Any]) -> dict[str, Any]:
    """Values of the key names: scalar arguments, tensor arguments' shapes, shape symbols, or constants."""
    from .ir.symbolic import Sym

    symbols: dict[str, int] = {}
    for name, ttype in front.signature.tensor_types.items():
        shape = getattr(bound.get(name), "shape", None)
        if shape is None:
            continue
        for dim, extent in zip(ttype.shape, shape):
            if isinstance(dim, Sym):
                symbols.setdefault(dim.name, int(extent))
    out: dict[str, Any] = {}
    for name in key:
        if name in bound:
            value = bound[name]
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape):
                out[name] = tuple(int(s) for s in shape)
            else:
                out[name] = value.item() if hasattr(value, "item") else value
        elif name in symbols:
            out[name] = symbols[name]
        elif name in constants:
            out[name] = repr(constants[name])
        else:
            raise CompileError(f"autotune {kernel}: key {name!r} is not an argument, shape symbol or constant",
                               hint=f"arguments: {', '.join(bound) or '(none)'}; shape symbols: "
                                    f"{', '.join(sorted(symbols)) or '(none)'}")
    return out


def autotune(configs: Sequence[Config], key: Sequence[str] = (), *, repeats: int = 7, warmup: int = 2,
             progress: bool = True, root: str | os.PathLike[str] | None = None) -> Callable[[Any], Autotuned]:
    """Decorator over ``@lowbit.jit``: choose the fastest of ``configs`` (dicts of compile-time constants) per
    value of ``key`` (names of shape symbols, scalar arguments or tensor arguments), per device.

    Timing: medians of ``repeats`` runs after ``warmup``, with a progress bar (``progress``); a candidate that
    fails to compile or run is skipped with a logged warning. Choices persist in ``root`` (default
    ``<cache>/autotune``) keyed by kernel (name + source hash), key values, backend and device fingerprint.

    >>> @autotune(configs=[{"BLOCK": 64}, {"BLOCK": 256}], key=["N"])      # doctest: +SKIP
    ... @lowbit.jit
    ... def scale(x: f32[N], y: Out[f32[N]], BLOCK: const = 256): ...
    """
    from .jit import JitFunction, jit

    configs = list(configs)
    if not configs:
        raise CompileError("autotune needs at least one configuration", hint="configs=[{'BLOCK': 128}, ...]")
    for config in configs:
        if not isinstance(config, Mapping) or not config or not all(isinstance(k, str) for k in config):
            raise CompileError(f"autotune configurations are non-empty dicts of constant names to values; got "
                               f"{config!r}")
    if isinstance(key, str):
        key = [key]
    tuner = Tuner(root, repeats=repeats, warmup=warmup, progress=progress)

    def decorate(fn: Any) -> Autotuned:
        if isinstance(fn, Autotuned):
            raise CompileError(f"{fn.fn.__name__} is already autotuned", hint="use one @lowbit.autotune per kernel")
        if not isinstance(fn, JitFunction):
            fn = jit(fn)
        return Autotuned(fn, configs, key, tuner)

    return decorate

