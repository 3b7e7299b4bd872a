"""Thread settings for timed work, and the machine description."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from lowbit.bench.machine import _size_bytes, describe_machine, machine_summary  # noqa: E402
from lowbit.bench.threads import use_threads  # noqa: E402
from lowbit.errors import LowbitError  # noqa: E402


def test_use_threads_sets_and_restores(monkeypatch) -> None:
    monkeypatch.setenv("LOWBIT_NUM_THREADS", "7")
    before = torch.get_num_threads()
    with use_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["LOWBIT_NUM_THREADS"] == "1"
        from lowbit.lowering.target import cpu_threads

        assert cpu_threads() == 1
    assert torch.get_num_threads() == before and os.environ["LOWBIT_NUM_THREADS"] == "7"
    with pytest.raises(LowbitError):
        with use_threads(0):
            pass


def test_machine_description() -> None:
    info = describe_machine()
    assert info["cores"] >= 1 and info["packages"]["torch"] and info["python"].count(".") == 2
    text = machine_summary(info)
    assert f"{info['cores']} cores" in text and "torch " in text
    assert _size_bytes("32768K") == 32 << 20 and _size_bytes("2M") == 2 << 20 and _size_bytes("x") is None
