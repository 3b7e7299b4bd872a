"""The results file: a JSON round trip that keeps every field, NaN written as null, bad files refused."""
from __future__ import annotations

import json

import pytest

from lowbit.bench.results import SCHEMA, BenchResults, DecodeRow, KernelRow, TargetCheck, load_results
from lowbit.errors import LowbitError


def _results() -> BenchResults:
    return BenchResults(
        machine={"cpu": "Test CPU", "cores": 2}, settings={"threads": 2, "group_size": 128, "repeats": 3},
        bandwidth={"gbps": 25.0},
        kernels=[KernelRow("lowbit-tvm", 4096, 4096, 1, "int4", "ok", median_s=6e-4, bytes=8_683_520,
                           roofline=float("nan"), speedup={"torch-fp32": 6.5}),
                 KernelRow("lowbit-triton", 4096, 4096, 1, "int4", "n/a", detail="not available: x")],
        decode_model={"preset": "tiny", "parameters": 1000},
        decode=[DecodeRow("transformers-fp32", "float32", "ok", tokens_per_s=3.0, samples_tokens_per_s=(2.9, 3.0))],
        targets=[TargetCheck("W4 GEMV roofline", ">= 60%", "62%", True, "lowbit-tvm int4")],
        created="2025-01-01T00:00:00+00:00", command="lowbit bench --quick")


def test_round_trip(tmp_path) -> None:
    res = _results()
    path = res.save(tmp_path / "sub" / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["kernels"][0]["roofline"] is None   # NaN -> null
    back = load_results(path)
    assert back.kernels[1] == res.kernels[1]
    assert back.kernels[0].speedup == {"torch-fp32": 6.5} and back.kernels[0].roofline is None
    assert back.decode == res.decode and back.targets == res.targets
    assert back.decode_model == res.decode_model and back.command == res.command
    assert back.bandwidth_gbps == 25.0


def test_bad_files(tmp_path) -> None:
    with pytest.raises(LowbitError, match="no such results file"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(LowbitError, match="cannot read"):
        load_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(LowbitError, match="not a lowbit bench result") as err:
        load_results(tmp_path / "y.json")
    assert "lowbit bench --json" in err.value.hint
    (tmp_path / "z.json").write_text(json.dumps({"schema": SCHEMA, "kernels": [{"impl": "x"}]}))
    with pytest.raises(LowbitError, match="malformed"):
        load_results(tmp_path / "z.json")


def test_row_properties() -> None:
    row = KernelRow("lowbit-tvm", 64, 128, 4, "uint3", "ok", median_s=1.0)
    assert row.backend == "tvm" and row.is_lowbit and row.nbits == 3 and row.shape == (64, 128) and row.ok
    base = KernelRow("torch-int4", 64, 128, 4, "int4", "ok", median_s=1.0)
    assert base.backend is None and base.nbits == 4
    assert KernelRow("torch-bf16", 64, 128, 4, "bfloat16", "ok").nbits == 16
    assert not KernelRow("lowbit-tvm", 64, 128, 4, "int4", "ok").ok      # no time, not ok
    assert TargetCheck("t", "r", "m", None).marker == "n/a"
