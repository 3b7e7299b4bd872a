"""One thread count for everything a benchmark times: torch's intra-op pool and lowbit's CPU kernels.

:func:`use_threads` sets ``torch.set_num_threads``, ``LOWBIT_NUM_THREADS`` (lowbit's kernels size their
parallel work by it) and the size of TVM's running pool, and restores all three on exit. TVM's pool can shrink
and grow back but never grow past the size it started with, so TVM is started (at its full size) before it is
resized: a pool started inside the block at the reduced size would stay reduced for the rest of the process.

>>> import torch
>>> with use_threads(1):
...     torch.get_num_threads()
1
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from lowbit.errors import LowbitError

__all__ = ["use_threads"]

_ENV = ("LOWBIT_NUM_THREADS", "TVM_NUM_THREADS")


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` threads for torch, lowbit and TVM (see the module docstring)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LowbitError(f"threads must be an integer >= 1; got {threads!r}")
    import torch

    saved_env = {name: os.environ.get(name) for name in _ENV}
    saved_torch = torch.get_num_threads()
    tvm_pool = _tvm_pool()
    saved_tvm = tvm_pool.num_threads() if tvm_pool else None
    os.environ["LOWBIT_NUM_THREADS"] = str(threads)
    if tvm_pool:
        tvm_pool.set_num_threads(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_torch)
        if tvm_pool:
            tvm_pool.set_num_threads(saved_tvm)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _tvm_pool():
    """lowbit's TVM thread-pool helpers with TVM started at its full pool size, or None without TVM."""
    from lowbit.errors import BackendError

    try:
        from lowbit.lowering.tvm import target

        target.import_tvm()
    except (ImportError, BackendError):  # TVM is a dependency, but a broken install must not stop other timings
        return None
    return target
