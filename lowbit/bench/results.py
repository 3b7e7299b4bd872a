"""The results of a ``lowbit bench`` run: one record per timed implementation, saved as JSON.

Every row says what was timed and its ``status``: ``"ok"`` (timed, result checked against the float64
reference), ``"n/a"`` (the implementation is not available here: ``detail`` says why), ``"wrong"`` (it ran
but its result failed the check; its time is kept but never used in ratios or targets) or ``"error"`` (it
raised). Numbers exist only for rows that ran; nothing is ever filled in.

JSON layout (``schema`` ``"lowbit-bench/1"``)::

    {"schema", "created", "command", "machine": {...}, "settings": {...},
     "bandwidth": {"gbps", "before": {...}, "after": {...}},
     "kernels": [KernelRow, ...], "decode": {"model": {...}, "rows": [DecodeRow, ...]} | null,
     "targets": [TargetCheck, ...]}

>>> row = KernelRow(impl="torch-fp32", n=64, k=64, m=1, weight_type="float32", status="ok", median_s=1e-5)
>>> KernelRow.from_dict(row.to_dict()) == row
True
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError

__all__ = ["SCHEMA", "KernelRow", "DecodeRow", "TargetCheck", "BenchResults", "load_results", "STATUSES"]

SCHEMA = "lowbit-bench/1"
STATUSES = ("ok", "n/a", "wrong", "error")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf become None, tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return _clean(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in data.items() if k in names}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in kwargs and isinstance(kwargs[f.name], list) and "tuple" in str(f.type):
                kwargs[f.name] = tuple(kwargs[f.name])
        return cls(**kwargs)


@dataclass(frozen=True)
class KernelRow(_Record):
    """One implementation timed on one ``[M, K] x [N, K]^T`` problem.

    ``impl``: ``"lowbit-<backend>"`` or a baseline (``"torch-fp32"``, ``"torch-bf16"``, ``"torch-int4"``).
    ``weight_type``: the lowbit type (or the baseline's storage dtype); ``bits_per_weight`` counts scales and
    zeros. ``bytes``: what the roofline counts (weight as stored + activations + outputs). ``speedup``:
    baseline time / this time, per baseline of the same problem (only for ``ok`` rows of both).
    ``samples_s``: seconds per call of each timing round; ``round_gbps``: the memory bandwidth sampled in the
    same rounds (empty when none was), which ``roofline`` is then taken against, round by round.
    """

    impl: str
    n: int
    k: int
    m: int
    weight_type: str
    status: str
    detail: str = ""
    group_size: int | None = None
    zero_point: bool | None = None
    act_dtype: str = "float32"
    bytes: int | None = None
    bits_per_weight: float | None = None
    median_s: float | None = None
    min_s: float | None = None
    iqr_s: float | None = None
    repeats: int | None = None
    number: int | None = None
    copies: int | None = None
    gbps: float | None = None
    roofline: float | None = None
    rel_err: float | None = None
    tolerance: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)
    samples_s: tuple[float, ...] = ()
    round_gbps: tuple[float, ...] = ()

    @property
    def backend(self) -> str | None:
        return self.impl.removeprefix("lowbit-") if self.is_lowbit else None

    @property
    def is_lowbit(self) -> bool:
        return self.impl.startswith("lowbit-")

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.median_s is not None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.k)

    @property
    def nbits(self) -> int | None:
        """Bits of the weight type (8, 4, ... for lowbit types; 32 / 16 / 4 for the baselines)."""
        from lowbit.dtypes import dtype

        if self.weight_type == "int4" and not self.is_lowbit:
            return 4
        try:
            return dtype(self.weight_type).nbits
        except LowbitError:
            return None


@dataclass(frozen=True)
class DecodeRow(_Record):
    """Decode speed of one implementation: ``impl`` ``"transformers-fp32"``, ``"transformers-bf16"`` or
    ``"lowbit-<backend>"``; ``weights`` the storage (``"float32"``, ``"int4 g128"``)."""

    impl: str
    weights: str
    status: str
    detail: str = ""
    weight_type: str | None = None
    activations: str = "float32"          # dtype of the linears' inputs
    tokens_per_s: float | None = None
    samples_tokens_per_s: tuple[float, ...] = ()
    new_tokens: int | None = None
    prompt_tokens: int | None = None
    weight_bytes: int | None = None
    bytes_per_token: float | None = None
    gbps: float | None = None
    roofline: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.tokens_per_s is not None


@dataclass(frozen=True)
class TargetCheck(_Record):
    """One performance target: ``passed`` is True / False, or None when it could not be evaluated."""

    name: str
    requirement: str
    measured: str
    passed: bool | None
    subject: str = ""  # the row it judges, e.g. "lowbit-tvm int4"

    @property
    def marker(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class BenchResults:
    """Everything one run produced (see the module docstring for the JSON form)."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    bandwidth: dict[str, Any] = field(default_factory=dict)
    kernels: list[KernelRow] = field(default_factory=list)
    decode_model: dict[str, Any] | None = None
    decode: list[DecodeRow] = field(default_factory=list)
    targets: list[TargetCheck] = field(default_factory=list)
    created: str = ""
    command: str = ""

    @property
    def bandwidth_gbps(self) -> float | None:
        return self.bandwidth.get("gbps")

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "schema": SCHEMA, "created": self.created, "command": self.command, "machine": self.machine,
            "settings": self.settings, "bandwidth": self.bandwidth,
            "kernels": [r.to_dict() for r in self.kernels],
            "decode": None if self.decode_model is None and not self.decode else
            {"model": self.decode_model, "rows": [r.to_dict() for r in self.decode]},
            "targets": [t.to_dict() for t in self.targets],
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> "BenchResults":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise LowbitError(f"{source} is not a lowbit bench result (schema {got!r}, expected {SCHEMA!r})",
                              hint="write one with: lowbit bench --json results.json")
        try:
            decode = data.get("decode") or {}
            return cls(machine=data.get("machine") or {}, settings=data.get("settings") or {},
                       bandwidth=data.get("bandwidth") or {},
                       kernels=[KernelRow.from_dict(r) for r in data.get("kernels") or []],
                       decode_model=decode.get("model"),
                       decode=[DecodeRow.from_dict(r) for r in decode.get("rows") or []],
                       targets=[TargetCheck.from_dict(t) for t in data.get("targets") or []],
                       created=data.get("created", ""), command=data.get("command", ""))
        except TypeError as err:
            raise LowbitError(f"{source} has a malformed record: {err}",
                              hint="regenerate it with the same lowbit version") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(path)
        return path


def load_results(path: str | Path) -> BenchResults:
    """Read a results JSON file written by ``lowbit bench --json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LowbitError(f"no such results file: {path}", hint="write one with: lowbit bench --json PATH") from None
    except (OSError, json.JSONDecodeError) as err:
        raise LowbitError(f"cannot read {path} as JSON: {err}") from None
    return BenchResults.from_dict(data, source=str(path))
