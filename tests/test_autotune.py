"""The tuner picks the fastest candidate, skips broken ones, persists and reuses its choice."""
from __future__ import annotations

import time

import pytest

from lowbit.autotune import Tuner, device_fingerprint
from lowbit.errors import CompileError

CANDIDATES = [{"BN": 16}, {"BN": 32}, {"BN": 64}]
# Sleep lengths far apart, so the choice is unambiguous even on a loaded machine.
DELAY = {16: 0.02, 32: 0.0, 64: 0.04}


def _prepare(calls):
    def prepare(config):
        calls.append(config["BN"])
        return lambda: time.sleep(DELAY[config["BN"]])
    return prepare


def test_picks_fastest_and_persists(tmp_path):
    calls: list = []
    tuner = Tuner(tmp_path, repeats=3, warmup=0, progress=False)
    assert tuner.choose("gemv", {"N": 8}, CANDIDATES, _prepare(calls)) == {"BN": 32}
    assert sorted(calls) == [16, 32, 64]
    again = Tuner(tmp_path, repeats=3, warmup=0, progress=False)
    assert again.choose("gemv", {"N": 8}, CANDIDATES, _prepare(calls)) == {"BN": 32}
    assert len(calls) == 3  # reused, not re-measured
    # another specialization key is tuned on its own
    again.choose("gemv", {"N": 16}, CANDIDATES, _prepare(calls))
    assert len(calls) == 6


def test_failing_candidates_are_skipped(tmp_path, caplog):
    def prepare(config):
        if config["BN"] != 64:
            raise RuntimeError("too much shared memory")
        return lambda: None

    tuner = Tuner(tmp_path, repeats=1, warmup=0, progress=False)
    assert tuner.choose("k", {}, CANDIDATES, prepare) == {"BN": 64}
    assert "too much shared memory" in caplog.text


def test_all_failing_is_a_clear_error(tmp_path):
    def prepare(config):
        raise RuntimeError(f"bad {config['BN']}")

    with pytest.raises(CompileError, match="every candidate failed.*bad 16"):
        Tuner(tmp_path, progress=False).choose("k", {}, CANDIDATES, prepare)


def test_fingerprint_names_the_cpu():
    assert device_fingerprint().startswith("cpu:")
