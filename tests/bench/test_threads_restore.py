"""use_threads restores TVM's pool: a benchmark must not leave the rest of the process on fewer threads."""
from __future__ import annotations

import torch

from lowbit.bench.threads import use_threads
from lowbit.lowering.tvm import target


def test_tvm_pool_and_torch_threads_come_back():
    target.import_tvm()
    tvm_before, torch_before = target.num_threads(), torch.get_num_threads()
    with use_threads(1):
        assert target.num_threads() == 1 and torch.get_num_threads() == 1
    assert target.num_threads() == tvm_before
    assert torch.get_num_threads() == torch_before


def test_the_process_keeps_every_core():
    # TVM pins the calling thread when its pool is reconfigured; lowbit restores the affinity.
    import os

    before = os.sched_getaffinity(0)
    with use_threads(1):
        pass
    assert os.sched_getaffinity(0) == before
    pool = target.num_threads()
    try:
        target.set_num_threads(1)
        assert os.sched_getaffinity(0) == before
    finally:
        target.set_num_threads(pool)
    assert os.sched_getaffinity(0) == before and target.num_threads() == pool
